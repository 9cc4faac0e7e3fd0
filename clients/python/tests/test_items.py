"""ItemDataset against the real binary: the listing, the image route's bytes, volumes, errors,
API keys."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import urllib3

import medserve
from conftest import start_medserve, stop

SPLIT = "/v1/datasets/medmnist/splits/train"


def get(url, path):
    r = urllib3.request("GET", url + path, retries=False)
    assert r.status == 200, (path, r.status, r.data[:300])
    return r


def test_length_and_ids_equal_the_listing(medserve_url):
    ds = medserve.ItemDataset(medserve_url, "medmnist", "train")
    listing = json.loads(get(medserve_url, SPLIT + "/items?limit=1000").data)
    assert len(ds) == listing["total"] == len(listing["items"]) == 72
    assert ds.ids == [it["id"] for it in listing["items"]]


def test_listing_follows_pages(medserve_url):
    client = medserve.Client(medserve_url)
    whole = medserve.list_items(client, "medmnist", "train")
    paged = medserve.list_items(client, "medmnist", "train", page=7)  # 11 pages, the last short
    assert paged == whole and len(whole) == 72
    one_class = medserve.list_items(client, "medmnist", "train", "HeadCT", page=5)
    assert [it["id"] for it in one_class] == [it["id"] for it in whole if it["class"] == "HeadCT"]
    ds = medserve.ItemDataset(medserve_url, "medmnist", "train", class_="HeadCT")
    assert len(ds) == 12 and {ds[i][1] for i in range(len(ds))} == {5}


def test_items_equal_the_image_route(medserve_url):
    params = "size=32,48&mode=bilinear&scale=minmax"
    ds = medserve.ItemDataset(medserve_url, "medmnist", "train", size=(32, 48), mode="bilinear",
                              scale="minmax")
    classes = [c["name"] for c in json.loads(get(medserve_url, "/v1/datasets/medmnist").data)["classes"]]
    listing = json.loads(get(medserve_url, SPLIT + "/items?limit=1000").data)["items"]
    for i, item in enumerate(listing):
        image, label = ds[i]
        want = np.load(io.BytesIO(get(
            medserve_url, f"{SPLIT}/items/{item['id']}/image?format=npy&{params}").data))
        assert image.dtype == np.float32 and image.shape == (1, 32, 48)
        assert image.tobytes() == want.tobytes()
        assert label == classes.index(item["class"]) == item["label"]
        assert isinstance(label, int)
    assert ds[-1][0].tobytes() == ds[len(ds) - 1][0].tobytes()
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_segmentation_items_are_volume_npz(medserve_url):
    ds = medserve.ItemDataset(medserve_url, "Task09_Spleen", "train", size=(32, 32, 16),
                              a_min=-1000, a_max=1000)
    assert ds.kind == "segmentation" and len(ds) >= 1
    image, mask = ds[0]
    r = get(medserve_url, f"/v1/datasets/Task09_Spleen/splits/train/items/{ds.ids[0]}"
                          "/volume.npz?part=both&size=32,32,16&a_min=-1000&a_max=1000")
    z = np.load(io.BytesIO(r.data))
    assert image.shape == (1, 32, 32, 16) and image.dtype == np.float32
    assert mask.shape == (1, 32, 32, 16) and mask.dtype == np.uint8
    assert image.tobytes() == z["image"].tobytes() and mask.tobytes() == z["label"].tobytes()


def test_4xx_raise_with_the_problem_detail(medserve_url):
    with pytest.raises(medserve.MedserveError) as e:
        medserve.ItemDataset(medserve_url, "nope", "train")
    assert e.value.status == 404 and e.value.code == "dataset-not-found"
    assert "nope" in str(e.value) and e.value.detail in str(e.value)
    ds = medserve.ItemDataset(medserve_url, "medmnist", "train", size=64)
    with pytest.raises(medserve.MedserveError) as e:
        ds[0]
    assert e.value.status == 400 and e.value.code == "invalid-parameter"
    assert e.value.problem["parameter"] == "size" and "size" in str(e.value)


def test_api_key_from_the_environment(medserve_bin, data_dir, tmp_path, monkeypatch):
    key = "client-test-0123456789abcdef"
    proc, url = start_medserve(medserve_bin, data_dir, tmp_path / "keyed.log", "--api-keys", key)
    try:
        monkeypatch.delenv("MEDSERVE_API_KEY", raising=False)
        with pytest.raises(medserve.MedserveError) as e:
            medserve.ItemDataset(url, "medmnist", "train")
        assert e.value.status == 401 and e.value.code == "unauthorized"
        monkeypatch.setenv("MEDSERVE_API_KEY", "wrong-key-0123456789abcdef")
        with pytest.raises(medserve.MedserveError) as e:
            medserve.ItemDataset(url, "medmnist", "train")
        assert e.value.status == 403
        monkeypatch.setenv("MEDSERVE_API_KEY", key)
        ds = medserve.ItemDataset(url, "medmnist", "train")
        assert len(ds) == 72 and ds[0][0].shape == (1, 64, 64)
    finally:
        stop(proc)
