"""Helpers for the benchmark scripts: configs as the CLI builds them, fresh processes, mirrored
rounds, medians."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning.pytorch as pl
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

QUIET = [
    "accelerator=cpu",
    "callbacks.progress_bar=null",
    "callbacks.samples=null",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]
# A timed run that writes nothing: no logger, no checkpoint callbacks, no Lightning default one.
NO_CHECKPOINTS = [
    "logger=none",
    "callbacks.model_checkpoint=null",
    "callbacks.last_checkpoint=null",
    "callbacks.early_stopping=null",
    "+trainer.enable_checkpointing=false",
]


def compose_config(*overrides: str, output_dir: str) -> DictConfig:
    with initialize_config_module(config_module="rnnlab.configs", version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    cfg.paths.output_dir = output_dir
    return cfg


def train_with_callbacks(cfg: DictConfig, *callbacks: pl.Callback) -> tuple[dict, dict]:
    """`rnnlab.train.train(cfg)` with extra callbacks (timers, checkpoints at time marks) added
    by the module, so the run is exactly what the CLI runs, plus them."""
    import rnnlab.train as entry

    build = entry.build

    def build_with_callbacks(*args, **kwargs):
        datamodule, module = build(*args, **kwargs)
        module.configure_callbacks = lambda: list(callbacks)
        return datamodule, module

    entry.build = build_with_callbacks
    try:
        return entry.train(cfg)
    finally:
        entry.build = build


def output_layer_overrides(layer: str, seq2seq: bool = True) -> list[str]:
    """Overrides for `model.output_layer=<layer>`. The adaptive layer (translate's default) has
    no label smoothing; a seq2seq task trains `full` and `sampled` with translate's smoothing
    from before adaptive became its default (0.1), as their BENCHMARKS.md figures were made."""
    smoothing = [f"module.label_smoothing={0 if layer == 'adaptive' else 0.1}"] if seq2seq else []
    return [f"model.output_layer={layer}", *smoothing]


def train_step(module, optimizer: torch.optim.Optimizer, batch: dict, clip: float) -> float:
    """One training step as `python -m rnnlab` takes it: the task's `model_step` loss (the
    output layer's own), backward, gradient-norm clipping at `clip`, the optimiser. -> loss"""
    loss = module.model_step(batch)["loss"]
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
    optimizer.step()
    return loss.item()


def in_fresh_process(script: str, *args: str) -> dict:
    """Run `script --worker args...` and parse the JSON it prints last. Long processes that run
    many settings drift badly on these machines, so every measurement gets its own process."""
    result = subprocess.run(
        [sys.executable, script, "--worker", *args], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-4000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    """'median [lower quartile, upper quartile]': the quartiles show how noisy the machine was."""
    low, mid, high = statistics.quantiles(values, n=4, method="inclusive")
    return f"{mid:.3f} [{low:.3f}, {high:.3f}]"


def mirrored_order(names: Sequence[str], repeat: int) -> list[str]:
    """A, B, B, A (reversed on odd repeats): a linear drift within the round cancels, and each
    side runs once right after the other."""
    half = list(names) if repeat % 2 == 0 else list(reversed(names))
    return half + half[::-1]


def mirrored_rounds(
    order: list[str], rounds: int, run: Callable[[str], dict[str, float]]
) -> list[dict[str, dict[str, float]]]:
    """`rounds` times `run(name)` for every name of `order`; per round and name the mean of each
    measure over that name's runs in the round (ratios are then taken within a round)."""
    results = []
    for _ in range(rounds):
        measured: dict[str, list[dict[str, float]]] = {name: [] for name in order}
        for name in order:
            measured[name].append(run(name))
        results.append(
            {
                name: {key: statistics.fmean(r[key] for r in runs) for key in runs[0]}
                for name, runs in measured.items()
            }
        )
    return results


class EpochTimer(pl.Callback):
    """Wall time of each training epoch (batches only: no setup, no validation)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def here() -> Path:
    return Path(__file__).resolve().parent
