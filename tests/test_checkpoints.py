"""Trustworthy runs: last.ckpt is the newest state, mid-epoch resume is exact (also after a
kill -9), saves are atomic, bad checkpoints get one clear line, run records are append-only."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time

import lightning.pytorch as pl
import pytest
import torch
from conftest import QUIET, REPO, run_cli, train_run
from test_translate import made_up_corpus

from rnnlab import predict
from rnnlab.checkpoints import AtomicCheckpointIO, read_checkpoint
from rnnlab.errors import CheckpointError
from rnnlab.train import write_result

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PARITY = [
    "task=parity",
    "data.length=10",
    "data.train_size=1200",
    "data.val_size=100",
    "data.test_size=100",
    "data.batch_size=40",
    "model.hidden_size=16",
    "model.num_layers=2",
    "model.dropout=0.3",  # resume must restore the RNG too
    "seed=3",
    "test=false",
    "callbacks.samples=null",
]


def translate(corpus) -> list[str]:
    return [
        "task=translate",
        "size=tiny",
        "data.corpus=files",
        f"data.path={corpus}",
        "data.min_count=1",
        "data.val_fraction=0.1",
        "data.test_fraction=0.1",
        "data.batch_size=16",
        "data.bucket_batches=4",
        "model.dropout=0.2",
        "seed=5",
        "test=false",
        "callbacks.samples=null",
        "callbacks.attention_maps=null",
        "diagnosis.enabled=false",
    ]


class StopAt(pl.Callback):
    """Ends a run with an error after `step` optimiser steps: an interruption in-process."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args, **kwargs):
        if trainer.global_step == self.step:
            raise KeyError("interrupted by the test")


def weights(path) -> dict:
    return torch.load(path, weights_only=True)["state_dict"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_last_ckpt_is_the_newest_state_even_when_the_monitor_stops_improving(tmp_path):
    _, objects = train_run(tmp_path, *PARITY, "optimizer.lr=1e-12", "trainer.max_epochs=3")
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    best = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=True)
    assert last["epoch"] == 2 and last["global_step"] == objects["trainer"].global_step
    assert best["epoch"] == 0  # the monitor never improved after the first epoch
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "best.ckpt",
        "last.ckpt",
    ]


def stateful_book(path) -> list[str]:
    """A character language model whose hidden state is carried across batches."""
    rng = random.Random(0)
    path.write_text("".join(rng.choice("abcde ") for _ in range(9000)), encoding="utf-8")
    return [
        "task=book",
        f"data.path={path}",
        "data.stateful=true",
        "data.seq_len=10",
        "data.batch_size=24",
        "model.hidden_size=16",
        "model.embedding_dim=8",
        "model.dropout=0.2",
        "decoding.max_new_tokens=5",
        "test=false",
        "callbacks.samples=null",
        "diagnosis.enabled=false",
    ]


