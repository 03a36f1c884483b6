"""TMDB's daily ID export, read as a stream: which file to get, gunzip, line checks, filters.

The export (``movie_ids_MM_DD_YYYY.json.gz``) lists every movie id TMDB has,
one JSON object a line: ``{"adult":false,"id":3924,"original_title":"...",
"popularity":1.8,"video":false}``, about 1.2 million lines. It is published
around 07:00-08:00 UTC, so a run early in the day falls back to the previous
days' files (``export_dates``).

Nothing here holds the file: ``gunzip_lines`` turns an iterable of compressed
chunks into lines with bounded buffers, and the caller writes each accepted
line out as it goes. The decisions (``check_line``, ``sweep_filter``,
``DetailPicker``) are pure.
"""

from __future__ import annotations

import heapq
import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from thresher.jobs.tmdb.client import TmdbError

# How many days back a run looks for a published export: today's may not be out yet, and a
# file older than a few days is better reported than silently used.
EXPORT_LOOKBACK_DAYS = 3
CHUNK_BYTES = 64 * 1024
# A real line is under 300 bytes; anything this long is garbage and must not grow the buffer.
MAX_LINE_BYTES = 64 * 1024


class ExportUnavailable(TmdbError):
    """No export was published for any of the days tried (each answered 404)."""


class ExportCorrupt(TmdbError):
    """The export could not be read to its end: corrupt or truncated gzip, or a download that broke off."""


def export_name(day: date) -> str:
    return f"movie_ids_{day.strftime('%m_%d_%Y')}.json.gz"


def export_url(base_url: str, day: date) -> str:
    return f"{base_url.rstrip('/')}/{export_name(day)}"


def export_dates(now_utc: datetime, lookback_days: int = EXPORT_LOOKBACK_DAYS) -> list[date]:
    """The days whose export to try, newest first: today (UTC) and the ``lookback_days - 1`` before."""
    today = now_utc.date()
    return [today - timedelta(days=back) for back in range(lookback_days)]


def gunzip_lines(chunks: Iterable[bytes], max_line: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """The lines (without their newline) of a gzip stream given as chunks, decompressed as they come.

    Memory stays at about one chunk plus one line whatever the file's size:
    each decompression step is capped at ``CHUNK_BYTES`` of output, and an
    over-long line is yielded cut at ``max_line`` (it fails the line checks)
    instead of being buffered. Raises ``ExportCorrupt`` for bad gzip data or a
    stream that ends before the gzip trailer (a truncated file).
    """
    inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # 16+: expect the gzip header and trailer
    partial = b""
    overflow = False  # inside a line already cut at max_line: drop the rest of it

    def split(data: bytes) -> Iterator[bytes]:
        nonlocal partial, overflow
        lines = (partial + data).split(b"\n")
        partial = lines.pop()
        for line in lines:
            if overflow:
                overflow = False
                continue
            yield line[:max_line]
        if len(partial) > max_line:
            if not overflow:
                yield partial[:max_line]
            overflow, partial = True, b""

    try:
        for chunk in chunks:
            data = chunk
            while data and not inflate.eof:
                out = inflate.decompress(data, CHUNK_BYTES)
                data = inflate.unconsumed_tail
                yield from split(out)
        while not inflate.eof:  # output zlib still holds after the last input (capped steps)
            out = inflate.decompress(b"", CHUNK_BYTES)
            if not out:
                break
            yield from split(out)
        if not inflate.eof:
            raise ExportCorrupt("export ended before its gzip trailer: the file is truncated")
    except zlib.error as err:
        raise ExportCorrupt(f"export is not valid gzip: {err}") from None
    if partial and not overflow:
        yield partial


def response_chunks(response, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """A streamed response's body in chunks; a download that breaks off is an ``ExportCorrupt``."""
    import requests

    try:
        yield from response.iter_content(chunk_bytes)
    except requests.RequestException as err:
        raise ExportCorrupt(f"export download broke off: {err}") from None


def check_line(raw: bytes) -> tuple[dict | None, list[str]]:
    """(the export record, []) for a good line, (None, problems) for a bad one."""
    try:
        record = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None, ["line: not JSON"]
    if not isinstance(record, dict):
        return None, ["line: not an object"]
    problems = []
    movie_id = record.get("id")
    if not (isinstance(movie_id, int) and not isinstance(movie_id, bool) and movie_id > 0):
        problems.append("id: not a positive integer")
    pop = record.get("popularity")
    if not (isinstance(pop, (int, float)) and not isinstance(pop, bool) and pop == pop and pop >= 0):
        problems.append("popularity: not a number >= 0")
    for flag in ("adult", "video"):
        if not isinstance(record.get(flag, False), bool):
            problems.append(f"{flag}: not a boolean")
    title = record.get("original_title", "")
    if not isinstance(title, str):
        problems.append("original_title: not text")
    if problems:
        return None, problems
    return {"id": movie_id, "original_title": title, "popularity": float(pop),
            "adult": record.get("adult", False), "video": record.get("video", False)}, []


def sweep_filter(record: dict, include_adult: bool, include_video: bool, min_popularity: float) -> str | None:
    """Why a valid export record is left out of the sweep (``adult``, ``video``, ``popularity``), or None."""
    if record["adult"] and not include_adult:
        return "adult"
    if record["video"] and not include_video:
        return "video"
    if record["popularity"] < min_popularity:
        return "popularity"
    return None


@dataclass
class DetailPicker:
    """The ``limit`` most popular of the ids offered, in O(limit) memory (a min-heap).

    A capped sweep thus spends its detail requests on the movies people look
    at; the rest are picked up by later sweeps, which see them as new again.
    """

    limit: int
    offered: int = 0
    _heap: list[tuple[float, int]] = field(default_factory=list)

    def offer(self, movie_id: int, popularity: float) -> None:
        self.offered += 1
        if self.limit <= 0:
            return
        item = (popularity, -movie_id)  # ties: the lower id wins
        if len(self._heap) < self.limit:
            heapq.heappush(self._heap, item)
        elif item > self._heap[0]:
            heapq.heapreplace(self._heap, item)

    def chosen(self) -> list[int]:
        """The picked ids, most popular first."""
        return [-neg_id for _, neg_id in sorted(self._heap, reverse=True)]

    @property
    def skipped(self) -> int:
        return self.offered - len(self._heap)


def cap_ids(ids: list[int], limit: int) -> tuple[list[int], int]:
    """(the first ``limit`` ids, how many were left out): the detail cap of changes and enrich runs."""
    return ids[:limit], max(0, len(ids) - limit)
