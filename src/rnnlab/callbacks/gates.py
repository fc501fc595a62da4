"""Gate activations over time for GRU and LSTM models: where the gates open, close, saturate.

Each `every_n_epochs` validation epochs, on the first validation batch, the model's first
recurrent layer (top layer, forward direction) runs through a recording copy
(`rnnlab.callbacks.probe`) and each gate's activation, averaged over the batch, is drawn as a
heatmap of hidden unit against time step (update/reset for a GRU; input/forget/output for an
LSTM). Units stuck near 0 or 1 are saturated gates; a forget gate near 1 is a long memory. Logs
the image `gates/activations` and the scalars `gates/<gate>_mean` and `gates/<gate>_saturated`
(the fraction of activations below 0.05 or above 0.95).
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from rnnlab.callbacks.probe import probe_step
from rnnlab.models.scratch import LayerTrace

SATURATION = 0.05  # an activation within this of 0 or 1 counts as saturated


def gate_summary(trace: LayerTrace) -> dict[str, tuple[Tensor, float, float]]:
    """gate -> (mean activation (H, T) over the sequences running at each step, overall mean,
    saturated fraction)."""
    summary = {}
    for name, gate in trace.gates.items():  # (B, T, H)
        if trace.lengths is None:
            running = torch.ones(gate.shape[:2], dtype=torch.bool, device=gate.device)
        else:
            steps = torch.arange(gate.size(1))
            running = (steps[None] < trace.lengths[:, None]).to(gate.device)
        weights = running.unsqueeze(-1).to(gate)
        per_step = (gate * weights).sum(0) / weights.sum(0).clamp(min=1)  # (T, H)
        values = gate[running]  # (running steps, H)
        saturated = ((values < SATURATION) | (values > 1 - SATURATION)).float().mean()
        summary[name] = (per_step.T.cpu(), float(values.mean()), float(saturated))
    return summary


def gates_figure(summary: dict[str, tuple[Tensor, float, float]], title: str):
    """One heatmap per gate, hidden unit down, time step across, 0 (closed) to 1 (open)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 0.8 + 2.0 * len(summary)), dpi=80, layout="constrained")
    axes_list = figure.subplots(len(summary), 1, squeeze=False, sharex=True)[:, 0]
    image = None
    for axes, (name, (means, mean, saturated)) in zip(axes_list, summary.items()):
        units, steps = means.shape
        image = axes.imshow(
            means.float().numpy(),
            cmap="viridis",
            vmin=0,
            vmax=1,
            aspect="auto",
            interpolation="nearest",
            extent=(0.5, steps + 0.5, units - 0.5, -0.5),  # time steps numbered from 1
        )
        axes.set_title(f"{name} gate: mean {mean:.2f}, saturated {saturated:.0%}", fontsize=9)
        axes.set_ylabel("unit")
    axes_list[-1].set_xlabel("time step t")
    figure.suptitle(title, fontsize=9)
    figure.colorbar(image, ax=list(axes_list), fraction=0.03)
    return figure


class GateActivations(pl.Callback):
    """Logs gate heatmaps and saturation every `every_n_epochs` validation epochs."""

    def __init__(self, every_n_epochs: int = 1):
        self.every_n_epochs = every_n_epochs

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        module: pl.LightningModule,
        outputs,
        batch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx or dataloader_idx or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        probed = probe_step(module, batch)
        if probed is None or not probed[1].gates:  # no recurrent layer, or a plain RNN
            return
        summary = gate_summary(probed[1])
        step = trainer.global_step
        scalars = {}
        for name, (_, mean, saturated) in summary.items():
            scalars[f"gates/{name}_mean"] = mean
            scalars[f"gates/{name}_saturated"] = saturated
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)
            if isinstance(logger, TensorBoardLogger):
                title = f"gate activations, epoch {trainer.current_epoch} (validation batch)"
                logger.experiment.add_figure(
                    "gates/activations", gates_figure(summary, title), step
                )
