"""Attention heatmaps in TensorBoard: which source tokens each output token looked at.

Works for any seq2seq task whose `predict_batch` returns `attention` (B, T, S): the maps are
drawn for the datamodule's first `sample_pairs(split, num_maps)` inputs, through the same
predict path a user runs. Axis labels come from the datamodule's `attention_labels(batch,
output, row)` when it has one, else from its `vocab` (or `src_vocab`/`tgt_vocab`), else indices.
"""

from __future__ import annotations

import logging

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from rnnlab.errors import InputError

log = logging.getLogger(__name__)


def _vocab_labels(vocab, ids: list[int]) -> list[str]:
    if vocab is None:
        return [str(i) for i in ids]
    if hasattr(vocab, "pieces"):
        return vocab.pieces(ids)
    return [vocab.itos[i] if i < len(vocab.itos) else str(i) for i in ids]


def attention_labels(datamodule, batch: dict, output: dict, row: int) -> tuple[list, list]:
    """(source labels, output labels) for one row of a predicted batch."""
    if hasattr(datamodule, "attention_labels"):
        return datamodule.attention_labels(batch, output, row)
    length = int(batch["src_lengths"][row])
    src_vocab = getattr(datamodule, "src_vocab", getattr(datamodule, "vocab", None))
    tgt_vocab = getattr(datamodule, "tgt_vocab", getattr(datamodule, "vocab", None))
    ids = output["tokens"][row].tolist()
    eos = getattr(tgt_vocab, "eos_id", None)
    if eos in ids:
        ids = ids[: ids.index(eos) + 1]
    return (
        _vocab_labels(src_vocab, batch["src_tokens"][row, :length].tolist()),
        _vocab_labels(tgt_vocab, ids),
    )


def attention_figure(weights: torch.Tensor, source: list[str], target: list[str], title: str):
    """A matplotlib figure of weights (T, S): output tokens down, source tokens across."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    weights = weights[: len(target), : len(source)].float().cpu().numpy()
    figure = Figure(figsize=(1.0 + 0.45 * len(source), 1.0 + 0.4 * len(target)), dpi=80)
    axes = figure.add_subplot()
    image = axes.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    axes.set_xticks(range(len(source)), source, rotation=60, ha="right", fontsize=9)
    axes.set_yticks(range(len(target)), target, fontsize=9)
    axes.set_xlabel("source")
    axes.set_ylabel("output")
    axes.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.05)
    figure.tight_layout()
    return figure


class AttentionMaps(pl.Callback):
    """After every `every_n_epochs` validation epochs, log `num_maps` attention heatmaps of the
    `split` sample inputs to TensorBoard (tags `<split>/attention/<i>`)."""

    def __init__(self, num_maps: int = 4, every_n_epochs: int = 1, split: str = "val"):
        self.num_maps = num_maps
        self.every_n_epochs = every_n_epochs
        self.split = split

    @torch.inference_mode()
    def maps(self, module: pl.LightningModule, datamodule) -> list[tuple[str, object]]:
        """(input text, figure) for the first `num_maps` sample inputs the model can read."""
        examples = []
        # The first num_maps samples the model can read (a fixed sample sentence may be made
        # only of unknown words): ask for more than needed.
        for text, _ in datamodule.sample_pairs(self.split, 4 * self.num_maps + 16):
            try:
                examples.append((text, datamodule.encode_input(text)))
            except InputError:
                continue
            if len(examples) == self.num_maps:
                break
        if not examples:
            return []
        batch = datamodule.collate([example for _, example in examples])
        batch = {key: value.to(module.device) for key, value in batch.items()}
        output = module.predict_batch(batch)
        if output.get("attention") is None:
            return []
        figures = []
        for row, (text, _) in enumerate(examples):
            source, target = attention_labels(datamodule, batch, output, row)
            figures.append((text, attention_figure(output["attention"][row], source, target, text)))
        return figures

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers:
            return
        was_training = module.training
        module.eval()
        try:
            figures = self.maps(module, trainer.datamodule)
        finally:
            module.train(was_training)
        if not figures:
            log.info("no attention maps: the model's predictions carry no attention weights")
        for index, (_, figure) in enumerate(figures):
            for logger in loggers:
                logger.experiment.add_figure(
                    f"{self.split}/attention/{index}", figure, trainer.global_step, close=False
                )
