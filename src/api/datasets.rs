//! Catalog routes: datasets, splits, classes, items and item metadata.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Serialize;
use serde_json::{Value, json};

use super::extract::{Params, Path, RawPairs};
use super::item::{ItemRequest, NoQuery, class_filter, dataset, snapshot, split};
use super::response;
use crate::catalog::{Dataset, Item, Kind, Layout, Split};
use crate::error::AppError;
use crate::imaging::DecodeOptions;
use crate::state::AppState;

/// Query parameters of the item listing.
pub const ITEM_LIST_PARAMS: &[&str] = &["class", "offset", "limit"];

/// Default page size of item listings.
pub const DEFAULT_PAGE: usize = 100;

/// `./medmnist/`, `sample:medmnist/` or `s3://bucket/prefix/medmnist/`: never a server path.
fn source(state: &AppState, ds: &Dataset) -> String {
    format!("{}{}", state.catalog.public_location(), ds.root)
}

fn item_url(ds: &Dataset, sp: &Split, it: &Item) -> String {
    format!(
        "/v1/datasets/{}/splits/{}/items/{}",
        ds.name, sp.name, it.id
    )
}

#[derive(Serialize)]
struct SplitCount {
    name: String,
    count: usize,
}

fn split_counts(ds: &Dataset) -> Vec<SplitCount> {
    ds.splits
        .iter()
        .map(|s| SplitCount {
            name: s.name.clone(),
            count: s.items.len(),
        })
        .collect()
}

/// `GET /v1/datasets`
pub async fn list_datasets(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: RawPairs,
) -> Result<Response, AppError> {
    Params::new(q, &[])?;
    let snap = snapshot(&state).await?;
    let list: Vec<Value> = snap
        .datasets
        .values()
        .map(|ds| {
            json!({
                "name": ds.name,
                "kind": ds.kind,
                "layout": ds.layout,
                "splits": ds.split_names(),
                "items": ds.item_count(),
                "source": source(&state, ds),
                "url": format!("/v1/datasets/{}", ds.name),
            })
        })
        .collect();
    Ok(response::json(&headers, &list))
}

/// `GET /v1/datasets/{dataset}`
pub async fn get_dataset(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    q: RawPairs,
) -> Result<Response, AppError> {
    Params::new(q, &[])?;
    let snap = snapshot(&state).await?;
    let ds = dataset(&snap, &name)?;
    let mut body = json!({
        "name": ds.name,
        "kind": ds.kind,
        "layout": ds.layout,
        "source": source(&state, ds),
        "items": ds.item_count(),
        "splits": split_counts(ds),
    });
    match ds.kind {
        Kind::Classification => {
            let per_split: Vec<Vec<usize>> = ds
                .splits
                .iter()
                .map(|s| s.class_counts(ds.classes.len()))
                .collect();
            let classes: Vec<Value> = ds
                .classes
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let counts: BTreeMap<&str, usize> = ds
                        .splits
                        .iter()
                        .zip(&per_split)
                        .map(|(s, cs)| (s.name.as_str(), cs[i]))
                        .collect();
                    json!({"name": c, "index": i, "counts": counts})
                })
                .collect();
            body["classes"] = Value::Array(classes);
        }
        Kind::Segmentation => {
            body["labels"] = json!(ds.labels);
            if ds.layout == Layout::Decathlon {
                body["info"] = json!(ds.info);
            }
        }
    }
    Ok(response::json(&headers, &body))
}

/// `GET /v1/datasets/{dataset}/splits`
pub async fn list_splits(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    q: RawPairs,
) -> Result<Response, AppError> {
    Params::new(q, &[])?;
    let snap = snapshot(&state).await?;
    let ds = dataset(&snap, &name)?;
    Ok(response::json(&headers, &split_counts(ds)))
}

/// `GET /v1/datasets/{dataset}/splits/{split}/classes`
pub async fn list_classes(
    State(state): State<AppState>,
    Path((name, split_name)): Path<(String, String)>,
    headers: HeaderMap,
    q: RawPairs,
) -> Result<Response, AppError> {
    Params::new(q, &[])?;
    let snap = snapshot(&state).await?;
    let ds = dataset(&snap, &name)?;
    let sp = split(ds, &split_name)?;
    if ds.kind != Kind::Classification {
        return Err(AppError::NotApplicable(format!(
            "dataset '{}' is a segmentation dataset: it has label values (see /v1/datasets/{}), not classes",
            ds.name, ds.name
        )));
    }
    let counts = sp.class_counts(ds.classes.len());
    let list: Vec<Value> = ds
        .classes
        .iter()
        .enumerate()
        .map(|(i, c)| json!({"name": c, "index": i, "count": counts[i]}))
        .collect();
    Ok(response::json(&headers, &list))
}

