"""Byte-pair-encoding subword vocabularies, and what treats either vocabulary kind alike.

`BPEVocab` wraps a `tokenizers` BPE model behind the role of `rnnlab.data.vocab.Vocab`:
`encode(word tokens) -> ids`, `decode(ids) -> word tokens`, the same special ids
(`<pad>` = 0), and a JSON form for checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rnnlab.data.vocab import EOS, PAD, SOS, UNK, Vocab
from rnnlab.errors import require

SPECIALS = (PAD, UNK, SOS, EOS)


class BPEVocab:
    """Byte-pair-encoding subwords (the `tokenizers` library) in the role of `Vocab`.

    Input is already split into word tokens (`tokenize`); byte-level BPE (GPT-2 style) then
    splits rare words into pieces, the first piece of each word marked with `Ġ` (a space), so
    `decode` can glue them back into words. All 256 bytes are in the vocabulary: no word is
    ever unknown, whatever the alphabet. Special ids match `Vocab`'s: <pad> 0, <unk> 1,
    <sos> 2, <eos> 3; the vocabulary needs room for the 256 bytes (`MIN_SIZE`).
    """

    MIN_SIZE = 256 + len(SPECIALS) + 1

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.specials = list(SPECIALS)
        self._special_ids = {tokenizer.token_to_id(token) for token in SPECIALS}
        self._unk = tokenizer.token_to_id(UNK)

    @classmethod
    def train(
        cls, sequences: Iterable[Sequence[str]], *, vocab_size: int, min_count: int = 2
    ) -> BPEVocab:
        """Learn merges from word-token sequences (the training split only)."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tokenizer = Tokenizer(models.BPE(unk_token=UNK))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_count,
            special_tokens=list(SPECIALS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator((" ".join(s) for s in sequences), trainer=trainer)
        return cls(tokenizer)

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BPEVocab) and self.tokenizer.to_str() == other.tokenizer.to_str()

    pad_id = property(lambda self: self.tokenizer.token_to_id(PAD))
    unk_id = property(lambda self: self._unk)
    sos_id = property(lambda self: self.tokenizer.token_to_id(SOS))
    eos_id = property(lambda self: self.tokenizer.token_to_id(EOS))

    def encode(self, tokens: Sequence[str], *, sos: bool = False, eos: bool = False) -> list[int]:
        ids = self.tokenizer.encode(list(tokens), is_pretokenized=True).ids if tokens else []
        return ([self.sos_id] if sos else []) + ids + ([self.eos_id] if eos else [])

    def encode_batch(self, sequences: Sequence[Sequence[str]]) -> list[list[int]]:
        """Many sentences at once (the Rust side runs them in parallel)."""
        encodings = self.tokenizer.encode_batch([list(s) for s in sequences], is_pretokenized=True)
        return [encoding.ids for encoding in encodings]

    def decode(self, ids: Iterable[int], *, stop_at_eos: bool = True) -> list[str]:
        """Ids -> word tokens: specials dropped (except <unk>), pieces joined into words."""
        kept = []
        for index in ids:
            index = int(index)
            if stop_at_eos and index == self.eos_id:
                break
            if index not in self._special_ids or index == self._unk:
                kept.append(index)
        text = self.tokenizer.decode(kept, skip_special_tokens=False)
        return text.split()

    def pieces(self, ids: Iterable[int]) -> list[str]:
        """One label per id (subword pieces as stored, e.g. `Ġllam`, `as`)."""
        return [self.tokenizer.id_to_token(int(i)) or "?" for i in ids]

    def to_dict(self) -> dict:
        return {"kind": "bpe", "json": self.tokenizer.to_str()}

    @classmethod
    def from_dict(cls, state: dict) -> BPEVocab:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(state["json"]))


def vocab_to_dict(vocab: Vocab | BPEVocab) -> dict:
    """JSON-able form of either vocabulary kind (what a datamodule's `state_dict` stores)."""
    if isinstance(vocab, BPEVocab):
        return vocab.to_dict()
    return {"kind": "word", **vocab.to_dict()}


def vocab_from_dict(state: dict) -> Vocab | BPEVocab:
    if state.get("kind") == "bpe":
        return BPEVocab.from_dict(state)
    return Vocab.from_dict({key: value for key, value in state.items() if key != "kind"})


def vocab_labels(vocab: Vocab | BPEVocab, ids: Iterable[int]) -> list[str]:
    """A printable label per id, specials included (axis labels of attention maps)."""
    if isinstance(vocab, BPEVocab):
        return vocab.pieces(ids)
    return [vocab.itos[int(i)] for i in ids]


def check_vocab_sizes(tokenizer: str, **sizes: int) -> None:
    """ConfigError unless each `data.<key>` size leaves room for the specials (and, with
    `tokenizer="bpe"`, for BPE's 256 bytes)."""
    for key, size in sizes.items():
        require(size > 4, f"data.{key}", f"must be more than the 4 specials, got {size}")
        require(
            tokenizer != "bpe" or size >= BPEVocab.MIN_SIZE,
            f"data.{key}",
            f"byte-level BPE needs at least {BPEVocab.MIN_SIZE} (256 bytes, the specials and "
            f"some merges), got {size}",
        )
