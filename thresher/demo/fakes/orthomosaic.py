"""Synthetic 4-band orthomosaics with known stressed and bare patches (tests and benchmarks/ortho_bench.py).

A field of healthy vegetation (NDVI 0.75 to 0.85 across, as 16-bit DN in band order B, G, R, N)
in a projected CRS (default EPSG:32633, 5 cm pixels), with rectangular and round patches of
stressed vegetation (NDVI 0.45) and bare soil (NDVI 0.1). Written window by window as a tiled,
DEFLATE-compressed GeoTIFF, so a 20,000 x 20,000 mosaic needs one window of memory; the true
area (pixel count) and centroid of every patch are counted while writing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NIR_DN = 40000
NDVI_STRESSED = 0.45
NDVI_BARE = 0.1


@dataclass
class Patch:
    kind: str  # "stressed" | "bare"
    shape: str  # "rect" | "disc"
    col: float  # rect: left; disc: centre (pixels)
    row: float
    a: float  # rect: width; disc: radius
    b: float = 0.0  # rect: height
    pixels: int = 0
    sum_col: float = 0.0
    sum_row: float = 0.0

    def mask(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Pixel centres (row + 0.5, col + 0.5) inside the patch."""
        y = rows[:, None] + 0.5
        x = cols[None, :] + 0.5
        if self.shape == "rect":
            return (x >= self.col) & (x < self.col + self.a) & (y >= self.row) & (y < self.row + self.b)
        return (x - self.col) ** 2 + (y - self.row) ** 2 < self.a ** 2

    @property
    def centroid(self) -> tuple[float, float]:
        """(col, row) of the patch's pixel centres."""
        return self.sum_col / self.pixels, self.sum_row / self.pixels


@dataclass
class Mosaic:
    path: Path
    size: int
    pixel_m: float
    origin: tuple[float, float]
    crs: str
    patches: list[Patch] = field(default_factory=list)


def default_patches(size: int) -> list[Patch]:
    """Six patches scaled to the mosaic: stressed and bare, rectangles and discs, none touching. Edges
    are 3 px off any power-of-two grid, so no zone grid traces them exactly by luck."""
    s = size / 100.0
    o = 3.0
    return [
        Patch("stressed", "rect", 10 * s + o, 10 * s + o, 20 * s, 12 * s),
        Patch("stressed", "disc", 70 * s + o, 25 * s + o, 9 * s),
        Patch("stressed", "rect", 15 * s + o, 60 * s + o, 8 * s + o, 25 * s + o),
        Patch("bare", "disc", 45 * s + o, 75 * s + o, 10 * s),
        Patch("bare", "rect", 60 * s + o, 55 * s + o, 25 * s + o, 8 * s + o),
        Patch("stressed", "disc", 80 * s + o, 85 * s + o, 6 * s),
    ]


def _ndvi_dn(ndvi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R, N) DN with the given NDVI: N fixed, R = N (1 - v) / (1 + v)."""
    red = NIR_DN * (1.0 - ndvi) / (1.0 + ndvi)
    return red, np.full_like(red, NIR_DN)


def write(path: Path, size: int = 512, patches: list[Patch] | None = None, pixel_m: float = 0.05,
          crs: str | None = "EPSG:32633", origin: tuple[float, float] = (500000.0, 5000000.0), tile: int = 512,
          describe: bool = True, alpha: bool = False, nodata_border: int = 0) -> Mosaic:
    """Write the mosaic; ``describe`` names the bands (Blue, Green, Red, NIR) as ODM does, ``crs`` None
    writes no georeferencing, ``alpha`` adds an alpha band that is 0 on a border of ``nodata_border``
    pixels (else that border is just dark)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    patches = default_patches(size) if patches is None else patches
    count = 5 if alpha else 4
    profile = {"driver": "GTiff", "width": size, "height": size, "count": count, "dtype": "uint16",
               "tiled": True, "blockxsize": tile, "blockysize": tile, "compress": "deflate", "predictor": 2,
               "ZLEVEL": 1, "NUM_THREADS": "ALL_CPUS", "BIGTIFF": "IF_SAFER"}
    if crs is not None:
        profile.update(crs=crs, transform=from_origin(origin[0], origin[1], pixel_m, pixel_m))
    if alpha:
        profile["photometric"] = "MINISBLACK"
    cols = np.arange(size, dtype=np.float64)
    healthy = (0.75 + 0.1 * cols / max(1, size - 1))[None, :]
    with rasterio.open(path, "w", **profile) as dst:
        if describe:
            for i, name in enumerate(["Blue", "Green", "Red", "NIR", "Alpha"][:count], 1):
                dst.set_band_description(i, name)
        for row0 in range(0, size, tile):
            h = min(tile, size - row0)
            rows = np.arange(row0, row0 + h, dtype=np.float64)
            ndvi = np.repeat(healthy, h, axis=0)
            for p in patches:
                m = p.mask(rows, cols)
                if m.any():
                    ndvi[m] = NDVI_STRESSED if p.kind == "stressed" else NDVI_BARE
                    ys, xs = np.nonzero(m)
                    p.pixels += ys.size
                    p.sum_col += float((xs + 0.5).sum())
                    p.sum_row += float((ys + row0 + 0.5).sum())
            red, nir = _ndvi_dn(ndvi)
            green = red * 1.5
            blue = red * 0.8
            data = np.stack([blue, green, red, nir]).round().astype(np.uint16)
            if alpha:
                a = np.full((1, h, size), 65535, dtype=np.uint16)
                if nodata_border:
                    edge = (rows[:, None] < nodata_border) | (rows[:, None] >= size - nodata_border) | \
                           (cols[None, :] < nodata_border) | (cols[None, :] >= size - nodata_border)
                    a[0][edge] = 0
                    data[:, edge] = 0
                data = np.concatenate([data, a])
            dst.write(data, window=Window(0, row0, size, h))
    return Mosaic(path, size, pixel_m, origin, crs or "", patches)
