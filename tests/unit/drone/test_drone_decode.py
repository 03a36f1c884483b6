"""Decoding photos: Pillow's pixels are read where the decoder wrote them, without a copy."""

from __future__ import annotations

import gc
import io

import numpy as np
from PIL import Image

from thresher.jobs.drone import decode as dc
from thresher.demo.fakes import drone_fields as sm


def field_png(h: int = 48, w: int = 64, alpha: bool = False) -> bytes:
    labels, _ = sm.field_labels(h, w, 0.5, 0.3, seed=3)
    rgb = sm.rgb_field(labels, seed=3)
    image = Image.fromarray(rgb, "RGB")
    if alpha:
        a = np.full((h, w), 255, np.uint8)
        a[:4, :6] = 0
        image.putalpha(Image.fromarray(a, "L"))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_photo_planes_view_pillows_own_buffer_and_outlive_the_image():
    """Pillow >= 11.2 (what `make test` installs): the planes view Pillow's own buffer. An older
    Pillow (pyproject allows >= 10) has no Arrow export: the planes come from np.asarray's copy."""
    data = field_png()
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    frame = dc.decode_pil(data, "f.png")
    owner = frame.planes["R"].base
    if hasattr(Image.Image, "__arrow_c_array__"):
        assert owner.shape == (48, 64, 4) and not owner.flags.writeable  # Pillow's 4-byte pixels, not a copy
    else:
        assert owner.shape == (48, 64, 3)  # the packed copy
    assert all(frame.planes[b].base is owner for b in "RGB")
    gc.collect()  # the Image is gone; the export keeps its buffer alive
    np.testing.assert_array_equal(np.stack([frame.planes[b] for b in "RGB"], axis=-1), expected)


def test_rgba_photo_keeps_its_alpha_as_nodata():
    frame = dc.decode_pil(field_png(alpha=True), "f.png")
    assert frame.nodata is not None and int(frame.nodata.sum()) == 24 and frame.nodata[:4, :6].all()
    assert frame.planes["R"].shape == (48, 64)


def test_image_in_several_pillow_blocks_falls_back_to_a_copy():
    """An image larger than Pillow's block cannot be exported in one piece: np.asarray's copy, same pixels."""
    data = field_png()
    core = Image.core
    size = core.get_block_size()
    core.set_block_size(4096)  # 48 rows of 64 x 4 bytes: several blocks
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            pixels = dc.pillow_pixels(image)
            expected = np.asarray(image)
    finally:
        core.set_block_size(size)
    assert pixels.shape == (48, 64, 3)
    np.testing.assert_array_equal(pixels, expected)
