//! Axial planes read from a byte range of the stored object instead of from its decoded
//! volume. A volume that is neither in memory nor in the disk tier costs a full inflate
//! (0.3-0.5 s for a CT) to show one 512 KB plane; with a byte range it costs one ranged GET:
//!
//! - an uncompressed `.nii`: the header (544 bytes), then exactly the plane's bytes;
//! - a `.nii.gz` with a seek index (`inflate.rs`): the compressed bytes from the checkpoint
//!   before the plane to the one after it, inflated from the checkpoint's window (at most one
//!   checkpoint interval, 1 MiB of output, more than the plane itself).
//!
//! The header comes from the object's [`VolumeFacts`], kept beside the seek indexes once any
//! decode or header read saw it; `auto`/`mri` windows need the whole volume's percentiles, so
//! they take this path only once a decode of the volume computed them (also kept in the
//! facts). Anything unusual (a header that does not parse or passes the limits, a file
//! shorter than its header says, a gzip body behind a `.nii` name) is left to the full
//! decode, which names what is wrong exactly as before. The plane is rendered by the same code
//! as a decoded volume's, so both give the same bytes under the same ETag.

use std::sync::Arc;

use super::{Pipeline, PipelineError, volume::volume_key};
use crate::cache::{Key, Stage};
use crate::imaging::gzindex::GzIndex;
use crate::imaging::nifti::{self, Header};
use crate::imaging::stats::{DecodedVolume, VolumeFacts};
use crate::metrics::Metrics;
use crate::store::ObjectMeta;

/// Bytes read for a header: NIfTI-2's 540 plus the 4-byte extension flag.
const HEADER_BYTES: u64 = 544;
/// Compressed bytes read for a gzipped header: a header deflates to a few hundred bytes, and
/// the gzip header before it may carry a file name.
const GZ_HEADER_BYTES: u64 = 16 << 10;
/// Compressed bytes read past the checkpoint after a plane: inflate may look a few bytes
/// ahead of the last code it needs.
const LOOKAHEAD: u64 = 64;

/// Where the planes of one object come from.
#[derive(Debug, Clone)]
pub(super) enum PlaneSource {
    Decoded(Arc<DecodedVolume>),
    Slab(Slab),
}

/// An object whose planes can be read by byte range.
#[derive(Debug, Clone)]
pub(super) struct Slab {
    obj: ObjectMeta,
    pub facts: Arc<VolumeFacts>,
    /// `None`: an uncompressed `.nii`.
    index: Option<Arc<GzIndex>>,
}

fn facts_key(obj: &ObjectMeta) -> Key<VolumeFacts> {
    Key::new(Stage::Facts, [obj], &"header,windows")
}

impl PlaneSource {
    pub fn header(&self) -> &Header {
        match self {
            PlaneSource::Decoded(v) => &v.volume.header,
            PlaneSource::Slab(s) => &s.facts.header,
        }
    }
}

impl Pipeline {
    /// Where `obj`'s planes come from: its decoded volume when memory or the disk tier holds
    /// it or it has no cheap byte ranges (then it is decoded), else byte ranges.
    pub(super) async fn plane_source(
        &self,
        obj: &ObjectMeta,
    ) -> Result<PlaneSource, PipelineError> {
        let key = volume_key(obj);
        if let Some(v) = self.cache.get(&key).await {
            return Ok(PlaneSource::Decoded(v));
        }
        let on_disk = self
            .disk
            .as_ref()
            .is_some_and(|d| d.contains(key.untyped()));
        if !on_disk && let Some(s) = Box::pin(self.slab(obj)).await? {
            return Ok(PlaneSource::Slab(s));
        }
        Ok(PlaneSource::Decoded(self.volume(obj).await?))
    }

    /// `obj`'s byte-range reader, when it has one: an uncompressed `.nii`, or a `.nii.gz`
    /// with a seek index; and a header that parses within the limits.
    async fn slab(&self, obj: &ObjectMeta) -> Result<Option<Slab>, PipelineError> {
        let gz = obj.key.ends_with(".gz");
        let index = if gz {
            match self.known_index(obj).await? {
                Some(ix) if ix.compressed_size == obj.size => Some(ix),
                _ => return Ok(None),
            }
        } else {
            None
        };
        let facts = match self.known_facts(obj).await {
            Some(f) => f,
            None => {
                let want = if gz { GZ_HEADER_BYTES } else { HEADER_BYTES };
                let prefix = self.get_range(obj, 0..want.min(obj.size)).await?;
                if nifti::is_gzip(&prefix) != gz {
                    return Ok(None);
                }
                let Ok(header) = nifti::read_header(&prefix) else {
                    return Ok(None);
                };
                let facts = Arc::new(VolumeFacts {
                    header,
                    windows: None,
                });
                self.indexes.insert(facts_key(obj), facts.clone()).await;
                facts
            }
        };
        let h = &facts.header;
        let Ok(data_bytes) = nifti::check_limits(h, &self.limits.volume()) else {
            return Ok(None);
        };
        let end = h.vox_offset + data_bytes;
        let fits = match &index {
            Some(ix) => ix.uncompressed_size >= end,
            None => obj.size >= end,
        };
        Ok(fits.then(|| Slab {
            obj: obj.clone(),
            facts,
            index,
        }))
    }

