//! Segmentation volumes: `GET .../items/{item}/slice` (one plane as PNG for eyes or float for
//! programs) and `GET .../items/{item}/volume` (+ `.nii.gz`, `.nii`, `.npy`, `.npz` aliases:
//! the whole volume through MONAI's 3D chain, with its mask).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use ndarray::{Array2, IxDyn};

use super::datasets::{dataset, item, snapshot, split};
use super::extract::{Params, Path, RawPairs, parse_digits};
use super::response::{self, ArrayFormat, DataHeaders};
use crate::cache::Body;
use crate::catalog::{Item, Kind, Snapshot};
use crate::error::AppError;
use crate::imaging::ResizeMode;
use crate::imaging::encode;
use crate::imaging::nifti::{self, OutType};
use crate::imaging::volume::{self, DisplayPlan, LabelSelect, Plane, RangeScale, SliceAt};
use crate::pipeline::{self, Chain3d, DecodedVolume, cpu_job};
use crate::state::AppState;

/// The slice route's query parameters.
pub const SLICE_PARAMS: &[&str] = &[
    "axis", "index", "channel", "part", "window", "a_min", "a_max", "preset", "opacity", "format",
];

/// The volume routes' query parameters.
pub const VOLUME_PARAMS: &[&str] = &[
    "size", "mode", "a_min", "a_max", "b_min", "b_max", "clip", "scale", "part", "format",
    "labels", "binary",
];

/// Named CT windows `(center, width)` in HU, as radiology workstations ship them.
pub const CT_PRESETS: [(&str, f32, f32); 5] = [
    ("ct-abdomen", 40.0, 400.0),
    ("ct-lung", -600.0, 1500.0),
    ("ct-bone", 400.0, 1800.0),
    ("ct-brain", 40.0, 80.0),
    ("ct-soft-tissue", 50.0, 350.0),
];

/// Resolves the path to a segmentation item.
fn seg_item<'a>(
    snap: &'a Snapshot,
    (name, split_name, id): &(String, String, String),
) -> Result<&'a Item, AppError> {
    let ds = dataset(snap, name)?;
    let sp = split(ds, split_name)?;
    let it = item(ds, sp, id)?;
    if ds.kind != Kind::Segmentation {
        return Err(AppError::NotApplicable(format!(
            "dataset '{}' holds 2D images; slices and volumes come from segmentation datasets (use .../image)",
            ds.name
        )));
    }
    Ok(it)
}

/// A finite number.
fn number(p: &Params, name: &str) -> Result<Option<f32>, AppError> {
    let Some(v) = p.get(name) else {
        return Ok(None);
    };
    parse_number(v).map(Some).ok_or_else(|| {
        AppError::param_allowed(
            name,
            format!("'{v}' is not a number"),
            "a finite decimal number, e.g. -1000 or 0.5",
        )
    })
}

/// Largest magnitude a number parameter may have: far beyond any intensity, well inside f32.
pub const MAX_NUMBER: f64 = 1e38;

/// A decimal number as the spec's `type: number` says: digits, sign, point and exponent
/// (no spaces, no `inf`/`nan`), with `|x| <= MAX_NUMBER`.
fn parse_number(v: &str) -> Option<f32> {
    let ok_chars = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b));
    let f: f64 = v.parse().ok()?;
    (ok_chars && f.is_finite() && f.abs() <= MAX_NUMBER).then_some(f as f32)
}

/// One number of `window=center,width`: `-?D{1,7}(.D{1,7})?` exactly as the spec's pattern
/// (the width without a sign).
fn parse_window_number(v: &str, signed: bool) -> Option<f32> {
    let digits = v.strip_prefix('-').filter(|_| signed).unwrap_or(v);
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let run = |t: &str| (1..=7).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit());
    (run(int) && frac.is_none_or(run)).then(|| v.parse().ok())?
}

fn boolean(p: &Params, name: &str) -> Result<bool, AppError> {
    p.choice(name, false, &[("true", true), ("false", false)])
}

/// Which slice, as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AxisSel {
    Voxel(usize),
    Plane(Plane),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlicePart {
    Image,
    Label,
    Overlay,
}

/// How intensities map onto PNG gray levels.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Window {
    Range(f32, f32),
    Auto,
    Mri,
}

