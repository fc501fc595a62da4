"""Shared test helpers: compose configs in-process (Hydra's compose API) and train small runs."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# No progress bars or model summaries: keeps test logs readable.
QUIET = [
    "callbacks.progress_bar=null",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "accelerator=cpu",
]


def compose_config(*overrides: str, output_dir: Path | None = None) -> DictConfig:
    """The config `python -m rnnlab <overrides>` would run with, paths pointed at output_dir."""
    with initialize_config_module(config_module="rnnlab.configs", version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    if output_dir is not None:
        cfg.paths.output_dir = str(output_dir)
    return cfg


def train_run(output_dir: Path, *overrides: str):
    """Train in-process with QUIET settings; returns (metrics, objects)."""
    from rnnlab.train import train

    return train(compose_config(*QUIET, *overrides, output_dir=output_dir))


def run_cli(
    *args: str, cwd: Path, timeout: float = 300, stdin: str | None = None
) -> subprocess.CompletedProcess:
    """`python -m <args>` in a subprocess (for what only a real process shows: exit codes, DDP)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        env=env,
    )


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of tiny models (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`):
    a second intra-op thread buys nothing there, and on a busy CPU its spin-waits made steps
    10-30x slower. Restored afterwards for the other test modules."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def addition_run(tmp_path_factory):
    """A 2-digit addition model trained once for the whole session (learning, predict, evaluate).

    Returns (metrics, output_dir)."""
    output_dir = tmp_path_factory.mktemp("addition")
    metrics, _ = train_run(
        output_dir,
        "task=arithmetic",
        "data.digits=2",
        "data.train_size=4000",
        "data.val_size=500",
        "data.test_size=500",
        "data.batch_size=64",
        "trainer.max_epochs=30",
        "optimizer.lr=3e-3",
        "scheduler=cosine",
    )
    return metrics, output_dir


@contextlib.contextmanager
def serve(folder: Path):
    """A static file server on 127.0.0.1 (a random free port) for the duration of the block."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
