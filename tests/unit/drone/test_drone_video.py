"""Video inputs: frames sampled at the configured interval, each processed like an image."""

from __future__ import annotations

import pytest

from thresher.demo.fakes import drone_fields as sm
from thresher.jobs.drone.pipeline import run_process


def test_frames_sampled_every_interval_with_times(data_dir, spec, paths, engine):
    truths = []
    frames = []
    for k in range(8):  # 4 fps: 2 seconds of video
        labels, truth = sm.field_labels(64, 96, 0.2 + 0.05 * k, 0.5, seed=k)
        frames.append(sm.rgb_field(labels, seed=k))
        truths.append(truth)
    sm.write_video(data_dir / "input" / "pass.mp4", frames, fps=4)
    spec = spec.model_copy(update={"video_frame_interval_seconds": 0.5})
    stats = run_process(spec, paths, engine)
    item = stats.items[0]
    assert item["ok"] and item["kind"] == "video"
    times = [f["frame_time"] for f in item["frames"]]
    assert times == [0.0, 0.5, 1.0, 1.5]
    for frame, k in zip(item["frames"], (0, 2, 4, 6)):
        # MPEG-4 at 4:2:0 is lossy: cover within a couple of percent of the frame's truth.
        assert frame["cover"] == pytest.approx(truths[k].vegetation_fraction, abs=0.03)
        assert (data_dir / "output" / frame["map"]).is_file()


def test_truncated_video_keeps_decoded_frames_or_fails_cleanly(data_dir, spec, paths, engine):
    frames = [sm.rgb_field(sm.field_labels(64, 64, 0.5, 0.5, seed=k)[0]) for k in range(6)]
    sm.write_video(data_dir / "input" / "v.mp4", frames, fps=2)
    data = (data_dir / "input" / "v.mp4").read_bytes()
    (data_dir / "input" / "v.mp4").write_bytes(data[: len(data) // 3])
    (data_dir / "input" / "junk.mov").write_bytes(b"\x00" * 100)
    stats = run_process(spec, paths, engine)
    by = {i["key"]: i for i in stats.items}
    assert not by["junk.mov"]["ok"] and "video" in by["junk.mov"]["reason"]
    v = by["v.mp4"]
    assert (v["ok"] and len(v["frames"]) >= 1) or "video" in v["reason"]
