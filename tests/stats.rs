//! Exploring a dataset over HTTP: the background statistics (exact counts, histograms,
//! percentiles, label fractions and components against an independent computation here,
//! progress, errors, serving while they run), the item histogram and the split montage.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use axum::Router;
use common::{app, app_on, assert_problem, get, get_with, put};
use serde_json::{Value, json};

/// The body, after checking it against the spec's schema.
async fn get_valid(app: &Router, uri: &str) -> common::Resp {
    let r = get(app, uri).await;
    let v = common::schema::violations("GET", uri, &r);
    assert!(v.is_empty(), "{v:#?}");
    r
}

/// Polls the statistics until complete (checking every answer against the schema).
async fn stats_complete(app: &Router, dataset: &str, within: Duration) -> Value {
    let uri = format!("/v1/datasets/{dataset}/stats");
    let t = Instant::now();
    loop {
        let r = get_valid(app, &uri).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let j = r.json();
        if j["complete"] == true {
            assert_eq!(j["done"], j["total"]);
            return j;
        }
        assert!(t.elapsed() < within, "not complete after {within:?}: {j}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn classification_stats_count_every_item_exactly() {
    let (app, _) = app();
    let j = stats_complete(&app, "medmnist", Duration::from_secs(60)).await;
    let ds = get(&app, "/v1/datasets/medmnist").await.json();
    assert_eq!(j["kind"], "classification");
    assert_eq!(j["total"], ds["items"]);
    assert!(j["volumes"].is_null());
    // Counts per split and class equal the catalog's.
    let mut per_class_items: BTreeMap<String, u64> = BTreeMap::new();
    for c in ds["classes"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        for (split, n) in c["counts"].as_object().unwrap() {
            assert_eq!(j["counts"][split][name], *n, "{split}/{name}");
            *per_class_items.entry(name.into()).or_default() += n.as_u64().unwrap();
        }
    }
    let total = ds["items"].as_u64().unwrap();
    let img = &j["images"];
    assert_eq!(img["sizes"], json!({"64x64": total}));
    assert_eq!(img["modes"], json!({"L": total}));
    assert_eq!(img["bit_depths"], json!({"8": total}));
    assert_eq!(img["errors"], json!([]));
    assert_eq!(img["histogram"]["range"], json!([0, 255]));
    // Every pixel of every item of a class is in its histogram.
    for (class, n) in &per_class_items {
        let h = img["histogram"]["per_class"][class].as_array().unwrap();
        assert_eq!(h.len(), 64);
        let sum: u64 = h.iter().map(|v| v.as_u64().unwrap()).sum();
        assert_eq!(sum, n * 64 * 64, "{class}");
    }
    // The histogram of one class against the decoded files, binned here.
    let dir = common::sample_dir().join("medmnist");
    let mut bins = vec![0u64; 64];
    for split in ["train", "val", "test"] {
        for e in std::fs::read_dir(dir.join(split).join("HeadCT")).unwrap() {
            let im = image::open(e.unwrap().path()).unwrap().to_luma8();
            for &v in im.as_raw() {
                bins[((v as usize * 64) / 255).min(63)] += 1;
            }
        }
    }
    assert_eq!(img["histogram"]["per_class"]["HeadCT"], json!(bins));
}

/// Values of a NIfTI file as float64 (after scaling), with its grid, read by the `nifti` crate.
fn nifti_values(path: &Path) -> (Vec<f64>, [usize; 3]) {
    use nifti::{IntoNdArray, NiftiObject, ReaderOptions};
    let obj = ReaderOptions::new().read_file(path).unwrap();
    let a = obj.into_volume().into_ndarray::<f64>().unwrap();
    let s = a.shape();
    let dims = [s[0], s[1], s[2]];
    // Fortran order (x fastest), as the file.
    let v = a.t().iter().copied().collect();
    (v, dims)
}

fn np_percentile(sorted: &[f64], p: f64) -> f64 {
    let r = p / 100.0 * (sorted.len() - 1) as f64;
    let (i, f) = (r.floor() as usize, r - r.floor());
    if f == 0.0 {
        sorted[i]
    } else {
        sorted[i] + (sorted[i + 1] - sorted[i]) * f
    }
}

/// Components of each value by breadth-first search (independent of the server's union-find).
fn bfs_components(mask: &[u8], [nx, ny, nz]: [usize; 3]) -> BTreeMap<u8, u64> {
    let mut seen = vec![false; mask.len()];
    let mut out = BTreeMap::new();
    for start in 0..mask.len() {
        let v = mask[start];
        if v == 0 || seen[start] {
            continue;
        }
        *out.entry(v).or_insert(0) += 1;
        let mut queue = std::collections::VecDeque::from([start]);
        seen[start] = true;
        while let Some(i) = queue.pop_front() {
            let (x, y, z) = (i % nx, (i / nx) % ny, i / (nx * ny));
            let mut next = Vec::new();
            if x > 0 {
                next.push(i - 1);
            }
            if x + 1 < nx {
                next.push(i + 1);
            }
            if y > 0 {
                next.push(i - nx);
            }
            if y + 1 < ny {
                next.push(i + nx);
            }
            if z > 0 {
                next.push(i - nx * ny);
            }
            if z + 1 < nz {
                next.push(i + nx * ny);
            }
            for n in next {
                if !seen[n] && mask[n] == v {
                    seen[n] = true;
                    queue.push_back(n);
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn segmentation_stats_match_an_independent_computation() {
    let (app, _) = app();
    let j = stats_complete(&app, "Task09_Spleen", Duration::from_secs(120)).await;
    assert_eq!(j["kind"], "segmentation");
    assert!(j["images"].is_null());
    let splits = get(&app, "/v1/datasets/Task09_Spleen/splits").await.json();
    for s in splits.as_array().unwrap() {
        assert_eq!(
            j["counts"][s["name"].as_str().unwrap()]["subjects"],
            s["count"]
        );
    }
    let v = &j["volumes"];
    assert_eq!(v["shapes"], json!({"64x64x24": 4}));
    assert_eq!(v["spacings"], json!({"0.8x0.8x2.5": 4}));
    assert_eq!(v["errors"], json!([]));
    // Independent: every voxel of the four images, the masks of the three training subjects.
    let task = common::sample_dir().join("Task09_Spleen");
    let mut all = Vec::new();
    let mut fg = Vec::new();
    let mut voxels: BTreeMap<u8, u64> = BTreeMap::new();
    let mut comps: BTreeMap<u8, u64> = BTreeMap::new();
    let mut mask_voxels = 0u64;
    for s in [2, 6, 10] {
        let name = format!("spleen_{s}.nii.gz");
        let (img, _) = nifti_values(&task.join("imagesTr").join(&name));
        let (lab, dims) = nifti_values(&task.join("labelsTr").join(&name));
        let mask: Vec<u8> = lab.iter().map(|&x| x as u8).collect();
        mask_voxels += mask.len() as u64;
        for (&x, &m) in img.iter().zip(&mask) {
            all.push(x);
            if m > 0 {
                fg.push(x);
                *voxels.entry(m).or_default() += 1;
            }
        }
        for (k, n) in bfs_components(&mask, dims) {
            *comps.entry(k).or_default() += n;
        }
    }
    all.extend(nifti_values(&task.join("imagesTs/spleen_1.nii.gz")).0);
    all.sort_by(f64::total_cmp);
    fg.sort_by(f64::total_cmp);
    for (name, p) in [("p0_5", 0.5), ("p50", 50.0), ("p99_5", 99.5)] {
        let got = v["intensity"]["all"][name].as_f64().unwrap();
        assert!((got - np_percentile(&all, p)).abs() < 1e-9, "all {name}");
        let got = v["intensity"]["foreground"][name].as_f64().unwrap();
        assert!((got - np_percentile(&fg, p)).abs() < 1e-9, "fg {name}");
    }
    assert!(!voxels.is_empty());
    assert_eq!(v["labels"].as_object().unwrap().len(), voxels.len());
    for (k, n) in &voxels {
        let l = &v["labels"][k.to_string()];
        assert_eq!(l["voxels"], *n, "label {k}");
        let frac = *n as f64 / mask_voxels as f64;
        assert!((l["fraction"].as_f64().unwrap() - frac).abs() < 1e-12);
        assert_eq!(l["components"], comps[k], "label {k}");
    }
}

#[tokio::test]
async fn stats_report_progress_then_complete_and_serving_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    medserve::sample::write_mednist_sized(dir.path(), 1200).unwrap();
    let (app, _) = app_on(dir.path());
    let first = get_valid(&app, "/v1/datasets/mednist/stats").await.json();
    assert_eq!(first["complete"], false);
    assert_eq!(first["total"], 1200);
    assert_eq!(first["counts"]["all"]["BreastMRI"], 182);
    // While the job runs, a data request is served (and promptly: the job yields the CPU).
    let t = Instant::now();
    let img = get(
        &app,
        "/v1/datasets/mednist/splits/all/items/Hand~400007/image",
    )
    .await;
    assert_eq!(img.status, 200, "{}", String::from_utf8_lossy(&img.body));
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let mid = get(&app, "/v1/datasets/mednist/stats").await.json();
    assert!(mid["done"].as_u64().unwrap() <= 1200);
    let done = stats_complete(&app, "mednist", Duration::from_secs(120)).await;
    let sum: u64 = done["counts"]["all"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(sum, 1200);
    // The same snapshot: the finished result, not a new job.
    let again = get(&app, "/v1/datasets/mednist/stats").await.json();
    assert_eq!(again, done);
}

#[tokio::test]
async fn unreadable_items_are_listed_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    put(d, "bad/train/A/ok.png", &common::tiny_png());
    put(d, "bad/train/A/broken.png", b"\x89PNG\r\n\x1a\nnot really");
    put(d, "bad/train/B/b.png", &common::tiny_png());
    let seg = common::sample_dir().join("segmentation/train/subject_001");
    put(
        d,
        "segbad/train/s1/img.nii.gz",
        &std::fs::read(seg.join("img.nii.gz")).unwrap(),
    );
    put(
        d,
        "segbad/train/s1/label.nii.gz",
        &std::fs::read(seg.join("label.nii.gz")).unwrap(),
    );
    put(
        d,
        "segbad/train/s2/img.nii.gz",
        b"\x1f\x8b\x08\x00broken gzip",
    );
    let (app, _) = app_on(d);
    let j = stats_complete(&app, "bad", Duration::from_secs(30)).await;
    assert_eq!(j["total"], 3);
    let errors = j["images"]["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["object"], "bad/train/A/broken.png");
    assert_eq!(j["images"]["sizes"], json!({"8x8": 2}));
    let j = stats_complete(&app, "segbad", Duration::from_secs(30)).await;
    let errors = j["volumes"]["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["object"], "segbad/train/s2/img.nii.gz");
    assert!(!errors[0]["detail"].as_str().unwrap().is_empty());
    assert_eq!(j["volumes"]["shapes"], json!({"64x64x24": 1}));
    assert_eq!(j["counts"]["train"]["subjects"], 2);
}

#[tokio::test]
async fn item_histograms_of_images_and_volumes() {
    let (app, _) = app();
    let uri = "/v1/datasets/medmnist/splits/train/items/HeadCT~005001/histogram";
    let j = get_valid(&app, uri).await.json();
    let file = common::sample_dir().join("medmnist/train/HeadCT/005001.png");
    let px: Vec<f64> = image::open(file)
        .unwrap()
        .to_luma8()
        .as_raw()
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    assert_eq!(
        (j["pixels"].as_u64(), j["channels"].as_u64()),
        (Some(4096), Some(1))
    );
    let counts = j["bins"]["counts"].as_array().unwrap();
    assert_eq!(counts.len(), 64);
    assert_eq!(j["bins"]["edges"].as_array().unwrap().len(), 65);
    assert_eq!(
        counts.iter().map(|c| c.as_u64().unwrap()).sum::<u64>(),
        4096
    );
    let mut sorted = px.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(j["min"], sorted[0]);
    assert_eq!(j["max"], sorted[4095]);
    assert_eq!(j["percentiles"]["p25"], np_percentile(&sorted, 25.0));
    let mean = px.iter().sum::<f64>() / 4096.0;
    assert!((j["mean"].as_f64().unwrap() - mean).abs() < 1e-9);

    let uri = "/v1/datasets/Task09_Spleen/splits/train/items/spleen_10/histogram?bins=100";
    let j = get_valid(&app, uri).await.json();
    let (vals, _) =
        nifti_values(&common::sample_dir().join("Task09_Spleen/imagesTr/spleen_10.nii.gz"));
    assert_eq!(j["voxels"], 64 * 64 * 24);
    let counts = j["bins"]["counts"].as_array().unwrap();
    assert_eq!(counts.len(), 100);
    assert_eq!(
        counts.iter().map(|c| c.as_u64().unwrap()).sum::<u64>(),
        vals.len() as u64
    );
    let mut sorted = vals;
    sorted.sort_by(f64::total_cmp);
    assert_eq!(j["min"], sorted[0]);
    assert_eq!(j["max"], sorted[sorted.len() - 1]);
    assert_eq!(j["percentiles"]["p99_5"], np_percentile(&sorted, 99.5));

    // A volume of NaNs: nothing finite, everything counted in `nan`.
    let j = get_valid(
        &app,
        "/v1/datasets/nojson/splits/test/items/case_003/histogram?bins=1",
    )
    .await
    .json();
    assert_eq!(j["nan"], j["voxels"]);
    assert!(j["min"].is_null() && j["percentiles"]["p50"].is_null());

    for bad in ["bins=0", "bins=4097", "bins=abc", "bins=-1", "bin=3"] {
        let uri = format!("/v1/datasets/medmnist/splits/train/items/HeadCT~005001/histogram?{bad}");
        let r = get_valid(&app, &uri).await;
        let p = assert_problem(&r, 400, "invalid-parameter");
        assert!(p["parameter"].as_str().unwrap().starts_with("bin"), "{p}");
    }
}

/// The image's rows of `side` pixels, each checked to show something past the label column.
fn assert_rows_drawn(png: &[u8], rows: u32, side: u32, label_w: u32, cols: u32) {
    let im = image::load_from_memory(png).unwrap().to_rgb8();
    let width = label_w + cols * side;
    assert_eq!((im.width(), im.height()), (width, rows * side));
    for r in 0..rows {
        let mut lo = 255u8;
        let mut hi = 0u8;
        let mut label_ink = false;
        for y in r * side..(r + 1) * side {
            for x in 0..width {
                let p = im.get_pixel(x, y).0;
                if x < label_w {
                    label_ink |= p == [255, 255, 255];
                } else {
                    lo = lo.min(p[0]);
                    hi = hi.max(p[0]);
                }
            }
        }
        assert!(hi > lo + 20, "row {r} is blank");
        assert!(label_ink, "row {r} has no label");
    }
}

#[tokio::test]
async fn montages_of_both_kinds() {
    let (app, _) = app();
    let uri = "/v1/datasets/medmnist/splits/train/montage?per_class=4&size=32";
    let r = get_valid(&app, uri).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "image/png");
    // "AbdomenCT" and "BreastMRI": 9 characters of 8 pixels, plus 8.
    let width = 80 + 4 * 32;
    assert_eq!(r.header("x-shape"), format!("3,{},{width}", 6 * 32));
    assert_rows_drawn(&r.body, 6, 32, 80, 4);
    let etag = r.header("etag").to_string();
    let again = get_with(&app, uri, &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, 304);
    let other = get(
        &app,
        "/v1/datasets/medmnist/splits/train/montage?per_class=3&size=32",
    )
    .await;
    assert_ne!(other.header("etag"), etag);

    // Three subjects in train; two rows asked for; "subject_001": 11 characters.
    let uri = "/v1/datasets/segmentation/splits/train/montage?per_class=2&size=48";
    let r = get_valid(&app, uri).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_rows_drawn(&r.body, 2, 48, 96, 3);
    // Defaults: 8 per class, 64 pixels; train has 3 subjects.
    let r = get(&app, "/v1/datasets/segmentation/splits/train/montage").await;
    let im = image::load_from_memory(&r.body).unwrap();
    assert_eq!((im.width(), im.height()), (96 + 3 * 64, 3 * 64));

    for bad in [
        "per_class=0",
        "per_class=65",
        "size=15",
        "size=257",
        "size=x",
        "rows=2",
    ] {
        let uri = format!("/v1/datasets/medmnist/splits/train/montage?{bad}");
        let r = get_valid(&app, &uri).await;
        assert_problem(&r, 400, "invalid-parameter");
    }
    let r = get_valid(&app, "/v1/datasets/medmnist/splits/nope/montage").await;
    assert_problem(&r, 404, "split-not-found");
}

/// Scale figures (not asserted): the statistics of a MedNIST-sized set from local disk and
/// from the in-process S3 server, and how long an answer takes while the job runs. Run with
/// `MEDSERVE_SCALE_ITEMS=58954 cargo test --release --test stats -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn scale_figures() {
    let n: usize = std::env::var("MEDSERVE_SCALE_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(58_954);
    let root = tempfile::tempdir().unwrap();
    // s3s-fs keeps a bucket as a folder of files: the data is written straight into it.
    let bucket = root.path().join(common::s3::BUCKET);
    let t = Instant::now();
    medserve::sample::write_mednist_sized(&bucket, n).unwrap();
    println!("wrote {n} PNGs in {:.1} s", t.elapsed().as_secs_f64());

    let (app, _) = app_on(&bucket);
    timed_stats(&app, "local disk", n).await;

    let server = common::s3::serve_s3(root.path(), "127.0.0.1:0").await;
    let store = common::s3::s3_store(&server.endpoint, "").await;
    let s = common::state(std::sync::Arc::new(store));
    let app = medserve::build_router(s, &medserve::HttpOptions::default());
    timed_stats(&app, "S3 (s3s-fs, in-process)", n).await;
}

async fn timed_stats(app: &Router, what: &str, n: usize) {
    let uri = "/v1/datasets/mednist/stats";
    let t = Instant::now();
    let first = get(app, uri).await;
    println!(
        "{what}: first answer {:.1} ms (listing included)",
        t.elapsed().as_secs_f64() * 1e3
    );
    let mut answers = Vec::new();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let a = Instant::now();
        let j = get(app, uri).await.json();
        answers.push(a.elapsed().as_secs_f64() * 1e3);
        if j["complete"] == true {
            assert_eq!(j["done"], n);
            break;
        }
    }
    answers.sort_by(f64::total_cmp);
    println!(
        "{what}: {n} items complete in {:.2} s; answers while running: {} polls, median {:.2} ms, max {:.2} ms",
        t.elapsed().as_secs_f64(),
        answers.len(),
        answers[answers.len() / 2],
        answers[answers.len() - 1]
    );
    drop(first);
}
