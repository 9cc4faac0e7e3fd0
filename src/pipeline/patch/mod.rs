//! Patches for 3D segmentation training: MONAI `RandCropByPosNegLabeld(keys=["image",
//! "label"], spatial_size=patch, pos, neg, num_samples=num, image_key="image" when
//! `image_threshold` is given, allow_smaller=True)` applied after the volume chain
//! (`Chain3d` on the image; the mask resized by nearest neighbour, selected and flipped alike).
//!
//! The foreground/background lists depend only on the objects, the chain, the label selection
//! and the threshold, not on the seed: they are computed once and cached (`Stage::Indices`,
//! counted by `medserve_fg_indices_computed_total`), so every epoch's draws reuse them.
//!
//! # The draws (version 1, not MONAI's RNG)
//!
//! With `ratio = pos / (pos + neg)` in float64 (MONAI's `pos_ratio`; 0 when the foreground
//! list is empty, 1 when the background list is, as MONAI falls back), sample `k` of
//! `0..num` takes the foreground list when `scope.unit("rand_crop_pos_neg", 2k) < ratio` and
//! the background list otherwise (MONAI: `R.rand() < pos_ratio`), then the voxel at position
//! `scope.bits("rand_crop_pos_neg", 2k + 1) % len` of that list (MONAI: `R.randint(len)`),
//! with `scope` the item's [`DrawScope`] (seed, epoch, dataset, split, item; see
//! `augment.rs`). The voxel, unravelled in C order over `(X, Y, Z)`, is the centre before
//! MONAI's `correct_crop_centers`; the patches are MONAI's `SpatialCrop` there. Given the
//! same choices, centres and patches equal MONAI's (tests/patches_parity.rs).

use std::sync::Arc;

use ndarray::{Array2, ArrayD};

use super::augment::DrawScope;
use super::slab::Slab;
use super::volume::check_grid;
use super::{Chain3d, Pipeline, PipelineError, missing_label};
use crate::cache::{CacheKey, Canonical, Key, Stage, Tensor};
use crate::catalog::Item;
use crate::imaging::ResizeMode;
use crate::imaging::encode::{Encoded, NpzBuilder};
use crate::imaging::patch::{self, FgBgIndices};
use crate::imaging::stats::DecodedVolume;
use crate::imaging::volume::LabelSelect;
use crate::metrics::Metrics;
use crate::store::ObjectMeta;

/// The transform name of the draws.
pub const DRAW_NAME: &str = "rand_crop_pos_neg";

/// Most patches one request may ask for.
pub const MAX_PATCHES: usize = 64;

/// A patch request: the volume chain, the label selection, and `RandCropByPosNegLabeld`'s
/// parameters with the seed and epoch its draws are made under.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchQuery {
    pub chain: Chain3d,
    pub select: LabelSelect,
    /// MONAI's `spatial_size` (X, Y, Z).
    pub patch: [usize; 3],
    /// MONAI's `num_samples`, `1..=MAX_PATCHES`.
    pub num: usize,
    /// Non-negative, not both zero.
    pub pos: f64,
    pub neg: f64,
    /// With it, background voxels are only those where the image exceeds it.
    pub image_threshold: Option<f32>,
    pub seed: u64,
    pub epoch: u64,
}

impl PatchQuery {
    /// MONAI's `pos_ratio`.
    pub fn ratio(&self) -> f64 {
        self.pos / (self.pos + self.neg)
    }
}

impl Canonical for PatchQuery {
    fn write_canonical(&self, out: &mut String) {
        let [x, y, z] = self.patch;
        // The ratio, not pos and neg: pos=1&neg=1 and pos=2&neg=2 draw alike.
        out.push_str(&format!(
            "patches({x},{y},{z},num({}),ratio({}),threshold(",
            self.num,
            self.ratio()
        ));
        match self.image_threshold {
            Some(t) => out.push_str(&t.to_string()),
            None => out.push('-'),
        }
        out.push_str(&format!("),seed({}),epoch({}))|", self.seed, self.epoch));
        self.chain.write_canonical(out);
        out.push('|');
        out.push_str(&self.select.canonical());
    }
}

