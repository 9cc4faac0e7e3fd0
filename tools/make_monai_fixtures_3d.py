#!/usr/bin/env python3
"""Generate MONAI parity fixtures for medserve's 3D NIfTI preprocessing pipeline.

Regenerate (from the repo root):

    python3 -m venv /tmp/monai && /tmp/monai/bin/pip install -r tools/requirements-fixtures.txt && /tmp/monai/bin/python tools/make_monai_fixtures_3d.py

    /tmp/monai/bin/python tools/make_monai_fixtures_3d.py --out DIR   # write somewhere else

The output is deterministic: running the script twice gives byte-identical
files. Inputs come from seeded ``np.random.default_rng`` streams, NIfTI files
are serialised in memory with ``img.to_bytes()`` and gzipped with
``gzip.compress(..., mtime=0)`` (nibabel's own gzip writer stores the mtime),
torch runs single-threaded, and the manifest is written with sorted keys.

Pipeline reproduced (exactly what the users' seed code does, MONAI dict transforms):

    LoadImaged(keys=["image", "label"])
    -> EnsureChannelFirstd(keys=["image", "label"])
    -> Resized(keys=["image"], spatial_size=S, mode=MODE)          # omitted for "native" cases
    -> Resized(keys=["label"], spatial_size=S, mode="nearest")     # omitted for "native" cases
    -> ScaleIntensityRanged(keys=["image"], a_min, a_max, b_min, b_max, clip)   # omitted for scale=null
    -> Flipd(keys=["image", "label"], spatial_axis=AXES)   # only the cases with "flip" (None for "all")

The flip cases also record "expected_affine": MONAI's image affine after the whole chain
(Flip moves the voxels and the affine with them).

Axis convention: MONAI's NibabelReader returns ``np.asanyarray(img.dataobj)``
(nibabel's (i, j, k[, t]) = (X, Y, Z[, C]) voxel order, slope/intercept
applied) cast to float32; EnsureChannelFirst adds a leading channel axis for 3D
files and moves the 4th axis to the front for 4D files. Every stored array is
(C, X, Y, Z), C-order.

Layout of the output directory:

    inputs/    NIfTI files written with nibabel
    decoded/   <input stem>.npy : LoadImage + EnsureChannelFirst, float32 (C, X, Y, Z)
    expected/  <case name>.npy  : image pipeline output, float32 (C, X, Y, Z)
               <label stem>__nearest_<X>x<Y>x<Z>.npy / <label stem>__native.npy :
                                  label pipeline output cast to uint8 (1, X, Y, Z)
    manifest.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

import monai
from monai.data import NibabelReader
from monai.transforms import (
    Compose,
    EnsureChannelFirst,
    EnsureChannelFirstd,
    Flipd,
    LoadImage,
    LoadImaged,
    Resize,
    Resized,
    ScaleIntensityRanged,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "monai3d"
GENERATOR = "tools/make_monai_fixtures_3d.py"

AXIS_NOTE = (
    "All arrays are MONAI's channel-first (C, X, Y, Z), C-order: X, Y, Z are NIfTI voxel axes "
    "i, j, k (nibabel array order, i.e. dim[1], dim[2], dim[3]). 3D files get C=1 from "
    "EnsureChannelFirst; for 4D files (X, Y, Z, T) the 4th axis becomes C. 'size' in a case is "
    "MONAI's spatial_size (X, Y, Z). No reorientation is done (LoadImaged default "
    "as_closest_canonical=False), so 'affine'/'orientation' are informational. decoded/ and image "
    "expected/ files are float32 (nibabel scaled data, i.e. raw * scl_slope + scl_inter, cast to "
    "float32); label expected/ files are uint8."
)


# --------------------------------------------------------------------------
# Synthetic volumes
# --------------------------------------------------------------------------


def grid(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised coordinates in [-1, 1] along each axis, float64, shape `shape`."""
    axes = [np.linspace(-1.0, 1.0, n) for n in shape]
    return np.meshgrid(*axes, indexing="ij")


