"""Next-token language modelling: cross-entropy at every position, perplexity, generation.

The training loss is the output layer's own (`net.output_layer.loss`: a sampled estimate with
`model.output_layer=sampled`); validation and test score the full distribution.

Batches hold `inputs` (B, T) and `targets` (B, T) = the inputs shifted by one token. Stateful
batches (truncated BPTT) also hold `reset` (B,) bool: row b's hidden state left by the previous
batch is carried into the next one, detached so gradients stop at the batch boundary, and zeroed
where `reset` is True (every row on the first batch of an epoch). Training and evaluation keep
separate states.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.models.decoding import DecodingOptions
from rnnlab.models.language_model import detach_state
from rnnlab.models.rnn import map_state
from rnnlab.tasks.base import DecodingTask


class LanguageModelTask(DecodingTask):
    """Trains an RNNLanguageModel (`net`) and generates continuations of prompts, as `decoding`
    says (by default 200 sampled tokens; the validation samples use it, `rnnlab.predict`
    changes it per call). Without a seed each continuation draws fresh randomness."""

    default_decoding = DecodingOptions(sample=True, max_new_tokens=200)

    def __init__(self, *args: Any, **kwargs: Any):
        metrics = kwargs.pop("metrics", None)
        # A preset can switch a metric off with `module.metrics.<name>: null`.
        metrics = {name: m for name, m in dict(metrics or {}).items() if m is not None}
        super().__init__(*args, metrics=metrics, **kwargs)

    # Training --------------------------------------------------------------------------------
    def model_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Training: the loss only. Evaluation: the exact loss and the logits (B, T, V)."""
        slot = "train" if self.training else "eval"
        reset = batch.get("reset")
        state = None
        if reset is not None and not bool(reset.all()) and slot in self._carried:
            keep = (~reset).to(batch["inputs"].device).view(1, -1, 1)
            state = map_state(self._carried[slot], lambda s: s * keep)
        features, state = self.net.features(batch["inputs"], state)
        if reset is not None:
            self._carried[slot] = detach_state(state)
        if self.training:
            return {"loss": self.net.output_layer.loss(features, batch["targets"])}
        logits = self.net.output_layer.logits(features)
        loss = F.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten())
        return {"loss": loss, "logits": logits}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        # Stateful training carries the hidden state from batch to batch: a mid-epoch checkpoint
        # needs it for the resumed run to continue exactly.
        if "train" in self._carried:
            checkpoint["carried_state"] = self._carried["train"]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "carried_state" in checkpoint:
            self._carried["train"] = checkpoint["carried_state"]

    def update_metrics(self, metrics: nn.ModuleDict, batch: dict[str, Tensor], step: dict) -> None:
        for metric in metrics.values():
            metric.update(step["logits"], batch["targets"])

    # Generation ------------------------------------------------------------------------------
    def _generator(self) -> torch.Generator:
        generator = torch.Generator(device=self.device)
        if self.decoding.seed is None:
            generator.seed()  # fresh randomness without touching the global RNG
        else:
            generator.manual_seed(self.decoding.seed)
        return generator

    def predict_batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Prompts tokens (B, T) + lengths (B,) -> generated tokens (B, max_new_tokens)."""
        tokens, lengths = batch["tokens"], batch["lengths"]
        return {
            "tokens": self.net.generate(tokens, lengths, self.decoding, generator=self._generator())
        }

    def stream_batch(self, batch: dict[str, Tensor]) -> Iterator[Tensor]:
        """Like predict_batch, but yields the generated tokens (B,) step by step."""
        tokens, lengths = batch["tokens"], batch["lengths"]
        yield from self.net.stream(tokens, lengths, self.decoding, generator=self._generator())
