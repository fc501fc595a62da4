"""The one attention module: additive (Bahdanau) attention over encoder outputs."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class BahdanauAttention(nn.Module):
    """score(s, h_j) = vᵀ tanh(W s + U h_j); weights = softmax over valid source positions.

    Bahdanau, Cho & Bengio (2015). `U h_j` does not depend on the decoder, so callers project
    the keys once per source batch (`project_keys`) and reuse them at every decoding step.
    Padding positions get a score of -inf, hence a weight of exactly 0.
    """

    def __init__(self, query_size: int, key_size: int, attention_size: int):
        super().__init__()
        self.query_proj = nn.Linear(query_size, attention_size, bias=False)  # W
        self.key_proj = nn.Linear(key_size, attention_size)  # U (its bias is the additive bias)
        self.v = nn.Linear(attention_size, 1, bias=False)

    def project_keys(self, keys: Tensor) -> Tensor:
        """keys (B, S, K) -> U keys (B, S, A)."""
        return self.key_proj(keys)

    def forward(
        self, query: Tensor, projected_keys: Tensor, values: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Attend from one query per batch row, or from T queries at once.

        query (B, Q) or (B, T, Q); projected_keys (B, S, A); values (B, S, K);
        mask (B, S) True at valid positions -> context (B, [T,] K), weights (B, [T,] S).
        """
        single = query.dim() == 2
        if single:
            query = query.unsqueeze(1)
        hidden = torch.tanh(self.query_proj(query).unsqueeze(2) + projected_keys.unsqueeze(1))
        scores = self.v(hidden).squeeze(-1)  # (B, T, S)
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = scores.softmax(-1)
        context = weights @ values  # (B, T, K)
        if single:
            return context.squeeze(1), weights.squeeze(1)
        return context, weights
