//! Items of processed datasets (`medserve export`'s shards): each array is one ranged read of
//! its shard (the byte range the manifest recorded), parsed as the `.npy` it is, cached like
//! any array; nothing is decoded or transformed again. Bodies are encoded from the arrays by
//! the same encoder as every route, so the `.npy` answered is the exported member byte for
//! byte.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use ndarray::ArrayD;
use ndarray_npy::ReadNpyExt;

use super::{Pipeline, PipelineError};
use crate::cache::{Canonical, Key, Mask, Stage, Tensor};
use crate::catalog::Item;
use crate::imaging::encode::{self, Encoded, Format, Payload};
use crate::metrics::Metrics;
use crate::store::ObjectMeta;

/// Which arrays a processed item's body carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Image,
    Label,
    Both,
}

/// A member's byte range (and, for a body, what it carries and how it is encoded).
struct MemberText<'a> {
    range: &'a Range<u64>,
    body: Option<(Part, Format)>,
}

impl Canonical for MemberText<'_> {
    fn write_canonical(&self, out: &mut String) {
        out.push_str(&format!("member({},{})", self.range.start, self.range.end));
        if let Some((part, format)) = self.body {
            out.push_str(&format!("|part({part:?})|format({})", format.name()));
        }
    }
}

fn not_exported(item: &Item, what: &str) -> PipelineError {
    PipelineError::Undecodable {
        key: item.image.key.clone(),
        message: format!("item '{}' was exported without its {what}", item.id),
    }
}

impl Pipeline {
    /// Bytes `range` of a shard, exactly as many as the manifest recorded.
    async fn member_bytes(
        &self,
        obj: &ObjectMeta,
        range: &Range<u64>,
    ) -> Result<Bytes, PipelineError> {
        let b = self.store.get_range(obj.at(), range.clone()).await?;
        Metrics::inc(&self.metrics.range_gets);
        Metrics::add(&self.metrics.range_get_bytes, b.len() as u64);
        if b.len() as u64 != range.end - range.start {
            return Err(PipelineError::Undecodable {
                key: obj.key.clone(),
                message: format!(
                    "the shard ends before bytes {}..{} its manifest records",
                    range.start, range.end
                ),
            });
        }
        Ok(b)
    }

    async fn member_array<T>(
        &self,
        obj: &ObjectMeta,
        range: &Range<u64>,
    ) -> Result<ArrayD<T>, PipelineError>
    where
        T: ndarray_npy::ReadableElement + Send + 'static,
    {
        let bytes = self.member_bytes(obj, range).await?;
        let key = obj.key.clone();
        self.pool
            .run(move || {
                ArrayD::<T>::read_npy(bytes.as_ref()).map_err(|e| PipelineError::Undecodable {
                    key,
                    message: format!("its member is not the .npy the manifest says: {e}"),
                })
            })
            .await?
    }

    /// A processed item's image array (float32, as exported).
    pub async fn processed_image(&self, item: &Item) -> Result<Arc<Tensor>, PipelineError> {
        let range = item
            .member
            .as_ref()
            .and_then(|m| m.image.clone())
            .ok_or_else(|| not_exported(item, "image"))?;
        let key = Key::new(
            Stage::Member,
            [&item.image],
            &MemberText {
                range: &range,
                body: None,
            },
        );
        self.cache
            .get_or_compute(key, async {
                let data = self.member_array::<f32>(&item.image, &range).await?;
                Ok(Tensor { info: None, data })
            })
            .await
    }

    /// A processed item's mask (uint8, as exported).
    pub async fn processed_mask(&self, item: &Item) -> Result<Arc<Mask>, PipelineError> {
        let (obj, range) = match (
            &item.label,
            item.member.as_ref().and_then(|m| m.label.clone()),
        ) {
            (Some(o), Some(r)) => (o, r),
            _ => return Err(super::missing_label(item)),
        };
        let key = Key::new(
            Stage::Member,
            [obj],
            &MemberText {
                range: &range,
                body: None,
            },
        );
        self.cache
            .get_or_compute(key, async {
                Ok(Mask(self.member_array::<u8>(obj, &range).await?))
            })
            .await
    }

    /// The ETag of a processed item's body.
    pub fn processed_etag(&self, item: &Item, part: Part, format: Format) -> String {
        let range = item
            .member
            .as_ref()
            .and_then(|m| m.image.clone().or(m.label.clone()))
            .unwrap_or(0..0);
        Key::<Encoded>::new(
            Stage::Member,
            [&item.image],
            &MemberText {
                range: &range,
                body: Some((part, format)),
            },
        )
        .untyped()
        .etag(format.name())
    }

    /// A processed item's arrays encoded as `format` (PNG windows [0, 1] stretched over the
    /// values' range, as the image route does for `scale=none`).
    pub async fn processed_body(
        &self,
        item: &Item,
        part: Part,
        format: Format,
    ) -> Result<Encoded, PipelineError> {
        let image = match part {
            Part::Label => None,
            _ => Some(self.processed_image(item).await?),
        };
        let label = match part {
            Part::Image => None,
            _ => Some(self.processed_mask(item).await?),
        };
        let t = std::time::Instant::now();
        let encoded = self
            .pool
            .run(move || {
                let window = image.as_ref().map_or((0.0, 1.0), |t| {
                    let (lo, hi) = crate::imaging::intensity::finite_range(t.data.iter().copied());
                    (lo.unwrap_or(0.0), hi.unwrap_or(1.0))
                });
                let p = Payload {
                    image: image.as_ref().map(|t| &t.data),
                    label: label.as_ref().map(|m| &m.0),
                    png_window: window,
                    ..Default::default()
                };
                encode::encode(p, format)
            })
            .await?
            .map_err(|e| PipelineError::Internal(e.to_string()))?;
        Metrics::time(&self.metrics.encode_us, t);
        Ok(encoded)
    }
}
