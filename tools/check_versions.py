#!/usr/bin/env python3
"""Object versions on a versioned S3 bucket (issue 13 §2), against a real S3-protocol server
that keeps versions: moto's server (`moto_server`, started here on 127.0.0.1 and stopped by
its PID), with the real medserve binary serving the bucket.

The bucket holds the workshop's tree: `classification/raw/<date>/...` in two dated versions
and `segmentation/raw/...`. Then one image and one mask are overwritten, so their keys have
two stored versions each. Checked:
  * the catalog over S3: the dated folders are versions of `classification`;
  * without `version_id` an item serves the latest bytes; with `version_id=<first>` it serves
    the first version's, exactly what the same bytes stored under another key give; its
    metadata names that version (`version_id`, size, ETag), its ETag differs from the
    latest's, and asking again is answered from the cache (no new GET);
  * `label_version_id` reads the mask's first version (the volume route's label part);
  * an id the object does not have is 404 `object-version-not-found`; `label_version_id` on an
    item without a mask is 404 `label-not-found`; a malformed id is 400.
Run by scripts/check-python.sh:

    python tools/check_versions.py --bin target/debug/medserve --data SAMPLE_DIR --work DIR

Prints one line per check and a closing `versions checks: N passed, M failed`; exits 1 on any
failure.
"""

import argparse
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request

import boto3
import numpy as np

BUCKET = "workshop"
OLD, NEW = "2026-11-20", "2026-11-27"

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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url, proc, what, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready at {url}")


def fetch(url):
    """(status, headers, body) without raising on 4xx."""
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def npy(body):
    return np.load(io.BytesIO(body), allow_pickle=False)


