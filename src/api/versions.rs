//! `GET /v1/datasets/{dataset}/versions`: the dated versions of one dataset (folders named
//! `2026-11-27/` or `<name>@2026-11-27/`, see `catalog::discover`), oldest first. Each is a
//! dataset of its own, served as `<name>@<version>`; the bare name serves the newest.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Serialize;

use super::datasets::{DatasetSummary, cached_document, summary};
use super::extract::{Params, Path, RawPairs};
use super::item::{dataset, snapshot};
use crate::error::AppError;
use crate::state::AppState;

/// The versions document.
#[derive(Serialize)]
struct Versions<'a> {
    /// The name every version shares.
    dataset: &'a str,
    /// The newest version (what the bare name serves); `null` for an unversioned dataset.
    newest: Option<&'a str>,
    /// Oldest first; empty for an unversioned dataset.
    versions: Vec<DatasetSummary<'a>>,
}

/// `GET /v1/datasets/{dataset}/versions`
pub async fn list_versions(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    q: RawPairs,
) -> Result<Response, AppError> {
    Params::new(q, &[])?;
    let snap = snapshot(&state).await?;
    let base = dataset(&snap, &name, None)?.base().to_string();
    cached_document(&state, &headers, &snap, &["versions", &base], || {
        let versions: Vec<DatasetSummary<'_>> =
            snap.versions(&base).map(|ds| summary(&state, ds)).collect();
        Versions {
            dataset: &base,
            newest: snap
                .newest
                .get(&base)
                .and_then(|n| snap.datasets.get(n))
                .and_then(|d| d.version()),
            versions,
        }
    })
    .await
}
