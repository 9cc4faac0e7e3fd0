//! The query grammar of `GET .../items/{item}/patches`: the volume route's chain (`size`,
//! `mode`, `a_min`.., `flip`) and label selection (`labels`, `binary`), plus MONAI
//! `RandCropByPosNegLabeld`'s `patch` (its `spatial_size`; `size` already names the resize
//! grid), `num`, `pos`, `neg`, `image_threshold`, and the draws' `seed` and `epoch`.
//! [`parse_patch_query`] is public so that other routes serving patches share the grammar.

use super::super::extract::{Params, parse_decimal};
use super::super::item::{QueryContext, RouteQuery};
use super::query::{MAX_NUMBER, number, parse_chain3d, parse_grid3, parse_select};
use crate::config::Limits;
use crate::error::AppError;
use crate::pipeline::PatchQuery;
use crate::pipeline::patch::MAX_PATCHES;

/// The parameters of the patch route.
pub const PATCH_PARAMS: &[&str] = &[
    "patch",
    "num",
    "pos",
    "neg",
    "image_threshold",
    "seed",
    "epoch",
    "size",
    "mode",
    "a_min",
    "a_max",
    "b_min",
    "b_max",
    "clip",
    "scale",
    "labels",
    "binary",
    "flip",
];

impl RouteQuery for PatchQuery {
    const PARAMS: &'static [&'static str] = PATCH_PARAMS;

    fn parse(p: &Params, cx: &QueryContext<'_>) -> Result<Self, AppError> {
        parse_patch_query(p, cx.limits)
    }
}

/// Parses a patch request from checked parameters (names as in [`PATCH_PARAMS`]).
pub fn parse_patch_query(p: &Params, limits: &Limits) -> Result<PatchQuery, AppError> {
    let patch = match p.get("patch") {
        Some(v) => parse_grid3("patch", v, limits.max_volume_side, limits.max_voxels)?,
        None => {
            return Err(AppError::param_allowed(
                "patch",
                "the patch size is required",
                format!(
                    "X,Y,Z, each in 1..={} (MONAI's spatial_size; a side larger than the grid takes the whole axis)",
                    limits.max_volume_side
                ),
            ));
        }
    };
    let num = p.usize_in("num", 1, 1, MAX_PATCHES)?;
    let pos = weight(p, "pos")?;
    let neg = weight(p, "neg")?;
    if pos == 0.0 && neg == 0.0 {
        return Err(AppError::param_allowed(
            if p.get("pos").is_some() { "pos" } else { "neg" },
            "pos and neg are both 0: no ratio to draw foreground centres with",
            "non-negative numbers, not both 0 (the foreground probability is pos / (pos + neg))",
        ));
    }
    let image_threshold = number(p, "image_threshold")?;
    let seed = match p.get("seed") {
        Some(_) => whole_u64(p, "seed")?,
        None => {
            return Err(AppError::param_allowed(
                "seed",
                "a seed is required: the patches are drawn from it (the same seed and epoch give the same patches)",
                "a whole number in 0..=18446744073709551615",
            ));
        }
    };
    let epoch = match p.get("epoch") {
        Some(_) => whole_u64(p, "epoch")?,
        None => 0,
    };
    Ok(PatchQuery {
        chain: parse_chain3d(p, limits)?,
        select: parse_select(p)?,
        patch,
        num,
        pos,
        neg,
        image_threshold,
        seed,
        epoch,
    })
}

/// `pos` or `neg`: a non-negative number, default 1 (MONAI's).
fn weight(p: &Params, name: &str) -> Result<f64, AppError> {
    let Some(v) = p.get(name) else {
        return Ok(1.0);
    };
    match parse_decimal(v, MAX_NUMBER) {
        // `-0` reads as 0.
        Some(w) if w >= 0.0 => Ok(w.abs()),
        _ => Err(AppError::param_allowed(
            name,
            format!("'{v}' is not a non-negative number"),
            format!("a decimal number in 0..={MAX_NUMBER:e}, e.g. 1 or 0.5"),
        )),
    }
}

fn whole_u64(p: &Params, name: &str) -> Result<u64, AppError> {
    let v = p.get(name).unwrap_or_default();
    let ok = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| v.parse::<u64>().ok()).flatten().ok_or_else(|| {
        AppError::param_allowed(
            name,
            format!("'{v}' is not a whole number in range"),
            "0..=18446744073709551615 (digits only)",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::extract::RawPairs;

    fn parse(q: &str) -> Result<PatchQuery, AppError> {
        let pairs = q
            .split('&')
            .filter(|s| !s.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect();
        let p = Params::new(RawPairs(pairs), PATCH_PARAMS)?;
        parse_patch_query(&p, &Limits::default())
    }

    fn param(e: AppError) -> String {
        match e {
            AppError::InvalidParameter { param, .. } => param,
            e => panic!("{e}"),
        }
    }

    #[test]
    fn defaults_and_errors() {
        let q = parse("patch=96,96,64&seed=7").unwrap();
        assert_eq!((q.num, q.pos, q.neg, q.epoch), (1, 1.0, 1.0, 0));
        assert_eq!(q.patch, [96, 96, 64]);
        assert_eq!(q.image_threshold, None);
        assert_eq!(q.chain.size, None);
        let q = parse("patch=8,8,8&seed=18446744073709551615&epoch=3&num=64&pos=2&neg=0&image_threshold=-0.5&size=32,32,16&labels=1&binary=true&flip=0")
            .unwrap();
        assert_eq!((q.seed, q.epoch, q.num), (u64::MAX, 3, 64));
        assert_eq!(q.ratio(), 1.0);
        assert_eq!(q.image_threshold, Some(-0.5));
        assert_eq!(q.chain.size, Some([32, 32, 16]));
        assert!(q.select.binary);
        for (query, name) in [
            ("patch=8,8,8", "seed"),
            ("seed=1", "patch"),
            ("patch=8,8&seed=1", "patch"),
            ("patch=0,8,8&seed=1", "patch"),
            ("patch=8,8,8&seed=-1", "seed"),
            ("patch=8,8,8&seed=18446744073709551616", "seed"),
            ("patch=8,8,8&seed=1&epoch=x", "epoch"),
            ("patch=8,8,8&seed=1&num=0", "num"),
            ("patch=8,8,8&seed=1&num=65", "num"),
            ("patch=8,8,8&seed=1&pos=-1", "pos"),
            ("patch=8,8,8&seed=1&neg=nan", "neg"),
            ("patch=8,8,8&seed=1&pos=0&neg=0", "pos"),
            ("patch=8,8,8&seed=1&neg=0&pos=0", "pos"),
            ("patch=8,8,8&seed=1&image_threshold=inf", "image_threshold"),
            ("patch=8,8,8&seed=1&size=0,1,1", "size"),
            ("patch=8,8,8&seed=1&format=npz", "format"),
        ] {
            assert_eq!(param(parse(query).unwrap_err()), name, "{query}");
        }
        assert_eq!(parse("patch=8,8,8&seed=1&pos=-0").unwrap().pos, 0.0);
    }
}
