//! `manifest.json` of an exported dataset: what was exported, how, from which objects, and
//! where every item sits in which shard. Written after every stored shard (`complete: false`)
//! and once more at the end (`complete: true`); a rerun reads it to skip finished shards, and
//! `serve` reads it to serve the items from the shards.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The `format` field's value: how `serve` recognises an export.
pub const FORMAT: &str = "medserve-export";
/// Bumped when the layout of shards or manifest changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;
/// The manifest's file name, at the export's root.
pub const MANIFEST: &str = "manifest.json";

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    pub format_version: u32,
    /// The medserve that wrote it (`CARGO_PKG_VERSION`).
    pub medserve_version: String,
    /// False while shards are still being written (a run in progress, or killed).
    pub complete: bool,
    pub dataset: SourceDataset,
    pub chain: ChainInfo,
    /// How items were ordered inside a split before being cut into shards.
    pub order: OrderInfo,
    /// Items per shard (the last shard of a split may hold fewer): `--shard-mb` divided by
    /// the first item's size in a shard.
    pub items_per_shard: usize,
    /// Split name -> its shards, in serving order of the source.
    pub splits: BTreeMap<String, SplitManifest>,
}

/// The dataset the export was made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceDataset {
    pub name: String,
    /// `classification` or `segmentation`.
    pub kind: String,
    pub layout: String,
    /// The source's public location (`s3://bucket/prefix/` or `./` for a folder).
    pub source: String,
    /// Class names, the position being the class index (classification).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    /// Label value -> name (segmentation).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The chain every item went through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainInfo {
    /// The parameters as given, in the HTTP routes' query syntax (`size=64,64&scale=minmax`).
    pub params: String,
    /// medserve's canonical text of the chain (what its cache keys and ETags are made of).
    pub canonical: String,
    /// The HTTP request each item's arrays equal: `image` for 2D, `volume` for 3D.
    pub route: String,
    /// Member suffixes of each item in a shard, e.g. `["image.npy", "cls", "json"]`.
    pub members: Vec<String>,
}

/// The order of a split's items in its shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderInfo {
    /// The batch plan's shuffle (`pipeline::batch::ORDER_ALGORITHM`).
    pub algorithm: String,
    pub seed: u64,
}

/// One split: counts and shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitManifest {
    pub items: usize,
    /// Class name -> items (classification).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub classes: BTreeMap<String, usize>,
    /// Every shard of the split, stored or not yet (`sha256` empty until stored).
    pub shards: Vec<ShardEntry>,
}

/// One tar shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// Key relative to the export's root, e.g. `train/train-000003.tar`.
    pub name: String,
    /// Bytes, once stored.
    pub size: u64,
    /// Hex SHA-256 of the whole tar, once stored; empty while it is not.
    pub sha256: String,
    pub items: Vec<MemberEntry>,
}

/// One item inside a shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberEntry {
    /// The item's id in the source dataset (and in `serve`'s listing of the export).
    pub id: String,
    /// The WebDataset key: the members' common file-name prefix.
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The source objects (key, version: an S3 ETag, or size-mtime of a file).
    pub source: Vec<SourceObject>,
    /// Byte range `[offset, length]` of `<key>.image.npy`'s data in the tar.
    pub image: [u64; 2],
    /// Byte range of `<key>.label.npy`'s data (segmentation with masks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<[u64; 2]>,
}

/// A source object as it was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceObject {
    pub key: String,
    pub version: String,
}

impl Manifest {
    /// Items over all splits.
    pub fn item_count(&self) -> usize {
        self.splits.values().map(|s| s.items).sum()
    }

    /// Whether `other` was made from the same objects the same way, shard for shard, so its
    /// stored shards may be kept.
    pub fn same_plan(&self, other: &Manifest) -> bool {
        self.format_version == other.format_version
            && self.chain.canonical == other.chain.canonical
            && self.order == other.order
            && self.items_per_shard == other.items_per_shard
            && self.dataset.name == other.dataset.name
    }
}
