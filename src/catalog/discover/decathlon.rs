//! Decathlon tasks: `dataset.json` (as the Decathlon and nnU-Net v2 write it), the task roots
//! in a listing, and a task's splits from its `training`/`test` lists or, without a usable
//! `dataset.json`, from `imagesTr`/`labelsTr`/`imagesTs` paired by file name.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::build::{pick, sort_splits, unique_id};
use super::{CatalogFile, Groups, is_junk, norm_prefix};
use crate::catalog::ids::{slug, stem};
use crate::catalog::model::{Dataset, Item, Kind, Layout, Split};
use crate::store::ObjectMeta;

/// The parts of a Decathlon `dataset.json` we use.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DecathlonJson {
    /// Label value (decimal) -> name.
    #[serde(default, deserialize_with = "label_names")]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub training: Vec<DecathlonPair>,
    #[serde(default)]
    pub test: Vec<DecathlonTest>,
    #[serde(flatten)]
    pub rest: BTreeMap<String, serde_json::Value>,
}

/// One training entry of `dataset.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct DecathlonPair {
    pub image: String,
    #[serde(default)]
    pub label: Option<String>,
}

/// A test entry: a bare path, or an object with `image`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DecathlonTest {
    Path(String),
    Pair { image: String },
}

/// `labels` as the Decathlon writes it (`{"0": "background", "1": "spleen"}`) or as nnU-Net v2
/// does (`{"background": 0, "spleen": 1}`), keyed by the value in canonical decimal (`"01"` is
/// `"1"`), as the item metadata looks names up. Entries that name no single value 0..=255
/// (nnU-Net's region lists, `null`), or a `labels` that is no object, are left out rather
/// than losing the whole file.
fn label_names<'de, D>(d: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let serde_json::Value::Object(raw) = serde_json::Value::deserialize(d)? else {
        return Ok(BTreeMap::new());
    };
    let value = |s: &str| s.trim().parse::<u8>().ok().map(|v| v.to_string());
    Ok(raw
        .into_iter()
        .filter_map(|(k, v)| match v {
            serde_json::Value::String(name) => Some((value(&k)?, name)),
            serde_json::Value::Number(n) => Some((value(&n.to_string())?, k)),
            _ => None,
        })
        .collect())
}

/// Keys of the `dataset.json` files the caller should fetch before calling [`discover`].
pub fn decathlon_json_keys(listing: &[ObjectMeta], file: &CatalogFile) -> Vec<String> {
    let mut out: Vec<String> = listing
        .iter()
        .filter(|m| !is_junk(&m.key))
        .filter(|m| m.key == "dataset.json" || m.key.ends_with("/dataset.json"))
        .filter(|m| {
            let root = &m.key[..m.key.len() - "dataset.json".len()];
            let claimed_by_override = file.datasets.iter().any(|d| {
                let p = norm_prefix(&d.prefix);
                root.starts_with(&p) && root != p
            });
            !claimed_by_override
        })
        .map(|m| m.key.clone())
        .collect();
    out.sort();
    out
}

/// Roots of Decathlon tasks: folders with `imagesTr/`/`imagesTs/`/`labelsTr/` or `dataset.json`.
pub(super) fn decathlon_roots(keys: &[&ObjectMeta]) -> Vec<String> {
    let mut roots: Vec<String> = Vec::new();
    for m in keys {
        let segs: Vec<&str> = m.key.split('/').collect();
        let n = segs.len();
        let root = if n >= 2 && matches!(segs[n - 2], "imagesTr" | "imagesTs" | "labelsTr") {
            &segs[..n - 2]
        } else if segs[n - 1] == "dataset.json" {
            &segs[..n - 1]
        } else {
            continue;
        };
        let r = if root.is_empty() {
            String::new()
        } else {
            format!("{}/", root.join("/"))
        };
        if !roots.contains(&r) {
            roots.push(r);
        }
    }
    // Longest first, so a nested task wins over an enclosing folder.
    roots.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    roots
}

/// `./imagesTr/x.nii.gz` relative to the task root -> a key.
fn resolve_rel(root: &str, p: &str) -> String {
    format!("{root}{}", p.trim_start_matches("./"))
}

/// A task's splits, in the order items arrive.
#[derive(Default)]
struct TaskSplits(Vec<Split>);

impl TaskSplits {
    fn push(&mut self, split: &str, subject: &str, image: ObjectMeta, label: Option<ObjectMeta>) {
        let out = &mut self.0;
        let s = match out.iter_mut().position(|s| s.name == split) {
            Some(i) => &mut out[i],
            None => {
                out.push(Split {
                    name: split.into(),
                    items: vec![],
                    by_id: HashMap::new(),
                });
                out.last_mut().expect("just pushed")
            }
        };
        let id = unique_id(&s.by_id, slug(subject));
        s.by_id.insert(id.clone(), s.items.len());
        s.items.push(Item {
            id,
            class: None,
            subject: Some(subject.into()),
            image,
            label,
            member: None,
        });
    }
}

pub(super) fn build_decathlon(
    name: &str,
    root: &str,
    splits: Groups,
    json: Option<&DecathlonJson>,
    by_key: &HashMap<&str, &ObjectMeta>,
) -> Dataset {
    let mut out = TaskSplits::default();
    let (labels, info) = json
        .map(|j| (j.labels.clone(), j.rest.clone()))
        .unwrap_or_default();
    match json {
        Some(j) if !j.training.is_empty() || !j.test.is_empty() => {
            from_json(j, root, by_key, &mut out);
        }
        // No usable dataset.json: pair imagesTr/x with labelsTr/x by file name.
        _ => {
            for (split, groups) in splits {
                for (subject, (images, ls)) in groups {
                    if let Some(image) = pick(images) {
                        out.push(&slug(&split), &subject, image, pick(ls));
                    }
                }
            }
        }
    }
    let mut out = out.0;
    sort_splits(&mut out);
    Dataset {
        name: name.into(),
        kind: Kind::Segmentation,
        layout: Layout::Decathlon,
        root: root.into(),
        splits: out,
        classes: vec![],
        labels,
        info,
        processed: None,
    }
}

/// The `training` and `test` entries that name listed objects, sorted by path.
fn from_json(
    j: &DecathlonJson,
    root: &str,
    by_key: &HashMap<&str, &ObjectMeta>,
    out: &mut TaskSplits,
) {
    let mut training: Vec<&DecathlonPair> = j.training.iter().collect();
    training.sort_by(|a, b| a.image.cmp(&b.image));
    for pair in training {
        let key = resolve_rel(root, &pair.image);
        let Some(image) = by_key.get(key.as_str()) else {
            continue;
        };
        let label = pair
            .label
            .as_ref()
            .and_then(|l| by_key.get(resolve_rel(root, l).as_str()))
            .map(|m| (*m).clone());
        let file = key.rsplit('/').next().unwrap_or(&key);
        out.push("train", stem(file), (*image).clone(), label);
    }
    let mut tests: Vec<&str> = j
        .test
        .iter()
        .map(|t| match t {
            DecathlonTest::Path(p) => p.as_str(),
            DecathlonTest::Pair { image } => image.as_str(),
        })
        .collect();
    tests.sort();
    for p in tests {
        let key = resolve_rel(root, p);
        if let Some(image) = by_key.get(key.as_str()) {
            let file = key.rsplit('/').next().unwrap_or(&key);
            out.push("test", stem(file), (*image).clone(), None);
        }
    }
}
