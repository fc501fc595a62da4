"""What every task's data provides beyond Lightning's hooks.

A task datamodule reads and splits its files (or generates its examples) and encodes them with
its codec (`rnnlab.codecs`): built from the training split in `setup`, or given (a checkpoint's,
which then wins). It also names a few examples per split (`sample_pairs`, shown during
training) and reads a user's data as a test set (`use_as_test_set`, for `rnnlab.evaluate`).
Turning strings into tensors and back is the codec's job, never the datamodule's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset

from rnnlab.codecs.base import Codec
from rnnlab.data.batching import (
    EpochBatchSampler,
    EpochShuffleSampler,
    ResumableLoader,
    TensorBatchDataset,
    keep_batch,
)
from rnnlab.errors import DataError, InputError, require


def check_direction(codec: Codec | None, backward: bool) -> None:
    """ConfigError unless a checkpoint's `codec` (None: none given) reads the way
    `data.backward` says."""
    require(
        codec is None or getattr(codec, "backward", False) == backward,
        "data.backward",
        f"is {str(backward).lower()}, but the checkpoint's model reads the other way: "
        f"set data.backward={str(not backward).lower()}",
    )


class TaskDataModule(pl.LightningDataModule, ABC):
    """Base of the task datamodules: loaders over TensorBatchDatasets encoded by `codec`."""

    #: The task's codec class: what a checkpoint's codec state is restored with.
    codec_class: ClassVar[type[Codec]]

    def __init__(
        self,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
    ):
        super().__init__()
        require(batch_size > 0, "data.batch_size", f"must be a positive integer, got {batch_size}")
        require(num_workers >= 0, "data.num_workers", f"must be >= 0, got {num_workers}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or max(batch_size, 256)
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self.train_set: TensorBatchDataset | None = None
        self.val_set: TensorBatchDataset | None = None
        self.test_set: TensorBatchDataset | None = None
        self.codec: Codec | None = None  # built by setup() from the training data, or given
        self._ready = False

    def setup(self, stage: str | None = None) -> None:
        """Build the splits once; Lightning calls this per stage and per process."""
        if not self._ready:
            self.build_splits()
            self._ready = True

    @abstractmethod
    def build_splits(self) -> None:
        """Set train_set, val_set and test_set."""

    # Loaders ---------------------------------------------------------------------------------
    def _loader(self, dataset: Dataset | None, *, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not built this split yet")
        batches = self.batch_sampler(dataset, train=train)
        if batches is None:
            return DataLoader(dataset, batch_size=self.eval_batch_size, **self.loader_options())
        loader = ResumableLoader if train else DataLoader
        return loader(dataset, batch_sampler=batches, **self.loader_options())

    def batch_sampler(self, dataset: Dataset, *, train: bool) -> BatchSampler | None:
        """Training: shuffled batches, seeded by (seed, epoch) and able to start mid-epoch (a
        `StartMidEpoch`, so a run resumes exactly); evaluation: None, batches in order."""
        if not train:
            return None
        return EpochBatchSampler(EpochShuffleSampler(dataset, self.seed), self.batch_size, False)

    def loader_options(self) -> dict:
        """What every loader of this datamodule shares: batches come whole from the dataset, and
        each loader has its own generator: a DataLoader without one draws its workers' base seed
        from the global RNG on every pass, so a resumed run (which starts its passes at other
        moments) would see other dropout masks than an uninterrupted one."""
        return {
            "generator": torch.Generator().manual_seed(self.seed),
            "collate_fn": keep_batch,
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.num_workers > 0,
        }

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)

    # Model sizes, samples, a user's test set --------------------------------------------------
    def model_kwargs(self) -> dict:
        """What the model's constructor needs from the data: the codec's (after `setup`)."""
        if self.codec is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run first")
        return self.codec.model_kwargs()

    @abstractmethod
    def sample_pairs(self, split: str, count: int) -> list[tuple[str, str | None]]:
        """(input text, expected answer or None) for a fixed handful of examples of a split."""

    def use_as_test_set(self, path: str | Sequence[str]) -> None:
        """Make all of `path` the test set, encoded with the codec (evaluate). `path` is what
        `data.path` accepts in training for this task."""
        if self.codec is None:
            raise RuntimeError(f"{type(self).__name__} has no codec: give it a checkpoint's")
        self.test_set = self.read_test_set(path)
        self._ready = True

    def read_test_set(self, path: str | Sequence[str]) -> TensorBatchDataset:
        """Every example of a user's `path`, in this task's own format."""
        raise NotImplementedError(f"{type(self).__name__} cannot evaluate on data.path")

    def _encode_lines(self, path: str | Sequence[str]) -> dict[str, Tensor]:
        """Encode every non-empty line of the file `path` with the codec into one batch; errors
        name the file and line."""
        if not isinstance(path, (str, Path)) or not Path(path).is_file():
            raise DataError(f"data.path={path} does not exist or is not a file")
        path = Path(path)
        examples = []
        for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
            if line.strip():
                try:
                    examples.append(self.codec.encode_example(line))
                except InputError as error:
                    raise InputError(f"{path}:{number}: {error}") from None
        if not examples:
            raise InputError(f"{path} has no lines to evaluate")
        return self.codec.collate(examples)
