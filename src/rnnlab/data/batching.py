"""Batches as whole-tensor slices: one gather per batch instead of N `__getitem__` + collate;
training loaders that can resume mid-epoch."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler


class TensorBatchDataset(Dataset):
    """Aligned tensors (first dim = examples) sliced a batch at a time.

    `trim` maps a padded sequence key to its lengths key; each batch is cut to its longest
    sequence, so short batches do not pay for the longest example in the whole dataset.
    `lists` are aligned Python lists (e.g. each example's reference strings) sliced with them.
    """

    def __init__(
        self,
        tensors: Mapping[str, Tensor],
        trim: Mapping[str, str] | None = None,
        lists: Mapping[str, Sequence[Any]] | None = None,
    ):
        sizes = {key: len(value) for key, value in {**tensors, **(lists or {})}.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"tensors must have the same number of examples, got {sizes}")
        self.tensors = dict(tensors)
        self.trim = dict(trim or {})
        self.lists = dict(lists or {})

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        index = torch.as_tensor(indices, dtype=torch.long)
        batch: dict[str, Any] = {key: value[index] for key, value in self.tensors.items()}
        for key, lengths_key in self.trim.items():
            batch[key] = batch[key][:, : int(batch[lengths_key].max())]
        for key, values in self.lists.items():
            batch[key] = [values[i] for i in index.tolist()]
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


class StartMidEpoch:
    """Mixin for a (batch) sampler: after `skip = n` its next pass leaves out its first n items.

    A run resumed from a mid-epoch checkpoint sets it (through `ResumableLoader`), so the rest of
    the epoch is exactly the batches an uninterrupted run would still have drawn. Subclasses give
    their order in `epoch_order` (a generator, so an epoch-seeded order is decided when the pass
    starts, after Lightning's `set_epoch`); by default the base sampler's own.
    """

    skip = 0

    def epoch_order(self) -> Iterator[Any]:
        return super().__iter__()

    def __iter__(self) -> Iterator[Any]:
        skip, self.skip = self.skip, 0
        return itertools.islice(self.epoch_order(), skip, None)


class EpochBatchSampler(StartMidEpoch, BatchSampler):
    """Batches of `batch_size` in the order of `sampler` (e.g. an EpochShuffleSampler)."""


class InOrder(StartMidEpoch, SequentialSampler):
    """Items in order (each item a whole batch, e.g. the tracks of a stateful language model)."""


class BucketBatchSampler(StartMidEpoch, BatchSampler):
    """Batches of similar length: less padding, and shorter RNN loops.

    The indices of `sampler` (shuffled by it, e.g. an `EpochShuffleSampler`, or its shard under
    DDP) are cut into buckets of `bucket_batches` batches; each bucket is sorted by (source,
    target) length and cut into batches; with `shuffle`, the batches are then shuffled with a
    generator seeded by (seed, epoch). The epoch is read from `sampler` (Lightning calls its
    `set_epoch`), so a run resumed from a checkpoint sees the same batches as an uninterrupted
    one. `bucket_batches=None` sorts the whole split (evaluation).
    """

    def __init__(
        self,
        sampler,
        batch_size: int,
        drop_last: bool = False,
        *,
        lengths: Tensor,
        bucket_batches: int | None = 50,
        shuffle: bool = True,
        seed: int = 0,
    ):
        super().__init__(sampler, batch_size, drop_last)
        self.lengths = lengths
        self.bucket_batches = bucket_batches
        self.shuffle = shuffle
        self.seed = seed

    def _batches(self) -> list[Tensor]:
        indices = torch.as_tensor(list(self.sampler), dtype=torch.long)
        size = (
            len(indices) if self.bucket_batches is None else self.bucket_batches * self.batch_size
        )
        batches: list[Tensor] = []
        for bucket in indices.split(max(size, 1)):
            order = torch.sort(self.lengths[bucket], stable=True).indices
            batches.extend(bucket[order].split(self.batch_size))
        if self.drop_last:
            batches = [batch for batch in batches if len(batch) == self.batch_size]
        if self.shuffle:
            epoch = getattr(self.sampler, "epoch", 0)
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch + 7919)
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
        return batches

    def epoch_order(self) -> Iterator[list[int]]:
        for batch in self._batches():
            yield batch.tolist()

    def __len__(self) -> int:
        total = len(self.sampler)
        size = total if self.bucket_batches is None else self.bucket_batches * self.batch_size
        full, rest = divmod(total, max(size, 1))
        per_bucket = (
            size // self.batch_size if self.drop_last else math.ceil(size / self.batch_size)
        )
        last = rest // self.batch_size if self.drop_last else math.ceil(rest / self.batch_size)
        return full * per_bucket + last


class CountingLoader(DataLoader):
    """A DataLoader Lightning can checkpoint mid-epoch: its `state_dict` (Lightning stores it in
    every checkpoint) is the epoch and how many batches of it were handed out. Lightning
    prefetches nothing from a loader with a length, so those are the batches trained on.
    Subclasses say where a pass starts (`_start`) and take a stored state back
    (`load_state_dict`)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._epoch = 0
        self._served = 0

    def _start(self) -> tuple[int, int]:
        """(epoch, batches of it already served) for the pass about to begin."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[Any]:
        self._epoch, self._served = self._start()
        for batch in super().__iter__():
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "batches": self._served}


class ResumableLoader(CountingLoader):
    """A training loader over a `StartMidEpoch` order: `load_state_dict` sets its (batch)
    sampler's `skip`, so the next pass continues after the batches already served."""

    def _order(self) -> Any:
        return self.batch_sampler if self.batch_sampler is not None else self.sampler

    def _start(self) -> tuple[int, int]:
        order = self._order()
        return getattr(getattr(order, "sampler", order), "epoch", 0), order.skip

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["batches"] >= len(self):  # saved at an epoch's end: the next one starts whole
            return
        order = self._order()
        order.skip = state["batches"]
        # With worker processes the first indices are drawn before Lightning's set_epoch.
        inner = getattr(order, "sampler", order)
        if hasattr(inner, "set_epoch"):
            inner.set_epoch(state["epoch"])


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
