#!/usr/bin/env python3
"""Reads medserve's volume and slice responses the way users do, with numpy and nibabel.

For a 3D CT (.nii.gz), a 4D multi-modal MRI (.nii.gz) and an uncompressed .nii subject of the
sample data, it checks that numpy loads the npy/npz responses and nibabel loads the NIfTI
responses with the right shape, dtype, values and affine, comparing with nibabel's own reading
of the source files under --data. Run by scripts/check-python.sh against the real binary:

    python tools/check_responses.py --base http://127.0.0.1:PORT --data DIR

Prints one line per check and a closing `python checks: N passed, M failed`; exits 1 on any
failure. Needs only the standard library, numpy and nibabel (tools/requirements-check.txt).
"""

import argparse
import gzip
import io
import json
import os
import sys
import tempfile
import traceback
import urllib.error
import urllib.request

import nibabel as nib
import numpy as np

# (dataset, split, item): 3D int16 CT (.nii.gz), 4D float32 MRI (.nii.gz), 3D int16 CT (.nii).
ITEMS = [
    ("Task09_Spleen", "train", "spleen_10"),
    ("Task01_BrainTumour", "train", "BRATS_001"),
    ("segmentation", "valid", "subject_005"),
]
SIZE = (32, 32, 12)
SIZE_Q = ",".join(map(str, SIZE))
A_MIN, A_MAX = -1000.0, 1000.0
VALUE_TOL = 1e-6
AFFINE_TOL = 1e-4


