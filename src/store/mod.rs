//! Object access: one small trait, two backends (a local folder and S3).
//!
//! Keys are `/`-separated and relative to the data root. Every key passes [`validate_key`]
//! before it reaches a backend, so no key can name anything outside the root. Backends only
//! move bytes: they know nothing about datasets or images.

use std::fmt::Debug;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;

pub mod local;
#[cfg(feature = "s3")]
pub mod s3;

pub use local::LocalStore;
#[cfg(feature = "s3")]
pub use s3::{S3Options, S3Store};

/// What a listing or `head` tells about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Key relative to the data root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Changes whenever the content changes: the S3 ETag (or the modification time where a
    /// server lists no ETags), or size + mtime for local files. Part of every cache key and
    /// HTTP ETag. Only versions from the same operation are comparable (a listing's may be
    /// spelled differently from `head`'s).
    pub version: String,
    /// Set only for an object read at a given S3 version (`?version_id=`): the store's id of
    /// that version, which reads must name. Listings never set it (they list the latest).
    pub version_id: Option<String>,
}

impl ObjectMeta {
    /// Where reads of this object go: its key, at its pinned version if it has one.
    pub fn at(&self) -> ObjectAt<'_> {
        ObjectAt {
            key: &self.key,
            version_id: self.version_id.as_deref(),
        }
    }
}

/// An object to read: a key, and optionally one stored version of it (S3 `versionId`; stores
/// without versions refuse one with [`StoreError::NoVersions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectAt<'a> {
    pub key: &'a str,
    pub version_id: Option<&'a str>,
}

impl<'a> ObjectAt<'a> {
    /// The latest version of `key`.
    pub fn latest(key: &'a str) -> Self {
        ObjectAt {
            key,
            version_id: None,
        }
    }

    /// `key` at the stored version `version_id`.
    pub fn version(key: &'a str, version_id: &'a str) -> Self {
        ObjectAt {
            key,
            version_id: Some(version_id),
        }
    }
}

impl<'a> From<&'a str> for ObjectAt<'a> {
    fn from(key: &'a str) -> Self {
        ObjectAt::latest(key)
    }
}

impl<'a> From<&'a String> for ObjectAt<'a> {
    fn from(key: &'a String) -> Self {
        ObjectAt::latest(key)
    }
}

