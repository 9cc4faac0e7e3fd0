#!/usr/bin/env python3
"""Generate MONAI parity fixtures for medserve's 2D preprocessing pipeline.

Regenerate (from the repo root, in a venv built from tools/requirements-fixtures.txt):

    python tools/make_monai_fixtures.py            # writes tests/fixtures/monai2d/
    python tools/make_monai_fixtures.py --out DIR  # writes somewhere else

The output is deterministic: running the script twice gives byte-identical
files (inputs are generated from seeded ``np.random.default_rng`` streams, the
manifest is written with sorted keys).

Pipeline reproduced (exactly what the users' seed code does):

    LoadImage(image_only=True) -> EnsureChannelFirst()
        -> Resize(spatial_size, mode=MODE) -> ScaleIntensity()     # scale=minmax
        -> Resize(spatial_size, mode=MODE)                         # scale=none

and, for the deterministic-augmentation cases (those with "flip"/"rotate" in the manifest),
after that chain, in the seed's order:

        -> Flip(spatial_axis=AXES)          # AXES None for "all"
        -> Rotate(angle, keep_size=True, mode="bilinear", padding_mode="border",
                  align_corners=False)

on the (C, W, H) array MONAI holds, so flip axis 0 and the sense of the angle are MONAI's
(axis 0 is the image's width); the result is transposed to (C, H, W) like every other case.

Axis convention: MONAI's PILReader swaps PIL's axes, so a loaded 2D image is
(W, H) and after EnsureChannelFirst it is (C, W, H).  medserve works in
row-major (C, H, W) and users ask ``size=H,W``.  For a requested [H, W] this
script therefore calls ``Resize(spatial_size=(W, H))`` and transposes the last
two axes of MONAI's output, so every stored array is (C, H, W), C-order,
float32.

Layout of the output directory:

    inputs/    source images (PNG / JPEG written with PIL)
    decoded/   <input stem>.npy : LoadImage + EnsureChannelFirst, as (C, H, W)
    expected/  <case name>.npy  : full pipeline output, as (C, H, W)
    manifest.json
"""

from __future__ import annotations

import argparse
import json
import platform
import struct
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image

import monai
from monai.transforms import EnsureChannelFirst, Flip, LoadImage, Resize, Rotate, ScaleIntensity

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "monai2d"
GENERATOR = "tools/make_monai_fixtures.py"

MODES = ("area", "nearest", "bilinear")

AXIS_NOTE = (
    "MONAI's PILReader returns 2D arrays transposed, i.e. (W, H); after EnsureChannelFirst "
    "they are (C, W, H). For a requested size [H, W] the generator calls "
    "Resize(spatial_size=(W, H)) and transposes the last two axes of MONAI's output. "
    "All .npy files (expected/ and decoded/) are float32, C-order, shape (C, H, W), "
    "matching np.asarray(PIL.Image.open(input)) moved to channel-first."
)


# --------------------------------------------------------------------------
# Synthetic, structured image content (gradients + shapes + a little noise)
# --------------------------------------------------------------------------


