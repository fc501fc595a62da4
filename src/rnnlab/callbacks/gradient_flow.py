"""Gradient flow over time: ‖∂loss/∂h_t‖ at every time step, the picture of vanishing gradients.

The seed books explain why a plain RNN forgets: the gradient reaching step t shrinks (or grows)
geometrically with the number of steps between t and the loss. This callback measures it on
the user's own run. Every `every_n_steps` training steps, on one batch (the training batch just
used, or with `split=val` the first validation batch, whose sequences all have full length), it
logs to TensorBoard:

- `grad_flow/norm_per_step`: an image of ‖∂loss/∂h_t‖ against t, log scale;
- `grad_flow/ratio_first_last`: ‖∂loss/∂h_first‖ / ‖∂loss/∂h_last‖ (≪ 1: vanishing);
- `train/grad_norm`, every step: the global gradient norm before clipping (exploding).

h_t is the top layer (forward direction) of the model's first recurrent layer, and the
derivative is the total one, through every later step of the recurrence: a fused nn.LSTM cannot
give it, so the batch runs through a from-scratch copy (`rnnlab.callbacks.probe`), in eval mode,
and training goes on exactly as without the callback (same weights, gradients and RNG).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import move_data_to_device
from torch import Tensor

from rnnlab.callbacks.probe import probe_step
from rnnlab.errors import require


def step_gradient_norms(module: pl.LightningModule, batch: dict[str, Tensor]) -> Tensor | None:
    """‖∂loss/∂h_t‖ for t = 0..T-1, (T,): per sequence the norm over hidden units, averaged over
    the sequences still running at t. None if the model has no recurrent layer."""
    with torch.enable_grad():
        probed = probe_step(module, batch)
        if probed is None:
            return None
        loss, trace = probed
        grads = torch.autograd.grad(loss, trace.hiddens, allow_unused=True)
    norms = torch.stack(
        [
            torch.zeros(len(h), device=h.device) if g is None else g.norm(dim=-1)
            for g, h in zip(grads, trace.hiddens)
        ],
        1,
    )  # (B, T)
    if trace.lengths is None:
        return norms.mean(0)
    steps = torch.arange(norms.size(1))
    running = (steps[None] < trace.lengths[:, None]).to(norms)
    return (norms * running).sum(0) / running.sum(0).clamp(min=1)


def first_last_ratio(norms: Tensor) -> float:
    """‖∂loss/∂h_first‖ / ‖∂loss/∂h_last‖ (inf when the last is exactly zero)."""
    first, last = float(norms[0]), float(norms[-1])
    return first / last if last > 0 else math.inf


def plot_gradient_flow(axes, norms: Sequence[float] | Tensor, label: str | None = None) -> None:
    """Draw ‖∂loss/∂h_t‖ against t = 1..T on matplotlib `axes`, log-scale y."""
    values = [float(v) for v in norms]
    axes.semilogy(range(1, len(values) + 1), values, marker=".", label=label)
    axes.set_xlabel("time step t")
    axes.set_ylabel("‖∂loss/∂h_t‖")
    axes.grid(True, which="both", alpha=0.3)


def gradient_flow_figure(norms: Sequence[float] | Tensor, title: str):
    """A matplotlib figure of one gradient-flow curve (what TensorBoard shows)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.5), dpi=80)
    axes = figure.add_subplot()
    plot_gradient_flow(axes, norms)
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    return figure


def global_grad_norm(module: torch.nn.Module) -> Tensor | None:
    """The 2-norm of all parameter gradients together (what gradient clipping compares)."""
    norms = [p.grad.detach().norm() for p in module.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else None


class GradientFlow(pl.Callback):
    """Logs the gradient flow over time every `every_n_steps` steps (on the `split` batch) and,
    with `log_grad_norm`, the global gradient norm before clipping every step."""

    def __init__(self, every_n_steps: int = 100, split: str = "train", log_grad_norm: bool = True):
        require(every_n_steps >= 1, "callbacks.gradient_flow.every_n_steps", "must be >= 1")
        require(split in ("train", "val"), "callbacks.gradient_flow.split", "must be train or val")
        self.every_n_steps = every_n_steps
        self.split = split
        self.log_grad_norm = log_grad_norm
        self._val_batch: dict[str, Tensor] | None = None
        self._last_step = -1

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, module: pl.LightningModule, optimizer
    ) -> None:
        if self.log_grad_norm:
            norm = global_grad_norm(module)
            if norm is not None:
                module.log("train/grad_norm", norm, on_step=True, on_epoch=False)

    def _batch(self, trainer: pl.Trainer, module: pl.LightningModule, batch: dict) -> dict:
        if self.split == "train":
            return batch
        if self._val_batch is None:
            self._val_batch = next(iter(trainer.datamodule.val_dataloader()))
        return move_data_to_device(self._val_batch, module.device)

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        step = trainer.global_step  # already counts the optimizer step just taken
        if (step - 1) % self.every_n_steps or step == self._last_step or not trainer.is_global_zero:
            return
        self._last_step = step
        norms = step_gradient_norms(module, self._batch(trainer, module, batch))
        if norms is None:
            return
        ratio = first_last_ratio(norms)
        for logger in trainer.loggers:
            logger.log_metrics({"grad_flow/ratio_first_last": ratio}, step=step)
            if isinstance(logger, TensorBoardLogger):
                title = (
                    f"‖∂loss/∂h_t‖ at step {step} ({self.split} batch): first/last = {ratio:.3g}"
                )
                figure = gradient_flow_figure(norms.cpu(), title)
                logger.experiment.add_figure("grad_flow/norm_per_step", figure, step)
