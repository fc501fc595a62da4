"""Look inside a model's recurrent layer for one batch, without disturbing training.

A fused nn.LSTM hides its time steps: ∂loss/∂h_t and the gate activations never exist as
tensors. `probe_step` swaps the model's first recurrent layer (the encoder of a seq2seq model)
for a from-scratch copy with the same weights that records them, runs the task's own
`model_step` on the batch, and puts everything back: the layer, train/eval mode, the RNG state
and any state the task carries between batches. Parameter gradients are never touched.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from rnnlab.models.rnn import FUSED, scratch_copy
from rnnlab.models.scratch import LayerTrace, ScratchRNNBase
from rnnlab.tasks.base import TaskModule


def find_recurrent(net: nn.Module) -> tuple[nn.Module, str, nn.Module] | None:
    """(parent, attribute, layer) of the first recurrent layer in `net`, in definition order
    (a classifier's or language model's `rnn`, a seq2seq model's `encoder`), or None."""
    recurrent = (ScratchRNNBase, *FUSED.values())
    for name, module in net.named_modules():
        if isinstance(module, recurrent) and name:
            parent_name, _, attribute = name.rpartition(".")
            return net.get_submodule(parent_name), attribute, module
    return None


def top_forward(trace: list[LayerTrace], rnn: nn.Module) -> LayerTrace:
    """The top layer's forward direction (the one that reads t = 0, 1, ... in order)."""
    return trace[(rnn.num_layers - 1) * (2 if rnn.bidirectional else 1)]


@contextmanager
def _kept(module: TaskModule) -> Iterator[None]:
    """Eval mode (no dropout: the measure does not depend on a random mask), a forked RNG and a
    copy of the task's carried state (a language model's truncated-BPTT state), all restored."""
    was_training = module.training
    saved = copy.copy(module.carried)
    device = next(module.parameters()).device
    devices = [device.index or 0] if device.type == "cuda" else []
    module.eval()
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        module.train(was_training)
        module.carried.clear()
        module.carried.update(saved)


def probe_step(module: TaskModule, batch: dict[str, Tensor]) -> tuple[Tensor, LayerTrace] | None:
    """Run `module.model_step(batch)` with the first recurrent layer recorded: (loss, trace of
    its top layer's forward direction), or None if the model has no recurrent layer. The loss
    keeps its graph when grad mode is on, so ∂loss/∂h_t can be taken from `trace.hiddens`."""
    found = find_recurrent(module.net)
    if found is None:
        return None
    parent, attribute, rnn = found
    with _kept(module):
        probe = scratch_copy(rnn).eval()  # inside: its weight initialisation draws numbers
        probe.record = True
        setattr(parent, attribute, probe)
        try:
            loss = module.model_step(batch)["loss"]
        finally:
            setattr(parent, attribute, rnn)
    return loss, top_forward(probe.trace, probe)
