//! From a catalog item to a transformed array: fetch the object, decode it, apply the chain,
//! with every stage cached and every CPU-heavy step run off the async runtime under the CPU
//! semaphore. Handlers call this; it knows nothing about HTTP.

use std::sync::Arc;

use ndarray::ArrayD;

use crate::cache::Tensor;
use crate::catalog::Item;
use crate::error::AppError;
use crate::imaging::{self, DecodeError, DecodeOptions, ResizeMode};
use crate::state::{AppState, Metrics};

/// How intensities are rescaled after resizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// MONAI `ScaleIntensity()`: min-max to [0, 1].
    MinMax,
    /// Values as decoded (after resizing).
    None,
}

/// The 2D pipeline of the seed: `LoadImage -> EnsureChannelFirst -> Resize -> ScaleIntensity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain2d {
    pub decode: DecodeOptions,
    /// `(H, W)`.
    pub size: (usize, usize),
    pub mode: ResizeMode,
    pub scale: Scale,
}

impl Chain2d {
    /// Canonical text: the cache key's transform part, the ETag's input and the log label.
    pub fn canonical(&self) -> String {
        let scale = match self.scale {
            Scale::MinMax => "minmax",
            Scale::None => "none",
        };
        format!(
            "{}|resize({},{},{})|scale({scale})",
            self.decode.canonical(),
            self.size.0,
            self.size.1,
            self.mode.name(2)
        )
    }

    /// Applies resize and scale to a decoded `(C, H, W)` array. Pure.
    pub fn apply(&self, decoded: &ArrayD<f32>) -> ArrayD<f32> {
        let mut out = imaging::resize::resize(decoded, &[self.size.0, self.size.1], self.mode);
        if self.scale == Scale::MinMax {
            imaging::intensity::scale_minmax(&mut out);
        }
        out
    }
}

/// Runs CPU-heavy work on the blocking pool, at most `cpu` jobs at a time.
pub async fn cpu_job<T, F>(state: &AppState, f: F) -> Result<T, AppError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let _permit = state
        .cpu
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| AppError::Busy("shutting down".into()))?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AppError::Internal(format!("worker failed: {e}")))
}

fn decode_error(key: &str, e: DecodeError) -> AppError {
    match e {
        DecodeError::TooLarge { .. } => AppError::TooLarge {
            key: key.into(),
            message: e.to_string(),
        },
        _ => AppError::Undecodable {
            key: key.into(),
            message: e.to_string(),
        },
    }
}

fn object_id(item: &Item) -> String {
    format!("{}@{}", item.image.key, item.image.version)
}

/// The item's image decoded with `opts`, from cache or from the store.
pub async fn decoded(
    state: &AppState,
    item: &Item,
    opts: DecodeOptions,
) -> Result<Arc<Tensor>, AppError> {
    let key = format!("{}|{}", object_id(item), opts.canonical());
    let object_key = item.image.key.clone();
    state
        .cache
        .get_or_compute(key, async {
            let (_, bytes) = state
                .store
                .get(&object_key, state.limits.max_object_bytes)
                .await?;
            Metrics::inc(&state.metrics.storage_gets);
            state
                .metrics
                .storage_get_bytes
                .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
            let k = object_key.clone();
            let d = cpu_job(state, move || imaging::decode::decode(&bytes, &opts)).await?;
            Metrics::inc(&state.metrics.decodes);
            let d = d.map_err(|e| decode_error(&k, e))?;
            Ok(Tensor {
                info: Some(d.info),
                data: d.data.into_dyn(),
            })
        })
        .await
}

/// The item's image after the whole 2D chain, from cache or computed.
pub async fn transformed(
    state: &AppState,
    item: &Item,
    chain: Chain2d,
) -> Result<Arc<Tensor>, AppError> {
    let key = format!("{}|{}", object_id(item), chain.canonical());
    state
        .cache
        .get_or_compute(key, async {
            let src = decoded(state, item, chain.decode).await?;
            let info = src.info.clone();
            let out = cpu_job(state, move || chain.apply(&src.data)).await?;
            Metrics::inc(&state.metrics.transforms);
            Ok(Tensor { info, data: out })
        })
        .await
}
