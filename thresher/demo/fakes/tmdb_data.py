"""Deterministic, realistic-looking TMDB data for the fake server.

Everything derives from a seed and a reference date, never the wall clock, so
two servers with the same settings serve the same bytes. Distributions are
shaped like TMDB's: heavy-tailed popularity and vote counts, ratings around
6.4 (higher for well-voted films), a release-date mix weighted to recent
years, some missing posters and overviews, and empty release dates.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

GENRES = {
    28: "Action", 12: "Adventure", 16: "Animation", 35: "Comedy", 80: "Crime", 99: "Documentary",
    18: "Drama", 10751: "Family", 14: "Fantasy", 36: "History", 27: "Horror", 10402: "Music",
    9648: "Mystery", 10749: "Romance", 878: "Science Fiction", 10770: "TV Movie", 53: "Thriller",
    10752: "War", 37: "Western",
}
_GENRE_WEIGHTS = {18: 9, 35: 8, 28: 6, 53: 6, 27: 5, 10749: 5, 80: 4, 12: 4, 99: 4, 878: 3, 14: 3,
                  16: 3, 10751: 3, 9648: 2, 36: 2, 10402: 2, 10752: 1, 10770: 1, 37: 1}
_LANGS = ["en"] * 12 + ["fr", "fr", "es", "es", "ja", "ja", "ko", "de", "it", "hi", "zh", "pt", "sv"]
_ADJ = ["Silent", "Broken", "Golden", "Last", "Hidden", "Crimson", "Endless", "Midnight", "Savage", "Lost",
        "Electric", "Frozen", "Burning", "Wild", "Secret", "Distant", "Hollow", "Iron", "Velvet", "Paper"]
_NOUN = ["River", "Kingdom", "Signal", "Garden", "Horizon", "Witness", "Harbor", "Machine", "Summer",
         "Promise", "Empire", "Shadow", "Orchard", "Voyage", "Letters", "Frontier", "Mirror", "Storm",
         "Parade", "Island"]
_TAIL = ["", "", "", "", " II", " Returns", " Rising", ": Origins", " of the North", " at Dawn"]


def unit(*parts: object) -> float:
    """A stable pseudo-random number in [0, 1) from the parts (same on every platform and run)."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass
class FakeCatalog:
    movies: list[dict]  # list-record form, by id order
    by_id: dict[int, dict]
    reference: date


def generate(seed: int = 7, count: int = 15000, reference: date = date(2025, 6, 1),
             bad_data_rate: float = 0.0) -> FakeCatalog:
    rng = random.Random(seed)
    genre_pool = [g for g, w in _GENRE_WEIGHTS.items() for _ in range(w)]
    movies = []
    for i in range(count):
        movie_id = 11 + i * 7 + rng.randrange(7)  # sparse ids, like TMDB's
        roll = rng.random()
        if roll < 0.05:  # upcoming
            released = reference + timedelta(days=rng.randrange(1, 120))
        elif roll < 0.45:  # the last three years
            released = reference - timedelta(days=rng.randrange(0, 3 * 365))
        else:
            released = date(1950, 1, 1) + timedelta(days=rng.randrange(0, (reference - date(1950, 1, 1)).days))
        votes = 0 if released > reference else min(36000, int(rng.paretovariate(0.9) * 12) - 12)
        if votes >= 300:
            rating = min(9.4, max(2.0, rng.gauss(7.1, 0.75)))
        elif votes > 0:
            rating = min(10.0, max(0.5, rng.gauss(6.2, 1.3)))
        else:
            rating = 0.0
        genres = sorted(set(rng.choice(genre_pool) for _ in range(rng.randint(1, 3))))
        title = f"The {rng.choice(_ADJ)} {rng.choice(_NOUN)}{rng.choice(_TAIL)}"
        lang = rng.choice(_LANGS)
        movie = {
            "adult": False,
            "backdrop_path": None if rng.random() < 0.12 else f"/b{movie_id:07d}.jpg",
            "genre_ids": genres,
            "id": movie_id,
            "original_language": lang,
            "original_title": title if lang == "en" else f"{title} ({lang})",
            "overview": "" if rng.random() < 0.04 else f"{title}: a {GENRES[genres[0]].lower()} story.",
            "popularity": round(min(2500.0, rng.paretovariate(1.3) * 4) + votes / 800, 3),
            "poster_path": None if rng.random() < 0.06 else f"/p{movie_id:07d}.jpg",
            "release_date": "" if rng.random() < 0.02 else released.isoformat(),
            "title": title,
            "video": False,
            "vote_average": round(rating, 3),
            "vote_count": votes,
        }
        if bad_data_rate and unit(seed, "bad", movie_id) < bad_data_rate:
            _corrupt(movie, unit(seed, "how", movie_id))
        movies.append(movie)
    return FakeCatalog(movies, {m["id"]: m for m in movies}, reference)


def _corrupt(movie: dict, how: float) -> None:
    """Break one movie the ways upstream data breaks: out-of-range, malformed, missing, wrong type."""
    if how < 0.25:
        movie["vote_average"] = 11.5
    elif how < 0.5:
        movie["release_date"] = "2021-13-40"
    elif how < 0.75:
        movie["title"] = ""
    else:
        movie["vote_count"] = "many"


