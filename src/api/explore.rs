//! Exploring a dataset: its statistics (computed in the background, answered as far as they
//! go), one item's value histogram, and a split drawn as one labelled PNG.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::json;

use super::extract::{Params, Path, RawPairs};
use super::item::{
    ItemRequest, QueryContext, RouteQuery, check_processed, dataset, snapshot, split,
};
use super::response;
use crate::catalog::Kind;
use crate::error::AppError;
use crate::pipeline::MontageQuery;
use crate::state::AppState;

/// `GET /v1/datasets/{dataset}/stats`: what the background job has counted so far
/// (`complete: false` until it has seen every item).
pub async fn get_stats(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    q: RawPairs,
) -> Result<Response, AppError> {
    let p = Params::for_dataset(q, &[])?;
    let snap = snapshot(&state).await?;
    let ds = dataset(&snap, &name, p.version())?;
    check_processed(ds, &p, None)?;
    Ok(response::json(&headers, &state.pipeline.dataset_stats(ds)))
}

/// Default bins of an item histogram.
pub const DEFAULT_BINS: usize = 64;
/// Most bins of an item histogram.
pub const MAX_BINS: usize = 4096;

/// The item histogram's query: `bins`.
#[derive(Debug, Clone, Copy)]
pub struct HistogramQuery {
    pub bins: usize,
}

impl RouteQuery for HistogramQuery {
    const PARAMS: &'static [&'static str] = &["bins"];

    fn parse(p: &Params, _: &QueryContext<'_>) -> Result<Self, AppError> {
        Ok(HistogramQuery {
            bins: p.usize_in("bins", DEFAULT_BINS, 1, MAX_BINS)?,
        })
    }
}

/// `GET .../items/{item}/histogram?bins=N`
pub async fn get_histogram(
    State(state): State<AppState>,
    req: ItemRequest<HistogramQuery>,
) -> Result<Response, AppError> {
    let kind = req.item.dataset().kind;
    let it = req.item.item();
    let (s, channels, n) = state
        .pipeline
        .item_histogram(it, kind, req.query.bins)
        .await?;
    let mut body = json!({
        "item": it.id,
        "min": s.min,
        "max": s.max,
        "mean": s.mean,
        "std": s.std,
        "percentiles": s.percentiles,
        "bins": s.bins,
        "channels": channels,
        "nan": s.nan,
    });
    let per_channel = match kind {
        Kind::Classification => "pixels",
        Kind::Segmentation => "voxels",
    };
    body[per_channel] = json!(n);
    Ok(response::json(&req.headers, &body))
}

/// Query parameters of the montage.
pub const MONTAGE_PARAMS: &[&str] = &["per_class", "size"];

/// `GET /v1/datasets/{dataset}/splits/{split}/montage?per_class=8&size=64`
pub async fn get_montage(
    State(state): State<AppState>,
    Path((name, split_name)): Path<(String, String)>,
    headers: HeaderMap,
    q: RawPairs,
) -> Result<Response, AppError> {
    let p = Params::for_dataset(q, MONTAGE_PARAMS)?;
    let query = MontageQuery {
        per_class: p.usize_in("per_class", 8, 1, 64)?,
        size: p.usize_in("size", 64, 16, 256)?,
    };
    let snap = snapshot(&state).await?;
    let ds = dataset(&snap, &name, p.version())?;
    check_processed(ds, &p, None)?;
    let sp = split(ds, &split_name)?;
    let prepared = state.pipeline.prepare_montage(ds, sp, query)?;
    let etag = prepared.etag();
    let stem = format!("{}-{}-montage", ds.name, sp.name);
    response::conditional(&headers, &etag, &stem, async {
        state.pipeline.montage(prepared).await
    })
    .await
}
