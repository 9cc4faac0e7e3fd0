//! One plane of a volume: an image slice windowed for eyes (PNG) or as numbers (f32, npy), a
//! mask slice, or both as an overlay, cut along a voxel axis or an anatomical plane (turned to
//! the radiological display). Rendered slices are cached encoded.

use std::fmt::Write;
use std::sync::Arc;

use ndarray::{Array2, ArrayD};

use super::slab::PlaneSource;
use super::volume::check_grid;
use super::{Pipeline, PipelineError, missing_label};
use crate::cache::{Canonical, Key, Stage};
use crate::catalog::Item;
use crate::imaging::encode::{self, Encoded, Format, Payload};
use crate::imaging::stats::{DecodedVolume, ValueRange};
use crate::imaging::volume::{self, DisplayPlan, Plane, SliceAt};
use crate::metrics::Metrics;
use crate::store::ObjectMeta;

/// Which slice, as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AxisSel {
    Voxel(usize),
    Plane(Plane),
}

/// What the slice shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlicePart {
    Image,
    Label,
    Overlay,
}

/// How intensities map onto PNG gray levels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Window {
    Range(f32, f32),
    /// 1st..99th percentile of the channel.
    Auto,
    /// 0.5th..99.5th percentile of the channel's non-zero voxels.
    Mri,
}

/// A slice request, as parsed from the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SliceQuery {
    pub axis: AxisSel,
    /// `None`: the middle slice.
    pub index: Option<usize>,
    pub channel: usize,
    pub part: SlicePart,
    pub window: Window,
    pub opacity: f32,
    pub format: Format,
}

/// A slice request resolved against the volume's header.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Resolved {
    at: SliceAt,
    plan: Option<DisplayPlan>,
    part: SlicePart,
    window: Window,
    opacity: f32,
    format: Format,
}

impl Resolved {
    /// Whether intensities are mapped through a display window (a PNG showing the image).
    fn windowed(&self) -> bool {
        self.format == Format::Png && self.part != SlicePart::Label
    }
}

impl Canonical for Resolved {
    /// Equal for every way of asking for the same bytes (defaults spelled out or not; a
    /// window where nothing is windowed). Written in place (`write!`): every warm request
    /// writes it, and a `format!` per part was an allocation each.
    fn write_canonical(&self, out: &mut String) {
        let SliceAt {
            axis,
            index,
            channel,
        } = self.at;
        let _ = write!(
            out,
            "slice(axis={axis},index={index},channel={channel},plan="
        );
        match self.plan {
            None => out.push_str("voxel"),
            Some(p) => {
                let _ = write!(
                    out,
                    "{}{}{}",
                    u8::from(p.transpose),
                    u8::from(p.flip_rows),
                    u8::from(p.flip_cols)
                );
            }
        }
        let part = match self.part {
            SlicePart::Image => "image",
            SlicePart::Label => "label",
            SlicePart::Overlay => "overlay",
        };
        let _ = write!(out, ",part={part},window=");
        match (self.windowed(), self.window) {
            (false, _) => out.push('-'),
            (true, Window::Range(lo, hi)) => {
                let _ = write!(out, "range({lo},{hi})");
            }
            (true, Window::Auto) => out.push_str("auto"),
            (true, Window::Mri) => out.push_str("mri"),
        }
        out.push_str(",opacity=");
        if self.part == SlicePart::Overlay {
            out.push_str(&self.opacity.to_string());
        } else {
            out.push('-');
        }
        let _ = write!(out, ",format={})", self.format.name());
    }
}

/// A slice request resolved against its volume: ready to be rendered, or to be found
/// unmodified by its ETag.
pub struct PreparedSlice {
    resolved: Resolved,
    image: PlaneSource,
    label: Option<PlaneSource>,
    label_key: String,
    /// The image object, when rendering computes its windows (they are kept for slab reads).
    remember: Option<ObjectMeta>,
    key: Key<Encoded>,
}

impl PreparedSlice {
    /// The response's ETag.
    pub fn etag(&self) -> String {
        self.key.untyped().etag(self.resolved.format.name())
    }

    /// The voxel axis cut and the index along it.
    pub fn at(&self) -> (usize, usize) {
        (self.resolved.at.axis, self.resolved.at.index)
    }
}

