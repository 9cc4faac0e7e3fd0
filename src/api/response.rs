//! Building responses: content negotiation, strong ETags with `If-None-Match` -> 304,
//! `Cache-Control`, and the array encodings.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ndarray::ArrayD;
use serde::Serialize;

use crate::catalog::ids::fnv1a;
use crate::error::AppError;
use crate::imaging::encode;

/// `X-Shape`: the array's shape, comma-separated.
pub const X_SHAPE: HeaderName = HeaderName::from_static("x-shape");
/// `X-Dtype`: the element type of the body.
pub const X_DTYPE: HeaderName = HeaderName::from_static("x-dtype");

/// Cache policy of data responses: reuse for 5 minutes (the default listing TTL), then
/// revalidate with the ETag.
pub const CACHE_DATA: &str = "public, max-age=300";
/// Cache policy of listings: always revalidate (cheap, thanks to the ETag).
pub const CACHE_LISTING: &str = "no-cache";

/// How an array is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArrayFormat {
    /// 8-bit PNG for eyes.
    Png,
    /// Raw little-endian float32, C order, shape in `X-Shape`.
    F32,
    /// NumPy `.npy` v1.
    Npy,
}

impl ArrayFormat {
    /// The `format` parameter's values.
    pub const CHOICES: [(&'static str, ArrayFormat); 3] = [
        ("png", ArrayFormat::Png),
        ("f32", ArrayFormat::F32),
        ("npy", ArrayFormat::Npy),
    ];

    /// Media type.
    pub fn content_type(self) -> &'static str {
        match self {
            ArrayFormat::Png => "image/png",
            ArrayFormat::F32 => "application/octet-stream",
            ArrayFormat::Npy => "application/x-npy",
        }
    }

    /// The `format` value.
    pub fn name(self) -> &'static str {
        match self {
            ArrayFormat::Png => "png",
            ArrayFormat::F32 => "f32",
            ArrayFormat::Npy => "npy",
        }
    }
}

/// Chooses the format: an explicit `format` parameter wins; otherwise the `Accept` header,
/// by quality; no `Accept` (or `*/*`) means PNG.
pub fn negotiate(
    explicit: Option<ArrayFormat>,
    headers: &HeaderMap,
) -> Result<ArrayFormat, AppError> {
    if let Some(f) = explicit {
        return Ok(f);
    }
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(ArrayFormat::Png);
    };
    let mut ranges: Vec<(f32, usize, String)> = accept
        .split(',')
        .enumerate()
        .filter_map(|(i, part)| {
            let mut it = part.split(';');
            let media = it.next()?.trim().to_ascii_lowercase();
            let q = it
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            (q > 0.0 && !media.is_empty()).then_some((q, i, media))
        })
        .collect();
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, _, media) in &ranges {
        let f = match media.as_str() {
            "image/png" | "image/*" | "*/*" => Some(ArrayFormat::Png),
            "application/octet-stream" => Some(ArrayFormat::F32),
            "application/x-npy" | "application/*" => Some(ArrayFormat::Npy),
            _ => None,
        };
        if let Some(f) = f {
            return Ok(f);
        }
    }
    Err(AppError::NotAcceptable {
        available: ArrayFormat::CHOICES
            .iter()
            .map(|(_, f)| f.content_type().to_string())
            .collect(),
    })
}

/// A strong ETag from the parts that determine a response (object version, transform,
/// format), plus our version so a new release never reuses an old tag.
pub fn etag_of(parts: &[&str]) -> String {
    let mut text = String::from(env!("CARGO_PKG_VERSION"));
    for p in parts {
        text.push('\u{1f}');
        text.push_str(p);
    }
    format!("\"{:016x}\"", fnv1a(text.as_bytes()))
}

/// Whether `If-None-Match` matches `etag` (weak comparison, as RFC 9110 asks for GET).
pub fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    let Some(v) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let bare = etag.trim_start_matches("W/");
    v.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == bare)
}

fn with_validators(mut resp: Response, etag: &str, cache: &'static str) -> Response {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    resp
}

fn not_modified_response(etag: &str, cache: &'static str) -> Response {
    with_validators(StatusCode::NOT_MODIFIED.into_response(), etag, cache)
}

