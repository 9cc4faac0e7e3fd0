#!/usr/bin/env python3
"""Baseline for benches/volume.rs: nibabel + MONAI doing medserve's cold 3D request in one
Python process, on the same file and machine.

    /root/venv-monai/bin/python tools/bench_monai_volume.py PATH.nii.gz [--repeat N]

(environment: tools/requirements-fixtures.txt). Every timed repeat is cold in the sense that
matters here: it loads and inflates the whole file again (the file itself is in the OS page
cache, as it is for medserve's benchmark). One untimed warm-up run comes first so import and
first-call costs are not counted; its time is reported as ``first_run_s``.

Timed, each N times, medians reported (seconds):

- ``monai_threads_default``: the pipeline with torch using every CPU (``os.cpu_count()``);
- ``monai_threads_1``: the same with ``torch.set_num_threads(1)``;
  the pipeline is ``LoadImaged(keys=["image"]) -> EnsureChannelFirstd -> Resized(spatial_size=
  (128, 128, 64), mode="area") -> ScaleIntensityRanged(-1000, 1000, 0, 1, clip=False)``,
  plus ``np.save`` of the result into memory (medserve's timing includes encoding .npy);
- ``nibabel_get_fdata``: ``nib.load(path).get_fdata()`` alone (float64, nibabel's default);
- ``zlib_inflate``: CPython's ``zlib`` inflating the file (its floor, for comparison with
  medserve's inflater).

Prints one JSON line: the medians, every sample, the per-stage split of the default-thread
MONAI runs (medians of load, channel_first, resize, scale, npy), thread counts and versions.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import time
import zlib

import nibabel as nib
import numpy as np
import torch

import monai
from monai.transforms import (
    EnsureChannelFirstd,
    LoadImaged,
    Resized,
    ScaleIntensityRanged,
)

SIZE = (128, 128, 64)


def stages():
    return [
        ("load", LoadImaged(keys=["image"])),
        ("channel_first", EnsureChannelFirstd(keys=["image"])),
        ("resize", Resized(keys=["image"], spatial_size=SIZE, mode="area")),
        (
            "scale",
            ScaleIntensityRanged(
                keys=["image"], a_min=-1000.0, a_max=1000.0, b_min=0.0, b_max=1.0, clip=False
            ),
        ),
    ]


def monai_once(path: str) -> tuple[float, dict[str, float]]:
    """One full request: fresh transforms, load from the file, resize, scale, .npy bytes."""
    split: dict[str, float] = {}
    t0 = time.perf_counter()
    data: dict = {"image": path}
    for name, tr in stages():
        t = time.perf_counter()
        data = tr(data)
        split[name] = time.perf_counter() - t
    img = data["image"]
    t = time.perf_counter()
    arr = img.numpy() if hasattr(img, "numpy") else np.asarray(img)
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr, dtype=np.float32))
    split["npy"] = time.perf_counter() - t
    total = time.perf_counter() - t0
    if tuple(arr.shape) != (1, *SIZE) or arr.dtype != np.float32:
        raise SystemExit(f"unexpected MONAI output {arr.shape} {arr.dtype}")
    return total, split


def nibabel_once(path: str) -> float:
    t = time.perf_counter()
    a = nib.load(path).get_fdata()
    dt = time.perf_counter() - t
    del a
    return dt


def zlib_once(path: str) -> float:
    with open(path, "rb") as f:
        raw = f.read()
    t = time.perf_counter()
    d = zlib.decompressobj(wbits=31)  # gzip wrapper
    out = d.decompress(raw)
    dt = time.perf_counter() - t
    del out
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path", help=".nii.gz volume (the one benches/volume.rs used)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each (default 3)")
    args = ap.parse_args()
    n = max(1, args.repeat)
    cpus = os.cpu_count() or 1

    torch.set_num_threads(cpus)
    first, _ = monai_once(args.path)  # warm-up: imports, first calls

    samples: dict[str, list[float]] = {}
    splits: list[dict[str, float]] = []
    for threads, key in ((cpus, "monai_threads_default"), (1, "monai_threads_1")):
        torch.set_num_threads(threads)
        for _ in range(n):
            total, split = monai_once(args.path)
            samples.setdefault(key, []).append(total)
            if threads == cpus:
                splits.append(split)
    torch.set_num_threads(cpus)
    samples["nibabel_get_fdata"] = [nibabel_once(args.path) for _ in range(n)]
    samples["zlib_inflate"] = [zlib_once(args.path) for _ in range(n)]

    out = {
        "path": args.path,
        "file_mb": round(os.path.getsize(args.path) / 1e6, 2),
        "repeat": n,
        "cpu_count": cpus,
        "torch_threads_default": cpus,
        "first_run_s": round(first, 4),
        "median_s": {k: round(statistics.median(v), 4) for k, v in samples.items()},
        "monai_split_s": {
            k: round(statistics.median(s[k] for s in splits), 4) for k in splits[0]
        },
        "samples_s": {k: [round(x, 4) for x in v] for k, v in samples.items()},
        "versions": {
            "python": platform.python_version(),
            "monai": monai.__version__,
            "torch": torch.__version__,
            "nibabel": nib.__version__,
            "numpy": np.__version__,
            "zlib": zlib.ZLIB_RUNTIME_VERSION,
        },
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
