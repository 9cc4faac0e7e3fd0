//! S3 (and S3-protocol servers such as MinIO) through aws-sdk-s3.
//!
//! Credentials come from the standard chain unless given explicitly. Path-style addressing and
//! "checksums only when required" are used with custom endpoints because every S3-protocol
//! server we tested accepts them (see FIELD-NOTES), and AWS accepts them too.

use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use bytes::{Bytes, BytesMut};

use super::{
    LimitedReader, MULTIPART_FROM, ObjectAt, ObjectMeta, ObjectRead, ObjectReader, ObjectStore,
    PART_BYTES, ReadFailure, StoreError, WaitGuard, validate_key, validate_prefix,
};

/// How to reach a bucket.
#[derive(Debug, Clone)]
pub struct S3Options {
    pub bucket: String,
    /// Key prefix inside the bucket that acts as the data root (`""` or ending in `/`).
    pub prefix: String,
    /// Custom endpoint (MinIO, a test server); `None` = AWS (or `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// Region; `None` = from the environment, else `us-east-1`.
    pub region: Option<String>,
    /// Static credentials; `None` = the standard AWS credential chain.
    pub credentials: Option<(String, String)>,
    /// Per-attempt timeout for one S3 call, and the longest wait for the next bytes of an
    /// object being read.
    pub attempt_timeout: Duration,
    /// Attempts per call (the SDK retries throttling and 5xx with backoff and jitter).
    pub max_attempts: u32,
}

/// An S3 bucket (optionally below a prefix) as an object store.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    /// Longest wait for the next bytes of a body being read.
    stall: Duration,
}

/// A blocking reader over an S3 body, for `spawn_blocking` decoders. Bytes already received
/// are taken without blocking; only when none are there does it block on the runtime, telling
/// its [`WaitGuard`] first, and for at most `stall` (then the store counts as down: 503).
struct BodyReader {
    body: aws_sdk_s3::primitives::ByteStream,
    chunk: Bytes,
    done: bool,
    handle: tokio::runtime::Handle,
    stall: Duration,
    key: String,
    guard: Option<Box<dyn WaitGuard>>,
}

impl BodyReader {
    fn next_chunk(&mut self) -> std::io::Result<()> {
        use futures::FutureExt;
        let next = match self.body.next().now_or_never() {
            Some(next) => next,
            None => {
                if let Some(g) = self.guard.as_mut() {
                    g.waiting();
                }
                let waited = self
                    .handle
                    .block_on(tokio::time::timeout(self.stall, self.body.next()));
                if let Some(g) = self.guard.as_mut() {
                    g.resumed();
                }
                waited.map_err(|_| {
                    std::io::Error::other(ReadFailure(StoreError::Unavailable(format!(
                        "S3 sent no bytes of '{}' for {:?}",
                        self.key, self.stall
                    ))))
                })?
            }
        };
        match next {
            None => self.done = true,
            Some(Ok(b)) => self.chunk = b,
            Some(Err(e)) => {
                return Err(std::io::Error::other(ReadFailure(StoreError::Unavailable(
                    format!("S3 body of '{}': {e}", self.key),
                ))));
            }
        }
        Ok(())
    }
}

impl std::io::Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() && !self.done {
            self.next_chunk()?;
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

impl ObjectRead for BodyReader {
    fn set_wait_guard(&mut self, guard: Box<dyn WaitGuard>) {
        self.guard = Some(guard);
    }
}

impl S3Store {
    /// Sends a GET and checks the announced size: the metadata and the unread body.
    async fn get_object(
        &self,
        at: ObjectAt<'_>,
        max_bytes: u64,
    ) -> Result<(ObjectMeta, aws_sdk_s3::primitives::ByteStream), StoreError> {
        let key = at.key;
        validate_key(key)?;
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .set_version_id(at.version_id.map(String::from))
            .send()
            .await
            .map_err(|e| map_err_at(at, "get", e))?;
        let size = out.content_length().unwrap_or(0).max(0) as u64;
        if size > max_bytes {
            return Err(StoreError::TooLarge {
                key: key.into(),
                size,
                limit: max_bytes,
            });
        }
        let meta = ObjectMeta {
            key: key.into(),
            size,
            version: etag_version(out.e_tag()),
            version_id: at.version_id.map(String::from),
        };
        Ok((meta, out.body))
    }

