//! Catalog routes: datasets, splits, classes, items and item metadata.
//!
//! The documents are typed `Serialize` structs whose fields are declared in alphabetical
//! order: they were `serde_json::Value` maps (sorted keys) before, so the bytes are the same,
//! without building a tree of maps and strings for every item of a page.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::{Serialize, Serializer};
use serde_json::{Value, json};

use super::extract::{Params, Path, RawPairs};
use super::item::{ItemRequest, NoQuery, class_filter, dataset, snapshot, split};
use super::response;
use crate::cache::{Document, Key};
use crate::catalog::{Dataset, Item, Kind, Layout, Snapshot, Split};
use crate::error::AppError;
use crate::imaging::DecodeOptions;
use crate::pipeline::PipelineError;
use crate::state::AppState;

/// Query parameters of the item listing.
pub const ITEM_LIST_PARAMS: &[&str] = &["class", "offset", "limit"];

/// Default page size of item listings.
pub const DEFAULT_PAGE: usize = 100;

/// `./medmnist/`, `sample:medmnist/` or `s3://bucket/prefix/medmnist/`: never a server path.
fn source(state: &AppState, ds: &Dataset) -> String {
    format!("{}{}", state.catalog.public_location(), ds.root)
}

/// A listing document, cached per catalog snapshot and request (`what`: the route and its
/// parameters, each length-prefixed so no two requests share a text). A warm page is then one
/// cache lookup: serialising a 50-item page and hashing it for its ETag was most of its time.
pub(super) async fn cached_document<T: Serialize>(
    state: &AppState,
    headers: &HeaderMap,
    snap: &Arc<Snapshot>,
    what: &[&str],
    make: impl FnOnce() -> T,
) -> Result<Response, AppError> {
    let mut text = String::new();
    for part in what {
        text.push_str(&format!("{}:{part}|", part.len()));
    }
    let key = Key::of_snapshot(snap, &text.as_str());
    let doc = state
        .pipeline
        .cache()
        .get_or_compute_with(key, || async {
            let body = response::json_bytes(&make())
                .map_err(|e| PipelineError::Internal(e.to_string()))?;
            let etag = response::body_etag(&body);
            Ok::<_, PipelineError>(Document::new(snap, body, etag))
        })
        .await?;
    debug_assert!(doc.is_of(snap));
    Ok(response::json_body(headers, doc.body.clone(), &doc.etag))
}

/// An item's URL (plus `suffix`), written straight into the JSON text: a page of items
/// formats two per item, and a `String` each was a good part of a page's allocations.
#[derive(Clone, Copy)]
struct ItemUrl<'a> {
    dataset: &'a str,
    split: &'a str,
    id: &'a str,
    suffix: &'static str,
}

impl fmt::Display for ItemUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "/v1/datasets/{}/splits/{}/items/{}{}",
            self.dataset, self.split, self.id, self.suffix
        )
    }
}

impl Serialize for ItemUrl<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn item_url<'a>(ds: &'a Dataset, sp: &'a Split, it: &'a Item) -> ItemUrl<'a> {
    ItemUrl {
        dataset: &ds.name,
        split: &sp.name,
        id: &it.id,
        suffix: "",
    }
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

/// How a processed dataset was made, in its documents.
#[derive(Serialize)]
struct ProcessedDoc<'a> {
    chain: &'a str,
    canonical: &'a str,
    medserve_version: &'a str,
    shards: usize,
    source: &'a str,
    source_dataset: &'a str,
    source_kind: Kind,
}

fn processed_doc(ds: &Dataset) -> Option<ProcessedDoc<'_>> {
    ds.processed.as_ref().map(|p| ProcessedDoc {
        chain: &p.params,
        canonical: &p.canonical,
        medserve_version: &p.medserve_version,
        shards: p.shards,
        source: &p.source,
        source_dataset: &p.source_name,
        source_kind: ds.kind,
    })
}

/// One dataset in `GET /v1/datasets` (and one version in `.../versions`).
#[derive(Serialize)]
pub(super) struct DatasetSummary<'a> {
    items: usize,
    kind: &'static str,
    layout: Layout,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    processed: Option<ProcessedDoc<'a>>,
    source: String,
    splits: Vec<&'a str>,
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    versions_url: Option<String>,
}

/// `/v1/datasets/<base>/versions` for a versioned dataset.
fn versions_url(ds: &Dataset) -> Option<String> {
    ds.version()
        .map(|_| format!("/v1/datasets/{}/versions", ds.base()))
}

pub(super) fn summary<'a>(state: &AppState, ds: &'a Dataset) -> DatasetSummary<'a> {
    DatasetSummary {
        items: ds.item_count(),
        kind: ds.kind_name(),
        layout: ds.layout,
        name: &ds.name,
        processed: processed_doc(ds),
        source: source(state, ds),
        splits: ds.splits.iter().map(|s| s.name.as_str()).collect(),
        url: format!("/v1/datasets/{}", ds.name),
        version: ds.version(),
        versions_url: versions_url(ds),
    }
}

