"""Index formulas against hand-computed values and against spyndex (Awesome Spectral Indices)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import spyndex
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from thresher.jobs.drone import indices as ix

reflectance = arrays(np.float32, 16, elements=st.floats(0, 1, width=32))


def bands(**kw):
    return {k: np.asarray(v, dtype=np.float32) for k, v in kw.items()}


def spy(name, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # spyndex divides by zero without masking
        return np.asarray(spyndex.computeIndex(name, params={k: v.astype(np.float64) for k, v in params.items()}),
                          dtype=np.float64)


def close(ours, theirs, rtol=2e-4, atol=2e-5):
    """Equal where both are finite and the denominator is not tiny; NaN in ours exactly where theirs is not finite."""
    ours = np.asarray(ours, dtype=np.float64)
    finite = np.isfinite(theirs) & (np.abs(theirs) < 1e3)  # near-zero denominators amplify float32 rounding
    np.testing.assert_allclose(ours[finite], theirs[finite], rtol=rtol, atol=atol)


def test_hand_computed_values():
    b = bands(R=[0.2], G=[0.5], B=[0.1], N=[0.6], RE=[0.3])
    assert ix.vari(b, np)[0] == pytest.approx((0.5 - 0.2) / (0.5 + 0.2 - 0.1), rel=1e-6)
    assert ix.gli(b, np)[0] == pytest.approx((1.0 - 0.2 - 0.1) / (1.0 + 0.2 + 0.1), rel=1e-6)
    assert ix.exg(b, np)[0] == pytest.approx(2 * 0.5 / 0.8 - 0.2 / 0.8 - 0.1 / 0.8, rel=1e-6)
    assert ix.tgi(b, np)[0] == pytest.approx(0.5 - 0.39 * 0.2 - 0.61 * 0.1, rel=1e-6)
    assert ix.ndvi(b, np)[0] == pytest.approx(0.4 / 0.8, rel=1e-6)
    assert ix.ndre(b, np)[0] == pytest.approx(0.3 / 0.9, rel=1e-6)
    assert ix.gndvi(b, np)[0] == pytest.approx(0.1 / 1.1, rel=1e-6)
    assert ix.savi(b, np)[0] == pytest.approx(1.5 * 0.4 / 1.3, rel=1e-6)


def test_tgi_is_a_weighted_sum_not_a_product():
    """Pins the WebODM/ODM mistakes: TGI of R=G=B=1 is 1-0.39-0.61 = 0, of pure green 1."""
    np.testing.assert_allclose(ix.tgi(bands(R=[1, 0], G=[1, 1], B=[1, 0]), np), [0.0, 1.0], atol=1e-7)


def test_zero_denominators_are_nan_without_warnings():
    b = bands(R=[0.0, 0.3], G=[0.0, 0.3], B=[0.0, 0.6], N=[0.0, 0.2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(ix.gli(b, np)[0]) and np.isnan(ix.exg(b, np)[0]) and np.isnan(ix.ndvi(b, np)[0])
        assert np.isnan(ix.vari(b, np)[1])  # G + R - B == 0
        assert not np.isinf(ix.vari(b, np)).any()


@settings(max_examples=60, deadline=None)
@given(r=reflectance, g=reflectance, b=reflectance, n=reflectance, re=reflectance)
def test_matches_spyndex(r, g, b, n, re):
    ours = bands(R=r, G=g, B=b, N=n, RE=re)
    close(ix.vari(ours, np), spy("VARI", R=r, G=g, B=b))
    close(ix.gli(ours, np), spy("GLI", R=r, G=g, B=b))
    close(ix.ndvi(ours, np), spy("NDVI", N=n, R=r))
    close(ix.ndre(ours, np), spy("NDREI", N=n, RE1=re))
    close(ix.gndvi(ours, np), spy("GNDVI", N=n, G=g))
    close(ix.savi(ours, np), np.asarray(spyndex.computeIndex(
        "SAVI", params={"N": n.astype(np.float64), "R": r.astype(np.float64), "L": 0.5})))
    # ExG on chromatic coordinates = spyndex's raw ExG applied to r, g, b.
    total = r.astype(np.float64) + g + b
    with np.errstate(divide="ignore", invalid="ignore"):
        close(ix.exg(ours, np), spy("ExG", R=r / total, G=g / total, B=b / total))


@settings(max_examples=40, deadline=None)
@given(r=reflectance, g=reflectance, b=reflectance)
def test_tgi_has_spyndex_form_for_its_band_centres(r, g, b):
    """spyndex's TGI is Hunt's -0.5[190(R-G) - 120(R-B)] (bands 670/550/480 nm); ours with the
    coefficients for those centres is the same index divided by 0.5 * 190."""
    red, blue = ix.tgi_coefficients(670, 550, 480)
    ours = ix.tgi(bands(R=r, G=g, B=b), np, red_coef=red, blue_coef=blue)
    close(ours, spy("TGI", R=r, G=g, B=b) / 95.0, atol=1e-5)


def test_applicable_and_primary():
    assert ix.applicable("RGB") == ["VARI", "GLI", "ExG", "TGI"]
    assert ix.applicable(["B", "G", "R", "N", "RE"]) == list(ix.FORMULAS)
    assert ix.applicable("RGB", ["NDVI", "GLI"]) == ["GLI"]
    assert ix.primary("RGB", ["VARI", "GLI"]) == "GLI"
    assert ix.primary("BGRN", ["GLI", "NDVI"]) == "NDVI"
    assert ix.primary("RGB", ["VARI"], "NDVI") is None
