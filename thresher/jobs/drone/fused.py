"""The CPU backend's single pass over the decoded pixels (numba).

Row by row: the bands are converted once to float32 row buffers together with the
no-data/saturation mask; then, for each requested index, a loop that LLVM vectorises
computes numerator and denominator in source units (``indices.terms``: the same float32
operations in the same order as the torch backend and the NumPy reference), validity,
the value, its fine-histogram bin and the counts below the cuts; a short scalar loop adds
the bins to the histogram (two interleaved copies, so runs of equal bins do not stall on
one counter). The primary index's row also feeds the health map's block sums. Nothing of
image size is allocated.

8-bit input: VARI, GLI and ExG need no per-pixel loop. Their terms are exact integers and
each depends on two of them ((G, R + B) for GLI and ExG, (G - R, G + R - B) for VARI), so
each pixel adds one count to each of two tables and ``_table_finish`` turns every non-empty
cell into one value with the same float32 operations (docs/drone.md, "Backends").

Why numba and not numexpr: numexpr evaluates array expressions fast but each index would
still be a pass writing a 12 M-element temporary, and it cannot build histograms or
counts; the statistics would again need NumPy passes and a quantile selection (the old
path: four passes plus selection per index, ~12 % of decode speed). numba compiles this
loop to vectorised machine code, keeps nothing per pixel and releases the GIL (``nogil``),
so decode and compute threads run side by side. ``cache=True`` keeps the compiled code on
disk, so only the first process on a machine pays the compilation (~10 s); in a job pod
(read-only root filesystem) the cache goes to /tmp, so each pod compiles once.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path


def numba_cache_dir(environ: Mapping[str, str], package_writable: bool, tmp: str) -> str | None:
    """Where numba should cache compiled code, when its default (next to this file) will not do.

    With ``cache=True`` and no writable place numba fails at import; job pods run with a read-only
    root filesystem and a writable /tmp (an emptyDir), so the cache goes there. An explicit
    NUMBA_CACHE_DIR wins."""
    if environ.get("NUMBA_CACHE_DIR") or package_writable:
        return None
    return os.path.join(tmp, "thresher-numba-cache")


_CACHE_DIR = numba_cache_dir(os.environ, os.access(Path(__file__).parent, os.W_OK), tempfile.gettempdir())
if _CACHE_DIR:
    os.environ["NUMBA_CACHE_DIR"] = _CACHE_DIR

import numba  # noqa: E402 - after NUMBA_CACHE_DIR is settled
import numpy as np  # noqa: E402

if _CACHE_DIR:
    numba.config.CACHE_DIR = _CACHE_DIR  # in case numba was imported before this module

from thresher.api.drone import ALL_INDEX_NAMES

CODES = {name: i for i, name in enumerate(ALL_INDEX_NAMES)}  # VARI GLI ExG TGI NDVI NDRE GNDVI SAVI
BANDS = ("R", "G", "B", "N", "RE")
f32 = np.float32
JIT = {"nogil": True, "cache": True, "error_model": "numpy"}  # numpy error model: no division checks, so loops vectorise


@numba.njit(inline="always", **JIT)
def _terms(code, r, g, b, n, re, full_scale):
    """indices.terms in float32, for one pixel; ``code`` is a compile-time constant at each call site."""
    if code == 0:
        return g - r, g + r - b
    if code == 1:
        return f32(2.0) * g - r - b, f32(2.0) * g + r + b
    if code == 2:
        return f32(2.0) * g - r - b, r + g + b
    if code == 3:
        return g - f32(0.39) * r - f32(0.61) * b, full_scale
    if code == 4:
        return n - r, n + r
    if code == 5:
        return n - re, n + re
    if code == 6:
        return n - g, n + g
    return f32(1.5) * (n - r), n + r + f32(0.5) * full_scale


@numba.njit(inline="always", **JIT)
def _index_row(code, rb, gb, bb, nb_, reb, mrow, width, full_scale, floor, veg, stressed, qlo, qscale, nbins,
               vbuf, binbuf):
    """Values (0 where invalid), bins (nbins where invalid or masked) and counts below the cuts of one row."""
    below_veg = 0
    below_stressed = 0
    for x in range(width):
        num, den = _terms(code, rb[x], gb[x], bb[x], nb_[x], reb[x], full_scale)
        bad = (den == f32(0.0)) | (abs(den) < floor) | (mrow[x] != 0)
        v = num / (f32(1.0) if bad else den)
        bad = bad | ~(abs(v) <= f32(3.0e38))  # NaN or inf from float input
        v = f32(0.0) if bad else v
        t = min(max((v - qlo) * qscale, f32(0.0)), f32(nbins - 1))
        binbuf[x] = nbins if bad else np.int32(t)
        vbuf[x] = v
        below_veg += (not bad) & (v < veg)
        below_stressed += (not bad) & (v < stressed)
    return below_veg, below_stressed


@numba.njit(inline="always", **JIT)
def _index_row_any(code, rb, gb, bb, nb_, reb, mrow, width, full_scale, floor, veg, stressed, qlo, qscale, nbins,
                   vbuf, binbuf):
    """_index_row for a runtime code: one call per code with a literal, so each inlined copy is specialised
    and vectorised."""
    if code == 0:
        return _index_row(0, rb, gb, bb, nb_, reb, mrow, width, full_scale, floor, veg, stressed, qlo, qscale, nbins, vbuf, binbuf)
    if code == 1:
        return _index_row(1, rb, gb, bb, nb_, reb, mrow, width, full_scale, floor, veg, stressed, qlo, qscale, nbins, vbuf, binbuf)
    if code == 2:
        return _index_row(2, rb, gb, bb, nb_, reb, mrow, width, full_scale, floor, veg, stressed, qlo, qscale, nbins, vbuf, binbuf)
    if code == 3:
        return _index_row(3, rb, gb, bb, nb_, reb, mrow, width, full_scale, floor, veg, stressed, qlo, qscale, nbins, vbuf, binbuf)
    if code == 4:
        return _index_row(4, rb, gb, bb, nb_, reb, mrow, width, full_scale, floor, veg, stressed, qlo, qscale, nbins, vbuf, binbuf)
    if code == 5:
        return _index_row(5, rb, gb, bb, nb_, reb, mrow, width, full_scale, floor, veg, stressed, qlo, qscale, nbins, vbuf, binbuf)
    if code == 6:
        return _index_row(6, rb, gb, bb, nb_, reb, mrow, width, full_scale, floor, veg, stressed, qlo, qscale, nbins, vbuf, binbuf)
    return _index_row(7, rb, gb, bb, nb_, reb, mrow, width, full_scale, floor, veg, stressed, qlo, qscale, nbins, vbuf, binbuf)


@numba.njit(nogil=True, cache=True, error_model="numpy", fastmath={"reassoc"})
def _row_sum(vbuf):
    """Sum of a row in float32 (reassociated so it vectorises); rows add up in float64."""
    s = f32(0.0)
    for x in range(vbuf.shape[0]):
        s += vbuf[x]
    return s


# 8-bit input: two tables of pixel counts, one cell per distinct pair of integer terms (see _table_finish).
GS_G = 512  # green x (red + blue): a row per green level, R + B is 0..510
GS_SIZE = 256 * GS_G
VA_E = 768  # (G - R) x (G + R - B): a row per G - R (-255..255), G + R - B is -255..510
VA_BASE = GS_SIZE
VA_SIZE = 511 * VA_E
TABLE_SIZE = VA_BASE + VA_SIZE + 1  # the last cell takes masked pixels


@numba.njit(**JIT)
def _table_keys(rf, gf, bf, mrow, width, gs_keys, va_keys):
    """The cells of each pixel in the two tables (the last cell where masked)."""
    for x in range(width):
        r, g, b = rf[x], gf[x], bf[x]
        m = mrow[x] != 0
        gs_keys[x] = TABLE_SIZE - 1 if m else np.int32(g) * GS_G + np.int32(r + b)
        va_keys[x] = TABLE_SIZE - 1 if m else VA_BASE + np.int32(g - r + f32(255.0)) * VA_E + np.int32(g + r - b + f32(255.0))


@numba.njit(**JIT)
def _table_count(gs_keys, va_keys, width, table, gs, va):
    if gs and va:
        for x in range(width):
            table[gs_keys[x]] += 1
            table[va_keys[x]] += 1
    elif gs:
        for x in range(width):
            table[gs_keys[x]] += 1
    else:
        for x in range(width):
            table[va_keys[x]] += 1


@numba.njit(inline="always", **JIT)
def _table_cell(s, code, c, r, g, b, full_scale, floor, veg, stressed, qlo, qscale, hist, sums, counts):
    zero = f32(0.0)
    nbins = hist.shape[2] - 1
    num, den = _terms(code, r, g, b, zero, zero, full_scale)
    if (den == zero) | (abs(den) < floor):
        hist[s, 0, nbins] += c
        return
    v = num / den
    t = min(max((v - qlo) * qscale, zero), f32(nbins - 1))
    hist[s, 0, np.int32(t)] += c
    sums[s] += c * np.float64(v)
    counts[s, 0] += c if v < veg[s] else 0
    counts[s, 1] += c if v < stressed[s] else 0


@numba.njit(**JIT)
def _map_row(code, rb, gb, bb, nb_, reb, mrow, width, full_scale, floor, macc, mcnt):
    """The primary index's values and validity added to the map's column sums (no bins, no counts)."""
    for x in range(width):
        num, den = _terms(code, rb[x], gb[x], bb[x], nb_[x], reb[x], full_scale)
        bad = (den == f32(0.0)) | (abs(den) < floor) | (mrow[x] != 0)
        v = num / (f32(1.0) if bad else den)
        bad = bad | ~(abs(v) <= f32(3.0e38))
        macc[x] += f32(0.0) if bad else v
        mcnt[x] += not bad


@numba.njit(**JIT)
def _table_finish(table, codes, use_table, full_scale, floor, veg, stressed, qlo, qscale, hist, sums, counts):
    """For 8-bit pixels the terms are exact integers in float32, and an index's value depends only on two of
    them: GLI and ExG on G and S = R + B (num 2G - S; den 2G + S or G + S), VARI on d = G - R and
    e = G + R - B (num d, den e). Each non-empty cell is one value, computed with the kernel's own float32
    operations (``_terms`` on stand-in bands with the same exact terms: r = S, b = 0 for GLI and ExG;
    r = 0, g = d, b = d - e for VARI) and added with its pixel count to the histogram, the counts below
    the cuts and the float64 sum. Clears the table."""
    zero = f32(0.0)
    for s in range(codes.shape[0]):
        if not use_table[s]:
            continue
        code = codes[s]
        if code == 0:
            for d in range(-255, 256):
                row = VA_BASE + (d + 255) * VA_E
                for e in range(-255, 511):
                    c = table[row + e + 255]
                    if c != 0:
                        _table_cell(s, 0, c, zero, f32(d), f32(d - e), full_scale, floor, veg, stressed, qlo, qscale,
                                    hist, sums, counts)
        else:
            for g in range(256):
                for sb in range(511):
                    c = table[g * GS_G + sb]
                    if c != 0:
                        _table_cell(s, code, c, f32(sb), f32(g), zero, full_scale, floor, veg, stressed, qlo, qscale,
                                    hist, sums, counts)
    table[:] = 0


@numba.njit(**JIT)
def _convert_row(src, base, width, out, present):
    if present:
        for x in range(width):
            out[x] = f32(src[base + x])


@numba.njit(**JIT)
def _mask_row(rb, gb, bb, nb_, reb, present, sat, width, mrow):
    """mrow = pixel at the saturation DN in some band; returns how many."""
    mrow[:] = 0
    if sat < f32(0.0):
        return 0
    for band, buf in enumerate((rb, gb, bb, nb_, reb)):
        if present[band]:
            for x in range(width):
                mrow[x] |= buf[x] == sat
    n = 0
    for x in range(width):
        n += mrow[x]
    return n


@numba.njit(**JIT)
def _unpack_words(words, y, width, shifts, sat, check_sat, rf, gf, bf, mrow):
    """R, G, B of row ``y`` of 8-bit pixels stored 4 bytes a pixel (Pillow's RGB/RGBA), read as one
    little-endian uint32 per pixel: shifts and masks vectorise where a stride-4 byte gather does not
    (~0.6 ns/pixel against ~1 ns for de-interleave, compare and convert). mrow = some band at ``sat``
    (when ``check_sat``)."""
    row = words[y]
    sr, sg, sb = shifts[0], shifts[1], shifts[2]
    for x in range(width):
        v = row[x]
        r = (v >> sr) & 255
        g = (v >> sg) & 255
        b = (v >> sb) & 255
        mrow[x] = check_sat & ((r == sat) | (g == sat) | (b == sat))
        rf[x] = f32(r)
        gf[x] = f32(g)
        bf[x] = f32(b)


@numba.njit(**JIT)
def _deinterleave(pixels, y, width, channels, rb, gb, bb):
    """R, G, B of row ``y`` of a C-contiguous H x W x C array into row buffers of its own dtype, one
    channel per loop (constant strides vectorise; ~30 % faster than one loop writing all three)."""
    row = pixels[y]
    cr, cg, cb = channels[0], channels[1], channels[2]
    for x in range(width):
        rb[x] = row[x, cr]
    for x in range(width):
        gb[x] = row[x, cg]
    for x in range(width):
        bb[x] = row[x, cb]


@numba.njit(**JIT)
def _to_float_row(src, sat, check_sat, width, out, mrow):
    """out = src as float32; mrow |= src == sat (compared in the source dtype) when ``check_sat``."""
    if check_sat:
        for x in range(width):
            mrow[x] |= src[x] == sat
    for x in range(width):
        out[x] = f32(src[x])


@numba.njit(**JIT)
def _flush_map_row(macc, mcnt, by, kw, wb, map_sum, map_cnt):
    """Add the column sums of a band of rows to map row ``by`` (kw consecutive columns a block); clear them."""
    for bx in range(wb):
        s = 0.0
        c = 0
        for j in range(bx * kw, bx * kw + kw):
            s += macc[j]
            c += mcnt[j]
        map_sum[by, bx] += s
        map_cnt[by, bx] += c
    macc[:] = 0
    mcnt[:] = 0


@numba.njit(**JIT)
def image_pass(codes, R, G, B, N, RE, pixels, channels, present, nodata, has_nodata, sat, height, width,
               full_scale, floor,
               veg, stressed, qlo, qscale, primary_slot, kh, kw, hb, wb, hist, sums, counts, map_sum, map_cnt, masked,
               words=None, shifts=None, table=None, use_table=None):
    """One image (or window). hist[s, copy, bin] (bin == nbins: invalid or masked); counts[s] = (below
    vegetation, below stressed); masked = (saturated, no data, either).

    Row sources, in order of preference: ``words`` (H x W uint32, 8-bit R, G, B at bit ``shifts``: Pillow's
    4-byte pixels), ``pixels`` (H x W x C with R, G, B at ``channels``; channels[0] < 0: not used) or the
    flat planes R, G, B, N, RE. Each row is converted once to float32 (exact for 8- and 16-bit DN) with
    the saturation mask taken in the source dtype; every index loop then reads the float rows. The
    primary index's values and validity are summed column-wise over the rows of a band of map blocks
    (one vectorised add a pixel) and folded into the map once a band."""
    nbins = hist.shape[2] - 1
    interleaved = channels[0] >= 0
    dt = pixels.dtype
    rsrc = np.zeros(width, dt)
    gsrc = np.zeros(width, dt)
    bsrc = np.zeros(width, dt)
    rf = np.zeros(width, np.float32)
    gf = np.zeros(width, np.float32)
    bf = np.zeros(width, np.float32)
    nf = np.zeros(width, np.float32)
    ref = np.zeros(width, np.float32)
    mrow = np.zeros(width, np.uint8)
    vbuf = np.zeros(width, np.float32)
    binbuf = np.zeros(width, np.int32)
    macc = np.zeros(width, np.float32)
    mcnt = np.zeros(width, np.int32)
    half = width - (width & 1)
    check_sat = sat >= f32(0.0)
    sat_dn = np.zeros(1, dt)
    if check_sat:
        sat_dn[0] = sat  # the saturation DN in the source dtype
    gs_keys = np.zeros(width if table is not None else 1, np.int32)
    va_keys = np.zeros(width if table is not None else 1, np.int32)
    gs = va = False
    if table is not None:
        for s in range(codes.shape[0]):
            if use_table[s]:
                gs = gs | (codes[s] != 0)
                va = va | (codes[s] == 0)
    for y in range(height):
        base = y * width
        mrow[:] = 0
        if words is not None:
            _unpack_words(words, y, width, shifts, sat_dn[0], check_sat, rf, gf, bf, mrow)
        elif interleaved:
            _deinterleave(pixels, y, width, channels, rsrc, gsrc, bsrc)
            _to_float_row(rsrc, sat_dn[0], check_sat, width, rf, mrow)
            _to_float_row(gsrc, sat_dn[0], check_sat, width, gf, mrow)
            _to_float_row(bsrc, sat_dn[0], check_sat, width, bf, mrow)
        else:
            if present[0]:
                _to_float_row(R[base:base + width], sat_dn[0], check_sat, width, rf, mrow)
            if present[1]:
                _to_float_row(G[base:base + width], sat_dn[0], check_sat, width, gf, mrow)
            if present[2]:
                _to_float_row(B[base:base + width], sat_dn[0], check_sat, width, bf, mrow)
        if present[3]:
            _to_float_row(N[base:base + width], sat_dn[0], check_sat, width, nf, mrow)
        if present[4]:
            _to_float_row(RE[base:base + width], sat_dn[0], check_sat, width, ref, mrow)
        n_sat = 0
        for x in range(width):
            n_sat += mrow[x]
        either = n_sat
        if has_nodata:
            n_nodata = 0
            for x in range(width):
                d_ = nodata[base + x]
                n_nodata += d_ != 0
                mrow[x] |= d_
            either = 0
            for x in range(width):
                either += mrow[x]
            masked[1] += n_nodata
        masked[0] += n_sat
        masked[2] += either
        by = y // kh
        in_map = by < hb
        if table is not None:
            _table_keys(rf, gf, bf, mrow, width, gs_keys, va_keys)
            _table_count(gs_keys, va_keys, width, table, gs, va)
        for s in range(codes.shape[0]):
            if table is not None and use_table[s]:
                if s == primary_slot and in_map:
                    if codes[s] == 0:
                        _map_row(0, rf, gf, bf, nf, ref, mrow, width, full_scale, floor, macc, mcnt)
                    elif codes[s] == 1:
                        _map_row(1, rf, gf, bf, nf, ref, mrow, width, full_scale, floor, macc, mcnt)
                    else:
                        _map_row(2, rf, gf, bf, nf, ref, mrow, width, full_scale, floor, macc, mcnt)
                continue
            a, c = _index_row_any(codes[s], rf, gf, bf, nf, ref, mrow, width, full_scale, floor, veg[s], stressed[s],
                                  qlo, qscale, nbins, vbuf, binbuf)
            counts[s, 0] += a
            counts[s, 1] += c
            sums[s] += _row_sum(vbuf)
            for x in range(0, half, 2):
                hist[s, 0, binbuf[x]] += 1
                hist[s, 1, binbuf[x + 1]] += 1
            if half < width:
                hist[s, 0, binbuf[half]] += 1
            if s == primary_slot and in_map:
                for x in range(width):
                    macc[x] += vbuf[x]
                    mcnt[x] += binbuf[x] != nbins
        if in_map and primary_slot >= 0 and (y % kh == kh - 1 or y == height - 1):
            _flush_map_row(macc, mcnt, by, kw, wb, map_sum, map_cnt)
    if table is not None:
        _table_finish(table, codes, use_table, full_scale, floor, veg, stressed, qlo, qscale, hist, sums, counts)


@numba.njit(**JIT)
def class_pass(code, R, G, B, N, RE, present, nodata, has_nodata, sat, height, width, full_scale, floor, veg,
               stressed_value, stressed_bin, qlo, qscale, nbins, out):
    """Per-pixel health classes of one window (orthomosaics), from the same row conversion, masks and index
    row as ``image_pass``: out[y, x] = 0 no data or invalid, 1 soil (value < veg), 2 stressed (value <
    stressed_value and fine bin < stressed_bin: absolute zoning sets the bin limit past the end, relative
    zoning the value to +inf, so each counts exactly as ``stats.finish`` does), 3 healthy. The codes are
    ``healthmap``'s palette indices."""
    rb = np.zeros(width, np.float32)
    gb = np.zeros(width, np.float32)
    bb = np.zeros(width, np.float32)
    nb_ = np.zeros(width, np.float32)
    reb = np.zeros(width, np.float32)
    mrow = np.zeros(width, np.uint8)
    vbuf = np.zeros(width, np.float32)
    binbuf = np.zeros(width, np.int32)
    for y in range(height):
        base = y * width
        _convert_row(R, base, width, rb, present[0])
        _convert_row(G, base, width, gb, present[1])
        _convert_row(B, base, width, bb, present[2])
        _convert_row(N, base, width, nb_, present[3])
        _convert_row(RE, base, width, reb, present[4])
        _mask_row(rb, gb, bb, nb_, reb, present, sat, width, mrow)
        if has_nodata:
            for x in range(width):
                mrow[x] |= nodata[base + x]
        _index_row_any(code, rb, gb, bb, nb_, reb, mrow, width, full_scale, floor, veg, stressed_value, qlo, qscale,
                       nbins, vbuf, binbuf)
        row = out[y]
        for x in range(width):
            v = vbuf[x]
            k = binbuf[x]
            cls = np.uint8(3)
            if (v < stressed_value) & (k < stressed_bin):
                cls = np.uint8(2)
            if v < veg:
                cls = np.uint8(1)
            row[x] = np.uint8(0) if k == nbins else cls


@numba.njit(**JIT)
def cell_pass(classes, f, zone_codes, counts, sx, sy):
    """Per f x f cell of a strip of classes (whole cells only): counts[class, i, j] pixels of each class,
    and for the classes in ``zone_codes`` (slot k) the sums sx[k, i, j], sy[k, i, j] of their pixel
    centres' offsets inside the cell."""
    cells_down, cells_across = counts.shape[1], counts.shape[2]
    for i in range(cells_down):
        for dy in range(f):
            row = classes[i * f + dy]
            for j in range(cells_across):
                for dx in range(f):
                    c = row[j * f + dx]
                    counts[c, i, j] += 1
                    for k in range(zone_codes.shape[0]):
                        if c == zone_codes[k]:
                            sx[k, i, j] += dx + f32(0.5)
                            sy[k, i, j] += dy + f32(0.5)


def pixel_array(planes: dict[str, np.ndarray]) -> tuple[np.ndarray | None, np.ndarray]:
    """When R, G and B are channel views of one C-contiguous H x W x C array (Pillow, PyAV, 3-band TIFFs),
    that array and the channel of each; else (None, [-1, -1, -1])."""
    none = None, np.full(3, -1, dtype=np.int64)
    try:
        r, g, b = planes["R"], planes["G"], planes["B"]
    except KeyError:
        return none
    owner = r.base
    if not (isinstance(owner, np.ndarray) and g.base is owner and b.base is owner and owner.ndim == 3
            and owner.flags.c_contiguous and owner.shape[:2] == r.shape and owner.dtype == r.dtype):
        return none
    start = owner.__array_interface__["data"][0]
    channels = [(p.__array_interface__["data"][0] - start) // owner.itemsize for p in (r, g, b)]
    if not all(0 <= c < owner.shape[2] for c in channels):
        return none
    return owner, np.array(channels, dtype=np.int64)


def pixel_words(pixels: np.ndarray, channels: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """8-bit pixels stored 4 bytes a pixel (Pillow's own RGB/RGBA buffer, ``decode.pillow_pixels``) as
    H x W uint32 words and the bit shift of R, G, B in them; (None, None) for any other layout."""
    if not (pixels.ndim == 3 and pixels.shape[2] == 4 and pixels.dtype == np.uint8 and pixels.flags.c_contiguous
            and channels[0] >= 0):
        return None, None
    h, w = pixels.shape[:2]
    byte = channels if sys.byteorder == "little" else 3 - channels
    return pixels.view(np.uint32).reshape(h, w), (8 * byte).astype(np.int64)


def flat(plane: np.ndarray) -> np.ndarray:
    """A plane as 1-D, without a copy where the strides allow (the R, G, B views of an HxWx3 array do):
    the row conversion reads strided input as cheaply as contiguous."""
    return plane.reshape(-1)
