//! The opening every data handler shares, done once: the query checked against the route's
//! names and parsed ([`RouteQuery`]), then `{dataset}/{split}/{item}` resolved against the
//! catalog's snapshot and the dataset's kind checked ([`ItemRequest`]). Handlers start with
//! the parsed query and the item in hand. Lookups of datasets and splits for the listing
//! routes live here too.

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;

use super::extract::{OBJECT_VERSIONS, Params, Path, RawPairs, VERSION};
use crate::catalog::discover::is_version;
use crate::catalog::{Dataset, Item, Kind, Snapshot, Split};
use crate::config::Limits;
use crate::error::AppError;
use crate::pipeline::augment::{Augment, Drawn};
use crate::state::AppState;

/// What a route's query parser may look at besides the query.
pub struct QueryContext<'a> {
    pub headers: &'a HeaderMap,
    pub limits: &'a Limits,
    /// The request's path (an alias route fixes the format by its extension).
    pub path: &'a str,
}

/// A route's query: the names it accepts and how they parse. Parsed before anything is
/// looked up, so a malformed query is a 400 whatever the path names.
pub trait RouteQuery: Sized + Send {
    /// The accepted parameter names (also the route table's, which the contract test checks).
    const PARAMS: &'static [&'static str];

    /// The parameters this route accepts for an item of a processed dataset (an export,
    /// whose arrays went through their chain already); `None`: the route serves raw datasets
    /// only.
    const PROCESSED: Option<&'static [&'static str]> = None;

    /// Parses the checked parameters.
    fn parse(p: &Params, cx: &QueryContext<'_>) -> Result<Self, AppError>;
}

/// Refuses what a processed dataset cannot answer: a route for raw data (404, naming the
/// routes that serve it), or a parameter of the chain its items already went through (400).
pub fn check_processed(ds: &Dataset, p: &Params, allowed: Option<&[&str]>) -> Result<(), AppError> {
    let Some(pr) = &ds.processed else {
        return Ok(());
    };
    let Some(allowed) = allowed else {
        return Err(AppError::NotApplicable(format!(
            "dataset '{}' is processed (exported from '{}' with `{}`): its items are served by \
             .../image or .../volume and the batch routes; this route reads raw data, so ask \
             the source dataset",
            ds.name, pr.source_name, pr.params
        )));
    };
    match p.names().find(|n| !allowed.contains(n) && *n != VERSION) {
        None => Ok(()),
        Some(n) => Err(AppError::param_allowed(
            n,
            format!(
                "dataset '{}' is processed: its items went through `{}` when exported and are \
                 served as they are; {n} applies to the raw dataset '{}'",
                ds.name, pr.params, pr.source_name
            ),
            if allowed.is_empty() {
                "none".to_string()
            } else {
                allowed.join(", ")
            },
        )),
    }
}

/// A route that takes no query parameters.
#[derive(Debug, Clone, Copy)]
pub struct NoQuery;

impl RouteQuery for NoQuery {
    const PARAMS: &'static [&'static str] = &[];
    const PROCESSED: Option<&'static [&'static str]> = Some(&[]);

    fn parse(_: &Params, _: &QueryContext<'_>) -> Result<Self, AppError> {
        Ok(NoQuery)
    }
}

/// Which kinds of dataset a route serves.
pub trait KindCheck: Send {
    /// `Ok` when the route applies to `ds`.
    fn check(ds: &Dataset) -> Result<(), AppError>;
}

/// Any dataset.
pub struct AnyKind;
/// Classification datasets (2D images).
pub struct Images;
/// Segmentation datasets (volumes).
pub struct Volumes;

impl KindCheck for AnyKind {
    fn check(_: &Dataset) -> Result<(), AppError> {
        Ok(())
    }
}

impl KindCheck for Images {
    fn check(ds: &Dataset) -> Result<(), AppError> {
        match ds.kind {
            Kind::Classification => Ok(()),
            Kind::Segmentation => Err(AppError::NotApplicable(format!(
                "dataset '{}' holds 3D volumes; 2D images come from classification datasets",
                ds.name
            ))),
        }
    }
}

impl KindCheck for Volumes {
    fn check(ds: &Dataset) -> Result<(), AppError> {
        match ds.kind {
            Kind::Segmentation => Ok(()),
            Kind::Classification => Err(AppError::NotApplicable(format!(
                "dataset '{}' holds 2D images; slices and volumes come from segmentation datasets (use .../image)",
                ds.name
            ))),
        }
    }
}

