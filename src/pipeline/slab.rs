//! Axial planes read from a byte range of the stored object instead of from its decoded
//! volume. A volume that is neither in memory nor in the disk tier costs a full inflate
//! (0.3-0.5 s for a CT) to show one 512 KB plane; with a byte range it costs one ranged GET:
//!
//! - an uncompressed `.nii`: the header (544 bytes, once), then exactly the planes' bytes;
//! - a `.nii.gz` with a seek index (`inflate.rs`): the compressed bytes from the checkpoint
//!   before the planes to the one after them, inflated from the checkpoint's window (at most
//!   one checkpoint interval, 1 MiB of output, more than the planes themselves).
//!
//! Two callers: the slice route (one plane) and the patch route on the native grid (the
//! planes every patch spans, when that is at most half the volume; the chain is applied to
//! the slab, which equals applying it to the volume since what remains of it is pointwise
//! or a flip, and a flip along Z mirrors which planes are read).
//!
//! The header comes from the object's [`VolumeFacts`], kept beside the seek indexes once any
//! decode or header read saw it; `auto`/`mri` windows need the whole volume's percentiles, so
//! they take this path only once a decode of the volume computed them (also kept in the
//! facts). Anything unusual (a header that does not parse or passes the limits, a file
//! shorter than its header says, a gzip body behind a `.nii` name) is left to the full
//! decode, which names what is wrong exactly as before. The planes go through the same code
//! as a decoded volume's, so both give the same bytes under the same ETag.

use std::ops::Range;
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
        if let Some(v) = self.cache.get(&volume_key(obj)).await {
            return Ok(PlaneSource::Decoded(v));
        }
        if let Some(s) = Box::pin(self.slab_source(obj)).await? {
            return Ok(PlaneSource::Slab(s));
        }
        Ok(PlaneSource::Decoded(self.volume(obj).await?))
    }

    /// `obj`'s header, decoding it only when nothing else knows it: its decoded volume, its
    /// kept facts, a header read by range.
    pub(super) async fn volume_header(&self, obj: &ObjectMeta) -> Result<Header, PipelineError> {
        if let Some(v) = self.cache.get(&volume_key(obj)).await {
            return Ok(v.volume.header.clone());
        }
        if let Some(f) = self.known_facts(obj).await {
            return Ok(f.header.clone());
        }
        Ok(match Box::pin(self.plane_source(obj)).await? {
            PlaneSource::Decoded(v) => v.volume.header.clone(),
            PlaneSource::Slab(s) => s.facts.header.clone(),
        })
    }

    /// `obj`'s byte-range reader, when its decoded volume is neither in memory nor in the
    /// disk tier and it has one. Decodes nothing.
    pub(super) async fn slab_source(
        &self,
        obj: &ObjectMeta,
    ) -> Result<Option<Slab>, PipelineError> {
        let key = volume_key(obj);
        let on_disk = self
            .disk
            .as_ref()
            .is_some_and(|d| d.contains(key.untyped()));
        if on_disk || self.cache.get(&key).await.is_some() {
            return Ok(None);
        }
        self.slab(obj).await
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
        let b = self.store.get_range(obj.at(), range).await?;
        Metrics::time(&self.metrics.fetch_us, t);
        Metrics::inc(&self.metrics.range_gets);
        Metrics::add(&self.metrics.range_get_bytes, b.len() as u64);
        Ok(b)
    }

    /// Axial planes `z` of `channels` as a volume of their own (Z = `z.len()`): one ranged
    /// GET per channel.
    pub(super) async fn read_slab(
        &self,
        s: &Slab,
        z: Range<usize>,
        channels: Range<usize>,
    ) -> Result<DecodedVolume, PipelineError> {
        let h = s.facts.header.clone();
        let (depth, count) = (z.len(), channels.len());
        let mut parts = Vec::with_capacity(count);
        for c in channels {
            let want = nifti::slab_range(&h, z.clone(), c);
            let fetched = match &s.index {
                None => self.get_range(&s.obj, want.clone()).await?,
                Some(ix) => {
                    let from = ix.point_before(want.start);
                    let after = ix.points.partition_point(|p| p.unc < want.end);
                    let to = &ix.points[after.min(ix.points.len() - 1)];
                    let span = GzIndex::input_start(from)..(to.cmp + LOOKAHEAD).min(s.obj.size);
                    self.get_range(&s.obj, span).await?
                }
            };
            parts.push((want, fetched));
        }
        let (index, key) = (s.index.clone(), s.obj.key.clone());
        let started = std::time::Instant::now();
        let slab = self
            .pool
            .run(move || {
                let mut raw =
                    Vec::with_capacity(parts.iter().map(|(w, _)| (w.end - w.start) as usize).sum());
                for (want, fetched) in &parts {
                    match &index {
                        None => raw.extend_from_slice(fetched),
                        Some(ix) => {
                            let p = ix.point_before(want.start);
                            let at = raw.len();
                            raw.resize(at + (want.end - want.start) as usize, 0);
                            GzIndex::read_from(p, fetched, want.start, &mut raw[at..])
                                .map_err(|e| format!("reading '{key}' from its seek index: {e}"))?;
                        }
                    }
                }
                nifti::slab_volume(&h, depth, count, &raw).map_err(|e| e.to_string())
            })
            .await?
            .map_err(|message| PipelineError::Undecodable {
                key: s.obj.key.clone(),
                message,
            })?;
        Metrics::time(&self.metrics.decode_us, started);
        Metrics::inc(&self.metrics.slab_reads);
        Ok(DecodedVolume::new(slab))
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
