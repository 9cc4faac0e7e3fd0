//! `medserve export`: shards equal to what the HTTP routes serve, the manifest, resuming
//! (kept, damaged, missing and killed shards), refusal to overwrite another export, dry runs,
//! and S3 as the destination (single PUTs and multipart uploads on a real S3-protocol server).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use common::s3::{BUCKET, s3_store, sdk_client, start_s3};
use common::{app, get, sample_dir};
use medserve::export::manifest::{MANIFEST, Manifest};
use medserve::export::{ExportOptions, Summary, export};
use medserve::store::{LocalStore, ObjectStore};
use sha2::{Digest, Sha256};

use common::export_opts as opts;

fn sample_store() -> Arc<dyn ObjectStore> {
    Arc::new(LocalStore::new(sample_dir()).unwrap())
}

async fn run_to(dir: &Path, o: &ExportOptions) -> anyhow::Result<Summary> {
    std::fs::create_dir_all(dir).unwrap();
    let dest: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir).unwrap());
    export(sample_store(), Some(dest), o).await
}

fn manifest_at(dir: &Path) -> Manifest {
    serde_json::from_slice(&std::fs::read(dir.join(MANIFEST)).unwrap()).unwrap()
}

/// Every member of a tar: name -> bytes.
fn members(tar_bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut ar = tar::Archive::new(tar_bytes);
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut v).unwrap();
            (name, v)
        })
        .collect()
}

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classification_shards_equal_the_image_route_and_resume() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path();
    // Small shards: several per split.
    let o = opts(
        "medmnist",
        &[("size", "32,32"), ("mode", "bilinear")],
        40 << 10,
    );
    let s = run_to(dir, &o).await.unwrap();
    let m = manifest_at(dir);
    assert!(m.complete);
    assert_eq!(m.chain.params, "size=32,32&mode=bilinear");
    assert_eq!(m.dataset.kind, "classification");
    let shards: Vec<_> = m.splits.values().flat_map(|s| &s.shards).collect();
    assert!(shards.len() >= 4, "{} shards", shards.len());
    assert_eq!(s.shards_written, shards.len());
    assert_eq!(s.items, 108);

    let (router, _) = app();
    let mut seen = 0;
    for (split, sp) in &m.splits {
        let listed = get(
            &router,
            &format!("/v1/datasets/medmnist/splits/{split}/items?limit=1000"),
        )
        .await
        .json();
        assert_eq!(listed["total"].as_u64().unwrap() as usize, sp.items);
        for sh in &sp.shards {
            let bytes = std::fs::read(dir.join(&sh.name)).unwrap();
            assert_eq!(bytes.len() as u64, sh.size);
            assert_eq!(sha256_hex(&bytes), sh.sha256);
            let files = members(&bytes);
            for it in &sh.items {
                let npy = &files[&format!("{}.image.npy", it.key)];
                let [off, len] = it.image;
                assert_eq!(&bytes[off as usize..(off + len) as usize], npy.as_slice());
                let served = get(
                    &router,
                    &format!(
                        "/v1/datasets/medmnist/splits/{split}/items/{}/image?format=npy&size=32,32&mode=bilinear",
                        it.id
                    ),
                )
                .await;
                assert_eq!(served.status, 200);
                assert_eq!(&served.body, npy, "{split}/{}", it.id);
                let cls = String::from_utf8(files[&format!("{}.cls", it.key)].clone()).unwrap();
                assert_eq!(cls, it.class.unwrap().to_string());
                let meta: serde_json::Value =
                    serde_json::from_slice(&files[&format!("{}.json", it.key)]).unwrap();
                assert_eq!(meta["id"], it.id.as_str());
                assert_eq!(meta["source"][0]["key"], it.source[0].key.as_str());
                seen += 1;
            }
        }
    }
    assert_eq!(seen, 108);

    // A rerun keeps everything; a damaged and a missing shard are written again, and only they.
    let again = run_to(dir, &o).await.unwrap();
    assert_eq!((again.shards_written, again.shards_kept), (0, shards.len()));
    let damaged = dir.join(&shards[1].name);
    let mut b = std::fs::read(&damaged).unwrap();
    b[700] ^= 0xff;
    std::fs::write(&damaged, b).unwrap();
    std::fs::remove_file(dir.join(&shards[2].name)).unwrap();
    let again = run_to(dir, &o).await.unwrap();
    assert_eq!(
        (again.shards_written, again.shards_kept),
        (2, shards.len() - 2)
    );
    assert_eq!(manifest_at(dir), m, "the same shards, byte for byte");

    // Another chain does not silently replace a complete export.
    let other = opts("medmnist", &[("size", "16,16")], 40 << 10);
    let e = run_to(dir, &other).await.unwrap_err().to_string();
    assert!(e.contains("--replace") && e.contains("size=32,32"), "{e}");
    let replaced = run_to(
        dir,
        &ExportOptions {
            replace: true,
            ..other
        },
    )
    .await
    .unwrap();
    assert_eq!(replaced.shards_kept, 0);
    assert_eq!(manifest_at(dir).chain.params, "size=16,16");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segmentation_shards_equal_the_volume_route() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path();
    let params = [
        ("size", "32,32,12"),
        ("a_min", "-100"),
        ("a_max", "200"),
        ("b_min", "0"),
        ("b_max", "1"),
        ("clip", "true"),
    ];
    run_to(dir, &opts("Task09_Spleen", &params, 1 << 20))
        .await
        .unwrap();
    let m = manifest_at(dir);
    assert_eq!(m.chain.route, "volume");
    assert_eq!(m.chain.members, ["image.npy", "label.npy", "json"]);
    let query: String = params.iter().map(|(k, v)| format!("&{k}={v}")).collect();
    let (router, _) = app();
    let mut labelled = 0;
    for (split, sp) in &m.splits {
        for sh in &sp.shards {
            let bytes = std::fs::read(dir.join(&sh.name)).unwrap();
            let files = members(&bytes);
            for it in &sh.items {
                let base = format!(
                    "/v1/datasets/Task09_Spleen/splits/{split}/items/{}/volume?format=npy{query}",
                    it.id
                );
                let image = get(&router, &format!("{base}&part=image")).await;
                assert_eq!(image.status, 200);
                assert_eq!(image.body, files[&format!("{}.image.npy", it.key)]);
                match it.label {
                    Some([off, len]) => {
                        let label = get(&router, &format!("{base}&part=label")).await;
                        assert_eq!(label.body, &bytes[off as usize..(off + len) as usize]);
                        assert_eq!(it.source.len(), 2);
                        labelled += 1;
                    }
                    // Decathlon's imagesTs has no masks.
                    None => assert!(!files.contains_key(&format!("{}.label.npy", it.key))),
                }
            }
        }
    }
    assert!(labelled >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chains_and_dry_runs() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("never");
    let cases = [
        (
            opts("medmnist", &[("size", "0,5")], 1 << 20),
            "chain parameter size",
        ),
        (opts("medmnist", &[("a_min", "0")], 1 << 20), "a_min"),
        (
            opts("medmnist", &[("rand_flip", "0.5")], 1 << 20),
            "rand_flip",
        ),
        (
            opts("Task09_Spleen", &[("rotate", "0.1")], 1 << 20),
            "rotate",
        ),
        (opts("nope", &[], 1 << 20), "--dataset nope"),
    ];
    for (o, needle) in cases {
        let e = export(sample_store(), None, &o)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{needle}: {e}");
    }
    let dry = ExportOptions {
        dry_run: true,
        ..opts("medmnist", &[], 1 << 20)
    };
    let s = export(sample_store(), None, &dry).await.unwrap();
    assert_eq!((s.items, s.shards_written), (108, 0));
    let empty = tempfile::tempdir().unwrap();
    let s = run_to(empty.path(), &dry).await.unwrap();
    assert_eq!(s.shards_written, 0);
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
    assert!(!dir.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_destination_with_multipart_uploads() {
    let server = start_s3().await;
    sdk_client(&server.endpoint)
        .create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    let store = s3_store(&server.endpoint, "classification/processed/").await;
    // Past MULTIPART_FROM: three parts, the last short.
    let big: Vec<u8> = (0..(40usize << 20))
        .map(|i| (i * 7 + i / 4096) as u8)
        .collect();
    let meta = store
        .put("blob.bin", Bytes::from(big.clone()))
        .await
        .unwrap();
    assert_eq!(meta.size, big.len() as u64);
    let (_, back) = store.get("blob.bin".into(), u64::MAX).await.unwrap();
    assert!(back == big, "multipart upload read back differently");
    let small = store
        .put("a/b.txt", Bytes::from_static(b"hi"))
        .await
        .unwrap();
    assert_eq!(small.size, 2);

    let dest: Arc<dyn ObjectStore> = Arc::new(store);
    let o = opts("medmnist", &[("size", "32,32")], 64 << 10);
    let s = export(sample_store(), Some(dest.clone()), &o)
        .await
        .unwrap();
    let (_, body) = dest.get(MANIFEST.into(), 1 << 30).await.unwrap();
    let m: Manifest = serde_json::from_slice(&body).unwrap();
    assert!(m.complete);
    for sh in m.splits.values().flat_map(|s| &s.shards) {
        let (_, b) = dest.get((&sh.name).into(), 1 << 30).await.unwrap();
        assert_eq!(sha256_hex(&b), sh.sha256, "{}", sh.name);
    }
    let again = export(sample_store(), Some(dest), &o).await.unwrap();
    assert_eq!(
        (again.shards_written, again.shards_kept),
        (0, s.shards_written)
    );
}

/// The real binary killed mid-export: whatever sits under a shard's final name is complete,
/// and the rerun keeps every shard the manifest recorded.
#[test]
fn a_killed_export_resumes() {
    let bin = env!("CARGO_BIN_EXE_medserve");
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let out = work.path().join("out");
    let st = std::process::Command::new(bin)
        .args(["sample-data", "--mednist-items", "3000"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(st.status.success());
    let args = |extra: &[&str]| {
        let mut c = std::process::Command::new(bin);
        c.args(["export", "--data"])
            .arg(&src)
            .arg("--to")
            .arg(&out)
            .args([
                "--dataset",
                "mednist",
                "--shard-mb",
                "1",
                "--cpu-workers",
                "2",
            ])
            .args(extra);
        c
    };
    let mut child = args(&["size=64,64"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once the manifest records at least two stored shards (or when it finished).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let recorded = std::fs::read(out.join(MANIFEST))
            .ok()
            .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
            .map_or(0, |m| {
                m.splits.values().map(|s| s.shards.len()).sum::<usize>()
            });
        if recorded >= 2 || child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no shard stored in 120 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let partial = manifest_at(&out);
    let before: BTreeMap<String, String> = walk_tars(&out);
    let recorded = partial
        .splits
        .values()
        .map(|s| s.shards.len())
        .sum::<usize>();

    let rerun = args(&["size=64,64"]).output().unwrap();
    assert!(
        rerun.status.success(),
        "{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    let stdout = String::from_utf8_lossy(&rerun.stdout);
    let kept: usize = stdout
        .split(", ")
        .find_map(|p| p.strip_suffix(" kept"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no kept count in {stdout}"));
    assert!(
        kept >= recorded,
        "kept {kept} of {recorded} recorded: {stdout}"
    );
    let done = manifest_at(&out);
    assert!(done.complete);
    assert_eq!(done.item_count(), 3000);
    let final_hashes: BTreeMap<String, String> = done
        .splits
        .values()
        .flat_map(|s| &s.shards)
        .map(|s| (s.name.clone(), s.sha256.clone()))
        .collect();
    // Every shard that existed under its final name when the export was killed was whole.
    for (name, hash) in &before {
        assert_eq!(
            final_hashes.get(name),
            Some(hash),
            "{name} was not complete"
        );
    }
    assert_eq!(walk_tars(&out), final_hashes);
}

/// `.tar` files under `dir` (relative name -> SHA-256).
fn walk_tars(dir: &Path) -> BTreeMap<String, String> {
    common::s3::files_under(dir)
        .into_iter()
        .filter(|(k, _)| k.ends_with(".tar") && !k.contains("/."))
        .map(|(k, b)| (k, sha256_hex(&b)))
        .collect()
}
