"""Text as a language model's tokens (characters, or words with the `book` tokenizer), and
generated tokens back into text, streamed piece by piece.

`\\n` (backslash, n) stands for a line break in both directions, so a prompt with line breaks
fits on one stdin line and every generated answer is one output line.

A `backward` codec reads text right to left (ULMFiT's second language model, for transfer): its
ids run from the end of a text to its start, so a model continuing a prompt writes what comes
*before* it, which `decode` shows in reading order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rnnlab.codecs.base import Batch, Codec, stored_tokenizer
from rnnlab.data.text import BOOK_JOIN, Detokenizer, Tokenizer
from rnnlab.data.vocab import PAD, UNK, Vocab
from rnnlab.errors import InputError, quote

log = logging.getLogger(__name__)

LEVELS = ("char", "word")
SPECIALS = (PAD, UNK)
_CHUNK = 1 << 20  # code points encoded per step


def escape_line_breaks(text: str) -> str:
    return text.replace("\n", "\\n")


def unescape_line_breaks(text: str) -> str:
    return text.replace("\\n", "\n")


def char_codes(text: str) -> Tensor:
    """Unicode code points (N,) int32, without a Python object per character."""
    return torch.frombuffer(bytearray(text.encode("utf-32-le")), dtype=torch.int32)


def char_vocab(codes: Tensor, *, max_vocab: int | None, min_count: int) -> Vocab:
    """The characters of `codes` (N,), most frequent first (ties by character)."""
    unique, counts = torch.unique(codes, return_counts=True)
    ranked = sorted(
        ((chr(c), n) for c, n in zip(unique.tolist(), counts.tolist()) if n >= min_count),
        key=lambda item: (-item[1], item[0]),
    )
    tokens = [token for token, _ in ranked]
    if max_vocab is not None:
        tokens = tokens[: max_vocab - len(SPECIALS)]
    return Vocab(tokens, SPECIALS)


@dataclass
class BookCodec(Codec):
    """`tokenizer`: the `chars` scheme (char level) or the `book` scheme (word level);
    `backward`: ids in reverse reading order (the module docstring)."""

    tokenizer: Tokenizer
    vocab: Vocab
    backward: bool = False

    def in_model_order(self, ids: Tensor) -> Tensor:
        """Ids (N,) in reading order -> in the order the model reads them, and back."""
        return ids.flip(0) if self.backward else ids

    @staticmethod
    def make_tokenizer(level: str, *, lowercase: bool, line_breaks: bool) -> Tokenizer:
        scheme = "chars" if level == "char" else "book"
        return Tokenizer(scheme, lowercase=lowercase, line_breaks=line_breaks)

    @property
    def level(self) -> str:
        return "char" if self.tokenizer.scheme == "chars" else "word"

    # Encoding --------------------------------------------------------------------------------
    def encode_chars(self, codes: Tensor) -> Tensor:
        """Code points -> vocabulary ids (int32) by a sorted lookup; unknown chars -> <unk>."""
        chars = [(ord(t), i) for t, i in self.vocab.stoi.items() if t not in self.vocab.specials]
        if not chars:
            return torch.full_like(codes, self.vocab.unk_id)
        known = torch.tensor(sorted(chars), dtype=torch.int32)
        known_codes, known_ids = known[:, 0].contiguous(), known[:, 1].contiguous()
        ids = torch.empty_like(codes)
        for start in range(0, len(codes), _CHUNK):  # chunks bound the int64 temporaries
            chunk = codes[start : start + _CHUNK]
            position = torch.searchsorted(known_codes, chunk).clamp(max=len(known) - 1)
            hit = known_codes[position] == chunk
            ids[start : start + _CHUNK] = torch.where(hit, known_ids[position], self.vocab.unk_id)
        return ids

    def encode_text(self, text: str) -> Tensor:
        """Text (lowercased already if the tokenizer lowercases) -> token ids (N,) int32
        (unknown -> <unk>)."""
        if self.level == "char":
            return self.in_model_order(self.encode_chars(char_codes(text)))
        ids = torch.tensor(self.vocab.encode(self.tokenizer(text)), dtype=torch.int32)
        return self.in_model_order(ids)

    def encode_example(self, text: str) -> dict[str, Tensor]:
        """A prompt -> {"tokens" (T,), "lengths" ()}. Unknown words/chars are read as <unk>,
        with a note on stderr; an empty prompt is an InputError."""
        text = unescape_line_breaks(text)
        tokens = self.tokenizer(text)
        if not tokens or not text.strip():
            raise InputError("empty prompt: type some text for the model to continue")
        unknown = sorted({t for t in tokens if t not in self.vocab and t != UNK})
        if unknown:
            shown = ", ".join(quote(t) for t in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            log.warning(
                "note: %s%s not in the %s vocabulary; read as <unk>", shown, more, self.level
            )
        ids = self.in_model_order(torch.tensor(self.vocab.encode(tokens), dtype=torch.long))
        return {"tokens": ids, "lengths": torch.tensor(len(ids))}

    # Decoding --------------------------------------------------------------------------------
    def pieces(self, previous_id: int | None, ids: Iterable[int]) -> Iterator[str]:
        """Text pieces of generated ids as they arrive: joined, they are the answer with real
        line breaks. `previous_id`: the prompt's last token (spacing of the first word)."""
        itos = self.vocab.itos
        detokenizer = None
        if self.level == "word":
            detokenizer = Detokenizer(BOOK_JOIN, None if previous_id is None else itos[previous_id])
        started = False
        for index in ids:
            token = itos[index]
            if token == PAD:
                continue
            piece = token if detokenizer is None else detokenizer.feed(token)
            if not started:
                piece = piece.lstrip(" ")
                started = bool(piece)
            if piece:
                yield piece

    @staticmethod
    def prompt_last(batch: Batch) -> list[int]:
        """The last token id of each prompt of `batch` (tokens (B, T), lengths (B,))."""
        last = batch["tokens"].gather(1, (batch["lengths"] - 1).unsqueeze(1)).squeeze(1)
        return last.tolist()

    def stream_text(self, batch: Batch, token_steps: Iterable[Tensor]) -> Iterator[str]:
        """Pieces of text of the first prompt's continuation, as its tokens (B,) arrive (a
        backward model's text before the prompt comes in one piece, once it is complete)."""
        steps = (int(step.reshape(-1)[0]) for step in token_steps)
        if self.backward:
            yield self.text_of(steps)
        else:
            yield from self.pieces(self.prompt_last(batch)[0], steps)

    def continuation(self, previous_id: int, ids: Iterable[int]) -> str:
        """Ids that follow a prompt ending in `previous_id` -> their text, line breaks escaped
        (a backward model's: the text before the prompt, in reading order)."""
        if self.backward:
            return self.text_of(ids)
        return escape_line_breaks("".join(self.pieces(previous_id, ids)))

    def decode(self, batch: Batch, outputs: Mapping[str, Tensor]) -> list[str]:
        """Generated `tokens` (B, L) -> one line each (`continuation`)."""
        rows = zip(self.prompt_last(batch), outputs["tokens"].tolist())
        return [self.continuation(last, ids) for last, ids in rows]

    def text_of(self, ids: Iterable[int]) -> str:
        """Token ids in model order -> text in reading order (prompts and true continuations),
        line breaks escaped."""
        ids = [index for index in ids if index != self.vocab.pad_id]
        tokens = self.vocab.decode(ids[::-1] if self.backward else ids, stop_at_eos=False)
        if self.level == "char":
            return escape_line_breaks("".join(tokens))
        detokenizer = Detokenizer(BOOK_JOIN)
        return escape_line_breaks("".join(detokenizer.feed(token) for token in tokens))

    # Sizes and state -------------------------------------------------------------------------
    def vocabularies(self) -> dict[str, Vocab]:
        return {"tokens": self.vocab}

    def model_kwargs(self) -> dict[str, Any]:
        return {"vocab_size": len(self.vocab)}

    def state_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "tokenization": self.tokenizer.state_dict(),
            "vocab": self.vocab.to_dict(),
            "backward": self.backward,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> BookCodec:
        scheme = "chars" if state["level"] == "char" else "book"
        tokenizer = stored_tokenizer(state, scheme=scheme)
        return cls(tokenizer, Vocab.from_dict(state["vocab"]), bool(state.get("backward", False)))
