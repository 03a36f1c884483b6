"""Movies as a typed table: the Parquet snapshot and ``thresher job tmdb export``.

The JSON-lines files stay the record of what TMDB answered; this module gives
the people who train models and run analytics a stable, typed view of the same
rows: ids as integers, dates as dates, numbers as numbers, genres as a list of
integers, fetch time as a UTC timestamp. Everything a record has beyond the
typed columns (appended credits, production countries, ...) is kept, as JSON
text, in ``extra``, so no field is lost.

The schema is versioned (``SCHEMA_VERSION``, in the Parquet file's metadata and
in the snapshot manifest): a change of a column's name or type, or its
removal, bumps it; adding a column at the end does too. Readers check it.

pyarrow is the library: the reference implementation of Arrow and Parquet,
kept by the Apache Arrow project, and what pandas, Polars, DuckDB and Spark
read without conversion. It is imported lazily (it costs ~0.2 s).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

SCHEMA_NAME = "tmdb-movies"
SCHEMA_VERSION = 1
PARQUET_FILE = "movies.parquet"
FORMATS = ("parquet", "csv", "jsonl")

# (column, Arrow type name, where it comes from, nullable). One source of truth: the Arrow schema,
# the CSV header and the docs table (docs/tmdb.md) follow this order.
COLUMNS: tuple[tuple[str, str, str, bool], ...] = (
    ("id", "int64", "id", False),
    ("title", "string", "title", False),
    ("original_title", "string", "original_title", True),
    ("original_language", "string", "original_language", True),
    ("overview", "string", "overview", True),
    ("release_date", "date32", "release_date", True),  # TMDB's "" (unknown) is null
    ("popularity", "float64", "popularity", True),
    ("vote_average", "float64", "vote_average", True),
    ("vote_count", "int64", "vote_count", True),
    ("adult", "bool", "adult", True),
    ("video", "bool", "video", True),
    ("genre_ids", "list<int32>", "genre_ids", True),
    ("poster_path", "string", "poster_path", True),
    ("backdrop_path", "string", "backdrop_path", True),
    ("runtime", "int32", "runtime", True),  # detail records only (enrich, changes, sweep)
    ("budget", "int64", "budget", True),
    ("revenue", "int64", "revenue", True),
    ("status", "string", "status", True),
    ("imdb_id", "string", "imdb_id", True),
    ("tagline", "string", "tagline", True),
    ("enriched", "bool", "_enriched", False),  # false when absent
    ("sources", "list<string>", "_sources", True),
    ("fetched_at", "timestamp[ms, UTC]", "_fetched_at", True),
    ("extra", "string", "", True),  # JSON object of every other field; null when none
)
_TYPED_KEYS = frozenset(source for _, _, source, _ in COLUMNS if source)
# Detail records carry genres as objects; genre_ids (the list form) is what the typed column holds.
_DROPPED_KEYS = frozenset({"genres"})


class TabularError(ValueError):
    """A record that does not fit the schema (a bug upstream: only valid records get here)."""


def require_pyarrow():
    """pyarrow, or a clear error naming the missing extra."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401 - the submodule is what we need
    except ImportError:
        raise ImportError("pyarrow is needed for Parquet snapshots and exports: "
                          "pip install 'thresher[jobs]'") from None
    return pyarrow


def arrow_schema():
    pa = require_pyarrow()
    types = {"int64": pa.int64(), "int32": pa.int32(), "string": pa.string(), "float64": pa.float64(),
             "bool": pa.bool_(), "date32": pa.date32(), "list<int32>": pa.list_(pa.int32()),
             "list<string>": pa.list_(pa.string()), "timestamp[ms, UTC]": pa.timestamp("ms", tz="UTC")}
    fields = [pa.field(name, types[kind], nullable=nullable) for name, kind, _, nullable in COLUMNS]
    return pa.schema(fields, metadata={"thresher.schema": SCHEMA_NAME,
                                       "thresher.schema_version": str(SCHEMA_VERSION)})


def _date(value: Any) -> date | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise TabularError(f"release_date {value!r} is not a YYYY-MM-DD string")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise TabularError(f"release_date {value!r} is not a YYYY-MM-DD date") from None


def _number(name: str, value: Any, kind: type) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TabularError(f"{name} {value!r} is not a number")
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise TabularError(f"{name} {value!r} is not an integer")
        return int(value)
    return float(value)