struct SliceQuery {
    axis: AxisSel,
    index: Option<usize>,
    channel: usize,
    part: SlicePart,
    window: Window,
    opacity: f32,
    format: ArrayFormat,
}

impl SliceQuery {
    /// Canonical text of the resolved slice: equal for every way of asking for the same
    /// bytes (defaults spelled out or not; a window where nothing is windowed).
    fn canonical(&self, at: SliceAt, plan: Option<DisplayPlan>) -> String {
        let windowed = self.format == ArrayFormat::Png && self.part != SlicePart::Label;
        let window = if windowed {
            format!("{:?}", self.window)
        } else {
            "-".into()
        };
        let opacity = if self.part == SlicePart::Overlay {
            self.opacity.to_string()
        } else {
            "-".into()
        };
        format!(
            "slice(at={at:?},plan={plan:?},part={:?},window={window},opacity={opacity})",
            self.part
        )
    }
}

fn parse_slice(p: &Params, headers: &HeaderMap) -> Result<SliceQuery, AppError> {
    let axis = p.choice(
        "axis",
        AxisSel::Plane(Plane::Axial),
        &[
            ("0", AxisSel::Voxel(0)),
            ("1", AxisSel::Voxel(1)),
            ("2", AxisSel::Voxel(2)),
            ("axial", AxisSel::Plane(Plane::Axial)),
            ("coronal", AxisSel::Plane(Plane::Coronal)),
            ("sagittal", AxisSel::Plane(Plane::Sagittal)),
        ],
    )?;
    let index = match p.get("index") {
        None => None,
        Some(v) => Some(parse_digits(v).ok_or_else(|| {
            AppError::param_allowed(
                "index",
                format!("'{v}' is not a whole number"),
                "0..=(slices along the axis - 1); omit for the middle slice",
            )
        })?),
    };
    let channel = p.usize_in("channel", 0, 0, 1 << 16)?;
    let part = p.choice(
        "part",
        SlicePart::Image,
        &[
            ("image", SlicePart::Image),
            ("label", SlicePart::Label),
            ("overlay", SlicePart::Overlay),
        ],
    )?;
    let given: Vec<&str> = ["window", "a_min", "preset"]
        .into_iter()
        .filter(|n| p.get(n).is_some() || (*n == "a_min" && p.get("a_max").is_some()))
        .collect();
    if given.len() > 1 {
        return Err(AppError::param_allowed(
            given[1],
            format!(
                "'{}' and '{}' both set the display window",
                given[0], given[1]
            ),
            "one of window=center,width; a_min and a_max; preset",
        ));
    }
    let window = if let Some(v) = p.get("window") {
        let bad = || {
            AppError::param_allowed(
                "window",
                format!("'{v}' is not center,width"),
                "two decimals of up to 7+7 digits, the width unsigned, e.g. 40,400 or -600,1500 (width 0: a threshold at center)",
            )
        };
        let (c, w) = v.split_once(',').ok_or_else(bad)?;
        let c = parse_window_number(c, true).ok_or_else(bad)?;
        let w = parse_window_number(w, false).ok_or_else(bad)?;
        Window::Range(c - w / 2.0, c + w / 2.0)
    } else if let Some((lo, hi)) = a_range(p)? {
        Window::Range(lo, hi)
    } else {
        let mut choices: Vec<(&str, Window)> = CT_PRESETS
            .iter()
            .map(|&(n, c, w)| (n, Window::Range(c - w / 2.0, c + w / 2.0)))
            .collect();
        choices.push(("mri", Window::Mri));
        choices.push(("auto", Window::Auto));
        p.choice("preset", Window::Auto, &choices)?
    };
    let opacity = match number(p, "opacity")? {
        None => 0.4,
        Some(o) if (0.0..=1.0).contains(&o) => o,
        Some(o) => {
            return Err(AppError::param_allowed(
                "opacity",
                format!("{o} is out of range"),
                "0..=1",
            ));
        }
    };
    let explicit = match p.get("format") {
        None => None,
        Some(_) => Some(p.choice("format", ArrayFormat::Png, &ArrayFormat::CHOICES)?),
    };
    let format = response::negotiate(explicit, headers)?;
    if part == SlicePart::Overlay && format != ArrayFormat::Png {
        return Err(AppError::param_allowed(
            "format",
            "an overlay is a picture: it only exists as PNG",
            "png (or part=image / part=label for numbers)",
        ));
    }
    Ok(SliceQuery {
        axis,
        index,
        channel,
        part,
        window,
        opacity,
        format,
    })
}