def pattern(h: int, w: int, rng: np.random.Generator, variant: int = 0) -> np.ndarray:
    """Float64 image in [0, 1] of shape (h, w) with structure that makes the
    resize modes produce visibly different results."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    u = xx / max(w - 1, 1)
    v = yy / max(h - 1, 1)
    # base gradient, direction depends on the variant
    angle = 0.35 + 0.9 * variant
    img = 0.45 * (np.cos(angle) * u + np.sin(angle) * v)
    # filled disc with a hard edge
    cy, cx = h * (0.35 + 0.1 * (variant % 3)), w * (0.6 - 0.1 * (variant % 2))
    r = 0.22 * min(h, w)
    img += 0.35 * (((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r)
    # rectangle
    y0, y1 = int(0.6 * h), int(0.85 * h)
    x0, x1 = int(0.1 * w) + variant, int(0.4 * w) + variant
    img[y0:y1, x0:x1] += 0.25
    # thin high-frequency stripes in the top band (aliasing-sensitive)
    band = yy < 0.2 * h
    img += 0.15 * band * (np.floor(xx / 2) % 2)
    # single-pixel-wide diagonal line
    diag = np.abs(yy - (h / w) * xx) < 0.5
    img += 0.3 * diag
    # noise
    img += rng.normal(0.0, 0.03, size=(h, w))
    img -= img.min()
    img /= img.max()
    return img


def to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def make_inputs() -> dict[str, Image.Image]:
    """Return {file name: PIL image}. Each image has its own seed so adding or
    removing one does not change the others."""
    imgs: dict[str, Image.Image] = {}

    rng = np.random.default_rng(1001)
    imgs["gray8_64x64.png"] = Image.fromarray(to_u8(pattern(64, 64, rng, 0)))

    rng = np.random.default_rng(1002)
    imgs["gray8_w100_h75.png"] = Image.fromarray(to_u8(pattern(75, 100, rng, 1)))

    rng = np.random.default_rng(1003)
    imgs["gray8_w37_h50.png"] = Image.fromarray(to_u8(pattern(50, 37, rng, 2)))

    rng = np.random.default_rng(1004)
    p16 = pattern(60, 80, rng, 3)
    a16 = np.clip(np.rint(300.0 + p16 * 59700.0), 0, 65535).astype(np.uint16)
    imgs["gray16_w80_h60.png"] = Image.fromarray(a16)  # mode "I;16"

    rng = np.random.default_rng(1005)
    lum = to_u8(pattern(70, 70, rng, 4))
    yy, xx = np.mgrid[0:70, 0:70].astype(np.float64)
    alpha = 1.0 - np.sqrt((yy - 35.0) ** 2 + (xx - 20.0) ** 2) / 80.0
    imgs["la_w70_h70.png"] = Image.fromarray(np.stack([lum, to_u8(alpha)], axis=-1))  # "LA"

    rng = np.random.default_rng(1006)
    rgb = np.stack([to_u8(pattern(64, 90, rng, k)) for k in (0, 2, 5)], axis=-1)
    imgs["rgb_w90_h64.png"] = Image.fromarray(rgb)  # "RGB"

    rng = np.random.default_rng(1007)
    rgba = np.stack([to_u8(pattern(80, 48, rng, k)) for k in (1, 3, 4, 6)], axis=-1)
    imgs["rgba_w48_h80.png"] = Image.fromarray(rgba)  # "RGBA"

    rng = np.random.default_rng(1008)
    idx = np.minimum((pattern(66, 66, rng, 5) * 16.0).astype(np.uint8), 15)
    pal = rng.integers(0, 256, size=16 * 3, dtype=np.uint8)
    p_img = Image.fromarray(idx)
    p_img.putpalette(pal.tobytes(), rawmode="RGB")  # -> mode "P", 16 colours
    imgs["palette_w66_h66.png"] = p_img

    imgs["const_w32_h32.png"] = Image.fromarray(np.full((32, 32), 7, dtype=np.uint8))

    rng = np.random.default_rng(1010)
    imgs["gray_w64_h64.jpg"] = Image.fromarray(to_u8(pattern(64, 64, rng, 6)))

    rng = np.random.default_rng(1011)
    rgbj = np.stack([to_u8(pattern(60, 80, rng, k)) for k in (2, 4, 7)], axis=-1)
    imgs["rgb_w80_h60.jpg"] = Image.fromarray(rgbj)

    return imgs


EXPECTED_MODES = {
    "gray8_64x64.png": "L",
    "gray8_w100_h75.png": "L",
    "gray8_w37_h50.png": "L",
    "gray16_w80_h60.png": "I;16",
    "la_w70_h70.png": "LA",
    "rgb_w90_h64.png": "RGB",
    "rgba_w48_h80.png": "RGBA",
    "palette_w66_h66.png": "P",
    "const_w32_h32.png": "L",
    "gray_w64_h64.jpg": "L",
    "rgb_w80_h60.jpg": "RGB",
}

# PNG IHDR (bit depth, colour type) that each file must have.
EXPECTED_IHDR = {
    "gray8_64x64.png": (8, 0),
    "gray8_w100_h75.png": (8, 0),
    "gray8_w37_h50.png": (8, 0),
    "gray16_w80_h60.png": (16, 0),
    "la_w70_h70.png": (8, 4),
    "rgb_w90_h64.png": (8, 2),
    "rgba_w48_h80.png": (8, 6),
    "palette_w66_h66.png": (4, 3),  # PIL writes a 16-colour palette at 4 bits/pixel
    "const_w32_h32.png": (8, 0),
}


def save_input(img: Image.Image, path: Path) -> None:
    if path.suffix == ".png":
        # PIL's PNG writer is deterministic (no timestamps); keep defaults.
        img.save(path, format="PNG")
    else:
        img.save(path, format="JPEG", quality=90)


def png_ihdr(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    _w, _h, bit_depth, colour_type = struct.unpack(">IIBB", data[16:26])
    return bit_depth, colour_type


# --------------------------------------------------------------------------
# MONAI pipeline
# --------------------------------------------------------------------------


def load_channel_first(path: Path) -> torch.Tensor:
    """LoadImage(image_only=True) -> EnsureChannelFirst(), MONAI axes (C, W, H)."""
    img = LoadImage(image_only=True)(str(path))
    # make sure the default reader picked for PNG/JPEG really is PILReader
    assert img.meta.get("format") in ("PNG", "JPEG"), img.meta.get("format")
    return EnsureChannelFirst()(img)


def run_pipeline(
    loaded: torch.Tensor, size_hw: tuple[int, int], mode: str, scale: str, flip=None, rotate=None
) -> np.ndarray:
    h, w = size_hw
    out = Resize(spatial_size=(w, h), mode=mode)(loaded)
    if scale == "minmax":
        out = ScaleIntensity()(out)
    else:
        assert scale == "none", scale
    if flip is not None:
        out = Flip(spatial_axis=None if flip == "all" else flip)(out)
    if rotate is not None:
        out = Rotate(rotate, keep_size=True, mode="bilinear", padding_mode="border", align_corners=False)(out)
    arr = np.asarray(out.detach().cpu().numpy())
    assert arr.dtype == np.float32, arr.dtype
    assert arr.shape[1:] == (w, h), arr.shape
    return to_chw(arr)


def to_chw(monai_cwh: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.swapaxes(monai_cwh, -1, -2), dtype=np.float32)


def build_cases(stems: list[str]) -> list[tuple[str, tuple[int, int], str, str]]:
    """(input file, [H, W], mode, scale)."""
    cases = []
    for f in stems:
        for mode in MODES:
            cases.append((f, (64, 64), mode, "minmax"))
    for f in ("gray8_w100_h75.png", "rgb_w90_h64.png", "palette_w66_h66.png"):
        cases.append((f, (32, 48), "area", "minmax"))
        cases.append((f, (48, 32), "nearest", "minmax"))
    for f in ("gray8_w100_h75.png", "gray16_w80_h60.png", "palette_w66_h66.png"):
        cases.append((f, (64, 64), "area", "none"))
    return cases


# Angles of the Rotate cases: (label used in case names, radians).
ANGLES = (
    ("0", 0.0),
    ("pi_2", float(np.pi / 2)),
    ("-pi_2", float(-np.pi / 2)),
    ("pi", float(np.pi)),
    ("15", 15.0),
    ("0.3", 0.3),
    ("-0.7", -0.7),
)


def build_augment_cases():
    """(input file, [H, W], mode, scale, flip or None, (angle label, radians) or None).

    flip is "all" (MONAI spatial_axis=None) or a list of MONAI spatial axes of (C, W, H)."""
    cases = []
    for f in ("gray8_w100_h75.png", "rgb_w90_h64.png"):
        for flip in ([0], [1], [0, 1], "all"):
            cases.append((f, (48, 32), "area", "minmax", flip, None))
    for f, size in (("gray8_64x64.png", (64, 64)), ("gray8_w100_h75.png", (48, 32)), ("rgb_w90_h64.png", (37, 50))):
        for angle in ANGLES:
            cases.append((f, size, "area", "minmax", None, angle))
    cases.append(("gray8_w37_h50.png", (50, 37), "area", "minmax", [0], ANGLES[5]))
    cases.append(("gray16_w80_h60.png", (64, 64), "area", "none", [1], ANGLES[6]))
    cases.append(("rgba_w48_h80.png", (40, 24), "nearest", "minmax", "all", ANGLES[5]))
    cases.append(("palette_w66_h66.png", (32, 48), "bilinear", "minmax", [0, 1], ANGLES[4]))
    # The seed chain alone for the non-square rotations above, so a test can apply our
    # Flip/Rotate to MONAI's own input of them and expect MONAI's output to the bit.
    cases.append(("gray8_w100_h75.png", (48, 32), "area", "minmax", None, None))
    cases.append(("rgb_w90_h64.png", (37, 50), "area", "minmax", None, None))
    return cases


def case_name(fname: str, size_hw: tuple[int, int], mode: str, scale: str, flip=None, angle=None) -> str:
    stem, ext = fname.rsplit(".", 1)
    name = f"{stem}_{ext}__{mode}__h{size_hw[0]}_w{size_hw[1]}__{scale}"
    if flip is not None:
        name += "__flip_" + ("all" if flip == "all" else "_".join(str(a) for a in flip))
    if angle is not None:
        name += f"__rot_{angle[0]}"
    return name


def remove_stale(directory: Path, keep: set[str]) -> None:
    for p in sorted(directory.iterdir()):
        if p.is_file() and p.name not in keep:
            p.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})")
    args = ap.parse_args()
    out_dir: Path = args.out
    torch.set_num_threads(1)  # avoid any thread-count dependence in reductions

    dirs = {k: out_dir / k for k in ("inputs", "decoded", "expected")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)

    # ---- inputs ---------------------------------------------------------
    inputs = make_inputs()
    assert set(inputs) == set(EXPECTED_MODES)
    for fname, img in inputs.items():
        path = dirs["inputs"] / fname
        save_input(img, path)
        with Image.open(path) as reread:
            assert reread.mode == EXPECTED_MODES[fname], (fname, reread.mode)
            if fname == "palette_w66_h66.png":
                assert len(reread.getpalette()) == 16 * 3, len(reread.getpalette())
        if fname in EXPECTED_IHDR:
            assert png_ihdr(path) == EXPECTED_IHDR[fname], (fname, png_ihdr(path))
    a16 = np.asarray(Image.open(dirs["inputs"] / "gray16_w80_h60.png"))
    assert a16.dtype == np.uint16 and a16.max() > 59000, (a16.dtype, a16.max())

    # ---- decoded --------------------------------------------------------
    loaded: dict[str, torch.Tensor] = {}
    for fname in sorted(inputs):
        path = dirs["inputs"] / fname
        cf = load_channel_first(path)
        loaded[fname] = cf
        dec = to_chw(np.asarray(cf.detach().cpu().numpy()))
        # axis-convention check: MONAI's array transposed == what PIL decodes
        pil = np.asarray(Image.open(path))
        pil_chw = pil[None] if pil.ndim == 2 else np.moveaxis(pil, -1, 0)
        assert dec.shape == pil_chw.shape, (fname, dec.shape, pil_chw.shape)
        assert np.array_equal(dec, pil_chw.astype(np.float32)), fname
        np.save(dirs["decoded"] / (fname.rsplit(".", 1)[0] + "_" + fname.rsplit(".", 1)[1] + ".npy"), dec)

    # ---- expected -------------------------------------------------------
    manifest_cases = []
    expected_files = set()
    all_cases = [(f, s, m, sc, None, None) for f, s, m, sc in build_cases(sorted(inputs))]
    all_cases += build_augment_cases()
    for fname, size_hw, mode, scale, flip, angle in all_cases:
        name = case_name(fname, size_hw, mode, scale, flip, angle)
        arr = run_pipeline(loaded[fname], size_hw, mode, scale, flip, None if angle is None else angle[1])
        assert arr.shape[1:] == size_hw
        np.save(dirs["expected"] / f"{name}.npy", arr)
        expected_files.add(f"{name}.npy")
        stem, ext = fname.rsplit(".", 1)
        case = {
            "name": name,
            "input": f"inputs/{fname}",
            "size": list(size_hw),
            "mode": mode,
            "scale": scale,
            "channels": int(arr.shape[0]),
            "expected": f"expected/{name}.npy",
            "decoded": f"decoded/{stem}_{ext}.npy",
        }
        # Only the augmentation cases carry these keys, so the seed's cases read as before.
        if flip is not None:
            case["flip"] = flip
        if angle is not None:
            case["rotate"] = angle[1]
        manifest_cases.append(case)
    manifest_cases.sort(key=lambda c: c["name"])
    assert len({c["name"] for c in manifest_cases}) == len(manifest_cases)

    remove_stale(dirs["inputs"], set(inputs))
    remove_stale(dirs["decoded"], {f"{f.rsplit('.', 1)[0]}_{f.rsplit('.', 1)[1]}.npy" for f in inputs})
    remove_stale(dirs["expected"], expected_files)

    r = Resize(spatial_size=(1, 1))
    s = ScaleIntensity()
    manifest = {
        "generator": GENERATOR,
        "versions": {
            "monai": monai.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "pillow": PIL.__version__,
            "python": platform.python_version(),
        },
        "axis_note": AXIS_NOTE,
        "pipeline": {
            "minmax": "LoadImage(image_only=True) -> EnsureChannelFirst() -> Resize(spatial_size=(W, H), mode=MODE) -> ScaleIntensity()",
            "none": "LoadImage(image_only=True) -> EnsureChannelFirst() -> Resize(spatial_size=(W, H), mode=MODE)",
            "reader": "monai.data.PILReader (LoadImage default for png/jpg)",
            "augment": "cases with 'flip' and/or 'rotate' then apply Flip(spatial_axis=flip, None for 'all') and Rotate(rotate, keep_size=True, mode='bilinear', padding_mode='border', align_corners=False) to MONAI's (C, W, H) array, before the transpose",
            "jpeg_writer": "PIL JPEG quality=90, PIL default chroma subsampling (4:2:0 for RGB)",
        },
        "resize_defaults": {
            "align_corners": r.align_corners,
            "anti_aliasing": r.anti_aliasing,
            "anti_aliasing_sigma": r.anti_aliasing_sigma,
            "size_mode": r.size_mode,
            "dtype": str(r.dtype),
        },
        "scale_intensity_defaults": {
            "minv": s.minv,
            "maxv": s.maxv,
            "factor": s.factor,
            "channel_wise": s.channel_wise,
            "dtype": np.dtype(s.dtype).name,
        },
        "cases": manifest_cases,
    }
    text = json.dumps(manifest, sort_keys=True, indent=2) + "\n"
    (out_dir / "manifest.json").write_text(text, encoding="utf-8")
    print(f"wrote {len(inputs)} inputs, {len(manifest_cases)} cases to {out_dir}")


if __name__ == "__main__":
    main()
