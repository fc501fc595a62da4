"""Pre-tokenized shards on disk, in webdataset's format, read a block at a time.

A split is a folder of tar shards in webdataset's layout (`shard-000000.tar`, ...: written by
`webdataset.ShardWriter`, readable by any webdataset pipeline) whose samples are *blocks*:
`BLOCK_SIZE` consecutive examples. A block is one `.ids` member, int32 little-endian: the number
of examples n, then n lengths per field, then each field's ids one after the other; and, for
evaluation splits, a `.json` member with each example's metadata (the source text and its
references). Beside them, `lengths.npy` holds every example's length per field (uint16), which
is all a batch plan needs (`rnnlab.data.streaming`): batches are planned from lengths, and
their examples read by index.

Examples are written in the order they come, so example i of a split is block i // BLOCK_SIZE,
position i % BLOCK_SIZE, and block b is sample b % BLOCKS_PER_SHARD of shard b //
BLOCKS_PER_SHARD. Reading goes through wids (webdataset's indexed tar reader: random access by
sample), with plain reads rather than a memory map, so a process's memory stays flat however
much of the corpus an epoch has read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rnnlab.errors import require, require_positive

BLOCK_SIZE = 256  # examples per block (one tar sample)
BLOCKS_PER_SHARD = 1024  # blocks per tar file
INSTALL_HINT = "pip install 'webdataset>=1,<2' 'wids>=0.1.10,<0.2'"
FORMAT_VERSION = 1  # part of every cache key: bump it when the layout changes


def require_streaming(key: str = "data.streaming") -> None:
    """ConfigError naming the install command unless webdataset and wids import (rnnlab
    depends on both; an install made without its dependencies may lack them)."""
    try:
        import webdataset  # noqa: F401
        import wids  # noqa: F401
    except ImportError:
        require(
            False,
            key,
            f"streaming needs webdataset and wids, which are not installed: {INSTALL_HINT} "
            "(or set data.streaming=false to read the corpus into memory)",
        )


def check_streaming(streaming: object, **limits: int | None) -> None:
    """Where a datamodule takes its streaming options: `data.streaming` true or false, each of
    `limits` (`data.<name>`) null or positive, and with streaming on, the packages it needs."""
    require(
        isinstance(streaming, bool), "data.streaming", f"must be true or false, got {streaming!r}"
    )
    for name, value in limits.items():
        require_positive(value, f"data.{name}", null=True)
    if streaming:
        require_streaming()


def hash_split(key: str, val: float, test: float, seed: int) -> str:
    """ "train", "val" or "test" for an example whose group key is `key` (a source sentence):
    a stable hash of (seed, key) read as a number in [0, 1) falls in the first `test` share
    (test), the next `val` share (validation) or the rest (training). The same key always lands
    in the same split, on every machine and in any order, without seeing the whole corpus."""
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    point = int.from_bytes(digest, "big") / 2**64
    return "test" if point < test else "val" if point < test + val else "train"


def content_hash(files: Sequence[Path], settings: Mapping[str, Any]) -> str:
    """A short hex digest of the files' bytes and the JSON of `settings` (what the shards were
    built with): the name of their cache directory."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"format": FORMAT_VERSION, **settings}, sort_keys=True).encode())
    for file in files:
        digest.update(str(os.path.getsize(file)).encode())
        with open(file, "rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:20]


class ShardWriter:
    """Examples (a dict of id lists per field, and optional JSON-able metadata) -> one split's
    shards in `directory`. `close()` writes the lengths; until then the split is incomplete."""

    def __init__(self, directory: Path, fields: Sequence[str]):
        import webdataset

        self.directory = Path(directory)
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        self.fields = tuple(fields)
        pattern = str(self.directory / "shard-%06d.tar")
        self.writer = webdataset.ShardWriter(pattern, maxcount=BLOCKS_PER_SHARD, verbose=0)
        self.blocks = 0
        self.lengths: list[np.ndarray] = []  # one (block, fields) array per block
        self.count = 0
        # Examples not yet in a block: (lengths (n, fields), per field flat ids, metas or None)
        self._pending: list[tuple[np.ndarray, list[np.ndarray], list | None]] = []
        self._pending_count = 0

    def __len__(self) -> int:
        """Examples added so far (written or pending)."""
        return self.count + self._pending_count

    def add(self, example: Mapping[str, Sequence[int]], meta: Any = None) -> None:
        """One example (ids per field) and its metadata (JSON-able, or None)."""
        flats = [np.asarray(example[field], dtype=np.int64) for field in self.fields]
        lengths = np.array([[len(ids) for ids in flats]], dtype=np.int64)
        self.add_arrays(lengths, flats, None if meta is None else [meta])

    def add_arrays(
        self, lengths: np.ndarray, flats: Sequence[np.ndarray], metas: list | None = None
    ) -> None:
        """Many examples at once: `lengths` (n, fields) and each field's ids concatenated."""
        if len(lengths) == 0:
            return
        self._pending.append((np.asarray(lengths, dtype=np.int64), list(flats), metas))
        self._pending_count += len(lengths)
        if self._pending_count >= BLOCK_SIZE:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if not self._pending:
            return
        lengths = np.concatenate([p[0] for p in self._pending])
        flats = [np.concatenate([p[1][f] for p in self._pending]) for f in range(len(self.fields))]
        has_meta = any(p[2] is not None for p in self._pending)
        metas = [m for p in self._pending for m in (p[2] or [None] * len(p[0]))]
        offsets = np.zeros((len(lengths) + 1, len(self.fields)), dtype=np.int64)
        np.cumsum(lengths, axis=0, out=offsets[1:])
        start = 0
        while len(lengths) - start >= BLOCK_SIZE or (final and start < len(lengths)):
            end = min(start + BLOCK_SIZE, len(lengths))
            header = np.concatenate([[end - start], lengths[start:end].T.ravel()])
            parts = [header] + [
                flats[f][offsets[start, f] : offsets[end, f]] for f in range(len(self.fields))
            ]
            sample = {
                "__key__": f"{self.blocks:09d}",
                "ids": np.concatenate(parts).astype("<i4").tobytes(),
            }
            if has_meta:
                sample["json"] = json.dumps(metas[start:end], ensure_ascii=False).encode()
            self.writer.write(sample)
            self.lengths.append(
                np.minimum(lengths[start:end], np.iinfo(np.uint16).max).astype(np.uint16)
            )
            self.blocks += 1
            self.count += end - start
            start = end
        rest = [flats[f][offsets[start, f] :] for f in range(len(self.fields))]
        self._pending = (
            [(lengths[start:], rest, metas[start:] if has_meta else None)]
            if start < len(lengths)
            else []
        )
        self._pending_count = len(lengths) - start

    def close(self) -> int:
        """Write what is left and the lengths; the number of examples written."""
        self._flush(final=True)
        self.writer.close()
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros((0, len(self.fields)))
        np.save(self.directory / "lengths.npy", lengths.astype(np.uint16))
        info = {"examples": self.count, "block_size": BLOCK_SIZE, "fields": list(self.fields),
                "blocks_per_shard": BLOCKS_PER_SHARD}  # fmt: skip
        (self.directory / "shard.json").write_text(json.dumps(info))
        return self.count


class ShardReader:
    """One split's shards: `lengths`, blocks and examples by index.

    Tar files are opened (and indexed, by wids) on first use in each process, so a reader
    pickles cheaply into dataloader workers; the last `cache_blocks` blocks read are kept
    decoded, and at most `open_shards` files stay open.
    """

    def __init__(self, directory: Path | str, cache_blocks: int = 256, open_shards: int = 64):
        self.directory = Path(directory)
        info = json.loads((self.directory / "shard.json").read_text())
        self.num_examples: int = info["examples"]
        self.block_size: int = info["block_size"]
        self.blocks_per_shard: int = info["blocks_per_shard"]
        self.fields: tuple[str, ...] = tuple(info["fields"])
        self.cache_blocks, self.open_shards = cache_blocks, open_shards
        self._shards: OrderedDict[int, Any] = OrderedDict()
        self._cache: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._lengths = None

    def __getstate__(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "_shards": OrderedDict(),
            "_cache": OrderedDict(),
            "_lengths": None,
        }

    def __len__(self) -> int:
        return self.num_examples

    @property
    def num_blocks(self) -> int:
        return -(-self.num_examples // self.block_size)

    @property
    def lengths(self) -> np.ndarray:
        """(examples, fields) uint16."""
        if self._lengths is None:
            self._lengths = np.load(self.directory / "lengths.npy")
        return self._lengths

    def _shard(self, index: int) -> Any:
        """wids' reader of tar file `index` (its members indexed once, read with seeks)."""
        if index in self._shards:
            self._shards.move_to_end(index)
            return self._shards[index]
        from wids.wids import group_by_key
        from wids.wids_tar import TarFileReader

        reader = TarFileReader(
            str(self.directory / f"shard-{index:06d}.tar"), index_file=None, verbose=False
        )
        self._shards[index] = (reader, group_by_key(reader.names()))
        while len(self._shards) > self.open_shards:
            self._shards.popitem(last=False)[1][0].close()
        return self._shards[index]

    def block(self, index: int) -> dict[str, Any]:
        """Block `index` decoded: per field a list of id arrays, and `meta` (a list or None)."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        reader, samples = self._shard(index // self.blocks_per_shard)
        members = {}
        for member in samples[index % self.blocks_per_shard]:
            name, data = reader.get_file(member)
            members[name.rsplit(".", 1)[-1]] = data.read() if hasattr(data, "read") else data
        values = np.frombuffer(members["ids"], dtype="<i4")
        count, fields = int(values[0]), len(self.fields)
        lengths = values[1 : 1 + fields * count].reshape(fields, count)
        bounds = np.concatenate(
            [[1 + fields * count], 1 + fields * count + np.cumsum(lengths.ravel())]
        )
        rows = np.split(values[bounds[0] : bounds[-1]].astype(np.int64), bounds[1:-1] - bounds[0])
        block = {field: rows[f * count : (f + 1) * count] for f, field in enumerate(self.fields)}
        block["meta"] = json.loads(members["json"]) if "json" in members else None
        self._cache[index] = block
        while len(self._cache) > self.cache_blocks:
            self._cache.popitem(last=False)
        return block

    def clear_cache(self) -> None:
        self._cache.clear()

    def example(self, index: int) -> tuple[dict[str, np.ndarray], Any]:
        """Example `index`: its ids per field (int64 arrays), and its metadata (or None)."""
        block = self.block(index // self.block_size)
        position = index % self.block_size
        ids = {field: block[field][position] for field in self.fields}
        meta = block["meta"][position] if block["meta"] is not None else None
        return ids, meta


@contextlib.contextmanager
def build_lock(directory: Path) -> Iterator[None]:
    """Held while `directory` is built: under DDP every process sets its data up, so the first
    builds and the others wait for it, then find the shards (an advisory lock file beside it)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.with_name(f".{directory.name}.lock"), "w") as lock:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock (build in one process first)
            yield
            return
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def publish(temporary: Path, directory: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Finish a build: `meta` into `temporary`/meta.json, then `temporary` renamed to
    `directory` (a reader sees a whole build or none); -> meta."""
    write_json(temporary / "meta.json", meta)
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(temporary, directory)
    return meta


def write_json(path: Path, value: Any) -> None:
    """`value` as JSON at `path`, atomically (a temporary file renamed over it)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(value, ensure_ascii=False))
    os.replace(temporary, path)
