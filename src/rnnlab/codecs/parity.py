"""Bit strings as tokens (`0` -> 1, `1` -> 2, <pad> 0); answers are the predicted parity, or
with `target: count` the parity and the predicted number of ones."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from rnnlab.codecs.base import Batch, Codec
from rnnlab.data.vocab import PAD, Vocab
from rnnlab.errors import InputError

TARGETS = ("parity", "count")


@dataclass
class ParityCodec(Codec):
    """`target`: what the model predicts, the parity (2 classes) or the count of ones in
    strings of at most `length` bits (length + 1 classes)."""

    length: int = 50
    target: str = "parity"
    vocab: Vocab = field(init=False)

    def __post_init__(self) -> None:
        self.vocab = Vocab("01", specials=(PAD,))

    def answer(self, count: int) -> str:
        """What a predicted class reads as (a count of ones with `target: count`)."""
        return str(count % 2) if self.target == "parity" else f"{count % 2} ({count} ones)"

    def encode_example(self, text: str) -> dict[str, Tensor]:
        text = text.strip()
        if not text:
            raise InputError("empty input: type a string of 0s and 1s, e.g. 0110")
        bad = next((i for i, ch in enumerate(text) if ch not in "01"), None)
        if bad is not None:
            raise InputError(
                f"character {text[bad]!r} at position {bad + 1} is not a bit: type only 0s and 1s"
            )
        bits = torch.tensor([int(ch) for ch in text])
        return {"inputs": bits + 1, "lengths": torch.tensor(len(text)), "targets": bits.sum()}

    def decode(self, batch: Batch, outputs: Mapping[str, Tensor]) -> list[str]:
        """Class probabilities `probs` (B, C) -> the most likely answer of each row."""
        return [self.answer(c) for c in outputs["probs"].argmax(-1).tolist()]

    def vocabularies(self) -> dict[str, Vocab]:
        return {"tokens": self.vocab}

    def model_kwargs(self) -> dict[str, Any]:
        num_classes = 2 if self.target == "parity" else self.length + 1
        return {"vocab_size": len(self.vocab), "num_classes": num_classes, "pad_id": 0}

    def state_dict(self) -> dict[str, Any]:
        return {"length": self.length, "target": self.target}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ParityCodec:
        return cls(state["length"], state["target"])
