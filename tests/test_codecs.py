"""The codec layer by itself, no training: every task's codec survives its JSON state (what a
checkpoint stores) and reads and answers the same afterwards; states written before codecs
existed (the old datamodule state plus the data config) still load; the tokenizers."""

from __future__ import annotations

import json
import unicodedata

import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf
from PIL import Image

from rnnlab.builder import restore_codec
from rnnlab.checkpoints import CODEC_KEY, CONFIG_KEY
from rnnlab.codecs.arithmetic import ArithmeticCodec
from rnnlab.codecs.book import BookCodec, char_codes, char_vocab
from rnnlab.codecs.chat import ChatCodec
from rnnlab.codecs.mnist import ImageCodec
from rnnlab.codecs.parity import ParityCodec
from rnnlab.codecs.sentiment import SentimentCodec
from rnnlab.codecs.translate import TranslationCodec
from rnnlab.data.subwords import BPEVocab, vocab_to_dict
from rnnlab.data.text import BOOK_JOIN, Detokenizer, Tokenizer, detokenize, tokenize, word_tokens
from rnnlab.data.vocab import Vocab
from rnnlab.errors import CheckpointError

SPANISH = ["¿Cómo te llamas?", "Estoy leyendo un libro.", "Hablas español", "Hola"]
ENGLISH = ["What's your name?", "I'm reading a book.", "Do you speak Spanish?", "Hello!"]


def sentence_vocab(texts, tokenizer) -> Vocab:
    return Vocab.build([tokenizer(text) for text in texts])


def translation(subwords: bool = False) -> TranslationCodec:
    tokenizer = Tokenizer("sentence", lowercase=True)
    if subwords:
        sides = [[tokenizer(text) for text in texts] for texts in (SPANISH, ENGLISH)]
        src, tgt = (BPEVocab.train(side * 5, vocab_size=300) for side in sides)
    else:
        src, tgt = sentence_vocab(SPANISH, tokenizer), sentence_vocab(ENGLISH, tokenizer)
    return TranslationCodec(tokenizer, src, tgt, max_source_len=6, max_target_len=7)


def chat() -> ChatCodec:
    tokenizer = Tokenizer("sentence", lowercase=True, html=True, whitelist="abcdefgh .!?")
    vocab = sentence_vocab(["a bad cafe!", "hello &amp; bye", "feed a dog ."], tokenizer)
    return ChatCodec(tokenizer, vocab, vocab, max_source_len=5, max_target_len=5)


def image_files(tmp_path) -> list[str]:
    paths = []
    for number, color in enumerate((0, 200)):
        path = tmp_path / f"image{number}.png"
        Image.new("L", (30, 40), color).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, tuple]:
    """task -> (codec, inputs it reads), built once for the module."""
    tmp_path = tmp_path_factory.mktemp("images")
    review = Tokenizer("review", lowercase=True)
    reviews = ["Great food, didn't wait!", "awful and rude", "great great service"]
    words = Tokenizer("book", lowercase=True, line_breaks=True)
    book = "The cat sat.\nThe dog ran!\n\nThe end."
    return {
        "arithmetic": (ArithmeticCodec(2, "+-", reverse_input=True), ["12+9", "5 - 13"]),
        "parity": (ParityCodec(8, "count"), ["0110", "1"]),
        "mnist": (ImageCodec("fashion", "columns", (20, 24)), image_files(tmp_path)),
        "sentiment": (
            SentimentCodec.fit(review, reviews, keep_last_tokens=3, max_features=None, min_count=1),
            ["The food was great", "zzz"],
        ),
        "book_chars": (
            BookCodec(Tokenizer("chars"), char_vocab(char_codes(book), max_vocab=8, min_count=1)),
            ["The cat", "x\\ny"],
        ),
        "book_words": (
            BookCodec(words, Vocab.build([words(book)], specials=("<pad>", "<unk>"))),
            ["the cat\\nran", "a zebra"],
        ),
        "translate": (translation(), ["Cómo te llamas", "leyendo espanol un libro de Pepe"]),
        "translate_bpe": (translation(subwords=True), ["¿Cómo te llamas?", "Hola"]),
        "chat": (chat(), ["a bad cafe", "zzz &amp; a b c d e f"]),
    }


def fake_outputs(codec, batch: dict) -> dict:
    """What a model of this codec's task could answer for `batch`."""
    generator = torch.Generator().manual_seed(0)
    sizes = codec.model_kwargs()
    rows = len(next(iter(batch.values())))
    if "num_classes" in sizes:
        return {"probs": torch.rand(rows, sizes["num_classes"], generator=generator).softmax(-1)}
    vocab = sizes.get("tgt_vocab_size", sizes.get("vocab_size"))
    tokens = torch.randint(0, vocab, (rows, 9), generator=generator)
    return {"tokens": tokens, "attention": torch.rand(rows, 9, 6, generator=generator)}


@pytest.mark.parametrize(
    "task",
    ["arithmetic", "parity", "mnist", "sentiment", "book_chars", "book_words", "translate"]
    + ["translate_bpe", "chat"],
)
def test_codec_round_trips_through_its_json_state(cases, task):
    codec, inputs = cases[task]
    restored = type(codec).from_state(json.loads(json.dumps(codec.state_dict())))
    assert restored == codec and restored.model_kwargs() == codec.model_kwargs()
    batch, again = codec.encode(inputs), restored.encode(inputs)
    assert batch.keys() == again.keys()
    for key in batch:
        torch.testing.assert_close(batch[key], again[key])
    outputs = fake_outputs(codec, batch)
    answers = codec.decode(batch, outputs)
    assert answers == restored.decode(again, outputs) and len(answers) == len(inputs)
    assert all(isinstance(answer, str) for answer in answers)


