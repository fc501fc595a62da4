"""Helpers for the benchmark scripts: configs as the CLI builds them, fresh processes, medians."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

QUIET = [
    "accelerator=cpu",
    "callbacks.progress_bar=null",
    "callbacks.samples=null",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
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


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """Lower quartile, median, upper quartile: the spread shows how noisy the machine was."""
    low, mid, high = statistics.quantiles(values, n=4, method="inclusive")
    return low, mid, high


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
