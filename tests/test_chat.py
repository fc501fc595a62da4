"""Chatbot task: both Twitter formats, cleaning, the split, sampling, replies, MMI re-ranking with
the reply language model, and a learning test."""

from __future__ import annotations

import csv
import gzip
import io
import logging
import random
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA, compose_config, serve, train_run

from rnnlab import chat, predict
from rnnlab.data.chat import BOOK_PROMPTS, REPLIES_PER_PROMPT, ChatData, detect_format
from rnnlab.errors import ConfigError, DataError
from rnnlab.inference import load_checkpoint, predict_texts
from rnnlab.metrics import DistinctN
from rnnlab.models.decoding import DecodingOptions
from rnnlab.models.seq2seq import Seq2Seq

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CHAT = SHARED_DATA / "chat"
needs_chat = pytest.mark.skipif(
    not (CHAT / "twitter_en_head.txt").is_file(), reason=f"no shared chat corpus at {CHAT}"
)
QUIET_RUN = ("callbacks.progress_bar=null", "trainer.enable_progress_bar=false")


def alternating(path: Path, pairs, *, newline: str = "\r\n", dangling: str | None = None) -> Path:
    lines = [line for pair in pairs for line in pair] + ([dangling] if dangling else [])
    path.write_bytes(newline.join(lines).encode() + newline.encode())
    return path


def conversations(path: Path, convos) -> Path:
    path.write_text("\n\n\n\n".join("\n".join(turns) for turns in convos) + "\n", encoding="utf-8")
    return path


