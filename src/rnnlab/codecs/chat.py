"""Tweets and replies over one shared word vocabulary: the translation codec with the chatbot's
tokenizer (HTML entities unescaped, lowercased, a character whitelist) and forgiving prompts."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from rnnlab.codecs.base import stored_tokenizer
from rnnlab.codecs.translate import TranslationCodec
from rnnlab.data.subwords import vocab_from_dict
from rnnlab.errors import quote

log = logging.getLogger(__name__)


@dataclass
class ChatCodec(TranslationCodec):
    """Prompts in, replies out; `src_vocab` is `tgt_vocab`. An empty or all-unknown prompt
    still gets a reply (from <unk>), with a note on stderr saying why it will be a guess."""

    unk_replace: bool = False

    def encode_example(self, text: str) -> dict[str, Tensor]:
        vocab = self.src_vocab
        words = self.tokenizer(text)
        if not words:
            log.warning("note: empty prompt (after cleaning %s): replying to <unk>", quote(text))
            words = [vocab.itos[vocab.unk_id]]
        elif all(word not in vocab.stoi for word in words):
            log.warning(
                "note: no word of %s is in the %d-word vocabulary: the reply is a guess",
                quote(text.strip()),
                len(vocab),
            )
        if len(words) > self.max_source_len:
            log.warning(
                "prompt has %d tokens; the model was trained on at most %d: reading the first %d",
                len(words),
                self.max_source_len,
                self.max_source_len,
            )
            words = words[: self.max_source_len]
        return self.encode_source(words)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ChatCodec:
        vocab = vocab_from_dict(state["src_vocab"])
        return cls(
            stored_tokenizer(state, scheme="sentence", html=True),
            vocab,
            vocab,
            max_source_len=state["max_source_len"],
            max_target_len=state["max_target_len"],
        )
