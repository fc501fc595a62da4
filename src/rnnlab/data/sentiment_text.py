"""The training sentences of a sentiment split as a word stream: ULMFiT's second stage (#20).

ULMFiT (Howard & Ruder, 2018) fine-tunes the pretrained language model on the target task's own
text before it becomes a classifier, so its embedding and layers learn the words and style of
reviews. `SentimentText` is the book datamodule (task=book: word windows, the book codec, the
language model) reading that text: the *training* sentences of the split `SentimentData` draws
with the same `seed` and fractions (`split_val_fraction`, `split_test_fraction`) as the
classifier run that follows, so no validation or test sentence is ever read, and no label.

The sentences are shuffled by seed and joined as paragraphs (each ends with the paragraph
token); the stream's own `val_fraction`/`test_fraction` then hold out the last of them to
validate the language model. The vocabulary is every word of the training sentences, the held-out
ones included (they are all the classifier's training text, whose vocabulary it is), so every
word the classifier will read comes out of this stage trained or at least mapped from the LM.
`experiment=lm_on_sentiment` is the preset (README).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from pathlib import Path

from torch.utils.data import Dataset

from rnnlab.codecs.book import SPECIALS, BookCodec
from rnnlab.data.book import BookData
from rnnlab.data.sentiment import SentimentData
from rnnlab.data.vocab import Vocab
from rnnlab.errors import require


class SentimentText(BookData):
    """The training sentences of a sentiment split (see the module docstring) as BookData.

    `path`, `format`, `cache_dir` are `SentimentData`'s (a UCI file, files or folder, an aclImdb
    folder; null downloads the UCI zip); every other option is `BookData`'s."""

    def __init__(
        self,
        path: str | Sequence[str] | None = None,
        format: str = "auto",
        split_val_fraction: float = 0.1,
        split_test_fraction: float = 0.1,
        cache_dir: str = "data",
        **book_options,
    ):
        super().__init__(path=path, **book_options)
        require(
            self.level == "word",
            "data.level",
            f"the sentiment classifier reads words: use data.level=word, got {self.level}",
        )
        self.sentences = SentimentData(
            path=path,
            format=format,
            val_fraction=split_val_fraction,
            test_fraction=split_test_fraction,
            cache_dir=cache_dir,
            seed=self.seed,
        )

    def prepare_data(self) -> None:
        self.sentences.prepare_data()

    def files(self, path: str | Sequence[str] | None) -> list[Path]:
        """What `path` names (for messages); `read_text` reads it as sentiment data."""
        if path is None:
            return [self.sentences.cache_dir]
        return [Path(p) for p in ([path] if isinstance(path, (str, Path)) else path)]

    def training_sentences(self) -> list[str]:
        """The split's training sentences, shuffled by seed."""
        sentences = [text for text, _ in self.sentences.split()["train"]]
        random.Random(self.seed).shuffle(sentences)
        return sentences

    def build_splits(self) -> None:
        if self.codec is None:  # the words of all training sentences (the module docstring)
            tokens = self.tokenizer(self.read_text([]))
            vocab = Vocab.build(
                [tokens], max_size=self.max_vocab, min_count=self.min_count, specials=SPECIALS
            )
            self.codec = BookCodec(self.tokenizer, vocab, self.backward)
        super().build_splits()

    def read_text(self, files: Iterable[Path]) -> str:
        """The training sentences as paragraphs, as the language model reads them."""
        text = "\n\n".join(self.training_sentences()) + "\n"
        return text.lower() if self.tokenizer.lowercase else text

    def read_test_set(self, path: str | Sequence[str]) -> Dataset:
        """Every sentence of the sentiment data at `path` (all its splits), as a test stream."""
        sources = self.sentences.read_sources(path)
        text = "\n\n".join(text for part in sources.values() for text, _ in part) + "\n"
        stream = self.codec.encode_text(text.lower() if self.tokenizer.lowercase else text)
        self.streams["test"] = stream
        return self._dataset(stream, train=False)
