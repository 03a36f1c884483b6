"""Bad inputs are skipped with a reason, the batch goes on, and the run ends PARTIAL."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from thresher.api.names import ExitCode
from thresher.demo.fakes import drone_fields as sm
from thresher.jobs.drone.cli import execute, process_result
from thresher.jobs.drone.pipeline import run_process


def good(path: Path, seed: int = 0) -> None:
    labels, _ = sm.field_labels(32, 32, 0.5, 0.5, seed=seed)
    sm.write_rgb(path, sm.rgb_field(labels, seed=seed))


def make_bad_inputs(root: Path) -> dict[str, str]:
    """Bad files and the reason fragment each must produce."""
    good(root / "ok.jpg")
    full = (root / "ok.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (root / "zero.png").write_bytes(b"")
    (root / "garbage.tif").write_bytes(b"II*\x00garbage")
    tifffile.imwrite(root / "gray.tif", np.zeros((8, 8), np.uint16))
    tifffile.imwrite(root / "sixband.tif", np.zeros((8, 8, 6), np.uint16))
    labels, _ = sm.field_labels(32, 32, 0.5, 0.5)
    files = sm.write_micasense(root / "ms", 1, labels)
    tifffile.imwrite(files[2], np.zeros((16, 16), np.uint16))  # red band of another size
    return {"truncated.jpg": "truncated", "zero.png": "empty file", "garbage.tif": "cannot decode",
            "gray.tif": "wrong band count", "sixband.tif": "wrong band count",
            "ms/IMG_0001": "mismatched band sizes"}


# Pillow warns about the garbage TIFF's EXIF before refusing it; the refusal is what we report.
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_each_bad_input_is_skipped_with_its_reason(data_dir, spec, paths, engine):
    expected = make_bad_inputs(data_dir / "input")
    stats = run_process(spec, paths, engine)
    by = {i["key"]: i for i in stats.items}
    assert by["ok.jpg"]["ok"]
    for key, fragment in expected.items():
        assert not by[key]["ok"] and fragment in by[key]["reason"], (key, by[key]["reason"])
    summary = json.loads(stats.summary_path.read_text())
    assert {s["key"] for s in summary["skipped"]} == set(expected)
    result = process_result(stats.items, "out", 1.0, [])
    assert result.exit_code == ExitCode.PARTIAL and result.failed == len(expected) and result.valid == 1
    assert result.quality == pytest.approx(1 / (1 + len(expected)))


def test_unreadable_file_is_skipped(data_dir, spec, paths, engine, monkeypatch):
    """Tests run as root, which reads any file whatever its mode bits, so a chmod 000 proves nothing here.
    Instead open() is made to fail with EACCES for one path, as it would for a non-root job."""
    good(data_dir / "input" / "a.jpg")
    good(data_dir / "input" / "locked.jpg", 1)
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if str(file).endswith("locked.jpg"):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    stats = run_process(spec, paths, engine)
    by = {i["key"]: i for i in stats.items}
    assert by["a.jpg"]["ok"] and by["locked.jpg"]["reason"] == "unreadable: Permission denied"


def test_failed_input_is_not_retried_until_it_changes(data_dir, spec, paths, engine):
    (data_dir / "input" / "zero.png").write_bytes(b"")
    assert len(run_process(spec, paths, engine).items) == 1
    assert run_process(spec, paths, engine).items == []
    good(data_dir / "input" / "zero.png")
    again = run_process(spec, paths, engine)
    assert again.items[0]["ok"]


def test_missing_input_folder_is_a_config_error(tmp_path, spec):
    result = execute(spec, tmp_path / "nowhere")
    assert result.exit_code == ExitCode.CONFIG and "does not exist" in result.error
