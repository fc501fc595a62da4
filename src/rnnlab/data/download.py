"""The single download helper used by every rnnlab dataset.

Datasets live on servers we do not control (university mirrors, Gutenberg,
old MNIST hosts), so downloads must be resumable, verified before they are
trusted, and fail with a message that tells an offline user exactly which
file to fetch by hand and where to put it. Only http(s) is spoken, redirects
included: a URL from a config or a server never makes rnnlab read a local
file or an FTP host. A file that fails verification is moved aside, not left
in the cache to fail again.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, Any

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

__all__ = [
    "DownloadError",
    "check_gzip",
    "check_zip",
    "download",
    "fetch",
    "file_md5",
    "file_sha256",
    "move_aside",
]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 16
_USER_AGENT = "rnnlab-downloader/1.0 (+urllib)"
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_SCHEMES = ("http", "https")


class DownloadError(RuntimeError):
    """A download failed or produced a file that cannot be trusted."""


class _HttpRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """urllib follows redirects to ftp://; a download may only be sent on to http(s)."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme.lower() not in _SCHEMES:
            raise urllib.error.HTTPError(
                req.full_url, code, f"redirect to {newurl!r} refused (only http/https)", headers, fp
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _http_only_opener() -> urllib.request.OpenerDirector:
    """urllib's default opener without its file://, ftp:// and data: handlers."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        _HttpRedirectsOnly(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


_OPENER = _http_only_opener()


def _require_http(url: str, dest: Path) -> None:
    if urllib.parse.urlsplit(url).scheme.lower() not in _SCHEMES:
        raise DownloadError(
            f"Refusing to download {url!r}: only http:// and https:// URLs are fetched. For a "
            f"file you have, give its path instead (or put it at {dest})."
        )


def move_aside(path: Path, name: Path | None = None) -> Path:
    """Rename `path` to `<name>.corrupt-<timestamp>` beside it (`name`: the cache entry it was
    to become, default `path`) and return the new path, so a re-run starts afresh while the bad
    copy (an HTML error page? a truncated archive?) can be inspected. Older corrupt copies of the
    same name are deleted: they would only fill the disk."""
    name = name or path
    for older in glob.glob(glob.escape(str(name)) + ".corrupt-*"):
        os.unlink(older)
    target = name.with_name(f"{name.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, target)
    return target


def _hash_file(path: Path | str, hasher: Any) -> str:
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def file_md5(path: Path | str) -> str:
    """MD5 hex digest, read in chunks so multi-GB corpora never sit in memory.

    MD5 is only used to match the checksums that dataset hosts publish, not
    for security, hence ``usedforsecurity=False`` (keeps FIPS systems happy).
    """
    return _hash_file(path, hashlib.md5(usedforsecurity=False))


def file_sha256(path: Path | str) -> str:
    """SHA-256 hex digest, read in chunks so large files never sit in memory."""
    return _hash_file(path, hashlib.sha256())


def check_zip(path: Path | str) -> None:
    """Raise DownloadError if ``path`` is not a readable zip archive.

    A truncated or corrupted zip often still has the right size, so a CRC
    check of every member is the only way to catch it before extraction.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DownloadError(f"{path} is not a valid zip archive: {exc}") from exc
    if bad is not None:
        raise DownloadError(f"{path} is a corrupt zip archive: member {bad!r} fails its CRC check")


def check_gzip(path: Path | str) -> None:
    """Raise DownloadError if ``path`` is not a complete gzip stream.

    gzip only detects truncation at the very end of the stream, so the whole
    file is decompressed (in chunks, to bound memory).
    """
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(_CHUNK):
                pass
    except (OSError, EOFError) as exc:
        raise DownloadError(
            f"{path} is not a valid gzip file (truncated or corrupt): {exc}"
        ) from exc


def _offline_error(url: str, dest: Path, reason: object, part: Path) -> DownloadError:
    kept = (
        f" The partial download {part} was kept; a re-run will resume it." if part.exists() else ""
    )
    return DownloadError(
        f"Failed to download {url}: {reason}. "
        f"If you are offline or the server is unreachable: download {url} yourself "
        f"and put it at {dest}, then re-run.{kept}"
    )


def _checksum_problems(
    path: Path, md5: str | None, sha256: str | None, expected_size: int | None
) -> list[str]:
    problems = []
    if expected_size is not None:
        size = path.stat().st_size
        if size != expected_size:
            problems.append(f"expected size {expected_size} bytes, got {size} bytes")
    if md5 is not None:
        got = file_md5(path)
        if got.lower() != md5.lower():
            problems.append(f"expected md5 {md5.lower()}, got {got}")
    if sha256 is not None:
        got = file_sha256(path)
        if got.lower() != sha256.lower():
            problems.append(f"expected sha256 {sha256.lower()}, got {got}")
    return problems


def _make_progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold blue]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )


class _TransferError(Exception):
    """The connection failed mid-transfer (kept apart from local disk errors)."""


def _read_chunk(resp: http.client.HTTPResponse) -> bytes:
    try:
        return resp.read(_CHUNK)
    except (OSError, http.client.HTTPException) as exc:
        raise _TransferError(exc) from exc