/// Sampled patches: `image` `(num, C, X, Y, Z)` float32, `label` `(num, 1, X, Y, Z)` uint8,
/// `center` `(num, 3)`, each patch's centre voxel after correction in the transformed grid.
#[derive(Debug, Clone)]
pub struct Patches {
    pub image: ArrayD<f32>,
    pub label: ArrayD<u8>,
    pub center: Array2<i64>,
}

/// The key of the item's foreground/background lists under `q`.
fn indices_key(item: &Item, label: &ObjectMeta, q: &PatchQuery) -> Key<FgBgIndices> {
    let spec = IndicesSpec {
        chain: q.chain,
        select: &q.select,
        threshold: q.image_threshold,
    };
    let objects: Vec<_> = match q.image_threshold {
        Some(_) => vec![&item.image, label],
        None => vec![label],
    };
    Key::new(Stage::Indices, objects, &spec)
}

/// Where the patches' image voxels come from.
enum PatchSource {
    /// The whole transformed volume.
    Whole(Arc<Tensor>),
    /// The stored planes the patches span, read by range and not yet transformed; `first`
    /// is the first one's index in the transformed grid.
    Slab {
        slab: Arc<DecodedVolume>,
        first: usize,
    },
}

/// What the index lists are computed from: the mask's steps, and the image's chain only when
/// a threshold reads the image.
struct IndicesSpec<'a> {
    chain: Chain3d,
    select: &'a LabelSelect,
    threshold: Option<f32>,
}

impl Canonical for IndicesSpec<'_> {
    fn write_canonical(&self, out: &mut String) {
        out.push_str("fg-bg(mask(");
        match self.chain.size {
            None => out.push_str("native"),
            Some([x, y, z]) => out.push_str(&format!("{x},{y},{z}")),
        }
        out.push_str(&format!(
            ",{},flip({}))",
            self.select.canonical(),
            self.chain.flip.canonical()
        ));
        if let Some(t) = self.threshold {
            out.push_str(&format!(",image({})>{t}", self.chain.canonical()));
        }
        out.push(')');
    }
}

/// The response's key: the bytes depend on the item's names too (they scope the draws).
struct PatchResponse<'a> {
    query: &'a PatchQuery,
    dataset: &'a str,
    split: &'a str,
    item: &'a str,
}

impl Canonical for PatchResponse<'_> {
    fn write_canonical(&self, out: &mut String) {
        out.push_str(&format!(
            "item({}/{}/{})|",
            self.dataset, self.split, self.item
        ));
        self.query.write_canonical(out);
    }
}

/// A patch request resolved against its objects' headers: ready to be answered, or to be
/// found unmodified by its ETag.
pub struct PreparedPatches {
    item: Item,
    query: PatchQuery,
    dataset: String,
    split: String,
    key: CacheKey,
}

impl PreparedPatches {
    /// The response's ETag.
    pub fn etag(&self) -> String {
        self.key.etag("npz")
    }
}

/// The corrected centres of `num` samples drawn from `ix` (see the module doc); `None` when
/// both lists are empty.
pub fn draw_centers(
    scope: &DrawScope<'_>,
    ratio: f64,
    ix: &FgBgIndices,
    num: usize,
    patch: [usize; 3],
) -> Option<Vec<[usize; 3]>> {
    let ratio = match (ix.fg.is_empty(), ix.bg.is_empty()) {
        (true, true) => return None,
        (true, false) => 0.0,
        (false, true) => 1.0,
        (false, false) => ratio,
    };
    let centers = (0..num as u64)
        .map(|k| {
            let list = if scope.unit(DRAW_NAME, 2 * k) < ratio {
                &ix.fg
            } else {
                &ix.bg
            };
            let at = scope.bits(DRAW_NAME, 2 * k + 1) % list.len() as u64;
            let voxel = patch::unravel(list[at as usize] as usize, ix.shape);
            patch::correct_crop_center(voxel, patch, ix.shape)
        })
        .collect();
    Some(centers)
}

