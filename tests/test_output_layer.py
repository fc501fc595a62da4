"""The vocabulary layer (`model.output_layer=full|sampled|adaptive`): the sampled softmax is the
full softmax when its candidates cover the vocabulary and unbiased in expectation when they do
not, adaptive log-probabilities form a distribution, every layer learns a tiny translation task
and decodes it every way, and checkpoints rebuild the layer they were trained with."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from conftest import train_run
from omegaconf import DictConfig

from rnnlab.errors import ConfigError
from rnnlab.inference import load_checkpoint, predict_texts
from rnnlab.models.decoding import DecodingOptions, beam_search, top_k_step
from rnnlab.models.language_model import RNNLanguageModel
from rnnlab.models.output_layer import (
    OUTPUT_LAYERS,
    AdaptiveSoftmax,
    SampledSoftmax,
    default_cutoffs,
    make_output_layer,
)
from rnnlab.models.seq2seq import Seq2Seq
from rnnlab.tasks.seq2seq import Seq2SeqTask

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def grads(loss: torch.Tensor, *tensors: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, tensors))


WORDS = 40  # ids 4..43, Zipfian frequencies; the "translation" of word w is (7 w) mod 40


def toy_pairs(count: int, seed: int) -> tuple[torch.Tensor, ...]:
    """(src (N, 6), src_lengths (N,), tgt (N, 8) = <sos> words <eos> <pad>...)."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(WORDS)]
    src = torch.zeros(count, 6, dtype=torch.long)
    tgt = torch.zeros(count, 8, dtype=torch.long)
    lengths = torch.zeros(count, dtype=torch.long)
    for row in range(count):
        words = rng.choices(range(WORDS), weights, k=rng.randint(2, 6))
        src[row, : len(words)] = torch.tensor(words) + 4
        tgt[row, : len(words) + 2] = torch.tensor([2, *[(7 * w) % WORDS + 4 for w in words], 3])
        lengths[row] = len(words)
    return src, lengths, tgt


def seq2seq(**options) -> Seq2Seq:
    """A model over the toy vocabulary (4 specials + WORDS words, both sides)."""
    kwargs = dict(pad_id=0, sos_id=2, eos_id=3, unk_id=1, max_target_len=8)
    kwargs.update(embedding_dim=16, hidden_size=16, attention="bahdanau")
    return Seq2Seq(WORDS + 4, WORDS + 4, **{**kwargs, **options})


# Sampled softmax -----------------------------------------------------------------------------
def test_sampled_loss_is_the_full_cross_entropy_when_candidates_cover_the_vocabulary():
    torch.manual_seed(0)
    layer = make_output_layer("sampled", 8, 20, num_sampled=1000)
    assert layer.num_sampled == 20  # capped at the vocabulary: every id is a candidate
    hidden = torch.randn(3, 5, 8, requires_grad=True)
    targets = torch.randint(1, 20, (3, 5))
    targets[0, :2] = 0  # padding
    params = (hidden, layer.weight, layer.bias)
    for smoothing in (0.0, 0.1):
        exact = F.cross_entropy(
            layer(hidden).flatten(0, 1),
            targets.flatten(),
            ignore_index=0,
            label_smoothing=smoothing,
        )
        sampled = layer.loss(hidden, targets, ignore_index=0, label_smoothing=smoothing)
        torch.testing.assert_close(sampled, exact)
        for got, want in zip(grads(sampled, *params), grads(exact, *params)):
            torch.testing.assert_close(got, want)
    # Outside training it is the full layer: same parameters, same checkpoint keys.
    full = make_output_layer("full", 8, 20)
    full.load_state_dict(layer.state_dict())
    layer.eval()
    torch.testing.assert_close(layer.logits(hidden), full.logits(hidden))
    torch.testing.assert_close(
        layer.loss(hidden, targets, ignore_index=0), full.loss(hidden, targets, ignore_index=0)
    )


def test_candidates_are_drawn_log_uniformly_with_the_probability_the_correction_uses():
    torch.manual_seed(0)
    layer = SampledSoftmax(4, 100, num_sampled=30)
    rounds, seen, log_pi = 3000, torch.zeros(100), torch.zeros(100)
    for _ in range(rounds):
        ids, log_p = layer.sample()
        assert torch.equal(ids, ids.unique())  # distinct, sorted
        seen[ids] += 1
        log_pi[ids] = log_p
    # Every id was drawn at least once; how often it was a candidate is its pi.
    assert bool((seen > 0).all())
    torch.testing.assert_close(seen / rounds, log_pi.exp(), atol=0.03, rtol=0)
    assert log_pi.exp()[0] > 0.99 and log_pi.exp()[-1] < 0.1  # frequent ids first


