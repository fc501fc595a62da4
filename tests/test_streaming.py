"""data.streaming=true (#18): shards round-trip the codec's ids, the hash split is stable, every
training pair is seen exactly once per epoch over ranks x workers, a resumed loader continues
with the rest, a streamed run learns. Corpora are generated in tmp_path (no network)."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import QUIET, REPO, train_run
from test_checkpoints import StopAt, assert_same_weights, translate, weights  # noqa: F401
from test_translate import made_up_corpus

from rnnlab.data.shards import hash_split
from rnnlab.data.streaming import BatchPlan, StreamingLoader, StreamingTrainSet, cut_sizes
from rnnlab.data.translate import TranslationData

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def streamed(corpus: Path, data_dir: Path, **options) -> TranslationData:
    settings = {
        "corpus": "files",
        "path": str(corpus),
        "data_dir": str(data_dir),
        "streaming": True,
        "shard_workers": 0,
        "min_count": 1,
        "val_fraction": 0.1,
        "test_fraction": 0.1,
        "batch_size": 8,
        "bucket_batches": 4,
        "seed": 5,
        **options,
    }
    data = TranslationData(**settings)
    data.setup()
    return data


def rows(batch) -> list[tuple[int, ...]]:
    """Each example of a batch as its source ids (the made-up corpus has distinct sources)."""
    return [
        tuple(row[:length].tolist())
        for row, length in zip(batch["src_tokens"], batch["src_lengths"])
    ]


def train_sources(data: TranslationData) -> list[tuple[int, ...]]:
    reader = data.train_set.reader
    return [tuple(reader.example(i)[0]["src"].tolist()) for i in range(len(reader))]


def loader(data: TranslationData, *, rank=0, world=1, epoch=1, workers=2, max_tokens=None):
    reader = data.train_set.reader
    plan = BatchPlan(reader, batch_size=8, max_tokens=max_tokens, window_blocks=1, seed=5,
                     world_size=world)  # fmt: skip
    dataset = StreamingTrainSet(plan, data.train_set.collate)
    return StreamingLoader(dataset, epoch_of=lambda: epoch, rank_of=lambda: rank,
                           num_workers=workers)  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return made_up_corpus(tmp_path_factory.mktemp("corpus") / "c.tsv", 1500)


@pytest.fixture(scope="module")
def shards(corpus, tmp_path_factory) -> TranslationData:
    return streamed(corpus, tmp_path_factory.mktemp("data"), shard_workers=2)


def test_shards_hold_the_codecs_exact_ids_in_corpus_order(corpus, shards):
    data = shards
    tokenize = data.tokenizer
    pairs = [(s, t) for s, t in data.read_pairs()]
    kept = [(tokenize(s), tokenize(t)) for s, t in pairs]
    train = [(s, t) for s, t in kept if hash_split(" ".join(s), 0.1, 0.1, 5) == "train"]
    src_ids, tgt_ids = data.codec.encode_ids([s for s, _ in train], [t for _, t in train])
    reader = data.train_set.reader
    assert len(reader) == len(train) > 1000
    for index in range(len(reader)):
        ids, _ = reader.example(index)
        assert ids["src"].tolist() == src_ids[index]
        assert ids["tgt"].tolist() == tgt_ids[index]
    # evaluation splits: one example per source sentence, every translation a reference
    val = data.val_set.reader
    ids, (text, words, references) = val.example(0)
    assert ids["src"].tolist() == data.codec.encode_ids([words], [["x"]])[0][0]
    assert references and all(isinstance(r, str) for r in references)


def test_counted_vocabularies_equal_the_in_memory_fit_on_the_same_pairs(shards):
    from rnnlab.data.pair_shards import FirstTrainPairs

    direct = shards._fit_codec(list(FirstTrainPairs(shards, None)))  # counts merged from workers
    assert direct.src_vocab == shards.codec.src_vocab
    assert direct.tgt_vocab == shards.codec.tgt_vocab
    assert direct.truecaser == shards.codec.truecaser


def test_the_hash_split_is_the_same_on_every_run_and_no_source_is_in_two_splits(
    corpus, shards, tmp_path
):
    again = streamed(corpus, tmp_path / "elsewhere")  # one process this time, not two
    splits = {}
    for name in ("train", "val", "test"):
        first = getattr(shards, f"{name}_set").reader
        second = getattr(again, f"{name}_set").reader
        one = [tuple(first.example(i)[0]["src"].tolist()) for i in range(len(first))]
        two = [tuple(second.example(i)[0]["src"].tolist()) for i in range(len(second))]
        assert one == two, name
        splits[name] = set(one)
    assert not splits["train"] & splits["val"] and not splits["train"] & splits["test"]
    assert not splits["val"] & splits["test"]
    assert 0.05 < len(splits["val"]) / 1500 < 0.15
    # the cache: the same corpus and settings reuse the shards, other settings get their own
    (built,) = [p for p in (tmp_path / "elsewhere" / "shards").iterdir() if p.is_dir()]
    stamp = (built / "meta.json").stat().st_mtime_ns
    assert streamed(corpus, tmp_path / "elsewhere").shards() == built
    assert (built / "meta.json").stat().st_mtime_ns == stamp
    assert streamed(corpus, tmp_path / "elsewhere", max_length=6).shards() != built


@pytest.mark.parametrize("max_tokens", [None, 40])
def test_two_ranks_by_two_workers_see_every_training_pair_once_per_epoch(shards, max_tokens):
    everything = train_sources(shards)
    seen, steps = [], []
    for rank in (0, 1):
        batches = list(loader(shards, rank=rank, world=2, max_tokens=max_tokens))
        steps.append(len(batches))
        assert len(batches) == len(loader(shards, rank=rank, world=2, max_tokens=max_tokens))
        for batch in batches:
            seen.extend(rows(batch))
            if max_tokens is not None and len(batch["src_tokens"]) > 1:
                longest = max(batch["src_tokens"].shape[1], batch["tgt_tokens"].shape[1])
                assert len(batch["src_tokens"]) * longest <= max_tokens
    assert steps[0] == steps[1]  # DDP ranks take the same number of steps
    assert collections.Counter(seen) == collections.Counter(everything)
    assert len(set(everything)) == len(everything)


def test_epochs_differ_and_batches_are_length_bucketed(shards):
    one = [rows(b) for b in loader(shards, epoch=1, workers=0)]
    two = [rows(b) for b in loader(shards, epoch=2, workers=0)]
    assert one != two and sorted(map(sorted, one)) != sorted(map(sorted, two))
    assert collections.Counter(r for b in one for r in b) == collections.Counter(
        r for b in two for r in b
    )
    spread = [max(map(len, b)) - min(map(len, b)) for b in one]
    assert sum(spread) / len(spread) < 1.5  # within a batch, lengths nearly equal


def test_cut_sizes_by_tokens():
    assert cut_sizes(torch.tensor([2, 2, 2, 3, 3, 9]).numpy(), 4, None) == [4, 2]
    assert cut_sizes(torch.tensor([2, 2, 2, 3, 3, 9]).numpy(), 4, 9) == [3, 2, 1]


def test_a_resumed_loader_continues_with_the_remaining_batches(shards):
    straight = list(loader(shards))
    interrupted = loader(shards)
    for count, _ in enumerate(interrupted, 1):
        if count == 7:
            break
    state = interrupted.state_dict()
    assert state == {"epoch": 1, "batches": 7}
    resumed = loader(shards)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == len(straight) - 7
    for a, b in zip(rest, straight[7:]):
        assert torch.equal(a["src_tokens"], b["src_tokens"])
    # the next epoch starts whole again
    assert len(list(resumed)) == len(straight)


STREAMING = ["data.streaming=true", "data.shard_workers=0", "data.num_workers=2"]


def test_a_streamed_run_resumed_mid_epoch_equals_an_uninterrupted_one(tmp_path):
    corpus = made_up_corpus(tmp_path / "c.tsv", 600)  # ~30 steps an epoch
    common = [*translate(corpus), *STREAMING, f"paths.data_dir={tmp_path}/data",
              f"data.data_dir={tmp_path}/data", "trainer.max_epochs=2", "logger=none"]  # fmt: skip
    train_run(tmp_path / "straight", *common)
    stop = ["+callbacks.stop._target_=test_checkpoints.StopAt", "+callbacks.stop.step=45"]
    with pytest.raises(KeyError, match="interrupted"):
        train_run(tmp_path / "run", *common, "callbacks.last_checkpoint.every_n_steps=7", *stop)
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    (state,) = last["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert last["epoch"] == 1 and state["batches"] > 0, state  # inside the second epoch
    train_run(tmp_path / "run", *common, "ckpt_path=last")
    assert_same_weights(
        weights(tmp_path / "straight" / "checkpoints" / "last.ckpt"),
        weights(tmp_path / "run" / "checkpoints" / "last.ckpt"),
    )


def test_a_streamed_translate_run_learns(corpus, tmp_path):
    metrics, objects = train_run(
        tmp_path, *translate(corpus), *STREAMING, f"data.data_dir={tmp_path}/data",
        "data.max_tokens=120", "trainer.max_epochs=3", "logger=csv", "test=true",
    )  # fmt: skip
    rows_ = list(csv_rows(tmp_path / "csv" / "metrics.csv"))
    losses = [float(r["val/loss"]) for r in rows_ if r.get("val/loss")]
    assert losses[-1] < 0.5 * losses[0], losses
    assert metrics["test/bleu"] > 50, metrics  # (word for word: ~99 after 3 epochs)
    # evaluate reads the run's test split from the same shards, with the checkpoint's codec
    from rnnlab.evaluate import evaluate

    again = evaluate(str(tmp_path / "checkpoints" / "best.ckpt"), accelerator="cpu")
    assert again["test/bleu"] == pytest.approx(metrics["test/bleu"], abs=1e-3)


def csv_rows(path: Path):
    import csv

    with open(path, newline="") as file:
        yield from csv.DictReader(file)


RECORDER = """
import json, os, lightning.pytorch as pl
class Record(pl.Callback):
    def __init__(self, path):
        self.path = path
    def on_train_batch_start(self, trainer, module, batch, index):
        rows = [row[:n].tolist() for row, n in zip(batch["src_tokens"], batch["src_lengths"])]
        with open(f"{self.path}.{trainer.global_rank}.{trainer.current_epoch}", "a") as f:
            f.write(json.dumps(rows) + "\\n")
