"""Next-token language model: Embedding -> RNN -> dropout -> the vocabulary layer.

Trained on windows of a token stream (every position predicts the next token); generates by
reading a prompt and then sampling one token at a time (`rnnlab.models.decoding`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from rnnlab.errors import require
from rnnlab.models.decoding import DecodingOptions, iter_sample, sample_decode
from rnnlab.models.output_layer import OutputLayer, make_output_layer
from rnnlab.models.rnn import State, make_rnn, map_state, run_rnn


def detach_state(state: State | None) -> State | None:
    """The same state cut from the graph (truncated backpropagation through time)."""
    return None if state is None else map_state(state, Tensor.detach)


class RNNLanguageModel(nn.Module):
    """Embedding (V, E) -> `num_layers` RNN layers (dropout between) -> dropout -> the `full`,
    `sampled` or `adaptive` vocabulary layer `out` (H -> V; `rnnlab.models.output_layer`).

    With `tie_weights` the output layer shares the embedding matrix (Press & Wolf, 2017), which
    needs embedding_dim == hidden_size and a full or sampled output layer.
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        embedding_dim: int = 64,
        cell: str = "lstm",
        hidden_size: int = 256,
        num_layers: int = 1,
        dropout: float = 0.0,
        tie_weights: bool = False,
        output_layer: str = "full",
        num_sampled: int = 512,
        adaptive_cutoffs: Sequence[int] | None = None,
    ):
        super().__init__()
        require(vocab_size > 1, "model.vocab_size", f"must be at least 2, got {vocab_size}")
        require(
            embedding_dim > 0,
            "model.embedding_dim",
            f"must be a positive integer, got {embedding_dim}",
        )
        require(
            not tie_weights or embedding_dim == hidden_size,
            "model.tie_weights",
            f"needs model.embedding_dim == model.hidden_size, got {embedding_dim} and "
            f"{hidden_size}: set them equal or use model.tie_weights=false",
        )
        require(
            not tie_weights or output_layer != "adaptive",
            "model.tie_weights",
            "the adaptive output layer has no single (V, H) matrix to share: use "
            "model.output_layer=full|sampled or model.tie_weights=false",
        )
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.rnn = make_rnn(cell, embedding_dim, hidden_size, num_layers, dropout)
        self.dropout = nn.Dropout(dropout)
        self.out = make_output_layer(
            output_layer,
            hidden_size,
            vocab_size,
            num_sampled=num_sampled,
            adaptive_cutoffs=adaptive_cutoffs,
        )
        if tie_weights:
            self.out.weight = self.embedding.weight

    @property
    def input_embedding(self) -> nn.Embedding:
        """The token embedding: `EmbeddedRNN`."""
        return self.embedding

    @property
    def output_layer(self) -> OutputLayer:
        """The vocabulary layer: `loss(features, targets)` in training, `logits(features)`."""
        return self.out

    def features(
        self, tokens: Tensor, state: State | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, State]:
        """tokens (B, T), state from the previous window or None (zeros), lengths (B,) for
        right-padded prompts -> the output layer's input features (B, T, H) at every position,
        and the final state ((layers, B, H), or a pair for LSTM; with lengths, at each last real
        token). Training hands the features to `output_layer.loss`."""
        outputs, state = run_rnn(self.rnn, self.embedding(tokens), lengths, state)
        return self.dropout(outputs), state

    def forward(
        self, tokens: Tensor, state: State | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, State]:
        """`features`, then logits (B, T, V) for the next token at every position, and the
        final state."""
        features, state = self.features(tokens, state, lengths)
        return self.out.logits(features), state

    def step(self, prev_tokens: Tensor, state: State | None) -> tuple[Tensor, State, None]:
        """One token per row: prev_tokens (B,) -> logits (B, V), next state, no attention."""
        outputs, state = self.rnn(self.embedding(prev_tokens).unsqueeze(1), state)
        return self.out.logits(self.dropout(outputs.squeeze(1))), state, None

    def prime(self, tokens: Tensor, lengths: Tensor) -> tuple[State | None, Tensor]:
        """Read each prompt but its last token: tokens (B, T) right-padded, lengths (B,) >= 1 ->
        (state after tokens[:length-1], last prompt tokens (B,)). Decoding starts by feeding the
        last tokens, so the first sampled token continues the prompt."""
        last = tokens.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)
        if tokens.size(1) == 1:
            return None, last
        prefix_lengths = (lengths - 1).clamp(min=1)
        _, state = self.features(tokens[:, :-1], lengths=prefix_lengths)
        # A one-token prompt has read nothing yet: its row goes back to the zero state.
        read = (lengths > 1).to(self.embedding.weight.dtype).view(1, -1, 1)
        return map_state(state, lambda s: s * read), last

    def check_decoding(self, options: DecodingOptions) -> None:
        """ConfigError if a language model cannot generate as `options` say: it draws or picks
        one token at a time for `max_new_tokens` tokens, with no beam search or constraints."""
        require(
            options.max_new_tokens is not None,
            "decoding.max_new_tokens",
            "a language model needs the number of tokens to generate",
        )
        for key, used in (
            ("beam_size", options.beam_size > 1),
            ("suppress_unk", options.suppress_unk),
            ("no_repeat", options.no_repeat),
            ("min_new_tokens", options.min_new_tokens > 0),
            ("rerank", options.rerank != "none"),
        ):
            require(not used, f"decoding.{key}", "is a seq2seq option, not a language model's")

    @torch.no_grad()
    def generate(
        self,
        tokens: Tensor,
        lengths: Tensor,
        options: DecodingOptions,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Continue each prompt by `options.max_new_tokens` tokens, drawn or picked as `options`
        say: tokens (B, T) right-padded, lengths (B,) -> (B, max_new_tokens)."""
        self.check_decoding(options)
        state, last = self.prime(tokens, lengths)
        start = {"start_tokens": last, "max_len": options.max_new_tokens, "generator": generator}
        return sample_decode(self.step, state, options, **start)[0]

    @torch.no_grad()
    def stream(
        self,
        tokens: Tensor,
        lengths: Tensor,
        options: DecodingOptions,
        *,
        generator: torch.Generator | None = None,
    ) -> Iterator[Tensor]:
        """Like `generate`, but yields each step's tokens (B,) as soon as they are drawn; with
        the same generator seed the tokens are exactly those of `generate`."""
        self.check_decoding(options)
        state, last = self.prime(tokens, lengths)
        start = {"start_tokens": last, "max_len": options.max_new_tokens, "generator": generator}
        yield from iter_sample(self.step, state, options, **start)
