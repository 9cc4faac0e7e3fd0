//! What every handler shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Semaphore;

use crate::cache::ArrayCache;
use crate::catalog::Catalog;
use crate::config::Limits;
use crate::store::ObjectStore;

/// Counters exposed at `/metrics` (Prometheus text format).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Whole-object GETs sent to the store.
    pub storage_gets: AtomicU64,
    /// Bytes those GETs returned.
    pub storage_get_bytes: AtomicU64,
    /// Times a decoder reading from the store gave its CPU worker back to wait for bytes.
    pub store_waits: AtomicU64,
    /// Images decoded.
    pub decodes: AtomicU64,
    /// Transform chains computed (cache misses).
    pub transforms: AtomicU64,
    /// Microseconds spent per stage (cache misses only), for the split of a cold request.
    pub fetch_us: AtomicU64,
    pub decode_us: AtomicU64,
    pub transform_us: AtomicU64,
    pub encode_us: AtomicU64,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds the time since `start` to a stage counter.
    pub fn time(c: &AtomicU64, start: std::time::Instant) {
        let us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        c.fetch_add(us, Ordering::Relaxed);
    }
}

/// Shared application state; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Arc<dyn ObjectStore>,
    pub catalog: Arc<Catalog>,
    pub cache: ArrayCache,
    pub limits: Limits,
    /// Bounds concurrent CPU-heavy work (decode, resize, encode) to the cores we have.
    pub cpu: Arc<Semaphore>,
    /// CPU jobs waiting for a permit (bounded by `limits.max_queue`).
    pub queued: Arc<std::sync::atomic::AtomicUsize>,
    pub metrics: Arc<Metrics>,
}
