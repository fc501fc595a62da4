"""What a config that came from a file may build: rnnlab's own classes and the few library
classes rnnlab itself puts in configs, nothing else.

Hydra's `instantiate` blocks only a short list (`os.system`, `builtins.exec`, ...); a checkpoint
shared by a colleague or a hub could otherwise name `builtins.open`, `torch.load` or
`rnnlab.data.download.os.makedirs`. So every `_target_` in a stored config is resolved to the
object it really names (without importing anything outside the allowed packages) and must be a
class of an allowed kind defined in an allowed package.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

from rnnlab.errors import CheckpointError

# Packages whose classes a stored config may name; anything else is refused before import.
ALLOWED_PACKAGES = ("rnnlab", "torch", "torchmetrics", "lightning")


def _allowed_bases() -> tuple[type, ...]:
    """The kinds of class rnnlab's configs build: data, nets and tasks (nn.Module, which covers
    LightningModule and torchmetrics), optimisers, schedulers, callbacks, loggers, the Trainer
    and its checkpoint-writing plugin."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import Logger
    from lightning.pytorch.plugins.io import CheckpointIO
    from torch import nn, optim

    return (
        pl.LightningDataModule,
        nn.Module,
        optim.Optimizer,
        optim.lr_scheduler.LRScheduler,
        optim.lr_scheduler.ReduceLROnPlateau,
        pl.Callback,
        Logger,
        pl.Trainer,
        CheckpointIO,
    )


def walk_targets(node: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """(config key, `_target_` value) for every `_target_` in a nested dict/list tree."""
    if isinstance(node, dict):
        for name, value in node.items():
            child = f"{key}.{name}" if key else str(name)
            if name == "_target_":
                yield key or "<root>", value
            else:
                yield from walk_targets(value, child)
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from walk_targets(value, f"{key}[{index}]")


def walk_strings(node: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """(config key, value) for every string leaf of a nested dict/list tree."""
    if isinstance(node, str):
        yield key, node
    elif isinstance(node, dict):
        for name, value in node.items():
            yield from walk_strings(value, f"{key}.{name}" if key else str(name))
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from walk_strings(value, f"{key}[{index}]")


def resolve(path: str) -> Any:
    """The object a dotted path names, importing only modules of ALLOWED_PACKAGES.

    Raises ValueError saying why the path is refused or cannot be found."""
    parts = path.split(".")
    if not all(part.isidentifier() for part in parts):
        raise ValueError("is not a dotted Python name")
    if parts[0] not in ALLOWED_PACKAGES:
        raise ValueError(f"is outside the allowed packages {', '.join(ALLOWED_PACKAGES)}")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(obj, attribute):
                raise ValueError("does not exist")
            obj = getattr(obj, attribute)
        return obj
    raise ValueError("does not exist")


def refusal(path: Any) -> str | None:
    """Why `path` may not be built from a file, or None if it may."""
    if not isinstance(path, str):
        return "is not a string"
    try:
        obj = resolve(path)
    except ValueError as error:
        return str(error)
    name = f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"
    if not isinstance(obj, type):
        return f"resolves to {name}, which is not a class"
    if obj.__module__.split(".")[0] not in ALLOWED_PACKAGES:
        return f"resolves to {name}, outside the allowed packages"
    if not issubclass(obj, _allowed_bases()):
        return f"resolves to {name}, not a data, model, metric, optimiser, scheduler, callback or logger class"
    return None


def check_stored_config(config: Any, source: str) -> None:
    """Refuse a stored config that names anything rnnlab would not put there.

    Also refuses `${...}` interpolations: a stored config is saved resolved, so one that still
    holds one was not written by rnnlab, and resolvers would run on it."""
    for key, value in walk_strings(config):
        if "${" in value:
            raise CheckpointError(
                f"{source}: refusing to load: its config holds an interpolation at {key} "
                f"({value[:60]!r}); rnnlab stores resolved configs. If you made this file "
                "yourself and trust it, pass trust_checkpoint=true"
            )
    for key, target in walk_targets(config):
        reason = refusal(target)
        if reason is not None:
            raise CheckpointError(
                f"{source}: refusing to load: its config names _target_={str(target)[:80]!r} "
                f"at {key}, which {reason}. Checkpoints may only build rnnlab's classes and the "
                "library classes rnnlab uses; if you wrote that class and trust the file, pass "
                "trust_checkpoint=true"
            )
