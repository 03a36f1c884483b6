"""Shared fixtures of the drone job tests: a data directory and small synthetic fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from thresher.api.drone import DroneJob
from thresher.jobs.drone.pipeline import NumpyEngine, Paths


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    (tmp_path / "input").mkdir()
    return tmp_path


@pytest.fixture
def spec() -> DroneJob:
    return DroneJob(workers=1, healthMapMaxSize=64)


@pytest.fixture
def paths(spec: DroneJob, data_dir: Path) -> Paths:
    return Paths.resolve(spec, data_dir)


@pytest.fixture
def engine() -> NumpyEngine:
    return NumpyEngine()
