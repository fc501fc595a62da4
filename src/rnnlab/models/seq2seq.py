"""Encoder-decoder RNN with optional Bahdanau attention.

Two decoders (`decoder=`):
- `repeat`: the seed's Keras model. The encoder summary is fed to every output step
  (RepeatVector), one fused RNN pass, a linear layer per step (TimeDistributed Dense).
- `autoregressive`: each step reads the previous token (teacher forcing in training, with a
  configurable ratio) and, with attention, a context vector over the encoder outputs.
With `attention=bahdanau` the repeat decoder attends from each of its outputs in one batched call;
the autoregressive one attends from its previous state before each step (Bahdanau et al., 2015).
Both end in the vocabulary layer of `model.output_layer` (`rnnlab.models.output_layer`): the
decoders compute the features it reads, and training hands those to its `loss`.
With `reply_lm_size`, an unconditional language model over the replies (`reply_lm`) is trained
beside the model, on its own loss term, for `decoding.rerank=mmi` (`rnnlab.models.decoding`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.errors import require, require_one_of, require_positive
from rnnlab.models.attention import BahdanauAttention
from rnnlab.models.decoding import (
    CandidateScorer,
    DecodingOptions,
    Needed,
    decode,
    mask_after_eos,
)
from rnnlab.models.language_model import RNNLanguageModel
from rnnlab.models.output_layer import OutputLayer, make_output_layer, target_log_probs
from rnnlab.models.rnn import State, cell_kind, last_layer_summary, make_rnn, map_state, run_rnn

DECODERS = ("repeat", "autoregressive")
ATTENTIONS = ("none", "bahdanau")
OutputFactory = Callable[[int, int], OutputLayer]  # (in_features, vocab_size) -> output layer


def rnn_step(rnn: nn.Module, inputs: Tensor, state: State) -> tuple[Tensor, State]:
    """One time step of a batch-first, unidirectional nn.RNN/GRU/LSTM (fused or from scratch),
    computed with the cell functions (torch.lstm_cell, ...) on the module's own weights.

    inputs (B, F), state (layers, B, H) or an LSTM pair -> output (B, H), next state: the same
    maths as `rnn(inputs[:, None], state)`, dropout between layers included. The fused
    multi-layer kernel, called one step at a time, costs far more on a CPU (oneDNN sets up the
    sequence each call and its threads wait on each other when the cores are shared: 9 vs 6 ms
    per step on one thread, 76 vs 5 ms on two busy ones, for LSTM-256 at batch 64).
    """
    kind = cell_kind(rnn)  # fused or from scratch: same weight names, same maths
    lstm, gru = kind == "lstm", kind == "gru"
    if lstm and rnn.proj_size:
        output, state = rnn(inputs.unsqueeze(1), state)
        return output.squeeze(1), state
    cell = (
        torch.lstm_cell
        if lstm
        else torch.gru_cell
        if gru
        else torch.rnn_tanh_cell
        if rnn.nonlinearity == "tanh"
        else torch.rnn_relu_cell
    )
    hidden, memory = state if lstm else (state, None)
    hiddens, memories = [], []
    layer_input = inputs
    for layer in range(rnn.num_layers):
        weights = [getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}")]
        if rnn.bias:
            weights += [getattr(rnn, f"bias_ih_l{layer}"), getattr(rnn, f"bias_hh_l{layer}")]
        if lstm:
            h, c = cell(layer_input, (hidden[layer], memory[layer]), *weights)
            memories.append(c)
        else:
            h = cell(layer_input, hidden[layer], *weights)
        hiddens.append(h)
        layer_input = h
        if layer + 1 < rnn.num_layers and rnn.dropout > 0:
            layer_input = F.dropout(h, rnn.dropout, training=rnn.training)
    next_hidden = torch.stack(hiddens)
    return layer_input, (next_hidden, torch.stack(memories)) if lstm else next_hidden


@dataclass
class DecoderState:
    """What the autoregressive decoder carries between steps.

    hidden (layers, B * hypotheses, H) or a pair for LSTM: `hypotheses` consecutive rows per
    input (1, or a beam's size), which share its encoder_outputs (B, S, He), projected_keys
    (B, S, A) or None without attention, and src_mask (B, S), True at real tokens.
    """

    hidden: State
    encoder_outputs: Tensor
    projected_keys: Tensor | None
    src_mask: Tensor
    hypotheses: int = 1

    def with_hidden(
        self, hidden: State, inputs: Tensor | None = None, hypotheses: int | None = None
    ) -> DecoderState:
        """This state with `hidden`, keeping the encoder's tensors of inputs `inputs` (N,)
        (None: all) and `hypotheses` rows per input (None: as now)."""

        def pick(x: Tensor) -> Tensor:
            return x if inputs is None else x.index_select(0, inputs)

        keys = self.projected_keys
        return DecoderState(
            hidden,
            pick(self.encoder_outputs),
            pick(keys) if keys is not None else None,
            pick(self.src_mask),
            self.hypotheses if hypotheses is None else hypotheses,
        )

    def hidden_rows(self, rows: Tensor) -> State:
        """The hidden state's rows `rows` (N,), in that order."""
        return map_state(self.hidden, lambda h: h.index_select(1, rows))

    def index_select(self, index: Tensor) -> DecoderState:
        """Rows `index` (N,) of a state with one row per input (expanding or dropping inputs)."""
        if self.hypotheses != 1:
            raise ValueError("a beam's rows are hypotheses: select whole inputs (select_inputs)")
        return self.with_hidden(self.hidden_rows(index), index)

    def expand_hypotheses(self, size: int) -> DecoderState:
        """Each input's row as `size` hypotheses (rows b * size + k, beam search); the encoder's
        tensors stay one per input."""
        rows = torch.arange(self.src_mask.size(0), device=self.src_mask.device)
        rows = rows.repeat_interleave(size)
        return self.with_hidden(self.hidden_rows(rows), None, size)

    def select_hypotheses(self, index: Tensor) -> DecoderState:
        """Reorder among the hypotheses of each input (beam search): only the hidden state
        differs between them, so the encoder's tensors are not copied at every step."""
        return self.with_hidden(self.hidden_rows(index))

    def select_inputs(self, inputs: Tensor) -> DecoderState:
        """Only inputs `inputs` (N,), with all their hypotheses (a beam drops finished ones)."""
        size = self.hypotheses
        rows = (inputs[:, None] * size + torch.arange(size, device=inputs.device)).flatten()
        return self.with_hidden(self.hidden_rows(rows), inputs)


class AutoregressiveDecoder(nn.Module):
    """Embedding of the previous token [+ attention context] -> RNN -> the vocabulary layer.

    With `readout_size`, [RNN output; context] first goes through tanh(W [h; c]) of that size
    (Luong et al., 2015's attentional hidden state): with a large vocabulary the output layer
    is most of the compute, and it shrinks from (hidden + context) x V to readout_size x V.
    """

    def __init__(
        self,
        embedding: nn.Embedding,
        encoder_size: int,
        *,
        cell: str,
        hidden_size: int,
        num_layers: int,
        dropout: float,
        attention: BahdanauAttention | None,
        make_output: OutputFactory,
        readout_size: int | None = None,
    ):
        super().__init__()
        self.embedding = embedding
        self.attention = attention
        context_size = encoder_size if attention is not None else 0
        self.rnn = make_rnn(
            cell, embedding.embedding_dim + context_size, hidden_size, num_layers, dropout
        )
        self.dropout = nn.Dropout(dropout)
        features = hidden_size + context_size
        self.readout = (
            nn.Sequential(nn.Linear(features, readout_size), nn.Tanh()) if readout_size else None
        )
        self.out = make_output(readout_size or features, embedding.num_embeddings)

    def output_features(self, features: Tensor) -> Tensor:
        """(..., hidden [+ context]) -> (..., F) as the output layer reads them: through the
        readout layer if there is one, then dropout."""
        if self.readout is not None:
            features = self.readout(self.dropout(features))
        return self.dropout(features)

    def step(
        self, prev_tokens: Tensor, state: DecoderState
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """prev_tokens (B,) -> logits (B, V), next state, attention weights (B, S) or None."""
        features, next_state, weights = self.recur(self.dropout(self.embedding(prev_tokens)), state)
        return self.out.logits(self.output_features(features)), next_state, weights

    def step_top_k(
        self, prev_tokens: Tensor, state: DecoderState, k: int, needed: Needed | None = None
    ) -> tuple[Tensor, Tensor, DecoderState, Tensor | None]:
        """`step` for beam search (a `TopKStepFn`): prev_tokens (B,) -> the k most likely next
        tokens' log-probabilities (B, k) and ids (B, k) (those the `needed` bound rules out may be
        missing), next state, attention weights (B, S) or None."""
        features, next_state, weights = self.recur(self.dropout(self.embedding(prev_tokens)), state)
        log_probs, ids = self.out.top_k_log_probs(self.output_features(features), k, needed)
        return log_probs, ids, next_state, weights

    def recur(
        self, inputs: Tensor, state: DecoderState
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """One step without the vocabulary ends: embedded inputs (B, E) -> features (B, F) for
        `output_features`, next state, attention weights (B, S) or None."""
        weights = None
        if self.attention is not None:
            hidden = state.hidden[0] if isinstance(state.hidden, tuple) else state.hidden
            # An input's hypotheses attend together: queries (B, hypotheses, H) over its keys.
            query = hidden[-1].view(-1, state.hypotheses, hidden.size(-1))
            context, weights = self.attention(
                query, state.projected_keys, state.encoder_outputs, state.src_mask
            )
            context, weights = context.flatten(0, 1), weights.flatten(0, 1)
            inputs = torch.cat([inputs, context], -1)
        output, hidden = rnn_step(self.rnn, inputs, state.hidden)
        if self.attention is not None:
            output = torch.cat([output, context], -1)
        next_state = state.with_hidden(hidden)
        return output, next_state, weights

    def forward(
        self, tgt_inputs: Tensor, state: DecoderState, teacher_forcing: float = 1.0
    ) -> tuple[Tensor, Tensor | None]:
        """tgt_inputs (B, T) starting with <sos> -> output features (B, T, F) for `self.out`,
        weights (B, T, S) or None.

        Without attention and with full teacher forcing the whole sequence is one fused RNN
        call. With attention it steps the recurrence, but under full teacher forcing the
        embedding and the output layer still run once over the whole sequence: per step they
        would each cost a vocabulary-sized gradient in backward. With teacher_forcing < 1 it
        feeds back its own prediction with that probability, so each step also scores the
        vocabulary (without gradient) to pick it.
        """
        if teacher_forcing >= 1.0:
            embedded = self.dropout(self.embedding(tgt_inputs))
            if self.attention is None:
                outputs, _ = self.rnn(embedded, state.hidden)
                return self.output_features(outputs), None
            features, weights = [], []
            for t in range(tgt_inputs.size(1)):
                step_features, state, step_weights = self.recur(embedded[:, t], state)
                features.append(step_features)
                weights.append(step_weights)
            return self.output_features(torch.stack(features, 1)), torch.stack(weights, 1)
        features, weights = [], []
        prev = tgt_inputs[:, 0]
        for t in range(tgt_inputs.size(1)):
            step_features, state, step_weights = self.recur(
                self.dropout(self.embedding(prev)), state
            )
            step_features = self.output_features(step_features)
            features.append(step_features)
            weights.append(step_weights)
            if t + 1 < tgt_inputs.size(1):
                with torch.no_grad():
                    own = self.out.logits(step_features).argmax(-1)
                use_gold = torch.rand(own.shape, device=own.device) < teacher_forcing
                prev = torch.where(use_gold, tgt_inputs[:, t + 1], own)
        stacked = torch.stack(weights, 1) if self.attention is not None else None
        return torch.stack(features, 1), stacked


class RepeatDecoder(nn.Module):
    """Keras RepeatVector -> RNN(return_sequences) -> TimeDistributed(Dense), optionally attending
    (the Dense being the vocabulary layer `self.out`)."""

    def __init__(
        self,
        summary_size: int,
        encoder_size: int,
        vocab_size: int,
        *,
        cell: str,
        hidden_size: int,
        num_layers: int,
        dropout: float,
        attention: BahdanauAttention | None,
        make_output: OutputFactory,
    ):
        super().__init__()
        self.rnn = make_rnn(cell, summary_size, hidden_size, num_layers, dropout)
        self.attention = attention
        self.dropout = nn.Dropout(dropout)
        context_size = encoder_size if attention is not None else 0
        self.out = make_output(hidden_size + context_size, vocab_size)

    def forward(
        self, summary: Tensor, steps: int, encoder_outputs: Tensor, src_mask: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """summary (B, He) -> output features (B, steps, F) for `self.out`, weights
        (B, steps, S) or None."""
        outputs, _ = self.rnn(summary.unsqueeze(1).expand(-1, steps, -1).contiguous())
        weights = None
        if self.attention is not None:
            keys = self.attention.project_keys(encoder_outputs)
            context, weights = self.attention(outputs, keys, encoder_outputs, src_mask)
            outputs = torch.cat([outputs, context], -1)
        return self.dropout(outputs), weights


def _check_settings(
    decoder: str, attention: str, embedding_dim: int, max_target_len: int, teacher_forcing: float
) -> None:
    """ConfigError naming the first `model.*` setting out of range."""
    require_one_of(decoder, DECODERS, "model.decoder")
    require_one_of(attention, ATTENTIONS, "model.attention")
    require_positive(embedding_dim, "model.embedding_dim")
    require_positive(max_target_len, "model.max_target_len")
    tf = teacher_forcing
    require(0 <= tf <= 1, "model.teacher_forcing", f"must be in [0, 1], got {tf}")


def _require_decoder_size(size: int | None, key: str, decoder: str) -> None:
    """A size only an autoregressive decoder has (readout, reply LM): null or positive."""
    require(
        size is None or (size > 0 and decoder == "autoregressive"),
        key,
        f"must be null or a positive integer with decoder=autoregressive, got {size}",
    )


def _make_decoder(
    kind: str,
    src_embedding: nn.Embedding,
    tgt_vocab_size: int,
    share_embeddings: bool,
    encoder_size: int,
    bidirectional: bool,
    readout_size: int | None,
    settings: dict,
) -> tuple[nn.Linear | None, nn.Module]:
    """(bridge, decoder). A `repeat` decoder has neither a bridge nor a target embedding; an
    autoregressive one after a bidirectional encoder starts from its two final states, bridged.
    `settings`: cell sizes, attention, dropout and `make_output`, for either decoder."""
    _require_decoder_size(readout_size, "model.readout_size", kind)
    require(
        not share_embeddings or src_embedding.num_embeddings == tgt_vocab_size,
        "model.share_embeddings",
        "needs one vocabulary for source and target",
    )
    if kind == "repeat":
        return None, RepeatDecoder(encoder_size, encoder_size, tgt_vocab_size, **settings)
    bridge = nn.Linear(encoder_size, settings["hidden_size"]) if bidirectional else None
    tgt_embedding = src_embedding
    if not share_embeddings:
        size, pad_id = src_embedding.embedding_dim, src_embedding.padding_idx
        tgt_embedding = nn.Embedding(tgt_vocab_size, size, padding_idx=pad_id)
    decoder = AutoregressiveDecoder(
        tgt_embedding, encoder_size, readout_size=readout_size, **settings
    )
    return bridge, decoder


def _make_reply_lm(
    vocab_size: int, size: int | None, cell: str, dropout: float, decoder: str
) -> RNNLanguageModel | None:
    """The unconditional reply LM of MMI re-ranking (one layer of `size` units, tied weights),
    or None without a size."""
    _require_decoder_size(size, "model.reply_lm_size", decoder)
    if not size:
        return None
    return RNNLanguageModel(
        vocab_size,
        embedding_dim=size,
        hidden_size=size,
        cell=cell,
        dropout=dropout,
        tie_weights=True,
    )


class Seq2Seq(nn.Module):
    """Encoder RNN (optionally bidirectional) + a `repeat` or `autoregressive` decoder ending in
    a `full`, `sampled` or `adaptive` vocabulary layer (`output_layer`; `num_sampled`,
    `adaptive_cutoffs`: see `rnnlab.models.output_layer`).

    `reply_lm_size`: the width of `reply_lm`, a one-layer language model over the target
    vocabulary (embedding tied to its output layer) that never sees the input: p(reply) for
    MMI re-ranking. None (the default, and every checkpoint from before it): no such model."""

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        *,
        pad_id: int,
        sos_id: int,
        eos_id: int,
        max_target_len: int,
        unk_id: int | None = None,
        cell: str = "lstm",
        embedding_dim: int = 64,
        hidden_size: int = 128,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
        decoder: str = "autoregressive",
        attention: str = "none",
        attention_size: int | None = None,
        teacher_forcing: float = 1.0,
        share_embeddings: bool = False,
        readout_size: int | None = None,
        output_layer: str = "full",
        num_sampled: int = 512,
        adaptive_cutoffs: Sequence[int] | None = None,
        reply_lm_size: int | None = None,
    ):
        super().__init__()
        _check_settings(decoder, attention, embedding_dim, max_target_len, teacher_forcing)
        self.pad_id, self.sos_id, self.eos_id, self.unk_id = pad_id, sos_id, eos_id, unk_id
        self.max_target_len, self.teacher_forcing = max_target_len, teacher_forcing
        self.num_directions = 2 if bidirectional else 1
        encoder_size = hidden_size * self.num_directions
        rnn = {"cell": cell, "hidden_size": hidden_size, "num_layers": num_layers}
        self.src_embedding = nn.Embedding(src_vocab_size, embedding_dim, padding_idx=pad_id)
        self.encoder = make_rnn(
            input_size=embedding_dim, dropout=dropout, bidirectional=bidirectional, **rnn
        )
        self.dropout = nn.Dropout(dropout)
        # Created in this order (attention, bridge, target embedding, decoder), the weights are
        # initialised from the same random draws as always: a seed gives the same model.
        attn = None
        if attention == "bahdanau":
            attn = BahdanauAttention(hidden_size, encoder_size, attention_size or hidden_size)
        sizes = {"num_sampled": num_sampled, "adaptive_cutoffs": adaptive_cutoffs}
        settings = {"attention": attn, "dropout": dropout, **rnn}
        settings["make_output"] = partial(make_output_layer, output_layer, **sizes)
        self.bridge, self.decoder = _make_decoder(
            decoder,
            self.src_embedding,
            tgt_vocab_size,
            share_embeddings,
            encoder_size,
            bidirectional,
            readout_size,
            settings,
        )
        # Last, so the model above starts from the same random draws with or without it.
        self.reply_lm = _make_reply_lm(tgt_vocab_size, reply_lm_size, cell, dropout, decoder)

    @property
    def autoregressive(self) -> bool:
        return isinstance(self.decoder, AutoregressiveDecoder)

    @property
    def output_layer(self) -> OutputLayer:
        """The vocabulary layer: `loss(features, targets)` in training, `logits(features)`."""
        return self.decoder.out

    def encode(self, src_tokens: Tensor, src_lengths: Tensor) -> tuple[Tensor, State, Tensor]:
        """src_tokens (B, S), src_lengths (B,) -> outputs (B, S, He), final state, mask (B, S)."""
        embedded = self.dropout(self.src_embedding(src_tokens))
        outputs, state = run_rnn(self.encoder, embedded, src_lengths)
        mask = torch.arange(src_tokens.size(1), device=src_tokens.device) < src_lengths[:, None]
        return outputs, state, mask

    def _initial_state(self, src_tokens: Tensor, src_lengths: Tensor) -> DecoderState:
        outputs, state, mask = self.encode(src_tokens, src_lengths)
        if self.bridge is not None:

            def merge(h: Tensor) -> Tensor:  # (layers * 2, B, H) -> (layers, B, H)
                layers, batch = h.size(0) // 2, h.size(1)
                both = h.view(layers, 2, batch, -1).permute(0, 2, 1, 3).reshape(layers, batch, -1)
                return torch.tanh(self.bridge(both))

            state = map_state(state, merge)
        attention = self.decoder.attention
        keys = attention.project_keys(outputs) if attention is not None else None
        return DecoderState(state, outputs, keys, mask)

    def features(
        self, src_tokens: Tensor, src_lengths: Tensor, tgt_inputs: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """Training pass up to the vocabulary layer. tgt_inputs (B, T) = target tokens without
        the last one (starts with <sos>) -> the output layer's input features (B, T, F) for the
        next tokens, attention weights (B, T, S) or None."""
        if not self.autoregressive:
            outputs, state, mask = self.encode(src_tokens, src_lengths)
            summary = last_layer_summary(state, self.num_directions)
            return self.decoder(summary, tgt_inputs.size(1), outputs, mask)
        state = self._initial_state(src_tokens, src_lengths)
        ratio = self.teacher_forcing if self.training else 1.0
        return self.decoder(tgt_inputs, state, ratio)

    def forward(
        self, src_tokens: Tensor, src_lengths: Tensor, tgt_inputs: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """`features`, then logits (B, T, V) over the whole vocabulary, attention (B, T, S) or
        None."""
        features, weights = self.features(src_tokens, src_lengths, tgt_inputs)
        return self.output_layer.logits(features), weights

    def reply_lm_loss(self, tgt_tokens: Tensor) -> Tensor:
        """The reply language model's training loss: mean next-token cross-entropy over
        tgt_tokens (B, T) (<sos> ... <eos> <pad>...), <pad> left out."""
        features, _ = self.reply_lm.features(tgt_tokens[:, :-1])
        return self.reply_lm.output_layer.loss(
            features, tgt_tokens[:, 1:], ignore_index=self.pad_id
        )

    def _reply_log_probs(
        self, state: DecoderState, replies: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """Per-token log p(reply | input) (teacher-forced from the decoder's initial `state`)
        and log p(reply) under `reply_lm` (None without one): replies (B, T) ending in <eos>
        then <pad> -> (B, T) each, 0 at <pad>."""
        inputs = torch.cat([replies.new_full((len(replies), 1), self.sos_id), replies[:, :-1]], 1)
        features, _ = self.decoder(inputs, state)
        forward = target_log_probs(self.output_layer, features, replies, self.pad_id)
        if self.reply_lm is None:
            return forward, None
        lm_features, _ = self.reply_lm.features(inputs)
        prior = target_log_probs(self.reply_lm.output_layer, lm_features, replies, self.pad_id)
        return forward, prior

    @torch.no_grad()
    def score_replies(
        self, src_tokens: Tensor, src_lengths: Tensor, replies: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """Per-token log p(reply | input) and log p(reply) under the reply LM (None without
        one), as MMI re-ranking scores candidates: src_tokens (B, S), src_lengths (B,), replies
        (B, T) ending in <eos> then <pad> -> (B, T) each, 0 at <pad>."""
        return self._reply_log_probs(self._initial_state(src_tokens, src_lengths), replies)

    def _candidate_scorer(self, state: DecoderState) -> CandidateScorer:
        """`score` for `decode`: candidates of the inputs whose initial decoder state is
        `state`."""
        return lambda rows, replies: self._reply_log_probs(state.index_select(rows), replies)

    def check_decoding(self, options: DecodingOptions) -> None:
        """ConfigError if this model cannot decode as `options` say."""
        searching = options.beam_size > 1 or options.sample or options.constrained
        require(
            self.autoregressive or not searching,
            "decoding.beam_size" if options.beam_size > 1 else "decoding.sample",
            "beam search, sampling and constraints need model.decoder=autoregressive",
        )
        require(
            not options.suppress_unk or self.unk_id is not None,
            "decoding.suppress_unk",
            "the model has no <unk> token",
        )
        require(
            options.rerank != "mmi" or self.reply_lm is not None,
            "decoding.rerank",
            "mmi needs the reply language model trained with the chat model, and this model "
            "has none (a checkpoint from before MMI, or model.reply_lm_size=null): retrain with "
            "model.reply_lm_size=128, or use rerank=none",
        )

    @torch.no_grad()
    def generate(
        self,
        src_tokens: Tensor,
        src_lengths: Tensor,
        options: DecodingOptions | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """src_tokens (B, S), src_lengths (B,) -> `tokens` (B, T) ending in <eos> then <pad>,
        and `attention` (B, T, S) if the decoder attends (not when re-ranking): greedy, a
        sample, the best of a batched beam search or of MMI re-ranked candidates, as `options`
        say (default greedy; at most `max_new_tokens`, else the longest training target + 2)."""
        options = options or DecodingOptions()
        self.check_decoding(options)
        max_len = options.max_new_tokens or self.max_target_len
        if self.autoregressive:
            state = self._initial_state(src_tokens, src_lengths)
            tokens, weights = decode(
                self.decoder.step,
                state,
                options,
                start_tokens=src_tokens.new_full((len(src_tokens),), self.sos_id),
                max_len=max_len,
                eos_id=self.eos_id,
                pad_id=self.pad_id,
                unk_id=self.unk_id,
                generator=generator,
                score=self._candidate_scorer(state) if self.reply_lm is not None else None,
                best=self.decoder.step_top_k,
            )
        else:
            logits, weights = self(
                src_tokens, src_lengths, src_tokens.new_zeros(len(src_tokens), max_len)
            )
            tokens = mask_after_eos(logits.argmax(-1), self.eos_id, self.pad_id)
        return {"tokens": tokens} if weights is None else {"tokens": tokens, "attention": weights}
