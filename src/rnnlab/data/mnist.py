"""MNIST (or Fashion-MNIST) read as sequences (seed 004): each 28x28 image is 28 steps of 28 pixels.

Images stay uint8 (N, H, W) in memory (60k MNIST images are 47 MB, not 188 MB as floats); each
batch is scaled to [0, 1] and laid out as a sequence (`data.layout`: rows, columns or pixels,
`rnnlab.codecs.mnist.to_sequence`) when it is sliced.

`data.path` is a folder of IDX files (gzipped or raw). With the train pair in it, train/val come
from train and test is t10k; with only one pair (the shared folder has only t10k) that pair is
split by seed into train/val/test (`split_by_group`, each image its own group). Without `data.path` the four files are downloaded into
`<cache_dir>/mnist` (or `fashion_mnist`) and checked against their published MD5s and pinned
SHA-256s. Predicting reads image files (`rnnlab.codecs.mnist.ImageCodec`).
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from rnnlab.codecs.mnist import CLASSES, LAYOUTS, ImageCodec, to_sequence
from rnnlab.data.base import TaskDataModule
from rnnlab.data.batching import TensorBatchDataset
from rnnlab.data.download import DownloadError, check_gzip, download
from rnnlab.data.readers import CorpusError, read_idx
from rnnlab.data.splits import check_fractions, split_by_group
from rnnlab.errors import DataError, require, require_one_of

SPLITS = ("train", "val", "test")
# IDX file stems of each part; a file may carry a .gz suffix or none.
PARTS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class Variant:
    """Where a dataset is published (its class names: `rnnlab.codecs.mnist.CLASSES`)."""

    folder: str  # under cache_dir
    mirror: str  # base URL of the .gz files
    md5: dict[str, str]  # published MD5 of each .gz file
    sha256: dict[str, str] = field(default_factory=dict)  # pinned SHA-256 of each .gz file


VARIANTS = {
    "mnist": Variant(
        folder="mnist",
        mirror="https://ossci-datasets.s3.amazonaws.com/mnist/",
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        sha256={
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
    ),
    "fashion": Variant(
        folder="fashion_mnist",
        mirror="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        sha256={
            "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
    ),
}


class ImageBatches(TensorBatchDataset):
    """uint8 `images` (N, H, W) and `targets` (N,), served as batches of float `inputs`."""

    def __init__(self, images: Tensor, targets: Tensor, layout: str):
        super().__init__({"images": images, "targets": targets})
        self.layout = layout

    def __getitems__(self, indices) -> dict[str, Tensor]:
        batch = super().__getitems__(indices)
        return {"inputs": to_sequence(batch["images"], self.layout), "targets": batch["targets"]}


def find_part(folder: Path, part: str) -> tuple[Path, Path] | None:
    """(images, labels) files of `part` ("train" or "t10k") in `folder`, or None if absent."""
    found = []
    for stem in PARTS[part]:
        candidates = [folder / f"{stem}.gz", folder / stem]
        found.append(next((path for path in candidates if path.is_file()), None))
    return (found[0], found[1]) if all(found) else None


def read_pair(images_path: Path, labels_path: Path, num_classes: int) -> tuple[Tensor, Tensor]:
    """Images (N, H, W) and labels (N,), both uint8, checked against each other."""
    try:
        images, labels = read_idx(images_path), read_idx(labels_path)
    except (CorpusError, OSError) as error:
        raise DataError(f"{error}") from None
    if images.dim() != 3:
        raise DataError(
            f"{images_path}: expected images (count, rows, cols), got shape {tuple(images.shape)}"
            " - is this a labels file?"
        )
    if labels.dim() != 1:
        raise DataError(
            f"{labels_path}: expected labels (count,), got shape {tuple(labels.shape)}"
            " - is this an images file?"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels;"
            " they must come from the same release: re-download or replace the pair"
        )
    if len(labels) and int(labels.max()) >= num_classes:
        raise DataError(
            f"{labels_path}: label {int(labels.max())} is out of range 0..{num_classes - 1}"
        )
    return images, labels


class MnistRowsData(TaskDataModule):
    """Handwritten digits (or Fashion-MNIST items) as pixel sequences -> 10 classes."""

    codec_class = ImageCodec

    def __init__(
        self,
        path: str | None = None,
        variant: str = "mnist",
        layout: str = "rows",
        train_size: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        cache_dir: str = "data",
        mirror: str | None = None,
        **loader_options,
    ):
        super().__init__(**loader_options)
        require_one_of(variant, tuple(VARIANTS), "data.variant")
        require_one_of(layout, LAYOUTS, "data.layout")
        require(
            train_size is None or train_size > 0,
            "data.train_size",
            f"must be a positive integer or null (all), got {train_size}",
        )
        check_fractions(val_fraction, test_fraction)
        self.path = path
        self.variant_name = variant
        self.variant = VARIANTS[variant]
        self.layout = layout
        self.train_size = train_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.cache_dir = Path(cache_dir)
        self.mirror = mirror or self.variant.mirror
        self._sample_dir: Path | None = None

    def model_kwargs(self) -> dict:
        """Before setup() reads the images, MNIST's shape: model sizes are known without data."""
        return (self.codec or ImageCodec(self.variant_name, self.layout)).model_kwargs()

    # Files -------------------------------------------------------------------------------------
    def download_folder(self) -> Path:
        return self.cache_dir / self.variant.folder

    def prepare_data(self) -> None:
        """Without data.path: download the four files (no-op when present and verified)."""
        if self.path is None:
            self._download()

    def _download(self) -> Path:
        folder = self.download_folder()
        for name, md5 in self.variant.md5.items():
            url = self.mirror.rstrip("/") + "/" + name
            try:
                sha256 = self.variant.sha256.get(name)
                download(url, folder / name, md5=md5, sha256=sha256, validate=check_gzip)
            except DownloadError as error:
                raise DataError(
                    f"{error} Or point data.path at a folder that holds the IDX files."
                ) from None
        return folder

    def _folder(self, path: str | None) -> Path:
        if path is None:
            folder = self.download_folder()
            if find_part(folder, "train") and find_part(folder, "t10k"):
                return folder
            return self._download()
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise DataError(
                f"data.path={path} is not a folder; point it at the folder holding "
                f"{PARTS['t10k'][0]}.gz and friends (or leave it null to download them)"
            )
        return folder

    def _read(self, part: tuple[Path, Path]) -> tuple[Tensor, Tensor]:
        return read_pair(*part, num_classes=len(CLASSES[self.variant_name]))

    # Splits ------------------------------------------------------------------------------------
    def build_splits(self) -> None:
        folder = self._folder(self.path)
        train_part, test_part = find_part(folder, "train"), find_part(folder, "t10k")
        if not (train_part or test_part):
            names = ", ".join(f"{stem}[.gz]" for stems in PARTS.values() for stem in stems)
            raise DataError(f"{folder} holds no MNIST IDX files: expected {names}")
        # With both parts, t10k is the test set; one part alone is split three ways.
        images, labels = self._read(train_part or test_part)
        test_share = 0 if train_part and test_part else self.test_fraction
        splits = split_by_group(range(len(images)), self.val_fraction, test_share, self.seed)
        index = {name: [i for i, split in enumerate(splits) if split == name] for name in SPLITS}
        if self.train_size is not None:
            index["train"] = index["train"][: self.train_size]
        for split, rows in index.items():
            dataset = ImageBatches(images[rows], labels[rows].long(), self.layout)
            setattr(self, f"{split}_set", dataset)
        if train_part and test_part:
            test_images, test_labels = self._read(test_part)
            self.test_set = ImageBatches(test_images, test_labels.long(), self.layout)
        if self.codec is None:
            shape = tuple(self.train_set.tensors["images"].shape[1:])
            self.codec = ImageCodec(self.variant_name, self.layout, shape)

    # Samples and a user's test set ------------------------------------------------------------
    def sample_pairs(self, split: str, count: int) -> list[tuple[str, str]]:
        """The split's first images, written once as PNG files into a private temp folder, so
        samples go through the same file -> codec path as a user's `image=digit.png`."""
        dataset = {"train": self.train_set, "val": self.val_set}.get(split, self.test_set)
        if self._sample_dir is None:
            self._sample_dir = Path(tempfile.mkdtemp(prefix="rnnlab-mnist-samples-"))
            weakref.finalize(self, shutil.rmtree, self._sample_dir, ignore_errors=True)
        self._sample_dir.mkdir(parents=True, exist_ok=True)
        pairs = []
        images = dataset.tensors["images"][:count]
        labels = dataset.tensors["targets"][:count]
        for number, (image, label) in enumerate(zip(images, labels.tolist())):
            file = self._sample_dir / f"{split}-{number:03d}.png"
            if not file.exists():
                height, width = image.shape
                Image.frombytes("L", (width, height), bytes(image.flatten().tolist())).save(file)
            pairs.append((str(file), CLASSES[self.variant_name][label]))
        return pairs

    def read_test_set(self, path: str | Sequence[str]) -> TensorBatchDataset:
        """A folder of IDX files (every pair in it), or one IDX images file with its labels
        file (`...labels-idx1-ubyte[.gz]`) beside it."""
        file = Path(str(path)).expanduser()
        if file.is_file():
            if "images-idx3-ubyte" not in file.name:
                raise DataError(
                    f"{file}: evaluate expects a folder of IDX files or an IDX images file named "
                    "like t10k-images-idx3-ubyte[.gz], with its labels file beside it"
                )
            labels = file.with_name(file.name.replace("images-idx3-ubyte", "labels-idx1-ubyte"))
            if not labels.is_file():
                raise DataError(f"{file}: its labels file {labels} does not exist")
            parts = [(file, labels)]
        else:
            folder = self._folder(str(path))
            parts = [part for name in PARTS if (part := find_part(folder, name))]
            if not parts:
                raise DataError(f"{folder} holds no MNIST IDX files")
        images, labels = (torch.cat(tensors) for tensors in zip(*map(self._read, parts)))
        if tuple(images.shape[1:]) != tuple(self.codec.image_shape):
            raise DataError(
                f"{path}: images are {tuple(images.shape[1:])}, the model was trained on "
                f"{tuple(self.codec.image_shape)}"
            )
        return ImageBatches(images, labels.long(), self.layout)
