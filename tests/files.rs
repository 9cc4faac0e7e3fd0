//! `GET .../items/{item}/file` and the byte ranges of NIfTI volume responses, over HTTP in
//! process: the stored bytes exactly, `Range` -> 206 / 416, `If-Range`, `If-None-Match`, HEAD,
//! CORS exposure, never compressed, reads that cross the store's chunk size, and the same
//! answers from a real S3-protocol server.

mod common;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request};
use common::s3::{s3_store, sdk_client, start_s3, upload};
use common::{Resp, app, app_on, get, get_with, send};

const SPLEEN: &str = "/v1/datasets/Task09_Spleen/splits/train/items/spleen_10";
const SPLEEN_IMG: &str = "Task09_Spleen/imagesTr/spleen_10.nii.gz";
const SPLEEN_LAB: &str = "Task09_Spleen/labelsTr/spleen_10.nii.gz";
const SPLEEN_TEST: &str = "/v1/datasets/Task09_Spleen/splits/test/items/spleen_1";
const MEDNIST: &str = "/v1/datasets/medmnist/splits/train/items/HeadCT~005001";

fn stored(rel: &str) -> Vec<u8> {
    std::fs::read(common::sample_dir().join(rel)).unwrap()
}

fn ok(r: &Resp, status: u16) {
    assert_eq!(
        r.status,
        status,
        "{}",
        String::from_utf8_lossy(&r.body[..r.body.len().min(400)])
    );
}

async fn range(app: &Router, uri: &str, value: &str) -> Resp {
    get_with(app, uri, &[("range", value)]).await
}

