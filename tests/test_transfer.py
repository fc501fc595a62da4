"""Language-model transfer (#20): vocabulary mapping, copied weights, refusals, gradual
unfreezing, discriminative learning rates, and a toy corpus where transfer beats scratch."""

from __future__ import annotations

import itertools
import random
import re
from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from conftest import compose_config, train_run

from rnnlab.builder import build, build_datamodule
from rnnlab.checkpoints import CODEC_KEY, read_checkpoint
from rnnlab.config_checks import check_config
from rnnlab.data.sentiment import SentimentData
from rnnlab.data.vocab import PAD, UNK, Vocab
from rnnlab.errors import ConfigError
from rnnlab.models.classifier import RNNClassifier, concat_pool
from rnnlab.tasks.classification import ClassificationTask
from rnnlab.tasks.fine_tuning import (
    SlantedTriangular,
    apply_freezing,
    layer_groups,
    trainable_groups,
)
from rnnlab.transfer import map_rows, read_language_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The toy world: 32 made-up sentiment words, half positive. The LM corpus pairs words of the same
# polarity ("the food was w3 and w9 ."), so an LM learns which words go together; the labelled
# set shows the polarity of only 8 of them (SEEN). The other 24 (NEW) occur in labelled
# sentences only where they say nothing about the label, half positive, half negative, so only
# the LM can tell a classifier what "the food was w9" means.
WORDS = [f"w{i}" for i in range(32)]
POSITIVE, NEGATIVE = WORDS[:16], WORDS[16:]
SEEN = POSITIVE[:4] + NEGATIVE[:4]
NEW = POSITIVE[4:] + NEGATIVE[4:]
SUBJECTS = ["food", "service", "phone", "movie", "waiter", "room"]
FILLERS = ["", "honestly ", "overall "]  # words the LM never saw
SIZES = ["model.embedding_dim=16", "model.hidden_size=32", "model.num_layers=1"]


def polarity(word: str) -> int:
    return int(word in POSITIVE)


def write_lm_corpus(path: Path, sentences: int = 2000) -> Path:
    rng = random.Random(0)
    lines = []
    for _ in range(sentences):
        words = rng.choice((POSITIVE, NEGATIVE))
        first, second = rng.sample(words, 2)
        lines.append(f"The {rng.choice(SUBJECTS)} was {first} and {second} .")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_labelled(root: Path) -> Path:
    """An aclImdb-style folder: its test half is exactly the NEW-word sentences."""
    rng = random.Random(1)
    train = [
        (f"{filler}the {subject} was {word}", polarity(word))
        for filler, subject, word in itertools.product(FILLERS, SUBJECTS, SEEN)
    ]
    for new in NEW:  # twice with a positive verdict, twice with a negative one
        for seen in rng.sample(SEEN[:4], 2) + rng.sample(SEEN[4:], 2):
            train.append((f"{new} . the {rng.choice(SUBJECTS)} was {seen}", polarity(seen)))
    test = [(f"the {s} was {new}", polarity(new)) for s, new in itertools.product(SUBJECTS, NEW)]
    for part, examples in (("train", train), ("test", test)):
        for label in ("neg", "pos"):
            (root / part / label).mkdir(parents=True)
        for number, (text, label) in enumerate(examples):
            (root / part / ("neg", "pos")[label] / f"{number}_1.txt").write_text(text)
    return root


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict[str, Path]:
    """The toy corpora and an LM trained on them (a few seconds)."""
    folder = tmp_path_factory.mktemp("transfer")
    corpus = write_lm_corpus(folder / "lm.txt")
    labelled = write_labelled(folder / "aclImdb")
    train_run(
        folder / "lm",
        "task=book",
        f"data.path={corpus}",
        "data.level=word",
        "data.lowercase=true",
        "data.seq_len=16",
        "data.batch_size=32",
        *SIZES,
        "model.dropout=0",
        "optimizer.lr=1e-2",
        "trainer.max_epochs=12",
        "module.metrics.bpc=null",
        "logger=none",
        "callbacks.samples=null",
        "diagnosis.enabled=false",
        "test=false",
    )
    return {"lm": folder / "lm" / "checkpoints" / "best.ckpt", "labelled": labelled}


def sentiment(toy: dict[str, Path], *overrides: str) -> list[str]:
    return [
        "task=sentiment",
        f"data.path={toy['labelled']}",
        "data.max_features=null",
        "data.batch_size=16",
        *SIZES,
        "model.dropout=0",
        "logger=none",
        "callbacks.samples=null",
        "diagnosis.enabled=false",
        *overrides,
    ]


