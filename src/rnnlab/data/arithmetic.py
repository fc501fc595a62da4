"""String arithmetic ("535+61" -> "596", seed 000 / keras-io addition), generated with torch ops.

Operands follow the Keras example: a digit count drawn uniformly from 1..digits, then the digits.
Questions are deduplicated by a canonical key (a+b and b+a are one question), then split, so no
test question (nor its mirror) is ever seen in training.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor

from rnnlab.data.base import TaskDataModule
from rnnlab.data.batching import TensorBatchDataset
from rnnlab.data.vocab import EOS, PAD, SOS, Vocab
from rnnlab.errors import ConfigError, InputError, quote, require

OPERATORS = "+-*"
_COMMUTATIVE = {"+", "*"}
_ENUMERATE_LIMIT = 5_000_000  # spaces up to this size are enumerated instead of sampled


def _num_digits(values: Tensor, max_digits: int) -> Tensor:
    """Decimal digit count of non-negative int64 values (0 has one digit); exact, no float log."""
    powers = 10 ** torch.arange(1, max_digits + 1)
    return 1 + (values[:, None] >= powers).sum(1)


def _digit(values: Tensor, num_digits: Tensor, position: Tensor) -> Tensor:
    """Digit at `position` (0 = most significant) of each value; broadcasts over positions."""
    shift = (num_digits - 1 - position).clamp(min=0)
    return (values // 10**shift) % 10


class ArithmeticData(TaskDataModule):
    """Questions "a<op>b" -> answers, as character tokens with <pad>/<sos>/<eos>."""

    answer_separator = " = "

    def __init__(
        self,
        digits: int = 3,
        operators: str = "+",
        reverse_input: bool = True,
        train_size: int = 50_000,
        val_size: int = 5_000,
        test_size: int = 5_000,
        **loader_options,
    ):
        super().__init__(**loader_options)
        require(1 <= digits <= 8, "data.digits", f"must be between 1 and 8, got {digits}")
        operators = "".join(dict.fromkeys(operators))
        require(
            bool(operators) and all(op in OPERATORS for op in operators),
            "data.operators",
            f"must be made of {OPERATORS!r}, got {operators!r}",
        )
        for key, size in (
            ("train_size", train_size),
            ("val_size", val_size),
            ("test_size", test_size),
        ):
            require(size > 0, f"data.{key}", f"must be a positive integer, got {size}")
        self.digits = digits
        self.operators = operators
        self.reverse_input = reverse_input
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.vocab = Vocab("0123456789" + OPERATORS, specials=(PAD, SOS, EOS))
        self._digit_ids = torch.tensor([self.vocab.stoi[d] for d in "0123456789"])
        self._operator_ids = torch.tensor([self.vocab.stoi[op] for op in self.operators])
        self._minus_id = self.vocab.stoi["-"]
        self.max_question_len = 2 * digits + 1
        self.max_answer_len = 2 * digits if "*" in operators else digits + 1
        self.questions: dict[str, tuple[Tensor, Tensor, Tensor]] = {}

    def model_kwargs(self) -> dict:
        return {
            "src_vocab_size": len(self.vocab),
            "tgt_vocab_size": len(self.vocab),
            "pad_id": self.vocab.pad_id,
            "sos_id": self.vocab.sos_id,
            "eos_id": self.vocab.eos_id,
            "max_target_len": self.max_answer_len + 1,
        }

    # Generation ------------------------------------------------------------------------------
    def _keys(self, a: Tensor, b: Tensor, op: Tensor) -> Tensor:
        """One int64 per question; a commutative question and its mirror share a key."""
        commutative = torch.tensor([o in _COMMUTATIVE for o in self.operators])[op]
        low = torch.where(commutative, torch.minimum(a, b), a)
        high = torch.where(commutative, torch.maximum(a, b), b)
        base = 10**self.digits
        return (op * base + low) * base + high

    def _space(self) -> int:
        """How many distinct questions exist (mirrored commutative ones counted once)."""
        n = 10**self.digits
        return sum(n * (n + 1) // 2 if op in _COMMUTATIVE else n * n for op in self.operators)

    def _sample(self, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        def operand() -> Tensor:
            num_digits = torch.randint(1, self.digits + 1, (count,), generator=generator)
            return torch.randint(0, 10**self.digits, (count,), generator=generator) % 10**num_digits

        a, b = operand(), operand()
        op = torch.randint(0, len(self.operators), (count,), generator=generator)
        return a, b, op

    def _enumerate(self) -> tuple[Tensor, Tensor, Tensor]:
        n = 10**self.digits
        grid = torch.arange(n * n)
        a, b = grid // n, grid % n
        ops = torch.arange(len(self.operators))
        return a.repeat(len(ops)), b.repeat(len(ops)), ops.repeat_interleave(n * n)

    def _distinct_questions(self, count: int, generator: torch.Generator):
        """`count` distinct questions in random order."""
        space = self._space()
        if count > space:
            raise ConfigError(
                f"data.train_size+val_size+test_size = {count} is more than the {space} distinct "
                f"questions with data.digits={self.digits} and data.operators={self.operators!r}: "
                "lower the sizes or raise data.digits"
            )
        chosen: list[Tensor] = []
        while True:
            if 2 * count > space and len(self.operators) * 100**self.digits <= _ENUMERATE_LIMIT:
                a, b, op = self._enumerate()
            else:
                a, b, op = self._sample(2 * count, generator)
            a, b, op = (
                torch.cat([x, y]) for x, y in zip(chosen or (a[:0], b[:0], op[:0]), (a, b, op))
            )
            keys = self._keys(a, b, op)
            unique, inverse = torch.unique(keys, return_inverse=True)
            first = torch.full((len(unique),), len(keys)).scatter_reduce(
                0, inverse, torch.arange(len(keys)), "amin"
            )
            first = first.sort().values
            chosen = [a[first], b[first], op[first]]
            if len(first) >= count:
                break
        order = torch.randperm(len(first), generator=generator)[:count]
        a, b, op = (x[order] for x in chosen)
        # Deduplication kept one orientation of each commutative question (with enumeration,
        # always a <= b); draw the orientation afresh so both appear.
        commutative = torch.tensor([o in _COMMUTATIVE for o in self.operators])[op]
        swap = commutative & (torch.rand(count, generator=generator) < 0.5)
        return torch.where(swap, b, a), torch.where(swap, a, b), op

    def _answers(self, a: Tensor, b: Tensor, op: Tensor) -> Tensor:
        symbols = [self.operators[i] for i in range(len(self.operators))]
        results = torch.stack(
            [a + b if s == "+" else a - b if s == "-" else a * b for s in symbols]
        )
        return results.gather(0, op[None]).squeeze(0)

    def _tokens(self, a: Tensor, b: Tensor, op: Tensor) -> dict[str, Tensor]:
        """Vectorised tokenisation of questions and answers (no Python loop over examples)."""
        max_digits = 2 * self.digits
        len_a, len_b = _num_digits(a, max_digits), _num_digits(b, max_digits)
        j = torch.arange(self.max_question_len)[None]
        la, lb = len_a[:, None], len_b[:, None]
        src = torch.where(j < la, self._digit_ids[_digit(a[:, None], la, j)], 0)
        src = torch.where(j == la, self._operator_ids[op][:, None], src)
        in_b = (j > la) & (j <= la + lb)
        src = torch.where(
            in_b, self._digit_ids[_digit(b[:, None], lb, (j - la - 1).clamp(min=0))], src
        )
        src_lengths = len_a + 1 + len_b
        if self.reverse_input:
            index = torch.where(j < src_lengths[:, None], src_lengths[:, None] - 1 - j, j)
            src = src.gather(1, index)

        result = self._answers(a, b, op)
        negative = (result < 0).long()[:, None]
        magnitude = result.abs()
        len_r = _num_digits(magnitude, max_digits)[:, None]
        k = torch.arange(self.max_answer_len + 2)[None]
        body = k - 1 - negative  # position inside the digits
        tgt = torch.where(
            (body >= 0) & (body < len_r),
            self._digit_ids[_digit(magnitude[:, None], len_r, body.clamp(min=0))],
            0,
        )
        tgt = torch.where((k == 1) & (negative == 1), self._minus_id, tgt)
        tgt[:, 0] = self.vocab.sos_id
        tgt = torch.where(k == len_r + negative + 1, self.vocab.eos_id, tgt)
        return {
            "src_tokens": src,
            "src_lengths": src_lengths,
            "tgt_tokens": tgt,
            "tgt_lengths": (len_r + negative + 2).squeeze(1),
        }

    def _dataset(self, tensors: dict[str, Tensor]) -> TensorBatchDataset:
        return TensorBatchDataset(
            tensors, trim={"src_tokens": "src_lengths", "tgt_tokens": "tgt_lengths"}
        )

    def build_splits(self) -> None:
        generator = torch.Generator().manual_seed(self.seed)
        a, b, op = self._distinct_questions(sum(self.sizes.values()), generator)
        start = 0
        for split, size in self.sizes.items():
            part = slice(start, start + size)
            start += size
            self.questions[split] = (a[part], b[part], op[part])
            setattr(self, f"{split}_set", self._dataset(self._tokens(a[part], b[part], op[part])))

    # Predict interface -------------------------------------------------------------------------
    _QUESTION = re.compile(r"^(\d+)([-+*])(\d+)$")

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
        match = self._QUESTION.match(question)
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

    def encode_input(self, text: str) -> dict[str, Tensor]:
        a, op, b = self.parse(text)
        tokens = self._tokens(
            torch.tensor([a]), torch.tensor([b]), torch.tensor([self.operators.index(op)])
        )
        length = int(tokens["src_lengths"][0])
        example = {key: value[0] for key, value in tokens.items()}
        example["src_tokens"] = example["src_tokens"][:length]
        example["tgt_tokens"] = example["tgt_tokens"][: int(example["tgt_lengths"])]
        return example

    def decode_output(self, output: dict[str, Tensor]) -> list[str]:
        return ["".join(self.vocab.decode(row)) for row in output["tokens"].tolist()]

    def sample_pairs(self, split: str, count: int) -> list[tuple[str, str]]:
        a, b, op = (x[:count] for x in self.questions[split])
        answers = self._answers(a, b, op)
        return [
            (f"{x}{self.operators[o]}{y}", str(r))
            for x, y, o, r in zip(a.tolist(), b.tolist(), op.tolist(), answers.tolist())
        ]

    def read_test_file(self, path: Path) -> TensorBatchDataset:
        """Each non-empty line is a question ("535+61"); the answer is computed."""
        return self._dataset(self._encode_lines(path))
