//! A split at a glance, as one PNG: for a classification split a row per class (its first
//! `per_class` items in listing order, each through the image route's default chain at
//! `size` x `size`); for a segmentation split a row per subject (the first `per_class`
//! subjects), its axial, coronal and sagittal mid-planes rendered by the slice route (the mask
//! blended over the image when there is one) and fitted into `size` x `size`. Each row is
//! labelled at its start. Tiles come from the cache like any request's; a tile whose item
//! cannot be read is drawn dark red rather than failing the whole picture.

use futures::StreamExt;

use super::image::Scale;
use super::slice::{AxisSel, SlicePart, SliceQuery, Window};
use super::{Chain2d, Pipeline, PipelineError};
use crate::cache::{CacheKey, Canonical, Stage};
use crate::catalog::{Dataset, Item, Kind, Split};
use crate::imaging::encode::{Encoded, Format};
use crate::imaging::montage::{self, Canvas, GLYPH, MISSING};
use crate::imaging::spatial::SpatialAxes;
use crate::imaging::volume::Plane;
use crate::imaging::{self, DecodeOptions, ResizeMode};

/// The three planes of a segmentation row, in column order.
pub const PLANES: [Plane; 3] = [Plane::Axial, Plane::Coronal, Plane::Sagittal];

/// A montage request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MontageQuery {
    /// Items per class row (classification) or subject rows (segmentation).
    pub per_class: usize,
    /// Side of every tile in pixels.
    pub size: usize,
}

impl Canonical for MontageQuery {
    fn write_canonical(&self, out: &mut String) {
        out.push_str(&format!(
            "montage(per_class={},size={})",
            self.per_class, self.size
        ));
    }
}

/// A montage resolved against the catalog: its rows and its ETag.
pub struct PreparedMontage {
    kind: Kind,
    rows: Vec<(String, Vec<Item>)>,
    query: MontageQuery,
    key: CacheKey,
}

impl PreparedMontage {
    /// The response's ETag: every object drawn, at its version.
    pub fn etag(&self) -> String {
        self.key.etag(Format::Png.name())
    }

    fn columns(&self) -> usize {
        match self.kind {
            Kind::Classification => self.query.per_class,
            Kind::Segmentation => PLANES.len(),
        }
    }

    /// `(width, height)` of the picture.
    pub fn dimensions(&self) -> (usize, usize) {
        let label = montage::label_width(self.rows.iter().map(|r| r.0.as_str()));
        (
            label + self.columns() * self.query.size,
            self.rows.len() * self.query.size,
        )
    }
}

impl Pipeline {
    /// The rows of the split's montage; refused (422) when the picture would exceed
    /// `--max-output-mb` (a dataset of very many classes).
    pub fn prepare_montage(
        &self,
        ds: &Dataset,
        split: &Split,
        query: MontageQuery,
    ) -> Result<PreparedMontage, PipelineError> {
        let rows: Vec<(String, Vec<Item>)> = match ds.kind {
            Kind::Classification => {
                // One pass over the split (not one per class): a split may hold many classes
                // and many items, and this runs on the async runtime.
                let mut rows: Vec<Vec<Item>> = vec![Vec::new(); ds.classes.len()];
                for it in &split.items {
                    if let Some(row) = it.class.and_then(|c| rows.get_mut(c))
                        && row.len() < query.per_class
                    {
                        row.push(it.clone());
                    }
                }
                ds.classes
                    .iter()
                    .cloned()
                    .zip(rows)
                    .filter(|(_, items)| !items.is_empty())
                    .collect()
            }
            Kind::Segmentation => split
                .items
                .iter()
                .take(query.per_class)
                .map(|it| (it.id.clone(), vec![it.clone()]))
                .collect(),
        };
        if rows.is_empty() {
            return Err(PipelineError::Missing {
                what: "items",
                name: split.name.clone(),
                available: vec![],
                hint: Some(format!("split '{}' has no items to draw", split.name)),
            });
        }
        let objects: Vec<_> = rows
            .iter()
            .flat_map(|r| r.1.iter())
            .flat_map(|it| std::iter::once(&it.image).chain(&it.label))
            .collect();
        let key = CacheKey::new(Stage::Response, objects, &query);
        let p = PreparedMontage {
            kind: ds.kind,
            rows,
            query,
            key,
        };
        let (w, h) = p.dimensions();
        let bytes = (w * h * 3) as u64;
        if bytes > self.limits.max_output_bytes {
            return Err(PipelineError::TooLarge {
                key: format!("{}{}", ds.root, split.name),
                message: format!(
                    "a {w}x{h} montage would be {} MiB and this server sends at most {} MiB (--max-output-mb); ask for a smaller size or per_class",
                    bytes >> 20,
                    self.limits.max_output_bytes >> 20
                ),
            });
        }
        Ok(p)
    }

