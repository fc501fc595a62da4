"""Readable predictions during training: `✓ 535+61 = 596` / `✗ 12+9 = 20 (21)`."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger
from rich import get_console
from rich.markup import escape

from rnnlab.errors import InputError
from rnnlab.predict import predict_texts


def render_samples(
    module: pl.LightningModule, datamodule, split: str, count: int
) -> list[tuple[bool, str]]:
    """(correct?, line) for the first `count` examples of a split, through the predict path."""
    pairs = datamodule.sample_pairs(split, count)
    answers = predict_texts(module, datamodule, [text for text, _ in pairs])
    lines = []
    for (text, expected), answer in zip(pairs, answers):
        if isinstance(answer, InputError):
            answer = f"<{answer}>"
        # An answer may add detail after the label ("7 (p=0.98)"); the label decides.
        ok = answer == expected or answer.startswith(f"{expected} (")
        line = f"{text}{datamodule.answer_separator}{answer}"
        lines.append((ok, line if ok else f"{line} ({expected})"))
    return lines


class PredictionSamples(pl.Callback):
    """After each validation epoch (and after testing), print and log a few predictions."""

    def __init__(self, num_samples: int = 8, every_n_epochs: int = 1):
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs

    def _show(self, trainer: pl.Trainer, module: pl.LightningModule, split: str) -> None:
        lines = render_samples(module, trainer.datamodule, split, self.num_samples)
        correct = sum(ok for ok, _ in lines)
        title = f"{split} samples, epoch {trainer.current_epoch}: {correct}/{len(lines)} right"
        console = get_console()
        console.print(f"[bold]{title}[/bold]")
        for ok, line in lines:
            console.print(
                f"  [green]✓[/green] {escape(line)}" if ok else f"  [red]✗[/red] {escape(line)}"
            )
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                text = "\n".join(f"    {'✓' if ok else '✗'} {line}" for ok, line in lines)
                logger.experiment.add_text(f"{split}/samples", text, trainer.global_step)

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._show(trainer, module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self._show(trainer, module, "test")
