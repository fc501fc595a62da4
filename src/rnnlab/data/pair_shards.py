"""Sentence pairs (translate, chat) as shards: built once in a streaming pass, cached by content
hash, read back as batches.

Building (`build_pair_shards`), in constant memory except for validation and test:
1. the codec (vocabularies, truecaser), unless one is given, from the training pairs among the
   first `vocab_pairs` pairs of the corpus: worker processes count words part by part and the
   counts are merged (BPE learns from those pairs read again, `FirstTrainPairs`), never the
   whole corpus in memory;
2. one pass over the corpus: the main process reads pairs and hands parts of `PART` pairs to
   worker processes, which tokenise, filter (the datamodule's `_reject`), split by a hash of the
   source sentence (`hash_split`) and encode with the codec; the main process writes training
   pairs to shards as they come back, in corpus order, and groups validation and test pairs by
   source sentence (every translation a reference: these two splits are held in memory while
   building, so keep their fractions small for a huge corpus);
3. `meta.json` (the codec's state, counts, a few training sentences for samples) is written
   last, and the directory renamed into place: a cache directory is complete or absent.
Unlike the in-memory path, duplicate pairs are kept (finding them needs the whole corpus).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import multiprocessing
import os
import shutil
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from torch.utils.data import DataLoader

from rnnlab.data.shards import (
    ShardReader,
    ShardWriter,
    build_lock,
    check_streaming,
    content_hash,
    hash_split,
    publish,
)
from rnnlab.data.streaming import (
    BatchPlan,
    ShardDataset,
    StreamingLoader,
    distributed_rank,
    pad_rows,
)
from rnnlab.data.text import Tokenizer
from rnnlab.data.truecase import count_spellings
from rnnlab.errors import DataError, require

if TYPE_CHECKING:
    from rnnlab.codecs.translate import TranslationCodec
    from rnnlab.data.translate import TranslationData

log = logging.getLogger(__name__)

PART = 2048  # raw pairs per worker task
SAMPLES = 32  # training sentences kept for the samples callback
SPLITS = ("train", "val", "test")


def split_pair(module: TranslationData, source: str, target: str):
    """(split, source tokens, target tokens) of a raw pair, or the reason it is dropped."""
    src, tgt = module.tokenizer(source), module.tokenizer(target)
    if not src or not tgt:
        return "empty"
    reason = module._reject(src, tgt)
    if reason is not None:
        return reason
    split = hash_split(" ".join(src), module.val_fraction, module.test_fraction, module.seed)
    return split, src, tgt


class FirstTrainPairs:
    """The first `limit` training pairs as (source, src, tgt, target), read anew from the corpus
    on every iteration (what the vocabulary and truecaser counts take in bounded memory)."""

    def __init__(self, module: TranslationData, limit: int | None):
        self.module, self.limit = module, limit

    def __iter__(self) -> Iterator[tuple[str, list[str], list[str], str]]:
        count = 0
        for source, target in self.module.read_pairs():
            if self.limit is not None and count >= self.limit:
                return
            kept = split_pair(self.module, source, target)
            if isinstance(kept, tuple) and kept[0] == "train":
                count += 1
                yield source, kept[1], kept[2], target


# Worker side: the datamodule and codec, inherited by fork (or set in this process).
_WORK: tuple[TranslationData, TranslationCodec | None] | None = None


def _set_work(module: TranslationData, codec: TranslationCodec | None) -> None:
    global _WORK
    _WORK = (module, codec)


def _count_part(part: list[tuple[str, str]]) -> tuple[Counter, Counter, dict]:
    """Token counts of the part's training pairs (source, target) and, for the truecaser, the
    spellings of their targets as written (in a worker)."""
    module, _ = _WORK
    src_counts, tgt_counts, spellings = Counter(), Counter(), defaultdict(Counter)
    cased = Tokenizer("sentence") if module.truecase else None
    for source, target in part:
        kept = split_pair(module, source, target)
        if isinstance(kept, tuple) and kept[0] == "train":
            src_counts.update(kept[1])
            tgt_counts.update(kept[2])
            if cased is not None:
                count_spellings([cased(target)], spellings)
    return src_counts, tgt_counts, spellings


def _flat(sequences: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Id lists -> their lengths and their ids concatenated (int64 arrays)."""
    lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
    flat = np.fromiter(
        itertools.chain.from_iterable(sequences), dtype=np.int64, count=int(lengths.sum())
    )
    return lengths, flat


