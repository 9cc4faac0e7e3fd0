//! The CPU workers: CPU-heavy work (decode, resize, encode) runs on tokio's blocking pool, at
//! most `workers` jobs at a time. Jobs that find every worker busy wait in a queue of at most
//! `max_queue`; past that they are refused at once (503 + Retry-After) instead of piling up
//! until the request timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use super::PipelineError;
use crate::metrics::Metrics;
use crate::store::{ObjectReader, WaitGuard};

/// A bounded pool of CPU workers with a bounded queue.
#[derive(Debug, Clone)]
pub struct CpuPool {
    workers: Arc<Semaphore>,
    size: usize,
    queued: Arc<AtomicUsize>,
    max_queue: usize,
    metrics: Arc<Metrics>,
}

impl CpuPool {
    /// `workers` (at least 1) workers and room for `max_queue` waiting jobs.
    pub fn new(workers: usize, max_queue: usize, metrics: Arc<Metrics>) -> Self {
        CpuPool {
            workers: Arc::new(Semaphore::new(workers.max(1))),
            size: workers.max(1),
            queued: Arc::new(AtomicUsize::new(0)),
            max_queue,
            metrics,
        }
    }

    /// How many workers there are.
    pub fn workers(&self) -> usize {
        self.size
    }

    /// Runs `f` on a worker.
    pub async fn run<T, F>(&self, f: F) -> Result<T, PipelineError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let _permit = self.permit().await?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| PipelineError::Internal(format!("worker failed: {e}")))
    }

    /// [`run`](Self::run) for a decoder reading an object as it arrives: the worker slot goes
    /// with the reader, which gives it back while it waits for the store and takes it again
    /// when bytes arrive, so a slow store holds blocking threads but never every CPU worker.
    pub async fn run_streaming<T, F>(
        &self,
        mut reader: ObjectReader,
        f: F,
    ) -> Result<T, PipelineError>
    where
        T: Send + 'static,
        F: FnOnce(ObjectReader) -> T + Send + 'static,
    {
        let permit = self.permit().await?;
        reader.set_wait_guard(Box::new(CpuSlot {
            workers: self.workers.clone(),
            permit: Some(permit),
            handle: tokio::runtime::Handle::current(),
            metrics: self.metrics.clone(),
        }));
        tokio::task::spawn_blocking(move || f(reader))
            .await
            .map_err(|e| PipelineError::Internal(format!("worker failed: {e}")))
    }

    /// Jobs waiting for a worker now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Takes a free worker and holds it until the permit is dropped (tests use it to fill
    /// the pool).
    #[doc(hidden)]
    pub fn hold_worker(&self) -> Option<OwnedSemaphorePermit> {
        self.workers.clone().try_acquire_owned().ok()
    }

    /// A worker slot: at once when one is free, else after waiting in the bounded queue.
    async fn permit(&self) -> Result<OwnedSemaphorePermit, PipelineError> {
        let closed = || PipelineError::Busy("shutting down".into());
        match self.workers.clone().try_acquire_owned() {
            Ok(p) => Ok(p),
            Err(TryAcquireError::Closed) => Err(closed()),
            Err(TryAcquireError::NoPermits) => {
                struct Waiting<'a>(&'a AtomicUsize);
                impl Drop for Waiting<'_> {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                let before = self.queued.fetch_add(1, Ordering::Relaxed);
                let _waiting = Waiting(&self.queued);
                if before >= self.max_queue {
                    return Err(PipelineError::Busy(format!(
                        "every CPU worker is busy and {before} jobs are already waiting (--max-queue {})",
                        self.max_queue
                    )));
                }
                self.workers
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| closed())
            }
        }
    }
}

/// A CPU worker slot held by a blocking reader.
struct CpuSlot {
    workers: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
    handle: tokio::runtime::Handle,
    metrics: Arc<Metrics>,
}

impl WaitGuard for CpuSlot {
    fn waiting(&mut self) {
        if self.permit.take().is_some() {
            Metrics::inc(&self.metrics.store_waits);
        }
    }

    fn resumed(&mut self) {
        // Closed only at shutdown; the decode then finishes without a slot.
        self.permit = self
            .handle
            .block_on(self.workers.clone().acquire_owned())
            .ok();
    }
}
