"""`ItemDataset`: a split's items as a map-style dataset."""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import numpy as np

from ._http import Client, path_segment
from ._torch import MapBase


def split_path(dataset: str, split: str) -> str:
    return f"/v1/datasets/{path_segment(dataset)}/splits/{path_segment(split)}"


def list_items(client: Client, dataset: str, split: str, class_: Optional[str] = None,
               page: int = 1000) -> List[dict]:
    """Every item of a split (one class's with ``class_``), in listing order, following the
    pages of ``GET .../items`` (``offset``/``limit``; each page states ``total``)."""
    items: List[dict] = []
    offset = 0
    while True:
        doc = client.get_json(
            split_path(dataset, split) + "/items",
            {"class": class_, "offset": offset, "limit": page},
        )
        got = doc["items"]
        items.extend(got)
        offset += len(got)
        if not got or offset >= doc["total"]:
            return items


class ItemDataset(MapBase):
    """The items of one split of a dataset, in listing order, fetched one at a time.

    ``ds[i]`` is, for a classification dataset, ``(image, label)``: the item's image from
    ``GET .../items/{id}/image?format=npy`` (float32 ``(C, H, W)``) and its class index (the
    position of its class in ``GET /v1/datasets/{dataset}``'s ``classes``); for a
    segmentation dataset ``(image, mask)`` from ``GET .../items/{id}/volume.npz?part=both``
    (float32 ``(C, X, Y, Z)`` and uint8 ``(1, X, Y, Z)``; ``mask`` is None for an item without
    one). ``params`` are passed on as query parameters (``size=(64, 64)``, ``scale="minmax"``,
    ``a_min=-1000``, ...); random ones (``rand_flip``, ``rand_rotate``) need ``seed=`` and
    draw per ``epoch`` (``set_epoch``). ``class_`` keeps one class's items.

    A ``torch.utils.data.Dataset`` when torch is installed; arrays are numpy either way (the
    DataLoader's collate turns them into tensors).
    """

    def __init__(self, url: str, dataset: str, split: str, *, class_: Optional[str] = None,
                 api_key: Optional[str] = None, client: Optional[Client] = None, **params: Any):
        self.client = client or Client(url, api_key=api_key)
        self.dataset = dataset
        self.split = split
        self.params = dict(params)
        # `class` is a keyword in Python: class_=, or **{"class": ...}.
        class_ = self.params.pop("class", None) if class_ is None else class_
        info = self.client.get_json(f"/v1/datasets/{path_segment(dataset)}")
        self.kind = info["kind"]
        self.classes: List[str] = [c["name"] for c in info.get("classes") or []]
        self._class_index = {name: i for i, name in enumerate(self.classes)}
        self.items = list_items(self.client, dataset, split, class_)
        self.ids: List[str] = [it["id"] for it in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """The epoch random parameters draw for (``epoch=`` on every request)."""
        self.params["epoch"] = int(epoch)

    def item_path(self, i: int) -> str:
        return split_path(self.dataset, self.split) + "/items/" + path_segment(self.ids[i])

    def label(self, i: int) -> int:
        """The class index of item ``i`` (classification)."""
        return self._class_index[self.items[i]["class"]]

    def __getitem__(self, i: int) -> Tuple[np.ndarray, Any]:
        n = len(self.items)
        if not -n <= i < n:
            raise IndexError(f"item {i} of {n}")
        i %= n
        if self.kind == "classification":
            image = self.client.get_npy(self.item_path(i) + "/image",
                                        {**self.params, "format": "npy"})
            return image, self.label(i)
        has_label = self.items[i].get("has_label", True)
        z = self.client.get_npz(self.item_path(i) + "/volume.npz",
                                {**self.params, "part": "both" if has_label else "image"})
        return z["image"], z.get("label")