def _stream(
    resp: http.client.HTTPResponse,
    out: IO[bytes],
    *,
    name: str,
    offset: int,
    length: int | None,
    progress: bool,
) -> int:
    """Copy the response body to ``out``; return the number of bytes copied."""
    received = 0
    total = offset + length if length is not None else None
    with _make_progress(progress) as bar:
        task = bar.add_task(name, total=total, completed=offset)
        for chunk in iter(lambda: _read_chunk(resp), b""):
            out.write(chunk)
            received += len(chunk)
            bar.update(task, advance=len(chunk))
    return received


def _fetch_to_part(url: str, dest: Path, part: Path, *, timeout: float, progress: bool) -> None:
    """Download ``url`` into ``part``, resuming it if it already exists.

    Leaves ``part`` in place on any network failure so the next run resumes.
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        resp = _OPENER.open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            logger.info("server reports %s already complete (%d bytes); verifying", part, offset)
            return
        raise _offline_error(url, dest, f"HTTP {exc.code} {exc.reason}", part) from exc
    except (OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise _offline_error(url, dest, reason, part) from exc

    with resp:
        status = resp.status
        resumed = False
        if offset and status == 206:
            match = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            resumed = match is not None and int(match.group(1)) == offset
            if not resumed:
                part.unlink()
                raise DownloadError(
                    f"Resuming {url} into {part} failed: asked for bytes {offset}- but the server "
                    f"sent Content-Range {resp.headers.get('Content-Range')!r}. The partial file "
                    f"was deleted; a re-run will download it again from the start."
                )
            logger.info("resuming download of %s at %d bytes", url, offset)
        elif offset:
            logger.info("server ignored the Range request for %s; restarting from scratch", url)
        if not resumed:
            offset = 0
        length_header = resp.headers.get("Content-Length")
        length = int(length_header) if length_header and length_header.isdigit() else None
        try:
            with open(part, "ab" if resumed else "wb") as out:
                received = _stream(
                    resp, out, name=dest.name, offset=offset, length=length, progress=progress
                )
        except _TransferError as exc:
            cause = exc.__cause__ or exc
            raise _offline_error(
                url, dest, f"connection lost during transfer: {cause!r}", part
            ) from cause
    if length is not None and received < length:
        raise _offline_error(
            url, dest, f"connection closed after {received} of {length} bytes", part
        )


def _verify_download(
    part: Path,
    dest: Path,
    url: str,
    problems: list[str],
    validate: Callable[[Path], None] | None,
) -> None:
    """DownloadError, with `part` moved aside, if it has checksum/size `problems` or fails
    `validate`."""
    if problems:
        aside = move_aside(part, dest)
        raise DownloadError(
            f"Checksum mismatch for {dest} (downloaded from {url}): {'; '.join(problems)}. "
            f"The download was moved to {aside}; a re-run will download it again."
        )
    if validate is not None:
        try:
            validate(part)
        except Exception as exc:
            aside = move_aside(part, dest)
            raise DownloadError(
                f"Validation failed for {dest} (downloaded from {url}): expected a valid file, "
                f"got: {exc}. The download was moved to {aside}; a re-run will download it again."
            ) from exc


def download(
    url: str,
    dest: Path | str,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    expected_size: int | None = None,
    progress: bool = True,
    timeout: float = 30.0,
    validate: Callable[[Path], None] | None = None,
) -> Path:
    """Download ``url`` to ``dest`` resumably and verifiably; return ``dest``.

    An existing ``dest`` that passes the given checks is returned without
    touching the network. Data goes to ``<dest>.part`` first and is moved into
    place only after the checksum/size and ``validate`` checks pass, so
    ``dest`` never holds a half-written or corrupt file; a file that fails them
    is moved aside (:func:`move_aside`). Only http(s) URLs are fetched.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    _require_http(url, dest)

    if dest.exists():
        problems = _checksum_problems(dest, md5, sha256, expected_size)
        if not problems:
            return dest
        aside = move_aside(dest)
        logger.warning(
            "existing %s fails verification (%s); moved it to %s, downloading again",
            dest,
            "; ".join(problems),
            aside,
        )

    dest.parent.mkdir(parents=True, exist_ok=True)
    if expected_size is not None and part.exists() and part.stat().st_size > expected_size:
        logger.info("discarding %s: larger than the expected %d bytes", part, expected_size)
        part.unlink()

    _fetch_to_part(url, dest, part, timeout=timeout, progress=progress)
    _verify_download(
        part, dest, url, _checksum_problems(part, md5, sha256, expected_size), validate
    )
    os.replace(part, dest)
    return dest


def _filename_from_url(url: str) -> str:
    name = PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    if not name:
        raise ValueError(f"cannot derive a file name from URL {url!r}")
    return name


def fetch(url_or_path: str, cache_dir: Path, **kwargs: Any) -> Path:
    """Return a local file for ``url_or_path``, downloading it into ``cache_dir`` if needed.

    Local files are always accepted as-is so users can point a dataset at a
    copy they fetched by hand (e.g. on an offline machine); URLs must be
    http(s). ``kwargs`` are passed on to :func:`download`.
    """
    local = Path(url_or_path).expanduser()
    if local.exists():
        return local
    if not urllib.parse.urlsplit(url_or_path).scheme:
        raise FileNotFoundError(f"{url_or_path} is neither an existing file nor a URL")
    return download(url_or_path, Path(cache_dir) / _filename_from_url(url_or_path), **kwargs)
