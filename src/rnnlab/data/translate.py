"""Sentence-pair translation data (Spanish -> English by default): read, clean, split, encode.

Corpora (`corpus=`):
- `files`: `path` is a manythings/Tatoeba TSV (`English<TAB>Spanish`, e.g. the book's spa.txt),
  a Moses pair given as a list `[corpus.es, corpus.en]` (source first), or an OPUS Moses zip.
- `tatoeba`, `opensubtitles`: the OPUS Moses zips, downloaded once into `data_dir`.
Every reader streams, so `max_pairs` never loads more of a corpus than it keeps.

Preprocessing: Unicode NFC, optional lowercasing, punctuation split into tokens of its own (¿ ¡
included), pairs longer than `max_length` tokens or with a length ratio above
`max_length_ratio` dropped (with a warning that counts them), duplicate pairs removed.

Splits are drawn over distinct *source sentences* (`split_by_group`): a sentence and all its
translations sit in one split. Validation and test hold each source sentence once, with every
translation the corpus gives as a BLEU reference (Tatoeba has many: `Go.` -> `Ve.`, `Vete.`, ...),
as the corpus writes it (cased, untokenised): BLEU and chrF are sacreBLEU's standard scores.

A lowercased model's output gets its case back from a truecaser learned from the training
targets (`truecase`, on by default with `lowercase`; `rnnlab.data.truecase`), so predictions read
"Who believes in God?" and are scored against the original references.

Vocabularies come from the training split: word level by frequency (`<pad> <unk> <sos> <eos>`
first, capped at `src_vocab_size`/`tgt_vocab_size`, `min_count`), or `tokenizer=bpe` subwords;
the codec (`rnnlab.codecs.translate`) holds them and encodes every split. Training batches are
length-bucketed (`BucketBatchSampler`) and trimmed to their longest sequence.
"""

from __future__ import annotations

import gc
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch.utils.data import SequentialSampler

from rnnlab.codecs.translate import TranslationCodec
from rnnlab.data.base import TaskDataModule
from rnnlab.data.batching import BucketBatchSampler, EpochShuffleSampler, TensorBatchDataset
from rnnlab.data.pair_files import PairFiles
from rnnlab.data.pair_shards import StreamedPairs
from rnnlab.data.splits import check_fractions, split_by_group
from rnnlab.data.streaming import ShardDataset
from rnnlab.data.subwords import BPEVocab, check_vocab_sizes
from rnnlab.data.text import Tokenizer, detokenize, normalize
from rnnlab.data.truecase import Truecaser
from rnnlab.data.vocab import Vocab
from rnnlab.errors import DataError, require, require_one_of, require_positive

log = logging.getLogger(__name__)

TOKENIZERS = ("word", "bpe")
SPLITS = ("train", "val", "test")
Pair = tuple[str, list[str], list[str], str]  # (source text, its tokens, target tokens, text)

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


