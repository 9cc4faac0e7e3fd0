//! `GET .../items/{item}/file?part=image|label`: the stored object as it is (a `.nii.gz`, a
//! `.nii`, a PNG), for viewers and tools that read files over HTTP (NiiVue, Cornerstone,
//! nibabel), with byte ranges (`Accept-Ranges`, `Range` -> 206, 416, `If-Range`) and a strong
//! ETag from the object's key and version.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::extract::Params;
use super::item::{ItemRequest, QueryContext, RouteQuery};
use super::ranges::{self, RangePlan};
use super::response::{self, CACHE_DATA};
use crate::error::AppError;
use crate::state::AppState;

/// The query of the file route.
#[derive(Debug, Clone, Copy)]
pub struct FileQuery {
    /// The label object rather than the image.
    pub label: bool,
}

impl RouteQuery for FileQuery {
    const PARAMS: &'static [&'static str] = &["part"];

    fn parse(p: &Params, _: &QueryContext<'_>) -> Result<Self, AppError> {
        Ok(FileQuery {
            label: p.choice("part", false, &[("image", false), ("label", true)])?,
        })
    }
}

/// The media type of a stored object, by its name.
fn content_type(key: &str) -> &'static str {
    let k = key.to_ascii_lowercase();
    if k.ends_with(".gz") {
        "application/gzip"
    } else if k.ends_with(".png") {
        "image/png"
    } else if k.ends_with(".jpg") || k.ends_with(".jpeg") {
        "image/jpeg"
    } else {
        "application/octet-stream"
    }
}

/// Headers every answer of the route carries (304 included).
fn with_file_headers(mut resp: Response, key: &str, etag: &str) -> Response {
    let h = resp.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(key)),
    );
    let name = key.rsplit('/').next().unwrap_or(key);
    if let Ok(v) = HeaderValue::from_str(&format!("inline; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    response::with_validators(resp, etag, CACHE_DATA)
}

/// `GET .../items/{item}/file`
pub async fn get_file(
    State(state): State<AppState>,
    req: ItemRequest<FileQuery>,
) -> Result<Response, AppError> {
    let obj = state
        .pipeline
        .item_object(req.item.item(), req.query.label)?;
    let etag = state.pipeline.file_etag(obj);
    if response::not_modified(&req.headers, &etag) {
        let resp = with_file_headers(StatusCode::NOT_MODIFIED.into_response(), &obj.key, &etag);
        return Ok(strip_content_type(resp));
    }
    let size = obj.size;
    let (status, range) = match ranges::plan(&req.headers, &etag, size) {
        RangePlan::Unsatisfiable => return Err(AppError::RangeNotSatisfiable(size)),
        RangePlan::Whole => (StatusCode::OK, 0..size),
        RangePlan::Partial(r) => (StatusCode::PARTIAL_CONTENT, r),
    };
    let stream = state.pipeline.file_bytes(obj, range.clone()).await?;
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(range.end - range.start),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(header::CONTENT_RANGE, ranges::content_range(&range, size));
    }
    Ok(with_file_headers(resp, &obj.key, &etag))
}

fn strip_content_type(mut resp: Response) -> Response {
    resp.headers_mut().remove(header::CONTENT_TYPE);
    resp
}
