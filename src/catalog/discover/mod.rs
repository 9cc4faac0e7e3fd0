//! Turns one flat listing of keys into datasets. Pure: the caller fetches the listing and any
//! Decathlon `dataset.json` files; nothing here does I/O.
//!
//! Rules, in order (the first that claims a key wins):
//! 1. Junk is skipped: any segment starting with `.` (macOS `._*`, `.DS_Store`), `__MACOSX`;
//!    so is `<area>/artifacts/` of the workshop's layout (`naming.rs`).
//! 2. Configured datasets (`name` + `prefix`) claim every key under their prefix.
//! 3. A folder holding `imagesTr/`, `imagesTs/` or `dataset.json` is a Decathlon task.
//! 4. `<root>/<split>/<subject>/{img,image,label,seg,mask,...}.nii[.gz]` is a subject-folder
//!    segmentation set; without a recognised split folder, `<root>/<subject>/...` is split `all`.
//! 5. `<root>/<split>/<Class>/<file>.{png,jpg,jpeg}` is a classification set; without a
//!    recognised split folder, `<root>/<Class>/<file>` is split `all` (MONAI's MedNIST tarball).
//!
//! Before all of these, a folder holding a complete `manifest.json` of `medserve export` is a
//! processed dataset and claims every key under it (`processed.rs`).
//!
//! Names come from the root's path (`naming.rs`): `<area>/raw/` and `<area>/processed/<name>/`
//! of the workshop's layout are named after the area and the export, and a root ending in a
//! date (`.../2026-11-27/`, `mednist@2026-11-27/`) is that version of a dataset, served as
//! `<name>@<date>`; [`Snapshot::newest`] maps each versioned name to its newest version.
//!
//! `decathlon.rs` reads Decathlon tasks (`dataset.json`, `imagesTr`/`labelsTr`/`imagesTs`);
//! `build.rs` turns grouped keys into classification and subject-folder datasets.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::ids::stem;
use super::model::{Dataset, Layout, Snapshot};
use crate::export::manifest::Manifest;
use crate::store::ObjectMeta;

mod build;
mod decathlon;
mod naming;
mod processed;
#[cfg(test)]
mod tests;

use build::{build_classification, build_subjects, sort_splits};
pub use decathlon::{DecathlonJson, DecathlonPair, DecathlonTest, decathlon_json_keys};
use decathlon::{build_decathlon, decathlon_roots};
use naming::Areas;
pub use naming::is_version;
pub use processed::manifest_keys;
use processed::{build_processed, export_roots};

/// split -> group (class or subject) -> (image objects, mask objects).
type Groups = BTreeMap<String, BTreeMap<String, (Vec<ObjectMeta>, Vec<ObjectMeta>)>>;

/// Folder names taken to be splits.
pub const SPLIT_NAMES: &[&str] = &[
    "train",
    "training",
    "val",
    "valid",
    "validation",
    "test",
    "testing",
    "dev",
    "holdout",
    "all",
];

/// File stems of a subject folder's image volume.
const IMAGE_STEMS: &[&str] = &["img", "image", "vol", "volume", "ct", "mri", "scan"];
/// File stems of a subject folder's mask volume.
const LABEL_STEMS: &[&str] = &["label", "labels", "seg", "segmentation", "mask", "gt"];

/// A dataset named in the optional catalog file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DatasetOverride {
    /// The name to serve it under (URL-safe).
    pub name: String,
    /// Key prefix of its root, relative to the data root.
    pub prefix: String,
}

/// The optional catalog file (`--catalog FILE`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    /// Datasets to name explicitly.
    #[serde(default)]
    pub datasets: Vec<DatasetOverride>,
    /// Whether keys outside the named prefixes are auto-discovered too (default true).
    #[serde(default = "yes")]
    pub discover: bool,
}

fn yes() -> bool {
    true
}

fn is_junk(key: &str) -> bool {
    key.split('/')
        .any(|s| s.starts_with('.') || s == "__MACOSX" || s == "Thumbs.db" || s == "desktop.ini")
}

/// True for the 2D formats we decode.
pub fn is_2d_image(file: &str) -> bool {
    let f = file.to_ascii_lowercase();
    f.ends_with(".png") || f.ends_with(".jpg") || f.ends_with(".jpeg")
}

/// True for NIfTI files.
pub fn is_nifti(file: &str) -> bool {
    let f = file.to_ascii_lowercase();
    f.ends_with(".nii") || f.ends_with(".nii.gz")
}

fn is_split(name: &str) -> bool {
    SPLIT_NAMES.contains(&name.to_ascii_lowercase().as_str())
}

fn split_rank(name: &str) -> u8 {
    match name.to_ascii_lowercase().as_str() {
        "train" | "training" => 0,
        "val" | "valid" | "validation" | "dev" => 1,
        "test" | "testing" | "holdout" => 2,
        _ => 3,
    }
}