/// `a_min`/`a_max`: both or neither. Equal or reversed ends are MONAI's business
/// (`ScaleIntensityRange` shifts instead of dividing by zero, and inverts a reversed range).
fn a_range(p: &Params) -> Result<Option<(f32, f32)>, AppError> {
    match (number(p, "a_min")?, number(p, "a_max")?) {
        (None, None) => Ok(None),
        (Some(lo), Some(hi)) => Ok(Some((lo, hi))),
        (Some(_), None) => Err(AppError::param("a_max", "a_min needs a_max")),
        (None, Some(_)) => Err(AppError::param("a_min", "a_max needs a_min")),
    }
}

/// `GET /v1/datasets/{dataset}/splits/{split}/items/{item}/slice`
pub async fn get_slice(
    State(state): State<AppState>,
    Path(path): Path<(String, String, String)>,
    headers: HeaderMap,
    q: RawPairs,
) -> Result<Response, AppError> {
    let p = Params::new(q, SLICE_PARAMS)?;
    let sq = parse_slice(&p, &headers)?;
    let snap = snapshot(&state).await?;
    let it = seg_item(&snap, &path)?;
    let needs_label = sq.part != SlicePart::Image;
    if needs_label && it.label.is_none() {
        return Err(pipeline::missing_label(it));
    }
    let label_id = it
        .label
        .as_ref()
        .filter(|_| needs_label)
        .map(|l| format!("{}@{}", l.key, l.version))
        .unwrap_or_default();
    // The ETag needs the resolved slice (default index, plane -> voxel axis), so the header
    // comes first; the decoded volume is cached, so a revalidation rarely decodes.
    let (img, lab) = pipeline::volume_pair(&state, it, needs_label).await?;
    let h = &img.volume.header;
    let (axis, plan) = match sq.axis {
        AxisSel::Voxel(a) => (a, None),
        AxisSel::Plane(pl) => {
            let plan = volume::display_plan(h.orientation(), pl);
            (plan.axis, Some(plan))
        }
    };
    let n = h.spatial[axis];
    let index = sq.index.unwrap_or(n / 2);
    // A slice past the end is a resource that does not exist (404, like a page past the last
    // one), not a malformed request: the same query is fine on a larger volume.
    if index >= n {
        return Err(AppError::NotFound {
            what: "slice",
            name: format!("{index} along axis {axis}"),
            available: vec![format!("index 0..={}", n - 1)],
            hint: None,
        });
    }
    if sq.channel >= h.channels {
        return Err(AppError::NotFound {
            what: "channel",
            name: sq.channel.to_string(),
            available: vec![format!("channel 0..={}", h.channels - 1)],
            hint: None,
        });
    }
    let at = SliceAt {
        axis,
        index,
        channel: sq.channel,
    };
    let canonical = sq.canonical(at, plan);
    let etag = response::array_etag(
        &[&it.image.key, &it.image.version, &label_id, &canonical],
        sq.format,
    );
    if response::not_modified(&headers, &etag) {
        return Ok(response::data_not_modified(&etag));
    }
    let cache_key = format!(
        "{}@{}|{label_id}|{canonical}|{}",
        it.image.key,
        it.image.version,
        sq.format.name()
    );
    let (part, window, opacity, format) = (sq.part, sq.window, sq.opacity, sq.format);
    let label_key = it.label.as_ref().map(|l| l.key.clone()).unwrap_or_default();
    let out = state
        .cache
        .get_or_compute(cache_key, async {
            let rendered = cpu_job(&state, move || {
                render_slice(
                    &img,
                    lab.as_deref(),
                    at,
                    plan,
                    part,
                    window,
                    opacity,
                    format,
                )
            })
            .await?;
            rendered
                .map(|(b, shape)| SliceBody {
                    body: Body(b.into()),
                    shape,
                })
                .map_err(|e| match e {
                    RenderError::Label(m) => AppError::Undecodable {
                        key: label_key,
                        message: m,
                    },
                    RenderError::Encode(m) => AppError::Internal(m),
                })
        })
        .await?;
    let dtype = match (part, format) {
        (SlicePart::Label, ArrayFormat::Npy) | (_, ArrayFormat::Png) => "uint8",
        _ => "float32",
    };
    Ok(response::data_response(
        out.body.0.clone(),
        DataHeaders {
            content_type: format.content_type(),
            dtype,
            shape: &out.shape,
            file_name: &format!(
                "{}_{}{}.{}",
                it.id,
                ["x", "y", "z"][axis],
                index,
                format.name()
            ),
        },
        &etag,
    ))
}