def ct_hu(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Integer-valued CT-like Hounsfield volume (float64)."""
    x, y, z = grid(shape)
    hu = np.full(shape, -1024.0)
    body = (x / 0.85) ** 2 + (y / 0.7) ** 2 <= 1.0
    hu[body] = 40.0 + rng.normal(0.0, 18.0, size=int(body.sum()))
    # subcutaneous fat ring
    fat = body & ((x / 0.85) ** 2 + (y / 0.7) ** 2 > 0.8)
    hu[fat] = -100.0 + rng.normal(0.0, 15.0, size=int(fat.sum()))
    # two lungs (air-like, but not air)
    for cx in (-0.4, 0.4):
        lung = ((x - cx) / 0.28) ** 2 + ((y + 0.05) / 0.4) ** 2 + (z / 1.3) ** 2 <= 1.0
        hu[lung] = -820.0 + rng.normal(0.0, 40.0, size=int(lung.sum()))
    # spine: cortical shell (very dense) around a cancellous core
    r2 = (x / 0.16) ** 2 + ((y - 0.45) / 0.16) ** 2
    hu[r2 <= 1.0] = 1450.0 + rng.normal(0.0, 60.0, size=int((r2 <= 1.0).sum()))
    hu[r2 <= 0.45] = 700.0 + rng.normal(0.0, 40.0, size=int((r2 <= 0.45).sum()))
    # a rib arc in some slices
    ring = np.abs(np.sqrt((x / 0.78) ** 2 + (y / 0.63) ** 2) - 1.0) < 0.05
    rib = ring & (y < 0.0) & (np.abs(np.sin(6.0 * z)) > 0.5)
    hu[rib] = 1100.0 + rng.normal(0.0, 80.0, size=int(rib.sum()))
    # a small metal-like hot spot
    hot = ((x - 0.3) / 0.08) ** 2 + ((y - 0.2) / 0.08) ** 2 + ((z + 0.3) / 0.2) ** 2 <= 1.0
    hu[hot] = 2500.0
    return np.rint(np.clip(hu, -1024.0, 3071.0))


def ct_label(shape: tuple[int, int, int]) -> np.ndarray:
    x, y, z = grid(shape)
    lab = np.zeros(shape, dtype=np.uint8)
    organ = ((x + 0.1) / 0.35) ** 2 + ((y + 0.1) / 0.3) ** 2 + ((z - 0.05) / 0.7) ** 2 <= 1.0
    lab[organ] = 1
    lesion = ((x + 0.2) / 0.12) ** 2 + ((y + 0.05) / 0.12) ** 2 + ((z - 0.2) / 0.3) ** 2 <= 1.0
    lab[lesion] = 2
    return lab


def make_inputs() -> dict[str, tuple[np.ndarray, np.ndarray, dict]]:
    """{file name: (array as it must be stored, affine, options)}.

    options: slope/inter (explicit scaling), endianness, sform/qform codes.
    Each volume has its own seed so adding or removing one does not change the others.
    """
    out: dict[str, tuple[np.ndarray, np.ndarray, dict]] = {}

    # 1. CT int16 (LPS-ish diagonal, non-zero origin), sform only
    ct_shape = (40, 36, 20)
    ct_aff = np.array(
        [[-0.8, 0.0, 0.0, 15.6], [0.0, -0.8, 0.0, 14.0], [0.0, 0.0, 2.5, -60.0], [0.0, 0.0, 0.0, 1.0]]
    )
    rng = np.random.default_rng(3001)
    out["ct_i16.nii.gz"] = (ct_hu(ct_shape, rng).astype(np.int16), ct_aff, {"sform": 1, "qform": 0})
    out["ct_i16_label.nii.gz"] = (ct_label(ct_shape), ct_aff, {"sform": 1, "qform": 0})

    # 2. CT stored as uint16 with scl_slope=0.5, scl_inter=-1024 (raw = 2 * (HU + 1024))
    rng = np.random.default_rng(3002)
    hu = ct_hu((33, 30, 17), rng)
    raw = np.rint((hu + 1024.0) / 0.5).astype(np.uint16)
    aff = np.array(
        [[0.9, 0.0, 0.0, -14.4], [0.0, 0.9, 0.0, -13.05], [0.0, 0.0, 3.0, 20.0], [0.0, 0.0, 0.0, 1.0]]
    )
    out["ct_scaled_u16.nii.gz"] = (raw, aff, {"slope": 0.5, "inter": -1024.0})

    # 3. multi-modal MR, 4D float32 (X, Y, Z, 3) + uint8 label 0..3
    rng = np.random.default_rng(3003)
    mr_shape = (24, 20, 12)
    x, y, z = grid(mr_shape)
    head = (x / 0.9) ** 2 + (y / 0.85) ** 2 + (z / 1.1) ** 2 <= 1.0
    wm = (x / 0.55) ** 2 + (y / 0.5) ** 2 + (z / 0.8) ** 2 <= 1.0
    tumour = ((x - 0.3) / 0.2) ** 2 + ((y + 0.2) / 0.2) ** 2 + (z / 0.35) ** 2 <= 1.0
    oedema = ((x - 0.3) / 0.33) ** 2 + ((y + 0.2) / 0.33) ** 2 + (z / 0.5) ** 2 <= 1.0
    chans = []
    for base, wm_v, tum_v, oed_v, sd in ((600.0, 900.0, 400.0, 500.0, 25.0),  # T1-like
                                        (1800.0, 1200.0, 2900.0, 2500.0, 60.0),  # T2-like
                                        (150.0, 120.0, 390.0, 330.0, 8.0)):  # FLAIR-like
        c = np.zeros(mr_shape)
        c[head] = base
        c[wm] = wm_v
        c[oedema] = oed_v
        c[tumour] = tum_v
        c += 0.4 * base * (x + 1.0) * head  # bias field
        c += rng.normal(0.0, sd, size=mr_shape) * head
        chans.append(np.maximum(c, 0.0) + np.abs(rng.normal(0.0, 2.0, size=mr_shape)))
    mr = np.stack(chans, axis=-1).astype(np.float32)
    mr_lab = np.zeros(mr_shape, dtype=np.uint8)
    mr_lab[head] = 1
    mr_lab[oedema & head] = 2
    mr_lab[tumour & head] = 3
    mr_aff = np.array(
        [[1.2, 0.0, 0.0, -13.8], [0.0, 1.2, 0.0, -11.4], [0.0, 0.0, 3.0, -16.5], [0.0, 0.0, 0.0, 1.0]]
    )
    out["mr_4d_f32.nii.gz"] = (mr, mr_aff, {})
    out["mr_4d_label.nii.gz"] = (mr_lab, mr_aff, {})

    # 4. plain uint8, uncompressed .nii
    rng = np.random.default_rng(3004)
    x, y, z = grid((16, 16, 8))
    u8 = 100.0 + 80.0 * x + 40.0 * np.sin(3.0 * y) + 30.0 * z + 60.0 * ((x**2 + y**2) < 0.3)
    u8 = np.clip(np.rint(u8 + rng.normal(0.0, 6.0, size=u8.shape)), 0, 255).astype(np.uint8)
    out["plain_u8.nii"] = (u8, np.diag([1.0, 1.0, 2.0, 1.0]), {})

    # 5. float64 in [-5, 5], slightly oblique affine
    rng = np.random.default_rng(3005)
    x, y, z = grid((20, 18, 10))
    f = 3.0 * np.sin(2.5 * x) * np.cos(1.5 * y) + 1.5 * z + rng.normal(0.0, 0.3, size=x.shape)
    f = np.clip(f, -5.0, 5.0)
    th = np.deg2rad(10.0)
    rot = np.array([[np.cos(th), -np.sin(th), 0.0], [np.sin(th), np.cos(th), 0.0], [0.0, 0.0, 1.0]])
    f_aff = np.eye(4)
    f_aff[:3, :3] = rot @ np.diag([1.5, 1.5, 4.0])
    f_aff[:3, 3] = [-12.0, 8.0, 30.0]
    out["f64.nii.gz"] = (f.astype(np.float64), f_aff, {})

    # 6. int32 big-endian
    rng = np.random.default_rng(3006)
    x, y, z = grid((18, 16, 9))
    i32 = 50000.0 * x - 30000.0 * y**2 + 120000.0 * (z > 0.3) + rng.normal(0.0, 500.0, size=x.shape)
    out["i32_big_endian.nii.gz"] = (
        np.rint(i32).astype(">i4"),
        np.diag([-2.0, 2.0, 2.0, 1.0]) + np.array([[0, 0, 0, 17.0], [0, 0, 0, -15.0], [0, 0, 0, -8.0], [0, 0, 0, 0]]),
        {"endianness": ">"},
    )
    return out


# --------------------------------------------------------------------------
# Deterministic NIfTI writing
# --------------------------------------------------------------------------


def build_nifti(arr: np.ndarray, affine: np.ndarray, opts: dict) -> nib.Nifti1Image:
    hdr = nib.Nifti1Header(endianness=opts.get("endianness", "<"))
    hdr.set_data_dtype(arr.dtype)  # a passed-in header otherwise forces its own (float32) dtype
    img = nib.Nifti1Image(arr, affine, header=hdr)
    img.set_sform(affine, code=int(opts.get("sform", 1)))
    img.set_qform(affine, code=int(opts.get("qform", 1)))
    if "slope" in opts:
        # arr already holds the raw stored integers; keep them as they are
        img.header.set_slope_inter(opts["slope"], opts["inter"])
    img.header.set_xyzt_units("mm", "sec")
    return img


def write_nifti(img: nib.Nifti1Image, path: Path) -> None:
    data = img.to_bytes()
    if path.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=9, mtime=0)
    path.write_bytes(data)


def raw_header(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    return data


def check_written(path: Path, arr: np.ndarray, affine: np.ndarray, opts: dict) -> nib.Nifti1Image:
    """Re-read the written file and verify dtype, endianness, scaling and raw values."""
    img = nib.load(str(path))
    assert img.shape == arr.shape, (path, img.shape, arr.shape)
    assert img.get_data_dtype() == arr.dtype, (path, img.get_data_dtype(), arr.dtype)
    assert np.allclose(img.affine, affine), path
    unscaled = np.asanyarray(img.dataobj.get_unscaled())
    assert np.array_equal(unscaled, arr), path
    data = raw_header(path)
    end = opts.get("endianness", "<")
    (sizeof_hdr,) = struct.unpack(end + "i", data[0:4])
    assert sizeof_hdr == 348, (path, sizeof_hdr)
    slope, inter = struct.unpack(end + "ff", data[112:120])
    vox_offset = int(struct.unpack(end + "f", data[108:112])[0])
    payload = np.frombuffer(data, dtype=arr.dtype.newbyteorder(end), count=arr.size, offset=vox_offset)
    assert np.array_equal(payload.reshape(arr.shape, order="F"), arr), path
    if "slope" in opts:
        assert (slope, inter) == (opts["slope"], opts["inter"]), (path, slope, inter)
        assert np.array_equal(img.get_fdata(), arr.astype(np.float64) * opts["slope"] + opts["inter"]), path
    else:
        assert (slope == 0.0 or np.isnan(slope) or slope == 1.0) and (inter == 0.0 or np.isnan(inter)), (
            path,
            slope,
            inter,
        )
        assert np.array_equal(img.get_fdata(), arr.astype(np.float64)), path
    if end == ">":
        assert img.header.endianness == ">" and data[0:4] == b"\x00\x00\x01\x5c", path
    return img


# --------------------------------------------------------------------------
# MONAI pipeline
# --------------------------------------------------------------------------


def fmt(v: float) -> str:
    return f"{v:g}"


def case_name(stem: str, size, mode, scale) -> str:
    geo = "native" if size is None else f"{mode}_{'x'.join(str(s) for s in size)}"
    if scale is None:
        sc = "none"
    else:
        sc = "range_{}_{}_{}_{}_{}".format(
            fmt(scale["a_min"]), fmt(scale["a_max"]), fmt(scale["b_min"]), fmt(scale["b_max"]),
            "clip" if scale["clip"] else "noclip",
        )
    return f"{stem}__{geo}__{sc}"


def label_name(label_stem: str, size) -> str:
    return f"{label_stem}__native" if size is None else f"{label_stem}__nearest_{'x'.join(str(s) for s in size)}"


def flip_suffix(flip) -> str:
    """'' for no flip, else '__flip_all' or '__flip_0_2'."""
    if flip is None:
        return ""
    return "__flip_" + ("all" if flip == "all" else "_".join(str(a) for a in flip))


def rng_(a_min, a_max, b_min, b_max, clip):
    return {"a_min": float(a_min), "a_max": float(a_max), "b_min": float(b_min), "b_max": float(b_max), "clip": clip}


SEED_RANGE = rng_(-1000, 1000, 0, 1, False)
SEED_RANGE_CLIP = rng_(-1000, 1000, 0, 1, True)
SYM_RANGE_CLIP = rng_(-1000, 1000, -1, 1, True)
SYM_RANGE = rng_(-1000, 1000, -1, 1, False)


def build_cases():
    """(image file, label file or None, size or None, mode or None, scale or None)."""
    ct, ctl = "ct_i16.nii.gz", "ct_i16_label.nii.gz"
    c = []
    for size, mode in (((20, 18, 10), "area"), ((16, 16, 8), "area"), ((48, 40, 24), "area"),
                       ((20, 18, 10), "trilinear"), ((20, 18, 10), "nearest")):
        c.append((ct, ctl, size, mode, SEED_RANGE))
    c.append((ct, ctl, (20, 18, 10), "area", SEED_RANGE_CLIP))
    c.append((ct, ctl, (16, 16, 8), "area", SEED_RANGE_CLIP))
    c.append((ct, ctl, (20, 18, 10), "trilinear", SEED_RANGE_CLIP))
    c.append((ct, ctl, (20, 18, 10), "area", SYM_RANGE))
    c.append((ct, ctl, (16, 16, 8), "area", SYM_RANGE_CLIP))
    c.append((ct, ctl, (20, 18, 10), "area", None))
    c.append((ct, ctl, (16, 16, 8), "area", None))
    c.append((ct, ctl, (20, 18, 10), "trilinear", None))
    c.append((ct, ctl, None, None, SEED_RANGE))
    c.append((ct, ctl, None, None, SEED_RANGE_CLIP))
    u16 = "ct_scaled_u16.nii.gz"
    c.append((u16, None, (16, 15, 8), "area", SEED_RANGE))
    c.append((u16, None, (16, 15, 8), "area", None))
    mr, mrl = "mr_4d_f32.nii.gz", "mr_4d_label.nii.gz"
    c.append((mr, mrl, (12, 10, 6), "area", None))
    c.append((mr, mrl, (12, 10, 6), "area", rng_(0, 3000, 0, 1, True)))
    c.append((mr, mrl, (16, 14, 9), "trilinear", None))
    c.append(("plain_u8.nii", None, (10, 12, 5), "area", None))
    c.append(("f64.nii.gz", None, (14, 12, 7), "area", None))
    c.append(("i32_big_endian.nii.gz", None, (12, 10, 6), "area", None))
    return c


def build_flip_cases():
    """(image file, label file or None, size or None, mode or None, scale or None, flip).

    flip is "all" (MONAI spatial_axis=None) or a list of voxel axes."""
    ct, ctl = "ct_i16.nii.gz", "ct_i16_label.nii.gz"
    c = []
    for flip in ([0], [1], [2], [0, 2], [2, 1, 0], "all"):
        c.append((ct, ctl, (20, 18, 10), "area", SEED_RANGE, flip))
    c.append((ct, ctl, None, None, SEED_RANGE, [1]))
    c.append((ct, ctl, (16, 16, 8), "trilinear", None, [0, 1]))
    c.append(("mr_4d_f32.nii.gz", "mr_4d_label.nii.gz", (12, 10, 6), "area", None, "all"))
    c.append(("mr_4d_f32.nii.gz", "mr_4d_label.nii.gz", None, None, None, [2]))
    return c


def stem_of(fname: str) -> str:
    for ext in (".nii.gz", ".nii"):
        if fname.endswith(ext):
            return fname[: -len(ext)]
    raise ValueError(fname)


def run_case(img_path: Path, lab_path: Path | None, size, mode, scale, flip=None):
    keys = ["image", "label"] if lab_path is not None else ["image"]
    xs = [LoadImaged(keys=keys), EnsureChannelFirstd(keys=keys)]
    if size is not None:
        xs.append(Resized(keys=["image"], spatial_size=size, mode=mode))
        if lab_path is not None:
            xs.append(Resized(keys=["label"], spatial_size=size, mode="nearest"))
    if scale is not None:
        xs.append(ScaleIntensityRanged(keys=["image"], **scale))
    if flip is not None:
        xs.append(Flipd(keys=keys, spatial_axis=None if flip == "all" else flip))
    data = {"image": str(img_path)}
    if lab_path is not None:
        data["label"] = str(lab_path)
    out = Compose(xs)(data)
    image = out["image"].detach().cpu().numpy()
    assert image.dtype == np.float32, image.dtype
    image = np.ascontiguousarray(image, dtype=np.float32)
    if size is not None and mode == "area" and scale is None and flip is None:
        # documents MONAI's behaviour: Resize(mode="area") on (C, X, Y, Z) is torch's
        # interpolate(mode="area") == adaptive_avg_pool3d over (X, Y, Z), no anti-aliasing
        src = EnsureChannelFirst()(LoadImage(image_only=True)(str(img_path)))
        ref = torch.nn.functional.adaptive_avg_pool3d(src.as_tensor()[None].float(), tuple(size))[0]
        assert np.array_equal(image, ref.numpy()), img_path
    affine = [[float(v) for v in row] for row in np.asarray(out["image"].affine)]
    label = None
    if lab_path is not None:
        lab = out["label"].detach().cpu().numpy()
        assert lab.dtype == np.float32, lab.dtype
        assert np.array_equal(lab, np.rint(lab)) and lab.min() >= 0 and lab.max() <= 255
        label = np.ascontiguousarray(lab.astype(np.uint8))
    return image, label, affine


def remove_stale(directory: Path, keep: set[str]) -> None:
    for p in sorted(directory.iterdir()):
        if p.is_file() and p.name not in keep:
            p.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})")
    args = ap.parse_args()
    out_dir: Path = args.out
    torch.set_num_threads(1)

    dirs = {k: out_dir / k for k in ("inputs", "decoded", "expected")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)

    # ---- inputs ---------------------------------------------------------
    inputs = make_inputs()
    manifest_inputs = []
    for fname in sorted(inputs):
        arr, affine, opts = inputs[fname]
        path = dirs["inputs"] / fname
        write_nifti(build_nifti(arr, affine, opts), path)
        img = check_written(path, arr, affine, opts)

        # decoded: LoadImage + EnsureChannelFirst == nibabel get_fdata as float32, channel first
        loaded = LoadImage(image_only=True)(str(path))
        assert loaded.dtype == torch.float32, loaded.dtype
        cf = EnsureChannelFirst()(loaded)
        dec = np.ascontiguousarray(cf.detach().cpu().numpy(), dtype=np.float32)
        ref = img.get_fdata().astype(np.float32)
        ref = ref[None] if ref.ndim == 3 else np.moveaxis(ref, -1, 0)
        assert dec.shape == ref.shape and np.array_equal(dec, ref), fname
        # the default reader for .nii/.nii.gz must be NibabelReader (ITK not installed)
        assert NibabelReader().verify_suffix(str(path))
        assert "sizeof_hdr" in loaded.meta and loaded.meta["sizeof_hdr"] == 348, fname
        np.save(dirs["decoded"] / f"{stem_of(fname)}.npy", dec)

        slope, inter = img.dataobj.slope, img.dataobj.inter
        hdr = img.header
        manifest_inputs.append(
            {
                "file": f"inputs/{fname}",
                "dtype": arr.dtype.newbyteorder("=").name,
                "endianness": "big" if opts.get("endianness") == ">" else "little",
                "shape": list(arr.shape),
                "affine": [[float(v) for v in row] for row in img.affine],
                "orientation": "".join(nib.aff2axcodes(img.affine)),
                "sform_code": int(hdr["sform_code"]),
                "qform_code": int(hdr["qform_code"]),
                "scl_slope": float(slope),
                "scl_inter": float(inter),
                "decoded": f"decoded/{stem_of(fname)}.npy",
                "decoded_shape": list(dec.shape),
            }
        )

    # ---- expected -------------------------------------------------------
    manifest_cases = []
    expected_files: set[str] = set()
    label_cache: dict[str, np.ndarray] = {}
    all_cases = [(*c, None) for c in build_cases()] + build_flip_cases()
    for img_f, lab_f, size, mode, scale, flip in all_cases:
        name = case_name(stem_of(img_f), size, mode, scale) + flip_suffix(flip)
        image, label, affine = run_case(
            dirs["inputs"] / img_f, dirs["inputs"] / lab_f if lab_f else None, size, mode, scale, flip
        )
        n_chan = inputs[img_f][0].shape[3] if inputs[img_f][0].ndim == 4 else 1
        spatial = tuple(size) if size is not None else inputs[img_f][0].shape[:3]
        assert image.shape == (n_chan, *spatial), (name, image.shape)
        np.save(dirs["expected"] / f"{name}.npy", image)
        expected_files.add(f"{name}.npy")
        exp_label = None
        if label is not None:
            lname = label_name(stem_of(lab_f), size) + flip_suffix(flip)
            assert label.shape == (1, *spatial), (lname, label.shape)
            if lname in label_cache:
                assert np.array_equal(label_cache[lname], label), lname
            else:
                label_cache[lname] = label
                np.save(dirs["expected"] / f"{lname}.npy", label)
                expected_files.add(f"{lname}.npy")
            exp_label = f"expected/{lname}.npy"
        case = {
            "name": name,
            "input": f"inputs/{img_f}",
            "label": f"inputs/{lab_f}" if lab_f else None,
            "size": list(size) if size is not None else None,
            "mode": mode,
            "scale": scale,
            "expected_image": f"expected/{name}.npy",
            "expected_label": exp_label,
        }
        # Only the flip cases carry these keys, so the seed's cases read as before.
        if flip is not None:
            case["flip"] = flip
            case["expected_affine"] = affine
        manifest_cases.append(case)
    manifest_cases.sort(key=lambda c: c["name"])
    assert len({c["name"] for c in manifest_cases}) == len(manifest_cases)

    remove_stale(dirs["inputs"], set(inputs))
    remove_stale(dirs["decoded"], {f"{stem_of(f)}.npy" for f in inputs})
    remove_stale(dirs["expected"], expected_files)

    r = Resize(spatial_size=(1, 1, 1))
    manifest = {
        "generator": GENERATOR,
        "versions": {
            "monai": monai.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "nibabel": nib.__version__,
            "python": platform.python_version(),
        },
        "axis_note": AXIS_NOTE,
        "pipeline": (
            'LoadImaged(keys=["image","label"]) -> EnsureChannelFirstd(keys=["image","label"]) '
            '-> Resized(keys=["image"], spatial_size=size, mode=mode) '
            '-> Resized(keys=["label"], spatial_size=size, mode="nearest") '
            '-> ScaleIntensityRanged(keys=["image"], **scale); Resized omitted when size is null, '
            "ScaleIntensityRanged omitted when scale is null; label output cast to uint8"
        ),
        "resize_defaults": {
            "align_corners": r.align_corners,
            "anti_aliasing": r.anti_aliasing,
            "size_mode": r.size_mode,
            "dtype": str(r.dtype),
        },
        "inputs": manifest_inputs,
        "cases": manifest_cases,
    }
    text = json.dumps(manifest, sort_keys=True, indent=2) + "\n"
    (out_dir / "manifest.json").write_text(text, encoding="utf-8")
    print(f"wrote {len(inputs)} inputs, {len(manifest_cases)} cases, {len(expected_files)} expected files to {out_dir}")


if __name__ == "__main__":
    main()
