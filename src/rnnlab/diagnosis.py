"""Bias/variance diagnosis of a finished run, in the seed book's chapter-6 terms.

Training error is the task's own validation metric measured on (part of) the training data, so
both errors are the same quantity; the target error (what a perfect model would reach, 0 for the
generated tasks) is configurable.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.data import DataLoader

from rnnlab.tasks.base import TaskModule


@torch.no_grad()
def metric_on(module: TaskModule, loader: DataLoader, name: str, max_batches: int = 20) -> float:
    """The value of the module's `name` metric (or the mean loss for `loss`) on `loader`."""
    was_training = module.training
    module.eval()
    metric = (
        None if name == "loss" else copy.deepcopy(module.metrics["val"][name]).to(module.device)
    )
    if metric is not None:
        metric.reset()
    losses = []
    for index, batch in enumerate(loader):
        if index >= max_batches:
            break
        batch = {key: value.to(module.device) for key, value in batch.items()}
        step = module.model_step(batch)
        losses.append(float(step["loss"]))
        if metric is not None:
            module.update_metrics(nn.ModuleDict({name: metric}), batch, step)
    module.train(was_training)
    return float(metric.compute()) if metric is not None else sum(losses) / max(len(losses), 1)


def diagnose(
    metric: str,
    mode: str,
    train_value: float,
    val_value: float,
    target_error: float = 0.0,
    tolerance: float = 0.02,
    perfect: float | None = None,
) -> tuple[str, dict[str, float]]:
    """One paragraph: high bias (under-fitting), high variance (over-fitting), both, or neither,
    with the figures used and the book's remedy. Returns (text, figures).

    Error is the distance from the metric's `perfect` value: by default 1 for a metric to
    maximise (accuracy) and 0 for one to minimise (a loss); BLEU's is 100, perplexity's 1."""
    if perfect is None:
        perfect = 1.0 if mode == "max" else 0.0
    to_error = (lambda v: perfect - v) if mode == "max" else (lambda v: v - perfect)
    train_error, val_error = to_error(train_value), to_error(val_value)
    bias, variance = train_error - target_error, val_error - train_error
    high_bias, high_variance = bias > tolerance, variance > tolerance
    figures = {
        "train_error": train_error,
        "val_error": val_error,
        "bias": bias,
        "variance": variance,
    }
    head = (
        f"Diagnosis ({metric}): training error {train_error:.4f}, validation error "
        f"{val_error:.4f}, target {target_error:.4f}; bias {bias:+.4f}, variance {variance:+.4f} "
        f"(tolerance {tolerance}). "
    )
    if high_bias and high_variance:
        verdict = (
            "High bias and high variance: first fit the training data better (a bigger model: "
            "size=large or model.hidden_size/num_layers, longer training, another cell), then "
            "regularise (model.dropout, optimizer.weight_decay) or add data."
        )
    elif high_bias:
        verdict = (
            "High bias (under-fitting): a bigger model (size=large, model.hidden_size, "
            "model.num_layers), training longer (trainer.max_epochs) or a better learning rate "
            "(tune.lr_find=true)."
        )
    elif high_variance:
        verdict = (
            "High variance (over-fitting): more training data, regularisation (model.dropout, "
            "optimizer.weight_decay), a smaller model or earlier stopping."
        )
    else:
        verdict = "Neither high bias nor high variance: the model fits and generalises."
    return head + verdict, figures
