"""Streaming readers for the raw corpora used by the RNN experiments.

Every reader is a generator (or, for IDX, a single small read) so that taking
the first N items of a multi-GB corpus never loads the whole file.  Malformed
input raises :class:`CorpusError` with the file, the 1-based line number (or
byte offset) and a hint on how to fix it, instead of silently producing a
wrong dataset.  Lines that are merely empty are skipped and their count is
logged, because real corpora contain a few of them and they carry no signal.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import math
import os
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Union

import torch

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

_GZIP_MAGIC = b"\x1f\x8b"
_BOM = "\ufeff"
_IDX_DTYPES = {  # IDX type code -> name; only uint8 is supported.
    0x08: "uint8",
    0x09: "int8",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}


class CorpusError(ValueError):
    """A corpus file is malformed; the message names the file, the place and the fix."""


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be None or >= 0, got {limit}")


@contextlib.contextmanager
def _open_binary(path: PathLike) -> Iterator[IO[bytes]]:
    """Open *path* for binary reading, transparently gunzipping it.

    Gzip is detected by the magic bytes rather than the name, so a renamed
    or mislabelled file is still read correctly.  Both the gzip wrapper and
    the underlying file are closed on exit.
    """
    with open(path, "rb") as raw:
        if raw.read(2) == _GZIP_MAGIC:
            raw.seek(0)
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                yield gz  # type: ignore[misc]
        else:
            raw.seek(0)
            yield raw


def _iter_stream_lines(
    stream: Iterable[bytes], name: str, encoding: str = "utf-8"
) -> Iterator[tuple[int, str]]:
    """Split a binary stream on ``\\n`` only and decode each line separately.

    Decoding line by line lets a bad byte be reported with its line number;
    splitting on bytes avoids ``str.splitlines`` treating U+0085/U+2028 as
    line breaks.
    """
    offset = 0
    lineno = 0
    iterator = iter(stream)
    while True:
        try:
            raw = next(iterator)
        except StopIteration:
            return
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise CorpusError(
                f"{name}: compressed stream is truncated or corrupt after line "
                f"{lineno} (decompressed byte offset {offset}): {exc}; "
                "delete the file and download it again"
            ) from exc
        lineno += 1
        start = offset
        offset += len(raw)
        if raw.endswith(b"\r\n"):
            raw = raw[:-2]
        elif raw.endswith(b"\n"):
            raw = raw[:-1]
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            raise CorpusError(
                f"{name}: line {lineno} (byte offset {start + exc.start}) is not "
                f"valid {encoding}: {exc.reason} (byte {raw[exc.start : exc.start + 1]!r}); "
                f"re-encode the file as {encoding} or pass the right encoding="
            ) from exc
        if lineno == 1 and text.startswith(_BOM):
            text = text[1:]
        yield lineno, text


def _count_rest(lines: Iterator[tuple[int, str]], so_far: int) -> int:
    """Return the total line count of a partly consumed line iterator."""
    last = so_far
    for last, _ in lines:  # noqa: B007 - the last line number is the count
        pass
    return last


def _aligned_pairs(
    source: Iterator[tuple[int, str]],
    target: Iterator[tuple[int, str]],
    source_name: str,
    target_name: str,
    limit: int | None,
) -> Iterator[tuple[str, str]]:
    """Read two line-aligned files in lock-step (Moses format).

    A length mismatch means the files are not parallel any more (a wrong file,
    a truncated download), so every pair could be misaligned: fail loudly.
    """
    yielded = skipped = 0
    src_n = tgt_n = 0
    while limit is None or yielded < limit:
        src = next(source, None)
        tgt = next(target, None)
        if src is None and tgt is None:
            break
        if src is None or tgt is None:
            if src is None:
                src_total = src_n
                tgt_total = _count_rest(target, tgt_n + 1)
            else:
                src_total = _count_rest(source, src_n + 1)
                tgt_total = tgt_n
            raise CorpusError(
                f"Moses files are not aligned: {source_name} has {src_total} lines "
                f"but {target_name} has {tgt_total} lines; they must have the same "
                "number of lines (one sentence per line) - check that both files "
                "come from the same corpus release and were not truncated"
            )
        src_n, src_text = src
        tgt_n, tgt_text = tgt
        src_text, tgt_text = src_text.strip(), tgt_text.strip()
        if not src_text or not tgt_text:
            skipped += 1
            continue
        yielded += 1
        yield src_text, tgt_text
    if skipped:
        logger.info("skipped %d empty pairs in %s / %s", skipped, source_name, target_name)


# --------------------------------------------------------------------------- #
# public readers
# --------------------------------------------------------------------------- #


def read_lines(path: PathLike, *, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` with the line ending and a leading BOM removed.

    This is the base of the text readers: it splits on ``\\n`` only (the
    sentiment files hold U+0085 inside sentences), strips ``\\r\\n``/``\\n``,
    reads ``.gz`` files transparently and reports undecodable bytes with
    the file and 1-based line number.  *encoding* must be ASCII-compatible.
    """
    name = os.fspath(path)
    with _open_binary(path) as stream:
        yield from _iter_stream_lines(stream, name, encoding)