def test_sampled_gradient_is_unbiased_in_expectation():
    """25 draws over 50 words (about 16 distinct candidates): one batch's gradient is far from
    the full softmax's, the mean over many batches is close to it. What remains (~3% here) is
    Monte Carlo noise plus the small bias of a ratio estimate, which shrinks as num_sampled
    grows; without the log-Q correction the mean would be ~20% off."""
    torch.manual_seed(0)
    layer = SampledSoftmax(6, 50, num_sampled=25)
    hidden = torch.randn(16, 6)
    targets = torch.randint(0, 50, (16,))
    params = (layer.weight, layer.bias)

    def gradient(loss: torch.Tensor) -> torch.Tensor:
        return torch.cat([g.flatten() for g in grads(loss, *params)])

    def error(estimate: torch.Tensor) -> float:
        return float((estimate - exact).norm() / exact.norm())

    exact = gradient(F.cross_entropy(layer(hidden), targets))
    draws = torch.stack([gradient(layer.loss(hidden, targets)) for _ in range(2000)])
    assert error(draws[0]) > 0.3
    assert error(draws.mean(0)) < 0.07, error(draws.mean(0))

    sample = layer.sample
    layer.sample = lambda: (sample()[0], torch.zeros(()))  # the same draws, uncorrected
    uncorrected = torch.stack([gradient(layer.loss(hidden, targets)) for _ in range(2000)])
    assert error(uncorrected.mean(0)) > 0.15


# Adaptive softmax ----------------------------------------------------------------------------
def test_adaptive_log_probs_sum_to_one_and_its_loss_is_their_nll():
    torch.manual_seed(0)
    layer = make_output_layer("adaptive", 32, 300, adaptive_cutoffs=[37, 150])
    assert isinstance(layer, AdaptiveSoftmax) and layer.cutoffs == [37, 150, 300]
    hidden = torch.randn(2, 7, 32)
    targets = torch.randint(1, 300, (2, 7))
    targets[1, 5:] = 0
    log_probs = layer.logits(hidden)
    assert log_probs.shape == (2, 7, 300)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(2, 7))
    nll = F.nll_loss(log_probs.flatten(0, 1), targets.flatten(), ignore_index=0)
    torch.testing.assert_close(layer.loss(hidden, targets, ignore_index=0), nll)


@pytest.mark.parametrize("k", [1, 5, 40])
def test_adaptive_top_k_is_the_top_k_of_the_whole_table_scoring_only_rows_that_need_a_cluster(k):
    torch.manual_seed(0)
    layer = make_output_layer("adaptive", 32, 300, adaptive_cutoffs=[37, 150]).eval()
    with torch.no_grad():  # clusters of rarer words, peaked enough to hold a row's best words
        layer.head.bias[37:] = torch.tensor([1.0, -1.0])
        for parameter in layer.tail.parameters():
            parameter.mul_(4)
    hidden = 3 * torch.randn(400, 32)
    scored_rows = []
    hooks = [
        tail.register_forward_hook(lambda _, args, __: scored_rows.append(len(args[0])))
        for tail in layer.tail
    ]
    with torch.no_grad():
        values, ids = layer.top_k_log_probs(hidden, k)
        for hook in hooks:
            hook.remove()
        table = layer.logits(hidden)
    expected_values, expected_ids = table.topk(k, dim=-1)
    torch.testing.assert_close(values, expected_values)
    assert torch.equal(ids, expected_ids)
    assert (ids >= 37).any()  # some rows' best words are in a cluster ...
    if k < 37:  # ... and not every row scored both clusters
        assert sum(scored_rows) < len(hidden)
    else:  # more than the head's 37 words: every row needs the first cluster
        assert scored_rows[0] == len(hidden)


def test_default_cutoffs_follow_the_vocabulary_size():
    assert default_cutoffs(8126) == [1015, 4063]  # the translate target vocabulary
    assert default_cutoffs(2000) == [512, 1000] and default_cutoffs(1000) == [512]
    assert default_cutoffs(44) == [43] and default_cutoffs(2) == [1]
    assert default_cutoffs(8126, in_features=8) == [1015]  # too narrow for a second cluster
    assert make_output_layer("adaptive", 16, 44).cutoffs == [43, 44]


