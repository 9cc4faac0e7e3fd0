#!/usr/bin/env python3
"""Writes the committed seed corpus of the fuzz targets (fuzz/seeds/<target>/).

Pure standard library (struct, zlib, gzip), deterministic: the same script writes the same
bytes. Every generated file is rewritten on each run; files named `regress-*` (inputs that
once crashed a target, kept as seeds) and anything else not generated here are left alone,
except files this script wrote before and no longer writes (listed in each folder's
`.generated`, which is rewritten).

  nifti  small NIfTI-1 and NIfTI-2 volumes (.nii, .nii.gz; both byte orders; every served
         datatype; 1D to 4D; extensions; scaled; labels) and broken ones (truncated,
         bit-flipped, huge or negative dims, bad offsets, unsupported types, gzip oddities);
         the three smallest nibabel-written files of tests/fixtures/monai3d/inputs
  image  PNGs of every colour type and bit depth (palette with and without tRNS, Adam7,
         every filter, ancillary chunks, split IDAT) and broken ones; the two JPEG fixtures
         of tests/fixtures/monai2d/inputs and broken variants of them
  npy    inputs of the round-trip target (see fuzz/fuzz_targets/npy.rs for the layout)
  query  query strings of the image route, `Accept` lines included

Usage: python3 tools/make_fuzz_seeds.py [OUT_DIR]   (default: fuzz/seeds next to this tools/)
"""

import gzip
import io
import math
import os
import random
import struct
import sys
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JPEG_FIXTURES = os.path.join(ROOT, "tests", "fixtures", "monai2d", "inputs")
NIFTI_FIXTURES = os.path.join(ROOT, "tests", "fixtures", "monai3d", "inputs")


def fixture(folder, name):
    """A file of tests/fixtures (written by nibabel and Pillow), or None without it."""
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return f.read()

# ---------------------------------------------------------------------------------------------
# NIfTI
# ---------------------------------------------------------------------------------------------

# datatype code -> (bitpix, struct format char)
DTYPES = {
    2: (8, "B"),
    256: (8, "b"),
    4: (16, "h"),
    512: (16, "H"),
    8: (32, "i"),
    768: (32, "I"),
    1024: (64, "q"),
    1280: (64, "Q"),
    16: (32, "f"),
    64: (64, "d"),
}

IDENTITYISH = [[-0.8, 0.0, 0.0, 10.0], [0.0, 0.8, 0.0, -20.0], [0.0, 0.0, 2.5, 30.0]]


def pack_values(code, values, big):
    fmt = DTYPES[code][1]
    return struct.pack((">" if big else "<") + fmt * len(values), *values)


def nifti1(dims, code, values, *, big=False, pixdim=(1.0, 0.8, 0.8, 2.5), vox_offset=352.0,
           slope=1.0, inter=0.0, qform=0, sform=1, srow=IDENTITYISH,
           quatern=(0.0, 0.0, 1.0), qoffset=(10.0, -20.0, 30.0), magic=b"n+1\0",
           extension=b"", data=None, ndim=None, bitpix=None):
    """A single-file NIfTI-1: 348-byte header, 4 extension bytes (+ extension), voxels."""
    e = ">" if big else "<"
    h = bytearray(348)
    struct.pack_into(e + "i", h, 0, 348)
    d = [ndim if ndim is not None else len(dims)] + list(dims) + [1] * (7 - len(dims))
    struct.pack_into(e + "8h", h, 40, *d[:8])
    struct.pack_into(e + "h", h, 70, code)
    struct.pack_into(e + "h", h, 72, bitpix if bitpix is not None else DTYPES.get(code, (8,))[0])
    pd = list(pixdim) + [1.0] * (8 - len(pixdim))
    struct.pack_into(e + "8f", h, 76, *pd)
    struct.pack_into(e + "f", h, 108, vox_offset)
    struct.pack_into(e + "f", h, 112, slope)
    struct.pack_into(e + "f", h, 116, inter)
    h[123] = 2 | 8
    h[148:148 + 8] = b"medfuzz\0"
    struct.pack_into(e + "h", h, 252, qform)
    struct.pack_into(e + "h", h, 254, sform)
    struct.pack_into(e + "3f", h, 256, *quatern)
    struct.pack_into(e + "3f", h, 268, *qoffset)
    for r in range(3):
        struct.pack_into(e + "4f", h, 280 + 16 * r, *srow[r])
    h[344:348] = magic
    ext = b"\0\0\0\0"
    if extension:
        # esize (multiple of 16, includes the 8 bytes of esize and ecode), ecode, payload.
        size = 8 + len(extension)
        size += -size % 16
        ext = b"\x01\0\0\0" + struct.pack(e + "ii", size, 6) + extension.ljust(size - 8, b"\0")
    body = data if data is not None else pack_values(code, values, big)
    return bytes(h) + ext + body


