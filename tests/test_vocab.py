from __future__ import annotations

import pytest

from rnnlab.data.vocab import EOS, PAD, SOS, UNK, Vocab
from rnnlab.errors import InputError


def test_build_orders_by_frequency_with_specials_first_and_caps_size():
    vocab = Vocab.build([["b", "a", "b"], ["c", "b", "a"]], max_size=6)
    assert vocab.itos == [PAD, UNK, SOS, EOS, "b", "a"]
    assert vocab.pad_id == 0 and vocab.encode(["c"]) == [vocab.unk_id]


def test_min_count_and_encode_decode_round_trip():
    vocab = Vocab.build([["x", "y", "x"]], min_count=2)
    assert "y" not in vocab
    ids = vocab.encode(["x", "y"], sos=True, eos=True)
    assert ids[0] == vocab.sos_id and ids[-1] == vocab.eos_id
    assert vocab.decode(ids + [vocab.encode(["x"])[0]]) == ["x", UNK]  # stops at <eos>


def test_json_round_trip(tmp_path):
    vocab = Vocab("héllo", specials=(PAD, SOS, EOS))
    vocab.save(tmp_path / "vocab.json")
    assert Vocab.load(tmp_path / "vocab.json") == vocab
    assert Vocab.from_dict(vocab.to_dict()).stoi == vocab.stoi


def test_vocab_without_unk_refuses_unknown_tokens_readably():
    vocab = Vocab("01", specials=(PAD,))
    with pytest.raises(InputError, match="'2' is not in the vocabulary; known tokens: '01'"):
        vocab.encode(["0", "2"])
