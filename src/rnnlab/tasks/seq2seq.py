"""Sequence-to-sequence training: teacher-forced loss, metrics on generated outputs.

The training loss is the output layer's own (`net.output_layer.loss`: a sampled estimate with
`model.output_layer=sampled`); validation and test score the full distribution.

Metrics come in three kinds, told apart by class:
- id metrics (`rnnlab.metrics.TokenAccuracy`, `ExactMatch`) get generated ids and target ids;
- `Perplexity` (any `TokenNLL`) gets the teacher-forced logits (no label smoothing);
- text metrics (`BLEU`, `ChrF`, subclasses of `TextMetric`) get detokenised strings, which the
  codec makes: `decode(batch, output)` and `reference_texts(batch)`. Both are the `sacrebleu`
  package's own computations, on its 0-100 scale.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

from rnnlab.codecs.base import Seq2SeqCodec
from rnnlab.errors import ConfigError, require
from rnnlab.metrics import TextMetric, TokenNLL
from rnnlab.tasks.base import TaskModule

DECODING_DEFAULTS: dict[str, Any] = {
    "beam_size": 1,  # 1 = greedy
    "length_penalty": 1.0,  # beam ranking: log p / length ** length_penalty
    "sample": False,  # draw each token instead (temperature, top_k, top_p, seed)
    "temperature": 1.0,
    "top_k": None,  # one k, or a schedule [k_first, k_next, ...] (the book's chatbot: [3, 2])
    "top_p": None,
    "seed": None,  # sampling: None = fresh randomness every call
    "suppress_unk": False,  # never output <unk>
    "no_repeat": False,  # never repeat the token just output
    "min_length": 0,  # output at least this many tokens before <eos> (1: never empty)
    "max_length": None,  # output tokens (None: the longest training target + 2)
}


def check_decoding(options: Mapping[str, Any]) -> dict[str, Any]:
    """Decoding options merged over the defaults and validated (ConfigError names the key)."""
    unknown = set(options) - set(DECODING_DEFAULTS)
    require(
        not unknown,
        "decoding",
        f"unknown option(s) {sorted(unknown)}; known: {sorted(DECODING_DEFAULTS)}",
    )
    merged = {**DECODING_DEFAULTS, **options}
    top_k = merged["top_k"]
    try:
        if top_k is not None and not isinstance(top_k, int):
            top_k = [int(k) for k in top_k]
        for key in ("temperature", "length_penalty"):
            merged[key] = float(merged[key])
        for key in ("min_length", "max_length", "seed", "top_p"):
            if merged[key] is not None:
                merged[key] = (float if key == "top_p" else int)(merged[key])
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"decoding: options must be numbers (top_k: one or a list): {error}"
        ) from None
    merged["top_k"] = top_k
    beam = merged["beam_size"]
    require(
        isinstance(beam, int) and beam >= 1,
        "beam_size",
        f"must be a positive integer, got {beam!r}",
    )
    require(
        not (merged["sample"] and beam > 1),
        "beam_size",
        "sample=true draws one reply: use beam_size=1",
    )
    require(
        float(merged["temperature"]) > 0, "temperature", f"must be > 0, got {merged['temperature']}"
    )
    ks = [] if top_k is None else [top_k] if isinstance(top_k, int) else top_k
    require(
        all(k >= 1 for k in ks) and (top_k is None or ks),
        "top_k",
        f"must be positive integers, got {top_k}",
    )
    top_p = merged["top_p"]
    require(top_p is None or 0 < float(top_p) <= 1, "top_p", f"must be in (0, 1], got {top_p}")
    require(
        int(merged["min_length"]) >= 0, "min_length", f"must be >= 0, got {merged['min_length']}"
    )
    length = merged["max_length"]
    require(
        length is None or int(length) >= 1,
        "max_length",
        f"must be a positive integer, got {length}",
    )
    return merged


class Seq2SeqTask(TaskModule):
    """Batches hold `src_tokens`, `src_lengths`, `tgt_tokens` (<sos> ... <eos> <pad>...).

    Validation and test metrics score what the model *generates*, not the teacher-forced
    next-token guesses, so exact match means what a user will see. Validation decodes greedily
    (fast, comparable across epochs); predictions and the test stage use the decoding options
    (`DECODING_DEFAULTS`: greedy, beam search or sampling, with optional constraints). A
    sampling test stage without a seed draws from torch's global generator, which the run seeds.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        metrics: Mapping[str, Metric] | None = None,
        codec: Seq2SeqCodec | None = None,
        *,
        label_smoothing: float = 0.0,
        **decoding: Any,
    ):
        super().__init__(net, optimizer, scheduler, metrics, codec)
        require(
            not label_smoothing or net.output_layer.supports_label_smoothing,
            "module.label_smoothing",
            f"the {type(net.output_layer).__name__} output layer has none: set "
            "module.label_smoothing=0 or use model.output_layer=full|sampled",
        )
        self.label_smoothing = label_smoothing
        self.decoding: dict[str, Any] = {}
        self.configure_decoding(**decoding)

    def configure_decoding(self, **options: Any) -> None:
        """Change how `predict_batch` and the test stage decode (rnnlab.predict sets it per call);
        options not given keep their current values."""
        decoding = check_decoding({**self.decoding, **options})
        searching = decoding["beam_size"] > 1 or decoding["sample"]
        constrained = decoding["suppress_unk"] or decoding["no_repeat"] or decoding["min_length"]
        require(
            not (searching or constrained) or self.net.autoregressive,
            "beam_size" if decoding["beam_size"] > 1 else "sample",
            "beam search, sampling and constraints need model.decoder=autoregressive",
        )
        require(
            not decoding["suppress_unk"] or self.net.unk_id is not None,
            "suppress_unk",
            "the model has no <unk> token",
        )
        self.decoding = decoding

    def model_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Training: the loss only. Evaluation: the exact loss and the logits (B, T, V)."""
        tgt = batch["tgt_tokens"]
        features, _ = self.net.features(batch["src_tokens"], batch["src_lengths"], tgt[:, :-1])
        targets = tgt[:, 1:]
        options = {"ignore_index": self.net.pad_id, "label_smoothing": self.label_smoothing}
        if self.training:
            return {"loss": self.net.output_layer.loss(features, targets, **options)}
        logits = self.net.output_layer.logits(features)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), **options)
        return {"loss": loss, "logits": logits}

    def _generate(self, batch: dict[str, Tensor], search: bool = True) -> dict[str, Tensor]:
        """Decode with the configured options; `search=False` keeps the constraints but decodes
        greedily (validation)."""
        options = self.decoding
        sampling = None
        if search and options["sample"]:
            generator = None
            if options["seed"] is not None:
                generator = torch.Generator(batch["src_tokens"].device).manual_seed(options["seed"])
            sampling = {
                "temperature": float(options["temperature"]),
                "top_k": options["top_k"],
                "top_p": options["top_p"],
                "generator": generator,
            }
        unk = self.net.unk_id
        return self.net.generate(
            batch["src_tokens"],
            batch["src_lengths"],
            options["max_length"],
            beam_size=options["beam_size"] if search else 1,
            length_penalty=float(options["length_penalty"]),
            sampling=sampling,
            banned_ids=[unk] if options["suppress_unk"] else [],
            no_repeat=options["no_repeat"],
            min_length=int(options["min_length"]),
        )

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