/// Failures of a storage operation.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// No object at that key.
    #[error("no object at '{0}'")]
    NotFound(String),
    /// The key is malformed or would leave the data root.
    #[error("refused key '{key}': {reason}")]
    InvalidKey { key: String, reason: &'static str },
    /// The object is larger than the caller allows.
    #[error("object '{key}' has {size} bytes, more than the limit of {limit}")]
    TooLarge { key: String, size: u64, limit: u64 },
    /// No stored version of that id (or the store keeps none: an unversioned bucket).
    #[error("no version '{version_id}' of object '{key}'")]
    NoSuchVersion { key: String, version_id: String },
    /// A version was asked of a store that keeps none (a local folder): no such version.
    #[error("no version '{version_id}' of object '{key}': {store} keeps no object versions")]
    NoVersions {
        store: &'static str,
        key: String,
        version_id: String,
    },
    /// The backend cannot be reached or failed on its side.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

/// The object access every backend provides.
#[async_trait]
pub trait ObjectStore: Send + Sync + Debug {
    /// Where the data lives, for the server's own logs (`/abs/dir` or `s3://bucket/prefix/`).
    /// Never sent to clients: responses use [`public_location`](Self::public_location).
    fn describe(&self) -> String;

    /// Where the data lives as clients are told (dataset `source`s, `/readyz`): the S3 URL
    /// `s3://bucket/prefix/`, or for a local folder a label (`./`, or `sample:` for generated
    /// sample data), never the server's filesystem path. Ends in `/` or `:`, so a dataset's
    /// root prefix can follow it directly.
    fn public_location(&self) -> String;

    /// Every object whose key starts with `prefix` (`""` = all), sorted by key. Pagination is
    /// handled inside.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;

    /// Size and version of one object (at `at.version_id` when given: its `version_id` is then
    /// set).
    async fn head(&self, at: ObjectAt<'_>) -> Result<ObjectMeta, StoreError>;

    /// The whole object, refused with [`StoreError::TooLarge`] before reading when it has more
    /// than `max_bytes` bytes.
    async fn get(
        &self,
        at: ObjectAt<'_>,
        max_bytes: u64,
    ) -> Result<(ObjectMeta, Bytes), StoreError>;

    /// Bytes `range` of an object (clamped to its end).
    async fn get_range(&self, at: ObjectAt<'_>, range: Range<u64>) -> Result<Bytes, StoreError>;
    /// Starts reading a whole object: its metadata and a *blocking* reader of its bytes, to be
    /// consumed off the async runtime (in `spawn_blocking`), so a decoder can work while the
    /// bytes still arrive. The reader fails with [`ReadFailure`] inside its `io::Error` when
    /// the store fails mid-way or the object passes `max_bytes`.
    async fn open(
        &self,
        at: ObjectAt<'_>,
        max_bytes: u64,
    ) -> Result<(ObjectMeta, ObjectReader), StoreError>;

    /// Whether reading an object whole costs about what streaming it does (a local file: no
    /// download for a decoder to overlap with), so decoders may take it whole and use a
    /// faster whole-buffer codec.
    fn whole_reads_are_cheap(&self) -> bool {
        false
    }

    /// Cheap reachability check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Writes `body` as the object `key` (replacing any), visible under its key only once
    /// complete: a local file is written under a hidden temporary name in the same folder and
    /// renamed; S3 shows an object only when its PUT (or, past [`MULTIPART_FROM`], its
    /// multipart upload) completes. Only `medserve export` writes; the server never does.
    async fn put(&self, key: &str, body: Bytes) -> Result<ObjectMeta, StoreError>;
}

/// Bodies of this size or more go to S3 as a multipart upload of [`PART_BYTES`] parts.
pub const MULTIPART_FROM: usize = 32 << 20;
/// Size of one part of a multipart upload (S3 allows 5 MiB to 5 GiB, at most 10,000 parts:
/// 16 MiB parts reach 156 GiB).
pub const PART_BYTES: usize = 16 << 20;

/// A blocking reader of one object's bytes.
pub type ObjectReader = Box<dyn ObjectRead>;

/// A blocking object reader that may wait for the network.
pub trait ObjectRead: std::io::Read + Send {
    /// Installs `guard` around the reader's waits for bytes that have not arrived. Readers that
    /// never wait on anything but the disk (local files) ignore it.
    fn set_wait_guard(&mut self, _guard: Box<dyn WaitGuard>) {}
}

impl ObjectRead for std::fs::File {}

/// Told when a reader starts and stops waiting for the network, so its caller can give up a
/// CPU slot while there is nothing to compute (a trickling store then cannot hold every
/// worker).
pub trait WaitGuard: Send {
    fn waiting(&mut self);
    fn resumed(&mut self);
}

/// Why an [`ObjectReader`] stopped: carried inside `io::Error` so decoders, which only see
/// `io::Read`, pass it through, and callers can tell a broken store (503) or an oversized
/// object (422) from broken data.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ReadFailure(pub StoreError);

impl ReadFailure {
    /// The store error inside an I/O error, if it is one of ours.
    pub fn find(e: &std::io::Error) -> Option<StoreError> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<ReadFailure>())
            .map(|f| f.0.clone())
    }
}

/// Caps a reader at `max_bytes`, failing with [`StoreError::TooLarge`] past it, and maps other
/// read errors to [`StoreError::Unavailable`].
pub struct LimitedReader<R> {
    inner: R,
    key: String,
    read: u64,
    max_bytes: u64,
}

impl<R> LimitedReader<R> {
    pub fn new(inner: R, key: &str, max_bytes: u64) -> Self {
        LimitedReader {
            inner,
            key: key.to_string(),
            read: 0,
            max_bytes,
        }
    }
}

impl<R: ObjectRead> ObjectRead for LimitedReader<R> {
    fn set_wait_guard(&mut self, guard: Box<dyn WaitGuard>) {
        self.inner.set_wait_guard(guard);
    }
}

impl<R: std::io::Read> std::io::Read for LimitedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf).map_err(|e| {
            if ReadFailure::find(&e).is_some() || e.kind() == std::io::ErrorKind::Interrupted {
                e
            } else {
                std::io::Error::other(ReadFailure(StoreError::Unavailable(format!(
                    "reading '{}': {e}",
                    self.key
                ))))
            }
        })?;
        self.read += n as u64;
        if self.read > self.max_bytes {
            return Err(std::io::Error::other(ReadFailure(StoreError::TooLarge {
                key: self.key.clone(),
                size: self.read,
                limit: self.max_bytes,
            })));
        }
        Ok(n)
    }
}

/// Longest key we accept, as S3 does.
pub const MAX_KEY_LEN: usize = 1024;

/// Refuses keys that are empty, too long, absolute, contain `\`, NUL or control characters,
/// or have empty, `.` or `..` segments. Percent-encoding is never decoded here: a `%2e%2e`
/// segment is just a strange name, and an encoded slash was already decoded by the router
/// into a `/` that this check sees.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    let bad = |reason| {
        Err(StoreError::InvalidKey {
            key: key.chars().take(200).collect(),
            reason,
        })
    };
    if key.is_empty() {
        return bad("empty key");
    }
    if key.len() > MAX_KEY_LEN {
        return bad("key longer than 1024 bytes");
    }
    if key.starts_with('/') {
        return bad("absolute keys are not allowed");
    }
    if key.chars().any(|c| c == '\\' || c.is_control()) {
        return bad("backslashes and control characters are not allowed");
    }
    if key
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return bad("empty, '.' and '..' segments are not allowed");
    }
    Ok(())
}

/// Like [`validate_key`] for listing prefixes, where `""` (everything) and a trailing `/` are fine.
pub fn validate_prefix(prefix: &str) -> Result<(), StoreError> {
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    if trimmed.is_empty() {
        return Ok(());
    }
    validate_key(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_would_escape_are_refused() {
        for k in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a\\..\\b",
            "a\0b",
            "a/b/",
            &"x".repeat(1025),
        ] {
            assert!(validate_key(k).is_err(), "{k:?} should be refused");
        }
        for k in [
            "a",
            "a/b.png",
            "%2e%2e/x",
            "Task09_Spleen/imagesTr/spleen_1.nii.gz",
        ] {
            assert!(validate_key(k).is_ok(), "{k:?} should be accepted");
        }
        assert!(validate_prefix("").is_ok());
        assert!(validate_prefix("medmnist/").is_ok());
        assert!(validate_prefix("../").is_err());
    }
}
