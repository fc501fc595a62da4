"""The one decoding module: how to decode (`DecodingOptions`) and turning a step function into
output sequences.

A decoder exposes `step(prev_tokens (B,), state) -> (logits (B, V), state, attention (B, S) | None)`
and a state with `index_select(index)` (reorders the batch dim, as beam search needs). Greedy
decoding, sampling (temperature, top-k, top-p) and batched beam search share that contract,
`constrain_step` wraps a step function so any of them avoids given tokens or repeats, and
`decode` picks one of them for a set of options. Beam search asks for each row's k best tokens
only (`TopKStepFn`), which a model with a factorised vocabulary layer finds without scoring every
word. With `rerank=mmi`, `decode` generates several
candidates (draws or a beam's N best) and keeps the one with the best MMI score
(`mmi_scores`), from per-token log-probabilities the model supplies (`CandidateScorer`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor

from rnnlab.errors import require

RERANKERS = ("none", "mmi")


def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class DecodingOptions:
    """How a model generates, the same names for language models and seq2seq models: the
    config's `decoding:` node, `rnnlab.predict`'s key=value options, a checkpoint's defaults.

    `max_new_tokens`: tokens to generate (a language model generates exactly that many; a
    seq2seq model stops at <eos>, at most that many; None: the longest training target + 2).
    `sample`: draw each token (`temperature`, `top_k`: one k or a schedule such as (3, 2) for
    the first token and the rest, `top_p`, `seed`: None draws fresh randomness) instead of the
    most likely one, or the best of a `beam_size` beam search ranked by
    log p / length ** `length_penalty`. Constraints (seq2seq): `suppress_unk` never outputs
    <unk>, `no_repeat` never the token just output, `min_new_tokens` before <eos>.
    `rerank=mmi` (seq2seq with a reply language model): `num_candidates` candidates (that many
    draws, or the best of the beam, which must be at least as wide) re-ranked by maximum mutual
    information, (log p(reply|input) - `mmi_lambda` log p_LM(reply)) / length **
    `length_penalty`, the LM term over the first `mmi_first_tokens` tokens only (null: all;
    Li et al., 2016, MMI-antiLM). Validated once, here: every problem is a ConfigError naming
    the key.
    """

    max_new_tokens: int | None = None
    min_new_tokens: int = 0
    sample: bool = False
    beam_size: int = 1
    length_penalty: float = 1.0
    temperature: float = 1.0
    top_k: int | tuple[int, ...] | None = None
    top_p: float | None = None
    seed: int | None = None
    suppress_unk: bool = False
    no_repeat: bool = False
    rerank: str = "none"
    num_candidates: int = 10
    mmi_lambda: float = 0.5
    mmi_first_tokens: int | None = None

    #: Earlier names (a language model's `length`/`greedy`, seq2seq's `max_length`/
    #: `min_length`), still read everywhere options are given.
    ALIASES: ClassVar[dict[str, str]] = {
        "length": "max_new_tokens",
        "max_length": "max_new_tokens",
        "min_length": "min_new_tokens",
        "greedy": "sample",  # negated
    }

    def __post_init__(self) -> None:
        if self.top_k is not None and not isinstance(self.top_k, int):
            object.__setattr__(self, "top_k", tuple(self.top_k))  # lists from configs
        checks = {
            "max_new_tokens": (
                self.max_new_tokens is None or _is_int(self.max_new_tokens, 1),
                "a positive integer or null",
            ),
            "min_new_tokens": (_is_int(self.min_new_tokens, 0), "an integer >= 0"),
            "beam_size": (_is_int(self.beam_size, 1), "a positive integer"),
            "length_penalty": (_is_number(self.length_penalty), "a number"),
            "temperature": (_is_number(self.temperature) and self.temperature > 0, "a number > 0"),
            "top_k": (
                self.top_k is None
                or _is_int(self.top_k, 1)
                or (bool(self.top_k) and all(_is_int(k, 1) for k in self.top_k)),
                "a positive integer, a list of them (a schedule) or null",
            ),
            "top_p": (
                self.top_p is None or (_is_number(self.top_p) and 0 < self.top_p <= 1),
                "a number in (0, 1] or null",
            ),
            "seed": (self.seed is None or _is_int(self.seed, 0), "an integer >= 0 or null"),
            "rerank": (self.rerank in RERANKERS, f"one of {'|'.join(RERANKERS)}"),
            "num_candidates": (_is_int(self.num_candidates, 1), "a positive integer"),
            "mmi_lambda": (_is_number(self.mmi_lambda) and self.mmi_lambda >= 0, "a number >= 0"),
            "mmi_first_tokens": (
                self.mmi_first_tokens is None or _is_int(self.mmi_first_tokens, 1),
                "a positive integer or null",
            ),
        }
        checks.update(
            (key, (isinstance(getattr(self, key), bool), "true or false"))
            for key in ("sample", "suppress_unk", "no_repeat")
        )
        for key, (ok, allowed) in checks.items():
            require(ok, f"decoding.{key}", f"must be {allowed}, got {getattr(self, key)!r}")
        require(
            not (self.sample and self.beam_size > 1),
            "decoding.beam_size",
            "sample=true draws one answer: use beam_size=1 (or sample=false)",
        )
        require(
            self.rerank == "none" or self.sample or self.beam_size >= self.num_candidates,
            "decoding.beam_size",
            f"rerank={self.rerank} re-ranks the num_candidates ({self.num_candidates}) best "
            f"hypotheses of the beam: set beam_size >= {self.num_candidates}, a smaller "
            "num_candidates, or sample=true",
        )

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every option name, aliases included (what `rnnlab.predict` accepts)."""
        return (*(field.name for field in dataclasses.fields(cls)), *cls.ALIASES)

    @classmethod
    def with_aliases(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """`options` under their current names (`greedy=true` -> `sample=false`); ConfigError
        for an unknown name."""
        unknown = sorted(set(options) - set(cls.names()))
        require(not unknown, "decoding", f"unknown option(s) {unknown}; known: {cls.names()}")
        renamed = {}
        for key, value in options.items():
            name = cls.ALIASES.get(key, key)
            renamed[name] = (
                (not value if isinstance(value, bool) else value) if key == "greedy" else value
            )
        return renamed

    def replace(self, **options: Any) -> DecodingOptions:
        """These options with some changed (any name or alias), validated."""
        return dataclasses.replace(self, **self.with_aliases(options))

    def greedy(self) -> DecodingOptions:
        """The same constraints, decoded greedily (validation: fast, comparable across epochs)."""
        return dataclasses.replace(self, sample=False, beam_size=1, rerank="none")

    @property
    def constrained(self) -> bool:
        return self.suppress_unk or self.no_repeat or self.min_new_tokens > 0

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator | None:
        """A generator seeded with `seed`, or None (torch's global one) without a seed."""
        if self.seed is None:
            return None
        return torch.Generator(device=device).manual_seed(self.seed)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (a schedule as a list), as a config holds them."""
        values = dataclasses.asdict(self)
        if isinstance(self.top_k, tuple):
            values["top_k"] = list(self.top_k)
        return values


class DecoderState(Protocol):
    """A decoder's state over a batch of rows; beam search's rows are `size` hypotheses per
    input, and what depends only on the input (e.g. encoder outputs) may stay one per input."""

    def index_select(self, index: Tensor) -> DecoderState:
        """Rows `index` (N,) of the batch, in that order (expanding or dropping inputs)."""

    def expand_hypotheses(self, size: int) -> DecoderState:
        """Each row as `size` hypotheses of its input: rows b * size + k (beam search)."""

    def select_hypotheses(self, index: Tensor) -> DecoderState:
        """Rows `index`, each the row of another hypothesis of the same input."""

    def select_inputs(self, inputs: Tensor) -> DecoderState:
        """Only inputs `inputs` (N,), each with all its hypotheses."""


StepFn = Callable[[Tensor, Any], tuple[Tensor, Any, Tensor | None]]

#: Given each row's k best next tokens' log-probabilities found so far (B, k), the lowest log p
#: a token of that row can still use (B,): beam search's bound for a `TopKStepFn`.
Needed = Callable[[Tensor], Tensor]

#: What beam search calls: (prev_tokens (B,), state, k, needed) -> the k most likely next
#: tokens' log-probabilities (B, k) and ids (B, k), best first, the next state, attention
#: (B, S) | None. Tokens below `needed`'s bound may be missing from a row (their places hold
#: others, or -inf), so a model can score just what can matter; `top_k_step` derives an exact
#: one from any `StepFn`.
TopKStepFn = Callable[[Tensor, Any, int, Needed | None], tuple[Tensor, Tensor, Any, Tensor | None]]


def top_k_step(step: StepFn) -> TopKStepFn:
    """The beam's view of `step`: each row's k best tokens of log_softmax(logits)."""

    def best(
        prev: Tensor, state: Any, k: int, needed: Needed | None = None
    ) -> tuple[Tensor, Tensor, Any, Tensor | None]:
        logits, state, attention = step(prev, state)
        logits = logits.float()
        values, ids = logits.topk(min(k, logits.size(-1)), dim=-1)
        # Ranking within a row needs no softmax: one logsumexp turns the k into log p.
        return values - logits.logsumexp(-1, keepdim=True), ids, state, attention

    return best


def mask_after_eos(tokens: Tensor, eos_id: int, pad_id: int) -> Tensor:
    """Replace everything after each row's first <eos> by <pad>: (B, T) -> (B, T)."""
    is_eos = tokens == eos_id
    after = (is_eos.cumsum(1) - is_eos.long()) > 0
    return tokens.masked_fill(after, pad_id)


@torch.no_grad()
def greedy_decode(
    step: StepFn, state: Any, *, start_tokens: Tensor, eos_id: int, pad_id: int, max_len: int
) -> tuple[Tensor, Tensor | None]:
    """Pick the most likely token at each step, for the whole batch at once, starting from
    `start_tokens` (B,) (<sos>).

    Returns tokens (B, T <= max_len) without <sos>, padded after <eos>, and the attention
    weights (B, T, S) when the decoder attends (else None). Stops when every row has ended.
    """
    prev = start_tokens
    finished = torch.zeros_like(start_tokens, dtype=torch.bool)
    tokens, weights = [], []
    for _ in range(max_len):
        logits, state, attention = step(prev, state)
        prev = logits.argmax(-1).masked_fill(finished, pad_id)
        tokens.append(prev)
        if attention is not None:
            weights.append(attention)
        finished |= prev == eos_id
        if bool(finished.all()):
            break
    return torch.stack(tokens, 1), torch.stack(weights, 1) if weights else None


def constrain_step(
    step: StepFn,
    *,
    banned_ids: Sequence[int] = (),
    no_repeat: bool = False,
    eos_id: int | None = None,
    min_length: int = 0,
) -> StepFn:
    """`step` whose logits never pick `banned_ids` (e.g. <unk>), nor, with `no_repeat`, the token
    just fed (no "ha ha ha"), nor `eos_id` before `min_length` tokens (no empty reply). Works
    under every decoder here (finished rows ignore their logits)."""
    banned = list(banned_ids)
    position = 0

    def constrained(prev: Tensor, state: Any) -> tuple[Tensor, Any, Tensor | None]:
        nonlocal position
        logits, state, attention = step(prev, state)
        logits = logits.clone()
        if banned:
            logits[:, banned] = float("-inf")
        if no_repeat:
            logits.scatter_(1, prev[:, None], float("-inf"))
        if eos_id is not None and position < min_length:
            logits[:, eos_id] = float("-inf")
        position += 1
        return logits, state, attention

    return constrained


# Sampling ------------------------------------------------------------------------------------
def top_k_at(top_k: int | Sequence[int] | None, position: int) -> int | None:
    """k for the `position`-th generated token: one k for all, or a schedule whose last entry
    holds on (the book's chatbot: [3, 2] = top 3 for the first word, top 2 after)."""
    if top_k is None or isinstance(top_k, int):
        return top_k
    return int(top_k[min(position, len(top_k) - 1)])


def filter_top_k(logits: Tensor, k: int | None) -> Tensor:
    """Keep the k largest logits of each row, set the rest to -inf: (B, V) -> (B, V).

    Ties at the k-th value are all kept. `None` or k >= V leaves the logits unchanged.
    """
    if k is None or k >= logits.size(-1):
        return logits
    if k < 1:
        raise ValueError(f"top_k must be a positive integer, got {k}")
    kth = logits.topk(k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: Tensor, p: float | None) -> Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability reaches p.

    (B, V) -> (B, V) with the rest at -inf; the most likely token always survives. `None` or
    p >= 1 leaves the logits unchanged.
    """
    if p is None or p >= 1.0:
        return logits
    if p <= 0.0:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    # A token is dropped when the tokens ranked above it already hold at least p.
    drop_sorted = (probs.cumsum(-1) - probs) >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next(
    logits: Tensor,
    options: DecodingOptions,
    *,
    position: int = 0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One token per row from logits (B, V) -> (B,): the argmax unless `options.sample`, else a
    draw from softmax(logits / temperature) restricted by top-k (the k for this `position`)
    and then top-p."""
    if not options.sample:
        return logits.argmax(-1)
    logits = filter_top_k(logits / options.temperature, top_k_at(options.top_k, position))
    logits = filter_top_p(logits, options.top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


@torch.no_grad()
def iter_sample(
    step: StepFn,
    state: Any,
    options: DecodingOptions,
    *,
    start_tokens: Tensor,
    max_len: int,
    generator: torch.Generator | None = None,
) -> Iterator[Tensor]:
    """Yield the drawn (or, without `options.sample`, most likely) tokens (B,) one step at a
    time (for streaming to a terminal).

    `start_tokens` (B,) are fed at the first step (<sos>, or the last token of a prompt whose
    other tokens are already in `state`); each token is fed back at the next step.
    """
    prev = start_tokens
    for position in range(max_len):
        logits, state, _ = step(prev, state)
        prev = sample_next(logits, options, position=position, generator=generator)
        yield prev


@torch.no_grad()
def sample_decode(
    step: StepFn,
    state: Any,
    options: DecodingOptions,
    *,
    start_tokens: Tensor,
    max_len: int,
    generator: torch.Generator | None = None,
    eos_id: int | None = None,
    pad_id: int = 0,
) -> tuple[Tensor, None]:
    """`iter_sample` for a whole batch: tokens (B, T <= max_len), and None (no attention is
    collected).

    With `eos_id`, rows are padded after their <eos> and decoding stops once every row has
    ended; without it (language models) exactly `max_len` tokens are drawn. The same
    `generator` seed gives the same tokens.
    """
    finished = torch.zeros(len(start_tokens), dtype=torch.bool, device=start_tokens.device)
    tokens = []
    steps = iter_sample(
        step, state, options, start_tokens=start_tokens, max_len=max_len, generator=generator
    )
    for sampled in steps:
        tokens.append(sampled.masked_fill(finished, pad_id))
        if eos_id is not None:
            finished |= sampled == eos_id
            if bool(finished.all()):
                break
    return torch.stack(tokens, 1), None


# Beam search ---------------------------------------------------------------------------------
@dataclass
class _Beams:
    """The live hypotheses of a beam search: `size` rows per unfinished sentence, row b*K + k
    being hypothesis k of live sentence b."""

    size: int
    length_penalty: float
    sentence: Tensor  # (B_live,) index of each live sentence in the batch
    state: Any
    prev: Tensor  # (B_live * K,) each hypothesis's last token
    scores: Tensor  # (B_live * K,) sum of log p
    lengths: Tensor  # (B_live * K,) tokens so far, <eos> included
    ended: Tensor  # (B_live * K,) emitted <eos>
    tokens: Tensor  # (B_live * K, T)
    weights: Tensor | None = None  # (B_live * K, T, S) when the decoder attends

    @classmethod
    def start(cls, state: Any, start_tokens: Tensor, size: int, length_penalty: float) -> _Beams:
        sentence = torch.arange(len(start_tokens), device=start_tokens.device)
        rows = sentence.repeat_interleave(size)
        # Only hypothesis 0 is alive at the start, so the first step does not pick K copies.
        scores = torch.full((len(sentence), size), float("-inf"), device=start_tokens.device)
        scores[:, 0] = 0.0
        prev = start_tokens.index_select(0, rows)
        return cls(
            size,
            length_penalty,
            sentence,
            state.expand_hypotheses(size),
            prev,
            scores.view(-1),
            lengths=torch.zeros_like(prev),
            ended=torch.zeros_like(prev, dtype=torch.bool),
            tokens=prev.new_empty(len(prev), 0),
        )

    def normalised(self, total: Tensor, length: Tensor) -> Tensor:
        """log p / length ** length_penalty: what hypotheses are ranked by."""
        return total / length.clamp(min=1).to(total.dtype) ** self.length_penalty

    def _ranked(self, row_log_probs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Each hypothesis's one-token extensions from its k best next tokens' log-probabilities
        (live * K, k): their total log p (live * K, k), new lengths (live * K,) and ranking key
        (live, K * k). An ended hypothesis has one continuation, <pad>, at no cost."""
        only_pad = torch.full_like(row_log_probs, float("-inf"))
        only_pad[:, 0] = 0.0
        row_log_probs = torch.where(self.ended[:, None], only_pad, row_log_probs)
        total = self.scores[:, None] + row_log_probs
        new_lengths = torch.where(self.ended, self.lengths, self.lengths + 1)
        key = self.normalised(total, new_lengths[:, None]).view(len(self.sentence), -1)
        return total, new_lengths, key

    def needed(self, row_log_probs: Tensor) -> Tensor:
        """The lowest log p a next token needs to make its sentence's K best, given each
        hypothesis's k best tokens found so far (live * K, k) -> (live * K,) (+inf for ended
        hypotheses): the sentence's K-th best key so far, as that row's log p (with a little
        slack for rounding). `TopKStepFn`s may leave out tokens below it."""
        _, new_lengths, key = self._ranked(row_log_probs)
        kth = key.topk(self.size, dim=1).values[:, -1].repeat_interleave(self.size)
        scale = new_lengths.clamp(min=1).to(kth.dtype) ** self.length_penalty
        floor = kth * scale - self.scores - 1e-4
        return floor.masked_fill(self.ended, float("inf"))

    def extend(
        self,
        row_log_probs: Tensor,
        row_tokens: Tensor,
        attention: Tensor | None,
        state: Any,
        pad_id: int,
        eos_id: int,
    ) -> None:
        """Keep each sentence's K best one-token extensions of its hypotheses, from each
        hypothesis's k best next tokens (log-probabilities and ids, (live * K, k) each, k <= K):
        the only candidates that can make the sentence's top K, so K x k are ranked, not K x V."""
        K, live = self.size, len(self.sentence)  # noqa: N806 - the usual name
        k = row_log_probs.size(-1)
        total, new_lengths, key = self._ranked(row_log_probs)
        row_tokens = row_tokens.masked_fill(self.ended[:, None], pad_id)
        choice = key.topk(K, dim=1).indices  # (live, K), best first
        first_row = torch.arange(live, device=total.device)[:, None] * K
        select = (first_row + choice // k).view(-1)  # the row each new hypothesis extends
        self.prev = row_tokens.view(live, -1).gather(1, choice).view(-1)
        self.scores = total.view(live, -1).gather(1, choice).view(-1)
        self.lengths = new_lengths[select]
        self.ended = self.ended[select] | (self.prev == eos_id)
        self.tokens = torch.cat([self.tokens[select], self.prev[:, None]], 1)
        if attention is not None:
            step_weights = attention.index_select(0, select)[:, None]
            previous = self.weights
            self.weights = (
                step_weights if previous is None else torch.cat([previous[select], step_weights], 1)
            )
        self.state = state.select_hypotheses(select)

    def top(
        self, which: Tensor, n: int
    ) -> Iterator[tuple[int, list[tuple[Tensor, Tensor | None]]]]:
        """(sentence, its n best hypotheses as (tokens, attention weights), best first) for
        each live sentence `which` (B_live,) marks."""
        ranked = self.normalised(self.scores, self.lengths).view(-1, self.size)
        order = ranked.sort(dim=1, descending=True, stable=True).indices[:, :n]
        for position in which.nonzero().flatten().tolist():
            rows = (position * self.size + order[position]).tolist()
            yield (
                int(self.sentence[position]),
                [
                    (self.tokens[row], self.weights[row] if self.weights is not None else None)
                    for row in rows
                ],
            )

    def drop(self, done: Tensor) -> None:
        """Remove the sentences `done` (B_live,) marks: the next steps cost only the rest."""
        rows = (~done).repeat_interleave(self.size).nonzero().flatten()
        self.sentence = self.sentence[~done]
        self.state = self.state.select_inputs((~done).nonzero().flatten())
        self.prev, self.scores, self.lengths, self.ended, self.tokens = (
            x[rows] for x in (self.prev, self.scores, self.lengths, self.ended, self.tokens)
        )
        self.weights = self.weights[rows] if self.weights is not None else None


def _padded(rows: Sequence[Tensor], pad_id: float) -> Tensor:
    """Rows (T_i, ...) stacked into (N, max T_i, ...), filled with `pad_id` after each."""
    out = rows[0].new_full((len(rows), max(len(row) for row in rows), *rows[0].shape[1:]), pad_id)
    for index, row in enumerate(rows):
        out[index, : len(row)] = row
    return out


@torch.no_grad()
def beam_search(
    step: TopKStepFn,
    state: Any,
    *,
    start_tokens: Tensor,
    beam_size: int,
    eos_id: int,
    pad_id: int,
    max_len: int,
    length_penalty: float = 1.0,
    num_best: int = 1,
) -> tuple[Tensor, Tensor | None]:
    """Keep the `beam_size` best partial translations of every sentence, all sentences at once.

    The batch of `start_tokens` (B,) (<sos>) is expanded to B x K rows and `state` is reordered
    with `state.index_select` after every step, so one `step` call serves the whole batch.
    Hypotheses are ranked by log p / length ** length_penalty (0: plain sum of log
    probabilities, favours short outputs; 1: mean log probability per token). A hypothesis that
    emitted <eos> stays in its beam and only extends with <pad> at no cost; a sentence is done
    once its `num_best` best-ranked hypotheses have ended, and its rows then leave the batch.

    Returns the `num_best` (<= beam_size) best hypotheses per sentence, best first, shaped like
    `greedy_decode`'s output: tokens (B * num_best, T <= max_len), rows b * num_best + i for
    sentence b, without <sos>, <pad> after <eos>, and their attention weights
    (B * num_best, T, S) (zeros after an end), or None when the decoder does not attend. With
    beam_size=1 the tokens are exactly greedy decoding's. `step` gives each hypothesis's
    beam_size best next tokens (`top_k_step(logits_step)`, or a model's cheaper exact one).
    """
    beams = _Beams.start(state, start_tokens, beam_size, length_penalty)
    best: list[list[tuple[Tensor, Tensor | None]]] = [[] for _ in start_tokens]
    for _ in range(max_len):
        row_log_probs, row_tokens, state, attention = step(
            beams.prev, beams.state, beam_size, beams.needed
        )
        beams.extend(row_log_probs, row_tokens, attention, state, pad_id, eos_id)
        done = beams.ended.view(-1, beam_size)[:, :num_best].all(1)
        if bool(done.any()):
            for sentence, hypotheses in beams.top(done, num_best):
                best[sentence] = hypotheses
            if bool(done.all()):
                break
            beams.drop(done)
    else:  # max_len reached: the best of what is there
        for sentence, hypotheses in beams.top(
            torch.ones_like(beams.sentence, dtype=torch.bool), num_best
        ):
            best[sentence] = hypotheses
    rows = [hypothesis for hypotheses in best for hypothesis in hypotheses]
    tokens = _padded([tokens for tokens, _ in rows], pad_id)
    if rows[0][1] is None:
        return tokens, None
    return tokens, _padded([weights for _, weights in rows], 0.0)


# Re-ranking ----------------------------------------------------------------------------------
#: candidates' rows (R,) (which input each answers) and tokens (R, T) ending in <eos> then
#: <pad> -> per-token log p(token | input, earlier tokens) and log p_LM(token | earlier tokens),
#: (R, T) each, 0 at <pad>.
CandidateScorer = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def candidates(
    step: StepFn,
    state: Any,
    options: DecodingOptions,
    *,
    start_tokens: Tensor,
    max_len: int,
    eos_id: int,
    pad_id: int,
    generator: torch.Generator | None = None,
    best: TopKStepFn | None = None,
) -> tuple[Tensor, Tensor]:
    """`options.num_candidates` (N) outputs for each of the B inputs: N independent draws
    (`options.sample`) or the N best of a beam search (stepping `best`, by default
    `top_k_step(step)`). Returns rows (B * N,), the input each candidate answers (b * N + i
    belongs to input b), and tokens (B * N, T) ending in <eos> then <pad>."""
    count = options.num_candidates
    rows = torch.arange(len(start_tokens), device=start_tokens.device).repeat_interleave(count)
    common = {"max_len": max_len, "eos_id": eos_id, "pad_id": pad_id}
    if options.sample:
        tokens, _ = sample_decode(
            step,
            state.index_select(rows),
            options,
            start_tokens=start_tokens[rows],
            generator=generator,
            **common,
        )
        return rows, tokens
    tokens, _ = beam_search(
        best or top_k_step(step),
        state,
        start_tokens=start_tokens,
        beam_size=options.beam_size,
        length_penalty=options.length_penalty,
        num_best=count,
        **common,
    )
    return rows, tokens


def mmi_scores(forward: Tensor, prior: Tensor, lengths: Tensor, options: DecodingOptions) -> Tensor:
    """MMI-antiLM (Li et al., 2016): (log p(T|S) - lambda log p_LM(T_<=g)) / |T| ** length_penalty.

    forward, prior (..., T): per-token log-probabilities of each candidate under the model and
    under the unconditional language model (0 at padding); lengths (...): tokens, <eos>
    included. Returns the scores (...). The LM term counts the first g = `mmi_first_tokens`
    tokens (None: all): generic openings ("i don't know") are what it should cost, while
    penalising every token also rewards ungrammatical endings (Li et al.'s U(T)). With
    lambda = 0 this is beam search's own ranking (of the unconstrained model's log p).
    """
    penalty = prior[..., : options.mmi_first_tokens].sum(-1)
    score = forward.sum(-1) - options.mmi_lambda * penalty
    return score / lengths.clamp(min=1).to(score.dtype) ** options.length_penalty


def rerank_decode(
    step: StepFn,
    state: Any,
    options: DecodingOptions,
    score: CandidateScorer,
    *,
    start_tokens: Tensor,
    max_len: int,
    eos_id: int,
    pad_id: int,
    generator: torch.Generator | None = None,
    best: TopKStepFn | None = None,
) -> Tensor:
    """The best of `options.num_candidates` candidates per input (`candidates`) by
    `mmi_scores`, all scored in one batch: tokens (B, T <= max_len) ending in <eos> then
    <pad>."""
    rows, tokens = candidates(
        step,
        state,
        options,
        start_tokens=start_tokens,
        max_len=max_len,
        eos_id=eos_id,
        pad_id=pad_id,
        generator=generator,
        best=best,
    )
    forward, prior = score(rows, tokens)
    count = options.num_candidates
    shaped = (len(start_tokens), count)
    lengths = (tokens != pad_id).sum(1)
    scores = mmi_scores(forward, prior, lengths, options).view(shaped)
    chosen = torch.arange(len(start_tokens), device=tokens.device) * count + scores.argmax(1)
    tokens = tokens[chosen]
    return tokens[:, : int(lengths[chosen].max())]


def decode(
    step: StepFn,
    state: Any,
    options: DecodingOptions,
    *,
    start_tokens: Tensor,
    max_len: int,
    eos_id: int,
    pad_id: int,
    unk_id: int | None = None,
    generator: torch.Generator | None = None,
    score: CandidateScorer | None = None,
    best: TopKStepFn | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Decode a batch from `start_tokens` (B,) as `options` say: a sample, the best of a beam
    search or greedily, under their constraints, or with `rerank=mmi` the best candidate by
    `score` (which the model supplies). `best`: the model's own exact `TopKStepFn` for beam
    search, cheaper than scoring the whole vocabulary (unconstrained beams only: a banned
    token takes its mass out of a row, which then needs every word's score to renormalise).
    Returns tokens (B, T <= max_len) ending in <eos> then <pad>, and attention weights
    (B, T, S) or None (always None when re-ranking)."""
    if options.constrained:
        best = None
        step = constrain_step(
            step,
            banned_ids=[unk_id] if options.suppress_unk and unk_id is not None else [],
            no_repeat=options.no_repeat,
            eos_id=eos_id,
            min_length=options.min_new_tokens,
        )
    common = {"start_tokens": start_tokens, "max_len": max_len, "eos_id": eos_id, "pad_id": pad_id}
    if options.rerank == "mmi":
        require(score is not None, "decoding.rerank", "this model cannot score candidates")
        return rerank_decode(
            step, state, options, score, generator=generator, best=best, **common
        ), None
    if options.sample:
        return sample_decode(step, state, options, generator=generator, **common)
    if options.beam_size > 1:
        return beam_search(
            best or top_k_step(step),
            state,
            beam_size=options.beam_size,
            length_penalty=options.length_penalty,
            **common,
        )
    return greedy_decode(step, state, **common)
