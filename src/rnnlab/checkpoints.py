"""Checkpoints a user can trust: what they hold, how they are written and how they are read.

- `RunStateInCheckpoint` adds the resolved run config and the RNG states to every checkpoint.
- `LastCheckpoint` keeps `last.ckpt` the newest state: every epoch end and every few minutes.
- `AtomicCheckpointIO` writes each file whole or not at all, wherever `$TMPDIR` is.
- `read_checkpoint` loads one as data (`weights_only=True`, stored config checked by
  `rnnlab.trust`), with one clear error for every way a file can be wrong.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from rnnlab.config_checks import flat_items
from rnnlab.errors import CheckpointError, require
from rnnlab.trust import check_stored_config

CONFIG_KEY = "rnnlab_config"  # where checkpoints keep the resolved run config
CODEC_KEY = "rnnlab_codec"  # and the task codec's state (vocabularies, settings)


class RunStateInCheckpoint(pl.Callback):
    """Puts in every checkpoint what Lightning leaves out: the resolved run config (so predict and
    evaluate need nothing else) and the RNG states (so a run resumed from `last.ckpt` draws the
    same dropout masks as an uninterrupted one and ends with the same weights)."""

    def __init__(self, config: dict):
        self.config = config

    def on_save_checkpoint(
        self, trainer: pl.Trainer, module: pl.LightningModule, checkpoint: dict
    ) -> None:
        checkpoint[CONFIG_KEY] = self.config

    def state_dict(self) -> dict:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        return {"torch": torch.get_rng_state(), "cuda": cuda}

    def load_state_dict(self, state_dict: dict) -> None:
        torch.set_rng_state(state_dict["torch"])
        if state_dict["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


class LastCheckpoint(Checkpoint):
    """`last.ckpt` is the newest training state: written at every epoch end and, within an epoch,
    every `every_n_minutes` and/or every `every_n_steps` optimiser steps, so a kill costs minutes,
    not an epoch (the training loaders resume mid-epoch: `rnnlab.data.batching`).

    Best-by-monitor checkpoints are Lightning's `ModelCheckpoint`'s job; its `save_last` only
    refreshes `last.ckpt` when the monitor improves, hence this callback.
    """

    def __init__(
        self,
        dirpath: str,
        filename: str = "last",
        every_n_minutes: float | None = 10,
        every_n_steps: int | None = None,
    ):
        require(
            every_n_minutes is None or every_n_minutes > 0,
            "callbacks.last_checkpoint.every_n_minutes",
            f"must be a positive number of minutes or null (epoch ends only), got {every_n_minutes}",
        )
        require(
            every_n_steps is None or (isinstance(every_n_steps, int) and every_n_steps > 0),
            "callbacks.last_checkpoint.every_n_steps",
            f"must be a positive integer or null, got {every_n_steps}",
        )
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self.every_n_minutes = every_n_minutes
        self.every_n_steps = every_n_steps
        self._saved_at = time.monotonic()
        self._saved_step = -1

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._saved_at = time.monotonic()

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        steps_due = bool(self.every_n_steps) and trainer.global_step % self.every_n_steps == 0
        minutes = (time.monotonic() - self._saved_at) / 60
        time_due = self.every_n_minutes is not None and minutes >= self.every_n_minutes
        # Every rank must take the same decision (saving is collective); rank 0's clock decides.
        if trainer.strategy.broadcast(steps_due or time_due):
            self._save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._save(trainer)

    def _save(self, trainer: pl.Trainer) -> None:
        if (
            trainer.fast_dev_run
            or trainer.sanity_checking
            or self._saved_step == trainer.global_step
        ):
            return
        # the whole training state (optimizer, loops, loader position), not weights only
        trainer.save_checkpoint(self.path, weights_only=False)
        self._saved_at = time.monotonic()
        self._saved_step = trainer.global_step


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file in its own directory, fsyncs it and renames it
    over the target: a kill leaves the old file or the new one, never a truncated one.

    Lightning's own atomic save stages the file in `$TMPDIR` and then *moves* it; on clusters
    `$TMPDIR` is another filesystem, so that move is a copy a kill can cut short."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if "://" in str(path):  # object stores: Lightning's fsspec transaction
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
        )
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        _fsync_dir(path.parent)
        # Leftovers of a save that a kill interrupted earlier.
        for orphan in path.parent.glob(f".{path.name}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                orphan.unlink()


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    with contextlib.suppress(OSError):
        handle = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def _load(path: Path) -> dict:
    """torch.load as data, every failure a CheckpointError naming the file."""
    if not path.exists():
        raise CheckpointError(
            f"checkpoint {path} does not exist: pass ckpt_path=<run dir>/checkpoints/last.ckpt"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file: pass the path of a .ckpt file")
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"{path} is empty (0 bytes): a save was interrupted; pass another checkpoint"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        detail = str(error).strip().splitlines()[0][:120] if str(error).strip() else ""
        if "weights_only" in str(error) or "Weights only load failed" in str(error):
            reason = "it holds pickled objects, which loading as data refuses"
        else:
            reason = f"it is truncated or not a torch checkpoint ({type(error).__name__}: {detail})"
        raise CheckpointError(
            f"{path} cannot be read: {reason}; pass a .ckpt that `python -m rnnlab` wrote"
        ) from None
    if not isinstance(checkpoint, dict) or CONFIG_KEY not in checkpoint:
        raise CheckpointError(
            f"{path} is not an rnnlab checkpoint (it has no {CONFIG_KEY!r} entry): pass a .ckpt "
            "that `python -m rnnlab` wrote"
        )
    if not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(
            f"{path} is not an rnnlab checkpoint (it has no model weights): pass a .ckpt that "
            "`python -m rnnlab` wrote"
        )
    return checkpoint


def _intact_sibling(path: Path) -> Path | None:
    """A readable best checkpoint beside a broken one, to suggest instead."""
    for candidate in sorted(path.parent.glob("best*.ckpt")):
        if candidate != path:
            with contextlib.suppress(CheckpointError):
                _load(candidate)
                return candidate
    return None


def read_checkpoint(path: str | os.PathLike, *, trust: bool = False) -> dict:
    """A checkpoint's contents as data, its stored config checked unless `trust`.

    Raises CheckpointError (one line: the file, what is wrong, what to do) for a missing, empty,
    truncated, foreign or untrusted file; where an intact best checkpoint sits beside a broken
    one, the message suggests it."""
    path = Path(path)
    try:
        checkpoint = _load(path)
    except CheckpointError as error:
        sibling = _intact_sibling(path) if path.parent.is_dir() else None
        if sibling is None:
            raise
        raise CheckpointError(
            f"{error}. An intact checkpoint sits beside it: ckpt_path={sibling}"
        ) from None
    if not trust:
        check_stored_config(checkpoint[CONFIG_KEY], str(path))
    return checkpoint


def check_resumable(stored: dict, current: dict, path: str | os.PathLike) -> None:
    """Refuse to resume a checkpoint of another task or with other model settings (the weights
    would not fit), naming the keys and both values."""
    if stored.get("task_name") != current.get("task_name"):
        raise CheckpointError(
            f"ckpt_path={path} is a task={stored.get('task_name')} checkpoint, this run is "
            f"task={current.get('task_name')}: resume with task={stored.get('task_name')}"
        )
    old = dict(flat_items(stored.get("model") or {}))
    new = dict(flat_items(current.get("model") or {}))
    differences = [key for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)]
    if differences:
        listed = "; ".join(
            f"model.{key} is {old.get(key)!r} there and {new.get(key)!r} here"
            for key in differences
        )
        # A key the checkpoint predates (model.reply_lm_size) is off there: null.
        fix = " ".join(
            f"model.{key}={'null' if old.get(key) is None else old[key]}" for key in differences
        )
        raise CheckpointError(
            f"ckpt_path={path} was trained with other model settings: {listed}. Resume with "
            f"the checkpoint's settings ({fix}) or start a new run without ckpt_path"
        )
