"""The gzip seek index medserve writes (`medserve gzindex`, src/imaging/gzindex/) against
indexed_gzip, the Python library that defined its file format: for the same spacing the two
indexes are byte-identical, and indexed_gzip reading through medserve's index returns the
same bytes as a plain gunzip at random offsets. Files: gzip levels 1, 6 and 9 of CT-like
int16 data made here, and a `.nii.gz` medserve itself wrote (flate2).

    python tools/check_gzidx.py --bin target/debug/medserve --work DIR [--data SAMPLE_DIR]
"""

import argparse
import gzip
import pathlib
import random
import subprocess
import sys

import indexed_gzip
import numpy as np


def ct_like(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0:48, 0:160, 0:160]
    body = ((x - 80) ** 2 + (y - 80) ** 2 < 60**2) * 1040 - 1000
    noise = rng.normal(0, 25, body.shape)
    return (body + noise + 3 * z).astype("<i2").tobytes()


def check(binary: str, path: pathlib.Path, spacing: int, work: pathlib.Path) -> int:
    ours = work / f"{path.name}.{spacing}.medserve.gzidx"
    theirs = work / f"{path.name}.{spacing}.indexed_gzip.gzidx"
    subprocess.run(
        [binary, "gzindex", str(path), str(ours), "--spacing", str(spacing)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    with indexed_gzip.IndexedGzipFile(str(path), spacing=spacing) as f:
        f.build_full_index()
        f.export_index(str(theirs))
    a, b = ours.read_bytes(), theirs.read_bytes()
    if a != b:
        print(f"FAIL {path.name} spacing {spacing}: indexes differ ({len(a)} vs {len(b)} bytes)")
        return 1
    data = gzip.decompress(path.read_bytes())
    rng = random.Random(spacing)
    failed = 0
    with indexed_gzip.IndexedGzipFile(str(path), spacing=spacing) as f:
        f.import_index(str(ours))
        for _ in range(40):
            at = rng.randrange(len(data))
            n = rng.randrange(1, 300_000)
            f.seek(at)
            if f.read(n) != data[at : at + n]:
                print(f"FAIL {path.name} spacing {spacing}: read at {at} differs")
                failed += 1
    points = int.from_bytes(a[31:35], "little")
    print(f"ok   {path.name} spacing {spacing}: identical indexes ({points} points), 40 reads equal")
    return failed


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True, type=pathlib.Path)
    ap.add_argument("--data", type=pathlib.Path, help="medserve sample data folder")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    files = []
    raw = ct_like(1)
    for level in (1, 6, 9):
        p = args.work / f"ct_level{level}.gz"
        p.write_bytes(gzip.compress(raw, compresslevel=level, mtime=0))
        files.append(p)
    if args.data:
        files.append(args.data / "Task09_Spleen" / "imagesTr" / "spleen_10.nii.gz")
    failed = 0
    for p in files:
        for spacing in (64 << 10, 512 << 10):
            failed += check(args.bin, p, spacing, args.work)
    print(f"gzip index checks: {len(files) * 2 - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
