"""Word embeddings in TensorBoard's projector, each point labelled with its word.

At the end of fit, every embedding table of the model that matches a vocabulary of the task's
codec (`Codec.vocabularies()`) is exported with `SummaryWriter.add_embedding`: a seq2seq
model's `src_embedding` with the `src` vocabulary and its decoder's embedding with `tgt`, any
other table (a language model's `embedding`) with the single `tokens` one. The PROJECTOR tab then shows PCA / t-SNE / UMAP views and
nearest neighbours of any word. Only the first `max_words` ids are written (the specials and
the most frequent tokens: vocabularies are built most frequent first).
"""

from __future__ import annotations

import logging

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn

from rnnlab.codecs.base import Codec
from rnnlab.data.subwords import BPEVocab, vocab_labels
from rnnlab.data.vocab import Vocab
from rnnlab.tasks.base import TaskModule

log = logging.getLogger(__name__)


def _vocab_for(name: str, vocabularies: dict[str, Vocab | BPEVocab]) -> Vocab | BPEVocab | None:
    """The vocabulary an embedding table called `name` indexes, or None."""
    if "src" in name:
        return vocabularies.get("src")
    if "decoder" in name or "tgt" in name:
        return vocabularies.get("tgt")
    return vocabularies.get("tokens")


def printable(token: str) -> str:
    """A projector label: one line, no tabs, visible spaces, never empty."""
    return token.replace("\t", "\\t").replace("\n", "\\n").replace(" ", "␣") or "∅"


def embedding_tables(
    net: nn.Module, codec: Codec, max_words: int
) -> list[tuple[str, Tensor, list[str]]]:
    """(tag, weights (N, E), labels) for each embedding table with a matching vocabulary."""
    tables = []
    vocabularies = codec.vocabularies()
    for name, module in net.named_modules():  # a shared table is listed once
        if not isinstance(module, nn.Embedding):
            continue
        vocab = _vocab_for(name, vocabularies)
        if vocab is None or len(vocab) != module.num_embeddings:
            continue
        count = min(max_words, module.num_embeddings)
        labels = [printable(label) for label in vocab_labels(vocab, range(count))]
        tables.append((name, module.weight[:count].detach().float().cpu(), labels))
    return tables


class EmbeddingProjector(pl.Callback):
    """At the end of fit, writes the model's word embeddings for TensorBoard's projector."""

    def __init__(self, max_words: int = 10_000):
        self.max_words = max_words

    def on_fit_end(self, trainer: pl.Trainer, module: TaskModule) -> None:
        if not trainer.is_global_zero:
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers:
            return
        tables = embedding_tables(module.net, module.codec, self.max_words)
        if not tables:
            log.info("no word embeddings to project: no embedding table matches a vocabulary")
        for tag, weights, labels in tables:
            for logger in loggers:
                logger.experiment.add_embedding(
                    weights, metadata=labels, tag=tag, global_step=trainer.global_step
                )
