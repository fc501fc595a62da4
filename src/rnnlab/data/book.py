"""Books as one token stream for next-token language modelling (char or word level).

The text of every book (Gutenberg boilerplate stripped) becomes ONE int32 tensor of token ids:
War and Peace is 3.2M chars -> 12.8 MB, or 683k word tokens -> 2.7 MB (benchmarks/book_lm.py),
never one-hot (as float32 that would be 1.3 GB and 47 GB). The stream is split contiguously
90/5/5 into train/val/test (`stream_split`), so no token is in two splits. Batches are windows
over a split: `seq_len` tokens in, the same window shifted by one token as targets, so every
position is predicted.

Two ways to cut batches:
- windows (default): non-overlapping windows of the split, shuffled each epoch, each read from
  a zero state;
- `stateful: true` (truncated BPTT): the split is cut into `batch_size` parallel tracks (rows);
  batch k holds columns [k*seq_len, (k+1)*seq_len) of every track, so row t of batch k+1
  continues row t of batch k. Batches carry `reset` (B,) (all True on the first batch of an
  epoch); the LanguageModelTask carries the detached hidden state between batches and zeroes
  it there. Stateful loaders are sequential by design: single-process training only.

Undecodable bytes are reported with the file, the line number and the byte offset from the
start of the file (rnnlab.data.readers). Tokens, vocabulary and generated text: the codec's
(`rnnlab.codecs.book`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from rnnlab.codecs.book import (
    LEVELS,
    SPECIALS,
    BookCodec,
    char_codes,
    char_vocab,
)
from rnnlab.data.base import TaskDataModule, check_direction
from rnnlab.data.batching import InOrder, ResumableLoader
from rnnlab.data.download import DownloadError, download
from rnnlab.data.readers import CorpusError, read_lines, strip_gutenberg
from rnnlab.data.shards import ShardReader, build_lock, check_streaming, content_hash
from rnnlab.data.splits import check_fractions, stream_split
from rnnlab.data.streaming import (
    BatchPlan,
    ShardDataset,
    StreamingLoader,
    distributed_rank,
)
from rnnlab.data.text import PARAGRAPH
from rnnlab.data.vocab import Vocab
from rnnlab.errors import ConfigError, DataError, require, require_one_of, require_positive

log = logging.getLogger(__name__)

# Gutenberg regenerates these files (header, licence, fixes) over time, so no checksum can be
# pinned; _looks_like_gutenberg rejects what is not a Gutenberg text (e.g. an HTML error page).
GUTENBERG_URL = "https://www.gutenberg.org/cache/epub/{id}/pg{id}.txt"
PROMPT_TOKENS = {"char": 50, "word": 10}  # length of the fixed sample prompt


# Datasets ------------------------------------------------------------------------------------
class TokenWindows(Dataset):
    """Non-overlapping windows of a token stream, a whole batch per gather.

    Window i covers stream[i*seq_len : (i+1)*seq_len + 1]: inputs (B, seq_len) are its first
    seq_len tokens and targets (B, seq_len) the same tokens shifted by one.
    """

    def __init__(self, stream: Tensor, seq_len: int):
        self.stream = stream
        self.seq_len = seq_len
        self.offsets = torch.arange(seq_len + 1)

    def __len__(self) -> int:
        return max(0, (len(self.stream) - 1) // self.seq_len)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return self.__getitems__([index])

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Tensor]:
        starts = torch.as_tensor(indices, dtype=torch.long) * self.seq_len
        windows = self.stream[starts[:, None] + self.offsets].long()
        return {"inputs": windows[:, :-1], "targets": windows[:, 1:]}


class TokenTracks(Dataset):
    """The stream cut into `num_tracks` parallel rows; item k is the k-th batch of columns.

    inputs/targets (num_tracks, <= seq_len), and `reset` (num_tracks,) bool, True for k == 0:
    the hidden state of a row must start from zeros there and be carried over otherwise.
    """

    def __init__(self, stream: Tensor, seq_len: int, num_tracks: int):
        self.track_len = (len(stream) - 1) // num_tracks
        used = num_tracks * self.track_len
        self.inputs = stream[:used].view(num_tracks, self.track_len)
        self.targets = stream[1 : used + 1].view(num_tracks, self.track_len)
        self.seq_len = seq_len

    def __len__(self) -> int:
        return math.ceil(self.track_len / self.seq_len)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        columns = slice(index * self.seq_len, (index + 1) * self.seq_len)
        return {
            "inputs": self.inputs[:, columns].long(),
            "targets": self.targets[:, columns].long(),
            "reset": torch.full((len(self.inputs),), index == 0),
        }


# Reading -------------------------------------------------------------------------------------
def _looks_like_gutenberg(path: Path) -> None:
    """Reject a download that is not a Gutenberg text (e.g. an HTML error page)."""
    head = path.read_bytes()[:50_000].decode("utf-8", errors="replace")
    if "*** START OF" not in head:
        raise ValueError("no '*** START OF' line in its first 50 kB: not a Gutenberg text file")


def read_book(path: Path, encoding: str = "utf-8") -> str:
    """The book text of one file: LF line ends, no BOM, Gutenberg header/licence stripped (a
    file without the markers is used whole). Undecodable bytes raise DataError with the file,
    line number and byte offset; an empty file raises DataError."""
    try:
        lines = [line for _, line in read_lines(path, encoding=encoding)]
    except CorpusError as error:
        raise DataError(f"{error} (option: data.encoding)") from None
    except OSError as error:
        raise DataError(f"cannot read {path}: {error}") from None
    if not any(line.strip() for line in lines):
        raise DataError(f"{path} is empty: give a text file that holds a book")
    text, found = strip_gutenberg("\n".join(lines) + "\n")
    if not found:
        log.info("%s has no Gutenberg *** START OF / *** END OF lines: using all of it", path)
    if not text.strip():
        raise DataError(f"{path} has no text between its *** START OF and *** END OF lines")
    return text


def _check_gutenberg_ids(ids: list) -> None:
    """ConfigError unless `data.gutenberg_ids` (used when no data.path is given) are ebook ids."""
    require(
        bool(ids) and all(isinstance(i, int) and i > 0 for i in ids),
        "data.gutenberg_ids",
        f"must be a non-empty list of Gutenberg ebook numbers, got {ids}; "
        "or set data.path to your own .txt books",
    )


class BookData(TaskDataModule):
    """One or more books -> a token stream split 90/5/5 -> windows (or stateful tracks).

    `path`: a .txt file, a list of files, or a folder (its *.txt files, sorted); `None`
    downloads `gutenberg_ids` from Project Gutenberg into `data_dir`. `backward`: every split
    read right to left, for a backward language model (ULMFiT's second direction; `BookCodec`).
    """

    codec_class = BookCodec

    def __init__(
        self,
        path: str | Sequence[str] | None = None,
        gutenberg_ids: Sequence[int] = (1342,),
        data_dir: str = "data/books",
        level: str = "char",
        lowercase: bool = False,
        line_breaks: bool = False,
        max_vocab: int | None = None,
        min_count: int = 1,
        seq_len: int = 100,
        stateful: bool = False,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        first_tokens: int | None = None,
        sample_length: int = 200,
        encoding: str = "utf-8",
        streaming: bool = False,
        vocab_tokens: int | None = 10_000_000,
        max_tokens: int | None = None,
        backward: bool = False,
        **loader_options,
    ):
        super().__init__(**loader_options)
        if max_tokens is not None:  # the name until #18 gave it tokens per batch (translate, chat)
            log.warning(
                "data.max_tokens is deprecated for task=book and goes in the next release: use "
                "data.first_tokens=%s (only the first N tokens of the text)",
                max_tokens,
            )
            first_tokens = max_tokens
        check_streaming(streaming, vocab_tokens=vocab_tokens)
        require(
            not (streaming and backward),
            "data.backward",
            "shards are read left to right: set data.streaming=false for a backward model",
        )
        require(
            not (streaming and stateful),
            "data.streaming",
            "stateful training reads the stream in order and is not streamed from shards: set "
            "data.stateful=false or data.streaming=false",
        )
        require_one_of(level, LEVELS, "data.level")
        require_positive(seq_len, "data.seq_len")
        require(min_count >= 1, "data.min_count", f"must be >= 1, got {min_count}")
        require(
            max_vocab is None or max_vocab > len(SPECIALS),
            "data.max_vocab",
            f"must be null or more than {len(SPECIALS)} (the specials {SPECIALS}), got {max_vocab}",
        )
        check_fractions(val_fraction, test_fraction)
        require_positive(first_tokens, "data.first_tokens", null=True)
        require_positive(sample_length, "data.sample_length")
        if path is None:
            _check_gutenberg_ids(list(gutenberg_ids or []))
        self.path = path
        self.gutenberg_ids = list(gutenberg_ids or [])
        self.data_dir = Path(data_dir)
        self.level = level
        self.tokenizer = BookCodec.make_tokenizer(
            level, lowercase=lowercase, line_breaks=line_breaks
        )
        self.max_vocab, self.min_count = max_vocab, min_count
        self.seq_len, self.stateful = seq_len, stateful
        self.fractions = (val_fraction, test_fraction)
        self.first_tokens = first_tokens
        self.sample_length, self.encoding = sample_length, encoding
        self.streaming, self.vocab_tokens = streaming, vocab_tokens
        self.backward = backward
        self.streams: dict[str, Tensor] = {}
        self._shard_dir: Path | None = None

    # Files -----------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.path is None:
            self._download()
        if self.streaming:  # one process builds (Lightning: local rank 0), the others wait
            self.shards()

    def _download(self) -> list[Path]:
        files = []
        for ebook in self.gutenberg_ids:
            url = GUTENBERG_URL.format(id=ebook)
            try:
                files.append(
                    download(url, self.data_dir / f"pg{ebook}.txt", validate=_looks_like_gutenberg)
                )
            except DownloadError as error:
                raise DataError(
                    f"{error} Or train on books you have: data.path=<file, [files] or folder "
                    "of .txt books>"
                ) from None
        return files

    def files(self, path: str | Sequence[str] | None) -> list[Path]:
        """The book files to read, in order (`path` as `data.path` takes it)."""
        if path is None:
            return self._download()
        paths = [path] if isinstance(path, (str, Path)) else list(path)
        require(bool(paths), "data.path", "is an empty list: give at least one .txt file")
        files: list[Path] = []
        for entry in map(Path, paths):
            if entry.is_dir():
                found = sorted(entry.glob("*.txt"))
                if not found:
                    raise DataError(f"data.path={entry} is a folder without .txt files")
                files.extend(found)
            elif entry.is_file():
                files.append(entry)
            else:
                raise DataError(f"data.path={entry} does not exist: give a .txt file or a folder")
        return files

    def read_text(self, files: Iterable[Path]) -> str:
        """All books as one text, a paragraph break between books, as the model reads it."""
        text = "\n".join(read_book(file, self.encoding) for file in files)
        return text.lower() if self.tokenizer.lowercase else text

    # Tokens ----------------------------------------------------------------------------------
    def _fit_codec(self, text: str) -> tuple[Tensor, int, int]:
        """The stream of `text` (at most `first_tokens` tokens) and where val and test start; the
        codec is fitted on the training part unless one was given."""
        if self.level == "char":
            codes = char_codes(text[: self.first_tokens] if self.first_tokens else text)
            train_end, val_end = stream_split(len(codes), *self.fractions)
            if self.codec is None:
                vocab = char_vocab(
                    codes[:train_end], max_vocab=self.max_vocab, min_count=self.min_count
                )
                self.codec = BookCodec(self.tokenizer, vocab, self.backward)
            return self.codec.encode_chars(codes), train_end, val_end
        tokens = self.tokenizer(text)[: self.first_tokens]
        train_end, val_end = stream_split(len(tokens), *self.fractions)
        if self.codec is None:
            vocab = Vocab.build(
                [tokens[:train_end]],
                max_size=self.max_vocab,
                min_count=self.min_count,
                specials=SPECIALS,
            )
            self.codec = BookCodec(self.tokenizer, vocab, self.backward)
        return torch.tensor(self.codec.vocab.encode(tokens), dtype=torch.int32), train_end, val_end

    def build_splits(self) -> None:
        if self.codec is not None and self.codec.level != self.level:
            raise DataError(
                f"checkpoint vocabulary is {self.codec.level}-level but data.level={self.level}"
            )
        check_direction(self.codec, self.backward)
        if self.streaming:
            self._open_shards()
            return
        files = self.files(self.path)
        stream, train_end, val_end = self._fit_codec(self.read_text(files))
        if train_end < self.seq_len + 1:
            raise DataError(
                f"{len(stream)} {self.level} tokens in {[str(f) for f in files]}: too few for "
                f"data.seq_len={self.seq_len}; lower data.seq_len or give more text"
            )
        splits = {
            "train": stream[:train_end],
            "val": stream[train_end:val_end],
            "test": stream[val_end:],
        }
        self.streams = {name: self.codec.in_model_order(part) for name, part in splits.items()}
        self.train_set = self._dataset(self.streams["train"], train=True)
        self.val_set = self._dataset(self.streams["val"], train=False)
        self.test_set = self._dataset(self.streams["test"], train=False)
        unk = self.codec.vocab.unk_id
        log.info(
            "%d %s tokens from %d file(s), vocabulary %d (<unk> %.2f%%), %.1f MB as %s, "
            "split %d/%d/%d",
            len(stream),
            self.level,
            len(files),
            len(self.codec.vocab),
            100 * float((stream == unk).float().mean()),
            self.memory_bytes() / 1e6,
            stream.dtype,
            *(len(s) for s in self.streams.values()),
        )

    def memory_bytes(self) -> int:
        """Bytes held for the data: the splits (views of one stream; flipped copies, backward)."""
        return sum(s.numel() * s.element_size() for s in self.streams.values())

    def _dataset(self, stream: Tensor, *, train: bool) -> Dataset:
        seq_len = self.seq_len if train else max(1, min(self.seq_len, len(stream) - 1))
        if not self.stateful:
            return TokenWindows(stream, seq_len)
        if train:
            tracks = self.batch_size
            if (len(stream) - 1) // tracks < seq_len:
                raise ConfigError(
                    f"data.stateful: the training split has {len(stream)} tokens, too few for "
                    f"data.batch_size={tracks} tracks of at least data.seq_len={seq_len}: "
                    "lower data.batch_size or data.seq_len"
                )
        else:
            tracks = max(1, min(self.eval_batch_size, (len(stream) - 1) // seq_len))
        return TokenTracks(stream, seq_len, tracks)

    # Streaming shards (data.streaming=true: rnnlab.data.book_shards) --------------------------
    def shard_settings(self) -> dict:
        """Everything the shards depend on besides the books' bytes (the cache key)."""
        return {
            "task": type(self).__name__,
            "tokenization": self.tokenizer.state_dict(),
            "vocabulary": [self.max_vocab, self.min_count, self.vocab_tokens],
            "seq_len": self.seq_len,
            "split": [*self.fractions, self.seed],
            "first_tokens": self.first_tokens,
            "encoding": self.encoding,
        }

    def shards(self) -> Path:
        """The directory of these books' windows, built on first use (`data_dir/shards/<hash>`
        of the files and `shard_settings`, and of a given codec's vocabulary)."""
        if self._shard_dir is None:
            from rnnlab.data.book_shards import build_book_shards

            files = self.files(self.path)
            settings = self.shard_settings()
            if self.codec is not None:
                settings["vocabulary"] = self.codec.state_dict().get("vocab")
            directory = self.data_dir / "shards" / content_hash(files, settings)
            with build_lock(directory):
                if not (directory / "meta.json").is_file():
                    log.info("building shards of %d book(s) into %s", len(files), directory)
                    build_book_shards(self, files, directory)
            self._shard_dir = directory
        return self._shard_dir

    def _open_shards(self) -> None:
        from rnnlab.data.book_shards import WindowCollate

        directory = self.shards()
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        if self.codec is None:
            self.codec = self.codec_class.from_state(meta["codec"])
        for split in ("train", "val", "test"):
            reader = ShardReader(directory / split)
            setattr(self, f"{split}_set", ShardDataset(reader, WindowCollate()))
            self.streams[split] = torch.tensor(meta["samples"][split], dtype=torch.int32)
        log.info(
            "%s tokens (streamed from %s), vocabulary %d, windows of %d: train %d, val %d, test %d",
            meta["tokens"],
            directory,
            len(self.codec.vocab),
            self.seq_len,
            *meta["counts"].values(),
        )

    # Loaders ---------------------------------------------------------------------------------
    def _track_loader(self, dataset: Dataset | None, *, train: bool = False) -> DataLoader:
        if dataset is None:
            raise RuntimeError("BookData.setup() has not built this split yet")
        # Each item is a whole batch of tracks, in order.
        if not train:
            return DataLoader(dataset, batch_size=None, **self.loader_options())
        return ResumableLoader(
            dataset, batch_size=None, sampler=InOrder(dataset), **self.loader_options()
        )

    def train_dataloader(self) -> DataLoader:
        if self.stateful:
            return self._track_loader(self.train_set, train=True)
        if self.streaming:
            rank, world = distributed_rank()
            reader = self.train_set.reader
            plan = BatchPlan(
                reader,
                batch_size=self.batch_size,
                window_blocks=max(1, -(-64 * self.batch_size // reader.block_size)),
                seed=self.seed,
                world_size=world,
            )
            return StreamingLoader.for_module(self, plan, self.train_set.collate)
        return super().train_dataloader()

    def val_dataloader(self) -> DataLoader:
        if self.stateful:
            return self._track_loader(self.val_set)
        return super().val_dataloader()

    def test_dataloader(self) -> DataLoader:
        if self.stateful:
            return self._track_loader(self.test_set)
        return super().test_dataloader()

    # Samples and a user's test set ------------------------------------------------------------
    def sample_pairs(self, split: str, count: int) -> list[tuple[str, str]]:
        """One fixed prompt from the start of the split's first paragraph and its true
        continuation (`sample_length` tokens): the model's sample is compared by eye."""
        stream = self.streams[split]
        prompt_len = min(PROMPT_TOKENS[self.level], max(1, len(stream) // 4))
        start = self._paragraph_start(stream, limit=len(stream) - prompt_len - 1)
        prompt = stream[start : start + prompt_len].tolist()
        truth = stream[start + prompt_len : start + prompt_len + self.sample_length].tolist()
        return [(self.codec.text_of(prompt), self.codec.continuation(prompt[-1], truth))][:count]

    def _paragraph_start(self, stream: Tensor, limit: int) -> int:
        """Index just after the first paragraph break (before `limit`), else 0."""
        head = stream[: max(0, limit)]
        if self.level == "word":
            breaks = (head == self.codec.vocab.stoi.get(PARAGRAPH, -1)).nonzero()
            return int(breaks[0]) + 1 if len(breaks) else 0
        newline = self.codec.vocab.stoi.get("\n", -1)
        blank = ((head[:-1] == newline) & (head[1:] == newline)).nonzero()
        return int(blank[0]) + 2 if len(blank) else 0

    def read_test_set(self, path: str | Sequence[str]) -> Dataset:
        """All of the books at `path` (cleaned like the training books) as the test stream."""
        stream = self.codec.encode_text(self.read_text(self.files(path)))
        if len(stream) < 2:
            raise DataError(f"{path} has fewer than 2 {self.level} tokens: nothing to evaluate")
        self.streams["test"] = stream
        return self._dataset(stream, train=False)
