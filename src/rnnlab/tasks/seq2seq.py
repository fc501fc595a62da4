"""Sequence-to-sequence training: teacher-forced loss, metrics on generated outputs.

The training loss is the output layer's own (`net.output_layer.loss`: a sampled estimate with
`model.output_layer=sampled`); validation and test score the full distribution. A net with a
reply language model (`net.reply_lm`, for MMI re-ranking) trains it on the same targets, its
loss an extra term (`aux_losses`, logged as `<stage>/reply_lm_loss`).

Metrics come in three kinds, told apart by class:
- id metrics (`rnnlab.metrics.TokenAccuracy`, `ExactMatch`) get generated ids and target ids;
- `Perplexity` (any `TokenNLL`) gets the teacher-forced logits (no label smoothing);
- text metrics (`BLEU`, `ChrF`, subclasses of `TextMetric`) get detokenised strings, which the
  codec makes: `decode(batch, output)` and `reference_texts(batch)`. Both are the `sacrebleu`
  package's own computations, on its 0-100 scale.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.codecs.base import Seq2SeqCodec
from rnnlab.errors import ConfigError, require
from rnnlab.metrics import TextMetric, TokenNLL
from rnnlab.tasks.base import DecodingTask


class Seq2SeqTask(DecodingTask):
    """Batches hold `src_tokens`, `src_lengths`, `tgt_tokens` (<sos> ... <eos> <pad>...).

    Validation and test metrics score what the model *generates*, not the teacher-forced
    next-token guesses, so exact match means what a user will see. Validation decodes greedily
    (fast, comparable across epochs, the constraints kept); predictions and the test stage
    decode as `decoding` says (greedy, beam search or sampling). A sampling test stage without
    a seed draws from torch's global generator, which the run seeds.
    """

    codec: Seq2SeqCodec | None

    def __init__(self, *args: Any, label_smoothing: float = 0.0, **kwargs: Any):
        """`TaskModule`'s and `DecodingTask`'s arguments, and `label_smoothing` for the loss."""
        super().__init__(*args, **kwargs)
        layer = self.net.output_layer
        require(
            not label_smoothing or layer.supports_label_smoothing,
            "module.label_smoothing",
            f"the {type(layer).__name__} output layer has none: set "
            "module.label_smoothing=0 or use model.output_layer=full|sampled",
        )
        self.label_smoothing = label_smoothing

    def model_step(self, batch: dict[str, Tensor]) -> dict[str, Any]:
        """Training: the loss (and the reply LM's). Evaluation: the exact loss, the logits
        (B, T, V) (and the reply LM's loss)."""
        tgt = batch["tgt_tokens"]
        features, _ = self.net.features(batch["src_tokens"], batch["src_lengths"], tgt[:, :-1])
        targets = tgt[:, 1:]
        options = {"ignore_index": self.net.pad_id, "label_smoothing": self.label_smoothing}
        step: dict[str, Any] = {}
        if self.net.reply_lm is not None:
            step["aux_losses"] = {"reply_lm_loss": self.net.reply_lm_loss(tgt)}
        if self.training:
            return {"loss": self.net.output_layer.loss(features, targets, **options), **step}
        logits = self.net.output_layer.logits(features)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), **options)
        return {"loss": loss, "logits": logits, **step}

    def _generate(self, batch: dict[str, Tensor], search: bool = True) -> dict[str, Tensor]:
        """Decode as `decoding` says; `search=False` keeps the constraints but decodes greedily
        (validation)."""
        options = self.decoding if search else self.decoding.greedy()
        src_tokens = batch["src_tokens"]
        generator = options.generator(src_tokens.device) if options.sample else None
        return self.net.generate(src_tokens, batch["src_lengths"], options, generator=generator)

    def update_metrics(self, metrics: nn.ModuleDict, batch: dict[str, Tensor], step: dict) -> None:
        testing = self._trainer is not None and self._trainer.testing
        output = self._generate(batch, search=testing)
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
        """(hypotheses, references) as strings, through the codec."""
        if self.codec is None:
            raise ConfigError(
                "module.metrics: text metrics (BLEU, chrF) decode ids through the task's codec "
                "and this module has none: build it with rnnlab.builder"
            )
        return self.codec.decode(batch, output), self.codec.reference_texts(batch)

    def predict_batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Generated `tokens` (B, T) and, with attention, `attention` (B, T, S)."""
        return self._generate(batch)
