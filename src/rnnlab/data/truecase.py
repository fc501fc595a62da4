"""Restore case to lowercased tokens: the output of a lowercase model as people write it.

Learned from the training targets (cased, tokenized with `rnnlab.data.text.tokenize`): each word
takes its most frequent spelling where case is free, that is not at the start of a sentence
("Tom", "God", "I", "iPhone"); then the first word of each sentence is capitalised.

>>> caser = Truecaser.fit([["Who", "believes", "in", "God", "?"], ["I", "saw", "Tom", "."]])
>>> caser.apply(["who", "believes", "in", "god", "?", "tom", "saw", "me", "."])
['Who', 'believes', 'in', 'God', '?', 'Tom', 'saw', 'me', '.']
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

SENTENCE_END = frozenset(".!?…")


class Truecaser:
    """`forms`: lowercase word -> its usual cased spelling, only where the two differ."""

    def __init__(self, forms: dict[str, str]):
        self.forms = dict(forms)

    @classmethod
    def fit(cls, sentences: Iterable[Sequence[str]]) -> Truecaser:
        """Count each word's spellings away from sentence starts; keep the most frequent
        (ties: the lowercase one, so nothing is capitalised on thin evidence)."""
        return cls.from_counts(count_spellings(sentences))

    @classmethod
    def from_counts(cls, counts: Mapping[str, Counter[str]]) -> Truecaser:
        """The truecaser of `count_spellings`' counts (merged over parts of a corpus)."""
        forms = {}
        for lower, spellings in counts.items():
            best = max(spellings.items(), key=lambda item: (item[1], item[0] == lower))[0]
            if best != lower:
                forms[lower] = best
        return cls(forms)

    def apply(self, tokens: Sequence[str]) -> list[str]:
        """Usual spellings, then a capital on each sentence's first word."""
        cased = [self.forms.get(token, token) for token in tokens]
        return [
            word[:1].upper() + word[1:] if starts else word
            for word, starts in zip(cased, _sentence_starts(cased))
        ]

    def state_dict(self) -> dict[str, dict[str, str]]:
        return {"forms": dict(self.forms)}

    @classmethod
    def from_state(cls, state: dict) -> Truecaser:
        forms = state.get("forms")
        if not isinstance(forms, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in forms.items()
        ):
            raise ValueError("a truecaser state is {'forms': {lowercase word: spelling}}")
        return cls(forms)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Truecaser) and self.forms == other.forms


def count_spellings(
    sentences: Iterable[Sequence[str]], counts: dict[str, Counter[str]] | None = None
) -> dict[str, Counter[str]]:
    """lowercase word -> Counter of its spellings away from sentence starts, added to `counts`."""
    counts = defaultdict(Counter) if counts is None else counts
    for tokens in sentences:
        for token, starts in zip(tokens, _sentence_starts(tokens)):
            if not starts and token[:1].isalpha():
                counts[token.lower()][token] += 1
    return counts


def _sentence_starts(tokens: Sequence[str]) -> list[bool]:
    """Whether each token is the first word of a sentence (marks such as ¿ or a quote before
    it do not count as the first word)."""
    starts, expecting = [], True
    for token in tokens:
        word = token[:1].isalnum()
        starts.append(expecting and word)
        if word:
            expecting = False
        elif token in SENTENCE_END:
            expecting = True
    return starts
