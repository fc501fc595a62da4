"""Sentences or reviews as word ids (the `review` tokenizer), answers as a label and its
probability. Texts longer than `keep_last_tokens` keep their last tokens, as Keras'
`pad_sequences` does (the verdict of a review tends to be at its end)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rnnlab.codecs.base import Batch, Codec, stored_tokenizer
from rnnlab.data.text import Tokenizer
from rnnlab.data.vocab import PAD, UNK, Vocab
from rnnlab.errors import InputError

LABELS = ("negative", "positive")


@dataclass
class SentimentCodec(Codec):
    """`vocab`: built from the training split (<pad> <unk> first); unknown words -> <unk>.
    `backward`: the model reads each text's tokens last to first (ULMFiT's backward classifier,
    fine-tuned from a backward language model)."""

    tokenizer: Tokenizer
    vocab: Vocab
    keep_last_tokens: int = 100
    backward: bool = False

    @classmethod
    def fit(
        cls,
        tokenizer: Tokenizer,
        texts: Iterable[str],
        *,
        keep_last_tokens: int,
        max_features: int | None,
        min_count: int,
        backward: bool = False,
    ) -> SentimentCodec:
        """A vocabulary of the most frequent words of the training texts."""
        vocab = Vocab.build(
            (tokenizer(text)[-keep_last_tokens:] for text in texts),
            max_size=max_features,
            min_count=min_count,
            specials=(PAD, UNK),
        )
        return cls(tokenizer, vocab, keep_last_tokens, backward)

    def tokens(self, text: str) -> list[str]:
        """The tokens the model reads, in its order."""
        tokens = self.tokenizer(text)[-self.keep_last_tokens :]
        return tokens[::-1] if self.backward else tokens

    def encode_example(self, text: str) -> dict[str, Tensor]:
        tokens = self.tokens(text)
        if not tokens:
            raise InputError("empty sentence: type some words, e.g. the food was great")
        ids = self.vocab.encode(tokens)
        return {"inputs": torch.tensor(ids), "lengths": torch.tensor(len(ids))}

    def decode(self, batch: Batch, outputs: Mapping[str, Tensor]) -> list[str]:
        """Class probabilities `probs` (B, 2) -> "positive (p=0.93)" per row; a row whose
        `inputs` (B, T) hold no known word says so."""
        probs, classes = outputs["probs"].max(-1)
        inputs = batch["inputs"]
        known = ((inputs != self.vocab.pad_id) & (inputs != self.vocab.unk_id)).sum(1)
        return [
            f"{LABELS[c]} (p={p:.2f}{'' if k else '; no known words'})"
            for p, c, k in zip(probs.tolist(), classes.tolist(), known.tolist())
        ]

    def vocabularies(self) -> dict[str, Vocab]:
        return {"tokens": self.vocab}

    def model_kwargs(self) -> dict[str, Any]:
        return {"vocab_size": len(self.vocab), "num_classes": 2, "pad_id": self.vocab.pad_id}

    def state_dict(self) -> dict[str, Any]:
        return {
            "tokenization": self.tokenizer.state_dict(),
            "vocab": self.vocab.to_dict(),
            "keep_last_tokens": self.keep_last_tokens,
            "backward": self.backward,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> SentimentCodec:
        # States written before codecs carry it as the data config's max_length (its old name).
        keep = state.get("max_length") or state["keep_last_tokens"]
        tokenizer = stored_tokenizer(state, scheme="review")
        vocab = Vocab.from_dict(state["vocab"])
        return cls(tokenizer, vocab, keep, bool(state.get("backward", False)))