/// An item resolved against one snapshot of the catalog.
#[derive(Debug, Clone)]
pub struct ItemRef {
    snap: Arc<Snapshot>,
    dataset: String,
    split: usize,
    item: usize,
    /// The item with its objects pinned to stored S3 versions (`?version_id=`), if asked.
    pinned: Option<Arc<Item>>,
}

impl ItemRef {
    /// Resolves `(dataset, split, item)`; 404 naming what exists when one is missing.
    pub fn resolve(
        snap: Arc<Snapshot>,
        (ds, sp, id): (&str, &str, &str),
        version: Option<&str>,
    ) -> Result<Self, AppError> {
        let d = dataset(&snap, ds, version)?;
        let s = split(d, sp)?;
        let split_at = d.splits.iter().position(|x| x.name == s.name).unwrap_or(0);
        let it = item(d, s, id)?;
        let item_at = s.by_id.get(&it.id).copied().unwrap_or(0);
        Ok(ItemRef {
            dataset: d.name.clone(),
            snap,
            split: split_at,
            item: item_at,
            pinned: None,
        })
    }

    /// The item's dataset.
    pub fn dataset(&self) -> &Dataset {
        &self.snap.datasets[&self.dataset]
    }

    /// The item's split.
    pub fn split(&self) -> &Split {
        &self.dataset().splits[self.split]
    }

    /// The item (with its objects at the stored versions asked for, if any).
    pub fn item(&self) -> &Item {
        match &self.pinned {
            Some(it) => it,
            None => &self.split().items[self.item],
        }
    }

    /// Pins the item's image object to the stored version `image` and its mask object to
    /// `label` (S3 version ids): each is looked up once (HEAD), so a missing version is a 404
    /// before any work, and every read, cache key and ETag then names that version.
    pub async fn pin_versions(
        &mut self,
        pipeline: &crate::pipeline::Pipeline,
        image: Option<&str>,
        label: Option<&str>,
    ) -> Result<(), AppError> {
        if image.is_none() && label.is_none() {
            return Ok(());
        }
        let mut it = self.item().clone();
        if let Some(v) = image {
            check_version_id("version_id", v)?;
            it.image = pipeline.object_version(&it.image, v).await?;
        }
        if let Some(v) = label {
            check_version_id("label_version_id", v)?;
            let Some(l) = &it.label else {
                return Err(AppError::NotFound {
                    what: "label",
                    name: v.into(),
                    available: vec![],
                    hint: Some(format!(
                        "item '{}' has no mask object to read a version of (label_version_id)",
                        it.id
                    )),
                });
            };
            it.label = Some(pipeline.object_version(l, v).await?);
        }
        self.pinned = Some(Arc::new(it));
        Ok(())
    }

    /// What `augment`'s random transforms draw for this item.
    pub fn draw(&self, augment: &Augment) -> Drawn {
        augment.draw(&self.dataset, &self.split().name, &self.item().id)
    }
}

/// A data request: the parsed query, the item, and the request's headers.
pub struct ItemRequest<Q, K = AnyKind> {
    pub query: Q,
    pub item: ItemRef,
    pub headers: HeaderMap,
    _kind: PhantomData<fn() -> K>,
}

impl<Q: RouteQuery, K: KindCheck> FromRequestParts<AppState> for ItemRequest<Q, K> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let Path((ds, sp, id)) =
            Path::<(String, String, String)>::from_request_parts(parts, state).await?;
        let raw = RawPairs::from_request_parts(parts, state).await?;
        let p = Params::for_item(raw, Q::PARAMS)?;
        let query = Q::parse(
            &p,
            &QueryContext {
                headers: &parts.headers,
                limits: state.pipeline.limits(),
                path: parts.uri.path(),
            },
        )?;
        let mut item = ItemRef::resolve(snapshot(state).await?, (&ds, &sp, &id), p.version())?;
        K::check(item.dataset())?;
        check_processed(item.dataset(), &p, Q::PROCESSED)?;
        let [image, label] = OBJECT_VERSIONS.map(|n| p.get(n));
        item.pin_versions(&state.pipeline, image, label).await?;
        Ok(ItemRequest {
            query,
            item,
            headers: parts.headers.clone(),
            _kind: PhantomData,
        })
    }
}

