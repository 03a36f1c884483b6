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


# Palette indices of the PNG (a paletted PNG is a byte per pixel: several times faster to write than RGB).
PALETTE = [NODATA_RGB, SOIL_RGB, STRESSED_RGB, HEALTHY_RGB, (255, 255, 255), (0, 0, 0), (90, 90, 90)]
NODATA, SOIL, STRESSED, HEALTHY, WHITE, TEXT, OUTLINE = range(len(PALETTE))


def classes(small: np.ndarray, vegetation: float, stressed: float | None) -> np.ndarray:
    """Block means -> palette class per block (stressed None: all vegetation shown healthy)."""
    out = np.where(small < np.float32(vegetation), np.uint8(SOIL), np.uint8(HEALTHY))  # NaN compares False
    if stressed is not None:
        out[(small < np.float32(stressed)) & (out == HEALTHY)] = STRESSED
    out[~np.isfinite(small)] = NODATA
    return out


def colorize(small: np.ndarray, vegetation: float, stressed: float | None) -> np.ndarray:
    """Block means -> RGB class colours."""
    return np.array(PALETTE, dtype=np.uint8)[classes(small, vegetation, stressed)]


def with_legend(cls: np.ndarray, title: str, entries: list[LegendEntry]):
    """A paletted image: the class map on a white canvas (at least LEGEND_MIN_WIDTH wide) with the legend
    strip under it."""
    from PIL import Image, ImageDraw

    h, w = cls.shape
    canvas = Image.new("P", (max(w, LEGEND_MIN_WIDTH), h + LEGEND_HEIGHT), WHITE)
    canvas.putpalette([c for rgb in PALETTE for c in rgb])
    canvas.paste(_p_image(cls), (0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, h + 3), title, fill=TEXT)
    for entry, (x, y) in zip(entries, swatch_origins(h, len(entries))):
        draw.rectangle([x, y, x + SWATCH - 1, y + SWATCH - 1], fill=PALETTE.index(entry.rgb), outline=OUTLINE)
        draw.text((x + SWATCH + 4, y + 1), entry.label, fill=TEXT)
    return canvas


def _p_image(cls: np.ndarray):
    from PIL import Image

    image = Image.frombytes("P", (cls.shape[1], cls.shape[0]), np.ascontiguousarray(cls).tobytes())
    image.putpalette([c for rgb in PALETTE for c in rgb])
    return image


def swatch_origins(map_height: int, count: int) -> list[tuple[int, int]]:
    """Top-left corners of the legend swatches: two columns under the title."""
    return [(4 + (i % 2) * 210, map_height + 18 + (i // 2) * 22) for i in range(count)]


def png_bytes(image, legend_text: str | None = None) -> bytes:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    if legend_text:
        info.add_text("legend", legend_text)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1, pnginfo=info)  # class maps compress well even at level 1
    return buf.getvalue()


def render(index: str, stats: IndexStats, small: np.ndarray) -> bytes:
    """The PNG of one frame's health map, legend included."""
    return render_classes(index, stats, classes(small, stats.vegetation_cut, stats.stressed_cut))


def render_classes(index: str, stats: IndexStats, cls: np.ndarray) -> bytes:
    """The PNG of a class map (palette indices) with the legend of ``stats``' cuts."""
    title, entries = legend(index, stats)
    return png_bytes(with_legend(cls, title, entries), "\n".join([title] + [e.label for e in entries]))
