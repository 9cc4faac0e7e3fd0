//! One conformance suite run against both backends: the local folder and S3 through a real
//! S3-protocol server (s3s-fs) started in-process on 127.0.0.1. Then the whole API over S3 is
//! compared with the API over the same files on disk.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use common::s3::{BUCKET, s3_store, s3_store_with, sdk_client, start_s3, upload};
use medserve::store::{LocalStore, ObjectStore, S3Store, StoreError};

/// More than one page of ListObjectsV2 (1000 keys), so pagination is exercised.
const MANY: usize = 1050;

/// The files the conformance suite expects, written to a folder.
fn write_conformance_files(dir: &Path) {
    let w = |k: &str, v: &[u8]| {
        let p = dir.join(k);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, v).unwrap();
    };
    w("a/b/one.bin", &(0u8..100).collect::<Vec<_>>());
    w("a/two.txt", b"two");
    w("ab.txt", b"ab");
    w("c/three.bin", &[3u8; 2500]);
    for i in 0..MANY {
        w(&format!("many/{i:05}.txt"), i.to_string().as_bytes());
    }
}

/// The keys a listing of `prefix` names, in order.
async fn keys(store: &dyn ObjectStore, prefix: &str) -> Vec<String> {
    store
        .list(prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect()
}

/// The suite every backend must pass. `rewrite` replaces `a/two.txt` with new content.
async fn conformance<F, Fut>(store: &dyn ObjectStore, rewrite: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    store.ping().await.expect("ping");

    let all = store.list("").await.unwrap();
    assert_eq!(all.len(), 4 + MANY);
    let names: Vec<&str> = all.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(
        &names[..4],
        ["a/b/one.bin", "a/two.txt", "ab.txt", "c/three.bin"]
    );
    assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted");
    assert_eq!(all[0].size, 100);
    assert!(all.iter().all(|m| !m.version.is_empty()));

    // Prefixes are string prefixes, as in S3.
    let a = keys(store, "a/").await;
    assert_eq!(a, ["a/b/one.bin", "a/two.txt"]);
    let a2 = keys(store, "a").await;
    assert_eq!(a2, ["a/b/one.bin", "a/two.txt", "ab.txt"]);
    assert_eq!(store.list("many/").await.unwrap().len(), MANY, "pagination");
    assert!(store.list("nothing/").await.unwrap().is_empty());

    let head = store.head("a/b/one.bin".into()).await.unwrap();
    assert_eq!(head.size, 100);
    let (meta, bytes) = store.get("a/b/one.bin".into(), 1 << 20).await.unwrap();
    assert_eq!(bytes.as_ref(), (0u8..100).collect::<Vec<_>>().as_slice());
    assert_eq!(meta.version, head.version);

    match store.get("c/three.bin".into(), 1000).await {
        Err(StoreError::TooLarge { size, limit, .. }) => assert_eq!((size, limit), (2500, 1000)),
        other => panic!("expected TooLarge, got {other:?}"),
    }

    // Streaming reads: the same bytes, the same limits (checked by the reader when the size
    // was not refused up front), off the async runtime.
    let (meta, reader) = store.open("a/b/one.bin".into(), 1 << 20).await.unwrap();
    assert_eq!(meta.version, head.version);
    let streamed = tokio::task::spawn_blocking(move || {
        let mut reader = reader;
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut v).map(|_| v)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(streamed, (0u8..100).collect::<Vec<_>>());
    assert!(matches!(
        store.open("c/three.bin".into(), 1000).await.map(|(m, _)| m),
        Err(StoreError::TooLarge { .. })
    ));
    assert!(matches!(
        store.open("nope.bin".into(), 1000).await.map(|(m, _)| m),
        Err(StoreError::NotFound(_))
    ));
    let mut capped = medserve::store::LimitedReader::new(&[7u8; 50][..], "k", 20);
    let e = std::io::Read::read_to_end(&mut capped, &mut Vec::new()).unwrap_err();
    assert!(matches!(
        medserve::store::ReadFailure::find(&e),
        Some(StoreError::TooLarge { .. })
    ));

    assert_eq!(
        store
            .get_range("a/b/one.bin".into(), 10..20)
            .await
            .unwrap()
            .as_ref(),
        &(10u8..20).collect::<Vec<_>>()[..]
    );
    assert_eq!(
        store
            .get_range("a/b/one.bin".into(), 95..500)
            .await
            .unwrap()
            .len(),
        5
    );
    assert!(
        store
            .get_range("a/b/one.bin".into(), 200..300)
            .await
            .unwrap()
            .is_empty()
    );

    // (A key that names a folder is also "not found" on disk and on S3; s3s-fs answers 500 for
    // it, a quirk of that server, so that case is checked for the local backend only.)
    for missing in ["nope.bin", "a/b/nope"] {
        let r = store.get(missing.into(), 1 << 20).await;
        assert!(
            matches!(r, Err(StoreError::NotFound(_))),
            "get {missing}: {r:?}"
        );
        assert!(
            matches!(
                store.head(missing.into()).await,
                Err(StoreError::NotFound(_))
            ),
            "head {missing}"
        );
    }
    for bad in [
        "../x",
        "/etc/passwd",
        "a//b",
        "a/../a/two.txt",
        "a/./two.txt",
        "a\0b",
        "a\\b",
    ] {
        assert!(
            matches!(
                store.get(bad.into(), 1 << 20).await,
                Err(StoreError::InvalidKey { .. })
            ),
            "get {bad:?}"
        );
        assert!(
            matches!(
                store.head(bad.into()).await,
                Err(StoreError::InvalidKey { .. })
            ),
            "head {bad:?}"
        );
    }
    assert!(matches!(
        store.list("../").await,
        Err(StoreError::InvalidKey { .. })
    ));

    let before = store.head("a/two.txt".into()).await.unwrap().version;
    rewrite().await;
    let after = store.head("a/two.txt".into()).await.unwrap();
    assert_ne!(before, after.version, "a new content gets a new version");
    assert_eq!(after.size, "two, changed".len() as u64);
}

#[tokio::test]
async fn local_backend_conformance() {
    let dir = tempfile::tempdir().unwrap();
    write_conformance_files(dir.path());
    let store = LocalStore::new(dir.path()).unwrap();
    // The log names the folder; clients are only told a label.
    let canonical = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(store.describe(), canonical.to_str().unwrap());
    assert_eq!(store.public_location(), "./");
    assert_eq!(
        store.clone().with_label("sample:").public_location(),
        "sample:"
    );
    let p = dir.path().join("a/two.txt");
    conformance(&store, || async move {
        std::fs::write(p, "two, changed").unwrap()
    })
    .await;
    assert!(matches!(
        store.get("a/b".into(), 100).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn local_backend_refuses_symlinks_leaving_the_root() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "secret").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ok.txt"), "ok").unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        dir.path().join("leak.txt"),
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("leakdir")).unwrap();
    let store = LocalStore::new(dir.path()).unwrap();
    let listed = keys(&store, "").await;
    assert_eq!(listed, ["ok.txt"]);
    assert!(matches!(
        store.get("leak.txt".into(), 100).await,
        Err(StoreError::InvalidKey { .. })
    ));
    assert!(matches!(
        store.get("leakdir/secret.txt".into(), 100).await,
        Err(StoreError::InvalidKey { .. })
    ));
}

#[tokio::test]
async fn s3_backend_conformance() {
    let server = start_s3().await;
    let client = sdk_client(&server.endpoint);
    let dir = tempfile::tempdir().unwrap();
    write_conformance_files(dir.path());
    // Under a prefix, so the store's prefix handling is exercised too; plus a decoy outside it.
    upload(&client, dir.path(), "root/").await;
    client
        .put_object()
        .bucket(BUCKET)
        .key("rootless.txt")
        .body(ByteStream::from_static(b"outside the prefix"))
        .send()
        .await
        .unwrap();
    let store = s3_store(&server.endpoint, "root").await;
    assert_eq!(store.describe(), format!("s3://{BUCKET}/root/"));
    assert_eq!(store.public_location(), format!("s3://{BUCKET}/root/"));
    let c2 = client.clone();
    conformance(&store, || async move {
        c2.put_object()
            .bucket(BUCKET)
            .key("root/a/two.txt")
            .body(ByteStream::from_static(b"two, changed"))
            .send()
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn s3_unreachable_is_unavailable_not_a_hang() {
    // A port nobody listens on: bind, note it, close it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let store = s3_store_with(
        &format!("http://127.0.0.1:{port}"),
        "",
        Duration::from_secs(2),
        1,
    )
    .await;
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.list("").await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.get("x".into(), 10).await,
        Err(StoreError::Unavailable(_))
    ));

    // Through the API: 503 with Retry-After, readiness fails, health does not.
    let s = common::state(Arc::new(store));
    let app = medserve::build_router(s, &medserve::HttpOptions::default());
    let r = common::get(&app, "/v1/datasets").await;
    common::assert_problem(&r, 503, "storage-unavailable");
    assert_eq!(r.header("retry-after"), "5");
    common::assert_problem(
        &common::get(&app, "/readyz").await,
        503,
        "storage-unavailable",
    );
    assert_eq!(common::get(&app, "/healthz").await.status, 200);
}

/// Drops what legitimately differs between backends: where the data lives and object versions.
fn normalise(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove("source");
            m.remove("version");
            m.remove("store");
            m.values_mut().for_each(normalise);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(normalise),
        _ => {}
    }
}

#[tokio::test]
async fn every_endpoint_answers_the_same_from_s3_as_from_disk() {
    let server = start_s3().await;
    let client = sdk_client(&server.endpoint);
    let sample = common::sample_dir();
    upload(&client, sample, "").await;
    let s3 = common::state(Arc::new(s3_store(&server.endpoint, "").await));
    let s3_app = medserve::build_router(s3, &medserve::HttpOptions::default());
    let (local_app, _) = common::app();

    let item = "/v1/datasets/medmnist/splits/train/items/HeadCT~005001";
    let uris = [
        "/".to_string(),
        "/healthz".into(),
        "/readyz".into(),
        "/v1/datasets".into(),
        "/v1/datasets/medmnist".into(),
        "/v1/datasets/Task09_Spleen".into(),
        "/v1/datasets/segmentation".into(),
        "/v1/datasets/medmnist/splits".into(),
        "/v1/datasets/medmnist/splits/val/classes".into(),
        "/v1/datasets/medmnist/splits/train/items?class=CXR&offset=2&limit=3".into(),
        "/v1/datasets/Task09_Spleen/splits/train/items".into(),
        "/v1/datasets/segmentation/splits/valid/items".into(),
        item.to_string(),
        "/v1/datasets/Task09_Spleen/splits/train/items/spleen_10".into(),
        format!("{item}/image"),
        format!("{item}/image?format=npy&size=32,48&mode=bilinear"),
        format!("{item}/image?format=f32&scale=none&mode=nearest"),
        "/v1/datasets/nope".into(),
        "/v1/datasets/medmnist/splits/nope/items".into(),
        format!("{item}/image?size=0,0"),
    ];
    // Names that try to leave the data root, on both backends: never found, never a 5xx (the
    // one place these are checked).
    let long = format!("/v1/datasets/{}", "a".repeat(5000));
    for uri in [
        "/v1/datasets/..%2F..%2Fetc/splits",
        "/v1/datasets/%2e%2e/splits",
        "/v1/datasets/medmnist/splits/..%2Ftrain/items",
        "/v1/datasets/medmnist/splits/train/items/..%2F..%2F..%2Fetc%2Fpasswd",
        "/v1/datasets/medmnist/splits/train/items/%2Fetc%2Fpasswd/image",
        "/v1/datasets/medmnist/splits/train/items/HeadCT~005001%00/image",
        "/v1/datasets/Task09_Spleen/splits/train/items/..%2Fspleen_2/volume",
        "/v1/datasets/Task09_Spleen/splits/train/items/%2e%2e%2f%2e%2e%2fdataset.json/slice",
        "/v1/datasets/../../etc/passwd",
        &long,
    ] {
        for (name, a) in [("disk", &local_app), ("s3", &s3_app)] {
            let r = common::get(a, uri).await;
            assert_eq!(r.status, 404, "{name} {uri}");
            assert_eq!(r.header("content-type"), "application/problem+json");
        }
    }
    // Every GET the README prints, so its examples are known to work from S3 as well.
    let readme = readme_paths();
    assert!(readme.len() > 30, "{readme:?}");
    for uri in uris.iter().chain(&readme) {
        let a = common::get(&local_app, uri).await;
        let b = common::get(&s3_app, uri).await;
        assert_eq!(
            a.status,
            b.status,
            "{uri}: {}",
            String::from_utf8_lossy(&b.body)
        );
        assert_eq!(a.header("content-type"), b.header("content-type"), "{uri}");
        if uri == "/metrics" {
            // Counters of time spent differ from run to run.
            continue;
        }
        if a.header("content-type").contains("json") {
            let (mut ja, mut jb) = (a.json(), b.json());
            normalise(&mut ja);
            normalise(&mut jb);
            assert_eq!(ja, jb, "{uri}");
        } else {
            assert_eq!(a.body, b.body, "{uri}");
            assert_eq!(a.header("x-shape"), b.header("x-shape"), "{uri}");
        }
    }
}

/// Paths of the README's curl lines (GET only), e.g. `/v1/datasets/...?size=...`.
fn readme_paths() -> Vec<String> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    text.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("curl ") && !l.contains("-X "))
        // Object versions differ by design: a folder has none (404), and s3s-fs (which
        // keeps no versions) ignores it. tools/check_versions.py reads them from moto.
        .filter(|l| !l.contains("version_id="))
        .filter_map(|l| {
            let start = l.find("http://127.0.0.1:8080")? + "http://127.0.0.1:8080".len();
            let rest = &l[start..];
            let end = rest
                .find(|c: char| c == '\'' || c.is_whitespace())
                .unwrap_or(rest.len());
            Some(rest[..end].to_string())
        })
        .collect()
}

