#!/usr/bin/env python3
"""Reads what `medserve export` writes the way training code does, without medserve.

Exports three datasets of the sample data with the real binary (2D classification with a
chain, a Decathlon task and a subject-folder set with 3D chains), then for every shard:
  * the `webdataset` package iterates it (`WebDataset(...).decode()`), and plain `tarfile` +
    numpy read it too;
  * every item's arrays equal, exactly, the `.npy` the running server answers for the same
    item and parameters (`/image?format=npy&...`, `/volume?format=npy&part=...&...`);
  * `.cls` is the item's class index, `.json` names the item and its source objects;
  * sizes and SHA-256 equal the manifest's, which counts every item of every split once.
Run by scripts/check-python.sh:

    python tools/check_export.py --bin target/debug/medserve --data DIR --work DIR --base URL

Prints one line per check and a closing `export checks: N passed, M failed`; exits 1 on any
failure.
"""

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import traceback
import urllib.parse
import urllib.request

import numpy as np
import webdataset as wds

EXPORTS = [
    # (dataset, params, route, shard MB)
    ("medmnist", ["size=32,32", "mode=bilinear"], "image", 1),
    ("Task09_Spleen", ["size=32,32,12", "a_min=-100", "a_max=200", "b_min=0", "b_max=1", "clip=true"], "volume", 1),
    ("segmentation", ["size=24,24,8", "flip=0"], "volume", 1),
]

passed = 0
failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"  ok   {name}")
    else:
        failed += 1
        print(f"  FAIL {name} {detail}")


def get_npy(url):
    with urllib.request.urlopen(url, timeout=60) as r:
        return np.load(io.BytesIO(r.read()), allow_pickle=False)


def item_url(base, ds, split, item, route, query):
    q = urllib.parse.urlencode(query, safe=",")
    return f"{base}/v1/datasets/{ds}/splits/{split}/items/{urllib.parse.quote(item)}/{route}?{q}"


def run_export(args, ds, params, mb, out):
    cmd = [args.bin, "export", "--data", args.data, "--to", out, "--dataset", ds,
           "--shard-mb", str(mb), *params]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    check(f"{ds}: `medserve export` exits 0", r.returncode == 0, r.stderr[-2000:])
    return r.returncode == 0


def check_export(args, ds, params, route, mb):
    out = os.path.join(args.work, ds)
    if not run_export(args, ds, params, mb, out):
        return
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    check(f"{ds}: manifest complete", manifest["complete"] is True)
    query = dict(p.split("=", 1) for p in params)
    shards = [s for sp in manifest["splits"].values() for s in sp["shards"]]
    check(f"{ds}: several shards or splits", len(shards) >= 2, len(shards))
    ids_seen = {}
    for split, sp in manifest["splits"].items():
        listed = json.load(urllib.request.urlopen(
            f"{args.base}/v1/datasets/{ds}/splits/{split}/items?limit=1000"))
        want = sorted(i["id"] for i in listed["items"])
        got = sorted(m["id"] for s in sp["shards"] for m in s["items"])
        check(f"{ds}/{split}: every item exported once ({len(got)})", want == got and sp["items"] == len(got))
        for s in sp["shards"]:
            path = os.path.join(out, s["name"])
            data = open(path, "rb").read()
            check(f"{s['name']}: size and sha256 as in the manifest",
                  len(data) == s["size"] and hashlib.sha256(data).hexdigest() == s["sha256"])
            # webdataset, as a training loop would use it.
            samples = list(wds.WebDataset(path, shardshuffle=False, empty_check=False).decode())
            check(f"{s['name']}: webdataset reads {len(s['items'])} samples in manifest order",
                  [x["__key__"] for x in samples] == [m["key"] for m in s["items"]])
            # tarfile + numpy, and each item's ranges in the manifest.
            with tarfile.open(path) as tf:
                members = {m.name: m for m in tf.getmembers()}
                for m, sample in zip(s["items"], samples):
                    img_member = members.get(m["key"] + ".image.npy")
                    if "image" in m and img_member is not None:
                        raw = tf.extractfile(img_member).read()
                        off, ln = m["image"]
                        ranged = data[off:off + ln]
                        ids_seen[(split, m["id"])] = True
                        q = dict(query, format="npy")
                        if route == "volume":
                            q["part"] = "image"
                        served = get_npy(item_url(args.base, ds, split, m["id"], route, q))
                        arr = np.load(io.BytesIO(raw))
                        ok = (raw == ranged and arr.dtype == served.dtype
                              and arr.shape == served.shape and np.array_equal(arr, served)
                              and np.array_equal(sample["image.npy"], served))
                        check(f"{ds}/{split}/{m['id']}: image equals the HTTP route's "
                              f"{served.dtype}{list(served.shape)}", ok)
                    meta = sample["json"]
                    check(f"{ds}/{split}/{m['id']}: json names the item and its sources",
                          meta["id"] == m["id"] and meta["split"] == split
                          and [o["key"] for o in meta["source"]] == [o["key"] for o in m["source"]])
                    if route == "image":
                        check(f"{ds}/{split}/{m['id']}: cls is the class index {m['class']}",
                              sample["cls"] == m["class"]
                              and manifest["dataset"]["classes"][m["class"]] == meta["class"])
                    if m.get("label"):
                        q = dict(query, format="npy", part="label")
                        served = get_npy(item_url(args.base, ds, split, m["id"], route, q))
                        off, ln = m["label"]
                        arr = np.load(io.BytesIO(data[off:off + ln]))
                        check(f"{ds}/{split}/{m['id']}: label equals the HTTP route's "
                              f"{served.dtype}{list(served.shape)}",
                              arr.dtype == served.dtype and np.array_equal(arr, served)
                              and np.array_equal(sample["label.npy"], served))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--base", required=True)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    for ds, params, route, mb in EXPORTS:
        print(f"{ds}: export {' '.join(params)}")
        try:
            check_export(args, ds, params, route, mb)
        except Exception:
            traceback.print_exc()
            check(f"{ds}: no exception", False)
    print(f"export checks: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
