"""Model behaviour that must hold whatever the training: masking, packing, decoding."""

from __future__ import annotations

import pytest
import torch

from rnnlab.models.attention import BahdanauAttention
from rnnlab.models.classifier import RNNClassifier
from rnnlab.models.seq2seq import Seq2Seq

SPECIALS = dict(pad_id=0, sos_id=1, eos_id=2)


def test_attention_gives_padding_exactly_zero_weight():
    torch.manual_seed(0)
    attention = BahdanauAttention(query_size=6, key_size=10, attention_size=7)
    keys = torch.randn(3, 5, 10)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    context, weights = attention(torch.randn(3, 6), attention.project_keys(keys), keys, mask)
    assert weights.shape == (3, 5) and context.shape == (3, 10)
    assert torch.equal(weights[~mask], torch.zeros(int((~mask).sum())))
    torch.testing.assert_close(weights.sum(-1), torch.ones(3))
    assert torch.allclose(context[2], keys[2, 0])  # one valid position: its value, exactly
    many, many_weights = attention(torch.randn(3, 4, 6), attention.project_keys(keys), keys, mask)
    assert many.shape == (3, 4, 10) and many_weights.shape == (3, 4, 5)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_classifier_ignores_padding(cell, bidirectional):
    torch.manual_seed(0)
    model = RNNClassifier(
        3, vocab_size=5, cell=cell, hidden_size=8, num_layers=2, bidirectional=bidirectional
    ).eval()
    short = torch.tensor([[1, 2, 3]])
    padded = torch.tensor([[1, 2, 3, 0, 0], [4, 4, 4, 4, 4]])
    alone = model(short, torch.tensor([3]))
    batched = model(padded, torch.tensor([3, 5]))
    torch.testing.assert_close(alone[0], batched[0])


def _seq2seq(**kwargs):
    torch.manual_seed(0)
    return Seq2Seq(
        9, 11, max_target_len=6, embedding_dim=8, hidden_size=12, **SPECIALS, **kwargs
    ).eval()


@pytest.mark.parametrize("decoder", ["repeat", "autoregressive"])
@pytest.mark.parametrize("attention", ["none", "bahdanau"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_seq2seq_shapes_and_generation(decoder, attention, cell):
    model = _seq2seq(
        decoder=decoder, attention=attention, cell=cell, num_layers=2, bidirectional=True
    )
    src = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]])
    lengths = torch.tensor([4, 2])
    tgt_in = torch.tensor([[1, 3, 4], [1, 5, 0]])
    logits, weights = model(src, lengths, tgt_in)
    assert logits.shape == (2, 3, 11)
    if attention == "bahdanau":
        assert weights.shape == (2, 3, 4) and torch.equal(weights[1, :, 2:], torch.zeros(3, 2))
    else:
        assert weights is None
    out = model.generate(src, lengths)
    assert out["tokens"].shape[0] == 2 and out["tokens"].shape[1] <= 6
    assert ("attention" in out) == (attention == "bahdanau")


@pytest.mark.parametrize("attention", ["none", "bahdanau"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_teacher_forcing_equals_stepwise_decoding(attention, cell):
    """Teacher forcing runs the embedding and output layer once over the whole sequence (and,
    without attention, the RNN too): the same logits and weights as stepping one token at a time."""
    model = _seq2seq(attention=attention, cell=cell, num_layers=2)
    src, lengths = torch.tensor([[3, 4, 5], [6, 7, 0]]), torch.tensor([3, 2])
    tgt_in = torch.tensor([[1, 3, 4, 5], [1, 6, 0, 0]])
    whole, whole_weights = model(src, lengths, tgt_in)
    state = model._initial_state(src, lengths)
    stepwise, weights = [], []
    for t in range(4):
        logits, state, step_weights = model.decoder.step(tgt_in[:, t], state)
        stepwise.append(logits)
        weights.append(step_weights)
    torch.testing.assert_close(whole, torch.stack(stepwise, 1))
    if attention == "bahdanau":
        torch.testing.assert_close(whole_weights, torch.stack(weights, 1))


def test_generation_is_batch_independent():
    model = _seq2seq(attention="bahdanau")
    src = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]])
    lengths = torch.tensor([4, 2])
    both = model.generate(src, lengths)["tokens"]
    second = model.generate(src[1:, :2], lengths[1:])["tokens"]
    assert torch.equal(both[1, : second.size(1)], second[0])