/// A rendered slice and its shape.
struct SliceBody {
    body: Body,
    shape: Vec<usize>,
}

impl crate::cache::Entry for SliceBody {
    fn bytes(&self) -> usize {
        self.body.0.len()
    }
}

enum RenderError {
    Label(String),
    Encode(String),
}

#[allow(clippy::too_many_arguments)]
fn render_slice(
    img: &DecodedVolume,
    lab: Option<&DecodedVolume>,
    at: SliceAt,
    plan: Option<DisplayPlan>,
    part: SlicePart,
    window: Window,
    opacity: f32,
    format: ArrayFormat,
) -> Result<(Vec<u8>, Vec<usize>), RenderError> {
    let enc = |e: encode::EncodeError| RenderError::Encode(e.to_string());
    let orient = |a: Array2<f32>| plan.map_or(a.clone(), |p| volume::orient(a.view(), p));
    let mask = || -> Result<Array2<u8>, RenderError> {
        let lab = lab.ok_or_else(|| RenderError::Label("no mask".into()))?;
        let m = volume::label_u8(&lab.volume).map_err(|e| RenderError::Label(e.to_string()))?;
        let s = volume::label_slice(&m.view(), SliceAt { channel: 0, ..at });
        Ok(plan.map_or(s.clone(), |p| volume::orient(s.view(), p)))
    };
    let window_of = || -> (f32, f32) {
        let (auto, mri) = img.windows(at.channel);
        let (lo, hi) = match window {
            Window::Range(lo, hi) => (f64::from(lo), f64::from(hi)),
            Window::Auto => auto.unwrap_or((0.0, 1.0)),
            Window::Mri => mri.or(auto).unwrap_or((0.0, 1.0)),
        };
        (lo as f32, hi as f32)
    };
    match part {
        SlicePart::Image => {
            let s = orient(volume::image_slice(&img.volume, at));
            let shape = vec![s.nrows(), s.ncols()];
            let s = s.into_dyn();
            let body = match format {
                ArrayFormat::Png => {
                    let (lo, hi) = window_of();
                    let s3 = s
                        .into_shape_with_order(IxDyn(&[1, shape[0], shape[1]]))
                        .expect("same size");
                    encode::png8(&s3, lo, hi).map_err(enc)?
                }
                ArrayFormat::F32 => encode::f32_le(&s),
                ArrayFormat::Npy => encode::npy(&s).map_err(enc)?,
            };
            Ok((body, shape))
        }
        SlicePart::Label => {
            let m = mask()?;
            let shape = vec![m.nrows(), m.ncols()];
            let body = match format {
                ArrayFormat::Png => encode::png_labels(&m).map_err(enc)?,
                ArrayFormat::F32 => encode::f32_le(&m.mapv(f32::from).into_dyn()),
                ArrayFormat::Npy => encode::npy_of(&m.into_dyn()).map_err(enc)?,
            };
            Ok((body, shape))
        }
        SlicePart::Overlay => {
            let s = orient(volume::image_slice(&img.volume, at));
            let m = mask()?;
            let (lo, hi) = window_of();
            let shape = vec![3, s.nrows(), s.ncols()];
            Ok((
                encode::png_overlay(&s, lo, hi, &m, opacity).map_err(enc)?,
                shape,
            ))
        }
    }
}

/// Formats of the volume routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeFormat {
    Npy,
    F32,
    Npz,
    Nii,
    NiiGz,
}

