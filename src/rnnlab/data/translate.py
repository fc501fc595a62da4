"""Sentence-pair translation data (Spanish -> English by default): read, clean, split, encode.

Corpora (`corpus=`):
- `files`: `path` is a manythings/Tatoeba TSV (`English<TAB>Spanish`, e.g. the book's spa.txt),
  a Moses pair given as a list `[corpus.es, corpus.en]` (source first), or an OPUS Moses zip.
- `tatoeba`, `opensubtitles`: the OPUS Moses zips, downloaded once into `data_dir`.
Every reader streams, so `max_pairs` never loads more of a corpus than it keeps.

Preprocessing: Unicode NFC, optional lowercasing, punctuation split into tokens of its own (¿ ¡
included), pairs longer than `max_length` tokens or with a length ratio above
`max_length_ratio` dropped (with a warning that counts them), duplicate pairs removed.

Splits are drawn over distinct *source sentences* with the seed, so a sentence and all its
translations sit in one split. Validation and test hold each source sentence once, with every
translation the corpus gives as a BLEU reference (Tatoeba has many: `Go.` -> `Ve.`, `Vete.`, ...).

Vocabularies come from the training split: word level by frequency (`<pad> <unk> <sos> <eos>`
first, capped at `src_vocab_size`/`tgt_vocab_size`, `min_count`), or `tokenizer=bpe` subwords.
Training batches are length-bucketed (`BucketBatchSampler`) and trimmed to their longest
sequence; the encoder packs them.
"""

from __future__ import annotations

import gc
import logging
import math
import unicodedata
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

from rnnlab.data.base import TaskDataModule
from rnnlab.data.batching import (
    EpochShuffleSampler,
    ResumableLoader,
    StartMidEpoch,
    TensorBatchDataset,
)
from rnnlab.data.download import DownloadError, check_zip, download
from rnnlab.data.readers import CorpusError, read_moses_pairs, read_moses_zip, read_tsv_pairs
from rnnlab.data.text import (
    BPEVocab,
    detokenize,
    tokenize,
    vocab_from_dict,
    vocab_labels,
    vocab_to_dict,
)
from rnnlab.data.vocab import Vocab
from rnnlab.errors import DataError, InputError, quote, require

log = logging.getLogger(__name__)

CORPORA = ("files", "tatoeba", "opensubtitles")
TOKENIZERS = ("word", "bpe")
# Versioned OPUS releases, but OPUS publishes no checksums and none could be confirmed offline,
# so nothing is pinned: check_zip tests every member's CRC, which catches truncated downloads.
OPUS_URLS = {
    "tatoeba": "https://object.pouta.csc.fi/OPUS-Tatoeba/v2023-04-12/moses/{pair}.txt.zip",
    "opensubtitles": "https://object.pouta.csc.fi/OPUS-OpenSubtitles/v2018/moses/{pair}.txt.zip",
}
SPLITS = ("train", "val", "test")
SENTENCE_ENDS = frozenset(".?!…")

# The book's sample sentences (written as the book types them: no accents, no ¿ ?) with the
# usual Tatoeba translation. `sample_pairs("val", n)` returns them first, so the samples
# callback shows how their translations change from epoch to epoch.
BOOK_SENTENCES = (
    ("Como te llamas", "What's your name?"),
    ("Mi nombre es", "My name is"),
    ("Estoy leyendo un libro", "I'm reading a book."),
    ("Que tal", "How are you?"),
    ("Estoy bien", "I'm fine."),
    ("Hablas espanol", "Do you speak Spanish?"),
    ("Que hora es", "What time is it?"),
    ("Hola", "Hello!"),
    ("Adios", "Goodbye!"),
    ("Si", "Yes."),
    ("No", "No."),
)


