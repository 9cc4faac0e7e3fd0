//! Batches for training jobs: the batch itself, its items transformed in parallel (each cached
//! alone) and stacked into one `.npz`, and the next one warmed in the background. Which items a
//! rank's batch holds (the epoch's order and the plan) is `plan.rs`.

mod plan;

pub use plan::{MAX_BATCH, MAX_WORLD, ORDER_ALGORITHM, ORDER_VERSION, Plan, order};

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use ndarray::{Array1, Array2, ArrayD, ArrayViewD, Axis};

use super::augment::{Augment, Drawn};
use super::patch::{PatchQuery, Patches};
use super::{Chain2d, Pipeline, PipelineError, VolumeQuery, missing_label};
use crate::cache::{Mask, Tensor};
use crate::catalog::Item;
use crate::imaging::encode::{EncodeError, Encoded, NpzBuilder};
use crate::imaging::spatial::{self, SpatialAxes};
use crate::metrics::Metrics;

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
    /// A processed dataset: each item's exported arrays read from its shard, then the random
    /// transforms drawn per item.
    Processed { augment: Augment },
}

impl BatchChain {
    fn augment(&self) -> &Augment {
        match self {
            BatchChain::Image { augment, .. }
            | BatchChain::Volume { augment, .. }
            | BatchChain::Patches { augment, .. }
            | BatchChain::Processed { augment } => augment,
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

/// What a batch's samples are, besides their pixels: one row per sample.
struct Samples {
    ids: Vec<String>,
    pad: Array1<bool>,
    drawn: Vec<Drawn>,
}

/// The stacked arrays of a batch.
struct Stacked {
    image: ArrayD<f32>,
    /// Masks `(N, 1, ...)`.
    masks: Option<ArrayD<u8>>,
    /// Class indices `(N,)`.
    classes: Option<Array1<i64>>,
    /// Patch centres `(N, 3)`.
    center: Option<Array2<i64>>,
}

/// The `.npz` of a batch: its arrays, then `id`, `pad` and what each random transform drew.
fn batch_npz(s: &Stacked, rows: &Samples, augment: &Augment) -> Result<Encoded, EncodeError> {
    let mut w = NpzBuilder::new();
    w.array("image", &s.image)?;
    if let Some(c) = &s.classes {
        w.array("label", c)?;
    }
    if let Some(m) = &s.masks {
        w.array("label", m)?;
    }
    if let Some(c) = &s.center {
        w.array("center", c)?;
    }
    let ids: Vec<&str> = rows.ids.iter().map(String::as_str).collect();
    w.strings("id", &ids)?;
    w.array("pad", &rows.pad)?;
    if augment.flip.is_some() {
        let fired: Array1<bool> = rows
            .drawn
            .iter()
            .map(|d| matches!(d.flip, Some(Some(_))))
            .collect();
        w.array("rand_flip", &fired)?;
    }
    if augment.rotate.is_some() {
        let angle: Array1<f64> = rows
            .drawn
            .iter()
            .map(|d| d.rotate_angle().unwrap_or(f64::NAN))
            .collect();
        w.array("rand_rotate", &angle)?;
    }
    w.encoded()
}

/// The shape every array of a batch shares, or a 422 naming the first item that differs.
fn same_shapes<'a>(
    req: &BatchRequest,
    shapes: impl IntoIterator<Item = &'a [usize]>,
    remedy: &str,
) -> Result<Vec<usize>, PipelineError> {
    let mut shapes = shapes.into_iter().enumerate();
    let first = shapes.next().map(|(_, s)| s.to_vec()).unwrap_or_default();
    match shapes.find(|(_, s)| *s != first.as_slice()) {
        None => Ok(first),
        Some((i, s)) => Err(PipelineError::Undecodable {
            key: req.items[i].0.image.key.clone(),
            message: format!(
                "its array has shape {s:?} after the chain and the batch's first item's ({}) \
                 {first:?}: a batch stacks equal shapes; {remedy}",
                req.items[0].0.id
            ),
        }),
    }
}

/// `a` flipped along `axes` (a copy when there are none).
fn flipped<T: Clone>(a: ArrayViewD<'_, T>, axes: SpatialAxes) -> ArrayD<T> {
    if axes.is_empty() {
        a.to_owned()
    } else {
        spatial::flip(a, axes)
    }
}

/// Arrays of one shape stacked along a new first axis.
fn stacked<T: Clone>(arrays: &[ArrayD<T>]) -> ArrayD<T> {
    let views: Vec<_> = arrays.iter().map(|a| a.view()).collect();
    ndarray::stack(Axis(0), &views).expect("one shape, checked by same_shapes")
}

/// Items' arrays and masks with what each drew applied (a 2D `(C, H, W)` array: the 2D
/// chain's flip and rotation; a volume and its mask: the flip), stacked.
fn stack_drawn(
    parts: &[(Arc<Tensor>, Option<Arc<Mask>>)],
    drawn: &[Drawn],
) -> (ArrayD<f32>, Option<ArrayD<u8>>) {
    let image: Vec<_> = parts
        .iter()
        .zip(drawn)
        .map(|((t, _), d)| match t.data.ndim() {
            3 => Chain2d::spatial_only(d).apply_spatial(t.data.clone()),
            _ => flipped(t.data.view(), d.flip_axes()),
        })
        .collect();
    let masks: Option<Vec<_>> = parts
        .iter()
        .zip(drawn)
        .map(|((_, m), d)| m.as_ref().map(|m| flipped(m.0.view(), d.flip_axes())))
        .collect();
    (stacked(&image), masks.map(|m| stacked(&m)))
}

impl Pipeline {
    /// The batch as an `.npz`: `image` float32 `(N, C, ...)`, `label` (int64 class indices,
    /// or uint8 masks `(N, 1, ...)`), `center` for patches, `id`, `pad`, and per random
    /// transform what it drew (`rand_flip` bool, `rand_rotate` float64 radians, NaN when it
    /// did not fire). `N` is the batch's items, times `patches_per_item` for patches.
    pub async fn batch(&self, req: &BatchRequest) -> Result<Encoded, PipelineError> {
        let augment = *req.chain.augment();
        let drawn: Vec<Drawn> = req
            .items
            .iter()
            .map(|(it, _)| match augment.is_empty() {
                true => Drawn::default(),
                false => augment.draw(&req.dataset, &req.split, &it.id),
            })
            .collect();
        // Each item gives `reps` samples: its patches, or itself.
        let (stacked, reps) = match &req.chain {
            BatchChain::Image { chain, .. } => (self.image_stack(req, *chain, &drawn).await?, 1),
            BatchChain::Volume { query, .. } => (self.volume_stack(req, query, &drawn).await?, 1),
            BatchChain::Patches { query, .. } => {
                (self.patch_stack(req, query, &drawn).await?, query.num)
            }
            BatchChain::Processed { .. } => (self.processed_stack(req, &drawn).await?, 1),
        };
        let of_sample: Vec<usize> = (0..req.items.len())
            .flat_map(|k| std::iter::repeat_n(k, reps))
            .collect();
        let rows = Samples {
            ids: of_sample
                .iter()
                .map(|&k| req.items[k].0.id.clone())
                .collect(),
            pad: of_sample.iter().map(|&k| req.items[k].1).collect(),
            drawn: of_sample.iter().map(|&k| drawn[k]).collect(),
        };
        let t = std::time::Instant::now();
        let encoded = self
            .pool
            .run(move || batch_npz(&stacked, &rows, &augment))
            .await?
            .map_err(|e| PipelineError::Internal(e.to_string()))?;
        Metrics::time(&self.metrics.encode_us, t);
        Ok(encoded)
    }

    /// Each item through the deterministic chain (cached alone), then its drawn flip/rotate
    /// (not cached: a random angle is rarely asked for twice), stacked; labels are the
    /// items' class indices.
    async fn image_stack(
        &self,
        req: &BatchRequest,
        chain: Chain2d,
        drawn: &[Drawn],
    ) -> Result<Stacked, PipelineError> {
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
        same_shapes(
            req,
            tensors.iter().map(|t| t.data.shape()),
            "channels=1 makes every image one channel",
        )?;
        let chains: Vec<Chain2d> = drawn.iter().map(|d| chain.with_drawn(d)).collect();
        let classes = req
            .items
            .iter()
            .map(|(it, _)| it.class.map_or(-1, |c| c as i64))
            .collect();
        // The drawn flips and rotations on every worker side by side (one contiguous run of
        // items each: one closure for the whole batch kept a single core busy), then stacked.
        let (tensors, chains) = (Arc::new(tensors), Arc::new(chains));
        let n = tensors.len();
        let per = n.div_ceil(self.pool.workers()).max(1);
        let t = std::time::Instant::now();
        let runs = futures::future::try_join_all((0..n).step_by(per).map(|start| {
            let (tensors, chains) = (tensors.clone(), chains.clone());
            self.pool.run(move || {
                (start..(start + per).min(n))
                    .map(|k| match random && chains[k].has_spatial_steps() {
                        true => chains[k].apply_spatial(tensors[k].data.clone()),
                        false => tensors[k].data.clone(),
                    })
                    .collect::<Vec<_>>()
            })
        }))
        .await?;
        let image = self
            .pool
            .run(move || stacked(&runs.into_iter().flatten().collect::<Vec<_>>()))
            .await?;
        Metrics::time(&self.metrics.transform_us, t);
        Ok(Stacked {
            image,
            masks: None,
            classes: Some(classes),
            center: None,
        })
    }

    /// Each item's volume (and mask, when the split has them) through the 3D chain, cached
    /// alone, then its drawn flip, stacked.
    async fn volume_stack(
        &self,
        req: &BatchRequest,
        query: &VolumeQuery,
        drawn: &[Drawn],
    ) -> Result<Stacked, PipelineError> {
        let unlabelled = req.items.iter().find(|(it, _)| it.label.is_none());
        let with_label = unlabelled.is_none();
        if let Some((it, _)) =
            unlabelled.filter(|_| req.items.iter().any(|(i, _)| i.label.is_some()))
        {
            return Err(missing_label(it));
        }
        let (one, _) =
            Box::pin(self.volume_item(&req.items[0].0, query.clone(), with_label)).await?;
        self.check_size(
            req,
            req.items.len(),
            one.data.shape(),
            4 + u64::from(with_label),
        )?;
        let parts: Vec<(Arc<Tensor>, Option<Arc<Mask>>)> = futures::stream::iter(req.items.clone())
            .map(|(it, _)| {
                let (this, query) = (self.clone(), query.clone());
                async move { this.volume_item(&it, query, with_label).await }
            })
            .buffered(in_flight(self.pool.workers()))
            .try_collect()
            .await?;
        same_shapes(
            req,
            parts.iter().map(|(t, _)| t.data.shape()),
            "ask for one grid with size=X,Y,Z",
        )?;
        let drawn = drawn.to_vec();
        let t = std::time::Instant::now();
        let (image, masks) = self.pool.run(move || stack_drawn(&parts, &drawn)).await?;
        Metrics::time(&self.metrics.transform_us, t);
        Ok(Stacked {
            image,
            masks,
            classes: None,
            center: None,
        })
    }

    /// Each item's exported arrays (one ranged read each, cached), its drawn flip/rotation,
    /// stacked; labels are masks when the items have them, else class indices when they have
    /// classes.
    async fn processed_stack(
        &self,
        req: &BatchRequest,
        drawn: &[Drawn],
    ) -> Result<Stacked, PipelineError> {
        let masks = req.items.iter().any(|(it, _)| it.label.is_some());
        let one = self.processed_image(&req.items[0].0).await?;
        self.check_size(req, req.items.len(), one.data.shape(), 4 + u64::from(masks))?;
        type Parts = (Arc<Tensor>, Option<Arc<Mask>>);
        let parts: Vec<Parts> = futures::stream::iter(req.items.clone())
            .map(|(it, _)| {
                let this = self.clone();
                async move {
                    let image = this.processed_image(&it).await?;
                    let mask = match masks {
                        true => Some(this.processed_mask(&it).await?),
                        false => None,
                    };
                    Ok::<_, PipelineError>((image, mask))
                }
            })
            .buffered(in_flight(self.pool.workers()))
            .try_collect()
            .await?;
        same_shapes(
            req,
            parts.iter().map(|(t, _)| t.data.shape()),
            "an export's items share a shape when its chain sets a size",
        )?;
        let classes = (!masks && req.items.iter().any(|(it, _)| it.class.is_some())).then(|| {
            req.items
                .iter()
                .map(|(it, _)| it.class.map_or(-1, |c| c as i64))
                .collect()
        });
        let drawn = drawn.to_vec();
        let t = std::time::Instant::now();
        let (image, masks) = self.pool.run(move || stack_drawn(&parts, &drawn)).await?;
        Metrics::time(&self.metrics.transform_us, t);
        Ok(Stacked {
            image,
            masks,
            classes,
            center: None,
        })
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
                    BatchChain::Processed { .. } => match it.label.is_some() {
                        true => this.processed_mask(it).await.map(drop),
                        false => Ok(()),
                    }
                    .and(this.processed_image(it).await.map(drop)),
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
    ) -> Result<Stacked, PipelineError> {
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
        let shape = same_shapes(
            req,
            parts.iter().map(|p| &p.image.shape()[1..]),
            "a patch side larger than a grid takes the whole axis: ask for a smaller patch or \
             one grid with size=X,Y,Z",
        )?;
        self.check_size(req, samples, &shape, 5)?;
        let flips: Vec<SpatialAxes> = drawn.iter().map(|d| d.flip_axes()).collect();
        let t = std::time::Instant::now();
        let out = self
            .pool
            .run(move || {
                let per_patch = |f: &SpatialAxes, p: &Patches| {
                    let image: Vec<_> = p.image.outer_iter().map(|a| flipped(a, *f)).collect();
                    let label: Vec<_> = p.label.outer_iter().map(|a| flipped(a, *f)).collect();
                    (image, label)
                };
                let (image, label): (Vec<_>, Vec<_>) = flips
                    .iter()
                    .zip(&parts)
                    .map(|(f, p)| per_patch(f, p))
                    .unzip();
                let centers: Vec<_> = parts.iter().map(|p| p.center.view()).collect();
                Stacked {
                    image: stacked(&image.concat()),
                    masks: Some(stacked(&label.concat())),
                    classes: None,
                    center: Some(ndarray::concatenate(Axis(0), &centers).expect("(num, 3) each")),
                }
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
