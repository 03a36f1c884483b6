"""Run and period reports: summary JSON, CSV and a self-contained HTML page. Pure text builders.

The HTML has no external resources: histograms are inline SVG, health maps are
linked by paths relative to the report file (they live in the same output tree).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from collections.abc import Iterable
from datetime import datetime, timezone

from thresher.api.drone import ALL_INDEX_NAMES
from thresher.jobs.drone.stats import HIST_BINS, HIST_RANGE, merge_histograms

CSV_FIXED = ["key", "kind", "frame_time", "width", "height", "lat", "lon", "alt", "primary_index",
             "vegetation_of_field", "stressed_of_vegetation", "stressed_of_field", "saturated_pixels", "map"]


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def frame_rows(items: Iterable[dict]) -> list[dict]:
    """One flat row per processed frame (an image is one frame) of the ok items."""
    rows = []
    for item in items:
        if not item.get("ok"):
            continue
        for frame in item.get("frames", []):
            gps = frame.get("gps") or {}
            row = {
                "key": item["key"], "kind": item["kind"], "frame_time": frame.get("frame_time"),
                "width": frame["width"], "height": frame["height"],
                "lat": gps.get("lat"), "lon": gps.get("lon"), "alt": gps.get("alt"),
                "primary_index": frame.get("primary"), "vegetation_of_field": frame.get("cover"),
                "stressed_of_vegetation": frame.get("stressed"), "stressed_of_field": frame.get("stressed_of_field"),
                "saturated_pixels": frame.get("saturated"),
                "map": frame.get("map"),
            }
            for name, stats in frame.get("indices", {}).items():
                for stat in ("mean", "median", "p10", "p90", "cover", "stressed", "invalid_pixels"):
                    row[f"{name}_{stat}"] = stats.get(stat)
            rows.append(row)
    return rows


def pooled(stats: list[dict]) -> dict:
    """Run-level numbers of ONE index over several frames, weighted by pixels (never a mean of means):
    mean over all valid pixels, cover = vegetation / valid pixels (of field), stressed = stressed /
    vegetation pixels (of vegetation, over frames where stress was rated), invalid share."""
    valid = sum(s["valid_pixels"] for s in stats)
    veg = sum(s["vegetation_pixels"] for s in stats)
    invalid = sum(s.get("invalid_pixels", 0) for s in stats)
    rated = [s for s in stats if s.get("stressed") is not None]
    rated_veg = sum(s["vegetation_pixels"] for s in rated)
    rated_stressed = sum(s["stressed_pixels"] for s in rated)
    rated_valid = sum(s["valid_pixels"] for s in rated)
    weighted = sum(s["mean"] * s["valid_pixels"] for s in stats if s["mean"] is not None)
    return {
        "frames": len(stats), "valid_pixels": valid,
        "mean": weighted / valid if valid else None,
        "cover_of_field": veg / valid if valid else None,
        "stressed_of_vegetation": rated_stressed / rated_veg if rated_veg else None,
        "stressed_of_field": rated_stressed / rated_valid if rated_valid else None,
        "invalid_share": invalid / (valid + invalid) if valid + invalid else None,
        "zoning": sorted({s.get("zoning", "absolute") for s in stats}),
    }


def summarize(items: list[dict], meta: dict, recovered: list[dict] = ()) -> dict:
    """The summary document of a run (or a report period) from its item results. ``recovered``: items
    completed by interrupted runs, reported here once (tagged ``recovered_from``), not counted as
    this run's inputs but in its pixel statistics and tables."""
    recovered = list(recovered)
    ok = [i for i in items + recovered if i.get("ok")]
    bad = [i for i in items + recovered if not i.get("ok")]
    rows = frame_rows(ok)
    frames = [f for i in ok for f in i["frames"]]
    primaries = sorted({f["primary"] for f in frames if f.get("primary")}, key=ALL_INDEX_NAMES.index)
    per_index = {}
    for name in ALL_INDEX_NAMES:
        stats = [f["indices"][name] for f in frames if name in f.get("indices", {})]
        if stats:
            per_index[name] = pooled(stats)
    headline = {p: pooled([f["indices"][p] for f in frames if f.get("primary") == p]) for p in primaries}
    hists = {p: merge_histograms([f["indices"][p]["histogram"] for f in frames
                                  if f.get("primary") == p and f["indices"][p].get("histogram")])
             for p in primaries}
    return {
        **meta,
        "items": len(items), "valid": sum(1 for i in items if i.get("ok")),
        "failed": sum(1 for i in items if not i.get("ok")), "frames": len(rows),
        "quality": (sum(1 for i in items if i.get("ok")) / len(items)) if items else None,
        "recovered_items": len(recovered),
        "headline": headline,
        "indices": per_index,
        "primary_histograms": hists,
        "skipped": [{"key": i["key"], "reason": i.get("reason")} for i in bad],
        "results": [{k: v for k, v in i.items()} for i in ok],
    }


