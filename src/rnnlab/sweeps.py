"""Hydra multirun support: what a job does for the sweeper, and the end-of-sweep summary.

rnnlab's Optuna sweeper lives in `hydra_plugins.rnnlab_sweeper` (Hydra loads sweepers only from
there). While it runs a trial in this process it installs a `TrialReporter`; `train` then adds
`TrialReporting`, which reports the monitored metric after every validation epoch (the pruner
may stop the trial: `TrialPruned`) and the facts a multi-objective sweep optimises.

Every job writes `result.json` in its run dir (see `train.write_result`); the summary reads those
files, so it covers every job of a sweep dir, including jobs of an earlier, interrupted
invocation that was resumed into the same dir. A job dir without `result.json` was interrupted
(or still runs, for a study another worker shares).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import lightning.pytorch as pl
import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from rnnlab.errors import ConfigError

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"  # the Optuna sweeper's study-level results


class TrialPruned(Exception):
    """The sweeper's pruner stopped this trial after `epoch` epochs at monitor `value`."""

    def __init__(self, epoch: int, value: float):
        super().__init__(f"pruned after epoch {epoch} (monitor {value:.4g})")
        self.epoch = epoch
        self.value = value


class TrialReporter(Protocol):
    """The sweeper's end of a running trial."""

    def report(self, epoch: int, value: float) -> bool:
        """The monitored value after `epoch` epochs; True if the trial should stop."""

    def record(self, facts: dict[str, float]) -> None:
        """Facts about the trial: params, seconds_per_epoch, threads."""


_reporter: TrialReporter | None = None


@contextlib.contextmanager
def reporting_to(reporter: TrialReporter) -> Iterator[None]:
    """Jobs run in this process inside the block report to `reporter`."""
    global _reporter
    _reporter = reporter
    try:
        yield
    finally:
        _reporter = None


def trial_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    """What `train` adds to the Trainer: a reporting callback inside a sweeper's trial."""
    return [TrialReporting(cfg.pruning_metric)] if _reporter is not None else []


class TrialReporting(pl.Callback):
    """Reports `monitor` (the config's pruning_metric) after each validation epoch and raises TrialPruned when told to stop.

    It looks the reporter up at each call instead of holding it: under `ddp_spawn` the callback
    is copied into worker processes, which have none, so there it does nothing."""

    def __init__(self, monitor: str):
        self.monitor = monitor
        self.epoch_seconds: list[float] = []
        self.epoch_start = 0.0

    def on_fit_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if _reporter is not None:
            params = sum(parameter.numel() for parameter in module.parameters())
            _reporter.record({"params": params, "threads": torch.get_num_threads()})

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.epoch_start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking or _reporter is None:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            logged = ", ".join(sorted(key for key in trainer.callback_metrics if "/" in key))
            raise ConfigError(
                f"pruning_metric: {self.monitor!r} is not logged by this task; set it to one of:"
                f" {logged}"
            )
        self.epoch_seconds.append(time.perf_counter() - self.epoch_start)
        _reporter.record({"seconds_per_epoch": sum(self.epoch_seconds) / len(self.epoch_seconds)})
        epoch = trainer.current_epoch + 1
        if _reporter.report(epoch, float(value)):
            raise TrialPruned(epoch, float(value))


# Summary order: finished jobs by value, then pruned ones by value, then the rest.
_STATUS_ORDER = {"ok": 0, "pruned": 1}


def _sort_key(row: dict, maximize: bool) -> tuple:
    value = row.get("value")
    rank = _STATUS_ORDER.get(row["status"], 2)
    if rank == 2 or value is None or math.isnan(value):
        return (rank, 1, 0.0, row["num"])
    return (rank, 0, -value if maximize else value, row["num"])


def _job_row(job_dir: Path, trial_status: dict[int, str]) -> dict[str, Any]:
    num = int(OmegaConf.load(job_dir / ".hydra" / "hydra.yaml").hydra.job.num)
    result = job_dir / "result.json"
    if result.is_file():
        keys = ("overrides", "metric", "value", "status", "epochs", "seconds", "error")
        row = {key: value for key, value in json.loads(result.read_text()).items() if key in keys}
    else:
        # no job record: the study knows (running elsewhere, or how its process ended)
        overrides = list(OmegaConf.load(job_dir / ".hydra" / "overrides.yaml"))
        row = {"overrides": overrides, "status": trial_status.get(num, "interrupted")}
    return {**row, "job": job_dir.name, "num": num}