class CheckFailed(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def expect_close(got, want, tol, what):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    expect(got.shape == want.shape, f"{what}: shape {got.shape}, want {want.shape}")
    diff = np.abs(got - want)
    if diff.size and not diff.max() <= tol:
        idx = np.unravel_index(int(np.argmax(diff)), diff.shape)
        raise CheckFailed(
            f"{what}: max |diff| {diff.max():.6g} > {tol:g} at {tuple(int(i) for i in idx)} "
            f"(got {got[idx]:.6g}, want {want[idx]:.6g}; {int((diff > tol).sum())} of "
            f"{diff.size} differ)"
        )


def expect_equal(got, want, what):
    got, want = np.asarray(got), np.asarray(want)
    expect(got.shape == want.shape, f"{what}: shape {got.shape}, want {want.shape}")
    bad = got != want
    if bad.any():
        idx = np.argwhere(bad)[0]
        raise CheckFailed(
            f"{what}: {int(bad.sum())} of {bad.size} differ, first at {tuple(int(i) for i in idx)} "
            f"(got {got[tuple(idx)]}, want {want[tuple(idx)]})"
        )


def expect_array(arr, dtype, shape, what):
    expect(arr.dtype == np.dtype(dtype), f"{what}: dtype {arr.dtype}, want {np.dtype(dtype)}")
    expect(tuple(arr.shape) == tuple(shape), f"{what}: shape {arr.shape}, want {tuple(shape)}")


class Response:
    def __init__(self, url, status, headers, body):
        self.url, self.status, self.headers, self.body = url, status, headers, body

    def header(self, name):
        return self.headers.get(name)


class Client:
    def __init__(self, base):
        self.base = base.rstrip("/")

    def get(self, path):
        url = self.base + path
        # urllib never asks for or undoes Content-Encoding, so the body is exactly the bytes sent.
        req = urllib.request.Request(url, headers={"Accept": "*/*"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return Response(url, r.status, r.headers, r.read())
        except urllib.error.HTTPError as e:
            body = e.read()[:300].decode("utf-8", "replace")
            raise CheckFailed(f"GET {path}: HTTP {e.code}: {body}") from None

    def npy(self, path, dtype, shape):
        r = self.get(path)
        ct = r.header("Content-Type")
        expect(ct == "application/x-npy", f"GET {path}: Content-Type {ct!r}, want application/x-npy")
        arr = np.load(io.BytesIO(r.body), allow_pickle=False)
        expect_array(arr, dtype, shape, f"GET {path}")
        xs = r.header("X-Shape")
        expect(xs == ",".join(map(str, shape)), f"GET {path}: X-Shape {xs!r}, want {shape}")
        xd = r.header("X-Dtype")
        expect(xd == np.dtype(dtype).name, f"GET {path}: X-Dtype {xd!r}, want {np.dtype(dtype).name}")
        return arr

    def nifti(self, path):
        """GETs a .nii / .nii.gz response and loads it with nib.load from a file of that name."""
        r = self.get(path)
        gz = path.split("?")[0].endswith(".nii.gz")
        ct = r.header("Content-Type")
        want_ct = "application/gzip" if gz else "application/octet-stream"
        expect(ct == want_ct, f"GET {path}: Content-Type {ct!r}, want {want_ct}")
        ce = r.header("Content-Encoding")
        expect(ce is None, f"GET {path}: Content-Encoding {ce!r}, want none")
        if gz:
            expect(r.body[:2] == b"\x1f\x8b", f"GET {path}: body is not gzip")
        with tempfile.TemporaryDirectory() as d:
            f = os.path.join(d, "volume.nii.gz" if gz else "volume.nii")
            with open(f, "wb") as out:
                out.write(r.body)
            img = nib.load(f, mmap=False)
            expect(isinstance(img, nib.Nifti1Image), f"GET {path}: loaded as {type(img).__name__}")
            data = img.get_fdata()
            return img, data


class Source:
    """nibabel's reading of one sample item's image and label files."""

    def __init__(self, data_dir, meta):
        self.img = nib.load(os.path.join(data_dir, meta["key"]))
        self.lab = nib.load(os.path.join(data_dir, meta["label_key"]))
        self.affine = self.img.affine
        self.data = self.img.get_fdata()  # (X, Y, Z) or (X, Y, Z, C)
        self.label = np.asarray(self.lab.dataobj).astype(np.uint8)  # (X, Y, Z)
        self.four_d = self.data.ndim == 4
        self.shape3 = tuple(self.data.shape[:3])
        self.channels = self.data.shape[3] if self.four_d else 1
        # Channel-first, as the service (and MONAI's EnsureChannelFirst) returns it.
        self.cfirst = np.moveaxis(self.data, -1, 0) if self.four_d else self.data[None]
        self.label_values = set(np.unique(self.label).tolist())

    def channel(self, c=0):
        return self.cfirst[c]

    def nifti_shape(self, spatial):
        return tuple(spatial) + ((self.channels,) if self.four_d else ())


def resized_affine(a, old_shape, new_shape):
    """Affine of a grid resized corner-aligned (align_corners=False) from old to new shape."""
    s = np.asarray(old_shape, dtype=np.float64) / np.asarray(new_shape, dtype=np.float64)
    a_new = a.copy()
    a_new[:3, :3] = a[:3, :3] * s
    a_new[:3, 3] = a[:3, 3] + a[:3, :3] @ ((s - 1) / 2)
    return a_new


def area_resize(vol, out):
    """torch adaptive_avg_pool3d (MONAI Resize mode="area") of one (X, Y, Z) volume, separably."""
    a = np.asarray(vol, dtype=np.float64)
    for axis, (n, m) in enumerate(zip(a.shape, out)):
        i = np.arange(m)
        starts, ends = (i * n) // m, -((-(i + 1) * n) // m)
        a = np.stack(
            [a.take(np.arange(s, e), axis=axis).mean(axis=axis) for s, e in zip(starts, ends)],
            axis=axis,
        )
    return a


def nearest_resize(vol, out):
    """torch interpolate mode="nearest" (MONAI Resize for labels): src = floor(dst * in/out)."""
    idx = [np.minimum((np.arange(m) * n) // m, n - 1) for n, m in zip(vol.shape, out)]
    return vol[np.ix_(*idx)]


def radiological(src, plane):
    """The spec's display orientation of the middle slice of `plane`, from nibabel's RAS view."""
    ras = nib.as_closest_canonical(src.img).get_fdata()
    if ras.ndim == 4:
        ras = ras[..., 0]
    x, y, z = ras.shape
    if plane == "axial":  # (X, Y) -> rows anterior..posterior, columns right..left
        sl = ras[:, :, z // 2].T
    elif plane == "coronal":  # (X, Z) -> rows superior..inferior, columns right..left
        sl = ras[:, y // 2, :].T
    else:  # sagittal (Y, Z) -> rows superior..inferior, columns anterior..posterior
        sl = ras[x // 2, :, :].T
    # +x is patient right, +y anterior, +z superior: both flips put the largest index first.
    return np.flipud(np.fliplr(sl))


def item_checks(client, data_dir, dataset, split, item):
    """Yields (name, fn) pairs for one item; each fn raises CheckFailed on a mismatch."""
    base = f"/v1/datasets/{dataset}/splits/{split}/items/{item}"
    state = {}

    def meta_and_source():
        r = client.get(base)
        meta = json.loads(r.body)
        state["meta"] = meta
        state["src"] = Source(data_dir, meta)

    yield "item JSON and source files load", meta_and_source

    def src():
        expect("src" in state, "skipped: the item JSON or its source files did not load")
        return state["src"]

    def metadata():
        s, meta = src(), state["meta"]
        vol = meta.get("volume")
        expect(isinstance(vol, dict), f"no volume object in {sorted(meta)}")
        expect_close(vol["affine"], s.affine, AFFINE_TOL, "volume.affine vs nibabel affine")
        axcodes = "".join(nib.aff2axcodes(s.affine))
        expect(vol["orientation"] == axcodes, f"volume.orientation {vol['orientation']!r}, nibabel {axcodes!r}")
        expect(tuple(vol["shape"]) == s.shape3, f"volume.shape {vol['shape']}, file {s.shape3}")
        expect(vol["channels"] == s.channels, f"volume.channels {vol['channels']}, file {s.channels}")
        dt = s.img.get_data_dtype().name
        expect(vol["dtype"] == dt, f"volume.dtype {vol['dtype']!r}, file {dt!r}")
        zooms = s.img.header.get_zooms()[:3]
        expect_close(vol["spacing"], zooms, AFFINE_TOL, "volume.spacing vs header zooms")
        lab = meta.get("label")
        expect(isinstance(lab, dict), "no label object")
        expect(tuple(lab["shape"]) == s.label.shape, f"label.shape {lab['shape']}, file {s.label.shape}")
        vals, counts = np.unique(s.label, return_counts=True)
        got = {v["value"]: v["voxels"] for v in lab["values"]}
        want = dict(zip(vals.tolist(), counts.tolist()))
        expect(got == want, f"label.values voxels {got}, file {want}")

    yield "item JSON volume/label match nibabel", metadata

    def volume_native():
        s = src()
        a = client.npy(f"{base}/volume?format=npy", "float32", s.cfirst.shape)
        expect_close(a, s.cfirst, VALUE_TOL, "npy vs get_fdata")
        b = client.npy(f"{base}/volume", "float32", s.cfirst.shape)
        expect(np.array_equal(a, b), "/volume (default format) differs from format=npy")

    yield "volume npy native (C,X,Y,Z) float32 == get_fdata", volume_native

    def volume_scaled():
        s = src()
        shape = (s.channels,) + SIZE
        a = client.npy(f"{base}/volume.npy?size={SIZE_Q}&a_min={A_MIN:g}&a_max={A_MAX:g}", "float32", shape)
        # area resize and the linear range map both keep values inside the source's range.
        lo = (s.data.min() - A_MIN) / (A_MAX - A_MIN)
        hi = (s.data.max() - A_MIN) / (A_MAX - A_MIN)
        expect(np.isfinite(a).all(), "non-finite values")
        expect(lo - 1e-4 <= a.min() and a.max() <= hi + 1e-4,
               f"values {a.min():.4g}..{a.max():.4g} outside the source's scaled range {lo:.4g}..{hi:.4g}")
        expect(a.max() > a.min(), "constant output")
        want = np.stack([area_resize(s.channel(c), SIZE) for c in range(s.channels)])
        expect_close(a, (want - A_MIN) / (A_MAX - A_MIN), 1e-4, "vs area resize + ScaleIntensityRange of get_fdata")

    yield f"volume.npy size={SIZE_Q} a_min/a_max float32 (C,{SIZE_Q}) in range", volume_scaled

    def volume_npz():
        s = src()
        path = f"{base}/volume.npz?part=both&size={SIZE_Q}"
        r = client.get(path)
        ct = r.header("Content-Type")
        expect(ct == "application/x-npz", f"Content-Type {ct!r}, want application/x-npz")
        with np.load(io.BytesIO(r.body), allow_pickle=False) as z:
            keys = sorted(z.files)
            expect(keys == ["image", "label"], f"npz keys {keys}, want ['image', 'label']")
            image, label = z["image"], z["label"]
        expect_array(image, "float32", (s.channels,) + SIZE, "npz image")
        expect_array(label, "uint8", (1,) + SIZE, "npz label")
        got_vals = set(np.unique(label).tolist())
        expect(got_vals <= s.label_values, f"label values {sorted(got_vals)} not within source's {sorted(s.label_values)}")
        want_img = np.stack([area_resize(s.channel(c), SIZE) for c in range(s.channels)])
        expect_close(image, want_img, 1e-3, "npz image vs area resize of get_fdata")
        expect_equal(label[0], nearest_resize(s.label, SIZE), "npz label vs nearest resize of the label")
        state["npz"] = (image, label)

    yield f"volume.npz part=both size={SIZE_Q}: image float32, label uint8 within source labels", volume_npz

    def nifti_resized():
        s = src()
        want_aff = resized_affine(s.affine, s.shape3, SIZE)
        img, data = client.nifti(f"{base}/volume.nii.gz?size={SIZE_Q}")
        expect(img.shape == s.nifti_shape(SIZE), f"image shape {img.shape}, want {s.nifti_shape(SIZE)}")
        expect(img.get_data_dtype() == np.float32, f"image dtype {img.get_data_dtype()}, want float32")
        expect_close(img.affine, want_aff, AFFINE_TOL, "image affine vs resized source affine")
        expect_close(img.get_qform(), want_aff, AFFINE_TOL, "image qform vs resized source affine")
        lab, ldata = client.nifti(f"{base}/volume.nii?size={SIZE_Q}&part=label")
        expect(lab.shape == SIZE, f"label shape {lab.shape}, want {SIZE}")
        expect(lab.get_data_dtype() == np.uint8, f"label dtype {lab.get_data_dtype()}, want uint8")
        expect_close(lab.affine, want_aff, AFFINE_TOL, "label affine vs resized source affine")
        expect_close(lab.affine, img.affine, AFFINE_TOL, "label affine vs image affine")
        vals = set(np.unique(ldata).astype(int).tolist())
        expect(vals <= s.label_values, f"label values {sorted(vals)} not within {sorted(s.label_values)}")
        if "npz" in state:  # same request parameters, other container: same numbers
            image, label = state["npz"]
            cf = np.moveaxis(data, -1, 0) if s.four_d else data[None]
            expect_close(cf, image, VALUE_TOL, "nii.gz data (channels moved first) vs npz image")
            expect_equal(ldata.astype(np.uint8), label[0], "nii label vs npz label")

    yield f"volume.nii.gz / .nii part=label size={SIZE_Q}: shape, dtype, resized affine", nifti_resized

    def nifti_native():
        s = src()
        img, data = client.nifti(f"{base}/volume.nii.gz")
        expect(img.shape == s.data.shape, f"shape {img.shape}, want {s.data.shape}")
        expect(img.get_data_dtype() == np.float32, f"dtype {img.get_data_dtype()}, want float32")
        expect_close(img.affine, s.affine, AFFINE_TOL, "affine vs source affine")
        expect_close(data, s.data, VALUE_TOL, "data vs get_fdata")

    yield "volume.nii.gz native grid: source affine, data == get_fdata", nifti_native

    def slice_voxel():
        s = src()
        X, Y, Z = s.shape3
        if s.four_d:
            a = client.npy(f"{base}/slice?axis=2&index=5&channel=2&format=npy", "float32", (X, Y))
            expect_close(a, s.data[:, :, 5, 2], VALUE_TOL, "axis=2 index=5 channel=2 vs get_fdata()[:, :, 5, 2]")
            a = client.npy(f"{base}/slice?axis=2&index=5&format=npy", "float32", (X, Y))
            expect_close(a, s.data[:, :, 5, 0], VALUE_TOL, "axis=2 index=5 (channel 0) vs get_fdata()[:, :, 5, 0]")
        else:
            a = client.npy(f"{base}/slice?axis=2&index=5&format=npy", "float32", (X, Y))
            expect_close(a, s.data[:, :, 5], VALUE_TOL, "axis=2 index=5 vs get_fdata()[:, :, 5]")
        lab = client.npy(f"{base}/slice?axis=0&index=3&format=npy&part=label", "uint8", (Y, Z))
        expect_equal(lab, s.label[3, :, :], "label axis=0 index=3 vs label[3, :, :]")

    yield "slice npy axis=2 index=5 (image) and axis=0 index=3 (label) == nibabel", slice_voxel

    def slice_plane(plane):
        def run():
            s = src()
            want = radiological(s, plane)
            a = client.npy(f"{base}/slice?axis={plane}&format=npy", "float32", want.shape)
            expect_close(a, want, VALUE_TOL, f"{plane} vs radiological view of get_fdata")
        return run

    yield "slice npy axis=axial == flipud(fliplr(get_fdata()[:, :, Z//2].T))", slice_plane("axial")
    yield "slice npy axis=coronal == flipud(fliplr(get_fdata()[:, Y//2, :].T))", slice_plane("coronal")
    yield "slice npy axis=sagittal == flipud(fliplr(get_fdata()[X//2, :, :].T))", slice_plane("sagittal")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="medserve base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--data", required=True, help="the directory medserve serves (sample-data)")
    args = p.parse_args()
    client = Client(args.base)
    passed = failed = 0
    for dataset, split, item in ITEMS:
        for name, fn in item_checks(client, args.data, dataset, split, item):
            label = f"{dataset}/{split}/{item}: {name}"
            try:
                fn()
            except CheckFailed as e:
                failed += 1
                print(f"FAIL {label}\n       {e}", flush=True)
            except Exception:  # a crash in a check is a failure of that check, not of the run
                failed += 1
                print(f"FAIL {label}\n{traceback.format_exc()}", flush=True)
            else:
                passed += 1
                print(f"ok   {label}", flush=True)
    print(f"python checks: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