impl VolumeFormat {
    const CHOICES: [(&'static str, VolumeFormat); 5] = [
        ("npy", VolumeFormat::Npy),
        ("f32", VolumeFormat::F32),
        ("npz", VolumeFormat::Npz),
        ("nii", VolumeFormat::Nii),
        ("nii.gz", VolumeFormat::NiiGz),
    ];

    fn name(self) -> &'static str {
        Self::CHOICES
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("npy", |(n, _)| n)
    }

    fn content_type(self) -> &'static str {
        match self {
            VolumeFormat::Npy => "application/x-npy",
            VolumeFormat::F32 | VolumeFormat::Nii => "application/octet-stream",
            VolumeFormat::Npz => "application/x-npz",
            // A gzip file, not a gzip-encoded body: clients keep the bytes as they are, and
            // the compression layer leaves this type alone.
            VolumeFormat::NiiGz => "application/gzip",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VolumePart {
    Image,
    Label,
    Both,
}

struct VolumeQuery {
    chain: Chain3d,
    part: VolumePart,
    format: VolumeFormat,
    select: LabelSelect,
}

fn parse_size3(v: &str, max_side: usize, max_voxels: u64) -> Result<[usize; 3], AppError> {
    let bad = |why: String| {
        AppError::param_allowed(
            "size",
            why,
            format!(
                "three whole numbers in 1..={max_side}, e.g. 128,128,64, with at most {max_voxels} voxels"
            ),
        )
    };
    let parts: Vec<&str> = v.split(',').collect();
    if parts.len() != 3 {
        return Err(bad(format!("'{v}' is not X,Y,Z")));
    }
    let mut out = [0usize; 3];
    for (o, t) in out.iter_mut().zip(&parts) {
        *o = parse_digits(t)
            .filter(|n| (1..=max_side).contains(n))
            .ok_or_else(|| bad(format!("'{t}' is not a size in range")))?;
    }
    if out.iter().map(|&d| d as u64).product::<u64>() > max_voxels {
        return Err(bad(format!("{v} has more voxels than this server makes")));
    }
    Ok(out)
}

fn parse_volume(
    p: &Params,
    state: &AppState,
    fixed: Option<VolumeFormat>,
) -> Result<VolumeQuery, AppError> {
    let size = p
        .get("size")
        .map(|v| parse_size3(v, state.limits.max_volume_side, state.limits.max_voxels))
        .transpose()?;
    let mode = p.choice(
        "mode",
        ResizeMode::Area,
        &[
            ("area", ResizeMode::Area),
            ("trilinear", ResizeMode::Linear),
            ("nearest", ResizeMode::Nearest),
        ],
    )?;
    let range = a_range(p)?;
    let scale_name = p.choice(
        "scale",
        None,
        &[("range", Some(true)), ("none", Some(false))],
    )?;
    let b_min = number(p, "b_min")?;
    let b_max = number(p, "b_max")?;
    let clip = p.get("clip").map(|_| boolean(p, "clip")).transpose()?;
    let scale = match (range, scale_name) {
        (Some(_), Some(false)) => {
            return Err(AppError::param_allowed(
                "scale",
                "scale=none contradicts a_min/a_max",
                "range (or drop a_min and a_max)",
            ));
        }
        (None, Some(true)) => {
            return Err(AppError::param(
                "a_min",
                "scale=range needs a_min and a_max (the seed uses -1000 and 1000)",
            ));
        }
        (Some((a_min, a_max)), _) => Some(RangeScale {
            a_min,
            a_max,
            b_min: b_min.unwrap_or(0.0),
            b_max: b_max.unwrap_or(1.0),
            clip: clip.unwrap_or(false),
        }),
        (None, _) => {
            for (name, given) in [
                ("b_min", b_min.is_some()),
                ("b_max", b_max.is_some()),
                ("clip", clip.is_some()),
            ] {
                if given {
                    return Err(AppError::param(
                        name,
                        format!("{name} only applies with a_min and a_max (ScaleIntensityRange)"),
                    ));
                }
            }
            None
        }
    };
    let part = p.choice(
        "part",
        VolumePart::Image,
        &[
            ("image", VolumePart::Image),
            ("label", VolumePart::Label),
            ("both", VolumePart::Both),
        ],
    )?;
    let asked = p
        .get("format")
        .map(|_| p.choice("format", VolumeFormat::Npy, &VolumeFormat::CHOICES))
        .transpose()?;
    let format = match (fixed, asked) {
        (Some(f), Some(a)) if f != a => {
            return Err(AppError::param_allowed(
                "format",
                format!(
                    "'{}' contradicts the URL's .{} extension",
                    a.name(),
                    f.name()
                ),
                f.name(),
            ));
        }
        (Some(f), _) => f,
        (None, a) => a.unwrap_or(VolumeFormat::Npy),
    };
    if part == VolumePart::Both && format != VolumeFormat::Npz {
        return Err(AppError::param_allowed(
            "part",
            format!(
                "part=both needs a container; {} holds one array",
                format.name()
            ),
            "image or label with this format; both with format=npz",
        ));
    }
    let keep = match p.get("labels") {
        None => None,
        Some(v) => {
            let mut keep = Vec::new();
            for t in v.split(',') {
                let n = parse_digits(t).filter(|&n| n <= 255).ok_or_else(|| {
                    AppError::param_allowed(
                        "labels",
                        format!("'{t}' is not a label value"),
                        "a comma-separated list of whole numbers in 0..=255, e.g. 1,2",
                    )
                })?;
                keep.push(n as u8);
            }
            keep.sort_unstable();
            keep.dedup();
            Some(keep)
        }
    };
    let binary = boolean(p, "binary")?;
    if part == VolumePart::Image && (keep.is_some() || binary) {
        return Err(AppError::param_allowed(
            if binary { "binary" } else { "labels" },
            "label selection applies to the mask",
            "part=label or part=both",
        ));
    }
    Ok(VolumeQuery {
        chain: Chain3d { size, mode, scale },
        part,
        format,
        select: LabelSelect { keep, binary },
    })
}

/// The slice route's query parsing as `get_slice` runs it, before the store is touched. For
/// fuzz/fuzz_targets/query.rs only; not part of the API.
#[doc(hidden)]
pub fn fuzz_parse_slice(q: RawPairs, headers: &HeaderMap) -> Result<(), AppError> {
    let p = Params::new(q, SLICE_PARAMS)?;
    parse_slice(&p, headers).map(drop)
}

/// The volume routes' query parsing as `volume_response` runs it (`fixed`: the format of a
/// `.nii.gz`/`.nii`/`.npy`/`.npz` alias route), before the store is touched. For
/// fuzz/fuzz_targets/query.rs only; not part of the API.
#[doc(hidden)]
pub fn fuzz_parse_volume(
    q: RawPairs,
    state: &AppState,
    fixed: Option<VolumeFormat>,
) -> Result<(), AppError> {
    let p = Params::new(q, VOLUME_PARAMS)?;
    parse_volume(&p, state, fixed).map(drop)
}

async fn volume_response(
    state: AppState,
    path: (String, String, String),
    headers: HeaderMap,
    q: RawPairs,
    fixed: Option<VolumeFormat>,
) -> Result<Response, AppError> {
    let p = Params::new(q, VOLUME_PARAMS)?;
    let vq = parse_volume(&p, &state, fixed)?;
    let snap = snapshot(&state).await?;
    let it = seg_item(&snap, &path)?;
    let wants_image = vq.part != VolumePart::Label;
    let wants_label = vq.part != VolumePart::Image;
    if wants_label && it.label.is_none() {
        return Err(pipeline::missing_label(it));
    }
    let label_id = it
        .label
        .as_ref()
        .filter(|_| wants_label)
        .map(|l| format!("{}@{}", l.key, l.version))
        .unwrap_or_default();
    // The header resolves the defaults (a size equal to the native grid is no resize), so
    // equal requests share one ETag and one cache entry.
    let (img, lab) = pipeline::volume_pair(&state, it, wants_label).await?;
    let mut vq = vq;
    if vq.chain.size == Some(img.volume.header.spatial) {
        vq.chain.size = None;
    }
    if vq.chain.size.is_none() {
        vq.chain.mode = ResizeMode::Area;
    }
    let canonical = format!(
        "{:?}|{}|{}",
        vq.part,
        vq.chain.canonical(),
        vq.select.canonical()
    );
    let etag = response::etag_of(&[
        &it.image.key,
        &it.image.version,
        &label_id,
        &canonical,
        vq.format.name(),
    ]);
    if response::not_modified(&headers, &etag) {
        return Ok(response::data_not_modified(&etag));
    }
    check_output_size(&state, it, &img, lab.as_deref(), &vq)?;
    let image = if wants_image {
        Some(pipeline::volume_image(&state, it, vq.chain).await?)
    } else {
        None
    };
    let label = if wants_label {
        Some(pipeline::volume_label(&state, it, vq.chain.size, &vq.select).await?)
    } else {
        None
    };
    let src = if wants_image {
        &img.volume.header
    } else {
        &lab.as_ref().unwrap_or(&img).volume.header
    };
    let from = src.spatial;
    let to = vq.chain.size.unwrap_or(from);
    // Image and mask share the image's affine so they line up in viewers.
    let affine = volume::resized_affine(&img.volume.header.affine, from, to);
    let format = vq.format;
    let t = std::time::Instant::now();
    let (body, shape, dtype) = cpu_job(
        &state,
        move || -> Result<(Vec<u8>, Vec<usize>, &'static str), encode::EncodeError> {
            let img = image.as_ref().map(|t| &t.data);
            let lab = label.as_ref().map(|m| &m.0);
            let shape = img
                .map(|a| a.shape().to_vec())
                .or_else(|| lab.map(|l| l.shape().to_vec()))
                .unwrap_or_default();
            Ok(match (format, img, lab) {
                (VolumeFormat::Npz, i, l) => (encode::npz(i, l)?, vec![], ""),
                (VolumeFormat::Npy, Some(i), _) => (encode::npy(i)?, shape, "float32"),
                (VolumeFormat::Npy, None, Some(l)) => (encode::npy_of(l)?, shape, "uint8"),
                (VolumeFormat::F32, Some(i), _) => (encode::f32_le(i), shape, "float32"),
                (VolumeFormat::F32, None, Some(l)) => {
                    (encode::f32_le(&l.mapv(f32::from)), shape, "float32")
                }
                (VolumeFormat::Nii | VolumeFormat::NiiGz, i, l) => {
                    let (data, ty, dtype) = match (i, l) {
                        (Some(i), _) => (volume::to_file_order(i), OutType::F32, "float32"),
                        (None, Some(l)) => (volume::to_file_order(l), OutType::U8, "uint8"),
                        (None, None) => return Err(encode::EncodeError("nothing to write".into())),
                    };
                    let nii = nifti::encode_nifti1(&nifti_dims(&shape), &affine, ty, &data, 2);
                    let body = if format == VolumeFormat::NiiGz {
                        gzip(&nii)?
                    } else {
                        nii
                    };
                    (body, shape, dtype)
                }
                _ => return Err(encode::EncodeError("nothing to write".into())),
            })
        },
    )
    .await?
    .map_err(|e| AppError::Internal(e.to_string()))?;
    crate::state::Metrics::time(&state.metrics.encode_us, t);
    let part = match vq.part {
        VolumePart::Image => "",
        VolumePart::Label => "_label",
        VolumePart::Both => "_both",
    };
    Ok(response::data_response(
        body.into(),
        DataHeaders {
            content_type: format.content_type(),
            dtype,
            shape: &shape,
            file_name: &format!("{}{part}.{}", it.id, format.name()),
        },
        &etag,
    ))
}

/// A volume response is built whole in memory (the transformed array, then its encoding), and
/// a small file can decode to a native grid of gigabytes as float32: each array it would carry
/// is bounded by `--max-output-mb` before anything is computed.
fn check_output_size(
    state: &AppState,
    it: &Item,
    img: &DecodedVolume,
    lab: Option<&DecodedVolume>,
    vq: &VolumeQuery,
) -> Result<(), AppError> {
    let grid = vq.chain.size.unwrap_or(img.volume.header.spatial);
    let voxels = grid.iter().map(|&d| d as u64).product::<u64>();
    let max = state.limits.max_output_bytes;
    let mut arrays = Vec::new();
    if vq.part != VolumePart::Label {
        let c = img.volume.header.channels as u64;
        arrays.push((&it.image.key, "image", voxels * c * 4));
    }
    if let (Some(l), Some(key)) = (lab, it.label.as_ref().map(|l| &l.key)) {
        let width = if vq.format == VolumeFormat::F32 { 4 } else { 1 };
        let c = l.volume.header.channels as u64;
        arrays.push((key, "mask", voxels * c * width));
    }
    match arrays.into_iter().find(|a| a.2 > max) {
        None => Ok(()),
        Some((key, what, bytes)) => Err(AppError::TooLarge {
            key: key.clone(),
            message: format!(
                "on the {}x{}x{} grid its {what} would be {} MiB as sent, and this server sends \
                 at most {} MiB per array (--max-output-mb); ask for a smaller grid with \
                 size=X,Y,Z (each side at most {})",
                grid[0],
                grid[1],
                grid[2],
                bytes.div_ceil(1 << 20),
                max >> 20,
                state.limits.max_volume_side
            ),
        }),
    }
}

/// Fast gzip: the body is made per request, and level 1 costs a fraction of level 6 for
/// float volumes whose low bits barely compress anyway.
fn gzip(data: &[u8]) -> Result<Vec<u8>, encode::EncodeError> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 2),
        flate2::Compression::fast(),
    );
    gz.write_all(data)
        .map_err(|e| encode::EncodeError(e.to_string()))?;
    gz.finish().map_err(|e| encode::EncodeError(e.to_string()))
}