@pytest.mark.parametrize(
    "options,key",
    [
        ({"output_layer": "hierarchical"}, "model.output_layer"),
        ({"output_layer": "sampled", "num_sampled": 0}, "model.num_sampled"),
        ({"output_layer": "adaptive", "adaptive_cutoffs": [12, 6]}, "model.adaptive_cutoffs"),
        ({"output_layer": "adaptive", "adaptive_cutoffs": [6, 44]}, "model.adaptive_cutoffs"),
        # three clusters need 4**3 = 64 input features; the decoder gives 16 + 16
        ({"output_layer": "adaptive", "adaptive_cutoffs": [6, 12, 24]}, "model.adaptive_cutoffs"),
    ],
)
def test_bad_output_layer_keys_name_the_key(options, key):
    with pytest.raises(ConfigError, match=key):
        seq2seq(**options)


def test_layers_that_cannot_do_what_is_asked_say_so():
    with pytest.raises(ConfigError, match="module.label_smoothing"):
        Seq2SeqTask(seq2seq(output_layer="adaptive"), label_smoothing=0.1)
    Seq2SeqTask(seq2seq(output_layer="sampled"), label_smoothing=0.1)
    with pytest.raises(ConfigError, match="model.tie_weights"):
        RNNLanguageModel(
            40, embedding_dim=16, hidden_size=16, tie_weights=True, output_layer="adaptive"
        )


def test_tied_embeddings_learn_through_the_sampled_layer():
    torch.manual_seed(0)
    net = RNNLanguageModel(
        40, embedding_dim=16, hidden_size=16, tie_weights=True, output_layer="sampled"
    )
    net.out.num_sampled = 8  # a real sample, not the whole vocabulary
    assert net.out.weight is net.embedding.weight
    tokens = torch.randint(0, 40, (4, 9))
    features, _ = net.features(tokens[:, :-1])
    net.output_layer.loss(features, tokens[:, 1:]).backward()
    # Rows of the words read, of the targets, and of sampled words read nowhere.
    assert net.embedding.weight.grad.abs().sum(1).gt(0).sum() > len(tokens.unique())


# Every layer learns a tiny translation task and decodes it every way ---------------------------
@pytest.fixture(scope="module")
def toy_models() -> dict[str, Seq2Seq]:
    """One model per output layer, each trained on the same 400 batches."""
    src, lengths, tgt = toy_pairs(4000, seed=0)
    models = {}
    for layer in OUTPUT_LAYERS:
        torch.manual_seed(0)
        net = seq2seq(
            embedding_dim=24,
            hidden_size=48,
            readout_size=64,
            output_layer=layer,
            num_sampled=16,  # about 11 distinct candidates of the 44 words
            adaptive_cutoffs=[12, 28],  # two clusters, projected to 16 and 4 features
        )
        task = Seq2SeqTask(net, metrics={}).train()
        optimizer = torch.optim.Adam(net.parameters(), lr=5e-3)
        for step in range(400):
            rows = slice(step * 32 % 4000, step * 32 % 4000 + 32)
            batch = {"src_tokens": src[rows], "src_lengths": lengths[rows], "tgt_tokens": tgt[rows]}
            optimizer.zero_grad()
            task.model_step(batch)["loss"].backward()
            optimizer.step()
        models[layer] = net.eval()
    return models


def exact_match(tokens: torch.Tensor, tgt: torch.Tensor) -> float:
    """Share of rows of generated `tokens` (N, T) equal to `tgt` (N, 1 + T') after <sos>."""
    width = min(tokens.size(1), tgt.size(1) - 1)
    wanted = tgt[:, 1 : width + 1]
    same = (tokens[:, :width] == wanted) | (wanted == 0)
    return float(same.all(1).float().mean())