def built(toy, *overrides: str, seed: int = 0):
    pl.seed_everything(seed, verbose=False)
    return build(compose_config(*sentiment(toy, *overrides)))


# Vocabulary mapping and copied weights -----------------------------------------------------------
def test_words_are_matched_lowercased_and_with_either_apostrophe():
    vocab = Vocab(["didn't", "great", "zebra"], specials=(PAD, UNK))
    lm_tokens = [PAD, UNK, "Great", "didn’t", "great"]  # ids by frequency: "Great" is commoner
    assert map_rows(vocab, lm_tokens) == {1: 1, 2: 3, 3: 2}  # <unk>, didn't, great; not <pad>


def test_known_words_get_the_lm_rows_and_new_words_the_lm_mean_row(toy, caplog):
    lm_tokens, weights = read_language_model(toy["lm"])
    with caplog.at_level("INFO", logger="rnnlab.transfer"):
        datamodule, module = built(toy, f"model.init_from={toy['lm']}")
    _, scratch = built(toy)  # the same seed: the same fresh weights
    vocab, embedding = datamodule.codec.vocab, module.net.embed.weight
    words = vocab.itos[2:]
    known = [w for w in words if w in lm_tokens]
    assert set(words) - set(known) == {"honestly", "overall"}
    assert f"init_from: {len(known)} of {len(words)} words from the LM, 2 new" in caplog.text
    mean_row = weights["embedding.weight"].mean(0)
    for row, token in enumerate(vocab.itos):
        if token in lm_tokens and token != PAD:
            assert torch.equal(embedding[row], weights["embedding.weight"][lm_tokens.index(token)])
        elif token != PAD:
            assert torch.allclose(embedding[row], mean_row)
    assert not embedding[vocab.pad_id].any()
    for name, tensor in module.net.rnn.state_dict().items():
        assert torch.equal(tensor, weights[f"rnn.{name}"]), name
    assert torch.equal(module.net.head.weight, scratch.net.head.weight)  # the head is new


def test_a_backward_classifier_reads_last_word_first_from_a_backward_language_model(toy, tmp_path):
    with pytest.raises(ConfigError, match=r"model.init_from.*set data.backward=false"):
        built(toy, f"model.init_from={toy['lm']}", "data.backward=true")
    train_run(
        tmp_path / "backward_lm",
        "task=book",
        f"data.path={toy['lm'].parents[2] / 'lm.txt'}",
        "data.level=word",
        "data.lowercase=true",
        "data.seq_len=16",
        "data.backward=true",
        *SIZES,
        "trainer.max_epochs=1",
        "module.metrics.bpc=null",
        "logger=none",
        "callbacks.samples=null",
        "diagnosis.enabled=false",
        "test=false",
    )
    backward_lm = tmp_path / "backward_lm" / "checkpoints" / "best.ckpt"
    with pytest.raises(ConfigError, match=r"model.init_from.*set data.backward=true"):
        built(toy, f"model.init_from={backward_lm}")
    datamodule, module = built(toy, f"model.init_from={backward_lm}", "data.backward=true")
    _, weights = read_language_model(backward_lm, backward=True)
    assert torch.equal(module.net.rnn.weight_hh_l0, weights["rnn.weight_hh_l0"])
    codec = datamodule.codec
    assert codec.tokens("The food was w3") == ["w3", "was", "food", "the"]
    assert type(codec).from_state(codec.state_dict()).backward


def test_a_deeper_or_bidirectional_model_takes_the_layers_that_fit(toy):
    _, weights = read_language_model(toy["lm"])
    _, module = built(toy, f"model.init_from={toy['lm']}", "model.num_layers=2")
    assert torch.equal(module.net.rnn.weight_hh_l0, weights["rnn.weight_hh_l0"])
    _, module = built(toy, f"model.init_from={toy['lm']}", "model.bidirectional=true")
    assert torch.equal(module.net.rnn.weight_ih_l0, weights["rnn.weight_ih_l0"])


