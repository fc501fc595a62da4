"""The from-scratch cells compute what the fused nn.RNN/GRU/LSTM compute, gradients included."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import train_run
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab.models.rnn import CELLS, cell_kind, make_rnn, run_rnn, scratch_copy
from rnnlab.models.scratch import SCRATCH, ScratchGRU
from rnnlab.models.seq2seq import Seq2Seq, rnn_step

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FUSED = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
TOLERANCE = dict(atol=1e-5, rtol=1e-5)


def _pair(kind: str, **options) -> tuple[nn.Module, nn.Module]:
    """A fused module and its scratch twin holding the same random weights."""
    torch.manual_seed(0)
    fused = FUSED[kind](5, 7, **options)
    scratch = SCRATCH[kind](5, 7, **options)
    scratch.load_state_dict(fused.state_dict())
    return fused, scratch


def _run(module: nn.Module, inputs: Tensor, lengths: Tensor | None, hx, batch_first: bool):
    """Padded outputs, final states and the gradients (inputs, initial state, every weight) of a
    loss that reads all of them."""
    inputs = inputs.clone().requires_grad_()
    hx = tuple(s.clone().requires_grad_() for s in hx)
    source = inputs
    if lengths is not None:
        source = pack_padded_sequence(
            inputs, lengths, batch_first=batch_first, enforce_sorted=False
        )
    outputs, state = module(source, hx if len(hx) == 2 else hx[0])
    if lengths is not None:
        steps = inputs.size(1 if batch_first else 0)
        outputs, _ = pad_packed_sequence(outputs, batch_first=batch_first, total_length=steps)
    finals = state if isinstance(state, tuple) else (state,)
    weights = torch.linspace(-1, 1, outputs.size(-1))
    loss = (outputs * weights).sum() + sum((s * s.mean(-1, keepdim=True)).sum() for s in finals)
    loss.backward()
    grads = {name: p.grad for name, p in module.named_parameters()}
    grads.update(inputs=inputs.grad, **{f"hx{i}": s.grad for i, s in enumerate(hx)})
    return outputs.detach(), [s.detach() for s in finals], grads


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, False), (2, True)])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("batch_first", [True, False])
def test_outputs_states_and_gradients_match_the_fused_module(
    kind, num_layers, bidirectional, packed, batch_first
):
    options = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first)
    fused, scratch = _pair(kind, **options)
    torch.manual_seed(1)
    batch, steps, layers = 5, 9, num_layers * (2 if bidirectional else 1)
    inputs = torch.randn(batch, steps, 5) if batch_first else torch.randn(steps, batch, 5)
    lengths = torch.tensor([9, 3, 1, 6, 9]) if packed else None
    hx = [torch.randn(layers, batch, 7) for _ in range(2 if kind == "lstm" else 1)]
    fused_run = _run(fused, inputs, lengths, hx, batch_first)
    scratch_run = _run(scratch, inputs, lengths, hx, batch_first)
    (f_out, f_states, f_grads), (s_out, s_states, s_grads) = fused_run, scratch_run
    torch.testing.assert_close(s_out, f_out, **TOLERANCE)
    for s_state, f_state in zip(s_states, f_states):
        torch.testing.assert_close(s_state, f_state, **TOLERANCE)
    assert set(s_grads) == set(f_grads)
    for name in f_grads:
        torch.testing.assert_close(s_grads[name], f_grads[name], **TOLERANCE, msg=name)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_state_dicts_load_both_ways(kind):
    fused, scratch = _pair(kind, num_layers=2, bidirectional=True)
    assert {k: v.shape for k, v in scratch.state_dict().items()} == {
        k: v.shape for k, v in fused.state_dict().items()
    }
    with torch.no_grad():
        for weight in scratch.parameters():
            weight.add_(0.5)
    fused.load_state_dict(scratch.state_dict())
    x = torch.randn(4, 3, 5)
    torch.testing.assert_close(scratch(x)[0], fused(x)[0], **TOLERANCE)
    for name in ("num_layers", "hidden_size", "input_size", "bidirectional", "bias", "dropout"):
        assert getattr(scratch, name) == getattr(fused, name), name
    assert cell_kind(scratch) == cell_kind(fused) == kind


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_run_rnn_final_state_is_each_sequence_at_its_last_step(kind):
    torch.manual_seed(0)
    rnn = make_rnn(f"{kind}_scratch", 4, 6, num_layers=2, bidirectional=True).eval()
    inputs, lengths = torch.randn(3, 7, 4), torch.tensor([7, 2, 5])
    outputs, state = run_rnn(rnn, inputs, lengths)
    hidden = state[0] if isinstance(state, tuple) else state
    for row, length in enumerate(lengths.tolist()):
        alone_out, alone_state = rnn(inputs[row : row + 1, :length])
        alone_hidden = alone_state[0] if isinstance(alone_state, tuple) else alone_state
        torch.testing.assert_close(outputs[row, :length], alone_out[0], **TOLERANCE)
        torch.testing.assert_close(hidden[:, row], alone_hidden[:, 0], **TOLERANCE)
        assert not outputs[row, length:].any()


def test_unbatched_input_matches_the_fused_module():
    fused, scratch = _pair("lstm", num_layers=2)
    x, hx = torch.randn(6, 5), (torch.randn(2, 7), torch.randn(2, 7))
    (f_out, (f_h, f_c)), (s_out, (s_h, s_c)) = fused(x, hx), scratch(x, hx)
    for mine, theirs in ((s_out, f_out), (s_h, f_h), (s_c, f_c)):
        torch.testing.assert_close(mine, theirs, **TOLERANCE)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_decoder_steps_work_on_scratch_layers(kind):
    torch.manual_seed(0)
    rnn = make_rnn(f"{kind}_scratch", 5, 6, num_layers=2).eval()
    inputs = torch.randn(3, 5)
    state = torch.randn(2, 3, 6)
    state = (state, torch.randn(2, 3, 6)) if kind == "lstm" else state
    output, next_state = rnn_step(rnn, inputs, state)
    expected_output, expected_state = rnn(inputs[:, None], state)
    torch.testing.assert_close(output, expected_output[:, 0], **TOLERANCE)
    for mine, theirs in zip(
        next_state if kind == "lstm" else [next_state],
        expected_state if kind == "lstm" else [expected_state],
    ):
        torch.testing.assert_close(mine, theirs, **TOLERANCE)


def test_seq2seq_with_scratch_cells_equals_its_fused_twin():
    common = dict(pad_id=0, sos_id=1, eos_id=2, max_target_len=5, embedding_dim=6, hidden_size=8)
    common.update(bidirectional=True, attention="bahdanau", num_layers=2)
    torch.manual_seed(0)
    fused = Seq2Seq(9, 9, cell="gru", **common).eval()
    scratch = Seq2Seq(9, 9, cell="gru_scratch", **common).eval()
    scratch.load_state_dict(fused.state_dict())
    src, lengths = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]]), torch.tensor([4, 2])
    tgt_in = torch.tensor([[1, 3, 4], [1, 5, 6]])
    torch.testing.assert_close(scratch(src, lengths, tgt_in)[0], fused(src, lengths, tgt_in)[0])
    assert torch.equal(
        scratch.generate(src, lengths)["tokens"], fused.generate(src, lengths)["tokens"]
    )


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_recording_keeps_hidden_states_with_gradients_and_gates(kind):
    fused, _ = _pair(kind, num_layers=2, bidirectional=True, batch_first=True)
    probe = scratch_copy(fused)
    probe.record = True
    inputs, lengths = torch.randn(3, 6, 5), torch.tensor([6, 4, 2])
    outputs, _ = run_rnn(probe, inputs, lengths)
    outputs.sum().backward()
    assert len(probe.trace) == 4  # layers x directions, ordered like h_n
    top = probe.trace[2]
    assert len(top.hiddens) == 6 and all(h.grad is not None for h in top.hiddens)
    assert torch.equal(top.lengths, lengths)
    names = {"gru": {"reset", "update"}, "lstm": {"input", "forget", "output"}}[kind]
    assert set(top.gates) == names
    assert all(g.shape == (3, 6, 7) and g.min() >= 0 and g.max() <= 1 for g in top.gates.values())
    probe.record = False
    probe(inputs)
    assert probe.trace == []


def test_every_scratch_cell_is_a_config_option():
    assert {"rnn_scratch", "gru_scratch", "lstm_scratch"} <= set(CELLS)
    assert isinstance(make_rnn("gru_scratch", 3, 4), ScratchGRU)


def test_training_through_the_config_with_a_scratch_cell(tmp_path):
    metrics, objects = train_run(
        tmp_path,
        "task=parity",
        "cell=gru_scratch",
        "debug=fast",
        "data.length=12",
        "data.train_size=300",
        "data.val_size=64",
        "data.test_size=64",
    )
    assert isinstance(objects["module"].net.rnn, ScratchGRU)
    assert math.isfinite(metrics["test/loss"])
