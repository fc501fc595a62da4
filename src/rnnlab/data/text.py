"""The one tokenizer module: how rnnlab splits text into tokens and joins tokens back into text.

A `Tokenizer` is one of four splitting rules (`scheme`) plus its options; a task's codec keeps
it in its checkpoint state, so a model always reads text the way it was trained:

- `sentence` (translate, chat): Unicode NFC, then numbers (3.5, 10:30, 1,000), words with inner
  apostrophes (don't), other letter/digit runs, and one token per punctuation mark (¿ ¡ too),
  so a translation model learns to produce punctuation;
- `review` (sentiment, as the Keras examples split): runs of word characters with inner
  apostrophes, or one other visible character; any Unicode whitespace separates (U+0085 too);
- `book` (word-level language models): words, punctuation marks, a `\\n\\n` token per paragraph
  break and, with `line_breaks`, a `\\n` token per single line break (verse, plays);
- `chars` (char-level language models): one token per character.

`Detokenizer` joins tokens back one at a time (so generated text can stream); `detokenize`
joins a whole sentence (`["¿", "cómo", "estás", "?"]` -> `"¿cómo estás?"`), which is what BLEU
must see.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SCHEMES = ("sentence", "review", "book", "chars")
PARAGRAPH = "\n\n"  # book scheme: the token of a blank line (paragraph break)
LINE_BREAK = "\n"  # book scheme with line_breaks: the token of a single line break

# A number (3.5, 10:30, 1,000), a word with inner apostrophes (don't, o'clock), any other run
# of letters/digits, or one visible character (punctuation: ¿ ¡ . , " ...).
_SENTENCE_TOKEN = re.compile(r"\d+(?:[.,:]\d+)*|[^\W\d_]+(?:['’][^\W\d_]+)*|[^\W_]+|\S")
# A word (letters/digits, with inner apostrophes: "didn't") or any single other visible character.
_REVIEW_TOKEN = re.compile(r"\w+(?:'\w+)*|[^\w\s]")
# <unk> literally (what decoding writes for unknown tokens), a paragraph break (blank lines),
# a line break, a word with inner apostrophes (don't, Elizabeth’s), or one other visible char.
_BOOK_TOKEN = re.compile(r"<unk>|\n(?:[ \t\r\f\v]*\n)+|\n|[^\W_]+(?:['’][^\W_]+)*|\S")


def normalize(text: str, *, lowercase: bool = False) -> str:
    """Unicode NFC (one code point per accented letter, whatever the keyboard sent), collapsed
    whitespace, optionally lowercased."""
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    text = " ".join(text.split())
    return text.lower() if lowercase else text


def tokenize(text: str, *, lowercase: bool = False) -> list[str]:
    """The `sentence` scheme: normalised text -> words and punctuation marks, one token each.

    >>> tokenize("¿Cómo te llamas?", lowercase=True)
    ['¿', 'cómo', 'te', 'llamas', '?']
    """
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    return _SENTENCE_TOKEN.findall(text.lower() if lowercase else text)  # whitespace never matches


def word_tokens(text: str, *, line_breaks: bool = False) -> list[str]:
    """The `book` scheme: words, punctuation marks (one token each) and paragraph breaks; single
    line breaks are tokens with `line_breaks` (verse, plays) and plain spaces otherwise
    (hard-wrapped books)."""
    tokens = []
    for token in _BOOK_TOKEN.findall(text):
        if token[0] == "\n":
            if len(token) > 1:
                tokens.append(PARAGRAPH)
            elif line_breaks:
                tokens.append(LINE_BREAK)
        else:
            tokens.append(token)
    return tokens


@functools.cache
def _outside(whitelist: str) -> re.Pattern[str]:
    return re.compile(f"[^{re.escape(whitelist)}]")


@dataclass(frozen=True)
class Tokenizer:
    """A splitting rule (`scheme`, see the module docstring) and what is done to text first.

    `html`: HTML entities unescaped (`&amp;` -> `&`), as tweets need; `whitelist`: characters
    outside it become spaces (after lowercasing, so it lists lowercase letters).
    """

    scheme: str = "sentence"
    lowercase: bool = False
    line_breaks: bool = False
    html: bool = False
    whitelist: str | None = None

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"tokenizer scheme must be one of {SCHEMES}, got {self.scheme!r}")

    def clean(self, text: str) -> str:
        """The text the splitting rule reads (lowercased here only where the whitelist needs it;
        `__call__` lowercases the rest)."""
        if self.html:
            text = html.unescape(text)
        if self.whitelist is not None:
            text = _outside(self.whitelist).sub(" ", text.lower() if self.lowercase else text)
        return text

    def __call__(self, text: str) -> list[str]:
        text = self.clean(text)
        if self.scheme == "sentence":
            return tokenize(text, lowercase=self.lowercase)
        if self.lowercase:
            text = text.lower()
        if self.scheme == "review":
            return _REVIEW_TOKEN.findall(text)
        if self.scheme == "book":
            return word_tokens(text, line_breaks=self.line_breaks)
        return list(text)

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Tokenizer:
        """The tokenizer `state_dict` describes; absent options keep their defaults."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in state.items() if key in names})


# Joining tokens back ---------------------------------------------------------------------------
@dataclass(frozen=True)
class JoinRules:
    """Where `Detokenizer` leaves out the space between two tokens."""

    no_space_before: frozenset[str]  # closing marks: "word," not "word ,"
    no_space_after: frozenset[str]  # opening marks: "¿cómo", "(yes"
    glue_numbers: bool = False  # "3" "." "0" -> "3.0" (the book scheme splits numbers)


SENTENCE_JOIN = JoinRules(frozenset(".,;:!?)]}%…»”’'"), frozenset("¿¡([{«“‘"))
_DASHES_AND_BREAKS = frozenset({"-", "—", "–", LINE_BREAK, PARAGRAPH})
BOOK_JOIN = JoinRules(
    frozenset(".,;:!?)]}’”%…'") | _DASHES_AND_BREAKS,
    frozenset("([{“‘") | _DASHES_AND_BREAKS,
    glue_numbers=True,
)


class Detokenizer:
    """Tokens back to text, one token at a time (so generation can stream): spaces between
    words, none before closing punctuation or after opening marks; straight double quotes
    alternate between opening and closing. `previous`: the token before the first one fed
    (a prompt's last token)."""

    def __init__(self, rules: JoinRules = SENTENCE_JOIN, previous: str | None = None):
        self.rules = rules
        self.previous = previous
        self.before_previous: str | None = None
        self.open_quote = False

    def feed(self, token: str) -> str:
        """The text `token` adds: itself, with a space before it where one belongs."""
        rules, previous = self.rules, self.previous
        if (
            rules.glue_numbers
            and previous in (".", ",", ":")
            and token.isdigit()
            and (self.before_previous or "").isdigit()
        ):
            space = False  # 3.0, 1,000, 10:30
        elif token == '"':
            space = (
                not self.open_quote
                and previous is not None
                and previous not in rules.no_space_after
            )
            self.open_quote = not self.open_quote
        else:
            space = (
                previous is not None
                and previous not in rules.no_space_after
                and token not in rules.no_space_before
                and not (previous == '"' and self.open_quote)
            )
        self.before_previous, self.previous = previous, token
        return f" {token}" if space else token


def detokenize(tokens: Iterable[str], rules: JoinRules = SENTENCE_JOIN) -> str:
    """Tokens -> text (`Detokenizer` over all of them)."""
    detokenizer = Detokenizer(rules)
    return "".join(detokenizer.feed(token) for token in tokens)
