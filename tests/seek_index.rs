//! The gzip seek index in the server, over HTTP in process: the first decode of a large
//! `.nii.gz` takes libdeflate, the second records the index, and every later decode (the
//! volume left memory) inflates from its checkpoints on several threads, with byte-identical
//! answers; with a disk tier the index is written there too and a restarted server uses it.

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use common::{get, metric};
use medserve::AppState;
use medserve::store::LocalStore;

const ITEM: &str = "/v1/datasets/big/splits/train/items/s1";

/// A 256x256x128 int16 volume with noise in its low bits: about 10 MB gzipped, past the size
/// from which the server records an index.
fn write_volume(dir: &Path) {
    let dims = [256usize, 256, 128];
    let n = dims.iter().product::<usize>();
    let mut x = 0x2468_ace1_u32;
    let voxels: Vec<f32> = (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            ((i / 256) % 512) as f32 + (x % 64) as f32
        })
        .collect();
    let nii = common::nifti_f32(dims, &voxels);
    // Level 6: at level 1 zlib-rs (the "quick" strategy) writes one deflate block, where an
    // index can have no checkpoint.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(&nii).unwrap();
    let gz = e.finish().unwrap();
    assert!(
        gz.len() as u64 >= medserve::pipeline::INDEX_MIN_BYTES,
        "{} bytes",
        gz.len()
    );
    common::put(dir, "big/train/s1/img.nii.gz", &gz);
}

fn app(data: &Path, disk: Option<&Path>) -> (Router, AppState) {
    common::app_with(Arc::new(LocalStore::new(data).unwrap()), 256 << 20, disk)
}

async fn body(app: &Router, uri: &str) -> Vec<u8> {
    let r = get(app, uri).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.body
}

#[tokio::test]
async fn a_volume_decoded_again_is_inflated_from_its_index() {
    let data = tempfile::tempdir().unwrap();
    write_volume(data.path());
    let (app, state) = app(data.path(), None);
    let uri = format!("{ITEM}/volume?size=32,32,16&format=npy");
    let first = body(&app, &uri).await;
    assert_eq!(metric(&app, "medserve_gzip_indexes_built_total").await, 0);
    state.pipeline.cache().clear().await;
    assert_eq!(body(&app, &uri).await, first);
    assert_eq!(metric(&app, "medserve_gzip_indexes_built_total").await, 1);
    assert_eq!(metric(&app, "medserve_parallel_decodes_total").await, 0);

    state.pipeline.cache().clear().await;
    assert_eq!(body(&app, &uri).await, first);
    assert_eq!(metric(&app, "medserve_decode_total").await, 3);
    assert_eq!(metric(&app, "medserve_parallel_decodes_total").await, 1);
    assert_eq!(metric(&app, "medserve_gzip_indexes_built_total").await, 1);
    // The whole native volume too, through the same path.
    state.pipeline.cache().clear().await;
    let native = body(&app, &format!("{ITEM}/volume?format=npy")).await;
    assert_eq!(native.len(), 128 + 256 * 256 * 128 * 4);
    assert_eq!(metric(&app, "medserve_parallel_decodes_total").await, 2);
}

#[tokio::test]
async fn the_index_lives_in_the_disk_tier_too() {
    let data = tempfile::tempdir().unwrap();
    let disk = tempfile::tempdir().unwrap();
    write_volume(data.path());
    let uri = format!("{ITEM}/volume?size=32,32,16&format=npy");
    let (app1, state1) = app(data.path(), Some(disk.path()));
    let first = body(&app1, &uri).await;
    // A second decode (the volume entry on disk removed, memory emptied) records the index.
    common::disk_writes_reach(&app1, 1).await;
    remove_biggest(disk.path());
    state1.pipeline.cache().clear().await;
    assert_eq!(body(&app1, &uri).await, first);
    assert_eq!(metric(&app1, "medserve_gzip_indexes_built_total").await, 1);
    // The volume (again) and its index, written in the background.
    common::disk_writes_reach(&app1, 3).await;
    // Without the volume entry, a restarted server decodes again, from the index on disk.
    remove_biggest(disk.path());
    let (app2, _) = app(data.path(), Some(disk.path()));
    assert_eq!(body(&app2, &uri).await, first);
    assert_eq!(metric(&app2, "medserve_parallel_decodes_total").await, 1);
    assert_eq!(metric(&app2, "medserve_gzip_indexes_built_total").await, 0);
}

/// Deletes the largest disk entry: the decoded volume.
fn remove_biggest(dir: &Path) {
    let entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let biggest = entries
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    std::fs::remove_file(biggest).unwrap();
}
