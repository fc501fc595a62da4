"""Book language modelling: cleaning, one token stream, window and stateful batches, sampling,
learning a source of known entropy, generation through rnnlab.predict."""

from __future__ import annotations

import io
import logging
import random
from collections import Counter

import pytest
import torch
from conftest import SHARED_DATA, compose_config, train_run
from torch import Tensor

from rnnlab import evaluate, predict
from rnnlab.data.book import BookData, read_book
from rnnlab.data.text import word_tokens
from rnnlab.errors import ConfigError, DataError, InputError
from rnnlab.inference import load_checkpoint
from rnnlab.models.decoding import DecodingOptions
from rnnlab.models.language_model import RNNLanguageModel
from rnnlab.tasks.language_model import LanguageModelTask

CELLS = ["rnn", "gru", "lstm"]
BOM = "\ufeff"
# First-order Markov source over a, b, c, d: each letter is followed by one of two letters with
# probability 1/2, so the entropy rate is exactly 1 bit per char (perplexity 2).
SUCCESSORS = {"a": "bc", "b": "cd", "c": "da", "d": "ab"}
TINY = [
    "model.embedding_dim=8",
    "model.hidden_size=16",
    "model.num_layers=1",
    "data.seq_len=20",
    "data.batch_size=8",
    "data.eval_batch_size=16",
]


def markov_text(length: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    chars = ["a"]
    for _ in range(length - 1):
        chars.append(rng.choice(SUCCESSORS[chars[-1]]))
    return "".join(chars)


def valid_transitions(text: str) -> bool:
    return all(b in SUCCESSORS[a] for a, b in zip(text, text[1:]))


def gutenberg_file(tmp_path, body: str, name: str = "book.txt"):
    """`body` wrapped like a Gutenberg file: BOM, CRLF, header and licence around markers."""
    text = (
        f"{BOM}The Project Gutenberg eBook of A Test\n\nLicence words here.\n\n"
        "*** START OF THE PROJECT GUTENBERG EBOOK A TEST ***\n\n\n"
        f"{body}\n\n"
        "    *** END OF THE PROJECT GUTENBERG EBOOK A TEST ***\n\nMore licence text.\n"
    )
    path = tmp_path / name
    path.write_bytes(text.replace("\n", "\r\n").encode("utf-8"))
    return path


# Reading and cleaning ------------------------------------------------------------------------
def test_gutenberg_file_is_cleaned_of_bom_crlf_and_boilerplate(tmp_path):
    path = gutenberg_file(tmp_path, "Chapter 1\n\nIt is a truth universally acknowledged.")
    text = read_book(path)
    assert text == "Chapter 1\n\nIt is a truth universally acknowledged.\n"
    data = BookData(path=str(path), level="word", seq_len=2)
    data.setup()
    assert "Licence" not in data.codec.vocab and "Gutenberg" not in data.codec.vocab
    assert "\r" not in data.codec.vocab and BOM not in data.codec.vocab


def test_file_without_markers_is_used_whole_and_logged(tmp_path, caplog):
    path = tmp_path / "plain.txt"
    path.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n")
    with caplog.at_level(logging.INFO):
        assert read_book(path) == path.read_text()
    assert "no Gutenberg" in caplog.text and str(path) in caplog.text


def test_first_tokens_cuts_the_text_and_its_old_name_still_works_with_a_message(tmp_path, caplog):
    path = tmp_path / "plain.txt"
    path.write_text("one two three four five six seven eight nine ten " * 20)
    lengths = {}
    for option in ("first_tokens", "max_tokens"):
        with caplog.at_level(logging.WARNING):
            data = BookData(path=str(path), level="word", seq_len=2, **{option: 40})
        data.setup()
        lengths[option] = sum(len(stream) for stream in data.streams.values())
    assert lengths == {"first_tokens": 40, "max_tokens": 40}
    assert "data.max_tokens is deprecated" in caplog.text and "data.first_tokens=40" in caplog.text


def test_non_utf8_empty_and_missing_files_are_data_errors(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"good line\ncaf\xe9\n")
    with pytest.raises(DataError, match=r"latin1\.txt: line 2 \(byte offset 13\)"):
        read_book(bad)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(BOM.encode() + b"\r\n\r\n")
    with pytest.raises(DataError, match="empty.txt is empty"):
        read_book(empty)
    with pytest.raises(DataError, match="does not exist"):
        BookData(path=str(tmp_path / "nope.txt")).setup()
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="without .txt files"):
        BookData(path=str(tmp_path / "folder")).setup()