def nifti2(dims, code, values, *, big=False, pixdim=(1.0, 1.0, 1.0, 1.0), vox_offset=544,
           slope=1.0, inter=0.0, qform=0, sform=1, srow=IDENTITYISH, ndim=None):
    """A single-file NIfTI-2: 540-byte header, 4 extension bytes, voxels."""
    e = ">" if big else "<"
    h = bytearray(540)
    struct.pack_into(e + "i", h, 0, 540)
    h[4:12] = b"n+2\0\r\n\x1a\n"
    struct.pack_into(e + "h", h, 12, code)
    struct.pack_into(e + "h", h, 14, DTYPES.get(code, (8,))[0])
    d = [ndim if ndim is not None else len(dims)] + list(dims) + [1] * (7 - len(dims))
    struct.pack_into(e + "8q", h, 16, *d[:8])
    pd = list(pixdim) + [1.0] * (8 - len(pixdim))
    struct.pack_into(e + "8d", h, 104, *pd)
    struct.pack_into(e + "q", h, 168, vox_offset)
    struct.pack_into(e + "d", h, 176, slope)
    struct.pack_into(e + "d", h, 184, inter)
    struct.pack_into(e + "i", h, 344, qform)
    struct.pack_into(e + "i", h, 348, sform)
    struct.pack_into(e + "3d", h, 352, 0.0, 0.0, 0.0)
    for r in range(3):
        struct.pack_into(e + "4d", h, 400 + 32 * r, *srow[r])
    struct.pack_into(e + "i", h, 500, 2 | 8)
    return bytes(h) + b"\0\0\0\0" + pack_values(code, values, big)


