//! The catalog's data: datasets, splits and items, as discovered from one listing.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::store::ObjectMeta;

/// What a dataset is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// 2D images in one folder per class.
    Classification,
    /// 3D/4D NIfTI volumes with optional voxel masks.
    Segmentation,
}

/// How the dataset's objects are laid out under its root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// `<split>/<Class>/<image>`, or `<Class>/<image>` served as split `all`.
    ClassFolders,
    /// `<split>/<subject>/{img,label}.nii[.gz]`.
    SubjectFolders,
    /// The Medical Segmentation Decathlon's `dataset.json`, `imagesTr/`, `labelsTr/`, `imagesTs/`.
    Decathlon,
    /// `medserve export`'s output: `manifest.json` and WebDataset tar shards per split.
    #[serde(rename = "webdataset")]
    WebDataset,
}

/// Where a processed item's arrays sit inside its shard (the item's `image` object; `label`
/// is the same shard when there is a mask).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Byte range of `<key>.image.npy`'s data.
    pub image: Option<std::ops::Range<u64>>,
    /// Byte range of `<key>.label.npy`'s data.
    pub label: Option<std::ops::Range<u64>>,
}

/// How a processed dataset was made (from its `manifest.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Processed {
    /// The dataset it was exported from, and where that lived.
    pub source_name: String,
    pub source: String,
    /// The chain's parameters as given (`size=64,64&scale=minmax`) and medserve's canonical
    /// text of it.
    pub params: String,
    pub canonical: String,
    /// The medserve that exported it.
    pub medserve_version: String,
    /// Shards listed in the manifest and found with their recorded size.
    pub shards: usize,
}

/// One servable unit: a 2D image with its class, or a volume with its optional mask.
#[derive(Debug, Clone)]
pub struct Item {
    /// URL-safe, stable within its split.
    pub id: String,
    /// Index into the dataset's class list (classification only).
    pub class: Option<usize>,
    /// For segmentation: the subject's name as stored (folder or file stem).
    pub subject: Option<String>,
    /// The image (or volume) object.
    pub image: ObjectMeta,
    /// The mask object, when there is one.
    pub label: Option<ObjectMeta>,
    /// For a processed dataset: where the arrays sit in the shard (`image`, `label`).
    pub member: Option<Member>,
}

/// A named subset of a dataset (train, val, test, ...).
#[derive(Debug, Clone)]
pub struct Split {
    pub name: String,
    /// Sorted by (class, object key) for classification, by id for segmentation.
    pub items: Vec<Item>,
    /// Item id -> position in `items`.
    pub by_id: HashMap<String, usize>,
}

impl Split {
    /// Number of items of each class, indexed like the dataset's class list.
    pub fn class_counts(&self, n_classes: usize) -> Vec<usize> {
        let mut counts = vec![0; n_classes];
        for it in &self.items {
            if let Some(c) = it.class
                && c < n_classes
            {
                counts[c] += 1;
            }
        }
        counts
    }

    /// Looks an item up by id.
    pub fn item(&self, id: &str) -> Option<&Item> {
        self.by_id.get(id).map(|&i| &self.items[i])
    }
}

/// One dataset as served.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: String,
    pub kind: Kind,
    pub layout: Layout,
    /// Key prefix of the dataset's root (`""` or ending in `/`).
    pub root: String,
    /// Splits in a conventional order: train, val, test, then the rest by name.
    pub splits: Vec<Split>,
    /// Sorted class names (classification); the position is the label index.
    pub classes: Vec<String>,
    /// Label value -> name (segmentation, from dataset.json when present).
    pub labels: BTreeMap<String, String>,
    /// Free-form facts from dataset.json (name, description, modality, ...).
    pub info: BTreeMap<String, serde_json::Value>,
    /// Set for a dataset `medserve export` wrote: its items are arrays already through a chain
    /// (`kind` is then the kind of the dataset it was made from).
    pub processed: Option<std::sync::Arc<Processed>>,
}

impl Dataset {
    /// The kind clients are told: `processed` for an export, else the dataset's own.
    pub fn kind_name(&self) -> &'static str {
        match (&self.processed, self.kind) {
            (Some(_), _) => "processed",
            (None, Kind::Classification) => "classification",
            (None, Kind::Segmentation) => "segmentation",
        }
    }

    /// Looks a split up by name.
    pub fn split(&self, name: &str) -> Option<&Split> {
        self.splits.iter().find(|s| s.name == name)
    }

    /// Total number of items over all splits.
    pub fn item_count(&self) -> usize {
        self.splits.iter().map(|s| s.items.len()).sum()
    }

    /// Split names in serving order.
    pub fn split_names(&self) -> Vec<String> {
        self.splits.iter().map(|s| s.name.clone()).collect()
    }

    /// The dataset's version, for a name `base@version` (a dated folder); `None` otherwise.
    pub fn version(&self) -> Option<&str> {
        self.name
            .rsplit_once('@')
            .map(|(_, v)| v)
            .filter(|v| super::discover::is_version(v))
    }

    /// The name without its version: what all versions of the dataset share.
    pub fn base(&self) -> &str {
        match self.version() {
            Some(v) => &self.name[..self.name.len() - v.len() - 1],
            None => &self.name,
        }
    }
}

/// Every dataset found in one listing of the store.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every dataset by its name; a version of a dataset is named `base@version`.
    pub datasets: BTreeMap<String, Dataset>,
    /// A versioned dataset's base name -> the name of its newest version (what the bare name
    /// serves).
    pub newest: BTreeMap<String, String>,
    /// Objects seen in the listing (after junk was skipped).
    pub objects_listed: usize,
    /// Objects that matched no dataset layout.
    pub objects_unmatched: usize,
}

impl Snapshot {
    /// The dataset named `name`: a name as listed, or a versioned dataset's bare name (its
    /// newest version).
    pub fn find(&self, name: &str) -> Option<&Dataset> {
        self.datasets
            .get(name)
            .or_else(|| self.newest.get(name).and_then(|n| self.datasets.get(n)))
    }

    /// The datasets `GET /v1/datasets` lists: every unversioned one, and each versioned one by
    /// its newest version.
    pub fn listed(&self) -> impl Iterator<Item = &Dataset> {
        self.datasets.values().filter(|d| {
            d.version().is_none() || self.newest.get(d.base()).is_some_and(|n| *n == d.name)
        })
    }

    /// The versions of the dataset whose base name is `base`, oldest first (empty for an
    /// unversioned dataset).
    pub fn versions<'a>(&'a self, base: &'a str) -> impl Iterator<Item = &'a Dataset> + 'a {
        let from = format!("{base}@");
        self.datasets
            .range(from.clone()..)
            .take_while(move |(k, _)| k.starts_with(&from))
            .map(|(_, d)| d)
            .filter(move |d| d.base() == base)
    }
}
