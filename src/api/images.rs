//! `GET .../items/{item}/image`: a classification image through the seed's MONAI chain
//! (`LoadImage -> EnsureChannelFirst -> Resize -> ScaleIntensity`), as PNG, f32 or npy.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use super::datasets::{dataset, item, snapshot, split};
use super::extract::{Params, Path, RawPairs, parse_digits};
use super::response::{self, ArrayFormat, PngWindow};
use crate::catalog::Kind;
use crate::error::AppError;
use crate::imaging::intensity::finite_range;
use crate::imaging::{ChannelMode, DecodeOptions, PaletteMode, ResizeMode};
use crate::pipeline::{self, Chain2d, Scale, cpu_job};
use crate::state::AppState;

/// The seed's `Resize((64, 64))`.
pub const DEFAULT_SIZE: (usize, usize) = (64, 64);

/// Parses `size=H,W`.
fn parse_size(v: &str, max: usize) -> Result<(usize, usize), AppError> {
    let bad = || {
        AppError::param_allowed(
            "size",
            format!("'{v}' is not H,W"),
            format!("two whole numbers in 1..={max} separated by a comma, e.g. 64,64"),
        )
    };
    let (h, w) = v.split_once(',').ok_or_else(bad)?;
    let h = parse_digits(h).ok_or_else(bad)?;
    let w = parse_digits(w).ok_or_else(bad)?;
    if !(1..=max).contains(&h) || !(1..=max).contains(&w) {
        return Err(bad());
    }
    Ok((h, w))
}

/// The image's query parameters.
pub const IMAGE_PARAMS: &[&str] = &["size", "mode", "scale", "channels", "palette", "format"];

/// Turns the query into a chain and an optional explicit format.
pub fn parse_image_params(
    p: &Params,
    state: &AppState,
) -> Result<(Chain2d, Option<ArrayFormat>), AppError> {
    let size = match p.get("size") {
        None => DEFAULT_SIZE,
        Some(v) => parse_size(v, state.limits.max_output_side)?,
    };
    let mode = p.choice(
        "mode",
        ResizeMode::Area,
        &[
            ("area", ResizeMode::Area),
            ("nearest", ResizeMode::Nearest),
            ("bilinear", ResizeMode::Linear),
        ],
    )?;
    let scale = p.choice(
        "scale",
        Scale::MinMax,
        &[("minmax", Scale::MinMax), ("none", Scale::None)],
    )?;
    let monai = DecodeOptions::monai(state.limits.max_pixels);
    let channels = p.choice(
        "channels",
        monai.channels,
        &[
            ("native", ChannelMode::Native),
            ("1", ChannelMode::Luminance),
        ],
    )?;
    let palette = p.choice(
        "palette",
        monai.palette,
        &[
            ("index", PaletteMode::Indices),
            ("expand", PaletteMode::Expand),
        ],
    )?;
    let format = match p.get("format") {
        None => None,
        Some(_) => Some(p.choice("format", ArrayFormat::Png, &ArrayFormat::CHOICES)?),
    };
    let chain = Chain2d {
        decode: DecodeOptions {
            channels,
            palette,
            ..monai
        },
        size,
        mode,
        scale,
    };
    Ok((chain, format))
}

/// `GET /v1/datasets/{dataset}/splits/{split}/items/{item}/image`
pub async fn get_image(
    State(state): State<AppState>,
    Path((name, split_name, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    q: RawPairs,
) -> Result<Response, AppError> {
    let p = Params::new(q, IMAGE_PARAMS)?;
    let (chain, explicit) = parse_image_params(&p, &state)?;
    let format = response::negotiate(explicit, &headers)?;
    let snap = snapshot(&state).await?;
    let ds = dataset(&snap, &name)?;
    let sp = split(ds, &split_name)?;
    let it = item(ds, sp, &id)?;
    if ds.kind != Kind::Classification {
        return Err(AppError::NotApplicable(format!(
            "dataset '{}' holds 3D volumes; 2D images come from classification datasets",
            ds.name
        )));
    }
    let canonical = chain.canonical();
    let etag = response::array_etag(&[&it.image.key, &it.image.version, &canonical], format);
    if response::not_modified(&headers, &etag) {
        return Ok(response::data_not_modified(&etag));
    }
    let t = pipeline::transformed(&state, it, chain).await?;
    let shape = t.data.shape().to_vec();
    let window = match chain.scale {
        Scale::MinMax => PngWindow { lo: 0.0, hi: 1.0 },
        // Unscaled values are stretched over their own range for display.
        Scale::None => {
            let (lo, hi) = finite_range(t.data.iter().copied());
            PngWindow {
                lo: lo.unwrap_or(0.0),
                hi: hi.unwrap_or(1.0),
            }
        }
    };
    let body = cpu_job(&state, move || {
        response::encode_array(&t.data, format, window)
    })
    .await??;
    Ok(response::array_response(
        body, format, &shape, &etag, &it.id,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64,64", 4096).unwrap(), (64, 64));
        assert_eq!(parse_size("0032,48", 4096).unwrap(), (32, 48));
        // Exactly the spec's pattern: no spaces (which the pattern's regex dialect and ours
        // would disagree on), no signs.
        for bad in [
            "64", "0,5", "a,b", "5000,5", "1,2,3", "-1,4", "+3,4", " 32,48", "32, 48",
        ] {
            assert!(parse_size(bad, 4096).is_err(), "{bad}");
        }
    }
}