@pytest.mark.parametrize("task", ["parity", "translate", "book"])
def test_resume_from_a_mid_epoch_last_ckpt_is_bit_exact(task, tmp_path):
    common = {
        "parity": lambda: PARITY,
        "translate": lambda: translate(made_up_corpus(tmp_path / "c.tsv", 400)),
        "book": lambda: stateful_book(tmp_path / "book.txt"),
    }[task]()
    common = [*common, "trainer.max_epochs=2", "logger=none"]
    train_run(tmp_path / "straight", *common)
    stop = ["+callbacks.stop._target_=test_checkpoints.StopAt", "+callbacks.stop.step=37"]
    with pytest.raises(KeyError, match="interrupted"):
        train_run(tmp_path / "run", *common, "callbacks.last_checkpoint.every_n_steps=7", *stop)
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    (loader,) = last["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert last["global_step"] == 35 and loader["batches"] > 0, loader  # mid-epoch
    train_run(tmp_path / "run", *common, "ckpt_path=last")
    assert_same_weights(
        weights(tmp_path / "straight" / "checkpoints" / "last.ckpt"),
        weights(tmp_path / "run" / "checkpoints" / "last.ckpt"),
    )


def _mid_epoch(path) -> bool:
    """Whether `path` holds a state from inside an epoch after the first."""
    try:
        state = torch.load(path, weights_only=True)
    except (FileNotFoundError, RuntimeError, EOFError):
        return False
    (loader,) = state["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    return state["epoch"] >= 1 and loader["batches"] > 0


def _kill_mid_epoch(args: list[str], last, seed: int) -> None:
    """Start `python -m rnnlab args`, kill -9 it at a random moment inside its second epoch."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "rnnlab", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    try:
        while not _mid_epoch(last):
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(random.Random(seed).uniform(0, 0.3))
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


@pytest.mark.slow
@pytest.mark.parametrize("task", ["parity", "translate"])
def test_kill_9_mid_epoch_then_resume_equals_an_uninterrupted_run(task, tmp_path):
    if task == "parity":
        common = [*PARITY, "data.train_size=2400", "data.batch_size=20", "logger=csv"]
        common.append("+logger.csv.flush_logs_every_n_steps=1")  # rows on disk before the kill
    else:
        common = [*translate(made_up_corpus(tmp_path / "c.tsv", 1200)), "data.batch_size=8"]
    common = [*common, "trainer.max_epochs=2", *QUIET]
    train_run(tmp_path / "straight", *common)
    run = tmp_path / "run"
    frequent = "callbacks.last_checkpoint.every_n_minutes=0.002"
    _kill_mid_epoch(
        [*common, frequent, f"hydra.run.dir={run}"], run / "checkpoints" / "last.ckpt", 1
    )
    resume = f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"  # resumes in place, in `run`
    resumed = run_cli("rnnlab", *common, resume, cwd=tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_weights(
        weights(tmp_path / "straight" / "checkpoints" / "last.ckpt"),
        weights(run / "checkpoints" / "last.ckpt"),
    )
    assert not list((run / "checkpoints").glob(".*.tmp"))
    if task != "parity":
        return
    # The records of the run continue: CSV rows from before the kill, the log, the attempt.
    with open(run / "csv" / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert {row["epoch"] for row in rows if row["val/loss"]} == {"0", "1"}
    assert "GPU available" in (run / "train.log").read_text()
    original = (run / ".hydra" / "overrides.yaml").read_text()
    # A resume with other model settings: one line naming the key and both values, exit 2,
    # and the finished attempt's record and overrides stay.
    wrong = run_cli("rnnlab", *common, "model.hidden_size=32", resume, cwd=tmp_path)
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert "model.hidden_size is 16 there and 32 here" in wrong.stderr
    record = json.loads((run / "result.json").read_text())
    assert record["status"] == "failed" and [a["status"] for a in record["attempts"]] == [
        "ok",
        "failed",
    ]
    assert (run / ".hydra" / "overrides.yaml").read_text() == original


# Bad checkpoints ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    run = tmp_path_factory.mktemp("good")
    train_run(run, *PARITY, "trainer.max_epochs=1", "logger=none")
    return run / "checkpoints" / "last.ckpt"


def _break(kind: str, path, good) -> None:
    data = good.read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(b"\x00not a checkpoint at all\n" * 100)
    elif kind == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    elif kind == "pickled":
        torch.save({"model": torch.nn.Linear(2, 2)}, path)


@pytest.mark.parametrize("kind", ["missing", "empty", "truncated", "garbage", "foreign", "pickled"])
def test_a_bad_checkpoint_is_one_line_naming_the_file(kind, good_checkpoint, tmp_path, capsys):
    path = tmp_path / "checkpoints" / "last.ckpt"
    path.parent.mkdir()
    if kind != "missing":
        _break(kind, path, good_checkpoint)
    assert predict.main([f"ckpt_path={path}", "text=0110"]) == 2
    err = capsys.readouterr().err.strip()
    assert str(path) in err and "\n" not in err and "Traceback" not in err, err


def test_a_broken_last_ckpt_suggests_the_intact_best_beside_it(good_checkpoint, tmp_path):
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"")
    (tmp_path / "best.ckpt").write_bytes(good_checkpoint.read_bytes())
    with pytest.raises(
        CheckpointError, match=f"intact checkpoint sits beside it: ckpt_path={tmp_path}/best"
    ):
        read_checkpoint(path)


def test_resume_refuses_another_task_and_other_model_settings(good_checkpoint, tmp_path):
    with pytest.raises(
        CheckpointError, match="task=parity checkpoint, this run is task=arithmetic"
    ):
        train_run(tmp_path / "a", "task=arithmetic", f"ckpt_path={good_checkpoint}")
    with pytest.raises(CheckpointError, match="model.hidden_size is 16 there and 24 here"):
        train_run(tmp_path / "b", *PARITY, "model.hidden_size=24", f"ckpt_path={good_checkpoint}")
    assert not (tmp_path / "b").exists()  # refused before any work


# Atomic saves ---------------------------------------------------------------------------------
def test_a_save_cut_short_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "elsewhere"))
    path = tmp_path / "ckpt" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": torch.tensor(1)}, path)
    orphan = path.with_name(".last.ckpt.killed.tmp")
    orphan.write_bytes(b"half a checkpoint")

    def cut_short(obj, file):
        file.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", cut_short)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"step": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == [".last.ckpt.killed.tmp", "last.ckpt"]
    io.save_checkpoint({"step": torch.tensor(3)}, path)
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # the orphan is gone
    assert torch.load(path, weights_only=True)["step"] == 3


# Run records -----------------------------------------------------------------------------------
def test_run_records_keep_every_attempt(tmp_path):
    write_result(str(tmp_path), {"status": "ok", "value": 0.9})
    write_result(str(tmp_path), {"status": "failed", "value": None, "error": "boom"})
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["status"] == "failed" and record["error"] == "boom"
    assert [a["status"] for a in record["attempts"]] == ["ok", "failed"]
    assert record["attempts"][0]["value"] == 0.9
