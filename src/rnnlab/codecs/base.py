"""What every task's codec provides: strings <-> tensors, with the vocabularies and settings
that takes, and a JSON-able state.

The DataModule builds its codec from the training data (or is given a checkpoint's) and encodes
its splits with it; the LightningModule holds it and writes `state_dict()` into every checkpoint
(plain dicts, lists, strings and numbers: loading one executes nothing); `from_state` rebuilds
it with no data. predict, evaluate, chat, the callbacks and the text metrics see only a codec.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol

from torch import Tensor

from rnnlab.data.batching import pad_collate
from rnnlab.data.subwords import BPEVocab, vocab_labels
from rnnlab.data.text import Tokenizer
from rnnlab.data.vocab import Vocab

Batch = dict[str, Any]  # tensors, plus lists of strings some batches carry (`references`)


class Codec(Protocol):
    """A task's strings <-> tensors. Concrete codecs subclass it (and inherit the defaults)."""

    #: Printed between input and answer in samples, e.g. "535+61 = 596".
    answer_separator: ClassVar[str] = " → "
    #: Inputs are image file paths (predict's `image=` is for these tasks only).
    reads_images: ClassVar[bool] = False

    @abstractmethod
    def encode_example(self, text: str) -> dict[str, Tensor]:
        """One user string -> one example's tensors; InputError (quoting at most 80 characters
        of the text, `errors.quote`) when it cannot be read."""

    def collate(self, examples: Sequence[Mapping[str, Tensor]]) -> Batch:
        """Examples from `encode_example` -> one batch (1-D tensors right-padded with 0)."""
        return pad_collate(examples, pad_id=0)

    def encode(self, texts: Sequence[str]) -> Batch:
        """Strings -> one batch; raises the InputError of the first one that cannot be read."""
        return self.collate([self.encode_example(text) for text in texts])

    @abstractmethod
    def decode(self, batch: Batch, outputs: Mapping[str, Tensor]) -> list[str]:
        """A batch and the model's predictions for it (`TaskModule.predict_batch`) -> one
        string per row."""

    def vocabularies(self) -> dict[str, Vocab | BPEVocab]:
        """Vocabularies by role (`src`, `tgt`, or `tokens` for a single one), for labels."""
        return {}

    @abstractmethod
    def model_kwargs(self) -> dict[str, Any]:
        """What the model's constructor needs from the data (vocabulary sizes, special ids,
        number of classes)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Settings and vocabularies as plain JSON-able values (what checkpoints store)."""

    @classmethod
    @abstractmethod
    def from_state(cls, state: Mapping[str, Any]) -> Codec:
        """The codec `state_dict` describes (other keys are ignored)."""


class Seq2SeqCodec(Codec):
    """Source and target token sequences (`src_tokens`, `tgt_tokens` with <sos> ... <eos>); the
    answer is the generated target. Adds what text metrics and attention maps need."""

    src_vocab: Vocab | BPEVocab
    tgt_vocab: Vocab | BPEVocab

    @abstractmethod
    def join(self, tokens: list[str]) -> str:
        """Target tokens -> the answer's text."""

    def decode(self, batch: Batch, outputs: Mapping[str, Tensor]) -> list[str]:
        """Generated `tokens` (B, T) -> text, up to each row's <eos>."""
        return [self.join(self.tgt_vocab.decode(row)) for row in outputs["tokens"].tolist()]

    def reference_texts(self, batch: Batch) -> list[list[str]]:
        """What text metrics (BLEU, chrF) score `decode`'s answers against, one or more strings
        per row: the `references` a batch carries (every translation of a sentence), else its
        own target tokens (B, T) decoded."""
        if "references" in batch:
            return batch["references"]
        targets = batch["tgt_tokens"][:, 1:].tolist()  # without <sos>
        return [[self.join(self.tgt_vocab.decode(row))] for row in targets]

    def source_labels(self, batch: Batch, row: int) -> list[str]:
        """One label per source token of `row` (up to its length)."""
        length = int(batch["src_lengths"][row])
        return vocab_labels(self.src_vocab, batch["src_tokens"][row, :length].tolist())

    def token_labels(
        self, batch: Batch, outputs: Mapping[str, Tensor], row: int
    ) -> tuple[list[str], list[str]]:
        """Axis labels of `row`'s attention map: source tokens, then generated tokens up to and
        including <eos>."""
        ids = outputs["tokens"][row].tolist()
        eos = self.tgt_vocab.eos_id
        ids = ids[: ids.index(eos) + 1] if eos in ids else ids
        return self.source_labels(batch, row), vocab_labels(self.tgt_vocab, ids)

    def vocabularies(self) -> dict[str, Vocab | BPEVocab]:
        return {"src": self.src_vocab, "tgt": self.tgt_vocab}


def stored_tokenizer(state: Mapping[str, Any], **fixed: Any) -> Tokenizer:
    """The tokenizer of a codec state (under `tokenization`). States written before codecs had
    none: their options (`lowercase`, `whitelist`, ...) were the data config's, which loading
    merges into the state; `fixed` gives what the task always used (`scheme`, ...)."""
    if "tokenization" in state:
        return Tokenizer.from_state(state["tokenization"])
    return Tokenizer.from_state({**state, **fixed})
