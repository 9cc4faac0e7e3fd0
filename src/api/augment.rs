//! The random-transform parameters every data route shares: `rand_flip`, `rand_flip_axis`,
//! `rand_rotate`, `rand_rotate_prob`, `seed`, `epoch` -> [`Augment`].

use super::extract::{MAX_ANGLE, Params, parse_axes, parse_decimal};
use crate::error::AppError;
use crate::imaging::spatial::SpatialAxes;
use crate::pipeline::augment::{Augment, DEFAULT_ROTATE_PROB, RandFlip, RandRotate};

/// The parameters of the random transforms on a 2D route (a volume route takes all but the
/// rotation ones).
pub const PARAMS_2D: &[&str] = &[
    "rand_flip",
    "rand_flip_axis",
    "rand_rotate",
    "rand_rotate_prob",
    "seed",
    "epoch",
];

/// The random-transform parameters of a volume route.
pub const PARAMS_3D: &[&str] = &["rand_flip", "rand_flip_axis", "seed", "epoch"];

/// A u64 parameter (`seed`, `epoch`) in plain decimal.
pub fn parse_u64(p: &Params, name: &str) -> Result<Option<u64>, AppError> {
    let Some(v) = p.get(name) else {
        return Ok(None);
    };
    let ok = !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit());
    match v.parse::<u64>() {
        Ok(n) if ok => Ok(Some(n)),
        _ => Err(AppError::param_allowed(
            name,
            format!("'{v}' is not a whole number in range"),
            format!("0..={}", u64::MAX),
        )),
    }
}

fn probability(p: &Params, name: &str) -> Result<Option<f64>, AppError> {
    let Some(v) = p.get(name) else {
        return Ok(None);
    };
    match parse_decimal(v, 1.0) {
        Some(x) if x >= 0.0 => Ok(Some(x)),
        _ => Err(AppError::param_allowed(
            name,
            format!("'{v}' is not a probability"),
            "a decimal number in [0, 1], e.g. 0.5",
        )),
    }
}

fn only_with(p: &Params, name: &str, needs: &str) -> Result<(), AppError> {
    if p.get(name).is_some() && p.get(needs).is_none() {
        return Err(AppError::param(
            name,
            format!("{name} only means something with {needs}=; add {needs}= or drop {name}"),
        ));
    }
    Ok(())
}

fn exclusive(p: &Params, fixed: &str, random: &str) -> Result<(), AppError> {
    if p.get(fixed).is_some() && p.get(random).is_some() {
        return Err(AppError::param(
            random,
            format!(
                "{fixed}= and {random}= cannot be combined: {fixed}= is the deterministic \
                 transform, {random}= draws one per item (its draws are in the X-Augment header, \
                 which replays as {fixed}=)"
            ),
        ));
    }
    Ok(())
}

/// The random transforms of a `rank`-D route. They need `seed=` (so every response stays a
/// pure function of its URL); `epoch=` defaults to 0. A deterministic transform and its
/// random twin (`flip` and `rand_flip`, `rotate` and `rand_rotate`) are exclusive.
pub fn parse_augment(p: &Params, rank: usize) -> Result<Augment, AppError> {
    only_with(p, "rand_flip_axis", "rand_flip")?;
    only_with(p, "rand_rotate_prob", "rand_rotate")?;
    exclusive(p, "flip", "rand_flip")?;
    exclusive(p, "rotate", "rand_rotate")?;
    let flip = probability(p, "rand_flip")?.map(|prob| -> Result<RandFlip, AppError> {
        let axes = parse_axes(p, "rand_flip_axis", rank)?.unwrap_or(SpatialAxes::all(rank));
        Ok(RandFlip { prob, axes })
    });
    let flip = flip.transpose()?;
    let rotate = match p.get("rand_rotate") {
        None => None,
        Some(v) => {
            let range = parse_decimal(v, MAX_ANGLE)
                .filter(|r| *r >= 0.0)
                .ok_or_else(|| {
                    AppError::param_allowed(
                        "rand_rotate",
                        format!("'{v}' is not a range of angles"),
                        format!(
                            "a decimal number of radians in [0, {MAX_ANGLE:e}] (MONAI's \
                             range_x: the angle is uniform in (-range, range); 15 degrees \
                             is 0.2618)"
                        ),
                    )
                })?;
            let prob = probability(p, "rand_rotate_prob")?.unwrap_or(DEFAULT_ROTATE_PROB);
            Some(RandRotate { range, prob })
        }
    };
    let seed = parse_u64(p, "seed")?;
    let epoch = parse_u64(p, "epoch")?.unwrap_or(0);
    let random: Vec<&str> = ["rand_flip", "rand_rotate"]
        .into_iter()
        .filter(|n| p.get(n).is_some())
        .collect();
    let seed = match (seed, random.is_empty()) {
        (Some(s), _) => s,
        (None, true) => 0,
        (None, false) => {
            return Err(AppError::param(
                "seed",
                format!(
                    "{} draw random parameters and need seed= (a whole number; epoch= \
                     defaults to 0), so that every response is a pure function of its URL",
                    random.join(" and ")
                ),
            ));
        }
    };
    Ok(Augment {
        seed,
        epoch,
        flip,
        rotate,
    })
}
