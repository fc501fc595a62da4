"""Tweet -> reply pairs for a seq2seq chatbot (seed book ch5), on the translation pipeline.

Formats (`format=auto` tells them apart per file by the blank lines of the second kind):
- `alternating`: Marsan-Ma/chat_corpus `twitter_en.txt` (tweet, reply, tweet, reply, ...; CRLF
  tolerated; a dangling last line is reported and dropped), plain or gzipped;
- `conversation`: turns on consecutive lines, conversations separated by blank lines; every
  pair of consecutive turns becomes a (tweet, reply) pair.
Without `path`, the full `twitter_en.txt.gz` (~750k lines) is downloaded once into `data_dir`.

Preprocessing, the book's improved: HTML entities unescaped (`&amp;` -> `&`), lowercased,
characters outside `whitelist` turned into spaces, punctuation split into tokens; questions of
at most `max_question_length` tokens and answers of `min_answer_length`..`max_answer_length`;
duplicates dropped. One vocabulary by frequency over both sides (`vocab_size`, specials
included: the book keeps 6000 words + unk), so encoder and decoder can share one embedding.
Splits (70/15/15 by default) are drawn over distinct questions: no question in two splits, and
all replies of a question are its references.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from rnnlab.codecs.chat import ChatCodec
from rnnlab.data.download import DownloadError, check_gzip, download
from rnnlab.data.readers import (
    CorpusError,
    read_alternating_pairs,
    read_conversation_pairs,
    read_lines,
)
from rnnlab.data.text import Tokenizer, detokenize
from rnnlab.data.translate import Pair, TranslationData
from rnnlab.data.vocab import Vocab
from rnnlab.errors import DataError, require, require_one_of, require_positive

log = logging.getLogger(__name__)

FORMATS = ("auto", "alternating", "conversation")
# A branch head, not a release (the file has been unchanged since 2016, but nobody publishes
# its SHA-256): not pinned; check_gzip reads it to the end, which catches truncation.
TWITTER_URL = "https://github.com/Marsan-Ma/chat_corpus/raw/master/twitter_en.txt.gz"
WHITELIST = "abcdefghijklmnopqrstuvwxyz0123456789 .,!?'"
# The book's two seed prompts; `sample_pairs("val", n)` gives each `REPLIES_PER_PROMPT` times, so
# the samples callback shows that many sampled replies each validation epoch.
BOOK_PROMPTS = (
    "happy birthday have a nice day",
    "the presidential debate held last night was spectacular",
)
REPLIES_PER_PROMPT = 5


def detect_format(path: Path, probe_lines: int = 2000) -> str:
    """`conversation` if a blank line appears among the first lines, else `alternating`."""
    for number, line in read_lines(path):
        if not line.strip():
            return "conversation"
        if number >= probe_lines:
            break
    return "alternating"


class ChatData(TranslationData):
    """(tweet, reply) pairs as `src_tokens`/`tgt_tokens` batches over one shared vocabulary."""

    codec_class = ChatCodec
    original_references = False  # lowercase replies, scored against lowercased references
    path_hint = (
        "alternating tweet/reply lines like twitter_en.txt, or conversations separated by blank "
        "lines"
    )
    path_counts = None  # any number of conversation files

    def __init__(
        self,
        path: str | Sequence[str] | None = None,
        format: str = "auto",  # noqa: A002 - the config key users type
        url: str = TWITTER_URL,
        data_dir: str = "data/chat",
        max_pairs: int | None = None,
        lowercase: bool = True,
        whitelist: str | None = WHITELIST,
        max_question_length: int = 20,
        min_answer_length: int = 3,
        max_answer_length: int = 20,
        vocab_size: int = 6004,
        min_count: int = 1,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        bucket_batches: int | None = 50,
        **loader_options,
    ):
        require_one_of(format, FORMATS, "data.format")
        require_positive(max_question_length, "data.max_question_length")
        require(
            1 <= min_answer_length <= max_answer_length,
            "data.min_answer_length",
            f"must be in 1..data.max_answer_length ({max_answer_length}), got {min_answer_length}",
        )
        super().__init__(
            corpus="files",
            path=path,
            url=url,
            data_dir=data_dir,
            max_pairs=max_pairs,
            lowercase=lowercase,
            max_length=None,
            max_length_ratio=None,
            tokenizer="word",
            src_vocab_size=vocab_size,
            tgt_vocab_size=vocab_size,
            min_count=min_count,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            bucket_batches=bucket_batches,
            unk_replace=False,
            truecase=False,  # replies stay lowercase, as tweets are written
            **loader_options,
        )
        self.format = format
        self.tokenizer = Tokenizer("sentence", lowercase=lowercase, html=True, whitelist=whitelist)
        self.max_question_length = max_question_length
        self.min_answer_length = min_answer_length
        self.max_answer_length = max_answer_length

    # Reading ---------------------------------------------------------------------------------
    def _check_source(self, corpus: str, path: str | Sequence[str] | None) -> None:
        """Any path (or none: download) is fine here; files are checked when read."""

    def _download(self) -> Path:
        try:
            return download(self.url, self.data_dir / "twitter_en.txt.gz", validate=check_gzip)
        except DownloadError as error:
            raise DataError(
                f"{error}. Or train on a file you have: data.path=<twitter_en.txt or a "
                "conversation file> (e.g. ../shared/data/chat/twitter_en_head.txt)"
            ) from None

    def prepare_data(self) -> None:
        if not self.path:
            self._download()

    def _files(self) -> list[Path]:
        return self._path_files(self.path) if self.path else [self._download()]

    def read_pairs(self, files: Sequence[Path] | None = None) -> Iterator[tuple[str, str]]:
        """(tweet, reply) strings of every file, streamed, at most `max_pairs` in all."""
        files = list(files) if files is not None else self._files()
        count = 0
        try:
            for file in files:
                kind = detect_format(file) if self.format == "auto" else self.format
                log.info("reading %s as %s pairs", file, kind)
                reader = (
                    read_alternating_pairs if kind == "alternating" else read_conversation_pairs
                )
                for pair in reader(file):
                    if self.max_pairs is not None and count >= self.max_pairs:
                        return
                    count += 1
                    yield pair
        except CorpusError as error:
            raise DataError(str(error)) from None

    def _reject(self, src: list[str], tgt: list[str]) -> str | None:
        if len(src) > self.max_question_length:
            return "data.max_question_length"
        if len(tgt) > self.max_answer_length:
            return "data.max_answer_length"
        if len(tgt) < self.min_answer_length:
            return "data.min_answer_length"
        return None

    def _fit_codec(self, train: list[Pair]) -> ChatCodec:
        """One vocabulary over both sides of the training split."""
        sides = itertools.chain((src for _, src, _, _ in train), (tgt for _, _, tgt, _ in train))
        vocab = self._build_vocab(sides, self.src_vocab_size)
        return ChatCodec(self.tokenizer, vocab, vocab)

    def _codec_from_counts(self, src: Counter, tgt: Counter, spellings: dict) -> ChatCodec:
        """One vocabulary over both sides' counts (streaming)."""
        vocab = Vocab.from_counts(src + tgt, max_size=self.src_vocab_size, min_count=self.min_count)
        return ChatCodec(self.tokenizer, vocab, vocab)

    # Samples -------------------------------------------------------------------------------------
    def sample_pairs(self, split: str, count: int) -> list[tuple[str, str | None]]:
        """(prompt, a reference reply or None); for "val", the book's prompts come first, each
        `REPLIES_PER_PROMPT` times (with sampling, that many different replies)."""
        pairs: list[tuple[str, str | None]] = []
        if split == "val":
            pairs = [(prompt, None) for prompt in BOOK_PROMPTS for _ in range(REPLIES_PER_PROMPT)]
        for text, refs in self.examples.get(split, [])[: max(0, count - len(pairs))]:
            pairs.append((text, refs[0] if isinstance(refs[0], str) else detokenize(refs[0])))
        return pairs
