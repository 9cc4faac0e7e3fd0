//! The 2D chain of the seed: `LoadImage -> EnsureChannelFirst -> Resize -> ScaleIntensity`,
//! then `Flip` and `Rotate` when asked for (given, or drawn by their random twins: see
//! `augment.rs`), then the response's encoding. Decoded images and transformed arrays are
//! cached separately, so every chain over one image decodes it once.

use std::fmt::Write;
use std::sync::Arc;

use ndarray::{ArrayD, Ix3, IxDyn};

use super::augment::Drawn;
use super::{Pipeline, PipelineError};
use crate::cache::{Canonical, Key, Stage, Tensor};
use crate::catalog::Item;
use crate::imaging::encode::{self, Encoded, Format, Payload};
use crate::imaging::intensity::finite_range;
use crate::imaging::spatial::{self, SpatialAxes};
use crate::imaging::{self, DecodeError, DecodeOptions, ResizeMode};
use crate::metrics::Metrics;

/// How intensities are rescaled after resizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// MONAI `ScaleIntensity()`: min-max to [0, 1].
    MinMax,
    /// Values as decoded (after resizing).
    None,
}

/// The 2D pipeline of the seed: `LoadImage -> EnsureChannelFirst -> Resize -> ScaleIntensity`,
/// then `Flip(spatial_axis=flip)` and `Rotate(angle=rotate)` (in that order) when asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chain2d {
    pub decode: DecodeOptions,
    /// `(H, W)`.
    pub size: (usize, usize),
    pub mode: ResizeMode,
    pub scale: Scale,
    /// MONAI spatial axes of the array MONAI holds, `(C, W, H)`: axis 0 is the width.
    pub flip: SpatialAxes,
    /// Radians, MONAI `Rotate(angle, keep_size=True, mode="bilinear", padding_mode="border",
    /// align_corners=False)` on `(C, W, H)`; `None` is no `Rotate` at all (`Some(0.0)` is
    /// MONAI's `Rotate(0)`, a resampling that is the identity only up to float32 rounding).
    pub rotate: Option<f64>,
}

impl Canonical for DecodeOptions {
    fn write_canonical(&self, out: &mut String) {
        out.push_str(&DecodeOptions::canonical(self));
    }
}

impl Canonical for Chain2d {
    // Written in place (`write!`): every warm request writes it, and a `format!` per step was
    // an allocation each.
    fn write_canonical(&self, out: &mut String) {
        let scale = match self.scale {
            Scale::MinMax => "minmax",
            Scale::None => "none",
        };
        self.decode.write_canonical(out);
        let _ = write!(
            out,
            "|resize({},{},{})|scale({scale})",
            self.size.0,
            self.size.1,
            self.mode.name(2)
        );
        // Absent steps write nothing, so requests without them keep their keys and ETags.
        if !self.flip.is_empty() {
            let _ = write!(out, "|flip({})", self.flip.canonical());
        }
        if let Some(angle) = self.rotate {
            // LowerExp is the shortest text that reads back as the same f64.
            let _ = write!(out, "|rotate({angle:e})");
        }
    }
}

impl Chain2d {
    /// Applies resize and scale to a decoded `(C, H, W)` array. Pure.
    pub fn apply(&self, decoded: &ArrayD<f32>) -> ArrayD<f32> {
        let mut out = imaging::resize::resize(decoded, &[self.size.0, self.size.1], self.mode);
        if self.scale == Scale::MinMax {
            imaging::intensity::scale_minmax(&mut out);
        }
        self.apply_spatial(out)
    }

    /// The chain with what the random transforms drew for one item as its `Flip` and
    /// `Rotate` (a random transform and its deterministic twin are never both asked for).
    pub fn with_drawn(mut self, d: &Drawn) -> Chain2d {
        if let Some(f) = d.flip {
            self.flip = f.unwrap_or(SpatialAxes::NONE);
        }
        if let Some(r) = d.rotate {
            self.rotate = r;
        }
        self
    }

