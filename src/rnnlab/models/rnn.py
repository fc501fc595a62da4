"""The recurrent cells every model uses, chosen by name (the `cell=` config group)."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab.errors import require

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}

State = Tensor | tuple[Tensor, Tensor]  # h, or (h, c) for an LSTM; each (layers * dirs, B, H)


def make_rnn(
    cell: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    dropout: float = 0.0,
    bidirectional: bool = False,
) -> nn.RNNBase:
    """A batch-first fused nn.RNN/GRU/LSTM; `dropout` acts between stacked layers only."""
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


def run_rnn(
    rnn: nn.RNNBase, inputs: Tensor, lengths: Tensor | None = None, state: State | None = None
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
