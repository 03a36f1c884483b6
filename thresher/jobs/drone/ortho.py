"""GeoTIFF orthomosaics: read window by window, classified per pixel, zones out as GeoJSON.

An orthomosaic is one georeferenced raster of a whole field, often 20,000-50,000 pixels a
side, so it is never loaded whole. Two passes over strips of whole tile rows (rasterio, with
GDAL bundled in its wheel):

1. the fused pass of photos (``compute.Pass`` over ``fused.image_pass``): pixel-weighted
   statistics of every index over the whole mosaic, and the primary index's mean per cell of
   a *zone grid* (the mosaic reduced by a power of two ``f``, at most ``zoneGridMaxPixels``
   cells). Relative zoning needs the whole field's reference before any pixel is classified,
   hence a second pass;
2. ``fused.class_pass`` classifies every pixel with the final cuts into a Cloud-Optimized
   GeoTIFF (``classes.tif``: the input's CRS and transform, DEFLATE, overviews by mode, the
   PNG legend's colours as its colour table).

Pass 2 also gives each zone-grid cell its most frequent pixel class (as the COG's mode
overviews do). Zones are traced (``rasterio.features.shapes``, 4-connected) on that grid:
stressed and bare areas as polygons,
simplified (Douglas-Peucker) within ``simplifyPixels`` cells, their areas in m² in the input's
CRS when it is projected, else in the UTM zone of the mosaic's centre, then written in WGS84
(RFC 7946: lon/lat, exterior rings counter-clockwise, no ``crs`` member). A zone's outline is
exact to one zone-grid cell (``f`` mosaic pixels); the last ``< f`` rows and columns of the
mosaic are not traced.

Memory is bounded by two strips (``STRIP_BYTES`` of input each: the one computed and the one
being read ahead), the zone grid (about 30 bytes a cell) and GDAL's block cache
(``GDAL_CACHE_MB``), whatever the mosaic.
"""

from __future__ import annotations

import html
import json
import math
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from thresher.api.drone import DroneJob
from thresher.jobs.drone import compute as cp
from thresher.jobs.drone import fused
from thresher.jobs.drone import healthmap as hm
from thresher.jobs.drone import report as rp
from thresher.jobs.drone.decode import BadInput
from thresher.jobs.drone.stats import QBINS, QRANGE, QSCALE, QWIDTH, IndexStats
from thresher.jobs.harness import atomic_path, atomic_write_bytes, atomic_write_text

TIFF_EXTENSIONS = frozenset({"tif", "tiff"})
STRIP_BYTES = 96 * 2**20  # input bytes read per window (all bands)
GDAL_CACHE_MB = 128
COG_BLOCK = 512
# Band descriptions as OpenDroneMap, Pix4D, Agisoft and QGIS write them, lower-cased.
DESCRIPTION_BANDS = {
    "red": "R", "r": "R", "green": "G", "g": "G", "blue": "B", "b": "B",
    "nir": "N", "n": "N", "near infrared": "N", "near-infrared": "N", "nearinfrared": "N",
    "rededge": "RE", "red edge": "RE", "red-edge": "RE", "re": "RE", "alpha": "alpha",
}
COLORINTERP_BANDS = {"red": "R", "green": "G", "blue": "B", "alpha": "alpha"}
ZONE_CLASSES = ((hm.STRESSED, "stressed"), (hm.SOIL, "bare"))
CLASS_NAMES = {hm.NODATA: "no data", hm.SOIL: "soil", hm.STRESSED: "stressed", hm.HEALTHY: "healthy"}


# --- decisions (pure) ------------------------------------------------------------------------

@dataclass(frozen=True)
class Layout:
    bands: dict[str, int]  # band letter -> 1-based band number in the file
    alpha: int | None = None


