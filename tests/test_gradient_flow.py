"""Insight callbacks: gradient flow over time, gate views, embeddings in the projector."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import compose_config, train_run
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from rnnlab.builder import instantiate_node
from rnnlab.callbacks.embeddings import EmbeddingProjector
from rnnlab.callbacks.gates import GateActivations
from rnnlab.callbacks.gradient_flow import GradientFlow, step_gradient_norms
from rnnlab.models.classifier import RNNClassifier
from rnnlab.tasks.classification import ClassificationTask

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CELLS = {"rnn": nn.RNNCell, "gru": nn.GRUCell, "lstm": nn.LSTMCell}
SMALL_RUN = [
    "data.train_size=256",
    "data.val_size=64",
    "data.test_size=64",
    "data.batch_size=32",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
    "test=false",
]


def _direct_norms(net: RNNClassifier, batch: dict, kind: str) -> torch.Tensor:
    """‖∂loss/∂h_t‖ of the top layer by hand: a Python loop of nn.*Cell per sequence, with the
    fused layer's weights, each h_t kept with retain_grad; averaged over running sequences."""
    rnn = net.rnn
    cells = []
    for layer in range(rnn.num_layers):
        cell = CELLS[kind](rnn.input_size if layer == 0 else rnn.hidden_size, rnn.hidden_size)
        cell.load_state_dict({name: getattr(rnn, f"{name}_l{layer}") for name in cell.state_dict()})
        cells.append(cell)
    inputs, lengths, targets = batch["inputs"], batch["lengths"], batch["targets"]
    steps, size = inputs.size(1), len(inputs)
    tops: list[list[torch.Tensor]] = []
    loss = 0.0
    for row in range(size):
        states = [None] * rnn.num_layers
        top = []
        for x in net.embed(inputs[row : row + 1, : int(lengths[row])]).unbind(1):
            for layer, cell in enumerate(cells):
                states[layer] = cell(x, states[layer])
                x = states[layer][0] if kind == "lstm" else states[layer]
            x.retain_grad()
            top.append(x)
        logits = net.head(x)
        loss = loss + F.cross_entropy(logits, targets[row : row + 1]) / size
        tops.append(top)
    loss.backward()
    norms = torch.zeros(steps)
    for t in range(steps):
        running = [top[t].grad.norm() for top in tops if t < len(top)]
        norms[t] = torch.stack(running).mean()
    return norms


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_step_norms_equal_a_direct_autograd_computation(kind):
    torch.manual_seed(0)
    net = RNNClassifier(2, vocab_size=3, embedding_dim=4, cell=kind, hidden_size=5, num_layers=2)
    module = ClassificationTask(net)
    batch = {
        "inputs": torch.randint(1, 3, (4, 7)),
        "lengths": torch.tensor([7, 3, 5, 7]),
        "targets": torch.tensor([0, 1, 1, 0]),
    }
    batch["inputs"][torch.arange(7)[None] >= batch["lengths"][:, None]] = 0
    measured = step_gradient_norms(module, batch)
    expected = _direct_norms(net, batch, kind)
    torch.testing.assert_close(measured, expected, atol=1e-7, rtol=1e-5)
    assert all(p.grad is None for p in net.rnn.parameters())  # the fused layer was not touched
    assert type(module.net.rnn) is {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[kind]


def test_a_language_models_carried_state_is_left_as_it_was():
    from rnnlab.models.language_model import RNNLanguageModel
    from rnnlab.tasks.language_model import LanguageModelTask

    torch.manual_seed(0)
    module = LanguageModelTask(RNNLanguageModel(6, embedding_dim=4, cell="gru", hidden_size=5))
    tokens = torch.randint(0, 6, (3, 9))
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "reset": torch.ones(3).bool()}
    module.model_step(batch)
    carried = module._carried["train"].clone()
    batch["reset"] = torch.tensor([False, True, False])
    norms = step_gradient_norms(module, batch)
    assert norms.shape == (8,) and bool((norms > 0).all())
    assert module.training and torch.equal(module._carried["train"], carried)
    assert "eval" not in module._carried


def _event_values(directory: Path) -> tuple[set[str], set[str]]:
    images, scalars = set(), set()
    for path in directory.rglob("events.out.tfevents.*"):
        events = EventAccumulator(str(path), size_guidance={"images": 0, "scalars": 0})
        events.Reload()
        images |= set(events.Tags()["images"])
        scalars |= set(events.Tags()["scalars"])
    return images, scalars


def test_images_scalars_and_embeddings_reach_tensorboard(tmp_path):
    train_run(
        tmp_path,
        "task=arithmetic",
        "size=tiny",
        *SMALL_RUN,
        "callbacks.gradient_flow.enabled=true",
        "callbacks.gradient_flow.every_n_steps=3",
        "callbacks.gates.enabled=true",
        "callbacks.embeddings.enabled=true",
    )
    images, scalars = _event_values(tmp_path / "tensorboard")
    assert {"grad_flow/norm_per_step", "gates/activations"} <= images
    assert {"grad_flow/ratio_first_last", "train/grad_norm", "gates/forget_mean"} <= scalars
    assert "gates/forget_saturated" in scalars
    projector = (tmp_path / "tensorboard" / "projector_config.pbtxt").read_text()
    assert "src_embedding" in projector and "decoder.embedding" in projector
    labels = next((tmp_path / "tensorboard").rglob("src_embedding/metadata.tsv")).read_text()
    assert {"<pad>", "+", "7"} <= set(labels.split("\n"))


def _train_weights_and_grads(tmp_path: Path, *extra: str) -> dict[str, torch.Tensor]:
    _, objects = train_run(
        tmp_path,
        "task=parity",
        "size=tiny",
        "cell=lstm",
        "model.num_layers=2",
        "model.dropout=0.3",  # the callback must not shift the dropout masks
        "data.length=16",
        *SMALL_RUN,
        "++trainer.max_steps=5",
        "++trainer.val_check_interval=2",
        *extra,
    )
    net = objects["module"].net
    state = {name: value.clone() for name, value in net.state_dict().items()}
    state.update({f"{n}.grad": p.grad.clone() for n, p in net.named_parameters()})
    return state


def test_training_is_identical_with_the_callbacks_on_and_off(tmp_path):
    off = _train_weights_and_grads(tmp_path / "off")
    on = _train_weights_and_grads(
        tmp_path / "on",
        "callbacks.gradient_flow.enabled=true",
        "callbacks.gradient_flow.every_n_steps=1",
        "callbacks.gates.enabled=true",
    )
    assert off.keys() == on.keys()
    for name in off:
        assert torch.equal(off[name], on[name]), name


def test_disabled_callbacks_are_not_instantiated(tmp_path):
    kinds = {
        "gradient_flow": GradientFlow,
        "gates": GateActivations,
        "embeddings": EmbeddingProjector,
    }
    cfg = compose_config(output_dir=tmp_path)
    assert all(instantiate_node(cfg.callbacks, key) is None for key in kinds)
    switched = compose_config(
        *(f"callbacks.{key}.enabled=true" for key in kinds), output_dir=tmp_path
    )
    for key, kind in kinds.items():
        assert isinstance(instantiate_node(switched.callbacks, key), kind)
    _, objects = train_run(tmp_path, "task=parity", "size=tiny", "debug=fast")
    callbacks = objects["trainer"].callbacks
    assert not any(isinstance(c, tuple(kinds.values())) for c in callbacks)