    /// One tile: the item's image (classification) or one plane of its volume. An item that
    /// cannot be drawn (corrupt, too large, gone) is a dark red tile; a failure that is not the
    /// item's (store down, CPU pool full) fails the montage, which is cached by its ETag.
    async fn tile(
        &self,
        item: &Item,
        kind: Kind,
        col: usize,
        side: usize,
    ) -> Result<ndarray::Array3<u8>, PipelineError> {
        let made = match kind {
            Kind::Classification => {
                let chain = Chain2d {
                    decode: DecodeOptions::monai(self.limits.max_pixels),
                    size: (side, side),
                    mode: ResizeMode::Area,
                    scale: Scale::MinMax,
                    flip: SpatialAxes::NONE,
                    rotate: None,
                };
                match self.transformed(item, chain).await {
                    Ok(t) => {
                        self.pool
                            .run(move || Ok(montage::fit_tile(&t.data, 1.0, side)))
                            .await?
                    }
                    Err(e) => Err(e),
                }
            }
            Kind::Segmentation => self.plane_tile(item, PLANES[col], side).await,
        };
        match made {
            Err(e) if e.is_transient() => Err(e),
            Ok(t) => Ok(t),
            Err(_) => {
                let mut t = ndarray::Array3::<u8>::zeros((3, side, side));
                for (c, &v) in MISSING.iter().enumerate() {
                    t.index_axis_mut(ndarray::Axis(0), c).fill(v);
                }
                Ok(t)
            }
        }
    }

    /// A mid-plane as the slice route renders it by default (auto window; the mask overlaid
    /// when there is one), fitted into the tile.
    async fn plane_tile(
        &self,
        item: &Item,
        plane: Plane,
        side: usize,
    ) -> Result<ndarray::Array3<u8>, PipelineError> {
        let q = SliceQuery {
            axis: AxisSel::Plane(plane),
            index: None,
            channel: 0,
            part: if item.label.is_some() {
                SlicePart::Overlay
            } else {
                SlicePart::Image
            },
            window: Window::Auto,
            opacity: 0.4,
            format: Format::Png,
        };
        let prepared = self.prepare_slice(item, &q).await?;
        let png = self.slice(prepared).await?;
        let opts = DecodeOptions::monai(self.limits.max_pixels);
        self.pool
            .run(move || {
                imaging::decode::decode(&png.body, &opts)
                    .map(|d| montage::fit_tile(&d.data.into_dyn(), 255.0, side))
                    .map_err(|e| PipelineError::Internal(e.to_string()))
            })
            .await?
    }

    /// The montage, drawn and encoded.
    pub async fn montage(&self, p: PreparedMontage) -> Result<Encoded, PipelineError> {
        let side = p.query.size;
        let cells: Vec<(usize, usize, Item)> = p
            .rows
            .iter()
            .enumerate()
            .flat_map(|(r, (_, items))| match p.kind {
                Kind::Classification => items
                    .iter()
                    .enumerate()
                    .map(|(c, it)| (r, c, it.clone()))
                    .collect::<Vec<_>>(),
                Kind::Segmentation => (0..PLANES.len())
                    .map(|c| (r, c, items[0].clone()))
                    .collect(),
            })
            .collect();
        // Tiles in parallel, at most two per worker in flight (the CPU queue never fills).
        let tiles: Vec<(usize, usize, ndarray::Array3<u8>)> = futures::stream::iter(cells)
            .map(|(r, c, it)| async move { Ok((r, c, self.tile(&it, p.kind, c, side).await?)) })
            .buffer_unordered(2 * self.pool.workers())
            .collect::<Vec<Result<_, PipelineError>>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let (w, h) = p.dimensions();
        let label_w = w - p.columns() * side;
        let names: Vec<String> = p.rows.iter().map(|r| montage::label_text(&r.0)).collect();
        let body = self
            .pool
            .run(move || {
                let mut canvas = Canvas::new(w, h);
                for (r, name) in names.iter().enumerate() {
                    let y = r * side + side.saturating_sub(GLYPH) / 2;
                    canvas.text(GLYPH / 2, y, name, [255, 255, 255]);
                }
                for (r, c, t) in &tiles {
                    canvas.blit(label_w + c * side, r * side, t.view());
                }
                canvas.png()
            })
            .await?
            .map_err(|e| PipelineError::Internal(e.to_string()))?;
        Ok(Encoded {
            body: body.into(),
            format: Format::Png,
            dtype: "uint8",
            shape: vec![3, h, w],
        })
    }
}