def gz(data, level=6):
    """gzip with mtime 0 and no file name, so the bytes never change."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=level, mtime=0, filename="") as f:
        f.write(data)
    return out.getvalue()


def flip_bits(data, rng, count, lo=0, hi=None):
    b = bytearray(data)
    hi = len(b) if hi is None else min(hi, len(b))
    for _ in range(count):
        i = rng.randrange(lo, hi)
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def ramp(n, fn):
    return [fn(i) for i in range(n)]


def nifti_seeds():
    rng = random.Random(1)
    s = {}
    n884 = 8 * 8 * 4
    # Valid volumes.
    labels = ramp(n884, lambda i: (i // 7) % 4)
    s["u8_label_8x8x4.nii"] = nifti1([8, 8, 4], 2, labels)
    s["u8_label_8x8x4_le.nii.gz"] = gz(s["u8_label_8x8x4.nii"])
    ct = ramp(n884, lambda i: int(1000 * math.sin(i / 9.0)) - 200)
    s["i16_ct_8x8x4_qform_scaled.nii.gz"] = gz(nifti1(
        [8, 8, 4], 4, ct, qform=1, sform=0, slope=0.5, inter=-1024.0,
        quatern=(0.0, 0.0, 0.7071068), pixdim=(-1.0, 0.8, 0.8, 2.5)))
    odd = [0.0, -0.0, float("nan"), float("inf"), float("-inf"), 1e-40, 3.4e38, -1.5]
    f32 = ramp(n884, lambda i: odd[i % len(odd)] if i % 5 == 0 else i * 0.25 - 20.0)
    s["f32_8x8x4_be.nii"] = nifti1([8, 8, 4], 16, f32, big=True)
    s["f32_8x8x4_be.nii.gz"] = gz(s["f32_8x8x4_be.nii"])
    mr = ramp(6 * 6 * 3 * 2, lambda i: float((i * 37) % 251))
    s["f32_4d_6x6x3x2_pixdim.nii.gz"] = gz(nifti1([6, 6, 3, 2], 16, mr, sform=0, qform=0))
    s["u8_4d_label_5x4x3x2.nii"] = nifti1([5, 4, 3, 2], 2, ramp(120, lambda i: i % 3))
    # Every served datatype, small, alternating byte order.
    vals = {
        2: [0, 1, 255, 7], 256: [-128, -1, 0, 127], 4: [-32768, -2, 0, 32767],
        512: [0, 1, 65535, 300], 8: [-(2 ** 31), -2, 0, 2 ** 31 - 1],
        768: [0, 1, 2 ** 32 - 1, 5], 1024: [-(2 ** 63), -2, 0, 2 ** 63 - 1],
        1280: [0, 1, 2 ** 64 - 1, 2 ** 40], 16: [1.0, -2.5, float("nan"), 0.0],
        64: [1.0, -2.5, 3.25, float("-inf")],
    }
    for i, (code, v) in enumerate(sorted(vals.items())):
        big = i % 2 == 1
        name = f"dtype{code}_{'be' if big else 'le'}_4x3x2.nii"
        s[name] = nifti1([4, 3, 2], code, (v * 6)[:24], big=big)
    # Labels stored as float (label_u8 converts), and a scaled uint8 label.
    s["f32_label_4x4x2.nii"] = nifti1([4, 4, 2], 16, ramp(32, lambda i: float(i % 3)))
    s["u8_scaled_4x4x2.nii"] = nifti1([4, 4, 2], 2, ramp(32, lambda i: i), slope=2.0, inter=1.0)
    # Shapes: 1D, 2D, a singleton-padded 5D, vox_offset 0 (nibabel reads after the header).
    s["u8_1d_16.nii"] = nifti1([16], 2, ramp(16, lambda i: i))
    s["i16_2d_6x5.nii"] = nifti1([6, 5], 4, ramp(30, lambda i: i - 15))
    s["u8_5d_singleton_3x3x2x1x1.nii"] = nifti1([3, 3, 2, 1, 1], 2, ramp(18, lambda i: i))
    s["u8_vox_offset0_3x3x3.nii"] = nifti1([3, 3, 3], 2, ramp(27, lambda i: i), vox_offset=0.0)
    # An extension between header and voxels.
    ext = nifti1([4, 4, 2], 2, ramp(32, lambda i: i % 2), vox_offset=352.0 + 48,
                 extension=b"<?xml version='1.0'?><fuzz/>")
    s["u8_extension_4x4x2.nii"] = ext
    s["u8_extension_4x4x2.nii.gz"] = gz(ext)
    # NIfTI-2, both byte orders.
    s["nifti2_f32_le_5x4x3.nii"] = nifti2([5, 4, 3], 16, ramp(60, lambda i: i * 0.5))
    s["nifti2_i16_be_4x3x2x2.nii.gz"] = gz(nifti2([4, 3, 2, 2], 4, ramp(48, lambda i: i * 11 - 200),
                                                 big=True, sform=0))
    # A shear/flip sform and a non-finite sform (falls back to the qform, then pixdim).
    s["u8_shear_sform_3x3x3.nii"] = nifti1([3, 3, 3], 2, ramp(27, lambda i: i), srow=[
        [0.0, 0.9, 0.1, 0.0], [0.0, 0.1, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    s["u8_nan_sform_3x3x3.nii"] = nifti1([3, 3, 3], 2, ramp(27, lambda i: i), qform=1, srow=[
        [float("nan"), 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    # gzip oddities: two members (header, voxels), trailing garbage, zeros after the voxels.
    base = s["u8_label_8x8x4.nii"]
    s["gz_two_members.nii.gz"] = gz(base[:352]) + gz(base[352:])
    s["gz_trailing_garbage.nii.gz"] = gz(base) + b"GARBAGE!"
    s["gz_zeros_after_voxels.nii.gz"] = gz(base + bytes(1 << 20), 9)
    # Broken: truncated in the header, in the voxels, and a cut gzip stream.
    s["bad_truncated_header.nii"] = base[:200]
    s["bad_truncated_voxels.nii"] = base[:352 + 100]
    gzbase = s["u8_label_8x8x4_le.nii.gz"]
    s["bad_truncated.nii.gz"] = gzbase[: len(gzbase) // 2]
    s["bad_gz_crc.nii.gz"] = gzbase[:-8] + b"\0\0\0\0" + gzbase[-4:]
    # Broken: hostile headers.
    s["bad_huge_dims.nii"] = nifti1([32767, 32767, 32767], 2, [], data=b"\0" * 64)
    s["bad_huge_dims_f64_4d.nii"] = nifti1([32767, 32767, 32767, 32767], 64, [], data=b"")
    s["bad_nifti2_huge_dims.nii"] = nifti2([1 << 40, 1 << 40, 1 << 20], 16, [])
    s["bad_nifti2_overflow_dims.nii"] = nifti2([2 ** 62, 2 ** 62, 4], 64, [])
    s["bad_negative_dim.nii"] = nifti1([4, -3, 2], 2, [], data=bytes(24))
    s["bad_dim0_zero.nii"] = nifti1([4, 3, 2], 2, [], data=bytes(24), ndim=0)
    s["bad_dim0_eight.nii"] = nifti1([4, 3, 2], 2, [], data=bytes(24), ndim=8)
    s["bad_5d.nii"] = nifti1([2, 2, 2, 1, 3], 2, [], data=bytes(24))
    s["bad_rgb24.nii"] = nifti1([2, 2, 2], 128, [], data=bytes(24), bitpix=24)
    s["bad_vox_offset_huge.nii"] = nifti1([2, 2, 2], 2, [0] * 8, vox_offset=1e12)
    s["bad_vox_offset_nan.nii"] = nifti1([2, 2, 2], 2, [0] * 8, vox_offset=float("nan"))
    s["bad_vox_offset_past_end.nii"] = nifti1([2, 2, 2], 2, [0] * 8, vox_offset=4096.0)
    s["bad_magic_ni1.nii"] = nifti1([2, 2, 2], 2, [0] * 8, magic=b"ni1\0")
    s["bad_nifti2_magic.nii"] = b"\x1c\x02\0\0n+1\0" + nifti2([2, 2, 2], 2, [0] * 8)[8:]
    s["bad_not_nifti.nii"] = b"GIF89a" + bytes(400)
    s["bad_empty.nii"] = b""
    # Bit-flipped headers of valid files.
    for i, src in enumerate(["u8_label_8x8x4.nii", "dtype4_be_4x3x2.nii",
                             "nifti2_f32_le_5x4x3.nii", "f32_8x8x4_be.nii"]):
        hdr = 540 if src.startswith("nifti2") else 348
        s[f"bad_bitflip{i}_{src}"] = flip_bits(s[src], rng, 6, 0, hdr)
    s["bad_bitflip_gz.nii.gz"] = flip_bits(gzbase, rng, 3, 10)
    # The smallest nibabel-written fixtures, when this checkout has them.
    for name in ("plain_u8.nii", "ct_i16_label.nii.gz", "mr_4d_label.nii.gz"):
        data = fixture(NIFTI_FIXTURES, name)
        if data is not None:
            s["nibabel_" + name] = data
    return s


# ---------------------------------------------------------------------------------------------
# PNG and JPEG
# ---------------------------------------------------------------------------------------------

PNG_SIG = b"\x89PNG\r\n\x1a\n"


def chunk(kind, data, crc=None):
    c = zlib.crc32(kind + data) & 0xFFFFFFFF if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", c)


def ihdr(w, h, depth, color, interlace=0):
    return chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, interlace))


CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def pack_row(samples, depth):
    """Samples (ints) of one row -> bytes at `depth` bits each."""
    if depth == 8:
        return bytes(samples)
    if depth == 16:
        return b"".join(struct.pack(">H", v) for v in samples)
    out, acc, nbits = bytearray(), 0, 0
    for v in samples:
        acc = (acc << depth) | v
        nbits += depth
        if nbits == 8:
            out.append(acc)
            acc, nbits = 0, 0
    if nbits:
        out.append(acc << (8 - nbits))
    return bytes(out)


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def filter_rows(rows, bpp, filters):
    """Applies PNG filter types (cycled from `filters`) to raw rows."""
    out, prev = bytearray(), bytes(len(rows[0])) if rows else b""
    for y, row in enumerate(rows):
        f = filters[y % len(filters)]
        line = bytearray()
        for i, x in enumerate(row):
            a = row[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            pred = [0, a, b, (a + b) // 2, paeth(a, b, c)][f]
            line.append((x - pred) & 0xFF)
        out += bytes([f]) + line
        prev = row
    return bytes(out)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2)]


def png(w, h, depth, color, pixel, *, filters=(0,), interlace=0, palette=None, trns=None,
        extra=(), idat_split=None):
    """A PNG whose sample (x, y, channel) is `pixel(x, y, c)`."""
    ch = CHANNELS[color]
    bpp = max(1, ch * depth // 8)

    def rows_of(xs, ys):
        return [pack_row([pixel(x, y, c) for x in xs for c in range(ch)], depth) for y in ys]

    if interlace:
        raw = b""
        for x0, y0, dx, dy in ADAM7:
            xs, ys = range(x0, w, dx), range(y0, h, dy)
            if len(xs) and len(ys):
                raw += filter_rows(rows_of(xs, ys), bpp, filters)
    else:
        raw = filter_rows(rows_of(range(w), range(h)), bpp, filters)
    z = zlib.compress(raw, 9)
    out = PNG_SIG + ihdr(w, h, depth, color, interlace)
    for kind, data in extra:
        out += chunk(kind, data)
    if palette is not None:
        out += chunk(b"PLTE", bytes(v for rgb in palette for v in rgb))
    if trns is not None:
        out += chunk(b"tRNS", trns)
    if idat_split:
        for i in range(0, len(z), idat_split):
            out += chunk(b"IDAT", z[i:i + idat_split])
    else:
        out += chunk(b"IDAT", z)
    return out + chunk(b"IEND", b"")


def image_seeds():
    s = {}
    grad = lambda m: (lambda x, y, c: (x * 3 + y * 5 + c * 7) % (m + 1))  # noqa: E731
    # Every colour type and bit depth.
    for depth in (1, 2, 4, 8, 16):
        s[f"gray{depth}_7x5.png"] = png(7, 5, depth, 0, grad((1 << depth) - 1))
    for depth in (8, 16):
        s[f"rgb{depth}_5x4.png"] = png(5, 4, depth, 2, grad((1 << depth) - 1))
        s[f"rgba{depth}_4x4.png"] = png(4, 4, depth, 6, grad((1 << depth) - 1))
        s[f"graya{depth}_4x3.png"] = png(4, 3, depth, 4, grad((1 << depth) - 1))
    pal = [(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    for depth in (1, 2, 4, 8):
        n = min(len(pal), 1 << depth)
        s[f"palette{depth}_6x4.png"] = png(6, 4, depth, 3, lambda x, y, c, n=n: (x + y) % n,
                                           palette=pal[:n])
    s["palette8_trns_5x5.png"] = png(5, 5, 8, 3, lambda x, y, c: (x * y) % 5, palette=pal,
                                     trns=bytes([0, 128, 255]))
    s["bad_palette_index_past_end_4x4.png"] = png(4, 4, 8, 3, lambda x, y, c: x + y, palette=pal[:3])
    s["bad_palette_missing_plte_3x3.png"] = png(3, 3, 8, 3, lambda x, y, c: 0)
    s["gray8_trns_4x4.png"] = png(4, 4, 8, 0, grad(255), trns=struct.pack(">H", 3))
    s["rgb8_trns_4x4.png"] = png(4, 4, 8, 2, grad(255), trns=struct.pack(">HHH", 1, 2, 3))
    # Tiny sizes.
    s["gray8_1x1.png"] = png(1, 1, 8, 0, lambda x, y, c: 200)
    s["rgba8_1x1.png"] = png(1, 1, 8, 6, lambda x, y, c: 60 * c)
    s["gray16_1x9.png"] = png(1, 9, 16, 0, lambda x, y, c: y * 7000)
    s["rgb8_9x1.png"] = png(9, 1, 8, 2, grad(255))
    # Every filter type, Adam7, split IDAT, ancillary chunks.
    s["rgb8_filters_8x8.png"] = png(8, 8, 8, 2, grad(255), filters=(0, 1, 2, 3, 4))
    s["gray16_filters_6x6.png"] = png(6, 6, 16, 0, grad(65535), filters=(4, 3, 2, 1, 0))
    s["rgb8_adam7_9x9.png"] = png(9, 9, 8, 2, grad(255), interlace=1, filters=(1, 4))
    s["gray2_adam7_11x7.png"] = png(11, 7, 2, 0, grad(3), interlace=1)
    s["rgba16_adam7_5x5.png"] = png(5, 5, 16, 6, grad(65535), interlace=1, filters=(2,))
    s["gray8_split_idat_16x16.png"] = png(16, 16, 8, 0, grad(255), idat_split=7)
    s["gray8_chunks_6x6.png"] = png(6, 6, 8, 0, grad(255), extra=[
        (b"gAMA", struct.pack(">I", 45455)),
        (b"tEXt", b"Comment\0medserve fuzz seed"),
        (b"zTXt", b"Title\0\0" + zlib.compress(b"compressed text")),
        (b"iCCP", b"icc\0\0" + zlib.compress(b"not really a profile")),
        (b"pHYs", struct.pack(">IIB", 2835, 2835, 1)),
        (b"sBIT", b"\x08"),
    ])
    # Broken PNGs.
    good = s["rgb8_filters_8x8.png"]
    s["bad_png_truncated_idat.png"] = good[: len(good) - 20]
    s["bad_png_truncated_ihdr.png"] = good[:20]
    s["bad_png_signature_only.png"] = PNG_SIG
    s["bad_png_crc.png"] = good[:29] + b"\0\0\0\0" + good[33:]
    s["bad_png_no_iend.png"] = good[:-12]
    s["bad_png_huge_100000x100000.png"] = PNG_SIG + ihdr(100000, 100000, 8, 0) + chunk(b"IEND", b"")
    s["bad_png_huge_2x2147483647.png"] = (PNG_SIG + ihdr(2, 2 ** 31 - 1, 16, 6)
                                          + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                                          + chunk(b"IEND", b""))
    s["bad_png_zero_width.png"] = PNG_SIG + ihdr(0, 4, 8, 0) + chunk(b"IEND", b"")
    s["bad_png_depth3.png"] = PNG_SIG + ihdr(4, 4, 3, 0) + chunk(b"IEND", b"")
    s["bad_png_idat_before_ihdr.png"] = (PNG_SIG + chunk(b"IDAT", zlib.compress(b"\0\0"))
                                         + ihdr(1, 1, 8, 0) + chunk(b"IEND", b""))
    s["bad_png_short_idat_4x4.png"] = (PNG_SIG + ihdr(4, 4, 8, 0)
                                       + chunk(b"IDAT", zlib.compress(b"\0\1\2\3\4"))
                                       + chunk(b"IEND", b""))
    s["bad_png_bad_filter_3x3.png"] = (PNG_SIG + ihdr(3, 3, 8, 0)
                                       + chunk(b"IDAT", zlib.compress(b"\x07abc" * 3))
                                       + chunk(b"IEND", b""))
    # JPEGs: the fixtures, when this checkout has them, and broken variants.
    for name in ("gray_w64_h64.jpg", "rgb_w80_h60.jpg"):
        jpg = fixture(JPEG_FIXTURES, name)
        if jpg is None:
            continue
        s[name] = jpg
        stem = name[:-4]
        s[f"bad_{stem}_truncated.jpg"] = jpg[: len(jpg) * 2 // 3]
        s[f"bad_{stem}_no_eoi.jpg"] = jpg[:-2]
        sof = jpg.find(b"\xff\xc0")
        if sof > 0:
            b = bytearray(jpg)
            b[sof + 5:sof + 9] = struct.pack(">HH", 65500, 65500)  # height, width
            s[f"bad_{stem}_huge_sof.jpg"] = bytes(b)
            b = bytearray(jpg)
            b[sof + 5:sof + 9] = struct.pack(">HH", 0, 0)
            s[f"bad_{stem}_zero_sof.jpg"] = bytes(b)
            b = bytearray(jpg)
            b[sof + 1] = 0xC2  # a progressive frame over baseline scans
            s[f"bad_{stem}_as_progressive.jpg"] = bytes(b)
    s["bad_jpeg_soi_only.jpg"] = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"
    s["bad_unknown_format.bin"] = b"BM" + bytes(60)
    return s


# ---------------------------------------------------------------------------------------------
# npy round trip (layout in fuzz/fuzz_targets/npy.rs) and query strings
# ---------------------------------------------------------------------------------------------

def f32s(values):
    return struct.pack("<%df" % len(values), *values)


def npy_seeds():
    s = {}
    nanpay = struct.unpack("<f", b"\x01\x00\xc0\x7f")[0]  # a NaN with a payload
    odd = f32s([0.0, -0.0, float("nan"), float("inf"), float("-inf"), 1e-45, -3.4e38, 1.5])
    # sel: bits 0-1 rank - 1, bits 2-3 npz parts, bit 6 fuzzed affine, bit 7 code 0.
    s["rank1_len8"] = bytes([0, 8]) + odd
    s["rank2_3x5"] = bytes([1 | 4, 3, 5]) + f32s([i * 0.5 for i in range(15)])
    s["rank3_2x3x4"] = bytes([2 | 8, 2, 3, 4]) + odd
    s["rank4_1x4x3x2_nifti"] = bytes([3, 1, 4, 3, 2]) + f32s([i - 12.0 for i in range(24)])
    s["rank4_2x3x3x2_nifti_4d"] = bytes([3 | 4, 2, 3, 3, 2]) + odd
    s["rank4_3x2x2x2_fuzzed_affine"] = bytes([3 | 0x40, 3, 2, 2, 2]) + f32s(
        [0.0, 1.0, 0.0, 5.0, -1.0, 0.0, 0.0, 6.0, 0.0, 0.0, -2.0, 7.0, 42.0])
    s["rank4_1x2x2x2_nan_affine"] = bytes([3 | 0x40, 1, 2, 2, 2]) + f32s(
        [float("nan"), 0.0, 0.0, 0.0, 0.0, float("inf"), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    s["rank4_1x3x3x3_code0"] = bytes([3 | 0x80, 1, 3, 3, 3]) + f32s([nanpay, -0.0, 2.0])
    s["rank4_zero_dim"] = bytes([3, 2, 0, 3, 3]) + odd
    s["rank2_max_16x16"] = bytes([1, 16, 16]) + bytes(range(256))
    s["rank4_large_shrunk"] = bytes([3, 16, 16, 16, 16]) + odd
    s["rank1_no_values"] = bytes([0, 5])
    return s


def query_seeds():
    qs = [
        "", "size=64,64&mode=area", "size=1,1", "size=4096,4096", "size=4097,1", "size=0,5",
        "size=%2032%20,%2048", "size=64", "size=1,2,3", "size=+3,4", "size=-1,4",
        "size=99999999999999999999999,1", "format=npy&scale=none", "format=f32", "format=png",
        "format=gif", "mode=nearest&scale=minmax", "mode=bilinear", "mode=bicubic",
        "channels=1&palette=expand", "channels=native&palette=index", "channels=3",
        "size=8,8&mode=area&scale=none&channels=1&palette=expand&format=npy",
        "size=64,64&size=32,32", "bogus=1", "size", "=&=&", "&&&", "size=64%2C64",
        "size=64%2c64&mode=%61rea", "format=npy%00", "mode=are%", "size=%FF%FE,1",
        "s%69ze=2,2", "size=6\u00e9,4", "a=b=c", "+size=1,1", "size=1,1+",
    ]
    # The slice and volume routes' parameters (fuzz/fuzz_targets/query.rs's TODO).
    qs += [
        "size=32,32,16&mode=trilinear&a_min=-1000&a_max=1000&b_min=0&b_max=1&clip=true",
        "size=1,1,1&mode=nearest&scale=none", "size=4096,4096,4096", "size=0,1,1",
        "part=both&format=npz&labels=1,2&binary=true", "part=label&labels=0,255,2&binary=1",
        "part=image&labels=1", "format=nii.gz&part=label", "format=nii&scale=range",
        "a_min=5&a_max=5", "a_min=-1e38&a_max=1e38", "a_min=1e39&a_max=2", "b_min=0",
        "clip=yes&a_min=0&a_max=1", "axis=axial&index=5&window=40,400", "axis=2&index=0",
        "axis=coronal&channel=3&part=label&format=npy", "axis=3", "index=-1",
        "preset=ct-lung&part=overlay&opacity=0.5", "preset=mri", "preset=auto&window=1,1",
        "window=40,-1", "window=nan,inf", "window=1e38,3e38", "opacity=1.5",
        "part=overlay&format=f32", "channel=65536", "channel=65537",
    ]
    # flip/rotate (image route) and flip (volume routes), appended so earlier names keep theirs.
    qs += [
        "flip=0&rotate=0.3", "flip=all&rotate=-1.5707963267948966", "flip=1,0", "flip=0,0",
        "flip=2", "flip=", "flip=0,1,2&part=both&format=npz", "rotate=1e6", "rotate=1.0000001e6",
        "rotate=nan", "rotate=-0", "rotate=1e-320", "flip=%30", "flip=0,&rotate=+.5e1",
    ]
    s = {f"q{i:02d}": q.encode() for i, q in enumerate(qs)}
    accepts = [
        ("image/png", "size=8,8"), ("application/x-npy", ""),
        ("application/octet-stream;q=0.9, image/png;q=0.1", "scale=none"),
        ("text/html", "mode=area"), ("*/*;q=0", ""), ("image/*, application/*;q=2", ""),
        ("application/x-npy;q=abc", "format=png"), ("", "size=2,2"),
    ]
    for i, (a, q) in enumerate(accepts):
        s[f"accept{i:02d}"] = f"{a}\n{q}".encode()
    return s


# ---------------------------------------------------------------------------------------------

def write(out_dir, target, files):
    d = os.path.join(out_dir, target)
    os.makedirs(d, exist_ok=True)
    listing = os.path.join(d, ".generated")
    if os.path.exists(listing):
        with open(listing) as f:
            for old in f.read().split():
                if old not in files and os.path.exists(os.path.join(d, old)):
                    os.remove(os.path.join(d, old))
    for name, data in sorted(files.items()):
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    with open(listing, "w") as f:
        f.write("".join(n + "\n" for n in sorted(files)))
    return sum(len(v) for v in files.values())


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "fuzz", "seeds")
    for target, files in [("nifti", nifti_seeds()), ("image", image_seeds()),
                          ("npy", npy_seeds()), ("query", query_seeds())]:
        total = write(out_dir, target, files)
        print(f"{target}: {len(files)} seeds, {total} bytes")


if __name__ == "__main__":
    main()