def _encode_part(part: list[tuple[str, str]]) -> dict[str, Any]:
    """Tokenise, filter, split and encode a part of the corpus (in a worker): training pairs as
    arrays (lengths, flat ids), validation and test pairs as they are (they are grouped)."""
    module, codec = _WORK
    stats: Counter[str] = Counter(read=len(part))
    train_src, train_tgt, evals, samples = [], [], [], []
    for source, target in part:
        kept = split_pair(module, source, target)
        if isinstance(kept, str):
            stats[kept] += 1
            continue
        split, src, tgt = kept
        stats["kept"] += 1
        if split == "train":
            train_src.append(src)
            train_tgt.append(tgt)
            if len(samples) < SAMPLES:
                samples.append((source, module.reference(target, tgt)))
        else:
            evals.append((split, source, src, tgt, target))
    src_ids, tgt_ids = codec.encode_ids(train_src, train_tgt)
    (src_lengths, src_flat), (tgt_lengths, tgt_flat) = _flat(src_ids), _flat(tgt_ids)
    eval_src, eval_tgt = codec.encode_ids([e[2] for e in evals], [e[3] for e in evals])
    return {
        "stats": stats,
        "train": (np.stack([src_lengths, tgt_lengths], axis=1), [src_flat, tgt_flat]),
        "eval": [(*e, s, t) for e, s, t in zip(evals, eval_src, eval_tgt)],
        "samples": samples,
    }


