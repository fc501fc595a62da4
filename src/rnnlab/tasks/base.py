"""Training logic shared by every task: one `model_step`, per-stage metrics, the optimiser."""

from __future__ import annotations

import copy
import math
from abc import abstractmethod
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torchmetrics import Metric

from rnnlab.checkpoints import CODEC_KEY
from rnnlab.codecs.base import Codec
from rnnlab.errors import require
from rnnlab.models.decoding import DecodingOptions
from rnnlab.tasks.fine_tuning import (
    SlantedTriangular,
    apply_freezing,
    layer_groups,
    scale_group_lrs,
)

STAGES = ("val", "test")


class TaskModule(pl.LightningModule):
    """Wraps a plain nn.Module (`net`); subclasses say how a batch becomes a loss and predictions.

    `metrics` are torchmetrics instances from the task config; each evaluation stage gets its
    own copy, logged as `val/<name>` and `test/<name>`. `codec` is the task's strings <-> tensors
    (`rnnlab.codecs`): it travels with the model, into every checkpoint (`CODEC_KEY`).
    `freeze_epochs` and `layer_lr_decay` fine-tune a pretrained net by layer groups
    (`rnnlab.tasks.fine_tuning`).
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        metrics: Mapping[str, Metric] | None = None,
        codec: Codec | None = None,
        freeze_epochs: int = 0,
        layer_lr_decay: float = 1.0,
    ):
        super().__init__()
        self.net = net
        self.codec = codec
        self.freeze_epochs = freeze_epochs
        self.layer_lr_decay = layer_lr_decay
        if freeze_epochs or layer_lr_decay != 1.0:
            layer_groups(net)  # a net without layer groups fails here, before training
        self.optimizer_factory = optimizer or partial(torch.optim.Adam, lr=1e-3)
        self.scheduler_factory = scheduler
        metrics = dict(metrics or {})
        self.metrics = nn.ModuleDict(
            {stage: nn.ModuleDict(copy.deepcopy(metrics)) for stage in STAGES}
        )
        self._carried: dict[str, Any] = {}

    @property
    def carried(self) -> dict[str, Any]:
        """State the task carries from batch to batch, by slot ("train", "eval"): a stateful
        language model's hidden state; empty for most tasks. Callers may save and restore it."""
        return self._carried

    @abstractmethod
    def model_step(self, batch: dict[str, Tensor]) -> dict[str, Any]:
        """Loss (and whatever metrics need) for one batch; used by every stage. `aux_losses`,
        if present, maps names to the losses of parts trained beside the model (a chat model's
        reply LM): added to the training objective, logged as `<stage>/<name>`, never part of
        `loss` (which the monitor and the diagnosis read)."""

    @abstractmethod
    def update_metrics(self, metrics: nn.ModuleDict, batch: dict[str, Tensor], step: dict) -> None:
        """Feed one evaluation batch to the stage's metrics."""

    @abstractmethod
    def predict_batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Predictions for a batch of encoded inputs (what the codec decodes to strings)."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.codec is not None:
            checkpoint[CODEC_KEY] = self.codec.state_dict()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        step = self.model_step(batch)
        loss = step["loss"]
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        for name, aux_loss in step.get("aux_losses", {}).items():
            self.log(f"train/{name}", aux_loss, on_step=True, on_epoch=True)
            loss = loss + aux_loss
        return loss

    def on_train_batch_start(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        # Every batch, not every epoch start: Lightning skips that hook on a mid-epoch resume.
        if self.freeze_epochs:
            apply_freezing(layer_groups(self.net), self.current_epoch, self.freeze_epochs)

    def on_train_epoch_end(self) -> None:
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"])

    def _evaluate(self, stage: str, batch: dict[str, Tensor]) -> None:
        step = self.model_step(batch)
        size = len(next(iter(batch.values())))
        self.log(f"{stage}/loss", step["loss"], prog_bar=True, batch_size=size, sync_dist=True)
        for name, aux_loss in step.get("aux_losses", {}).items():
            self.log(f"{stage}/{name}", aux_loss, batch_size=size, sync_dist=True)
        metrics = self.metrics[stage]
        self.update_metrics(metrics, batch, step)
        for name, metric in metrics.items():
            self.log(f"{stage}/{name}", metric, prog_bar=stage == "val", batch_size=size)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate("val", batch)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate("test", batch)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self.predict_batch(batch)

    def configure_optimizers(self):
        if self.layer_lr_decay == 1.0:
            optimizer = self.optimizer_factory(self.parameters())
        else:  # one param group per layer group, top first
            groups = reversed(layer_groups(self.net))
            optimizer = self.optimizer_factory([{"params": group} for group in groups])
            scale_group_lrs(optimizer, self.layer_lr_decay)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        if isinstance(scheduler, SlantedTriangular):  # stepped per optimizer step
            if scheduler.total_steps is None:
                steps = self.trainer.estimated_stepping_batches
                require(
                    math.isfinite(steps),
                    "scheduler",
                    "a schedule over the run's steps needs trainer.max_epochs or max_steps",
                )
                scheduler.total_steps = int(steps)
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
            }
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"},
        }


class DecodingTask(TaskModule):
    """A task whose model generates tokens (language models, seq2seq): it decodes as
    `decoding` says (`DecodingOptions`: the config's `decoding:` node, which checkpoints keep
    as defaults), and `configure_decoding` changes that per call (rnnlab.predict)."""

    default_decoding: ClassVar[DecodingOptions] = DecodingOptions()

    def __init__(
        self,
        *args: Any,
        decoding: Mapping[str, Any] | DecodingOptions | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        if isinstance(decoding, DecodingOptions):
            decoding = decoding.to_dict()
        self.decoding = self.default_decoding
        self.configure_decoding(**dict(decoding or {}))

    def configure_decoding(self, **options: Any) -> None:
        """Change some options (any name or alias); ConfigError for a value, or a combination
        this model cannot decode with."""
        decoding = self.decoding.replace(**options)
        self.net.check_decoding(decoding)
        self.decoding = decoding
