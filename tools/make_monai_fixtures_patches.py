#!/usr/bin/env python3
"""Generate MONAI parity fixtures for medserve's patch sampling (RandCropByPosNegLabeld).

Regenerate (from the repo root):

    python3 -m venv /tmp/monai && /tmp/monai/bin/pip install -r tools/requirements-fixtures.txt && /tmp/monai/bin/python tools/make_monai_fixtures_patches.py

    /tmp/monai/bin/python tools/make_monai_fixtures_patches.py --out DIR   # write somewhere else

medserve draws its own random numbers (counter-based, see src/pipeline/augment.rs), so the
fixtures pin down everything *but* the draws: for each case the script fixes which list
(foreground or background) and which position in it every sample takes, feeds exactly those
choices to the real MONAI transform through a scripted `RandomState`, and records what MONAI
made of them:

    RandCropByPosNegLabeld(keys=["image", "label"], label_key="label", spatial_size=PATCH,
                           pos=1, neg=1, num_samples=N, image_key="image" | None,
                           image_threshold=T, allow_smaller=True)

`allow_smaller=True` is what medserve serves: with MONAI's default (`False`) a patch larger
than the image on an axis raises; with `True` that axis is not cropped (the whole axis).

The output is deterministic (seeded `np.random.default_rng` streams, `.npy` files, a manifest
with sorted keys): running the script twice gives byte-identical files.

Layout of the output directory:

    volumes/<volume>_label.npy  uint8   (1, X, Y, Z)  the label the centres are drawn from
    volumes/<volume>_image.npy  float32 (C, X, Y, Z)  the image cropped alongside (and thresholded)
    <case>/fg.npy, bg.npy   int64   (n,)          MONAI map_binary_to_indices(label, image?, T)
    <case>/pick_fg.npy      uint8   (N,)          1: sample k took the foreground list
    <case>/pick_index.npy   int64   (N,)          position in that list (MONAI's randint)
    <case>/center.npy       int64   (N, 3)        MONAI's centres after correct_crop_centers
    <case>/image_crops.npy  float32 (N, C, ...)   MONAI's SpatialCrop of the image
    <case>/label_crops.npy  uint8   (N, 1, ...)   MONAI's SpatialCrop of the label (float32 in
                                                  MONAI, as LoadImaged gives it; whole values)
    correct_centers.json    [shape, size, centre, corrected] rows of MONAI's
                            correct_crop_centers (allow_smaller=True), one axis at a time
    manifest.json
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
from pathlib import Path

import numpy as np
import torch

import monai
from monai.data import MetaTensor
from monai.transforms import RandCropByPosNegLabeld
from monai.transforms.utils import correct_crop_centers, map_binary_to_indices

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "monai_patches"
GENERATOR = "tools/make_monai_fixtures_patches.py"


class Scripted(np.random.RandomState):
    """A RandomState whose `rand()` and `randint(n)` return values fixed in advance, so MONAI
    takes exactly the choices medserve's draws would have made."""

    def __init__(self, units: list[float], ints: list[int]):
        super().__init__(0)
        self.units = list(units)
        self.ints = list(ints)
        self.asked: list[int] = []

    def rand(self, *args):
        assert not args
        return self.units.pop(0)

    def randint(self, low, high=None, size=None, dtype=int):
        assert high is None and size is None
        self.asked.append(int(low))
        v = self.ints.pop(0)
        assert 0 <= v < low, (v, low)
        return v


def ellipsoid(shape, centre, radii) -> np.ndarray:
    g = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    return sum(((a - c) / r) ** 2 for a, c, r in zip(g, centre, radii)) <= 1.0


