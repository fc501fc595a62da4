"""The decoding layer on toy step functions: greedy, beam search, sampling, constraints, MMI
re-ranking, and the one set of options (`DecodingOptions`) that picks among them.

A step function maps the previous tokens (B,) and a state to next-token logits (B, V); here the
logits come from fixed tables, so every expected output can be worked out by hand. Specials:
<pad> 0, <unk> 1, <sos> 2, <eos> 3.
"""

from __future__ import annotations

import pytest
import torch

from rnnlab.errors import ConfigError
from rnnlab.models.decoding import (
    DecodingOptions,
    beam_search,
    constrain_step,
    decode,
    filter_top_k,
    filter_top_p,
    greedy_decode,
    iter_sample,
    mask_after_eos,
    mmi_scores,
    sample_decode,
    top_k_step,
)

PAD, UNK, SOS, EOS = 0, 1, 2, 3
SPECIALS = dict(eos_id=EOS, pad_id=PAD)
SAMPLE = DecodingOptions(sample=True)


def starts(rows: int = 1) -> torch.Tensor:
    return torch.full((rows,), SOS)


class Rows:
    """A toy decoder state: which table each row reads (B * size,), `size` hypotheses per input;
    beam search reorders it."""

    def __init__(self, rows: torch.Tensor, size: int = 1):
        self.rows, self.size = rows, size

    def index_select(self, index: torch.Tensor) -> Rows:
        return Rows(self.rows.index_select(0, index), self.size)

    select_hypotheses = index_select

    def expand_hypotheses(self, size: int) -> Rows:
        return Rows(self.rows.repeat_interleave(size), size)

    def select_inputs(self, inputs: torch.Tensor) -> Rows:
        return Rows(self.rows.view(-1, self.size)[inputs].flatten(), self.size)


def table_step(tables: torch.Tensor):
    """Row b's next-token logits are tables[b, previous token]: tables (B, V, V) of log-probs."""

    def step(prev, state: Rows):
        return tables[state.rows, prev], state, None

    return step


def table_beam(tables: torch.Tensor):
    """`table_step` as beam search calls it: each row's k best tokens."""
    return top_k_step(table_step(tables))


def fixed_step(logits: torch.Tensor):
    """A decoder whose next-token logits depend only on the step number: logits (T, V)."""

    def step(prev, state):
        return logits[state].expand(len(prev), -1), state + 1, None

    return step


def trap(vocab: int = 8) -> torch.Tensor:
    """Log-probs (V, V) where greedy goes wrong: after <sos>, 4 (p=0.55) or 5 (0.45); after 4
    every token is unlikely (<eos> 0.24), after 5 <eos> is almost sure (0.99). Best: 5 <eos>."""
    table = torch.full((vocab, vocab), 1e-3)
    table[SOS, 4], table[SOS, 5] = 0.55, 0.45
    table[4, 4:] = 0.76 / (vocab - 4)
    table[4, EOS] = 0.24
    table[5, EOS] = 0.99
    table[EOS, PAD] = table[PAD, PAD] = 1.0
    return (table / table.sum(-1, keepdim=True)).log()


# Greedy ----------------------------------------------------------------------------------------
def test_greedy_decoding_picks_argmax_and_pads_after_eos():
    table = torch.tensor([[0.0, 0, 0, 5, 0], [0, 0, 0, 0, 5], [0, 0, 5, 0, 0]])  # 3 -> 4 -> eos

    def step(prev, state):
        row = {1: 0, 3: 1, 4: 2}.get(int(prev[0]), 2)
        return table[row].expand(len(prev), -1), state, None

    start = torch.full((2,), 1)
    tokens, attention = greedy_decode(
        step, None, start_tokens=start, eos_id=2, pad_id=0, max_len=10
    )
    assert tokens.tolist() == [[3, 4, 2], [3, 4, 2]] and attention is None
    assert mask_after_eos(torch.tensor([[5, 2, 5, 2]]), eos_id=2, pad_id=0).tolist() == [
        [5, 2, 0, 0]
    ]


