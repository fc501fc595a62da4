"""Training for real: models learn, runs resume exactly, checkpoints predict and evaluate."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import train_run
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rnnlab import evaluate, predict
from rnnlab.builder import build_datamodule
from rnnlab.checkpoints import CODEC_KEY, CONFIG_KEY
from rnnlab.inference import load_checkpoint
from rnnlab.train import optimized_value


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> dict[str, list[str]]:
    """task -> overrides that point it at a few generated examples (no download, no shared data)."""
    import gzip
    import random

    root = tmp_path_factory.mktemp("tiny_data")
    rng = random.Random(0)
    words = ["ka", "lo", "mi", "tu", "zu", "bi"]
    sentences = [" ".join(rng.choices(words, k=rng.randint(2, 5))) for _ in range(120)]
    (root / "pairs.tsv").write_text("".join(f"{s[::-1]} .\t{s} .\n" for s in sentences))
    (root / "tweets.txt").write_text("".join(f"{s}\n{s} {s}\n" for s in sentences))
    (root / "s_labelled.txt").write_text(
        "".join(f"{s} {'good' if i % 2 else 'bad'}\t{i % 2}\n" for i, s in enumerate(sentences))
    )
    (root / "book.txt").write_text("\n\n".join(sentences))
    mnist = root / "mnist"
    mnist.mkdir()
    images = torch.randint(0, 256, (60, 28, 28), generator=torch.Generator().manual_seed(0))
    for name, array in (("images-idx3", images), ("labels-idx1", torch.arange(60) % 10)):
        header = bytes([0, 0, 0x08, array.dim()]) + b"".join(
            size.to_bytes(4, "big") for size in array.shape
        )
        data = header + bytes(array.to(torch.uint8).flatten().tolist())
        (mnist / f"t10k-{name}-ubyte.gz").write_bytes(gzip.compress(data))
    generated = ["data.train_size=300", "data.val_size=64", "data.test_size=64"]
    return {
        "arithmetic": generated,
        "parity": [*generated, "data.length=12"],
        "mnist_rows": [f"data.path={mnist}"],
        "sentiment": [f"data.path={root / 's_labelled.txt'}"],
        "book": [f"data.path={root / 'book.txt'}", "data.seq_len=8", "decoding.max_new_tokens=5"],
        "translate": ["data.corpus=files", f"data.path={root / 'pairs.tsv'}", "data.min_count=1"],
        "chat": [f"data.path={root / 'tweets.txt'}", "data.min_answer_length=1"],
    }


# The book task also tries its word level and stateful (truncated BPTT) batches.
BOOK_VARIANTS = {"rnn": [], "gru": ["data.level=word"], "lstm": ["data.stateful=true"]}


@pytest.mark.parametrize(
    "task", ["arithmetic", "parity", "mnist_rows", "sentiment", "book", "translate", "chat"]
)
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_fast_dev_run_every_task_and_cell(tmp_path, tiny_data, task, cell):
    extra = BOOK_VARIANTS[cell] if task == "book" else []
    metrics, objects = train_run(
        tmp_path,
        f"task={task}",
        f"cell={cell}",
        "size=tiny",
        "debug=fast",
        "data.batch_size=8",
        "logger=none",
        *tiny_data[task],
        *extra,
    )
    assert objects["trainer"].fast_dev_run
    assert math.isfinite(metrics["test/loss"])


@pytest.mark.slow
def test_two_digit_addition_learns(addition_run):
    metrics, _ = addition_run
    assert metrics["test/exact_match"] >= 0.90, metrics
    assert metrics["test/char_acc"] >= 0.95, metrics


@pytest.mark.slow
def test_twenty_bit_parity_learns(tmp_path):
    metrics, _ = train_run(
        tmp_path,
        "task=parity",
        "data.length=20",
        "data.train_size=20000",
        "data.val_size=1000",
        "data.test_size=1000",
        "data.batch_size=128",
        "model.hidden_size=32",
        "trainer.max_epochs=3",
        "optimizer.lr=3e-3",
    )
    assert metrics["test/parity_acc"] >= 0.95, metrics
    assert metrics["diagnosis/train_error"] <= 0.05 and "diagnosis/variance" in metrics


def test_diagnosis_names_bias_and_variance():
    from rnnlab.diagnosis import diagnose

    assert "High bias (under-fitting)" in diagnose("val/acc", "max", 0.70, 0.69)[0]
    assert "High variance (over-fitting)" in diagnose("val/acc", "max", 0.99, 0.80)[0]
    assert "High bias and high variance" in diagnose("val/acc", "max", 0.80, 0.60)[0]
    text, figures = diagnose("val/loss", "min", 0.10, 0.11, tolerance=0.05, target_error=0.09)
    assert "Neither" in text and figures["variance"] == pytest.approx(0.01)


def test_lr_find_sets_the_learning_rate_before_training(tmp_path, capsys):
    metrics, objects = train_run(
        tmp_path,
        "task=parity",
        "data.length=8",
        "data.train_size=3000",
        "data.val_size=50",
        "data.test_size=50",
        "data.batch_size=32",
        "trainer.max_epochs=1",
        "tune.lr_find=true",
        "model.hidden_size=8",
    )
    assert "tune.lr_find: suggested learning rate" in capsys.readouterr().out
    factory = objects["module"].optimizer_factory
    assert "lr" in factory.keywords and factory.keywords["lr"] != 1e-3


def test_run_writes_checkpoints_tensorboard_and_hparams(addition_run):
    metrics, output_dir = addition_run
    assert (output_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((output_dir / "checkpoints").glob("best.ckpt"))
    events = EventAccumulator(str(output_dir / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {
        "train/loss_epoch",
        "val/loss",
        "val/exact_match",
        "val/char_acc",
        "lr",
        "hp/test/exact_match",
    } <= scalars
    assert "val/samples/text_summary" in events.Tags()["tensors"]
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
    assert optimized_value_from(metrics) == pytest.approx(metrics["val/exact_match_best"])


def optimized_value_from(metrics):
    from omegaconf import OmegaConf

    return optimized_value(OmegaConf.create({"optimized_metric": "val/exact_match"}), metrics)


def test_checkpoint_loads_weights_only_and_carries_config(addition_run):
    _, output_dir = addition_run
    checkpoint = torch.load(output_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint[CONFIG_KEY]["data"]["digits"] == 2
    assert checkpoint[CODEC_KEY] == {"digits": 2, "operators": "+", "reverse_input": True}
    cfg, codec, module = load_checkpoint(output_dir / "checkpoints" / "last.ckpt")
    assert cfg.task_name == "arithmetic" and not module.training
    assert module.codec is codec and codec.digits == 2


def _test_questions(addition_run, count):
    _, output_dir = addition_run
    cfg, codec, _ = load_checkpoint(output_dir / "checkpoints" / "last.ckpt")
    datamodule = build_datamodule(cfg, codec)
    datamodule.setup()
    return datamodule.sample_pairs("test", count)


def test_predict_text_and_stdin_one_line_per_input(addition_run, capsys, monkeypatch):
    import io

    _, output_dir = addition_run
    ckpt = f"ckpt_path={output_dir / 'checkpoints' / 'last.ckpt'}"
    assert predict.main([ckpt, "text=12+9"]) == 0
    assert capsys.readouterr().out.strip() == "21"

    pairs = _test_questions(addition_run, 20)
    lines = [q for q, _ in pairs[:10]] + ["53x+61", ""] + [q for q, _ in pairs[10:]]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    assert predict.main([ckpt]) == 1  # two bad lines
    out = capsys.readouterr().out.split("\n")[:-1]
    assert len(out) == len(lines)
    assert out[10].startswith("!error:") and "'x'" in out[10] and out[11].startswith("!error:")
    answers = out[:10] + out[12:]
    right = sum(answer == expected for answer, (_, expected) in zip(answers, pairs))
    assert right >= 16, list(zip(answers, pairs))


def test_predict_unknown_character_is_a_clear_error(addition_run, capsys):
    _, output_dir = addition_run
    code = predict.main([f"ckpt_path={output_dir / 'checkpoints' / 'last.ckpt'}", "text=53x+61"])
    err = capsys.readouterr().err
    assert (
        code == 2 and "'x' at position 3 is not in the vocabulary" in err and "Traceback" not in err
    )


def test_evaluate_on_own_split_and_on_a_user_file(addition_run, tmp_path, capsys):
    metrics, output_dir = addition_run
    best = next((output_dir / "checkpoints").glob("best.ckpt"))
    again = evaluate.evaluate(str(best), accelerator="cpu")
    assert again["test/exact_match"] == pytest.approx(metrics["test/exact_match"], abs=1e-6)

    questions = tmp_path / "questions.txt"
    questions.write_text("\n".join(q for q, _ in _test_questions(addition_run, 50)) + "\n\n")
    assert evaluate.main([f"ckpt_path={best}", f"data.path={questions}", "accelerator=cpu"]) == 0
    lines = dict(line.split(": ") for line in capsys.readouterr().out.strip().split("\n"))
    assert set(lines) == {"test/loss", "test/char_acc", "test/exact_match"}
    assert float(lines["test/exact_match"]) >= 0.8


@pytest.mark.slow
def test_resume_from_last_checkpoint_matches_uninterrupted_run(tmp_path):
    common = [
        "task=parity",
        "data.length=12",
        "data.train_size=3000",
        "data.val_size=300",
        "data.test_size=300",
        "data.batch_size=100",
        "model.hidden_size=16",
        "model.num_layers=2",
        "model.dropout=0.3",
        "seed=7",
        "test=false",
    ]
    straight, _ = train_run(tmp_path / "straight", *common, "trainer.max_epochs=3")
    train_run(tmp_path / "resumed", *common, "trainer.max_epochs=2")
    resumed, objects = train_run(
        tmp_path / "resumed", *common, "trainer.max_epochs=3", "ckpt_path=last"
    )
    assert objects["trainer"].current_epoch == 3
    for key in ("val/loss", "val/parity_acc", "train/loss_epoch"):
        assert resumed[key] == pytest.approx(straight[key], abs=1e-6), key


def test_predict_arguments_are_kept_as_typed():
    args = predict.parse_cli(["text=0110", "ckpt_path=a=b.ckpt", "batch_size=8", "image="])
    assert (args.text, args.ckpt_path, args.batch_size, args.image) == ("0110", "a=b.ckpt", 8, "")
    with pytest.raises(ValueError, match="key=value"):
        predict.parse_cli(["0110"])
