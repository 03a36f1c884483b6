"""The PyTorch backend gives the NumPy backend's numbers (same decoded pixels, torch on the CPU).

CI installs torch (docs/drone.md, "PyTorch in CI") and sets THRESHER_REQUIRE_TORCH=1, so a
missing torch fails there instead of skipping; locally without torch these tests skip.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from thresher.api.drone import DroneJob
from thresher.jobs.drone import compute as cp
from thresher.jobs.drone import indices as ix
from thresher.demo.fakes import drone_fields as sm
from thresher.jobs.drone.decode import Decoded
from thresher.jobs.drone.torch_backend import torch_available

if not torch_available():
    if os.environ.get("THRESHER_REQUIRE_TORCH") == "1":
        pytest.fail("THRESHER_REQUIRE_TORCH=1 but torch cannot be imported: install the gpu extra "
                    "(see docs/drone.md)", pytrace=False)
    pytest.skip("torch not installed (set THRESHER_REQUIRE_TORCH=1 to make this a failure)",
                allow_module_level=True)

import torch  # noqa: E402

from thresher.jobs.drone.torch_backend import TorchBackend  # noqa: E402

TOL = 1e-5


def rgb_frame(seed: int, h: int = 96, w: int = 128) -> Decoded:
    labels, _ = sm.field_labels(h, w, 0.4, 0.3, seed=seed)
    rgb = sm.rgb_field(labels, noise=20, seed=seed)
    rgb[0, :5] = 255  # some saturated pixels
    rgb[1, :3] = 0  # black pixels: zero denominators
    return Decoded({"R": rgb[..., 0], "G": rgb[..., 1], "B": rgb[..., 2]}, 255.0, width=w, height=h)


def ms_frame(seed: int) -> Decoded:
    labels, _ = sm.field_labels(64, 80, 0.6, 0.4, seed=seed)
    return Decoded({b: sm.band_field(labels, b, noise=0.02, seed=seed) for b in ("B", "G", "R", "N", "RE")},
                   65535.0, width=80, height=64)


def reflectance_frame(seed: int) -> Decoded:
    """Float reflectance (absolute zoning by default) with NaN pixels and no-data."""
    labels, _ = sm.field_labels(48, 64, 0.5, 0.4, seed=seed)
    planes = sm.reflectance_planes(labels, sm.MS_REFLECTANCE, noise=0.01, seed=seed)
    planes["N"][0, :3] = np.nan
    nodata = np.zeros((48, 64), bool)
    nodata[5, :7] = True
    return Decoded(planes, None, nodata, width=64, height=48)


def assert_same(a: cp.Computed, b: cp.Computed) -> None:
    assert a.primary == b.primary and a.saturated == b.saturated and a.pixels == b.pixels and a.nodata == b.nodata
    assert set(a.stats) == set(b.stats)
    for name in a.stats:
        x, y = a.stats[name], b.stats[name]
        assert (x.valid_pixels, x.vegetation_pixels, x.stressed_pixels) == \
               (y.valid_pixels, y.vegetation_pixels, y.stressed_pixels), name
        assert (x.invalid_pixels, x.zoning, x.stressed_cut, x.reference) == \
               (y.invalid_pixels, y.zoning, y.stressed_cut, y.reference), name
        for field in ("mean", "median", "p10", "p90", "cover", "stressed"):
            assert getattr(x, field) == pytest.approx(getattr(y, field), abs=TOL), (name, field)
        assert x.histogram == y.histogram, name
    np.testing.assert_allclose(a.map_index, b.map_index, atol=TOL, equal_nan=True)


@pytest.mark.parametrize("make", [rgb_frame, ms_frame, reflectance_frame])
def test_torch_cpu_batch_equals_numpy(make):
    params = cp.ComputeParams.from_spec(DroneJob(healthMapMaxSize=64))
    frames = [make(s) for s in range(3)]
    expected = [cp.compute_numpy(f, params) for f in frames]
    got = TorchBackend("cpu").compute_batch(frames, params)
    for e, g in zip(expected, got):
        assert_same(e, g)


def test_mixed_sizes_in_one_batch_are_grouped():
    params = cp.ComputeParams.from_spec(DroneJob(healthMapMaxSize=64))
    frames = [rgb_frame(0), rgb_frame(1, 64, 64), ms_frame(2), rgb_frame(3)]
    got = TorchBackend("cpu").compute_batch(frames, params)
    for f, g in zip(frames, got):
        assert_same(cp.compute_numpy(f, params), g)


def test_index_formulas_identical_on_tensors():
    rng = np.random.default_rng(0)
    arrays = {b: rng.random(1000, dtype=np.float32) for b in ("R", "G", "B", "N", "RE")}
    arrays["R"][:10] = arrays["G"][:10] = arrays["B"][:10] = 0
    tensors = {b: torch.from_numpy(v.copy()) for b, v in arrays.items()}
    for name, formula in ix.FORMULAS.items():
        np.testing.assert_array_equal(formula(arrays, np), formula(tensors, torch).numpy(), err_msg=name)


def test_pipeline_with_torch_engine(data_dir, spec, paths):
    from thresher.jobs.drone.pipeline import NumpyEngine, TorchEngine, run_process

    for i in range(3):
        labels, _ = sm.field_labels(48, 64, 0.5, 0.3, seed=i)
        sm.write_rgb(data_dir / "input" / f"f{i}.jpg", sm.rgb_field(labels, seed=i))
    (data_dir / "input" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0")
    torch_stats = run_process(spec, paths, TorchEngine("cpu"))
    other = Paths_for(spec, data_dir / "numpy", data_dir / "input")
    numpy_stats = run_process(spec, other, NumpyEngine())
    t = {i["key"]: i for i in torch_stats.items}
    n = {i["key"]: i for i in numpy_stats.items}
    assert not t["bad.jpg"]["ok"] and not n["bad.jpg"]["ok"]
    for key in ("f0.jpg", "f1.jpg", "f2.jpg"):
        assert t[key]["frames"][0]["cover"] == pytest.approx(n[key]["frames"][0]["cover"], abs=TOL)
        assert t[key]["frames"][0]["indices"]["GLI"]["mean"] == pytest.approx(
            n[key]["frames"][0]["indices"]["GLI"]["mean"], abs=TOL)


def Paths_for(spec, root, input_dir):  # noqa: N802 - a second data dir reading the same inputs
    from thresher.jobs.drone.pipeline import Paths

    p = Paths.resolve(spec, root)
    return Paths(p.data_dir, input_dir, p.output, p.state, p.backups)
