#!/usr/bin/env python3
"""Issue 10 section 6: medserve's training path against MONAI, measured in the same run.

Driven by scripts/bench-training.sh, which starts and stops the servers; each subcommand is
one measurement and prints JSON lines (``{"m": metric, "run": r, ...}``) to stdout, and
``summary`` turns the collected lines into medians, ratios and a table. Nothing is asserted.

    bench_training.py make-data OUT --sample DIR --ct CT.nii.gz [--images 1792]
    bench_training.py raw      --url U --run R [--warm-epochs 2] [--rotate 15]
    bench_training.py patches  --url U --run R [--requests 30]
    bench_training.py client   --url U --run R [--rotate 15]        (numpy, urllib3, torch)
    bench_training.py monai    --data OUT --run R [--warm-epochs 2] (monai, torch)
    bench_training.py summary  LINES.jsonl

``make-data`` and ``raw``/``patches``/``summary`` need only the standard library (PNGs are
written with zlib, the mask as NIfTI-1 by hand), so the medserve side runs on any python3.

What is measured (seconds from a monotonic clock; images/s = images delivered / seconds):

- ``raw``: one keep-alive ``http.client`` connection, sequential ``GET .../batches/{b}``,
  whole body read. Epoch 0 on a fresh server is the *cold* epoch (every PNG decoded; files in
  the page cache); epochs 1..k then run with the items cached (*warm*: only the random
  flip/rotate, stacking and npz encoding are new work). ``/metrics`` stage seconds are read
  before and after each phase.
- ``client``: ``medserve.BatchLoader`` in ``torch.utils.data.DataLoader(batch_size=None,
  num_workers=2)``; epoch 0 on a fresh server (cold), then epoch 1 (warm). Worker start-up is
  inside the time, as it is for MONAI's DataLoader.
- ``patches``: ``GET .../items/{item}/patches?patch=96,96,64&num=4&seed=S``, S new for every
  request (never a 304); the first request (cold: decode, index lists) is reported alone.
- ``monai``: (a) the seed's Compose in-process over the already-loaded arrays, looped over
  the same ``k * N`` images and stacked into batches of 256; (b) ``monai.data.DataLoader(
  Dataset(files, LoadImage+...), batch_size=256, num_workers=2)``, first epoch (cold) and second
  (warm); (c) ``RandCropByPosNegLabeld(spatial_size=(96,96,64), num_samples=4)`` on the loaded
  CT and mask, as the seed calls it (index lists computed on every call) and with
  ``FgBgToIndicesd`` run once beforehand (like medserve's cached lists).
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import random
import shutil
import statistics
import struct
import sys
import time
import zlib
from pathlib import Path
from urllib.parse import urlencode, urlsplit

CLASSES = ["AbdomenCT", "BreastMRI", "CXR", "ChestCT", "Hand", "HeadCT"]
DATASET_2D = "bench2d"
DATASET_3D = "bench3d"
SUBJECT = "ct512"
BATCH = 256
PATCH = (96, 96, 64)
NUM_PATCHES = 4


TAG = ""
UNTAGGED = ("medserve_patches", "monai_crop", "versions")


def emit(metric: str, run: int, **kw) -> None:
    if TAG and not metric.startswith(UNTAGGED):
        metric += "_" + TAG
    rec = {"m": metric, "run": run, "load1": round(os.getloadavg()[0], 2), **kw}
    print(json.dumps(rec), flush=True)


# ---------------------------------------------------------------------------------------------
# Data: PNGs with the standard library, a mask for the CT as NIfTI-1 by hand.


def png_read_gray8(path: Path) -> tuple[int, int, bytes]:
    """Decodes an 8-bit grayscale, non-interlaced PNG (what `medserve sample-data` writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    pos, idat, w, h = 8, [], 0, 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if (depth, color, interlace) != (8, 0, 0):
                raise SystemExit(f"{path}: not an 8-bit grayscale PNG")
        elif kind == b"IDAT":
            idat.append(body)
    raw = zlib.decompress(b"".join(idat))
    out = bytearray(w * h)
    prev = bytearray(w)
    for y in range(h):
        f, line = raw[y * (w + 1)], bytearray(raw[y * (w + 1) + 1 : (y + 1) * (w + 1)])
        for x in range(w):
            a = line[x - 1] if x else 0
            b = prev[x]
            c = prev[x - 1] if x else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pr = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[x] = (line[x] + pr) & 255
        out[y * w : (y + 1) * w] = line
        prev = line
    return w, h, bytes(out)


def png_write_gray8(path: Path, w: int, h: int, px: bytes) -> None:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF
        )

    raw = b"".join(b"\0" + px[y * w : (y + 1) * w] for y in range(h))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def write_mask(ct: Path, out: Path) -> dict:
    """A uint8 mask on the CT's grid: label 1 in an organ-sized ellipsoid inside the body (the
    sample CT's body is a centred ellipse of radii 0.42 x 0.34 of the slice), header copied
    from the CT with the datatype changed."""
    with gzip.open(ct, "rb") as f:
        hdr = bytearray(f.read(352))
    if struct.unpack("<i", hdr[:4])[0] != 348:
        raise SystemExit(f"{ct}: not a little-endian NIfTI-1 file")
    dims = struct.unpack("<8h", hdr[40:56])
    nx, ny, nz = dims[1], dims[2], dims[3]
    struct.pack_into("<hh", hdr, 70, 2, 8)  # datatype uint8, bitpix 8
    struct.pack_into("<f", hdr, 108, 352.0)  # vox_offset
    struct.pack_into("<ff", hdr, 112, 0.0, 0.0)  # no scaling
    cx, cy, cz = nx * 0.36, ny * 0.45, nz * 0.5
    rx, ry, rz = nx * 0.12, ny * 0.10, nz * 0.30
    zero_row = bytes(nx)
    fg = 0
    with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as g:
        g.write(bytes(hdr))
        for z in range(nz):
            dz = ((z + 0.5 - cz) / rz) ** 2
            rows = []
            for y in range(ny):
                d = 1.0 - dz - ((y + 0.5 - cy) / ry) ** 2
                if d < 0:
                    rows.append(zero_row)
                    continue
                half = rx * d**0.5
                x0 = max(0, int(cx - half + 0.5))
                x1 = min(nx, int(cx + half + 0.5))
                fg += x1 - x0
                rows.append(bytes(x0) + b"\x01" * (x1 - x0) + bytes(nx - x1))
            g.write(b"".join(rows))
    return {"grid": [nx, ny, nz], "foreground_voxels": fg}