def test_seq2seq_codecs_give_references_and_attention_labels():
    codec = translation()
    batch = codec.encode(["Cómo te llamas Pepe"])  # Pepe: outside the vocabulary
    tgt = codec.tgt_vocab
    ids = [tgt.stoi["what's"], tgt.stoi["your"], tgt.unk_id, tgt.eos_id, 0]
    focus = torch.zeros(1, 5, 5)
    focus[0, range(5), [0, 1, 3, 4, 4]] = 1.0  # the <unk> at step 2 looked at "pepe"
    outputs = {"tokens": torch.tensor([ids]), "attention": focus}
    source, target = codec.token_labels(batch, outputs, 0)
    assert source == ["cómo", "te", "llamas", "pepe", "."]  # typed words, unknown ones too
    assert target == ["what's", "your", "<unk>", "<eos>"]
    assert codec.decode(batch, outputs) == ["what's your pepe"]  # <unk> -> most attended word
    replies = ChatCodec.from_state(chat().state_dict())
    assert replies.src_vocab is replies.tgt_vocab  # one vocabulary, one shared embedding
    batch["tgt_tokens"] = torch.tensor([[tgt.sos_id, *ids]])
    assert codec.reference_texts(batch) == [["what's your <unk>"]]
    batch["references"] = [["what's your name?", "your name?"]]
    assert codec.reference_texts(batch) == batch["references"]


@pytest.mark.parametrize("task", ["translate", "chat", "sentiment", "book", "mnist_rows"])
def test_states_written_before_codecs_still_load(cases, task):
    """Such checkpoints kept the vocabulary as the datamodule's state (under its class name) and
    the settings in the data config."""
    codec = {
        "translate": translation(),
        "chat": chat(),
        "sentiment": cases["sentiment"][0],
        "book": cases["book_words"][0],
        "mnist_rows": ImageCodec("mnist", "rows", (28, 28)),
    }[task]
    overrides = {
        "translate": ["data.corpus=files", "data.path=x.tsv"],
        "chat": ["data.whitelist='abcdefgh .!?'"],
        "sentiment": ["data.max_length=3"],  # the old name of keep_last_tokens
        "book": ["data.level=word", "data.lowercase=true", "data.line_breaks=true"],
        "mnist_rows": [],
    }[task]
    cfg = compose_config(f"task={task}", *overrides)
    state = codec.state_dict()
    old_keys = {"src_vocab", "tgt_vocab", "max_source_len", "max_target_len", "vocab", "level"}
    old = {key: value for key, value in state.items() if key in old_keys}
    if task == "mnist_rows":
        old = {"image_shape": [28, 28]}
    name = str(cfg.data._target_).rsplit(".", 1)[-1]
    checkpoint = {CONFIG_KEY: OmegaConf.to_container(cfg), name: old}
    assert restore_codec(cfg, checkpoint) == codec
    assert restore_codec(cfg, {**checkpoint, CODEC_KEY: state}) == codec
    with pytest.raises(CheckpointError, match="codec state .* cannot be read"):
        restore_codec(cfg, {CODEC_KEY: {"nothing": 1}})


# Tokenizers ------------------------------------------------------------------------------------
def test_sentence_tokens_split_punctuation_and_normalise_unicode():
    decomposed = unicodedata.normalize("NFD", "¿Cómo te llamas?")
    assert decomposed != "¿Cómo te llamas?"
    assert tokenize(decomposed, lowercase=True) == ["¿", "cómo", "te", "llamas", "?"]
    assert tokenize("¡Hola, Tom!  I don't know 3.5") == [
        "¡", "Hola", ",", "Tom", "!", "I", "don't", "know", "3.5",
    ]  # fmt: skip
    for text in ("¿cómo te llamas?", "¡hola, tom!", 'he said "yes".', "i don't know (yet)."):
        assert detokenize(tokenize(text)) == text
    tweets = Tokenizer(
        "sentence", lowercase=True, html=True, whitelist="abcdefghijklmnopqrstuvwxyz "
    )
    assert tweets("Fish &amp; CHIPS :) #yum") == ["fish", "chips", "yum"]


def test_review_tokens_split_punctuation_and_any_whitespace():
    review = Tokenizer("review", lowercase=True)
    assert review("Great food, didn't wait!") == ["great", "food", ",", "didn't", "wait", "!"]
    assert review("Not bad\u0085really good...") == ["not", "bad", "really", "good", ".", ".", "."]
    assert Tokenizer("review")("Great") == ["Great"]


def test_book_tokens_keep_punctuation_and_paragraphs_and_join_back():
    text = 'He said: "It’s 3.0, (really)—no!" Then she left...\n\nNew-paragraph ‘quoted’.'
    tokens = word_tokens(text)
    assert tokens[:5] == ["He", "said", ":", '"', "It’s"] and "\n\n" in tokens
    detokenizer = Detokenizer(BOOK_JOIN)
    assert "".join(detokenizer.feed(t) for t in tokens) == text
    assert word_tokens("one\ntwo\n \nthree", line_breaks=True) == [
        "one",
        "\n",
        "two",
        "\n\n",
        "three",
    ]
    assert word_tokens("one\ntwo") == ["one", "two"]
    assert Tokenizer("chars", lowercase=True)("Ab c") == ["a", "b", " ", "c"]
    assert Tokenizer.from_state(Tokenizer("book", line_breaks=True).state_dict()) == Tokenizer(
        "book", line_breaks=True
    )
    assert vocab_to_dict(Vocab("ab"))["kind"] == "word"
