"""Config values are checked before anything is built or read: one line naming the key."""

from __future__ import annotations

import json

import pytest
from conftest import QUIET, REPO, compose_config, run_cli

from rnnlab.config_checks import check_config, rule_for
from rnnlab.errors import ConfigError

TASKS = sorted(p.stem for p in (REPO / "configs" / "task").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (REPO / "configs" / "experiment").glob("*.yaml"))
SIZES = ["tiny", "small", "medium", "large"]


@pytest.mark.parametrize("task", TASKS)
def test_every_shipped_config_passes(task):
    for size in SIZES:
        check_config(compose_config(f"task={task}", f"size={size}"))


@pytest.mark.parametrize("preset", [*(f"experiment={e}" for e in EXPERIMENTS), "scheduler=plateau"])
def test_every_preset_passes(preset):
    needs = {"experiment=sentiment_transfer": ["model.init_from=lm.ckpt"]}.get(preset, [])
    check_config(compose_config(preset, *needs))


@pytest.mark.parametrize(
    "override,shown",
    [
        ("optimizer.lr=0", "optimizer.lr: must be a number > 0, got 0"),
        ("optimizer.lr=-1e-3", "optimizer.lr: must be a number > 0, got -0.001"),
        ("optimizer.lr=abc", "optimizer.lr: must be a number > 0, got 'abc'"),
        ("optimizer.lr=nan", "optimizer.lr: must be a number > 0, got nan"),
        ("seed=abc", "seed: must be an integer in [0, 4294967295], got 'abc'"),
        ("seed=1.5", "seed: must be an integer in [0, 4294967295], got 1.5"),
        ("seed=-1", "seed: must be an integer in [0, 4294967295], got -1"),
        ("trainer.max_epochs=0", "trainer.max_epochs: must be a positive integer or -1 or null"),
        ("model.hidden_size=abc", "model.hidden_size: must be a positive integer, got 'abc'"),
        ("model.hidden_size=64.0", "model.hidden_size: must be a positive integer, got 64.0"),
        ("model.cell=grux", "model.cell: must be one of rnn, gru, lstm, rnn_scratch"),
        ("model.num_sampled=0", "model.num_sampled: must be a positive integer, got 0"),
        ("model.hidden_size=true", "model.hidden_size: must be a positive integer, got True"),
        ("model.dropout=1", "model.dropout: must be a number in [0, 1), got 1"),
        ("model.num_layers=0", "model.num_layers: must be a positive integer, got 0"),
        ("data.batch_size=abc", "data.batch_size: must be an integer or null, got 'abc'"),
        ("data.val_size=[1]", "data.val_size: must be an integer or null, got [1]"),
        ("+data.eval_batch_size=0", "data.eval_batch_size: must be a positive integer or null"),
        ("scheduler=cosine trainer.max_epochs=-1", "scheduler.T_max: must be a positive integer"),
        ("decoding.beam_size=0", "decoding.beam_size: must be a positive integer, got 0"),
        ("decoding.top_k=[3,0]", "decoding.top_k: must be a positive integer, a list of them"),
        ("task=chat decoding.beam_size=5", "decoding.beam_size: sample=true draws one answer"),
        ("task=book data.backward=yes", "data.backward: must be true or false, got 'yes'"),
        ("accelerator=gpu trainer.precision=16-mixed", "optimizer.fused: a fused optimizer"),
    ],
)
def test_bad_value_names_key_value_and_what_is_allowed(override, shown):
    with pytest.raises(ConfigError) as error:
        check_config(compose_config(*override.split()))
    assert shown in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("encoding", ["nope", "utf-16", "rot13", 8])
def test_encoding_must_be_an_ascii_compatible_codec(encoding):
    cfg = compose_config("task=book", f"data.encoding={encoding}")
    with pytest.raises(ConfigError, match=rf"data\.encoding: must be a text encoding .*{encoding}"):
        check_config(cfg)


def test_good_values_pass():
    for key, value in [
        ("data.encoding", "latin-1"),
        ("data.encoding", "utf-8-sig"),
        ("trainer.max_epochs", -1),
        ("trainer.max_epochs", None),
        ("trainer.limit_train_batches", 0.25),
        ("optimizer.lr", 3),
        ("seed", 0),
    ]:
        assert rule_for(key).allows(value), (key, value)
    assert rule_for("data.path") is None and rule_for("model.bidirectional") is None


def test_checked_before_any_data_is_read_or_downloaded(tmp_path):
    from rnnlab.train import train

    missing = tmp_path / "missing.txt"  # reading it first would be a DataError
    cfg = compose_config(
        *QUIET, "task=book", f"data.path={missing}", "model.hidden_size=abc", output_dir=tmp_path
    )
    with pytest.raises(ConfigError, match=r"model\.hidden_size"):
        train(cfg)
    cache = tmp_path / "cache"
    cfg = compose_config(
        *QUIET,
        "task=chat",
        "data.path=null",
        f"data.data_dir={cache}",
        "data.url=http://127.0.0.1:9/twitter_en.txt.gz",  # a download attempt: a DataError
        "optimizer.lr=-1",
        output_dir=tmp_path,
    )
    with pytest.raises(ConfigError, match=r"optimizer\.lr"):
        train(cfg)
    assert not cache.exists()


# One real process for all CLI cases: imports cost ~8 s per process.
DRIVER = """
import contextlib, io, json, sys
from rnnlab.train import main
for args in json.loads(sys.argv[1]):
    sys.argv = ["rnnlab", *args]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            main()
            code = 0
        except SystemExit as exit:
            code = exit.code
    print(json.dumps({"args": args, "code": code, "stderr": err.getvalue()}))
"""
QUICK = ["logger=none", "callbacks=none", "trainer.enable_progress_bar=false", "accelerator=cpu"]
# A run that would finish in seconds if a bad value got through.
PARITY = ["task=parity", "size=tiny", "data.length=8", "trainer.max_epochs=1"]
PARITY += ["data.train_size=64", "data.val_size=32", "data.test_size=32"]
CLI_CASES = [
    ([*PARITY, "optimizer.lr=0"], "optimizer.lr", "0"),
    ([*PARITY, "optimizer.lr=abc"], "optimizer.lr", "'abc'"),
    ([*PARITY, "seed=abc"], "seed", "'abc'"),
    ([*PARITY, "trainer.max_epochs=0"], "trainer.max_epochs", "0"),
    ([*PARITY, "model.hidden_size=abc"], "model.hidden_size", "'abc'"),
    (["task=book", "data.path=missing.txt", "data.encoding=nope"], "data.encoding", "'nope'"),
]


@pytest.mark.slow
def test_cli_exits_2_with_one_line_naming_key_and_value(tmp_path):
    (tmp_path / "cli_driver.py").write_text(DRIVER)
    cases = [[*QUICK, *args] for args, _, _ in CLI_CASES]
    result = run_cli("cli_driver", json.dumps(cases), cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    outcomes = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(outcomes) == len(CLI_CASES), result.stdout + result.stderr
    for outcome, (_, key, value) in zip(outcomes, CLI_CASES):
        stderr = outcome["stderr"]
        assert outcome["code"] == 2, outcome
        assert stderr.count("\n") == 1 and "Traceback" not in stderr, outcome
        assert stderr.startswith(f"error: {key}: must be ") and stderr.rstrip().endswith(
            f"got {value}"
        ), outcome
