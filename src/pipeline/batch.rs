//! Batches for training jobs: which items a rank's batch holds (a pure function of the plan's
//! integers) and the batch itself, its items transformed in parallel (each cached alone) and
//! stacked into one `.npz`.
//!
//! # The order (algorithm `fisher-yates-sha256`, version 1)
//!
//! Without a seed the order is the split's listing order. With one, it is the Fisher-Yates
//! shuffle of `0..n` (for `i` from `n-1` down to `1`, swap `i` with `j` uniform in `0..=i`),
//! `j = (u * (i+1)) >> 64` for the next 64-bit word `u` of the stream: block `k` of the stream
//! is `SHA-256("medserve-order-v1" 0 seed 0 epoch 0 n 0 k)` (numbers in decimal, `0` a zero
//! byte), read as four little-endian u64 words. So the order depends on (seed, epoch, n) only:
//! not on the request's order, the worker, the replica or the time.
//!
//! # The plan
//!
//! Global step `g` covers permutation positions `[g*B*W, (g+1)*B*W)` and rank `R` takes
//! `g*B*W + R*B ..+ B`, so a job keeping `B*W` while changing `W` keeps the epoch's order.
//! `drop_last` drops the last partial step; otherwise positions past `n` wrap to the start of
//! the permutation (`p - n`, modulo `n`) and are marked as padding.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use ndarray::{Array1, Array2, ArrayD, ArrayViewD, Axis, IxDyn, Slice};
use sha2::{Digest, Sha256};

use super::augment::{Augment, Drawn};
use super::patch::{PatchQuery, Patches};
use super::{Chain2d, Pipeline, PipelineError, VolumeQuery, missing_label};
use crate::cache::{Mask, Tensor};
use crate::catalog::Item;
use crate::imaging::encode::{Encoded, NpzBuilder};
use crate::imaging::spatial::{self, SpatialAxes};
use crate::metrics::Metrics;

/// The ordering algorithm's name, as the plan reports it.
pub const ORDER_ALGORITHM: &str = "fisher-yates-sha256";
/// Its version: any change to the order is a new version.
pub const ORDER_VERSION: u32 = 1;

/// Largest batch (and `POST .../batch` id list).
pub const MAX_BATCH: usize = 1024;
/// Largest world size.
pub const MAX_WORLD: usize = 65_536;

/// The integers that fix an epoch's batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub samples: usize,
    pub batch_size: usize,
    pub world_size: usize,
    pub drop_last: bool,
}

impl Plan {
    fn global(&self) -> usize {
        self.batch_size * self.world_size
    }

    /// Batches per rank per epoch (= global steps).
    pub fn steps(&self) -> usize {
        if self.drop_last {
            self.samples / self.global()
        } else {
            self.samples.div_ceil(self.global())
        }
    }

    /// Samples repeated to fill the last step (0 with `drop_last`).
    pub fn padded(&self) -> usize {
        if self.drop_last {
            0
        } else {
            self.steps() * self.global() - self.samples
        }
    }

    /// The permutation positions of rank `rank`'s batch `step`, each with whether it is
    /// padding. `step < steps()` and `rank < world_size` are the caller's to check.
    pub fn slots(&self, step: usize, rank: usize) -> Vec<(usize, bool)> {
        let start = step * self.global() + rank * self.batch_size;
        (start..start + self.batch_size)
            .map(|p| {
                if p < self.samples {
                    (p, false)
                } else {
                    ((p - self.samples) % self.samples, true)
                }
            })
            .collect()
    }
}

/// The epoch's order of `n` items: `order[position]` is an index into the listing.
pub fn order(seed: Option<u64>, epoch: u64, n: usize) -> Vec<u32> {
    let mut out: Vec<u32> = (0..n as u32).collect();
    let Some(seed) = seed else {
        return out;
    };
    let prefix = format!("medserve-order-v1\0{seed}\0{epoch}\0{n}\0");
    let mut words = Vec::new();
    let mut block = 0u64;
    for i in (1..n).rev() {
        if words.is_empty() {
            let d = Sha256::new()
                .chain_update(prefix.as_bytes())
                .chain_update(block.to_string().as_bytes())
                .finalize();
            block += 1;
            // Popped from the end: reverse so word 0 of a block is used first.
            words.extend(
                d.chunks_exact(8)
                    .rev()
                    .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))),
            );
        }
        let u = words.pop().expect("refilled above");
        let j = ((u as u128 * (i as u128 + 1)) >> 64) as usize;
        out.swap(i, j);
    }
    out
}