#[tokio::test]
async fn an_s3_outage_is_503_or_cache_and_service_recovers_without_restart() {
    let root = tempfile::tempdir().unwrap();
    let server = common::s3::serve_s3(root.path(), "127.0.0.1:0").await;
    let addr = server.endpoint.trim_start_matches("http://").to_string();
    let client = sdk_client(&server.endpoint);
    upload(&client, common::sample_dir(), "").await;
    let store = s3_store_with(&server.endpoint, "", Duration::from_secs(2), 2).await;
    let s = common::state(Arc::new(store));
    let app = medserve::build_router(s, &medserve::HttpOptions::default());
    let item = "/v1/datasets/medmnist/splits/train/items/HeadCT~005001";
    let cached = format!("{item}/image?format=npy");
    let before = common::get(&app, &cached).await;
    assert_eq!(before.status, 200);

    server.stop();
    // Liveness bound, not a speed claim: a dead store must not hang a request.
    let bounded = |uri: String| {
        let app = app.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(30), common::get(&app, &uri))
                .await
                .expect("a request hung while the store was down")
        }
    };
    let again = bounded(cached.clone()).await;
    assert_eq!(again.status, 200, "cached answers keep being served");
    assert_eq!(again.body, before.body);
    // A new transform of a decoded image is still served from the cached decode; another
    // image has to come from the store.
    assert_eq!(
        bounded(format!("{item}/image?size=21,23")).await.status,
        200
    );
    let other = "/v1/datasets/medmnist/splits/train/items/HeadCT~005002";
    let cold = bounded(format!("{other}/image")).await;
    common::assert_problem(&cold, 503, "storage-unavailable");
    assert_eq!(cold.header("retry-after"), "5");
    let vol =
        bounded("/v1/datasets/Task09_Spleen/splits/train/items/spleen_6/volume?size=8,8,4".into())
            .await;
    common::assert_problem(&vol, 503, "storage-unavailable");
    common::assert_problem(&bounded("/readyz".into()).await, 503, "storage-unavailable");
    assert_eq!(bounded("/healthz".into()).await.status, 200);

    // The same data back on the same address: served again, no restart of medserve.
    let _back = common::s3::serve_s3(root.path(), &addr).await;
    let mut recovered = None;
    for _ in 0..20 {
        let r = bounded(format!("{other}/image")).await;
        if r.status == 200 {
            recovered = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        recovered.is_some(),
        "medserve did not recover after the store came back"
    );
    assert_eq!(bounded("/readyz".into()).await.status, 200);
    let vol =
        bounded("/v1/datasets/Task09_Spleen/splits/train/items/spleen_6/volume?size=8,8,4".into())
            .await;
    assert_eq!(vol.status, 200);
}