def summarize(
    sweep_dir: str | Path, maximize: bool, study: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """One row per job dir under `sweep_dir`, best first. `study` (the Optuna sweeper's
    results) tells a job still running in another worker from an interrupted one."""
    statuses = {int(num): trial["status"] for num, trial in (study or {}).get("trials", {}).items()}
    # overrides.yaml is the last file Hydra writes before the job starts
    jobs = Path(sweep_dir).glob("*/.hydra/overrides.yaml")
    rows = [_job_row(path.parent.parent, statuses) for path in jobs]
    return sorted(rows, key=lambda row: _sort_key(row, maximize))


def progress(finished: int, n_trials: int) -> str:
    """`N of M trials finished`, never more than M of M: a study resumed with a smaller
    n_trials says so instead."""
    if finished <= n_trials:
        return f"{finished} of {n_trials} trials finished"
    return f"{finished} trials finished (more than n_trials={n_trials})"


def _fmt(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.4g}"


def _study_lines(rows: list[dict[str, Any]], study: dict[str, Any], common: set) -> list[str]:
    """The study's progress and, for several objectives, its Pareto front."""
    trials = study["trials"]
    counts = {name: 0 for name in ("pruned", "failed", "nan", "interrupted", "running")}
    for trial in trials.values():
        if trial["status"] in counts:
            counts[trial["status"]] += 1
    tally = ", ".join(f"{count} {name}" for name, count in counts.items() if count)
    lines = [
        f"Study `{study['study_name']}`: {progress(study['finished'], study['n_trials'])} "
        f"({tally or 'none failed'}).",
        "",
    ]
    if study.get("pareto_front") is None:
        return lines
    jobs = {row["num"]: row for row in rows}
    names = study["objectives"]
    lines += [
        f"Pareto front ({', '.join(f'{n} {d[:3]}' for n, d in zip(names, study['directions']))}):",
        "",
        f"| job | overrides | {' | '.join(names)} |",
        f"| --- | --- | {' | '.join('---:' for _ in names)} |",
    ]
    for num in study["pareto_front"]:
        row = jobs.get(num, {"job": f"trial {num}", "overrides": []})
        varying = " ".join(o for o in row.get("overrides", []) if o not in common)
        values = " | ".join(_fmt(v) for v in trials[num]["values"])
        lines.append(f"| {row['job']} | `{varying}` | {values} |")
    return [*lines, ""]


TABLE_HEADER = "| rank | job | overrides | metric | value | epochs | seconds | status |"


def write_summary(
    sweep_dir: str | Path, rows: list[dict[str, Any]], study: dict[str, Any] | None = None
) -> list[str]:
    """summary.csv and summary.md (job, overrides, metric, epochs, wall time, status; with
    `study`, its progress and Pareto front on top). Returns summary.md's lines."""
    sweep_dir = Path(sweep_dir)
    columns = ["job", "overrides", "metric", "value", "epochs", "seconds", "status", "error"]
    with open(sweep_dir / "summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "overrides": " ".join(row.get("overrides", []))})
    common = set.intersection(*(set(row.get("overrides", [])) for row in rows))
    lines = [
        f"Overrides shared by every job: `{' '.join(sorted(common)) or '-'}`",
        "",
        *(_study_lines(rows, study, common) if study else []),
        TABLE_HEADER,
        "| ---: | --- | --- | --- | ---: | ---: | ---: | --- |",
    ]
    for rank, row in enumerate(rows, 1):
        varying = " ".join(o for o in row.get("overrides", []) if o not in common)
        seconds = row.get("seconds")
        lines.append(
            f"| {rank} | {row['job']} | `{varying}` | {row.get('metric') or ''} "
            f"| {_fmt(row.get('value'))} | {row.get('epochs', '')} "
            f"| {'' if seconds is None else f'{seconds:.1f}'} | {row['status']} |"
        )
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")
    return lines


class SweepSummary(Callback):
    """At the end of a multirun, writes summary.csv / summary.md in the sweep dir and prints the
    best rows. TensorBoard's HParams tab over the same dir compares every trial."""

    def __init__(self, top: int = 5):
        self.top = top

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        results = sweep_dir / RESULTS_FILE
        study = OmegaConf.to_container(OmegaConf.load(results)) if results.is_file() else None
        maximize = config.get("mode", "max") == "max"
        if isinstance(study, dict) and "trials" in study:
            maximize = study["directions"][0] == "maximize"
        else:
            study = None
        rows = summarize(sweep_dir, maximize, study)
        if not rows:
            return
        lines = write_summary(sweep_dir, rows, study)
        tally = {status: 0 for status in ("ok", "pruned")}
        for row in rows:
            tally[row["status"]] = tally.get(row["status"], 0) + 1
        counts = ", ".join(f"{count} {status}" for status, count in tally.items() if count)
        print(f"\nsweep summary ({len(rows)} jobs: {counts}): {sweep_dir / 'summary.md'}")
        table = lines.index(TABLE_HEADER)
        print("\n".join(lines[2 : table + 2 + self.top]))