/// `GET /v1/datasets`
pub async fn list_datasets(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: RawPairs,
) -> Result<Response, AppError> {
    Params::new(q, &[])?;
    let snap = snapshot(&state).await?;
    cached_document(&state, &headers, &snap, &["datasets"], || {
        snap.listed()
            .map(|ds| summary(&state, ds))
            .collect::<Vec<_>>()
    })
    .await
}

/// A class of `GET /v1/datasets/{dataset}`, with its count in each split.
#[derive(Serialize)]
struct ClassCounts<'a> {
    counts: BTreeMap<&'a str, usize>,
    index: usize,
    name: &'a str,
}

/// `GET /v1/datasets/{dataset}`: `classes` for classification, `labels` (and a Decathlon's
/// `info`) for segmentation.
#[derive(Serialize)]
struct DatasetDoc<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    classes: Option<Vec<ClassCounts<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<&'a BTreeMap<String, Value>>,
    items: usize,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<&'a BTreeMap<String, String>>,
    layout: Layout,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    processed: Option<ProcessedDoc<'a>>,
    source: String,
    splits: Vec<DatasetSplit<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    versions_url: Option<String>,
}

/// A split in `GET /v1/datasets/{dataset}`: the same facts as [`SplitCount`], whose `/splits`
/// listing has always put `name` first while this document's keys are sorted.
#[derive(Serialize)]
struct DatasetSplit<'a> {
    count: usize,
    name: &'a str,
}

/// `GET /v1/datasets/{dataset}`
pub async fn get_dataset(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    q: RawPairs,
) -> Result<Response, AppError> {
    let p = Params::for_dataset(q, &[])?;
    let snap = snapshot(&state).await?;
    let ds = dataset(&snap, &name, p.version())?;
    // Class counts walk every item of the dataset: cached, a request is one lookup.
    cached_document(&state, &headers, &snap, &["dataset", &ds.name], || {
        let mut body = DatasetDoc {
            classes: None,
            info: None,
            items: ds.item_count(),
            kind: ds.kind_name(),
            labels: None,
            layout: ds.layout,
            name: &ds.name,
            processed: processed_doc(ds),
            source: source(&state, ds),
            splits: ds
                .splits
                .iter()
                .map(|s| DatasetSplit {
                    count: s.items.len(),
                    name: &s.name,
                })
                .collect(),
            version: ds.version(),
            versions_url: versions_url(ds),
        };
        match ds.kind {
            Kind::Classification => {
                let per_split: Vec<Vec<usize>> = ds
                    .splits
                    .iter()
                    .map(|s| s.class_counts(ds.classes.len()))
                    .collect();
                let classes = ds
                    .classes
                    .iter()
                    .enumerate()
                    .map(|(i, c)| ClassCounts {
                        counts: ds
                            .splits
                            .iter()
                            .zip(&per_split)
                            .map(|(s, cs)| (s.name.as_str(), cs[i]))
                            .collect(),
                        index: i,
                        name: c,
                    })
                    .collect();
                body.classes = Some(classes);
            }
            Kind::Segmentation => {
                body.labels = Some(&ds.labels);
                if ds.layout == Layout::Decathlon {
                    body.info = Some(&ds.info);
                }
            }
        }
        body
    })
    .await
}

/// `GET /v1/datasets/{dataset}/splits`
pub async fn list_splits(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    q: RawPairs,
) -> Result<Response, AppError> {
    let p = Params::for_dataset(q, &[])?;
    let snap = snapshot(&state).await?;
    let ds = dataset(&snap, &name, p.version())?;
    cached_document(&state, &headers, &snap, &["splits", &ds.name], || {
        split_counts(ds)
    })
    .await
}

/// A class of `GET .../splits/{split}/classes`.
#[derive(Serialize)]
struct ClassCount<'a> {
    count: usize,
    index: usize,
    name: &'a str,
}

/// `GET /v1/datasets/{dataset}/splits/{split}/classes`
pub async fn list_classes(
    State(state): State<AppState>,
    Path((name, split_name)): Path<(String, String)>,
    headers: HeaderMap,
    q: RawPairs,
) -> Result<Response, AppError> {
    let p = Params::for_dataset(q, &[])?;
    let snap = snapshot(&state).await?;
    let ds = dataset(&snap, &name, p.version())?;
    let sp = split(ds, &split_name)?;
    if ds.kind != Kind::Classification {
        return Err(AppError::NotApplicable(format!(
            "dataset '{}' is a segmentation dataset: it has label values (see /v1/datasets/{}), not classes",
            ds.name, ds.name
        )));
    }
    let what = ["classes", &ds.name, &sp.name];
    cached_document(&state, &headers, &snap, &what, || {
        let counts = sp.class_counts(ds.classes.len());
        ds.classes
            .iter()
            .enumerate()
            .map(|(i, c)| ClassCount {
                count: counts[i],
                index: i,
                name: c,
            })
            .collect::<Vec<_>>()
    })
    .await
}