    /// Builds the client; does not contact S3.
    pub async fn new(opts: S3Options) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(r) = &opts.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some((ak, sk)) = &opts.credentials {
            loader = loader.credentials_provider(Credentials::new(ak, sk, None, None, "medserve"));
        }
        let shared = loader.load().await;
        let mut b = aws_sdk_s3::config::Builder::from(&shared)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(RetryConfig::standard().with_max_attempts(opts.max_attempts.max(1)))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(opts.attempt_timeout)
                    .build(),
            );
        if shared.region().is_none() {
            b = b.region(Region::new("us-east-1"));
        }
        if let Some(ep) = &opts.endpoint {
            b = b.endpoint_url(ep).force_path_style(true);
        } else if shared.endpoint_url().is_some() {
            b = b.force_path_style(true);
        }
        let mut prefix = opts.prefix.trim_start_matches('/').to_string();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        S3Store {
            client: Client::from_conf(b.build()),
            bucket: opts.bucket,
            prefix,
            stall: opts.attempt_timeout,
        }
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    /// A multipart upload of `body` in [`PART_BYTES`] parts, four in flight; aborted on any
    /// failure, so no part is left billed behind a failed export (a killed process can still
    /// leave one: a bucket lifecycle rule `AbortIncompleteMultipartUpload` clears those).
    async fn put_multipart(&self, key: &str, body: Bytes) -> Result<String, StoreError> {
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
        use futures::{StreamExt, TryStreamExt};
        let full = self.full_key(key);
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| map_err(key, "create multipart upload", e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let parts = futures::stream::iter((0..body.len()).step_by(PART_BYTES).enumerate())
            .map(|(i, start)| {
                let chunk = body.slice(start..(start + PART_BYTES).min(body.len()));
                let (full, upload_id) = (full.clone(), upload_id.clone());
                async move {
                    let number = i as i32 + 1;
                    let out = self
                        .client
                        .upload_part()
                        .bucket(&self.bucket)
                        .key(full)
                        .upload_id(upload_id)
                        .part_number(number)
                        .body(chunk.into())
                        .send()
                        .await
                        .map_err(|e| map_err(key, "upload part", e))?;
                    Ok::<_, StoreError>(
                        CompletedPart::builder()
                            .part_number(number)
                            .set_e_tag(out.e_tag().map(String::from))
                            .build(),
                    )
                }
            })
            .buffered(4)
            .try_collect::<Vec<_>>()
            .await;
        let completed = match parts {
            Ok(parts) => self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(&full)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| map_err(key, "complete multipart upload", e)),
            Err(e) => Err(e),
        };
        match completed {
            Ok(out) => Ok(etag_version(out.e_tag())),
            Err(e) => {
                let _ = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&full)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                Err(e)
            }
        }
    }
}

/// The ETag without its quotes: it changes whenever the object's content does.
fn etag_version(etag: Option<&str>) -> String {
    etag.map(|e| e.trim_matches('"').to_string())
        .unwrap_or_default()
}

/// Maps an SDK error: 404 is "not found" (except a missing bucket, which is a setup problem);
/// everything else means the store cannot serve us now.
/// [`map_err`] for a read of `at`: at a version id, 404 (`NoSuchVersion`, or no such key) and
/// 400 `InvalidArgument` (AWS's answer to a malformed id, or to an id on an unversioned
/// bucket) mean that version is not there.
fn map_err_at<E>(at: ObjectAt<'_>, op: &str, e: SdkError<E, HttpResponse>) -> StoreError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    if let Some(v) = at.version_id {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let missing = status == Some(404) && e.code() != Some("NoSuchBucket");
        if missing || (status == Some(400) && e.code() == Some("InvalidArgument")) {
            return StoreError::NoSuchVersion {
                key: at.key.into(),
                version_id: v.into(),
            };
        }
    }
    map_err(at.key, op, e)
}

fn map_err<E>(key: &str, op: &str, e: SdkError<E, HttpResponse>) -> StoreError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    if status == Some(404) && e.code() != Some("NoSuchBucket") {
        return StoreError::NotFound(key.into());
    }
    let detail = aws_sdk_s3::error::DisplayErrorContext(&e).to_string();
    StoreError::Unavailable(format!("S3 {op} '{key}': {detail}"))
}