def metric(base, name):
    _, _, body = fetch(f"{base}/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def stop(proc):
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--data", required=True, help="medserve's sample data")
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    moto = medserve = None
    env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
               AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    try:
        port = free_port()
        moto_bin = os.path.join(os.path.dirname(sys.executable), "moto_server")
        moto = subprocess.Popen([moto_bin, "-H", "127.0.0.1", "-p", str(port)],
                                stdout=open(os.path.join(args.work, "moto.log"), "wb"),
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        endpoint = f"http://127.0.0.1:{port}"
        wait_ready(f"{endpoint}/moto-api/", moto, "moto_server")
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})

        data = args.data
        read = lambda rel: open(os.path.join(data, rel), "rb").read()
        cls = sorted(os.listdir(os.path.join(data, "medmnist/train/CXR")))
        first, second = read(f"medmnist/train/CXR/{cls[0]}"), read(f"medmnist/train/CXR/{cls[1]}")
        root = f"classification/raw/{NEW}/train/CXR"
        put = lambda key, body: s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        v1 = put(f"{root}/item.png", first)["VersionId"]
        put(f"{root}/same-as-first.png", first)
        put(f"{root}/same-as-second.png", second)
        put(f"classification/raw/{OLD}/train/CXR/item.png", first)
        put("classification/artifacts/model.pt", b"weights")
        subj = "segmentation/raw/train/subject_001"
        put(f"{subj}/img.nii.gz", read("segmentation/train/subject_001/img.nii.gz"))
        label_first = read("segmentation/train/subject_001/label.nii.gz")
        label_second = read("segmentation/train/subject_002/label.nii.gz")
        l1 = put(f"{subj}/label.nii.gz", label_first)["VersionId"]
        subj2 = "segmentation/raw/train/subject_002"
        put(f"{subj2}/img.nii.gz", read("segmentation/train/subject_001/img.nii.gz"))
        put(f"{subj2}/label.nii.gz", label_first)
        # The overwrites: each key now has two stored versions.
        v2 = put(f"{root}/item.png", second)["VersionId"]
        l2 = put(f"{subj}/label.nii.gz", label_second)["VersionId"]
        check("the bucket keeps two versions of the image and of the mask",
              v1 != v2 and l1 != l2 and v1 and l1, f"{v1} {v2} {l1} {l2}")

        mport = free_port()
        base = f"http://127.0.0.1:{mport}"
        medserve = subprocess.Popen(
            [args.bin, "serve", "--data", f"s3://{BUCKET}/", "--s3-endpoint", endpoint,
             "--s3-region", "us-east-1", "--listen", f"127.0.0.1:{mport}"],
            env=env, stdout=open(os.path.join(args.work, "medserve.log"), "wb"),
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_ready(f"{base}/readyz", medserve, "medserve")

        _, _, body = fetch(f"{base}/v1/datasets/classification/versions")
        v = json.loads(body)
        check("over S3 the dated folders are versions of `classification`",
              v["newest"] == NEW and [d["version"] for d in v["versions"]] == [OLD, NEW], v)
        _, _, body = fetch(f"{base}/v1/datasets")
        names = [d["name"] for d in json.loads(body)]
        check("artifacts are not a dataset", names == [f"classification@{NEW}", "segmentation"],
              names)

        item = f"{base}/v1/datasets/classification/splits/train/items"
        img = lambda i, q="": fetch(f"{item}/{i}/image?format=npy{q}")
        latest, old, again = img("CXR~item"), img("CXR~item", f"&version_id={v1}"), None
        want_old, want_new = img("CXR~same-as-first"), img("CXR~same-as-second")
        check("without version_id the latest bytes are served",
              latest[0] == 200 and np.array_equal(npy(latest[2]), npy(want_new[2])))
        check("version_id serves the first version's pixels exactly",
              old[0] == 200 and np.array_equal(npy(old[2]), npy(want_old[2])),
              f"status {old[0]}: {old[2][:200]!r}")
        check("the two versions differ", not np.array_equal(npy(old[2]), npy(latest[2])))
        check("their ETags differ",
              old[1].get("etag") and old[1].get("etag") != latest[1].get("etag"),
              (old[1].get("etag"), latest[1].get("etag")))
        gets = metric(base, "medserve_storage_get_total")
        again = img("CXR~item", f"&version_id={v1}")
        check("the pinned version is cached: the same bytes and ETag, no new GET",
              again[2] == old[2] and again[1].get("etag") == old[1].get("etag")
              and metric(base, "medserve_storage_get_total") == gets)
        _, _, body = fetch(f"{item}/CXR~item?version_id={v1}")
        o = json.loads(body)["objects"][0]
        head = s3.head_object(Bucket=BUCKET, Key=f"{root}/item.png", VersionId=v1)
        check("the item's metadata names the version read",
              o.get("version_id") == v1 and o["size"] == len(first)
              and o["version"] == head["ETag"].strip('"'), o)

        vol = f"{base}/v1/datasets/segmentation/splits/train/items"
        mask = lambda i, q="": fetch(f"{vol}/{i}/volume?format=npy&part=label{q}")
        m_latest, m_old = mask("subject_001"), mask("subject_001", f"&label_version_id={l1}")
        m_want = mask("subject_002")
        check("label_version_id serves the mask's first version",
              m_old[0] == 200 and np.array_equal(npy(m_old[2]), npy(m_want[2])),
              f"status {m_old[0]}: {m_old[2][:200]!r}")
        check("and the latest mask is the other one",
              m_latest[0] == 200 and not np.array_equal(npy(m_latest[2]), npy(m_old[2])))

        status, _, body = img("CXR~item", "&version_id=no-such-version")
        check("an id the object does not have is 404 object-version-not-found",
              status == 404 and b"object-version-not-found" in body, f"{status} {body[:300]!r}")
        status, _, body = img("CXR~item", f"&label_version_id={v1}")
        check("label_version_id on an item without a mask is 404 label-not-found",
              status == 404 and b"label-not-found" in body, f"{status} {body[:300]!r}")
        status, _, body = img("CXR~item", "&version_id=a%20b")
        check("a malformed id is 400", status == 400 and b"version_id" in body,
              f"{status} {body[:300]!r}")
    except Exception:
        traceback.print_exc()
        check("the run completed", False)
    finally:
        stop(medserve)
        stop(moto)
    print(f"versions checks: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
