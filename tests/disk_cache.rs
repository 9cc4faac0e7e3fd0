//! The disk tier (`--disk-cache-dir`) over HTTP, in process: a volume that left the RAM cache
//! is read back from disk instead of decoded, answers stay byte-identical to a server without
//! the tier, entries survive a restart, and a corrupted or truncated entry is dropped and
//! decoded again. (Killing the real binary mid-write is in `tests/binary.rs`.)

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use common::{get, metric, sample_dir};
use medserve::AppState;
use medserve::store::LocalStore;

const SPLEEN: &str = "/v1/datasets/Task09_Spleen/splits/train/items/spleen_10";
const BRATS: &str = "/v1/datasets/Task01_BrainTumour/splits/train/items/BRATS_001";

/// The app over the sample data and, when given, a disk tier in `disk`.
fn app(disk: Option<&Path>) -> Router {
    app_state(disk).0
}

fn app_state(disk: Option<&Path>) -> (Router, AppState) {
    let store = LocalStore::new(sample_dir()).expect("store");
    common::app_with(Arc::new(store), 64 << 20, disk)
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "mvol"))
        .collect();
    v.sort();
    v
}

async fn body(app: &Router, uri: &str) -> Vec<u8> {
    let r = get(app, uri).await;
    assert_eq!(r.status, 200, "{uri}: {}", String::from_utf8_lossy(&r.body));
    r.body
}

const REQUESTS: [&str; 4] = [
    "/volume?size=32,32,12&format=npz&part=both",
    "/volume?size=16,16,8&a_min=-100&a_max=200&format=npy",
    "/slice?axis=axial&index=5&format=f32",
    "/volume?format=nii",
];

#[tokio::test]
async fn volumes_out_of_memory_come_back_from_disk_equal() {
    let dir = tempfile::tempdir().unwrap();
    let plain = app(None);
    let (tiered, state) = app_state(Some(dir.path()));

    // First pass: decoded (image + mask of the spleen, 4 channels of BraTS), then written.
    let first = body(&tiered, &format!("{SPLEEN}{}", REQUESTS[0])).await;
    let brats = body(&tiered, &format!("{BRATS}/volume?size=16,16,8&format=npy")).await;
    assert_eq!(metric(&tiered, "medserve_decode_total").await, 3);
    common::disk_writes_reach(&tiered, 3).await;
    assert_eq!(entries(dir.path()).len(), 3);

    // Memory emptied before each request: each needs the volumes again, and gets them from
    // disk.
    for q in REQUESTS {
        state.pipeline.cache().clear().await;
        let uri = format!("{SPLEEN}{q}");
        assert_eq!(body(&tiered, &uri).await, body(&plain, &uri).await, "{uri}");
    }
    assert_eq!(
        first,
        body(&plain, &format!("{SPLEEN}{}", REQUESTS[0])).await
    );
    assert_eq!(
        brats,
        body(&plain, &format!("{BRATS}/volume?size=16,16,8&format=npy")).await
    );
    assert_eq!(
        metric(&tiered, "medserve_decode_total").await,
        3,
        "no decode after the first"
    );
    let hits = metric(&tiered, "medserve_disk_cache_hits_total").await;
    // Both objects for `part=both`, the image for the rest.
    assert_eq!(hits, 5);
    assert_eq!(metric(&tiered, "medserve_disk_cache_entries").await, 3);
    assert!(metric(&tiered, "medserve_disk_cache_bytes").await > 0);

    // A restarted server finds them.
    let again = app(Some(dir.path()));
    let uri = format!("{SPLEEN}{}", REQUESTS[1]);
    assert_eq!(body(&again, &uri).await, body(&plain, &uri).await);
    assert_eq!(metric(&again, "medserve_decode_total").await, 0);
    assert_eq!(metric(&again, "medserve_disk_cache_hits_total").await, 1);
}

#[tokio::test]
async fn damaged_entries_are_dropped_and_decoded_again() {
    let dir = tempfile::tempdir().unwrap();
    let plain = app(None);
    let (tiered, state) = app_state(Some(dir.path()));
    let uri = format!("{BRATS}/volume?size=16,16,8&format=npy");
    let want = body(&plain, &uri).await;
    assert_eq!(body(&tiered, &uri).await, want);
    common::disk_writes_reach(&tiered, 1).await;
    for (round, damage) in ["flip a voxel byte", "truncate", "empty", "garbage header"]
        .into_iter()
        .enumerate()
    {
        let [path] = entries(dir.path()).try_into().expect("one entry");
        let mut bytes = std::fs::read(&path).unwrap();
        match damage {
            "flip a voxel byte" => {
                let at = bytes.len() - 7;
                bytes[at] ^= 0x10;
            }
            "truncate" => bytes.truncate(bytes.len() / 2),
            "empty" => bytes.clear(),
            _ => bytes[..8].copy_from_slice(b"garbage!"),
        }
        std::fs::write(&path, &bytes).unwrap();
        state.pipeline.cache().clear().await;
        let round = round as u64;
        assert_eq!(body(&tiered, &uri).await, want, "{damage}");
        assert_eq!(
            metric(&tiered, "medserve_disk_cache_dropped_total").await,
            round + 1,
            "{damage}"
        );
        assert_eq!(
            metric(&tiered, "medserve_decode_total").await,
            round + 2,
            "{damage}"
        );
        // ... and written again, whole.
        common::disk_writes_reach(&tiered, round + 2).await;
    }
    state.pipeline.cache().clear().await;
    assert_eq!(body(&tiered, &uri).await, want);
    assert_eq!(metric(&tiered, "medserve_decode_total").await, 5);
    assert_eq!(metric(&tiered, "medserve_disk_cache_hits_total").await, 1);
}

#[tokio::test]
async fn patch_index_lists_come_back_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let plain = app(None);
    let (tiered, state) = app_state(Some(dir.path()));
    let uri = |seed: u32| format!("{SPLEEN}/patches?patch=16,16,8&num=4&pos=1&neg=1&seed={seed}");
    assert_eq!(body(&tiered, &uri(1)).await, body(&plain, &uri(1)).await);
    assert_eq!(
        metric(&tiered, "medserve_fg_indices_computed_total").await,
        1
    );
    // The volume, its mask and the index lists.
    common::disk_writes_reach(&tiered, 3).await;
    for seed in [2, 3] {
        state.pipeline.cache().clear().await;
        assert_eq!(
            body(&tiered, &uri(seed)).await,
            body(&plain, &uri(seed)).await
        );
    }
    assert_eq!(
        metric(&tiered, "medserve_fg_indices_computed_total").await,
        1,
        "the lists are read back, not computed again"
    );
    // The mask for the crops and the lists, twice (the image too: patches crop it).
    assert!(metric(&tiered, "medserve_disk_cache_hits_total").await >= 4);
    assert_eq!(metric(&tiered, "medserve_decode_total").await, 2);
}