/// An S3 store behind a faulty server, with the sample data uploaded.
async fn faulty_s3(
    faults: common::s3::Faults,
    max_attempts: u32,
) -> (common::s3::S3Server, S3Store) {
    let root = tempfile::tempdir().unwrap();
    let mut server = common::s3::serve_s3_faulty(root.path(), "127.0.0.1:0", faults).await;
    server.keep(root);
    upload(&sdk_client(&server.endpoint), common::sample_dir(), "").await;
    let store = s3_store_with(&server.endpoint, "", Duration::from_secs(30), max_attempts).await;
    (server, store)
}

#[tokio::test]
async fn a_store_stalled_mid_body_does_not_hold_the_cpu_worker() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let faults = common::s3::Faults {
        stall: Some(gate.clone()),
        stall_suffix: "subject_001/img.nii.gz".into(),
        ..Default::default()
    };
    let (_server, store) = faulty_s3(faults, 2).await;
    // One CPU worker: before decoders gave it back while waiting, a stalled body held it and
    // every other render queued behind it until the store woke up.
    let state = medserve::state_for_store(
        Arc::new(store),
        medserve::config::Limits::default(),
        64 << 20,
        Duration::from_secs(300),
        medserve::catalog::CatalogFile {
            discover: true,
            ..Default::default()
        },
        1,
    );
    let app = medserve::build_router(state, &medserve::HttpOptions::default());
    let uri = "/v1/datasets/segmentation/splits/train/items/subject_001/volume?size=16,16,8";
    let volume = tokio::spawn({
        let app = app.clone();
        async move { common::get(&app, uri).await }
    });
    // The decoder has the first 4 KiB and waits for the rest, without its worker.
    let mut waits = 0;
    for _ in 0..400 {
        waits = common::metric(&app, "medserve_store_wait_total").await;
        if waits > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        waits > 0,
        "the volume decoder never waited for the stalled body"
    );
    // Liveness bound, not a speed claim: with the worker held this would wait forever.
    let image = tokio::time::timeout(
        Duration::from_secs(30),
        common::get(
            &app,
            "/v1/datasets/medmnist/splits/train/items/HeadCT~005001/image",
        ),
    )
    .await
    .expect("a render waited for the worker a stalled store read was holding");
    assert_eq!(image.status, 200);
    assert!(
        !volume.is_finished(),
        "the volume cannot be done: its body is stalled"
    );
    // The store resumes; the volume completes, and equals the one read from disk.
    gate.add_permits(1);
    let volume = volume.await.unwrap();
    assert_eq!(volume.status, 200);
    let (disk, _) = common::app();
    assert_eq!(volume.body, common::get(&disk, uri).await.body);
}