"""


@pytest.mark.slow
def test_ddp_two_ranks_by_two_workers_train_on_every_pair_once_per_epoch(tmp_path):
    corpus = made_up_corpus(tmp_path / "c.tsv", 600)
    (tmp_path / "recorder.py").write_text(RECORDER)
    record = tmp_path / "seen"
    args = [*translate(corpus), *STREAMING, *QUIET, "accelerator=ddp_cpu",
            f"data.data_dir={tmp_path}/data", "trainer.max_epochs=1", "logger=none",
            "trainer.num_sanity_val_steps=0",
            "+callbacks.record._target_=recorder.Record", f"+callbacks.record.path={record}",
            f"hydra.run.dir={tmp_path}/run"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "rnnlab", *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=400)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (shard_dir,) = [p for p in (tmp_path / "data" / "shards").iterdir() if p.is_dir()]
    data = streamed(corpus, tmp_path / "data")
    assert data.shards() == shard_dir
    everything = collections.Counter(train_sources(data))
    for epoch in (0,):
        seen, steps = collections.Counter(), []
        for rank in (0, 1):
            lines = Path(f"{record}.{rank}.{epoch}").read_text().splitlines()
            steps.append(len(lines))
            seen.update(tuple(row) for line in lines for row in json.loads(line))
        assert steps[0] == steps[1]
        assert seen == everything, epoch


def test_opensubtitles_downloads_the_moses_zip_and_streams_it_into_shards(tmp_path):
    """data.corpus=opensubtitles against a loopback server: the zip is read member by member
    (never unpacked to disk), into shards."""
    import zipfile

    from conftest import serve

    lines = made_up_corpus(tmp_path / "c.tsv", 600).read_text(encoding="utf-8").splitlines()
    pairs = [line.split("\t") for line in lines]
    served = tmp_path / "served"
    served.mkdir()
    with zipfile.ZipFile(served / "en-es.txt.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("OpenSubtitles.en-es.es", "".join(f"{es}\n" for _, es in pairs))
        archive.writestr("OpenSubtitles.en-es.en", "".join(f"{en}\n" for en, _ in pairs))
        archive.writestr("README", "made for a test\n")
    with serve(served) as root:
        data = TranslationData(corpus="opensubtitles", url=f"{root}/en-es.txt.zip",
                               data_dir=str(tmp_path / "data"), streaming=True, shard_workers=0,
                               min_count=1, val_fraction=0.1, test_fraction=0.1, seed=5)  # fmt: skip
        data.prepare_data()
    data.setup()  # the download and the shards are cached: no server needed any more
    assert (tmp_path / "data" / "opensubtitles.en-es.txt.zip").is_file()
    assert not list((tmp_path / "data").glob("OpenSubtitles.*"))  # nothing unpacked
    total = sum(len(getattr(data, f"{s}_set")) for s in ("train", "val", "test"))
    assert len(data.train_set) > 400 and total == 600  # distinct sources: one example each
    text, reference = data.sample_pairs("test", 1)[0]
    assert reference in {en for en, es in pairs if es == text}


def test_chat_streams_on_the_same_machinery(tmp_path):
    from rnnlab.data.chat import ChatData

    path = tmp_path / "chat.txt"
    words = ["hello", "there", "how", "are", "you", "fine", "thanks", "good", "night", "day"]
    rng = __import__("random").Random(0)
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 8))) for _ in range(800)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = ChatData(path=str(path), data_dir=str(tmp_path / "data"), streaming=True,
                    shard_workers=0, batch_size=16, seed=1)  # fmt: skip
    data.setup()
    assert (
        data.codec.src_vocab is data.codec.tgt_vocab or data.codec.src_vocab == data.codec.tgt_vocab
    )
    assert len(data.train_set) > 200 and len(data.val_set) > 20
    batches = list(loader(data, workers=0))
    assert sum(len(b["src_tokens"]) for b in batches) == len(data.train_set)
    (val_batch,) = list(data.val_dataloader())[:1]
    assert len(val_batch["references"]) == len(val_batch["src_tokens"])


def test_book_windows_stream_from_shards_split_by_segment_hash(tmp_path):
    from rnnlab.data.book import BookData

    rng = __import__("random").Random(2)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far"]
    text = "\n\n".join(
        " ".join(rng.choice(words) for _ in range(rng.randint(20, 60))) + "." for _ in range(700)
    )
    (tmp_path / "book.txt").write_text(text, encoding="utf-8")
    options = {"path": str(tmp_path / "book.txt"), "seq_len": 20, "batch_size": 16, "seed": 3}
    data = BookData(data_dir=str(tmp_path / "data"), streaming=True, **options)
    data.setup()
    in_memory = BookData(data_dir=str(tmp_path / "data"), **options)
    in_memory.setup()
    stream = data.codec.encode_text(in_memory.read_text([tmp_path / "book.txt"])).tolist()
    meta = json.loads((data.shards() / "meta.json").read_text())
    assert sum(meta["tokens"].values()) == len(stream)
    # every window is a run of the book's ids; the three splits share no segment
    haystack = " ".join(map(str, stream))
    windows = {}
    for split in ("train", "val", "test"):
        reader = getattr(data, f"{split}_set").reader
        windows[split] = [reader.example(i)[0]["tokens"].tolist() for i in range(len(reader))]
        assert all(len(w) == 21 for w in windows[split])
        assert " ".join(map(str, windows[split][0])) in haystack
    assert len(windows["val"]) > 5 and len(windows["train"]) > 10 * len(windows["val"])
    # an epoch over 2 ranks covers every training window once
    seen = []
    for rank in (0, 1):
        plan = BatchPlan(data.train_set.reader, batch_size=16, window_blocks=1, seed=3,
                         world_size=2)  # fmt: skip
        batches = StreamingLoader(StreamingTrainSet(plan, data.train_set.collate),
                                  epoch_of=lambda: 0, rank_of=lambda r=rank: r)  # fmt: skip
        for batch in batches:
            assert torch.equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
            seen.extend(
                tuple(row) + (int(t[-1]),)
                for row, t in zip(batch["inputs"].tolist(), batch["targets"])
            )
    assert collections.Counter(seen) == collections.Counter(map(tuple, windows["train"]))
    assert data.sample_pairs("val", 1)[0][0]  # a prompt from the validation windows


def test_streaming_is_checked_where_the_config_enters():
    from conftest import compose_config

    from rnnlab.config_checks import check_config
    from rnnlab.errors import ConfigError

    with pytest.raises(ConfigError, match="data.streaming: .*task=translate, chat and book"):
        check_config(compose_config("task=parity", "+data.streaming=true"))
    with pytest.raises(ConfigError, match="data.streaming: must be true or false"):
        check_config(compose_config("task=translate", "data.streaming=yes"))
    with pytest.raises(ConfigError, match="data.max_tokens"):
        TranslationData(path="x", max_tokens=100)  # tokens per batch need streaming


def test_without_webdataset_streaming_stops_with_the_install_command(monkeypatch):
    from rnnlab.errors import ConfigError

    monkeypatch.setitem(sys.modules, "wids", None)  # import wids -> ImportError
    with pytest.raises(ConfigError, match=r"data.streaming: .*pip install 'webdataset"):
        TranslationData(path="x", streaming=True)
