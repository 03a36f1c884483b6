"""The ``drone`` job block of a CollectionSchedule: what the crop-health job does on each run.

Every field carries a description and its constraints because the CRD (and so
``kubectl explain``) is generated from this model's JSON schema. Types stay
JSON-schema friendly: no free-form dicts, explicit objects for thresholds.

Thresholds follow one rule for every index: a valid pixel is *vegetation* when
its index value is >= ``vegetation``, and a vegetation pixel is *stressed* when
its value is < ``stressed`` (absolute zoning), or below a share of the field's own
healthy reference (relative zoning). The built-in cuts depend on the input kind and
each is sourced in docs/drone.md; real crops may still need tuning.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

IndexName = Literal["VARI", "GLI", "ExG", "TGI", "NDVI", "NDRE", "GNDVI", "SAVI"]
RGB_INDEX_NAMES: tuple[str, ...] = ("VARI", "GLI", "ExG", "TGI")
NIR_INDEX_NAMES: tuple[str, ...] = ("NDVI", "NDRE", "GNDVI", "SAVI")
ALL_INDEX_NAMES: tuple[str, ...] = RGB_INDEX_NAMES + NIR_INDEX_NAMES

IMAGE_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png", "tif", "tiff")
VIDEO_EXTENSIONS: tuple[str, ...] = ("mp4", "avi", "mov")

Extension = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]{1,10}$")]
RelPath = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class IndexThresholds(BaseModel):
    """Where one index separates soil from vegetation and healthy from stressed vegetation."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    vegetation: float = Field(
        ge=-10.0, le=10.0,
        description="A valid pixel counts as vegetation when the index is at least this value.",
    )
    stressed: float = Field(
        ge=-10.0, le=10.0,
        description="A vegetation pixel counts as stressed when the index is below this value "
                    "(must be >= vegetation).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> IndexThresholds:
        if self.stressed < self.vegetation:
            raise ValueError(f"stressed ({self.stressed}) must be >= vegetation ({self.vegetation})")
        return self


InputKind = Literal["photo8", "dn16", "reflectance"]
INPUT_KINDS: tuple[str, ...] = ("photo8", "dn16", "reflectance")

# Built-in (vegetation, stressed) cuts per input kind and index; docs/drone.md gives the source of each.
# photo8: 8-bit camera photos (gamma-encoded, auto-exposed); dn16: 16-bit raw DN of multispectral
# cameras without calibration panels (DN / 65535); reflectance: calibrated float reflectance 0..1.
# Normalized ratios do not depend on the scale, so they share cuts; TGI and SAVI do not.
_RATIO_CUTS: dict[str, tuple[float, float]] = {
    "NDVI": (0.3, 0.6), "NDRE": (0.15, 0.25), "GNDVI": (0.45, 0.6), "SAVI": (0.2, 0.45),
    "VARI": (0.0, 0.2), "GLI": (0.05, 0.2), "ExG": (0.1, 0.3),
}
DEFAULT_THRESHOLDS: dict[str, dict[str, tuple[float, float]]] = {
    "photo8": {**_RATIO_CUTS, "TGI": (0.08, 0.29)},
    "dn16": {**_RATIO_CUTS, "TGI": (0.025, 0.04)},
    "reflectance": {**_RATIO_CUTS, "TGI": (0.025, 0.04)},
}
# Zoning used by ``zoning: auto``: where absolute cuts are unreliable (no radiometric calibration:
# photos with auto exposure and gamma, raw DN), stress is judged against the field's own level.
AUTO_ZONING: dict[str, str] = {"photo8": "relative", "dn16": "relative", "reflectance": "absolute"}


class Thresholds(BaseModel):
    """Per-index overrides of the built-in cuts (which depend on the input kind, see docs/drone.md)."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    vari: IndexThresholds | None = Field(default=None, description="VARI (G-R)/(G+R-B). Unset: built-in cuts "
                                         "(vegetation 0.0, stressed 0.2).")
    gli: IndexThresholds | None = Field(default=None, description="GLI (2G-R-B)/(2G+R+B). Unset: vegetation "
                                        "0.05, stressed 0.2.")
    exg: IndexThresholds | None = Field(default=None, description="ExG 2g-r-b on chromatic coordinates. Unset: "
                                        "vegetation 0.1, stressed 0.3.")
    tgi: IndexThresholds | None = Field(default=None, description="TGI G-0.39R-0.61B on 0..1 scale. Unset: "
                                        "8-bit photos vegetation 0.08, stressed 0.29; 16-bit DN and "
                                        "reflectance 0.025 and 0.04.")
    ndvi: IndexThresholds | None = Field(default=None, description="NDVI (N-R)/(N+R). Unset: vegetation 0.3, "
                                         "stressed 0.6.")
    ndre: IndexThresholds | None = Field(default=None, description="NDRE (N-Re)/(N+Re). Unset: vegetation "
                                         "0.15, stressed 0.25.")
    gndvi: IndexThresholds | None = Field(default=None, description="GNDVI (N-G)/(N+G). Unset: vegetation "
                                          "0.45, stressed 0.6.")
    savi: IndexThresholds | None = Field(default=None, description="SAVI 1.5(N-R)/(N+R+0.5). Unset: "
                                         "vegetation 0.2, stressed 0.45.")

    def cuts(self, name: str, kind: str) -> tuple[float, float]:
        """(vegetation, stressed) for index ``name`` on input of ``kind``: the override, else the built-in."""
        override = getattr(self, name.lower())
        if override is not None:
            return override.vegetation, override.stressed
        return DEFAULT_THRESHOLDS[kind][name]


class RelativeZoning(BaseModel):
    """Stress relative to the field's own healthy level (a virtual reference, as in Holland & Schepers 2013)."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    reference_quantile: float = Field(
        default=0.95, ge=0.5, le=1.0, alias="referenceQuantile",
        description="The field's healthy reference is this quantile of its vegetation pixels' index values.",
    )
    stressed_below: float = Field(
        default=0.8, gt=0.0, lt=1.0, alias="stressedBelow",
        description="A vegetation pixel is stressed when its index / the reference is below this "
                    "(a sufficiency index).",
    )


