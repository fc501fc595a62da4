"""Fine-tuning a pretrained net the ULMFiT way (Howard & Ruder, 2018), by layer groups.

An `EmbeddedRNN` (an `input_embedding` and a stacked `rnn`) has layer groups, bottom to
top: the embedding, each recurrent layer (both directions of a bidirectional one), and the rest
(the head, or a language model's vocabulary layer).

- Gradual unfreezing (`module.freeze_epochs`): the top group trains from epoch 0, the one below
  it from epoch `freeze_epochs`, the next from `2 * freeze_epochs`, ... so with 1 the head trains
  alone first, then one more group joins per epoch, the embedding last. 0 trains all from the
  start.
- Discriminative learning rates (`module.layer_lr_decay`): group lr = lr × decay^depth, depth 0
  for the top group; 1.0 gives every group the same lr.
- Slanted triangular learning rates (`scheduler=slanted_triangular`, `SlantedTriangular`): every
  group's lr rises linearly for the first `cut_frac` of the run's steps, then falls linearly,
  from and back to lr / `ratio`.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from rnnlab.errors import require
from rnnlab.models.rnn import EmbeddedRNN

_LAYER = re.compile(r"_l(\d+)(?:_reverse)?$")  # nn.RNN/GRU/LSTM names: weight_ih_l1_reverse


def layer_groups(net: nn.Module) -> list[list[nn.Parameter]]:
    """The net's parameters in layer groups, bottom (embedding) to top (head); every parameter
    in exactly one group. ConfigError for a net that is no `EmbeddedRNN`."""
    require(
        isinstance(net, EmbeddedRNN),
        "module.freeze_epochs/layer_lr_decay",
        f"need a net with an embedding and an `rnn` (classifier, language model); "
        f"{type(net).__name__} has none: leave them at 0 and 1.0",
    )
    rnn = net.rnn
    groups: list[list[nn.Parameter]] = [list(net.input_embedding.parameters())]
    groups += [[] for _ in range(rnn.num_layers)]
    for name, parameter in rnn.named_parameters():
        groups[1 + int(_LAYER.search(name).group(1))].append(parameter)
    grouped = {id(parameter) for group in groups for parameter in group}
    # Tied weights (a language model's output layer sharing the embedding) count once, low.
    groups.append([p for p in net.parameters() if id(p) not in grouped])
    return groups


def trainable_groups(epoch: int, num_groups: int, freeze_epochs: int) -> int:
    """How many groups, counted from the top, train in `epoch` (0-based)."""
    if freeze_epochs == 0:
        return num_groups
    return min(num_groups, epoch // freeze_epochs + 1)


def apply_freezing(groups: list[list[nn.Parameter]], epoch: int, freeze_epochs: int) -> None:
    """Set requires_grad for `epoch`: the top `trainable_groups(...)` groups train, the rest not.

    A pure function of the epoch, so a run resumed mid-epoch freezes exactly as it did."""
    trainable = trainable_groups(epoch, len(groups), freeze_epochs)
    for depth, group in enumerate(reversed(groups)):
        for parameter in group:
            parameter.requires_grad_(depth < trainable)


def scale_group_lrs(optimizer: torch.optim.Optimizer, decay: float) -> None:
    """lr × decay^depth for param groups given top first (depth 0 keeps the configured lr, which
    the `lr` log and schedulers created afterwards then see)."""
    for depth, group in enumerate(optimizer.param_groups):
        group["lr"] *= decay**depth


class SlantedTriangular(torch.optim.lr_scheduler.LRScheduler):
    """ULMFiT's slanted triangular learning rates, stepped once per optimizer step.

    With T = `total_steps`, cut = ⌊T · cut_frac⌋ and t the step: p = t / cut before the cut,
    1 - (t - cut) / (T - cut) after it, and lr_t = lr · (1 + p (ratio - 1)) / ratio for every
    param group (so discriminative lrs keep their proportions). `total_steps` None: the task
    sets it to the run's steps (`trainer.estimated_stepping_batches`) before training."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int | None = None,
        cut_frac: float = 0.1,
        ratio: float = 32.0,
        last_epoch: int = -1,
    ):
        require(0 < cut_frac < 1, "scheduler.cut_frac", f"must be in (0, 1), got {cut_frac}")
        require(ratio >= 1, "scheduler.ratio", f"must be a number >= 1, got {ratio}")
        self.total_steps, self.cut_frac, self.ratio = total_steps, cut_frac, ratio
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        """lr_t / lr at `step` (0-based): 1/ratio at 0, 1 at the cut, 1/ratio at the end."""
        total = max(2, self.total_steps or 2)
        cut = max(1, math.floor(total * self.cut_frac))
        p = step / cut if step < cut else max(0.0, 1 - (step - cut) / max(1, total - cut))
        return (1 + p * (self.ratio - 1)) / self.ratio

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]
