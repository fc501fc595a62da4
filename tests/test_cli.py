"""What only a real process shows: the Hydra CLI, sweeps, DDP, exit codes without tracebacks."""

from __future__ import annotations

import pytest
from conftest import run_cli

TINY = [
    "accelerator=cpu",
    "trainer.max_epochs=1",
    "data.train_size=256",
    "data.val_size=64",
    "data.test_size=64",
    "model.hidden_size=16",
    "callbacks.progress_bar=null",
    "trainer.enable_progress_bar=false",
]


def test_help_lists_groups_and_options(tmp_path):
    result = run_cli("rnnlab", "--help", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    groups = {}
    for line in result.stdout.splitlines():
        name, sep, options = line.partition(": ")
        if sep and "," in options:
            groups[name] = set(options.split(", "))
    assert {"arithmetic", "parity", "translate", "chat"} <= groups["task"]
    assert groups["cell"] == {"rnn", "gru", "lstm", "rnn_scratch", "gru_scratch", "lstm_scratch"}
    assert groups["size"] == {"tiny", "small", "medium", "large"}
    assert groups["accelerator"] == {"auto", "cpu", "ddp_cpu", "gpu", "multi_gpu"}
    assert {"tpe", "random", "cmaes", "grid"} <= groups["hparams_search"]
    assert {"book_parity", "keras_addition"} <= groups["experiment"]


def test_bad_value_exits_2_naming_the_key_without_traceback(tmp_path):
    result = run_cli("rnnlab", "model.hidden_size=0", *TINY[:1], cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert "model.hidden_size: must be a positive integer, got 0" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_basic_sweep_runs_one_job_per_cell(tmp_path):
    result = run_cli("rnnlab", "-m", "cell=rnn,gru,lstm", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "arithmetic" / "multirun").iterdir()
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0-medium", "1-medium", "2-medium"]
    for job in jobs:
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
        assert (sweep / job / ".hydra" / "overrides.yaml").read_text().count("cell=") == 1


@pytest.mark.slow
def test_ddp_cpu_writes_one_run_dir_and_syncs_test_metrics(tmp_path):
    import json

    from rnnlab.evaluate import evaluate

    result = run_cli(
        "rnnlab", "task=parity", "accelerator=ddp_cpu", "data.length=10", *TINY[1:], cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "outputs" / "parity").iterdir())
    assert len(runs) == 1, runs
    assert not (tmp_path / "outputs" / "parity" / "multirun").exists()
    ddp_test = json.loads((runs[0] / "result.json").read_text())["test"]
    best = next((runs[0] / "checkpoints").glob("best.ckpt"))
    single = evaluate(str(best), accelerator="cpu")  # same weights, one process
    for key in ("test/parity_acc", "test/loss"):
        assert ddp_test[key] == pytest.approx(single[key], abs=1e-5), key


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_two_job_sweep(tmp_path):
    result = run_cli(
        "rnnlab", "-m", "hydra/launcher=submitit_local", "cell=rnn,gru", *TINY, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "arithmetic" / "multirun").iterdir()
    assert sorted(p.parent.name for p in sweep.glob("*/result.json")) == ["0-medium", "1-medium"]
    assert (sweep / ".submitit").is_dir()


@pytest.mark.slow
def test_installed_wheel_finds_its_packaged_configs(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(REPO),
        ],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("rnnlab-*.whl")
    target = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    assert (target / "rnnlab" / "configs" / "task" / "parity.yaml").is_file()
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    where = subprocess.run(
        [sys.executable, "-c", "import rnnlab; print(rnnlab.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert where.stdout.startswith(str(target)), where.stdout + where.stderr
    result = subprocess.run(
        [sys.executable, "-m", "rnnlab", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    task_line = next(line for line in result.stdout.splitlines() if line.startswith("task: "))
    assert {"arithmetic", "parity"} <= set(task_line[len("task: ") :].split(", "))
