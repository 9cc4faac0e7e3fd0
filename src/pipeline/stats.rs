//! A dataset's statistics (`GET /v1/datasets/{dataset}/stats`), computed in the background
//! over every item of every split, and the value histogram of one item.
//!
//! The first request for a dataset starts one job; every request answers what the job has
//! counted so far (`complete: false`, `done` of `total`) until it is done. A job belongs to one
//! state of the dataset, named by a hash of every object's key and version: a re-listing that
//! changes nothing keeps the result, one that changes an object starts a new job (the old one
//! stops at its next item).
//!
//! The CPU share is bounded so that serving is never starved: at most one job runs at a time
//! over all datasets, it decodes one item at a time on one CPU worker, and before each item it
//! waits while any CPU job is queued (requests go first). Objects are decoded directly, never
//! through the cache: reading a whole dataset once would evict what requests use. 2D objects
//! are fetched a few ahead (I/O, no CPU worker), so a remote store's latency overlaps decoding.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;

use super::volume::check_grid;
use super::{Pipeline, PipelineError};
use crate::catalog::ids::fnv1a;
use crate::catalog::{Dataset, Item, Kind};
use crate::imaging::fingerprint::{
    ImageStats, ImagesReport, ItemError, VolumeStats, VolumesReport, volume_summary,
};
use crate::imaging::histogram::{ValueSummary, summarize};
use crate::imaging::volume::{Voxel, label_u8};
use crate::imaging::{self, DecodeOptions};
use crate::with_voxels;

/// 2D objects fetched ahead of the one being decoded.
const FETCH_AHEAD: usize = 8;
/// How long the job sleeps before looking at the CPU queue again.
const YIELD: Duration = Duration::from_millis(5);

/// The statistics jobs of every dataset, and the one slot they run in.
#[derive(Debug, Clone)]
pub struct StatsJobs {
    jobs: Arc<Mutex<HashMap<String, Arc<StatsJob>>>>,
    slot: Arc<tokio::sync::Semaphore>,
}

impl Default for StatsJobs {
    fn default() -> Self {
        StatsJobs {
            jobs: Default::default(),
            slot: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }
}

#[derive(Debug)]
enum Acc {
    Images(ImageStats),
    Volumes(VolumeStats),
}

/// One dataset's statistics being computed.
#[derive(Debug)]
struct StatsJob {
    fingerprint: u64,
    dataset: Dataset,
    total: usize,
    done: AtomicUsize,
    complete: AtomicBool,
    cancelled: AtomicBool,
    /// Set when an item failed for a reason that is not the object's (see [`PipelineError::is_transient`]); the job stops and the next request starts it again.
    interrupted: AtomicBool,
    acc: Mutex<Acc>,
}

/// The statistics body (see openapi.yaml's `DatasetStats`).
#[derive(Debug, Clone, Serialize)]
pub struct DatasetStats {
    pub dataset: String,
    pub kind: Kind,
    pub complete: bool,
    pub done: usize,
    pub total: usize,
    /// Split -> class -> items (classification) or split -> `subjects` -> items.
    pub counts: BTreeMap<String, BTreeMap<String, usize>>,
    pub images: Option<ImagesReport>,
    pub volumes: Option<VolumesReport>,
}

/// The dataset's state: every split name and object key and version, hashed.
fn fingerprint(ds: &Dataset) -> u64 {
    let mut text = String::new();
    for s in &ds.splits {
        text.push_str(&s.name);
        text.push('\u{1e}');
        for it in &s.items {
            for o in std::iter::once(&it.image).chain(&it.label) {
                text.push_str(&o.key);
                text.push('\u{1f}');
                text.push_str(&o.version);
                text.push('\u{1f}');
            }
        }
    }
    fnv1a(text.as_bytes())
}

fn counts(ds: &Dataset) -> BTreeMap<String, BTreeMap<String, usize>> {
    ds.splits
        .iter()
        .map(|s| {
            let per = match ds.kind {
                Kind::Classification => ds
                    .classes
                    .iter()
                    .cloned()
                    .zip(s.class_counts(ds.classes.len()))
                    .collect(),
                Kind::Segmentation => BTreeMap::from([("subjects".to_string(), s.items.len())]),
            };
            (s.name.clone(), per)
        })
        .collect()
}

/// Errors listed per job: the first ones name the objects to look at; thousands would only
/// make every poll heavier.
const MAX_ERRORS: usize = 100;

fn item_error(object: &str, e: &PipelineError) -> ItemError {
    ItemError {
        object: object.to_string(),
        detail: e.to_string(),
    }
}

impl StatsJob {
    fn report(&self) -> DatasetStats {
        let ds = &self.dataset;
        // `complete` is read before the counters: a report that says complete has them all.
        let complete = self.complete.load(Ordering::Acquire);
        let acc = self.acc.lock().unwrap_or_else(|e| e.into_inner());
        let (images, volumes) = match &*acc {
            Acc::Images(s) => (Some(s.report(&ds.classes)), None),
            Acc::Volumes(s) => (None, Some(s.report())),
        };
        DatasetStats {
            dataset: ds.name.clone(),
            kind: ds.kind,
            complete,
            done: self.done.load(Ordering::Acquire),
            total: self.total,
            counts: counts(ds),
            images,
            volumes,
        }
    }