impl Pipeline {
    /// Resolves a patch request against the headers (a size equal to the native grid is no
    /// resize, as for volumes) and checks what it would hold against `--max-output-mb`.
    pub async fn prepare_patches(
        &self,
        item: &Item,
        mut query: PatchQuery,
        dataset: &str,
        split: &str,
    ) -> Result<PreparedPatches, PipelineError> {
        let Some(label) = &item.label else {
            return Err(missing_label(item));
        };
        // Headers only: the patches may be read from the planes they span (`slab.rs`).
        let (image, mask) =
            tokio::try_join!(self.volume_header(&item.image), self.volume_header(label))?;
        check_grid(&item.image.key, &image, &label.key, &mask)?;
        let h = &image;
        if query.chain.size == Some(h.spatial) {
            query.chain.size = None;
        }
        if query.chain.size.is_none() {
            query.chain.mode = ResizeMode::Area;
        }
        let grid = query.chain.size.unwrap_or(h.spatial);
        self.check_patch_sizes(item, &query, grid, h.channels)?;
        let key = CacheKey::new(
            Stage::Response,
            [&item.image, label],
            &PatchResponse {
                query: &query,
                dataset,
                split,
                item: &item.id,
            },
        );
        Ok(PreparedPatches {
            item: item.clone(),
            query,
            dataset: dataset.into(),
            split: split.into(),
            key,
        })
    }

    /// The prepared patches as `.npz` (`image`, `label`, `center`).
    pub async fn patches_response(&self, p: PreparedPatches) -> Result<Encoded, PipelineError> {
        let out = self
            .sample_patches(&p.item, &p.query, &p.dataset, &p.split)
            .await?;
        let t = std::time::Instant::now();
        let encoded = self
            .pool
            .run(move || {
                let mut w = NpzBuilder::new();
                w.array("image", &out.image)?;
                w.array("label", &out.label)?;
                w.array("center", &out.center)?;
                w.encoded()
            })
            .await?
            .map_err(|e| PipelineError::Internal(e.to_string()))?;
        Metrics::time(&self.metrics.encode_us, t);
        Ok(encoded)
    }

    /// `num` patches of the item's image and mask after the chain, centred as MONAI's
    /// `RandCropByPosNegLabeld` centres them, drawn under `(seed, epoch, dataset, split,
    /// item)`. A label-less item is a 404; a label with neither foreground nor (thresholded)
    /// background to centre on is a 422 naming the label.
    pub async fn patches(
        &self,
        item: &Item,
        q: &PatchQuery,
        dataset: &str,
        split: &str,
    ) -> Result<Patches, PipelineError> {
        let p = self
            .prepare_patches(item, q.clone(), dataset, split)
            .await?;
        self.sample_patches(&p.item, &p.query, dataset, split).await
    }

