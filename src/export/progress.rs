//! Progress of an export: a bar on a terminal (items, MB/s, ETA; indicatif), plain lines
//! otherwise (one per stored shard), since a log file or CI output cannot redraw a bar.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::manifest::ShardEntry;

#[derive(Clone)]
pub struct Progress(Arc<Inner>);

struct Inner {
    bar: Option<ProgressBar>,
    started: Instant,
    items_total: usize,
    shards_total: usize,
    shards_kept: usize,
    items: AtomicUsize,
    bytes: AtomicU64,
    shards: AtomicUsize,
}

impl Progress {
    pub fn new(bar: bool, items_total: usize, shards_total: usize, shards_kept: usize) -> Self {
        let bar = bar.then(|| {
            let b = ProgressBar::with_draw_target(
                Some(items_total as u64),
                ProgressDrawTarget::stderr(),
            );
            b.set_style(
                ProgressStyle::with_template("{wide_bar} {pos}/{len} items  {msg}  ETA {eta}")
                    .expect("a valid template"),
            );
            b
        });
        if bar.is_none() && shards_kept > 0 {
            eprintln!("export: {shards_kept} shards already stored and checked, kept");
        }
        Progress(Arc::new(Inner {
            bar,
            started: Instant::now(),
            items_total,
            shards_total,
            shards_kept,
            items: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            shards: AtomicUsize::new(0),
        }))
    }

    fn mb_per_s(&self) -> f64 {
        let s = self.0.started.elapsed().as_secs_f64().max(1e-3);
        self.0.bytes.load(Ordering::Relaxed) as f64 / s / 1e6
    }

    pub fn item(&self) {
        let n = self.0.items.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(b) = &self.0.bar {
            b.set_position(n as u64);
            b.set_message(format!("{:.1} MB/s", self.mb_per_s()));
        }
    }

    pub fn bytes(&self, n: u64) {
        self.0.bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub fn stored(&self, e: &ShardEntry) {
        let k = self.0.shards.fetch_add(1, Ordering::Relaxed) + 1;
        if self.0.bar.is_some() {
            return;
        }
        let i = &self.0;
        let done = i.items.load(Ordering::Relaxed);
        let secs = i.started.elapsed().as_secs_f64();
        let eta = match done {
            0 => 0.0,
            d => secs / d as f64 * (i.items_total.saturating_sub(d)) as f64,
        };
        eprintln!(
            "export: stored {} ({} items, {:.1} MB) | shard {k}/{} | items {done}/{} | \
             {:.0} items/s, {:.1} MB/s | ETA {eta:.0} s",
            e.name,
            e.items.len(),
            e.size as f64 / 1e6,
            i.shards_total,
            i.items_total,
            done as f64 / secs.max(1e-3),
            self.mb_per_s(),
        );
    }

    pub fn finish(&self) {
        if let Some(b) = &self.0.bar {
            b.finish_and_clear();
        }
        let _ = self.0.shards_kept;
    }
}
