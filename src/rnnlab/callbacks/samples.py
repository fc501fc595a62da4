"""Readable predictions during training: `✓ 535+61 = 596` / `✗ 12+9 = 20 (21)`."""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from rich import get_console
from rich.markup import escape

from rnnlab.codecs.base import Codec
from rnnlab.data.base import TaskDataModule
from rnnlab.errors import InputError
from rnnlab.inference import predict_texts
from rnnlab.tasks.base import TaskModule


def render_samples(
    module: TaskModule, codec: Codec, pairs: Sequence[tuple[str, str | None]]
) -> list[tuple[bool | None, str]]:
    """(correct?, line) for each (input, expected answer) pair, through the predict path;
    correct? is None for an input with no expected answer (a chatbot's prompt). Random
    decoding draws from its own copy of the RNG state, so showing samples never changes
    training."""
    device = module.device
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        answers = predict_texts(module, codec, [text for text, _ in pairs])
    lines = []
    for (text, expected), answer in zip(pairs, answers):
        if isinstance(answer, InputError):
            answer = f"<{answer}>"
        line = f"{text}{codec.answer_separator}{answer}"
        if expected is None:
            lines.append((None, line))
            continue
        # An answer may add detail after the label ("7 (p=0.98)"); the label decides.
        ok = answer == expected or answer.startswith(f"{expected} (")
        lines.append((ok, line if ok else f"{line} ({expected})"))
    return lines


MARKS = {True: ("✓", "[green]✓[/green]"), False: ("✗", "[red]✗[/red]"), None: ("•", "•")}


class PredictionSamples(pl.Callback):
    """After each validation epoch (and after testing), print and log a few predictions."""

    def __init__(self, num_samples: int = 8, every_n_epochs: int = 1):
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs

    def _show(self, trainer: pl.Trainer, module: TaskModule, split: str) -> None:
        datamodule: TaskDataModule = trainer.datamodule
        pairs = datamodule.sample_pairs(split, self.num_samples)
        lines = render_samples(module, module.codec, pairs)
        judged = [ok for ok, _ in lines if ok is not None]
        title = f"{split} samples, epoch {trainer.current_epoch}"
        if judged:
            title += f": {sum(judged)}/{len(judged)} right"
        console = get_console()
        console.print(f"[bold]{title}[/bold]")
        for ok, line in lines:
            console.print(f"  {MARKS[ok][1]} {escape(line)}")
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                text = "\n".join(f"    {MARKS[ok][0]} {line}" for ok, line in lines)
                logger.experiment.add_text(f"{split}/samples", text, trainer.global_step)

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._show(trainer, module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self._show(trainer, module, "test")
