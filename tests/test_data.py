"""Generated data: correct answers, deterministic by seed, held-out splits disjoint from training."""

from __future__ import annotations

import pytest
import torch

from rnnlab.data.arithmetic import ArithmeticData
from rnnlab.data.parity import ParityData
from rnnlab.errors import ConfigError, DataError, InputError


def _decode(data: ArithmeticData, tokens: torch.Tensor) -> list[str]:
    return ["".join(data.codec.vocab.decode(row)) for row in tokens.tolist()]


@pytest.mark.parametrize("operators", ["+", "-", "*", "+-*"])
def test_arithmetic_tokens_spell_true_equations(operators):
    data = ArithmeticData(
        digits=3,
        operators=operators,
        reverse_input=False,
        train_size=3000,
        val_size=300,
        test_size=300,
        seed=3,
    )
    data.setup()
    tensors = data.train_set.tensors
    questions = _decode(data, tensors["src_tokens"])
    answers = _decode(data, tensors["tgt_tokens"])
    assert len(questions) == 3000
    for question, answer in zip(questions, answers):
        assert eval(question) == int(answer), (question, answer)  # noqa: S307 - digits and +-* only
    lengths = tensors["src_lengths"].tolist()
    assert [len(q) for q in questions] == lengths
    assert set(questions[0]) <= set("0123456789" + operators)


def test_arithmetic_reverse_input_reverses_only_the_question():
    kwargs = dict(digits=3, train_size=500, val_size=50, test_size=50, seed=1)
    plain, reversed_ = (
        ArithmeticData(reverse_input=False, **kwargs),
        ArithmeticData(reverse_input=True, **kwargs),
    )
    plain.setup()
    reversed_.setup()
    q_plain = _decode(plain, plain.train_set.tensors["src_tokens"])
    q_rev = _decode(reversed_, reversed_.train_set.tensors["src_tokens"])
    assert [q[::-1] for q in q_plain] == q_rev
    assert torch.equal(
        plain.train_set.tensors["tgt_tokens"], reversed_.train_set.tensors["tgt_tokens"]
    )


def test_arithmetic_splits_disjoint_including_mirrored_questions():
    data = ArithmeticData(digits=2, train_size=4000, val_size=500, test_size=500, seed=0)
    data.setup()

    def keys(split):
        a, b, _ = data.questions[split]
        return {(min(x, y), max(x, y)) for x, y in zip(a.tolist(), b.tolist())}

    train, val, test = keys("train"), keys("val"), keys("test")
    assert len(train) == 4000 and len(val) == 500 and len(test) == 500  # no duplicates either
    assert not (train & test) and not (train & val) and not (val & test)


@pytest.mark.parametrize("digits,train_size", [(2, 4000), (3, 5000)])  # enumerated and sampled
def test_arithmetic_commutative_questions_come_in_both_orientations(digits, train_size):
    data = ArithmeticData(digits=digits, train_size=train_size, val_size=100, test_size=100, seed=0)
    data.setup()
    a, b, _ = data.questions["train"]
    share = float((a > b).float().mean())
    assert 0.4 < share < 0.6, share


def test_arithmetic_is_deterministic_by_seed():
    def questions(seed):
        data = ArithmeticData(train_size=1000, val_size=100, test_size=100, seed=seed)
        data.setup()
        return data.train_set.tensors["src_tokens"]

    assert torch.equal(questions(5), questions(5))
    assert not torch.equal(questions(5), questions(6))


def test_arithmetic_too_many_questions_is_a_config_error():
    with pytest.raises(ConfigError, match="distinct questions"):
        ArithmeticData(digits=1, train_size=100, val_size=10, test_size=10).setup()


@pytest.mark.parametrize(
    "text,message",
    [
        ("53x+61", "'x' at position 3"),
        ("", "empty"),
        ("12*3", "operator '\\*' was not trained"),
        ("1234+5", "at most 3 digits"),
        ("+5", "form"),
    ],
)
def test_arithmetic_bad_prediction_inputs_explain_themselves(text, message):
    with pytest.raises(InputError, match=message):
        ArithmeticData(train_size=10, val_size=10, test_size=10).codec.encode_example(text)


