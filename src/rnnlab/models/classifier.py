"""Many-to-one: read a whole sequence, classify it from the final state."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnlab.errors import require
from rnnlab.models.rnn import last_layer_summary, make_rnn, run_rnn


class RNNClassifier(nn.Module):
    """Embedding (token inputs) or a linear projection (feature inputs) -> RNN -> head.

    The head reads the top layer's final state; with packed batches that is the last *valid*
    step of every sequence, so padding never leaks into the prediction. It is one Linear, or with
    `head_hidden_size` a small MLP (Linear -> ReLU -> Dropout -> Linear, the Keras
    `Dense(relu), Dropout, Dense(softmax)` stack).
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
        self.num_directions = 2 if bidirectional else 1
        self.dropout = nn.Dropout(dropout)
        summary_size = hidden_size * self.num_directions
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
        _, state = run_rnn(self.rnn, self.embed(inputs), lengths)
        summary = last_layer_summary(state, self.num_directions)
        return self.head(self.dropout(summary))

    @torch.no_grad()
    def predict(self, inputs: Tensor, lengths: Tensor | None = None) -> dict[str, Tensor]:
        """Class probabilities (B, classes)."""
        return {"probs": self(inputs, lengths).softmax(-1)}
