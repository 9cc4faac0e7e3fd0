//! A real S3-protocol server (s3s-fs) in-process on 127.0.0.1, and helpers to fill it.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use medserve::store::{S3Options, S3Store};

pub const AK: &str = "medserve-test";
pub const SK: &str = "medserve-test-secret";
pub const BUCKET: &str = "medserve-data";

/// A running s3s-fs server; it stops when dropped (or with the test's runtime).
pub struct S3Server {
    pub endpoint: String,
    _root: Option<tempfile::TempDir>,
    /// The accept loop and every connection, so `stop` can end them all, as a crash would.
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl S3Server {
    /// Keeps `root` alive as long as the server.
    pub fn keep(&mut self, root: tempfile::TempDir) {
        self._root = Some(root);
    }

    /// Stops accepting and drops every open connection.
    pub fn stop(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A server over a fresh temporary folder on a free port.
pub async fn start_s3() -> S3Server {
    let root = tempfile::tempdir().unwrap();
    let mut s = serve_s3(root.path(), "127.0.0.1:0").await;
    s._root = Some(root);
    s
}

/// A server over `root` (which the caller keeps) on `addr`: start it again on the same address
/// to bring the same data back after [`S3Server::stop`].
pub async fn serve_s3(root: &Path, addr: &str) -> S3Server {
    serve_s3_slow(root, addr, Duration::ZERO, Default::default()).await
}

/// [`serve_s3`] whose object GETs each wait `delay` first (listings, HEADs and PUTs do not),
/// counting the GETs that started in `gets`: a slow store, for shutdown and overload tests.
pub async fn serve_s3_slow(
    root: &Path,
    addr: &str,
    delay: Duration,
    gets: Arc<AtomicUsize>,
) -> S3Server {
    serve_s3_faulty(
        root,
        addr,
        Faults {
            delay,
            gets,
            ..Default::default()
        },
    )
    .await
}

/// What a faulty S3 server does to object GETs (listings, HEADs and PUTs are left alone).
#[derive(Default, Clone)]
pub struct Faults {
    /// Wait before answering.
    pub delay: Duration,
    /// Counts the object GETs that arrived (answered or failed).
    pub gets: Arc<AtomicUsize>,
    /// The next this-many object GETs answer `503 SlowDown`, as S3 does when throttling.
    pub fail_next: Arc<AtomicUsize>,
    /// When set, bodies of keys ending in `stall_suffix` send their first 4 KiB, then wait
    /// for a permit of this semaphore before sending the rest: a store that stops mid-body.
    pub stall: Option<Arc<tokio::sync::Semaphore>>,
    pub stall_suffix: String,
}

type BoxBody = http_body_util::combinators::BoxBody<bytes::Bytes, s3s::StdError>;

/// [`serve_s3`] with [`Faults`].
pub async fn serve_s3_faulty(root: &Path, addr: &str, faults: Faults) -> S3Server {
    let fs = s3s_fs::FileSystem::new(root).unwrap();
    let mut b = s3s::service::S3ServiceBuilder::new(fs);
    b.set_auth(s3s::auth::SimpleAuth::from_single(AK, SK));
    let service = b.build();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tasks = Arc::new(std::sync::Mutex::new(Vec::new()));
    let conns = tasks.clone();
    let accept = tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let svc = service.clone();
            let faults = faults.clone();
            let faulty =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let svc = svc.clone();
                    let faults = faults.clone();
                    // `/bucket/key` is an object; `/bucket?list-type=2` a listing.
                    let path = req.uri().path().to_string();
                    let object_get = req.method() == hyper::Method::GET
                        && path.trim_start_matches('/').contains('/');
                    async move { answer(svc, req, object_get, &path, faults).await }
                });
            let conn = tokio::spawn(async move {
                let _ = ConnBuilder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(sock), faulty)
                    .await;
            });
            conns.lock().unwrap().push(conn.abort_handle());
        }
    });
    tasks.lock().unwrap().push(accept.abort_handle());
    S3Server {
        endpoint: format!("http://{addr}"),
        _root: None,
        tasks,
    }
}

async fn answer(
    svc: s3s::service::S3Service,
    req: hyper::Request<hyper::body::Incoming>,
    object_get: bool,
    path: &str,
    faults: Faults,
) -> Result<hyper::Response<BoxBody>, s3s::HttpError> {
    use http_body_util::BodyExt;
    if object_get {
        faults.gets.fetch_add(1, Ordering::SeqCst);
        if !faults.delay.is_zero() {
            tokio::time::sleep(faults.delay).await;
        }
        let throttled = faults
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if throttled {
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                        <Message>Please reduce your request rate.</Message></Error>";
            let body = http_body_util::Full::new(bytes::Bytes::from(body))
                .map_err(|never| match never {})
                .boxed();
            return Ok(hyper::Response::builder()
                .status(503)
                .header("content-type", "application/xml")
                .body(body)
                .unwrap());
        }
    }
    let res = hyper::service::Service::call(&svc, req).await?;
    let stall = match &faults.stall {
        Some(gate) if object_get && path.ends_with(&faults.stall_suffix) => gate.clone(),
        _ => return Ok(res.map(|b| b.boxed())),
    };
    let (parts, body) = res.into_parts();
    let all = body
        .collect()
        .await
        .map_err(s3s::HttpError::new)?
        .to_bytes();
    let head = all.slice(..all.len().min(4096));
    let rest = all.slice(head.len()..);
    let frames = futures::stream::unfold(0u8, move |step| {
        let (head, rest, stall) = (head.clone(), rest.clone(), stall.clone());
        async move {
            match step {
                0 => Some((Ok(hyper::body::Frame::data(head)), 1)),
                1 => {
                    stall.acquire().await.unwrap().forget();
                    Some((Ok(hyper::body::Frame::data(rest)), 2))
                }
                _ => None,
            }
        }
    });
    Ok(hyper::Response::from_parts(
        parts,
        http_body_util::StreamBody::new(frames).boxed(),
    ))
}

pub fn sdk_client(endpoint: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version_latest()
        .endpoint_url(endpoint)
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            AK, SK, None, None, "test",
        ))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

pub fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let key = p
                    .strip_prefix(dir)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .replace('\\', "/");
                out.push((key, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

pub async fn upload(client: &aws_sdk_s3::Client, dir: &Path, prefix: &str) {
    let _ = client.create_bucket().bucket(BUCKET).send().await;
    let files = files_under(dir);
    // Bounded parallelism: fast, without flooding the in-process server.
    for chunk in files.chunks(32) {
        let mut set = tokio::task::JoinSet::new();
        for (key, data) in chunk.iter().cloned() {
            let c = client.clone();
            let key = format!("{prefix}{key}");
            set.spawn(async move {
                c.put_object()
                    .bucket(BUCKET)
                    .key(&key)
                    .body(ByteStream::from(data))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    }
}

pub async fn s3_store(endpoint: &str, prefix: &str) -> S3Store {
    s3_store_with(endpoint, prefix, Duration::from_secs(10), 2).await
}

/// The test bucket below `prefix` at `endpoint`, with the given S3 timeout and attempts.
pub async fn s3_store_with(
    endpoint: &str,
    prefix: &str,
    attempt_timeout: Duration,
    max_attempts: u32,
) -> S3Store {
    S3Store::new(S3Options {
        bucket: BUCKET.into(),
        prefix: prefix.into(),
        endpoint: Some(endpoint.into()),
        region: Some("us-east-1".into()),
        credentials: Some((AK.into(), SK.into())),
        attempt_timeout,
        max_attempts,
    })
    .await
}
