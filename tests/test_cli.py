"""What only a real process shows: the Hydra CLI, sweeps, DDP, exit codes without tracebacks."""

from __future__ import annotations

import pytest

from conftest import run_cli

TINY = ["accelerator=cpu", "trainer.max_epochs=1", "data.train_size=256", "data.val_size=64",
        "data.test_size=64", "model.hidden_size=16", "callbacks.progress_bar=null",
        "trainer.enable_progress_bar=false"]


def test_help_lists_groups_and_options(tmp_path):
    result = run_cli("rnnlab", "--help", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    for line in ("task: arithmetic, parity", "cell: gru, lstm, rnn",
                 "accelerator: auto, cpu, ddp_cpu, gpu, multi_gpu", "experiment: book_parity, keras_addition"):
        assert line in result.stdout


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
    assert jobs == ["0", "1", "2"]
    for job in jobs:
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
        assert (sweep / job / ".hydra" / "overrides.yaml").read_text().count("cell=") == 1


@pytest.mark.slow
def test_ddp_cpu_two_processes_write_one_run_dir(tmp_path):
    result = run_cli("rnnlab", "task=parity", "accelerator=ddp_cpu", "data.length=10", *TINY[1:],
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "outputs" / "parity").iterdir())
    assert len(runs) == 1, runs
    assert (runs[0] / "checkpoints" / "last.ckpt").is_file()
    assert "test/parity_acc" in result.stdout
