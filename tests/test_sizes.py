"""`size=tiny|small|medium|large`: one meaning per task, growing models, plain keys win."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import REPO, compose_config

sys.path.insert(0, str(REPO / "benchmarks"))
from model_sizes import SIZES, parameter_count  # noqa: E402

TASKS = sorted(p.stem for p in (REPO / "configs" / "task").glob("*.yaml"))


@pytest.mark.parametrize("task", TASKS)
def test_every_task_has_every_size(task):
    missing = [
        s for s in SIZES if not (REPO / "configs" / "size" / "task" / f"{task}_{s}.yaml").is_file()
    ]
    assert not missing, f"configs/size/task/{task}_<size>.yaml missing for {missing}"
    for size in SIZES:
        cfg = compose_config(f"task={task}", f"size={size}")
        assert cfg.size_name == size and cfg.model.hidden_size > 0


@pytest.mark.parametrize("task", ["arithmetic", "parity"])
def test_parameter_counts_grow_from_tiny_to_large(task):
    counts = [parameter_count(task, size) for size in SIZES]
    assert counts == sorted(counts) and len(set(counts)) == len(counts), counts


def test_plain_keys_beat_the_size_preset():
    cfg = compose_config("size=large", "model.hidden_size=300")
    assert cfg.model.hidden_size == 300 and cfg.model.num_layers == 2


def test_size_is_in_the_run_name_and_hparams(tmp_path):
    from rnnlab.train import flat_hparams

    cfg = compose_config("size=small", output_dir=tmp_path)
    assert flat_hparams(cfg)["size_name"] == "small"
    assert "-${size_name}" in Path(REPO / "configs" / "train.yaml").read_text()