# Beam search -----------------------------------------------------------------------------------
def test_beam_search_finds_what_greedy_misses_and_size_one_is_greedy():
    tables = trap()[None]
    state = Rows(torch.zeros(1, dtype=torch.long))
    options = dict(**SPECIALS, max_len=6, start_tokens=starts())
    greedy, _ = greedy_decode(table_step(tables), state, **options)
    assert greedy[0].tolist() == [4, EOS]  # the likelier first token: p = 0.55 * 0.24
    beam, _ = beam_search(table_beam(tables), state, beam_size=2, length_penalty=0.0, **options)
    assert beam[0].tolist() == [5, EOS]  # p = 0.45 * 0.99
    one, _ = beam_search(table_beam(tables), state, beam_size=1, **options)
    assert torch.equal(one, greedy)


def test_batched_beam_search_equals_one_sentence_at_a_time():
    torch.manual_seed(0)
    tables = torch.randn(5, 9, 9).log_softmax(-1)
    tables[:, :, EOS] += torch.linspace(-1, 2, 5)[:, None]  # rows end after different lengths
    options = dict(**SPECIALS, max_len=7, beam_size=3, length_penalty=1.0)
    together, _ = beam_search(
        table_beam(tables), Rows(torch.arange(5)), start_tokens=starts(5), **options
    )
    for row in range(5):
        alone, _ = beam_search(
            table_beam(tables[row : row + 1]), Rows(torch.zeros(1, dtype=torch.long)),
            start_tokens=starts(), **options,
        )  # fmt: skip
        width = alone.shape[1]
        assert torch.equal(together[row, :width], alone[0])
        assert not together[row, width:].any()  # only <pad> after


def test_beam_search_takes_a_models_own_top_k_and_ranks_the_same():
    torch.manual_seed(1)
    log_probs = torch.randn(4, 9, 9).log_softmax(-1)  # e.g. an adaptive layer's output
    logits = log_probs + 3 * torch.randn(4, 9, 1)  # the same distributions, unnormalised
    left_out = []

    def own_top_k(table, prune=False):
        def best(prev, state: Rows, k, needed):
            scores = table[state.rows, prev]
            if prune:  # as a factorised layer may: find the best token, skip what cannot matter
                found = scores.topk(k, dim=-1).values
                found[:, 1:] = float("-inf")
                unused = scores < needed(found)[:, None]
                left_out.append(int(unused.sum()))
                scores = scores.masked_fill(unused, float("-inf"))
            values, ids = scores.topk(k, dim=-1)
            return values, ids, state, None

        return best

    options = dict(**SPECIALS, max_len=7, beam_size=3, start_tokens=starts(4), num_best=3)
    expected, _ = beam_search(table_beam(logits), Rows(torch.arange(4)), **options)
    own, _ = beam_search(own_top_k(log_probs), Rows(torch.arange(4)), **options)
    assert torch.equal(own, expected)
    pruned, _ = beam_search(own_top_k(log_probs, prune=True), Rows(torch.arange(4)), **options)
    assert torch.equal(pruned, expected) and sum(left_out) > 0
    wrong, _ = beam_search(own_top_k(logits), Rows(torch.arange(4)), **options)
    assert not torch.equal(wrong, expected)  # the beam adds log-probabilities, not logits


# Sampling --------------------------------------------------------------------------------------
def test_top_k_never_picks_outside_the_top_k():
    torch.manual_seed(0)
    logits = torch.randn(4, 50)
    filtered = filter_top_k(logits, 3)
    top = logits.topk(3, -1).indices
    generator = torch.Generator().manual_seed(1)
    draws = torch.multinomial(filtered.softmax(-1), 500, replacement=True, generator=generator)
    for row in range(4):
        assert set(draws[row].tolist()) <= set(top[row].tolist())
        assert len(set(draws[row].tolist())) == 3
    assert torch.equal(filter_top_k(logits, 50), logits)


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = lambda p: torch.isfinite(filter_top_p(logits, p))[0].nonzero().flatten().tolist()  # noqa: E731
    assert kept(0.45) == [0]
    assert kept(0.7) == [0, 1]
    assert kept(0.9) == [0, 1, 2]
    assert kept(1.0) == [0, 1, 2, 3]
    shuffled = logits[:, [2, 0, 3, 1]]
    assert torch.isfinite(filter_top_p(shuffled, 0.7))[0].tolist() == [False, True, False, True]


