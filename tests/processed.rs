//! Serving what `medserve export` wrote: the export is listed as a `processed` dataset with its
//! chain, its items are answered from the shards by ranged reads (no decode) with the arrays
//! the raw dataset's routes answer for the same chain, batches over it equal the raw dataset's
//! batches byte for byte, and routes or parameters that need the raw data are refused clearly.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{app, app_on, assert_problem, get, metric, sample_dir};
use medserve::export::export;
use medserve::store::{LocalStore, ObjectStore};

async fn export_into(root: &Path, prefix: &str, dataset: &str, params: &[(&str, &str)]) {
    let dir = root.join(prefix);
    std::fs::create_dir_all(&dir).unwrap();
    let source: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(sample_dir()).unwrap());
    let dest: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(&dir).unwrap());
    let o = common::export_opts(dataset, params, 48 << 10);
    export(source, Some(dest), &o).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_is_served_as_a_processed_dataset() {
    let root = tempfile::tempdir().unwrap();
    export_into(
        root.path(),
        "processed/mednist32",
        "medmnist",
        &[("size", "32,32")],
    )
    .await;
    let spleen = [
        ("size", "32,32,12"),
        ("a_min", "-100"),
        ("a_max", "200"),
        ("b_min", "0"),
        ("b_max", "1"),
        ("clip", "true"),
    ];
    export_into(root.path(), "processed/spleen", "Task09_Spleen", &spleen).await;
    let (p, _) = app_on(root.path());
    let (raw, _) = app();

    let list = get(&p, "/v1/datasets").await.json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["processed-mednist32", "processed-spleen"], "{list}");
    let d = &list[0];
    assert_eq!(d["kind"], "processed");
    assert_eq!(d["layout"], "webdataset");
    assert_eq!(d["processed"]["chain"], "size=32,32");
    assert_eq!(d["processed"]["source_dataset"], "medmnist");
    assert_eq!(d["processed"]["source_kind"], "classification");
    let doc = get(&p, "/v1/datasets/processed-mednist32").await.json();
    let raw_doc = get(&raw, "/v1/datasets/medmnist").await.json();
    assert_eq!(doc["classes"], raw_doc["classes"]);
    assert_eq!(doc["splits"], raw_doc["splits"]);

    // Items: the raw route's arrays, read by range from the shards without a decode.
    let page = get(
        &p,
        "/v1/datasets/processed-mednist32/splits/val/items?limit=100",
    )
    .await
    .json();
    let raw_page = get(&raw, "/v1/datasets/medmnist/splits/val/items?limit=100")
        .await
        .json();
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&page), ids(&raw_page), "the raw dataset's order");
    let decodes = metric(&p, "medserve_decode_total").await;
    for id in ids(&page) {
        let a = get(
            &p,
            &format!("/v1/datasets/processed-mednist32/splits/val/items/{id}/image?format=npy"),
        )
        .await;
        let b = get(
            &raw,
            &format!("/v1/datasets/medmnist/splits/val/items/{id}/image?format=npy&size=32,32"),
        )
        .await;
        assert_eq!(a.status, 200);
        assert_eq!(a.body, b.body, "{id}");
        assert_eq!(a.header("x-shape"), "1,32,32");
        let etag = a.header("etag").to_string();
        let again = common::get_with(
            &p,
            &format!("/v1/datasets/processed-mednist32/splits/val/items/{id}/image?format=npy"),
            &[("if-none-match", &etag)],
        )
        .await;
        assert_eq!(again.status, 304);
    }
    assert_eq!(metric(&p, "medserve_decode_total").await, decodes);
    assert!(metric(&p, "medserve_storage_range_get_total").await >= 18);
    let first = ids(&page)[0].clone();
    let png = get(
        &p,
        &format!("/v1/datasets/processed-mednist32/splits/val/items/{first}/image"),
    )
    .await;
    assert_eq!(png.header("content-type"), "image/png");
    let item = get(
        &p,
        &format!("/v1/datasets/processed-mednist32/splits/val/items/{first}"),
    )
    .await
    .json();
    assert_eq!(item["kind"], "processed");
    assert!(item["objects"][0]["range"].is_array(), "{item}");

    // 3D: image and mask as the volume route answers them.
    for part in ["image", "label"] {
        let a = get(&p, &format!("/v1/datasets/processed-spleen/splits/train/items/spleen_10/volume?format=npy&part={part}")).await;
        let q: String = spleen.iter().map(|(k, v)| format!("&{k}={v}")).collect();
        let b = get(&raw, &format!("/v1/datasets/Task09_Spleen/splits/train/items/spleen_10/volume?format=npy&part={part}{q}")).await;
        assert_eq!(a.status, 200, "{part}");
        assert_eq!(a.body, b.body, "{part}");
    }
    let both = get(
        &p,
        "/v1/datasets/processed-spleen/splits/train/items/spleen_10/volume?format=npz&part=both",
    )
    .await;
    assert_eq!(both.status, 200);

    // Batches equal the raw dataset's with the export's chain, random draws included.
    for q in [
        "batch_size=5&seed=3",
        "batch_size=4&seed=1&rand_flip=0.5&rand_rotate=0.3",
    ] {
        let a = get(
            &p,
            &format!("/v1/datasets/processed-mednist32/splits/train/batches/1?{q}"),
        )
        .await;
        let b = get(
            &raw,
            &format!("/v1/datasets/medmnist/splits/train/batches/1?{q}&size=32,32"),
        )
        .await;
        assert_eq!(a.status, 200, "{q}");
        if a.body != b.body {
            std::fs::write("/tmp/exp/a.npz", &a.body).unwrap();
            std::fs::write("/tmp/exp/b.npz", &b.body).unwrap();
        }
        assert!(a.body == b.body, "{q}: the batches differ");
    }
    let q = "batch_size=2&seed=3&rand_flip=0.5";
    let a = get(
        &p,
        &format!("/v1/datasets/processed-spleen/splits/train/batches/0?{q}"),
    )
    .await;
    let b = get(&raw, &format!("/v1/datasets/Task09_Spleen/splits/train/batches/0?{q}&size=32,32,12&a_min=-100&a_max=200&b_min=0&b_max=1&clip=true")).await;
    assert_eq!(a.status, 200);
    assert!(a.body == b.body, "3D batches differ");

    // Every document of the exports as openapi.yaml describes it.
    for uri in [
        "/v1/datasets".to_string(),
        "/v1/datasets/processed-mednist32".to_string(),
        "/v1/datasets/processed-spleen".to_string(),
        "/v1/datasets/processed-spleen/splits/train/items".to_string(),
        "/v1/datasets/processed-spleen/splits/train/items/spleen_10".to_string(),
        format!("/v1/datasets/processed-mednist32/splits/val/items/{first}"),
        "/v1/datasets/processed-mednist32/splits/val/items".to_string(),
    ] {
        let r = get(&p, &uri).await;
        assert_eq!(r.status, 200, "{uri}");
        let v = common::schema::violations("get", &uri, &r);
        assert!(v.is_empty(), "{uri}: {v:?}");
    }

    // What needs the raw data is refused, naming the chain and the source.
    let r = get(
        &p,
        &format!("/v1/datasets/processed-mednist32/splits/val/items/{first}/image?size=64,64"),
    )
    .await;
    let body = assert_problem(&r, 400, "invalid-parameter");
    assert!(
        body["detail"].as_str().unwrap().contains("size=32,32"),
        "{body}"
    );
    let r = get(
        &p,
        "/v1/datasets/processed-mednist32/splits/train/batches/0?batch_size=2&size=64,64",
    )
    .await;
    assert_problem(&r, 400, "invalid-parameter");
    let r = get(
        &p,
        "/v1/datasets/processed-spleen/splits/train/items/spleen_10/slice",
    )
    .await;
    let body = assert_problem(&r, 404, "not-applicable");
    assert!(
        body["detail"].as_str().unwrap().contains("Task09_Spleen"),
        "{body}"
    );
    for uri in [
        "/v1/datasets/processed-spleen/splits/train/items/spleen_10/patches?patch=8,8,8"
            .to_string(),
        "/v1/datasets/processed-mednist32/stats".to_string(),
        format!("/v1/datasets/processed-mednist32/splits/val/items/{first}/file"),
        "/v1/datasets/processed-spleen/splits/train/items/spleen_10/volume.nii.gz".to_string(),
    ] {
        let r = get(&p, &uri).await;
        assert!(r.status == 404 || r.status == 400, "{uri}: {}", r.status);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_or_incomplete_exports() {
    let root = tempfile::tempdir().unwrap();
    export_into(root.path(), "a", "medmnist", &[("size", "16,16")]).await;
    export_into(root.path(), "b", "medmnist", &[("size", "16,16")]).await;
    // `b` unfinished: not served. One shard of `a` truncated: its items are left out.
    let mf = root.path().join("b/manifest.json");
    let text = std::fs::read_to_string(&mf)
        .unwrap()
        .replace("\"complete\": true", "\"complete\": false");
    std::fs::write(&mf, text).unwrap();
    let shard = root.path().join("a/train/train-000000.tar");
    let len = std::fs::metadata(&shard).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&shard)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let (p, _) = app_on(root.path());
    let list = get(&p, "/v1/datasets").await.json();
    let ds = list.as_array().unwrap();
    assert_eq!(ds.len(), 1, "{list}");
    assert_eq!(ds[0]["name"], "a");
    assert!(ds[0]["items"].as_u64().unwrap() < 108);
    let _ = Path::new("");
}