class TranslationData(PairFiles, StreamedPairs, TaskDataModule):
    """Source/target sentence pairs as `src_tokens`/`tgt_tokens` (<sos> ... <eos>) batches.

    Besides the model inputs, batches carry `src_words` (word level: ids that name every source
    word, for unknown-word replacement) and, in validation and test, `references` (every
    translation of each source sentence, for BLEU).
    """

    codec_class = TranslationCodec
    original_references = True  # score against the corpus's sentences as written

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
        truecase: bool = True,
        streaming: bool = False,
        max_tokens: int | None = None,
        vocab_pairs: int | None = 500_000,
        shard_workers: int | None = None,
        **loader_options,
    ):
        super().__init__(**loader_options)
        self.set_streaming(streaming, max_tokens, vocab_pairs, shard_workers)
        self._check_source(corpus, path)
        require_one_of(tokenizer, TOKENIZERS, "data.tokenizer")
        for key, value in {"max_pairs": max_pairs, "max_length": max_length}.items():
            require_positive(value, f"data.{key}", null=True)
        require_positive(bucket_batches, "data.bucket_batches", null=True)
        ratio = max_length_ratio
        require(ratio is None or ratio >= 1, "data.max_length_ratio", f"must be >= 1, got {ratio}")
        check_vocab_sizes(tokenizer, src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size)
        require(min_count >= 1, "data.min_count", f"must be >= 1, got {min_count}")
        check_fractions(val_fraction, test_fraction)
        self.corpus = corpus
        self.path = path
        self.url = url
        self.data_dir = Path(data_dir)
        self.source_lang, self.target_lang = source_lang, target_lang
        self.source_column, self.target_column = source_column, target_column
        self.max_pairs = max_pairs
        self.tokenizer = Tokenizer("sentence", lowercase=lowercase)
        self.max_length = max_length
        self.max_length_ratio = max_length_ratio
        self.tokenizer_kind = tokenizer
        self.src_vocab_size, self.tgt_vocab_size = src_vocab_size, tgt_vocab_size
        self.min_count = min_count
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.bucket_batches = bucket_batches
        self.unk_replace = unk_replace
        self.truecase = truecase and lowercase  # cased models need no truecaser
        self.stats: dict[str, int] = {}
        # Per split, in dataset order: (source text, reference strings) for val/test; for train
        # (source text, [target tokens]) (detokenised on demand: there are 100k of them).
        self.examples: dict[str, list[tuple[str, list]]] = {}

    def log_splits(self, source: str = "") -> None:
        """One line: what cleaning kept and dropped (`stats`), the split and vocabulary sizes."""
        log.info(
            "translation pairs%s: %s; train %d, val %d, test %d; vocab %d -> %d",
            source,
            self.stats,
            len(self.train_set),
            len(self.val_set),
            len(self.test_set),
            len(self.codec.src_vocab),
            len(self.codec.tgt_vocab),
        )

    def prepare_data(self) -> None:
        if self.corpus != "files":
            self._download()
        if self.streaming:  # one process builds (Lightning: local rank 0), the others wait
            self.shards()

    # Splits ----------------------------------------------------------------------------------
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
        if self.streaming:
            self._open_shards()
            return
        cleaned = self._clean(self.read_pairs())
        if not cleaned:
            raise DataError(
                f"no sentence pairs left in {self.path or self.corpus} after filtering "
                f"({self.stats}): check data.path, data.max_length, data.source_column"
            )
        sources = [tuple(src) for _, src, _, _ in cleaned]
        by_split: dict[str, list[Pair]] = {split: [] for split in SPLITS}
        for example, split in zip(
            cleaned, split_by_group(sources, self.val_fraction, self.test_fraction, self.seed)
        ):
            by_split[split].append(example)
        train = by_split["train"]
        if self.codec is None:  # a checkpoint's codec wins
            self.codec = self._fit_codec(train)
        elif self.truecase and self.codec.truecaser is None:  # a checkpoint from before truecasing
            self.codec.truecaser = self._fit_truecaser(train)
        self.train_set = self._dataset(train, "train")
        for split in ("val", "test"):
            grouped = self._group_by_source(by_split[split])
            setattr(self, f"{split}_set", self._dataset(grouped, split))
        if self.codec.max_source_len is None:
            lengths = self.train_set.tensors
            self.codec.max_source_len = int(lengths["src_lengths"].max())
            self.codec.max_target_len = int(lengths["tgt_lengths"].max()) - 2  # no <sos>, <eos>
        self.log_splits()

    @staticmethod
    def _group_by_source(pairs: list[Pair]) -> list[tuple[str, list[str], list[Pair]]]:
        """One example per source sentence with all its translations (first = training target)."""
        grouped: dict[tuple[str, ...], tuple[str, list[str], list[Pair]]] = {}
        for pair in pairs:
            grouped.setdefault(tuple(pair[1]), (pair[0], pair[1], []))[2].append(pair)
        return list(grouped.values())

    def _fit_codec(self, train: list[Pair]) -> TranslationCodec:
        """Vocabularies of the training split's two sides."""
        src_vocab = self._build_vocab((src for _, src, _, _ in train), self.src_vocab_size)
        tgt_vocab = self._build_vocab((tgt for _, _, tgt, _ in train), self.tgt_vocab_size)
        return self.codec_class(
            self.tokenizer,
            src_vocab,
            tgt_vocab,
            unk_replace=self.unk_replace,
            source_lang=self.source_lang,
            truecaser=self._fit_truecaser(train) if self.truecase else None,
        )

    def _codec_from_counts(
        self, src: Counter[str], tgt: Counter[str], spellings: dict[str, Counter[str]]
    ) -> TranslationCodec:
        """`_fit_codec` from token and spelling counts (streaming, word level)."""
        return self.codec_class(
            self.tokenizer,
            Vocab.from_counts(src, max_size=self.src_vocab_size, min_count=self.min_count),
            Vocab.from_counts(tgt, max_size=self.tgt_vocab_size, min_count=self.min_count),
            unk_replace=self.unk_replace,
            source_lang=self.source_lang,
            truecaser=Truecaser.from_counts(spellings) if self.truecase else None,
        )

    @staticmethod
    def _fit_truecaser(train: list[Pair]) -> Truecaser:
        """Usual spellings of the training targets as written (tokenised, not lowercased)."""
        cased = Tokenizer("sentence")
        return Truecaser.fit(cased(target) for *_, target in train)

    def _build_vocab(self, sequences: Iterable[list[str]], size: int) -> Vocab | BPEVocab:
        if self.tokenizer_kind == "bpe":
            return BPEVocab.train(sequences, vocab_size=size, min_count=max(self.min_count, 2))
        return Vocab.build(sequences, max_size=size, min_count=self.min_count)

    def _dataset(self, examples: list, split: str) -> TensorBatchDataset:
        """Encode examples into padded tensors: pairs for "train", else (text, src, [pair, ...])
        with every translation as a reference (the first one is the target the loss sees)."""
        train = split == "train"
        sources = [src for _, src, *_ in examples]
        targets = [ex[2] if train else ex[2][0][2] for ex in examples]
        tensors = self.codec.encode_pairs(sources, targets)
        trim = {key: f"{key[:3]}_lengths" for key in tensors if key.endswith(("tokens", "words"))}
        if train:  # one target each; references are only needed for scoring
            self.examples[split] = [(text, [tgt]) for text, _, tgt, _ in examples]
            return TensorBatchDataset(tensors, trim=trim)
        references = [[self.reference(p[3], p[2]) for p in pairs] for *_, pairs in examples]
        self.examples[split] = [(text, refs) for (text, _, _), refs in zip(examples, references)]
        return TensorBatchDataset(tensors, trim=trim, lists={"references": references})

    def reference(self, text: str, tokens: list[str]) -> str:
        """What a hypothesis is scored against: the sentence as the corpus writes it (only
        normalised: NFC, single spaces); with `original_references` off, its tokens joined."""
        return normalize(text) if self.original_references else detokenize(tokens)

    # Batches ---------------------------------------------------------------------------------
    def batch_sampler(self, dataset: TensorBatchDataset, *, train: bool) -> BucketBatchSampler:
        """Length buckets: for training shuffled (seed, epoch) within buckets of `bucket_batches`
        batches; for evaluation the whole split sorted."""
        if isinstance(dataset, ShardDataset):
            lengths = torch.from_numpy(dataset.reader.lengths.astype("int64"))
            tensors = {"src_lengths": lengths[:, 0], "tgt_lengths": lengths[:, 1]}
        else:
            tensors = dataset.tensors
        # Sort key: source length, then target length.
        lengths = tensors["src_lengths"] * (int(tensors["tgt_lengths"].max()) + 1)
        lengths = lengths + tensors["tgt_lengths"]
        sampler = EpochShuffleSampler(dataset, self.seed) if train else SequentialSampler(dataset)
        return BucketBatchSampler(
            sampler,
            self.batch_size if train else self.eval_batch_size,
            lengths=lengths,
            bucket_batches=self.bucket_batches if train else None,
            shuffle=train,
            seed=self.seed,
        )

    # Model sizes, samples, a user's test set --------------------------------------------------
    def model_kwargs(self) -> dict:
        """Before `setup`, the configured caps (so a model's size can be computed without
        reading the corpus: benchmarks/model_sizes.py)."""
        if self.codec is not None:
            return self.codec.model_kwargs()
        return {
            "src_vocab_size": self.src_vocab_size,
            "tgt_vocab_size": self.tgt_vocab_size,
            "pad_id": 0,
            "sos_id": 2,
            "eos_id": 3,
            "unk_id": 1,
            "max_target_len": (self.max_length or 50) + 2,
        }

    def sample_pairs(self, split: str, count: int) -> list[tuple[str, str]]:
        """(source, first reference); for "val", the book's sample sentences come first."""
        pairs = []
        if split == "val":
            pairs = [
                (source, self.reference(target, self.tokenizer(target)))
                for source, target in BOOK_SENTENCES
            ]
        for text, refs in self.examples.get(split, [])[: max(0, count - len(pairs))]:
            pairs.append((text, refs[0] if isinstance(refs[0], str) else detokenize(refs[0])))
        return pairs[:count]

    def read_test_set(self, path: str | Sequence[str]) -> TensorBatchDataset:
        """Pairs in a training format (a TSV with the configured columns, a Moses pair or an
        OPUS zip); each source sentence is scored against all its translations there."""
        pairs = []
        for text, target in self.read_pairs(self._path_files(path)):
            src, tgt = self.tokenizer(text), self.tokenizer(target)
            if src and tgt:
                pairs.append((text, src, tgt, target))
        if not pairs:
            raise DataError(f"{path} has no sentence pairs (expected target<TAB>source lines)")
        return self._dataset(self._group_by_source(pairs), "test")