#[tokio::test]
async fn the_stored_object_whole_with_validators_and_never_compressed() {
    let (app, _) = app();
    let want = stored(SPLEEN_IMG);
    let r = get_with(
        &app,
        &format!("{SPLEEN}/file"),
        &[("accept-encoding", "gzip, br")],
    )
    .await;
    ok(&r, 200);
    assert_eq!(r.body, want);
    assert_eq!(r.header("content-type"), "application/gzip");
    assert_eq!(r.header("accept-ranges"), "bytes");
    assert_eq!(r.header("content-length"), want.len().to_string());
    assert!(r.headers.get("content-encoding").is_none());
    assert_eq!(
        r.header("content-disposition"),
        "inline; filename=\"spleen_10.nii.gz\""
    );
    let etag = r.header("etag").to_string();
    assert!(etag.starts_with('"'), "{etag}");

    let again = get_with(&app, &format!("{SPLEEN}/file"), &[("if-none-match", &etag)]).await;
    ok(&again, 304);
    assert!(again.body.is_empty());

    let label = get(&app, &format!("{SPLEEN}/file?part=label")).await;
    ok(&label, 200);
    assert_eq!(label.body, stored(SPLEEN_LAB));
    assert_ne!(label.header("etag"), etag);

    let png = get(&app, &format!("{MEDNIST}/file")).await;
    ok(&png, 200);
    assert_eq!(png.header("content-type"), "image/png");
    assert!(png.body.starts_with(b"\x89PNG"));

    let head = send(
        &app,
        Request::builder()
            .method(Method::HEAD)
            .uri(format!("{SPLEEN}/file"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    ok(&head, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), want.len().to_string());
}

#[tokio::test]
async fn one_range_is_206_past_the_end_416_and_the_rest_is_ignored() {
    let (app, _) = app();
    let want = stored(SPLEEN_IMG);
    let n = want.len();
    let uri = format!("{SPLEEN}/file");
    for (value, lo, hi) in [
        ("bytes=0-351", 0, 352),
        ("bytes=100-", 100, n),
        ("bytes=-100", n - 100, n),
        ("bytes=10-10", 10, 11),
        (&format!("bytes=5-{}", n + 1000), 5, n),
    ] {
        let r = range(&app, &uri, value).await;
        ok(&r, 206);
        assert_eq!(r.body, want[lo..hi], "{value}");
        assert_eq!(
            r.header("content-range"),
            format!("bytes {lo}-{}/{n}", hi - 1),
            "{value}"
        );
        assert_eq!(r.header("content-length"), (hi - lo).to_string());
        assert_eq!(r.header("accept-ranges"), "bytes");
    }
    let r = range(&app, &uri, &format!("bytes={n}-")).await;
    ok(&r, 416);
    assert_eq!(r.header("content-range"), format!("bytes */{n}"));
    assert_eq!(r.header("content-type"), "application/problem+json");
    assert_eq!(r.json()["code"], "range-not-satisfiable");
    for ignored in ["bytes=0-1,5-9", "lines=1-2", "bytes=9-5", "bytes=x-"] {
        let r = range(&app, &uri, ignored).await;
        ok(&r, 200);
        assert_eq!(r.body, want, "{ignored}");
    }
    // If-Range: the current ETag keeps the range, anything else sends the whole object.
    let etag = get(&app, &uri).await.header("etag").to_string();
    let keep = get_with(&app, &uri, &[("range", "bytes=0-9"), ("if-range", &etag)]).await;
    ok(&keep, 206);
    assert_eq!(keep.body, want[..10]);
    for stale in ["\"0000000000000000\"", "Sat, 05 Dec 2026 10:00:00 GMT"] {
        let r = get_with(&app, &uri, &[("range", "bytes=0-9"), ("if-range", stale)]).await;
        ok(&r, 200);
        assert_eq!(r.body, want);
    }
}

#[tokio::test]
async fn cors_exposes_the_range_headers_and_errors_name_what_is_wrong() {
    let (app, _) = app();
    let r = get_with(
        &app,
        &format!("{SPLEEN}/file"),
        &[("origin", "http://viewer.example"), ("range", "bytes=0-9")],
    )
    .await;
    ok(&r, 206);
    let exposed = r
        .header("access-control-expose-headers")
        .to_ascii_lowercase();
    for h in ["content-range", "accept-ranges", "content-length", "etag"] {
        assert!(exposed.contains(h), "{h} not in {exposed}");
    }
    let r = get(&app, &format!("{SPLEEN_TEST}/file?part=label")).await;
    ok(&r, 404);
    assert_eq!(r.json()["code"], "label-not-found");
    let r = get(&app, &format!("{SPLEEN}/file?part=mask")).await;
    ok(&r, 400);
    assert_eq!(r.json()["parameter"], "part");
    assert_eq!(r.json()["allowed"], "image, label");
}

#[tokio::test]
async fn files_larger_than_one_store_read_stream_whole_and_by_range() {
    // 20 MiB of pseudo-random bytes: three ranged reads of the store (8 MiB each).
    let dir = tempfile::tempdir().unwrap();
    let mut x = 0x9e37_79b9_u32;
    let data: Vec<u8> = (0..20 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    common::put(dir.path(), "big/train/s1/img.nii.gz", &data);
    let (app, _) = app_on(dir.path());
    let uri = "/v1/datasets/big/splits/train/items/s1/file";
    let r = get(&app, uri).await;
    ok(&r, 200);
    assert!(r.body == data, "the whole body differs");
    let (lo, hi) = ((8 << 20) - 10, (16 << 20) + 10);
    let r = range(&app, uri, &format!("bytes={lo}-{}", hi - 1)).await;
    ok(&r, 206);
    assert!(r.body == data[lo..hi], "the range across two reads differs");
}

#[tokio::test]
async fn nifti_volume_responses_answer_ranges_too() {
    let (app, _) = app();
    for path in ["volume.nii", "volume.nii.gz", "volume?format=nii"] {
        let uri = format!("{SPLEEN}/{path}");
        let whole = get(&app, &uri).await;
        ok(&whole, 200);
        assert_eq!(whole.header("accept-ranges"), "bytes", "{path}");
        let n = whole.body.len();
        let r = get_with(
            &app,
            &uri,
            &[("range", "bytes=0-351"), ("accept-encoding", "gzip")],
        )
        .await;
        ok(&r, 206);
        assert!(
            r.headers.get("content-encoding").is_none(),
            "{path}: a 206 is never re-encoded"
        );
        assert_eq!(r.body, whole.body[..352], "{path}");
        assert_eq!(r.header("content-range"), format!("bytes 0-351/{n}"));
        assert_eq!(r.header("etag"), whole.header("etag"));
        let r = range(&app, &uri, &format!("bytes={n}-")).await;
        ok(&r, 416);
    }
    // Arrays are not files: a range is ignored.
    let npy = range(&app, &format!("{SPLEEN}/volume.npy"), "bytes=0-9").await;
    ok(&npy, 200);
    assert!(npy.headers.get("accept-ranges").is_none());
}

#[tokio::test]
async fn the_same_bytes_and_ranges_from_s3() {
    let server = start_s3().await;
    let client = sdk_client(&server.endpoint);
    upload(&client, common::sample_dir(), "").await;
    let s3 = common::state(Arc::new(s3_store(&server.endpoint, "").await));
    let s3_app = medserve::build_router(s3, &medserve::HttpOptions::default());
    let (local, _) = app();
    let want = stored(SPLEEN_IMG);
    let uri = format!("{SPLEEN}/file");
    let r = get(&s3_app, &uri).await;
    ok(&r, 200);
    assert_eq!(r.body, want);
    for value in ["bytes=0-351", "bytes=-1000", "bytes=4096-"] {
        let a = range(&s3_app, &uri, value).await;
        let b = range(&local, &uri, value).await;
        ok(&a, 206);
        assert_eq!(a.body, b.body, "{value}");
        assert_eq!(a.header("content-range"), b.header("content-range"));
    }
    let r = range(&s3_app, &uri, &format!("bytes={}-", want.len())).await;
    ok(&r, 416);
}
