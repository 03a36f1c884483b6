"""The PyTorch backend: batched JPEG decode on the GPU (nvJPEG) and batched index maths.

Same definitions as the NumPy backend (``compute.py``, ``stats.py``), written for
tensors. Given the same decoded pixels, both give the same statistics to within
float32 rounding (the equivalence test checks 1e-5); with nvJPEG decoding, pixels
differ from libjpeg-turbo's by a few DN, which moves means by ~1e-3 (docs/drone.md).

``torch`` and ``torchvision`` are imported only when this backend is built, so the
CPU image and ``thresher --help`` never load them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

from thresher.jobs.drone import indices as ix
from thresher.jobs.drone.compute import ComputeParams, Computed, map_factor
from thresher.jobs.drone.decode import Decoded
from thresher.jobs.drone.stats import HIST_BINS, HIST_RANGE, IndexStats, fractions, quantile_positions


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken install (missing CUDA libs) counts as absent
        return False
    return True


def cuda_available() -> bool:
    if not torch_available():
        return False
    import torch

    return bool(torch.cuda.is_available())


class TorchBackend:
    """Computes a batch of decoded frames on ``device`` ("cuda" or "cpu")."""

    def __init__(self, device: str = "cuda"):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.gpu_decode = self.device.type == "cuda" and _has_gpu_jpeg()

    # --- decode ---------------------------------------------------------------------

    def decode_jpegs(self, frames: list[Decoded]) -> None:
        """Fill ``planes`` of frames that carry JPEG bytes, with one batched nvJPEG call."""
        pending = [f for f in frames if f.jpeg_bytes is not None]
        if not pending:
            return
        from torchvision.io import decode_jpeg

        torch = self.torch
        data = [torch.frombuffer(bytearray(f.jpeg_bytes), dtype=torch.uint8) for f in pending]
        images = decode_jpeg(data, device=self.device)
        for frame, image in zip(pending, images):
            frame.planes = {"R": image[0], "G": image[1], "B": image[2]}
            frame.jpeg_bytes = None

    # --- compute --------------------------------------------------------------------

    def _plane(self, plane: Any) -> Any:
        torch = self.torch
        if isinstance(plane, torch.Tensor):
            return plane.to(self.device)
        return torch.from_numpy(np.ascontiguousarray(plane)).to(self.device, non_blocking=True)

    def compute_batch(self, frames: list[Decoded], params: ComputeParams) -> list[Computed]:
        """Frames of the same size, bands and dtype are stacked and computed together."""
        self.decode_jpegs(frames)
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, f in enumerate(frames):
            first = next(iter(f.planes.values()))
            groups[(tuple(sorted(f.planes)), tuple(first.shape), str(first.dtype), f.max_dn)].append(i)
        results: list[Computed | None] = [None] * len(frames)
        for members in groups.values():
            for i, computed in zip(members, self._compute_group([frames[i] for i in members], params)):
                results[i] = computed
        return results  # type: ignore[return-value]

    def _compute_group(self, frames: list[Decoded], params: ComputeParams) -> list[Computed]:
        torch = self.torch
        band_names = list(frames[0].planes)
        max_dn = frames[0].max_dn
        raw = {b: torch.stack([self._plane(f.planes[b]) for f in frames]) for b in band_names}
        names = ix.applicable(band_names, params.indices)
        primary = ix.primary(band_names, names, params.primary)
        saturated = None
        if max_dn is not None:
            for plane in raw.values():
                hit = plane == int(max_dn)
                saturated = hit if saturated is None else saturated | hit
        nodata = None
        if any(f.nodata is not None for f in frames):
            nodata = torch.stack([
                self._plane(f.nodata) if f.nodata is not None
                else torch.zeros(raw[band_names[0]].shape[1:], dtype=torch.bool, device=self.device)
                for f in frames])
        mask = saturated
        if nodata is not None:
            mask = nodata if mask is None else mask | nodata
        if max_dn is None:
            bands = {b: p.float() for b, p in raw.items()}
        else:
            scale = float(np.float32(1.0 / max_dn))
            bands = {b: p.float() * scale for b, p in raw.items()}
        del raw
        per_image: list[dict[str, IndexStats]] = [{} for _ in frames]
        maps: list[np.ndarray | None] = [None] * len(frames)
        for name in names:
            values = ix.FORMULAS[name](bands, torch)
            veg, stressed = params.threshold(name)
            for j in range(len(frames)):
                m = mask[j] if mask is not None else None
                per_image[j][name] = self.index_stats(values[j], m, veg, stressed, with_histogram=name == primary)
            if name == primary:
                if mask is not None:
                    values = values.masked_fill(mask, float("nan"))
                h, w = values.shape[1:]
                k = map_factor(h, w, params.map_max)
                for j in range(len(frames)):
                    maps[j] = self.block_mean(values[j], k).cpu().numpy()
            del values
        h, w = bands[band_names[0]].shape[1:]
        out = []
        for j, f in enumerate(frames):
            out.append(Computed(
                stats=per_image[j], primary=primary, pixels=int(h * w),
                saturated=int(saturated[j].sum().item()) if saturated is not None else 0,
                nodata=int(nodata[j].sum().item()) if nodata is not None and f.nodata is not None else 0,
                map_index=maps[j],
            ))
        return out

    def index_stats(self, values: Any, mask: Any, vegetation: float, stressed: float,
                    with_histogram: bool = False) -> IndexStats:
        torch = self.torch
        valid = torch.isfinite(values)
        if mask is not None:
            valid &= ~mask
        v = values[valid]
        n = int(v.numel())
        if n == 0:
            return IndexStats(None, None, None, None, 0, 0, 0, None, None, [0] * HIST_BINS if with_histogram else [])
        veg = v >= vegetation
        n_veg = int(veg.sum().item())
        n_stressed = int((veg & (v < stressed)).sum().item())
        positions = quantile_positions(n)
        order = torch.sort(v).values
        wanted = sorted({k for lo, hi, _ in positions for k in (lo, hi)})
        picked = dict(zip(wanted, order[torch.tensor(wanted, device=v.device)].cpu().tolist()))
        p10, median, p90 = [picked[lo] + wgt * (picked[hi] - picked[lo]) for lo, hi, wgt in positions]
        cover, stress = fractions(n, n_veg, n_stressed)
        hist: list[int] = []
        if with_histogram:
            lo, hi = HIST_RANGE
            scaled = ((v - lo) * float(np.float32(HIST_BINS / (hi - lo)))).clamp(0, HIST_BINS - 1)
            idx = scaled.to(torch.int64)
            hist = [int(c) for c in torch.bincount(idx, minlength=HIST_BINS).cpu().tolist()]
        return IndexStats(
            mean=float(v.sum(dtype=torch.float64).item()) / n, median=median, p10=p10, p90=p90,
            valid_pixels=n, vegetation_pixels=n_veg, stressed_pixels=n_stressed,
            cover=cover, stressed=stress, histogram=hist,
        )

    def block_mean(self, index: Any, k: int) -> Any:
        torch = self.torch
        h, w = index.shape
        hb, wb = max(1, h // k), max(1, w // k)
        kh, kw = min(k, h), min(k, w)
        x = index[: hb * kh, : wb * kw]
        finite = torch.isfinite(x)
        zeroed = torch.where(finite, x, torch.zeros_like(x))
        total = torch.zeros((hb, wb), dtype=torch.float32, device=x.device)
        count = torch.zeros((hb, wb), dtype=torch.int32, device=x.device)
        for i in range(kh):  # same slices in the same order as compute.block_mean: identical sums
            for j in range(kw):
                total += zeroed[i::kh, j::kw]
                count += finite[i::kh, j::kw]
        out = total / count.clamp(min=1)
        return out.masked_fill(count == 0, math.nan)


def _has_gpu_jpeg() -> bool:
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True
