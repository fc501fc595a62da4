"""Tests for rnnlab.data.download against a loopback HTTP server (never the internet)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
import re
import socket
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rnnlab.data.download import (
    DownloadError,
    check_gzip,
    check_zip,
    download,
    fetch,
    file_md5,
    file_sha256,
)

PAYLOAD = bytes(range(256)) * 400  # 102_400 bytes, several read chunks


@dataclass
class Served:
    """Handle on the loopback server: where files go, what requests arrived."""

    root: Path
    base_url: str
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    honour_range: bool = True
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def put(self, name: str, data: bytes) -> str:
        (self.root / name).write_bytes(data)
        return self.url(name)

    def ranges(self) -> list[str | None]:
        return [rng for _, rng in self.requests]


class RangeHandler(SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler plus `Range: bytes=N-` support and request logging.

    Special paths: /truncated/<n> announces n bytes but sends fewer and closes;
    /slow blocks until the test releases it (to provoke a client timeout);
    /redirect?to=<url> answers 302 with Location <url>.
    """

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        served: Served = self.server.served  # type: ignore[attr-defined]
        rng = self.headers.get("Range")
        served.requests.append((self.path, rng))
        if self.path.startswith("/truncated/"):
            announced = int(self.path.rsplit("/", 1)[1])
            self.send_response(200)
            self.send_header("Content-Length", str(announced))
            self.end_headers()
            self.wfile.write(b"x" * (announced // 2))
            self.close_connection = True
            return
        if self.path == "/slow":
            served.release.wait(5)
            return
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.split("=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if rng is None or not served.honour_range:
            super().do_GET()
            return
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        match = re.fullmatch(r"bytes=(\d+)-", rng)
        assert match, f"client sent an unsupported Range header: {rng!r}"
        start = int(match.group(1))
        if start >= len(data):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = data[start:]
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Served]:
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(RangeHandler, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
    host, port = httpd.server_address[:2]
    served = Served(root=root, base_url=f"http://{host}:{port}")
    httpd.served = served  # type: ignore[attr-defined]
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield served
    finally:
        served.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def closed_port_url() -> str:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/data.bin"


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("corpus.txt", "hello world\n" * 200)
    return buf.getvalue()


def _part(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def test_plain_download_verifies_md5_and_leaves_no_part(server: Served, tmp_path: Path) -> None:
    url = server.put("data.bin", PAYLOAD)
    dest = tmp_path / "out" / "nested" / "data.bin"

    result = download(url, dest, md5=_md5(PAYLOAD), progress=False)

    assert result == dest
    assert dest.read_bytes() == PAYLOAD
    assert not _part(dest).exists()
    assert server.ranges() == [None]


def test_download_with_progress_bar_and_sha256(server: Served, tmp_path: Path) -> None:
    url = server.put("data.bin", PAYLOAD)
    dest = tmp_path / "data.bin"

    download(
        url,
        dest,
        sha256=hashlib.sha256(PAYLOAD).hexdigest(),
        expected_size=len(PAYLOAD),
        progress=True,
    )

    assert dest.read_bytes() == PAYLOAD


def test_existing_good_file_makes_no_request(server: Served, tmp_path: Path) -> None:
    url = server.put("data.bin", PAYLOAD)
    dest = tmp_path / "data.bin"
    download(url, dest, md5=_md5(PAYLOAD), progress=False)
    assert len(server.requests) == 1

    assert download(url, dest, md5=_md5(PAYLOAD), progress=False) == dest
    assert download(url, dest, progress=False) == dest

    assert len(server.requests) == 1


def test_existing_file_with_wrong_checksum_is_downloaded_again(
    server: Served, tmp_path: Path
) -> None:
    url = server.put("data.bin", PAYLOAD)
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"stale")

    download(url, dest, md5=_md5(PAYLOAD), progress=False)

    assert dest.read_bytes() == PAYLOAD
    assert len(server.requests) == 1


def test_resume_sends_range_and_appends(server: Served, tmp_path: Path) -> None:
    url = server.put("data.bin", PAYLOAD)
    dest = tmp_path / "data.bin"
    half = len(PAYLOAD) // 2
    _part(dest).write_bytes(PAYLOAD[:half])

    download(url, dest, md5=_md5(PAYLOAD), progress=False)

    assert server.ranges() == [f"bytes={half}-"]
    assert dest.read_bytes() == PAYLOAD
    assert not _part(dest).exists()


def test_resume_with_server_ignoring_range_restarts(server: Served, tmp_path: Path) -> None:
    server.honour_range = False
    url = server.put("data.bin", PAYLOAD)
    dest = tmp_path / "data.bin"
    half = len(PAYLOAD) // 2
    _part(dest).write_bytes(PAYLOAD[:half])

    download(url, dest, progress=False)  # no checksum: only the 200 handling protects us

    assert server.ranges() == [f"bytes={half}-"]
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_and_416_goes_to_verification(server: Served, tmp_path: Path) -> None:
    url = server.put("data.bin", PAYLOAD)
    dest = tmp_path / "data.bin"
    _part(dest).write_bytes(PAYLOAD)

    download(url, dest, md5=_md5(PAYLOAD), progress=False)

    assert server.ranges() == [f"bytes={len(PAYLOAD)}-"]
    assert dest.read_bytes() == PAYLOAD
    assert not _part(dest).exists()


def test_checksum_mismatch_deletes_part_and_names_file(server: Served, tmp_path: Path) -> None:
    url = server.put("data.bin", PAYLOAD)
    dest = tmp_path / "data.bin"
    wrong = "0" * 32

    with pytest.raises(DownloadError) as excinfo:
        download(url, dest, md5=wrong, progress=False)

    message = str(excinfo.value)
    assert "data.bin" in message
    assert wrong in message and _md5(PAYLOAD) in message
    assert "re-run" in message
    assert not dest.exists()
    assert not _part(dest).exists()


def test_expected_size_mismatch_raises(server: Served, tmp_path: Path) -> None:
    url = server.put("data.bin", PAYLOAD)
    dest = tmp_path / "data.bin"

    with pytest.raises(DownloadError, match=str(len(PAYLOAD))):
        download(url, dest, expected_size=len(PAYLOAD) + 1, progress=False)
    assert not dest.exists()
    assert not _part(dest).exists()


def test_corrupt_zip_fails_validation_and_good_zip_passes(server: Served, tmp_path: Path) -> None:
    good = _zip_bytes()
    corrupt = bytearray(good)
    offset = good.index(b"hello world")
    corrupt[offset] ^= 0xFF  # stored member: flipping a data byte breaks its CRC
    bad_url = server.put("bad.zip", bytes(corrupt))
    good_url = server.put("good.zip", good)

    bad_dest = tmp_path / "bad.zip"
    with pytest.raises(DownloadError, match="bad.zip"):
        download(bad_url, bad_dest, validate=check_zip, progress=False)
    assert not bad_dest.exists()
    assert not _part(bad_dest).exists()

    good_dest = download(good_url, tmp_path / "good.zip", validate=check_zip, progress=False)
    assert good_dest.read_bytes() == good


def test_check_zip_rejects_non_zip(tmp_path: Path) -> None:
    not_zip = tmp_path / "fake.zip"
    not_zip.write_bytes(b"this is not a zip archive")
    with pytest.raises(DownloadError, match="fake.zip"):
        check_zip(not_zip)


def test_check_gzip_detects_truncation(tmp_path: Path) -> None:
    data = gzip.compress(os.urandom(50_000))
    good = tmp_path / "good.gz"
    good.write_bytes(data)
    truncated = tmp_path / "truncated.gz"
    truncated.write_bytes(data[: len(data) // 2])
    not_gzip = tmp_path / "plain.gz"
    not_gzip.write_bytes(b"plain text, not gzip")

    check_gzip(good)
    with pytest.raises(DownloadError, match="truncated.gz"):
        check_gzip(truncated)
    with pytest.raises(DownloadError, match="plain.gz"):
        check_gzip(not_gzip)


def test_unreachable_server_message_names_url_and_dest(
    closed_port_url: str, tmp_path: Path
) -> None:
    dest = tmp_path / "data.bin"
    _part(dest).write_bytes(b"partial")

    with pytest.raises(DownloadError) as excinfo:
        download(closed_port_url, dest, timeout=2, progress=False)

    message = str(excinfo.value)
    assert closed_port_url in message
    assert str(dest) in message
    assert "offline" in message
    assert not dest.exists()
    assert _part(dest).read_bytes() == b"partial"  # kept so a later run resumes


def test_http_404_raises_download_error(server: Served, tmp_path: Path) -> None:
    url = server.url("missing.bin")
    dest = tmp_path / "missing.bin"

    with pytest.raises(DownloadError, match="404") as excinfo:
        download(url, dest, progress=False)
    assert url in str(excinfo.value)
    assert not dest.exists()


def test_connection_closed_mid_transfer_keeps_part(server: Served, tmp_path: Path) -> None:
    url = server.url("truncated/10000")
    dest = tmp_path / "data.bin"

    with pytest.raises(DownloadError, match="5000 of 10000"):
        download(url, dest, progress=False)
    assert not dest.exists()
    assert _part(dest).stat().st_size == 5000


def test_timeout_raises_download_error(server: Served, tmp_path: Path) -> None:
    url = server.url("slow")
    dest = tmp_path / "slow.bin"

    with pytest.raises(DownloadError, match="offline") as excinfo:
        download(url, dest, timeout=0.2, progress=False)
    assert url in str(excinfo.value)


def test_fetch_local_path_makes_no_request(server: Served, tmp_path: Path) -> None:
    local = tmp_path / "corpus.txt"
    local.write_text("local copy")

    assert fetch(str(local), tmp_path / "cache") == local
    assert server.requests == []
    assert not (tmp_path / "cache").exists()


def test_fetch_downloads_url_into_cache(server: Served, tmp_path: Path) -> None:
    url = server.put("book.txt", PAYLOAD)
    cache = tmp_path / "cache"

    result = fetch(url, cache, md5=_md5(PAYLOAD), progress=False)

    assert result == cache / "book.txt"
    assert result.read_bytes() == PAYLOAD


def test_file_hashes_match_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(PAYLOAD)
    assert file_md5(path) == hashlib.md5(PAYLOAD).hexdigest()
    assert file_sha256(path) == hashlib.sha256(PAYLOAD).hexdigest()


# Only http(s); what fails verification is moved aside; fixed files are pinned ------------------
def _aside(dest: Path) -> list[Path]:
    return sorted(dest.parent.glob(dest.name + ".corrupt-*"))


@pytest.mark.parametrize("url", ["file:///etc/hostname", "ftp://127.0.0.1/data.bin", "data.bin"])
def test_only_http_urls_are_downloaded(url: str, tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "data.bin"
    with pytest.raises(DownloadError, match="only http:// and https:// URLs") as excinfo:
        download(url, dest, progress=False)
    assert str(dest) in str(excinfo.value)
    assert not (tmp_path / "cache").exists()
    if "://" in url:
        with pytest.raises(DownloadError, match="only http"):
            fetch(url, tmp_path / "cache", progress=False)


def test_redirects_are_followed_to_http_only(server: Served, tmp_path: Path) -> None:
    server.put("data.bin", PAYLOAD)
    dest = download(server.url(f"redirect?to={server.url('data.bin')}"), tmp_path / "a.bin")
    assert dest.read_bytes() == PAYLOAD
    ftp = "ftp://127.0.0.1:1/data.bin"
    with pytest.raises(DownloadError, match="only http/https"):
        download(server.url(f"redirect?to={ftp}"), tmp_path / "b.bin", progress=False)
    assert not (tmp_path / "b.bin").exists()


@pytest.mark.parametrize("check", ["sha256", "validate"])
def test_a_download_that_fails_verification_is_moved_aside(
    check: str, server: Served, tmp_path: Path
) -> None:
    url = server.put("corpus.zip", b"<html>a proxy's login page</html>")
    dest = tmp_path / "corpus.zip"
    options = {"sha256": "0" * 64} if check == "sha256" else {"validate": check_zip}
    for _ in range(2):  # a second failure replaces the first copy: no pile of corrupt files
        with pytest.raises(DownloadError) as excinfo:
            download(url, dest, progress=False, **options)
        (aside,) = _aside(dest)
        assert f"moved to {aside}" in str(excinfo.value)
    assert aside.read_bytes() == b"<html>a proxy's login page</html>"
    assert not dest.exists() and not _part(dest).exists()


def test_a_cached_file_that_fails_verification_is_moved_aside_even_offline(
    closed_port_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"stale")
    with pytest.raises(DownloadError, match="offline"):
        download(closed_port_url, dest, md5=_md5(PAYLOAD), timeout=2, progress=False)
    (aside,) = _aside(dest)
    assert not dest.exists() and aside.read_bytes() == b"stale"
    assert str(aside) in caplog.text


def test_an_archive_that_fails_extraction_is_moved_aside(server: Served, tmp_path: Path) -> None:
    from rnnlab.data.sentiment import SentimentData
    from rnnlab.errors import DataError

    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escaped_labelled.txt", "gotcha\t1\n")
    url = server.put("uci.zip", evil.getvalue())
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="outside") as excinfo:
        SentimentData(cache_dir=str(cache), url=url).prepare_data()
    (aside,) = _aside(cache / "sentiment_labelled_sentences.zip")
    assert str(aside) in str(excinfo.value)
    assert not (cache / "sentiment_labelled_sentences.zip").exists()


def test_fixed_files_are_downloaded_with_a_pinned_sha256(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from rnnlab.data import mnist, sentiment

    asked: dict[str, str | None] = {}

    def record(url: str, dest: Path, **kwargs: object) -> Path:
        asked[url] = kwargs.get("sha256")  # type: ignore[assignment]
        return dest

    def record_then_fail(url: str, dest: Path, **kwargs: object) -> Path:
        record(url, dest, **kwargs)
        raise DownloadError("offline")

    monkeypatch.setattr(mnist, "download", record)
    monkeypatch.setattr(sentiment, "download", record_then_fail)
    for variant in mnist.VARIANTS:
        mnist.MnistRowsData(variant=variant, cache_dir=str(tmp_path)).prepare_data()
    for format in ("uci", "aclimdb"):
        with pytest.raises(sentiment.DataError):
            sentiment.SentimentData(format=format, cache_dir=str(tmp_path)).prepare_data()
    assert len(asked) == 8 + 2 and {sentiment.UCI_URL, sentiment.ACLIMDB_URL} <= set(asked)
    assert all(re.fullmatch("[0-9a-f]{64}", str(sha)) for sha in asked.values()), asked
