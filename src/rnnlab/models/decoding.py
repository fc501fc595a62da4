"""The one decoding module: turn a step function into output sequences.

A decoder exposes `step(prev_tokens (B,), state) -> (logits (B, V), state, attention (B, S) | None)`
and a state with `index_select(index)` (reorders the batch dim, as beam search needs). Greedy
decoding lives here; beam search and sampling plug in beside it with the same contract.
"""

from __future__ import annotations

from collections.abc import Callable
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
