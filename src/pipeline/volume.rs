//! Volumes: NIfTI objects streamed from the store into the decoder, the image part of the 3D
//! chain (`EnsureChannelFirst -> Resize -> ScaleIntensityRange -> Flip`), masks resized by
//! nearest neighbour, selected and flipped alike, and whole-volume responses in every array and NIfTI format.

use std::sync::{Arc, Mutex};

use ndarray::ArrayD;

use super::{Pipeline, PipelineError, missing_label};
use crate::cache::{CacheKey, Canonical, Key, Mask, Stage, Tensor};
use crate::catalog::Item;
use crate::imaging::ResizeMode;
use crate::imaging::encode::{self, Encoded, Format, Payload};
use crate::imaging::nifti::{self, Header, VolumeError};
use crate::imaging::spatial::{self, SpatialAxes};
use crate::imaging::stats::DecodedVolume;
use crate::imaging::volume::{self, LabelSelect, RangeScale};
use crate::metrics::Metrics;
use crate::store::{ObjectMeta, ObjectRead, ObjectReader, ReadFailure, StoreError, WaitGuard};

/// The image part of the 3D chain: `EnsureChannelFirst -> Resize -> ScaleIntensityRange`,
/// then `Flip(spatial_axis=flip)` when asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chain3d {
    /// `None` keeps the native grid.
    pub size: Option<[usize; 3]>,
    pub mode: ResizeMode,
    pub scale: Option<RangeScale>,
    /// Voxel axes `i, j, k` (our axes 1, 2, 3 of `(C, X, Y, Z)`), MONAI's spatial axes.
    pub flip: SpatialAxes,
}

/// `|flip(axes)` when there are any: absent steps write nothing, so requests without them
/// keep their keys and ETags.
fn write_flip(flip: SpatialAxes, out: &mut String) {
    if !flip.is_empty() {
        out.push_str(&format!("|flip({})", flip.canonical()));
    }
}

fn write_size(size: Option<[usize; 3]>, out: &mut String) {
    match size {
        None => out.push_str("native"),
        Some([x, y, z]) => out.push_str(&format!("{x},{y},{z}")),
    }
}

impl Canonical for Chain3d {
    fn write_canonical(&self, out: &mut String) {
        out.push_str("resize3d(");
        write_size(self.size, out);
        out.push_str(&format!(",{})|scale(", self.mode.name(3)));
        match self.scale {
            None => out.push_str("none"),
            Some(s) => out.push_str(&s.canonical()),
        }
        out.push(')');
        write_flip(self.flip, out);
    }
}

impl Chain3d {
    /// Applies the chain to a decoded volume. Pure.
    pub fn apply(&self, v: &nifti::Volume) -> ArrayD<f32> {
        let mut out = volume::image_f32(v, self.size, self.mode);
        if let Some(s) = self.scale {
            s.apply(&mut out);
        }
        if !self.flip.is_empty() {
            out = spatial::flip(out.view(), self.flip);
        }
        out
    }
}

/// A mask resized by nearest neighbour to `size`, then selected, then flipped.
struct MaskSpec<'a> {
    size: Option<[usize; 3]>,
    select: &'a LabelSelect,
    flip: SpatialAxes,
}

impl Canonical for MaskSpec<'_> {
    fn write_canonical(&self, out: &mut String) {
        out.push_str("mask(resize3d(");
        write_size(self.size, out);
        out.push_str(&format!(",nearest),{})", self.select.canonical()));
        write_flip(self.flip, out);
    }
}

/// Which arrays a volume response carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumePart {
    Image,
    Label,
    Both,
}

impl VolumePart {
    /// The `part` parameter's value.
    pub fn name(self) -> &'static str {
        match self {
            VolumePart::Image => "image",
            VolumePart::Label => "label",
            VolumePart::Both => "both",
        }
    }
}

/// A volume request, as parsed from the query.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeQuery {
    pub chain: Chain3d,
    pub part: VolumePart,
    pub format: Format,
    pub select: LabelSelect,
}

impl Canonical for VolumeQuery {
    fn write_canonical(&self, out: &mut String) {
        out.push_str(&format!("part({})|", self.part.name()));
        self.chain.write_canonical(out);
        out.push('|');
        out.push_str(&self.select.canonical());
        out.push_str(&format!("|format({})", self.format.name()));
    }
}