def test_default_downloads_gutenberg_ids_with_a_clear_offline_message(tmp_path, monkeypatch):
    from rnnlab.data import book
    from rnnlab.data.download import DownloadError

    def offline(url, dest, **kwargs):
        raise DownloadError(f"Failed to download {url}: no network. put it at {dest}")

    monkeypatch.setattr(book, "download", offline)
    data = BookData(gutenberg_ids=[1342], data_dir=str(tmp_path))
    with pytest.raises(DataError) as error:
        data.prepare_data()
    message = str(error.value)
    assert "https://www.gutenberg.org/cache/epub/1342/pg1342.txt" in message
    assert "data.path" in message

    def fetched(url, dest, **kwargs):
        dest.write_text(
            "*** START OF THE PROJECT GUTENBERG EBOOK ***\n" + "word " * 500 + "\n*** END OF x\n"
        )
        return dest

    monkeypatch.setattr(book, "download", fetched)
    data = BookData(gutenberg_ids=[1342, 11], data_dir=str(tmp_path), seq_len=10)
    data.setup()
    assert [f.name for f in data.files(None)] == ["pg1342.txt", "pg11.txt"]


# One stream, splits, batches ---------------------------------------------------------------
def test_contiguous_split_without_overlap(tmp_path):
    path = tmp_path / "markov.txt"
    path.write_text(markov_text(1999) + "\n")
    data = BookData(path=str(path), seq_len=10)
    data.setup()
    streams = data.streams
    whole = torch.cat([streams["train"], streams["val"], streams["test"]])
    assert torch.equal(whole, data.codec.encode_text(path.read_text()))
    assert [len(s) for s in streams.values()] == [1800, 100, 100]
    assert whole.dtype == torch.int32 and data.memory_bytes() == 4 * 2000
    # 179 windows of 10: the last one's targets are tokens 1781..1790, inside the training split.
    assert len(data.train_set) == 179
    last = data.train_set.__getitems__([178])
    assert torch.equal(last["targets"][0], streams["train"][1781:1791].long())
    assert len(data.val_set) == 9 and len(data.test_set) == 9


def test_windows_targets_are_inputs_shifted_by_one(tmp_path):
    path = tmp_path / "markov.txt"
    path.write_text(markov_text(1000))
    data = BookData(path=str(path), seq_len=7, batch_size=4)
    data.setup()
    batch = next(iter(data.train_dataloader()))
    assert batch["inputs"].shape == batch["targets"].shape == (4, 7)
    assert batch["inputs"].dtype == torch.long
    assert torch.equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
    stream = data.streams["train"].long()
    for row_in, row_tgt in zip(batch["inputs"], batch["targets"]):
        windows = stream.unfold(0, 7, 1)
        (start,) = (windows == row_in).all(1).nonzero()[0].tolist()
        assert torch.equal(row_tgt, stream[start + 1 : start + 8])


