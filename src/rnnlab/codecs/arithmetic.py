"""Arithmetic questions as characters: "535+61" -> <digits, operator, digits>, answers back.

Questions may be reversed (`reverse_input`, the Keras example's trick); answers are the digits
of the result, with a leading `-` when it is negative, between <sos> and <eos>.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from rnnlab.codecs.base import Seq2SeqCodec
from rnnlab.data.vocab import EOS, PAD, SOS, Vocab
from rnnlab.errors import InputError, quote

OPERATORS = "+-*"
_QUESTION = re.compile(r"^(\d+)([-+*])(\d+)$")


def num_digits(values: Tensor, max_digits: int) -> Tensor:
    """Decimal digit count of non-negative int64 values (0 has one digit); exact, no float log."""
    powers = 10 ** torch.arange(1, max_digits + 1)
    return 1 + (values[:, None] >= powers).sum(1)


def digit_at(values: Tensor, digits: Tensor, position: Tensor) -> Tensor:
    """Digit at `position` (0 = most significant) of each value; broadcasts over positions."""
    shift = (digits - 1 - position).clamp(min=0)
    return (values // 10**shift) % 10


@dataclass
class ArithmeticCodec(Seq2SeqCodec):
    """Questions "a<op>b" of at most `digits`-digit numbers and the `operators` trained on."""

    digits: int = 3
    operators: str = "+"
    reverse_input: bool = True
    vocab: Vocab = field(init=False)

    answer_separator: ClassVar[str] = " = "

    def __post_init__(self) -> None:
        self.vocab = Vocab("0123456789" + OPERATORS, specials=(PAD, SOS, EOS))
        self.src_vocab = self.tgt_vocab = self.vocab
        self._digit_ids = torch.tensor([self.vocab.stoi[d] for d in "0123456789"])
        self._operator_ids = torch.tensor([self.vocab.stoi[op] for op in self.operators])
        self.max_question_len = 2 * self.digits + 1
        self.max_answer_len = 2 * self.digits if "*" in self.operators else self.digits + 1

    def answers(self, a: Tensor, b: Tensor, op: Tensor) -> Tensor:
        """The results of questions (a, b, operator index), each (N,) -> (N,)."""
        results = torch.stack(
            [a + b if s == "+" else a - b if s == "-" else a * b for s in self.operators]
        )
        return results.gather(0, op[None]).squeeze(0)

    def _question_tokens(self, a: Tensor, b: Tensor, op: Tensor) -> tuple[Tensor, Tensor]:
        """Questions -> src_tokens (N, max_question_len) and src_lengths (N,)."""
        max_digits = 2 * self.digits
        len_a, len_b = num_digits(a, max_digits), num_digits(b, max_digits)
        j = torch.arange(self.max_question_len)[None]
        la, lb = len_a[:, None], len_b[:, None]
        src = torch.where(j < la, self._digit_ids[digit_at(a[:, None], la, j)], 0)
        src = torch.where(j == la, self._operator_ids[op][:, None], src)
        in_b = (j > la) & (j <= la + lb)
        src = torch.where(
            in_b, self._digit_ids[digit_at(b[:, None], lb, (j - la - 1).clamp(min=0))], src
        )
        src_lengths = len_a + 1 + len_b
        if self.reverse_input:
            index = torch.where(j < src_lengths[:, None], src_lengths[:, None] - 1 - j, j)
            src = src.gather(1, index)
        return src, src_lengths

    def _answer_tokens(self, result: Tensor) -> tuple[Tensor, Tensor]:
        """Results (N,) -> tgt_tokens (N, max_answer_len + 2) and tgt_lengths (N,)."""
        negative = (result < 0).long()[:, None]
        magnitude = result.abs()
        len_r = num_digits(magnitude, 2 * self.digits)[:, None]
        k = torch.arange(self.max_answer_len + 2)[None]
        body = k - 1 - negative  # position inside the digits
        tgt = torch.where(
            (body >= 0) & (body < len_r),
            self._digit_ids[digit_at(magnitude[:, None], len_r, body.clamp(min=0))],
            0,
        )
        tgt = torch.where((k == 1) & (negative == 1), self.vocab.stoi["-"], tgt)
        tgt[:, 0] = self.vocab.sos_id
        tgt = torch.where(k == len_r + negative + 1, self.vocab.eos_id, tgt)
        return tgt, (len_r + negative + 2).squeeze(1)

    def tokens(self, a: Tensor, b: Tensor, op: Tensor) -> dict[str, Tensor]:
        """Questions (a, b, operator index), each (N,), -> padded question and answer tokens,
        vectorised (no Python loop over examples)."""
        src, src_lengths = self._question_tokens(a, b, op)
        tgt, tgt_lengths = self._answer_tokens(self.answers(a, b, op))
        return {
            "src_tokens": src,
            "src_lengths": src_lengths,
            "tgt_tokens": tgt,
            "tgt_lengths": tgt_lengths,
        }

    def parse(self, text: str) -> tuple[int, str, int]:
        """ "535 + 61" -> (535, "+", 61), or InputError saying what is wrong."""
        question = text.replace(" ", "").split("=")[0]
        if not question:
            raise InputError(f"empty question: type something like 535{self.operators[0]}61")
        for position, char in enumerate(question, 1):
            if char not in self.vocab:
                raise InputError(
                    f"character {char!r} at position {position} is not in the vocabulary: "
                    f"use digits and {self.operators!r}, e.g. 535{self.operators[0]}61"
                )
        match = _QUESTION.match(question)
        if match is None:
            raise InputError(
                f"{quote(text)} is not a question of the form <number><operator><number>"
            )
        a, op, b = match.groups()
        if op not in self.operators:
            raise InputError(
                f"operator {op!r} was not trained; this model knows {self.operators!r}"
            )
        if max(len(a.lstrip("0") or "0"), len(b.lstrip("0") or "0")) > self.digits:
            raise InputError(
                f"numbers have at most {self.digits} digits in this model: {quote(text)}"
            )
        return int(a), op, int(b)

    def encode_example(self, text: str) -> dict[str, Tensor]:
        a, op, b = self.parse(text)
        tokens = self.tokens(
            torch.tensor([a]), torch.tensor([b]), torch.tensor([self.operators.index(op)])
        )
        example = {key: value[0] for key, value in tokens.items()}
        example["src_tokens"] = example["src_tokens"][: int(example["src_lengths"])]
        example["tgt_tokens"] = example["tgt_tokens"][: int(example["tgt_lengths"])]
        return example

    def join(self, tokens: list[str]) -> str:
        return "".join(tokens)

    def model_kwargs(self) -> dict[str, Any]:
        return {
            "src_vocab_size": len(self.vocab),
            "tgt_vocab_size": len(self.vocab),
            "pad_id": self.vocab.pad_id,
            "sos_id": self.vocab.sos_id,
            "eos_id": self.vocab.eos_id,
            "max_target_len": self.max_answer_len + 1,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "digits": self.digits,
            "operators": self.operators,
            "reverse_input": self.reverse_input,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ArithmeticCodec:
        return cls(state["digits"], state["operators"], state["reverse_input"])
