//! The stored objects themselves, passed through unchanged: for viewers and tools that read
//! NIfTI or PNG files over HTTP (NiiVue, Cornerstone, nibabel), whole or by byte range. The
//! bytes are streamed in ranged reads of the store, never held whole.

use std::ops::Range;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::{Pipeline, PipelineError, missing_label};
use crate::cache::{CacheKey, Stage};
use crate::catalog::Item;
use crate::metrics::Metrics;
use crate::store::{ObjectMeta, StoreError};

/// Bytes read from the store per ranged GET while streaming a file.
const CHUNK: u64 = 8 << 20;

/// A stream of a file's bytes, as the body of a response.
pub type FileStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

impl Pipeline {
    /// The item's image object, or its label (404 naming the item when it has none).
    pub fn item_object<'a>(
        &self,
        item: &'a Item,
        label: bool,
    ) -> Result<&'a ObjectMeta, PipelineError> {
        match (label, &item.label) {
            (false, _) => Ok(&item.image),
            (true, Some(l)) => Ok(l),
            (true, None) => Err(missing_label(item)),
        }
    }

    /// The strong ETag of an object sent as stored: its key and version.
    pub fn file_etag(&self, obj: &ObjectMeta) -> String {
        CacheKey::new(Stage::Response, [obj], &"file").etag("raw")
    }

    /// Bytes `range` of `obj` (within the size it was listed with) as a stream of ranged
    /// reads. The first chunk is read before this returns, so a store that is down fails the
    /// request with a status rather than the body half-way; an object that changed size since
    /// it was listed ends the stream with an error (the client sees a short body).
    pub async fn file_bytes(
        &self,
        obj: &ObjectMeta,
        range: Range<u64>,
    ) -> Result<FileStream, PipelineError> {
        if range.is_empty() {
            return Ok(Box::pin(futures::stream::empty()));
        }
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        let obj = obj.clone();
        let end = range.end;
        let read = move |at: u64| {
            let (store, metrics, obj) = (store.clone(), metrics.clone(), obj.clone());
            async move {
                let key = &obj.key;
                let stop = (at + CHUNK).min(end);
                let b = store.get_range(obj.at(), at..stop).await?;
                Metrics::inc(&metrics.range_gets);
                Metrics::add(&metrics.range_get_bytes, b.len() as u64);
                if b.len() as u64 != stop - at {
                    return Err(StoreError::Unavailable(format!(
                        "object '{key}' changed while it was sent (bytes {at}..{stop} gave {})",
                        b.len()
                    )));
                }
                Ok((b, stop))
            }
        };
        let (first, next) = read(range.start).await?;
        let rest = futures::stream::unfold(Some(next), move |at| {
            let read = read.clone();
            async move {
                let at = at.filter(|&a| a < end)?;
                Some(match read(at).await {
                    Ok((b, stop)) => (Ok(b), Some(stop)),
                    Err(e) => (Err(std::io::Error::other(e)), None),
                })
            }
        });
        Ok(Box::pin(
            futures::stream::once(async { Ok(first) }).chain(rest),
        ))
    }
}