def to_csv(items: list[dict]) -> str:
    rows = frame_rows(items)
    extra = sorted({k for r in rows for k in r if k not in CSV_FIXED},
                   key=lambda k: (ALL_INDEX_NAMES.index(k.split("_", 1)[0]), k))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIXED + extra, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)) for k, v in r.items()})
    return buf.getvalue()


def svg_histogram(counts: list[int], title: str, marks: Iterable[tuple[float, str]] = (),
                  width: int = 480, height: int = 160) -> str:
    """Bars over HIST_RANGE with optional vertical threshold marks; inline SVG text."""
    lo, hi = HIST_RANGE
    top = max(counts) if counts and max(counts) > 0 else 1
    bar_w = width / max(len(counts), 1)
    plot_h = height - 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{html.escape(title)}"><title>{html.escape(title)}</title>']
    for i, c in enumerate(counts):
        h = plot_h * c / top
        parts.append(f'<rect x="{i * bar_w:.1f}" y="{plot_h - h:.1f}" width="{max(bar_w - 1, 1):.1f}" '
                     f'height="{h:.1f}" fill="#4a8f3c"><title>{c}</title></rect>')
    for value, label in marks:
        x = (min(max(value, lo), hi) - lo) / (hi - lo) * width
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{plot_h}" stroke="#c0392b" '
                     f'stroke-dasharray="4 2"/><text x="{x + 2:.1f}" y="12" font-size="10">{html.escape(label)}</text>')
    parts.append(f'<text x="0" y="{height - 8}" font-size="11">{lo:g}</text>'
                 f'<text x="{width - 12}" y="{height - 8}" font-size="11">{hi:g}</text>'
                 f'<text x="{width / 2 - 30:.0f}" y="{height - 8}" font-size="11">{html.escape(title)}</text></svg>')
    return "".join(parts)


