//! `GET .../items/{item}/image`: a classification image through the seed's MONAI chain
//! (`LoadImage -> EnsureChannelFirst -> Resize -> ScaleIntensity`), then `Flip`/`Rotate` given
//! or drawn by `RandFlip`/`RandRotate`, as PNG, f32 or npy.

use axum::extract::State;
use axum::response::Response;

use super::augment::parse_augment;
use super::extract::{Params, parse_digits, parse_flip, parse_rotate};
use super::item::{Images, ItemRequest, QueryContext, RouteQuery};
use super::response::{self, ARRAY_FORMATS};
use crate::config::Limits;
use crate::error::AppError;
use crate::imaging::encode::Format;
use crate::imaging::{ChannelMode, DecodeOptions, PaletteMode, ResizeMode};
use crate::pipeline::augment::Augment;
use crate::pipeline::image::PreparedImage;
use crate::pipeline::{Chain2d, Scale};
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

/// The image route's query: the chain and the format (explicit, else from `Accept`).
#[derive(Debug, Clone, Copy)]
pub struct ImageQuery {
    pub chain: Chain2d,
    pub format: Format,
    /// Random transforms, resolved per item into the chain's `flip`/`rotate`.
    pub augment: Augment,
}

impl RouteQuery for ImageQuery {
    const PROCESSED: Option<&'static [&'static str]> = Some(&["format"]);
    const PARAMS: &'static [&'static str] = &[
        "size",
        "mode",
        "scale",
        "channels",
        "palette",
        "format",
        "flip",
        "rotate",
        "rand_flip",
        "rand_flip_axis",
        "rand_rotate",
        "rand_rotate_prob",
        "seed",
        "epoch",
    ];

    fn parse(p: &Params, cx: &QueryContext<'_>) -> Result<Self, AppError> {
        let chain = parse_chain2d(p, cx.limits)?;
        let augment = parse_augment(p, 2)?;
        let explicit = match p.get("format") {
            None => None,
            Some(_) => Some(p.choice("format", Format::Png, &Format::choices(&ARRAY_FORMATS))?),
        };
        let format = response::negotiate(explicit, cx.headers)?;
        Ok(ImageQuery {
            chain,
            format,
            augment,
        })
    }
}

/// The 2D chain's parameters (`size`, `mode`, `scale`, `channels`, `palette`, `flip`,
/// `rotate`), shared by the image and batch routes.
pub fn parse_chain2d(p: &Params, limits: &Limits) -> Result<Chain2d, AppError> {
    let size = match p.get("size") {
        None => DEFAULT_SIZE,
        Some(v) => parse_size(v, limits.max_output_side)?,
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
    let monai = DecodeOptions::monai(limits.max_pixels);
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
    // Axes and angles of the array MONAI holds, `(C, W, H)`: axis 0 is the width.
    let flip = parse_flip(p, 2)?;
    let rotate = parse_rotate(p)?;
    Ok(Chain2d {
        decode: DecodeOptions {
            channels,
            palette,
            ..monai
        },
        size,
        mode,
        scale,
        flip,
        rotate,
    })
}

/// `GET /v1/datasets/{dataset}/splits/{split}/items/{item}/image`
pub async fn get_image(
    State(state): State<AppState>,
    req: ItemRequest<ImageQuery, Images>,
) -> Result<Response, AppError> {
    let ImageQuery {
        chain,
        format,
        augment,
    } = req.query;
    let it = req.item.item();
    if req.item.dataset().processed.is_some() {
        use crate::pipeline::processed::Part;
        let etag = state.pipeline.processed_etag(it, Part::Image, format);
        return response::conditional(&req.headers, &etag, &it.id, async {
            state.pipeline.processed_body(it, Part::Image, format).await
        })
        .await;
    }
    let drawn = (!augment.is_empty()).then(|| req.item.draw(&augment));
    let chain = drawn.map_or(chain, |d| chain.with_drawn(&d));
    let prepared = PreparedImage::new(it, chain, format);
    let etag = prepared.etag().to_string();
    let resp = response::conditional(&req.headers, &etag, &it.id, async {
        state.pipeline.image(it, prepared).await
    })
    .await?;
    Ok(response::with_augment(resp, drawn.map(|d| d.header(2))))
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
