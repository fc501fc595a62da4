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

from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.errors import InputError
from rnnlab.models.language_model import detach_state
from rnnlab.models.rnn import map_state
from rnnlab.tasks.base import TaskModule

GENERATION_DEFAULTS: dict[str, Any] = {
    "length": 200,  # tokens to generate
    "temperature": 1.0,
    "top_k": None,
    "top_p": None,
    "greedy": False,
    "seed": None,  # None: fresh randomness every call
}


def check_generation(options: Mapping[str, Any]) -> dict[str, Any]:
    """Generation options, validated (InputError says which and why)."""
    unknown = set(options) - set(GENERATION_DEFAULTS)
    if unknown:
        raise InputError(
            f"unknown generation option(s) {sorted(unknown)}; known: {sorted(GENERATION_DEFAULTS)}"
        )
    merged = {**GENERATION_DEFAULTS, **options}
    try:
        length = int(merged["length"])
        temperature = float(merged["temperature"])
        top_k = None if merged["top_k"] is None else int(merged["top_k"])
        top_p = None if merged["top_p"] is None else float(merged["top_p"])
        seed = None if merged["seed"] is None else int(merged["seed"])
    except (TypeError, ValueError) as error:
        raise InputError(f"generation options must be numbers: {error}") from None
    if length <= 0:
        raise InputError(f"length must be a positive number of tokens, got {length}")
    if not temperature > 0:
        raise InputError(f"temperature must be > 0 (or greedy=true), got {temperature}")
    if top_k is not None and top_k < 1:
        raise InputError(f"top_k must be a positive integer, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise InputError(f"top_p must be in (0, 1], got {top_p}")
    greedy = merged["greedy"]
    if isinstance(greedy, str):
        greedy = greedy.lower() in ("1", "true", "yes")
    return {
        "length": length,
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "greedy": bool(greedy),
        "seed": seed,
    }


class LanguageModelTask(TaskModule):
    """Trains an RNNLanguageModel (`net`) and generates continuations of prompts.

    `generation`: defaults for `predict_batch` (length, temperature, top_k, top_p, greedy,
    seed); the validation samples use them, `rnnlab.predict` overrides them per call.
    """

    def __init__(self, *args, generation: Mapping[str, Any] | None = None, **kwargs):
        metrics = kwargs.pop("metrics", None)
        # A preset can switch a metric off with `module.metrics.<name>: null`.
        metrics = {name: m for name, m in dict(metrics or {}).items() if m is not None}
        super().__init__(*args, metrics=metrics, **kwargs)
        self.generation = check_generation(dict(generation or {}))

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
    def configure_generation(self, **options: Any) -> None:
        """Change generation options (InputError if one is invalid, e.g. length <= 0)."""
        self.generation = check_generation({**self.generation, **options})

    def _sampling(self) -> tuple[int, dict[str, Any]]:
        options = dict(self.generation)
        seed = options.pop("seed")
        generator = torch.Generator(device=self.device)
        if seed is None:
            generator.seed()  # fresh randomness without touching the global RNG
        else:
            generator.manual_seed(seed)
        return options.pop("length"), {**options, "generator": generator}

    def predict_batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Prompts tokens (B, T) + lengths (B,) -> generated tokens (B, length)."""
        length, sampling = self._sampling()
        tokens = self.net.generate(batch["tokens"], batch["lengths"], length=length, **sampling)
        return {"tokens": tokens}

    def stream_batch(self, batch: dict[str, Tensor]) -> Iterator[Tensor]:
        """Like predict_batch, but yields the generated tokens (B,) step by step."""
        length, sampling = self._sampling()
        yield from self.net.stream(batch["tokens"], batch["lengths"], length=length, **sampling)