def cmd_make_data(a) -> None:
    out = Path(a.out)
    src = Path(a.sample) / "medmnist" / "train"
    d2 = out / DATASET_2D / "train"
    if d2.exists():
        shutil.rmtree(d2)
    sources = {c: sorted((src / c).glob("*.png")) for c in CLASSES}
    decoded = {c: [png_read_gray8(p) for p in ps] for c, ps in sources.items()}
    rng = random.Random(10)
    # clamp[p + 4 + k] for a pixel p and noise k in -4..4
    clamp = [min(255, max(0, v - 4)) for v in range(256 + 9)]
    for i in range(a.images):
        cls = CLASSES[i % len(CLASSES)]
        w, h, px = decoded[cls][(i // len(CLASSES)) % len(decoded[cls])]
        noise = rng.randbytes(w * h)
        noisy = bytes(clamp[p + n % 9] for p, n in zip(px, noise))
        dest = d2 / cls
        dest.mkdir(parents=True, exist_ok=True)
        png_write_gray8(dest / f"bench_{i:05d}.png", w, h, noisy)
    d3 = out / DATASET_3D / "train" / SUBJECT
    d3.mkdir(parents=True, exist_ok=True)
    img = d3 / "img.nii.gz"
    if not img.exists() or img.stat().st_size != Path(a.ct).stat().st_size:
        shutil.copyfile(a.ct, img)
    info = write_mask(img, d3 / "label.nii.gz")
    print(json.dumps({"made": str(out), "images": a.images, "ct": str(a.ct), **info}))


# ---------------------------------------------------------------------------------------------
# medserve over raw HTTP


class Http:
    """One keep-alive connection; every body read whole."""

    def __init__(self, url: str):
        u = urlsplit(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=300)

    def get(self, path: str, params: dict | None = None) -> bytes:
        if params:
            path += "?" + urlencode(params, safe=",")
        self.conn.request("GET", path)
        r = self.conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise SystemExit(f"GET {path}: {r.status} {body[:300]!r}")
        return body

    def stages(self) -> dict:
        out = {}
        for line in self.get("/metrics").decode().splitlines():
            if line.startswith("medserve_stage_seconds_total{"):
                stage = line.split('"')[1]
                out[stage] = float(line.rsplit(" ", 1)[1])
            elif line.startswith(("medserve_decodes_total", "medserve_transforms_total",
                                  "medserve_prefetched_batches_total")):
                k, v = line.split(" ", 1)
                out[k] = float(v)
        return out


def delta(after: dict, before: dict) -> dict:
    return {k: round(after[k] - before.get(k, 0.0), 4) for k in after}


def batch_params(epoch: int, rotate: float) -> dict:
    return {
        "batch_size": BATCH, "seed": 0, "world_size": 1, "rank": 0, "epoch": epoch,
        "size": "64,64", "scale": "minmax",
        "rand_flip": 0.5, "rand_rotate": repr(float(rotate)), "rand_rotate_prob": 0.5,
    }


def check_npz(body: bytes, n: int) -> None:
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(body)) as z:
        names = set(z.namelist())
        need = {"image.npy", "label.npy", "id.npy", "pad.npy", "rand_flip.npy", "rand_rotate.npy"}
        if not need <= names:
            raise SystemExit(f"batch npz holds {sorted(names)}")
        size = z.getinfo("image.npy").file_size
        if size < n * 64 * 64 * 4:
            raise SystemExit(f"image.npy of {size} bytes for {n} images of 64x64 float32")


def cmd_raw(a) -> None:
    h = Http(a.url)
    base = f"/v1/datasets/{DATASET_2D}/splits/train/batches"
    t0 = time.perf_counter()
    s0 = None
    plan = json.loads(h.get(base, {"batch_size": BATCH, "seed": 0, "world_size": 1}))
    steps, samples = int(plan["batches"]), int(plan["samples"])
    for epoch in range(a.warm_epochs + 1):
        if epoch == 1:
            s0 = h.stages()
            t0 = time.perf_counter()
        elif epoch == 0:
            s_cold = h.stages()
        per = []
        nbytes = 0
        for b in range(steps):
            t = time.perf_counter()
            body = h.get(f"{base}/{b}", batch_params(epoch, a.rotate))
            per.append(time.perf_counter() - t)
            nbytes += len(body)
            if b == 0 and epoch <= 1:
                check_npz(body, BATCH)
        if epoch == 0:
            dt = time.perf_counter() - t0
            emit("medserve_raw_cold", a.run, seconds=round(dt, 4), images=steps * BATCH,
                 samples=samples, batches=steps, mb=round(nbytes / 1e6, 1),
                 per_batch_s=[round(x, 4) for x in per], rotate=a.rotate,
                 stages=delta(h.stages(), s_cold))
    dt = time.perf_counter() - t0
    emit("medserve_raw_warm", a.run, seconds=round(dt, 4), images=steps * BATCH * a.warm_epochs,
         epochs=a.warm_epochs, batches=steps * a.warm_epochs, rotate=a.rotate,
         per_batch_median_s=round(statistics.median(per), 4), stages=delta(h.stages(), s0))


def cmd_patches(a) -> None:
    h = Http(a.url)
    path = f"/v1/datasets/{DATASET_3D}/splits/train/items/{SUBJECT}/patches"

    def q(seed: int) -> dict:
        return {"patch": ",".join(map(str, PATCH)), "num": NUM_PATCHES, "seed": seed}

    s0 = h.stages()
    t = time.perf_counter()
    body = h.get(path, q(100_000 * (a.run + 1)))
    first = time.perf_counter() - t
    s1 = h.stages()
    lat = []
    for i in range(a.requests):
        t = time.perf_counter()
        body = h.get(path, q(100_000 * (a.run + 1) + 1 + i))
        lat.append(time.perf_counter() - t)
    lat.sort()
    emit("medserve_patches_first", a.run, seconds=round(first, 4), stages=delta(s1, s0))
    emit("medserve_patches", a.run, seconds=round(statistics.median(lat), 5),
         p90_s=round(lat[int(0.9 * (len(lat) - 1))], 5), min_s=round(lat[0], 5),
         requests=a.requests, bytes=len(body), stages=delta(h.stages(), s1))


# ---------------------------------------------------------------------------------------------
# medserve through its Python client


def cmd_client(a) -> None:
    import torch  # noqa: F401  (the loader is a torch IterableDataset)
    from torch.utils.data import DataLoader

    import medserve

    loader = medserve.BatchLoader(
        a.url, DATASET_2D, "train", batch_size=BATCH, seed=0, size=(64, 64), scale="minmax",
        rand_flip=0.5, rand_rotate=float(a.rotate), rand_rotate_prob=0.5)
    h = Http(a.url)
    for epoch, name in ((0, "medserve_client_cold"), (1, "medserve_client_warm")):
        loader.set_epoch(epoch)
        s = h.stages()
        t = time.perf_counter()
        n = 0
        for batch in DataLoader(loader, batch_size=None, num_workers=2):
            n += int(batch["image"].shape[0])
            assert tuple(batch["image"].shape[1:]) == (1, 64, 64), batch["image"].shape
        dt = time.perf_counter() - t
        emit(name, a.run, seconds=round(dt, 4), images=n, rotate=a.rotate,
             stages=delta(h.stages(), s))


# ---------------------------------------------------------------------------------------------
# MONAI


def seed_random(rotate: float):
    from monai.transforms import RandFlip, RandRotate

    return [RandFlip(prob=0.5), RandRotate(range_x=rotate, prob=0.5)]


def cmd_monai(a) -> None:
    import numpy as np
    import torch

    import monai
    from monai.data import DataLoader, Dataset
    from monai.transforms import (
        Compose, EnsureChannelFirst, FgBgToIndicesd, LoadImage, LoadImaged,
        RandCropByPosNegLabeld, Resize, ScaleIntensity,
    )

    monai.utils.set_determinism(seed=a.run)
    data = Path(a.data)
    files = sorted(str(p) for p in (data / DATASET_2D / "train").glob("*/*.png"))
    n = len(files) // BATCH * BATCH  # whole batches, as medserve's plan for this split
    files = files[:n]
    threads = torch.get_num_threads()

    if "compose" in a.parts:
        # (a) the seed's Compose over already-loaded arrays, stacked into batches.
        load = LoadImage(image_only=True)
        arrays = [np.asarray(load(f)) for f in files]
        chain = Compose([EnsureChannelFirst(channel_dim="no_channel"), Resize((64, 64)),
                         ScaleIntensity(), *seed_random(a.rotate)])
        chain.set_random_state(seed=a.run)
        # With torch's default threads (every CPU), then with one: on a busy 2-core machine
        # RandRotate's grid sampling ran several times faster on one thread. The summary takes
        # the faster of the two as the baseline.
        for nthreads, metric in ((threads, "monai_compose"), (1, "monai_compose_1thread")):
            torch.set_num_threads(nthreads)
            for i in range(min(BATCH, n)):  # warm-up, untimed
                chain(arrays[i])
            t = time.perf_counter()
            for _ in range(a.warm_epochs):
                for s in range(0, n, BATCH):
                    out = torch.stack([torch.as_tensor(chain(x)) for x in arrays[s : s + BATCH]])
            dt = time.perf_counter() - t
            assert tuple(out.shape) == (BATCH, 1, 64, 64), out.shape
            emit(metric, a.run, seconds=round(dt, 4), images=n * a.warm_epochs,
                 rotate=a.rotate, torch_threads=nthreads)
        torch.set_num_threads(threads)

    if "loader" in a.parts:
        # (b) DataLoader(Dataset(files, LoadImage + the chain), batch_size=256, num_workers=2).
        chain = Compose([LoadImage(image_only=True), EnsureChannelFirst(), Resize((64, 64)),
                         ScaleIntensity(), *seed_random(a.rotate)])
        dl = DataLoader(Dataset(data=files, transform=chain), batch_size=BATCH, num_workers=2)
        for epoch, name in ((0, "monai_loader_cold"), (1, "monai_loader_warm")):
            t = time.perf_counter()
            k = 0
            for batch in dl:
                k += int(batch.shape[0])
                assert tuple(batch.shape[1:]) == (1, 64, 64), batch.shape
            emit(name, a.run, seconds=round(time.perf_counter() - t, 4), images=k,
                 rotate=a.rotate, epoch=epoch)

    if "crop" in a.parts:
        # (c) RandCropByPosNegLabeld on the loaded CT and mask.
        sub = data / DATASET_3D / "train" / SUBJECT
        loaded = Compose([LoadImaged(keys=["image", "label"], ensure_channel_first=True)])(
            {"image": str(sub / "img.nii.gz"), "label": str(sub / "label.nii.gz")})
        crop = RandCropByPosNegLabeld(keys=["image", "label"], label_key="label",
                                      spatial_size=PATCH, num_samples=NUM_PATCHES)
        crop.set_random_state(seed=a.run)
        samples = []
        for i in range(a.crop_repeat + 1):
            t = time.perf_counter()
            out = crop(dict(loaded))
            if i:
                samples.append(time.perf_counter() - t)
        assert len(out) == NUM_PATCHES and tuple(out[0]["image"].shape) == (1, *PATCH)
        emit("monai_crop", a.run, seconds=round(statistics.median(samples), 5),
             repeat=a.crop_repeat, torch_threads=threads)
        t = time.perf_counter()
        cached = FgBgToIndicesd(keys="label")(dict(loaded))
        idx_s = time.perf_counter() - t
        crop = RandCropByPosNegLabeld(
            keys=["image", "label"], label_key="label", spatial_size=PATCH,
            num_samples=NUM_PATCHES, fg_indices_key="label_fg_indices",
            bg_indices_key="label_bg_indices")
        crop.set_random_state(seed=a.run)
        samples = []
        for i in range(a.crop_repeat * 4 + 1):
            t = time.perf_counter()
            out = crop(dict(cached))
            if i:
                samples.append(time.perf_counter() - t)
        emit("monai_crop_cached_indices", a.run, seconds=round(statistics.median(samples), 5),
             indices_s=round(idx_s, 4), repeat=a.crop_repeat * 4)
    emit("versions", a.run, monai=monai.__version__, torch=torch.__version__,
         numpy=np.__version__, python=sys.version.split()[0], cpu_count=os.cpu_count())


# ---------------------------------------------------------------------------------------------
# Summary


def cmd_summary(a) -> None:
    recs = [json.loads(line) for line in Path(a.lines).read_text().splitlines()
            if line.startswith("{")]
    by: dict[str, list[dict]] = {}
    for r in recs:
        by.setdefault(r["m"], []).append(r)

    def med(metric: str, key: str = "seconds"):
        v = [r[key] for r in by.get(metric, []) if key in r]
        return statistics.median(v) if v else None

    def rate(metric: str):
        v = [r["images"] / r["seconds"] for r in by.get(metric, []) if r.get("seconds")]
        return statistics.median(v) if v else None

    def runs(metric: str) -> int:
        return len(by.get(metric, []))

    def ratio(x, y):
        return None if x is None or y is None or y == 0 else x / y

    def fmt(v, spec=".0f"):
        return "-" if v is None else format(v, spec)

    def verdict(r, goal, more=True):
        if r is None:
            return "not measured"
        ok = r >= goal if more else r <= goal
        return "met" if ok else "MISSED"

    rows = []
    out_lines = []

    def row(target, med_name, med_val, base_name, base_val, r, goal, unit, more=True,
            n_med="", n_base=""):
        rows.append((target, med_name, med_val, base_name, base_val, r, goal, unit, more,
                     n_med, n_base))

    tags = a.tags.split(",") if a.tags else [""]
    for tag in tags:
        sfx = f"_{tag}" if tag else ""
        label = f" (rand_rotate={tag})" if tag else ""
        w = rate("medserve_raw_warm" + sfx)
        mc, mc1 = rate("monai_compose" + sfx), rate("monai_compose_1thread" + sfx)
        best = max((x for x in (mc, mc1) if x is not None), default=None)
        row("1 warm batches" + label, "medserve HTTP, warm", w,
            "MONAI Compose in-process, faster of 2/1 torch threads", best, ratio(w, best), 20,
            "img/s", n_med=runs("medserve_raw_warm" + sfx), n_base=runs("monai_compose" + sfx))
        for name, v in (("2 torch threads", mc), ("1 torch thread", mc1)):
            row("1 (reading)" + label, "medserve HTTP, warm", w, f"MONAI Compose, {name}", v,
                ratio(w, v), None, "img/s")
        c, ml = rate("medserve_raw_cold" + sfx), rate("monai_loader_cold" + sfx)
        row("2 cold epoch" + label, "medserve HTTP, fresh server", c,
            "MONAI DataLoader(nw=2), 1st epoch", ml, ratio(c, ml), 3, "img/s",
            n_med=runs("medserve_raw_cold" + sfx), n_base=runs("monai_loader_cold" + sfx))
        for phase, mphase in (("warm", "warm"), ("cold", "cold")):
            cl, ml = rate(f"medserve_client_{phase}{sfx}"), rate(f"monai_loader_{mphase}{sfx}")
            row(f"3 client, {phase}" + label, f"BatchLoader in DataLoader(nw=2), {phase}", cl,
                f"MONAI DataLoader(nw=2), {'2nd' if phase == 'warm' else '1st'} epoch", ml,
                ratio(cl, ml), 3, "img/s", n_med=runs(f"medserve_client_{phase}{sfx}"),
                n_base=runs(f"monai_loader_{mphase}{sfx}"))
    p = med("medserve_patches")
    pc, pcc = med("monai_crop"), med("monai_crop_cached_indices")
    row("4 patches 4x96x96x64", "medserve HTTP (median latency)", None if p is None else p * 1e3,
        "goal", 15.0, None if p is None else p * 1e3 / 15.0, 1.0, "ms", more=False,
        n_med=runs("medserve_patches"))
    row("4 (ratio, seed's call)", "medserve HTTP", None if p is None else p * 1e3,
        "MONAI RandCropByPosNegLabeld", None if pc is None else pc * 1e3, ratio(pc, p), None,
        "ms", n_base=runs("monai_crop"))
    row("4 (ratio, cached indices)", "medserve HTTP", None if p is None else p * 1e3,
        "MONAI, FgBgToIndicesd once", None if pcc is None else pcc * 1e3, ratio(pcc, p), None,
        "ms", n_base=runs("monai_crop_cached_indices"))

    print("| target | medserve | value | baseline (same run) | value | ratio | goal | verdict |")
    print("| --- | --- | ---: | --- | ---: | ---: | --- | --- |")
    for (target, mn, mv, bn, bv, r, goal, unit, more, n_med, n_base) in rows:
        if target.startswith("4 patches"):
            goal_s, ver = "<= 15 ms", verdict(mv, 15.0, more=False)
            r_s = "-"
        elif goal is None:
            goal_s, ver, r_s = "(for reading)", "", fmt(r, ".1f") + "x"
        else:
            goal_s, ver, r_s = f">= {goal}x", verdict(r, goal), fmt(r, ".2f") + "x"
        spec = ".1f" if unit == "ms" else ",.0f"
        nm = f" (n={n_med})" if n_med != "" else ""
        nb = f" (n={n_base})" if n_base != "" else ""
        print(f"| {target} | {mn}{nm} | {fmt(mv, spec)} {unit} | {bn}{nb} | "
              f"{fmt(bv, spec)} {unit} | {r_s} | {goal_s} | {ver} |")
        key = "_".join("".join(ch if ch.isalnum() or ch == "." else " " for ch in
                               f"{target} vs {bn}".lower()).split())
        out_lines.append(f"RESULT {key} medserve={fmt(mv, '.3f')} baseline={fmt(bv, '.3f')} "
                         f"ratio={fmt(r, '.3f')} unit={unit.replace('/', '_per_')}")
    # Stage split of the medserve runs (medians over runs), for reading where time goes.
    print()
    for metric in ("medserve_raw_cold", "medserve_raw_warm", "medserve_client_cold",
                   "medserve_client_warm", "medserve_patches_first", "medserve_patches"):
        for tag in tags:
            m = metric + (f"_{tag}" if tag else "")
            rs = [r for r in by.get(m, []) if "stages" in r]
            if not rs:
                continue
            keys = sorted(rs[0]["stages"])
            st = {k: statistics.median(r["stages"].get(k, 0.0) for r in rs) for k in keys}
            tot = statistics.median(r["seconds"] for r in rs)
            print(f"stages {m}: wall {tot:.3f} s; " + ", ".join(
                (f"{k} {v:.3f} s" if k in ("fetch", "decode", "transform", "encode") else
                 f"prefetched batches {v:.0f}") for k, v in st.items()))
    loads = [r["load1"] for r in recs if "load1" in r]
    if loads:
        print(f"1-min load during the measurements: min {min(loads):.2f}, median "
              f"{statistics.median(loads):.2f}, max {max(loads):.2f}")
    for line in out_lines:
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("make-data")
    p.add_argument("out")
    p.add_argument("--sample", required=True, help="`medserve sample-data` output")
    p.add_argument("--ct", required=True, help="512x512x200 int16 .nii.gz")
    p.add_argument("--images", type=int, default=1792)
    for name in ("raw", "patches", "client", "monai"):
        p = sub.add_parser(name)
        p.add_argument("--run", type=int, default=0)
        p.add_argument("--rotate", type=float, default=15.0,
                       help="rand_rotate / RandRotate range_x in radians (default 15: the seed's "
                            "range_x=15 as MONAI reads it)")
        p.add_argument("--warm-epochs", type=int, default=2)
        p.add_argument("--tag", default="", help="suffix of the metric names (e.g. the rotate)")
        if name == "monai":
            p.add_argument("--data", required=True)
            p.add_argument("--parts", default="compose,loader,crop")
            p.add_argument("--crop-repeat", type=int, default=5)
        else:
            p.add_argument("--url", required=True)
        if name == "patches":
            p.add_argument("--requests", type=int, default=30)
    p = sub.add_parser("summary")
    p.add_argument("lines")
    p.add_argument("--tags", default="", help="comma-separated metric suffixes (rotate values)")
    a = ap.parse_args()
    global TAG
    TAG = getattr(a, "tag", "")
    {"make-data": cmd_make_data, "raw": cmd_raw, "patches": cmd_patches, "client": cmd_client,
     "monai": cmd_monai, "summary": cmd_summary}[a.cmd](a)


if __name__ == "__main__":
    main()
