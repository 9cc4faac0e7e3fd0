//! The query grammars of the slice and volume routes: names, numbers, windows, presets, sizes
//! and the rules between parameters, exactly as openapi.yaml spells them.

use super::super::extract::{Params, parse_decimal, parse_digits, parse_flip};
use super::super::item::{QueryContext, RouteQuery};
use super::super::response::{self, ARRAY_FORMATS};
use crate::api::augment::parse_augment;
use crate::config::Limits;
use crate::error::AppError;
use crate::imaging::ResizeMode;
use crate::imaging::encode::Format;
use crate::imaging::volume::{LabelSelect, Plane, RangeScale};
use crate::pipeline::augment::Augment;
use crate::pipeline::{AxisSel, Chain3d, SlicePart, SliceQuery, VolumePart, VolumeQuery, Window};

/// Named CT windows `(center, width)` in HU, as radiology workstations ship them.
pub const CT_PRESETS: [(&str, f32, f32); 5] = [
    ("ct-abdomen", 40.0, 400.0),
    ("ct-lung", -600.0, 1500.0),
    ("ct-bone", 400.0, 1800.0),
    ("ct-brain", 40.0, 80.0),
    ("ct-soft-tissue", 50.0, 350.0),
];

/// A finite number.
pub(super) fn number(p: &Params, name: &str) -> Result<Option<f32>, AppError> {
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
    parse_decimal(v, MAX_NUMBER).map(|f| f as f32)
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

pub(super) fn boolean(p: &Params, name: &str) -> Result<bool, AppError> {
    p.choice(name, false, &[("true", true), ("false", false)])
}

impl RouteQuery for SliceQuery {
    const PARAMS: &'static [&'static str] = &[
        "axis", "index", "channel", "part", "window", "a_min", "a_max", "preset", "opacity",
        "format",
    ];

    fn parse(p: &Params, cx: &QueryContext<'_>) -> Result<Self, AppError> {
        parse_slice(p, cx)
    }
}

