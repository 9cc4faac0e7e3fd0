//! Axial slices of volumes that are not decoded, read from a byte range of the stored object:
//! a `.nii.gz` from its seek index (the compressed span between two checkpoints), an
//! uncompressed `.nii` in two ranged GETs (header, plane), on a local folder and on a real
//! S3-protocol server. The answers are byte-identical to the decoded volume's, under the same
//! ETag; anything else (another axis, a percentile window not yet known, a broken file) is
//! served from the decoded volume as before.

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use common::s3::{s3_store, sdk_client, start_s3, upload};
use common::{get, metric, parse_npy};
use medserve::AppState;
use medserve::imaging::gzindex::{GzIndex, inflate_indexed};
use medserve::store::{LocalStore, ObjectStore};

const DIMS: [usize; 3] = [256, 256, 128];
const BIG: &str = "/v1/datasets/big/splits/train/items/s1";
const RAW: &str = "/v1/datasets/raw/splits/train/items/s1";

/// Voxel `i` of the big volume: a ramp along y plus noise in the low bits, so that it
/// compresses to more than the size from which an index is recorded.
fn voxels() -> Vec<f32> {
    let n = DIMS.iter().product::<usize>();
    let mut x = 0x2468_ace1_u32;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            ((i / 256) % 512) as f32 + (x % 64) as f32
        })
        .collect()
}

/// A mask on the same grid: a box of 1s and a box of 2s.
fn mask() -> Vec<f32> {
    let [nx, ny, nz] = DIMS;
    let mut m = vec![0f32; nx * ny * nz];
    for z in 56..72 {
        for y in 60..120 {
            for x in 50..200 {
                m[x + nx * (y + ny * z)] = if x < 120 { 1.0 } else { 2.0 };
            }
        }
    }
    m
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    // Level 6: at level 1 zlib-rs (the "quick" strategy) writes one deflate block, where an
    // index can have no checkpoint.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// `big`: the volume gzipped, with a gzipped mask; `raw`: the same uncompressed, with an
/// uncompressed mask. Returns the big image's gzip bytes.
fn write_data(dir: &Path) -> Vec<u8> {
    let img = common::nifti_f32(DIMS, &voxels());
    let lab = common::nifti_f32(DIMS, &mask());
    let big = gz(&img);
    assert!(big.len() as u64 >= medserve::pipeline::INDEX_MIN_BYTES);
    common::put(dir, "big/train/s1/img.nii.gz", &big);
    common::put(dir, "big/train/s1/label.nii.gz", &gz(&lab));
    common::put(dir, "raw/train/s1/img.nii", &img);
    common::put(dir, "raw/train/s1/label.nii", &lab);
    big
}

fn app_over(store: Arc<dyn ObjectStore>) -> (Router, AppState) {
    common::app_with(store, 256 << 20, None)
}

fn local(dir: &Path) -> (Router, AppState) {
    app_over(Arc::new(LocalStore::new(dir).unwrap()))
}

/// Uploads the files of one subject folder below `data` (and nothing else) to the S3 server.
async fn upload_subject(endpoint: &str, data: &Path, subject: &str) {
    let only = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(data.join(subject)).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        common::put(
            only.path(),
            &format!("{subject}/{name}"),
            &std::fs::read(e.path()).unwrap(),
        );
    }
    upload(&sdk_client(endpoint), only.path(), "").await;
}

/// Body and ETag of a 200.
async fn fetch(app: &Router, uri: &str) -> (Vec<u8>, String) {
    let r = get(app, uri).await;
    assert_eq!(r.status, 200, "{uri}: {}", String::from_utf8_lossy(&r.body));
    let etag = r.header("etag").to_owned();
    (r.body, etag)
}

/// What a server that decodes the whole volume answers: the volume is decoded (and cached)
/// before the slice is asked for.
async fn decoded_answer(dir: &Path, item: &str, q: &str) -> (Vec<u8>, String) {
    decoded_route(dir, item, &format!("slice?{q}")).await
}

/// [`decoded_answer`] for any route and query (`patches?...`).
async fn decoded_route(dir: &Path, item: &str, route: &str) -> (Vec<u8>, String) {
    let (app, _) = local(dir);
    // A small resize still decodes (and caches) the whole volumes.
    let _ = fetch(
        &app,
        &format!("{item}/volume?size=8,8,4&format=npz&part=both"),
    )
    .await;
    let before = metric(&app, "medserve_slab_reads_total").await;
    let answer = fetch(&app, &format!("{item}/{route}")).await;
    assert_eq!(metric(&app, "medserve_slab_reads_total").await, before);
    answer
}