#[tokio::test]
async fn throttled_s3_gets_are_retried_a_bounded_number_of_times() {
    let faults = common::s3::Faults::default();
    let (gets, fail_next) = (faults.gets.clone(), faults.fail_next.clone());
    let (_server, store) = faulty_s3(faults, 3).await;
    let app = medserve::build_router(common::state(Arc::new(store)), &Default::default());
    let image = |id: &str| format!("/v1/datasets/medmnist/splits/train/items/{id}/image");
    let count = || gets.load(std::sync::atomic::Ordering::SeqCst);
    // The catalog (listings and the Decathlon dataset.json files) is read first, unthrottled.
    assert_eq!(common::get(&app, "/v1/datasets").await.status, 200);

    // Two 503 SlowDown answers, then the object: the SDK's standard retry (exponential backoff
    // with jitter) gets it on the third attempt, and the client never sees the throttling.
    fail_next.store(2, std::sync::atomic::Ordering::SeqCst);
    let before = count();
    let r = common::get(&app, &image("HeadCT~005001")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        count() - before,
        3,
        "two throttled attempts and one that succeeded"
    );

    // Throttled beyond the attempt budget: exactly 3 GETs, then a 503 that says when to retry.
    fail_next.store(100, std::sync::atomic::Ordering::SeqCst);
    let before = count();
    let r = common::get(&app, &image("HeadCT~005002")).await;
    let j = common::assert_problem(&r, 503, "storage-unavailable");
    assert!(!r.header("retry-after").is_empty(), "{j}");
    assert_eq!(count() - before, 3, "retries are bounded by max_attempts");

    // The store recovers: the same request succeeds without a restart.
    fail_next.store(0, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(common::get(&app, &image("HeadCT~005002")).await.status, 200);
}