def band_layout(count: int, colorinterp: list[str], descriptions: list[str | None], band_map: list[str],
                name: str) -> Layout:
    """Which band of the file is R, G, B, N, RE or alpha: the spec's band map, else the file's band
    descriptions, else its colour interpretation (RGB, RGBA); anything else is refused, naming the band
    count and what to set."""
    if band_map:
        if len(band_map) != count:
            raise BadInput(f"orthomosaic {name} has {count} band(s) but orthomosaic.bands lists {len(band_map)}")
        letters = list(band_map)
    else:
        by_desc = [DESCRIPTION_BANDS.get((d or "").strip().lower()) for d in descriptions]
        by_ci = [COLORINTERP_BANDS.get(c.lower()) for c in colorinterp]
        letters = by_desc if all(by_desc) else by_ci
        if not all(letters):
            seen = ", ".join(c.lower() for c in colorinterp)
            example = "[R, G, B, N]" if count == 4 else "[B, G, R, N, RE]" if count == 5 else "[R, G, B]"
            raise BadInput(f"orthomosaic {name}: unknown band layout ({count} band(s), colour interpretation "
                           f"{seen}, no band names): set orthomosaic.bands to one entry per band, e.g. {example}")
    chosen = [b for b in letters if b not in ("ignore",)]
    if len(set(chosen)) != len(chosen):
        raise BadInput(f"orthomosaic {name}: band map {letters} names a band twice")
    bands = {b: i + 1 for i, b in enumerate(letters) if b not in ("ignore", "alpha")}
    alpha = letters.index("alpha") + 1 if "alpha" in letters else None
    if not ({"R", "G", "B"} <= set(bands) or {"N", "R"} <= set(bands)):
        raise BadInput(f"orthomosaic {name}: bands {sorted(bands)} allow no index (need R, G, B or N, R)")
    return Layout(bands, alpha)