    /// Bytes `range` of `obj` from the store, counted.
    async fn get_range(
        &self,
        obj: &ObjectMeta,
        range: std::ops::Range<u64>,
    ) -> Result<bytes::Bytes, PipelineError> {
        let t = std::time::Instant::now();
        let b = self.store.get_range(&obj.key, range).await?;
        Metrics::time(&self.metrics.fetch_us, t);
        Metrics::inc(&self.metrics.range_gets);
        Metrics::add(&self.metrics.range_get_bytes, b.len() as u64);
        Ok(b)
    }

    /// Axial plane `z` of `channel` as a volume of its own (Z = 1, one channel).
    pub(super) async fn read_plane(
        &self,
        s: &Slab,
        z: usize,
        channel: usize,
    ) -> Result<DecodedVolume, PipelineError> {
        let h = s.facts.header.clone();
        let want = nifti::plane_range(&h, z, channel);
        let undecodable = |message: String| PipelineError::Undecodable {
            key: s.obj.key.clone(),
            message,
        };
        let bytes = match &s.index {
            None => self.get_range(&s.obj, want.clone()).await?,
            Some(ix) => {
                let from = ix.point_before(want.start);
                let to = &ix.points[ix
                    .points
                    .partition_point(|p| p.unc < want.end)
                    .min(ix.points.len() - 1)];
                let span = GzIndex::input_start(from)..(to.cmp + LOOKAHEAD).min(s.obj.size);
                self.get_range(&s.obj, span).await?
            }
        };
        let (index, key) = (s.index.clone(), s.obj.key.clone());
        let started = std::time::Instant::now();
        let plane = self
            .pool
            .run(move || {
                let raw = match &index {
                    None => bytes.to_vec(),
                    Some(ix) => {
                        let p = ix.point_before(want.start);
                        let mut out = vec![0u8; (want.end - want.start) as usize];
                        GzIndex::read_from(p, &bytes, want.start, &mut out)
                            .map_err(|e| format!("reading '{key}' from its seek index: {e}"))?;
                        out
                    }
                };
                nifti::plane_volume(&h, &raw).map_err(|e| e.to_string())
            })
            .await?
            .map_err(undecodable)?;
        Metrics::time(&self.metrics.decode_us, started);
        Metrics::inc(&self.metrics.slab_reads);
        Ok(DecodedVolume::new(plane))
    }

    /// Keeps what `v` knows of `obj` without its voxels (the header, and the windows once
    /// computed), unless as much is already kept; facts with windows also go to the disk
    /// tier.
    pub(super) async fn remember_facts(&self, obj: &ObjectMeta, v: &DecodedVolume) {
        let key = facts_key(obj);
        let known = self.indexes.get(&key).await;
        let facts = v.facts();
        if known.is_some_and(|k| k.windows.is_some() || facts.windows.is_none()) {
            return;
        }
        let facts = Arc::new(facts);
        if facts.windows.is_some()
            && let Some(disk) = self.disk.clone()
        {
            self.write_behind(disk, key.untyped().clone(), facts.clone());
        }
        self.indexes.insert(key, facts).await;
    }

    /// The facts of `obj`, from memory or the disk tier.
    pub(super) async fn known_facts(&self, obj: &ObjectMeta) -> Option<Arc<VolumeFacts>> {
        let key = facts_key(obj);
        if let Some(f) = self.indexes.get(&key).await {
            return Some(f);
        }
        let disk = self.disk.clone()?;
        let k = key.untyped().clone();
        match self.pool.run(move || disk.load::<VolumeFacts>(&k)).await {
            Ok(crate::cache::disk::Lookup::Hit(f)) => {
                let f: Arc<VolumeFacts> = Arc::from(f);
                self.indexes.insert(key, f.clone()).await;
                Some(f)
            }
            _ => None,
        }
    }
}
