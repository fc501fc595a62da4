"""A checkpoint is data: crafted configs that would write files are refused by every entry."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import train_run

from rnnlab import chat, evaluate, predict
from rnnlab.checkpoints import CONFIG_KEY, read_checkpoint
from rnnlab.errors import CheckpointError
from rnnlab.trust import refusal

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_PARITY = [
    "task=parity",
    "data.length=10",
    "data.train_size=200",
    "data.val_size=50",
    "data.test_size=50",
    "model.hidden_size=8",
    "trainer.max_epochs=1",
    "test=false",
    "logger=none",
    "callbacks.samples=null",
]


@pytest.fixture(scope="module")
def parity_checkpoint(tmp_path_factory):
    run = tmp_path_factory.mktemp("parity")
    train_run(run, *TINY_PARITY)
    return run / "checkpoints" / "last.ckpt"


def _open(marker) -> dict:
    return {"_target_": "builtins.open", "file": str(marker), "mode": "w"}


def _top_level(config, marker):
    config["data"] = _open(marker)


def _nested(config, marker):
    config["module"]["metrics"]["acc"] = _open(marker)


def _through_rnnlab(config, marker):
    config["data"] = {"_target_": "rnnlab.data.download.os.makedirs", "name": str(marker)}


CRAFTS = {"top-level": _top_level, "nested": _nested, "through-rnnlab": _through_rnnlab}


@pytest.fixture(params=sorted(CRAFTS))
def crafted(request, parity_checkpoint, tmp_path):
    """(crafted .ckpt, the file it would create, the target it names)."""
    checkpoint = torch.load(parity_checkpoint, weights_only=True)
    checkpoint = copy.copy(checkpoint)
    checkpoint[CONFIG_KEY] = copy.deepcopy(checkpoint[CONFIG_KEY])
    marker = tmp_path / "pwned"
    CRAFTS[request.param](checkpoint[CONFIG_KEY], marker)
    path = tmp_path / "checkpoints" / "shared.ckpt"
    path.parent.mkdir()
    torch.save(checkpoint, path)
    return path, marker


def _refused(code, err, path):
    return code == 2 and str(path) in err and "refusing to load" in err and "Traceback" not in err


def test_predict_evaluate_and_chat_refuse_a_crafted_checkpoint(crafted, capsys, monkeypatch):
    import io

    path, marker = crafted
    assert _refused(predict.main([f"ckpt_path={path}", "text=0110"]), capsys.readouterr().err, path)
    assert _refused(evaluate.main([f"ckpt_path={path}"]), capsys.readouterr().err, path)
    monkeypatch.setattr("sys.stdin", io.StringIO("0110\n"))
    assert _refused(chat.main([f"ckpt_path={path}"]), capsys.readouterr().err, path)
    assert not marker.exists()


def test_resuming_a_crafted_checkpoint_builds_nothing_it_names(crafted, tmp_path):
    path, marker = crafted
    train_run(tmp_path / "run", *TINY_PARITY, "trainer.max_epochs=2", f"ckpt_path={path}")
    assert not marker.exists()


def test_trust_checkpoint_is_the_one_opt_in(crafted):
    path, _ = crafted
    with pytest.raises(CheckpointError, match="trust_checkpoint=true"):
        read_checkpoint(path)
    assert CONFIG_KEY in read_checkpoint(path, trust=True)


@pytest.mark.parametrize(
    "target, allowed",
    [
        ("rnnlab.data.parity.ParityData", True),
        ("torch.optim.Adam", True),
        ("torch.optim.lr_scheduler.CosineAnnealingLR", True),
        ("rnnlab.metrics.Accuracy", True),
        ("lightning.pytorch.callbacks.ModelCheckpoint", True),
        ("torch.load", False),  # a function, not a class
        ("builtins.open", False),
        ("os.system", False),
        ("rnnlab.train.os.replace", False),  # a dotted path through an rnnlab module
        ("rnnlab.train.Path", False),  # pathlib's class, reached through rnnlab
        ("torch.Tensor", False),  # a class, but not a kind rnnlab builds
        ("rnnlab.nothing.Here", False),
        ("antigravity", False),  # never imported: outside the allowed packages
        ("__import__('os')", False),
    ],
)
def test_targets_are_resolved_before_they_are_judged(target, allowed):
    assert (refusal(target) is None) is allowed, refusal(target)


def test_interpolations_in_a_stored_config_are_refused(parity_checkpoint, tmp_path):
    checkpoint = torch.load(parity_checkpoint, weights_only=True)
    checkpoint[CONFIG_KEY]["data"]["length"] = "${oc.env:HOME}"
    path = tmp_path / "interpolating.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="interpolation at data.length"):
        read_checkpoint(path)
