"""Sweeps for real (subprocesses, tiny budgets): grid, TPE, failures, resume, DDP, submitit."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import run_cli

pytestmark = pytest.mark.slow

TINY = [
    "accelerator=cpu",
    "trainer.max_epochs=1",
    "data.length=10",
    "data.train_size=400",
    "data.val_size=100",
    "data.test_size=100",
    "callbacks.progress_bar=null",
    "trainer.enable_progress_bar=false",
    "callbacks.samples=null",
    "task=parity",
]


def _sweep_dir(cwd):
    (sweep,) = (cwd / "outputs" / "parity" / "multirun").iterdir()
    return sweep


def _results(sweep):
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/result.json")}


def test_grid_with_a_failing_trial_completes_and_summarises_best_first(tmp_path):
    result = run_cli(
        "rnnlab", "-m", *TINY, "model.hidden_size=0,8,16", "cell=rnn,gru", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = _sweep_dir(tmp_path)
    results = _results(sweep)
    assert len(results) == 6
    failed = {job for job, r in results.items() if r["status"] == "failed"}
    assert len(failed) == 2 and all("model.hidden_size" in results[j]["error"] for j in failed)
    rows = list(csv.DictReader((sweep / "summary.csv").read_text().splitlines()))
    assert [r["status"] for r in rows] == ["ok"] * 4 + ["failed"] * 2
    values = [float(r["value"]) for r in rows[:4]]
    assert values == sorted(values, reverse=True)
    assert "summary.md" in result.stdout and "val/parity_acc" in (sweep / "summary.md").read_text()


def test_tpe_sweep_runs_its_trials(tmp_path):
    result = run_cli(
        "rnnlab", "-m", "hparams_search=tpe", "hydra.sweeper.n_trials=4", *TINY, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = _sweep_dir(tmp_path)
    results = _results(sweep)
    assert len(results) == 4 and all(r["status"] == "ok" for r in results.values())
    assert (sweep / "optimization_results.yaml").is_file()
    assert len({tuple(r["overrides"]) for r in results.values()}) == 4  # 4 different trials


def test_interrupted_sqlite_sweep_resumes_without_rerunning_finished_trials(tmp_path):
    args = [
        sys.executable,
        "-m",
        "rnnlab",
        "-m",
        "hparams_search=random",
        "hydra.sweeper.n_trials=4",
        f"hydra.sweeper.storage=sqlite:///{tmp_path / 'sweep.db'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        *TINY,
    ]
    first = subprocess.Popen(
        args,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 240
    while len(list((tmp_path / "sweep").glob("*/result.json"))) < 2 and time.time() < deadline:
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)  # interrupted mid-sweep
    first.wait()
    before = {
        p.parent.name: p.stat().st_mtime_ns for p in (tmp_path / "sweep").glob("*/result.json")
    }
    assert 2 <= len(before) < 4

    second = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    after = {
        p.parent.name: p.stat().st_mtime_ns for p in (tmp_path / "sweep").glob("*/result.json")
    }
    assert all(after[job] == mtime for job, mtime in before.items())  # finished jobs not re-run
    ok = [r for r in _results(tmp_path / "sweep").values() if r["status"] == "ok"]
    assert len(ok) == 4, sorted(after)
