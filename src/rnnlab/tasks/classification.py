"""Many-to-one classification (parity, and later MNIST rows and sentiment)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.tasks.base import TaskModule


class ClassificationTask(TaskModule):
    """Batches hold `inputs`, optional `lengths`, and `targets` class ids; metrics get argmax ids."""

    def model_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logits = self.net(batch["inputs"], batch.get("lengths"))
        return {"loss": F.cross_entropy(logits, batch["targets"]), "logits": logits}

    def update_metrics(self, metrics: nn.ModuleDict, batch: dict[str, Tensor], step: dict) -> None:
        preds = step["logits"].argmax(-1)
        for metric in metrics.values():
            metric.update(preds, batch["targets"])

    def predict_batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.net.predict(batch["inputs"], batch.get("lengths"))