fn item_summary(ds: &Dataset, sp: &Split, it: &Item) -> Value {
    match ds.kind {
        Kind::Classification => {
            let class = it.class.map(|c| ds.classes[c].clone());
            json!({
                "id": it.id,
                "class": class,
                "label": it.class,
                "key": it.image.key,
                "size": it.image.size,
                "url": item_url(ds, sp, it),
                "image_url": format!("{}/image", item_url(ds, sp, it)),
            })
        }
        Kind::Segmentation => json!({
            "id": it.id,
            "subject": it.subject,
            "has_label": it.label.is_some(),
            "key": it.image.key,
            "size": it.image.size,
            "label_key": it.label.as_ref().map(|l| l.key.clone()),
            "url": item_url(ds, sp, it),
        }),
    }
}

/// `GET /v1/datasets/{dataset}/splits/{split}/items?class=&offset=&limit=`
pub async fn list_items(
    State(state): State<AppState>,
    Path((name, split_name)): Path<(String, String)>,
    headers: HeaderMap,
    q: RawPairs,
) -> Result<Response, AppError> {
    let p = Params::new(q, ITEM_LIST_PARAMS)?;
    let max = state.pipeline.limits().max_page;
    let limit = p.usize_in("limit", DEFAULT_PAGE.min(max), 1, max)?;
    let offset = p.usize_in("offset", 0, 0, usize::MAX / 2)?;
    let snap = snapshot(&state).await?;
    let ds = dataset(&snap, &name)?;
    let sp = split(ds, &split_name)?;
    let class = class_filter(ds, p.get("class"))?;
    let matching: Vec<&Item> = sp
        .items
        .iter()
        .filter(|it| class.is_none() || it.class == class)
        .collect();
    let page: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(limit)
        .map(|it| item_summary(ds, sp, it))
        .collect();
    let body = json!({
        "dataset": ds.name,
        "split": sp.name,
        "class": p.get("class"),
        "total": matching.len(),
        "offset": offset,
        "limit": limit,
        "items": page,
    });
    Ok(response::json(&headers, &body))
}

/// `GET /v1/datasets/{dataset}/splits/{split}/items/{item}`
pub async fn get_item(
    State(state): State<AppState>,
    req: ItemRequest<NoQuery>,
) -> Result<Response, AppError> {
    let (ds, sp, it) = (req.item.dataset(), req.item.split(), req.item.item());
    let mut body = item_summary(ds, sp, it);
    let mut objects = vec![json!({
        "role": "image",
        "key": it.image.key,
        "size": it.image.size,
        "version": it.image.version,
    })];
    if let Some(l) = &it.label {
        objects.push(json!({"role": "label", "key": l.key, "size": l.size, "version": l.version}));
    }
    body["dataset"] = json!(ds.name);
    body["split"] = json!(sp.name);
    body["kind"] = json!(ds.kind);
    body["objects"] = json!(objects);
    match ds.kind {
        Kind::Classification => {
            // The default image chain decodes the same way, so this shares its cache entry.
            let opts = DecodeOptions::monai(state.pipeline.limits().max_pixels);
            let decoded = state.pipeline.decoded(it, opts).await?;
            body["image"] = json!(decoded.info);
        }
        Kind::Segmentation => volume_metadata(&state, ds, it, &mut body).await?,
    }
    Ok(response::json(&req.headers, &body))
}

/// The `volume` and `label` members of a segmentation item: header facts and statistics.
async fn volume_metadata(
    state: &AppState,
    ds: &Dataset,
    it: &Item,
    body: &mut Value,
) -> Result<(), AppError> {
    let (img, lab) = state.pipeline.volume_pair(it, true).await?;
    let stats = {
        let (img, lab) = (img.clone(), lab.clone());
        let job = move || (img.range(), lab.map(|l| l.label_counts()));
        state.pipeline.pool().run(job).await?
    };
    let h = &img.volume.header;
    body["volume"] = json!({
        "format": if h.version == 2 { "nifti2" } else { "nifti1" },
        "shape": h.spatial,
        "channels": h.channels,
        "dtype": h.dtype.name(),
        "byte_order": if h.big_endian { "big" } else { "little" },
        "spacing": h.pixdim,
        "affine": h.affine,
        "affine_source": h.affine_source.name(),
        "orientation": h.orientation().iter().collect::<String>(),
        "scl_slope": h.scl_slope,
        "scl_inter": h.scl_inter,
        "intensity": stats.0.map(|(min, max)| json!({"min": min, "max": max})),
    });
    if let (Some(lab), Some(counts)) = (&lab, stats.1) {
        let key = it.label.as_ref().map(|l| l.key.clone()).unwrap_or_default();
        let counts = counts.map_err(|message| AppError::Undecodable { key, message })?;
        let lh = &lab.volume.header;
        body["label"] = json!({
            "shape": lh.spatial,
            "dtype": lh.dtype.name(),
            "values": counts.iter().map(|&(v, n)| json!({
                "value": v,
                "voxels": n,
                "name": ds.labels.get(&v.to_string()),
            })).collect::<Vec<_>>(),
        });
    }
    Ok(())
}