def details(movie: dict, append: list[str], seed: int) -> dict:
    """/movie/{id}: the list record plus detail fields, genres as objects, and appended responses."""
    mid = movie["id"]
    u = unit(seed, "detail", mid)
    record = {k: v for k, v in movie.items() if k != "genre_ids"}
    record.update({
        "genres": [{"id": g, "name": GENRES.get(g, "Unknown")} for g in movie.get("genre_ids", [])],
        "runtime": 80 + int(u * 80),
        "budget": int(u * 200) * 1_000_000 if u > 0.3 else 0,
        "revenue": int(u * u * 900) * 1_000_000 if u > 0.4 else 0,
        "status": "Released" if movie.get("vote_count") else "Post Production",
        "tagline": "" if u < 0.2 else f"Tagline {mid}",
        "imdb_id": f"tt{1000000 + mid:07d}",
        "homepage": "",
        "belongs_to_collection": None,
        "spoken_languages": [{"iso_639_1": movie.get("original_language", "en"), "name": ""}],
        "production_countries": [{"iso_3166_1": "US", "name": "United States of America"}],
    })
    for name in append:
        record[name] = _appended(name, mid, seed)
    return record


def _appended(name: str, mid: int, seed: int) -> dict:
    if name == "credits":
        return {"id": mid,
                "cast": [{"id": 9000 + (mid * 3 + k) % 5000, "name": f"Actor {(mid * 3 + k) % 5000}",
                          "character": f"Role {k}", "order": k} for k in range(5)],
                "crew": [{"id": 20000 + mid % 3000, "name": f"Director {mid % 3000}", "job": "Director"}]}
    if name == "keywords":
        return {"id": mid, "keywords": [{"id": 100 + (mid + k) % 900, "name": f"keyword {(mid + k) % 900}"}
                                        for k in range(3)]}
    if name == "external_ids":
        return {"id": mid, "imdb_id": f"tt{1000000 + mid:07d}", "wikidata_id": f"Q{mid}"}
    if name == "release_dates":
        return {"id": mid, "results": [{"iso_3166_1": "US", "release_dates": [{"certification": "PG-13", "type": 3}]}]}
    if name == "videos":
        return {"id": mid, "results": [{"key": f"v{mid}", "site": "YouTube", "type": "Trailer"}]}
    return {"id": mid, "results": []}


def changed_ids(seed: int, day: date, catalog: FakeCatalog, per_day: int) -> list[tuple[int, bool]]:
    """The (id, adult) pairs /movie/changes lists for one day: mostly known movies, a few deleted
    (unknown ids, which answer 404) and a few adult ones."""
    ids = [m["id"] for m in catalog.movies]
    rng = random.Random(f"{seed}-changes-{day.isoformat()}")
    picked = rng.sample(ids, min(per_day, len(ids)))
    out = [(mid, False) for mid in picked]
    out.append((ids[-1] + 1000 + day.toordinal() % 97, False))  # a movie deleted since
    out.append((ids[-1] + 5000 + day.toordinal() % 89, True))  # an adult entry
    return out


# Broken lines the export may carry: not JSON, cut short, a string id, a negative popularity.
_BAD_EXPORT_LINES = (b"<html>oops</html>", b'{"adult":false,"id":12,"original_title":"Cut',
                     b'{"adult":false,"id":"13","original_title":"String id","popularity":1.0,"video":false}',
                     b'{"adult":false,"id":14,"original_title":"Negative","popularity":-3,"video":false}')


def export_entries(catalog: FakeCatalog, seed: int, extra_ids: int = 0,
                   bad_line_rate: float = 0.0) -> Iterator[dict | bytes]:
    """The daily ID export, entry by entry: a dict for a good line, raw bytes for a broken one.

    Every catalog movie (about 2% flagged video), then ``extra_ids`` ids the
    API does not serve (a big export at little cost), then a few adult ids;
    ``bad_line_rate`` of the lines are replaced by broken ones.
    """
    last = catalog.movies[-1]["id"] if catalog.movies else 10

    def entries() -> Iterator[dict]:
        for movie in catalog.movies:
            yield {"adult": False, "id": movie["id"], "original_title": movie["original_title"],
                   "popularity": movie["popularity"], "video": unit(seed, "video", movie["id"]) < 0.02}
        for k in range(extra_ids):
            mid = last + 7 * (k + 1)
            yield {"adult": False, "id": mid, "original_title": f"Extra {mid}",
                   "popularity": round(unit(seed, "extra", mid) * 3, 3), "video": False}
        for k in range(max(1, len(catalog.movies) // 100)):
            mid = last + 7 * (extra_ids + k + 1)
            yield {"adult": True, "id": mid, "original_title": f"Adult {mid}",
                   "popularity": round(unit(seed, "adult", mid) * 5, 3), "video": False}

    for n, entry in enumerate(entries()):
        if bad_line_rate and unit(seed, "bad-line", n) < bad_line_rate:
            yield _BAD_EXPORT_LINES[n % len(_BAD_EXPORT_LINES)]
        else:
            yield entry
