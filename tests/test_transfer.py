"""Fine-tuning by layer groups (#20): gradual unfreezing, discriminative learning rates."""

from __future__ import annotations

import itertools
from functools import partial

import pytest
import torch

from rnnlab.errors import ConfigError
from rnnlab.models.classifier import RNNClassifier
from rnnlab.tasks.classification import ClassificationTask
from rnnlab.tasks.fine_tuning import apply_freezing, layer_groups, trainable_groups


# Fine-tuning by layer groups ---------------------------------------------------------------------
def classifier(num_layers: int = 2) -> RNNClassifier:
    return RNNClassifier(2, vocab_size=10, embedding_dim=4, hidden_size=6, num_layers=num_layers)


def test_layer_groups_hold_every_parameter_once_bottom_to_top():
    net = classifier()
    groups = layer_groups(net)
    assert [len(group) for group in groups] == [1, 4, 4, 2]  # embedding, 2 LSTM layers, head
    assert groups[0][0] is net.embed.weight and groups[2][0] is net.rnn.weight_ih_l1
    assert sorted(map(id, itertools.chain(*groups))) == sorted(map(id, net.parameters()))
    with pytest.raises(ConfigError, match=r"^module\.freeze_epochs/layer_lr_decay: need a net"):
        layer_groups(torch.nn.Linear(2, 2))


def test_gradual_unfreezing_opens_one_group_per_step_from_the_top():
    net = classifier()
    groups = layer_groups(net)
    schedule = []
    for epoch in range(5):
        apply_freezing(groups, epoch, freeze_epochs=1)
        schedule.append([group[0].requires_grad for group in groups])
    assert schedule == [
        [False, False, False, True],
        [False, False, True, True],
        [False, True, True, True],
        [True, True, True, True],
        [True, True, True, True],
    ]
    assert [trainable_groups(epoch, 4, 2) for epoch in range(8)] == [1, 1, 2, 2, 3, 3, 4, 4]
    assert trainable_groups(0, 4, 0) == 4


def test_discriminative_learning_rates_shrink_towards_the_embedding():
    net = classifier()
    module = ClassificationTask(net, partial(torch.optim.Adam, lr=0.01), layer_lr_decay=0.5)
    groups = module.configure_optimizers().param_groups
    assert [group["lr"] for group in groups] == [0.01, 0.005, 0.0025, 0.00125]
    assert groups[0]["params"][0] is net.head.weight and groups[3]["params"] == [net.embed.weight]
    plain = ClassificationTask(classifier(), partial(torch.optim.Adam, lr=0.01))
    assert len(plain.configure_optimizers().param_groups) == 1
