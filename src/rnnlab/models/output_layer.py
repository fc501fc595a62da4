"""The vocabulary (output) layer of the word-level models: features -> scores over V words.

On a CPU this layer is most of the arithmetic of a word-level model, so it comes in three kinds
(`model.output_layer`), each with the same two calls:
- `loss(hidden, targets)`: the mean training loss;
- `logits(hidden)`: scores over the whole vocabulary for evaluation and decoding (greedy,
  sampling), log-probabilities up to a constant per row;
- `top_k_log_probs(hidden, k)`: each row's k most likely words and their exact log-probabilities
  (beam search), which the adaptive layer finds without scoring the whole vocabulary.

`full`: a linear layer and the exact softmax cross-entropy.
`sampled`: the same linear layer (same parameters, same checkpoint keys); in training only, a
sampled softmax (Jean et al., 2015; TensorFlow's `sampled_softmax_loss`) over the true word and
the distinct words among `num_sampled` draws of a log-uniform (Zipfian) sampler, drawn once per
batch. Evaluation and decoding use the full softmax, so every reported metric is exact.
`adaptive`: `torch.nn.AdaptiveLogSoftmaxWithLoss` (Grave et al., 2017): a head over the frequent
words plus one entry per cluster of rarer words, each cluster behind a narrower projection; the
same factorised distribution in training and decoding.

`sampled` and `adaptive` assume ids sorted by frequency, most frequent first (`Vocab.build`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.errors import require
from rnnlab.models.decoding import Needed

OUTPUT_LAYERS = ("full", "sampled", "adaptive")
ADAPTIVE_DIV = 4  # cluster i projects the features to in_features / 4**i (torch's default)
MIN_HEAD = 512  # words in the adaptive head at least (default cutoffs)


def _flatten(hidden: Tensor, targets: Tensor, ignore_index: int | None) -> tuple[Tensor, Tensor]:
    """hidden (..., F), targets (...) -> (N, F), (N,) without the ignored positions."""
    hidden, targets = hidden.reshape(-1, hidden.size(-1)), targets.reshape(-1)
    if ignore_index is None:
        return hidden, targets
    keep = targets != ignore_index
    return hidden[keep], targets[keep]


class FullSoftmax(nn.Linear):
    """Linear (F -> V) and the exact softmax cross-entropy."""

    supports_label_smoothing = True

    def logits(self, hidden: Tensor) -> Tensor:
        """hidden (..., F) -> logits (..., V)."""
        return self(hidden)

    def top_k_log_probs(
        self, hidden: Tensor, k: int, needed: Needed | None = None
    ) -> tuple[Tensor, Tensor]:
        """hidden (N, F) -> the k most likely words' log-probabilities (N, k) and ids (N, k),
        best first (`needed` is for layers that can skip words; this one scores them all)."""
        logits = self(hidden).float()
        values, ids = logits.topk(min(k, self.out_features), dim=-1)
        return values - logits.logsumexp(-1, keepdim=True), ids

    def loss(
        self,
        hidden: Tensor,
        targets: Tensor,
        *,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
    ) -> Tensor:
        """hidden (..., F), targets (...) -> mean cross-entropy over the targets that are not
        `ignore_index`, with `label_smoothing` spread uniformly over the vocabulary."""
        return F.cross_entropy(
            self(hidden).flatten(0, -2),
            targets.flatten(),
            ignore_index=-100 if ignore_index is None else ignore_index,
            label_smoothing=label_smoothing,
        )


class SampledSoftmax(FullSoftmax):
    """`FullSoftmax` whose training loss is a sampled softmax over shared candidates.

    Per batch, `num_sampled` ids are drawn with replacement from the log-uniform distribution
    P(k) = log((k + 2) / (k + 1)) / log(V + 1) (Zipf's law over frequency ranks), and the distinct
    ones are the candidates of every row. Id k is a candidate with probability
    pi_k = 1 - (1 - P(k)) ** num_sampled, so exp(s_k) / pi_k summed over the candidates is an
    unbiased estimate of the partition function's sum over the words that were not the target
    (log-Q correction: s_k - log pi_k). The target is always the first column, at probability 1:
    a candidate equal to a row's target (an accidental hit) is masked there. With
    num_sampled >= V every id is a candidate and the loss is the full cross-entropy.
    """

    def __init__(self, in_features: int, vocab_size: int, num_sampled: int):
        super().__init__(in_features, vocab_size)
        self.num_sampled = num_sampled

    def sample(self) -> tuple[Tensor, Tensor]:
        """Candidate ids (C,) and the log of each one's chance to be a candidate, log pi (C,)."""
        vocab_size, device = self.out_features, self.weight.device
        if self.num_sampled >= vocab_size:
            return torch.arange(vocab_size, device=device), self.weight.new_zeros(vocab_size)
        log_range = math.log(vocab_size + 1)
        # Inverse CDF: floor(exp(u log(V + 1))) - 1 takes the value k with probability P(k).
        u = torch.rand(self.num_sampled, dtype=torch.float64, device=device)
        draws = (u * log_range).exp().floor().long() - 1
        ids = draws.clamp_(max=vocab_size - 1).unique()  # the clamp only guards float rounding
        log_p = torch.log1p(1.0 / (ids + 1).double()) / log_range
        log_pi = torch.log(-torch.expm1(self.num_sampled * torch.log1p(-log_p)))
        return ids, log_pi.to(self.weight.dtype)

    def loss(
        self,
        hidden: Tensor,
        targets: Tensor,
        *,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
    ) -> Tensor:
        """In training the sampled estimate of `FullSoftmax.loss`, otherwise that loss itself."""
        if not self.training:
            return super().loss(
                hidden, targets, ignore_index=ignore_index, label_smoothing=label_smoothing
            )
        hidden, targets = _flatten(hidden, targets, ignore_index)
        ids, log_pi = self.sample()
        true_logits = (hidden * self.weight[targets]).sum(-1) + self.bias[targets]  # (N,)
        sampled = F.linear(hidden, self.weight[ids], self.bias[ids] - log_pi)  # (N, C)
        sampled = sampled.masked_fill(ids == targets[:, None], float("-inf"))
        log_z = torch.cat([true_logits[:, None], sampled], 1).logsumexp(-1)
        if not label_smoothing:
            return (log_z - true_logits).mean()
        # The smoothed target's uniform part needs the mean log p over all V words, i.e. the
        # mean logit, which the mean weight row gives exactly at O(F) per row.
        mean_logits = hidden @ self.weight.mean(0) + self.bias.mean()
        eps = label_smoothing
        return (log_z - (1 - eps) * true_logits - eps * mean_logits).mean()


class AdaptiveSoftmax(nn.AdaptiveLogSoftmaxWithLoss):
    """`torch.nn.AdaptiveLogSoftmaxWithLoss` behind the output-layer calls. Label smoothing
    would need every cluster's full distribution for every row, the cost this layer avoids."""

    supports_label_smoothing = False

    def logits(self, hidden: Tensor) -> Tensor:
        """hidden (..., F) -> log-probabilities (..., V)."""
        log_probs = self.log_prob(hidden.reshape(-1, self.in_features))
        return log_probs.view(*hidden.shape[:-1], self.n_classes)

    def top_k_log_probs(
        self, hidden: Tensor, k: int, needed: Needed | None = None
    ) -> tuple[Tensor, Tensor]:
        """hidden (N, F) -> the k most likely words' log-probabilities (N, k) and ids (N, k),
        best first, the same as the top k of `logits` (up to ties) without building the
        (N, V) table.

        A word of cluster c has log p <= log p(cluster c), the head's entry. So the top k of
        the head's words bound each row, and cluster c's projection and softmax run only for
        the rows where log p(cluster c) beats that row's k-th best so far and the caller's
        `needed` bound (from the head's k best, (N, k) -> (N,): a beam's sentence-level
        floor): the few rows whose next word may be rare. Words below `needed` may be missing.
        """
        k = min(k, self.n_classes)
        head = self.head(hidden).float().log_softmax(-1)  # (N, shortlist + clusters)
        values, ids = head[:, : self.shortlist_size].topk(min(k, self.shortlist_size), dim=-1)
        if values.size(1) < k:  # a head smaller than k: pad with impossible words
            missing = k - values.size(1)
            values = torch.cat([values, values.new_full((len(values), missing), -math.inf)], 1)
            ids = torch.cat([ids, ids.new_zeros(len(ids), missing)], 1)
        floor = needed(values) if needed is not None else None
        for cluster, tail in enumerate(self.tail):
            start, stop = self.cutoffs[cluster], self.cutoffs[cluster + 1]
            cluster_log_p = head[:, self.shortlist_size + cluster]
            useful = cluster_log_p > values[:, -1]
            if floor is not None:
                useful &= cluster_log_p >= floor
            rows = useful.nonzero().squeeze(1)
            if not len(rows):
                continue
            words = tail(hidden[rows]).float().log_softmax(-1)  # (r, stop - start)
            best, best_ids = words.topk(min(k, stop - start), dim=-1)
            merged = torch.cat([values[rows], best + cluster_log_p[rows, None]], 1)
            merged_ids = torch.cat([ids[rows], best_ids + start], 1)
            values[rows], order = merged.topk(k, dim=-1)
            ids[rows] = merged_ids.gather(1, order)
        return values, ids

    def loss(
        self,
        hidden: Tensor,
        targets: Tensor,
        *,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
    ) -> Tensor:
        """hidden (..., F), targets (...) -> mean negative log-likelihood of the targets that
        are not `ignore_index` (computing only the clusters those targets fall in).
        `label_smoothing` must be 0 (tasks check `supports_label_smoothing` up front)."""
        if label_smoothing:
            raise ValueError("the adaptive softmax has no label smoothing")
        hidden, targets = _flatten(hidden, targets, ignore_index)
        loss = self(hidden, targets).loss
        if dist.is_available() and dist.is_initialized():
            # DDP reduces every parameter's gradient each step: a cluster no target of this
            # rank's batch fell in must still get one (zero), or the ranks wait on each other.
            loss = loss + 0.0 * sum(p.sum() for p in self.tail.parameters())
        return loss


OutputLayer = FullSoftmax | AdaptiveSoftmax


def default_cutoffs(vocab_size: int, in_features: int = ADAPTIVE_DIV**2) -> list[int]:
    """Cluster boundaries from the vocabulary size: a head over the most frequent eighth of the
    ids (most running tokens, by Zipf's law) but at least `MIN_HEAD` words, then clusters up to
    V/2 and from there to V. A small vocabulary has no words rare enough for the narrow
    projections: it gets (almost) everything in the head; so do features too narrow to project
    twice (fewer than ADAPTIVE_DIV**2)."""
    head = min(max(vocab_size // 8, MIN_HEAD), vocab_size - 1)
    two_clusters = vocab_size // 2 > head and in_features >= ADAPTIVE_DIV**2
    return [head, vocab_size // 2] if two_clusters else [head]


def make_output_layer(
    kind: str,
    in_features: int,
    vocab_size: int,
    *,
    num_sampled: int = 512,
    adaptive_cutoffs: Sequence[int] | None = None,
) -> OutputLayer:
    """The `kind` output layer from `in_features` to `vocab_size` words; the one place the
    `model.output_layer`, `model.num_sampled` and `model.adaptive_cutoffs` keys are checked."""
    require(
        kind in OUTPUT_LAYERS,
        "model.output_layer",
        f"must be one of {OUTPUT_LAYERS}, got {kind!r}",
    )
    if kind == "full":
        return FullSoftmax(in_features, vocab_size)
    if kind == "sampled":
        require(
            isinstance(num_sampled, int) and num_sampled > 0,
            "model.num_sampled",
            f"must be a positive integer, got {num_sampled!r}",
        )
        return SampledSoftmax(in_features, vocab_size, min(num_sampled, vocab_size))
    cutoffs = (
        default_cutoffs(vocab_size, in_features)
        if adaptive_cutoffs is None
        else list(adaptive_cutoffs)
    )
    require(
        bool(cutoffs)
        and all(isinstance(c, int) for c in cutoffs)
        and cutoffs == sorted(set(cutoffs))
        and cutoffs[0] > 0
        and cutoffs[-1] < vocab_size,
        "model.adaptive_cutoffs",
        f"must be increasing ids in 1..{vocab_size - 1} (the vocabulary has {vocab_size} "
        f"words), or null to derive them; got {cutoffs}",
    )
    require(
        in_features >= ADAPTIVE_DIV ** len(cutoffs),
        "model.adaptive_cutoffs",
        f"{len(cutoffs)} clusters need at least {ADAPTIVE_DIV ** len(cutoffs)} input features "
        f"(cluster i projects to in_features / {ADAPTIVE_DIV}**i), got {in_features}: "
        "give fewer cutoffs",
    )
    return AdaptiveSoftmax(
        in_features, vocab_size, cutoffs, div_value=float(ADAPTIVE_DIV), head_bias=True
    )


def target_log_probs(layer: OutputLayer, hidden: Tensor, targets: Tensor, pad_id: int) -> Tensor:
    """log p(target) at every position: hidden (R, T, F), targets (R, T) -> (R, T), 0 where the
    target is `pad_id`. One time step at a time, so only (R, V) scores exist at once (R may be
    every candidate of a batch: the whole (R, T, V) would not fit)."""
    columns = []
    for t in range(targets.size(1)):
        log_probs = layer.logits(hidden[:, t]).float().log_softmax(-1)
        columns.append(log_probs.gather(1, targets[:, t, None]).squeeze(1))
    return torch.stack(columns, 1).masked_fill(targets == pad_id, 0.0)
