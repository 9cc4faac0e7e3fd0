//! The workshop page's storage layout and dataset versions (issue 13 §2): the exact tree
//! `classification|segmentation/{raw,processed,artifacts}` with dated versions under `raw/`,
//! served from a local folder and from S3 alike: `raw/` as the raw datasets, `processed/<name>/`
//! as exports named `<name>`, `artifacts/` ignored; every dated folder a version of one
//! dataset, listed by `.../versions` and chosen with `?version=` or `<name>@<version>`.

mod common;

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use common::s3::{s3_store, sdk_client, start_s3, upload};
use common::{app_on, app_with, assert_problem, get, put, sample_dir};
use medserve::export::export;
use medserve::store::{LocalStore, ObjectStore};
use serde_json::Value;

const OLD: &str = "2026-11-20";
const NEW: &str = "2026-11-27";

fn copy_tree(from: &Path, to: &Path, keep: impl Fn(&str) -> bool) {
    for (rel, bytes) in common::s3::files_under(from) {
        if keep(&rel) {
            put(to, &rel, &bytes);
        }
    }
}

/// The seed's tree: two dated versions of the classification set (the old one holds only
/// each class's first training image and no test split), one unversioned segmentation set,
/// an export of the newest classification version under `processed/`, and artifacts (model
/// files, and PNGs and NIfTIs laid out like data) that must not become datasets.
async fn workshop_tree(root: &Path) {
    let sample = sample_dir();
    let new = root.join(format!("classification/raw/{NEW}"));
    copy_tree(&sample.join("medmnist"), &new, |_| true);
    copy_tree(
        &sample.join("medmnist"),
        &root.join(format!("classification/raw/{OLD}")),
        |rel| rel.starts_with("train/") && rel.ends_with("001.png") || rel.starts_with("val/"),
    );
    copy_tree(
        &sample.join("segmentation"),
        &root.join("segmentation/raw"),
        |_| true,
    );
    let png = std::fs::read(sample.join("medmnist/train/CXR/002001.png")).unwrap();
    put(
        root,
        "classification/artifacts/confusion/CXR/002001.png",
        &png,
    );
    put(root, "classification/artifacts/model.pt", b"weights");
    let vol = std::fs::read(sample.join("segmentation/train/subject_001/img.nii.gz")).unwrap();
    put(
        root,
        "segmentation/artifacts/predictions/subject_001/img.nii.gz",
        &vol,
    );

    let source: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(root).unwrap());
    let out = root.join("classification/processed/mednist-32");
    std::fs::create_dir_all(&out).unwrap();
    let dest: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(&out).unwrap());
    // The bare name exports the newest version.
    let o = common::export_opts("classification", &[("size", "32,32")], 64 << 10);
    export(source, Some(dest), &o).await.unwrap();
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect()
}

async fn json(app: &Router, uri: &str) -> Value {
    let r = get(app, uri).await;
    assert_eq!(r.status, 200, "{uri}: {}", String::from_utf8_lossy(&r.body));
    let wrong = common::schema::violations("GET", uri, &r);
    assert!(wrong.is_empty(), "{uri} against openapi.yaml: {wrong:?}");
    r.json()
}

