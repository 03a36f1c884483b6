"""Reports a farmer reads right (issue 14, item 4): a legend on every map and in the HTML, shares
named "of field" or "of vegetation", run numbers pooled over pixels and never mixing indices."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from thresher.jobs.drone import healthmap as hm
from thresher.jobs.drone import report as rp
from thresher.demo.fakes import drone_fields as sm
from thresher.jobs.drone.pipeline import run_process
from thresher.jobs.drone.stats import IndexStats


def _run(data_dir, spec, paths, engine):
    labels, _ = sm.field_labels(64, 96, 0.5, 0.3, seed=2)
    sm.write_rgb(data_dir / "input" / "rgb.png", sm.rgb_field(labels, seed=2))
    sm.write_micasense(data_dir / "input" / "ms", 1, sm.field_labels(48, 64, 0.6, 0.4, seed=3)[0])
    return run_process(spec, paths, engine)


def test_every_map_png_has_a_legend_with_the_class_colours_and_cuts(data_dir, spec, paths, engine):
    """Pins maps without a legend: read each PNG back and find every swatch and the cuts used."""
    stats = _run(data_dir, spec, paths, engine)
    frames = [f for i in stats.items for f in i["frames"]]
    assert len(frames) == 2 and all(f["map"] for f in frames)
    for frame in frames:
        image = Image.open(paths.output / frame["map"])
        rgb = np.asarray(image.convert("RGB"))
        map_h = rgb.shape[0] - hm.LEGEND_HEIGHT
        assert rgb.shape[1] >= hm.LEGEND_MIN_WIDTH
        title, entries = hm.legend(frame["primary"], IndexStats.from_dict(_stats(frame)))
        assert [e.rgb for e in entries] == [hm.SOIL_RGB, hm.STRESSED_RGB, hm.HEALTHY_RGB, hm.NODATA_RGB]
        for entry, (x, y) in zip(entries, hm.swatch_origins(map_h, len(entries))):
            centre = rgb[y + hm.SWATCH // 2, x + hm.SWATCH // 2]
            assert tuple(centre) == entry.rgb, entry.label
        # Text in the legend strip (dark glyph pixels right of each swatch) and in the PNG text chunk.
        strip = rgb[map_h:]
        assert np.count_nonzero(strip.sum(axis=-1) < 100) > 200
        text = image.info["legend"]
        cut = _stats(frame)["stressed_cut"]
        assert title in text and f"{cut:.3f}" in text and frame["primary"] in text


def _stats(frame):
    return frame["indices"][frame["primary"]]


def test_html_has_a_legend_and_says_of_field_and_of_vegetation(data_dir, spec, paths, engine):
    stats = _run(data_dir, spec, paths, engine)
    page = (stats.summary_path.parent / "report.html").read_text()
    assert "<h2>Legend</h2>" in page and "of the field" in page and "of the vegetation" in page
    for rgb in (hm.SOIL_RGB, hm.STRESSED_RGB, hm.HEALTHY_RGB):
        assert f"rgb{rgb}" in page
    assert "vegetation, of field" in page and "stressed, of vegetation" in page
    assert "Mean stressed fraction" not in page
    for name in ("GLI", "NDVI"):  # the index is named next to each mean
        assert f"<td>{name} " in page


def frame(primary: str, pixels: int, mean: float, veg: int, stressed: int, other: str | None = None) -> dict:
    s = {"mean": mean, "valid_pixels": pixels, "vegetation_pixels": veg, "stressed_pixels": stressed,
         "invalid_pixels": 0, "stressed": stressed / veg if veg else None, "zoning": "relative", "histogram": []}
    indices = {primary: s}
    if other:
        indices[other] = dict(s, mean=-mean)
    return {"primary": primary, "indices": indices, "width": 1, "height": 1}


def test_run_numbers_are_pooled_over_pixels_and_never_mix_indices():
    """Pins "mean stressed fraction" averaging a GLI image and an NDVI image unweighted."""
    items = [
        {"key": "a", "kind": "image", "ok": True, "frames": [frame("GLI", 100, 0.1, 50, 10)]},
        {"key": "b", "kind": "image", "ok": True, "frames": [frame("GLI", 300, 0.5, 100, 60)]},
        {"key": "c", "kind": "bands", "ok": True, "frames": [frame("NDVI", 1000, 0.8, 900, 9, other="GLI")]},
    ]
    summary = rp.summarize(items, {})
    assert set(summary["headline"]) == {"GLI", "NDVI"}
    gli = summary["headline"]["GLI"]  # only the frames where GLI is primary
    assert gli["frames"] == 2 and gli["mean"] == pytest.approx((100 * 0.1 + 300 * 0.5) / 400)
    assert gli["cover_of_field"] == pytest.approx(150 / 400)
    assert gli["stressed_of_vegetation"] == pytest.approx(70 / 150)
    assert gli["stressed_of_field"] == pytest.approx(70 / 400)
    assert summary["headline"]["NDVI"]["stressed_of_vegetation"] == pytest.approx(9 / 900)
    assert summary["indices"]["GLI"]["frames"] == 3  # per-index pooling includes every frame with GLI
    assert "mean_stressed" not in summary and "mean_cover" not in summary
    json.dumps(summary, allow_nan=False)


def test_legend_without_a_stress_rating_says_so():
    s = hm.legend("VARI", _fake(zoning="relative", stressed_cut=None))
    assert "stress not rated" in s[1][1].label and len(s[1]) == 3


def _fake(**kw):
    return IndexStats(0.1, 0.1, 0.0, 0.2, 10, 5, 0, 0.5, None, vegetation_cut=0.0, **kw)


def test_colour_classes_match_what_is_counted():
    small = np.array([[np.nan, -0.5, 0.25, 0.9]], dtype=np.float32)
    rgb = hm.colorize(small, 0.2, 0.33)
    assert [tuple(c) for c in rgb[0]] == [hm.NODATA_RGB, hm.SOIL_RGB, hm.STRESSED_RGB, hm.HEALTHY_RGB]
    png = hm.png_bytes(hm.with_legend(hm.classes(small, 0.2, 0.33), "t", []), "legend text")
    image = Image.open(io.BytesIO(png))
    assert image.info["legend"] == "legend text"
    assert [tuple(c) for c in np.asarray(image.convert("RGB"))[0, :4]] == [tuple(c) for c in rgb[0]]
