//! `GET .../items/{item}/patches` over HTTP, in process through the router: shapes and dtypes,
//! patches equal to the volume route's arrays at the MONAI crop ranges, reproducible and
//! seed-dependent draws, the pos/neg ratio, the cached index lists (`/metrics`), errors.

mod common;

use axum::Router;
use common::{app, assert_problem, get, get_with, metric};
use medserve::imaging::patch;
use ndarray::{ArrayD, Axis, Ix2, IxDyn, Slice};
use ndarray_npy::{NpzReader, ReadNpyExt};

const SPLEEN: &str = "/v1/datasets/Task09_Spleen/splits/train/items/spleen_10";
const SPLEEN_NO_LABEL: &str = "/v1/datasets/Task09_Spleen/splits/test/items/spleen_1";
const BRATS: &str = "/v1/datasets/Task01_BrainTumour/splits/train/items/BRATS_001";
const MEDNIST: &str = "/v1/datasets/medmnist/splits/train/items/HeadCT~005001";
const SPLEEN_LAB: &str = "Task09_Spleen/labelsTr/spleen_10.nii.gz";

struct Patches {
    image: ArrayD<f32>,
    label: ArrayD<u8>,
    center: ndarray::Array2<i64>,
    names: Vec<String>,
    body: Vec<u8>,
    etag: String,
}

async fn patches(app: &Router, query: &str) -> Patches {
    let uri = format!("{SPLEEN}/patches?{query}");
    patches_at(app, &uri).await
}

async fn patches_at(app: &Router, uri: &str) -> Patches {
    let r = get(app, uri).await;
    assert_eq!(
        r.status,
        200,
        "{uri}: {}",
        String::from_utf8_lossy(&r.body[..r.body.len().min(600)])
    );
    assert_eq!(r.header("content-type"), "application/x-npz");
    let mut z = NpzReader::new(std::io::Cursor::new(&r.body)).expect("npz");
    let names = z.names().unwrap();
    // Typed reads: each fails unless the array has exactly this dtype.
    Patches {
        image: z.by_name::<_, IxDyn>("image.npy").expect("float32 image"),
        label: z.by_name::<_, IxDyn>("label.npy").expect("uint8 label"),
        center: z.by_name::<_, Ix2>("center.npy").expect("int64 centres"),
        names,
        body: r.body.clone(),
        etag: r.header("etag").to_string(),
    }
}

