"""Train/validation/test splits with one meaning of `val_fraction` and `test_fraction` for every
task: the share of the whole data that goes to that split; the rest trains.

Corpora split by group (`split_by_group`): examples with the same key (a sentence and all its
translations, sentences equal up to case, or one image) always land in the same split, so
nothing in validation or test was seen in training. A book is one stream, split contiguously at
its end (`stream_split`).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch

from rnnlab.errors import DataError, require


def check_fractions(val: float, test: float) -> None:
    """ConfigError unless 0 < val, 0 <= test and val + test < 1 (something is left to train)."""
    require(0 < val < 1, "data.val_fraction", f"must be in (0, 1), got {val}")
    require(
        0 <= test < 1 and val + test < 1,
        "data.test_fraction",
        f"must be in [0, 1) with data.val_fraction + data.test_fraction < 1, got {test}",
    )


def split_by_group(keys: Sequence[Hashable], val: float, test: float, seed: int) -> list[str]:
    """The split ("train", "val" or "test") of each example, given its group key.

    The distinct keys are shuffled with `seed`; the first `test` share of them (at least one
    when `test` > 0) goes to test, the next `val` share (at least one) to validation, the rest
    to training. Raises DataError when no group is left for training."""
    distinct = list(dict.fromkeys(keys))
    order = torch.randperm(len(distinct), generator=torch.Generator().manual_seed(seed))
    counts = [max(1, round(share * len(distinct))) if share > 0 else 0 for share in (test, val)]
    if sum(counts) >= len(distinct):
        raise DataError(
            f"only {len(distinct)} distinct examples (groups of equal ones) for {counts[0]} test "
            f"and {counts[1]} validation ones and training: give more data or lower "
            "data.val_fraction/data.test_fraction"
        )
    split_of = {}
    for rank, index in enumerate(order.tolist()):
        split_of[distinct[index]] = (
            "test" if rank < counts[0] else "val" if rank < sum(counts) else "train"
        )
    return [split_of[key] for key in keys]


def stream_split(total: int, val: float, test: float) -> tuple[int, int]:
    """Where validation and test start in a stream of `total` tokens: its last `val` and `test`
    shares (at least 2 tokens each), in that order."""
    val_size, test_size = (max(2, int(total * share)) for share in (val, test))
    return total - val_size - test_size, total - test_size