fn parse_slice(p: &Params, cx: &QueryContext<'_>) -> Result<SliceQuery, AppError> {
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
    let window = parse_window(p)?;
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
        Some(_) => Some(p.choice("format", Format::Png, &Format::choices(&ARRAY_FORMATS))?),
    };
    let format = response::negotiate(explicit, cx.headers)?;
    if part == SlicePart::Overlay && format != Format::Png {
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

/// One of `window=center,width`, `a_min` + `a_max`, or `preset` (default `auto`).
fn parse_window(p: &Params) -> Result<Window, AppError> {
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
        // The presets are named here too: `window=ct-abdomen` is the usual slip (the browser
        // page shows this detail as it is), and the fix is a different parameter.
        let bad = || {
            let presets = preset_names().join(", ");
            let message = if preset_names().contains(&v) {
                format!("'{v}' is a preset, not center,width: use preset={v}")
            } else {
                format!("'{v}' is not center,width")
            };
            AppError::param_allowed(
                "window",
                message,
                format!(
                    "two decimals of up to 7+7 digits, the width unsigned, e.g. 40,400 or -600,1500 (width 0: a threshold at center); or a named window as preset=<{presets}>"
                ),
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
    Ok(window)
}

/// The `preset` values, in the order the spec lists them.
pub fn preset_names() -> Vec<&'static str> {
    CT_PRESETS
        .iter()
        .map(|p| p.0)
        .chain(["mri", "auto"])
        .collect()
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

fn parse_size3(v: &str, max_side: usize, max_voxels: u64) -> Result<[usize; 3], AppError> {
    parse_grid3("size", v, max_side, max_voxels)
}

/// `X,Y,Z` of whole numbers in `1..=max_side` with at most `max_voxels` voxels, for the
/// parameter `name`.
pub(super) fn parse_grid3(
    name: &str,
    v: &str,
    max_side: usize,
    max_voxels: u64,
) -> Result<[usize; 3], AppError> {
    let bad = |why: String| {
        AppError::param_allowed(
            name,
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

/// The volume formats, in `format` parameter order.
const VOLUME_FORMATS: [Format; 5] = [
    Format::Npy,
    Format::F32,
    Format::Npz,
    Format::Nii,
    Format::NiiGz,
];

/// The volume route's query: the volume request and its random transforms (resolved per item
/// into the chain's flip before the request is named).
#[derive(Debug, Clone)]
pub struct VolumeRequest {
    pub query: VolumeQuery,
    pub augment: Augment,
}

impl RouteQuery for VolumeRequest {
    const PROCESSED: Option<&'static [&'static str]> = Some(&["format", "part"]);
    const PARAMS: &'static [&'static str] = &[
        "size",
        "mode",
        "a_min",
        "a_max",
        "b_min",
        "b_max",
        "clip",
        "scale",
        "part",
        "format",
        "labels",
        "binary",
        "flip",
        "rand_flip",
        "rand_flip_axis",
        "seed",
        "epoch",
    ];

    /// The `.nii.gz`/`.nii`/`.npy`/`.npz` alias routes fix the format by their extension.
    fn parse(p: &Params, cx: &QueryContext<'_>) -> Result<Self, AppError> {
        let last = cx.path.rsplit('/').next().unwrap_or_default();
        let fixed = last
            .strip_prefix("volume.")
            .and_then(|ext| VOLUME_FORMATS.into_iter().find(|f| f.name() == ext));
        Ok(VolumeRequest {
            query: parse_volume(p, cx, fixed, VolumePart::Image)?,
            augment: parse_augment(p, 3)?,
        })
    }
}

/// The volume grammar; `part` defaults to `default_part` (a batch, which takes no `part`,
/// carries both).
pub fn parse_volume(
    p: &Params,
    cx: &QueryContext<'_>,
    fixed: Option<Format>,
    default_part: VolumePart,
) -> Result<VolumeQuery, AppError> {
    let chain = parse_chain3d(p, cx.limits)?;
    let part = p.choice(
        "part",
        default_part,
        &[
            ("image", VolumePart::Image),
            ("label", VolumePart::Label),
            ("both", VolumePart::Both),
        ],
    )?;
    let format = parse_volume_format(p, fixed)?;
    if part == VolumePart::Both && format != Format::Npz {
        return Err(AppError::param_allowed(
            "part",
            format!(
                "part=both needs a container; {} holds one array",
                format.name()
            ),
            "image or label with this format; both with format=npz",
        ));
    }
    let select = parse_select(p)?;
    if part == VolumePart::Image && (select.keep.is_some() || select.binary) {
        return Err(AppError::param_allowed(
            if select.binary { "binary" } else { "labels" },
            "label selection applies to the mask",
            "part=label or part=both",
        ));
    }
    Ok(VolumeQuery {
        chain,
        part,
        format,
        select,
    })
}

/// The 3D chain's parameters, shared by the volume and patch routes: `size`, `mode`, the
/// `ScaleIntensityRange` ones and `flip`.
pub fn parse_chain3d(p: &Params, limits: &Limits) -> Result<Chain3d, AppError> {
    let size = p
        .get("size")
        .map(|v| parse_size3(v, limits.max_volume_side, limits.max_voxels))
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
    let scale = parse_range_scale(p)?;
    let flip = parse_flip(p, 3)?;
    Ok(Chain3d {
        size,
        mode,
        scale,
        flip,
    })
}

/// `labels` and `binary`: which mask values are kept, and whether they become 1.
pub fn parse_select(p: &Params) -> Result<LabelSelect, AppError> {
    Ok(LabelSelect {
        keep: parse_labels(p)?,
        binary: boolean(p, "binary")?,
    })
}

/// `a_min`, `a_max`, `b_min`, `b_max`, `clip` and `scale`: MONAI's `ScaleIntensityRange`, or
/// none.
fn parse_range_scale(p: &Params) -> Result<Option<RangeScale>, AppError> {
    let range = a_range(p)?;
    let scale_name = p.choice(
        "scale",
        None,
        &[("range", Some(true)), ("none", Some(false))],
    )?;
    let b_min = number(p, "b_min")?;
    let b_max = number(p, "b_max")?;
    let clip = p.get("clip").map(|_| boolean(p, "clip")).transpose()?;
    match (range, scale_name) {
        (Some(_), Some(false)) => Err(AppError::param_allowed(
            "scale",
            "scale=none contradicts a_min/a_max",
            "range (or drop a_min and a_max)",
        )),
        (None, Some(true)) => Err(AppError::param(
            "a_min",
            "scale=range needs a_min and a_max (the seed uses -1000 and 1000)",
        )),
        (Some((a_min, a_max)), _) => Ok(Some(RangeScale {
            a_min,
            a_max,
            b_min: b_min.unwrap_or(0.0),
            b_max: b_max.unwrap_or(1.0),
            clip: clip.unwrap_or(false),
        })),
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
            Ok(None)
        }
    }
}

/// `format`, which must agree with an alias route's extension (default npy).
fn parse_volume_format(p: &Params, fixed: Option<Format>) -> Result<Format, AppError> {
    let asked = p
        .get("format")
        .map(|_| p.choice("format", Format::Npy, &Format::choices(&VOLUME_FORMATS)))
        .transpose()?;
    match (fixed, asked) {
        (Some(f), Some(a)) if f != a => Err(AppError::param_allowed(
            "format",
            format!(
                "'{}' contradicts the URL's .{} extension",
                a.name(),
                f.name()
            ),
            f.name(),
        )),
        (Some(f), _) => Ok(f),
        (None, a) => Ok(a.unwrap_or(Format::Npy)),
    }
}

/// `labels=1,2`: the label values kept, sorted and deduplicated.
fn parse_labels(p: &Params) -> Result<Option<Vec<u8>>, AppError> {
    let Some(v) = p.get("labels") else {
        return Ok(None);
    };
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
    Ok(Some(keep))
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
    }
}
