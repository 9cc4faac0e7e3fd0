//! Operational routes: index, health, readiness, the spec, metrics, catalog refresh.

use std::sync::atomic::Ordering;

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

/// `GET /`
pub async fn index(headers: HeaderMap, q: RawPairs) -> Result<Response, AppError> {
    Params::new(q, &[])?;
    Ok(response::json(
        &headers,
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
    ))
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
    state.store.ping().await?;
    Ok((
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(json!({"status": "ready", "store": state.store.public_location()})),
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
    let m = &state.metrics;
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, v: u64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
        ));
    };
    counter(
        "medserve_storage_get_total",
        "Whole-object GETs sent to the store.",
        m.storage_gets.load(Ordering::Relaxed),
    );
    counter(
        "medserve_storage_get_bytes_total",
        "Bytes returned by whole-object GETs.",
        m.storage_get_bytes.load(Ordering::Relaxed),
    );
    counter(
        "medserve_store_wait_total",
        "Times a decoder streaming from the store gave its CPU worker back to wait for bytes.",
        m.store_waits.load(Ordering::Relaxed),
    );
    counter(
        "medserve_decode_total",
        "Images and volumes decoded.",
        m.decodes.load(Ordering::Relaxed),
    );
    counter(
        "medserve_transform_total",
        "Transform chains computed (cache misses).",
        m.transforms.load(Ordering::Relaxed),
    );
    out.push_str(
        "# HELP medserve_stage_seconds_total Time spent per stage of cache misses: fetch (store \
         GETs), decode, transform (resize and scale), encode (response bodies).\n\
         # TYPE medserve_stage_seconds_total counter\n",
    );
    for (stage, c) in [
        ("fetch", &m.fetch_us),
        ("decode", &m.decode_us),
        ("transform", &m.transform_us),
        ("encode", &m.encode_us),
    ] {
        out.push_str(&format!(
            "medserve_stage_seconds_total{{stage=\"{stage}\"}} {:.6}\n",
            c.load(Ordering::Relaxed) as f64 / 1e6
        ));
    }
    let entries = state.cache.entry_count().await;
    let kib = state.cache.weighted_kib().await;
    out.push_str(&format!(
        "# HELP medserve_cache_entries Arrays held in the cache.\n# TYPE medserve_cache_entries gauge\nmedserve_cache_entries {entries}\n\
         # HELP medserve_cache_bytes Approximate bytes held in the cache.\n# TYPE medserve_cache_bytes gauge\nmedserve_cache_bytes {}\n",
        kib * 1024
    ));
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
