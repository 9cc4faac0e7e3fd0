//! Segmentation volumes: `GET .../items/{item}/slice` (one plane as PNG for eyes or numbers for
//! programs) and `GET .../items/{item}/volume` (+ `.nii.gz`, `.nii`, `.npy`, `.npz` aliases,
//! the same handler with the format fixed by the extension: the whole volume through MONAI's
//! 3D chain, with its mask) and `GET .../items/{item}/patches` (patches sampled around
//! foreground and background voxels, MONAI `RandCropByPosNegLabeld`). The query grammars are
//! in `query.rs` and `patches.rs`; the work is the pipeline's.

use axum::extract::State;
use axum::response::Response;

use super::item::{ItemRequest, Volumes};
use super::response;
use crate::error::AppError;
use crate::imaging::encode::Format;
use crate::pipeline::{PatchQuery, SliceQuery, VolumePart};
use crate::state::AppState;
use query::VolumeRequest;

pub mod patches;
pub mod query;

pub use query::{CT_PRESETS, MAX_NUMBER};

/// `GET /v1/datasets/{dataset}/splits/{split}/items/{item}/slice`
pub async fn get_slice(
    State(state): State<AppState>,
    req: ItemRequest<SliceQuery, Volumes>,
) -> Result<Response, AppError> {
    let it = req.item.item();
    // Boxed, as the volume route's: looking up the decoded volume holds its decode inline.
    let prepared = Box::pin(state.pipeline.prepare_slice(it, &req.query)).await?;
    let (axis, index) = prepared.at();
    let stem = format!("{}_{}{index}", it.id, ["x", "y", "z"][axis]);
    response::conditional(&req.headers, &prepared.etag(), &stem, async {
        state.pipeline.slice(prepared).await
    })
    .await
}

/// `GET .../items/{item}/volume` and its `.nii.gz`, `.nii`, `.npy`, `.npz` aliases.
pub async fn get_volume(
    State(state): State<AppState>,
    req: ItemRequest<VolumeRequest, Volumes>,
) -> Result<Response, AppError> {
    let it = req.item.item();
    if req.item.dataset().processed.is_some() {
        return processed_volume(&state, &req.headers, it, &req.query.query).await;
    }
    let VolumeRequest { mut query, augment } = req.query;
    let drawn = (!augment.is_empty()).then(|| req.item.draw(&augment));
    if let Some(d) = &drawn {
        query.chain.flip = d.flip_axes();
    }
    let part = match query.part {
        VolumePart::Image => "",
        VolumePart::Label => "_label",
        VolumePart::Both => "_both",
    };
    let stem = format!("{}{part}", it.id);
    // NIfTI files are what viewers fetch by byte range; arrays are not.
    let ranged = matches!(query.format, Format::Nii | Format::NiiGz);
    // Boxed: the pipeline's volume futures hold every stage they may await (decode, chain,
    // mask) inline, ~100 KB that each warm request would otherwise move through the stack.
    let prepared = Box::pin(state.pipeline.prepare_volume(it, query)).await?;
    let etag = prepared.etag();
    let make = Box::pin(state.pipeline.volume_response(prepared));
    let resp = if ranged {
        response::conditional_ranged(&req.headers, &etag, &stem, make).await?
    } else {
        response::conditional(&req.headers, &etag, &stem, make).await?
    };
    Ok(response::with_augment(resp, drawn.map(|d| d.header(3))))
}

/// A processed item's arrays as exported (`format` npy, npz or f32; NIfTI needs an affine,
/// which an export does not keep).
async fn processed_volume(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    it: &crate::catalog::Item,
    query: &crate::pipeline::VolumeQuery,
) -> Result<Response, AppError> {
    use crate::pipeline::processed::Part;
    if matches!(query.format, Format::Nii | Format::NiiGz) {
        return Err(AppError::param_allowed(
            "format",
            "a processed item has no affine to write into a NIfTI header",
            "npy, npz, f32",
        ));
    }
    let (part, suffix) = match query.part {
        VolumePart::Image => (Part::Image, ""),
        VolumePart::Label => (Part::Label, "_label"),
        VolumePart::Both => (Part::Both, "_both"),
    };
    let etag = state.pipeline.processed_etag(it, part, query.format);
    let stem = format!("{}{suffix}", it.id);
    response::conditional(headers, &etag, &stem, async {
        state.pipeline.processed_body(it, part, query.format).await
    })
    .await
}

/// `GET .../items/{item}/patches`: `num` patches of the image and mask after the chain, as
/// one `.npz` (`image`, `label`, `center`).
pub async fn get_patches(
    State(state): State<AppState>,
    req: ItemRequest<PatchQuery, Volumes>,
) -> Result<Response, AppError> {
    let (ds, sp, it) = (req.item.dataset(), req.item.split(), req.item.item());
    let stem = format!("{}_patches", it.id);
    let prepared = Box::pin(
        state
            .pipeline
            .prepare_patches(it, req.query, &ds.name, &sp.name),
    )
    .await?;
    response::conditional(&req.headers, &prepared.etag(), &stem, async {
        state.pipeline.patches_response(prepared).await
    })
    .await
}
#[cfg(test)]
mod tests {
    fn future_size<A, B, F: std::future::Future>(_: impl Fn(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A handler's future is moved on every request: the volume route's was ~100 KB (the
    /// decode and chain futures held inline) until the pipeline's calls were boxed.
    #[test]
    fn handler_futures_stay_small() {
        for (name, size) in [
            ("slice", future_size(super::get_slice)),
            ("volume", future_size(super::get_volume)),
            ("patches", future_size(super::get_patches)),
            ("image", future_size(super::super::images::get_image)),
        ] {
            assert!(size < 16 << 10, "{name}: {size} bytes");
        }
    }
}
