//! Building responses: content negotiation, strong ETags with `If-None-Match` -> 304,
//! `Cache-Control`, and data responses from encoded bodies.

use std::borrow::Borrow;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::ranges::{self, RangePlan};
use crate::catalog::ids::fnv1a;
use crate::error::AppError;
use crate::imaging::encode::{Encoded, Format};
use crate::pipeline::PipelineError;

/// `X-Augment`: what a request's random transforms drew, as the deterministic parameters that
/// replay them (`flip=all;rotate=-0.81...`, or `none`).
pub const X_AUGMENT: HeaderName = HeaderName::from_static("x-augment");

/// Adds `X-Augment` when the request had random transforms.
pub fn with_augment(mut resp: Response, drawn: Option<String>) -> Response {
    if let Some(v) = drawn.and_then(|d| HeaderValue::from_str(&d).ok()) {
        resp.headers_mut().insert(X_AUGMENT, v);
    }
    resp
}

/// `X-Shape`: the array's shape, comma-separated.
pub const X_SHAPE: HeaderName = HeaderName::from_static("x-shape");
/// `X-Dtype`: the element type of the body.
pub const X_DTYPE: HeaderName = HeaderName::from_static("x-dtype");

/// Cache policy of data responses: reuse for 5 minutes (the default listing TTL), then
/// revalidate with the ETag.
pub const CACHE_DATA: &str = "public, max-age=300";
/// Cache policy of listings: always revalidate (cheap, thanks to the ETag).
pub const CACHE_LISTING: &str = "no-cache";

/// The formats of a single array (the image and slice routes), in `format` parameter order.
pub const ARRAY_FORMATS: [Format; 3] = [Format::Png, Format::F32, Format::Npy];

/// Chooses the format: an explicit `format` parameter wins; otherwise the `Accept` header,
/// by quality; no `Accept` (or `*/*`) means PNG.
pub fn negotiate(explicit: Option<Format>, headers: &HeaderMap) -> Result<Format, AppError> {
    if let Some(f) = explicit {
        return Ok(f);
    }
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(Format::Png);
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
            "image/png" | "image/*" | "*/*" => Some(Format::Png),
            "application/octet-stream" => Some(Format::F32),
            "application/x-npy" | "application/*" => Some(Format::Npy),
            _ => None,
        };
        if let Some(f) = f {
            return Ok(f);
        }
    }
    Err(AppError::NotAcceptable {
        available: ARRAY_FORMATS
            .iter()
            .map(|f| f.content_type().to_string())
            .collect(),
    })
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

