//! Operational routes: index, health, readiness, the spec, metrics, catalog refresh.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::extract::{Params, RawPairs};
use super::response;
use crate::error::AppError;
use crate::state::AppState;

/// The API contract, compiled in so the binary always serves the spec it was built with.
pub const OPENAPI_YAML: &str = include_str!("../../openapi.yaml");

/// `GET /`: the exploration page for a browser (it prefers `text/html`), the JSON index for
/// everyone else (curl's `*/*`, scripts, no `Accept`), so `curl /` keeps answering as before.
pub async fn index(headers: HeaderMap, q: RawPairs) -> Result<Response, AppError> {
    Params::new(q, &[])?;
    let mut resp = if super::ui::prefers_html(&headers) {
        super::ui::index_html(&headers)
    } else {
        index_json(&headers)
    };
    // Two representations at one URL: caches must key them by `Accept`.
    resp.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept"));
    Ok(resp)
}

fn index_json(headers: &HeaderMap) -> Response {
    response::json(
        headers,
        &json!({
            "service": "medserve",
            "version": env!("CARGO_PKG_VERSION"),
            "links": {
                "datasets": "/v1/datasets",
                "openapi": "/openapi.yaml",
                "health": "/healthz",
                "ready": "/readyz",
                "metrics": "/metrics",
            }
        }),
    )
}

/// `GET /healthz`: the process answers.
pub async fn healthz() -> Response {
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(json!({"status": "ok"})),
    )
        .into_response()
}

/// `GET /readyz`: the store answers.
pub async fn readyz(State(state): State<AppState>) -> Result<Response, AppError> {
    state.catalog.ping().await?;
    Ok((
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(json!({"status": "ready", "store": state.catalog.public_location()})),
    )
        .into_response())
}

/// `GET /openapi.yaml`
pub async fn openapi() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/yaml"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        OPENAPI_YAML,
    )
        .into_response()
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let cache = state.pipeline.cache();
    let out = state.metrics.render(
        cache.entry_count().await,
        cache.weighted_kib().await * 1024,
        state.pipeline.disk_usage(),
    );
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        out,
    )
        .into_response()
}

/// `POST /v1/catalog/refresh`: list the store again now.
pub async fn refresh(State(state): State<AppState>, q: RawPairs) -> Result<Response, AppError> {
    Params::new(q, &[])?;
    let snap = state.catalog.refresh().await?;
    Ok((
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(json!({
            "datasets": snap.datasets.len(),
            "objects": snap.objects_listed,
            "unmatched": snap.objects_unmatched,
        })),
    )
        .into_response())
}
