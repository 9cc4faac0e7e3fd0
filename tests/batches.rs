//! Batches for training jobs over HTTP: the plan, exact epoch coverage across ranks, elastic
//! world sizes, padding, the arrays equal to the item routes', custom id lists, errors.

mod common;

use std::collections::BTreeMap;
use std::io::Read;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use common::{app, assert_problem, get, parse_npy, send};
use ndarray::ArrayD;
use ndarray_npy::{NpzReader, ReadableElement};

const MEDMNIST: &str = "/v1/datasets/medmnist/splits/train";
const SPLEEN: &str = "/v1/datasets/Task09_Spleen/splits/train";

/// An `.npz` body: its arrays by name, numeric ones read by ndarray-npy, `id` decoded from
/// NumPy's `<U` layout.
struct Npz(Vec<u8>);

impl Npz {
    fn names(&self) -> Vec<String> {
        let z = zip::ZipArchive::new(std::io::Cursor::new(&self.0)).unwrap();
        let mut n: Vec<String> = z
            .file_names()
            .map(|s| s.trim_end_matches(".npy").into())
            .collect();
        n.sort();
        n
    }
    fn array<T: ReadableElement>(&self, name: &str) -> ArrayD<T> {
        NpzReader::new(std::io::Cursor::new(&self.0))
            .unwrap()
            .by_name(name)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }
    fn ids(&self) -> Vec<String> {
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(&self.0)).unwrap();
        let mut f = z.by_name("id.npy").unwrap();
        let mut b = Vec::new();
        f.read_to_end(&mut b).unwrap();
        let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
        let header = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
        let width: usize = header
            .split("'<U")
            .nth(1)
            .and_then(|r| r.split('\'').next())
            .unwrap()
            .parse()
            .unwrap();
        b[10 + hlen..]
            .chunks(width * 4)
            .map(|c| {
                c.chunks(4)
                    .map(|u| u32::from_le_bytes(u.try_into().unwrap()))
                    .take_while(|&u| u != 0)
                    .map(|u| char::from_u32(u).unwrap())
                    .collect()
            })
            .collect()
    }
}