    /// A chain of only what `d` drew (for arrays already through a chain: an export's).
    pub fn spatial_only(d: &Drawn) -> Chain2d {
        Chain2d {
            decode: DecodeOptions::monai(0),
            size: (0, 0),
            mode: imaging::ResizeMode::Area,
            scale: Scale::None,
            flip: SpatialAxes::NONE,
            rotate: None,
        }
        .with_drawn(d)
    }

    /// True when the chain ends in a `Flip` or a `Rotate`.
    pub fn has_spatial_steps(&self) -> bool {
        !self.flip.is_empty() || self.rotate.is_some()
    }

    /// The chain without its `Flip` and `Rotate`.
    pub fn without_spatial(self) -> Chain2d {
        Chain2d {
            flip: SpatialAxes::NONE,
            rotate: None,
            ..self
        }
    }

    /// `Flip` then `Rotate`, on the array as MONAI holds it (`(C, W, H)`: the transpose of
    /// ours), the result transposed back to `(C, H, W)`. Applied to the output of
    /// [`without_spatial`](Self::without_spatial), it completes the chain.
    pub fn apply_spatial(&self, out: ArrayD<f32>) -> ArrayD<f32> {
        if !self.has_spatial_steps() || out.ndim() != 3 {
            return out;
        }
        let mut monai = out.permuted_axes(IxDyn(&[0, 2, 1]));
        if !self.flip.is_empty() {
            monai = spatial::flip(monai.view(), self.flip);
        }
        if let Some(angle) = self.rotate
            && let Ok(v) = monai.view().into_dimensionality::<Ix3>()
        {
            monai = spatial::rotate2d(v, angle).into_dyn();
        }
        monai
            .permuted_axes(IxDyn(&[0, 2, 1]))
            .as_standard_layout()
            .into_owned()
    }

    /// The PNG window of an array this chain made: [0, 1] after min-max, else the values'
    /// own range (unscaled values are stretched over it for display).
    pub fn png_window(&self, out: &ArrayD<f32>) -> (f32, f32) {
        match self.scale {
            Scale::MinMax => (0.0, 1.0),
            Scale::None => {
                let (lo, hi) = finite_range(out.iter().copied());
                (lo.unwrap_or(0.0), hi.unwrap_or(1.0))
            }
        }
    }
}

fn decode_error(key: &str, e: DecodeError) -> PipelineError {
    match e {
        DecodeError::TooLarge { .. } => PipelineError::TooLarge {
            key: key.into(),
            message: e.to_string(),
        },
        _ => PipelineError::Undecodable {
            key: key.into(),
            message: e.to_string(),
        },
    }
}

impl Pipeline {
    /// The item's image decoded with `opts`, from cache or from the store.
    pub async fn decoded(
        &self,
        item: &Item,
        opts: DecodeOptions,
    ) -> Result<Arc<Tensor>, PipelineError> {
        let key = Key::new(Stage::Decoded, [&item.image], &opts);
        let object = item.image.clone();
        self.cache
            .get_or_compute_with(key, || async {
                let t = std::time::Instant::now();
                let (_, bytes) = self
                    .store
                    .get(object.at(), self.limits.max_object_bytes)
                    .await?;
                Metrics::time(&self.metrics.fetch_us, t);
                Metrics::inc(&self.metrics.storage_gets);
                Metrics::add(&self.metrics.storage_get_bytes, bytes.len() as u64);
                let t = std::time::Instant::now();
                let d = self
                    .pool
                    .run(move || imaging::decode::decode(&bytes, &opts))
                    .await?;
                Metrics::time(&self.metrics.decode_us, t);
                Metrics::inc(&self.metrics.decodes);
                let d = d.map_err(|e| decode_error(&object.key, e))?;
                Ok(Tensor {
                    info: Some(d.info),
                    data: d.data.into_dyn(),
                })
            })
            .await
    }