def test_a_model_of_other_sizes_or_cell_is_refused_in_one_line(toy, tmp_path):
    with pytest.raises(ConfigError) as error:
        built(toy, f"model.init_from={toy['lm']}", "model.hidden_size=24", "cell=gru")
    message = str(error.value)
    assert message.startswith("model.init_from: ") and "\n" not in message
    assert "model.cell is lstm there and gru here" in message
    assert "set model.cell=lstm model.hidden_size=32" in message
    char_lm = read_checkpoint(toy["lm"])
    char_lm[CODEC_KEY]["level"] = "char"
    char_lm[CODEC_KEY]["tokenization"]["scheme"] = "chars"
    torch.save(char_lm, tmp_path / "char.ckpt")
    with pytest.raises(ConfigError, match=r"^model\.init_from: .* is a char-level language model"):
        built(toy, f"model.init_from={tmp_path / 'char.ckpt'}")


def test_fine_tuning_keys_are_checked_before_anything_is_read():
    for bad, shown in [
        ("module.freeze_epochs=-1", "an integer >= 0"),
        ("module.layer_lr_decay=0", "a number in (0, 1]"),
        ("model.init_from=3", "the path of a .ckpt file or null"),
        ("module.freeze_epochs=1", "module.freeze_epochs=1 unfreezes pretrained layers"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(shown)):
            check_config(compose_config("task=sentiment", bad))


def test_sentiment_transfer_needs_a_language_model_of_the_lm_presets_sizes():
    with pytest.raises(ConfigError, match=r"^model\.init_from: module\.freeze_epochs=1 unfreezes"):
        check_config(compose_config("experiment=sentiment_transfer"))
    cfg = compose_config("experiment=sentiment_transfer", "model.init_from=lm.ckpt")
    check_config(cfg)
    lm = compose_config("experiment=lm_for_transfer")
    check_config(lm)
    assert (lm.data.level, lm.data.lowercase, cfg.data.lowercase) == ("word", True, True)
    for key in ("cell", "embedding_dim", "hidden_size", "num_layers"):
        assert cfg.model[key] == lm.model[key]


# ULMFiT's second stage: the LM on the training sentences ------------------------------------------
def lm_on_sentiment(toy: dict[str, Path], *overrides: str) -> list[str]:
    return [
        "experiment=lm_on_sentiment",
        f"data.path={toy['labelled']}",
        "data.seq_len=8",
        "data.batch_size=8",
        *SIZES,
        "model.output_layer=full",
        "model.tie_weights=false",  # the toy LM's sizes differ (16, 32)
        "logger=none",
        "callbacks.samples=null",
        "diagnosis.enabled=false",
        *overrides,
    ]


def test_the_lm_stage_reads_the_training_sentences_only(toy):
    cfg = compose_config(*lm_on_sentiment(toy, f"model.init_from={toy['lm']}"))
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    labelled = SentimentData(path=str(toy["labelled"]), seed=cfg.seed)
    labelled.setup("fit")
    parts = labelled.split()
    assert sorted(datamodule.training_sentences()) == sorted(text for text, _ in parts["train"])
    text = datamodule.read_text([])
    for held_out, _ in parts["val"] + parts["test"]:
        assert f"\n{held_out}\n" not in f"\n{text}"
    # Every word of the classifier's vocabulary is in this LM's, held-out LM text included.
    assert set(labelled.codec.vocab.itos) <= set(datamodule.codec.vocab.itos) | {PAD}


def test_the_lm_stage_starts_from_the_lm_weights_and_output_rows(toy):
    lm_tokens, weights = read_language_model(toy["lm"])
    datamodule, module = build(
        compose_config(*lm_on_sentiment(toy, f"model.init_from={toy['lm']}"))
    )
    net, vocab = module.net, datamodule.codec.vocab
    for name, tensor in net.rnn.state_dict().items():
        assert torch.equal(tensor, weights[f"rnn.{name}"]), name
    row, lm_row = vocab.stoi["food"], lm_tokens.index("food")
    assert torch.equal(net.embedding.weight[row], weights["embedding.weight"][lm_row])
    assert torch.equal(net.out.bias[row], weights["out.bias"][lm_row])
    assert torch.equal(net.out.weight[row], weights["out.weight"][lm_row])
    assert torch.allclose(
        net.embedding.weight[vocab.stoi["honestly"]], weights["embedding.weight"].mean(0)
    )
    # ... and a classifier started from this stage's checkpoint knows every one of its words.
    assert all(token in vocab.stoi for token in ("honestly", "overall", "w9"))


# Concat pooling ----------------------------------------------------------------------------------
def test_concat_pooling_reads_only_the_valid_steps():
    outputs = torch.tensor([[[1.0], [5.0], [3.0]], [[-2.0], [-1.0], [9.0]]])  # (2, 3, 1)
    last = torch.tensor([[3.0], [-1.0]])
    pooled = concat_pool(outputs, last, torch.tensor([3, 2]))
    assert pooled.tolist() == [[3.0, 5.0, 3.0], [-1.0, -1.0, -1.5]]  # 9.0 is padding
    assert concat_pool(outputs, last, None)[1].tolist() == [-1.0, 9.0, 2.0]


def test_a_concat_pooling_classifier_gives_a_padded_sentence_its_own_logits():
    torch.manual_seed(0)
    net = RNNClassifier(2, vocab_size=10, embedding_dim=4, hidden_size=6, pooling="concat").eval()
    assert net.head.in_features == 18
    alone = net(torch.tensor([[3, 4]]), torch.tensor([2]))
    batched = net(torch.tensor([[3, 4, 0, 0], [5, 6, 7, 8]]), torch.tensor([2, 4]))
    assert torch.allclose(batched[0], alone[0], atol=1e-6)
    with pytest.raises(ConfigError, match=r"^model\.pooling: must be one of last, concat"):
        RNNClassifier(2, vocab_size=10, pooling="max")


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


def test_frozen_groups_stay_frozen_across_a_mid_epoch_resume(toy, tmp_path):
    """Epoch 0 trains the head alone, also after resuming a checkpoint written inside it
    (Lightning does not call on_train_epoch_start for a resumed epoch)."""
    run = sentiment(
        toy,
        f"model.init_from={toy['lm']}",
        "module.freeze_epochs=1",
        "trainer.max_epochs=1",
        "callbacks.early_stopping=null",  # the first run stops before any validation
        "callbacks.model_checkpoint=null",
        "test=false",
    )
    train_run(tmp_path, *run, "+trainer.max_steps=3", "callbacks.last_checkpoint.every_n_steps=3")
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert read_checkpoint(last)["global_step"] == 3  # inside the first epoch
    _, objects = train_run(tmp_path, *run, f"ckpt_path={last}")
    assert objects["trainer"].global_step > 3
    _, weights = read_language_model(toy["lm"])
    net = objects["module"].net
    for name, tensor in net.rnn.state_dict().items():
        assert torch.equal(tensor, weights[f"rnn.{name}"]), name


def test_slanted_triangular_rises_to_lr_at_the_cut_then_falls_in_every_group():
    net = classifier()
    optimizer = torch.optim.Adam(
        [{"params": [net.head.weight], "lr": 0.01}, {"params": [net.embed.weight], "lr": 0.004}]
    )
    scheduler = SlantedTriangular(optimizer, total_steps=100, cut_frac=0.1, ratio=32)
    lrs = []
    for _ in range(100):
        lrs.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    head = [lr[0] for lr in lrs]
    assert head[0] == pytest.approx(0.01 / 32) and head[10] == pytest.approx(0.01)
    assert head[:11] == sorted(head[:11]) and head[10:] == sorted(head[10:], reverse=True)
    assert head[99] == pytest.approx(0.01 * (1 + 31 / 90) / 32)
    assert all(lr[1] == pytest.approx(lr[0] * 0.4) for lr in lrs)  # proportions kept


def test_slanted_triangular_steps_over_the_whole_run(toy, tmp_path):
    run = sentiment(toy, "scheduler=slanted_triangular", "trainer.max_epochs=2", "test=false")
    _, objects = train_run(tmp_path, *run)
    scheduler = objects["trainer"].lr_scheduler_configs[0]
    assert scheduler.interval == "step"
    assert scheduler.scheduler.total_steps == objects["trainer"].global_step > 0


# Transfer beats scratch --------------------------------------------------------------------------
def test_transfer_beats_training_from_scratch_on_words_only_the_lm_knows(toy, tmp_path):
    common = ["trainer.max_epochs=8", "optimizer.lr=1e-2", "seed=0"]
    transfer, _ = train_run(
        tmp_path / "transfer",
        *sentiment(toy, f"model.init_from={toy['lm']}", "module.freeze_epochs=1", *common),
    )
    scratch, _ = train_run(tmp_path / "scratch", *sentiment(toy, *common))
    assert transfer["test/acc"] >= 0.85, (transfer, scratch)
    assert transfer["test/acc"] >= scratch["test/acc"] + 0.2, (transfer, scratch)