/// NIfTI dims of a C-order `(C, X, Y, Z)` array: 3D for one channel, else channels 4th.
pub fn nifti_dims(shape: &[usize]) -> Vec<usize> {
    let mut dims = shape[1..].to_vec();
    if shape[0] > 1 {
        dims.push(shape[0]);
    }
    dims
}

/// `GET .../items/{item}/volume`
pub async fn get_volume(
    State(s): State<AppState>,
    Path(p): Path<(String, String, String)>,
    h: HeaderMap,
    q: RawPairs,
) -> Result<Response, AppError> {
    volume_response(s, p, h, q, None).await
}

/// `GET .../items/{item}/volume.nii.gz`
pub async fn get_volume_nii_gz(
    State(s): State<AppState>,
    Path(p): Path<(String, String, String)>,
    h: HeaderMap,
    q: RawPairs,
) -> Result<Response, AppError> {
    volume_response(s, p, h, q, Some(VolumeFormat::NiiGz)).await
}

/// `GET .../items/{item}/volume.nii`
pub async fn get_volume_nii(
    State(s): State<AppState>,
    Path(p): Path<(String, String, String)>,
    h: HeaderMap,
    q: RawPairs,
) -> Result<Response, AppError> {
    volume_response(s, p, h, q, Some(VolumeFormat::Nii)).await
}

