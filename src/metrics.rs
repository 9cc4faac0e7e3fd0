//! Counters exposed at `/metrics`, in the Prometheus text format. Each counter's name and help
//! text are written once, in [`COUNTERS`] and [`STAGES`].

use std::sync::atomic::{AtomicU64, Ordering};

/// The process's counters; shared by the pipeline (which counts) and `/metrics` (which reads).
#[derive(Debug, Default)]
pub struct Metrics {
    pub storage_gets: AtomicU64,
    pub storage_get_bytes: AtomicU64,
    pub store_waits: AtomicU64,
    pub decodes: AtomicU64,
    pub transforms: AtomicU64,
    pub encodes: AtomicU64,
    pub fg_indices: AtomicU64,
    pub fetch_us: AtomicU64,
    pub decode_us: AtomicU64,
    pub transform_us: AtomicU64,
    pub encode_us: AtomicU64,
    pub prefetched_batches: AtomicU64,
    pub prefetch_skipped: AtomicU64,
    pub disk_hits: AtomicU64,
    pub disk_misses: AtomicU64,
    pub disk_writes: AtomicU64,
    pub disk_dropped: AtomicU64,
    pub gzip_indexes: AtomicU64,
    pub parallel_decodes: AtomicU64,
    pub range_gets: AtomicU64,
    pub range_get_bytes: AtomicU64,
    pub slab_reads: AtomicU64,
}

type Counter = fn(&Metrics) -> &AtomicU64;

/// `(name, help, counter)` of every plain counter.
pub const COUNTERS: [(&str, &str, Counter); 18] = [
    (
        "medserve_storage_get_total",
        "Whole-object GETs sent to the store.",
        |m| &m.storage_gets,
    ),
    (
        "medserve_storage_get_bytes_total",
        "Bytes returned by whole-object GETs.",
        |m| &m.storage_get_bytes,
    ),
    (
        "medserve_store_wait_total",
        "Times a decoder streaming from the store gave its CPU worker back to wait for bytes.",
        |m| &m.store_waits,
    ),
    (
        "medserve_decode_total",
        "Images and volumes decoded.",
        |m| &m.decodes,
    ),
    (
        "medserve_transform_total",
        "Transform chains computed (cache misses).",
        |m| &m.transforms,
    ),
    (
        "medserve_encode_total",
        "Image and slice bodies encoded (cache misses; a warm request is served the cached body).",
        |m| &m.encodes,
    ),
    (
        "medserve_prefetched_batches_total",
        "Next batches of a plan warmed in the background after a batch was served.",
        |m| &m.prefetched_batches,
    ),
    (
        "medserve_prefetch_skipped_total",
        "Next-batch warmings skipped or cut short because the CPU pool had a queue or the prefetch slots were taken.",
        |m| &m.prefetch_skipped,
    ),
    (
        "medserve_fg_indices_computed_total",
        "Foreground/background index lists computed for patch sampling (cache misses).",
        |m| &m.fg_indices,
    ),
    (
        "medserve_disk_cache_hits_total",
        "Decoded volumes read back from the disk tier (--disk-cache-dir) instead of decoded.",
        |m| &m.disk_hits,
    ),
    (
        "medserve_disk_cache_misses_total",
        "Decoded volumes looked for in the disk tier and not found.",
        |m| &m.disk_misses,
    ),
    (
        "medserve_disk_cache_writes_total",
        "Decoded volumes written to the disk tier.",
        |m| &m.disk_writes,
    ),
    (
        "medserve_disk_cache_dropped_total",
        "Disk-tier entries that failed a check (torn, truncated, corrupted) and were deleted.",
        |m| &m.disk_dropped,
    ),
    (
        "medserve_gzip_indexes_built_total",
        "Seek indexes recorded while a large .nii.gz was decoded.",
        |m| &m.gzip_indexes,
    ),
    (
        "medserve_parallel_decodes_total",
        "Decodes that inflated a .nii.gz from its seek index on several threads.",
        |m| &m.parallel_decodes,
    ),
    (
        "medserve_storage_range_get_total",
        "Ranged GETs sent to the store (the /file route's chunks, slab reads, headers).",
        |m| &m.range_gets,
    ),
    (
        "medserve_storage_range_get_bytes_total",
        "Bytes returned by ranged GETs.",
        |m| &m.range_get_bytes,
    ),
    (
        "medserve_slab_reads_total",
        "Slices and patch slabs read from a byte range of the stored object (an uncompressed .nii, or a .nii.gz from its seek index) instead of a decoded volume.",
        |m| &m.slab_reads,
    ),
];

/// `medserve_stage_seconds_total{stage}`: microseconds spent per stage of cache misses.
pub const STAGES: [(&str, Counter); 4] = [
    ("fetch", |m| &m.fetch_us),
    ("decode", |m| &m.decode_us),
    ("transform", |m| &m.transform_us),
    ("encode", |m| &m.encode_us),
];

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds the time since `start` to a stage counter.
    pub fn time(c: &AtomicU64, start: std::time::Instant) {
        let us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        c.fetch_add(us, Ordering::Relaxed);
    }

    /// The Prometheus text of every counter, plus the cache's gauges (and the disk tier's,
    /// `(bytes, entries)`, when there is one).
    pub fn render(
        &self,
        cache_entries: u64,
        cache_bytes: u64,
        disk: Option<(u64, usize)>,
    ) -> String {
        let mut out = String::new();
        for (name, help, c) in COUNTERS {
            let v = c(self).load(Ordering::Relaxed);
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            ));
        }
        out.push_str(
            "# HELP medserve_stage_seconds_total Time spent per stage of cache misses: fetch \
             (store GETs), decode, transform (resize and scale), encode (response bodies).\n\
             # TYPE medserve_stage_seconds_total counter\n",
        );
        for (stage, c) in STAGES {
            out.push_str(&format!(
                "medserve_stage_seconds_total{{stage=\"{stage}\"}} {:.6}\n",
                c(self).load(Ordering::Relaxed) as f64 / 1e6
            ));
        }
        for (name, help, v) in [
            (
                "medserve_cache_entries",
                "Arrays held in the cache.",
                cache_entries,
            ),
            (
                "medserve_cache_bytes",
                "Approximate bytes held in the cache.",
                cache_bytes,
            ),
        ]
        .into_iter()
        .chain(disk.into_iter().flat_map(|(bytes, entries)| {
            [
                (
                    "medserve_disk_cache_entries",
                    "Entries held in the disk tier.",
                    entries as u64,
                ),
                (
                    "medserve_disk_cache_bytes",
                    "Bytes held in the disk tier.",
                    bytes,
                ),
            ]
        })) {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
            ));
        }
        out
    }
}