class BucketBatchSampler(StartMidEpoch, BatchSampler):
    """Batches of similar length: less padding, and shorter RNN loops.

    The indices of `sampler` (shuffled by it, e.g. an `EpochShuffleSampler`, or its shard under
    DDP) are cut into buckets of `bucket_batches` batches; each bucket is sorted by (source,
    target) length and cut into batches; with `shuffle`, the batches are then shuffled with a
    generator seeded by (seed, epoch). The epoch is read from `sampler` (Lightning calls its
    `set_epoch`), so a run resumed from a checkpoint sees the same batches as an uninterrupted
    one. `bucket_batches=None` sorts the whole split (evaluation).
    """

    def __init__(
        self,
        sampler,
        batch_size: int,
        drop_last: bool = False,
        *,
        lengths: Tensor,
        bucket_batches: int | None = 50,
        shuffle: bool = True,
        seed: int = 0,
    ):
        super().__init__(sampler, batch_size, drop_last)
        self.lengths = lengths
        self.bucket_batches = bucket_batches
        self.shuffle = shuffle
        self.seed = seed

    def _batches(self) -> list[Tensor]:
        indices = torch.as_tensor(list(self.sampler), dtype=torch.long)
        size = (
            len(indices) if self.bucket_batches is None else self.bucket_batches * self.batch_size
        )
        batches: list[Tensor] = []
        for bucket in indices.split(max(size, 1)):
            order = torch.sort(self.lengths[bucket], stable=True).indices
            batches.extend(bucket[order].split(self.batch_size))
        if self.drop_last:
            batches = [batch for batch in batches if len(batch) == self.batch_size]
        if self.shuffle:
            epoch = getattr(self.sampler, "epoch", 0)
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch + 7919)
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
        return batches

    def epoch_order(self) -> Iterator[list[int]]:
        for batch in self._batches():
            yield batch.tolist()

    def __len__(self) -> int:
        total = len(self.sampler)
        size = total if self.bucket_batches is None else self.bucket_batches * self.batch_size
        full, rest = divmod(total, max(size, 1))
        per_bucket = (
            size // self.batch_size if self.drop_last else math.ceil(size / self.batch_size)
        )
        last = rest // self.batch_size if self.drop_last else math.ceil(rest / self.batch_size)
        return full * per_bucket + last