    fn with_acc(&self, f: impl FnOnce(&mut Acc)) {
        let mut acc = self.acc.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut acc);
    }

    fn error(&self, e: ItemError) {
        self.with_acc(|acc| {
            let errors = match acc {
                Acc::Images(s) => &mut s.errors,
                Acc::Volumes(s) => &mut s.errors,
            };
            if errors.len() < MAX_ERRORS {
                errors.push(e);
            }
        });
    }

    /// Records a pipeline failure of `object`: the object's fault is listed; anything else
    /// interrupts the job (it stops, and the next request starts it again).
    fn failed(&self, object: &str, e: &PipelineError) {
        if e.is_transient() {
            tracing::warn!(object, error = %e, "dataset statistics interrupted");
            self.interrupted.store(true, Ordering::Release);
            self.cancelled.store(true, Ordering::Release);
        } else {
            self.error(item_error(object, e));
        }
    }
}

impl Pipeline {
    /// The dataset's statistics as far as they are computed; starts the job on first call
    /// (or when the dataset's objects changed since the last one).
    pub fn dataset_stats(&self, ds: &Dataset) -> DatasetStats {
        let fp = fingerprint(ds);
        let mut jobs = self.stats.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(job) = jobs.get(&ds.name).cloned()
            && job.fingerprint == fp
            && !job.interrupted.load(Ordering::Acquire)
        {
            // Reported outside the lock: other datasets' requests do not wait for this one.
            drop(jobs);
            return job.report();
        }
        let job = Arc::new(StatsJob {
            fingerprint: fp,
            dataset: ds.clone(),
            total: ds.item_count(),
            done: AtomicUsize::new(0),
            complete: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            interrupted: AtomicBool::new(false),
            acc: Mutex::new(match ds.kind {
                Kind::Classification => Acc::Images(ImageStats::default()),
                Kind::Segmentation => Acc::Volumes(VolumeStats::default()),
            }),
        });
        if let Some(old) = jobs.insert(ds.name.clone(), job.clone()) {
            old.cancelled.store(true, Ordering::Release);
        }
        drop(jobs);
        let this = self.clone();
        let report = job.report();
        tokio::spawn(async move { this.run_stats(job).await });
        report
    }

    /// Waits while CPU jobs of requests are queued: the statistics go after them.
    async fn idle_cpu(&self) {
        while self.pool.queued() > 0 {
            tokio::time::sleep(YIELD).await;
        }
    }

