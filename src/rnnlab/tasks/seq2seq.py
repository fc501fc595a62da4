"""Sequence-to-sequence training: teacher-forced loss, metrics on generated outputs.

Metrics come in three kinds, told apart by class:
- id metrics (`rnnlab.metrics.TokenAccuracy`, `ExactMatch`) get generated ids and target ids;
- `Perplexity` (any `TokenNLL`) gets the teacher-forced logits (no label smoothing);
- text metrics (`BLEU`, `ChrF`, subclasses of `TextMetric`) get detokenised strings, which the
  datamodule makes: `metric_texts(batch, output) -> (hypotheses, references)`. Both are the
  `sacrebleu` package's own computations, on its 0-100 scale.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.errors import ConfigError, require
from rnnlab.metrics import TextMetric, TokenNLL
from rnnlab.tasks.base import TaskModule


class Seq2SeqTask(TaskModule):
    """Batches hold `src_tokens`, `src_lengths`, `tgt_tokens` (<sos> ... <eos> <pad>...).

    Validation and test metrics score what the model *generates*, not the teacher-forced
    next-token guesses, so exact match means what a user will see. Validation decodes greedily
    (fast, comparable across epochs); predictions and the test stage use `beam_size` (1 =
    greedy) and `length_penalty` (see `rnnlab.models.decoding.beam_search`).
    """

    def __init__(
        self,
        *args,
        label_smoothing: float = 0.0,
        beam_size: int = 1,
        length_penalty: float = 1.0,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.label_smoothing = label_smoothing
        self.configure_decoding(beam_size=beam_size, length_penalty=length_penalty)

    def configure_decoding(self, beam_size: int = 1, length_penalty: float = 1.0) -> None:
        """How `predict_batch` and the test stage decode (rnnlab.predict sets it per call)."""
        require(
            isinstance(beam_size, int) and beam_size >= 1,
            "beam_size",
            f"must be a positive integer, got {beam_size!r}",
        )
        require(
            beam_size == 1 or getattr(self.net, "autoregressive", True),
            "beam_size",
            "beam search needs model.decoder=autoregressive",
        )
        self.beam_size = beam_size
        self.length_penalty = float(length_penalty)

    def model_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        tgt = batch["tgt_tokens"]
        logits, _ = self.net(batch["src_tokens"], batch["src_lengths"], tgt[:, :-1])
        loss = F.cross_entropy(
            logits.flatten(0, 1),
            tgt[:, 1:].flatten(),
            ignore_index=self.net.pad_id,
            label_smoothing=self.label_smoothing,
        )
        return {"loss": loss, "logits": logits}

    def _generate(self, batch: dict[str, Tensor], beam_size: int) -> dict[str, Tensor]:
        return self.net.generate(
            batch["src_tokens"],
            batch["src_lengths"],
            beam_size=beam_size,
            length_penalty=self.length_penalty,
        )

    def update_metrics(self, metrics: nn.ModuleDict, batch: dict[str, Tensor], step: dict) -> None:
        testing = self._trainer is not None and self._trainer.testing
        output = self._generate(batch, self.beam_size if testing else 1)
        targets = batch["tgt_tokens"][:, 1:]
        texts = None
        for metric in metrics.values():
            if isinstance(metric, TextMetric):
                if texts is None:
                    texts = self._metric_texts(batch, output)
                metric.update(*texts)
            elif isinstance(metric, TokenNLL):
                metric.update(step["logits"], targets)
            else:
                metric.update(output["tokens"], targets)

    def _metric_texts(
        self, batch: dict[str, Tensor], output: dict[str, Tensor]
    ) -> tuple[list[str], list[list[str]]]:
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        hook = getattr(datamodule, "metric_texts", None)
        if datamodule is None:
            raise ConfigError(
                "module.metrics: text metrics (BLEU, chrF) decode ids through the trainer's "
                "datamodule and none is attached: pass datamodule= to fit/validate/test"
            )
        if hook is None:
            raise ConfigError(
                "module.metrics: text metrics (BLEU, chrF) need a datamodule with "
                f"metric_texts(batch, output); {type(datamodule).__name__} has none: remove them"
            )
        return hook(batch, output)

    def predict_batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Generated `tokens` (and `attention`), plus the batch's source keys, which a datamodule
        may need to decode (e.g. the source words for unknown-word replacement)."""
        source = {key: value for key, value in batch.items() if key.startswith("src_")}
        return {**source, **self._generate(batch, self.beam_size)}