def read_tsv_pairs(
    path: PathLike,
    *,
    source_column: int = 1,
    target_column: int = 0,
    limit: int | None = None,
) -> Iterator[tuple[str, str]]:
    """Yield ``(source, target)`` from a manythings/Tatoeba tab-separated file.

    Lines look like ``English<TAB>Spanish[<TAB>attribution]``, so the default
    columns give Spanish -> English.  Extra columns are ignored.
    """
    _check_limit(limit)
    name = os.fspath(path)
    needed = max(source_column, target_column, 1) + 1
    yielded = skipped = 0
    if limit == 0:
        return
    for lineno, line in read_lines(path):
        if not line.strip():
            skipped += 1
            continue
        cols = line.split("\t")
        if len(cols) < needed:
            raise CorpusError(
                f"{name}: line {lineno} has {len(cols)} tab-separated column(s), "
                f"expected at least {needed} (English<TAB>Spanish[<TAB>attribution]); "
                "fix or delete this line, or check that the file is the tab-separated "
                "manythings.org/Tatoeba format"
            )
        src, tgt = cols[source_column].strip(), cols[target_column].strip()
        if not src or not tgt:
            skipped += 1
            continue
        yield src, tgt
        yielded += 1
        if limit is not None and yielded >= limit:
            break
    if skipped:
        logger.info("skipped %d empty lines in %s", skipped, name)


def read_moses_pairs(
    source_path: PathLike,
    target_path: PathLike,
    *,
    limit: int | None = None,
) -> Iterator[tuple[str, str]]:
    """Yield ``(source, target)`` from two line-aligned OPUS Moses files.

    Both files are streamed in lock-step; if one ends first a
    :class:`CorpusError` names both files and both line counts.
    """
    _check_limit(limit)
    yield from _aligned_pairs(
        read_lines(source_path),
        read_lines(target_path),
        os.fspath(source_path),
        os.fspath(target_path),
        limit,
    )


def _find_member(zf: zipfile.ZipFile, lang: str, zip_name: str) -> str:
    suffix = f".{lang}"
    names = [n for n in zf.namelist() if n.endswith(suffix) and not n.endswith("/")]
    if len(names) != 1:
        found = ", ".join(zf.namelist()) or "(empty archive)"
        what = "no member" if not names else f"{len(names)} members"
        raise CorpusError(
            f"{zip_name}: {what} ending in {suffix!r} (members: {found}); "
            "expected exactly one - check source_lang/target_lang or the download"
        )
    return names[0]


