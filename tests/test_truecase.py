"""The truecaser that gives a lowercase model's output the case people write."""

from __future__ import annotations

import pytest
from conftest import SHARED_DATA

from rnnlab.data.text import detokenize, tokenize
from rnnlab.data.truecase import Truecaser

SPA_TXT = SHARED_DATA / "translate" / "spa-eng" / "spa.txt"


def test_usual_spellings_and_sentence_starts():
    caser = Truecaser.fit(
        tokenize(s)
        for s in [
            "Who believes in God?",
            "I think Tom is here.",
            "Is Tom there? I hope so.",
            "What?",
        ]
    )
    tokens = tokenize("¿who is tom? i think god knows. the end", lowercase=True)
    assert detokenize(caser.apply(tokens)) == "¿Who is Tom? I think God knows. The end"
    assert Truecaser.from_state(caser.state_dict()) == caser


def test_thin_evidence_keeps_the_lowercase_spelling():
    caser = Truecaser.fit([["a", "Rose", "is", "a", "rose", "."]])
    assert caser.apply(["the", "rose", "."]) == ["The", "rose", "."]


def test_a_state_that_is_not_a_word_map_is_refused():
    with pytest.raises(ValueError, match="forms"):
        Truecaser.from_state({"forms": {"tom": 3}})


@pytest.mark.skipif(not SPA_TXT.is_file(), reason="needs ../shared/data/translate/spa-eng/spa.txt")
def test_learned_from_tatoeba_it_restores_almost_every_sentence():
    english = [line.split("\t")[0] for line in SPA_TXT.read_text(encoding="utf-8").splitlines()]
    train, held_out = english[1::2], english[::2][:3000]  # every other line: no fitting on them
    caser = Truecaser.fit(tokenize(s) for s in train)
    restored = [caser.apply(tokenize(s, lowercase=True)) for s in held_out]
    same = sum(r == tokenize(s) for r, s in zip(restored, held_out))
    assert same / len(held_out) >= 0.97