/// A volume request resolved against its objects' headers: ready to be answered, or to be
/// found unmodified by its ETag.
pub struct PreparedVolume {
    item: Item,
    query: VolumeQuery,
    image: Arc<DecodedVolume>,
    label: Option<Arc<DecodedVolume>>,
    key: CacheKey,
}

impl PreparedVolume {
    /// The response's ETag.
    pub fn etag(&self) -> String {
        self.key.etag(self.query.format.name())
    }
}

impl Pipeline {
    /// A NIfTI object decoded, from cache or from the store. The object is streamed into the
    /// decoder (inflating while it downloads), never held whole in its compressed form.
    ///
    /// With a disk tier, a volume missing from RAM is first looked for on disk (mapped, not
    /// decoded), and one that had to be decoded is written there in the background.
    pub async fn volume(&self, obj: &ObjectMeta) -> Result<Arc<DecodedVolume>, PipelineError> {
        self.cached_on_disk(volume_key(obj), async {
            let v = self.decode_volume(obj).await?;
            self.remember_facts(obj, &v).await;
            Ok(v)
        })
        .await
    }

    /// A NIfTI object streamed from the store and decoded, bypassing the cache (the dataset
    /// statistics read every volume once and would otherwise evict what requests use).
    pub(super) async fn decode_volume(
        &self,
        obj: &ObjectMeta,
    ) -> Result<DecodedVolume, PipelineError> {
        let object_key = obj.key.clone();
        let limits = self.limits.volume();
        // No download to overlap with (a local file), or a second decode of a large object
        // that has no seek index yet (recording one needs the whole buffer): read whole
        // (inflate.rs). Boxed: the futures nest deep enough to overflow a debug test thread
        // otherwise.
        if self.store.whole_reads_are_cheap() || self.wants_index(obj).await? {
            return Box::pin(self.decode_whole(obj)).await;
        }
        let t = std::time::Instant::now();
        let (_, reader) = self
            .store
            .open(obj.at(), self.limits.max_object_bytes)
            .await?;
        Metrics::time(&self.metrics.fetch_us, t);
        Metrics::inc(&self.metrics.storage_gets);
        let failure = Arc::new(Mutex::new(None));
        let reader: ObjectReader = Box::new(Watched {
            inner: reader,
            failure: failure.clone(),
            metrics: self.metrics.clone(),
        });
        let t = std::time::Instant::now();
        let d = self
            .pool
            .run_streaming(reader, move |r| nifti::decode_reader(r, &limits))
            .await?;
        Metrics::time(&self.metrics.decode_us, t);
        Metrics::inc(&self.metrics.decodes);
        if d.is_ok() {
            self.note_decoded(obj).await;
        }
        let v = d.map_err(|e| {
            // A store that failed mid-stream is an outage (or an oversized object),
            // not a corrupt file.
            match failure.lock().ok().and_then(|mut f| f.take()) {
                Some(store_error) => PipelineError::Store(store_error),
                None => volume_error(&object_key, e),
            }
        })?;
        Ok(DecodedVolume::new(v))
    }

    /// The item's image volume and, when asked for and present, its mask, decoded; a mask on a
    /// different grid than its image is a 422 naming both.
    pub async fn volume_pair(
        &self,
        item: &Item,
        with_label: bool,
    ) -> Result<(Arc<DecodedVolume>, Option<Arc<DecodedVolume>>), PipelineError> {
        match (&item.label, with_label) {
            (Some(l), true) => {
                let (img, lab) = tokio::try_join!(self.volume(&item.image), self.volume(l))?;
                check_grid(
                    &item.image.key,
                    &img.volume.header,
                    &l.key,
                    &lab.volume.header,
                )?;
                Ok((img, Some(lab)))
            }
            _ => Ok((self.volume(&item.image).await?, None)),
        }
    }

    /// Resolves a volume request against the headers: a size equal to the native grid is no
    /// resize, so equal requests share one ETag and one cache entry.
    pub async fn prepare_volume(
        &self,
        item: &Item,
        mut query: VolumeQuery,
    ) -> Result<PreparedVolume, PipelineError> {
        let wants_label = query.part != VolumePart::Image;
        if wants_label && item.label.is_none() {
            return Err(missing_label(item));
        }
        let (image, label) = self.volume_pair(item, wants_label).await?;
        if query.chain.size == Some(image.volume.header.spatial) {
            query.chain.size = None;
        }
        if query.chain.size.is_none() {
            query.chain.mode = ResizeMode::Area;
        }
        let objects = std::iter::once(&item.image).chain(item.label.iter().filter(|_| wants_label));
        let key = CacheKey::new(Stage::Response, objects, &query);
        Ok(PreparedVolume {
            item: item.clone(),
            query,
            image,
            label,
            key,
        })
    }