/// The compressed bytes a slab read of plane `z` fetches: from the checkpoint at or before
/// the plane to 64 bytes past the first one at or after its end.
fn expected_span(gz: &[u8], z: usize) -> u64 {
    let [x, y, _] = DIMS;
    let mut out = vec![0u8; 352 + x * y * DIMS[2] * 4];
    let ix = inflate_indexed(gz, &mut out, 1 << 20).unwrap();
    let plane = (x * y * 4) as u64;
    let (a, b) = (352 + z as u64 * plane, 352 + (z as u64 + 1) * plane);
    let from = GzIndex::input_start(ix.point_before(a));
    let to = ix.points.iter().find(|p| p.unc >= b).unwrap().cmp;
    (to + 64).min(gz.len() as u64) - from
}

#[tokio::test]
async fn a_gzipped_volume_with_an_index_serves_axial_slices_from_one_ranged_read() {
    let data = tempfile::tempdir().unwrap();
    let big = write_data(data.path());
    let (app, state) = local(data.path());
    // Decoded twice (it left memory in between): the second decode records the index.
    let vol = format!("{BIG}/volume?size=32,32,16&format=npy");
    fetch(&app, &vol).await;
    state.pipeline.cache().clear().await;
    fetch(&app, &vol).await;
    assert_eq!(metric(&app, "medserve_gzip_indexes_built_total").await, 1);
    state.pipeline.cache().clear().await;
    let decodes = metric(&app, "medserve_decode_total").await;

    // Numbers and a fixed window: one ranged GET each, no decode, the decoded volume's bytes.
    for (z, q) in [
        (37usize, "axis=2&index=37&format=npy"),
        (64, "axis=axial&window=300,600&format=png"),
        (127, "axis=2&index=127&format=f32"),
    ] {
        let gets = metric(&app, "medserve_storage_range_get_total").await;
        let bytes = metric(&app, "medserve_storage_range_get_bytes_total").await;
        let answer = fetch(&app, &format!("{BIG}/slice?{q}")).await;
        assert_eq!(answer, decoded_answer(data.path(), BIG, q).await, "{q}");
        assert_eq!(
            metric(&app, "medserve_storage_range_get_total").await,
            gets + 1,
            "{q}"
        );
        let fetched = metric(&app, "medserve_storage_range_get_bytes_total").await - bytes;
        assert_eq!(fetched, expected_span(&big, z), "{q}");
        // At most the plane's compressed span plus one checkpoint interval (1 MiB of output,
        // compressed at the stream's ratio), and far from the whole object.
        assert!(fetched * 8 < big.len() as u64, "{fetched} of {}", big.len());
    }
    assert_eq!(metric(&app, "medserve_decode_total").await, decodes);
    assert_eq!(metric(&app, "medserve_slab_reads_total").await, 3);
    let n = parse_npy(
        &fetch(&app, &format!("{BIG}/slice?axis=2&index=37&format=npy"))
            .await
            .0,
    );
    let v = voxels();
    let plane = DIMS[0] * DIMS[1];
    assert_eq!(n.0, vec![256, 256]);
    // (H, W) = (x, y) in voxel order: row x holds y = 0..256.
    assert_eq!(n.1[1], v[37 * plane + 256]);

    // The mask has no index (it is small): it is decoded, the image plane still read by range.
    let q = "axis=2&index=64&part=overlay&window=300,600&opacity=0.5";
    let answer = fetch(&app, &format!("{BIG}/slice?{q}")).await;
    assert_eq!(answer, decoded_answer(data.path(), BIG, q).await);
    assert_eq!(metric(&app, "medserve_decode_total").await, decodes + 1);
    assert_eq!(metric(&app, "medserve_slab_reads_total").await, 4);

    // Another axis needs the volume: decoded.
    let q = "axis=0&index=100&format=npy";
    let answer = fetch(&app, &format!("{BIG}/slice?{q}")).await;
    assert_eq!(answer, decoded_answer(data.path(), BIG, q).await);
    assert_eq!(metric(&app, "medserve_decode_total").await, decodes + 2);
}