    async fn sample_patches(
        &self,
        item: &Item,
        q: &PatchQuery,
        dataset: &str,
        split: &str,
    ) -> Result<Patches, PipelineError> {
        // On the native grid, the image of a volume that is not decoded may be read as the
        // slab of planes the patches span (`slab.rs`), once the centres are drawn; not when
        // drawing them needs the whole image (a threshold, lists not yet computed).
        let slab = match q.chain.size {
            None if self
                .cache
                .get(&Key::<Tensor>::new(
                    Stage::VolumeImage,
                    [&item.image],
                    &q.chain,
                ))
                .await
                .is_none()
                && (q.image_threshold.is_none() || self.indices_known(item, q).await) =>
            {
                self.slab_source(&item.image).await?
            }
            _ => None,
        };
        let slab_first = slab.is_some();
        // Boxed: three nested decode-and-transform futures side by side would make this
        // future large enough to overflow a test thread's stack in debug builds.
        let image = async {
            match slab_first {
                true => Ok(None),
                false => Box::pin(self.volume_image(item, q.chain)).await.map(Some),
            }
        };
        let (image, mask, ix) = tokio::try_join!(
            image,
            Box::pin(self.volume_label(item, q.chain.size, &q.select, q.chain.flip)),
            Box::pin(self.fg_bg_indices(item, q)),
        )?;
        let scope = DrawScope {
            seed: q.seed,
            epoch: q.epoch,
            dataset,
            split,
            item: &item.id,
        };
        // A request the spec allows on data that has nothing to centre a patch on: like a
        // slice past the end, data that does not exist (404), not a bad request or file.
        let centers = draw_centers(&scope, q.ratio(), &ix, q.num, q.patch).ok_or_else(|| {
            let why = if q.image_threshold.is_some() {
                "no background voxel where the image exceeds image_threshold"
            } else {
                "no background voxel"
            };
            PipelineError::Missing {
                what: "patch-centre",
                name: item.id.clone(),
                available: vec![],
                hint: Some(format!(
                    "no voxel to centre a patch on: the label '{}' (after the label selection) \
                     has no foreground and {why}; change labels= or image_threshold=",
                    item.label
                        .as_ref()
                        .map(|l| l.key.as_str())
                        .unwrap_or_default()
                )),
            }
        })?;
        let patch = q.patch;
        let image = match (image, &slab) {
            (Some(image), _) => PatchSource::Whole(image),
            (None, Some(s)) => match self.slab_for(s, q, &centers).await? {
                Some(source) => source,
                None => PatchSource::Whole(Box::pin(self.volume_image(item, q.chain)).await?),
            },
            (None, None) => PatchSource::Whole(Box::pin(self.volume_image(item, q.chain)).await?),
        };
        let chain = q.chain;
        let t = std::time::Instant::now();
        let out = self
            .pool
            .run(move || {
                let image = match image {
                    PatchSource::Whole(image) => patch::crops(image.data.view(), &centers, patch)?,
                    PatchSource::Slab { slab, first } => {
                        // The slab is planes `first..` of the transformed grid: the same
                        // crops, their centres moved down by `first`.
                        let arr = chain.apply(&slab.volume);
                        let moved: Vec<[usize; 3]> =
                            centers.iter().map(|&[x, y, z]| [x, y, z - first]).collect();
                        patch::crops(arr.view(), &moved, patch)?
                    }
                };
                let label = patch::crops(mask.0.view(), &centers, patch)?;
                let flat: Vec<i64> = centers.iter().flatten().map(|&c| c as i64).collect();
                let center = Array2::from_shape_vec((centers.len(), 3), flat)
                    .expect("three coordinates per centre");
                Ok::<_, patch::PatchError>(Patches {
                    image,
                    label,
                    center,
                })
            })
            .await?
            .map_err(|e| PipelineError::Internal(e.to_string()))?;
        Metrics::time(&self.metrics.transform_us, t);
        Ok(out)
    }

    /// Whether the item's foreground/background lists under `q` are at hand (memory or the
    /// disk tier), so drawing centres computes nothing.
    async fn indices_known(&self, item: &Item, q: &PatchQuery) -> bool {
        let Some(l) = &item.label else { return false };
        let key = indices_key(item, l, q);
        self.disk
            .as_ref()
            .is_some_and(|d| d.contains(key.untyped()))
            || self.cache.get(&key).await.is_some()
    }

