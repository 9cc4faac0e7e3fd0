//! Extractors whose rejections are our problem+json errors, and the query-string reader that
//! refuses unknown and repeated parameters.

use axum::extract::FromRequestParts;
use axum::extract::rejection::{PathRejection, QueryRejection};

use crate::error::AppError;
use crate::imaging::spatial::SpatialAxes;

/// `axum::extract::Path` with our error body.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(AppError))]
pub struct Path<T>(pub T);

/// The query string as ordered pairs, with our error body.
#[derive(Debug, FromRequestParts, serde::Deserialize)]
#[serde(transparent)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct RawPairs(pub Vec<(String, String)>);

impl From<PathRejection> for AppError {
    fn from(r: PathRejection) -> Self {
        AppError::param("path", r.body_text())
    }
}

impl From<QueryRejection> for AppError {
    fn from(r: QueryRejection) -> Self {
        AppError::param("query", r.body_text())
    }
}

/// The query parameter naming a dataset version.
pub const VERSION: &str = "version";

/// The query parameters naming a stored S3 version of an item's image and mask objects.
pub const OBJECT_VERSIONS: [&str; 2] = ["version_id", "label_version_id"];

/// A validated query: only `allowed` names, each at most once.
#[derive(Debug)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// The names given, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.pairs.iter().map(|(k, _)| k.as_str())
    }

    /// Checks names against `allowed`.
    pub fn new(RawPairs(pairs): RawPairs, allowed: &[&str]) -> Result<Self, AppError> {
        let list = if allowed.is_empty() {
            "none".to_string()
        } else {
            allowed.join(", ")
        };
        for (i, (k, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&k.as_str()) {
                return Err(AppError::param_allowed(
                    k.clone(),
                    "unknown parameter",
                    list,
                ));
            }
            if pairs[..i].iter().any(|(k2, _)| k2 == k) {
                return Err(AppError::param(k.clone(), "given more than once"));
            }
        }
        Ok(Params { pairs })
    }

    /// Checks names against `allowed` plus `version`, which every route under
    /// `/v1/datasets/{dataset}` takes (the dataset version to serve; default the newest).
    pub fn for_dataset(raw: RawPairs, allowed: &[&str]) -> Result<Self, AppError> {
        let mut all = Vec::with_capacity(allowed.len() + 1);
        all.extend_from_slice(allowed);
        all.push(VERSION);
        Self::new(raw, &all)
    }

    /// [`for_dataset`](Self::for_dataset) plus `version_id` and `label_version_id`, which every
    /// route of one item takes (a stored S3 version of its image or mask object).
    pub fn for_item(raw: RawPairs, allowed: &[&str]) -> Result<Self, AppError> {
        let mut all = Vec::with_capacity(allowed.len() + 2);
        all.extend_from_slice(allowed);
        all.extend_from_slice(&OBJECT_VERSIONS);
        Self::for_dataset(raw, &all)
    }

    /// `version=`, if given.
    pub fn version(&self) -> Option<&str> {
        self.get(VERSION)
    }

    /// The value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Parses an unsigned integer in `lo..=hi`, or returns `default`.
    pub fn usize_in(
        &self,
        name: &str,
        default: usize,
        lo: usize,
        hi: usize,
    ) -> Result<usize, AppError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => match parse_digits(v) {
                Some(n) if (lo..=hi).contains(&n) => Ok(n),
                _ => Err(AppError::param_allowed(
                    name,
                    format!("'{v}' is not a whole number in range"),
                    format!("{lo}..={hi}"),
                )),
            },
        }
    }

    /// Picks one of `choices` (`(text, value)`), or returns `default`.
    pub fn choice<T: Copy>(
        &self,
        name: &str,
        default: T,
        choices: &[(&str, T)],
    ) -> Result<T, AppError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => choices
                .iter()
                .find(|(t, _)| *t == v)
                .map(|(_, x)| *x)
                .ok_or_else(|| {
                    AppError::param_allowed(
                        name,
                        format!("'{v}' is not a recognised value"),
                        choices
                            .iter()
                            .map(|(t, _)| *t)
                            .collect::<Vec<_>>()
                            .join(", "),
                    )
                }),
        }
    }
}

/// A plain decimal number: digits only (no sign, no spaces), as the spec's patterns say.
pub fn parse_digits(v: &str) -> Option<usize> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// A decimal number as the spec's `type: number` says: digits, sign, point and exponent (no
/// spaces, no `inf`/`nan`), finite, with `|x| <= max_abs`.
pub fn parse_decimal(v: &str, max_abs: f64) -> Option<f64> {
    let ok_chars = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b));
    let f: f64 = v.parse().ok()?;
    (ok_chars && f.is_finite() && f.abs() <= max_abs).then_some(f)
}

/// `flip=`: MONAI `Flip(spatial_axis=...)` on a `rank`-D image: `all` (MONAI's `None`) or a
/// comma list of distinct spatial axes `0..rank`, in any order (a flip's meaning is the set).
pub fn parse_flip(p: &Params, rank: usize) -> Result<SpatialAxes, AppError> {
    parse_axes(p, "flip", rank).map(|a| a.unwrap_or(SpatialAxes::NONE))
}

/// A spatial-axis list parameter (`flip`, `rand_flip_axis`): `all` or distinct axes `0..rank`.
pub fn parse_axes(p: &Params, name: &str, rank: usize) -> Result<Option<SpatialAxes>, AppError> {
    let Some(v) = p.get(name) else {
        return Ok(None);
    };
    let allowed = || {
        let axes = (0..rank).map(|k| k.to_string()).collect::<Vec<_>>();
        format!(
            "all, or distinct spatial axes from {} separated by commas, e.g. 0 or {}",
            axes.join(", "),
            axes.join(",")
        )
    };
    if v == "all" {
        return Ok(Some(SpatialAxes::all(rank)));
    }
    let mut axes = SpatialAxes::NONE;
    for t in v.split(',') {
        let k = match t.as_bytes() {
            [d @ b'0'..=b'9'] if usize::from(d - b'0') < rank => usize::from(d - b'0'),
            _ => {
                return Err(AppError::param_allowed(
                    name,
                    format!("'{t}' is not a spatial axis of this {rank}D image"),
                    allowed(),
                ));
            }
        };
        if !axes.insert(k) {
            return Err(AppError::param_allowed(
                name,
                format!("axis {k} is given twice"),
                allowed(),
            ));
        }
    }
    Ok(Some(axes))
}

/// Largest `|rotate|` in radians: far past any useful turn, well inside what `sin`/`cos` and
/// float32 grids handle.
pub const MAX_ANGLE: f64 = 1e6;

/// `rotate=`: radians, a finite decimal within `MAX_ANGLE`; `-0` reads as `0`.
pub fn parse_rotate(p: &Params) -> Result<Option<f64>, AppError> {
    let Some(v) = p.get("rotate") else {
        return Ok(None);
    };
    let a = parse_decimal(v, MAX_ANGLE).ok_or_else(|| {
        AppError::param_allowed(
            "rotate",
            format!("'{v}' is not an angle"),
            format!(
                "a finite decimal number of radians within ±{MAX_ANGLE:e}, e.g. 0.3 or -1.5708"
            ),
        )
    })?;
    Ok(Some(if a == 0.0 { 0.0 } else { a }))
}