BandName = Literal["R", "G", "B", "N", "RE", "alpha", "ignore"]


class Orthomosaic(BaseModel):
    """How GeoTIFF orthomosaics are recognised, read and turned into zones (docs/drone.md, "Orthomosaics")."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    bands: list[BandName] = Field(
        default_factory=list, max_length=16,
        description="Band map, one entry per band of the file in order (R, G, B, N, RE, alpha, ignore), for "
                    "files that do not name their bands. Empty: from the file's band descriptions or colour "
                    "interpretation (RGB, RGBA).",
    )
    min_pixels: int = Field(
        default=40_000_000, ge=1, alias="minPixels",
        description="A TIFF is read as an orthomosaic (window by window) when it is georeferenced or has at "
                    "least this many pixels; smaller plain TIFFs are photos.",
    )
    min_zone_area_m2: float = Field(
        default=50.0, ge=0.0, le=1e9, alias="minZoneAreaM2",
        description="Stress and bare zones smaller than this many square metres are left out of the GeoJSON.",
    )
    simplify_pixels: float = Field(
        default=1.0, ge=0.0, le=100.0, alias="simplifyPixels",
        description="Zone outlines are simplified (Douglas-Peucker) within this many zone-grid cells.",
    )
    zone_grid_max_pixels: int = Field(
        default=8_000_000, ge=10_000, le=400_000_000, alias="zoneGridMaxPixels",
        description="Zones are traced on the mosaic reduced by the smallest power of two that brings it to at "
                    "most this many cells (each cell the mean index of its pixels).",
    )


def _no_parent_rule(alias: str) -> dict:
    # Same check as storage.subPath: the data directory is the volume; '..' would leave it.
    return {"rule": f"!has(self.{alias}) || !self.{alias}.matches('(^|/)[.][.](/|$)')",
            "message": f"drone {alias} must not contain '..'", "fieldPath": f".{alias}"}


PATH_ALIASES = ("inputPath", "outputPath", "statePath", "backupPath")
PARALLEL_TASK_RULE = {
    "rule": "!has(self.parallelism) || self.parallelism == 1 || !has(self.task) || self.task == 'process'",
    "message": "drone parallelism above 1 is for task process only", "fieldPath": ".parallelism"}


class DroneJob(BaseModel):
    """Crop-health processing of drone images in a folder of the schedule's storage."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", json_schema_extra={
        "x-kubernetes-validations": [_no_parent_rule(alias) for alias in PATH_ALIASES] + [PARALLEL_TASK_RULE]})

    task: Literal["process", "report", "backup", "cleanup"] = Field(
        default="process",
        description="process: new or changed inputs into indices, health maps and a run report; "
                    "report: a report over the last reportPeriodDays; backup: snapshot the state "
                    "database; cleanup: delete outputs and state older than retentionDays.",
    )
    input_path: RelPath = Field(
        default="input", alias="inputPath",
        description="Folder with drone images and videos, relative to the data directory unless absolute.",
    )
    output_path: RelPath = Field(
        default="output", alias="outputPath",
        description="Folder for health maps, per-image results and reports, relative to the data "
                    "directory unless absolute.",
    )
    state_path: RelPath = Field(
        default="state", alias="statePath",
        description="Folder of the SQLite state database that records which inputs were processed, "
                    "relative to the data directory unless absolute.",
    )
    backup_path: RelPath = Field(
        default="backups", alias="backupPath",
        description="Folder for state database snapshots (task backup), relative to the data "
                    "directory unless absolute.",
    )
    extensions: list[Extension] = Field(
        default_factory=lambda: list(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS), min_length=1, max_length=32,
        description="File extensions to process, without the dot, case-insensitive. Images: jpg, jpeg, "
                    "png, tif, tiff; videos: mp4, avi, mov.",
    )
    recursive: bool = Field(default=True, description="Also look into sub-folders of inputPath.")
    backend: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="Compute backend: cpu (NumPy), cuda (PyTorch on a GPU; the schedule must request "
                    "nvidia.com/gpu), or auto (cuda when PyTorch sees a GPU, else cpu).",
    )
    batch_size: int = Field(
        default=16, ge=1, le=256, alias="batchSize",
        description="Inputs claimed, decoded and computed together; on cuda also the nvJPEG decode batch.",
    )
    workers: int = Field(
        default=0, ge=0, le=64,
        description="CPU threads for decoding and NumPy math; 0 means one per available CPU.",
    )
    indices: list[IndexName] = Field(
        default_factory=list, max_length=8,
        description="Indices to compute: VARI, GLI, ExG, TGI (any RGB input), NDVI, NDRE, GNDVI, SAVI "
                    "(multispectral). Empty means every index the input's bands allow.",
    )
    primary_index: Literal["auto", "VARI", "GLI", "ExG", "TGI", "NDVI", "NDRE", "GNDVI", "SAVI"] = Field(
        default="auto", alias="primaryIndex",
        description="Index behind the health map and the headline cover and stressed fractions; auto "
                    "is NDVI when the input has NIR, else GLI.",
    )
    thresholds: Thresholds = Field(
        default_factory=Thresholds,
        description="Overrides of the vegetation and stressed cuts per index (built-ins depend on the "
                    "input kind: 8-bit photo, 16-bit DN, reflectance).",
    )
    zoning: Literal["auto", "absolute", "relative"] = Field(
        default="auto",
        description="How stressed vegetation is found: absolute (index below the stressed cut), relative "
                    "(index below stressedBelow x the field's own healthy reference), or auto: relative for "
                    "uncalibrated input (8-bit photos, 16-bit DN), absolute for float reflectance.",
    )
    relative: RelativeZoning = Field(default_factory=RelativeZoning,
                                     description="Settings of relative zoning.")
    min_denominator: float = Field(
        default=0.06, ge=0.0, le=0.5, alias="minDenominator",
        description="A pixel is invalid for a ratio index when its denominator is 0 or smaller than this "
                    "share of full scale (dark or bluish pixels: shadow, water, sky); invalid pixels are "
                    "reported as a share and left out of every statistic.",
    )
    video_frame_interval_seconds: float = Field(
        default=5.0, gt=0.0, le=3600.0, alias="videoFrameIntervalSeconds",
        description="For videos, process one frame every this many seconds of video time.",
    )
    max_video_frames: int = Field(
        default=720, ge=1, le=100000, alias="maxVideoFrames",
        description="At most this many frames are sampled from one video.",
    )
    health_map_max_size: int = Field(
        default=1024, ge=64, le=16384, alias="healthMapMaxSize",
        description="Longest side, in pixels, of the colour health map PNG written per image.",
    )
    orthomosaic: Orthomosaic = Field(default_factory=Orthomosaic,
                                     description="GeoTIFF orthomosaic input and georeferenced zone output.")
    parallelism: int = Field(
        default=1, ge=1, le=64,
        description="Pods that process one run together (task process only). Above 1 the run is an Indexed "
                    "Job: index i takes its share of the strips of every orthomosaic and the photos whose key "
                    "hashes to i, with its own state (statePath/shard-i-of-N); the last index to finish merges "
                    "the run's summary, class COG and zones. The indexes share the schedule's storage: a "
                    "ReadWriteMany claim, or a ReadWriteOnce claim with a nodeSelector pinning one node.",
    )
    report_period_days: int = Field(
        default=7, ge=1, le=3660, alias="reportPeriodDays",
        description="Task report covers inputs processed in this many days before now.",
    )
    retention_days: int = Field(
        default=30, ge=1, le=36600, alias="retentionDays",
        description="Task cleanup deletes run reports and per-image outputs older than this, and "
                    "state rows of inputs that no longer exist.",
    )
    backup_keep: int = Field(
        default=7, ge=1, le=1000, alias="backupKeep",
        description="Task backup keeps this many newest snapshots and deletes older ones.",
    )
    dry_run: bool = Field(
        default=False, alias="dryRun",
        description="Task cleanup only reports what it would delete.",
    )

    @field_validator("input_path", "output_path", "state_path", "backup_path")
    @classmethod
    def _no_parent(cls, value: str, info) -> str:
        if ".." in value.split("/"):
            raise ValueError(f"drone {cls.model_fields[info.field_name].alias} must not contain '..'")
        return value

    @model_validator(mode="after")
    def _primary_computed(self) -> DroneJob:
        if self.indices and self.primary_index != "auto" and self.primary_index not in self.indices:
            raise ValueError(f"primaryIndex {self.primary_index} is not among indices {self.indices}")
        return self

    @model_validator(mode="after")
    def _parallel_process_only(self) -> DroneJob:
        if self.parallelism > 1 and self.task != "process":
            raise ValueError("drone parallelism above 1 is for task process only")
        return self

    def normalized_extensions(self) -> frozenset[str]:
        return frozenset(e.lower().lstrip(".") for e in self.extensions)
