"""Pure report building for weekly and monthly runs: JSON data and a self-contained HTML page.

The HTML page has no scripts and no external resources (charts are inline SVG
bars), so it opens from a PVC, an artifact store or an e-mail attachment alike.
"""

from __future__ import annotations

import html
from collections import Counter

from thresher.jobs.tmdb.quality import genre_ids_of

# The old scheduler's rating bands, kept for parity. Movies without votes are
# reported apart: their vote_average of 0 says "unrated", not "bad".
RATING_BANDS = (("9-10", 9.0, 10.0), ("8-8.9", 8.0, 9.0), ("7-7.9", 7.0, 8.0), ("6-6.9", 6.0, 7.0),
                ("5-5.9", 5.0, 6.0), ("0-4.9", 0.0, 5.0))
UNRATED = "unrated"

# TMDB's movie genres (/genre/movie/list, en-US), used when the run could not fetch the list.
DEFAULT_GENRES = {
    28: "Action", 12: "Adventure", 16: "Animation", 35: "Comedy", 80: "Crime", 99: "Documentary",
    18: "Drama", 10751: "Family", 14: "Fantasy", 36: "History", 27: "Horror", 10402: "Music",
    9648: "Mystery", 10749: "Romance", 878: "Science Fiction", 10770: "TV Movie", 53: "Thriller",
    10752: "War", 37: "Western",
}


def rating_band(vote_average: float, vote_count: int) -> str:
    if not vote_count:
        return UNRATED
    for name, low, high in RATING_BANDS:
        if low <= vote_average < high or (high == 10.0 and vote_average == 10.0):
            return name
    return RATING_BANDS[-1][0]


def build_report(movies: list[dict], kind: str, generated_at: str, genre_names: dict[int, str] | None = None,
                 top_n: int = 10) -> dict:
    """Top movies by popularity, genre distribution, rating bands, release years, languages."""
    names = {**DEFAULT_GENRES, **(genre_names or {})}
    top = sorted(movies, key=lambda m: (-float(m.get("popularity") or 0), m.get("id", 0)))[:top_n]
    genres: Counter = Counter()
    for movie in movies:
        for gid in genre_ids_of(movie):
            genres[names.get(gid, f"genre {gid}")] += 1
    bands = Counter(rating_band(float(m.get("vote_average") or 0), int(m.get("vote_count") or 0)) for m in movies)
    years = Counter((m.get("release_date") or "")[:4] or "unknown" for m in movies)
    languages = Counter(m.get("original_language") or "unknown" for m in movies)
    rated = [float(m["vote_average"]) for m in movies if m.get("vote_count")]
    return {
        "kind": kind,
        "generatedAt": generated_at,
        "movies": len(movies),
        "meanVoteAverage": round(sum(rated) / len(rated), 3) if rated else None,
        "topByPopularity": [
            {"id": m.get("id"), "title": m.get("title"), "popularity": m.get("popularity"),
             "voteAverage": m.get("vote_average"), "voteCount": m.get("vote_count"),
             "releaseDate": m.get("release_date")}
            for m in top
        ],
        "genreDistribution": dict(sorted(genres.items(), key=lambda kv: (-kv[1], kv[0]))),
        "ratingBands": {name: bands.get(name, 0) for name, _, _ in RATING_BANDS} | {UNRATED: bands.get(UNRATED, 0)},
        "releaseYears": dict(sorted(years.items(), reverse=True)[:15]),
        "languages": dict(languages.most_common(10)),
    }


def _bars(title: str, data: dict[str, int | float], width: int = 520) -> str:
    """A horizontal bar chart as inline SVG."""
    esc = html.escape
    if not data:
        return f"<h2>{esc(title)}</h2><p>No data.</p>"
    row, label_w, value_w = 22, 150, 60
    peak = max(float(v) for v in data.values()) or 1.0
    bar_w = width - label_w - value_w
    parts = [f'<h2>{esc(title)}</h2>',
             f'<svg role="img" aria-label="{esc(title)}" width="{width}" height="{row * len(data) + 4}" '
             f'xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="12">']
    for i, (label, value) in enumerate(data.items()):
        y = i * row + 2
        w = max(1.0, bar_w * float(value) / peak) if value else 0.0
        parts.append(f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">{esc(str(label))}</text>'
                     f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{row - 6}" fill="#3b7dd8"/>'
                     f'<text x="{label_w + w + 4:.1f}" y="{y + 14}">{esc(str(value))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(report: dict) -> str:
    """A self-contained HTML page for a report (no scripts, no external resources)."""
    esc = html.escape
    rows = "".join(
        f"<tr><td>{i}</td><td>{esc(str(m['title']))}</td><td>{m['popularity']}</td>"
        f"<td>{m['voteAverage']}</td><td>{m['voteCount']}</td><td>{esc(str(m['releaseDate'] or ''))}</td></tr>"
        for i, m in enumerate(report["topByPopularity"], 1)
    )
    title = f"Thresher TMDB {report['kind']} report"
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{esc(title)}</title><style>body{{font-family:sans-serif;margin:2em;max-width:60em}}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}</style>"
        f"</head><body><h1>{esc(title)}</h1><p>Generated {esc(report['generatedAt'])}: "
        f"{report['movies']} movies, mean rating {report['meanVoteAverage']}.</p>"
        "<h2>Top 10 by popularity</h2><table><tr><th>#</th><th>Title</th><th>Popularity</th>"
        f"<th>Rating</th><th>Votes</th><th>Released</th></tr>{rows}</table>"
        + _bars("Genres", report["genreDistribution"])
        + _bars("Rating bands", report["ratingBands"])
        + _bars("Release years", report["releaseYears"])
        + _bars("Original languages", report["languages"])
        + "</body></html>\n"
    )
