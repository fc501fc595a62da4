"""Images as pixel sequences, for MNIST-like classifiers: an image file in, a class name out.

An image is read greyscale, resized to the training size, inverted when its background is light
(MNIST is white ink on black), scaled to [0, 1] and laid out as a sequence (`to_sequence`):

    rows     (B, H, W)      H steps of a W-pixel row (the Keras example)
    columns  (B, W, H)      W steps of an H-pixel column
    pixels   (B, H*W, 1)    one pixel per step (sequential MNIST: a hard long-range task)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from rnnlab.codecs.base import Batch, Codec
from rnnlab.errors import InputError, quote

LAYOUTS = ("rows", "columns", "pixels")
CLASSES = {
    "mnist": tuple("0123456789"),
    "fashion": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
}


def to_sequence(images: Tensor, layout: str) -> Tensor:
    """uint8 images (B, H, W) -> float sequences in [0, 1]: (B, H, W), (B, W, H) or (B, H*W, 1)."""
    pixels = images.float() / 255.0
    if layout == "columns":
        return pixels.transpose(1, 2).contiguous()
    if layout == "pixels":
        return pixels.reshape(len(pixels), -1, 1)
    return pixels


def read_image(path_text: str, shape: tuple[int, int]) -> Tensor:
    """An image file -> uint8 (H, W) of `shape`, ink light on dark; InputError if unreadable."""
    text = path_text.strip()
    if not text:
        raise InputError("empty input: give the path of an image file, e.g. digit.png")
    path = Path(text).expanduser()
    try:  # a whole pasted line is no path: is_file() raises "File name too long"
        is_file = path.is_file()
    except OSError:
        is_file = False
    if not is_file:
        raise InputError(f"{quote(str(path))}: no such image file")
    try:
        with Image.open(path) as image:
            image = image.convert("L")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise InputError(f"{quote(str(path))}: cannot read it as an image ({error})") from None
    height, width = shape
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    pixels = pixels.reshape(height, width)
    if pixels.float().mean() > 127:  # dark ink on a light background: make it MNIST-like
        pixels = 255 - pixels
    return pixels


@dataclass
class ImageCodec(Codec):
    """Images of `image_shape` (H, W) read in `layout` order -> one of `variant`'s classes."""

    variant: str = "mnist"
    layout: str = "rows"
    image_shape: tuple[int, int] = (28, 28)

    reads_images: ClassVar[bool] = True

    @property
    def classes(self) -> tuple[str, ...]:
        return CLASSES[self.variant]

    def encode_example(self, text: str) -> dict[str, Tensor]:
        """An image file path -> {"inputs": (T, F)}."""
        pixels = read_image(text, self.image_shape)
        return {"inputs": to_sequence(pixels[None], self.layout)[0]}

    def collate(self, examples: Sequence[Mapping[str, Tensor]]) -> Batch:
        return {"inputs": torch.stack([example["inputs"] for example in examples])}

    def decode(self, batch: Batch, outputs: Mapping[str, Tensor]) -> list[str]:
        """Class probabilities `probs` (B, C) -> "7 (p=0.98)" per row."""
        probs, classes = outputs["probs"].max(-1)
        return [f"{self.classes[c]} (p={p:.2f})" for p, c in zip(probs.tolist(), classes.tolist())]

    def model_kwargs(self) -> dict[str, Any]:
        height, width = self.image_shape
        features = {"rows": width, "columns": height, "pixels": 1}[self.layout]
        return {"input_size": features, "num_classes": len(self.classes)}

    def state_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "layout": self.layout,
            "image_shape": list(self.image_shape),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ImageCodec:
        return cls(state["variant"], state["layout"], tuple(state["image_shape"]))