/// What the tree serves, with `source` (the store's location) left out so a local folder and
/// S3 can be compared.
async fn catalog_view(app: &Router) -> Vec<Value> {
    let mut out = Vec::new();
    let mut list = json(app, "/v1/datasets").await;
    let versions = json(app, "/v1/datasets/classification/versions").await;
    for d in list.as_array_mut().unwrap() {
        d.as_object_mut().unwrap().remove("source");
    }
    out.push(list);
    let mut v = versions;
    for d in v["versions"].as_array_mut().unwrap() {
        d.as_object_mut().unwrap().remove("source");
    }
    out.push(v);
    for uri in [
        "/v1/datasets/classification/splits",
        &format!("/v1/datasets/classification/splits?version={OLD}"),
        &format!("/v1/datasets/classification@{OLD}/splits/train/items"),
        "/v1/datasets/segmentation/splits",
        "/v1/datasets/mednist-32/splits",
    ] {
        out.push(json(app, uri).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workshop_tree_is_served_with_its_versions() {
    let root = tempfile::tempdir().unwrap();
    workshop_tree(root.path()).await;
    let (app, _) = app_on(root.path());

    let list = json(&app, "/v1/datasets").await;
    assert_eq!(
        names(&list),
        [
            &format!("classification@{NEW}") as &str,
            "mednist-32",
            "segmentation"
        ],
        "{list}"
    );
    let c = &list[0];
    assert_eq!(c["version"], NEW);
    assert_eq!(c["versions_url"], "/v1/datasets/classification/versions");
    assert_eq!(c["splits"], serde_json::json!(["train", "val", "test"]));
    assert_eq!(list[1]["kind"], "processed");
    assert_eq!(
        list[1]["processed"]["source_dataset"],
        format!("classification@{NEW}")
    );
    assert!(list[2].get("version").is_none(), "{list}");

    let v = json(&app, "/v1/datasets/classification/versions").await;
    assert_eq!(v["dataset"], "classification");
    assert_eq!(v["newest"], NEW);
    assert_eq!(
        names(&v["versions"]),
        [
            format!("classification@{OLD}"),
            format!("classification@{NEW}")
        ]
    );
    assert_eq!(v["versions"][0]["items"], 6 + 18, "{v}");
    // Any version's name finds the same document; an unversioned dataset has none.
    let same = json(&app, &format!("/v1/datasets/classification@{OLD}/versions")).await;
    assert_eq!(same, v);
    let none = json(&app, "/v1/datasets/segmentation/versions").await;
    assert_eq!(
        none,
        serde_json::json!({"dataset": "segmentation", "newest": null, "versions": []})
    );

    // The bare name is the newest; `?version=` and `name@version` pick one.
    let bare = json(&app, "/v1/datasets/classification").await;
    assert_eq!(bare["name"], format!("classification@{NEW}"));
    let by_query = json(&app, &format!("/v1/datasets/classification?version={OLD}")).await;
    let by_path = json(&app, &format!("/v1/datasets/classification@{OLD}")).await;
    assert_eq!(by_query, by_path);
    assert_eq!(by_query["version"], OLD);
    assert_eq!(by_query["items"], 6 + 18);
    let both = json(
        &app,
        &format!("/v1/datasets/classification@{OLD}?version={OLD}"),
    )
    .await;
    assert_eq!(both, by_path);

    // The same file in two versions: equal pixels, distinct ETags (each names its object).
    let item = "splits/train/items/CXR~002001/image?format=npy";
    let old = get(
        &app,
        &format!("/v1/datasets/classification/{item}&version={OLD}"),
    )
    .await;
    let new = get(&app, &format!("/v1/datasets/classification/{item}")).await;
    let pinned = get(&app, &format!("/v1/datasets/classification@{NEW}/{item}")).await;
    assert_eq!((old.status.as_u16(), new.status.as_u16()), (200, 200));
    assert_eq!(old.body, new.body);
    assert_ne!(old.header("etag"), new.header("etag"));
    assert_eq!(new.header("etag"), pinned.header("etag"));
    let doc = json(
        &app,
        &format!("/v1/datasets/classification/splits/train/items/CXR~002001?version={OLD}"),
    )
    .await;
    assert_eq!(
        doc["key"],
        format!("classification/raw/{OLD}/train/CXR/002001.png"),
        "{doc}"
    );

    // Batches of an old version draw from its items only.
    let plan = json(
        &app,
        &format!("/v1/datasets/classification/splits/train/batches?batch_size=4&version={OLD}"),
    )
    .await;
    assert_eq!(plan["dataset"], format!("classification@{OLD}"), "{plan}");
    assert_eq!(plan["samples"], 6, "{plan}");
    let b = get(
        &app,
        &format!("/v1/datasets/classification/splits/train/batches/0?batch_size=4&version={OLD}"),
    )
    .await;
    assert_eq!(b.status, 200);

    // Artifacts are not served, and are not counted as unmatched objects.
    let r = get(&app, "/v1/datasets/classification-artifacts").await;
    assert_problem(&r, 404, "dataset-not-found");
    let r = common::call(&app, axum::http::Method::POST, "/v1/catalog/refresh").await;
    assert_eq!(r.json()["unmatched"], 0, "{}", r.json());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_versions_are_named_with_the_ones_there_are() {
    let root = tempfile::tempdir().unwrap();
    workshop_tree(root.path()).await;
    let (app, _) = app_on(root.path());

    let r = get(&app, "/v1/datasets/classification?version=latest").await;
    let p = assert_problem(&r, 400, "invalid-parameter");
    assert_eq!(p["parameter"], "version", "{p}");
    let r = get(
        &app,
        "/v1/datasets/classification/splits?version=2026-01-01",
    )
    .await;
    let p = assert_problem(&r, 404, "version-not-found");
    assert_eq!(p["available"], serde_json::json!([OLD, NEW]), "{p}");
    let r = get(
        &app,
        &format!("/v1/datasets/segmentation/splits/train/items?version={NEW}"),
    )
    .await;
    let p = assert_problem(&r, 404, "version-not-found");
    assert!(
        p["detail"].as_str().unwrap().contains("not versioned"),
        "{p}"
    );
    let r = get(
        &app,
        &format!("/v1/datasets/classification@{OLD}/splits?version={NEW}"),
    )
    .await;
    let p = assert_problem(&r, 400, "invalid-parameter");
    assert!(p["detail"].as_str().unwrap().contains("contradicts"), "{p}");
    let r = get(&app, "/v1/datasets/classification@2026-01-01").await;
    assert_problem(&r, 404, "dataset-not-found");
    // Object versions are S3's: a folder keeps none, an export's shards take none.
    let item = "/v1/datasets/classification/splits/train/items/CXR~002001";
    let r = get(
        &app,
        &format!("{item}/image?version_id=3HL4kqtJlcpXroDTDmJ"),
    )
    .await;
    let p = assert_problem(&r, 404, "object-version-not-found");
    assert!(
        p["detail"].as_str().unwrap().contains("local folder"),
        "{p}"
    );
    let r = get(&app, &format!("{item}?label_version_id=x")).await;
    let p = assert_problem(&r, 404, "label-not-found");
    assert!(p["detail"].as_str().unwrap().contains("no mask"), "{p}");
    let r = get(&app, &format!("{item}/image?version_id=")).await;
    assert_problem(&r, 400, "invalid-parameter");
    let exported = json(&app, "/v1/datasets/mednist-32/splits/train/items?limit=1").await;
    let id = exported["items"][0]["id"].as_str().unwrap().to_string();
    let uri = format!("/v1/datasets/mednist-32/splits/train/items/{id}/image?version_id=x");
    let p = assert_problem(&get(&app, &uri).await, 400, "invalid-parameter");
    assert_eq!(p["parameter"], "version_id", "{p}");
    // Given twice is refused like any parameter.
    let r = get(
        &app,
        &format!("/v1/datasets/classification?version={OLD}&version={NEW}"),
    )
    .await;
    assert_problem(&r, 400, "invalid-parameter");
}

/// The same tree on S3 (a real S3-protocol server): the same datasets, versions and documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workshop_tree_on_s3_serves_what_the_folder_does() {
    let root = tempfile::tempdir().unwrap();
    workshop_tree(root.path()).await;
    let (local, _) = app_on(root.path());

    let server = start_s3().await;
    upload(&sdk_client(&server.endpoint), root.path(), "").await;
    let (s3, _) = app_with(
        Arc::new(s3_store(&server.endpoint, "").await),
        64 << 20,
        None,
    );
    assert_eq!(catalog_view(&s3).await, catalog_view(&local).await);
    let uri = format!(
        "/v1/datasets/classification/splits/val/items/Hand~014001/image?format=npy&version={OLD}"
    );
    let (a, b) = (get(&s3, &uri).await, get(&local, &uri).await);
    assert_eq!((a.status.as_u16(), b.status.as_u16()), (200, 200));
    assert_eq!(a.body, b.body);

    // `--data s3://bucket/classification/raw`: the area names the dataset, the dates version it.
    let (area, _) = app_with(
        Arc::new(s3_store(&server.endpoint, "classification/raw/").await),
        64 << 20,
        None,
    );
    let v = json(&area, "/v1/datasets/classification/versions").await;
    assert_eq!(v["newest"], NEW, "{v}");
}
