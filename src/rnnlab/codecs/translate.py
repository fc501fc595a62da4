"""Sentences as source and target tokens (the `sentence` tokenizer), word level or BPE
subwords, and generated target tokens back into text.

At word level, batches also carry `src_words`: ids that name every source word, also the ones
outside the vocabulary (ids past it, which the codec keeps a table of), so that an `<unk>` in an
output can be replaced by the source word the decoder attended to most (`unk_replace`). A word
typed without its accents (`espanol`, as the book types it) is read as the vocabulary word that
differs only by accents (`español`).
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from rnnlab.codecs.base import Batch, Seq2SeqCodec, stored_tokenizer
from rnnlab.data.subwords import BPEVocab, vocab_from_dict, vocab_labels, vocab_to_dict
from rnnlab.data.text import Tokenizer, detokenize
from rnnlab.data.truecase import Truecaser
from rnnlab.data.vocab import Vocab
from rnnlab.errors import InputError, quote

log = logging.getLogger(__name__)

SENTENCE_ENDS = frozenset(".?!…")


def strip_accents(word: str) -> str:
    """`español` -> `espanol`: drop combining marks after canonical decomposition."""
    if word.isascii():
        return word
    return "".join(c for c in unicodedata.normalize("NFD", word) if not unicodedata.combining(c))


def encode_all(vocab: Vocab | BPEVocab, sequences: Sequence[Sequence[str]]) -> list[list[int]]:
    """Ids of many token sequences (unknown words -> <unk>)."""
    if isinstance(vocab, BPEVocab):
        return vocab.encode_batch(sequences)
    stoi, unk = vocab.stoi, vocab.unk_id
    return [[stoi.get(token, unk) for token in tokens] for tokens in sequences]


@dataclass
class TranslationCodec(Seq2SeqCodec):
    """Source sentences in, target sentences out. `max_source_len`/`max_target_len`: the
    longest training source and target in tokens (targets without <sos>/<eos>); longer inputs
    are cut, outputs are capped near the longest target."""

    tokenizer: Tokenizer
    src_vocab: Vocab | BPEVocab
    tgt_vocab: Vocab | BPEVocab
    unk_replace: bool = True
    source_lang: str = "es"
    max_source_len: int | None = None
    max_target_len: int | None = None
    truecaser: Truecaser | None = None  # a lowercase model's output, cased as people write
    _oov_words: list[str] = field(default_factory=list, init=False, repr=False, compare=False)
    _oov_index: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    _accent_free: dict[str, str] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def word_level(self) -> bool:
        return isinstance(self.src_vocab, Vocab)

    # Source words ----------------------------------------------------------------------------
    def word_ids(self, words: Sequence[str], ids: Sequence[int]) -> list[int]:
        """Ids naming each source word in `src_words`: its vocabulary id, or, for a word the
        vocabulary maps to <unk>, an id past the vocabulary that `word_of` turns back into it."""
        unk, size = self.src_vocab.unk_id, len(self.src_vocab)
        if unk not in ids:
            return list(ids)
        named = list(ids)
        for position, (word, index) in enumerate(zip(words, ids)):
            if index == unk:
                if word not in self._oov_index:
                    self._oov_index[word] = len(self._oov_words)
                    self._oov_words.append(word)
                named[position] = size + self._oov_index[word]
        return named

    def word_of(self, word_id: int) -> str:
        if word_id >= len(self.src_vocab):
            return self._oov_words[word_id - len(self.src_vocab)]
        return self.src_vocab.itos[word_id]

    def known_spelling(self, word: str) -> str:
        """An unknown word typed without its accents (`espanol`) -> the most frequent vocabulary
        word that differs only by accents (`español`), else itself."""
        if word in self.src_vocab.stoi:
            return word
        if self._accent_free is None:
            self._accent_free = {}
            for known in reversed(self.src_vocab.itos):  # most frequent last: it wins
                self._accent_free[strip_accents(known)] = known
        return self._accent_free.get(strip_accents(word), word)

    # Encoding --------------------------------------------------------------------------------
    def encode_source(self, words: list[str]) -> dict[str, Tensor]:
        """Source tokens -> one example's src_tokens (S,), src_lengths () [, src_words (S,)]."""
        ids = self.src_vocab.encode(words)
        example = {
            "src_tokens": torch.tensor(ids, dtype=torch.long),
            "src_lengths": torch.tensor(len(ids)),
        }
        if self.word_level:
            example["src_words"] = torch.tensor(self.word_ids(words, ids), dtype=torch.long)
        return example

    def encode_ids(
        self, sources: Sequence[Sequence[str]], targets: Sequence[Sequence[str]]
    ) -> tuple[list[list[int]], list[list[int]]]:
        """Tokenised sentence pairs -> source ids and target ids (<sos> ... <eos>): what
        `encode_pairs` pads, and what streaming shards store (`rnnlab.data.pair_shards`)."""
        src_ids = encode_all(self.src_vocab, sources)
        sos, eos = self.tgt_vocab.sos_id, self.tgt_vocab.eos_id
        return src_ids, [[sos, *ids, eos] for ids in encode_all(self.tgt_vocab, targets)]

    def encode_pairs(
        self, sources: Sequence[Sequence[str]], targets: Sequence[Sequence[str]]
    ) -> dict[str, Tensor]:
        """Tokenised sentence pairs -> padded src/tgt tensors (targets as <sos> ... <eos>), plus
        `src_words` at word level."""
        src_ids, tgt_ids = self.encode_ids(sources, targets)
        tensors = {
            "src_tokens": pad_ids(src_ids),
            "src_lengths": torch.tensor([len(s) for s in src_ids]),
            "tgt_tokens": pad_ids(tgt_ids),
            "tgt_lengths": torch.tensor([len(t) for t in tgt_ids]),
        }
        if self.word_level:
            tensors["src_words"] = pad_ids([self.word_ids(w, i) for w, i in zip(sources, src_ids)])
        return tensors

    def truncate(self, example: dict[str, Tensor]) -> dict[str, Tensor]:
        """An example cut to the longest training source (with a warning)."""
        limit = self.max_source_len
        if len(example["src_tokens"]) <= limit:
            return example
        log.warning(
            "input has %d tokens; the model was trained on at most %d: translating the first %d "
            "only",
            len(example["src_tokens"]),
            limit,
            limit,
        )
        return {
            key: value[:limit] if value.dim() else torch.tensor(limit)
            for key, value in example.items()
        }

    def encode_example(self, text: str) -> dict[str, Tensor]:
        words = self.tokenizer(text)
        if not words:
            raise InputError("empty sentence: type a sentence to translate, e.g. ¿Cómo te llamas?")
        if self.word_level:
            words = [self.known_spelling(word) for word in words]
        typed = len(words)
        if words[-1] not in SENTENCE_ENDS:
            # Every corpus sentence ends with a mark; without one (the book types `Hola`) the
            # encoder sees an input unlike any it trained on and decoders tend to loop.
            words = [*words, "."]
        example = self.encode_source(words)
        if bool((example["src_tokens"][:typed] == self.src_vocab.unk_id).all()):
            raise InputError(
                f"no word of {quote(text.strip())} is in the source vocabulary "
                f"({len(self.src_vocab)} entries, language {self.source_lang!r}): check the "
                "language and the spelling"
            )
        return self.truncate(example)

    # Decoding --------------------------------------------------------------------------------
    def join(self, tokens: list[str]) -> str:
        return detokenize(self.truecaser.apply(tokens) if self.truecaser else tokens)

    def decode(self, batch: Batch, outputs: Mapping[str, Tensor]) -> list[str]:
        """Generated ids -> text. With `unk_replace` (word level), each `<unk>` becomes the source
        word the decoder attended to most at that step (Luong et al., 2015)."""
        attention, src_words = outputs.get("attention"), batch.get("src_words")
        if not (self.unk_replace and attention is not None and src_words is not None):
            return super().decode(batch, outputs)
        focus = attention.argmax(-1).tolist()  # (B, T): most attended source position per step
        src_words = src_words.tolist()
        tgt = self.tgt_vocab
        texts = []
        for row, (ids, positions) in enumerate(zip(outputs["tokens"].tolist(), focus)):
            words = []
            for index, position in zip(ids, positions):
                if index == tgt.eos_id:
                    break
                if index == tgt.unk_id:
                    words.append(self.word_of(src_words[row][position]))
                elif tgt.itos[index] not in tgt.specials:
                    words.append(tgt.itos[index])
            texts.append(self.join(words))
        return texts

    def source_labels(self, batch: Batch, row: int) -> list[str]:
        """Source words as typed (unknown ones too), or subword pieces."""
        length = int(batch["src_lengths"][row])
        if "src_words" in batch:
            return [self.word_of(i) for i in batch["src_words"][row, :length].tolist()]
        return vocab_labels(self.src_vocab, batch["src_tokens"][row, :length].tolist())

    # Sizes and state -------------------------------------------------------------------------
    def model_kwargs(self) -> dict[str, Any]:
        return {
            "src_vocab_size": len(self.src_vocab),
            "tgt_vocab_size": len(self.tgt_vocab),
            "pad_id": self.tgt_vocab.pad_id,
            "sos_id": self.tgt_vocab.sos_id,
            "eos_id": self.tgt_vocab.eos_id,
            "unk_id": self.tgt_vocab.unk_id,
            "max_target_len": self.max_target_len + 2,  # <eos> and one token to spare
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "src_vocab": vocab_to_dict(self.src_vocab),
            "tgt_vocab": vocab_to_dict(self.tgt_vocab),
            "max_source_len": self.max_source_len,
            "max_target_len": self.max_target_len,
            "tokenization": self.tokenizer.state_dict(),
            "unk_replace": self.unk_replace,
            "source_lang": self.source_lang,
            "truecaser": self.truecaser.state_dict() if self.truecaser else None,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> TranslationCodec:
        return cls(
            stored_tokenizer(state, scheme="sentence"),
            vocab_from_dict(state["src_vocab"]),
            vocab_from_dict(state["tgt_vocab"]),
            unk_replace=state["unk_replace"],
            source_lang=state["source_lang"],
            max_source_len=state["max_source_len"],
            max_target_len=state["max_target_len"],
            truecaser=Truecaser.from_state(state["truecaser"]) if state.get("truecaser") else None,
        )


def pad_ids(sequences: Iterable[list[int]], pad_id: int = 0) -> Tensor:
    """Right-pad lists of ids into one (N, longest) tensor (one copy, no per-row tensors)."""
    sequences = list(sequences)
    lengths = torch.tensor([len(ids) for ids in sequences])
    out = torch.full((len(sequences), int(lengths.max())), pad_id, dtype=torch.long)
    mask = torch.arange(out.size(1)) < lengths[:, None]
    out[mask] = torch.tensor([i for ids in sequences for i in ids], dtype=torch.long)
    return out
