"""Parity of random bit strings (book ch2; OpenAI's warm-up), generated with torch ops.

Validation and test strings always have the full length L: that is the task being measured.
Training strings may have lengths drawn from 1..L (`variable_length`), which is what makes
50-bit parity learnable in an epoch; with `target: count` the model predicts the number of ones
(L+1 classes, the book's route) and parity is read off as count mod 2.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rnnlab.codecs.parity import TARGETS, ParityCodec
from rnnlab.data.base import TaskDataModule
from rnnlab.data.batching import TensorBatchDataset
from rnnlab.errors import ConfigError, require_one_of, require_positive

_EXACT_CODES_MAX_LENGTH = 62  # strings up to this length have an exact int64 code


class ParityData(TaskDataModule):
    """Bit strings -> parity (or count of ones)."""

    codec_class = ParityCodec

    def __init__(
        self,
        length: int = 50,
        train_size: int = 100_000,
        val_size: int = 10_000,
        test_size: int = 10_000,
        target: str = "parity",
        variable_length: bool = True,
        **loader_options,
    ):
        super().__init__(**loader_options)
        require_positive(length, "data.length")
        require_one_of(target, TARGETS, "data.target")
        for key, size in (
            ("train_size", train_size),
            ("val_size", val_size),
            ("test_size", test_size),
        ):
            require_positive(size, f"data.{key}")
        if length <= _EXACT_CODES_MAX_LENGTH and 2**length < 2 * (val_size + test_size):
            raise ConfigError(
                f"data.length={length} has only {2**length} distinct strings, too few for "
                f"{val_size + test_size} held-out strings disjoint from training: lower "
                "data.val_size/data.test_size or raise data.length"
            )
        self.length = length
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.target = target
        self.variable_length = variable_length
        self.codec: ParityCodec = ParityCodec(length, target)

    # Generation ------------------------------------------------------------------------------
    def _draw(
        self, count: int, variable: bool, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """`count` random strings as (bits (count, L), lengths); bits past a length are 0."""
        bits = torch.randint(0, 2, (count, self.length), generator=generator)
        if variable:
            lengths = torch.randint(1, self.length + 1, (count,), generator=generator)
        else:
            lengths = torch.full((count,), self.length)
        bits *= torch.arange(self.length) < lengths[:, None]
        return bits, lengths

    def _codes(self, bits: Tensor) -> Tensor:
        return (bits << torch.arange(self.length)).sum(1)

    def _held_out(self, count: int, generator: torch.Generator) -> Tensor:
        """`count` distinct full-length strings."""
        bits, _ = self._draw(2 * count, False, generator)
        if self.length <= _EXACT_CODES_MAX_LENGTH:
            codes = self._codes(bits)
            unique, inverse = torch.unique(codes, return_inverse=True)
            first = torch.full((len(unique),), len(codes)).scatter_reduce(
                0, inverse, torch.arange(len(codes)), "amin"
            )
            bits = bits[first.sort().values]
        if len(bits) < count:
            return torch.cat([bits, self._held_out(count - len(bits), generator)])
        return bits[:count]

    def _training(self, count: int, held_codes: Tensor | None, generator: torch.Generator):
        """Training strings, none equal to a held-out string."""
        bits, lengths = self._draw(count + count // 10 + 16, self.variable_length, generator)
        if held_codes is not None:
            keep = ~((lengths == self.length) & torch.isin(self._codes(bits), held_codes))
            bits, lengths = bits[keep], lengths[keep]
        if len(bits) < count:
            more_bits, more_lengths = self._training(count - len(bits), held_codes, generator)
            return torch.cat([bits, more_bits]), torch.cat([lengths, more_lengths])
        return bits[:count], lengths[:count]

    def _dataset(self, bits: Tensor, lengths: Tensor) -> TensorBatchDataset:
        mask = torch.arange(bits.size(1)) < lengths[:, None]
        count = bits.sum(1)
        return TensorBatchDataset(
            {
                "inputs": torch.where(mask, bits + 1, 0),
                "lengths": lengths,
                "targets": count % 2 if self.target == "parity" else count,
            },
            trim={"inputs": "lengths"},
        )

    def build_splits(self) -> None:
        generator = torch.Generator().manual_seed(self.seed)
        held = self._held_out(self.sizes["val"] + self.sizes["test"], generator)
        held_codes = self._codes(held) if self.length <= _EXACT_CODES_MAX_LENGTH else None
        full = torch.full((len(held),), self.length)
        self.val_set = self._dataset(held[: self.sizes["val"]], full[: self.sizes["val"]])
        self.test_set = self._dataset(held[self.sizes["val"] :], full[self.sizes["val"] :])
        self.train_set = self._dataset(*self._training(self.sizes["train"], held_codes, generator))

    # Samples and a user's test set ------------------------------------------------------------
    def sample_pairs(self, split: str, count: int) -> list[tuple[str, str]]:
        dataset = self.val_set if split == "val" else self.test_set
        pairs = []
        for row, length in zip(
            dataset.tensors["inputs"][:count], dataset.tensors["lengths"][:count]
        ):
            bits = "".join(str(int(t) - 1) for t in row[: int(length)])
            pairs.append((bits, self.codec.answer(bits.count("1"))))
        return pairs

    def read_test_set(self, path: str | Sequence[str]) -> TensorBatchDataset:
        """Each non-empty line of a file is a bit string; its true parity (or count) is
        computed."""
        batch = self._encode_lines(path)
        if self.target == "parity":
            batch["targets"] = batch["targets"] % 2
        return TensorBatchDataset(batch, trim={"inputs": "lengths"})