impl Pipeline {
    /// Resolves a slice request against the volume's header (default index, plane -> voxel
    /// axis); a slice or channel past the end is a resource that does not exist (404, like a
    /// page past the last one), not a malformed request. The decoded volume is cached, so a
    /// revalidation rarely decodes; an axial plane of a volume that is not decoded is read
    /// by byte range (`slab.rs`), which needs only the header here.
    pub async fn prepare_slice(
        &self,
        item: &Item,
        q: &SliceQuery,
    ) -> Result<PreparedSlice, PipelineError> {
        let needs_label = q.part != SlicePart::Image;
        let label_obj = match &item.label {
            Some(l) if needs_label => Some(l),
            None if needs_label => return Err(missing_label(item)),
            _ => None,
        };
        let (mut image, mut label) = match label_obj {
            Some(l) => {
                let (a, b) =
                    tokio::try_join!(self.plane_source(&item.image), self.plane_source(l))?;
                (a, Some(b))
            }
            None => (self.plane_source(&item.image).await?, None),
        };
        if let (Some(l), Some(lab)) = (label_obj, &label) {
            check_grid(&item.image.key, image.header(), &l.key, lab.header())?;
        }
        let h = image.header();
        let (axis, plan) = match q.axis {
            AxisSel::Voxel(a) => (a, None),
            AxisSel::Plane(pl) => {
                let plan = volume::display_plan(h.orientation(), pl);
                (plan.axis, Some(plan))
            }
        };
        let n = h.spatial[axis];
        let index = q.index.unwrap_or(n / 2);
        if index >= n {
            return Err(PipelineError::Missing {
                what: "slice",
                name: format!("{index} along axis {axis}"),
                available: vec![format!("index 0..={}", n - 1)],
                hint: None,
            });
        }
        if q.channel >= h.channels {
            return Err(PipelineError::Missing {
                what: "channel",
                name: q.channel.to_string(),
                available: vec![format!("channel 0..={}", h.channels - 1)],
                hint: None,
            });
        }
        let resolved = Resolved {
            at: SliceAt {
                axis,
                index,
                channel: q.channel,
            },
            plan,
            part: q.part,
            window: q.window,
            opacity: q.opacity,
            format: q.format,
        };
        // Byte ranges hold axial planes only, and percentile windows come from the whole
        // volume: anything else needs it decoded.
        let needs_windows = resolved.windowed() && matches!(q.window, Window::Auto | Window::Mri);
        let slab_ok = |p: &PlaneSource, windows: bool| match p {
            PlaneSource::Slab(s) => axis == 2 && (!windows || s.facts.windows.is_some()),
            PlaneSource::Decoded(_) => true,
        };
        if !slab_ok(&image, needs_windows) {
            image = PlaneSource::Decoded(self.volume(&item.image).await?);
        }
        if let (Some(l), Some(lab)) = (label_obj, &mut label)
            && !slab_ok(lab, false)
        {
            *lab = PlaneSource::Decoded(self.volume(l).await?);
        }
        let remember =
            (needs_windows && matches!(image, PlaneSource::Decoded(_))).then(|| item.image.clone());
        let objects = std::iter::once(&item.image).chain(label_obj);
        Ok(PreparedSlice {
            resolved,
            image,
            label,
            label_key: label_obj.map(|l| l.key.clone()).unwrap_or_default(),
            remember,
            key: Key::new(Stage::Slice, objects, &resolved),
        })
    }

