"""Tests for rnnlab.data.readers: tiny synthetic files, then the real shared corpora."""

from __future__ import annotations

import gzip
import logging
import struct
import zipfile
from collections import Counter
from itertools import islice
from pathlib import Path

import pytest
import torch

from rnnlab.data.readers import (
    CorpusError,
    read_alternating_pairs,
    read_conversation_pairs,
    read_idx,
    read_labelled_sentences,
    read_lines,
    read_moses_pairs,
    read_moses_zip,
    read_tsv_pairs,
    strip_gutenberg,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- #
# read_lines
# --------------------------------------------------------------------------- #


def test_read_lines_numbers_and_strips_endings(tmp_path: Path) -> None:
    p = write(tmp_path / "a.txt", b"one\ntwo\n\nfour")
    assert list(read_lines(p)) == [(1, "one"), (2, "two"), (3, ""), (4, "four")]


def test_read_lines_bom_and_crlf(tmp_path: Path) -> None:
    p = write(tmp_path / "a.txt", b"\xef\xbb\xbfhello\r\nworld\r\n")
    assert list(read_lines(p)) == [(1, "hello"), (2, "world")]


def test_read_lines_keeps_u0085_inside_line(tmp_path: Path) -> None:
    p = write(tmp_path / "a.txt", "a\u0085b\u2028c\nd\n".encode("utf-8"))
    assert list(read_lines(p)) == [(1, "a\u0085b\u2028c"), (2, "d")]


def test_read_lines_gzip(tmp_path: Path) -> None:
    p = write(tmp_path / "a.txt.gz", gzip.compress(b"\xef\xbb\xbfx\r\ny\n"))
    assert list(read_lines(p)) == [(1, "x"), (2, "y")]


def test_read_lines_bad_byte_names_file_and_line(tmp_path: Path) -> None:
    p = write(tmp_path / "latin.txt", b"ok\nfine\ncaf\xe9\n")
    it = read_lines(p)
    assert next(it) == (1, "ok")
    with pytest.raises(CorpusError) as err:
        list(it)
    msg = str(err.value)
    assert "latin.txt" in msg and "line 3" in msg


def test_read_lines_truncated_gzip(tmp_path: Path) -> None:
    blob = gzip.compress(b"line\n" * 5000)
    p = write(tmp_path / "cut.gz", blob[: len(blob) // 2])
    with pytest.raises(CorpusError, match="cut.gz"):
        list(read_lines(p))


# --------------------------------------------------------------------------- #
# read_tsv_pairs
# --------------------------------------------------------------------------- #


def test_tsv_pairs_spanish_to_english(tmp_path: Path) -> None:
    p = write(tmp_path / "spa.txt", b"Go.\tVe.\nHi.\tHola.\n")
    assert list(read_tsv_pairs(p)) == [("Ve.", "Go."), ("Hola.", "Hi.")]
    assert next(read_tsv_pairs(p, source_column=0, target_column=1)) == ("Go.", "Ve.")


def test_tsv_pairs_attribution_column_ignored(tmp_path: Path) -> None:
    data = "Go.\tVe.\tCC-BY 2.0 (France) Attribution: tatoeba.org #2877272 (CM)\n"
    p = write(tmp_path / "spa.txt", data.encode())
    assert list(read_tsv_pairs(p)) == [("Ve.", "Go.")]


def test_tsv_pairs_too_few_columns(tmp_path: Path) -> None:
    p = write(tmp_path / "bad.tsv", b"Go.\tVe.\nno tab here\n")
    with pytest.raises(CorpusError) as err:
        list(read_tsv_pairs(p))
    assert "bad.tsv" in str(err.value) and "line 2" in str(err.value)


def test_tsv_pairs_skips_empty_and_logs(tmp_path: Path, caplog) -> None:
    p = write(tmp_path / "e.tsv", b"a\tb\n\n  \nc\t \nd\te\n")
    with caplog.at_level(logging.INFO, logger="rnnlab.data.readers"):
        assert list(read_tsv_pairs(p)) == [("b", "a"), ("e", "d")]
    assert "skipped 3 empty lines" in caplog.text and "e.tsv" in caplog.text


def test_tsv_pairs_limit_stops_before_bad_line(tmp_path: Path) -> None:
    p = write(tmp_path / "l.tsv", b"a\tb\nc\td\nbroken\n")
    assert list(read_tsv_pairs(p, limit=2)) == [("b", "a"), ("d", "c")]


# --------------------------------------------------------------------------- #
# Moses (plain files and zip)
# --------------------------------------------------------------------------- #


def test_moses_pairs(tmp_path: Path) -> None:
    es = write(tmp_path / "x.es", "Hola\n\nAdiós\r\n".encode())
    en = write(tmp_path / "x.en", b"Hello\nlost\nBye\r\n")
    assert list(read_moses_pairs(es, en)) == [("Hola", "Hello"), ("Adiós", "Bye")]
    assert list(read_moses_pairs(es, en, limit=1)) == [("Hola", "Hello")]


@pytest.mark.parametrize("longer", ["source", "target"])
def test_moses_pairs_misaligned(tmp_path: Path, longer: str) -> None:
    es = write(tmp_path / "corpus.es", b"a\nb\nc\nd\ne\n" if longer == "source" else b"a\nb\n")
    en = write(tmp_path / "corpus.en", b"A\nB\n" if longer == "source" else b"A\nB\nC\nD\nE\n")
    with pytest.raises(CorpusError) as err:
        list(read_moses_pairs(es, en))
    msg = str(err.value)
    assert "corpus.es" in msg and "corpus.en" in msg
    assert "5 lines" in msg and "2 lines" in msg


def _make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_moses_zip_streams_without_extraction(tmp_path: Path) -> None:
    z = _make_zip(
        tmp_path / "opus.zip",
        {
            "README": b"about",
            "OpenSubtitles.en-es.en": b"Hello\nBye\n",
            "OpenSubtitles.en-es.es": "Hola\nAdiós\n".encode(),
        },
    )
    before = sorted(tmp_path.rglob("*"))
    assert list(read_moses_zip(z)) == [("Hola", "Hello"), ("Adiós", "Bye")]
    assert next(read_moses_zip(z, source_lang="en", target_lang="es")) == ("Hello", "Hola")
    assert sorted(tmp_path.rglob("*")) == before == [z]


def test_moses_zip_misaligned(tmp_path: Path) -> None:
    z = _make_zip(tmp_path / "m.zip", {"c.es": b"a\nb\nc\n", "c.en": b"A\n"})
    with pytest.raises(CorpusError) as err:
        list(read_moses_zip(z))
    msg = str(err.value)
    assert "c.es" in msg and "c.en" in msg and "3 lines" in msg and "1 lines" in msg


def test_moses_zip_missing_member(tmp_path: Path) -> None:
    z = _make_zip(tmp_path / "m.zip", {"c.es": b"a\n", "c.fr": b"A\n"})
    with pytest.raises(CorpusError, match=r"\.en"):
        list(read_moses_zip(z))


def test_moses_zip_corrupt(tmp_path: Path) -> None:
    z = write(tmp_path / "broken.zip", b"PK\x03\x04 this is not really a zip file")
    with pytest.raises(CorpusError) as err:
        list(read_moses_zip(z))
    assert "broken.zip" in str(err.value) and "download" in str(err.value)


def test_moses_zip_truncated(tmp_path: Path) -> None:
    good = _make_zip(tmp_path / "good.zip", {"c.es": b"hola\n" * 100, "c.en": b"hi\n" * 100})
    z = write(tmp_path / "cut.zip", good.read_bytes()[:-40])
    with pytest.raises(CorpusError, match="cut.zip"):
        list(read_moses_zip(z))


def test_moses_zip_bad_crc(tmp_path: Path) -> None:
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("c.es", b"hola\n" * 50)
        zf.writestr("c.en", b"hello\n" * 50)
    blob = good.read_bytes().replace(b"hola\nhola", b"hola\nHola", 1)  # same size, bad CRC
    z = write(tmp_path / "crc.zip", blob)
    with pytest.raises(CorpusError) as err:
        list(read_moses_zip(z))
    assert "crc.zip" in str(err.value) and "download" in str(err.value)


# --------------------------------------------------------------------------- #
# chat formats
# --------------------------------------------------------------------------- #


def test_alternating_pairs_crlf(tmp_path: Path) -> None:
    p = write(tmp_path / "tw.txt", b"q1\r\na1\r\nq2\r\na2\r\n")
    assert list(read_alternating_pairs(p)) == [("q1", "a1"), ("q2", "a2")]


def test_alternating_pairs_odd_drops_last_line(tmp_path: Path, caplog) -> None:
    p = write(tmp_path / "odd.txt", b"q1\na1\nq2\na2\ndangling\n")
    with caplog.at_level(logging.WARNING, logger="rnnlab.data.readers"):
        pairs = list(read_alternating_pairs(p))
    assert pairs == [("q1", "a1"), ("q2", "a2")]
    assert "odd.txt" in caplog.text and "5" in caplog.text


def test_alternating_pairs_empty_side_skipped_keeps_alignment(tmp_path: Path) -> None:
    p = write(tmp_path / "tw.txt", b"q1\n\nq2\na2\n")
    assert list(read_alternating_pairs(p)) == [("q2", "a2")]


def test_conversation_pairs(tmp_path: Path) -> None:
    data = b"a1\na2\na3\n\n\n\nsolo\n\n\n\n\n\nb1\nb2\n\nc1\nc2\n"
    p = write(tmp_path / "conv.txt", data)
    assert list(read_conversation_pairs(p)) == [
        ("a1", "a2"),
        ("a2", "a3"),
        ("b1", "b2"),
        ("c1", "c2"),
    ]


# --------------------------------------------------------------------------- #
# sentiment
# --------------------------------------------------------------------------- #


def test_labelled_sentences_header_and_u0085(tmp_path: Path) -> None:
    data = "reviews\tsentiment\nThe script is\u0085was there a script?  \t0\nGreat\tfun.  \t1\n"
    p = write(tmp_path / "imdb.txt", data.encode())
    assert list(read_labelled_sentences(p)) == [
        ("The script is\u0085was there a script?", 0),
        ("Great\tfun.", 1),
    ]


def test_labelled_sentences_bad_label(tmp_path: Path) -> None:
    p = write(tmp_path / "s.txt", b"good\t1\nbad\t2\n")
    with pytest.raises(CorpusError) as err:
        list(read_labelled_sentences(p))
    assert "s.txt" in str(err.value) and "line 2" in str(err.value)


def test_labelled_sentences_non_integer_after_first_line(tmp_path: Path) -> None:
    p = write(tmp_path / "s.txt", b"good\t1\nbad\tpositive\n")
    with pytest.raises(CorpusError, match="line 2"):
        list(read_labelled_sentences(p))


# --------------------------------------------------------------------------- #
# IDX
# --------------------------------------------------------------------------- #


def _idx_images(n: int) -> tuple[bytes, torch.Tensor]:
    pixels = (torch.arange(n * 28 * 28) % 256).to(torch.uint8).reshape(n, 28, 28)
    header = struct.pack(">IIII", 2051, n, 28, 28)
    return header + bytes(pixels.flatten().tolist()), pixels


def test_idx_images_raw(tmp_path: Path) -> None:
    blob, pixels = _idx_images(3)
    t = read_idx(write(tmp_path / "img-idx3-ubyte", blob))
    assert t.dtype == torch.uint8 and t.shape == (3, 28, 28)
    assert torch.equal(t, pixels)


def test_idx_labels_gzip_detected_by_magic(tmp_path: Path) -> None:
    blob = struct.pack(">II", 2049, 4) + bytes([7, 2, 1, 0])
    t = read_idx(write(tmp_path / "labels.bin", gzip.compress(blob)))  # no .gz name
    assert t.tolist() == [7, 2, 1, 0]


def test_idx_truncated(tmp_path: Path) -> None:
    blob, _ = _idx_images(2)
    p = write(tmp_path / "short.gz", gzip.compress(blob[:-10]))
    with pytest.raises(CorpusError) as err:
        read_idx(p)
    msg = str(err.value)
    assert "short.gz" in msg and str(len(blob)) in msg and str(len(blob) - 10) in msg


def test_idx_truncated_gzip_stream(tmp_path: Path) -> None:
    blob, _ = _idx_images(5)
    gz = gzip.compress(blob)
    with pytest.raises(CorpusError, match="cut.gz"):
        read_idx(write(tmp_path / "cut.gz", gz[: len(gz) // 2]))


def test_idx_wrong_magic(tmp_path: Path) -> None:
    p = write(tmp_path / "text.idx", b"PK\x03\x04" + bytes(20))
    with pytest.raises(CorpusError) as err:
        read_idx(p)
    magic = int.from_bytes(b"PK\x03\x04", "big")
    assert "text.idx" in str(err.value) and str(magic) in str(err.value)


def test_idx_unsupported_dtype(tmp_path: Path) -> None:
    p = write(tmp_path / "f.idx", struct.pack(">II", 0x00000D01, 1) + bytes(4))
    with pytest.raises(CorpusError, match="float32"):
        read_idx(p)


# --------------------------------------------------------------------------- #
# Gutenberg
# --------------------------------------------------------------------------- #


def test_strip_gutenberg_with_markers() -> None:
    text = (
        "\ufeffThe Project Gutenberg eBook\r\n"
        "*** START OF THE PROJECT GUTENBERG EBOOK X ***\r\n"
        "\r\n"
        "Chapter 1\r\n"
        "It was a dark night.\r\n"
        "\r\n"
        "            *** END OF THE PROJECT GUTENBERG EBOOK X ***\r\n"
        "License text\r\n"
    )
    body, found = strip_gutenberg(text)
    assert found is True
    assert body == "Chapter 1\nIt was a dark night.\n"


def test_strip_gutenberg_without_markers() -> None:
    body, found = strip_gutenberg("\ufeffjust\r\ntext\r\n")
    assert (body, found) == ("just\ntext\n", False)


# --------------------------------------------------------------------------- #
# real shared data
# --------------------------------------------------------------------------- #


def shared(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (expected {SHARED_DATA} beside the repo)")
    return path


def test_real_spa_first_1000() -> None:
    pairs = list(read_tsv_pairs(shared("translate", "spa-eng", "spa.txt"), limit=1000))
    assert len(pairs) == 1000
    assert pairs[0] == ("Ve.", "Go.")  # source = Spanish column
    assert any("¿" in src or "¡" in src for src, _ in pairs)


def test_real_twitter_alternating() -> None:
    pairs = list(read_alternating_pairs(shared("chat", "twitter_en_head.txt")))
    assert len(pairs) == 11_477
    assert all(not q.endswith("\r") and not a.endswith("\r") for q, a in pairs)


def test_real_twitter_conversations() -> None:
    pairs = list(read_conversation_pairs(shared("chat", "TwitterConvCorpus.txt")))
    assert len(pairs) == 7_832


@pytest.mark.parametrize(
    ("name", "neg", "pos"),
    [
        ("amazon_cells_labelled.txt", 447, 453),
        ("imdb_labelled.txt", 456, 444),
        ("yelp_labelled.txt", 450, 450),
    ],
)
def test_real_sentiment(name: str, neg: int, pos: int) -> None:
    items = list(read_labelled_sentences(shared("sentiment", name)))
    assert len(items) == 900
    assert Counter(label for _, label in items) == {0: neg, 1: pos}
    assert all(s == s.rstrip(" ") and s for s, _ in items)
    if name == "imdb_labelled.txt":
        assert sum("\u0085" in s for s, _ in items) == 2


def test_real_mnist() -> None:
    images = read_idx(shared("mnist", "t10k-images-idx3-ubyte.gz"))
    labels = read_idx(shared("mnist", "t10k-labels-idx1-ubyte.gz"))
    assert images.shape == (8000, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (8000,)
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert int(images.max()) == 255 and int(images.min()) == 0
    assert Counter(labels.tolist())[1] == 905


def test_real_gutenberg_stripped() -> None:
    path = shared("books", "pg1342_pride_and_prejudice.txt")
    raw = path.read_text(encoding="utf-8")
    body, found = strip_gutenberg(raw)
    assert found is True
    assert "*** START OF" not in body and "*** END OF" not in body
    assert "\r" not in body and not body.startswith("\ufeff")
    # The body begins with the first non-blank line after the START marker.
    lines = raw.replace("\r\n", "\n").split("\n")
    start = next(i for i, ln in enumerate(lines) if "*** START OF" in ln)
    first = next(ln for ln in lines[start + 1 :] if ln.strip())
    assert body.startswith(first)
    assert "It is a truth universally acknowledged" in body
    assert len(body) < len(raw) - 10_000  # the licence boilerplate is gone


def test_real_gutenberg_streams_first_lines() -> None:
    lines = list(islice(read_lines(shared("books", "pg11_alice_in_wonderland.txt")), 2))
    assert lines[0][0] == 1 and not lines[0][1].startswith("\ufeff")
    assert "\r" not in lines[0][1]
