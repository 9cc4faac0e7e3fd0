//! In-memory cache of decoded and transformed arrays (moka), weighted by bytes.
//!
//! Keys are `(object key @ object version, canonical transform string)`, so a changed object
//! never serves an old array. `get_or_compute` is single-flight: concurrent requests for a
//! missing key run the computation once and all receive its result (moka's `try_get_with`).

use std::sync::Arc;

use ndarray::ArrayD;

use crate::error::AppError;
use crate::imaging::ImageInfo;

/// A cached array and, for decoded images, what the file's header said.
#[derive(Debug)]
pub struct Tensor {
    pub info: Option<ImageInfo>,
    pub data: ArrayD<f32>,
}

impl Tensor {
    /// Approximate memory held, in KiB (moka weighs in u32, so bytes would overflow at 4 GiB).
    fn weight_kib(&self) -> u32 {
        let bytes = self.data.len() * std::mem::size_of::<f32>() + 512;
        u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
    }
}

/// The array cache.
#[derive(Debug, Clone)]
pub struct ArrayCache {
    inner: moka::future::Cache<String, Arc<Tensor>>,
}

impl ArrayCache {
    /// A cache holding at most `capacity_bytes` of arrays.
    pub fn new(capacity_bytes: u64) -> Self {
        let inner = moka::future::Cache::builder()
            .max_capacity((capacity_bytes / 1024).max(1))
            .weigher(|_k: &String, v: &Arc<Tensor>| v.weight_kib())
            .build();
        ArrayCache { inner }
    }

    /// The cached value for `key`, computing it (once, however many ask at the same time) when
    /// missing. Errors are not cached.
    pub async fn get_or_compute<F>(&self, key: String, compute: F) -> Result<Arc<Tensor>, AppError>
    where
        F: std::future::Future<Output = Result<Tensor, AppError>>,
    {
        self.inner
            .try_get_with(key, async move { compute.await.map(Arc::new) })
            .await
            .map_err(|e: Arc<AppError>| (*e).clone())
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