@pytest.mark.parametrize("variable_length", [True, False])
def test_parity_labels_and_full_length_held_out_sets(variable_length):
    data = ParityData(
        length=20,
        train_size=5000,
        val_size=500,
        test_size=500,
        variable_length=variable_length,
        seed=0,
    )
    data.setup()
    train = data.train_set.tensors
    bits = (train["inputs"] - 1).clamp(min=0)
    assert torch.equal(train["targets"], bits.sum(1) % 2)
    assert torch.equal(train["inputs"] > 0, torch.arange(20) < train["lengths"][:, None])
    assert bool((data.val_set.tensors["lengths"] == 20).all())
    if variable_length:
        assert train["lengths"].min() == 1 and train["lengths"].max() == 20


def test_parity_held_out_strings_never_in_training():
    data = ParityData(length=12, train_size=20000, val_size=500, test_size=500, seed=0)
    data.setup()

    def strings(dataset, full_only):
        t = dataset.tensors
        rows = t["inputs"][t["lengths"] == 12] if full_only else t["inputs"]
        return {tuple(r) for r in rows.tolist()}

    train = strings(data.train_set, True)
    val, test = strings(data.val_set, False), strings(data.test_set, False)
    assert len(val) == 500 and len(test) == 500
    assert not (train & val) and not (train & test) and not (val & test)


def test_parity_count_target_and_tiny_space_error():
    data = ParityData(length=10, target="count", train_size=100, val_size=50, test_size=50)
    data.setup()
    assert data.model_kwargs()["num_classes"] == 11
    assert data.sample_pairs("val", 1)[0][1].endswith("ones)")
    with pytest.raises(ConfigError, match="data.length"):
        ParityData(length=4, val_size=10, test_size=10)


def test_batches_are_trimmed_to_their_longest_sequence():
    data = ParityData(length=30, train_size=1000, val_size=10, test_size=10, batch_size=8, seed=2)
    data.setup()
    batch = next(iter(data.train_dataloader()))
    assert batch["inputs"].shape == (8, int(batch["lengths"].max()))


def test_training_order_depends_only_on_seed_and_epoch():
    data = ParityData(length=10, train_size=200, val_size=20, test_size=20, batch_size=50, seed=1)
    data.setup()

    def first_batch(epoch):
        loader = data.train_dataloader()
        loader.batch_sampler.sampler.set_epoch(epoch)
        return next(iter(loader))["inputs"]

    torch.manual_seed(123)
    a = first_batch(3)
    torch.manual_seed(999)  # global RNG must not matter (resume exactness)
    assert torch.equal(a, first_batch(3))
    assert not torch.equal(first_batch(3), first_batch(4))


# Splits --------------------------------------------------------------------------------------
def test_split_by_group_keeps_groups_whole_with_one_fraction_meaning():
    from rnnlab.data.splits import split_by_group

    keys = [i // 3 for i in range(300)]  # 100 groups of 3 equal examples
    splits = split_by_group(keys, val=0.1, test=0.2, seed=5)
    by_key = {}
    for key, split in zip(keys, splits):
        by_key.setdefault(key, set()).add(split)
    assert all(len(where) == 1 for where in by_key.values())  # no group in two splits
    groups = [next(iter(where)) for where in by_key.values()]
    assert (groups.count("test"), groups.count("val"), groups.count("train")) == (20, 10, 70)
    assert split_by_group(keys, 0.1, 0.2, seed=5) == splits  # seeded
    assert split_by_group(keys, 0.1, 0.2, seed=6) != splits
    assert split_by_group(range(10), 0.01, 0.0, seed=0).count("val") == 1  # at least one
    assert "test" not in split_by_group(range(10), 0.01, 0.0, seed=0)
    with pytest.raises(DataError, match="only 2 distinct examples"):
        split_by_group([0, 0, 1], 0.3, 0.3, seed=0)  # nothing left to train on