/// The volume route's array for the same chain.
async fn volume<T: ndarray_npy::ReadableElement>(
    app: &Router,
    item: &str,
    query: &str,
) -> ArrayD<T> {
    let r = get(app, &format!("{item}/volume?format=npy&{query}")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    ArrayD::<T>::read_npy(std::io::Cursor::new(&r.body)).expect("npy")
}

fn centres(p: &Patches) -> Vec<[usize; 3]> {
    p.center
        .rows()
        .into_iter()
        .map(|r| [r[0] as usize, r[1] as usize, r[2] as usize])
        .collect()
}

/// The `(C, X, Y, Z)` window MONAI's `SpatialCrop` takes around `c`.
fn window<T: Clone>(a: &ArrayD<T>, c: [usize; 3], patch: [usize; 3]) -> ArrayD<T> {
    let shape = [a.shape()[1], a.shape()[2], a.shape()[3]];
    let mut v = a.view();
    for (k, r) in patch::crop_ranges(c, patch, shape).into_iter().enumerate() {
        v.slice_axis_inplace(Axis(k + 1), Slice::from(r));
    }
    v.to_owned()
}

#[tokio::test]
async fn shapes_dtypes_and_crops_of_the_volume_arrays() {
    let (app, _) = app();
    let p = patches(&app, "patch=16,16,8&num=4&seed=1").await;
    let mut names = p.names.clone();
    names.sort();
    assert_eq!(names, ["center", "image", "label"]);
    assert_eq!(p.image.shape(), [4, 1, 16, 16, 8]);
    assert_eq!(p.label.shape(), [4, 1, 16, 16, 8]);
    assert_eq!(p.center.shape(), [4, 3]);
    // Each patch is the volume route's arrays at MONAI's crop ranges around its centre.
    let img = volume::<f32>(&app, SPLEEN, "").await;
    let lab = volume::<u8>(&app, SPLEEN, "part=label").await;
    for (k, c) in centres(&p).into_iter().enumerate() {
        assert_eq!(
            patch::correct_crop_center(c, [16, 16, 8], [64, 64, 24]),
            c,
            "centres are corrected"
        );
        assert_eq!(p.image.index_axis(Axis(0), k), window(&img, c, [16, 16, 8]));
        assert_eq!(p.label.index_axis(Axis(0), k), window(&lab, c, [16, 16, 8]));
    }

    // The chain applies first: a resize, a flip, a scale and a label selection.
    let chain = "size=32,32,16&flip=0&a_min=-1000&a_max=1000&labels=1&binary=true";
    let p = patches(&app, &format!("patch=9,8,7&num=3&seed=5&{chain}")).await;
    assert_eq!(p.image.shape(), [3, 1, 9, 8, 7]);
    let img = volume::<f32>(&app, SPLEEN, chain.split("&labels").next().unwrap()).await;
    let lab = volume::<u8>(
        &app,
        SPLEEN,
        &format!("part=label&{chain}").replace("&a_min=-1000&a_max=1000", ""),
    )
    .await;
    assert_eq!(img.shape(), [1, 32, 32, 16]);
    for (k, c) in centres(&p).into_iter().enumerate() {
        assert_eq!(p.image.index_axis(Axis(0), k), window(&img, c, [9, 8, 7]));
        assert_eq!(p.label.index_axis(Axis(0), k), window(&lab, c, [9, 8, 7]));
    }
    assert!(p.label.iter().all(|&v| v <= 1));

    // Channels of a multi-modal volume come along.
    let p = patches_at(&app, &format!("{BRATS}/patches?patch=8,8,8&num=2&seed=3")).await;
    assert_eq!(p.image.shape()[..2], [2, 4]);
}

#[tokio::test]
async fn a_patch_larger_than_the_grid_takes_the_whole_axis() {
    let (app, _) = app();
    let p = patches(&app, "patch=100,16,30&num=3&seed=2").await;
    assert_eq!(p.image.shape(), [3, 1, 64, 16, 24]);
    assert_eq!(p.label.shape(), [3, 1, 64, 16, 24]);
    for c in centres(&p) {
        // MONAI's correct_crop_centers with the side capped at the grid: the middle voxel.
        assert_eq!((c[0], c[2]), (32, 12));
    }
}

#[tokio::test]
async fn draws_are_reproducible_and_follow_seed_epoch_and_ratio() {
    let (app, _) = app();
    let q = "patch=16,16,8&num=8&seed=11";
    let a = patches(&app, q).await;
    let b = patches(&app, q).await;
    assert_eq!(a.body, b.body, "same URL, same bytes");
    assert_eq!(a.etag, b.etag);
    let r = get_with(
        &app,
        &format!("{SPLEEN}/patches?{q}"),
        &[("if-none-match", &a.etag)],
    )
    .await;
    assert_eq!(r.status, 304);
    let other_seed = patches(&app, "patch=16,16,8&num=8&seed=12").await;
    assert_ne!(a.center, other_seed.center);
    assert_ne!(a.etag, other_seed.etag);
    let other_epoch = patches(&app, "patch=16,16,8&num=8&seed=11&epoch=1").await;
    assert_ne!(a.center, other_epoch.center);
    // epoch=0 is the default; pos=2&neg=2 is the ratio of pos=1&neg=1.
    let spelled = patches(&app, "patch=16,16,8&num=8&seed=11&epoch=0&pos=2&neg=2").await;
    assert_eq!(spelled.body, a.body);
    assert_eq!(spelled.etag, a.etag);

    // pos=1&neg=0: every centre is foreground; pos=0&neg=1: every centre background.
    let lab = volume::<u8>(&app, SPLEEN, "part=label").await;
    let at = |c: [usize; 3]| lab[[0, c[0], c[1], c[2]]];
    // A 1-voxel patch keeps the drawn voxel as the centre (no correction moves it).
    let fg = patches(&app, "patch=1,1,1&num=64&seed=4&pos=1&neg=0").await;
    assert!(centres(&fg).iter().all(|&c| at(c) != 0));
    assert!(fg.label.iter().all(|&v| v != 0));
    let bg = patches(&app, "patch=1,1,1&num=64&seed=4&pos=0&neg=1").await;
    assert!(centres(&bg).iter().all(|&c| at(c) == 0));
    // Larger patches: the label at each corrected centre is foreground too (the blob sits
    // away from the grid's edges, where a correction would move a centre off it).
    let fg = patches(&app, "patch=16,16,8&num=16&seed=4&pos=1&neg=0").await;
    for (k, c) in centres(&fg).into_iter().enumerate() {
        assert_ne!(at(c), 0, "sample {k} at {c:?}");
    }
    // With a threshold, background centres lie where the image exceeds it.
    let img = volume::<f32>(&app, SPLEEN, "").await;
    let th = patches(
        &app,
        "patch=1,1,1&num=64&seed=4&pos=0&neg=1&image_threshold=100",
    )
    .await;
    for c in centres(&th) {
        assert_eq!(at(c), 0);
        assert!(img[[0, c[0], c[1], c[2]]] > 100.0, "{c:?}");
    }
}

#[tokio::test]
async fn index_lists_are_computed_once_per_label_and_chain() {
    let (app, _) = app();
    let count =
        |app: Router| async move { metric(&app, "medserve_fg_indices_computed_total").await };
    assert_eq!(count(app.clone()).await, 0);
    patches(&app, "patch=16,16,8&num=4&seed=1").await;
    assert_eq!(count(app.clone()).await, 1);
    // Another seed, epoch, ratio, count or patch size: the same lists.
    patches(&app, "patch=8,8,8&num=2&seed=2&epoch=3&pos=3").await;
    assert_eq!(count(app.clone()).await, 1);
    // Another chain or threshold: other lists.
    patches(&app, "patch=8,8,8&seed=2&size=32,32,16").await;
    assert_eq!(count(app.clone()).await, 2);
    patches(&app, "patch=8,8,8&seed=2&image_threshold=0").await;
    assert_eq!(count(app.clone()).await, 3);
    patches(&app, "patch=8,8,8&seed=9&image_threshold=0").await;
    assert_eq!(count(app.clone()).await, 3);
}

#[tokio::test]
async fn errors_name_the_parameter_or_the_object() {
    let (app, _) = app();
    for (q, name) in [
        ("patch=8,8,8", "seed"),
        ("seed=1", "patch"),
        ("patch=8,8,8&seed=1&num=65", "num"),
        ("patch=8,8,8&seed=1&num=0", "num"),
        ("patch=8,8,8&seed=1&pos=0&neg=0", "pos"),
        ("patch=8,8,8&seed=1&neg=-1", "neg"),
        ("patch=8,8,8&seed=x", "seed"),
        ("patch=8,8,0&seed=1", "patch"),
        ("patch=8,8,8&seed=1&format=npy", "format"),
    ] {
        let r = get(&app, &format!("{SPLEEN}/patches?{q}")).await;
        let j = assert_problem(&r, 400, "invalid-parameter");
        assert_eq!(j["parameter"], name, "{q}: {j}");
        assert!(j["detail"].as_str().unwrap().contains(name), "{q}: {j}");
    }
    // No label to centre on.
    let r = get(
        &app,
        &format!("{SPLEEN_NO_LABEL}/patches?patch=8,8,8&seed=1"),
    )
    .await;
    let j = assert_problem(&r, 404, "label-not-found");
    assert!(j["detail"].as_str().unwrap().contains("spleen_1"), "{j}");
    assert_problem(
        &get(&app, &format!("{MEDNIST}/patches?patch=8,8,8&seed=1")).await,
        404,
        "not-applicable",
    );
    // Neither foreground (label 7 does not occur) nor background above the threshold.
    let r = get(
        &app,
        &format!("{SPLEEN}/patches?patch=8,8,8&seed=1&labels=7&image_threshold=1e30"),
    )
    .await;
    // Data with nothing to centre a patch on does not exist, as a slice past the end.
    let j = assert_problem(&r, 404, "patch-centre-not-found");
    assert!(j["detail"].as_str().unwrap().contains(SPLEEN_LAB), "{j}");
    // Only background: every centre is drawn from it whatever pos says (MONAI's fallback).
    let p = patches(&app, "patch=1,1,1&num=8&seed=1&labels=7&pos=1&neg=0").await;
    assert!(p.label.iter().all(|&v| v == 0));
}

#[tokio::test]
async fn the_pipeline_call_gives_the_route_s_arrays() {
    // What a batch route calls: Pipeline::patches with a query parsed by the route's grammar.
    let (app, state) = app();
    let snap = state.catalog.snapshot().await.unwrap();
    let item = snap.datasets["Task09_Spleen"]
        .split("train")
        .and_then(|s| s.item("spleen_10"))
        .unwrap()
        .clone();
    let q = medserve::pipeline::PatchQuery {
        chain: medserve::pipeline::Chain3d {
            size: Some([32, 32, 16]),
            mode: medserve::imaging::ResizeMode::Area,
            scale: None,
            flip: Default::default(),
        },
        select: Default::default(),
        patch: [8, 8, 8],
        num: 5,
        pos: 1.0,
        neg: 1.0,
        image_threshold: None,
        seed: 21,
        epoch: 2,
    };
    let got = state
        .pipeline
        .patches(&item, &q, "Task09_Spleen", "train")
        .await
        .unwrap();
    let p = patches(&app, "patch=8,8,8&num=5&seed=21&epoch=2&size=32,32,16").await;
    assert_eq!(got.image, p.image);
    assert_eq!(got.label, p.label);
    assert_eq!(got.center, p.center);
}

#[tokio::test]
async fn patches_beyond_max_output_are_refused_before_they_are_computed() {
    let (app, state) = common::app_with_limits(medserve::config::Limits {
        max_output_bytes: 1 << 20,
        ..Default::default()
    });
    // 64 patches of 64x64x24 float32 are 24 MiB.
    let r = get(
        &app,
        &format!("{SPLEEN}/patches?patch=64,64,24&num=64&seed=1"),
    )
    .await;
    let j = assert_problem(&r, 422, "object-too-large");
    assert!(j["detail"].as_str().unwrap().contains("64 patches"), "{j}");
    let transforms = state
        .metrics
        .transforms
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(transforms, 0, "nothing was transformed");
    patches_at(&app, &format!("{SPLEEN}/patches?patch=8,8,8&num=4&seed=1")).await;
}