def test_stateful_batches_continue_each_track(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("".join(chr(ord("a") + i % 26) for i in range(3000)))
    data = BookData(path=str(path), seq_len=6, batch_size=4, stateful=True)
    data.setup()
    batches = list(data.train_dataloader())
    assert [b["reset"].tolist() for b in batches] == [[True] * 4] + [[False] * 4] * (
        len(batches) - 1
    )
    for previous, current in zip(batches, batches[1:]):
        # row t of batch k+1 starts where row t of batch k stopped
        assert torch.equal(current["inputs"][:, 0], previous["targets"][:, -1])
    stream = data.streams["train"].long()
    track_len = (len(stream) - 1) // 4
    for track in range(4):
        inputs = torch.cat([b["inputs"][track] for b in batches])
        targets = torch.cat([b["targets"][track] for b in batches])
        start = track * track_len
        assert torch.equal(inputs, stream[start : start + track_len])
        assert torch.equal(targets, stream[start + 1 : start + track_len + 1])
    with pytest.raises(ConfigError, match="data.batch_size"):
        BookData(path=str(path), seq_len=100, batch_size=64, stateful=True).setup()


def test_stateful_training_carries_the_detached_state_exactly():
    torch.manual_seed(0)
    net = RNNLanguageModel(7, embedding_dim=4, cell="lstm", hidden_size=5, num_layers=2)
    task = LanguageModelTask(net).eval()
    tokens = torch.randint(0, 7, (3, 19))

    def step(columns: slice, reset: list[bool]) -> Tensor:
        inputs = tokens[:, columns]
        targets = tokens[:, columns.start + 1 : columns.stop + 1]
        batch = {"inputs": inputs, "targets": targets, "reset": torch.tensor(reset)}
        return task.model_step(batch)["logits"]

    first = step(slice(0, 6), [True] * 3)
    second = step(slice(6, 12), [False] * 3)
    whole, _ = net(tokens[:, :12])
    torch.testing.assert_close(torch.cat([first, second], 1), whole)
    assert all(not s.requires_grad for s in task._carried["eval"])
    # Row 0 starts afresh; rows 1 and 2 go on from where they were.
    third = step(slice(12, 18), [True, False, False])
    torch.testing.assert_close(third[0], net(tokens[:1, 12:18])[0][0])
    torch.testing.assert_close(third[1:], net(tokens[1:, :18])[0][:, 12:])


# Tokens and text ---------------------------------------------------------------------------
def test_word_vocab_by_frequency_with_limits_and_unknown_prompt_note(tmp_path, caplog):
    path = tmp_path / "words.txt"
    path.write_text(("the cat sat on the mat . " * 30 + "rare words\n\n") * 3)
    data = BookData(path=str(path), level="word", max_vocab=6, seq_len=5)
    data.setup()
    train = Counter(word_tokens(path.read_text())[: len(data.streams["train"])])
    ranked = sorted(train, key=lambda token: (-train[token], token))
    assert data.codec.vocab.itos == ["<pad>", "<unk>", *ranked[:4]] and ranked[0] == "the"
    assert data.codec.encode_text("rare words")[0] == data.codec.vocab.unk_id
    with caplog.at_level(logging.WARNING):
        example = data.codec.encode_example("the zebra wombat")
    assert example["tokens"].tolist() == [2, 1, 1]
    assert "'wombat', 'zebra'" in caplog.text and "<unk>" in caplog.text
    with pytest.raises(InputError, match="empty prompt"):
        data.codec.encode_example("   ")


def test_a_backward_book_reads_every_split_right_to_left_and_shows_text_in_reading_order(
    tmp_path,
):
    path = tmp_path / "words.txt"
    path.write_text("the cat sat on the mat .\n\nthen the dog ran off the mat .\n\n" * 20)
    forward = BookData(path=str(path), level="word", seq_len=5)
    backward = BookData(path=str(path), level="word", seq_len=5, backward=True)
    forward.setup(), backward.setup()
    assert backward.codec.vocab.itos == forward.codec.vocab.itos
    for split, stream in forward.streams.items():
        assert torch.equal(backward.streams[split], stream.flip(0))
    codec = backward.codec
    ids = codec.encode_example("the dog ran")["tokens"]
    assert [codec.vocab.itos[i] for i in ids] == ["ran", "dog", "the"]
    assert codec.text_of(ids.tolist()) == "the dog ran"
    # A backward model continues a prompt leftwards: its answer is the text before the prompt.
    generated = torch.tensor([codec.vocab.stoi[w] for w in ("then", "\n\n", ".", "mat")])
    answer = codec.decode(codec.encode(["the dog ran"]), {"tokens": generated[None]})
    assert answer == [forward.codec.text_of(generated.flip(0).tolist())]
    ((prompt, truth),) = backward.sample_pairs("val", 1)
    whole = forward.codec.text_of(forward.codec.encode_text(path.read_text()).tolist())
    assert (truth + prompt).replace(" ", "") in whole.replace(" ", "")  # truth, then prompt
    restored = type(codec).from_state(codec.state_dict())
    assert restored.backward and torch.equal(
        restored.encode_text("the mat"), codec.encode_text("the mat")
    )
    stale = BookData(path=str(path), level="word", seq_len=5)  # a forward run given its codec
    stale.codec = codec
    with pytest.raises(ConfigError, match="data.backward=true"):
        stale.setup()


# Model ----------------------------------------------------------------------------------------
def test_language_model_shapes_and_tied_weights():
    net = RNNLanguageModel(11, embedding_dim=6, cell="gru", hidden_size=6, tie_weights=True)
    assert net.out.weight is net.embedding.weight
    logits, state = net(torch.randint(0, 11, (2, 5)))
    assert logits.shape == (2, 5, 11) and state.shape == (1, 2, 6)
    with pytest.raises(ConfigError, match=r"model\.tie_weights.*8 and 16"):
        RNNLanguageModel(11, embedding_dim=8, hidden_size=16, tie_weights=True)


def test_prompts_of_different_lengths_generate_as_if_alone():
    torch.manual_seed(0)
    net = RNNLanguageModel(9, embedding_dim=4, cell="lstm", hidden_size=6, num_layers=2).eval()
    prompts = [torch.tensor([3, 4, 5, 6]), torch.tensor([7])]
    batch = torch.nn.utils.rnn.pad_sequence(prompts, batch_first=True)
    greedy = DecodingOptions(max_new_tokens=8)
    together = net.generate(batch, torch.tensor([4, 1]), greedy)
    for row, prompt in enumerate(prompts):
        alone = net.generate(prompt[None], torch.tensor([len(prompt)]), greedy)
        assert torch.equal(together[row], alone[0])


# Sampling -------------------------------------------------------------------------------------
def test_sampling_is_deterministic_under_a_seed():
    torch.manual_seed(0)
    net = RNNLanguageModel(30, embedding_dim=8, cell="gru", hidden_size=16).eval()
    prompt, lengths = torch.randint(0, 30, (3, 4)), torch.tensor([4, 4, 4])

    options = DecodingOptions(sample=True, max_new_tokens=25)

    def sample(seed, options=options):
        return net.generate(prompt, lengths, options, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(sample(5), sample(5))
    assert not torch.equal(sample(5), sample(6))
    generator = torch.Generator().manual_seed(5)
    streamed = torch.stack(list(net.stream(prompt, lengths, options, generator=generator)), 1)
    assert torch.equal(streamed, sample(5))
    greedy = options.replace(greedy=True)
    assert torch.equal(sample(1, greedy), sample(2, greedy))
    with pytest.raises(ConfigError, match=r"decoding\.beam_size: is a seq2seq option"):
        net.generate(prompt, lengths, options.replace(sample=False, beam_size=2))


# Configs and runs ------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", CELLS)
def test_book_task_composes_with_every_cell(cell):
    cfg = compose_config("task=book", f"cell={cell}")
    assert (cfg.task_name, cfg.model.cell, cfg.monitor, cfg.mode) == (
        "book",
        cell,
        "val/loss",
        "min",
    )
    assert cfg.data._target_ == "rnnlab.data.book.BookData" and cfg.data.path is None


def test_book_chapter_preset_has_the_books_settings():
    cfg = compose_config("experiment=book_chapter")
    assert (cfg.task_name, cfg.model.cell, cfg.model.hidden_size) == ("book", "gru", 1024)
    assert (cfg.data.level, cfg.data.seq_len, cfg.data.batch_size) == ("word", 20, 512)
    assert cfg.optimizer.lr == 1e-3 and cfg.module.metrics.bpc is None


@pytest.fixture(scope="module")
def markov_run(tmp_path_factory):
    """A char model trained on the Markov source once for this module: (metrics, dir, path)."""
    root = tmp_path_factory.mktemp("markov")
    path = root / "markov.txt"
    path.write_text(markov_text(24_000))
    metrics, _ = train_run(
        root / "run",
        "task=book",
        "cell=gru",
        f"data.path={path}",
        "data.seq_len=20",
        "data.batch_size=64",
        "data.sample_length=40",
        "model.embedding_dim=8",
        "model.hidden_size=32",
        "model.num_layers=1",
        "model.dropout=0.0",
        "decoding.max_new_tokens=40",
        "optimizer.lr=2e-2",
        "trainer.max_epochs=3",
        "logger=none",
    )
    return metrics, root / "run", path


@pytest.mark.slow
def test_learns_a_markov_source_down_to_its_entropy(markov_run):
    metrics, _, _ = markov_run
    # Entropy rate 1 bit/char: the best possible perplexity is 2, bits per char 1.
    assert 1.98 <= metrics["val/ppl"] <= 2.1, metrics
    assert 0.99 <= metrics["test/bpc"] <= 1.07, metrics


def test_checkpoint_restores_vocab_without_reading_data(markov_run):
    _, run_dir, path = markov_run
    cfg, codec, module = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert cfg.data.path == str(path)
    fresh = BookData(path=str(path))
    fresh.setup()
    assert codec == fresh.codec and len(codec.vocab) == 6
    batch = codec.encode(["abcd"])
    text = codec.decode(batch, module.predict_batch(batch))[0]
    assert len(text) == 40 and set(text) <= set("abcd")


def test_predict_streams_a_continuation_and_pipes_one_line_per_input(
    markov_run, capsys, monkeypatch
):
    _, run_dir, _ = markov_run
    ckpt = f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"
    assert predict.main([ckpt, "text=abca", "length=60", "top_k=2", "seed=3"]) == 0
    streamed = capsys.readouterr().out.rstrip("\n")
    assert len(streamed) == 60 and valid_transitions("a" + streamed), streamed

    monkeypatch.setattr("sys.stdin", io.StringIO("abca\n"))
    assert predict.main([ckpt, "length=60", "top_k=2", "seed=3"]) == 0
    assert capsys.readouterr().out.rstrip("\n") == streamed  # same seed, same text

    monkeypatch.setattr("sys.stdin", io.StringIO("abca\n\nxyz\ndc\n"))
    assert predict.main([ckpt, "length=30", "greedy=true"]) == 1  # the empty line
    out = capsys.readouterr().out.split("\n")[:-1]
    assert len(out) == 4 and out[1].startswith("!error: empty prompt")
    assert all(len(line) == 30 for line in (out[0], out[2], out[3]))
    assert valid_transitions("a" + out[0]) and valid_transitions("c" + out[3])

    assert predict.main([ckpt, "text=abc", "length=0"]) == 2
    assert "decoding.max_new_tokens: must be a positive integer" in capsys.readouterr().err


def test_evaluate_on_a_user_file(markov_run, tmp_path):
    _, run_dir, _ = markov_run
    held_out = tmp_path / "held_out.txt"
    held_out.write_text(markov_text(3000, seed=99))
    metrics = evaluate.evaluate(
        str(run_dir / "checkpoints" / "last.ckpt"), str(held_out), accelerator="cpu"
    )
    assert 1.95 <= metrics["test/ppl"] <= 2.2, metrics


@pytest.mark.slow
@pytest.mark.skipif(
    not (SHARED_DATA / "books").is_dir(), reason=f"shared books not found at {SHARED_DATA}"
)
def test_short_real_run_on_a_slice_of_a_shared_book(tmp_path):
    metrics, objects = train_run(
        tmp_path,
        "task=book",
        "cell=gru",
        f"data.path={SHARED_DATA / 'books' / 'pg11_alice_in_wonderland.txt'}",
        "data.level=word",
        "data.lowercase=true",
        "data.first_tokens=8000",
        "data.seq_len=20",
        "data.batch_size=32",
        "model.embedding_dim=32",
        "model.hidden_size=64",
        "model.num_layers=1",
        "decoding.max_new_tokens=20",
        "optimizer.lr=1e-2",
        "trainer.max_epochs=2",
        "logger=none",
    )
    datamodule = objects["datamodule"]
    assert "alice" in datamodule.codec.vocab and "Alice" not in datamodule.codec.vocab
    vocab_size = len(datamodule.codec.vocab)
    # Already far better than guessing uniformly over the vocabulary after 24 steps.
    assert metrics["test/ppl"] < vocab_size / 2, (metrics, vocab_size)
    prompt, truth = datamodule.sample_pairs("val", 8)[0]
    assert prompt and truth and "\n" not in prompt + truth