def test_top_k_schedule_picks_from_the_top_k_of_each_position():
    torch.manual_seed(0)
    steps, vocab = 6, 30
    logits = torch.randn(steps, vocab)
    logits[:, EOS] = -1e9  # keep <eos> out so every row runs all steps
    start = torch.full((2000,), SOS)
    options = DecodingOptions(sample=True, top_k=[3, 2])
    tokens, _ = sample_decode(
        fixed_step(logits), 0, options, start_tokens=start, max_len=steps, eos_id=EOS
    )
    first = set(tokens[:, 0].tolist())
    assert first == set(logits[0].topk(3).indices.tolist())  # all 3 drawn, nothing else
    for t in range(1, steps):
        assert set(tokens[:, t].tolist()) == set(logits[t].topk(2).indices.tolist())


def test_sampling_is_seeded_streams_the_same_tokens_and_pads_after_eos():
    torch.manual_seed(0)
    tables = torch.randn(1, 9, 9).log_softmax(-1).expand(4, -1, -1)
    state, start = Rows(torch.zeros(4, dtype=torch.long)), torch.full((4,), SOS)

    def sample(seed, options=SAMPLE, **more):
        generator = torch.Generator().manual_seed(seed)
        more = dict(start_tokens=start, max_len=30, generator=generator, **more)
        return sample_decode(table_step(tables), state, options, **more)[0]

    assert torch.equal(sample(5), sample(5)) and not torch.equal(sample(5), sample(6))
    generator = torch.Generator().manual_seed(5)
    streamed = iter_sample(
        table_step(tables), state, SAMPLE, start_tokens=start, max_len=30, generator=generator
    )
    assert torch.equal(torch.stack(list(streamed), 1), sample(5))
    assert torch.equal(sample(1, SAMPLE.replace(greedy=True)), sample(2, SAMPLE.replace(top_k=1)))
    ended = sample(5, eos_id=EOS)
    for row, tokens in zip(sample(5), ended):
        first = int((tokens == EOS).nonzero()[0]) if EOS in tokens else len(tokens)
        assert torch.equal(tokens[: first + 1], row[: first + 1])
        assert not tokens[first + 1 :].any()  # <pad> after <eos>


# Constraints -----------------------------------------------------------------------------------
def test_constrained_decoding_never_outputs_unk_repeats_or_an_early_eos():
    logits = torch.zeros(8, 10)
    logits[:, UNK] = 5.0  # <unk> is the favourite
    logits[:, 7] = 4.0  # then the same word again and again
    logits[:, 8] = 3.0
    step = constrain_step(fixed_step(logits), banned_ids=[UNK], no_repeat=True)
    tokens, _ = greedy_decode(step, 0, start_tokens=starts(), **SPECIALS, max_len=6)
    assert tokens[0].tolist() == [7, 8, 7, 8, 7, 8]
    logits[:, EOS] = 9.0  # <eos> first, unless at least 2 tokens must come before it
    common = dict(start_tokens=starts(), **SPECIALS, max_len=6, unk_id=UNK)
    short, _ = decode(fixed_step(logits), 0, DecodingOptions(), **common)
    constrained = DecodingOptions(suppress_unk=True, min_new_tokens=2)
    longer, _ = decode(fixed_step(logits), 0, constrained, **common)
    assert short[0].tolist() == [EOS] and longer[0].tolist() == [7, 7, EOS]
    # A model's own top-k step scores the unconstrained distribution: beams under constraints
    # step the constrained logits instead.
    tables = logits[0].log_softmax(-1).expand(1, 10, 10)
    own = top_k_step(table_step(tables))
    beam = DecodingOptions(beam_size=2, suppress_unk=True, min_new_tokens=2)
    state = Rows(torch.zeros(1, dtype=torch.long))
    tokens, _ = decode(table_step(tables), state, beam, best=own, **common)
    assert UNK not in tokens[0].tolist() and EOS not in tokens[0, :2].tolist()
    unconstrained, _ = decode(
        table_step(tables),
        state,
        beam.replace(suppress_unk=False, min_new_tokens=0),
        best=own,
        **common,
    )
    assert unconstrained[0].tolist() == [EOS]