def _ordered(function: Callable, items: Iterable, workers: int) -> Iterator[Any]:
    """function(item) for each item, in order, on `workers` forked processes (0: here), with
    at most 2 x workers parts in flight (so reading never runs ahead of encoding)."""
    if workers == 0:
        yield from map(function, items)
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers, _set_work, _WORK) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.apply_async(function, (item,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def _parts(pairs: Iterable[tuple[str, str]]) -> Iterator[list[tuple[str, str]]]:
    iterator = iter(pairs)
    while part := list(itertools.islice(iterator, PART)):
        yield part


@contextlib.contextmanager
def _progress(what: str, enabled: bool):
    """A progress line: pairs read so far, the rate, the time."""
    columns = (
        SpinnerColumn(),
        TextColumn(what + ": {task.completed:,} pairs read"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, disable=not enabled) as bar:
        yield bar, bar.add_task(what, total=None)


def _fit_codec(module: TranslationData, workers: int, progress: bool) -> TranslationCodec:
    """The codec from the training pairs among the first `vocab_pairs` pairs: word counts
    gathered by the workers, part by part (BPE learns its merges from the pairs themselves,
    read again for each side)."""
    log.info("vocabularies from the training pairs of the first %s pairs", module.vocab_pairs)
    if module.tokenizer_kind == "bpe":
        return module._fit_codec(FirstTrainPairs(module, module.vocab_pairs))
    _set_work(module, None)
    src, tgt, spellings = Counter(), Counter(), defaultdict(Counter)
    first = itertools.islice(module.read_pairs(), module.vocab_pairs)
    with _progress("counting words", progress) as (bar, task):
        for part_src, part_tgt, part_spellings in _ordered(_count_part, _parts(first), workers):
            src.update(part_src)
            tgt.update(part_tgt)
            for word, forms in part_spellings.items():
                spellings[word].update(forms)
            bar.update(task, advance=PART)
    return module._codec_from_counts(src, tgt, spellings)


def build_pair_shards(
    module: TranslationData, directory: Path, *, workers: int, progress: bool = True
) -> dict[str, Any]:
    """Build the shards of `module`'s corpus into `directory` (see the module docstring);
    returns its meta (also in `directory/meta.json`)."""
    temporary = directory.with_name(f"{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    codec = module.codec or _fit_codec(module, workers, progress)
    _set_work(module, codec)
    train = ShardWriter(temporary / "train", ("src", "tgt"))
    groups: dict[str, dict[tuple[str, ...], list]] = {"val": {}, "test": {}}
    stats: Counter[str] = Counter()
    longest = np.zeros(2, dtype=np.int64)
    samples: list[tuple[str, str]] = []
    with _progress("building shards", progress) as (bar, task):
        for result in _ordered(_encode_part, _parts(module.read_pairs()), workers):
            stats.update(result["stats"])
            lengths, flats = result["train"]
            train.add_arrays(lengths, flats)
            if len(lengths):
                longest = np.maximum(longest, lengths.max(axis=0))
            for split, source, src, tgt, target, s_ids, t_ids in result["eval"]:
                group = groups[split].setdefault(tuple(src), [source, src, s_ids, t_ids, []])
                reference = module.reference(target, tgt)
                if reference not in group[4]:
                    group[4].append(reference)
            if len(samples) < SAMPLES:
                samples.extend(result["samples"][: SAMPLES - len(samples)])
            bar.update(task, advance=result["stats"]["read"])
    counts = {"train": train.close()}
    if counts["train"] == 0:
        shutil.rmtree(temporary, ignore_errors=True)
        raise DataError(
            f"no training pairs left in {module.path or module.corpus} after filtering "
            f"({dict(stats)}): check data.path, data.max_length, data.source_column"
        )
    for split, grouped in groups.items():
        writer = ShardWriter(temporary / split, ("src", "tgt"))
        for source, src, s_ids, t_ids, references in grouped.values():
            writer.add({"src": s_ids, "tgt": t_ids}, meta=[source, src, references])
        counts[split] = writer.close()
    if codec.max_source_len is None:
        codec.max_source_len, codec.max_target_len = int(longest[0]), int(longest[1]) - 2
    meta = {
        "codec": codec.state_dict(),
        "stats": dict(stats),
        "counts": counts,
        "samples": samples,
        "settings": module.shard_settings(),
    }
    return publish(temporary, directory, meta)


class PairCollate:
    """Example indices of a pair split -> a batch like the in-memory one: `src_tokens`,
    `src_lengths`, `tgt_tokens`, `tgt_lengths`; for evaluation splits also `references` and,
    at word level, `src_words` (named with the codec, in the process that decodes)."""

    def __init__(self, codec: TranslationCodec, evaluation: bool = False):
        self.codec, self.evaluation = codec, evaluation

    def __call__(self, reader: ShardReader, indices: np.ndarray) -> dict[str, Any]:
        examples = [reader.example(int(i)) for i in indices]
        src_tokens, src_lengths = pad_rows([ids["src"] for ids, _ in examples])
        tgt_tokens, tgt_lengths = pad_rows([ids["tgt"] for ids, _ in examples])
        batch: dict[str, Any] = {
            "src_tokens": src_tokens,
            "src_lengths": src_lengths,
            "tgt_tokens": tgt_tokens,
            "tgt_lengths": tgt_lengths,
        }
        if self.evaluation:
            metas = [meta for _, meta in examples]
            batch["references"] = [meta[2] for meta in metas]
            if self.codec.word_level:
                words = [
                    self.codec.word_ids(meta[1], ids["src"].tolist())
                    for (ids, _), meta in zip(examples, metas)
                ]
                batch["src_words"] = pad_rows([np.asarray(w) for w in words])[0]
        return batch


class StreamedPairs:
    """What `TranslationData` (and so `ChatData`) does with `data.streaming=true`: find or build
    the shards, open them as the three splits, serve training batches from the batch plan."""

    def set_streaming(
        self,
        streaming: bool,
        max_tokens: int | None,
        vocab_pairs: int | None,
        shard_workers: int | None,
    ) -> None:
        """Check and keep the `data.*` streaming options (`TranslationData`'s arguments)."""
        check_streaming(streaming, max_tokens=max_tokens, vocab_pairs=vocab_pairs)
        require(
            max_tokens is None or streaming,
            "data.max_tokens",
            "batches by tokens need data.streaming=true (in memory, data.batch_size counts pairs)",
        )
        require(
            shard_workers is None or shard_workers >= 0,
            "data.shard_workers",
            f"must be >= 0 or null, got {shard_workers}",
        )
        self.streaming, self.max_tokens, self.vocab_pairs = streaming, max_tokens, vocab_pairs
        self.shard_workers = min(os.cpu_count() or 1, 4) if shard_workers is None else shard_workers
        self._shard_dir: Path | None = None

    def shard_settings(self) -> dict:
        """Everything the shards' contents depend on besides the corpus files (the cache key)."""
        return {
            "task": type(self).__name__,
            "corpus": self.corpus,
            "languages": [self.source_lang, self.target_lang],
            "columns": [self.source_column, self.target_column],
            "max_pairs": self.max_pairs,
            "tokenization": self.tokenizer.state_dict(),
            "filters": {
                key: value
                for key, value in vars(self).items()
                if key.startswith(("max_length", "max_question", "min_answer", "max_answer"))
            },
            "vocabulary": [
                self.tokenizer_kind,
                self.src_vocab_size,
                self.tgt_vocab_size,
                self.min_count,
                self.vocab_pairs,
            ],
            "split": [self.val_fraction, self.test_fraction, self.seed],
            "truecase": self.truecase,
            "unk_replace": self.unk_replace,
            "format": getattr(self, "format", None),
        }

    def shards(self) -> Path:
        """The directory of this corpus's shards, built on first use (`data_dir/shards/<hash>`:
        the content hash of the corpus files and `shard_settings`, and of a given codec's
        vocabularies unless the cached shards were built with the same ones)."""
        if self._shard_dir is not None:
            return self._shard_dir
        files = self._files()
        directory = self.data_dir / "shards" / content_hash(files, self.shard_settings())
        if self.codec is not None and not self._same_vocabularies(directory):
            vocabularies = {k: v for k, v in self.codec.state_dict().items() if "vocab" in k}
            settings = {**self.shard_settings(), "codec": vocabularies}
            directory = self.data_dir / "shards" / content_hash(files, settings)
        with build_lock(directory):
            if not (directory / "meta.json").is_file():
                log.info("building shards of %s into %s", [str(f) for f in files], directory)
                build_pair_shards(self, directory, workers=self.shard_workers)
        self._shard_dir = directory
        return directory

    def _same_vocabularies(self, directory: Path) -> bool:
        if not (directory / "meta.json").is_file():
            return False
        stored = json.loads((directory / "meta.json").read_text(encoding="utf-8"))["codec"]
        given = self.codec.state_dict()
        return all(stored.get(k) == v for k, v in given.items() if "vocab" in k)

    def _open_shards(self) -> None:
        """The splits from the shards (built if missing); the codec from them unless given."""
        directory = self.shards()
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        self.stats = meta["stats"]
        if self.codec is None:
            self.codec = self.codec_class.from_state(meta["codec"])
        readers = {split: ShardReader(directory / split) for split in SPLITS}
        self.train_set = ShardDataset(readers["train"], PairCollate(self.codec))
        self.val_set = ShardDataset(readers["val"], PairCollate(self.codec, evaluation=True))
        self.test_set = ShardDataset(readers["test"], PairCollate(self.codec, evaluation=True))
        self.examples["train"] = [(text, [target]) for text, target in meta["samples"]]
        for split in ("val", "test"):
            reader = readers[split]
            metas = [reader.example(i)[1] for i in range(min(len(reader), 32))]
            self.examples[split] = [(meta[0], meta[2]) for meta in metas]
        self.log_splits(f" (streamed from {directory})")

    def train_dataloader(self) -> DataLoader:
        if not self.streaming:
            return super().train_dataloader()
        rank, world = distributed_rank()
        reader = self.train_set.reader
        window = (self.bucket_batches or 50) * self.batch_size
        plan = BatchPlan(
            reader,
            batch_size=self.batch_size,
            max_tokens=self.max_tokens,
            window_blocks=max(1, -(-window // reader.block_size)),
            seed=self.seed,
            world_size=world,
        )
        return StreamingLoader.for_module(self, plan, self.train_set.collate)

    def _loader(self, dataset, *, train: bool) -> DataLoader:
        if not isinstance(dataset, ShardDataset):
            return super()._loader(dataset, train=train)
        # In this process: `src_words` names unknown words with this process's codec.
        options = {**self.loader_options(), "num_workers": 0, "persistent_workers": False}
        return DataLoader(
            dataset, batch_sampler=self.batch_sampler(dataset, train=False), **options
        )