    /// The prepared slice, rendered and encoded (from cache or computed).
    pub async fn slice(&self, p: PreparedSlice) -> Result<Arc<Encoded>, PipelineError> {
        let PreparedSlice {
            resolved,
            image,
            label,
            label_key,
            remember,
            key,
        } = p;
        self.cache
            .get_or_compute_with(key, || async move {
                let r = resolved;
                let at = r.at;
                let image_plane = match (&image, r.part) {
                    (_, SlicePart::Label) => None,
                    (PlaneSource::Decoded(v), _) => Some((v.clone(), at)),
                    (PlaneSource::Slab(s), _) => Some((
                        Arc::new(
                            self.read_slab(s, at.index..at.index + 1, at.channel..at.channel + 1)
                                .await?,
                        ),
                        SliceAt::FIRST,
                    )),
                };
                let label_plane = match &label {
                    None => None,
                    Some(PlaneSource::Decoded(v)) => {
                        Some((v.clone(), SliceAt { channel: 0, ..at }))
                    }
                    Some(PlaneSource::Slab(s)) => Some((
                        Arc::new(self.read_slab(s, at.index..at.index + 1, 0..1).await?),
                        SliceAt::FIRST,
                    )),
                };
                let started = std::time::Instant::now();
                let img = image.clone();
                let rendered = self
                    .pool
                    .run(move || {
                        let window = window(r, || match &img {
                            PlaneSource::Decoded(v) => v.windows(at.channel),
                            PlaneSource::Slab(s) => s
                                .facts
                                .windows
                                .as_ref()
                                .and_then(|w| w.get(at.channel).copied())
                                .unwrap_or((None, None)),
                        });
                        fn plane(
                            p: &Option<(Arc<DecodedVolume>, SliceAt)>,
                        ) -> Option<(&DecodedVolume, SliceAt)> {
                            p.as_ref().map(|(v, at)| (&**v, *at))
                        }
                        render(plane(&image_plane), plane(&label_plane), r, window)
                    })
                    .await?;
                Metrics::time(&self.metrics.encode_us, started);
                Metrics::inc(&self.metrics.encodes);
                if let (Some(obj), PlaneSource::Decoded(v)) = (&remember, &image) {
                    self.remember_facts(obj, v).await;
                }
                rendered.map_err(|e| match e {
                    RenderError::Label(message) => PipelineError::Undecodable {
                        key: label_key,
                        message,
                    },
                    RenderError::Encode(m) => PipelineError::Internal(m),
                })
            })
            .await
    }
}

enum RenderError {
    Label(String),
    Encode(String),
}

/// One plane rendered from the image's and the mask's planes (each a volume and where the
/// plane is in it: the request's place in a decoded volume, the first plane of a slab).
fn render(
    img: Option<(&DecodedVolume, SliceAt)>,
    lab: Option<(&DecodedVolume, SliceAt)>,
    r: Resolved,
    (lo, hi): (f32, f32),
) -> Result<Encoded, RenderError> {
    let enc = |e: encode::EncodeError| RenderError::Encode(e.to_string());
    let orient = |a: Array2<f32>| r.plan.map_or(a.clone(), |p| volume::orient(a.view(), p));
    let image = || -> Result<Array2<f32>, RenderError> {
        let (img, at) = img.ok_or_else(|| RenderError::Encode("no image plane".into()))?;
        Ok(orient(volume::image_slice(&img.volume, at)))
    };
    let mask = || -> Result<Array2<u8>, RenderError> {
        let (lab, at) = lab.ok_or_else(|| RenderError::Label("no mask".into()))?;
        let m = volume::label_u8(&lab.volume).map_err(|e| RenderError::Label(e.to_string()))?;
        let s = volume::label_slice(&m.view(), at);
        Ok(r.plan.map_or(s.clone(), |p| volume::orient(s.view(), p)))
    };
    let png_window = (lo, hi);
    match r.part {
        SlicePart::Image => {
            let s: ArrayD<f32> = image()?.into_dyn();
            let p = Payload {
                image: Some(&s),
                png_window,
                ..Default::default()
            };
            encode::encode(p, r.format).map_err(enc)
        }
        SlicePart::Label => {
            let m: ArrayD<u8> = mask()?.into_dyn();
            let p = Payload {
                label: Some(&m),
                ..Default::default()
            };
            encode::encode(p, r.format).map_err(enc)
        }
        SlicePart::Overlay => {
            let s = image()?;
            let m = mask()?;
            let shape = vec![3, s.nrows(), s.ncols()];
            let body = encode::png_overlay(&s, lo, hi, &m, r.opacity).map_err(enc)?;
            Ok(Encoded {
                body: body.into(),
                format: Format::Png,
                dtype: "uint8",
                shape,
            })
        }
    }
}

/// The display window `(lo, hi)` of a windowed slice; `windows` gives the channel's
/// `(auto, mri)` percentile windows, asked for only when the window is one of them.
fn window(r: Resolved, windows: impl FnOnce() -> (ValueRange, ValueRange)) -> (f32, f32) {
    let (lo, hi) = match (r.windowed(), r.window) {
        (false, _) => (0.0, 1.0),
        (true, Window::Range(lo, hi)) => (f64::from(lo), f64::from(hi)),
        (true, Window::Auto) => windows().0.unwrap_or((0.0, 1.0)),
        (true, Window::Mri) => {
            let (auto, mri) = windows();
            mri.or(auto).unwrap_or((0.0, 1.0))
        }
    };
    (lo as f32, hi as f32)
}
