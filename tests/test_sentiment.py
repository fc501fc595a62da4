"""Sentiment (seed 003): UCI and aclImdb readers, grouped splits, vocabulary, learning, predict."""

from __future__ import annotations

import io
import itertools
import logging
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA, compose_config, serve, train_run
from hydra.utils import instantiate

from rnnlab import predict
from rnnlab.builder import build
from rnnlab.data import sentiment
from rnnlab.data.sentiment import SentimentData, group_key
from rnnlab.errors import ConfigError, DataError

SHARED_SENTIMENT = SHARED_DATA / "sentiment"
needs_shared = pytest.mark.skipif(
    not (SHARED_SENTIMENT / "imdb_labelled.txt").is_file(),
    reason=f"shared sentiment files not found in {SHARED_SENTIMENT}",
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


POSITIVE = ["great", "good", "excellent", "wonderful", "amazing", "lovely"]
NEGATIVE = ["awful", "bad", "terrible", "horrible", "poor", "disappointing"]
SUBJECTS = ["the food", "the service", "this phone", "the movie", "our waiter", "the room"]
ENDINGS = ["", " overall", " again", " today", " honestly"]


def write_uci(path: Path, lines: list[str], header: bool = True) -> Path:
    """A UCI-style file as the shared copies have it: header line, LF, two trailing spaces."""
    text = ("reviews\tsentiment\n" if header else "") + "".join(f"{line}\n" for line in lines)
    path.write_text(text, encoding="utf-8")
    return path


def synthetic_lines() -> list[str]:
    """360 distinct, clearly positive or negative sentences (`sentence  <TAB>label`)."""
    lines = []
    for subject, ending in itertools.product(SUBJECTS, ENDINGS):
        for label, words in ((1, POSITIVE), (0, NEGATIVE)):
            lines += [f"{subject.capitalize()} was {word}{ending}.  \t{label}" for word in words]
    return lines


def setup(**kwargs) -> SentimentData:
    datamodule = SentimentData(**kwargs)
    datamodule.setup()
    return datamodule


def split_texts(datamodule: SentimentData, split: str) -> list[str]:
    dataset = getattr(datamodule, f"{split}_set")
    return [
        " ".join(datamodule.codec.vocab.decode(row[:length]))
        for row, length in zip(dataset.tensors["inputs"], dataset.tensors["lengths"])
    ]


# Reading -----------------------------------------------------------------------------------------
def test_uci_files_with_header_and_u0085_are_read_whole(tmp_path):
    lines = synthetic_lines()[:60] + ["The plot\u0085 was a mess.  \t0", "Loved\u0085it.\t1"]
    first = write_uci(tmp_path / "a_labelled.txt", lines[:31])
    second = write_uci(tmp_path / "b_labelled.txt", lines[31:])
    for path in (str(first), [str(first), str(second)], str(tmp_path)):
        datamodule = setup(path=path, seed=1)
        total = sum(len(getattr(datamodule, f"{s}_set")) for s in ("train", "val", "test"))
        assert total == (31 if path == str(first) else len(lines))  # header skipped, no extra lines
    assert ("The plot\u0085 was a mess.", 0) in sentiment.read_uci([second])
    assert "reviews" not in datamodule.codec.vocab and "sentiment" not in datamodule.codec.vocab


def test_bad_labels_and_missing_paths_are_data_errors(tmp_path):
    bad = write_uci(tmp_path / "bad_labelled.txt", ["Fine.\t1", "Meh.\tmaybe"])
    with pytest.raises(DataError, match="line 3 has label 'maybe'"):
        setup(path=str(bad))
    with pytest.raises(DataError, match="does not exist"):
        setup(path=str(tmp_path / "nowhere.txt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither"):
        setup(path=str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="data.format"):
        SentimentData(format="csv")


def test_aclimdb_layout_keeps_its_test_half(tmp_path):
    root = tmp_path / "aclImdb"
    reviews = synthetic_lines()
    for part, label_name in itertools.product(("train", "test"), ("pos", "neg")):
        (root / part / label_name).mkdir(parents=True)
    for number, line in enumerate(reviews):
        text, label = line.rsplit("\t", 1)
        part = "test" if number % 4 == 0 else "train"
        name = "pos" if label == "1" else "neg"
        (root / part / name / f"{number}_7.txt").write_text(f"{text}<br /><br />Really.")
    duplicate = reviews[1].rsplit("\t", 1)[0] + "<br /><br />Really."  # a training review
    (root / "test" / "pos" / "dup_8.txt").write_text(duplicate.upper())
    datamodule = setup(path=str(tmp_path), val_fraction=0.2)  # finds tmp_path/aclImdb
    assert len(datamodule.test_set) == 90  # the duplicate of a training review was dropped
    assert len(datamodule.train_set) + len(datamodule.val_set) == 270
    assert "br" not in datamodule.codec.vocab and "really" in datamodule.codec.vocab
    assert datamodule.sample_pairs("test", 1)[0][1] in ("negative", "positive")


# Splits and vocabulary ---------------------------------------------------------------------------
def test_identical_sentences_never_cross_splits_and_splits_are_seeded(tmp_path):
    lines = synthetic_lines()
    lines += [line.upper() for line in lines[::3]]  # the same sentences, shouted
    path = write_uci(tmp_path / "dups_labelled.txt", lines)
    datamodule = setup(path=str(path), seed=5)
    keys = {s: {group_key(t) for t in split_texts(datamodule, s)} for s in ("train", "val", "test")}
    assert not (
        keys["train"] & keys["val"] or keys["train"] & keys["test"] or keys["val"] & keys["test"]
    )
    assert len(datamodule.train_set) + len(datamodule.val_set) + len(datamodule.test_set) == len(
        lines
    )
    assert split_texts(setup(path=str(path), seed=5), "test") == split_texts(datamodule, "test")
    assert split_texts(setup(path=str(path), seed=6), "test") != split_texts(datamodule, "test")


def test_vocabulary_comes_from_the_training_split_only(tmp_path):
    lines = [
        f"{line.split('.')[0]} word{n}.\t{line[-1]}" for n, line in enumerate(synthetic_lines())
    ]
    datamodule = setup(path=str(write_uci(tmp_path / "u_labelled.txt", lines)), max_features=None)
    train_tokens = {t for text in split_texts(datamodule, "train") for t in text.split()}
    assert set(datamodule.codec.vocab.itos[2:]) == train_tokens
    held_out = [
        t for s in ("val", "test") for text in split_texts(datamodule, s) for t in text.split()
    ]
    assert "<unk>" in held_out  # their wordN tokens were never seen in training
    assert datamodule.codec.vocab.itos[:2] == ["<pad>", "<unk>"]
    capped = setup(path=str(tmp_path / "u_labelled.txt"), max_features=20)
    assert len(capped.codec.vocab) == 20 and capped.model_kwargs()["vocab_size"] == 20


def test_long_texts_keep_their_last_tokens_and_batches_are_trimmed(tmp_path, caplog):
    lines = synthetic_lines()[:40] + ["boring " * 300 + "but great in the end.\t1"]
    path = str(write_uci(tmp_path / "l_labelled.txt", lines))
    datamodule = setup(path=path, keep_last_tokens=8)
    assert int(datamodule.train_set.tensors["lengths"].max()) <= 8
    tokens = datamodule.codec.tokens("boring " * 300 + "but great in the end.")
    assert tokens == ["boring", "boring", "but", "great", "in", "the", "end", "."]
    batch = datamodule.train_set.__getitems__([0, 1])
    assert batch["inputs"].shape[1] == int(batch["lengths"].max())
    # The old name still works for one release, and says so.
    cfg = compose_config("task=sentiment", f"data.path={path}", "data.max_length=8")
    with caplog.at_level(logging.WARNING):
        assert instantiate(cfg.data).keep_last_tokens == 8
    assert (
        "data.max_length is deprecated" in caplog.text and "data.keep_last_tokens=8" in caplog.text
    )


# Configs, learning, checkpoints, predict ---------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic_file(tmp_path_factory) -> Path:
    return write_uci(
        tmp_path_factory.mktemp("synthetic") / "synthetic_labelled.txt", synthetic_lines()
    )


def test_keras_preset_has_the_seed_model(synthetic_file):
    cfg = compose_config("experiment=keras_sentiment", f"data.path={synthetic_file}")
    assert (cfg.data.max_features, cfg.data.batch_size, cfg.trainer.max_epochs) == (1024, 16, 10)
    _, module = build(cfg)
    assert (module.net.embed.embedding_dim, module.net.rnn.hidden_size) == (256, 128)
    assert module.net.dropout.p == 0.5
    assert isinstance(module.configure_optimizers(), torch.optim.RMSprop)


@pytest.fixture(scope="module")
def synthetic_run(synthetic_file, tmp_path_factory):
    """The default model trained on the synthetic sentences (a few seconds)."""
    output_dir = tmp_path_factory.mktemp("sentiment")
    metrics, objects = train_run(
        output_dir,
        "task=sentiment",
        f"data.path={synthetic_file}",
        "data.batch_size=16",
        "trainer.max_epochs=6",
        "logger=none",
    )
    return metrics, objects, output_dir / "checkpoints" / "last.ckpt"


def test_learns_clear_synthetic_sentiment(synthetic_run):
    metrics, _, _ = synthetic_run
    assert metrics["test/acc"] >= 0.95 and metrics["test/f1"] >= 0.95, metrics


def test_predict_sentences_from_a_checkpoint(synthetic_run, capsys):
    _, _, ckpt = synthetic_run
    assert predict.main([f"ckpt_path={ckpt}", "text=the food was great"]) == 0
    assert capsys.readouterr().out.startswith("positive (p=")
    assert predict.main([f"ckpt_path={ckpt}", "text=The service was AWFUL!"]) == 0
    assert capsys.readouterr().out.startswith("negative (p=")
    assert predict.main([f"ckpt_path={ckpt}", "text=zyzzyva qwerty"]) == 0
    assert "; no known words)" in capsys.readouterr().out
    assert predict.main([f"ckpt_path={ckpt}", "text="]) == 2
    assert "empty sentence" in capsys.readouterr().err


def test_evaluate_on_a_user_file(synthetic_run, tmp_path):
    from rnnlab import evaluate

    _, _, ckpt = synthetic_run
    user = write_uci(
        tmp_path / "mine.txt", ["The room was lovely.\t1", "The food was poor today.\t0"]
    )
    metrics = evaluate.evaluate(str(ckpt), str(user), accelerator="cpu")
    assert metrics["test/acc"] == 1.0


@needs_shared
@pytest.mark.slow
def test_short_run_on_the_shared_files_beats_chance(tmp_path):
    metrics, _ = train_run(
        tmp_path,
        "task=sentiment",
        f"data.path={SHARED_SENTIMENT}",
        "trainer.max_epochs=4",
        "logger=none",
        "callbacks.samples=null",
    )
    assert metrics["test/acc"] >= 0.65, metrics


# Downloading and extracting ----------------------------------------------------------------------
def zip_bytes(members: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return buffer.getvalue()


def test_without_path_the_uci_zip_is_downloaded_and_extracted(tmp_path):
    """A loopback server stands in for the UCI server."""
    text = "reviews\tsentiment\n" + "".join(f"{line}\n" for line in synthetic_lines())
    (tmp_path / "served").mkdir()
    archive = tmp_path / "served" / "upstream.zip"
    archive.write_bytes(
        zip_bytes(
            {
                "sentiment labelled sentences/yelp_labelled.txt": text,
                "sentiment labelled sentences/readme.txt": "readme",
                "__MACOSX/sentiment labelled sentences/._yelp_labelled.txt": "\x00junk",
            }
        )
    )
    cache = tmp_path / "cache"
    with serve(tmp_path / "served") as root:
        datamodule = SentimentData(cache_dir=str(cache), url=f"{root}/upstream.zip")
        datamodule.prepare_data()
        datamodule.setup()
        assert (cache / "sentiment_labelled_sentences.zip").is_file()
        assert len(datamodule.train_set) + len(datamodule.val_set) + len(datamodule.test_set) == 360
        archive.unlink()  # a second run uses the extracted copy
        assert len(setup(cache_dir=str(cache), url=f"{root}/upstream.zip").test_set) > 0


def test_unreachable_download_explains_what_to_do(tmp_path):
    with serve(tmp_path) as root, pytest.raises(DataError) as error:
        SentimentData(cache_dir=str(tmp_path / "cache"), url=f"{root}/gone.zip").prepare_data()
    assert "put it at" in str(error.value) and "data.path" in str(error.value)


def test_archives_cannot_write_outside_their_folder(tmp_path):
    evil_zip = tmp_path / "evil.zip"
    evil_zip.write_bytes(zip_bytes({"ok.txt": "fine", "../escaped.txt": "gotcha"}))
    with pytest.raises(DataError, match="outside"):
        sentiment._extract_safely(evil_zip, tmp_path / "out" / "zip")
    evil_tar = tmp_path / "evil.tar.gz"
    with tarfile.open(evil_tar, "w:gz") as tf:
        link = tarfile.TarInfo("aclImdb/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    with pytest.raises(DataError, match="link"):
        sentiment._extract_safely(evil_tar, tmp_path / "out" / "tar")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "out" / "tar").exists()
