"""Trains a small CNN on a medserve classification split, the seed's 2D pipeline entirely
served by medserve:

    Compose([LoadImage(image_only=True), EnsureChannelFirst(), Resize((64, 64)),
             ScaleIntensity(), RandFlip(prob=0.5), RandRotate(range_x=15, prob=0.5)])

is the batch query ``size=64,64 scale=minmax rand_flip=0.5 rand_rotate=0.2618
rand_rotate_prob=0.5`` with a ``seed`` (the draws are a pure function of seed, epoch and item,
so every worker and every rerun sees the same augmentation).

**range_x is in radians.** The seed's ``RandRotate(range_x=15)`` asks MONAI for angles up to
15 RADIANS (about 859 degrees: any angle at all, several turns). It was almost certainly
meant as 15 degrees, 0.2618 rad, which is what this example passes. medserve does not
silently reinterpret: ``rand_rotate=15`` is served as 15 radians, exactly as MONAI would do.

    pip install ./clients/python torch
    medserve serve &            # or: cargo run --release (the sample data)
    python clients/python/examples/train_classifier.py --url http://127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import math

import torch
from torch.utils.data import DataLoader

import medserve

SEED_PIPELINE = {
    "size": (64, 64),  # Resize((64, 64)), area (MONAI's default mode)
    "scale": "minmax",  # ScaleIntensity()
    "rand_flip": 0.5,  # RandFlip(prob=0.5), all spatial axes
    # RandRotate(range_x=15, prob=0.5): 15 is radians in MONAI (~859 degrees); we pass the
    # 15 degrees it almost certainly meant. Pass 15 to reproduce the seed literally.
    "rand_rotate": math.radians(15),  # 0.2618
    "rand_rotate_prob": 0.5,
}


def small_cnn(classes: int) -> torch.nn.Module:
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 8, 5, stride=2, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # 64 -> 16
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 16 -> 8
        nn.Flatten(), nn.Linear(16 * 8 * 8, classes),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--dataset", default="medmnist")
    ap.add_argument("--split", default="train")
    ap.add_argument("--val-split", default="val")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=0.01)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    train = medserve.BatchLoader(args.url, args.dataset, args.split, args.batch_size,
                                 seed=args.seed, **SEED_PIPELINE)
    val = medserve.BatchLoader(args.url, args.dataset, args.val_split, args.batch_size,
                               size=(64, 64), scale="minmax")
    classes = len(medserve.ItemDataset(args.url, args.dataset, args.split).classes)
    print(f"{args.dataset}/{args.split}: {train.plan['samples']} items, {len(train)} batches "
          f"of {args.batch_size} per epoch, {classes} classes")

    model = small_cnn(classes)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    for epoch in range(args.epochs):
        train.set_epoch(epoch)  # a new order and new augmentation draws
        model.train()
        total, n = 0.0, 0
        for batch in DataLoader(train, batch_size=None, num_workers=args.workers):
            loss = torch.nn.functional.cross_entropy(model(batch["image"]), batch["label"],
                                                     reduction="none")
            loss = loss[~batch["pad"]].mean()  # padded repeats (drop_last=False) don't count
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * int((~batch["pad"]).sum())
            n += int((~batch["pad"]).sum())
        model.eval()
        correct = seen = 0
        with torch.no_grad():
            for batch in DataLoader(val, batch_size=None, num_workers=args.workers):
                keep = ~batch["pad"]
                pred = model(batch["image"][keep]).argmax(1)
                correct += int((pred == batch["label"][keep]).sum())
                seen += int(keep.sum())
        print(f"epoch {epoch}: loss {total / n:.4f}, val accuracy {correct}/{seen}", flush=True)


if __name__ == "__main__":
    main()
