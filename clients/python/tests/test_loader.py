"""BatchLoader with real torch and a real DataLoader (workers are forked processes) against
medserve's batch routes: coverage across ranks and workers, exact resumption, elastic
world size, set_epoch, errors, POST .../batch, and a model that learns."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader  # noqa: E402

import medserve  # noqa: E402

N = 72  # medmnist/train in the sample data
AUG = {"rand_flip": 0.5, "rand_rotate": 0.26, "size": (32, 32)}


def run(loader, workers=2):
    """Every batch of one iteration through a real DataLoader."""
    return list(DataLoader(loader, batch_size=None, num_workers=workers))


def key(batch):
    """Everything a batch carries, as bytes, to compare batches exactly."""
    out = []
    for k in sorted(batch):
        v = batch[k]
        out.append((k, v.numpy().tobytes() if isinstance(v, torch.Tensor) else repr(v)))
    return tuple(out)


def test_two_ranks_two_workers_cover_the_epoch_exactly_once(url):
    seen = []
    for rank in range(2):
        loader = medserve.BatchLoader(url, "medmnist", "train", 6, seed=11, epoch=3,
                                      rank=rank, world_size=2, **AUG)
        assert len(loader) == 6 and loader.plan["padded"] == 0
        batches = run(loader)
        assert [b["batch"] for b in batches] == list(range(6))  # in order through 2 workers
        assert all(b["epoch"] == 3 for b in batches)
        for b in batches:
            assert b["image"].shape == (6, 1, 32, 32) and b["image"].dtype == torch.float32
            assert b["label"].dtype == torch.int64 and b["pad"].dtype == torch.bool
            assert b["rand_flip"].dtype == torch.bool and b["rand_rotate"].dtype == torch.float64
            assert not b["pad"].any()
            seen.extend(b["id"])
    assert len(seen) == N and len(set(seen)) == N
    assert set(seen) == set(medserve.ItemDataset(url, "medmnist", "train").ids)


def test_drop_last_false_pads_and_flags(url):
    ids, padded = [], []
    for rank in range(2):
        loader = medserve.BatchLoader(url, "medmnist", "train", 8, seed=5, rank=rank,
                                      world_size=2, drop_last=False)
        assert len(loader) == 5 and loader.plan["padded"] == 5 * 16 - N
        for b in run(loader):
            for i, p in zip(b["id"], b["pad"].tolist()):
                (padded if p else ids).append(i)
    assert len(ids) == N and len(set(ids)) == N  # the non-padded samples: each item once
    assert len(padded) == 8 and set(padded) <= set(ids)


def test_drop_last_true_drops_the_tail(url):
    ids = []
    for rank in range(2):
        loader = medserve.BatchLoader(url, "medmnist", "train", 8, seed=5, rank=rank,
                                      world_size=2, drop_last=True)
        assert len(loader) == 4 and loader.plan["padded"] == 0
        for b in run(loader):
            assert not b["pad"].any()
            ids.extend(b["id"])
    assert len(ids) == 64 and len(set(ids)) == 64


def test_labels_are_the_items_classes(url):
    ds = medserve.ItemDataset(url, "medmnist", "train")
    label = {i: ds.label(k) for k, i in enumerate(ds.ids)}
    for b in run(medserve.BatchLoader(url, "medmnist", "train", 12, seed=2)):
        assert b["label"].tolist() == [label[i] for i in b["id"]]


def test_resume_with_workers_is_byte_identical(url):
    def loader():
        return medserve.BatchLoader(url, "medmnist", "train", 5, seed=7, rank=1, world_size=2,
                                    **AUG)

    full = loader()
    full.set_epoch(2)
    whole = run(full)
    assert len(whole) == 8

    # Train on 3 batches of epoch 2 through a DataLoader with 2 workers, then stop.
    first = loader()
    first.set_epoch(2)
    got = []
    for batch in DataLoader(first, batch_size=None, num_workers=2):
        got.append(batch)
        if len(got) == 3:
            state = first.state_dict(after=batch)
            break
    assert state == {"epoch": 2, "batch": 3, "batch_size": 5, "seed": 7, "world_size": 2,
                     "rank": 1}
    assert medserve.state_after(first, got[-1]) == state

    # A new process would build a new loader: load the state, go on.
    again = loader()
    again.load_state_dict(state)
    again.set_epoch(state["epoch"])
    rest = run(again)
    assert [b["batch"] for b in rest] == list(range(3, 8))
    assert [key(b) for b in got + rest] == [key(b) for b in whole]
    # The next epoch starts from batch 0 again.
    again.set_epoch(3)
    assert [b["batch"] for b in run(again)] == list(range(8))


def test_resume_in_process_from_the_counter(url):
    """Without DataLoader workers, state_dict() alone knows what was handed out."""
    loader = medserve.BatchLoader(url, "medmnist", "train", 16, seed=9, epoch=1, **AUG)
    whole = [key(b) for b in loader]
    head = []
    for batch in DataLoader(loader, batch_size=None, num_workers=0):
        head.append(key(batch))
        if len(head) == 2:
            break
    state = loader.state_dict()
    assert (state["epoch"], state["batch"]) == (1, 2)
    again = medserve.BatchLoader(url, "medmnist", "train", 16, seed=9, **AUG)
    again.load_state_dict(state)
    assert head + [key(b) for b in again] == whole
    # After an epoch's last batch the position is the next epoch's first.
    for _ in loader:
        pass
    assert loader.state_dict()["epoch"] == 2 and loader.state_dict()["batch"] == 0


def test_world_size_2_to_1_keeps_the_order(url):
    """W=2, B=4 for 2 global steps, then W=1, B=8 from the same global step: the samples
    of every later step are the same, in the same order."""
    ranks = [run(medserve.BatchLoader(url, "medmnist", "train", 4, seed=21, epoch=4, rank=r,
                                      world_size=2, **AUG)) for r in range(2)]
    steps = len(ranks[0])
    assert steps == 9
    state = medserve.BatchLoader(url, "medmnist", "train", 4, seed=21, epoch=4, rank=0,
                                 world_size=2).state_dict(after=ranks[0][1])
    single = medserve.BatchLoader(url, "medmnist", "train", 8, seed=21, **AUG)
    single.load_state_dict(state)
    single.set_epoch(state["epoch"])
    after = run(single)
    assert [b["batch"] for b in after] == list(range(2, steps))
    for b in after:
        g = b["batch"]
        r0, r1 = ranks[0][g], ranks[1][g]
        assert b["id"] == r0["id"] + r1["id"]
        for k in ("image", "label", "pad", "rand_flip", "rand_rotate"):
            assert torch.cat([r0[k], r1[k]]).numpy().tobytes() == b[k].numpy().tobytes(), k
    # A position that is not a whole number of the new steps is refused.
    odd = dict(state, batch=1)
    with pytest.raises(ValueError, match="whole number"):
        medserve.BatchLoader(url, "medmnist", "train", 8, seed=21).load_state_dict(
            dict(odd, batch_size=4, world_size=1))
    with pytest.raises(ValueError, match="seed"):
        medserve.BatchLoader(url, "medmnist", "train", 8, seed=22).load_state_dict(state)


def test_epochs_and_seeds(url):
    def ids(seed, epoch):
        loader = medserve.BatchLoader(url, "medmnist", "train", 24, seed=seed)
        loader.set_epoch(epoch)
        return [i for b in loader for i in b["id"]]

    listing = medserve.ItemDataset(url, "medmnist", "train").ids
    no_seed = [i for b in medserve.BatchLoader(url, "medmnist", "train", 24) for i in b["id"]]
    assert no_seed == listing
    a = ids(1, 0)
    assert sorted(a) == sorted(listing) and a != listing
    assert ids(1, 0) == a
    assert ids(1, 1) != a and ids(2, 0) != a


def test_random_transforms_are_reported(url):
    loader = medserve.BatchLoader(url, "medmnist", "train", 36, seed=3, rand_flip=0.5,
                                  rand_rotate=0.26, rand_rotate_prob=0.5)
    flips = torch.cat([b["rand_flip"] for b in loader])
    angles = torch.cat([b["rand_rotate"] for b in loader])
    assert 10 < int(flips.sum()) < 62
    fired = ~torch.isnan(angles)
    assert 10 < int(fired.sum()) < 62
    assert float(angles[fired].abs().max()) <= 0.26


def test_errors(url):
    loader = medserve.BatchLoader(url, "medmnist", "train", 16)
    with pytest.raises(medserve.MedserveError) as e:
        loader.fetch(len(loader))
    assert e.value.status == 404
    noseed = medserve.BatchLoader(url, "medmnist", "train", 16, rand_flip=0.5)
    with pytest.raises(medserve.MedserveError) as e:
        noseed.fetch(0)
    assert e.value.status == 400 and "seed" in str(e.value)
    with pytest.raises(ValueError):
        medserve.BatchLoader(url, "medmnist", "train", 16, rank=2, world_size=2)


def test_post_batch_by_ids(url):
    loader = medserve.BatchLoader(url, "medmnist", "train", 8, seed=4, epoch=1, **AUG)
    b = loader.fetch(2)
    z = medserve.fetch_items(url, "medmnist", "train", b["id"], seed=4, epoch=1, **AUG)
    assert list(z["id"]) == b["id"]
    for k in ("image", "label", "rand_flip", "rand_rotate"):
        assert z[k].tobytes() == b[k].numpy().tobytes(), k


def test_segmentation_batches(url):
    loader = medserve.BatchLoader(url, "Task09_Spleen", "train", 2, seed=1, size=(32, 32, 16),
                                  a_min=-1000, a_max=1000)
    batches = run(loader, workers=0)
    ds = medserve.ItemDataset(url, "Task09_Spleen", "train", size=(32, 32, 16), a_min=-1000,
                              a_max=1000)
    by_id = {i: k for k, i in enumerate(ds.ids)}
    for b in batches:
        assert b["image"].shape == (2, 1, 32, 32, 16) and b["label"].dtype == torch.uint8
        for j, i in enumerate(b["id"]):
            image, mask = ds[by_id[i]]
            assert b["image"][j].numpy().tobytes() == image.tobytes()
            assert b["label"][j].numpy().tobytes() == mask.tobytes()


def train_steps(url, seed, steps=20):
    torch.manual_seed(seed)
    # Keeps where things are (flatten, no global pooling): the classes of the sample data
    # differ by layout. On seeds 0-7 the last 5 steps' mean loss was 2.5-7.4% of the first 5's.
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 5, stride=2, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, 6))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    loader = medserve.BatchLoader(url, "medmnist", "train", 16, seed=seed, drop_last=True,
                                  **AUG)
    losses = []
    epoch = 0
    while len(losses) < steps:
        loader.set_epoch(epoch)
        for batch in DataLoader(loader, batch_size=None, num_workers=2):
            loss = torch.nn.functional.cross_entropy(model(batch["image"]), batch["label"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if len(losses) == steps:
                break
        epoch += 1
    return losses


@pytest.mark.parametrize("seed", [0, 1])
def test_training_loss_falls(url, seed):
    losses = train_steps(url, seed)
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert all(math.isfinite(x) for x in losses)
    assert last < 0.7 * first, (first, last, losses)


def test_counter_of_classes_is_balanced_per_epoch(url):
    labels = Counter()
    for b in medserve.BatchLoader(url, "medmnist", "train", 18, seed=8):
        labels.update(b["label"].tolist())
    assert labels == Counter({c: 12 for c in range(6)})


def test_item_dataset_draws_as_the_batches(url):
    """The image route's random parameters draw per (seed, epoch, item) as the batch route's:
    ItemDataset's items are the batch's samples."""
    loader = medserve.BatchLoader(url, "medmnist", "train", 12, seed=6, epoch=2, **AUG)
    ds = medserve.ItemDataset(url, "medmnist", "train", seed=6, **AUG)
    ds.set_epoch(2)
    index = {i: k for k, i in enumerate(ds.ids)}
    b = loader.fetch(1)
    assert b["rand_flip"].any() and (~torch.isnan(b["rand_rotate"])).any()
    for j, i in enumerate(b["id"]):
        image, label = ds[index[i]]
        assert image.tobytes() == b["image"][j].numpy().tobytes()
        assert label == int(b["label"][j])
    ds.set_epoch(3)
    assert any(ds[index[i]][0].tobytes() != b["image"][j].numpy().tobytes()
               for j, i in enumerate(b["id"]))


def test_example_trains(url):
    import pathlib
    import re
    import subprocess
    import sys

    example = pathlib.Path(__file__).parents[1] / "examples" / "train_classifier.py"
    r = subprocess.run([sys.executable, str(example), "--url", url, "--epochs", "3"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    losses = [float(x) for x in re.findall(r"^epoch \d+: loss ([0-9.]+)", r.stdout, re.M)]
    assert len(losses) == 3 and losses[-1] < 0.7 * losses[0], r.stdout


def test_segmentation_random_flips_as_the_volume_route(url):
    params = dict(size=(32, 32, 16), a_min=-1000, a_max=1000, rand_flip=0.5)
    loader = medserve.BatchLoader(url, "Task09_Spleen", "train", 1, seed=2, epoch=1, **params)
    ds = medserve.ItemDataset(url, "Task09_Spleen", "train", seed=2, epoch=1, **params)
    by_id = {i: k for k, i in enumerate(ds.ids)}
    flips = []
    for b in loader:
        image, mask = ds[by_id[b["id"][0]]]
        assert b["image"][0].numpy().tobytes() == image.tobytes()
        assert b["label"][0].numpy().tobytes() == mask.tobytes()
        flips.append(bool(b["rand_flip"][0]))
    assert len(flips) == len(ds)


def test_one_class(url):
    loader = medserve.BatchLoader(url, "medmnist", "train", 6, seed=1, class_="HeadCT")
    assert loader.plan["class"] == "HeadCT" and loader.plan["samples"] == 12
    batches = run(loader)
    assert len(batches) == 2 and all(b["label"].tolist() == [5] * 6 for b in batches)
    same = medserve.BatchLoader(url, "medmnist", "train", 6, seed=1, **{"class": "HeadCT"})
    assert [b["id"] for b in same] == [b["id"] for b in batches]


def test_item_dataset_in_a_dataloader(url):
    ds = medserve.ItemDataset(url, "medmnist", "train", size=(32, 32))
    assert isinstance(ds, torch.utils.data.Dataset)
    images, labels = [], []
    for image, label in DataLoader(ds, batch_size=10, num_workers=2, shuffle=False):
        assert image.dtype == torch.float32 and label.dtype == torch.int64
        images.append(image)
        labels.append(label)
    images, labels = torch.cat(images), torch.cat(labels)
    assert images.shape == (N, 1, 32, 32)
    assert labels.tolist() == [ds.label(i) for i in range(N)]
    assert images[7].numpy().tobytes() == ds[7][0].tobytes()