@pytest.mark.parametrize("layer", OUTPUT_LAYERS)
def test_each_layer_learns_a_tiny_translation_task(toy_models, layer):
    net = toy_models[layer]
    src, lengths, tgt = toy_pairs(200, seed=1)
    greedy = net.generate(src, lengths)
    assert exact_match(greedy["tokens"], tgt) >= 0.8
    beam = net.generate(src, lengths, DecodingOptions(beam_size=3))
    assert exact_match(beam["tokens"], tgt) >= 0.8
    # The layer's own top-k (the adaptive one skips clusters that cannot matter) finds what a
    # beam over every word's score finds.
    every_word, _ = beam_search(
        top_k_step(net.decoder.step), net._initial_state(src, lengths), start_tokens=torch.full((len(src),), 2),
        beam_size=3, eos_id=3, pad_id=0, max_len=8,
    )  # fmt: skip
    assert torch.equal(every_word, beam["tokens"])
    assert beam["attention"].shape[:2] == beam["tokens"].shape
    one = net.generate(src, lengths, DecodingOptions(beam_size=1))["tokens"]
    assert torch.equal(one, greedy["tokens"])
    top_1 = net.generate(src, lengths, DecodingOptions(sample=True, top_k=1))["tokens"]
    assert torch.equal(top_1, greedy["tokens"])
    constrained = DecodingOptions(suppress_unk=True, no_repeat=True, min_new_tokens=2)
    tokens = net.generate(src, lengths, constrained)["tokens"]
    assert not (tokens == 1).any() and not (tokens[:, 0] == 3).any()
    assert not ((tokens[:, 1:] == tokens[:, :-1]) & (tokens[:, 1:] > 3)).any()
    # Teacher forcing scores the whole sequence as stepping through it does.
    with torch.no_grad():
        whole, _ = net(src[:4], lengths[:4], tgt[:4, :-1])
        state = net._initial_state(src[:4], lengths[:4])
        for t in range(tgt.size(1) - 1):
            logits, state, _ = net.decoder.step(tgt[:4, t], state)
            torch.testing.assert_close(whole[:, t], logits)


@pytest.mark.parametrize("layer", OUTPUT_LAYERS)
def test_feeding_back_own_predictions_trains_with_each_layer(layer):
    torch.manual_seed(0)
    task = Seq2SeqTask(seq2seq(output_layer=layer, teacher_forcing=0.5), metrics={}).train()
    src, lengths, tgt = toy_pairs(8, seed=2)
    loss = task.model_step({"src_tokens": src, "src_lengths": lengths, "tgt_tokens": tgt})["loss"]
    loss.backward()
    assert math.isfinite(loss.item()) and task.net.decoder.rnn.weight_hh_l0.grad is not None
    assert next(task.net.output_layer.parameters()).grad is not None


# Checkpoints ---------------------------------------------------------------------------------
def train_and_load(run_dir: Path, *overrides: str) -> tuple[DictConfig, Any, Any]:
    """A few batches through `python -m rnnlab`'s training, then the checkpoint loaded back."""
    train_run(
        run_dir,
        *overrides,
        "size=tiny",
        "model.num_sampled=16",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=5",
        "+trainer.limit_val_batches=2",
        "test=false",
        "logger=none",
        "callbacks.samples=null",
        "callbacks.early_stopping=null",
    )
    return load_checkpoint(run_dir / "checkpoints" / "last.ckpt")


def test_a_translate_checkpoint_rebuilds_its_sampled_layer(tmp_path):
    src, lengths, tgt = toy_pairs(300, seed=3)
    lines = [  # target<TAB>source, the manythings column order
        " ".join(f"w{int(i)}" for i in t[1:] if i > 3)
        + "\t"
        + " ".join(f"p{int(i)}" for i in s[:n])
        for s, n, t in zip(src, lengths, tgt)
    ]
    corpus = tmp_path / "pairs.tsv"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg, codec, module = train_and_load(
        tmp_path / "run",
        "task=translate",
        "data.corpus=files",
        f"data.path={corpus}",
        "data.min_count=1",
        "model.output_layer=sampled",
        "callbacks.attention_maps=null",
    )
    assert cfg.model.output_layer == "sampled"
    assert isinstance(module.net.output_layer, SampledSoftmax)
    answer = predict_texts(module, codec, ["p4 p5 p6"])[0]
    assert isinstance(answer, str) and answer


def test_a_word_level_book_checkpoint_rebuilds_its_adaptive_layer(tmp_path):
    rng = random.Random(0)
    corpus = tmp_path / "book.txt"
    corpus.write_text(" ".join(rng.choice(["ab", "cd", "ef", "gh"]) for _ in range(3000)))
    cfg, codec, module = train_and_load(
        tmp_path / "run",
        "task=book",
        f"data.path={corpus}",
        "data.level=word",
        "data.seq_len=20",
        "model.output_layer=adaptive",
        "model.adaptive_cutoffs=[5]",
    )
    assert cfg.model.output_layer == "adaptive"
    assert isinstance(module.net.output_layer, AdaptiveSoftmax)
    assert module.net.output_layer.cutoffs == [5, len(codec.vocab)]
    answer = predict_texts(module, codec, ["ab cd"])[0]
    assert isinstance(answer, str) and set(answer.split()) <= {"ab", "cd", "ef", "gh", "<unk>"}