    /// The item's image after the whole 2D chain, from cache or computed.
    pub async fn transformed(
        &self,
        item: &Item,
        chain: Chain2d,
    ) -> Result<Arc<Tensor>, PipelineError> {
        self.cache
            .get_or_compute_with(image_key(item, chain), || async {
                // A flip or rotation starts from the cached chain without them, so the
                // draws of random transforms share one resized, scaled image.
                if chain.has_spatial_steps() {
                    let base = Box::pin(self.transformed(item, chain.without_spatial())).await?;
                    let info = base.info.clone();
                    let t = std::time::Instant::now();
                    let out = self
                        .pool
                        .run(move || chain.apply_spatial(base.data.clone()))
                        .await?;
                    Metrics::time(&self.metrics.transform_us, t);
                    Metrics::inc(&self.metrics.transforms);
                    return Ok(Tensor { info, data: out });
                }
                let src = self.decoded(item, chain.decode).await?;
                let info = src.info.clone();
                let t = std::time::Instant::now();
                let out = self.pool.run(move || chain.apply(&src.data)).await?;
                Metrics::time(&self.metrics.transform_us, t);
                Metrics::inc(&self.metrics.transforms);
                Ok(Tensor { info, data: out })
            })
            .await
    }

    /// The prepared image request's body: cached next to the array it encodes (which batches
    /// and other formats reuse), so a warm request neither encodes nor waits for a CPU
    /// worker, and every response shares the one body.
    pub async fn image(
        &self,
        item: &Item,
        prepared: PreparedImage,
    ) -> Result<Arc<Encoded>, PipelineError> {
        let PreparedImage {
            chain,
            format,
            body,
            ..
        } = prepared;
        self.cache
            .get_or_compute_with(body, || async {
                let t = self.transformed(item, chain).await?;
                let window = chain.png_window(&t.data);
                let started = std::time::Instant::now();
                let encoded = self
                    .pool
                    .run(move || {
                        let p = Payload {
                            image: Some(&t.data),
                            png_window: window,
                            ..Default::default()
                        };
                        encode::encode(p, format)
                    })
                    .await?;
                Metrics::time(&self.metrics.encode_us, started);
                Metrics::inc(&self.metrics.encodes);
                encoded.map_err(|e| PipelineError::Internal(e.to_string()))
            })
            .await
    }
}

/// An image request named once: its ETag and its body's cache key come from one canonical
/// text of the chain (they were two, written out per request).
pub struct PreparedImage {
    chain: Chain2d,
    format: Format,
    etag: String,
    body: Key<Encoded>,
}

impl PreparedImage {
    /// The item's image through `chain`, sent as `format`.
    pub fn new(item: &Item, chain: Chain2d, format: Format) -> Self {
        let key = image_key(item, chain);
        PreparedImage {
            chain,
            format,
            etag: key.untyped().etag(format.name()),
            body: key.untyped().encoded(format.name()),
        }
    }

    /// The response's ETag: the array's key's, so caching bodies changed no ETag.
    pub fn etag(&self) -> &str {
        &self.etag
    }
}

fn image_key(item: &Item, chain: Chain2d) -> Key<Tensor> {
    Key::new(Stage::Image, [&item.image], &chain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::spatial::SpatialAxes;
    use crate::imaging::{DecodeOptions, ResizeMode};
    use crate::store::{LocalStore, ObjectMeta};

    /// A future holds inline everything it may await; when a cached body's future held the
    /// array's and the decode's, every request (hits too) moved ~100 KB (`get_or_compute_with`).
    #[test]
    fn a_request_future_stays_small() {
        let store = Arc::new(LocalStore::new(std::env::temp_dir()).unwrap());
        let p = Pipeline::new(store, Default::default(), 1 << 20, 1, Default::default());
        let item = Item {
            id: "a".into(),
            class: None,
            subject: None,
            image: ObjectMeta {
                key: "a.png".into(),
                size: 1,
                version: "1".into(),
                version_id: None,
            },
            label: None,
            member: None,
        };
        let chain = Chain2d {
            decode: DecodeOptions::monai(100),
            size: (1, 1),
            mode: ResizeMode::Area,
            scale: Scale::MinMax,
            flip: SpatialAxes::NONE,
            rotate: None,
        };
        let prepared = PreparedImage::new(&item, chain, Format::Png);
        let size = std::mem::size_of_val(&p.image(&item, prepared));
        assert!(size < 16 << 10, "{size} bytes");
    }
}
