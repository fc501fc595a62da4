"""The one vocabulary class: token <-> index, with reserved specials, stored as JSON."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from rnnlab.errors import InputError, quote

PAD, UNK, SOS, EOS = "<pad>", "<unk>", "<sos>", "<eos>"


class Vocab:
    """Maps tokens to contiguous ids; specials come first so `<pad>` is always id 0.

    A vocabulary without `<unk>` refuses unknown tokens with an `InputError` that lists what it
    knows, which is what a user typing a prediction needs to see.
    """

    def __init__(self, tokens: Iterable[str], specials: Sequence[str] = (PAD, UNK, SOS, EOS)):
        self.specials = list(specials)
        self.itos: list[str] = list(self.specials)
        seen = set(self.itos)
        for token in tokens:
            if token not in seen:
                seen.add(token)
                self.itos.append(token)
        self.stoi = {token: index for index, token in enumerate(self.itos)}

    @classmethod
    def build(
        cls,
        sequences: Iterable[Iterable[str]],
        *,
        max_size: int | None = None,
        min_count: int = 1,
        specials: Sequence[str] = (PAD, UNK, SOS, EOS),
    ) -> Vocab:
        """Most frequent tokens first (ties by token, so builds are reproducible): the sampled
        and adaptive output layers (`rnnlab.models.output_layer`) rely on that order."""
        counts = Counter(token for sequence in sequences for token in sequence)
        return cls.from_counts(counts, max_size=max_size, min_count=min_count, specials=specials)

    @classmethod
    def from_counts(
        cls,
        counts: Mapping[str, int],
        *,
        max_size: int | None = None,
        min_count: int = 1,
        specials: Sequence[str] = (PAD, UNK, SOS, EOS),
    ) -> Vocab:
        """`build` from token counts (e.g. merged over parts of a streamed corpus)."""
        ranked = sorted(
            (t for t, c in counts.items() if c >= min_count and t not in specials),
            key=lambda t: (-counts[t], t),
        )
        if max_size is not None:
            ranked = ranked[: max(0, max_size - len(specials))]
        return cls(ranked, specials)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Vocab) and self.itos == other.itos and self.specials == other.specials
        )

    @property
    def pad_id(self) -> int:
        return self.stoi[PAD]

    @property
    def unk_id(self) -> int | None:
        return self.stoi.get(UNK)

    @property
    def sos_id(self) -> int | None:
        return self.stoi.get(SOS)

    @property
    def eos_id(self) -> int | None:
        return self.stoi.get(EOS)

    def encode(self, tokens: Iterable[str], *, sos: bool = False, eos: bool = False) -> list[int]:
        """Token ids; unknown tokens map to `<unk>`, or raise InputError when there is none."""
        ids = [self.stoi[SOS]] if sos else []
        unk = self.unk_id
        for token in tokens:
            index = self.stoi.get(token, unk)
            if index is None:
                known = "".join(t for t in self.itos if t not in self.specials)
                raise InputError(
                    f"{quote(token)} is not in the vocabulary; known tokens: {quote(known)}"
                )
            ids.append(index)
        if eos:
            ids.append(self.stoi[EOS])
        return ids

    def decode(self, ids: Iterable[int], *, stop_at_eos: bool = True) -> list[str]:
        """Tokens for `ids`, dropping specials other than `<unk>` and stopping at `<eos>`."""
        tokens = []
        eos = self.eos_id
        for index in ids:
            index = int(index)
            if stop_at_eos and index == eos:
                break
            token = self.itos[index]
            if token in self.specials and token != UNK:
                continue
            tokens.append(token)
        return tokens

    def to_dict(self) -> dict:
        return {"specials": self.specials, "tokens": self.itos[len(self.specials) :]}

    @classmethod
    def from_dict(cls, state: dict) -> Vocab:
        return cls(state["tokens"], state["specials"])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
