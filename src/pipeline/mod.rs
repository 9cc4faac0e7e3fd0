//! The one place a request's work is described: from a catalog item to an encoded body, each
//! stage cached under a typed [`Key`](crate::cache::Key) and every CPU-heavy step run off the
//! async runtime in the [`CpuPool`].
//!
//! - `image.rs`: the 2D chain (`LoadImage -> EnsureChannelFirst -> Resize -> ScaleIntensity`).
//! - `volume.rs`: NIfTI objects decoded (streamed from the store), the 3D chain, masks, and
//!   whole-volume responses.
//! - `slice.rs`: one plane of a volume rendered for eyes or programs.
//! - `patch/`: patches sampled around foreground/background voxels (MONAI
//!   `RandCropByPosNegLabeld`), with the index lists they are drawn from cached.
//! - `augment.rs`: seeded random transforms, drawn as a pure function of the request.
//! - `batch.rs`: the epoch's order, the plan's batches, a batch stacked into one `.npz`.
//! - `stats.rs`: a dataset's statistics, computed in the background at a bounded CPU share,
//!   and one item's value histogram.
//! - `montage.rs`: a split's items drawn as one labelled PNG.
//! - `file.rs`: the stored objects passed through unchanged, whole or by byte range.
//! - `slab.rs`: axial planes read from a byte range of the stored object (an uncompressed
//!   `.nii`, or a `.nii.gz` from its seek index) when the volume is not decoded.
//! - `inflate.rs`: volumes read whole and inflated with libdeflate, or through a seek index
//!   recorded on their first decode (then on all cores).
//! - `cpu.rs`: the bounded pool of CPU workers.
//!
//! Handlers get a [`Pipeline`] (store, cache, pool, limits, counters), never the store itself;
//! the pipeline knows nothing of HTTP: its errors are [`PipelineError`], mapped to HTTP once,
//! in `error.rs`. A request is two steps: `prepare` (resolve defaults against the object's
//! header, name the result with a key whose ETag the handler checks) and then compute.

use std::sync::Arc;

use crate::cache::disk::{DiskCache, Lookup, OnDisk};
use crate::cache::{ArrayCache, CacheKey, Cached, Key, KindMismatch};
use crate::catalog::Item;
use crate::config::Limits;
use crate::metrics::Metrics;
use crate::store::{ObjectStore, StoreError};

pub mod augment;
pub mod batch;
pub mod cpu;
pub mod file;
pub mod image;
mod inflate;
pub mod montage;
pub mod patch;
pub mod processed;
mod slab;
pub mod slice;
pub mod stats;
pub mod volume;

pub use cpu::CpuPool;
pub use image::{Chain2d, Scale};
pub use inflate::INDEX_MIN_BYTES;
pub use montage::MontageQuery;
pub use patch::{PatchQuery, Patches, PreparedPatches};
pub use slice::{AxisSel, SlicePart, SliceQuery, Window};
pub use volume::{Chain3d, VolumePart, VolumeQuery};

/// Why the pipeline could not produce a result.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PipelineError {
    /// The store failed (unreachable, object gone, too large, refused key).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The object could not be decoded (corrupt, truncated, unsupported, mismatched mask).
    #[error("object '{key}' could not be decoded: {message}")]
    Undecodable { key: String, message: String },
    /// The object, or what it decodes or would be sent as, exceeds a configured limit.
    #[error("object '{key}' is too large: {message}")]
    TooLarge { key: String, message: String },
    /// Something the item does not have: a mask, a slice past the end, a channel.
    #[error("{what} '{name}' not found")]
    Missing {
        what: &'static str,
        name: String,
        available: Vec<String>,
        hint: Option<String>,
    },
    /// Every CPU worker busy and the queue full, or shutting down.
    #[error("server busy: {0}")]
    Busy(String),
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl PipelineError {
    /// A failure that says nothing about the object: the store or the CPU pool could not
    /// serve just now (or a bug). Work that records per-object outcomes (statistics, montage
    /// tiles) must not keep these as the object's.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            PipelineError::Busy(_)
                | PipelineError::Internal(_)
                | PipelineError::Store(StoreError::Unavailable(_))
        )
    }
}

impl From<KindMismatch> for PipelineError {
    fn from(e: KindMismatch) -> Self {
        PipelineError::Internal(e.to_string())
    }
}

/// What a request's work needs, and nothing else.
#[derive(Debug, Clone)]
pub struct Pipeline {
    store: Arc<dyn ObjectStore>,
    cache: ArrayCache,
    pool: CpuPool,
    limits: Limits,
    metrics: Arc<Metrics>,
    /// Slots for background warming of next batches (`--prefetch-batches`).
    prefetch: Arc<tokio::sync::Semaphore>,
    /// The datasets' statistics jobs (`stats.rs`).
    stats: stats::StatsJobs,
    /// The disk tier behind the RAM cache (`--disk-cache-dir`), for decoded volumes.
    disk: Option<Arc<DiskCache>>,
    /// Seek indexes of large `.nii.gz` objects (`inflate.rs`), apart from `cache` so that
    /// volume churn does not evict them.
    indexes: ArrayCache,
    /// Large objects decoded at least once (key, version): a second decode records an index.
    decoded_once: moka::future::Cache<(String, String), ()>,
}