class TranslationData(TaskDataModule):
    """Source/target sentence pairs as `src_tokens`/`tgt_tokens` (<sos> ... <eos>) batches.

    Besides the model inputs, batches carry `src_words` (ids that name every source word, also
    the ones outside the vocabulary, for unknown-word replacement) and `example_ids` (which
    reference translations belong to a validation/test example, for BLEU).
    """

    answer_separator = " → "

    def __init__(
        self,
        corpus: str = "files",
        path: str | Sequence[str] | None = None,
        url: str | None = None,
        data_dir: str = "data/translate",
        source_lang: str = "es",
        target_lang: str = "en",
        source_column: int = 1,
        target_column: int = 0,
        max_pairs: int | None = None,
        lowercase: bool = True,
        max_length: int | None = 15,
        max_length_ratio: float | None = 3.0,
        tokenizer: str = "word",
        src_vocab_size: int = 20_000,
        tgt_vocab_size: int = 30_000,
        min_count: int = 1,
        val_fraction: float = 0.03,
        test_fraction: float = 0.05,
        bucket_batches: int | None = 50,
        unk_replace: bool = True,
        **loader_options,
    ):
        super().__init__(**loader_options)
        self._check_source(corpus, path)
        require(
            tokenizer in TOKENIZERS,
            "data.tokenizer",
            f"must be one of {TOKENIZERS}, got {tokenizer!r}",
        )
        require(
            max_pairs is None or max_pairs > 0,
            "data.max_pairs",
            f"must be positive, got {max_pairs}",
        )
        require(
            max_length is None or max_length > 0,
            "data.max_length",
            f"must be positive, got {max_length}",
        )
        require(
            max_length_ratio is None or max_length_ratio >= 1,
            "data.max_length_ratio",
            f"must be >= 1, got {max_length_ratio}",
        )
        for key, size in (("src_vocab_size", src_vocab_size), ("tgt_vocab_size", tgt_vocab_size)):
            require(size > 4, f"data.{key}", f"must be more than the 4 specials, got {size}")
        if tokenizer == "bpe":
            for key, size in (
                ("src_vocab_size", src_vocab_size),
                ("tgt_vocab_size", tgt_vocab_size),
            ):
                require(
                    size >= BPEVocab.MIN_SIZE,
                    f"data.{key}",
                    f"byte-level BPE needs at least {BPEVocab.MIN_SIZE} (256 bytes, the specials "
                    f"and some merges), got {size}",
                )
        require(min_count >= 1, "data.min_count", f"must be >= 1, got {min_count}")
        for key, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            require(0 < fraction < 0.5, f"data.{key}", f"must be in (0, 0.5), got {fraction}")
        require(
            bucket_batches is None or bucket_batches > 0,
            "data.bucket_batches",
            f"must be positive or null, got {bucket_batches}",
        )
        self.corpus = corpus
        self.path = path
        self.url = url
        self.data_dir = Path(data_dir)
        self.source_lang, self.target_lang = source_lang, target_lang
        self.source_column, self.target_column = source_column, target_column
        self.max_pairs = max_pairs
        self.lowercase = lowercase
        self.max_length = max_length
        self.max_length_ratio = max_length_ratio
        self.tokenizer = tokenizer
        self.src_vocab_size, self.tgt_vocab_size = src_vocab_size, tgt_vocab_size
        self.min_count = min_count
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.bucket_batches = bucket_batches
        self.unk_replace = unk_replace
        self.src_vocab: Vocab | BPEVocab | None = None
        self.tgt_vocab: Vocab | BPEVocab | None = None
        self.max_source_len: int | None = None  # longest training source, in tokens
        self.max_target_len: int | None = None  # longest training target, without <sos>/<eos>
        self.stats: dict[str, int] = {}
        # Per split, in dataset order: (source text, reference strings) for val/test; for train
        # (source text, [target tokens]) (detokenised on demand: there are 100k of them).
        self.examples: dict[str, list[tuple[str, list]]] = {}
        self.references: list[list[str]] = []  # indexed by a batch's example_ids
        self._oov_words: list[str] = []  # source words outside the vocabulary (src_words ids)
        self._oov_index: dict[str, int] = {}
        self._accent_free: dict[str, str] | None = None  # accent-free spelling -> vocab word

    # Reading ---------------------------------------------------------------------------------
    def _check_source(self, corpus: str, path: str | Sequence[str] | None) -> None:
        require(corpus in CORPORA, "data.corpus", f"must be one of {CORPORA}, got {corpus!r}")
        require(
            corpus != "files" or bool(path),
            "data.path",
            "data.corpus=files needs data.path: a TSV file (English<TAB>Spanish), a Moses pair "
            "[x.es, x.en] or an OPUS zip; or use data.corpus=tatoeba to download one",
        )

    def _corpus_file(self) -> Path:
        pair = "-".join(sorted((self.source_lang, self.target_lang)))
        return self.data_dir / f"{self.corpus}.{pair}.txt.zip"

    def _download(self) -> Path:
        dest = self._corpus_file()
        pair = "-".join(sorted((self.source_lang, self.target_lang)))
        url = self.url or OPUS_URLS[self.corpus].format(pair=pair)
        try:
            return download(url, dest, validate=check_zip)
        except DownloadError as error:
            raise DataError(
                f"{error} (data.corpus={self.corpus}). Or train on a file you have: "
                "data.corpus=files data.path=<spa.txt, [x.es, x.en] or an OPUS zip>"
            ) from None

    def prepare_data(self) -> None:
        if self.corpus != "files":
            self._download()

    def _files(self) -> list[Path]:
        if self.corpus != "files":
            if self.corpus == "opensubtitles" and self.max_pairs is None:
                log.warning(
                    "OpenSubtitles en-es holds ~60M pairs and all of them will be read: set "
                    "data.max_pairs (e.g. 1000000) for a run that fits in memory"
                )
            return [self._download()]
        paths = [self.path] if isinstance(self.path, (str, Path)) else list(self.path)
        require(
            len(paths) in (1, 2),
            "data.path",
            f"give one file (TSV or zip) or a Moses pair [source, target], got {len(paths)} paths",
        )
        files = [Path(p).expanduser() for p in paths]
        for file in files:
            if not file.is_file():
                raise DataError(
                    f"data.path: {file} does not exist or is not a file (the book's corpus is "
                    "spa.txt from manythings.org/anki; or use data.corpus=tatoeba to download)"
                )
        return files

    def read_pairs(self, files: Sequence[Path] | None = None) -> Iterator[tuple[str, str]]:
        """(source, target) strings, streamed, at most `max_pairs`; the format is detected:
        two files = Moses pair, a zip = OPUS Moses zip, else a TSV."""
        files = list(files) if files is not None else self._files()
        try:
            if len(files) == 2:
                yield from read_moses_pairs(files[0], files[1], limit=self.max_pairs)
            elif zipfile.is_zipfile(files[0]):
                yield from read_moses_zip(
                    files[0],
                    source_lang=self.source_lang,
                    target_lang=self.target_lang,
                    limit=self.max_pairs,
                )
            else:
                yield from read_tsv_pairs(
                    files[0],
                    source_column=self.source_column,
                    target_column=self.target_column,
                    limit=self.max_pairs,
                )
        except CorpusError as error:
            raise DataError(str(error)) from None

    def tokens(self, text: str) -> list[str]:
        """A sentence as the model's tokens (training data and predict inputs alike)."""
        return tokenize(text, lowercase=self.lowercase)

    def _reject(self, src: list[str], tgt: list[str]) -> str | None:
        """Why a tokenised pair is filtered out (a config key to loosen), or None to keep it."""
        if self.max_length is not None and max(len(src), len(tgt)) > self.max_length:
            return "data.max_length"
        ratio = max(len(src), len(tgt)) / min(len(src), len(tgt))
        if self.max_length_ratio is not None and ratio > self.max_length_ratio:
            return "data.max_length_ratio"
        return None

    def _clean(self, pairs: Iterator[tuple[str, str]]) -> list[tuple[str, list[str], list[str]]]:
        """Tokenise, filter (`_reject`), drop duplicates; counts in `stats`."""
        kept, seen = [], set()
        stats = dict.fromkeys(("read", "empty", "duplicates", "kept"), 0)
        for source, target in pairs:
            stats["read"] += 1
            src, tgt = self.tokens(source), self.tokens(target)
            if not src or not tgt:  # e.g. a line of only spaces after normalisation
                stats["empty"] += 1
                continue
            reason = self._reject(src, tgt)
            if reason is not None:
                stats[reason] = stats.get(reason, 0) + 1
                continue
            key = (tuple(src), tuple(tgt))
            if key in seen:
                stats["duplicates"] += 1
                continue
            seen.add(key)
            kept.append((source, src, tgt))
        stats["kept"] = len(kept)
        self.stats = stats
        for reason, count in stats.items():
            if reason.startswith("data."):
                log.warning(
                    "dropped %d of %d pairs outside %s=%s",
                    count,
                    stats["read"],
                    reason,
                    getattr(self, reason.removeprefix("data.")),
                )
        if stats["empty"]:
            log.info("skipped %d pairs with an empty side", stats["empty"])
        if stats["duplicates"]:
            log.info("dropped %d duplicate pairs", stats["duplicates"])
        return kept

    # Splits ----------------------------------------------------------------------------------
    def _split_sources(self, sources: list[tuple[str, ...]]) -> dict[tuple[str, ...], str]:
        """Each distinct source sentence -> its split, drawn with the seed."""
        distinct = list(dict.fromkeys(sources))
        order = torch.randperm(len(distinct), generator=torch.Generator().manual_seed(self.seed))
        n_test = max(1, round(self.test_fraction * len(distinct)))
        n_val = max(1, round(self.val_fraction * len(distinct)))
        if len(distinct) < n_test + n_val + 1:
            raise DataError(
                f"only {len(distinct)} distinct source sentences after filtering "
                f"({self.stats}); need at least 3: raise data.max_pairs or data.max_length"
            )
        split_of = {}
        for rank, index in enumerate(order.tolist()):
            split_of[distinct[index]] = (
                "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            )
        return split_of

    def build_splits(self) -> None:
        # Millions of small lists and tuples: the cyclic garbage collector would rescan them
        # all again and again (it doubles the time here) and there are no cycles to find.
        paused = gc.isenabled()
        gc.disable()
        try:
            self._build_splits()
        finally:
            if paused:
                gc.enable()

    def _build_splits(self) -> None:
        cleaned = self._clean(self.read_pairs())
        if not cleaned:
            raise DataError(
                f"no sentence pairs left in {self.path or self.corpus} after filtering "
                f"({self.stats}): check data.path, data.max_length, data.source_column"
            )
        split_of = self._split_sources([tuple(src) for _, src, _ in cleaned])
        by_split: dict[str, list] = {split: [] for split in SPLITS}
        for example in cleaned:
            by_split[split_of[tuple(example[1])]].append(example)
        train = by_split["train"]
        if self.src_vocab is None or self.tgt_vocab is None:  # a checkpoint's vocab wins
            self._build_vocabs(train)
            self._accent_free = None
        self.references = []
        self.train_set = self._dataset(train, "train")
        for split in ("val", "test"):
            grouped = self._group_by_source(by_split[split])
            setattr(self, f"{split}_set", self._dataset(grouped, split))
        if self.max_source_len is None:
            lengths = self.train_set.tensors
            self.max_source_len = int(lengths["src_lengths"].max())
            self.max_target_len = int(lengths["tgt_lengths"].max()) - 2  # without <sos>, <eos>
        log.info(
            "translation pairs: %s; train %d, val %d, test %d; vocab %d -> %d",
            self.stats,
            len(self.train_set),
            len(self.val_set),
            len(self.test_set),
            len(self.src_vocab),
            len(self.tgt_vocab),
        )

    @staticmethod
    def _group_by_source(pairs) -> list[tuple[str, list[str], list[list[str]]]]:
        """One example per source sentence with all its translations (first = training target)."""
        grouped: dict[tuple[str, ...], tuple[str, list[str], list[list[str]]]] = {}
        for text, src, tgt in pairs:
            grouped.setdefault(tuple(src), (text, src, []))[2].append(tgt)
        return list(grouped.values())

    def _build_vocabs(self, train: list[tuple[str, list[str], list[str]]]) -> None:
        self.src_vocab = self._build_vocab([src for _, src, _ in train], self.src_vocab_size)
        self.tgt_vocab = self._build_vocab([tgt for _, _, tgt in train], self.tgt_vocab_size)

    def _build_vocab(self, sequences: list[list[str]], size: int) -> Vocab | BPEVocab:
        if self.tokenizer == "bpe":
            return BPEVocab.train(sequences, vocab_size=size, min_count=max(self.min_count, 2))
        return Vocab.build(sequences, max_size=size, min_count=self.min_count)

    # Encoding --------------------------------------------------------------------------------
    def _word_ids(self, words: Sequence[str], ids: Sequence[int]) -> list[int]:
        """Ids naming each source word in `src_words`: its vocabulary id, or, for a word the
        vocabulary maps to <unk>, an id past the vocabulary that `_word_of` turns back into it."""
        unk, size = self.src_vocab.unk_id, len(self.src_vocab)
        if unk not in ids:
            return list(ids)
        named = list(ids)
        for position, (word, index) in enumerate(zip(words, ids)):
            if index == unk:
                if word not in self._oov_index:
                    self._oov_index[word] = len(self._oov_words)
                    self._oov_words.append(word)
                named[position] = size + self._oov_index[word]
        return named

    def _word_of(self, word_id: int) -> str:
        if word_id >= len(self.src_vocab):
            return self._oov_words[word_id - len(self.src_vocab)]
        return self.src_vocab.itos[word_id]

    def _encode_source(self, words: list[str]) -> dict[str, Tensor]:
        ids = self.src_vocab.encode(words)
        example = {
            "src_tokens": torch.tensor(ids, dtype=torch.long),
            "src_lengths": torch.tensor(len(ids)),
        }
        if self.word_level:
            example["src_words"] = torch.tensor(self._word_ids(words, ids), dtype=torch.long)
        return example

    @property
    def word_level(self) -> bool:
        return isinstance(self.src_vocab, Vocab)

    def _dataset(self, examples: list, split: str) -> TensorBatchDataset:
        """Encode examples into padded tensors: (text, src, tgt) for "train", else (text, src,
        [tgt, ...]) with every reference (the first one is the target the loss sees)."""
        sources = [src for _, src, _ in examples]
        targets = [tgt if split == "train" else tgt[0] for _, _, tgt in examples]
        src_ids = _encode_all(self.src_vocab, sources)
        sos, eos = self.tgt_vocab.sos_id, self.tgt_vocab.eos_id
        tgt_ids = [[sos, *ids, eos] for ids in _encode_all(self.tgt_vocab, targets)]
        tensors = {
            "src_tokens": _pad(src_ids),
            "src_lengths": torch.tensor([len(s) for s in src_ids]),
            "tgt_tokens": _pad(tgt_ids),
            "tgt_lengths": torch.tensor([len(t) for t in tgt_ids]),
        }
        trim = {"src_tokens": "src_lengths", "tgt_tokens": "tgt_lengths"}
        if self.word_level:
            tensors["src_words"] = _pad([self._word_ids(w, i) for w, i in zip(sources, src_ids)])
            trim["src_words"] = "src_lengths"
        if split == "train":  # one target each; references are only needed for scoring
            self.examples[split] = [(text, [tgt]) for text, _, tgt in examples]
        else:
            first_id = len(self.references)
            self.references += [[detokenize(t) for t in tgts] for _, _, tgts in examples]
            tensors["example_ids"] = torch.arange(first_id, len(self.references))
            self.examples[split] = [
                (text, refs) for (text, _, _), refs in zip(examples, self.references[first_id:])
            ]
        return TensorBatchDataset(tensors, trim=trim)

    # Loaders ---------------------------------------------------------------------------------
    def _bucket_loader(self, dataset: TensorBatchDataset | None, *, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not built this split yet")
        tensors = dataset.tensors
        # Sort key: source length, then target length.
        lengths = tensors["src_lengths"] * (int(tensors["tgt_lengths"].max()) + 1)
        lengths = lengths + tensors["tgt_lengths"]
        sampler = EpochShuffleSampler(dataset, self.seed) if train else SequentialSampler(dataset)
        batch_sampler = BucketBatchSampler(
            sampler,
            self.batch_size if train else self.eval_batch_size,
            lengths=lengths,
            bucket_batches=self.bucket_batches if train else None,
            shuffle=train,
            seed=self.seed,
        )
        loader = ResumableLoader if train else DataLoader
        return loader(dataset, batch_sampler=batch_sampler, **self.loader_options())

    def train_dataloader(self) -> DataLoader:
        return self._bucket_loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._bucket_loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._bucket_loader(self.test_set, train=False)

    # Model sizes and checkpoint state ----------------------------------------------------------
    def model_kwargs(self) -> dict:
        """Vocabulary sizes and special ids; before `setup`, the configured caps (so a model's
        size can be computed without reading the corpus: benchmarks/model_sizes.py)."""
        if self.src_vocab is None:
            max_len = (self.max_length or 50) + 2
            return {
                "src_vocab_size": self.src_vocab_size,
                "tgt_vocab_size": self.tgt_vocab_size,
                "pad_id": 0,
                "sos_id": 2,
                "eos_id": 3,
                "unk_id": 1,
                "max_target_len": max_len,
            }
        return {
            "src_vocab_size": len(self.src_vocab),
            "tgt_vocab_size": len(self.tgt_vocab),
            "pad_id": self.tgt_vocab.pad_id,
            "sos_id": self.tgt_vocab.sos_id,
            "eos_id": self.tgt_vocab.eos_id,
            "unk_id": self.tgt_vocab.unk_id,
            "max_target_len": self.max_target_len + 2,  # <eos> and one token to spare
        }

    def state_dict(self) -> dict:
        if self.src_vocab is None:
            return {}
        return {
            "src_vocab": vocab_to_dict(self.src_vocab),
            "tgt_vocab": vocab_to_dict(self.tgt_vocab),
            "max_source_len": self.max_source_len,
            "max_target_len": self.max_target_len,
        }

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.src_vocab = vocab_from_dict(state["src_vocab"])
        self.tgt_vocab = vocab_from_dict(state["tgt_vocab"])
        self._accent_free = None
        self.max_source_len = state["max_source_len"]
        self.max_target_len = state["max_target_len"]

    # Predict interface -------------------------------------------------------------------------
    def encode_input(self, text: str) -> dict[str, Tensor]:
        if self.src_vocab is None:
            raise RuntimeError("TranslationData has no vocabulary: call setup() or load a state")
        words = self.tokens(text)
        if not words:
            raise InputError("empty sentence: type a sentence to translate, e.g. ¿Cómo te llamas?")
        if self.word_level:
            words = [self._known_spelling(word) for word in words]
        typed = len(words)
        if words[-1] not in SENTENCE_ENDS:
            # Every corpus sentence ends with a mark; without one (the book types `Hola`) the
            # encoder sees an input unlike any it trained on and decoders tend to loop.
            words = [*words, "."]
        example = self._encode_source(words)
        ids = example["src_tokens"]
        if bool((ids[:typed] == self.src_vocab.unk_id).all()):
            raise InputError(
                f"no word of {quote(text.strip())} is in the source vocabulary "
                f"({len(self.src_vocab)} entries, language {self.source_lang!r}): check the "
                "language and the spelling"
            )
        if len(ids) > self.max_source_len:
            log.warning(
                "input has %d tokens; the model was trained on at most %d: translating the "
                "first %d only",
                len(ids),
                self.max_source_len,
                self.max_source_len,
            )
            example = {
                key: value[: self.max_source_len]
                if value.dim()
                else torch.tensor(self.max_source_len)
                for key, value in example.items()
            }
        return example

    def _known_spelling(self, word: str) -> str:
        """An unknown word typed without its accents (`espanol`, as the book types it) -> the
        most frequent vocabulary word that differs only by accents (`español`), else itself."""
        if word in self.src_vocab.stoi:
            return word
        if self._accent_free is None:
            self._accent_free = {}
            for known in reversed(self.src_vocab.itos):  # most frequent last: it wins
                self._accent_free[strip_accents(known)] = known
        return self._accent_free.get(strip_accents(word), word)

    def decode_output(self, output: dict[str, Tensor]) -> list[str]:
        """Generated ids -> text. With `unk_replace` (word level), each `<unk>` becomes the source
        word the decoder attended to most at that step (Luong et al., 2015)."""
        tokens = output["tokens"].tolist()
        attention = output.get("attention")
        src_words = output.get("src_words")
        replace = (
            self.unk_replace and self.word_level and attention is not None and src_words is not None
        )
        if not replace:
            return [detokenize(self.tgt_vocab.decode(row)) for row in tokens]
        focus = attention.argmax(-1).tolist()  # (B, T): most attended source position per step
        src_words = src_words.tolist()
        unk, eos, specials = self.tgt_vocab.unk_id, self.tgt_vocab.eos_id, self.tgt_vocab.specials
        texts = []
        for row, (ids, positions) in enumerate(zip(tokens, focus)):
            words = []
            for index, position in zip(ids, positions):
                if index == eos:
                    break
                if index == unk:
                    words.append(self._word_of(src_words[row][position]))
                elif self.tgt_vocab.itos[index] not in specials:
                    words.append(self.tgt_vocab.itos[index])
            texts.append(detokenize(words))
        return texts

    def metric_texts(
        self, batch: dict[str, Tensor], output: dict[str, Tensor]
    ) -> tuple[list[str], list[list[str]]]:
        """(hypotheses, references) of an evaluation batch as detokenised strings (BLEU, chrF).

        References are every translation of the source sentence in the corpus; without
        `example_ids` (a hand-made batch) they are decoded from the target tokens."""
        hypotheses = self.decode_output({**output, "src_words": batch.get("src_words")})
        if "example_ids" in batch and self.references:
            references = [self.references[i] for i in batch["example_ids"].tolist()]
        else:
            references = [
                [detokenize(self.tgt_vocab.decode(row[1:]))] for row in batch["tgt_tokens"].tolist()
            ]
        return hypotheses, references

    def attention_labels(
        self, batch: dict[str, Tensor], output: dict[str, Tensor], row: int
    ) -> tuple[list[str], list[str]]:
        """Axis labels of an attention map: source tokens, then generated tokens up to <eos>."""
        length = int(batch["src_lengths"][row])
        if "src_words" in batch:
            source = [self._word_of(i) for i in batch["src_words"][row, :length].tolist()]
        else:
            source = vocab_labels(self.src_vocab, batch["src_tokens"][row, :length].tolist())
        ids = output["tokens"][row].tolist()
        eos = self.tgt_vocab.eos_id
        ids = ids[: ids.index(eos) + 1] if eos in ids else ids
        return source, vocab_labels(self.tgt_vocab, ids)

    def sample_pairs(self, split: str, count: int) -> list[tuple[str, str]]:
        """(source, first reference); for "val", the book's sample sentences come first."""
        pairs = []
        if split == "val":
            pairs = [
                (source, detokenize(tokenize(target, lowercase=self.lowercase)))
                for source, target in BOOK_SENTENCES
            ]
        for text, refs in self.examples.get(split, [])[: max(0, count - len(pairs))]:
            pairs.append((text, refs[0] if isinstance(refs[0], str) else detokenize(refs[0])))
        return pairs[:count]

    def read_test_file(self, path: Path) -> TensorBatchDataset:
        """A TSV file in the training format (source and target columns as configured); each
        source sentence is scored against all its translations in the file."""
        pairs = []
        for text, target in self.read_pairs([path]):
            src, tgt = self.tokens(text), self.tokens(target)
            if src and tgt:
                pairs.append((text, src, tgt))
        if not pairs:
            raise DataError(f"{path} has no sentence pairs (expected target<TAB>source lines)")
        return self._dataset(self._group_by_source(pairs), "test")


def strip_accents(word: str) -> str:
    """`español` -> `espanol`: drop combining marks after canonical decomposition."""
    if word.isascii():
        return word
    return "".join(c for c in unicodedata.normalize("NFD", word) if not unicodedata.combining(c))


def _encode_all(vocab: Vocab | BPEVocab, sequences: list[list[str]]) -> list[list[int]]:
    """Ids of many token sequences (unknown words -> <unk>)."""
    if isinstance(vocab, BPEVocab):
        return vocab.encode_batch(sequences)
    stoi, unk = vocab.stoi, vocab.unk_id
    return [[stoi.get(token, unk) for token in tokens] for tokens in sequences]


def _pad(sequences: list[list[int]], pad_id: int = 0) -> Tensor:
    """Right-pad lists of ids into one (N, longest) tensor (one copy, no per-row tensors)."""
    lengths = torch.tensor([len(ids) for ids in sequences])
    out = torch.full((len(sequences), int(lengths.max())), pad_id, dtype=torch.long)
    mask = torch.arange(out.size(1)) < lengths[:, None]
    out[mask] = torch.tensor([i for ids in sequences for i in ids], dtype=torch.long)
    return out