/// The catalog's current snapshot.
pub async fn snapshot(state: &AppState) -> Result<Arc<Snapshot>, AppError> {
    Ok(state.catalog.snapshot().await?)
}

/// A dataset by name, at `version` (`?version=`): a versioned dataset's bare name serves its
/// newest version, `name@version` (or `?version=`) a given one. 404 listing the datasets, or
/// the dataset's versions, when one is missing.
pub fn dataset<'a>(
    snap: &'a Snapshot,
    name: &str,
    version: Option<&str>,
) -> Result<&'a Dataset, AppError> {
    let Some(found) = snap.find(name) else {
        return Err(AppError::NotFound {
            what: "dataset",
            name: name.into(),
            available: snap.listed().map(|d| d.name.clone()).collect(),
            hint: None,
        });
    };
    let Some(v) = version else {
        return Ok(found);
    };
    if !is_version(v) {
        return Err(AppError::param_allowed(
            VERSION,
            format!("'{v}' is not a dataset version"),
            "a date YYYY-MM-DD, optionally followed by T, '.', '_' or '-' and more (the \
             versions /v1/datasets/{dataset}/versions lists)",
        ));
    }
    if let Some(pinned) = found.version().filter(|_| name != found.base()) {
        // The path names a version already (`name@version`): the query may only repeat it.
        if pinned != v {
            return Err(AppError::param(
                VERSION,
                format!("'{v}' contradicts the version '{pinned}' the path names ('{name}')"),
            ));
        }
        return Ok(found);
    }
    let base = found.base();
    snap.datasets.get(&format!("{base}@{v}")).ok_or_else(|| {
        let available: Vec<String> = snap
            .versions(base)
            .filter_map(|d| d.version().map(String::from))
            .collect();
        AppError::NotFound {
            what: "version",
            name: v.into(),
            hint: available.is_empty().then(|| {
                format!("dataset '{base}' is not versioned (no dated folders); leave out version")
            }),
            available,
        }
    })
}

/// A split by name; 404 listing the dataset's splits.
pub fn split<'a>(ds: &'a Dataset, name: &str) -> Result<&'a Split, AppError> {
    ds.split(name).ok_or_else(|| AppError::NotFound {
        what: "split",
        name: name.into(),
        available: ds.split_names(),
        hint: None,
    })
}

fn item<'a>(ds: &Dataset, sp: &'a Split, id: &str) -> Result<&'a Item, AppError> {
    const SHOWN: usize = 20;
    sp.item(id).ok_or_else(|| AppError::NotFound {
        what: "item",
        name: id.into(),
        available: sp.items.iter().take(SHOWN).map(|i| i.id.clone()).collect(),
        hint: (sp.items.len() > SHOWN).then(|| {
            format!(
                "{} items in all: page through /v1/datasets/{}/splits/{}/items",
                sp.items.len(),
                ds.name,
                sp.name
            )
        }),
    })
}

/// `class=`: the class's index in the dataset, or `None` when not given; 404 naming the
/// classes when it is not one (a segmentation dataset has none of any name).
pub fn class_filter(ds: &Dataset, class: Option<&str>) -> Result<Option<usize>, AppError> {
    let Some(c) = class else {
        return Ok(None);
    };
    if ds.kind != Kind::Classification {
        return Err(AppError::NotFound {
            what: "class",
            name: c.into(),
            available: Vec::new(),
            hint: Some(format!(
                "dataset '{}' is a segmentation dataset: its items have no classes",
                ds.name
            )),
        });
    }
    let at = ds
        .classes
        .iter()
        .position(|x| x == c)
        .ok_or_else(|| AppError::NotFound {
            what: "class",
            name: c.into(),
            available: ds.classes.clone(),
            hint: None,
        })?;
    Ok(Some(at))
}

/// An S3 version id as a client may give it: 1 to 1024 URL-safe printable characters (S3's
/// ids are opaque, about 32 of them; `null` names the version written before versioning was
/// turned on).
fn check_version_id(name: &str, v: &str) -> Result<(), AppError> {
    let ok = !v.is_empty() && v.len() <= 1024 && v.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(AppError::param_allowed(
            name,
            "not an object version id",
            "an S3 version id (1 to 1024 printable characters) as ListObjectVersions gives it",
        ))
    }
}
