"""The one decoding module: turn a step function into output sequences.

A decoder exposes `step(prev_tokens (B,), state) -> (logits (B, V), state, attention (B, S) | None)`
and a state with `index_select(index)` (reorders the batch dim, as beam search needs). Greedy
decoding, sampling (temperature, top-k, top-p) and batched beam search share that contract, and
`constrain_step` wraps a step function so any of them avoids given tokens or repeats.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor


class DecoderState(Protocol):
    def index_select(self, index: Tensor) -> DecoderState: ...


StepFn = Callable[[Tensor, Any], tuple[Tensor, Any, Tensor | None]]


def mask_after_eos(tokens: Tensor, eos_id: int, pad_id: int) -> Tensor:
    """Replace everything after each row's first <eos> by <pad>: (B, T) -> (B, T)."""
    is_eos = tokens == eos_id
    after = (is_eos.cumsum(1) - is_eos.long()) > 0
    return tokens.masked_fill(after, pad_id)


@torch.no_grad()
def greedy_decode(
    step: StepFn,
    state: Any,
    *,
    batch_size: int,
    sos_id: int,
    eos_id: int,
    pad_id: int,
    max_len: int,
    device: torch.device | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Pick the most likely token at each step, for the whole batch at once.

    Returns tokens (B, T <= max_len) without <sos>, padded after <eos>, and the attention
    weights (B, T, S) when the decoder attends (else None). Stops when every row has ended.
    """
    prev = torch.full((batch_size,), sos_id, dtype=torch.long, device=device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
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
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One token per row from logits (B, V) -> (B,): argmax if `greedy`, else a draw from
    softmax(logits / temperature) restricted by top-k and then top-p."""
    if greedy:
        return logits.argmax(-1)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (use greedy for argmax), got {temperature}")
    logits = filter_top_p(filter_top_k(logits / temperature, top_k), top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


@torch.no_grad()
def iter_sample(
    step: StepFn,
    state: Any,
    *,
    start_tokens: Tensor,
    max_len: int,
    temperature: float = 1.0,
    top_k: int | Sequence[int] | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[Tensor]:
    """Yield the sampled tokens (B,) one step at a time (for streaming to a terminal).

    `start_tokens` (B,) are fed at the first step (<sos>, or the last token of a prompt whose
    other tokens are already in `state`); each sampled token is fed back at the next step.
    `top_k` is one k or a per-position schedule (`top_k_at`).
    """
    prev = start_tokens
    for position in range(max_len):
        logits, state, _ = step(prev, state)
        prev = sample_next(
            logits,
            temperature=temperature,
            top_k=top_k_at(top_k, position),
            top_p=top_p,
            greedy=greedy,
            generator=generator,
        )
        yield prev


@torch.no_grad()
def sample_decode(
    step: StepFn,
    state: Any,
    *,
    start_tokens: Tensor,
    max_len: int,
    temperature: float = 1.0,
    top_k: int | Sequence[int] | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    generator: torch.Generator | None = None,
    eos_id: int | None = None,
    pad_id: int = 0,
) -> tuple[Tensor, None]:
    """Sample a whole batch: tokens (B, T <= max_len), and None (no attention is collected).

    With `eos_id`, rows are padded after their <eos> and decoding stops once every row has
    ended; without it (language models) exactly `max_len` tokens are drawn. The same
    `generator` seed gives the same tokens.
    """
    finished = torch.zeros(len(start_tokens), dtype=torch.bool, device=start_tokens.device)
    tokens = []
    for sampled in iter_sample(
        step,
        state,
        start_tokens=start_tokens,
        max_len=max_len,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        greedy=greedy,
        generator=generator,
    ):
        tokens.append(sampled.masked_fill(finished, pad_id))
        if eos_id is not None:
            finished |= sampled == eos_id
            if bool(finished.all()):
                break
    return torch.stack(tokens, 1), None


# Beam search ---------------------------------------------------------------------------------
@torch.no_grad()
def beam_search(
    step: StepFn,
    state: Any,
    *,
    beam_size: int,
    sos_id: int,
    eos_id: int,
    pad_id: int,
    max_len: int,
    length_penalty: float = 1.0,
    batch_size: int,
    device: torch.device | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Keep the `beam_size` best partial translations of every sentence, all sentences at once.

    The batch is expanded to B x K rows (row b*K + k is hypothesis k of sentence b) and `state`
    is reordered with `state.index_select` after every step, so one `step` call serves the whole
    batch. Hypotheses are ranked by log p / length ** length_penalty (0: plain sum of log
    probabilities, favours short outputs; 1: mean log probability per token). A hypothesis that
    emitted <eos> stays in its beam and only extends with <pad> at no cost; a sentence is done
    once its best-ranked hypothesis has ended, and its rows then leave the batch, so the steps
    that remain cost only what the unfinished sentences need.

    Returns the best hypothesis per sentence, shaped like `greedy_decode`'s output: tokens
    (B, T <= max_len) without <sos>, <pad> after <eos>, and its attention weights (B, T, S)
    (zeros after a sentence's end), or None when the decoder does not attend. With beam_size=1
    the tokens are exactly greedy decoding's.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be a positive integer, got {beam_size}")
    K = beam_size  # noqa: N806 - the usual name
    sentence = torch.arange(batch_size, device=device)  # original index of each live sentence
    state = state.index_select(sentence.repeat_interleave(K))
    # Only hypothesis 0 is alive at the start, so the first step does not pick K copies of it.
    scores = torch.full((batch_size, K), float("-inf"), device=device)
    scores[:, 0] = 0.0
    scores = scores.view(-1)
    prev = torch.full((batch_size * K,), sos_id, dtype=torch.long, device=device)
    lengths = torch.zeros_like(prev)  # tokens so far, <eos> included
    ended = torch.zeros_like(prev, dtype=torch.bool)  # emitted <eos>
    tokens = prev.new_empty(batch_size * K, 0)
    weights: Tensor | None = None
    best_tokens: list[Tensor | None] = [None] * batch_size
    best_weights: list[Tensor | None] = [None] * batch_size

    def normalised(total: Tensor, length: Tensor) -> Tensor:
        return total / length.clamp(min=1).to(total.dtype) ** length_penalty

    def finish(which: Tensor) -> None:
        """Store the best hypothesis of the live sentences `which` (B_live,) marks."""
        live = len(sentence)
        best = normalised(scores, lengths).view(live, K).argmax(1)
        for position in which.nonzero().flatten().tolist():
            row = position * K + int(best[position])
            best_tokens[int(sentence[position])] = tokens[row]
            if weights is not None:
                best_weights[int(sentence[position])] = weights[row]

    for _ in range(max_len):
        logits, state, attention = step(prev, state)
        live = len(sentence)
        # Each hypothesis's K best next tokens are the only candidates that can make the
        # sentence's top K: rank K x K candidates instead of K x V (no (rows, V) temporaries
        # beyond the logits). log p = logit - logsumexp; ranking within a row needs no softmax.
        logits = logits.float()
        k = min(K, logits.size(-1))
        row_best, row_tokens = logits.topk(k, dim=-1)  # (live * K, k)
        row_log_probs = row_best - logits.logsumexp(-1, keepdim=True)
        # An ended hypothesis has one continuation, <pad>, at no cost.
        only_pad = torch.full_like(row_log_probs, float("-inf"))
        only_pad[:, 0] = 0.0
        row_log_probs = torch.where(ended[:, None], only_pad, row_log_probs)
        row_tokens = row_tokens.masked_fill(ended[:, None], pad_id)
        total = scores[:, None] + row_log_probs  # (live * K, k)
        new_lengths = torch.where(ended, lengths, lengths + 1)
        key = normalised(total, new_lengths[:, None]).view(live, K * k)
        choice = key.topk(K, dim=1).indices  # (live, K), best first
        first_row = torch.arange(live, device=device)[:, None] * K
        select = (first_row + choice // k).view(-1)  # the row each new hypothesis extends
        prev = row_tokens.view(live, -1).gather(1, choice).view(-1)
        scores = total.view(live, -1).gather(1, choice).view(-1)
        lengths = new_lengths[select]
        ended = ended[select] | (prev == eos_id)
        tokens = torch.cat([tokens[select], prev[:, None]], 1)
        if attention is not None:
            step_weights = attention.index_select(0, select)[:, None]
            weights = (
                step_weights if weights is None else torch.cat([weights[select], step_weights], 1)
            )
        state = state.index_select(select)
        done = ended.view(live, K)[:, 0]
        if bool(done.any()):
            finish(done)
            if bool(done.all()):
                break
            keep = (~done).repeat_interleave(K)
            rows = keep.nonzero().flatten()
            sentence = sentence[~done]
            state = state.index_select(rows)
            scores, prev, lengths, ended, tokens = (
                x[rows] for x in (scores, prev, lengths, ended, tokens)
            )
            weights = weights[rows] if weights is not None else None
    else:  # max_len reached: the best of what is there
        finish(torch.ones(len(sentence), dtype=torch.bool, device=device))
    width = max(len(t) for t in best_tokens)
    out = torch.full((batch_size, width), pad_id, dtype=torch.long, device=device)
    for index, row in enumerate(best_tokens):
        out[index, : len(row)] = row
    if best_weights[0] is None:
        return out, None
    source_len = best_weights[0].size(-1)
    out_weights = best_weights[0].new_zeros(batch_size, width, source_len)
    for index, row in enumerate(best_weights):
        out_weights[index, : len(row)] = row
    return out, out_weights
