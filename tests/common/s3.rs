//! A real S3-protocol server (s3s-fs) in-process on 127.0.0.1, and helpers to fill it.
#![allow(dead_code)]

use std::path::Path;
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
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl S3Server {
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
    gets: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> S3Server {
    let fs = s3s_fs::FileSystem::new(root).unwrap();
    let mut b = s3s::service::S3ServiceBuilder::new(fs);
    b.set_auth(s3s::auth::SimpleAuth::from_single(AK, SK));
    let service = b.build();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tasks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let conns = tasks.clone();
    let accept = tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let svc = service.clone();
            let gets = gets.clone();
            let slow =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let svc = svc.clone();
                    // `/bucket/key` is an object; `/bucket?list-type=2` a listing.
                    let object_get = req.method() == hyper::Method::GET
                        && req.uri().path().trim_start_matches('/').contains('/');
                    if object_get {
                        gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    async move {
                        if object_get && !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        hyper::service::Service::call(&svc, req).await
                    }
                });
            let conn = tokio::spawn(async move {
                let _ = ConnBuilder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(sock), slow)
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
    S3Store::new(S3Options {
        bucket: BUCKET.into(),
        prefix: prefix.into(),
        endpoint: Some(endpoint.into()),
        region: Some("us-east-1".into()),
        credentials: Some((AK.into(), SK.into())),
        attempt_timeout: Duration::from_secs(10),
        max_attempts: 2,
    })
    .await
}
