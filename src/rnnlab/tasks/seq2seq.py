"""Sequence-to-sequence training: teacher-forced loss, metrics on greedy outputs."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.tasks.base import TaskModule


class Seq2SeqTask(TaskModule):
    """Batches hold `src_tokens`, `src_lengths`, `tgt_tokens` (<sos> ... <eos> <pad>...).

    Validation and test metrics score what the model *generates* (greedy decoding), not the
    teacher-forced next-token guesses, so exact match means what a user will see.
    """

    def __init__(self, *args, label_smoothing: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.label_smoothing = label_smoothing

    def model_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        tgt = batch["tgt_tokens"]
        logits, _ = self.net(batch["src_tokens"], batch["src_lengths"], tgt[:, :-1])
        loss = F.cross_entropy(
            logits.flatten(0, 1),
            tgt[:, 1:].flatten(),
            ignore_index=self.net.pad_id,
            label_smoothing=self.label_smoothing,
        )
        return {"loss": loss}

    def update_metrics(self, metrics: nn.ModuleDict, batch: dict[str, Tensor], step: dict) -> None:
        generated = self.net.generate(batch["src_tokens"], batch["src_lengths"])["tokens"]
        for metric in metrics.values():
            metric.update(generated, batch["tgt_tokens"][:, 1:])

    def predict_batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.net.generate(batch["src_tokens"], batch["src_lengths"])
