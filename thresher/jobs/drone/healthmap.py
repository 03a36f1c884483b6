"""Health map PNGs: the primary index's block means in class colours, with a legend drawn in.

Three classes, the same ones the statistics count: soil (index below the vegetation cut),
stressed vegetation (below the stressed cut, absolute or relative), healthy vegetation;
black where no pixel of a block was valid. Flat class colours rather than a gradient, so
the map shows exactly what the numbers count. Every PNG carries a legend strip under the
map (swatches, class names, the cuts used and whether they are of the field's own level)
and the same text in a PNG ``legend`` text chunk for tools.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from thresher.jobs.drone.stats import IndexStats

NODATA_RGB = (0, 0, 0)
SOIL_RGB = (166, 124, 82)
STRESSED_RGB = (230, 85, 13)
HEALTHY_RGB = (26, 150, 65)
LEGEND_HEIGHT = 64
LEGEND_MIN_WIDTH = 420
SWATCH = 14


@dataclass(frozen=True)
class LegendEntry:
    rgb: tuple[int, int, int]
    label: str


def legend(index: str, stats: IndexStats) -> tuple[str, list[LegendEntry]]:
    """Title and entries of a map's legend (also used by the HTML report)."""
    veg = stats.vegetation_cut
    cut = stats.stressed_cut
    if stats.zoning == "relative":
        ref = "" if stats.reference is None else f", field reference {stats.reference:.3f}"
        how = f"relative zoning{ref}"
    else:
        how = "absolute cuts"
    entries = [LegendEntry(SOIL_RGB, f"soil: {index} < {veg:.3f}")]
    if cut is None:
        entries.append(LegendEntry(HEALTHY_RGB, f"vegetation: {index} >= {veg:.3f} (stress not rated)"))
    else:
        entries.append(LegendEntry(STRESSED_RGB, f"stressed: {veg:.3f} <= {index} < {cut:.3f}"))
        entries.append(LegendEntry(HEALTHY_RGB, f"healthy: {index} >= {cut:.3f}"))
    entries.append(LegendEntry(NODATA_RGB, "no data / invalid"))
    return f"{index}, {how}", entries


def colorize(small: np.ndarray, vegetation: float, stressed: float | None) -> np.ndarray:
    """Block means -> class colours (stressed None: vegetation is all shown healthy)."""
    out = np.empty(small.shape + (3,), dtype=np.uint8)
    finite = np.isfinite(small)
    values = np.where(finite, small, 0)
    out[...] = HEALTHY_RGB
    if stressed is not None:
        out[values < np.float32(stressed)] = STRESSED_RGB
    out[values < np.float32(vegetation)] = SOIL_RGB
    out[~finite] = NODATA_RGB
    return out


def with_legend(rgb: np.ndarray, title: str, entries: list[LegendEntry]) -> np.ndarray:
    """The map on a white canvas with the legend strip under it (canvas at least LEGEND_MIN_WIDTH wide)."""
    from PIL import Image, ImageDraw

    h, w = rgb.shape[:2]
    canvas = Image.new("RGB", (max(w, LEGEND_MIN_WIDTH), h + LEGEND_HEIGHT), (255, 255, 255))
    canvas.paste(Image.fromarray(rgb, "RGB"), (0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, h + 3), title, fill=(0, 0, 0))
    for i, (x, y) in enumerate(swatch_origins(h, len(entries))):
        entry = entries[i]
        draw.rectangle([x, y, x + SWATCH - 1, y + SWATCH - 1], fill=entry.rgb, outline=(90, 90, 90))
        draw.text((x + SWATCH + 4, y + 1), entry.label, fill=(0, 0, 0))
    return np.asarray(canvas)


def swatch_origins(map_height: int, count: int) -> list[tuple[int, int]]:
    """Top-left corners of the legend swatches: two columns under the title."""
    return [(4 + (i % 2) * 210, map_height + 18 + (i // 2) * 22) for i in range(count)]


def png_bytes(rgb: np.ndarray, legend_text: str | None = None) -> bytes:
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    if legend_text:
        info.add_text("legend", legend_text)
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG", compress_level=3, pnginfo=info)  # small maps: speed
    return buf.getvalue()


def render(index: str, stats: IndexStats, small: np.ndarray) -> bytes:
    """The PNG of one frame's health map, legend included."""
    title, entries = legend(index, stats)
    rgb = with_legend(colorize(small, stats.vegetation_cut, stats.stressed_cut), title, entries)
    return png_bytes(rgb, "\n".join([title] + [e.label for e in entries]))
