//! What every handler shares: the catalog (what exists), the pipeline (how to make it), and
//! the counters. Handlers reach the store only through these two.

use std::sync::Arc;

use crate::catalog::Catalog;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;

/// Shared application state; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub catalog: Arc<Catalog>,
    pub pipeline: Pipeline,
    pub metrics: Arc<Metrics>,
}
