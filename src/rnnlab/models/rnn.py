"""The recurrent cells every model uses, chosen by name (the `cell=` config group).

`rnn`, `gru`, `lstm` are PyTorch's fused modules (the default: fast); `rnn_scratch`,
`gru_scratch`, `lstm_scratch` the same maths written out step by step (`rnnlab.models.scratch`),
slower but readable and able to record hidden states and gates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab.errors import require
from rnnlab.models.scratch import SCRATCH, ScratchRNNBase

FUSED: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
CELLS: dict[str, type[nn.Module]] = {
    **FUSED,
    **{f"{kind}_scratch": scratch for kind, scratch in SCRATCH.items()},
}

State = Tensor | tuple[Tensor, Tensor]  # h, or (h, c) for an LSTM; each (layers * dirs, B, H)


@runtime_checkable
class EmbeddedRNN(Protocol):
    """A net that reads its inputs through `input_embedding` into one stacked `rnn` (the
    classifier, the language model): what fine-tuning by layer groups and language-model
    transfer work on."""

    input_embedding: nn.Module
    rnn: nn.Module


def map_state(state: State, fn: Callable[[Tensor], Tensor]) -> State:
    """Apply `fn` to h, or to h and c of an LSTM state."""
    return tuple(fn(s) for s in state) if isinstance(state, tuple) else fn(state)


def make_rnn(
    cell: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    dropout: float = 0.0,
    bidirectional: bool = False,
) -> nn.Module:
    """A batch-first nn.RNN/GRU/LSTM (or its from-scratch twin); `dropout` acts between stacked
    layers only."""
    require(cell in CELLS, "model.cell", f"must be one of {sorted(CELLS)}, got {cell!r}")
    require(hidden_size > 0, "model.hidden_size", f"must be a positive integer, got {hidden_size}")
    require(num_layers > 0, "model.num_layers", f"must be a positive integer, got {num_layers}")
    require(0 <= dropout < 1, "model.dropout", f"must be in [0, 1), got {dropout}")
    return CELLS[cell](
        input_size,
        hidden_size,
        num_layers=num_layers,
        dropout=dropout if num_layers > 1 else 0.0,
        bidirectional=bidirectional,
        batch_first=True,
    )


def cell_kind(rnn: nn.Module) -> str:
    """'rnn', 'gru' or 'lstm', for a fused or a from-scratch recurrent layer."""
    if isinstance(rnn, ScratchRNNBase):
        return rnn.kind
    for kind, fused in FUSED.items():
        if isinstance(rnn, fused):
            return kind
    raise TypeError(f"not a recurrent layer: {type(rnn).__name__}")


def scratch_copy(rnn: nn.Module) -> ScratchRNNBase:
    """A from-scratch layer with `rnn`'s shape, weights, mode, device and dtype (to look inside
    a fused one: record h_t and gates for one pass)."""
    require(not getattr(rnn, "proj_size", 0), "model", "LSTM projections have no scratch twin")
    kind = cell_kind(rnn)
    options = {"nonlinearity": rnn.nonlinearity} if kind == "rnn" else {}
    copy = SCRATCH[kind](
        rnn.input_size,
        rnn.hidden_size,
        rnn.num_layers,
        bias=rnn.bias,
        batch_first=rnn.batch_first,
        dropout=rnn.dropout,
        bidirectional=rnn.bidirectional,
        **options,
    )
    weight = next(rnn.parameters())
    copy.load_state_dict(rnn.state_dict())
    return copy.to(device=weight.device, dtype=weight.dtype).train(rnn.training)


def run_rnn(
    rnn: nn.Module, inputs: Tensor, lengths: Tensor | None = None, state: State | None = None
) -> tuple[Tensor, State]:
    """Run `rnn` over a padded batch, packing it when lengths vary.

    inputs (B, T, F), lengths (B,) -> outputs (B, T, H * dirs) with zeros past each length, and
    the final state, which with packing is the state at each sequence's last *valid* step.
    """
    if lengths is None or bool((lengths == inputs.size(1)).all()):
        return rnn(inputs, state)
    packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
    outputs, state = rnn(packed, state)
    outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=inputs.size(1))
    return outputs, state


def last_layer_summary(state: State, num_directions: int) -> Tensor:
    """Final hidden state of the top layer, directions concatenated: (B, H * dirs)."""
    hidden = state[0] if isinstance(state, tuple) else state
    top = hidden[-num_directions:]  # (dirs, B, H)
    return top.transpose(0, 1).reshape(top.size(1), -1)