/// How each item of a batch is transformed.
#[derive(Debug, Clone)]
pub enum BatchChain {
    /// Classification: the 2D chain, then the random transforms drawn per item.
    Image { chain: Chain2d, augment: Augment },
    /// Segmentation: the 3D chain over image and mask, then the random flip per item.
    Volume {
        query: VolumeQuery,
        augment: Augment,
    },
    /// Segmentation patches: `query.num` patches per item sampled as the patch route does
    /// (seed and epoch the batch's), then the item's random flip on each.
    Patches { query: PatchQuery, augment: Augment },
}

impl BatchChain {
    fn augment(&self) -> &Augment {
        match self {
            BatchChain::Image { augment, .. }
            | BatchChain::Volume { augment, .. }
            | BatchChain::Patches { augment, .. } => augment,
        }
    }
}

/// One batch to build: its items (with whether each is padding) and how to transform them.
#[derive(Debug, Clone)]
pub struct BatchRequest {
    pub dataset: String,
    pub split: String,
    pub items: Vec<(Item, bool)>,
    pub chain: BatchChain,
}

/// How many items of one batch are in flight at once: enough to keep every worker busy
/// without filling the CPU pool's queue (past which it answers 503).
fn in_flight(workers: usize) -> usize {
    (workers * 2).max(2)
}

impl Pipeline {
    /// The batch as an `.npz`: `image` float32 `(B, C, ...)`, `label` (int64 class indices,
    /// or uint8 masks `(B, 1, ...)`), `id`, `pad`, and per random transform what it drew
    /// (`rand_flip` bool, `rand_rotate` float64 radians, NaN when it did not fire).
    pub async fn batch(&self, req: &BatchRequest) -> Result<Encoded, PipelineError> {
        let augment = *req.chain.augment();
        let drawn: Vec<Drawn> = req
            .items
            .iter()
            .map(|(it, _)| {
                if augment.is_empty() {
                    Drawn::default()
                } else {
                    augment.draw(&req.dataset, &req.split, &it.id)
                }
            })
            .collect();
        // Each item gives `reps` samples (its patches, or itself).
        let (image, label, center, reps) = match &req.chain {
            BatchChain::Image { chain, .. } => {
                (self.image_stack(req, *chain, &drawn).await?, None, None, 1)
            }
            BatchChain::Volume { query, .. } => {
                let (i, l) = self.volume_stack(req, query, &drawn).await?;
                (i, l, None, 1)
            }
            BatchChain::Patches { query, .. } => {
                let (i, l, c) = self.patch_stack(req, query, &drawn).await?;
                (i, Some(l), Some(c), query.num)
            }
        };
        let repeat = |k: usize| std::iter::repeat_n(k, reps);
        let per_sample: Vec<usize> = (0..req.items.len()).flat_map(repeat).collect();
        let ids: Vec<String> = per_sample
            .iter()
            .map(|&k| req.items[k].0.id.clone())
            .collect();
        let pad: Array1<bool> = per_sample.iter().map(|&k| req.items[k].1).collect();
        let drawn: Vec<Drawn> = per_sample.iter().map(|&k| drawn[k]).collect();
        let classes: Option<Array1<i64>> = match &req.chain {
            BatchChain::Image { .. } => Some(
                req.items
                    .iter()
                    .map(|(it, _)| it.class.map_or(-1, |c| c as i64))
                    .collect(),
            ),
            _ => None,
        };
        let t = std::time::Instant::now();
        let encoded = self
            .pool
            .run(move || -> Result<Encoded, String> {
                let mut w = NpzBuilder::new();
                let err = |e: crate::imaging::encode::EncodeError| e.to_string();
                w.array("image", &image).map_err(err)?;
                if let Some(c) = &classes {
                    w.array("label", c).map_err(err)?;
                }
                if let Some(l) = &label {
                    w.array("label", l).map_err(err)?;
                }
                if let Some(c) = &center {
                    w.array("center", c).map_err(err)?;
                }
                let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                w.strings("id", &id_refs).map_err(err)?;
                w.array("pad", &pad).map_err(err)?;
                if augment.flip.is_some() {
                    let a: Array1<bool> = drawn
                        .iter()
                        .map(|d| matches!(d.flip, Some(Some(_))))
                        .collect();
                    w.array("rand_flip", &a).map_err(err)?;
                }
                if augment.rotate.is_some() {
                    let a: Array1<f64> = drawn
                        .iter()
                        .map(|d| d.rotate_angle().unwrap_or(f64::NAN))
                        .collect();
                    w.array("rand_rotate", &a).map_err(err)?;
                }
                w.encoded().map_err(err)
            })
            .await?
            .map_err(PipelineError::Internal)?;
        Metrics::time(&self.metrics.encode_us, t);
        Ok(encoded)
    }

