"""Pure data-quality logic: validate movies, de-duplicate them, score the run, apply thresholds.

Quality score (documented in docs/tmdb.md):

* ``quality`` = valid unique movies / unique movies (0..1; 1.0 for an empty run
  is avoided: an empty run has quality 0 and is caught by ``min_items``);
* ``completeness`` = mean, over valid movies, of the share of optional fields
  that are filled (overview, poster, backdrop, release date, genres, language).

A movie is valid when its required fields are present with the right types and
ranges: id (integer > 0), title (non-empty text), popularity (number >= 0),
vote_average (number 0-10), vote_count (integer >= 0), release_date (YYYY-MM-DD,
or empty: TMDB's "unknown"), plus genre_ids/genres, adult, when present.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any

REQUIRED = ("id", "title", "popularity", "vote_average", "vote_count", "release_date")
OPTIONAL_FILLED = ("overview", "poster_path", "backdrop_path", "release_date", "genres", "original_language")

# Soft expectations that produce warnings (never a failing exit) when no threshold is given.
DEFAULT_WARN_QUALITY = 0.95
DEFAULT_WARN_COMPLETENESS = 0.80


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and value == value  # not NaN


def _valid_date(text: str) -> bool:
    if len(text) != 10 or text[4] != "-" or text[7] != "-":
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def validate_movie(movie: Any) -> list[str]:
    """Problems with one movie record; empty when it is valid. Each problem is ``field: what``."""
    if not isinstance(movie, dict):
        return [f"record: not an object ({type(movie).__name__})"]
    problems = [f"{name}: missing" for name in REQUIRED if name not in movie or movie[name] is None]
    if "id" in movie and movie["id"] is not None and not (_is_int(movie["id"]) and movie["id"] > 0):
        problems.append("id: not a positive integer")
    title = movie.get("title")
    if title is not None and not (isinstance(title, str) and title.strip()):
        problems.append("title: empty or not text")
    pop = movie.get("popularity")
    if pop is not None and not (_is_number(pop) and pop >= 0):
        problems.append("popularity: not a number >= 0")
    avg = movie.get("vote_average")
    if avg is not None and not (_is_number(avg) and 0 <= avg <= 10):
        problems.append("vote_average: not a number in 0-10")
    count = movie.get("vote_count")
    if count is not None and not (_is_int(count) and count >= 0):
        problems.append("vote_count: not an integer >= 0")
    released = movie.get("release_date")
    if released is not None and not (isinstance(released, str) and (released == "" or _valid_date(released))):
        problems.append("release_date: not YYYY-MM-DD")
    genre_ids = movie.get("genre_ids")
    if genre_ids is not None and not (isinstance(genre_ids, list) and all(_is_int(g) for g in genre_ids)):
        problems.append("genre_ids: not a list of integers")
    genres = movie.get("genres")
    if genres is not None and not (
        isinstance(genres, list) and all(isinstance(g, dict) and _is_int(g.get("id")) for g in genres)
    ):
        problems.append("genres: not a list of {id, name}")
    if "adult" in movie and not isinstance(movie["adult"], bool):
        problems.append("adult: not a boolean")
    return problems


def genre_ids_of(movie: dict) -> list[int]:
    """Genre ids from a list record (genre_ids) or a detail record (genres[].id)."""
    ids = movie.get("genre_ids")
    if isinstance(ids, list):
        return [g for g in ids if _is_int(g)]
    genres = movie.get("genres")
    if isinstance(genres, list):
        return [g["id"] for g in genres if isinstance(g, dict) and _is_int(g.get("id"))]
    return []


def completeness(movie: dict) -> float:
    """Share of the optional fields that carry a value (0..1)."""
    filled = 0
    for name in OPTIONAL_FILLED:
        value = genre_ids_of(movie) if name == "genres" else movie.get(name)
        if value not in (None, "", [], {}):
            filled += 1
    return filled / len(OPTIONAL_FILLED)


@dataclass(frozen=True)
class Observation:
    """One movie as one response showed it."""

    movie: dict
    source: str  # e.g. popular:3, or details
    fetched_at: float  # unix seconds
    detail: bool = False  # from /movie/{id}: the fullest form


@dataclass
class Deduped:
    """The result of de-duplication: one record per id, plus what could not be keyed."""

    movies: list[dict]  # best record per id, with "_sources" and "_fetched_at"
    unkeyed: list[dict]  # records without a usable id (always invalid)
    duplicates: int  # observations folded into another


def _rank(obs: Observation) -> tuple:
    # Best = fullest (detail), then valid, then most complete, then most recent.
    return (obs.detail, not validate_movie(obs.movie), completeness(obs.movie), obs.fetched_at)


def dedupe(observations: list[Observation]) -> Deduped:
    """Keep one record per movie id: the best observation, tagged with every source that showed it.

    Deterministic: the order of the output is by first appearance, and ties
    in rank keep the earliest observation.
    """
    best: dict[int, Observation] = {}
    sources: dict[int, list[str]] = {}
    order: list[int] = []
    unkeyed: list[dict] = []
    duplicates = 0
    for obs in observations:
        movie_id = obs.movie.get("id") if isinstance(obs.movie, dict) else None
        if not (_is_int(movie_id) and movie_id > 0):
            unkeyed.append(obs.movie if isinstance(obs.movie, dict) else {"_record": obs.movie})
            continue
        if movie_id in best:
            duplicates += 1
            if _rank(obs) > _rank(best[movie_id]):
                best[movie_id] = obs
        else:
            best[movie_id] = obs
            order.append(movie_id)
            sources[movie_id] = []
        if obs.source not in sources[movie_id]:
            sources[movie_id].append(obs.source)
    movies = []
    for movie_id in order:
        obs = best[movie_id]
        record = {k: v for k, v in obs.movie.items() if not k.startswith("_")}
        record["_sources"] = sources[movie_id]
        record["_fetched_at"] = obs.fetched_at
        movies.append(record)
    return Deduped(movies, unkeyed, duplicates)


@dataclass
class QualityReport:
    observed: int  # records received, duplicates included
    items: int  # unique movies (plus unkeyed records)
    valid: int
    invalid: int
    duplicates: int
    quality: float
    completeness: float
    problems: dict[str, int] = field(default_factory=dict)  # problem -> count, most common first

    def as_dict(self) -> dict:
        return {
            "observed": self.observed, "items": self.items, "valid": self.valid, "invalid": self.invalid,
            "duplicates": self.duplicates, "quality": self.quality, "completeness": self.completeness,
            "problems": self.problems,
        }


def split_valid(deduped: Deduped) -> tuple[list[dict], list[dict]]:
    """(valid movies, rejected records each with a ``_problems`` list)."""
    valid, rejected = [], []
    for movie in deduped.movies:
        problems = validate_movie({k: v for k, v in movie.items() if not k.startswith("_")})
        if problems:
            rejected.append({**movie, "_problems": problems})
        else:
            valid.append(movie)
    for record in deduped.unkeyed:
        rejected.append({**record, "_problems": validate_movie(record) or ["id: missing"]})
    return valid, rejected


def assess(observed: int, deduped: Deduped, valid: list[dict], rejected: list[dict]) -> QualityReport:
    items = len(valid) + len(rejected)
    problems = Counter(p for record in rejected for p in record["_problems"])
    return QualityReport(
        observed=observed,
        items=items,
        valid=len(valid),
        invalid=len(rejected),
        duplicates=deduped.duplicates,
        quality=round(len(valid) / items, 4) if items else 0.0,
        completeness=round(sum(completeness(m) for m in valid) / len(valid), 4) if valid else 0.0,
        problems=dict(problems.most_common(20)),
    )


@dataclass(frozen=True)
class Thresholds:
    min_quality_rate: float | None = None
    min_items: int | None = None


def threshold_findings(report: QualityReport, thresholds: Thresholds) -> tuple[list[str], bool]:
    """(warnings, failed): failed only when an explicit threshold is missed; soft defaults only warn."""
    warnings: list[str] = []
    failed = False
    if thresholds.min_quality_rate is not None and report.quality < thresholds.min_quality_rate:
        warnings.append(f"quality {report.quality:.3f} below the minimum {thresholds.min_quality_rate:.3f} "
                        f"({report.invalid} of {report.items} movies invalid)")
        failed = True
    elif report.items and report.quality < DEFAULT_WARN_QUALITY:
        warnings.append(f"quality {report.quality:.3f} below {DEFAULT_WARN_QUALITY} "
                        f"({report.invalid} of {report.items} movies invalid)")
    if thresholds.min_items is not None and report.items < thresholds.min_items:
        warnings.append(f"{report.items} movies collected, below the minimum {thresholds.min_items}")
        failed = True
    if report.valid and report.completeness < DEFAULT_WARN_COMPLETENESS:
        warnings.append(f"field completeness {report.completeness:.3f} below {DEFAULT_WARN_COMPLETENESS}")
    if report.problems:
        top = ", ".join(f"{name} x{count}" for name, count in list(report.problems.items())[:3])
        warnings.append(f"invalid records: {top}")
    return warnings, failed