#[tokio::test]
async fn percentile_windows_are_read_by_range_once_a_decode_computed_them() {
    let data = tempfile::tempdir().unwrap();
    write_data(data.path());
    let (app, state) = local(data.path());
    // An uncompressed .nii: the first auto-windowed slice needs the whole volume's
    // percentiles, so it is decoded; they are kept with the header.
    let first = fetch(&app, &format!("{RAW}/slice?axis=2&index=10")).await;
    assert_eq!(
        first,
        decoded_answer(data.path(), RAW, "axis=2&index=10").await
    );
    assert_eq!(metric(&app, "medserve_decode_total").await, 1);
    state.pipeline.cache().clear().await;
    for q in [
        "axis=2&index=11",
        "axis=2&index=12&preset=mri",
        "axis=axial&index=3",
    ] {
        let answer = fetch(&app, &format!("{RAW}/slice?{q}")).await;
        assert_eq!(answer, decoded_answer(data.path(), RAW, q).await, "{q}");
    }
    assert_eq!(metric(&app, "medserve_decode_total").await, 1);
    assert_eq!(metric(&app, "medserve_slab_reads_total").await, 3);
    // A mask plane of an uncompressed mask, by range too.
    let q = "axis=2&index=50&part=label&format=npy";
    let answer = fetch(&app, &format!("{RAW}/slice?{q}")).await;
    assert_eq!(answer, decoded_answer(data.path(), RAW, q).await);
    assert_eq!(metric(&app, "medserve_decode_total").await, 1);
}

#[tokio::test]
async fn an_uncompressed_volume_on_s3_is_two_ranged_gets_per_axial_slice() {
    let data = tempfile::tempdir().unwrap();
    write_data(data.path());
    let server = start_s3().await;
    upload_subject(&server.endpoint, data.path(), "raw/train/s1").await;
    let (app, _) = app_over(Arc::new(s3_store(&server.endpoint, "").await));
    let q = "axis=2&index=5&format=npy";
    let answer = fetch(&app, &format!("{RAW}/slice?{q}")).await;
    // The same bytes (ETags differ: S3's object versions are not the local folder's).
    assert_eq!(answer.0, decoded_answer(data.path(), RAW, q).await.0);
    let plane = (DIMS[0] * DIMS[1] * 4) as u64;
    assert_eq!(metric(&app, "medserve_storage_range_get_total").await, 2);
    let fetched = metric(&app, "medserve_storage_range_get_bytes_total").await;
    // The header read (544 bytes) and the plane: within 1.1x of header + plane.
    assert_eq!(fetched, 544 + plane);
    assert!(fetched as f64 <= 1.1 * (352 + plane) as f64);
    assert_eq!(metric(&app, "medserve_storage_get_total").await, 0);
    assert_eq!(metric(&app, "medserve_decode_total").await, 0);
    // The next plane: the header is known, one GET of the plane alone.
    fetch(&app, &format!("{RAW}/slice?axis=2&index=6&format=npy")).await;
    assert_eq!(metric(&app, "medserve_storage_range_get_total").await, 3);
    assert_eq!(
        metric(&app, "medserve_storage_range_get_bytes_total").await,
        fetched + plane
    );
}

#[tokio::test]
async fn broken_uncompressed_files_are_still_named_by_the_full_decode() {
    let data = tempfile::tempdir().unwrap();
    let img = common::nifti_f32([32, 32, 8], &vec![1.0; 32 * 32 * 8]);
    // Cut inside the voxels: the header promises more than the file holds.
    common::put(data.path(), "cut/train/s1/img.nii", &img[..img.len() / 2]);
    // A gzip body under a .nii name decodes (the decoder looks at the bytes), by the full path.
    common::put(data.path(), "named/train/s1/img.nii", &gz(&img));
    // A header claiming more voxels than the server decodes.
    let mut huge = img.clone();
    huge[42..44].copy_from_slice(&30000i16.to_le_bytes());
    huge[44..46].copy_from_slice(&30000i16.to_le_bytes());
    common::put(data.path(), "huge/train/s1/img.nii", &huge);
    let (app, _) = local(data.path());
    let r = get(
        &app,
        "/v1/datasets/cut/splits/train/items/s1/slice?axis=2&index=7&format=npy",
    )
    .await;
    let p = common::assert_problem(&r, 422, "undecodable-object");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("cut/train/s1/img.nii"),
        "{p}"
    );
    let r = get(
        &app,
        "/v1/datasets/named/splits/train/items/s1/slice?axis=2&index=7&format=npy",
    )
    .await;
    assert_eq!(r.status, 200);
    let r = get(
        &app,
        "/v1/datasets/huge/splits/train/items/s1/slice?axis=2&index=7&format=npy",
    )
    .await;
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(metric(&app, "medserve_slab_reads_total").await, 0);
}