def make_volumes() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{name: (label (1,X,Y,Z) uint8, image (C,X,Y,Z) float32)}; each with its own seed."""
    out = {}

    rng = np.random.default_rng(5001)
    shape = (20, 18, 12)
    lab = np.zeros(shape, np.uint8)
    lab[ellipsoid(shape, (4, 5, 3), (4, 3.5, 2.5))] = 1
    lab[ellipsoid(shape, (16, 14, 9), (2.5, 2.5, 2))] = 2
    img = rng.normal(0.2, 0.3, size=(1, *shape)).astype(np.float32)
    # Values at the threshold exactly as float32 (0.1 is not one): MONAI compares in float32.
    img.flat[rng.choice(img.size, 40, replace=False)] = np.float32(0.1)
    img.flat[rng.choice(img.size, 10, replace=False)] = np.nan
    out["blob_20x18x12"] = (lab[None], img)

    rng = np.random.default_rng(5002)
    shape = (9, 11, 7)
    lab = np.zeros(shape, np.uint8)
    lab[0, 0, 0] = 1
    lab[8, 10, 6] = 3
    lab[4, 5, 3] = 1
    lab[8, 0, 6] = 2
    img = rng.normal(0.0, 1.0, size=(2, *shape)).astype(np.float32)
    out["corners_9x11x7"] = (lab[None], img)

    rng = np.random.default_rng(5003)
    shape = (10, 8, 6)
    img = rng.uniform(-1.0, 1.0, size=(1, *shape)).astype(np.float32)
    out["empty_10x8x6"] = (np.zeros((1, *shape), np.uint8), img)

    rng = np.random.default_rng(5004)
    shape = (16, 12, 1)
    lab = np.zeros(shape, np.uint8)
    lab[ellipsoid(shape, (12, 3, 0), (3, 2, 1))] = 1
    img = rng.normal(0.0, 1.0, size=(1, *shape)).astype(np.float32)
    out["flat_16x12x1"] = (lab[None], img)
    return out


# (case name, volume, patch, image_threshold or None)
CASES = [
    ("blob_even", "blob_20x18x12", (8, 8, 6), None),
    ("blob_odd_threshold", "blob_20x18x12", (7, 5, 3), 0.1),
    ("blob_larger_than_image", "blob_20x18x12", (24, 9, 16), None),
    ("blob_equal_to_image", "blob_20x18x12", (20, 4, 12), None),
    ("corners_threshold_zero", "corners_9x11x7", (4, 5, 6), 0.0),
    ("corners_one_voxel", "corners_9x11x7", (1, 1, 1), None),
    ("empty_label", "empty_10x8x6", (5, 5, 5), None),
    ("flat_axis", "flat_16x12x1", (6, 7, 2), None),
]


def choices(fg: np.ndarray, bg: np.ndarray, seed: int) -> list[tuple[bool, int]]:
    """Both ends of each list (centres at the volume's edges), then seeded draws."""
    rng = np.random.default_rng(seed)
    out = []
    for is_fg, lst in ((True, fg), (False, bg)):
        if len(lst):
            out += [(is_fg, 0), (is_fg, len(lst) - 1)]
    while len(out) < 12:
        is_fg = bool(rng.integers(2)) if len(fg) and len(bg) else bool(len(fg))
        lst = fg if is_fg else bg
        out.append((is_fg, int(rng.integers(len(lst)))))
    return out


def run_case(label: np.ndarray, image: np.ndarray, patch, threshold, seed: int) -> dict:
    # The label as MONAI holds it after LoadImaged: float32. (Given a uint8 tensor,
    # map_binary_to_indices makes every voxel background: torch.any keeps uint8 and `~` is
    # then a bitwise not. A real pipeline never sees that, and medserve does not copy it.)
    lab_t = MetaTensor(torch.from_numpy(label.astype(np.float32)))
    img_t = MetaTensor(torch.from_numpy(image.copy()))
    fg, bg = map_binary_to_indices(lab_t, img_t if threshold is not None else None, threshold or 0.0)
    fg, bg = np.asarray(fg, np.int64), np.asarray(bg, np.int64)
    picks = choices(fg, bg, seed)
    # pos = neg = 1: MONAI takes the foreground when rand() < 0.5 (or the only non-empty list).
    units = [0.25 if is_fg else 0.75 for is_fg, _ in picks]
    state = Scripted(units, [i for _, i in picks])
    t = RandCropByPosNegLabeld(
        keys=["image", "label"],
        label_key="label",
        spatial_size=patch,
        pos=1.0,
        neg=1.0,
        num_samples=len(picks),
        image_key="image" if threshold is not None else None,
        image_threshold=0.0 if threshold is None else threshold,
        allow_smaller=True,
    )
    t.set_random_state(state=state)
    out = t({"image": img_t, "label": lab_t})
    # The list MONAI drew from is told by the length randint was asked for (the lists differ
    # in length in every case); it must be the one the choice named.
    for (is_fg, _), n in zip(picks, state.asked):
        assert n == len(fg if is_fg else bg), (is_fg, n, len(fg), len(bg))
    centers = np.array([[int(v) for v in o["image"].meta["crop_center"]] for o in out], np.int64)
    for o, c in zip(out, centers):
        assert [int(v) for v in o["label"].meta["crop_center"]] == list(c)
    image_crops = np.stack([o["image"].numpy() for o in out]).astype(np.float32)
    label_crops = np.stack([o["label"].numpy() for o in out])
    assert label_crops.dtype == np.float32, label_crops.dtype
    assert np.array_equal(label_crops, np.rint(label_crops))
    label_crops = label_crops.astype(np.uint8)
    return {
        "fg": fg,
        "bg": bg,
        "pick_fg": np.array([int(f) for f, _ in picks], np.uint8),
        "pick_index": np.array([i for _, i in picks], np.int64),
        "center": centers,
        "image_crops": np.ascontiguousarray(image_crops),
        "label_crops": np.ascontiguousarray(label_crops),
    }


def correct_centers_table() -> list[list[int]]:
    rows = []
    for n in range(1, 14):
        for s in range(1, 17):
            for c in range(n):
                got = correct_crop_centers([c, c, c], [s, s, s], [n, n, n], allow_smaller=True)
                assert len(set(got)) == 1
                rows.append([n, s, c, int(got[0])])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})")
    args = ap.parse_args()
    out_dir: Path = args.out
    torch.set_num_threads(1)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)

    volumes = make_volumes()
    (out_dir / "volumes").mkdir()
    for vol, (label, image) in volumes.items():
        np.save(out_dir / "volumes" / f"{vol}_label.npy", label)
        np.save(out_dir / "volumes" / f"{vol}_image.npy", image)
    manifest_cases = []
    for k, (name, vol, patch, threshold) in enumerate(CASES):
        label, image = volumes[vol]
        res = run_case(label, image, patch, threshold, seed=6000 + k)
        d = out_dir / name
        d.mkdir()
        for key, arr in res.items():
            np.save(d / f"{key}.npy", arr)
        manifest_cases.append(
            {
                "name": name,
                "volume": vol,
                "shape": list(label.shape[1:]),
                "channels": int(image.shape[0]),
                "patch": list(patch),
                "image_threshold": threshold,
                "samples": int(len(res["center"])),
                "crop_shape": list(res["image_crops"].shape[2:]),
                "fg": int(len(res["fg"])),
                "bg": int(len(res["bg"])),
            }
        )
    (out_dir / "correct_centers.json").write_text(json.dumps(correct_centers_table()) + "\n")
    manifest = {
        "generator": GENERATOR,
        "transform": "RandCropByPosNegLabeld(keys=[image, label], label_key=label, spatial_size=patch, "
        "pos=1, neg=1, num_samples=N, image_key=image if image_threshold else None, "
        "image_threshold=T, allow_smaller=True)",
        "axis_note": "Arrays are MONAI's channel-first (C, X, Y, Z), C-order; fg/bg index the "
        "flattened (X, Y, Z) grid in C order, as MONAI's map_binary_to_indices does.",
        "versions": {
            "python": platform.python_version(),
            "monai": monai.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "cases": manifest_cases,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(manifest_cases)} cases to {out_dir}")


if __name__ == "__main__":
    main()