fn norm_prefix(p: &str) -> String {
    let p = p.trim_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

/// Where one key belongs.
struct Placement {
    root: String,
    layout: Layout,
    split: String,
    /// Class name, or subject name.
    group: String,
    /// Whether the key is a mask (segmentation).
    is_label: bool,
}

/// Places a key relative to an already-known Decathlon root set, else by rules 4 and 5.
fn place(key: &str, decathlon_roots: &[String]) -> Option<Placement> {
    for root in decathlon_roots {
        if let Some(rel) = key.strip_prefix(root.as_str()) {
            let segs: Vec<&str> = rel.split('/').collect();
            if segs.len() == 2 && is_nifti(segs[1]) {
                let (split, is_label) = match segs[0] {
                    "imagesTr" => ("train", false),
                    "labelsTr" => ("train", true),
                    "imagesTs" => ("test", false),
                    "labelsTs" => ("test", true),
                    _ => return None,
                };
                return Some(Placement {
                    root: root.clone(),
                    layout: Layout::Decathlon,
                    split: split.into(),
                    group: stem(segs[1]).into(),
                    is_label,
                });
            }
            return None;
        }
    }
    let segs: Vec<&str> = key.split('/').collect();
    let n = segs.len();
    let file = segs[n - 1];
    let (root_segs, split, group) = if n >= 3 && is_split(segs[n - 3]) {
        (&segs[..n - 3], segs[n - 3].to_string(), segs[n - 2])
    } else if n >= 2 {
        (&segs[..n - 2], "all".to_string(), segs[n - 2])
    } else {
        return None;
    };
    let root = if root_segs.is_empty() {
        String::new()
    } else {
        format!("{}/", root_segs.join("/"))
    };
    if is_nifti(file) {
        let s = stem(file).to_ascii_lowercase();
        let is_label = LABEL_STEMS.contains(&s.as_str());
        if !is_label && !IMAGE_STEMS.contains(&s.as_str()) {
            return None;
        }
        return Some(Placement {
            root,
            layout: Layout::SubjectFolders,
            split,
            group: group.into(),
            is_label,
        });
    }
    if is_2d_image(file) {
        return Some(Placement {
            root,
            layout: Layout::ClassFolders,
            split,
            group: group.into(),
            is_label: false,
        });
    }
    None
}

/// A dataset being assembled from the keys placed in it.
#[derive(Default)]
struct Building {
    layout: Option<Layout>,
    mixed_layouts: bool,
    splits: Groups,
}

impl Building {
    /// Adds a placed key; `false` when its layout is not the dataset's: one root with both
    /// images and volumes serves the first layout seen and counts the rest as unmatched,
    /// rather than guess.
    fn add(&mut self, p: Placement, m: &ObjectMeta) -> bool {
        match self.layout {
            None => self.layout = Some(p.layout),
            Some(l) if l != p.layout => {
                self.mixed_layouts = true;
                return false;
            }
            _ => {}
        }
        let entry = self
            .splits
            .entry(p.split)
            .or_default()
            .entry(p.group)
            .or_default();
        if p.is_label {
            entry.1.push(m.clone());
        } else {
            entry.0.push(m.clone());
        }
        true
    }
}

/// Builds datasets out of a listing. `jsons` holds the parsed `dataset.json` of Decathlon
/// roots, keyed by the json's object key; `fallback_name` names a dataset whose root is the
/// data root itself.
pub fn discover(
    listing: &[ObjectMeta],
    jsons: &HashMap<String, DecathlonJson>,
    exports: &HashMap<String, Manifest>,
    file: &CatalogFile,
    fallback_name: &str,
) -> Snapshot {
    let exports = export_roots(exports);
    let areas = Areas::find(listing.iter().filter(|m| !is_junk(&m.key)));
    let keys: Vec<&ObjectMeta> = listing
        .iter()
        .filter(|m| !is_junk(&m.key) && !areas.is_artifact(&m.key))
        .collect();
    let by_key: HashMap<&str, &ObjectMeta> = keys.iter().map(|m| (m.key.as_str(), *m)).collect();
    let raw: Vec<&ObjectMeta> = keys
        .iter()
        .copied()
        .filter(|m| {
            !exports
                .iter()
                .any(|(root, _)| m.key.starts_with(root.as_str()))
        })
        .collect();
    let (building, unmatched) = group(&raw, file, &areas, fallback_name);
    let mut datasets = assemble(building, jsons, &by_key);
    for (root, m) in &exports {
        let name = areas.naming(root, fallback_name).full();
        let ds = build_processed(&name, root, m, &by_key);
        insert_unique(&mut datasets, ds);
    }
    let newest = newest_versions(&datasets);
    Snapshot {
        datasets,
        newest,
        objects_listed: keys.len(),
        objects_unmatched: unmatched,
    }
}

/// Each versioned dataset's base name -> the name of its newest version. A dataset served
/// under the bare base name itself (an unversioned folder of that name) keeps the name.
fn newest_versions(datasets: &BTreeMap<String, Dataset>) -> BTreeMap<String, String> {
    let mut newest: BTreeMap<String, String> = BTreeMap::new();
    // Names sort by base, then version, so the last one seen is the newest.
    for ds in datasets.values() {
        if ds.version().is_some() {
            newest.insert(ds.base().to_string(), ds.name.clone());
        }
    }
    newest.retain(|base, _| {
        let shadowed = datasets.contains_key(base);
        if shadowed {
            tracing::warn!(dataset = %base, "an unversioned dataset has the name of a versioned one: the bare name serves the unversioned one; versions stay reachable as name@version");
        }
        !shadowed
    });
    newest
}

/// Places every key in a dataset, grouped by `(root, name)` (a name comes from an override or
/// from the root's path); also returns how many keys matched no layout.
fn group(
    keys: &[&ObjectMeta],
    file: &CatalogFile,
    areas: &Areas,
    fallback_name: &str,
) -> (BTreeMap<(String, String), Building>, usize) {
    let overrides: Vec<(String, String)> = file
        .datasets
        .iter()
        .map(|d| (norm_prefix(&d.prefix), d.name.clone()))
        .collect();
    let dec_roots = decathlon_roots(keys);
    let mut building: BTreeMap<(String, String), Building> = BTreeMap::new();
    let mut unmatched = 0usize;
    for m in keys {
        let ov = overrides
            .iter()
            .filter(|(p, _)| m.key.starts_with(p.as_str()))
            .max_by_key(|(p, _)| p.len());
        let Some(p) = place_key(&m.key, ov, &dec_roots, file) else {
            if !m.key.ends_with("dataset.json") {
                unmatched += 1;
            }
            continue;
        };
        let name = match ov {
            Some((_, name)) => name.clone(),
            None => areas.naming(&p.root, fallback_name).full(),
        };
        let b = building.entry((p.root.clone(), name)).or_default();
        if !b.add(p, m) {
            unmatched += 1;
        }
    }
    (building, unmatched)
}

/// Where a key belongs: under a configured dataset's prefix (whose root it must be), else by
/// the discovery rules when discovery is on.
fn place_key(
    key: &str,
    ov: Option<&(String, String)>,
    dec_roots: &[String],
    file: &CatalogFile,
) -> Option<Placement> {
    match ov {
        Some((prefix, _)) => {
            let rel = &key[prefix.len()..];
            let rel_roots: Vec<String> = dec_roots
                .iter()
                .filter_map(|r| r.strip_prefix(prefix.as_str()).map(String::from))
                .filter(|r| r.is_empty())
                .collect();
            place(rel, &rel_roots)
                .filter(|p| p.root.is_empty())
                .map(|mut p| {
                    p.root = prefix.clone();
                    p
                })
        }
        None if !file.discover => None,
        None => place(key, dec_roots),
    }
}

/// The datasets of the grouped keys, each under a unique name.
fn assemble(
    building: BTreeMap<(String, String), Building>,
    jsons: &HashMap<String, DecathlonJson>,
    by_key: &HashMap<&str, &ObjectMeta>,
) -> BTreeMap<String, Dataset> {
    let mut datasets: BTreeMap<String, Dataset> = BTreeMap::new();
    for ((root, name), b) in building {
        let Some(layout) = b.layout else { continue };
        if b.mixed_layouts {
            tracing::warn!(dataset = %name, "dataset root mixes 2D images and volumes; serving {layout:?} only");
        }
        let ds = match layout {
            Layout::ClassFolders => build_classification(&name, &root, b.splits),
            Layout::SubjectFolders => build_subjects(&name, &root, b.splits),
            Layout::Decathlon => {
                let json = jsons.get(&format!("{root}dataset.json"));
                build_decathlon(&name, &root, b.splits, json, by_key)
            }
            // Never placed by the rules: built from manifests in `discover`.
            Layout::WebDataset => continue,
        };
        insert_unique(&mut datasets, ds);
    }
    datasets
}

/// Inserts `ds` under its name, or `<name>-2`, `-3`, ... when that is taken.
fn insert_unique(datasets: &mut BTreeMap<String, Dataset>, ds: Dataset) {
    let mut unique = ds.name.clone();
    let mut n = 2;
    while datasets.contains_key(&unique) {
        unique = format!("{}-{n}", ds.name);
        n += 1;
    }
    datasets.insert(unique.clone(), Dataset { name: unique, ..ds });
}