# MMI re-ranking --------------------------------------------------------------------------------
def table_scorer(forward: torch.Tensor, prior: torch.Tensor):
    """A `CandidateScorer` reading log-probs off tables: forward (B, V, V) per input, as
    `table_step` reads them, and prior (V, V), the same for every input (an LM)."""

    def score(rows, tokens):
        prev = torch.cat([torch.full((len(tokens), 1), SOS), tokens[:, :-1]], 1)
        pad = tokens == PAD
        on_path = forward[rows[:, None], prev, tokens].masked_fill(pad, 0.0)
        return on_path, prior[prev, tokens].masked_fill(pad, 0.0)

    return score


def generic_or_specific() -> tuple[torch.Tensor, torch.Tensor]:
    """After <sos> the model says 4 (p=0.6, the generic reply) or 5 (0.4), then <eos>; the LM
    finds 4 nine times likelier than 5 (0.9 vs 0.1) whatever the input."""
    table = torch.full((8, 8), 1e-4)
    table[SOS, 4], table[SOS, 5] = 0.6, 0.4
    table[4, EOS] = table[5, EOS] = table[EOS, PAD] = table[PAD, PAD] = 1.0
    prior = table.clone()
    prior[SOS, 4], prior[SOS, 5] = 0.9, 0.1
    normalise = lambda t: (t / t.sum(-1, keepdim=True)).log()  # noqa: E731
    return normalise(table), normalise(prior)


def test_mmi_picks_the_reply_the_language_model_finds_less_generic():
    forward, prior = generic_or_specific()
    state, common = Rows(torch.zeros(1, dtype=torch.long)), dict(start_tokens=starts(), max_len=5)
    score = table_scorer(forward[None], prior)
    beam = DecodingOptions(beam_size=2)
    plain, _ = decode(table_step(forward[None]), state, beam, **SPECIALS, **common)
    assert plain[0].tolist() == [4, EOS]  # log 0.6 > log 0.4
    for mmi_lambda, expected in ((0.0, [4, EOS]), (0.1, [4, EOS]), (1.0, [5, EOS])):
        # lambda 1: log 0.4 - log 0.1 = 1.39 beats log 0.6 - log 0.9 = -0.41; the choice flips
        # at lambda = log(0.6 / 0.4) / log(0.9 / 0.1) = 0.18
        options = beam.replace(rerank="mmi", num_candidates=2, mmi_lambda=mmi_lambda)
        tokens, attention = decode(
            table_step(forward[None]), state, options, score=score, **SPECIALS, **common
        )
        assert tokens[0].tolist() == expected and attention is None, mmi_lambda
    # Sampled candidates too: 8 draws all but surely hold both replies.
    draws = DecodingOptions(sample=True, seed=0, rerank="mmi", num_candidates=8, mmi_lambda=1.0)
    tokens, _ = decode(
        table_step(forward[None]), state, draws, score=score, generator=draws.generator(),
        **SPECIALS, **common,
    )  # fmt: skip
    assert tokens[0].tolist() == [5, EOS]


def test_mmi_with_lambda_zero_keeps_the_n_best_order_of_the_beam():
    torch.manual_seed(0)
    tables = torch.randn(4, 9, 9).mul(2)
    tables[:, :, EOS] += torch.linspace(-1, 1, 4)[:, None]
    tables[:, :, [PAD, SOS]] = float("-inf")  # never output: <pad> is what follows the end
    tables = tables.log_softmax(-1)
    state, common = Rows(torch.arange(4)), dict(start_tokens=starts(4), max_len=6, **SPECIALS)
    n_best, _ = beam_search(table_beam(tables), state, beam_size=5, num_best=5, **common)
    assert n_best.shape[0] == 4 * 5
    # The N best come best first by the beam's own ranking, which is MMI's with lambda = 0 ...
    rows = torch.arange(4).repeat_interleave(5)
    score = table_scorer(tables, prior=torch.randn(9, 9).log_softmax(-1))
    forward, prior = score(rows, n_best)
    options = DecodingOptions(beam_size=5, rerank="mmi", num_candidates=5, mmi_lambda=0.0)
    ranked = mmi_scores(forward, prior, (n_best != PAD).sum(1), options).view(4, 5)
    assert (ranked[:, :-1] >= ranked[:, 1:] - 1e-6).all(), ranked
    # ... so re-ranking with lambda = 0 keeps the first of each N-best list.
    reranked, _ = decode(table_step(tables), state, options, score=score, **common)
    firsts = n_best[::5]
    assert torch.equal(reranked, firsts[:, : reranked.shape[1]])
    assert not firsts[:, reranked.shape[1] :].any()  # only <pad> was cut