    /// Each item through the deterministic chain (cached alone), then its drawn flip/rotate
    /// (not cached: a random angle is rarely asked for twice), stacked.
    async fn image_stack(
        &self,
        req: &BatchRequest,
        chain: Chain2d,
        drawn: &[Drawn],
    ) -> Result<ArrayD<f32>, PipelineError> {
        // Random steps come after the chain's deterministic part, which is cached per item;
        // with none, the whole chain is (so a batch shares entries with the image route).
        let random = !req.chain.augment().is_empty();
        let base = if random {
            chain.without_spatial()
        } else {
            chain
        };
        // The first item's shape bounds the batch before the others are computed (and held).
        let one = self.transformed(&req.items[0].0, base).await?;
        self.check_size(req, req.items.len(), one.data.shape(), 4)?;
        // Owned items and a cloned handle: the futures are 'static, as `buffered` needs.
        let tensors: Vec<Arc<Tensor>> = futures::stream::iter(req.items.clone())
            .map(|(it, _)| {
                let this = self.clone();
                async move { this.transformed(&it, base).await }
            })
            .buffered(in_flight(self.pool.workers()))
            .try_collect()
            .await?;
        let first = tensors[0].data.shape().to_vec();
        if let Some((i, t)) = tensors
            .iter()
            .enumerate()
            .find(|(_, t)| t.data.shape() != first.as_slice())
        {
            let it = &req.items[i].0;
            return Err(PipelineError::Undecodable {
                key: it.image.key.clone(),
                message: format!(
                    "its image has shape {:?} after the chain and the batch's first item ({}) \
                     {:?}: a batch stacks equal shapes (channels=1 makes every image one \
                     channel)",
                    t.data.shape(),
                    req.items[0].0.id,
                    first
                ),
            });
        }
        let chains: Arc<Vec<Chain2d>> =
            Arc::new(drawn.iter().map(|d| chain.with_drawn(d)).collect());
        let tensors = Arc::new(tensors);
        let t = std::time::Instant::now();
        // The drawn flips/rotations in one contiguous run of items per CPU worker, the runs on
        // the workers side by side (one closure for the whole batch kept a single core busy),
        // then the runs joined.
        let n = tensors.len();
        let per = n.div_ceil(self.pool.workers().max(1)).max(1);
        let runs = futures::future::try_join_all((0..n).step_by(per).map(|start| {
            let (tensors, chains, first) = (tensors.clone(), chains.clone(), first.clone());
            let end = (start + per).min(n);
            self.pool.run(move || {
                let mut shape = vec![end - start];
                shape.extend_from_slice(&first);
                let mut out = ArrayD::<f32>::zeros(IxDyn(&shape));
                for (mut slot, k) in out.outer_iter_mut().zip(start..end) {
                    let (t, c) = (&tensors[k], &chains[k]);
                    if random && c.has_spatial_steps() {
                        slot.assign(&c.apply_spatial(t.data.clone()));
                    } else {
                        slot.assign(&t.data);
                    }
                }
                out
            })
        }))
        .await?;
        let out = if runs.len() == 1 {
            runs.into_iter().next().expect("one run")
        } else {
            self.pool
                .run(move || {
                    let views: Vec<_> = runs.iter().map(|a| a.view()).collect();
                    ndarray::concatenate(Axis(0), &views).expect("equal item shapes, checked")
                })
                .await?
        };
        Metrics::time(&self.metrics.transform_us, t);
        Ok(out)
    }

