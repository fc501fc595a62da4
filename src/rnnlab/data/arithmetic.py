"""String arithmetic ("535+61" -> "596", seed 000 / keras-io addition), generated with torch ops.

Operands follow the Keras example: a digit count drawn uniformly from 1..digits, then the digits.
Questions are deduplicated by a canonical key (a+b and b+a are one question), then split, so no
test question (nor its mirror) is ever seen in training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rnnlab.codecs.arithmetic import OPERATORS, ArithmeticCodec
from rnnlab.data.base import TaskDataModule
from rnnlab.data.batching import TensorBatchDataset
from rnnlab.errors import ConfigError, require, require_positive

_COMMUTATIVE = {"+", "*"}
_ENUMERATE_LIMIT = 5_000_000  # spaces up to this size are enumerated instead of sampled


class ArithmeticData(TaskDataModule):
    """Questions "a<op>b" -> answers, as character tokens with <pad>/<sos>/<eos>."""

    codec_class = ArithmeticCodec

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
            require_positive(size, f"data.{key}")
        self.digits = digits
        self.operators = operators
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.codec: ArithmeticCodec = ArithmeticCodec(digits, operators, reverse_input)
        self.questions: dict[str, tuple[Tensor, Tensor, Tensor]] = {}

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

    @staticmethod
    def _dataset(tensors: dict[str, Tensor]) -> TensorBatchDataset:
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
            tokens = self.codec.tokens(a[part], b[part], op[part])
            setattr(self, f"{split}_set", self._dataset(tokens))

    # Samples and a user's test set ------------------------------------------------------------
    def sample_pairs(self, split: str, count: int) -> list[tuple[str, str]]:
        a, b, op = (x[:count] for x in self.questions[split])
        answers = self.codec.answers(a, b, op)
        return [
            (f"{x}{self.operators[o]}{y}", str(r))
            for x, y, o, r in zip(a.tolist(), b.tolist(), op.tolist(), answers.tolist())
        ]

    def read_test_set(self, path: str | Sequence[str]) -> TensorBatchDataset:
        """Each non-empty line of a file is a question ("535+61"); the answer is computed."""
        return self._dataset(self._encode_lines(path))