def test_mmi_first_tokens_limits_the_penalty_to_the_opening():
    forward = torch.tensor([[-1.0, -1.0, -1.0, 0.0]])  # three tokens, then padding
    prior = torch.tensor([[-2.0, -3.0, -4.0, 0.0]])
    lengths = torch.tensor([3])
    every = DecodingOptions(mmi_lambda=0.5, length_penalty=0.0)
    assert mmi_scores(forward, prior, lengths, every).item() == pytest.approx(-3 + 4.5)
    first = every.replace(mmi_first_tokens=1)
    assert mmi_scores(forward, prior, lengths, first).item() == pytest.approx(-3 + 1.0)
    per_token = every.replace(length_penalty=1.0)
    assert mmi_scores(forward, prior, lengths, per_token).item() == pytest.approx(1.5 / 3)


# Options ---------------------------------------------------------------------------------------
def test_decode_picks_greedy_beam_or_sampling_from_the_options():
    tables, state = trap()[None], Rows(torch.zeros(1, dtype=torch.long))
    common = dict(start_tokens=starts(), **SPECIALS, max_len=6)
    greedy, _ = decode(table_step(tables), state, DecodingOptions(), **common)
    beam, _ = decode(
        table_step(tables), state, DecodingOptions(beam_size=2, length_penalty=0), **common
    )
    assert greedy[0].tolist() == [4, EOS] and beam[0].tolist() == [5, EOS]
    seeded = DecodingOptions(sample=True, seed=3)
    draws = [
        decode(table_step(tables), state, seeded, generator=seeded.generator(), **common)[0]
        for _ in range(2)
    ]
    assert torch.equal(*draws)


def test_options_are_validated_once_with_one_error_type_and_keep_their_old_names():
    options = DecodingOptions().replace(length=50, greedy=False, min_length=1, top_k=[3, 2])
    assert (options.max_new_tokens, options.sample, options.min_new_tokens) == (50, True, 1)
    assert options.top_k == (3, 2) and options.to_dict()["top_k"] == [3, 2]
    assert options.replace(max_length=7).max_new_tokens == 7
    assert options.greedy() == options.replace(sample=False, beam_size=1)
    assert options.replace(rerank="mmi").greedy().rerank == "none"  # validation stays greedy
    for wrong, key in (
        ({"beam_size": 0}, "decoding.beam_size"),
        ({"sample": True, "beam_size": 3}, "decoding.beam_size"),
        ({"temperature": 0}, "decoding.temperature"),
        ({"top_k": [3, 0]}, "decoding.top_k"),
        ({"top_p": 1.5}, "decoding.top_p"),
        ({"max_new_tokens": 0}, "decoding.max_new_tokens"),
        ({"sample": "yes"}, "decoding.sample"),
        ({"rerank": "bidi"}, "decoding.rerank"),
        ({"num_candidates": 0}, "decoding.num_candidates"),
        ({"mmi_lambda": -1}, "decoding.mmi_lambda"),
        ({"mmi_first_tokens": 0}, "decoding.mmi_first_tokens"),
        ({"rerank": "mmi", "beam_size": 5}, "decoding.beam_size: .*set beam_size >= 10"),
        ({"beam": 2}, "decoding: unknown option"),
    ):
        with pytest.raises(ConfigError, match=key):
            DecodingOptions().replace(**wrong)