/// `GET .../items/{item}/volume.npy`
pub async fn get_volume_npy(
    State(s): State<AppState>,
    Path(p): Path<(String, String, String)>,
    h: HeaderMap,
    q: RawPairs,
) -> Result<Response, AppError> {
    volume_response(s, p, h, q, Some(VolumeFormat::Npy)).await
}

/// `GET .../items/{item}/volume.npz`
pub async fn get_volume_npz(
    State(s): State<AppState>,
    Path(p): Path<(String, String, String)>,
    h: HeaderMap,
    q: RawPairs,
) -> Result<Response, AppError> {
    volume_response(s, p, h, q, Some(VolumeFormat::Npz)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_sizes() {
        assert_eq!(parse_number("-1000"), Some(-1000.0));
        assert_eq!(parse_number("0.5"), Some(0.5));
        for bad in ["", "nan", "inf", "1e99", " 1", "0x10", "1,2"] {
            assert_eq!(parse_number(bad), None, "{bad}");
        }
        assert_eq!(
            parse_size3("128,128,64", 4096, 1 << 30).unwrap(),
            [128, 128, 64]
        );
        for bad in ["128,128", "0,1,1", "a,b,c", "5000,1,1", "1,2,3,4"] {
            assert!(parse_size3(bad, 4096, 1 << 30).is_err(), "{bad}");
        }
        assert!(parse_size3("1000,1000,1000", 4096, 1 << 20).is_err());
        assert_eq!(nifti_dims(&[1, 2, 3, 4]), [2, 3, 4]);
        assert_eq!(nifti_dims(&[4, 2, 3, 4]), [2, 3, 4, 4]);
    }
}
