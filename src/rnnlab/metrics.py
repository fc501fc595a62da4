"""Small torchmetrics metrics on predicted ids; states are sums, so DDP sync is exact."""

from __future__ import annotations

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