def read_moses_zip(
    zip_path: PathLike,
    *,
    source_lang: str = "es",
    target_lang: str = "en",
    limit: int | None = None,
) -> Iterator[tuple[str, str]]:
    """Yield ``(source, target)`` from an OPUS Moses zip without extracting it.

    The ``*.{source_lang}`` and ``*.{target_lang}`` members are streamed with
    :meth:`zipfile.ZipFile.open`, so nothing is written to disk.
    """
    _check_limit(limit)
    name = os.fspath(zip_path)
    redownload = "delete the file and download it again"
    try:
        with zipfile.ZipFile(zip_path) as zf:
            src_member = _find_member(zf, source_lang, name)
            tgt_member = _find_member(zf, target_lang, name)
            with zf.open(src_member) as src, zf.open(tgt_member) as tgt:
                yield from _aligned_pairs(
                    _iter_stream_lines(src, f"{name}:{src_member}"),
                    _iter_stream_lines(tgt, f"{name}:{tgt_member}"),
                    f"{name}:{src_member}",
                    f"{name}:{tgt_member}",
                    limit,
                )
    except zipfile.BadZipFile as exc:
        raise CorpusError(f"{name}: not a valid zip archive ({exc}); {redownload}") from exc
    except (zlib.error, EOFError) as exc:
        raise CorpusError(f"{name}: corrupt zip member data ({exc}); {redownload}") from exc


def read_pair_files(
    files: Sequence[PathLike],
    *,
    source_lang: str = "es",
    target_lang: str = "en",
    source_column: int = 1,
    target_column: int = 0,
    limit: int | None = None,
) -> Iterator[tuple[str, str]]:
    """``(source, target)`` from sentence-pair files of a format detected by their number and
    content: two files are a Moses pair (source first), a zip an OPUS Moses zip, else a TSV."""
    if len(files) == 2:
        yield from read_moses_pairs(files[0], files[1], limit=limit)
    elif zipfile.is_zipfile(files[0]):
        yield from read_moses_zip(
            files[0], source_lang=source_lang, target_lang=target_lang, limit=limit
        )
    else:
        columns = {"source_column": source_column, "target_column": target_column}
        yield from read_tsv_pairs(files[0], **columns, limit=limit)


def read_alternating_pairs(path: PathLike) -> Iterator[tuple[str, str]]:
    """Yield ``(tweet, reply)`` from a file whose lines alternate tweet, reply.

    This is the Marsan-Ma ``twitter_en.txt`` layout.  A dangling last line
    (odd line count) has no reply, so it is dropped with a warning.
    """
    name = os.fspath(path)
    skipped = 0
    pending: tuple[int, str] | None = None
    for lineno, line in read_lines(path):
        if pending is None:
            pending = (lineno, line)
            continue
        question, answer = pending[1].strip(), line.strip()
        pending = None
        if not question or not answer:
            skipped += 1
            continue
        yield question, answer
    if pending is not None:
        logger.warning(
            "%s has an odd number of lines: dropped last line %d (no reply)",
            name,
            pending[0],
        )
    if skipped:
        logger.info("skipped %d pairs with an empty side in %s", skipped, name)


def read_conversation_pairs(path: PathLike) -> Iterator[tuple[str, str]]:
    """Yield every adjacent ``(turn, next_turn)`` inside each conversation.

    Conversations are runs of non-empty lines separated by one or more blank
    lines; a single-line conversation has no reply and yields nothing.
    """
    previous: str | None = None
    for _, line in read_lines(path):
        turn = line.strip()
        if not turn:
            previous = None  # a blank line ends the conversation
            continue
        if previous is not None:
            yield previous, turn
        previous = turn


