"""Reading a translation corpus (the `TranslationData` mixin): which files `data.corpus` and
`data.path` name, downloading the OPUS zips, streaming their (source, target) pairs, and
cleaning them (tokenise, filter by length, drop duplicates)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

from rnnlab.data.download import DownloadError, check_zip, download
from rnnlab.data.readers import CorpusError, read_pair_files
from rnnlab.errors import DataError, require, require_one_of

log = logging.getLogger(__name__)

CORPORA = ("files", "tatoeba", "opensubtitles")
# Versioned OPUS releases, but OPUS publishes no checksums and none could be confirmed offline,
# so nothing is pinned: check_zip tests every member's CRC, which catches truncated downloads.
OPUS_URLS = {
    "tatoeba": "https://object.pouta.csc.fi/OPUS-Tatoeba/v2023-04-12/moses/{pair}.txt.zip",
    "opensubtitles": "https://object.pouta.csc.fi/OPUS-OpenSubtitles/v2018/moses/{pair}.txt.zip",
}


class PairFiles:
    """Reading and cleaning for a datamodule with the corpus settings of `TranslationData`
    (`corpus`, `path`, `url`, `data_dir`, languages, columns, `max_pairs`, `tokenizer`,
    `max_length`, `max_length_ratio`); chat overrides where its files differ."""

    # What a data.path file should be, for the message when one is missing; how many it takes.
    path_hint = (
        "the book's corpus is spa.txt from manythings.org/anki; or use data.corpus=tatoeba to "
        "download"
    )
    path_counts: tuple[int, ...] | None = (1, 2)  # one file (TSV or zip) or a Moses pair

    def _check_source(self, corpus: str, path: str | Sequence[str] | None) -> None:
        require_one_of(corpus, CORPORA, "data.corpus")
        require(
            corpus != "files" or bool(path),
            "data.path",
            "data.corpus=files needs data.path: a TSV file (English<TAB>Spanish), a Moses pair "
            "[x.es, x.en] or an OPUS zip; or use data.corpus=tatoeba to download one",
        )

    def _download(self) -> Path:
        pair = "-".join(sorted((self.source_lang, self.target_lang)))
        url = self.url or OPUS_URLS[self.corpus].format(pair=pair)
        try:
            return download(
                url, self.data_dir / f"{self.corpus}.{pair}.txt.zip", validate=check_zip
            )
        except DownloadError as error:
            raise DataError(
                f"{error} (data.corpus={self.corpus}). Or train on a file you have: "
                "data.corpus=files data.path=<spa.txt, [x.es, x.en] or an OPUS zip>"
            ) from None

    def _files(self) -> list[Path]:
        """The training corpus: a named one (downloaded) or `data.path`'s files."""
        if self.corpus == "files":
            return self._path_files(self.path)
        if self.corpus == "opensubtitles" and self.max_pairs is None and not self.streaming:
            log.warning(
                "OpenSubtitles en-es holds ~60M pairs and all of them will be read: set "
                "data.max_pairs (e.g. 1000000) for a run that fits in memory, or stream it from "
                "shards: data.streaming=true"
            )
        return [self._download()]

    def _path_files(self, path: str | Sequence[str]) -> list[Path]:
        """The files `data.path` names: one (TSV or zip) or a Moses pair [source, target]."""
        paths = [path] if isinstance(path, (str, Path)) else list(path)
        require(
            self.path_counts is None or len(paths) in self.path_counts,
            "data.path",
            f"give one file (TSV or zip) or a Moses pair [source, target], got {len(paths)} paths",
        )
        files = [Path(p).expanduser() for p in paths]
        for file in files:
            if not file.is_file():
                raise DataError(
                    f"data.path: {file} does not exist or is not a file ({self.path_hint})"
                )
        return files

    def read_pairs(self, files: Sequence[Path] | None = None) -> Iterator[tuple[str, str]]:
        """(source, target) strings, streamed, at most `max_pairs`, of a TSV, a Moses pair or an
        OPUS zip (`read_pair_files` tells them apart)."""
        options = {"source_lang": self.source_lang, "target_lang": self.target_lang}
        options.update(source_column=self.source_column, target_column=self.target_column)
        try:
            files = list(files) if files is not None else self._files()
            yield from read_pair_files(files, **options, limit=self.max_pairs)
        except CorpusError as error:
            raise DataError(str(error)) from None

    def _reject(self, src: list[str], tgt: list[str]) -> str | None:
        """Why a tokenised pair is filtered out (a config key to loosen), or None to keep it."""
        if self.max_length is not None and max(len(src), len(tgt)) > self.max_length:
            return "data.max_length"
        ratio = max(len(src), len(tgt)) / min(len(src), len(tgt))
        if self.max_length_ratio is not None and ratio > self.max_length_ratio:
            return "data.max_length_ratio"
        return None

    def _clean(self, pairs: Iterator[tuple[str, str]]) -> list[tuple[str, list[str], list[str]]]:
        """Tokenise, filter (`_reject`), drop duplicates; counts in `stats`."""
        kept, seen = [], set()
        stats = dict.fromkeys(("read", "empty", "duplicates", "kept"), 0)
        for source, target in pairs:
            stats["read"] += 1
            src, tgt = self.tokenizer(source), self.tokenizer(target)
            if not src or not tgt:  # e.g. a line of only spaces after normalisation
                stats["empty"] += 1
                continue
            reason = self._reject(src, tgt)
            if reason is not None:
                stats[reason] = stats.get(reason, 0) + 1
                continue
            key = (tuple(src), tuple(tgt))
            if key in seen:
                stats["duplicates"] += 1
                continue
            seen.add(key)
            kept.append((source, src, tgt, target))
        stats["kept"] = len(kept)
        self.stats = stats
        for reason in (key for key in stats if key.startswith("data.")):
            count, total, limit = stats[reason], stats["read"], getattr(self, reason[5:])
            log.warning("dropped %d of %d pairs outside %s=%s", count, total, reason, limit)
        if stats["empty"]:
            log.info("skipped %d pairs with an empty side", stats["empty"])
        if stats["duplicates"]:
            log.info("dropped %d duplicate pairs", stats["duplicates"])
        return kept
