//! Extractors whose rejections are our problem+json errors, and the query-string reader that
//! refuses unknown and repeated parameters.

use axum::extract::FromRequestParts;
use axum::extract::rejection::{PathRejection, QueryRejection};

use crate::error::AppError;

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

/// A validated query: only `allowed` names, each at most once.
#[derive(Debug)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
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
