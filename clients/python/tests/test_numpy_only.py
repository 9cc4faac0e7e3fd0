"""Without torch: the package imports, ItemDataset and BatchLoader give numpy arrays.

Runs in a child interpreter in which `import torch` fails (as where torch is not installed)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import sys
    sys.modules["torch"] = None  # `import torch` raises ImportError from here on
    import numpy as np
    import medserve

    url = sys.argv[1]
    assert not medserve.HAVE_TORCH
    loader = medserve.BatchLoader(url, "medmnist", "train", 16, seed=3, rand_flip=0.5,
                                  size=(32, 32))
    assert not any(c.__module__.startswith("torch") for c in type(loader).__mro__)
    batches = list(loader)
    assert [b["batch"] for b in batches] == list(range(len(loader))) == list(range(5))
    b = batches[0]
    assert isinstance(b["image"], np.ndarray) and b["image"].dtype == np.float32
    assert b["image"].shape == (16, 1, 32, 32)
    assert b["label"].dtype == np.int64 and b["pad"].dtype == np.bool_
    assert b["rand_flip"].dtype == np.bool_ and b["id"].dtype.kind == "U"
    ids = [i for b in batches for i, p in zip(b["id"], b["pad"]) if not p]
    assert sorted(ids) == sorted(medserve.ItemDataset(url, "medmnist", "train").ids)
    state = loader.state_dict(after=batches[1])
    again = medserve.BatchLoader(url, "medmnist", "train", 16, seed=3, rand_flip=0.5,
                                 size=(32, 32))
    again.load_state_dict(state)
    rest = list(again)
    assert [r["image"].tobytes() for r in rest] == [b["image"].tobytes() for b in batches[2:]]
    image, label = medserve.ItemDataset(url, "medmnist", "train")[0]
    assert image.shape == (1, 64, 64) and label == 0
    print("numpy-only ok")
""")


def test_numpy_only(url):
    r = subprocess.run([sys.executable, "-c", CHILD, url], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "numpy-only ok" in r.stdout