def _pct(value: float | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _legend_html() -> str:
    """The classes of the health maps and of every cover / stressed number, with their colours."""
    from thresher.jobs.drone import healthmap as hm

    rows = [(hm.SOIL_RGB, "soil", "index below the vegetation cut"),
            (hm.STRESSED_RGB, "stressed vegetation", "index at or above the vegetation cut and below the "
             "stressed cut (relative zoning: below stressedBelow x the field's reference)"),
            (hm.HEALTHY_RGB, "healthy vegetation", "index at or above the stressed cut"),
            (hm.NODATA_RGB, "no data / invalid", "masked (saturated, transparent) or a zero or near-zero "
             "denominator (shadow, water, sky); not counted")]
    cells = "".join(f"<tr><td><span style='display:inline-block;width:14px;height:14px;background:rgb{rgb}'>"
                    f"</span> {html.escape(name)}</td><td style='text-align:left'>{html.escape(rule)}</td></tr>"
                    for rgb, name, rule in rows)
    return ("<h2>Legend</h2><p><b>cover</b> = vegetation pixels as a share <b>of the field</b> (valid pixels); "
            "<b>stressed</b> = stressed pixels as a share <b>of the vegetation</b>; <b>stressed of field</b> = "
            "stressed pixels as a share of the field. Run-level numbers are pooled over pixels, one index at a "
            "time; the cuts of each map are in the images table and on the map itself.</p><table>"
            + cells + "</table>")


def to_html(summary: dict, map_prefix: str) -> str:
    """The report page. ``map_prefix`` is the relative path from the report to the output root."""
    esc = html.escape
    title = summary.get("title", "Drone crop-health report")
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>"
           "body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;font-size:13px}"
           "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td:first-child{text-align:left}"
           "img{image-rendering:pixelated}.bad{color:#a00}</style></head><body>",
           f"<h1>{esc(title)}</h1>"]
    facts = [("Generated", summary.get("generated")), ("Period", summary.get("period")),
             ("Run", summary.get("run_id")), ("Backend", summary.get("backend")),
             ("Inputs", summary["items"]), ("Processed", summary["valid"]), ("Skipped", summary["failed"]),
             ("Frames", summary["frames"]),
             ("Recovered from interrupted runs", summary.get("recovered_items") or None)]
    out.append("<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>"
                                   for k, v in facts if v is not None) + "</table>")
    if summary.get("headline"):
        out.append("<h2>Headline (each primary index on its own frames, pooled over pixels)</h2><table><tr>"
                   "<th>index</th><th>frames</th><th>mean</th><th>vegetation, of field</th>"
                   "<th>stressed, of vegetation</th><th>stressed, of field</th><th>invalid pixels</th>"
                   "<th>zoning</th></tr>")
        for name, h in summary["headline"].items():
            out.append(f"<tr><td>{esc(name)}</td><td>{h['frames']}</td><td>{esc(name)} {_num(h['mean'])}</td>"
                       f"<td>{_pct(h['cover_of_field'])}</td><td>{_pct(h['stressed_of_vegetation'])}</td>"
                       f"<td>{_pct(h['stressed_of_field'])}</td><td>{_pct(h['invalid_share'])}</td>"
                       f"<td>{esc(', '.join(h['zoning']))}</td></tr>")
        out.append("</table>")
    out.append(_legend_html())
    for name, counts in summary.get("primary_histograms", {}).items():
        out.append(f"<h2>{esc(name)} distribution (valid pixels of frames where it is primary)</h2>"
                   + svg_histogram(counts, f"{name}, {HIST_BINS} bins"))
    out.append("<h2>Images</h2><table><tr><th>input</th><th>t (s)</th><th>GPS</th><th>index</th><th>mean</th>"
               "<th>median</th><th>vegetation, of field</th><th>stressed, of vegetation</th><th>zoning</th>"
               "<th>cuts (vegetation / stressed)</th><th>map</th></tr>")
    for item in summary.get("results", []):
        for frame in item.get("frames", []):
            p = frame.get("primary")
            stats = frame.get("indices", {}).get(p, {}) if p else {}
            gps = frame.get("gps")
            gps_text = f"{gps['lat']:.6f}, {gps['lon']:.6f}" if gps else ""
            img = (f"<a href='{esc(map_prefix + frame['map'])}'><img src='{esc(map_prefix + frame['map'])}' "
                   f"width='160' loading='lazy' alt='health map with legend'></a>") if frame.get("map") else ""
            t = frame.get("frame_time")
            label = esc(p or "")
            key = item["key"] + (f" (recovered from run {item['recovered_from']})" if item.get("recovered_from") else "")
            out.append(f"<tr><td>{esc(key)}</td><td>{'' if t is None else t}</td><td>{esc(gps_text)}</td>"
                       f"<td>{label}</td><td>{label} {_num(stats.get('mean'))}</td>"
                       f"<td>{label} {_num(stats.get('median'))}</td>"
                       f"<td>{_pct(frame.get('cover'))}</td><td>{_pct(frame.get('stressed'))}</td>"
                       f"<td>{esc(str(stats.get('zoning', '')))}</td>"
                       f"<td>{_num(stats.get('vegetation_cut'))} / {_num(stats.get('stressed_cut'))}</td>"
                       f"<td>{img}</td></tr>")
    out.append("</table>")
    if summary.get("skipped"):
        out.append("<h2 class='bad'>Skipped inputs</h2><table><tr><th>input</th><th>reason</th></tr>")
        out.extend(f"<tr><td>{esc(s['key'])}</td><td style='text-align:left'>{esc(str(s['reason']))}</td></tr>"
                   for s in summary["skipped"])
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)


def to_json(summary: dict) -> str:
    return json.dumps(summary, indent=1, allow_nan=False, default=str)


def photo_points(items: Iterable[dict]) -> dict:
    """RFC 7946 FeatureCollection (WGS84 lon/lat, no ``crs`` member) with a Point per photo or video frame
    whose EXIF had GPS: [lon, lat] (and altitude in metres when known), with the frame's primary index,
    cover and stressed share and its map, so a scout sees where each photo was taken and how it rated."""
    features = []
    for item in items:
        for frame in item.get("frames") or []:
            gps = frame.get("gps")
            if not gps or gps.get("lat") is None or gps.get("lon") is None:
                continue
            coords = [round(gps["lon"], 7), round(gps["lat"], 7)]
            if gps.get("alt") is not None:
                coords.append(round(gps["alt"], 2))
            features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": coords},
                             "properties": {"key": item["key"], "frame_time": frame.get("frame_time"),
                                            "index": frame.get("primary"), "cover": frame.get("cover"),
                                            "stressed": frame.get("stressed"), "map": frame.get("map")}})
    return {"type": "FeatureCollection", "features": features}
