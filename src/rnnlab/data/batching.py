"""Batches as whole-tensor slices: one gather per batch instead of N `__getitem__` + collate."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset, RandomSampler


class TensorBatchDataset(Dataset):
    """Aligned tensors (first dim = examples) sliced a batch at a time.

    `trim` maps a padded sequence key to its lengths key; each batch is cut to its longest
    sequence, so short batches do not pay for the longest example in the whole dataset.
    """

    def __init__(self, tensors: Mapping[str, Tensor], trim: Mapping[str, str] | None = None):
        sizes = {key: len(value) for key, value in tensors.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"tensors must have the same number of examples, got {sizes}")
        self.tensors = dict(tensors)
        self.trim = dict(trim or {})

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return self.__getitems__([index])

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        batch = {key: value[index] for key, value in self.tensors.items()}
        for key, lengths_key in self.trim.items():
            batch[key] = batch[key][:, : int(batch[lengths_key].max())]
        return batch


def keep_batch(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """collate_fn for TensorBatchDataset: the batch is already built (module level: picklable)."""
    return batch


class EpochShuffleSampler(RandomSampler):
    """Shuffles with a generator seeded by (seed, epoch) only.

    Lightning calls `set_epoch` each epoch, so a run resumed from `last.ckpt` sees exactly the
    batches an uninterrupted run would have; under DDP Lightning swaps in its own seeded
    DistributedSampler because this is a RandomSampler.
    """

    def __init__(self, data_source: Dataset, seed: int = 0):
        super().__init__(data_source, generator=torch.Generator())
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator.manual_seed(self.seed * 1_000_003 + self.epoch)
        return super().__iter__()


def pad_collate(examples: Sequence[Mapping[str, Tensor]], pad_id: int = 0) -> dict[str, Tensor]:
    """Stack per-example tensors into a batch; 1-D token tensors are right-padded with pad_id."""
    batch = {}
    for key in examples[0]:
        values = [example[key] for example in examples]
        if values[0].dim() == 0:
            batch[key] = torch.stack(values)
        else:
            batch[key] = pad_sequence(values, batch_first=True, padding_value=pad_id)
    return batch