impl Pipeline {
    /// A pipeline over `store` with a cache of `cache_bytes` and `cpu_workers` workers.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        limits: Limits,
        cache_bytes: u64,
        cpu_workers: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        Pipeline {
            store,
            cache: ArrayCache::new(cache_bytes),
            pool: CpuPool::new(cpu_workers, limits.max_queue, metrics.clone()),
            prefetch: Arc::new(tokio::sync::Semaphore::new(limits.prefetch_batches)),
            stats: stats::StatsJobs::default(),
            disk: None,
            indexes: ArrayCache::new((cache_bytes / 16).clamp(8 << 20, 256 << 20)),
            decoded_once: moka::future::Cache::new(1 << 16),
            limits,
            metrics,
        }
    }

    /// The same pipeline with a disk tier behind its RAM cache.
    pub fn with_disk_cache(mut self, disk: Arc<DiskCache>) -> Self {
        self.disk = Some(disk);
        self
    }

    /// `compute`'s result under `key`, from the RAM cache, else (with a disk tier) from disk,
    /// else computed; what is computed here is written to the disk tier in the background.
    pub(crate) async fn cached_on_disk<T, F>(
        &self,
        key: Key<T>,
        compute: F,
    ) -> Result<Arc<T>, PipelineError>
    where
        T: Cached + OnDisk,
        F: std::future::Future<Output = Result<T, PipelineError>>,
    {
        // On the heap: nested in the cache's and the disk lookup's futures, a decode's
        // future overflowed a debug build's test-thread stack.
        let compute = Box::pin(compute);
        let Some(disk) = self.disk.clone() else {
            return self.cache.get_or_compute(key, compute).await;
        };
        let disk_key = key.untyped().clone();
        let computed_here = std::sync::atomic::AtomicBool::new(false);
        let v = self
            .cache
            .get_or_compute(key, async {
                let (d, k) = (disk.clone(), disk_key.clone());
                match self.pool.run(move || d.load::<T>(&k)).await? {
                    Lookup::Hit(v) => {
                        Metrics::inc(&self.metrics.disk_hits);
                        return Ok::<_, PipelineError>(*v);
                    }
                    Lookup::Miss => Metrics::inc(&self.metrics.disk_misses),
                    Lookup::Dropped(why) => {
                        Metrics::inc(&self.metrics.disk_dropped);
                        tracing::warn!(%why, "disk cache entry dropped; computing it again");
                    }
                }
                let v = compute.await?;
                computed_here.store(true, std::sync::atomic::Ordering::Relaxed);
                Ok(v)
            })
            .await?;
        if computed_here.load(std::sync::atomic::Ordering::Relaxed) {
            self.write_behind(disk, disk_key, v.clone());
        }
        Ok(v)
    }

    /// Writes a value to the disk tier off the request path (a blocking task outside the CPU
    /// pool: it is I/O).
    fn write_behind<T: OnDisk + Send + Sync + 'static>(
        &self,
        disk: Arc<DiskCache>,
        key: CacheKey,
        v: Arc<T>,
    ) {
        let metrics = self.metrics.clone();
        tokio::task::spawn_blocking(move || match disk.store(&key, &*v) {
            Ok(true) => Metrics::inc(&metrics.disk_writes),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "writing to the disk cache failed"),
        });
    }

    /// The disk tier's `(bytes, entries)`, when there is one.
    pub fn disk_usage(&self) -> Option<(u64, usize)> {
        self.disk.as_ref().map(|d| d.usage())
    }

    /// `obj` at the stored version `version_id` (S3 `versionId`): its size and ETag at that
    /// version, and the id every read of it then names. One HEAD request.
    pub async fn object_version(
        &self,
        obj: &crate::store::ObjectMeta,
        version_id: &str,
    ) -> Result<crate::store::ObjectMeta, PipelineError> {
        let at = crate::store::ObjectAt::version(&obj.key, version_id);
        Ok(self.store.head(at).await?)
    }

    /// The limits requests are checked against.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The cache (for its gauges).
    pub fn cache(&self) -> &ArrayCache {
        &self.cache
    }

    /// The CPU pool.
    pub fn pool(&self) -> &CpuPool {
        &self.pool
    }

    /// The counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// 404 for a mask the item does not have.
pub fn missing_label(item: &Item) -> PipelineError {
    PipelineError::Missing {
        what: "label",
        name: item.id.clone(),
        available: vec![],
        hint: Some(format!(
            "item '{}' has no mask; use part=image (only training items of a segmentation set have labels)",
            item.id
        )),
    }
}