/// A JSON body with an ETag over its bytes; 304 when the client has it already.
pub fn json(headers: &HeaderMap, value: &impl Serialize) -> Response {
    let body = match serde_json::to_vec_pretty(value) {
        Ok(b) => b,
        Err(e) => return AppError::Internal(format!("serialising JSON: {e}")).into_response(),
    };
    let etag = format!("\"{:016x}\"", fnv1a(&body));
    if not_modified(headers, &etag) {
        return not_modified_response(&etag, CACHE_LISTING);
    }
    let resp = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    with_validators(resp, &etag, CACHE_LISTING)
}

fn shape_header(shape: &[usize]) -> HeaderValue {
    let s = shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(",");
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// What a PNG's 8 bits stand for: the value range mapped onto 0..255.
#[derive(Debug, Clone, Copy)]
pub struct PngWindow {
    pub lo: f32,
    pub hi: f32,
}

/// Encodes an array (`(C, H, W)` for PNG) in `format`. Runs on the caller's thread: call it
/// from a CPU job for large arrays. [`array_response`] then adds the headers.
pub fn encode_array(
    data: &ArrayD<f32>,
    format: ArrayFormat,
    png_window: PngWindow,
) -> Result<Vec<u8>, AppError> {
    match format {
        ArrayFormat::Png => encode::png8(data, png_window.lo, png_window.hi)
            .map_err(|e| AppError::Internal(e.to_string())),
        ArrayFormat::F32 => Ok(encode::f32_le(data)),
        ArrayFormat::Npy => encode::npy(data).map_err(|e| AppError::Internal(e.to_string())),
    }
}

/// Wraps encoded array bytes into a response with `Content-Type`, `X-Shape`, `X-Dtype`,
/// `ETag`, `Cache-Control` and a download file name.
pub fn array_response(
    body: Vec<u8>,
    format: ArrayFormat,
    shape: &[usize],
    etag: &str,
    file_stem: &str,
) -> Response {
    let dtype = if format == ArrayFormat::Png {
        "uint8"
    } else {
        "float32"
    };
    data_response(
        body.into(),
        DataHeaders {
            content_type: format.content_type(),
            dtype,
            shape,
            file_name: &format!("{file_stem}.{}", format.name()),
        },
        etag,
    )
}

/// What a data response says about its body.
pub struct DataHeaders<'a> {
    pub content_type: &'static str,
    /// NumPy name of the element type (`X-Dtype`); empty for none.
    pub dtype: &'static str,
    /// `X-Shape`; empty for none.
    pub shape: &'a [usize],
    /// The download name in `Content-Disposition`.
    pub file_name: &'a str,
}

/// A data response: body plus [`DataHeaders`], validators and `Vary: Accept`.
pub fn data_response(body: bytes::Bytes, d: DataHeaders<'_>, etag: &str) -> Response {
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(d.content_type),
    );
    if !d.shape.is_empty() {
        h.insert(X_SHAPE, shape_header(d.shape));
    }
    if !d.dtype.is_empty() {
        h.insert(X_DTYPE, HeaderValue::from_static(d.dtype));
    }
    if let Ok(v) = HeaderValue::from_str(&format!("inline; filename=\"{}\"", d.file_name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::VARY, HeaderValue::from_static("accept"));
    with_validators(resp, etag, CACHE_DATA)
}

/// 304 for a data response whose ETag the client already holds.
pub fn data_not_modified(etag: &str) -> Response {
    let mut r = not_modified_response(etag, CACHE_DATA);
    r.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept"));
    r
}

/// ETag of an array response.
pub fn array_etag(version_parts: &[&str], format: ArrayFormat) -> String {
    let mut parts = version_parts.to_vec();
    parts.push(format.name());
    etag_of(&parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn negotiation() {
        assert_eq!(
            negotiate(None, &HeaderMap::new()).unwrap(),
            ArrayFormat::Png
        );
        assert_eq!(
            negotiate(None, &accept("application/x-npy")).unwrap(),
            ArrayFormat::Npy
        );
        assert_eq!(
            negotiate(None, &accept("image/png;q=0.5, application/octet-stream")).unwrap(),
            ArrayFormat::F32
        );
        assert_eq!(
            negotiate(Some(ArrayFormat::Npy), &accept("image/png")).unwrap(),
            ArrayFormat::Npy
        );
        assert!(negotiate(None, &accept("text/html")).is_err());
        assert!(negotiate(None, &accept("image/png;q=0")).is_err());
    }

    #[test]
    fn if_none_match() {
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"a\", W/\"b\""),
        );
        assert!(not_modified(&h, "\"b\""));
        assert!(!not_modified(&h, "\"c\""));
    }
}
