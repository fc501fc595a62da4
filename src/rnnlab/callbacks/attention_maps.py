"""Attention heatmaps in TensorBoard: which source tokens each output token looked at.

Works for any seq2seq task whose `predict_batch` returns `attention` (B, T, S): the maps are
drawn for the datamodule's first `sample_pairs(split, num_maps)` inputs, encoded by the task's
codec as a user's input would be; axis labels are the codec's `token_labels(batch, output, row)`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from rnnlab.codecs.base import Seq2SeqCodec
from rnnlab.data.base import TaskDataModule
from rnnlab.errors import InputError
from rnnlab.tasks.base import TaskModule

log = logging.getLogger(__name__)


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
    def maps(
        self, module: TaskModule, codec: Seq2SeqCodec, texts: Sequence[str]
    ) -> list[tuple[str, object]]:
        """(input text, figure) for the first `num_maps` of `texts` the model can read."""
        examples = []
        for text in texts:
            try:
                examples.append((text, codec.encode_example(text)))
            except InputError:
                continue
            if len(examples) == self.num_maps:
                break
        if not examples:
            return []
        batch = codec.collate([example for _, example in examples])
        batch = {key: value.to(module.device) for key, value in batch.items()}
        output = module.predict_batch(batch)
        if output.get("attention") is None:
            return []
        figures = []
        for row, (text, _) in enumerate(examples):
            source, target = codec.token_labels(batch, output, row)
            figures.append((text, attention_figure(output["attention"][row], source, target, text)))
        return figures

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: TaskModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers:
            return
        # The first num_maps samples the model can read (a fixed sample sentence may be made
        # only of unknown words): ask for more than needed.
        datamodule: TaskDataModule = trainer.datamodule
        texts = [text for text, _ in datamodule.sample_pairs(self.split, 4 * self.num_maps + 16)]
        was_training = module.training
        module.eval()
        try:
            figures = self.maps(module, module.codec, texts)
        finally:
            module.train(was_training)
        if not figures:
            log.info("no attention maps: the model's predictions carry no attention weights")
        for index, (_, figure) in enumerate(figures):
            for logger in loggers:
                logger.experiment.add_figure(
                    f"{self.split}/attention/{index}", figure, trainer.global_step, close=False
                )
