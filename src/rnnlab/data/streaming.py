"""Training on shards (`data.streaming=true`): a batch plan from lengths, batches read by index.

The order of an epoch depends only on (seed, epoch), and every process computes the same plan
from the examples' lengths alone (`ShardReader.lengths`), so ranks and workers agree without
talking to each other:

- **windows** (the shuffle buffer): the split's blocks are grouped, by a permutation seeded by
  `seed` alone, into windows of `window_blocks` blocks (`data.bucket_batches` x
  `data.batch_size` examples);
- **batches**: each window is sorted by length and cut into batches of `batch_size` examples,
  or with `max_tokens` of at most that many tokens (examples x the longest side of the longest
  one); the cut depends only on the window's sorted lengths, so every epoch has the same number
  of batches (Lightning counts them once);
- **each epoch** shuffles the order of the windows, the examples of equal length inside a window
  (so batches change members) and the batches inside a window, seeded by (seed, epoch);
- **ranks and workers**: global batch j goes to rank j % world; a rank's k-th batch to its
  dataloader worker (k - skip) % workers, which is the order PyTorch's loader takes them in.
  The number of batches is made a multiple of the world size by splitting a few batches in two
  (never by dropping or repeating an example), so every rank runs the same number of steps and
  every training example is seen exactly once per epoch;
- **resume**: the loader's state is (epoch, batches handed out); a resumed loader skips them
  without reading their examples (windows before them are not even sorted).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from rnnlab.data.batching import CountingLoader, keep_batch
from rnnlab.data.shards import ShardReader
from rnnlab.errors import DataError


def cut_sizes(costs: np.ndarray, batch_size: int, max_tokens: int | None) -> list[int]:
    """Batch sizes for examples sorted by `costs` (ascending): `batch_size` each, or with
    `max_tokens` as many as keep (count x largest cost) <= max_tokens (at least one)."""
    if max_tokens is None:
        full, rest = divmod(len(costs), batch_size)
        return [batch_size] * full + ([rest] if rest else [])
    sizes, current = [], 0
    values, counts = np.unique(costs, return_counts=True)
    for value, count in zip(values.tolist(), counts.tolist()):
        capacity = max(1, max_tokens // max(1, value))
        while count:
            if current >= capacity:
                sizes.append(current)
                current = 0
            take = min(count, capacity - current)
            current += take
            count -= take
    if current:
        sizes.append(current)
    return sizes


def _generator(*seeds: int) -> np.random.Generator:
    return np.random.default_rng([int(s) for s in seeds])


class BatchPlan:
    """The batches of every epoch of one split, from its lengths (see the module docstring).

    Inside a window examples are sorted by their lengths field by field (source, then target),
    or with `max_tokens` by their longest field, which is what `max_tokens` counts.
    """

    def __init__(
        self,
        reader: ShardReader,
        *,
        batch_size: int,
        max_tokens: int | None = None,
        window_blocks: int = 1,
        seed: int = 0,
        world_size: int = 1,
    ):
        self.reader = reader
        self.batch_size, self.max_tokens = batch_size, max_tokens
        self.seed, self.world_size = seed, world_size
        blocks = _generator(seed, 1).permutation(reader.num_blocks)
        self.windows = [blocks[i : i + window_blocks] for i in range(0, len(blocks), window_blocks)]
        self.sizes = [
            cut_sizes(np.sort(self._costs(self.members(w))), batch_size, max_tokens)
            for w in range(len(self.windows))
        ]
        if len(reader) < world_size:
            raise DataError(
                f"{len(reader)} training examples for {world_size} processes: give more data"
            )
        self._balance()

    def members(self, window: int) -> np.ndarray:
        """The example indices of a window, in block order."""
        size, total = self.reader.block_size, len(self.reader)
        return np.concatenate(
            [np.arange(b * size, min((b + 1) * size, total)) for b in self.windows[window]]
        )

    def _lengths(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray(self.reader.lengths[indices], dtype=np.int64)

    def _costs(self, indices: np.ndarray) -> np.ndarray:
        return self._lengths(indices).max(axis=1)

    def _sort_keys(self, indices: np.ndarray) -> np.ndarray:
        lengths = self._lengths(indices)
        if self.max_tokens is not None:  # the cut needs ascending costs
            return lengths.max(axis=1)
        key = lengths[:, 0]
        for column in range(1, lengths.shape[1]):
            key = key * 65536 + lengths[:, column]
        return key

    def _balance(self) -> None:
        """Split the largest batch of windows, last window first, until the number of batches
        is a multiple of the world size (every rank then takes the same number of steps)."""
        missing = -sum(map(len, self.sizes)) % self.world_size
        while missing:
            splittable = [w for w in range(len(self.sizes)) if max(self.sizes[w], default=0) >= 2]
            if not splittable:
                raise DataError(
                    f"cannot give each of the {self.world_size} processes the same number of "
                    "batches without dropping examples: give more data or larger batches"
                )
            for window in reversed(splittable[-missing:]):
                sizes = self.sizes[window]
                largest = int(np.argmax(sizes))
                half = sizes[largest] // 2
                sizes[largest : largest + 1] = [half, sizes[largest] - half]
                missing -= 1

    def __len__(self) -> int:
        """Batches per epoch over all ranks."""
        return sum(map(len, self.sizes))

    def batches_per_rank(self) -> int:
        return len(self) // self.world_size

    def epoch(
        self, epoch: int, keep: Callable[[int], bool] = lambda j: True, first: int = 0
    ) -> Iterator[tuple[int, np.ndarray]]:
        """(global batch number, example indices) of the batches `keep` accepts, in the order of
        `epoch`; windows that end before global batch `first` are passed over unsorted."""
        order = _generator(self.seed, 2, epoch).permutation(len(self.windows))
        start = 0
        for window in order.tolist():
            count = len(self.sizes[window])
            end, begin = start + count, start
            start = end
            if end <= first or not any(keep(j) for j in range(begin, end)):
                continue
            random = _generator(self.seed, 3, epoch, window)
            members = self.members(window)
            members = members[random.permutation(len(members))]
            members = members[np.argsort(self._sort_keys(members), kind="stable")]
            batches = np.split(members, np.cumsum(self.sizes[window])[:-1])
            for offset, index in enumerate(random.permutation(count).tolist()):
                if keep(begin + offset):
                    yield begin + offset, batches[index]


class StreamingTrainSet(IterableDataset):
    """A rank's training batches of an epoch, read from shards by `collate(reader, indices)`.

    The loader (`StreamingLoader`, in the main process) sets `epoch`, `skip`, `rank` before
    each pass; each dataloader worker then yields its own share (module docstring)."""

    def __init__(self, plan: BatchPlan, collate: Callable[[ShardReader, np.ndarray], dict]):
        self.plan = plan
        self.collate = collate
        self.epoch = 0
        self.skip = 0
        self.rank = 0

    def __len__(self) -> int:
        return self.plan.batches_per_rank()

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        world, rank, skip = self.plan.world_size, self.rank, self.skip

        def mine(j: int) -> bool:
            k = j // world
            return j % world == rank and k >= skip and (k - skip) % workers == worker

        reader = self.plan.reader
        for _, indices in self.plan.epoch(self.epoch, mine, first=skip * world):
            yield self.collate(reader, indices)


class StreamingLoader(CountingLoader):
    """The training loader over a `StreamingTrainSet`: batches come whole from the dataset.

    Like `ResumableLoader`, its `state_dict` (in every checkpoint) is the epoch and how many
    batches of it were handed out, and `load_state_dict` makes the next pass start after them.
    `epoch_of()` gives the epoch (the trainer's) and `rank_of()` the process's rank."""

    def __init__(
        self,
        dataset: StreamingTrainSet,
        *,
        epoch_of: Callable[[], int],
        rank_of: Callable[[], int],
        **options: Any,
    ):
        # Workers start afresh at each pass (they take epoch and skip); batches come whole. The
        # loader's own `generator` stays: without one, a pass draws the workers' base seed from
        # the global RNG, and a resumed run would then see other dropout masks.
        for key in ("persistent_workers", "collate_fn", "batch_size"):
            options.pop(key, None)
        super().__init__(dataset, batch_size=None, collate_fn=keep_batch, **options)
        self.epoch_of, self.rank_of = epoch_of, rank_of
        self._resume: dict[str, int] | None = None

    @classmethod
    def for_module(cls, module: Any, plan: BatchPlan, collate: Callable) -> StreamingLoader:
        """`module`'s training loader over `plan`: the epoch from its trainer, the rank from
        torch.distributed, its `loader_options()`."""
        return cls(
            StreamingTrainSet(plan, collate),
            epoch_of=lambda: module.trainer.current_epoch if module.trainer is not None else 0,
            rank_of=lambda: distributed_rank()[0],
            **module.loader_options(),
        )

    def _start(self) -> tuple[int, int]:
        dataset: StreamingTrainSet = self.dataset
        dataset.epoch, dataset.rank = self.epoch_of(), self.rank_of()
        dataset.skip = 0
        if self._resume is not None and self._resume["epoch"] == dataset.epoch:
            dataset.skip = self._resume["batches"]
        self._resume = None
        return dataset.epoch, dataset.skip

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["batches"] < len(self):  # saved at an epoch's end: the next one starts whole
            self._resume = {"epoch": int(state["epoch"]), "batches": int(state["batches"])}


class ShardDataset(Dataset):
    """An evaluation split read from shards by index (`__getitems__`, whole batches), with
    lengths for the length-sorted evaluation batches."""

    def __init__(self, reader: ShardReader, collate: Callable[[ShardReader, np.ndarray], dict]):
        self.reader = reader
        self.collate = collate

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        return self.collate(self.reader, np.asarray(indices, dtype=np.int64))


def pad_rows(rows: Sequence[np.ndarray], pad_id: int = 0) -> tuple[Tensor, Tensor]:
    """Id arrays -> (B, longest) long tensor right-padded with pad_id, and (B,) lengths."""
    lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)
    out = torch.full((len(rows), int(lengths.max()) if len(rows) else 0), pad_id, dtype=torch.long)
    for index, row in enumerate(rows):
        out[index, : len(row)] = torch.from_numpy(np.asarray(row, dtype=np.int64))
    return out, lengths


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) of this process (0, 1 outside torch.distributed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1
