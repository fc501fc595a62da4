"""Books (task=book) as shards: windows of `seq_len + 1` token ids, built once per corpus and
cached by content hash, on the machinery of `rnnlab.data.shards` and `rnnlab.data.streaming`.

Building reads one book at a time (a corpus of many books never sits in memory, one book does):
- the codec, unless one is given, from the first `vocab_tokens` tokens of the books;
- every book's ids are cut into segments of `SEGMENT_WINDOWS` windows; each segment goes to
  train, validation or test by a hash of its ids (`hash_split`: stable on every machine, no
  token in two splits; a book shorter than a segment lands whole in one split). The segments
  of a split are concatenated in order and cut into non-overlapping windows (stride `seq_len`,
  one token shared with the next window, as in memory), each stored as one example.
Stateful training (`data.stateful`) needs the whole stream in order and is not streamed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from rnnlab.data.shards import ShardReader, ShardWriter, hash_split, publish
from rnnlab.errors import DataError

if TYPE_CHECKING:
    from rnnlab.data.book import BookData

SEGMENT_WINDOWS = 64  # windows per split unit
SAMPLE_WINDOWS = 8  # windows per split kept in meta.json for the samples callback


def _vocabulary_text(module: BookData, files: list[Path]) -> str:
    """The first books, up to about `vocab_tokens` tokens (characters count for words too: a
    word is several characters, so a word-level prefix holds at least that many tokens)."""
    texts, size = [], 0
    for file in files:
        text = module.read_text([file])
        texts.append(text)
        size += len(text) if module.level == "char" else len(module.tokenizer(text))
        if module.vocab_tokens is not None and size >= module.vocab_tokens:
            break
    return "\n".join(texts)


def build_book_shards(
    module: BookData, files: list[Path], directory: Path, *, progress: bool = True
) -> dict[str, Any]:
    """Build the windows of `files` into `directory` (see the module docstring); its meta."""
    temporary = directory.with_name(f"{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    if module.codec is None:
        module._fit_codec(_vocabulary_text(module, files))
    codec = module.codec
    width = module.seq_len + 1
    writers = {s: ShardWriter(temporary / s, ("tokens",)) for s in ("train", "val", "test")}
    carry = {split: np.zeros(0, dtype=np.int32) for split in writers}
    samples: dict[str, list[int]] = {split: [] for split in writers}
    tokens = {split: 0 for split in writers}
    segment = SEGMENT_WINDOWS * module.seq_len
    left = module.first_tokens
    columns = (TextColumn("building shards"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TextColumn("books"), disable=not progress) as bar:
        task = bar.add_task("books", total=len(files))
        for file in files:
            ids = codec.encode_text(module.read_text([file])).numpy()
            if left is not None:
                ids, left = ids[:left], left - min(left, len(ids))
            for start in range(0, len(ids), segment):
                piece = ids[start : start + segment]
                key = hashlib.blake2b(piece.tobytes(), digest_size=16).hexdigest()
                split = hash_split(key, *module.fractions, module.seed)
                tokens[split] += len(piece)
                stream = np.concatenate([carry[split], piece])
                count = max(0, (len(stream) - 1) // module.seq_len)
                for index in range(count):
                    window = stream[index * module.seq_len : index * module.seq_len + width]
                    writers[split].add({"tokens": window.tolist()})
                    if len(writers[split]) <= SAMPLE_WINDOWS:
                        samples[split].extend(window[:-1].tolist())
                carry[split] = stream[count * module.seq_len :]
            bar.advance(task)
            if left == 0:
                break
    counts = {split: writer.close() for split, writer in writers.items()}
    if min(counts.values()) == 0:
        shutil.rmtree(temporary, ignore_errors=True)
        raise DataError(
            f"too little text in {[str(f) for f in files]} for data.seq_len={module.seq_len} "
            f"windows in every split (windows {counts}): give more books, or lower data.seq_len "
            "or raise data.val_fraction/test_fraction"
        )
    meta = {
        "codec": codec.state_dict(),
        "counts": counts,
        "tokens": tokens,
        "samples": samples,
        "settings": module.shard_settings(),
    }
    return publish(temporary, directory, meta)


class WindowCollate:
    """Window indices -> {"inputs" (B, seq_len), "targets" (B, seq_len)}: the window and the
    window shifted by one token, as `TokenWindows` gives them."""

    def __call__(self, reader: ShardReader, indices: np.ndarray) -> dict[str, torch.Tensor]:
        windows = np.stack([reader.example(int(i))[0]["tokens"] for i in indices])
        windows = torch.from_numpy(windows.astype(np.int64))
        return {"inputs": windows[:, :-1], "targets": windows[:, 1:]}
