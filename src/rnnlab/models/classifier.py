"""Many-to-one: read a whole sequence, classify it from the final state."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnlab.errors import require
from rnnlab.models.rnn import last_layer_summary, make_rnn, run_rnn

POOLINGS = {"last": 1, "concat": 3}  # what the head reads -> its width in top-layer outputs


def concat_pool(outputs: Tensor, last: Tensor, lengths: Tensor | None) -> Tensor:
    """[last, max over time, mean over time] of the valid steps: outputs (B, T, D) with
    anything past each length, last (B, D), lengths (B,) or None (all T valid) -> (B, 3 D)."""
    steps = torch.arange(outputs.size(1), device=outputs.device)
    if lengths is None:
        lengths = torch.full((outputs.size(0),), outputs.size(1), device=outputs.device)
    valid = (steps < lengths.to(outputs.device).unsqueeze(1)).unsqueeze(-1)  # (B, T, 1)
    largest = outputs.masked_fill(~valid, float("-inf")).amax(1)
    mean = outputs.masked_fill(~valid, 0.0).sum(1) / valid.sum(1).clamp(min=1)
    return torch.cat([last, largest, mean], dim=-1)


class RNNClassifier(nn.Module):
    """Embedding (token inputs) or a linear projection (feature inputs) -> RNN -> head.

    The head reads the top layer's final state; with packed batches that is the last *valid*
    step of every sequence, so padding never leaks into the prediction. `pooling="concat"`
    (ULMFiT's concat pooling, Howard & Ruder 2018) reads [final state, max, mean] of the top
    layer's outputs over the valid steps instead, three times as wide (`concat_pool`). The head
    is one Linear, or with `head_hidden_size` a small MLP (Linear -> ReLU -> Dropout -> Linear,
    the Keras `Dense(relu), Dropout, Dense(softmax)` stack).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        vocab_size: int | None = None,
        input_size: int | None = None,
        embedding_dim: int = 32,
        cell: str = "lstm",
        hidden_size: int = 64,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
        pad_id: int = 0,
        head_hidden_size: int | None = None,
        pooling: str = "last",
    ):
        super().__init__()
        require(num_classes > 1, "model.num_classes", f"must be at least 2, got {num_classes}")
        require(
            (vocab_size is None) != (input_size is None),
            "model",
            "give exactly one of vocab_size (token inputs) or input_size (feature inputs)",
        )
        require(
            embedding_dim > 0,
            "model.embedding_dim",
            f"must be a positive integer, got {embedding_dim}",
        )
        if vocab_size is not None:
            self.embed: nn.Module = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        else:
            self.embed = nn.Linear(input_size, embedding_dim)
        self.rnn = make_rnn(cell, embedding_dim, hidden_size, num_layers, dropout, bidirectional)
        require(
            pooling in POOLINGS,
            "model.pooling",
            f"must be one of {', '.join(POOLINGS)}, got {pooling!r}",
        )
        self.pooling = pooling
        self.num_directions = 2 if bidirectional else 1
        self.dropout = nn.Dropout(dropout)
        summary_size = hidden_size * self.num_directions * POOLINGS[pooling]
        if head_hidden_size is None:
            self.head: nn.Module = nn.Linear(summary_size, num_classes)
        else:
            require(
                head_hidden_size > 0,
                "model.head_hidden_size",
                f"must be a positive integer or null, got {head_hidden_size}",
            )
            self.head = nn.Sequential(
                nn.Linear(summary_size, head_hidden_size),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(head_hidden_size, num_classes),
            )

    @property
    def input_embedding(self) -> nn.Module:
        """The input layer (an embedding, or a linear map of features): `EmbeddedRNN`."""
        return self.embed

    def forward(self, inputs: Tensor, lengths: Tensor | None = None) -> Tensor:
        """inputs (B, T) token ids or (B, T, F) features, lengths (B,) -> logits (B, classes)."""
        outputs, state = run_rnn(self.rnn, self.embed(inputs), lengths)
        summary = last_layer_summary(state, self.num_directions)
        if self.pooling == "concat":
            summary = concat_pool(outputs, summary, lengths)
        return self.head(self.dropout(summary))

    @torch.no_grad()
    def predict(self, inputs: Tensor, lengths: Tensor | None = None) -> dict[str, Tensor]:
        """Class probabilities (B, classes)."""
        return {"probs": self(inputs, lengths).softmax(-1)}