def read_labelled_sentences(path: PathLike) -> Iterator[tuple[str, int]]:
    """Yield ``(sentence, label)`` from a UCI "Sentiment Labelled Sentences" file.

    Lines are ``sentence<TAB>label`` split on the last tab (label 0 or 1).  A
    first line whose label is not an integer is a header and is skipped.
    U+0085 is part of a sentence, never a line break.
    """
    name = os.fspath(path)
    skipped = 0
    for lineno, line in read_lines(path):
        if not line.strip():
            skipped += 1
            continue
        sentence, tab, label_text = line.rpartition("\t")
        if not tab:
            raise CorpusError(
                f"{name}: line {lineno} has no tab; expected 'sentence<TAB>label' "
                "- fix or delete this line"
            )
        try:
            label = int(label_text.strip())
        except ValueError:
            if lineno == 1:
                logger.debug("skipping header line %r in %s", line, name)
                continue
            raise CorpusError(
                f"{name}: line {lineno} has label {label_text!r}, expected 0 or 1; "
                "fix the label or delete this line"
            ) from None
        if label not in (0, 1):
            raise CorpusError(
                f"{name}: line {lineno} has label {label}, expected 0 or 1; "
                "fix the label or delete this line"
            )
        # Only spaces/tabs: rstrip() would also eat a trailing U+0085.
        sentence = sentence.rstrip(" \t")
        if not sentence.strip():
            skipped += 1
            continue
        yield sentence, label
    if skipped:
        logger.info("skipped %d empty lines in %s", skipped, name)


def read_idx(path: PathLike) -> torch.Tensor:
    """Read an IDX (MNIST) file, raw or gzipped, into a ``uint8`` tensor.

    Gzip is detected by its magic bytes.  The header is validated so that a
    wrong file or a truncated download fails here, not as garbage images.
    """
    name = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise CorpusError(
                f"{name}: gzip stream is truncated or corrupt ({exc}); "
                "delete the file and download it again"
            ) from exc
    if len(data) < 4:
        raise CorpusError(
            f"{name}: only {len(data)} bytes, too short for an IDX header (4 bytes); "
            "delete the file and download it again"
        )
    magic = int.from_bytes(data[:4], "big")
    dtype_code, ndim = data[2], data[3]
    if data[:2] != b"\x00\x00" or dtype_code not in _IDX_DTYPES or ndim == 0:
        raise CorpusError(
            f"{name}: not an IDX file, magic number is {magic} (0x{magic:08x}); "
            "expected e.g. 2051 (images) or 2049 (labels) - check the file"
        )
    if dtype_code != 0x08:
        raise CorpusError(
            f"{name}: IDX dtype {_IDX_DTYPES[dtype_code]} (code 0x{dtype_code:02x}, "
            f"magic {magic}) is not supported, only uint8 (0x08); use a uint8 IDX file"
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise CorpusError(
            f"{name}: truncated header, expected {header_len} bytes, got {len(data)}; "
            "delete the file and download it again"
        )
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header_len + math.prod(dims)
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise CorpusError(
            f"{name}: file {problem}: header {dims} promises {expected} bytes, "
            f"got {len(data)}; delete the file and download it again"
        )
    if math.prod(dims) == 0:
        return torch.empty(dims, dtype=torch.uint8)
    buffer = bytearray(data)  # writable, so torch.frombuffer does not warn
    return torch.frombuffer(buffer, dtype=torch.uint8, offset=header_len).reshape(dims).clone()


def strip_gutenberg(text: str) -> tuple[str, bool]:
    """Return the book text between the ``*** START OF`` and ``*** END OF`` lines.

    Gutenberg licence boilerplate must not leak into training text.  CRLF is
    normalised to LF, a BOM is removed and blank lines around the body are
    trimmed.  Returns ``(text, True)``, or ``(whole_text, False)`` when the
    markers are missing.
    """
    text = text.replace("\r\n", "\n")
    if text.startswith(_BOM):
        text = text[1:]
    lines = text.split("\n")
    start = next((i for i, ln in enumerate(lines) if "*** START OF" in ln), None)
    end = None
    if start is not None:
        end = next((i for i in range(start + 1, len(lines)) if "*** END OF" in lines[i]), None)
    if start is None or end is None:
        logger.warning("Gutenberg START/END markers not found; keeping the whole text")
        return text, False
    body = lines[start + 1 : end]
    while body and not body[0].strip():
        body.pop(0)
    while body and not body[-1].strip():
        body.pop()
    return "\n".join(body) + ("\n" if body else ""), True
