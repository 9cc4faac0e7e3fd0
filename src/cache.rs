//! In-memory cache of decoded and transformed data (moka), weighted by bytes.
//!
//! Keys are `(object key @ object version, canonical transform string)`, so a changed object
//! never serves an old entry. `get_or_compute` is single-flight: concurrent requests for a
//! missing key run the computation once and all receive its result (moka's `try_get_with`).
//! One cache holds every kind of entry (2D tensors, decoded volumes in their stored type,
//! transformed volumes, masks, rendered slices), so one byte budget covers them all.

use std::any::Any;
use std::sync::Arc;

use ndarray::ArrayD;

use crate::error::AppError;
use crate::imaging::ImageInfo;

/// What the cache can hold: anything that knows its size.
pub trait Entry: Any + Send + Sync {
    /// Approximate memory held, in bytes.
    fn bytes(&self) -> usize;
}

/// A cached float array and, for decoded images, what the file's header said.
#[derive(Debug)]
pub struct Tensor {
    pub info: Option<ImageInfo>,
    pub data: ArrayD<f32>,
}

impl Entry for Tensor {
    fn bytes(&self) -> usize {
        self.data.len() * std::mem::size_of::<f32>()
    }
}

/// A cached mask.
#[derive(Debug)]
pub struct Mask(pub ArrayD<u8>);

impl Entry for Mask {
    fn bytes(&self) -> usize {
        self.0.len()
    }
}

/// A cached encoded body (rendered slices).
#[derive(Debug)]
pub struct Body(pub bytes::Bytes);

impl Entry for Body {
    fn bytes(&self) -> usize {
        self.0.len()
    }
}

/// moka weighs in u32, so entries are weighed in KiB (bytes would overflow at 4 GiB).
fn weight_kib(e: &Arc<dyn Entry>) -> u32 {
    u32::try_from((e.bytes() + 512).div_ceil(1024)).unwrap_or(u32::MAX)
}

/// The cache.
#[derive(Clone)]
pub struct ArrayCache {
    inner: moka::future::Cache<String, Arc<dyn Entry>>,
}

impl std::fmt::Debug for ArrayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArrayCache")
            .field("entries", &self.inner.entry_count())
            .finish()
    }
}

impl ArrayCache {
    /// A cache holding at most `capacity_bytes`.
    pub fn new(capacity_bytes: u64) -> Self {
        let inner = moka::future::Cache::builder()
            .max_capacity((capacity_bytes / 1024).max(1))
            .weigher(|_k: &String, v: &Arc<dyn Entry>| weight_kib(v))
            .build();
        ArrayCache { inner }
    }

    /// The cached value for `key`, computing it (once, however many ask at the same time) when
    /// missing. Errors are not cached.
    pub async fn get_or_compute<T, F>(&self, key: String, compute: F) -> Result<Arc<T>, AppError>
    where
        T: Entry,
        F: std::future::Future<Output = Result<T, AppError>>,
    {
        let entry = self
            .inner
            .try_get_with(key, async move {
                compute.await.map(|v| Arc::new(v) as Arc<dyn Entry>)
            })
            .await
            .map_err(|e: Arc<AppError>| (*e).clone())?;
        let any: Arc<dyn Any + Send + Sync> = entry;
        any.downcast::<T>()
            .map_err(|_| AppError::Internal("cache entry of an unexpected type".into()))
    }

    /// The cached value for `key`, if present and of type `T`.
    pub async fn get<T: Entry>(&self, key: &str) -> Option<Arc<T>> {
        let any: Arc<dyn Any + Send + Sync> = self.inner.get(key).await?;
        any.downcast::<T>().ok()
    }

    /// Number of entries (after pending maintenance).
    pub async fn entry_count(&self) -> u64 {
        self.inner.run_pending_tasks().await;
        self.inner.entry_count()
    }

    /// KiB held (after pending maintenance).
    pub async fn weighted_kib(&self) -> u64 {
        self.inner.run_pending_tasks().await;
        self.inner.weighted_size()
    }
}