    /// The prepared volume's arrays, encoded, once their size is within `--max-output-mb`.
    pub async fn volume_response(&self, p: PreparedVolume) -> Result<Encoded, PipelineError> {
        self.check_output_size(&p)?;
        let q = &p.query;
        let image = match q.part {
            VolumePart::Label => None,
            _ => Some(self.volume_image(&p.item, q.chain).await?),
        };
        let label = match q.part {
            VolumePart::Image => None,
            _ => Some(
                self.volume_label(&p.item, q.chain.size, &q.select, q.chain.flip)
                    .await?,
            ),
        };
        let from = match (&image, &p.label) {
            (None, Some(l)) => l.volume.header.spatial,
            _ => p.image.volume.header.spatial,
        };
        // Image and mask share the image's affine so they line up in viewers. A flip moves
        // the voxels and, as MONAI's Flip does to a MetaTensor, the affine with them.
        let grid = q.chain.size.unwrap_or(from);
        let affine = spatial::flipped_affine(
            &volume::resized_affine(&p.image.volume.header.affine, from, grid),
            grid,
            q.chain.flip,
        );
        let format = q.format;
        let t = std::time::Instant::now();
        let encoded = self
            .pool
            .run(move || {
                let payload = Payload {
                    image: image.as_ref().map(|t| &t.data),
                    label: label.as_ref().map(|m| &m.0),
                    affine: Some(affine),
                    ..Default::default()
                };
                encode::encode(payload, format)
            })
            .await?
            .map_err(|e| PipelineError::Internal(e.to_string()))?;
        Metrics::time(&self.metrics.encode_us, t);
        Ok(encoded)
    }

    /// One item of a segmentation batch: its image (and mask when `with_label`) through the
    /// query's chain, resolved and bounded as a volume request is.
    pub(super) async fn volume_item(
        &self,
        item: &Item,
        mut query: VolumeQuery,
        with_label: bool,
    ) -> Result<(Arc<Tensor>, Option<Arc<Mask>>), PipelineError> {
        query.part = if with_label {
            VolumePart::Both
        } else {
            VolumePart::Image
        };
        query.format = Format::Npz;
        let p = self.prepare_volume(item, query).await?;
        self.check_output_size(&p)?;
        let q = &p.query;
        let image = self.volume_image(item, q.chain).await?;
        let label = match with_label {
            true => Some(
                self.volume_label(item, q.chain.size, &q.select, q.chain.flip)
                    .await?,
            ),
            false => None,
        };
        Ok((image, label))
    }

    /// The image volume after the 3D chain, from cache or computed.
    pub(super) async fn volume_image(
        &self,
        item: &Item,
        chain: Chain3d,
    ) -> Result<Arc<Tensor>, PipelineError> {
        self.cache
            .get_or_compute(Key::new(Stage::VolumeImage, [&item.image], &chain), async {
                let src = self.volume(&item.image).await?;
                let t = std::time::Instant::now();
                let out = self.pool.run(move || chain.apply(&src.volume)).await?;
                Metrics::time(&self.metrics.transform_us, t);
                Metrics::inc(&self.metrics.transforms);
                Ok(Tensor {
                    info: None,
                    data: out,
                })
            })
            .await
    }

    /// The item's mask resized by nearest neighbour to `size`, selected and flipped, from
    /// cache or computed.
    pub(super) async fn volume_label(
        &self,
        item: &Item,
        size: Option<[usize; 3]>,
        select: &LabelSelect,
        flip: SpatialAxes,
    ) -> Result<Arc<Mask>, PipelineError> {
        let Some(l) = &item.label else {
            return Err(missing_label(item));
        };
        let key = Key::new(Stage::Mask, [l], &MaskSpec { size, select, flip });
        let select = select.clone();
        let label_key = l.key.clone();
        self.cache
            .get_or_compute(key, async {
                // The image's header only: its voxels may never be needed (`slab.rs`).
                let (image, lab) =
                    tokio::try_join!(self.volume_header(&item.image), self.volume(l))?;
                check_grid(&item.image.key, &image, &l.key, &lab.volume.header)?;
                let t = std::time::Instant::now();
                let out = self
                    .pool
                    .run(move || {
                        volume::label_u8(&lab.volume).map(|m| {
                            let out = volume::label_resized(m.view().into_dyn(), size, &select);
                            if flip.is_empty() {
                                out
                            } else {
                                spatial::flip(out.view(), flip)
                            }
                        })
                    })
                    .await?;
                Metrics::time(&self.metrics.transform_us, t);
                Metrics::inc(&self.metrics.transforms);
                out.map(Mask).map_err(|e| PipelineError::Undecodable {
                    key: label_key,
                    message: e.to_string(),
                })
            })
            .await
    }