/// An item as listed: a classification image, or a segmentation volume with its mask.
#[derive(Serialize)]
#[serde(untagged)]
enum ItemSummary<'a> {
    Image {
        class: Option<&'a str>,
        id: &'a str,
        image_url: ItemUrl<'a>,
        key: &'a str,
        label: Option<usize>,
        size: u64,
        url: ItemUrl<'a>,
    },
    Volume {
        has_label: bool,
        id: &'a str,
        key: &'a str,
        label_key: Option<&'a str>,
        size: u64,
        subject: Option<&'a str>,
        url: ItemUrl<'a>,
    },
}

fn item_summary<'a>(ds: &'a Dataset, sp: &'a Split, it: &'a Item) -> ItemSummary<'a> {
    let url = item_url(ds, sp, it);
    match ds.kind {
        Kind::Classification => ItemSummary::Image {
            class: it.class.map(|c| ds.classes[c].as_str()),
            id: &it.id,
            image_url: ItemUrl {
                suffix: "/image",
                ..url
            },
            key: &it.image.key,
            label: it.class,
            size: it.image.size,
            url,
        },
        Kind::Segmentation => ItemSummary::Volume {
            has_label: it.label.is_some(),
            id: &it.id,
            key: &it.image.key,
            label_key: it.label.as_ref().map(|l| l.key.as_str()),
            size: it.image.size,
            subject: it.subject.as_deref(),
            url,
        },
    }
}

/// `GET .../splits/{split}/items`: one page of a split's items.
#[derive(Serialize)]
struct ItemPage<'a> {
    class: Option<&'a str>,
    dataset: &'a str,
    items: Vec<ItemSummary<'a>>,
    limit: usize,
    offset: usize,
    split: &'a str,
    total: usize,
}

/// `GET /v1/datasets/{dataset}/splits/{split}/items?class=&offset=&limit=`
pub async fn list_items(
    State(state): State<AppState>,
    Path((name, split_name)): Path<(String, String)>,
    headers: HeaderMap,
    q: RawPairs,
) -> Result<Response, AppError> {
    let p = Params::for_dataset(q, ITEM_LIST_PARAMS)?;
    let max = state.pipeline.limits().max_page;
    let limit = p.usize_in("limit", DEFAULT_PAGE.min(max), 1, max)?;
    let offset = p.usize_in("offset", 0, 0, usize::MAX / 2)?;
    let snap = snapshot(&state).await?;
    let ds = dataset(&snap, &name, p.version())?;
    let sp = split(ds, &split_name)?;
    let class = class_filter(ds, p.get("class"))?;
    let (offset_text, limit_text) = (offset.to_string(), limit.to_string());
    let what = [
        "items",
        &ds.name,
        &sp.name,
        p.get("class").unwrap_or("-"),
        &offset_text,
        &limit_text,
    ];
    cached_document(&state, &headers, &snap, &what, || {
        let matching = || {
            sp.items
                .iter()
                .filter(move |it| class.is_none() || it.class == class)
        };
        ItemPage {
            class: p.get("class"),
            dataset: &ds.name,
            items: matching()
                .skip(offset)
                .take(limit)
                .map(|it| item_summary(ds, sp, it))
                .collect(),
            limit,
            offset,
            split: &sp.name,
            total: if class.is_none() {
                sp.items.len()
            } else {
                matching().count()
            },
        }
    })
    .await
}

/// `GET /v1/datasets/{dataset}/splits/{split}/items/{item}`
pub async fn get_item(
    State(state): State<AppState>,
    req: ItemRequest<NoQuery>,
) -> Result<Response, AppError> {
    let (ds, sp, it) = (req.item.dataset(), req.item.split(), req.item.item());
    let mut body = serde_json::to_value(item_summary(ds, sp, it))
        .map_err(|e| AppError::Internal(format!("serialising JSON: {e}")))?;
    let object = |role: &str, o: &crate::catalog::ObjectMeta| {
        let mut v = json!({"role": role, "key": o.key, "size": o.size, "version": o.version});
        if let Some(id) = &o.version_id {
            v["version_id"] = json!(id);
        }
        v
    };
    let mut objects = vec![object("image", &it.image)];
    if let Some(l) = &it.label {
        objects.push(object("label", l));
    }
    // A processed item's objects are its shard; `range` says where in it each array sits.
    if let Some(m) = &it.member {
        let ranges = [m.image.as_ref(), m.label.as_ref()];
        for (o, r) in objects.iter_mut().zip(ranges.into_iter().flatten()) {
            o["range"] = json!([r.start, r.end - r.start]);
        }
    }
    body["dataset"] = json!(ds.name);
    body["split"] = json!(sp.name);
    body["kind"] = json!(ds.kind_name());
    body["objects"] = json!(objects);
    if ds.processed.is_some() {
        body["processed"] = json!(processed_doc(ds));
        return Ok(response::json(&req.headers, &body));
    }
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