    /// Each item's volume (and mask, when the split has them) through the 3D chain, cached
    /// alone, then its drawn flip, stacked.
    async fn volume_stack(
        &self,
        req: &BatchRequest,
        query: &VolumeQuery,
        drawn: &[Drawn],
    ) -> Result<(ArrayD<f32>, Option<ArrayD<u8>>), PipelineError> {
        let labelled = req
            .items
            .iter()
            .filter(|(it, _)| it.label.is_some())
            .count();
        if labelled != 0 && labelled != req.items.len() {
            let (it, _) = req.items.iter().find(|(it, _)| it.label.is_none()).unwrap();
            return Err(missing_label(it));
        }
        let with_label = labelled != 0;
        let per_value = 4 + u64::from(with_label);
        let (one, _) =
            Box::pin(self.volume_item(&req.items[0].0, query.clone(), with_label)).await?;
        self.check_size(req, req.items.len(), one.data.shape(), per_value)?;
        let parts: Vec<(Arc<Tensor>, Option<Arc<Mask>>)> = futures::stream::iter(req.items.clone())
            .map(|(it, _)| {
                let (this, query) = (self.clone(), query.clone());
                async move { this.volume_item(&it, query, with_label).await }
            })
            .buffered(in_flight(self.pool.workers()))
            .try_collect()
            .await?;
        let first = parts[0].0.data.shape().to_vec();
        if let Some((i, (t, _))) = parts
            .iter()
            .enumerate()
            .find(|(_, (t, _))| t.data.shape() != first.as_slice())
        {
            let it = &req.items[i].0;
            return Err(PipelineError::Undecodable {
                key: it.image.key.clone(),
                message: format!(
                    "its volume has shape {:?} after the chain and the batch's first item ({}) \
                     {:?}: a batch stacks equal grids; ask for one with size=X,Y,Z",
                    t.data.shape(),
                    req.items[0].0.id,
                    first
                ),
            });
        }
        let flips: Vec<SpatialAxes> = drawn.iter().map(|d| d.flip_axes()).collect();
        let t = std::time::Instant::now();
        let out = self
            .pool
            .run(move || {
                let n = parts.len();
                let mut shape = vec![n];
                shape.extend_from_slice(&first);
                let mut image = ArrayD::<f32>::zeros(IxDyn(&shape));
                shape[1] = 1;
                let mut label = with_label.then(|| ArrayD::<u8>::zeros(IxDyn(&shape)));
                for (k, ((t, m), flip)) in parts.iter().zip(&flips).enumerate() {
                    let mut slot = image.index_axis_mut(Axis(0), k);
                    if flip.is_empty() {
                        slot.assign(&t.data);
                    } else {
                        slot.assign(&spatial::flip(t.data.view(), *flip));
                    }
                    if let (Some(label), Some(m)) = (label.as_mut(), m) {
                        let mut slot = label.slice_axis_mut(Axis(0), Slice::from(k..k + 1));
                        let m = m.0.view().insert_axis(Axis(0));
                        if flip.is_empty() {
                            slot.assign(&m);
                        } else {
                            let f = spatial::flip(m.index_axis(Axis(0), 0), *flip);
                            slot.assign(&f.insert_axis(Axis(0)));
                        }
                    }
                }
                (image, label)
            })
            .await?;
        Metrics::time(&self.metrics.transform_us, t);
        Ok(out)
    }

