"""Predict input hygiene: errors quote at most ~80 characters of an input, and an option the
checkpoint's task does not read is refused instead of being taken as text."""

from __future__ import annotations

import io
import logging

import pytest
from conftest import train_run

from rnnlab import predict
from rnnlab.codecs.arithmetic import ArithmeticCodec
from rnnlab.codecs.mnist import ImageCodec
from rnnlab.data.book import BookData
from rnnlab.data.chat import ChatData
from rnnlab.data.translate import TranslationData
from rnnlab.data.vocab import Vocab
from rnnlab.errors import InputError, quote

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HUGE = 100_000  # one pasted line of a whole file
LONGEST = 300  # an error line: its reason plus at most ~80 quoted characters of the input


def test_quote_cuts_long_text_and_says_how_long_it_was():
    assert quote("535+61") == "'535+61'"
    assert quote("x" * 80) == repr("x" * 80)
    assert quote("x" * HUGE) == f"{'x' * 80!r}... ({HUGE} characters)"


@pytest.mark.parametrize(
    "text",
    [
        "1" * HUGE,  # too many digits
        "1+" * (HUGE // 2) + "1",  # not <number><operator><number>
    ],
)
def test_arithmetic_errors_quote_a_bounded_part(text):
    with pytest.raises(InputError) as error:
        ArithmeticCodec().encode_example(text)
    assert len(str(error.value)) < LONGEST and f"({len(text)} characters)" in str(error.value)


def test_vocabulary_error_quotes_a_bounded_token():
    with pytest.raises(InputError) as error:
        Vocab("01", specials=()).encode(["2" * HUGE])
    assert len(str(error.value)) < LONGEST


def test_image_path_error_is_bounded_and_not_an_os_error():
    with pytest.raises(InputError, match="no such image file") as error:
        ImageCodec().encode_example("a" * HUGE)  # longer than any file name: is_file() raises
    assert len(str(error.value)) < LONGEST


def test_translate_error_quotes_a_bounded_part(tmp_path):
    corpus = tmp_path / "pairs.tsv"
    corpus.write_text("".join(f"go {i} .\tve {i} .\n" for i in range(40)), encoding="utf-8")
    module = TranslationData(path=str(corpus), min_count=1)
    module.setup()
    with pytest.raises(InputError, match="no word of") as error:
        module.codec.encode_example("qwerty " * (HUGE // 7))
    assert len(str(error.value)) < LONGEST


def test_notes_on_unknown_prompts_are_bounded(tmp_path, caplog):
    book = tmp_path / "book.txt"
    book.write_text("the cat sat on the mat .\n" * 50, encoding="utf-8")
    books = BookData(path=str(book), level="word", seq_len=4)
    books.setup()
    tweets = tmp_path / "tweets.txt"
    tweets.write_text("".join(f"hello there {i}\nhi you {i} ok\n" for i in range(40)))
    chat = ChatData(path=str(tweets))
    chat.setup()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        books.codec.encode_example("the " + "z" * HUGE)
        chat.codec.encode_example("z" * HUGE)
    notes = [record.getMessage() for record in caplog.records]
    assert len(notes) == 2 and all(len(note) < LONGEST for note in notes), notes


@pytest.fixture(scope="module")
def addition_ckpt(tmp_path_factory):
    """A barely trained 2-digit addition checkpoint: predict only needs one to exist."""
    output_dir = tmp_path_factory.mktemp("addition_tiny")
    train_run(
        output_dir,
        "task=arithmetic",
        "size=tiny",
        "data.digits=2",
        "data.train_size=64",
        "data.val_size=32",
        "data.test_size=32",
        "trainer.max_epochs=1",
        "logger=none",
        "test=false",
        "diagnosis.enabled=false",
    )
    return f"ckpt_path={output_dir / 'checkpoints' / 'last.ckpt'}"


def test_error_lines_quote_at_most_80_characters(addition_ckpt, capsys, monkeypatch):
    capsys.readouterr()
    lines = ["12+9", "1" * HUGE, "12+9"]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    assert predict.main([addition_ckpt]) == 1
    out = capsys.readouterr().out.split("\n")[:-1]
    assert len(out) == 3 and out[1].startswith("!error:") and len(out[1]) < LONGEST, out[1][:300]
    assert predict.main([addition_ckpt, f"text={'1' * HUGE}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err) < LONGEST, err[:300]


def test_options_the_task_does_not_read_are_refused(addition_ckpt, capsys, tmp_path):
    capsys.readouterr()
    png = tmp_path / "digit.png"
    assert predict.main([addition_ckpt, f"image={png}"]) == 2
    err = capsys.readouterr().err
    assert "image= is for image tasks" in err and "use text=" in err
    assert predict.main([addition_ckpt, "text=12+9", "interactive=true"]) == 2
    assert "give text= or interactive=true, not both" in capsys.readouterr().err
