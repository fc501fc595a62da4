"""From-scratch recurrent layers: the book's equations in plain torch (`cell=*_scratch`).

Drop-in replacements for nn.RNN / nn.GRU / nn.LSTM: same constructor, same call (batch-first or
not, a PackedSequence, an initial state), same parameter names and shapes, so
`scratch.load_state_dict(fused.state_dict())` works both ways. They exist to be *read* and
*looked into*: with `record = True` a forward pass keeps every step's hidden state (with
`retain_grad`, for ∂loss/∂h_t) and every gate activation in `trace`. They run a Python loop over
time steps and are several times slower than the fused kernels, which stay the default.

Per layer and direction, with x_t the step input and h_{t-1} the previous state (PyTorch's
conventions, so the numbers match the fused modules):

    rnn:  h_t = tanh(W x_t + b_W + U h_{t-1} + b_U)
    gru:  r_t = σ(W_r x_t + b_Wr + U_r h_{t-1} + b_Ur)                    reset gate
          z_t = σ(W_z x_t + b_Wz + U_z h_{t-1} + b_Uz)                    update gate
          n_t = tanh(W_n x_t + b_Wn + r_t * (U_n h_{t-1} + b_Un))         candidate
          h_t = (1 - z_t) * n_t + z_t * h_{t-1}
    lstm: i_t, f_t, o_t = σ(W_* x_t + b_W* + U_* h_{t-1} + b_U*)          input, forget, output
          g_t = tanh(W_g x_t + b_Wg + U_g h_{t-1} + b_Ug)                 candidate
          c_t = f_t * c_{t-1} + i_t * g_t;   h_t = o_t * tanh(c_t)

W is `weight_ih_l{k}` (blocks stacked in the order above: r,z,n / i,f,g,o), U `weight_hh_l{k}`.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

GATES = {"rnn": 1, "gru": 3, "lstm": 4}  # weight blocks per layer
GATE_NAMES = {"rnn": (), "gru": ("reset", "update"), "lstm": ("input", "forget", "output")}

Hidden = Tensor | tuple[Tensor, Tensor]  # h, or (h, c) for an LSTM


@dataclass
class LayerTrace:
    """What one layer and direction computed, when recording.

    hiddens: h_t (B, H) for t = 0..T-1 in time order, each with `retain_grad` (the very tensors
    the next step and the output read, so ∂loss/∂h_t is the total derivative); gates: name ->
    (B, T, H); lengths (B,) or None when every sequence has T steps (past its length a
    sequence's h_t only carries its final state).
    """

    hiddens: list[Tensor] = field(default_factory=list)
    gates: dict[str, Tensor] = field(default_factory=dict)
    lengths: Tensor | None = None


class ScratchRNNBase(nn.Module):
    """The shared loop; subclasses give `kind` and `cell` (one step of one layer)."""

    kind = "rnn"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
    ):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1
        self.proj_size = 0  # what code written for nn.LSTM may ask
        self.record = False  # keep `trace` on the next forward passes
        self.trace: list[LayerTrace] = []  # one per layer and direction, indexed like h_n
        blocks = GATES[self.kind] * hidden_size
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * self.num_directions
            for suffix in ("", "_reverse")[: self.num_directions]:
                names = {
                    f"weight_ih_l{layer}{suffix}": (blocks, layer_input),
                    f"weight_hh_l{layer}{suffix}": (blocks, hidden_size),
                }
                if bias:
                    names[f"bias_ih_l{layer}{suffix}"] = (blocks,)
                    names[f"bias_hh_l{layer}{suffix}"] = (blocks,)
                for name, shape in names.items():
                    self.register_parameter(name, nn.Parameter(torch.empty(shape)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(-1/√H, 1/√H) for every weight and bias, as the fused modules do."""
        bound = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0.0
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"batch_first={self.batch_first}, dropout={self.dropout}, "
            f"bidirectional={self.bidirectional}"
        )

    def cell(
        self, x_proj: Tensor, hidden: Hidden, w_hh: Tensor, b_hh: Tensor | None
    ) -> tuple[Hidden, dict[str, Tensor]]:
        """One step: x_proj = W x_t + b_W (B, G*H), hidden (B, H) -> next hidden, gates."""
        raise NotImplementedError

    def _weights(
        self, layer: int, direction: int
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        suffix = f"l{layer}" + ("_reverse" if direction else "")
        w_ih, w_hh = getattr(self, f"weight_ih_{suffix}"), getattr(self, f"weight_hh_{suffix}")
        if not self.bias:
            return w_ih, w_hh, None, None
        return w_ih, w_hh, getattr(self, f"bias_ih_{suffix}"), getattr(self, f"bias_hh_{suffix}")

    def _run_direction(
        self, inputs: Tensor, hidden: Hidden, mask: Tensor | None, layer: int, direction: int
    ) -> tuple[Tensor, Hidden, LayerTrace]:
        """inputs (B, T, F), mask (B, T) True at real steps -> outputs (B, T, H), last hidden."""
        w_ih, w_hh, b_ih, b_hh = self._weights(layer, direction)
        x_proj = F.linear(inputs, w_ih, b_ih)  # every step's W x_t + b_W at once
        steps = range(inputs.size(1) - 1, -1, -1) if direction else range(inputs.size(1))
        trace = LayerTrace()
        outputs: list[Tensor] = []  # in the order computed (reversed for direction 1)
        gates: dict[str, list[Tensor]] = {}
        for t in steps:
            new, step_gates = self.cell(x_proj[:, t], hidden, w_hh, b_hh)
            if mask is not None:  # past its length a sequence keeps its state, outputs zeros
                valid = mask[:, t, None]
                new = (
                    tuple(torch.where(valid, n, o) for n, o in zip(new, hidden))
                    if isinstance(new, tuple)
                    else torch.where(valid, new, hidden)
                )
            hidden = new
            h = hidden[0] if isinstance(hidden, tuple) else hidden
            if self.record:
                if h.requires_grad:
                    h.retain_grad()
                trace.hiddens.append(h)
                for name, value in step_gates.items():
                    gates.setdefault(name, []).append(value.detach())
            outputs.append(h if mask is None else h * mask[:, t, None])
        if direction:  # back to time order
            outputs.reverse()
            trace.hiddens.reverse()
            gates = {name: values[::-1] for name, values in gates.items()}
        trace.gates = {name: torch.stack(values, 1) for name, values in gates.items()}
        return torch.stack(outputs, 1), hidden, trace

    def forward(
        self, input: Tensor | PackedSequence, hx: Hidden | None = None
    ) -> tuple[Tensor | PackedSequence, Hidden]:
        """input (B, T, F) batch-first, (T, B, F), (T, F) unbatched, or a PackedSequence; hx
        (layers * dirs, B, H) or an (h, c) pair -> outputs (..., H * dirs) and the final state,
        which for a packed batch is each sequence's state at its last valid step."""
        packed = input if isinstance(input, PackedSequence) else None
        unbatched = packed is None and input.dim() == 2
        mask = lengths = None
        if packed is not None:
            inputs, lengths = pad_packed_sequence(packed, batch_first=True)
            steps = torch.arange(inputs.size(1), device=lengths.device)
            mask = (steps < lengths[:, None]).to(inputs.device)
        elif unbatched:
            inputs = input.unsqueeze(0)
            hx = None if hx is None else _map(hx, lambda s: s.unsqueeze(1))
        else:
            inputs = input if self.batch_first else input.transpose(0, 1)
        batch = inputs.size(0)
        if hx is None:
            zeros = inputs.new_zeros(self.num_layers * self.num_directions, batch, self.hidden_size)
            hx = (zeros, zeros) if self.kind == "lstm" else zeros
        self.trace = []
        finals: list[Hidden] = []
        layer_input = inputs
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0:
                layer_input = F.dropout(layer_input, self.dropout, self.training)
            outputs = []
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                start = _map(hx, operator.itemgetter(index))
                output, final, trace = self._run_direction(
                    layer_input, start, mask, layer, direction
                )
                trace.lengths = lengths
                outputs.append(output)
                finals.append(final)
                if self.record:
                    self.trace.append(trace)
            layer_input = torch.cat(outputs, -1) if len(outputs) > 1 else outputs[0]
        if self.kind == "lstm":
            state: Hidden = (
                torch.stack([h for h, _ in finals]),
                torch.stack([c for _, c in finals]),
            )
        else:
            state = torch.stack(finals)
        if packed is not None:
            return _repack(layer_input, lengths, packed), state
        if unbatched:
            return layer_input.squeeze(0), _map(state, lambda s: s.squeeze(1))
        return (layer_input if self.batch_first else layer_input.transpose(0, 1)), state


class ScratchRNN(ScratchRNNBase):
    """Elman RNN: h_t = tanh(W x_t + U h_{t-1} + b) (or relu with nonlinearity='relu')."""

    kind = "rnn"

    def __init__(self, *args, nonlinearity: str = "tanh", **kwargs):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(*args, **kwargs)
        self.nonlinearity = nonlinearity

    def cell(self, x_proj, hidden, w_hh, b_hh):
        pre = x_proj + F.linear(hidden, w_hh, b_hh)
        return (torch.tanh(pre) if self.nonlinearity == "tanh" else torch.relu(pre)), {}


class ScratchGRU(ScratchRNNBase):
    """GRU: reset and update gates, candidate n_t = tanh(W_n x + r * (U_n h + b_Un))."""

    kind = "gru"

    def cell(self, x_proj, hidden, w_hh, b_hh):
        x_r, x_z, x_n = x_proj.chunk(3, -1)
        h_r, h_z, h_n = F.linear(hidden, w_hh, b_hh).chunk(3, -1)
        reset = torch.sigmoid(x_r + h_r)
        update = torch.sigmoid(x_z + h_z)
        candidate = torch.tanh(x_n + reset * h_n)
        return (1 - update) * candidate + update * hidden, {"reset": reset, "update": update}


class ScratchLSTM(ScratchRNNBase):
    """LSTM: input, forget and output gates around a cell state c_t."""

    kind = "lstm"

    def cell(self, x_proj, hidden, w_hh, b_hh):
        h, c = hidden
        x_i, x_f, x_g, x_o = (x_proj + F.linear(h, w_hh, b_hh)).chunk(4, -1)
        input_gate, forget, output = torch.sigmoid(x_i), torch.sigmoid(x_f), torch.sigmoid(x_o)
        c = forget * c + input_gate * torch.tanh(x_g)
        h = output * torch.tanh(c)
        return (h, c), {"input": input_gate, "forget": forget, "output": output}


SCRATCH: dict[str, type[ScratchRNNBase]] = {
    "rnn": ScratchRNN,
    "gru": ScratchGRU,
    "lstm": ScratchLSTM,
}


def _map(state: Hidden, fn) -> Hidden:
    return tuple(fn(s) for s in state) if isinstance(state, tuple) else fn(state)


def _repack(outputs: Tensor, lengths: Tensor, like: PackedSequence) -> PackedSequence:
    """Padded outputs (B, T, H) in the original batch order -> a PackedSequence laid out exactly
    like the input one (same sorted order), as the fused modules return."""
    order = like.sorted_indices
    if order is not None:
        outputs, lengths = outputs.index_select(0, order), lengths[order.cpu()]
    data = pack_padded_sequence(outputs, lengths, batch_first=True).data
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)