    /// A volume response is built whole in memory (the transformed array, then its
    /// encoding), and a small file can decode to a native grid of gigabytes as float32: each
    /// array it would carry is bounded by `--max-output-mb` before anything is computed.
    fn check_output_size(&self, p: &PreparedVolume) -> Result<(), PipelineError> {
        let q = &p.query;
        let grid = q.chain.size.unwrap_or(p.image.volume.header.spatial);
        let voxels = grid.iter().map(|&d| d as u64).product::<u64>();
        let max = self.limits.max_output_bytes;
        let mut arrays = Vec::new();
        if q.part != VolumePart::Label {
            let c = p.image.volume.header.channels as u64;
            arrays.push((&p.item.image.key, "image", voxels * c * 4));
        }
        if let (Some(l), Some(key)) = (&p.label, p.item.label.as_ref().map(|l| &l.key)) {
            let width = if q.format == Format::F32 { 4 } else { 1 };
            let c = l.volume.header.channels as u64;
            arrays.push((key, "mask", voxels * c * width));
        }
        match arrays.into_iter().find(|a| a.2 > max) {
            None => Ok(()),
            Some((key, what, bytes)) => Err(PipelineError::TooLarge {
                key: key.clone(),
                message: format!(
                    "on the {}x{}x{} grid its {what} would be {} MiB as sent, and this server \
                     sends at most {} MiB per array (--max-output-mb); ask for a smaller grid \
                     with size=X,Y,Z (each side at most {})",
                    grid[0],
                    grid[1],
                    grid[2],
                    bytes.div_ceil(1 << 20),
                    max >> 20,
                    self.limits.max_volume_side
                ),
            }),
        }
    }
}

/// The decoded volume's key.
pub(super) fn volume_key(obj: &ObjectMeta) -> Key<DecodedVolume> {
    Key::new(Stage::Volume, [obj], &"nifti")
}

pub(super) fn volume_error(key: &str, e: VolumeError) -> PipelineError {
    match e {
        VolumeError::TooLarge(message) => PipelineError::TooLarge {
            key: key.into(),
            message,
        },
        e => PipelineError::Undecodable {
            key: key.into(),
            message: e.to_string(),
        },
    }
}

pub(super) fn check_grid(
    image_key: &str,
    a: &Header,
    label_key: &str,
    b: &Header,
) -> Result<(), PipelineError> {
    if a.spatial != b.spatial || b.channels != 1 {
        let dims = |h: &Header| {
            let [x, y, z] = h.spatial;
            format!("{x}x{y}x{z}x{}", h.channels)
        };
        return Err(PipelineError::Undecodable {
            key: label_key.into(),
            message: format!(
                "the mask's grid {} does not match the image '{image_key}' grid {} (a mask needs the image's X, Y, Z and one channel)",
                dims(b),
                dims(a)
            ),
        });
    }
    Ok(())
}

/// An object reader that counts the bytes it delivers and remembers a store failure.
struct Watched {
    inner: ObjectReader,
    failure: Arc<Mutex<Option<StoreError>>>,
    metrics: Arc<Metrics>,
}

impl ObjectRead for Watched {
    fn set_wait_guard(&mut self, guard: Box<dyn WaitGuard>) {
        self.inner.set_wait_guard(guard);
    }
}

impl std::io::Read for Watched {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                Metrics::add(&self.metrics.storage_get_bytes, n as u64);
                Ok(n)
            }
            Err(e) => {
                if let (Some(f), Ok(mut slot)) = (ReadFailure::find(&e), self.failure.lock()) {
                    *slot = Some(f);
                }
                Err(e)
            }
        }
    }
}