/// Sets `ETag` and `Cache-Control`.
pub(super) fn with_validators(mut resp: Response, etag: &str, cache: &'static str) -> Response {
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

/// The strong ETag of a body that is its own version (JSON documents, embedded files).
pub(super) fn body_etag(body: &[u8]) -> String {
    format!("\"{:016x}\"", fnv1a(body))
}

/// A JSON body with an ETag over its bytes; 304 when the client has it already.
pub fn json(headers: &HeaderMap, value: &impl Serialize) -> Response {
    match json_bytes(value) {
        Ok(body) => {
            let etag = body_etag(&body);
            json_body(headers, body, &etag)
        }
        Err(e) => e.into_response(),
    }
}

/// The JSON text of [`json`]'s documents (pretty-printed, as every listing has been).
pub fn json_bytes(value: &impl Serialize) -> Result<Bytes, AppError> {
    serde_json::to_vec_pretty(value)
        .map(Bytes::from)
        .map_err(|e| AppError::Internal(format!("serialising JSON: {e}")))
}

/// [`json`] for a body already serialised, with its ETag (a cached document's).
pub fn json_body(headers: &HeaderMap, body: Bytes, etag: &str) -> Response {
    if not_modified(headers, etag) {
        return not_modified_response(etag, CACHE_LISTING);
    }
    let resp = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    with_validators(resp, etag, CACHE_LISTING)
}

fn shape_header(shape: &[usize]) -> HeaderValue {
    use std::fmt::Write;
    let mut s = String::with_capacity(6 * shape.len());
    for (i, d) in shape.iter().enumerate() {
        let _ = write!(s, "{}{d}", if i == 0 { "" } else { "," });
    }
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// 304 when the client already holds `etag`; otherwise the data response `make` builds,
/// saved by the client as `file_stem` plus the format's extension.
/// `make` may hand back the body it computed or a shared cached one (`Arc<Encoded>`): either
/// way the response shares its bytes.
pub async fn conditional<F, E>(
    headers: &HeaderMap,
    etag: &str,
    file_stem: &str,
    make: F,
) -> Result<Response, AppError>
where
    F: Future<Output = Result<E, PipelineError>>,
    E: Borrow<Encoded>,
{
    conditional_as(headers, etag, file_stem, make, false).await
}

/// [`conditional`] for files viewers fetch by byte range (NIfTI): the encoded body answers
/// `Range` (206, 416, `If-Range`; see `ranges.rs`) and says `Accept-Ranges: bytes`. The body is
/// computed (or taken from the cache) whole either way.
pub async fn conditional_ranged<F, E>(
    headers: &HeaderMap,
    etag: &str,
    file_stem: &str,
    make: F,
) -> Result<Response, AppError>
where
    F: Future<Output = Result<E, PipelineError>>,
    E: Borrow<Encoded>,
{
    conditional_as(headers, etag, file_stem, make, true).await
}

async fn conditional_as<F, E>(
    headers: &HeaderMap,
    etag: &str,
    file_stem: &str,
    make: F,
    ranged: bool,
) -> Result<Response, AppError>
where
    F: Future<Output = Result<E, PipelineError>>,
    E: Borrow<Encoded>,
{
    if not_modified(headers, etag) {
        return Ok(data_not_modified(etag));
    }
    let e = make.await?;
    if !ranged {
        return Ok(data_response(e.borrow(), file_stem, etag));
    }
    let e: &Encoded = e.borrow();
    let size = e.body.len() as u64;
    let mut resp = match ranges::plan(headers, etag, size) {
        RangePlan::Unsatisfiable => return Err(AppError::RangeNotSatisfiable(size)),
        RangePlan::Whole => data_response(e, file_stem, etag),
        RangePlan::Partial(r) => {
            let mut resp = data_response(e, file_stem, etag);
            *resp.body_mut() = Body::from(e.body.slice(r.start as usize..r.end as usize));
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            resp.headers_mut()
                .insert(header::CONTENT_RANGE, ranges::content_range(&r, size));
            resp
        }
    };
    resp.headers_mut()
        .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    Ok(resp)
}

/// A data response: body plus `Content-Type`, `X-Shape`, `X-Dtype`, a download file name,
/// validators and `Vary: Accept`.
pub fn data_response(e: &Encoded, file_stem: &str, etag: &str) -> Response {
    let mut resp = Response::new(Body::from(e.body.clone()));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(e.format.content_type()),
    );
    if !e.shape.is_empty() {
        h.insert(X_SHAPE, shape_header(&e.shape));
    }
    if !e.dtype.is_empty() {
        h.insert(X_DTYPE, HeaderValue::from_static(e.dtype));
    }
    let disposition = format!("inline; filename=\"{file_stem}.{}\"", e.format.name());
    if let Ok(v) = HeaderValue::from_str(&disposition) {
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
        assert_eq!(negotiate(None, &HeaderMap::new()).unwrap(), Format::Png);
        assert_eq!(
            negotiate(None, &accept("application/x-npy")).unwrap(),
            Format::Npy
        );
        assert_eq!(
            negotiate(None, &accept("image/png;q=0.5, application/octet-stream")).unwrap(),
            Format::F32
        );
        assert_eq!(
            negotiate(Some(Format::Npy), &accept("image/png")).unwrap(),
            Format::Npy
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
