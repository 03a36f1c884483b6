"""The PyTorch backend: batched JPEG decode on the GPU (nvJPEG) and batched index maths.

Same definitions as the NumPy backend (``fused.py``, ``stats.py``), written for
tensors: the same float32 operations, so values, bins and counts are identical and
means differ only by summation order (the equivalence test checks 1e-5); with nvJPEG decoding, pixels
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
from thresher.jobs.drone.compute import ComputeParams, Computed, full_scale, input_kind, map_factor, map_grid
from thresher.jobs.drone.decode import Decoded
from thresher.jobs.drone.stats import QBINS, QRANGE, QSCALE, IndexStats, finish


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
        """The kernel's definitions (``fused.py``) on a stack of frames: float32 terms, validity,
        float32 bins, counts, float64 sums; ``stats.finish`` does the rest, as on the CPU."""
        torch = self.torch
        band_names = list(frames[0].planes)
        max_dn = frames[0].max_dn
        kind = input_kind(max_dn)
        raw = {b: torch.stack([self._plane(f.planes[b]) for f in frames]) for b in band_names}
        names = ix.applicable(band_names, params.indices)
        primary = ix.primary(band_names, names, params.primary)
        batch, h, w = raw[band_names[0]].shape
        saturated = torch.zeros((batch, h, w), dtype=torch.bool, device=self.device)
        if max_dn is not None:
            for plane in raw.values():
                saturated |= plane == int(max_dn)
        nodata = torch.zeros((batch, h, w), dtype=torch.bool, device=self.device)
        for j, f in enumerate(frames):
            if f.nodata is not None:
                nodata[j] = self._plane(f.nodata)
        mask = saturated | nodata
        bands = {b: p.float() for b, p in raw.items()}
        del raw
        scale = full_scale(max_dn)
        floor = float(np.float32(params.min_denominator * scale))
        k = map_factor(h, w, params.map_max)
        hb, wb, kh, kw = map_grid(h, w, k)
        per_image: list[dict[str, IndexStats]] = [{} for _ in frames]
        maps: list[np.ndarray | None] = [None] * len(frames)
        masked_union = mask.sum(dim=(1, 2)).tolist()
        for name in names:
            zoning = params.zoning_for(name, kind)
            num, den = ix.terms(name, bands, float(np.float32(scale)))
            if not isinstance(den, torch.Tensor):
                den = torch.full_like(num, den)
            bad = (den == 0) | (den.abs() < floor) | mask
            v = num / torch.where(bad, torch.ones_like(den), den)
            bad |= ~(v.abs() <= 3.0e38)
            v = v.masked_fill(bad, 0.0)
            t = ((v - float(np.float32(QRANGE[0]))) * float(np.float32(QSCALE))).clamp(0, QBINS - 1)
            bins = t.to(torch.int64).masked_fill(bad, QBINS)
            offsets = (torch.arange(batch, device=self.device) * (QBINS + 1)).view(batch, 1, 1)
            hist = torch.bincount((bins + offsets).reshape(-1), minlength=batch * (QBINS + 1))
            hist = hist.view(batch, QBINS + 1)[:, :QBINS].cpu().numpy()
            good = ~bad
            below_veg = (good & (v < float(np.float32(zoning.vegetation)))).sum(dim=(1, 2)).tolist()
            below_str = (good & (v < float(np.float32(zoning.stressed)))).sum(dim=(1, 2)).tolist()
            sums = v.sum(dim=(1, 2), dtype=torch.float64).tolist()
            for j in range(batch):
                valid = int(hist[j].sum())
                per_image[j][name] = finish(hist[j], valid, below_veg[j], below_str[j],
                                            h * w - valid - int(masked_union[j]), sums[j], zoning,
                                            with_histogram=name == primary)
            if name == primary:
                block = (batch, hb, kh, wb, kw)
                total = v[:, :hb * kh, :wb * kw].to(torch.float64).reshape(block).sum(dim=(2, 4))
                count = good[:, :hb * kh, :wb * kw].reshape(block).sum(dim=(2, 4))
                means = (total / count.clamp(min=1)).masked_fill(count == 0, math.nan).to(torch.float32)
                for j in range(batch):
                    maps[j] = means[j].cpu().numpy()
            del num, den, v, bad, bins
        sat_counts = saturated.sum(dim=(1, 2)).tolist()
        nodata_counts = nodata.sum(dim=(1, 2)).tolist()
        return [Computed(stats=per_image[j], primary=primary, pixels=int(h * w), saturated=int(sat_counts[j]),
                         nodata=int(nodata_counts[j]), map_index=maps[j], kind=kind) for j in range(batch)]


def _has_gpu_jpeg() -> bool:
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True
