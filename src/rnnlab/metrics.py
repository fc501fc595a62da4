"""The metrics of every task, as torchmetrics metrics whose states are sums (DDP sync is exact).

- on predicted ids: `Accuracy`, `TokenAccuracy`, `ExactMatch`;
- on logits: `TokenNLL`, `Perplexity`, `BitsPerToken`;
- on detokenised strings: `BLEU`, `ChrF` (the `sacrebleu` package's own computations, 0-100).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric


class _Ratio(Metric):
    full_state_update = False
    higher_is_better = True

    def __init__(self) -> None:
        super().__init__()
        self.add_state("correct", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def compute(self) -> Tensor:
        return self.correct / self.total.clamp(min=1)


class Accuracy(_Ratio):
    """Share of predicted class ids equal to the targets; with `modulo`, compared mod that
    number (parity accuracy of a model that predicts the count of ones)."""

    def __init__(self, modulo: int | None = None) -> None:
        super().__init__()
        self.modulo = modulo

    def update(self, preds: Tensor, targets: Tensor) -> None:
        """preds (B,), targets (B,) class ids."""
        if self.modulo is not None:
            preds, targets = preds % self.modulo, targets % self.modulo
        self.correct += (preds == targets).sum()
        self.total += targets.numel()


def align_to(tokens: Tensor, length: int, pad_id: int) -> Tensor:
    """Cut or right-pad (B, T) tokens to (B, length) so predictions line up with targets."""
    if tokens.size(1) >= length:
        return tokens[:, :length]
    return F.pad(tokens, (0, length - tokens.size(1)), value=pad_id)


class TokenAccuracy(_Ratio):
    """Per-token accuracy over the target's non-pad positions (<eos> included)."""

    def __init__(self, pad_id: int = 0) -> None:
        super().__init__()
        self.pad_id = pad_id

    def update(self, preds: Tensor, targets: Tensor) -> None:
        """preds (B, Tp), targets (B, T) token ids, both without <sos>."""
        preds = align_to(preds, targets.size(1), self.pad_id)
        valid = targets != self.pad_id
        self.correct += ((preds == targets) & valid).sum()
        self.total += valid.sum()


class ExactMatch(_Ratio):
    """Share of sequences predicted entirely right, up to and including <eos>."""

    def __init__(self, pad_id: int = 0) -> None:
        super().__init__()
        self.pad_id = pad_id

    def update(self, preds: Tensor, targets: Tensor) -> None:
        preds = align_to(preds, targets.size(1), self.pad_id)
        wrong = (preds != targets) & (targets != self.pad_id)
        self.correct += (~wrong.any(1)).sum()
        self.total += targets.size(0)