#[async_trait]
impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    fn public_location(&self) -> String {
        self.describe()
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        validate_prefix(prefix)?;
        let full = self.full_key(prefix);
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| map_err(prefix, "list", e))?;
            for o in page.contents() {
                let Some(k) = o.key() else { continue };
                let Some(rel) = k.strip_prefix(&self.prefix) else {
                    continue;
                };
                // Folder markers and keys we could never serve are left out of listings.
                if rel.ends_with('/') || validate_key(rel).is_err() {
                    continue;
                }
                out.push(ObjectMeta {
                    key: rel.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    // Some S3-protocol servers (s3s-fs) list no ETags: fall back to the
                    // modification time, which also changes with every PUT.
                    version: match o.e_tag() {
                        Some(e) => etag_version(Some(e)),
                        None => format!(
                            "lm{}-{:x}",
                            o.last_modified().map_or(0, |t| t.as_nanos()),
                            o.size().unwrap_or(0)
                        ),
                    },
                    version_id: None,
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn head(&self, at: ObjectAt<'_>) -> Result<ObjectMeta, StoreError> {
        let key = at.key;
        validate_key(key)?;
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .set_version_id(at.version_id.map(String::from))
            .send()
            .await
            .map_err(|e| map_err_at(at, "head", e))?;
        Ok(ObjectMeta {
            key: key.into(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            version: etag_version(out.e_tag()),
            version_id: at.version_id.map(String::from),
        })
    }

    async fn get(
        &self,
        at: ObjectAt<'_>,
        max_bytes: u64,
    ) -> Result<(ObjectMeta, Bytes), StoreError> {
        let key = at.key;
        let (meta, mut body) = self.get_object(at, max_bytes).await?;
        // Content-Length may lie (or be absent): stop reading as soon as the limit is passed.
        let mut buf = BytesMut::with_capacity(meta.size as usize);
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| StoreError::Unavailable(format!("S3 get '{key}': body: {e}")))?
        {
            if (buf.len() + chunk.len()) as u64 > max_bytes {
                return Err(StoreError::TooLarge {
                    key: key.into(),
                    size: (buf.len() + chunk.len()) as u64,
                    limit: max_bytes,
                });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok((meta, buf.freeze()))
    }

    async fn open(
        &self,
        at: ObjectAt<'_>,
        max_bytes: u64,
    ) -> Result<(ObjectMeta, ObjectReader), StoreError> {
        let key = at.key;
        let (meta, body) = self.get_object(at, max_bytes).await?;
        let body = BodyReader {
            body,
            chunk: Bytes::new(),
            done: false,
            handle: tokio::runtime::Handle::current(),
            stall: self.stall,
            key: key.to_string(),
            guard: None,
        };
        let reader: ObjectReader = Box::new(LimitedReader::new(body, key, max_bytes));
        Ok((meta, reader))
    }

    async fn get_range(&self, at: ObjectAt<'_>, range: Range<u64>) -> Result<Bytes, StoreError> {
        let key = at.key;
        validate_key(key)?;
        if range.end <= range.start {
            return Ok(Bytes::new());
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .set_version_id(at.version_id.map(String::from))
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .send()
            .await;
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                // 416: the range starts past the end, which reads as empty like a local file.
                if e.raw_response().map(|r| r.status().as_u16()) == Some(416) {
                    return Ok(Bytes::new());
                }
                return Err(map_err_at(at, "get range", e));
            }
        };
        let data = out
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Unavailable(format!("S3 get range '{key}': body: {e}")))?;
        Ok(data.into_bytes())
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<ObjectMeta, StoreError> {
        validate_key(key)?;
        let size = body.len() as u64;
        let version = if body.len() < MULTIPART_FROM {
            let out = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(self.full_key(key))
                .body(body.into())
                .send()
                .await
                .map_err(|e| map_err(key, "put", e))?;
            etag_version(out.e_tag())
        } else {
            self.put_multipart(key, body).await?
        };
        Ok(ObjectMeta {
            key: key.into(),
            size,
            version,
            version_id: None,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| map_err(&self.bucket, "head bucket", e))
    }
}