    /// The slab of `s` that every patch at `centers` lies in, read by range, when it is at
    /// most half the volume (past that, decoding it whole costs about as much and leaves it
    /// cached for the next request).
    async fn slab_for(
        &self,
        s: &Slab,
        q: &PatchQuery,
        centers: &[[usize; 3]],
    ) -> Result<Option<PatchSource>, PipelineError> {
        let h = &s.facts.header;
        let grid = h.spatial;
        let nz = grid[2];
        let spans = centers
            .iter()
            .map(|&c| patch::crop_ranges(c, q.patch, grid)[2].clone());
        let first = spans.clone().map(|r| r.start).min().unwrap_or(0);
        let end = spans.map(|r| r.end).max().unwrap_or(0);
        if end <= first || 2 * (end - first) > nz {
            return Ok(None);
        }
        // A flip along Z mirrors which stored planes the transformed ones are.
        let stored = if q.chain.flip.iter().any(|k| k == 2) {
            nz - end..nz - first
        } else {
            first..end
        };
        let slab = self.read_slab(s, stored, 0..h.channels).await?;
        Ok(Some(PatchSource::Slab {
            slab: Arc::new(slab),
            first,
        }))
    }

    /// The foreground/background lists of the item's mask after the chain (and, with a
    /// threshold, of its image), from cache or computed.
    async fn fg_bg_indices(
        &self,
        item: &Item,
        q: &PatchQuery,
    ) -> Result<Arc<FgBgIndices>, PipelineError> {
        let Some(l) = &item.label else {
            return Err(missing_label(item));
        };
        let key = indices_key(item, l, q);
        let label_key = l.key.clone();
        self.cached_on_disk(key, async {
            let mask =
                Box::pin(self.volume_label(item, q.chain.size, &q.select, q.chain.flip)).await?;
            let image = match q.image_threshold {
                Some(t) => Some((Box::pin(self.volume_image(item, q.chain)).await?, t)),
                None => None,
            };
            let t = std::time::Instant::now();
            let ix = self
                .pool
                .run(move || {
                    let image = image.as_ref().map(|(i, t)| (i.data.view(), *t));
                    patch::map_binary_to_indices(mask.0.view(), image)
                })
                .await?
                .map_err(|e| PipelineError::TooLarge {
                    key: label_key,
                    message: e.to_string(),
                })?;
            Metrics::time(&self.metrics.transform_us, t);
            Metrics::inc(&self.metrics.fg_indices);
            Ok(ix)
        })
        .await
    }

    /// The transformed grid is built whole (image and mask) and the patches after it: each is
    /// bounded by `--max-output-mb` before anything is computed, as a volume response is.
    fn check_patch_sizes(
        &self,
        item: &Item,
        q: &PatchQuery,
        grid: [usize; 3],
        channels: usize,
    ) -> Result<(), PipelineError> {
        let voxels = grid.iter().map(|&d| d as u64).product::<u64>();
        let c = channels as u64;
        let patch_voxels = patch::patch_shape(q.patch, grid)
            .iter()
            .map(|&d| d as u64)
            .product::<u64>();
        let max = self.limits.max_output_bytes;
        let [x, y, z] = grid;
        let checks = [
            (
                voxels * c * 4,
                format!("on the {x}x{y}x{z} grid its image would be"),
            ),
            (
                q.num as u64 * c * patch_voxels * 4,
                format!("{} patches of its image would be", q.num),
            ),
        ];
        match checks.into_iter().find(|(bytes, _)| *bytes > max) {
            None if voxels > u64::from(u32::MAX) => Err(PipelineError::TooLarge {
                key: item.image.key.clone(),
                message: format!(
                    "its {x}x{y}x{z} grid has more voxels than patch sampling indexes; ask for a smaller grid with size=X,Y,Z"
                ),
            }),
            None => Ok(()),
            Some((bytes, what)) => Err(PipelineError::TooLarge {
                key: item.image.key.clone(),
                message: format!(
                    "{what} {} MiB, and this server sends at most {} MiB per array \
                     (--max-output-mb); ask for a smaller grid (size=X,Y,Z), patch or num",
                    bytes.div_ceil(1 << 20),
                    max >> 20
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
