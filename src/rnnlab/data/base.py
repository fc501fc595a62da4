"""What every task's data provides beyond Lightning's hooks.

A task datamodule gives the model its sizes (`model_kwargs`), keeps its vocabulary as a JSON-able
`state_dict` (Lightning stores it in every checkpoint), and turns user strings into model inputs
and model outputs back into strings. That last pair is the predict interface every task shares:
`rnnlab.predict`, `rnnlab.evaluate` and the sample printer all go through it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from rnnlab.data.batching import (
    EpochBatchSampler,
    EpochShuffleSampler,
    ResumableLoader,
    TensorBatchDataset,
    keep_batch,
    pad_collate,
)
from rnnlab.errors import DataError, InputError, require


class TaskDataModule(pl.LightningDataModule, ABC):
    """Base of the task datamodules: loaders over TensorBatchDatasets plus the predict interface."""

    #: Printed between input and answer in samples, e.g. "535+61 = 596".
    answer_separator = " → "

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
        if not train:
            return DataLoader(dataset, batch_size=self.eval_batch_size, **self.loader_options())
        batches = EpochBatchSampler(EpochShuffleSampler(dataset, self.seed), self.batch_size, False)
        return ResumableLoader(dataset, batch_sampler=batches, **self.loader_options())

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

    # Model sizes and checkpoint state ----------------------------------------------------------
    @abstractmethod
    def model_kwargs(self) -> dict:
        """Arguments only the data knows (vocabulary sizes, special ids, number of classes)."""

    def state_dict(self) -> dict:
        """JSON-able state prediction needs (vocabularies); Lightning saves it in checkpoints."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` saved."""

    # Predict interface -------------------------------------------------------------------------
    @abstractmethod
    def encode_input(self, text: str) -> dict[str, Tensor]:
        """One user string -> one example's tensors; raises InputError with a readable reason."""

    def collate(self, examples: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Examples from `encode_input` -> one batch."""
        return pad_collate(examples, pad_id=0)

    @abstractmethod
    def decode_output(self, output: dict[str, Tensor]) -> list[str]:
        """A batch of model predictions (LightningModule.predict_batch) -> one string each."""

    @abstractmethod
    def sample_pairs(self, split: str, count: int) -> list[tuple[str, str]]:
        """(input text, expected answer) for a fixed handful of examples of a split."""

    def use_file_as_test_set(self, path: str | Path) -> None:
        """Make all of `path` the test set, encoded with the current vocabulary (evaluate)."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"data.path={path} does not exist or is not a file")
        self.test_set = self.read_test_file(path)
        self._ready = True

    def read_test_file(self, path: Path) -> TensorBatchDataset:
        """All examples of a user's file, in this task's own format."""
        raise NotImplementedError(f"{type(self).__name__} cannot evaluate on a file")

    def _encode_lines(self, path: Path) -> dict[str, Tensor]:
        """Encode every non-empty line of `path` with `encode_input` into one batch; errors
        name the file and line."""
        examples = []
        for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
            if line.strip():
                try:
                    examples.append(self.encode_input(line))
                except InputError as error:
                    raise InputError(f"{path}:{number}: {error}") from None
        if not examples:
            raise InputError(f"{path} has no lines to evaluate")
        return self.collate(examples)
