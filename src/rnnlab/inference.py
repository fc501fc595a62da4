"""Inference below every entry that answers strings: load a checkpoint (codec + model, no data),
predict texts in batches, stream a generation.

`rnnlab.predict`, `rnnlab.evaluate`, `rnnlab.chat` and the sample callbacks all go through it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from rnnlab.builder import build_module, restore_codec
from rnnlab.checkpoints import CONFIG_KEY, read_checkpoint
from rnnlab.codecs.base import Codec
from rnnlab.codecs.book import BookCodec
from rnnlab.errors import CheckpointError, InputError
from rnnlab.tasks.base import TaskModule
from rnnlab.tasks.language_model import LanguageModelTask


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", *, trust: bool = False
) -> tuple[DictConfig, Codec, TaskModule]:
    """Rebuild (config, codec, module in eval mode) from a checkpoint alone: no data is read and
    no datamodule is built.

    The file is read as data (`read_checkpoint`: `weights_only=True`, and its stored config may
    only name rnnlab's classes and the library classes rnnlab uses, unless `trust`)."""
    checkpoint = read_checkpoint(path, trust=trust)
    cfg = OmegaConf.create(checkpoint[CONFIG_KEY])
    codec = restore_codec(cfg, checkpoint)
    module = build_module(cfg, codec)
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        first = str(error).strip().splitlines()[-1].strip()[:160]
        raise CheckpointError(
            f"{path}: its weights do not fit the model its config describes ({first})"
        ) from None
    module.to(map_location).eval()
    return cfg, codec, module


def _on_device(batch: dict, module: TaskModule) -> dict:
    return {k: v.to(module.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.inference_mode()
def predict_texts(
    module: TaskModule, codec: Codec, texts: Sequence[str], batch_size: int = 256
) -> list[str | InputError]:
    """One answer per text, or the InputError that says why that text could not be read."""
    results: list[str | InputError] = [InputError("not predicted")] * len(texts)
    encoded = []
    for index, text in enumerate(texts):
        try:
            encoded.append((index, codec.encode_example(text)))
        except InputError as error:
            results[index] = error
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        batch = _on_device(codec.collate([example for _, example in chunk]), module)
        answers = codec.decode(batch, module.predict_batch(batch))
        for (index, _), answer in zip(chunk, answers):
            results[index] = answer
    return results


def can_stream(module: TaskModule, codec: Codec) -> bool:
    """Whether the task generates text piece by piece (language models)."""
    return isinstance(module, LanguageModelTask) and isinstance(codec, BookCodec)


@torch.inference_mode()
def stream_generation(module: LanguageModelTask, codec: BookCodec, text: str) -> Iterator[str]:
    """The continuation of one prompt, piece by piece as it is generated; InputError (before
    the first piece) if the prompt cannot be read."""
    batch = _on_device(codec.encode([text]), module)
    yield from codec.stream_text(batch, module.stream_batch(batch))
