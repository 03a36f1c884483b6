"""Vegetation index formulas at the input's own precision, for NumPy arrays and PyTorch tensors.

Every index is written as a numerator and a denominator in the **source units** of the
bands (8-bit or 16-bit DN, or reflectance for float input), so that for integer input
both are exact integers: a zero denominator is detected exactly (issue 14: VARI on the
scaled float32 values turned G+R == B shadows into +-1e7). A pixel is *invalid* for an
index when its denominator is 0 or smaller in magnitude than ``min_denominator`` times
the full scale (255, 65535 or 1.0): near-zero denominators are dark or bluish pixels
(shadow, water, sky) whose ratio is noise, and they must not dominate a mean. Invalid
pixels get NaN here, are not counted in statistics and are reported as a share.

``values`` is the reference definition: the NumPy backend's fused kernel (``fused.py``)
and the torch backend compute exactly these float64 operations in the same order, and
tests hold them together bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from thresher.api.drone import ALL_INDEX_NAMES, NIR_INDEX_NAMES, RGB_INDEX_NAMES

# Hunt et al. (2013) simplified TGI for camera bands: G - 0.39 R - 0.61 B.
TGI_RED_COEF = 0.39
TGI_BLUE_COEF = 0.61
SAVI_L = 0.5

NAN = float("nan")


def terms(name: str, b: Mapping[str, Any], full_scale: float) -> tuple[Any, Any]:
    """(numerator, denominator) of index ``name`` on bands in source units (float64 arrays or tensors).

    TGI has no ratio: its "denominator" is the full scale (the value is on 0..1 reflectance);
    SAVI's soil term L is 0.5 in reflectance, so 0.5 * full scale in source units."""
    if name == "VARI":
        return b["G"] - b["R"], b["G"] + b["R"] - b["B"]
    if name == "GLI":
        return 2.0 * b["G"] - b["R"] - b["B"], 2.0 * b["G"] + b["R"] + b["B"]
    if name == "ExG":  # 2g - r - b on chromatic coordinates = (2G - R - B) / (R + G + B)
        return 2.0 * b["G"] - b["R"] - b["B"], b["R"] + b["G"] + b["B"]
    if name == "TGI":
        return b["G"] - TGI_RED_COEF * b["R"] - TGI_BLUE_COEF * b["B"], full_scale
    if name == "NDVI":
        return b["N"] - b["R"], b["N"] + b["R"]
    if name == "NDRE":
        return b["N"] - b["RE"], b["N"] + b["RE"]
    if name == "GNDVI":
        return b["N"] - b["G"], b["N"] + b["G"]
    if name == "SAVI":
        return (1.0 + SAVI_L) * (b["N"] - b["R"]), b["N"] + b["R"] + SAVI_L * full_scale
    raise KeyError(name)


def values(name: str, b: Mapping[str, Any], xp: Any, full_scale: float = 1.0, min_denominator: float = 0.0) -> Any:
    """Index values with NaN where the pixel is invalid (|den| == 0 or < min_denominator * full_scale)."""
    num, den = terms(name, b, full_scale)
    if not hasattr(den, "shape"):  # TGI: a constant, never small
        return num / den
    floor = min_denominator * full_scale
    bad = (den == 0) | (abs(den) < floor)
    safe = xp.where(bad, xp.ones_like(den), den)
    return xp.where(bad, xp.full_like(num, NAN), num / safe)


def _formula(name: str) -> Callable[[Mapping[str, Any], Any], Any]:
    def formula(b: Mapping[str, Any], xp: Any) -> Any:
        """The index on reflectance bands (full scale 1.0), NaN only where the denominator is exactly 0."""
        return values(name, b, xp)
    formula.__name__ = name.lower()
    return formula


FORMULAS: dict[str, Callable[[Mapping[str, Any], Any], Any]] = {name: _formula(name) for name in ALL_INDEX_NAMES}
vari, gli, exg, tgi_default, ndvi, ndre, gndvi, savi = (FORMULAS[n] for n in ALL_INDEX_NAMES)


def tgi(b: Mapping[str, Any], xp: Any, red_coef: float = TGI_RED_COEF, blue_coef: float = TGI_BLUE_COEF) -> Any:
    """Triangular greenness index, simplified: G - 0.39 R - 0.61 B (a sum, not a product)."""
    return b["G"] - red_coef * b["R"] - blue_coef * b["B"]


def tgi_coefficients(red_nm: float, green_nm: float, blue_nm: float) -> tuple[float, float]:
    """Coefficients of the normalized TGI for given band centres (Hunt et al. 2013):
    -0.5[(lr-lb)(R-G) - (lr-lg)(R-B)] / (0.5 (lr-lb)) = G - (lg-lb)/(lr-lb) R - (lr-lg)/(lr-lb) B."""
    span = red_nm - blue_nm
    return (green_nm - blue_nm) / span, (red_nm - green_nm) / span


BANDS_NEEDED: dict[str, frozenset[str]] = {
    "VARI": frozenset("RGB"), "GLI": frozenset("RGB"), "ExG": frozenset("RGB"), "TGI": frozenset("RGB"),
    "NDVI": frozenset({"N", "R"}), "NDRE": frozenset({"N", "RE"}),
    "GNDVI": frozenset({"N", "G"}), "SAVI": frozenset({"N", "R"}),
}

assert set(FORMULAS) == set(ALL_INDEX_NAMES) == set(BANDS_NEEDED)


def applicable(bands: Iterable[str], requested: Iterable[str] = ()) -> list[str]:
    """The indices to compute: the requested ones (or all) that the available bands allow, in canonical order."""
    have = set(bands)
    wanted = set(requested) or set(ALL_INDEX_NAMES)
    return [name for name in ALL_INDEX_NAMES if name in wanted and BANDS_NEEDED[name] <= have]


def primary(bands: Iterable[str], computed: Iterable[str], choice: str = "auto") -> str | None:
    """The index behind the health map: the configured one, else NDVI with NIR, else GLI, else the first."""
    computed = list(computed)
    if choice != "auto":
        return choice if choice in computed else None
    for name in ("NDVI", "GLI"):
        if name in computed:
            return name
    return computed[0] if computed else None


__all__ = ["FORMULAS", "BANDS_NEEDED", "RGB_INDEX_NAMES", "NIR_INDEX_NAMES", "applicable", "primary", "terms",
           "values"]