    /// Warms `next`'s items in the cache in the background, one item at a time (one worker at
    /// most), when a prefetch slot is free and the CPU pool has no queue; it stops as soon as
    /// requests queue for CPU, so serving always comes first. Errors are left for the request
    /// that asks for the batch to report.
    pub fn prefetch(&self, next: BatchRequest) {
        let permit = match self.prefetch.clone().try_acquire_owned() {
            Ok(p) if self.pool.queued() == 0 => p,
            _ => {
                Metrics::inc(&self.metrics.prefetch_skipped);
                return;
            }
        };
        let this = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let random = !next.chain.augment().is_empty();
            for (it, _) in &next.items {
                if this.pool.queued() > 0 {
                    Metrics::inc(&this.metrics.prefetch_skipped);
                    return;
                }
                let warmed = match &next.chain {
                    BatchChain::Image { chain, .. } => {
                        let base = if random {
                            chain.without_spatial()
                        } else {
                            *chain
                        };
                        this.transformed(it, base).await.map(drop)
                    }
                    BatchChain::Volume { query, .. } => this
                        .volume_item(it, query.clone(), it.label.is_some())
                        .await
                        .map(drop),
                    BatchChain::Patches { query, .. } => {
                        Box::pin(this.patches(it, query, &next.dataset, &next.split))
                            .await
                            .map(drop)
                    }
                };
                if warmed.is_err() {
                    return;
                }
            }
            Metrics::inc(&this.metrics.prefetched_batches);
        });
    }

    /// Each item's patches (sampled as the patch route samples them; the index lists cached
    /// per item), then the item's drawn flip on each patch, stacked item after item.
    async fn patch_stack(
        &self,
        req: &BatchRequest,
        query: &PatchQuery,
        drawn: &[Drawn],
    ) -> Result<(ArrayD<f32>, ArrayD<u8>, Array2<i64>), PipelineError> {
        if let Some((it, _)) = req.items.iter().find(|(it, _)| it.label.is_none()) {
            return Err(missing_label(it));
        }
        // Bounded before anything is computed: the patch (capped by the grid) bounds each.
        let samples = req.items.len() * query.num;
        self.check_size(req, samples, &query.patch, 5)?;
        let parts: Vec<Patches> = futures::stream::iter(req.items.clone())
            .map(|(it, _)| {
                let (this, query) = (self.clone(), query.clone());
                let (ds, sp) = (req.dataset.clone(), req.split.clone());
                async move { Box::pin(this.patches(&it, &query, &ds, &sp)).await }
            })
            .buffered(in_flight(self.pool.workers()))
            .try_collect()
            .await?;
        let first = parts[0].image.shape()[1..].to_vec();
        if let Some((i, p)) = parts
            .iter()
            .enumerate()
            .find(|(_, p)| p.image.shape()[1..] != first[..])
        {
            return Err(PipelineError::Undecodable {
                key: req.items[i].0.image.key.clone(),
                message: format!(
                    "its patches have shape {:?} and the batch's first item's {:?} (a patch side \
                     larger than a grid takes the whole axis): a batch stacks equal shapes; ask \
                     for a smaller patch or one grid with size=X,Y,Z",
                    &p.image.shape()[1..],
                    first
                ),
            });
        }
        self.check_size(req, samples, &first, 5)?;
        let flips: Vec<SpatialAxes> = drawn.iter().map(|d| d.flip_axes()).collect();
        let t = std::time::Instant::now();
        let out = self
            .pool
            .run(move || {
                let flipped = |a: ArrayViewD<'_, f32>, f: SpatialAxes| {
                    if f.is_empty() {
                        a.to_owned()
                    } else {
                        spatial::flip(a, f)
                    }
                };
                let flipped8 = |a: ArrayViewD<'_, u8>, f: SpatialAxes| {
                    if f.is_empty() {
                        a.to_owned()
                    } else {
                        spatial::flip(a, f)
                    }
                };
                let image: Vec<ArrayD<f32>> = parts
                    .iter()
                    .zip(&flips)
                    .flat_map(|(p, f)| {
                        p.image
                            .outer_iter()
                            .map(|a| flipped(a, *f))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                let label: Vec<ArrayD<u8>> = parts
                    .iter()
                    .zip(&flips)
                    .flat_map(|(p, f)| {
                        p.label
                            .outer_iter()
                            .map(|a| flipped8(a, *f))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                let views: Vec<_> = image.iter().map(|a| a.view()).collect();
                let image = ndarray::stack(Axis(0), &views).expect("equal shapes, checked");
                let views: Vec<_> = label.iter().map(|a| a.view()).collect();
                let label = ndarray::stack(Axis(0), &views).expect("equal shapes, checked");
                let centers: Vec<_> = parts.iter().map(|p| p.center.view()).collect();
                let center = ndarray::concatenate(Axis(0), &centers).expect("(num, 3) each");
                (image, label, center)
            })
            .await?;
        Metrics::time(&self.metrics.transform_us, t);
        Ok(out)
    }

    /// A batch is built whole in memory: bounded by `--max-output-mb` as one array is.
    fn check_size(
        &self,
        req: &BatchRequest,
        samples: usize,
        item_shape: &[usize],
        bytes_per_value: u64,
    ) -> Result<(), PipelineError> {
        let per_item = item_shape.iter().map(|&d| d as u64).product::<u64>() * bytes_per_value;
        let bytes = per_item * samples as u64;
        if bytes > self.limits.max_output_bytes {
            return Err(PipelineError::TooLarge {
                key: req.items[0].0.image.key.clone(),
                message: format!(
                    "a batch of {} samples of shape {:?} would be {} MiB and this server sends \
                     at most {} MiB per response (--max-output-mb); ask for a smaller \
                     batch_size or size",
                    samples,
                    item_shape,
                    bytes.div_ceil(1 << 20),
                    self.limits.max_output_bytes >> 20
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_a_permutation_fixed_by_seed_epoch_and_count() {
        assert_eq!(order(None, 5, 4), vec![0, 1, 2, 3]);
        assert!(order(Some(1), 0, 0).is_empty());
        assert_eq!(order(Some(1), 0, 1), vec![0]);
        for n in [2, 3, 10, 1000] {
            let o = order(Some(7), 2, n);
            let mut sorted = o.clone();
            sorted.sort();
            assert_eq!(sorted, (0..n as u32).collect::<Vec<_>>());
            assert_eq!(o, order(Some(7), 2, n));
        }
        assert_ne!(order(Some(7), 0, 100), order(Some(7), 1, 100));
        assert_ne!(order(Some(7), 0, 100), order(Some(8), 0, 100));
        // Every position is reachable by every item: first-position counts over many seeds.
        let mut first = [0usize; 4];
        for s in 0..4000 {
            first[order(Some(s), 0, 4)[0] as usize] += 1;
        }
        assert!(first.iter().all(|&c| (850..1150).contains(&c)), "{first:?}");
    }

    #[test]
    fn plan_counts_pads_and_slots() {
        let p = Plan {
            samples: 10,
            batch_size: 3,
            world_size: 2,
            drop_last: false,
        };
        assert_eq!((p.steps(), p.padded()), (2, 2));
        let mut seen = vec![0; 10];
        let mut pads = 0;
        for step in 0..p.steps() {
            for rank in 0..2 {
                for (pos, pad) in p.slots(step, rank) {
                    if pad {
                        pads += 1;
                    } else {
                        seen[pos] += 1;
                    }
                }
            }
        }
        assert_eq!(seen, vec![1; 10]);
        assert_eq!(pads, 2);
        // The pads repeat the start of the permutation.
        assert_eq!(p.slots(1, 1), vec![(9, false), (0, true), (1, true)]);
        let d = Plan {
            drop_last: true,
            ..p
        };
        assert_eq!((d.steps(), d.padded()), (1, 0));
        // Keeping B*W keeps the order: W=2, B=3 is W=1, B=6, rank by rank.
        let one = Plan {
            batch_size: 6,
            world_size: 1,
            ..p
        };
        for step in 0..2 {
            let mut two = p.slots(step, 0);
            two.extend(p.slots(step, 1));
            assert_eq!(two, one.slots(step, 0));
        }
        // Padding wraps around more than once on tiny splits.
        let tiny = Plan {
            samples: 2,
            batch_size: 5,
            world_size: 1,
            drop_last: false,
        };
        let positions: Vec<usize> = tiny.slots(0, 0).into_iter().map(|s| s.0).collect();
        assert_eq!(positions, vec![0, 1, 0, 1, 0]);
        let empty = Plan { samples: 0, ..tiny };
        assert_eq!(empty.steps(), 0);
    }
}
