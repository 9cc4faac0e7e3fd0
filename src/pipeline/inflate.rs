//! Volumes read whole from a store with cheap whole reads (the local folder), or from any
//! store when a seek index is to be recorded (S3 objects otherwise stream into the decoder),
//! and how they are inflated. A first decode takes libdeflate's single stream, the fastest
//! one (0.76x of zlib-rs on the CT). A large `.nii.gz` decoded a second time (it left memory: the ones that
//! keep coming back, epoch after epoch) records a seek index on the way (zlib-rs with a
//! checkpoint per MiB of output, 0.89x; `imaging::gzindex`); the index is kept in a small cache
//! of its own (volume churn does not evict it; its windows are 3% of the output) and in the
//! disk tier, and every later decode of that object inflates from its checkpoints on all cores
//! (0.48x on 2 cores).

use std::io::Read;
use std::sync::Arc;

use super::{Pipeline, PipelineError, volume::volume_error};
use crate::cache::disk::Lookup;
use crate::cache::{Key, Stage};
use crate::imaging::gzindex::GzIndex;
use crate::imaging::nifti::{self, Inflate};
use crate::imaging::stats::DecodedVolume;
use crate::metrics::Metrics;
use crate::store::{ObjectMeta, ReadFailure, StoreError};

/// Compressed objects from this size on get a seek index (a 512x512x200 CT is 45-73 MB).
pub const INDEX_MIN_BYTES: u64 = 8 << 20;
/// Output between two checkpoints: a slab read inflates at most this much extra, and a
/// parallel decode splits on these boundaries.
const SPACING: u32 = 1 << 20;

fn index_key(obj: &ObjectMeta) -> Key<GzIndex> {
    Key::new(Stage::GzIndex, [obj], &"gzidx-v1,spacing=1048576")
}

impl Pipeline {
    /// The object's seek index, if one was recorded: from memory, else from the disk tier.
    pub(super) async fn known_index(
        &self,
        obj: &ObjectMeta,
    ) -> Result<Option<Arc<GzIndex>>, PipelineError> {
        let key = index_key(obj);
        if let Some(ix) = self.indexes.get(&key).await {
            return Ok(Some(ix));
        }
        let Some(disk) = self.disk.clone() else {
            return Ok(None);
        };
        let k = key.untyped().clone();
        Ok(
            match self.pool.run(move || disk.load::<GzIndex>(&k)).await? {
                Lookup::Hit(ix) => {
                    let ix: Arc<GzIndex> = Arc::from(ix);
                    self.indexes.insert(key, ix.clone()).await;
                    Some(ix)
                }
                Lookup::Miss | Lookup::Dropped(_) => None,
            },
        )
    }

    /// Whether decoding `obj` now should record a seek index: a large object decoded before
    /// (it left memory: the ones that keep coming back) that has none.
    pub(super) async fn wants_index(&self, obj: &ObjectMeta) -> Result<bool, PipelineError> {
        Ok(obj.size >= INDEX_MIN_BYTES
            && self
                .decoded_once
                .contains_key(&(obj.key.clone(), obj.version.clone()))
            && self.known_index(obj).await?.is_none())
    }

    /// Notes that `obj` was decoded once (only large objects get an index).
    pub(super) async fn note_decoded(&self, obj: &ObjectMeta) {
        if obj.size >= INDEX_MIN_BYTES {
            self.decoded_once
                .insert((obj.key.clone(), obj.version.clone()), ())
                .await;
        }
    }

    /// Reads the object whole inside a CPU job (so compressed copies are held only by running
    /// workers) and decodes it: from its seek index on all cores when one is known, recording
    /// one when it is large, else with libdeflate.
    pub(super) async fn decode_whole(
        &self,
        obj: &ObjectMeta,
    ) -> Result<DecodedVolume, PipelineError> {
        let object_key = obj.key.clone();
        let limits = self.limits.volume();
        let index = self.known_index(obj).await?;
        let build = index.is_none() && self.wants_index(obj).await?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let t = std::time::Instant::now();
        let (meta, mut reader) = self
            .store
            .open(obj.at(), self.limits.max_object_bytes)
            .await?;
        Metrics::time(&self.metrics.fetch_us, t);
        Metrics::inc(&self.metrics.storage_gets);
        let t = std::time::Instant::now();
        let read_key = object_key.clone();
        let ix = index.clone();
        let d = self
            .pool
            .run(move || {
                let mut bytes = Vec::with_capacity(meta.size as usize);
                reader.read_to_end(&mut bytes).map_err(|e| {
                    ReadFailure::find(&e).unwrap_or_else(|| {
                        StoreError::Unavailable(format!("reading {read_key}: {e}"))
                    })
                })?;
                let how = match (&ix, build) {
                    (Some(index), _) => Inflate::Parallel { index, threads },
                    (None, true) => Inflate::Indexing { spacing: SPACING },
                    (None, false) => Inflate::Whole,
                };
                Ok::<_, StoreError>(nifti::decode_with(&bytes, &limits, how))
            })
            .await??;
        Metrics::time(&self.metrics.decode_us, t);
        Metrics::inc(&self.metrics.decodes);
        let (volume, built) = d.map_err(|e| volume_error(&object_key, e))?;
        self.note_decoded(obj).await;
        if index.is_some() {
            Metrics::inc(&self.metrics.parallel_decodes);
        }
        if let Some(ix) = built {
            Metrics::inc(&self.metrics.gzip_indexes);
            let ix = Arc::new(ix);
            let key = index_key(obj);
            if let Some(disk) = self.disk.clone() {
                self.write_behind(disk, key.untyped().clone(), ix.clone());
            }
            self.indexes.insert(key, ix).await;
        }
        Ok(DecodedVolume::new(volume))
    }
}