class TokenNLL(Metric):
    """Exact mean negative log-likelihood (nats per token) over the target positions, those
    equal to `ignore_index` (padding) left out; states are sums, so DDP sync is exact.
    `update(logits (B, T, V), targets (B, T))`, the signature of torchmetrics.text.Perplexity."""

    full_state_update = False
    higher_is_better = False

    def __init__(self, ignore_index: int | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.add_state("nll", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: Tensor, targets: Tensor) -> None:
        ignore = -100 if self.ignore_index is None else self.ignore_index
        nll = F.cross_entropy(
            logits.flatten(0, -2).float(), targets.flatten(), ignore_index=ignore, reduction="sum"
        )
        self.nll += nll.double()
        self.count += (targets != ignore).sum()

    def compute(self) -> Tensor:
        return (self.nll / self.count.clamp(min=1)).float()


class Perplexity(TokenNLL):
    """exp(mean NLL): the effective number of equally likely next tokens."""

    def compute(self) -> Tensor:
        return super().compute().exp()


class BitsPerToken(TokenNLL):
    """Mean NLL in bits (bits per character at char level)."""

    def compute(self) -> Tensor:
        return super().compute() / math.log(2)


class TextMetric(Metric):
    """A corpus metric of the `sacrebleu` package on detokenised strings, 0-100.

    `update(hypotheses, references)` takes one or more references per hypothesis (a different
    number each is fine). The state is sacreBLEU's sufficient statistics (n-gram matches and
    totals, lengths) summed over batches and processes, so the result is exactly sacreBLEU's
    corpus score over everything seen (DDP included), not an average of batch scores.
    (`_extract_corpus_statistics`/`_compute_score_from_stats` are how sacreBLEU 2.x computes a
    corpus score itself; pyproject pins sacrebleu<3 for them.)
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, metric) -> None:
        super().__init__()
        self.metric = metric
        size = len(metric._extract_corpus_statistics(["a"], [["a"]])[0])
        self.add_state(
            "stats", default=torch.zeros(size, dtype=torch.float64), dist_reduce_fx="sum"
        )

    def update(self, hypotheses: list[str], references: list[list[str]]) -> None:
        most = max(map(len, references), default=0)
        streams = [[refs[i] if i < len(refs) else None for refs in references] for i in range(most)]
        stats = self.metric._extract_corpus_statistics(list(hypotheses), streams)
        if stats:
            summed = torch.tensor(stats, dtype=torch.float64, device=self.stats.device).sum(0)
            self.stats += summed

    def compute(self) -> Tensor:
        stats = [int(x) if float(x).is_integer() else x for x in self.stats.tolist()]
        return torch.tensor(self.metric._compute_score_from_stats(stats).score)


class BLEU(TextMetric):
    """sacreBLEU's corpus BLEU with its defaults: 13a tokenisation, 4-grams, exp smoothing."""

    def __init__(self, **sacrebleu_options) -> None:
        from sacrebleu.metrics import BLEU as SacreBLEU

        super().__init__(SacreBLEU(**sacrebleu_options))


class ChrF(TextMetric):
    """sacreBLEU's chrF with its defaults: character 6-grams, beta 2 (word_order=2 is chrF++)."""

    def __init__(self, **sacrebleu_options) -> None:
        from sacrebleu.metrics import CHRF

        super().__init__(CHRF(**sacrebleu_options))


class DistinctN(Metric):
    """distinct-n (Li et al., 2016): distinct n-grams / all n-grams over the generated outputs,
    so a bot that always answers "i love you" scores near 0. States are the n-grams themselves
    (one int64 code each), gathered across processes, so the DDP result is exact."""

    full_state_update = False
    higher_is_better = True
    BITS = 21  # per token id: n-grams up to 3 tokens fit in one int64

    def __init__(self, n: int = 1, eos_id: int = 3, pad_id: int = 0) -> None:
        super().__init__()
        if not 1 <= n <= 3:
            raise ValueError(f"n must be 1, 2 or 3, got {n}")
        self.n, self.eos_id, self.pad_id = n, eos_id, pad_id
        self.add_state("grams", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, targets: Tensor | None = None) -> None:
        """preds (B, T) generated ids without <sos>; each row ends at its first <eos> or <pad>."""
        stop = (preds == self.eos_id) | (preds == self.pad_id)
        valid = stop.long().cumsum(1) == 0
        if preds.size(1) < self.n:
            return
        windows = preds.unfold(1, self.n, 1)  # (B, T - n + 1, n)
        keep = valid.unfold(1, self.n, 1).all(-1)
        codes = torch.zeros_like(windows[..., 0])
        for i in range(self.n):
            codes = (codes << self.BITS) | windows[..., i]
        self.grams.append(codes[keep])

    def compute(self) -> Tensor:
        grams = (
            self.grams
            if isinstance(self.grams, Tensor)
            else torch.cat(self.grams or [torch.zeros(0, dtype=torch.long)])
        )
        if grams.numel() == 0:
            return torch.tensor(0.0)
        return torch.tensor(grams.unique().numel() / grams.numel())
