"""Binary sentiment of sentences or reviews (seed 003): word tokens -> negative / positive.

Two corpora, told apart by their layout (`format: auto`):

    uci      UCI "Sentiment Labelled Sentences": `sentence<TAB>label` files (amazon_cells, imdb,
             yelp; the shared copies have a header line and U+0085 inside sentences). `data.path`
             is one file, a list of files, or a folder holding `*_labelled.txt`.
    aclimdb  Stanford's Large Movie Review Dataset: `train/{pos,neg}/*.txt`, `test/{pos,neg}/*.txt`.
             Its own test half is the test split; val is drawn from its train half.

Without `data.path` the archive is downloaded into `cache_dir` and extracted there (members may
not leave the target folder). Splits are drawn by seed over *groups* of identical sentences
(compared case-insensitively), so a sentence never appears in two splits. The vocabulary is
built from the training split only and kept by the codec (`rnnlab.codecs.sentiment`), which
also cuts texts longer than `keep_last_tokens` tokens to their last `keep_last_tokens` tokens
(`max_length`, the old name, still works for one release, with a deprecation message).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch

from rnnlab.codecs.sentiment import LABELS, SentimentCodec
from rnnlab.data.base import TaskDataModule, check_direction
from rnnlab.data.batching import TensorBatchDataset
from rnnlab.data.download import DownloadError, check_gzip, check_zip, download, move_aside
from rnnlab.data.readers import CorpusError, read_labelled_sentences
from rnnlab.data.splits import check_fractions, split_by_group
from rnnlab.data.text import Tokenizer
from rnnlab.errors import DataError, require, require_one_of, require_positive

log = logging.getLogger(__name__)

FORMATS = ("auto", "uci", "aclimdb")
SPLITS = ("train", "val", "test")

UCI_URL = "https://archive.ics.uci.edu/static/public/331/sentiment+labelled+sentences.zip"
ACLIMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
# Pinned SHA-256 of the archives at the default URLs (fixed releases; the same digests are
# pinned by many independent projects). A data.url of your own may serve another file.
SHA256 = {
    UCI_URL: "afc26626d710899948693e1a61405dce197f57ffa719fa1130d346b4cc095343",
    ACLIMDB_URL: "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe",
}

_HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)  # aclImdb reviews use <br /> for newlines

Example = tuple[str, int]  # (text, label 0/1)


def group_key(text: str) -> str:
    """Sentences equal up to case and spacing share a key (and so a split)."""
    return " ".join(text.lower().split())


# Reading ---------------------------------------------------------------------------------------
def read_uci(files: Sequence[Path]) -> list[Example]:
    examples: list[Example] = []
    for file in files:
        try:
            examples.extend(read_labelled_sentences(file))
        except (CorpusError, OSError) as error:
            raise DataError(f"{error}") from None
    return examples


def read_aclimdb(root: Path) -> dict[str, list[Example]]:
    """{"train": [...], "test": [...]} from an aclImdb folder (files in name order)."""
    parts: dict[str, list[Example]] = {}
    for part in ("train", "test"):
        examples = []
        for label, name in enumerate(("neg", "pos")):
            folder = root / part / name
            if not folder.is_dir():
                raise DataError(f"{root} is not an aclImdb folder: {folder} is missing")
            for file in sorted(folder.glob("*.txt")):
                try:
                    text = file.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as error:
                    raise DataError(f"{file}: cannot read it as UTF-8 text ({error})") from None
                text = _HTML_BREAK.sub(" ", text).strip()
                if text:
                    examples.append((text, label))
        parts[part] = examples
    return parts


def _aclimdb_root(folder: Path) -> Path | None:
    for root in (folder, folder / "aclImdb"):
        if (root / "train" / "pos").is_dir() and (root / "test" / "pos").is_dir():
            return root
    return None


def _uci_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*_labelled.txt") if not p.name.startswith("._"))


def _extract_safely(archive: Path, target: Path) -> None:
    """Extract a zip or tar archive into `target`, refusing members that would land outside it
    (absolute paths, `..`, links); extracted into a sibling folder first, then moved."""
    staging = target.with_name(target.name + ".extracting")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    root = staging.resolve()

    def inside(name: str) -> bool:
        return (root / name).resolve().is_relative_to(root)

    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for name in zf.namelist():
                    if not inside(name):
                        raise DataError(f"{archive}: member {name!r} would be extracted outside")
                zf.extractall(staging)
        else:
            with tarfile.open(archive) as tf:
                for member in tf.getmembers():
                    if not inside(member.name) or member.issym() or member.islnk():
                        raise DataError(
                            f"{archive}: member {member.name!r} is a link or would be extracted "
                            "outside the target folder; refusing to extract"
                        )
                tf.extractall(staging, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(f"{archive}: cannot extract it ({error})") from None
    except DataError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)


def split_groups(
    examples: Sequence[Example], val: float, test: float, seed: int
) -> dict[str, list[Example]]:
    """`split_by_group` over sentences equal up to case and spacing, examples kept in order."""
    parts: dict[str, list[Example]] = {split: [] for split in SPLITS}
    keys = [group_key(text) for text, _ in examples]
    for example, split in zip(examples, split_by_group(keys, val, test, seed)):
        parts[split].append(example)
    return parts


class SentimentData(TaskDataModule):
    """Sentences or reviews -> 0 (negative) / 1 (positive), as word ids with lengths (read
    last word first with `backward`, `SentimentCodec`)."""

    codec_class = SentimentCodec

    def __init__(
        self,
        path: str | Sequence[str] | None = None,
        format: str = "auto",
        max_features: int | None = 1024,
        min_count: int = 1,
        lowercase: bool = True,
        keep_last_tokens: int = 100,
        max_length: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        cache_dir: str = "data",
        url: str | None = None,
        backward: bool = False,
        **loader_options,
    ):
        super().__init__(**loader_options)
        require_one_of(format, FORMATS, "data.format")
        require(
            max_features is None or max_features > 2,
            "data.max_features",
            f"must be > 2 (it counts <pad> and <unk>) or null, got {max_features}",
        )
        require(min_count >= 1, "data.min_count", f"must be >= 1, got {min_count}")
        if max_length is not None:  # the name until #17: one meaning per option name
            log.warning(
                "data.max_length is deprecated for task=sentiment and goes in the next release: "
                "use data.keep_last_tokens=%s (texts keep their last N tokens)",
                max_length,
            )
            keep_last_tokens = max_length
        require_positive(keep_last_tokens, "data.keep_last_tokens")
        check_fractions(val_fraction, test_fraction)
        self.path = path
        self.format = format
        self.max_features = max_features
        self.min_count = min_count
        self.tokenizer = Tokenizer("review", lowercase=lowercase)
        self.keep_last_tokens = keep_last_tokens
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.cache_dir = Path(cache_dir)
        self.url = url
        self.backward = backward
        self.samples: dict[str, list[Example]] = {}

    # Sources -----------------------------------------------------------------------------------
    def _download(self) -> Path:
        """Fetch and extract the archive of `format` (aclimdb, else uci); return its folder."""
        aclimdb = self.format == "aclimdb"
        url = self.url or (ACLIMDB_URL if aclimdb else UCI_URL)
        name = "aclImdb_v1.tar.gz" if aclimdb else "sentiment_labelled_sentences.zip"
        target = self.cache_dir / ("aclImdb_v1" if aclimdb else "sentiment_labelled_sentences")
        if not target.is_dir():
            try:
                archive = download(
                    url,
                    self.cache_dir / name,
                    sha256=SHA256.get(url),
                    validate=check_gzip if aclimdb else check_zip,
                )
            except DownloadError as error:
                raise DataError(f"{error} Or point data.path at the extracted files.") from None
            try:
                _extract_safely(archive, target)
            except DataError as error:
                aside = move_aside(archive)
                raise DataError(
                    f"{error}; the archive was moved to {aside}, a re-run downloads it again. "
                    "Or point data.path at the extracted files."
                ) from None
        return target

    def prepare_data(self) -> None:
        if self.path is None:
            self._download()

    def _find_uci_folder(self, folder: Path) -> list[Path]:
        """`*_labelled.txt` in `folder` or one level down (the UCI zip nests them), never in
        macOS `__MACOSX` metadata folders."""
        files = _uci_files(folder)
        if not files:
            for child in sorted(p for p in folder.iterdir() if p.is_dir()):
                if child.name != "__MACOSX":
                    files = files or _uci_files(child)
        return files

    def read_sources(self, path: str | Sequence[str] | None) -> dict[str, list[Example]]:
        """{"all": [...]} for UCI files, {"train": [...], "test": [...]} for aclImdb."""
        if path is None:
            path = str(self._download())
        if not isinstance(path, (str, os.PathLike)):  # a list of files
            files = [Path(p).expanduser() for p in path]
            for file in files:
                if not file.is_file():
                    raise DataError(f"data.path: {file} does not exist or is not a file")
            require(self.format in ("auto", "uci"), "data.format", "a list of files is uci")
            return {"all": read_uci(files)}
        path = Path(path).expanduser()
        if path.is_file():
            require(self.format in ("auto", "uci"), "data.format", f"{path} is a file: use uci")
            return {"all": read_uci([path])}
        if not path.is_dir():
            raise DataError(f"data.path={path} does not exist")
        root = _aclimdb_root(path)
        if self.format in ("auto", "aclimdb") and root is not None:
            return read_aclimdb(root)
        files = self._find_uci_folder(path) if self.format in ("auto", "uci") else []
        if files:
            return {"all": read_uci(files)}
        raise DataError(
            f"data.path={path} holds neither *_labelled.txt files (UCI) nor an aclImdb layout "
            "(train/pos, train/neg, test/pos, test/neg)"
        )

    # Splits ------------------------------------------------------------------------------------
    def _dataset(self, examples: Sequence[Example], source: str) -> TensorBatchDataset:
        rows, labels = [], []
        codec = self.codec
        for text, label in examples:
            ids = codec.vocab.encode(codec.tokens(text))
            if ids:
                rows.append(torch.tensor(ids))
                labels.append(label)
        if not rows:
            raise DataError(f"{source} has no non-empty sentences")
        lengths = torch.tensor([len(row) for row in rows])
        inputs = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=0)
        return TensorBatchDataset(
            {"inputs": inputs, "lengths": lengths, "targets": torch.tensor(labels)},
            trim={"inputs": "lengths"},
        )

    def split(self) -> dict[str, list[Example]]:
        """{"train", "val", "test": examples} of `path`, drawn by `seed` (the same for every
        caller: the LM fine-tuning stage of #20 reads its training sentences here)."""
        sources = self.read_sources(self.path)
        if "all" in sources:
            parts = split_groups(sources["all"], self.val_fraction, self.test_fraction, self.seed)
        else:  # aclImdb: its own test half; val from its train half; no review in both
            parts = split_groups(sources["train"], self.val_fraction, 0, self.seed)
            seen = {group_key(text) for text, _ in parts["train"] + parts["val"]}
            parts["test"] = [ex for ex in sources["test"] if group_key(ex[0]) not in seen]
            dropped = len(sources["test"]) - len(parts["test"])
            if dropped:
                log.info("dropped %d aclImdb test reviews that also occur in train", dropped)
        if not parts["test"]:
            raise DataError(f"data.path={self.path}: every aclImdb test review occurs in train")
        return parts

    def build_splits(self) -> None:
        parts = self.split()
        if self.codec is None:
            self.codec = SentimentCodec.fit(
                self.tokenizer,
                (text for text, _ in parts["train"]),
                keep_last_tokens=self.keep_last_tokens,
                max_features=self.max_features,
                min_count=self.min_count,
                backward=self.backward,
            )
        check_direction(self.codec, self.backward)
        for split in SPLITS:
            setattr(self, f"{split}_set", self._dataset(parts[split], f"the {split} split"))
            self.samples[split] = parts[split][:64]

    # Samples and a user's test set ------------------------------------------------------------
    def sample_pairs(self, split: str, count: int) -> list[tuple[str, str]]:
        return [(text, LABELS[label]) for text, label in self.samples.get(split, [])[:count]]

    def read_test_set(self, path: str | Sequence[str]) -> TensorBatchDataset:
        """Every example of `path` (UCI files or folders, an aclImdb folder: both halves)."""
        examples = [example for part in self.read_sources(path).values() for example in part]
        return self._dataset(examples, f"data.path={path}")