def word_pairs(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """Made-up tweets of 3-6 words and replies that echo them: learnable, and every question
    new to the model at test time (no question in two splits)."""
    rng = random.Random(seed)
    words = [c + v for c in "kmstz" for v in "aeiou"][:24]
    pairs = []
    for _ in range(count):
        tweet = " ".join(rng.choice(words) for _ in range(rng.randint(3, 6)))
        pairs.append((tweet, tweet))
    return pairs


# Reading -----------------------------------------------------------------------------------------
def test_both_formats_are_read_and_detected(tmp_path, caplog):
    twitter = alternating(
        tmp_path / "twitter_en.txt",
        [("Hi there", "hello you"), ("how are you", "fine thanks")],
        dangling="no reply to me",
    )
    convo = conversations(
        tmp_path / "conv.txt", [["a b", "c d", "e f"], ["lonely line"], ["g h", "i j"]]
    )
    assert detect_format(twitter) == "alternating" and detect_format(convo) == "conversation"
    with caplog.at_level(logging.WARNING):
        pairs = list(ChatData(path=[str(twitter), str(convo)]).read_pairs())
    assert pairs == [
        ("Hi there", "hello you"),
        ("how are you", "fine thanks"),
        ("a b", "c d"),
        ("c d", "e f"),
        ("g h", "i j"),
    ]
    assert "odd number of lines: dropped last line 5" in caplog.text

    gz = tmp_path / "twitter_en.txt.gz"
    gz.write_bytes(gzip.compress(twitter.read_bytes()))
    assert list(ChatData(path=str(gz), max_pairs=1).read_pairs()) == [("Hi there", "hello you")]
    forced = ChatData(path=str(convo), format="alternating")
    assert list(forced.read_pairs())[0] == ("a b", "c d")  # lines taken two by two


def test_bad_files_and_options_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine tweet\nfine reply\nbad \xff byte\nreply\n")
    with pytest.raises(DataError, match=r"bad.txt: line 3 .*not valid utf-8"):
        list(ChatData(path=str(bad)).read_pairs())
    with pytest.raises(DataError, match="does not exist"):
        ChatData(path=str(tmp_path / "missing.txt")).setup()
    with pytest.raises(ConfigError, match="data.format"):
        ChatData(path=str(bad), format="csv")
    with pytest.raises(ConfigError, match="data.min_answer_length"):
        ChatData(path=str(bad), min_answer_length=30)


def test_download_serves_the_gzip_and_explains_offline(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    text = "".join(f"tweet number {i}\r\nreply number {i} ok\r\n" for i in range(60))
    (served / "twitter_en.txt.gz").write_bytes(gzip.compress(text.encode()))
    (served / "broken.gz").write_bytes(b"\x1f\x8b not gzip at all")
    cache = tmp_path / "cache"
    with serve(served) as root:
        module = ChatData(url=f"{root}/twitter_en.txt.gz", data_dir=str(cache))
        module.prepare_data()
        module.setup()
        assert (cache / "twitter_en.txt.gz").is_file() and module.stats["kept"] == 60
        with pytest.raises(DataError, match="data.path="):
            ChatData(url=f"{root}/broken.gz", data_dir=str(tmp_path / "other")).prepare_data()
        left = [p.name for p in (tmp_path / "other").iterdir()]  # no .part, no cache entry
        assert len(left) == 1 and left[0].startswith("twitter_en.txt.gz.corrupt-"), left
        with pytest.raises(DataError, match="put it at"):
            ChatData(url=f"{root}/gone.gz", data_dir=str(tmp_path / "other")).prepare_data()


# Cleaning, split, vocabulary -------------------------------------------------------------------
def test_cleaning_unescapes_whitelists_and_filters_lengths(tmp_path):
    pairs = [
        ("Tom &amp; Jerry™ #1", "cats &lt;3 mice!! 😂"),
        ("short", "ok"),  # answer under 3 tokens
        (" ".join(["q"] * 21), "a b c"),  # question over 20
        ("fine", " ".join(["a"] * 21)),  # answer over 20
    ]
    module = ChatData(path=str(alternating(tmp_path / "t.txt", pairs)))
    kept = module._clean(module.read_pairs())
    assert [(src, tgt) for _, src, tgt, _ in kept] == [
        (["tom", "jerry", "1"], ["cats", "3", "mice", "!", "!"])
    ]
    assert module.stats["data.min_answer_length"] == 1
    assert module.stats["data.max_question_length"] == 1
    assert module.stats["data.max_answer_length"] == 1


def test_split_is_70_15_15_seeded_with_no_question_in_two_splits(tmp_path):
    pairs = word_pairs(400)
    pairs += [(pairs[0][0], f"another reply {i}") for i in range(4)]  # one question, 5 replies
    path = alternating(tmp_path / "t.txt", pairs)
    module = ChatData(path=str(path), seed=3)
    module.setup()
    questions = {
        split: {text for text, _ in module.examples[split]} for split in ("train", "val", "test")
    }
    assert not questions["train"] & questions["val"] and not questions["train"] & questions["test"]
    assert not questions["val"] & questions["test"]
    total = sum(len(q) for q in questions.values())
    assert abs(len(questions["test"]) / total - 0.15) < 0.02
    assert abs(len(questions["val"]) / total - 0.15) < 0.02
    again = ChatData(path=str(path), seed=3)
    again.setup()
    assert again.examples["test"] == module.examples["test"]
    assert module.codec.src_vocab is module.codec.tgt_vocab  # one vocabulary, one embedding


# Metrics ---------------------------------------------------------------------------------------
def test_distinct_n_counts_unique_ngrams_up_to_the_end_of_each_reply():
    metric = DistinctN(n=2, eos_id=3, pad_id=0)
    metric.update(torch.tensor([[5, 6, 5, 3, 9], [5, 6, 7, 0, 0]]))
    assert float(metric.compute()) == pytest.approx(3 / 4)  # (5,6) (6,5) (5,6) (6,7)


# Training ----------------------------------------------------------------------------------------
def test_chat_config_composes_with_book_preset():
    cfg = compose_config("task=chat", "data.path=x.txt")
    assert cfg.model.share_embeddings and cfg.decoding.top_k == [3, 2]
    book = compose_config("experiment=book_chatbot", "data.path=x.txt")
    assert book.model.hidden_size == 1024 and book.model.num_layers == 3
    assert book.data.batch_size == 34 and book.optimizer.lr == 1e-4


@pytest.fixture(scope="module")
def echo_run(tmp_path_factory):
    """A tiny bot trained once on echo dialogues, in the conversation format."""
    root = tmp_path_factory.mktemp("chat")
    convos = [[tweet, reply] for tweet, reply in word_pairs(1500, seed=1)]
    corpus = conversations(root / "echo.txt", convos)
    metrics, _ = train_run(
        root / "run",
        "task=chat",
        "size=tiny",
        f"data.path={corpus}",
        "model.attention=bahdanau",
        "data.batch_size=32",
        "optimizer.lr=1e-2",
        "trainer.max_epochs=8",
        "decoding.no_repeat=false",  # an echo repeats words
        "callbacks.samples=null",
        *QUIET_RUN,
    )
    return metrics, root / "run"


@pytest.mark.slow
def test_echo_dialogues_are_learned(echo_run):
    metrics, _ = echo_run
    assert metrics["test/token_acc"] >= 0.95 and metrics["test/ppl"] < 1.5, metrics
    assert metrics["val/ppl_best"] < 1.5, metrics


@pytest.mark.slow
def test_checkpoint_replies_in_predict_and_the_repl(echo_run, capsys, monkeypatch, caplog):
    _, run = echo_run
    ckpt = run / "checkpoints" / "last.ckpt"
    assert predict.main([f"ckpt_path={ckpt}", "text=ka ke ki ko", "sample=false"]) == 0
    assert capsys.readouterr().out.strip() == "ka ke ki ko"
    assert predict.main([f"ckpt_path={ckpt}", "text=ma me mi", "beam_size=3", "sample=false"]) == 0
    assert capsys.readouterr().out.strip() == "ma me mi"
    # Empty and all-unknown prompts get a reply and a note, not an error.
    monkeypatch.setattr("sys.stdin", io.StringIO("\nhappy birthday have a nice day\n"))
    with caplog.at_level(logging.WARNING):
        assert predict.main([f"ckpt_path={ckpt}", "seed=1"]) == 0
    out = capsys.readouterr().out.split("\n")[:-1]
    assert len(out) == 2 and all(not line.startswith("!error") for line in out)
    assert "empty prompt" in caplog.text and "is in the" in caplog.text
    # The REPL: a reply per line until end of input.
    monkeypatch.setattr("sys.stdin", io.StringIO("ka ke ki\nko ku ma\n"))
    assert chat.main([f"ckpt_path={ckpt}", "sample=false"]) == 0
    assert capsys.readouterr().out.split("> ")[1:] == ["ka ke ki\n", "ko ku ma\n", ""]
    assert predict.main([f"ckpt_path={ckpt}", "text=ka", "top_k=0"]) == 2
    assert "top_k" in capsys.readouterr().err


@needs_chat
def test_short_real_run_learns_and_samples_replies_to_the_book_prompts(tmp_path):
    metrics, objects = train_run(
        tmp_path / "run",
        "task=chat",
        "size=tiny",
        f"data.path=[{CHAT / 'twitter_en_head.txt'},{CHAT / 'TwitterConvCorpus.txt'}]",
        "data.max_pairs=4000",
        "trainer.max_epochs=2",
        "logger=none",
        *QUIET_RUN,
    )
    datamodule, module = objects["datamodule"], objects["module"]
    vocab = len(datamodule.codec.src_vocab)
    # Far better than guessing uniformly over the vocabulary.
    assert metrics["test/ppl"] < vocab / 5, (metrics, vocab)
    assert 0 < metrics["test/distinct_1"] <= metrics["test/distinct_2"] <= 1, metrics
    pairs = datamodule.sample_pairs("val", 12)
    assert [text for text, _ in pairs[: 2 * REPLIES_PER_PROMPT]] == [
        prompt for prompt in BOOK_PROMPTS for _ in range(REPLIES_PER_PROMPT)
    ]
    replies = predict_texts(module, module.codec, [BOOK_PROMPTS[0]] * 8)
    assert all(isinstance(reply, str) and reply for reply in replies)
    assert "<unk>" not in " ".join(replies) and len(set(replies)) > 1  # sampled, not fixed
    _, _, restored = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert restored.decoding.top_k == (3, 2) and restored.decoding.sample


# MMI re-ranking with the reply language model ------------------------------------------------------
def said_pairs(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """Tweets of 3-5 made-up words, replies "you said <first> <last>": an opening a language
    model learns without the tweet, and words it cannot guess."""
    rng = random.Random(seed)
    words = [c + v for c in "kmstz" for v in "aeiou"][:24]
    tweets = [[rng.choice(words) for _ in range(rng.randint(3, 5))] for _ in range(count)]
    return [(" ".join(tweet), f"you said {tweet[0]} {tweet[-1]}") for tweet in tweets]


@pytest.fixture(scope="module")
def mmi_run(tmp_path_factory):
    """A tiny bot and its reply LM, 4 epochs on 600 dialogues (seconds), tested with MMI."""
    root = tmp_path_factory.mktemp("mmi")
    corpus = conversations(root / "said.txt", [list(pair) for pair in said_pairs(600)])
    metrics, _ = train_run(
        root / "run",
        "task=chat",
        "size=tiny",
        f"data.path={corpus}",
        "model.reply_lm_size=16",
        "data.batch_size=32",
        "optimizer.lr=1e-2",
        "trainer.max_epochs=4",
        "decoding.no_repeat=false",
        "decoding.rerank=mmi",
        "decoding.num_candidates=4",
        "callbacks.samples=null",
        "logger=csv",
        *QUIET_RUN,
    )
    return metrics, root / "run"


def test_the_reply_lm_learns_beside_the_bot_and_the_test_stage_reranks(mmi_run):
    metrics, run = mmi_run
    with open(run / "csv" / "metrics.csv", newline="") as file:
        lm_losses = [
            float(row["val/reply_lm_loss"])
            for row in csv.DictReader(file)
            if row.get("val/reply_lm_loss")
        ]
    assert len(lm_losses) == 4, lm_losses
    # From about ln(V) = 3.4 towards the entropy of "you said <word> <word>" (~1.3 per token).
    assert lm_losses[-1] < 2.0 and lm_losses[-1] < lm_losses[0], lm_losses
    # The test stage decoded with MMI (the run's decoding) and reports diversity and BLEU.
    assert {"test/distinct_1", "test/distinct_2", "test/bleu"} <= set(metrics), metrics
    assert 0 < metrics["test/distinct_1"] <= 1 and metrics["test/bleu"] >= 0


def test_mmi_checkpoints_round_trip_and_older_ones_refuse_mmi_in_one_line(
    mmi_run, tmp_path, capsys
):
    _, run = mmi_run
    ckpt = run / "checkpoints" / "last.ckpt"
    stored = torch.load(ckpt, weights_only=True)
    _, _, module = load_checkpoint(ckpt)
    lm_keys = [key for key in stored["state_dict"] if key.startswith("net.reply_lm.")]
    assert lm_keys and module.decoding.rerank == "mmi"
    for key in lm_keys:
        assert torch.equal(module.state_dict()[key], stored["state_dict"][key]), key
    for options in (
        ["seed=1"],
        ["sample=false", "beam_size=4"],
        ["num_candidates=2", "mmi_lambda=0"],
    ):
        assert predict.main([f"ckpt_path={ckpt}", "text=ka ke ki", *options]) == 0, options
        assert capsys.readouterr().out.startswith("you said")
    assert predict.main([f"ckpt_path={ckpt}", "text=ka", "rerank=maybe"]) == 2
    assert capsys.readouterr().err.startswith("error: decoding.rerank: must be one of none|mmi")
    assert predict.main([f"ckpt_path={ckpt}", "text=ka", "sample=false", "beam_size=2"]) == 2
    assert "set beam_size >= 4" in capsys.readouterr().err

    # A checkpoint from before MMI: no reply LM in its config or weights, no rerank option.
    config = stored["rnnlab_config"]
    config["model"].pop("reply_lm_size")
    for decoding in (config["decoding"], config["module"]["decoding"]):
        for key in ("rerank", "num_candidates", "mmi_lambda", "mmi_first_tokens"):
            decoding.pop(key)
    stored["state_dict"] = {k: v for k, v in stored["state_dict"].items() if k not in lm_keys}
    old = tmp_path / "old.ckpt"
    torch.save(stored, old)
    assert predict.main([f"ckpt_path={old}", "text=ka ke ki", "seed=1"]) == 0
    assert capsys.readouterr().out.strip()
    assert predict.main([f"ckpt_path={old}", "text=ka ke ki", "rerank=mmi"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("error: decoding.rerank: mmi needs the reply language model")
        and "\n" not in err
    )


def test_mmi_chooses_replies_the_reply_lm_finds_less_likely():
    """Same candidates (one beam), lambda 0 vs 2: the first choice maximises log p(reply|tweet)
    per token, so the second, which also weighs the LM, can only have a lower LM log p."""
    torch.manual_seed(0)
    net = Seq2Seq(
        24, 24, pad_id=0, sos_id=2, eos_id=3, unk_id=1, max_target_len=8, embedding_dim=8,
        hidden_size=16, share_embeddings=True, reply_lm_size=8,
    ).eval()  # fmt: skip
    src_tokens, src_lengths = torch.randint(4, 24, (16, 5)), torch.full((16,), 5)
    beam = DecodingOptions(sample=False, beam_size=6, rerank="mmi", num_candidates=6)
    per_token = {}
    for mmi_lambda in (0.0, 2.0):
        options = beam.replace(mmi_lambda=mmi_lambda)
        replies = net.generate(src_tokens, src_lengths, options)["tokens"]
        forward, prior = net.score_replies(src_tokens, src_lengths, replies)
        lengths = (replies != 0).sum(1)
        per_token[mmi_lambda] = (forward.sum(1) / lengths, prior.sum(1) / lengths)
    assert (per_token[0.0][0] >= per_token[2.0][0] - 1e-5).all()
    assert (per_token[2.0][1] <= per_token[0.0][1] + 1e-5).all()
    assert (per_token[2.0][1] < per_token[0.0][1] - 1e-3).any()  # and it does change choices


def test_the_reply_lm_is_its_own_model_and_mmi_needs_it():
    with pytest.raises(ConfigError, match="model.reply_lm_size"):
        Seq2Seq(
            9, 9, pad_id=0, sos_id=2, eos_id=3, max_target_len=4, decoder="repeat", reply_lm_size=8
        )
    net = Seq2Seq(9, 9, pad_id=0, sos_id=2, eos_id=3, max_target_len=4, reply_lm_size=8)
    tgt_tokens = torch.tensor([[2, 4, 5, 3, 0], [2, 6, 3, 0, 0]])
    net.reply_lm_loss(tgt_tokens).backward()  # its loss reaches its own weights only
    assert all(
        (param.grad is not None) == name.startswith("reply_lm.")
        for name, param in net.named_parameters()
    )
    without = Seq2Seq(9, 9, pad_id=0, sos_id=2, eos_id=3, max_target_len=4)
    with pytest.raises(ConfigError, match="decoding.rerank: mmi needs the reply language model"):
        without.check_decoding(DecodingOptions(sample=True, rerank="mmi"))
