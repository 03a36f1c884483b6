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
             "cover", "stressed", "saturated_pixels", "map"]


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
                "primary_index": frame.get("primary"), "cover": frame.get("cover"),
                "stressed": frame.get("stressed"), "saturated_pixels": frame.get("saturated"),
                "map": frame.get("map"),
            }
            for name, stats in frame.get("indices", {}).items():
                for stat in ("mean", "median", "p10", "p90"):
                    row[f"{name}_{stat}"] = stats.get(stat)
            rows.append(row)
    return rows


def summarize(items: list[dict], meta: dict) -> dict:
    """The summary document of a run (or a report period) from its item results."""
    ok = [i for i in items if i.get("ok")]
    bad = [i for i in items if not i.get("ok")]
    rows = frame_rows(ok)
    primaries = sorted({r["primary_index"] for r in rows if r["primary_index"]})
    per_index = {}
    for name in ALL_INDEX_NAMES:
        means = [r[f"{name}_mean"] for r in rows if r.get(f"{name}_mean") is not None]
        if means:
            per_index[name] = {"images": len(means), "mean_of_means": sum(means) / len(means)}
    covers = [r["cover"] for r in rows if r["cover"] is not None]
    stressed = [r["stressed"] for r in rows if r["stressed"] is not None]
    hists = {}
    for p in primaries:
        hists[p] = merge_histograms([f["indices"][p]["histogram"] for i in ok for f in i["frames"]
                                     if f.get("primary") == p and f["indices"][p].get("histogram")])
    return {
        **meta,
        "items": len(items), "valid": len(ok), "failed": len(bad), "frames": len(rows),
        "quality": (len(ok) / len(items)) if items else None,
        "mean_cover": sum(covers) / len(covers) if covers else None,
        "mean_stressed": sum(stressed) / len(stressed) if stressed else None,
        "indices": per_index,
        "primary_histograms": hists,
        "skipped": [{"key": i["key"], "reason": i.get("reason")} for i in bad],
        "results": [{k: v for k, v in i.items()} for i in ok],
    }


def to_csv(items: list[dict]) -> str:
    rows = frame_rows(items)
    extra = sorted({k for r in rows for k in r if k not in CSV_FIXED},
                   key=lambda k: (ALL_INDEX_NAMES.index(k.rsplit("_", 1)[0]), k))
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


def to_html(summary: dict, map_prefix: str, thresholds: dict[str, tuple[float, float]]) -> str:
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
             ("Frames", summary["frames"]), ("Mean vegetation cover", _pct(summary.get("mean_cover"))),
             ("Mean stressed fraction", _pct(summary.get("mean_stressed")))]
    out.append("<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>"
                                   for k, v in facts if v is not None) + "</table>")
    for name, counts in summary.get("primary_histograms", {}).items():
        veg, stressed = thresholds.get(name, (None, None))
        marks = [(veg, "vegetation"), (stressed, "stressed")] if veg is not None else []
        out.append(f"<h2>{esc(name)} distribution (all pixels)</h2>"
                   + svg_histogram(counts, f"{name}, {HIST_BINS} bins", marks))
    out.append("<h2>Images</h2><table><tr><th>input</th><th>t (s)</th><th>GPS</th><th>index</th><th>mean</th>"
               "<th>median</th><th>cover</th><th>stressed</th><th>map</th></tr>")
    for item in summary.get("results", []):
        for frame in item.get("frames", []):
            p = frame.get("primary")
            stats = frame.get("indices", {}).get(p, {}) if p else {}
            gps = frame.get("gps")
            gps_text = f"{gps['lat']:.6f}, {gps['lon']:.6f}" if gps else ""
            img = (f"<a href='{esc(map_prefix + frame['map'])}'><img src='{esc(map_prefix + frame['map'])}' "
                   f"width='120' loading='lazy' alt='health map'></a>") if frame.get("map") else ""
            t = frame.get("frame_time")
            out.append(f"<tr><td>{esc(item['key'])}</td><td>{'' if t is None else t}</td><td>{esc(gps_text)}</td>"
                       f"<td>{esc(p or '')}</td><td>{_num(stats.get('mean'))}</td><td>{_num(stats.get('median'))}</td>"
                       f"<td>{_pct(frame.get('cover'))}</td><td>{_pct(frame.get('stressed'))}</td><td>{img}</td></tr>")
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
