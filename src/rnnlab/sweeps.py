"""Hydra multirun support: the end-of-sweep summary (the resumable Optuna sweeper lives in
`hydra_plugins.rnnlab_sweeper`, where Hydra requires sweeper plugins to be).

Every job writes `result.json` in its run dir (see `train.write_result`); the summary reads those
files, so it covers every finished job of a sweep dir, including jobs of an earlier, interrupted
invocation that was resumed into the same dir.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def _sort_key(row: dict, maximize: bool) -> tuple:
    value = row.get("value")
    ok = row["status"] == "ok" and value is not None and not math.isnan(value)
    return (not ok, -value if ok and maximize else (value if ok else 0.0))


def summarize(sweep_dir: str | Path, maximize: bool) -> list[dict[str, Any]]:
    """Rows of every job's result.json under `sweep_dir`, best first, failures last."""
    rows = []
    for path in Path(sweep_dir).glob("*/result.json"):
        row = json.loads(path.read_text())
        row["job"] = path.parent.name
        rows.append(row)
    return sorted(rows, key=lambda row: _sort_key(row, maximize))


def write_summary(sweep_dir: str | Path, rows: list[dict[str, Any]]) -> None:
    """summary.csv and summary.md: job, overrides, metric, epochs, wall time, status."""
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
        "| rank | job | overrides | metric | value | epochs | seconds | status |",
        "| ---: | --- | --- | --- | ---: | ---: | ---: | --- |",
    ]
    for rank, row in enumerate(rows, 1):
        value = row.get("value")
        shown = "" if value is None or math.isnan(value) else f"{value:.4f}"
        varying = " ".join(o for o in row.get("overrides", []) if o not in common)
        lines.append(
            f"| {rank} | {row['job']} | `{varying}` | {row.get('metric', '')} "
            f"| {shown} | {row.get('epochs', '')} | {row.get('seconds', 0):.1f} | {row['status']} |"
        )
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")


class SweepSummary(Callback):
    """At the end of a multirun, writes summary.csv / summary.md in the sweep dir and prints the
    best rows. TensorBoard's HParams tab over the same dir compares every trial."""

    def __init__(self, top: int = 5):
        self.top = top

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = summarize(sweep_dir, maximize=config.get("mode", "max") == "max")
        if not rows:
            return
        write_summary(sweep_dir, rows)
        failed = sum(row["status"] != "ok" for row in rows)
        print(f"\nsweep summary ({len(rows)} jobs, {failed} failed): {sweep_dir / 'summary.md'}")
        for line in (sweep_dir / "summary.md").read_text().splitlines()[2 : self.top + 4]:
            print(line)