def movie_row(record: dict) -> dict:
    """One movie record (a line of movies.jsonl) as a row of the typed schema."""
    if not isinstance(record.get("id"), int) or isinstance(record.get("id"), bool):
        raise TabularError(f"record without an integer id: {str(record)[:80]}")
    fetched = record.get("_fetched_at")
    extra = {k: v for k, v in record.items() if k not in _TYPED_KEYS and k not in _DROPPED_KEYS}
    return {
        "id": record["id"],
        "title": record.get("title"),
        "original_title": record.get("original_title"),
        "original_language": record.get("original_language"),
        "overview": record.get("overview"),
        "release_date": _date(record.get("release_date")),
        "popularity": _number("popularity", record.get("popularity"), float),
        "vote_average": _number("vote_average", record.get("vote_average"), float),
        "vote_count": _number("vote_count", record.get("vote_count"), int),
        "adult": record.get("adult"),
        "video": record.get("video"),
        "genre_ids": [_number("genre_ids", g, int) for g in record["genre_ids"]]
        if isinstance(record.get("genre_ids"), list) else None,
        "poster_path": record.get("poster_path"),
        "backdrop_path": record.get("backdrop_path"),
        "runtime": _number("runtime", record.get("runtime"), int),
        "budget": _number("budget", record.get("budget"), int),
        "revenue": _number("revenue", record.get("revenue"), int),
        "status": record.get("status"),
        "imdb_id": record.get("imdb_id"),
        "tagline": record.get("tagline"),
        "enriched": bool(record.get("_enriched")),
        "sources": list(record["_sources"]) if isinstance(record.get("_sources"), list) else None,
        "fetched_at": datetime.fromtimestamp(float(fetched), tz=timezone.utc)
        if isinstance(fetched, (int, float)) and not isinstance(fetched, bool) and fetched > 0 else None,
        "extra": json.dumps(extra, ensure_ascii=False, sort_keys=True, separators=(",", ":")) if extra else None,
    }


def to_table(records: Iterable[dict]):
    """An Arrow table of the typed schema from movie records."""
    pa = require_pyarrow()
    schema = arrow_schema()
    rows = [movie_row(r) for r in records]
    try:
        return pa.Table.from_pylist(rows, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise TabularError(f"records do not fit schema {SCHEMA_NAME} v{SCHEMA_VERSION}: {err}") from None


def parquet_bytes(records: Iterable[dict]) -> tuple[bytes, int]:
    """The records as a Parquet file in memory (zstd, one row group per 64k rows) and its row count."""
    pa = require_pyarrow()
    import pyarrow.parquet as pq

    table = to_table(records)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", row_group_size=65536)
    return sink.getvalue().to_pybytes(), table.num_rows


def schema_version_of(path: Path) -> int | None:
    """The schema version a Parquet file says it has (None if it says none)."""
    require_pyarrow()
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    value = meta.get(b"thresher.schema_version")
    return int(value) if value is not None else None


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ";".join(str(v) for v in value)  # genre_ids 28;35, sources popular:1;trending_day:1
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def write_table(records: Iterable[dict], fmt: str, out: Path | None) -> int:
    """Write movie records as ``fmt`` to ``out`` (None: stdout, csv and jsonl only); return the rows."""
    import sys

    if fmt == "parquet":
        data, rows = parquet_bytes(records)
        _write_bytes(out, data)
        return rows
    rows = 0
    buffer = io.StringIO()
    if fmt == "csv":
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([name for name, _, _, _ in COLUMNS])
        for record in records:
            row = movie_row(record)
            writer.writerow([_csv_cell(row[name]) for name, _, _, _ in COLUMNS])
            rows += 1
    elif fmt == "jsonl":
        for record in records:
            buffer.write(json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n")
            rows += 1
    else:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if out is None:
        sys.stdout.write(buffer.getvalue())
        sys.stdout.flush()
    else:
        _write_bytes(out, buffer.getvalue().encode())
    return rows


def _write_bytes(out: Path | None, data: bytes) -> None:
    from thresher.jobs.harness import atomic_write_bytes

    if out is None:
        raise ValueError("parquet is binary: give --output FILE")
    atomic_write_bytes(Path(out), data)