    /// Runs `f` on a CPU worker once the queue is empty, retrying when the pool refuses.
    async fn run_when_idle<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + Clone + 'static,
    ) -> Result<T, PipelineError> {
        loop {
            self.idle_cpu().await;
            match self.pool.run(f.clone()).await {
                Err(PipelineError::Busy(_)) => tokio::time::sleep(YIELD * 10).await,
                r => return r,
            }
        }
    }

    /// A volume decoded once the CPU queue is empty, retrying when the pool refuses.
    async fn decode_when_idle(
        &self,
        obj: &crate::store::ObjectMeta,
    ) -> Result<crate::imaging::stats::DecodedVolume, PipelineError> {
        loop {
            self.idle_cpu().await;
            match self.decode_volume(obj).await {
                Err(PipelineError::Busy(_)) => tokio::time::sleep(YIELD * 10).await,
                r => return r,
            }
        }
    }

    async fn run_stats(self, job: Arc<StatsJob>) {
        let Ok(_slot) = self.stats.slot.clone().acquire_owned().await else {
            return;
        };
        let started = std::time::Instant::now();
        match job.dataset.kind {
            Kind::Classification => self.image_stats(&job).await,
            Kind::Segmentation => self.volume_stats(&job).await,
        }
        // An interrupted job is never complete: the next request finds it interrupted and
        // starts a new one.
        if !job.cancelled.load(Ordering::Acquire) {
            job.complete.store(true, Ordering::Release);
            tracing::info!(
                dataset = %job.dataset.name,
                items = job.total,
                seconds = started.elapsed().as_secs_f64(),
                "dataset statistics complete"
            );
        }
    }

    async fn image_stats(&self, job: &Arc<StatsJob>) {
        let items: Vec<Item> = job
            .dataset
            .splits
            .iter()
            .flat_map(|s| s.items.iter().cloned())
            .collect();
        let max = self.limits.max_object_bytes;
        let opts = DecodeOptions::monai(self.limits.max_pixels);
        let mut fetched = futures::stream::iter(items)
            .map(|it| async move {
                let got = self.store.get(it.image.at(), max).await;
                (it, got)
            })
            .buffered(FETCH_AHEAD);
        while let Some((it, got)) = fetched.next().await {
            if job.cancelled.load(Ordering::Acquire) {
                return;
            }
            match got {
                Err(e) => job.failed(&it.image.key, &e.into()),
                Ok((_, bytes)) => {
                    let (j, key, class) = (job.clone(), it.image.key.clone(), it.class);
                    let count = move || match imaging::decode::decode(&bytes, &opts) {
                        Ok(d) => j.with_acc(|acc| {
                            if let Acc::Images(s) = acc {
                                s.add(class.unwrap_or(0), &d);
                            }
                        }),
                        Err(e) => j.error(ItemError {
                            object: key,
                            detail: e.to_string(),
                        }),
                    };
                    if let Err(e) = self.run_when_idle(count).await {
                        job.failed(&it.image.key, &e);
                    }
                }
            }
            job.done.fetch_add(1, Ordering::AcqRel);
        }
    }

    async fn volume_stats(&self, job: &Arc<StatsJob>) {
        let items: Vec<Item> = job
            .dataset
            .splits
            .iter()
            .flat_map(|s| s.items.iter().cloned())
            .collect();
        for it in items {
            if job.cancelled.load(Ordering::Acquire) {
                return;
            }
            if let Err((object, e)) = self.one_volume(job, &it).await {
                job.failed(&object, &e);
            }
            job.done.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// One item's volume and mask into the job's totals; a mask that cannot serve (not on
    /// the image's grid, not whole numbers) is reported and the image counted without it.
    async fn one_volume(
        &self,
        job: &Arc<StatsJob>,
        it: &Item,
    ) -> Result<(), (String, PipelineError)> {
        let img = self
            .decode_when_idle(&it.image)
            .await
            .map_err(|e| (it.image.key.clone(), e))?;
        let mut lab = None;
        if let Some(l) = &it.label {
            match self.decode_when_idle(l).await {
                Ok(v) => {
                    match check_grid(&it.image.key, &img.volume.header, &l.key, &v.volume.header) {
                        Ok(()) => lab = Some(v),
                        Err(e) => job.error(item_error(&l.key, &e)),
                    }
                }
                Err(e) if e.is_transient() => return Err((l.key.clone(), e)),
                Err(e) => job.error(item_error(&l.key, &e)),
            }
        }
        let (img, lab) = (Arc::new(img), lab.map(Arc::new));
        let (j, label_key) = (job.clone(), it.label.as_ref().map(|l| l.key.clone()));
        let count = move || {
            let mask = lab.as_ref().map(|l| label_u8(&l.volume));
            let (mask, bad) = match mask {
                Some(Err(e)) => (None, Some(e.to_string())),
                Some(Ok(m)) => (Some(m), None),
                None => (None, None),
            };
            if let (Some(detail), Some(object)) = (bad, label_key) {
                j.error(ItemError { object, detail });
            }
            let s = volume_summary(&img.volume, mask.as_ref().map(|m| m.view()).as_ref());
            j.with_acc(|acc| {
                if let Acc::Volumes(v) = acc {
                    v.add(&s);
                }
            });
        };
        self.run_when_idle(count)
            .await
            .map_err(|e| (it.image.key.clone(), e))
    }

    /// The value statistics of one item in `bins` bins: a 2D image as decoded (MONAI's
    /// decoding, before resizing and scaling), a volume's values after its scaling (HU for CT).
    /// Returns the summary, the channel count and the values per channel.
    pub async fn item_histogram(
        &self,
        item: &Item,
        kind: Kind,
        bins: usize,
    ) -> Result<(ValueSummary, usize, usize), PipelineError> {
        match kind {
            Kind::Classification => {
                let d = self
                    .decoded(item, DecodeOptions::monai(self.limits.max_pixels))
                    .await?;
                self.pool
                    .run(move || {
                        let shape = d.data.shape();
                        let (c, n) = (shape[0], shape[1..].iter().product());
                        (summarize(d.data.iter().map(|&v| f64::from(v)), bins), c, n)
                    })
                    .await
            }
            Kind::Segmentation => {
                let v = self.volume(&item.image).await?;
                let h = &v.volume.header;
                // The values are sorted as float64 for exact percentiles: bounded as a
                // volume response's float32 array is, by --max-output-mb (at twice the width).
                let values = h.voxels().saturating_mul(8);
                if values > self.limits.max_output_bytes.saturating_mul(2) {
                    return Err(PipelineError::TooLarge {
                        key: item.image.key.clone(),
                        message: format!(
                            "its {} voxels are more than this server ranks at once (--max-output-mb {})",
                            h.voxels(),
                            self.limits.max_output_bytes >> 20
                        ),
                    });
                }
                self.pool
                    .run(move || {
                        let h = &v.volume.header;
                        let (c, n) = (h.channels, h.spatial.iter().product());
                        let (s, i) = if h.is_scaled() {
                            (h.scl_slope, h.scl_inter)
                        } else {
                            (1.0, 0.0)
                        };
                        let summary = with_voxels!(&v.volume.voxels, x => {
                            summarize(x.iter().map(|&x| x.to_f64() * s + i), bins)
                        });
                        (summary, c, n)
                    })
                    .await
            }
        }
    }
}
