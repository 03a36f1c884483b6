"""Vegetation index formulas, written once for NumPy arrays and PyTorch tensors.

Inputs are reflectance-like float32 planes in 0..1 (DN divided by the sensor's
maximum DN, see ``decode.py``). Only arithmetic operators and ``xp.where`` are
used, so the same function runs on ``numpy`` and on ``torch`` (pass the module as
``xp``). A zero denominator gives NaN explicitly (never inf, never a warning);
callers mask NaN out of statistics.
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


def ratio(num: Any, den: Any, xp: Any) -> Any:
    """num / den with NaN where den == 0 (dividing by a patched 1 avoids inf and warnings)."""
    zero = den == 0
    if getattr(xp, "__name__", "") == "numpy":
        # Fast path: divide in place into ``num`` (every caller passes a fresh temporary), then
        # overwrite x/0 (inf) and 0/0 (NaN already) with NaN: fewer passes and no new 48 MB buffers.
        with xp.errstate(divide="ignore", invalid="ignore"):
            out = xp.divide(num, den, out=num if num.dtype == xp.result_type(num, den) else None)
        out[zero] = NAN
        return out
    safe = xp.where(zero, xp.ones_like(den), den)
    return xp.where(zero, xp.full_like(num, NAN), num / safe)


def vari(b: Mapping[str, Any], xp: Any) -> Any:
    r, g, bl = b["R"], b["G"], b["B"]
    return ratio(g - r, g + r - bl, xp)


def gli(b: Mapping[str, Any], xp: Any) -> Any:
    g2, rb = 2 * b["G"], b["R"] + b["B"]
    return ratio(g2 - rb, g2 + rb, xp)


def exg(b: Mapping[str, Any], xp: Any) -> Any:
    """Excess green on chromatic coordinates: 2g - r - b with g = G/(R+G+B) etc.

    Algebraically (2G - R - B)/(R + G + B): one division instead of three; black pixels -> NaN.
    """
    g, rb = b["G"], b["R"] + b["B"]
    return ratio(2 * g - rb, g + rb, xp)


def tgi(b: Mapping[str, Any], xp: Any, red_coef: float = TGI_RED_COEF, blue_coef: float = TGI_BLUE_COEF) -> Any:
    """Triangular greenness index, simplified: G - 0.39 R - 0.61 B (a sum, not a product)."""
    return b["G"] - red_coef * b["R"] - blue_coef * b["B"]


def tgi_coefficients(red_nm: float, green_nm: float, blue_nm: float) -> tuple[float, float]:
    """Coefficients of the normalized TGI for given band centres (Hunt et al. 2013):
    -0.5[(lr-lb)(R-G) - (lr-lg)(R-B)] / (0.5 (lr-lb)) = G - (lg-lb)/(lr-lb) R - (lr-lg)/(lr-lb) B."""
    span = red_nm - blue_nm
    return (green_nm - blue_nm) / span, (red_nm - green_nm) / span


def ndvi(b: Mapping[str, Any], xp: Any) -> Any:
    return ratio(b["N"] - b["R"], b["N"] + b["R"], xp)


def ndre(b: Mapping[str, Any], xp: Any) -> Any:
    return ratio(b["N"] - b["RE"], b["N"] + b["RE"], xp)


def gndvi(b: Mapping[str, Any], xp: Any) -> Any:
    return ratio(b["N"] - b["G"], b["N"] + b["G"], xp)


def savi(b: Mapping[str, Any], xp: Any) -> Any:
    return ratio((1 + SAVI_L) * (b["N"] - b["R"]), b["N"] + b["R"] + SAVI_L, xp)


FORMULAS: dict[str, Callable[[Mapping[str, Any], Any], Any]] = {
    "VARI": vari, "GLI": gli, "ExG": exg, "TGI": tgi,
    "NDVI": ndvi, "NDRE": ndre, "GNDVI": gndvi, "SAVI": savi,
}

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


__all__ = ["FORMULAS", "BANDS_NEEDED", "RGB_INDEX_NAMES", "NIR_INDEX_NAMES", "applicable", "primary", "ratio"]
