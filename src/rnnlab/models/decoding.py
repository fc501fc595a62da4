"""The one decoding module: turn a step function into output sequences.

A decoder exposes `step(prev_tokens (B,), state) -> (logits (B, V), state, attention (B, S) | None)`
and a state with `index_select(index)` (reorders the batch dim, as beam search needs). Greedy
decoding lives here; beam search and sampling plug in beside it with the same contract.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
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


# Sampling ------------------------------------------------------------------------------------
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
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[Tensor]:
    """Yield the sampled tokens (B,) one step at a time (for streaming to a terminal).

    `start_tokens` (B,) are fed at the first step (<sos>, or the last token of a prompt whose
    other tokens are already in `state`); each sampled token is fed back at the next step.
    """
    prev = start_tokens
    for _ in range(max_len):
        logits, state, _ = step(prev, state)
        prev = sample_next(
            logits,
            temperature=temperature,
            top_k=top_k,
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
    top_k: int | None = None,
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
    once its best-ranked hypothesis has ended, and decoding stops when every sentence is done.

    Returns the best hypothesis per sentence, shaped like `greedy_decode`'s output: tokens
    (B, T <= max_len) without <sos>, <pad> after <eos>, and its attention weights (B, T, S), or
    None when the decoder does not attend. With beam_size=1 this is exactly greedy decoding.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be a positive integer, got {beam_size}")
    rows = batch_size * beam_size
    sentence = torch.arange(batch_size, device=device)
    state = state.index_select(sentence.repeat_interleave(beam_size))
    first_row = sentence[:, None] * beam_size  # (B, 1): row of each sentence's hypothesis 0
    # Only hypothesis 0 is alive at the start, so the first step does not pick K copies of it.
    scores = torch.full((batch_size, beam_size), float("-inf"), device=device)
    scores[:, 0] = 0.0
    scores = scores.view(rows)
    prev = torch.full((rows,), sos_id, dtype=torch.long, device=device)
    lengths = torch.zeros(rows, dtype=torch.long, device=device)  # tokens so far, <eos> included
    ended = torch.zeros(rows, dtype=torch.bool, device=device)  # emitted <eos>
    done = torch.zeros(batch_size, dtype=torch.bool, device=device)
    tokens = torch.empty(rows, 0, dtype=torch.long, device=device)
    weights: Tensor | None = None

    def normalised(total: Tensor, length: Tensor) -> Tensor:
        return total / length.clamp(min=1).to(total.dtype) ** length_penalty

    for _ in range(max_len):
        logits, state, attention = step(prev, state)
        log_probs = logits.float().log_softmax(-1)  # (rows, V)
        vocab_size = log_probs.size(-1)
        frozen = ended | done.repeat_interleave(beam_size)
        pad_column = torch.where(frozen, 0.0, log_probs[:, pad_id])
        log_probs = log_probs.masked_fill(frozen[:, None], float("-inf"))
        log_probs[:, pad_id] = pad_column
        total = scores[:, None] + log_probs  # (rows, V)
        new_lengths = torch.where(frozen, lengths, lengths + 1)
        key = normalised(total, new_lengths[:, None]).view(batch_size, beam_size * vocab_size)
        choice = key.topk(beam_size, dim=1).indices  # (B, K), best first
        select = (first_row + choice // vocab_size).view(-1)  # the row each new hypothesis extends
        prev = (choice % vocab_size).view(-1)
        scores = total.view(batch_size, -1).gather(1, choice).view(-1)
        lengths = new_lengths[select]
        ended = ended[select] | (prev == eos_id)
        tokens = torch.cat([tokens[select], prev[:, None]], 1)
        if attention is not None:
            step_weights = attention.index_select(0, select)[:, None]
            weights = (
                step_weights if weights is None else torch.cat([weights[select], step_weights], 1)
            )
        state = state.index_select(select)
        done |= ended.view(batch_size, beam_size)[:, 0]
        if bool(done.all()):
            break
    best = normalised(scores, lengths).view(batch_size, beam_size).argmax(1)
    index = first_row.squeeze(1) + best
    return tokens[index], weights[index] if weights is not None else None