async fn batch(app: &Router, url: &str) -> Npz {
    let r = get(app, url).await;
    assert_eq!(r.status, 200, "{url}: {}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), "application/x-npz");
    Npz(r.body)
}

async fn plan(app: &Router, q: &str) -> serde_json::Value {
    let r = get(app, &format!("{MEDMNIST}/batches?{q}")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

#[tokio::test]
async fn the_plan_says_how_many_batches_and_pads() {
    let (app, _) = app();
    let n = get(&app, &format!("{MEDMNIST}/items?limit=1")).await.json()["total"]
        .as_u64()
        .unwrap() as usize;
    let p = plan(&app, "batch_size=7&world_size=2&seed=1").await;
    assert_eq!(p["samples"], n);
    let steps = n.div_ceil(14);
    assert_eq!(p["batches"], steps);
    assert_eq!(p["padded"], steps * 14 - n);
    assert_eq!(p["order"]["algorithm"], "fisher-yates-sha256");
    assert_eq!(p["order"]["version"], 1);
    let d = plan(&app, "batch_size=7&world_size=2&drop_last=true").await;
    assert_eq!(d["batches"], n / 14);
    assert_eq!(d["padded"], 0);
    assert_eq!(d["order"]["algorithm"], "listing");
    let c = plan(&app, "batch_size=4&class=Hand").await;
    assert!(c["samples"].as_u64().unwrap() < n as u64);
    assert_eq!(c["class"], "Hand");
}

/// Every item exactly once per epoch over 2 ranks (padding flagged), the same bytes for the
/// same URL, another order for another epoch, and the order kept when W halves and B doubles.
#[tokio::test]
async fn an_epoch_covers_the_split_once_across_ranks() {
    let (app, _) = app();
    let p = plan(&app, "batch_size=8&world_size=2&seed=11").await;
    let (steps, n) = (
        p["batches"].as_u64().unwrap(),
        p["samples"].as_u64().unwrap(),
    );
    let q = "batch_size=8&world_size=2&seed=11&epoch=1&size=16,16";
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    let mut order = Vec::new();
    let mut padded = 0;
    for step in 0..steps {
        let mut global = Vec::new();
        for rank in 0..2 {
            let b = batch(&app, &format!("{MEDMNIST}/batches/{step}?{q}&rank={rank}")).await;
            let ids = b.ids();
            let pad = b.array::<bool>("pad");
            assert_eq!(ids.len(), 8);
            for (id, p) in ids.iter().zip(pad.iter()) {
                if *p {
                    padded += 1;
                } else {
                    *count.entry(id.clone()).or_default() += 1;
                }
            }
            global.extend(ids);
        }
        // W=1 with B=16 at the same step: the same samples in the same order.
        let one = batch(
            &app,
            &format!("{MEDMNIST}/batches/{step}?batch_size=16&seed=11&epoch=1&size=16,16"),
        )
        .await;
        assert_eq!(one.ids(), global, "step {step}");
        order.extend(global);
    }
    assert_eq!(count.len() as u64, n);
    assert!(count.values().all(|&c| c == 1));
    assert_eq!(padded, p["padded"].as_u64().unwrap());
    // Same URL, same bytes; another epoch, another order.
    let url = format!("{MEDMNIST}/batches/0?{q}&rank=0");
    assert_eq!(batch(&app, &url).await.0, batch(&app, &url).await.0);
    let other = batch(&app, &url.replace("epoch=1", "epoch=2")).await.ids();
    assert_ne!(other, order[..8].to_vec());
    // Without a seed: the listing order.
    let listing = get(&app, &format!("{MEDMNIST}/items?limit=8")).await.json();
    let first: Vec<String> = listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().into())
        .collect();
    let b = batch(&app, &format!("{MEDMNIST}/batches/0?batch_size=8")).await;
    assert_eq!(b.ids(), first);
}

/// Each sample equals the image route's array for the same item and parameters (random
/// transforms drawn identically), labels are the class indices of the listing.
#[tokio::test]
async fn samples_equal_the_image_route_and_labels_the_classes() {
    let (app, _) = app();
    let chain = "rand_flip=0.5&rand_rotate=0.5&rand_rotate_prob=0.5&seed=4&epoch=2";
    let b = batch(&app, &format!("{MEDMNIST}/batches/1?batch_size=6&{chain}")).await;
    assert_eq!(
        b.names(),
        ["id", "image", "label", "pad", "rand_flip", "rand_rotate"]
    );
    let image = b.array::<f32>("image");
    assert_eq!(image.shape(), &[6, 1, 64, 64]);
    let label = b.array::<i64>("label");
    let flips = b.array::<bool>("rand_flip");
    let angles = b.array::<f64>("rand_rotate");
    for (k, id) in b.ids().iter().enumerate() {
        let r = get(
            &app,
            &format!("{MEDMNIST}/items/{id}/image?format=npy&{chain}"),
        )
        .await;
        let (_, values) = parse_npy(&r.body);
        let sample = image.index_axis(ndarray::Axis(0), k);
        assert!(sample.iter().eq(values.iter()), "{id}");
        let drawn = r.header("x-augment");
        assert_eq!(flips[k], drawn.contains("flip=all"), "{id}: {drawn}");
        match drawn.split("rotate=").nth(1) {
            Some(a) => assert_eq!(angles[k], a.parse::<f64>().unwrap()),
            None => assert!(angles[k].is_nan()),
        }
        let meta = get(&app, &format!("{MEDMNIST}/items/{id}")).await.json();
        assert_eq!(label[k], meta["label"].as_i64().unwrap(), "{id}");
    }
}

#[tokio::test]
async fn post_batch_takes_any_ids() {
    let (app, _) = app();
    let b = batch(
        &app,
        &format!("{MEDMNIST}/batches/2?batch_size=5&seed=9&size=32,32"),
    )
    .await;
    let ids = b.ids();
    let body = serde_json::json!({ "ids": ids }).to_string();
    let req = Request::post(format!("{MEDMNIST}/batch?size=32,32"))
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let r = send(&app, req).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let p = Npz(r.body);
    assert_eq!(p.ids(), ids);
    assert_eq!(p.array::<f32>("image"), b.array::<f32>("image"));
    assert_eq!(p.array::<i64>("label"), b.array::<i64>("label"));
    for (body, status, what) in [
        (r#"{"ids": []}"#, 400, "1..=1024"),
        (r#"{"ids": ["nope"]}"#, 404, "nope"),
        (r#"{"items": []}"#, 400, "ids"),
        ("not json", 400, "JSON"),
    ] {
        let req = Request::post(format!("{MEDMNIST}/batch"))
            .body(Body::from(body))
            .unwrap();
        let r = send(&app, req).await;
        assert_eq!(r.status, status, "{body}");
        assert!(String::from_utf8_lossy(&r.body).contains(what), "{body}");
    }
}

#[tokio::test]
async fn segmentation_batches_carry_masks_flipped_alike() {
    let (app, _) = app();
    let q = "batch_size=2&size=24,24,12&a_min=-1000&a_max=1000&b_min=0&b_max=1&clip=true";
    let b = batch(&app, &format!("{SPLEEN}/batches/0?{q}&seed=3")).await;
    assert_eq!(b.names(), ["id", "image", "label", "pad"]);
    let image = b.array::<f32>("image");
    let label = b.array::<u8>("label");
    assert_eq!(image.shape(), &[2, 1, 24, 24, 12]);
    assert_eq!(label.shape(), &[2, 1, 24, 24, 12]);
    // The seed's RandFlipd(prob=0.5, spatial_axis=0) at p=1: image and mask both flipped,
    // equal to the volume route's flip=0.
    let f = batch(
        &app,
        &format!("{SPLEEN}/batches/0?{q}&rand_flip=1&rand_flip_axis=0&seed=3"),
    )
    .await;
    let ids = b.ids();
    assert_eq!(
        f.ids(),
        ids,
        "one seed, one order: random transforms do not change it"
    );
    for (k, id) in ids.iter().enumerate() {
        let v = get(
            &app,
            &format!(
                "{SPLEEN}/items/{id}/volume.npz?{q_vol}&part=both&flip=0",
                q_vol = &q[13..]
            ),
        )
        .await;
        assert_eq!(v.status, 200, "{}", String::from_utf8_lossy(&v.body));
        let v = Npz(v.body);
        let fi = f.array::<f32>("image");
        let fl = f.array::<u8>("label");
        assert_eq!(fi.index_axis(ndarray::Axis(0), k), v.array::<f32>("image"));
        assert_eq!(fl.index_axis(ndarray::Axis(0), k), v.array::<u8>("label"));
    }
    assert!(f.array::<bool>("rand_flip").iter().all(|&x| x));
}

#[tokio::test]
async fn batch_parameters_are_validated() {
    let (app, _) = app();
    for (url, status, param) in [
        (format!("{MEDMNIST}/batches"), 400, "batch_size"),
        (
            format!("{MEDMNIST}/batches?batch_size=0"),
            400,
            "batch_size",
        ),
        (
            format!("{MEDMNIST}/batches?batch_size=1025"),
            400,
            "batch_size",
        ),
        (
            format!("{MEDMNIST}/batches?batch_size=4&world_size=0"),
            400,
            "world_size",
        ),
        (
            format!("{MEDMNIST}/batches?batch_size=4&drop_last=yes"),
            400,
            "drop_last",
        ),
        (format!("{MEDMNIST}/batches/0"), 400, "batch_size"),
        (format!("{MEDMNIST}/batches/x?batch_size=4"), 400, "batch"),
        (
            format!("{MEDMNIST}/batches/0?batch_size=4&rank=2&world_size=2"),
            400,
            "rank",
        ),
        (
            format!("{MEDMNIST}/batches/0?batch_size=4&a_min=0&a_max=1"),
            400,
            "a_min",
        ),
        (
            format!("{MEDMNIST}/batches/0?batch_size=4&rand_flip=1"),
            400,
            "seed",
        ),
        (
            format!("{SPLEEN}/batches/0?batch_size=1&rotate=1"),
            400,
            "rotate",
        ),
        (
            format!("{SPLEEN}/batches/0?batch_size=1&rand_rotate=1&seed=1"),
            400,
            "rand_rotate",
        ),
        (
            format!("{SPLEEN}/batches/0?batch_size=1&channels=1"),
            400,
            "channels",
        ),
    ] {
        let r = get(&app, &url).await;
        let p = assert_problem(&r, status, "invalid-parameter");
        assert_eq!(p["parameter"], param, "{url}: {p}");
    }
    let r = get(&app, &format!("{MEDMNIST}/batches/100000?batch_size=4")).await;
    let p = assert_problem(&r, 404, "batch-not-found");
    assert!(
        p["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("batches per rank")
            || p.to_string().contains("batches per rank"),
        "{p}"
    );
    let r = get(
        &app,
        &format!("{MEDMNIST}/batches?batch_size=4&class=Brain"),
    )
    .await;
    assert_problem(&r, 404, "class-not-found");
    let r = get(&app, &format!("{SPLEEN}/batches?batch_size=4&class=Hand")).await;
    assert_problem(&r, 404, "class-not-found");
    // Native grids differ between subjects: a batch needs one grid.
    let r = get(&app, &format!("{SPLEEN}/batches/0?batch_size=4")).await;
    if r.status != 200 {
        let p = assert_problem(&r, 422, "undecodable-object");
        assert!(p.to_string().contains("size=X,Y,Z"), "{p}");
    }
}

/// Serving batch b warms batch b+1: its items are then cache hits (no transform runs when
/// it is asked for).
#[tokio::test]
async fn the_next_batch_is_warmed_in_the_background() {
    let (app, state) = app();
    let m = &state.metrics;
    let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let q = "batch_size=4&seed=5&size=20,20";
    batch(&app, &format!("{MEDMNIST}/batches/0?{q}")).await;
    for _ in 0..200 {
        if count(&m.prefetched_batches) >= 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(count(&m.prefetched_batches), 1);
    let before = count(&m.transforms);
    batch(&app, &format!("{MEDMNIST}/batches/1?{q}")).await;
    assert_eq!(count(&m.transforms), before, "batch 1 was warm");
}

/// `patch=` turns a segmentation batch into patches: `patches_per_item` per item, sampled as
/// the patch route samples them (the same centres and crops for the same seed and epoch).
#[tokio::test]
async fn segmentation_batches_of_patches() {
    let (app, _) = app();
    let chain = "size=32,32,16&a_min=-1000&a_max=1000&b_min=0&b_max=1&clip=true";
    let q =
        format!("batch_size=2&seed=8&epoch=1&{chain}&patch=12,12,8&patches_per_item=3&pos=1&neg=1");
    let b = batch(&app, &format!("{SPLEEN}/batches/0?{q}")).await;
    assert_eq!(b.names(), ["center", "id", "image", "label", "pad"]);
    let image = b.array::<f32>("image");
    let label = b.array::<u8>("label");
    let center = b.array::<i64>("center");
    assert_eq!(image.shape(), &[6, 1, 12, 12, 8]);
    assert_eq!(label.shape(), &[6, 1, 12, 12, 8]);
    assert_eq!(center.shape(), &[6, 3]);
    let ids = b.ids();
    assert_eq!(ids[0], ids[2]);
    assert_ne!(ids[0], ids[3]);
    // Item by item, the patch route's answer for the same seed and epoch.
    for k in [0, 3] {
        let r = get(
            &app,
            &format!(
                "{SPLEEN}/items/{}/patches?seed=8&epoch=1&{chain}&patch=12,12,8&num=3",
                ids[k]
            ),
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let p = Npz(r.body);
        let rows = ndarray::Slice::from(k..k + 3);
        assert_eq!(
            p.array::<f32>("image"),
            image.slice_axis(ndarray::Axis(0), rows)
        );
        assert_eq!(
            p.array::<u8>("label"),
            label.slice_axis(ndarray::Axis(0), rows)
        );
        assert_eq!(
            p.array::<i64>("center"),
            center.slice_axis(ndarray::Axis(0), rows)
        );
    }
    let r = get(
        &app,
        &format!("{SPLEEN}/batches/0?batch_size=2&patches_per_item=2"),
    )
    .await;
    let p = assert_problem(&r, 400, "invalid-parameter");
    assert_eq!(p["parameter"], "patches_per_item");
    let r = get(
        &app,
        &format!("{SPLEEN}/batches/0?batch_size=2&seed=1&patch=8,8,8&patches_per_item=0"),
    )
    .await;
    let p = assert_problem(&r, 400, "invalid-parameter");
    assert_eq!(p["parameter"], "patches_per_item");
    let r = get(
        &app,
        &format!("{MEDMNIST}/batches/0?batch_size=2&patch=8,8,8&seed=1"),
    )
    .await;
    let p = assert_problem(&r, 400, "invalid-parameter");
    assert_eq!(p["parameter"], "patch");
}

/// A batch past `--max-output-mb` is 422 after one item, never computed (or held) whole.
#[tokio::test]
async fn a_batch_is_bounded_before_it_is_computed() {
    let limits = medserve::config::Limits {
        max_output_bytes: 1 << 20,
        ..Default::default()
    };
    let (app, state) = common::app_with_limits(limits);
    let r = get(
        &app,
        &format!("{MEDMNIST}/batches/0?batch_size=300&size=32,32"),
    )
    .await;
    let p = assert_problem(&r, 422, "object-too-large");
    assert!(p.to_string().contains("--max-output-mb"), "{p}");
    let transforms = state
        .metrics
        .transforms
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(transforms, 1, "only the first item was transformed");
    let r = get(
        &app,
        &format!("{MEDMNIST}/batches/0?batch_size=200&size=32,32"),
    )
    .await;
    assert_eq!(r.status, 200);
}