#[tokio::test]
async fn patches_of_a_volume_that_is_not_decoded_read_the_planes_they_span() {
    let data = tempfile::tempdir().unwrap();
    write_data(data.path());
    let (app, state) = local(data.path());
    let plane = (DIMS[0] * DIMS[1] * 4) as u64;
    // Foreground centres only: the mask's box is planes 56..72, so 16-deep patches lie in
    // planes 48..80, a quarter of the volume.
    let base = "patch=32,32,16&num=3&pos=1&neg=0&seed=3";
    let scaled = format!("{base}&flip=2&a_min=0&a_max=600&b_min=0&b_max=1&clip=true");
    for q in [base.to_owned(), scaled] {
        state.pipeline.cache().clear().await;
        let (slabs, bytes) = (
            metric(&app, "medserve_slab_reads_total").await,
            metric(&app, "medserve_storage_range_get_bytes_total").await,
        );
        let answer = fetch(&app, &format!("{RAW}/patches?{q}")).await;
        assert_eq!(
            answer,
            decoded_route(data.path(), RAW, &format!("patches?{q}")).await,
            "{q}"
        );
        assert_eq!(
            metric(&app, "medserve_slab_reads_total").await,
            slabs + 1,
            "{q}"
        );
        let fetched = metric(&app, "medserve_storage_range_get_bytes_total").await - bytes;
        assert!(fetched <= 544 + 32 * plane, "{q}: {fetched}");
    }
    // The mask was decoded (for the lists and its crops), the image never.
    assert_eq!(metric(&app, "medserve_decode_total").await, 2);

    // Background centres may be anywhere: a span past half the volume decodes it whole.
    state.pipeline.cache().clear().await;
    let q = "patch=32,32,16&num=8&pos=0&neg=1&seed=5";
    let answer = fetch(&app, &format!("{RAW}/patches?{q}")).await;
    assert_eq!(
        answer,
        decoded_route(data.path(), RAW, &format!("patches?{q}")).await
    );

    // A .nii.gz with a seek index: one ranged GET from the checkpoint before the span.
    let vol = format!("{BIG}/volume?size=32,32,16&format=npy");
    fetch(&app, &vol).await;
    state.pipeline.cache().clear().await;
    fetch(&app, &vol).await;
    state.pipeline.cache().clear().await;
    let slabs = metric(&app, "medserve_slab_reads_total").await;
    let answer = fetch(&app, &format!("{BIG}/patches?{base}")).await;
    assert_eq!(
        answer,
        decoded_route(data.path(), BIG, &format!("patches?{base}")).await
    );
    assert_eq!(metric(&app, "medserve_slab_reads_total").await, slabs + 1);
}

#[tokio::test]
async fn an_index_is_recorded_on_s3_too_and_slices_then_read_one_span() {
    let data = tempfile::tempdir().unwrap();
    let big = write_data(data.path());
    let server = start_s3().await;
    upload_subject(&server.endpoint, data.path(), "big/train/s1").await;
    let (app, state) = app_over(Arc::new(s3_store(&server.endpoint, "").await));
    // The first decode streams; the second (the volume left memory) reads whole and records
    // the index.
    let vol = format!("{BIG}/volume?size=32,32,16&format=npy");
    let first = fetch(&app, &vol).await;
    assert_eq!(metric(&app, "medserve_gzip_indexes_built_total").await, 0);
    state.pipeline.cache().clear().await;
    assert_eq!(fetch(&app, &vol).await.0, first.0);
    assert_eq!(metric(&app, "medserve_gzip_indexes_built_total").await, 1);
    state.pipeline.cache().clear().await;
    let bytes = metric(&app, "medserve_storage_range_get_bytes_total").await;
    let q = "axis=2&index=37&format=npy";
    let answer = fetch(&app, &format!("{BIG}/slice?{q}")).await;
    assert_eq!(answer.0, decoded_answer(data.path(), BIG, q).await.0);
    // The header is known from the decodes: only the plane's span is read.
    let fetched = metric(&app, "medserve_storage_range_get_bytes_total").await - bytes;
    assert_eq!(fetched, expected_span(&big, 37));
    assert_eq!(metric(&app, "medserve_decode_total").await, 2);
}
