//! One helper that builds the app on generated sample data, and small request helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use medserve::catalog::CatalogFile;
use medserve::config::Limits;
use medserve::store::{LocalStore, ObjectStore};
use medserve::{AppState, HttpOptions, build_router, state_for_store};
use tower::ServiceExt;

pub mod s3;
pub mod schema;

/// The sample data, written once per test binary.
pub fn sample_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("medserve-test-sample-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        medserve::sample::write_sample_data(&dir).expect("sample data");
        dir
    })
}

/// State over any store, with test-friendly settings.
pub fn state(store: Arc<dyn ObjectStore>) -> AppState {
    state_with_limits(store, Limits::default())
}

/// State over any store, with test-friendly settings and the given limits.
pub fn state_with_limits(store: Arc<dyn ObjectStore>, limits: Limits) -> AppState {
    state_for_store(
        store,
        limits,
        64 << 20,
        Duration::from_secs(300),
        CatalogFile {
            discover: true,
            ..Default::default()
        },
        2,
    )
}

/// The app over the sample data in a local folder.
pub fn app() -> (Router, AppState) {
    app_on(sample_dir())
}

/// The app over the sample data with the given limits.
pub fn app_with_limits(limits: Limits) -> (Router, AppState) {
    let store = LocalStore::new(sample_dir()).expect("store");
    let s = state_with_limits(Arc::new(store), limits);
    (build_router(s.clone(), &HttpOptions::default()), s)
}

/// The app over a given folder.
pub fn app_on(dir: &Path) -> (Router, AppState) {
    let s = state(Arc::new(LocalStore::new(dir).expect("store")));
    (build_router(s.clone(), &HttpOptions::default()), s)
}

/// The app over `store` with a cache of `cache_bytes` and, when `disk` is given, a 1 GiB disk
/// tier there.
pub fn app_with(
    store: Arc<dyn ObjectStore>,
    cache_bytes: u64,
    disk: Option<&Path>,
) -> (Router, AppState) {
    let mut s = state_for_store(
        store,
        Limits::default(),
        cache_bytes,
        Duration::from_secs(300),
        CatalogFile {
            discover: true,
            ..Default::default()
        },
        2,
    );
    if let Some(dir) = disk {
        let tier = medserve::cache::disk::DiskCache::open(dir, 1 << 30).expect("disk cache");
        s.pipeline = s.pipeline.with_disk_cache(Arc::new(tier));
    }
    (build_router(s.clone(), &HttpOptions::default()), s)
}

/// A response, read whole.
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// Sends a request through the router.
pub async fn send(app: &Router, req: Request<Body>) -> Resp {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    Resp {
        status,
        headers,
        body,
    }
}

/// `GET uri`.
pub async fn get(app: &Router, uri: &str) -> Resp {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

/// A request with no body and no headers.
pub async fn call(app: &Router, method: axum::http::Method, uri: impl AsRef<str>) -> Resp {
    let req = Request::builder()
        .method(method)
        .uri(uri.as_ref())
        .body(Body::empty())
        .unwrap();
    send(app, req).await
}

/// `GET uri` with headers.
pub async fn get_with(app: &Router, uri: &str, headers: &[(&str, &str)]) -> Resp {
    let mut b = Request::get(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(app, b.body(Body::empty()).unwrap()).await
}

/// Parses a `.npy` body into (shape, values).
pub fn parse_npy(bytes: &[u8]) -> (Vec<usize>, Vec<f32>) {
    use ndarray_npy::ReadNpyExt;
    let a = ndarray::ArrayD::<f32>::read_npy(std::io::Cursor::new(bytes)).expect("valid npy");
    (a.shape().to_vec(), a.iter().copied().collect())
}

/// Asserts a problem+json error with the given status and code, and returns its body.
pub fn assert_problem(r: &Resp, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(
        r.status.as_u16(),
        status,
        "body: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("content-type"), "application/problem+json");
    let j = r.json();
    assert_eq!(j["code"], code, "{j}");
    assert_eq!(j["status"], status);
    assert!(j["detail"].as_str().is_some_and(|d| !d.is_empty()));
    j
}

/// A counter's value at `/metrics`.
pub async fn metric(app: &Router, name: &str) -> u64 {
    metric_in(&get(app, "/metrics").await.body, name)
}

/// Waits (bounded: 10 s) until the disk tier's background writes have reached `n`.
pub async fn disk_writes_reach(app: &Router, n: u64) {
    for _ in 0..400 {
        if metric(app, "medserve_disk_cache_writes_total").await >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the disk tier never reached {n} writes");
}

/// A counter's value in a `/metrics` text.
pub fn metric_in(text: &[u8], name: &str) -> u64 {
    let text = String::from_utf8_lossy(text);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Writes `bytes` at `rel` below `dir`, creating folders.
pub fn put(dir: &Path, rel: &str, bytes: &[u8]) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

/// A float32 NIfTI-1 of `voxels` (file order, x fastest) on an identity affine.
pub fn nifti_f32(dims: [usize; 3], voxels: &[f32]) -> Vec<u8> {
    let eye = [
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    medserve::imaging::nifti::encode_nifti1(
        &dims,
        &eye,
        medserve::imaging::nifti::OutType::F32,
        bytemuck::cast_slice(voxels),
        1,
    )
}

/// A valid 8x8 grayscale PNG.
pub fn tiny_png() -> Vec<u8> {
    medserve::sample::gray_png(8, 8, &[7u8; 64]).unwrap()
}

/// A PNG signature and a valid IHDR claiming `w` x `h` 8-bit gray pixels, and nothing else.
pub fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut chunk = b"IHDR".to_vec();
    chunk.extend_from_slice(&w.to_be_bytes());
    chunk.extend_from_slice(&h.to_be_bytes());
    chunk.extend_from_slice(&[8, 0, 0, 0, 0]);
    let mut crc = flate2::Crc::new();
    crc.update(&chunk);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&chunk);
    out.extend_from_slice(&crc.sum().to_be_bytes());
    out
}

/// `medserve export` options for tests: one dataset of the sample data, `params` as the chain,
/// two workers, no progress bar.
pub fn export_opts(
    dataset: &str,
    params: &[(&str, &str)],
    shard_bytes: u64,
) -> medserve::export::ExportOptions {
    medserve::export::ExportOptions {
        dataset: Some(dataset.into()),
        splits: vec![],
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        shard_bytes,
        seed: 0,
        dry_run: false,
        replace: false,
        cpu_workers: 2,
        cache_bytes: 64 << 20,
        bar: false,
    }
}