def zone_factor(height: int, width: int, max_cells: int) -> int:
    """The smallest power of two f with (height // f) * (width // f) <= max_cells (at least 1)."""
    f = 1
    while (height // f) * (width // f) > max_cells:
        f *= 2
    return f


def strip_rows(height: int, width: int, bands: int, itemsize: int, tile_height: int, f: int) -> int:
    """Rows per read window: whole tile rows where the budget allows (each tile decoded once), a multiple
    of the zone factor f (zone cells never straddle two windows), at most STRIP_BYTES of input."""
    per_row = max(1, width * bands * itemsize)
    budget = max(f, (STRIP_BYTES // per_row) // f * f)
    tiles = max(1, tile_height)
    rows = tiles * max(1, 256 // tiles) if tiles < 256 else tiles
    rows = f * math.ceil(rows / f)
    return max(f, min(rows, budget, f * math.ceil(height / f)))


def output_bytes_needed(height: int, width: int) -> int:
    """Worst case for the outputs (incompressible classes): the staging GTiff (1 byte a pixel) and the
    class COG with its overviews (4/3 byte a pixel) exist at once, plus 16 MiB for zones, map and report."""
    return height * width + math.ceil(height * width * 4 / 3) + 16 * 2**20


def check_space(needed: int, free: int, name: str, where: Path) -> None:
    if needed > free:
        raise BadInput(f"orthomosaic {name}: outputs need up to {needed / 2**20:.0f} MiB but {where} has "
                       f"{free / 2**20:.0f} MiB free; nothing was written")


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS84 UTM zone holding (lon, lat)."""
    zone = min(60, max(1, int((lon + 180.0) // 6.0) + 1))
    return (32600 if lat >= 0 else 32700) + zone


def stress_cut_params(stats: IndexStats) -> tuple[float, int]:
    """(stressed_value, stressed_bin) for ``fused.class_pass`` so that a pixel is stressed exactly when
    ``stats.finish`` counted it so: absolute zoning compares the value, relative zoning the fine bin."""
    if stats.stressed_cut is None:
        return -math.inf, QBINS + 1
    if stats.zoning == "relative":
        return math.inf, round((stats.stressed_cut - QRANGE[0]) / QWIDTH)
    return stats.stressed_cut, QBINS + 1


# --- reading ----------------------------------------------------------------------------------

def is_orthomosaic(path: Path, min_pixels: int) -> bool:
    """A TIFF that is georeferenced or has at least ``min_pixels`` pixels; unreadable ones are left to
    the photo decoder, which says why."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                return georeferenced(ds) or ds.width * ds.height >= min_pixels
    except RasterioIOError:
        return False


def georeferenced(ds) -> bool:
    return ds.crs is not None and not ds.transform.is_identity


@dataclass
class Windows:
    """Reads strips of a dataset; tiles that fail to decode become no data and are reported."""

    ds: object
    layout: Layout
    rows: int
    bad: list[dict] = field(default_factory=list)
    span: tuple[int, int] | None = None  # (first row, end row) of a shard (multiples of rows); None: all

    def __iter__(self) -> Iterator[tuple[int, dict[str, np.ndarray], np.ndarray | None]]:
        from rasterio.windows import Window

        ds = self.ds
        order = list(self.layout.bands.items())
        indexes = [i for _, i in order] + ([self.layout.alpha] if self.layout.alpha else [])
        first, end = self.span or (0, ds.height)
        for row0 in range(first, min(end, ds.height), self.rows):
            window = Window(0, row0, ds.width, min(self.rows, ds.height - row0))
            arr, broken = self._read(indexes, window)
            planes = {b: arr[k] for k, (b, _) in enumerate(order)}
            nodata = broken
            if self.layout.alpha:
                nodata = nodata | (arr[-1] == 0)
            if ds.nodata is not None and not math.isnan(ds.nodata):
                nodata = nodata | np.any(arr[:len(order)] == np.asarray(ds.nodata).astype(arr.dtype), axis=0)
            elif ds.nodata is not None:
                nodata = nodata | np.any(np.isnan(arr[:len(order)]), axis=0)
            yield row0, planes, nodata

    def _read(self, indexes: list[int], window) -> tuple[np.ndarray, np.ndarray]:
        from rasterio.errors import RasterioIOError
        from rasterio.windows import Window

        h, w = int(window.height), int(window.width)
        broken = np.zeros((h, w), dtype=bool)
        try:
            return self.ds.read(indexes, window=window), broken
        except RasterioIOError:
            pass
        # Some tile of this strip does not decode: read tile by tile, the broken ones as no data.
        arr = np.zeros((len(indexes), h, w), dtype=self.ds.dtypes[0])
        th, tw = self.ds.block_shapes[0]
        row0 = int(window.row_off)
        for r in range(row0 - row0 % th, row0 + h, th):
            for c in range(0, w, tw):
                top, bottom = max(r, row0), min(r + th, row0 + h)
                sub = Window(c, top, min(tw, w - c), bottom - top)
                ys = slice(top - row0, bottom - row0)
                xs = slice(c, c + int(sub.width))
                try:
                    arr[:, ys, xs] = self.ds.read(indexes, window=sub)
                except RasterioIOError as err:
                    broken[ys, xs] = True
                    entry = {"col_off": c, "row_off": top, "width": int(sub.width), "height": bottom - top,
                             "error": str(err).splitlines()[0][:200]}
                    if entry not in self.bad:
                        self.bad.append(entry)
        return arr, broken


def ahead(items: Iterator):
    """``items``, with the next one produced on a thread while the caller works on the current one: GDAL
    decodes the next strip (rasterio releases the GIL) while the numba kernels (nogil) compute. Only the
    thread touches the dataset, so one GDAL handle is never used by two threads at once."""
    from concurrent.futures import ThreadPoolExecutor

    done = object()
    with ThreadPoolExecutor(1, thread_name_prefix="ortho-read") as pool:
        pending = pool.submit(next, items, done)
        while (item := pending.result()) is not done:
            pending = pool.submit(next, items, done)
            yield item


# --- the item ---------------------------------------------------------------------------------

def out_rel(key: str, name: str) -> str:
    return f"orthomosaics/{key}/{name}"


def process(path: Path, key: str, spec: DroneJob, params: cp.ComputeParams, output: Path) -> dict:
    """One orthomosaic end to end; returns the item's frames and ``orthomosaic`` block. BadInput for input
    that cannot be processed (nothing written then)."""
    return _opened(path, key, lambda ds, max_dn: _process(ds, key, spec, params, output, max_dn))


def _opened(path: Path, key: str, work):
    """``work(dataset, max_dn)`` on the opened mosaic, with GDAL's settings; read errors become BadInput."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    from thresher.jobs.drone.decode import _max_dn

    try:
        with warnings.catch_warnings(), rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            # No NUM_THREADS: with it GDAL 3.10 returned a corrupt tile as zeros instead of failing.
            with rasterio.open(path) as ds:
                return work(ds, _max_dn(np.dtype(ds.dtypes[0])))
    except RasterioIOError as err:
        raise BadInput(f"cannot read orthomosaic {key}: {str(err).splitlines()[0]}") from None


@dataclass(frozen=True)
class Geometry:
    """How a mosaic is read: its band layout, zone factor f, zone grid shape and rows per strip. Pure in
    the file's header, so every shard of a fanned-out run computes the same."""

    layout: Layout
    f: int
    grid: tuple[int, int]
    rows: int


def geometry(ds, key: str, spec: DroneJob) -> Geometry:
    cfg = spec.orthomosaic
    layout = band_layout(ds.count, [c.name for c in ds.colorinterp], list(ds.descriptions), cfg.bands, key)
    h, w = ds.height, ds.width
    f = zone_factor(h, w, cfg.zone_grid_max_pixels)
    itemsize = np.dtype(ds.dtypes[0]).itemsize
    rows = strip_rows(h, w, len(layout.bands) + (1 if layout.alpha else 0), itemsize, ds.block_shapes[0][0], f)
    return Geometry(layout, f, (max(1, h // f), max(1, w // f)), rows)


def shard_span(height: int, rows: int, index: int, count: int) -> tuple[int, int]:
    """Rows [first, end) of shard ``index`` of ``count``: a contiguous share of the mosaic's strips
    (``rows`` each, a multiple of the zone factor, so no zone cell straddles two shards). Shards differ
    by at most one strip; with more shards than strips some are empty."""
    strips = math.ceil(height / rows)
    return min(height, index * strips // count * rows), min(height, (index + 1) * strips // count * rows)


def first_pass(ds, g: Geometry, params: cp.ComputeParams, max_dn, span: tuple[int, int] | None = None
               ) -> tuple[cp.Pass, list[dict]]:
    """Pass 1 over the mosaic's strips (a shard's span, or all): the accumulators and the bad windows."""
    acc = cp.Pass(g.layout.bands, max_dn, params, g.grid)
    windows = Windows(ds, g.layout, g.rows, span=span)
    for row0, planes, nodata in ahead(iter(windows)):
        acc.add(planes, nodata, g.f, slice(row0 // g.f, min(g.grid[0], (row0 + planes_rows(planes)) // g.f)))
    return acc, windows.bad


def check_output_space(ds, key: str, output: Path) -> None:
    where = output if output.exists() else next(p for p in output.parents if p.exists())
    check_space(output_bytes_needed(ds.height, ds.width), shutil.disk_usage(where).free, key, where)


def _process(ds, key: str, spec: DroneJob, params: cp.ComputeParams, output: Path, max_dn) -> dict:
    g = geometry(ds, key, spec)
    check_output_space(ds, key, output)
    acc, bad = first_pass(ds, g, params, max_dn)
    return complete(ds, key, spec, params, output, g, acc, bad)


# --- fan-out: pass 1 per shard, everything else once (docs/drone.md "Fan-out") -------------------

PART_ARRAYS = ("hist", "sums", "counts", "masked")


def process_part(path: Path, key: str, spec: DroneJob, params: cp.ComputeParams, index: int, count: int
                 ) -> dict[str, np.ndarray]:
    """Pass 1 of shard ``index`` of ``count`` over its rows of the mosaic: its accumulators (histograms,
    counts and sums add up exactly) and its rows of the zone grid, as arrays for an ``.npz`` file."""
    def work(ds, max_dn):
        g = geometry(ds, key, spec)
        span = shard_span(ds.height, g.rows, index, count)
        acc, bad = first_pass(ds, g, params, max_dn, span)
        top, end = span[0] // g.f, min(g.grid[0], span[1] // g.f)
        return {**{name: getattr(acc, name) for name in PART_ARRAYS}, "pixels": np.int64(acc.pixels),
                "grid_rows": np.array([top, max(top, end)]), "map_sum": acc.map_sum[top:end],
                "map_cnt": acc.map_cnt[top:end], "bad": np.array(json.dumps(bad))}

    return _opened(path, key, work)


def merge_parts(path: Path, key: str, spec: DroneJob, params: cp.ComputeParams, output: Path,
                parts: Iterable[dict[str, np.ndarray]]) -> dict:
    """The shards' pass-1 parts summed into one pass (exactly what one process would have accumulated, up
    to float summation order), then pass 2, zones, map and report as for one process."""
    def work(ds, max_dn):
        g = geometry(ds, key, spec)
        check_output_space(ds, key, output)
        acc = cp.Pass(g.layout.bands, max_dn, params, g.grid)
        bad: list[dict] = []
        for part in parts:
            for name in PART_ARRAYS:
                getattr(acc, name)[...] += part[name]
            acc.pixels += int(part["pixels"])
            top, end = (int(x) for x in part["grid_rows"])
            acc.map_sum[top:end] += part["map_sum"]
            acc.map_cnt[top:end] += part["map_cnt"]
            bad += json.loads(str(part["bad"]))
        return complete(ds, key, spec, params, output, g, acc, bad)

    return _opened(path, key, work)


def complete(ds, key: str, spec: DroneJob, params: cp.ComputeParams, output: Path, g: Geometry, acc: cp.Pass,
             bad: list[dict]) -> dict:
    """After pass 1 (of one process, or merged from the shards): the statistics, pass 2 (class COG and
    zone grid), the zones, the map and the report."""
    cfg, layout, f, grid, rows = spec.orthomosaic, g.layout, g.f, g.grid, g.rows
    h, w = ds.height, ds.width
    warnings_: list[str] = []
    geo = georeferenced(ds)
    if not geo:
        warnings_.append(f"orthomosaic {key} has no CRS or geotransform: statistics and the class raster are "
                         "written, but zones cannot be georeferenced (no GeoJSON)")
    windows = Windows(ds, layout, rows, bad)
    stats = acc.finish()
    primary = acc.primary
    pstats = stats.get(primary) if primary else None
    result: dict = {
        "width": w, "height": h, "crs": ds.crs.to_string() if ds.crs else None, "georeferenced": geo,
        "zone_cell_pixels": f, "bad_windows": windows.bad, "classes": None, "zones": None, "report": None,
        "zone_count": 0,
    }
    frame = {
        "frame_time": None, "width": w, "height": h, "gps": None, "pixels": acc.pixels,
        "saturated": int(acc.masked[0]), "nodata": int(acc.masked[1]), "input_kind": acc.kind, "primary": primary,
        "cover": pstats.cover if pstats else None, "stressed": pstats.stressed if pstats else None,
        "stressed_of_field": pstats.stressed_of_field if pstats else None,
        "indices": {name: s.to_dict() for name, s in stats.items()}, "map": None,
    }
    if pstats is None:
        return {"frames": [frame], "warnings": warnings_, "orthomosaic": result}
    # Pass 2: every pixel classified with the final cuts, written as a COG.
    result["classes"] = out_rel(key, "classes.tif")
    means = cp.block_means(acc.map_sum, acc.map_cnt)
    acc.map_sum = acc.map_cnt = None  # 16 bytes a cell, not needed past here
    cells = write_classes(ds, layout, rows, acc, pstats, output / result["classes"], windows, f, grid)
    m = cp.map_factor(*grid, params.map_max)
    frame["map"] = out_rel(key, "map.png")
    atomic_write_bytes(output / frame["map"], hm.render_classes(primary, pstats, cells.classes[::m, ::m]))
    zones: list[dict] = []
    if geo:
        zones = trace_zones(cells, means, ds.transform, ds.crs, f, cfg.min_zone_area_m2, cfg.simplify_pixels,
                            primary)
        result["zones"] = out_rel(key, "zones.geojson")
        atomic_write_text(output / result["zones"], rp.to_json(feature_collection(zones)))
    result["zone_count"] = len(zones)
    result["zone_cell_m"] = zone_cell_metres(ds, f) if geo else None
    result["report"] = out_rel(key, "report.html")
    atomic_write_text(output / result["report"], zone_report(key, frame, result, zones, pstats))
    if windows.bad:
        warnings_.append(f"orthomosaic {key}: {len(windows.bad)} tile(s) could not be decoded and count as no "
                         f"data (first at column {windows.bad[0]['col_off']}, row {windows.bad[0]['row_off']})")
    return {"frames": [frame], "warnings": warnings_, "orthomosaic": result}


def planes_rows(planes: dict[str, np.ndarray]) -> int:
    return next(iter(planes.values())).shape[0]


@dataclass
class ZoneGrid:
    """The zone grid: each f x f cell's most frequent class, and per zone class (stressed, bare) how many
    of the cell's pixels have it and the sums of their offsets inside the cell (for exact centroids)."""

    classes: np.ndarray
    moments: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]  # code -> (count, sum dx, sum dy)

    @classmethod
    def empty(cls, grid: tuple[int, int]) -> ZoneGrid:
        return cls(np.zeros(grid, np.uint8), {code: (np.zeros(grid, np.uint32), np.zeros(grid, np.float32),
                                                     np.zeros(grid, np.float32)) for code, _ in ZONE_CLASSES})

    def add(self, classes: np.ndarray, row0: int, f: int) -> None:
        """One strip of per-pixel classes starting at mosaic row ``row0`` (a multiple of f)."""
        top = row0 // f
        modes, moments = cell_summary(classes, f, self.classes.shape[1])
        n = min(modes.shape[0], self.classes.shape[0] - top)
        self.classes[top:top + n] = modes[:n]
        for code, arrays in moments.items():
            for whole, part in zip(self.moments[code], arrays):
                whole[top:top + n] = part[:n]


def cell_summary(classes: np.ndarray, f: int, cells_across: int):
    """(most frequent class per f x f cell, {zone class: (pixel count, sum of x offsets, sum of y offsets)})
    for a strip, whole cells only; ties go to the lower code. The mode, not a cell's mean index: around
    bare soil, cells half soil and half healthy average to a "stressed" value, a ring of false zones."""
    cells_down = classes.shape[0] // f
    codes = np.array([code for code, _ in ZONE_CLASSES], dtype=np.uint8)
    counts = np.zeros((len(CLASS_NAMES), cells_down, cells_across), dtype=np.uint32)
    sx = np.zeros((len(codes), cells_down, cells_across), dtype=np.float32)
    sy = np.zeros_like(sx)
    fused.cell_pass(np.ascontiguousarray(classes), f, codes, counts, sx, sy)
    moments = {int(code): (counts[code], sx[k], sy[k]) for k, code in enumerate(codes)}
    return counts.argmax(axis=0).astype(np.uint8), moments


def write_classes(ds, layout: Layout, rows: int, acc: cp.Pass, pstats: IndexStats, dest: Path,
                  windows: Windows, f: int, grid: tuple[int, int]) -> ZoneGrid:
    """Pass 2 into a tiled GTiff (a temporary), then the COG driver copies it with overviews. Returns the
    zone grid."""
    import rasterio
    from rasterio.shutil import copy as rio_copy
    from rasterio.windows import Window

    value, cut_bin = stress_cut_params(pstats)
    zoning = acc.zonings[acc.names.index(acc.primary)]
    f32 = np.float32
    profile = {"driver": "GTiff", "width": ds.width, "height": ds.height, "count": 1, "dtype": "uint8",
               "crs": ds.crs, "transform": ds.transform, "nodata": hm.NODATA, "tiled": True,
               "blockxsize": COG_BLOCK, "blockysize": COG_BLOCK, "compress": "deflate", "BIGTIFF": "IF_SAFER"}
    colormap = {i: (*rgb, 0 if i == hm.NODATA else 255) for i, rgb in enumerate(hm.PALETTE[:4])}
    dummy = np.zeros(1, dtype=ds.dtypes[0])
    cells = ZoneGrid.empty(grid)
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = dest.parent / f".{dest.name}.stage.tmp"  # hidden, like atomic_path's temporaries
    try:
        with rasterio.open(stage, "w", **profile) as dst:
            dst.write_colormap(1, colormap)
            for row0, planes, nodata in ahead(iter(Windows(ds, layout, rows, windows.bad))):
                h, w = next(iter(planes.values())).shape
                out = np.empty((h, w), dtype=np.uint8)
                bands = [fused.flat(planes[b]) if b in planes else dummy for b in fused.BANDS]
                present = np.array([b in planes for b in fused.BANDS], dtype=np.bool_)
                fused.class_pass(fused.CODES[acc.primary], *bands, present, fused.flat(nodata).view(np.uint8),
                                 True, f32(acc.max_dn if acc.max_dn is not None else -1.0), h, w, f32(acc.scale),
                                 f32(acc.floor), f32(zoning.vegetation), f32(value), cut_bin, f32(QRANGE[0]),
                                 f32(QSCALE), QBINS, out)
                dst.write(out, 1, window=Window(0, row0, w, h))
                cells.add(out, row0, f)
        with atomic_path(dest) as tmp:
            rio_copy(stage, tmp, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=COG_BLOCK, RESAMPLING="MODE",
                     OVERVIEWS="AUTO", BIGTIFF="IF_SAFER")
    finally:
        stage.unlink(missing_ok=True)
    return cells


def zone_cell_metres(ds, f: int) -> float:
    """Side of one zone-grid cell in metres (projected CRS) or degrees * 111 km (geographic, approximate)."""
    size = abs(ds.transform.a) * f
    if ds.crs.is_projected:
        return size * ds.crs.linear_units_factor[1]
    return size * 111_320.0


def ring(ids: np.ndarray) -> np.ndarray:
    """For each cell, the largest id among its 8 neighbours (0 if none): the cells around each zone."""
    out = np.zeros_like(ids)
    h, w = ids.shape
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                dst = out[max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)]
                np.maximum(dst, ids[max(0, -dy):h + min(0, -dy), max(0, -dx):w + min(0, -dx)], out=dst)
    return out


def trace_zones(cells: ZoneGrid, means: np.ndarray, transform, crs, f: int, min_area_m2: float,
                simplify_cells: float, index: str) -> list[dict]:
    """Stressed and bare zones of the zone grid (``means``: each cell's mean index) as GeoJSON features
    (WGS84), largest first. Outline and area from the traced cells; centroid: the mean position of the
    zone class's pixels in the zone's cells and the ring of cells around them (where its edge pixels
    that lost a cell's vote are), so not biased by where cell edges fall."""
    import rasterio.features
    from affine import Affine
    from pyproj import CRS, Transformer
    from shapely.geometry import mapping, shape
    from shapely.geometry.polygon import orient
    from shapely.ops import transform as shp_transform

    cell = transform * Affine.scale(f)
    src = CRS.from_wkt(crs.to_wkt())
    to_wgs = Transformer.from_crs(src, CRS.from_epsg(4326), always_xy=True)
    if src.is_projected:
        metric, unit = None, src.axis_info[0].unit_conversion_factor
    else:
        cx, cy = cell * (means.shape[1] / 2, means.shape[0] / 2)
        metric = Transformer.from_crs(src, CRS.from_epsg(utm_epsg(*to_wgs.transform(cx, cy))), always_xy=True)
        unit = 1.0
    tolerance = simplify_cells * abs(cell.a)
    shapes_found: list[tuple[object, str]] = []
    classes = cells.classes
    for code, label in ZONE_CLASSES:
        mask = classes == code
        if not mask.any():
            continue
        for geom, _ in rasterio.features.shapes(mask.astype(np.uint8), mask=mask, transform=cell):
            shapes_found.append((shape(geom), label))
    if not shapes_found:
        return []
    ids = rasterio.features.rasterize(((g, i + 1) for i, (g, _) in enumerate(shapes_found)), out_shape=means.shape,
                                      transform=cell, fill=0, dtype="int32", all_touched=False)
    finite = np.isfinite(means)
    sums = np.bincount(ids[finite], weights=means[finite], minlength=len(shapes_found) + 1)
    cnts = np.bincount(ids[finite], minlength=len(shapes_found) + 1)
    # Pixel moments of each zone's class (count, sums of pixel-centre column and row) over its cells and
    # the cells around it, where its edge pixels that lost the cell's vote are.
    n_ids = len(shapes_found) + 1
    zone_px, zone_sx, zone_sy = (np.zeros(n_ids) for _ in range(3))
    for code, (cnt, dx, dy) in cells.moments.items():
        own = np.where(classes == code, ids, 0)
        owner = np.where(own > 0, own, ring(own))
        r, c = np.nonzero(owner)
        n = cnt[r, c].astype(np.float64)
        for total, w in ((zone_px, n), (zone_sx, c * f * n + dx[r, c]), (zone_sy, r * f * n + dy[r, c])):
            total += np.bincount(owner[r, c], weights=w, minlength=n_ids)
    features = []
    for i, (geom, label) in enumerate(shapes_found):
        projected = geom if metric is None else shp_transform(metric.transform, geom)
        area = projected.area * unit * unit
        if area < min_area_m2:
            continue
        if zone_px[i + 1]:
            col, row = zone_sx[i + 1] / zone_px[i + 1], zone_sy[i + 1] / zone_px[i + 1]
        else:  # no pixel of the class in its own cells cannot happen for a mode; keep the outline's centre
            col, row = ~transform * (geom.centroid.x, geom.centroid.y)
        lon, lat = to_wgs.transform(*(transform * (col, row)))
        simple = geom.simplify(tolerance, preserve_topology=True)
        wgs = orient(shp_transform(to_wgs.transform, simple), 1.0)
        features.append({"type": "Feature", "geometry": _rounded(mapping(wgs)), "properties": {
            "class": label, "area_m2": round(area, 2), "index": index,
            "mean_index": round(float(sums[i + 1] / cnts[i + 1]), 4) if cnts[i + 1] else None,
            "centroid_lon": round(lon, 7), "centroid_lat": round(lat, 7),
            "centroid_col": round(col, 2), "centroid_row": round(row, 2)}})
    features.sort(key=lambda ft: -ft["properties"]["area_m2"])
    for n, ft in enumerate(features, 1):
        ft["properties"] = {"id": n, **ft["properties"]}
    return features


def _rounded(geometry: dict) -> dict:
    """Coordinates to 7 decimals (about 1 cm), as RFC 7946 recommends not to over-state precision."""
    def walk(c):
        return [walk(x) for x in c] if isinstance(c[0], (list, tuple)) else [round(c[0], 7), round(c[1], 7)]
    return {"type": geometry["type"], "coordinates": walk(geometry["coordinates"])}


def feature_collection(features: list[dict]) -> dict:
    return {"type": "FeatureCollection", "features": features}


def zone_report(key: str, frame: dict, result: dict, zones: list[dict], pstats: IndexStats, top: int = 20) -> str:
    """The orthomosaic's page: the zone map (classes with legend), its statistics and the largest zones."""
    esc = html.escape
    title, entries = hm.legend(frame["primary"], pstats)
    legend = "".join(f"<li><span style='display:inline-block;width:12px;height:12px;background:rgb{e.rgb}'>"
                     f"</span> {esc(e.label)}</li>" for e in entries)
    rows = "".join(
        f"<tr><td>{z['properties']['id']}</td><td>{esc(z['properties']['class'])}</td>"
        f"<td>{z['properties']['area_m2']:,.0f}</td><td>{z['properties']['mean_index']}</td>"
        f"<td>{z['properties']['centroid_lat']:.6f}, {z['properties']['centroid_lon']:.6f}</td></tr>"
        for z in zones[:top])
    cover = "" if frame["cover"] is None else f"{frame['cover']:.1%}"
    stressed = "" if frame["stressed"] is None else f"{frame['stressed']:.1%}"
    zone_part = (f"<h2>Largest zones ({min(top, len(zones))} of {len(zones)})</h2><table border='1'>"
                 "<tr><th>#</th><th>class</th><th>area m²</th><th>mean index</th><th>centroid lat, lon</th></tr>"
                 f"{rows}</table>" if result["georeferenced"] else
                 "<p>No CRS or geotransform: zones cannot be georeferenced.</p>")
    bad = (f"<p>{len(result['bad_windows'])} tile(s) could not be decoded and count as no data.</p>"
           if result["bad_windows"] else "")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(key)}</title></head><body>"
            f"<h1>Orthomosaic {esc(key)}</h1><p>{frame['width']} x {frame['height']} pixels, CRS "
            f"{esc(str(result['crs']))}; vegetation cover {cover}, stressed {stressed} of vegetation.</p>{bad}"
            f"<img src='map.png' alt='zone map with legend'><p>{esc(title)}</p><ul>{legend}</ul>{zone_part}"
            f"<p>Files: <a href='classes.tif'>classes.tif</a> (COG){' and <a href=zones.geojson>zones.geojson</a>' if result['zones'] else ''}.</p>"
            "</body></html>")
