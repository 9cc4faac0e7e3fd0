//! Turns one flat listing of keys into datasets. Pure: the caller fetches the listing and any
//! Decathlon `dataset.json` files; nothing here does I/O.
//!
//! Rules, in order (the first that claims a key wins):
//! 1. Junk is skipped: any segment starting with `.` (macOS `._*`, `.DS_Store`), `__MACOSX`.
//! 2. Configured datasets (`name` + `prefix`) claim every key under their prefix.
//! 3. A folder holding `imagesTr/`, `imagesTs/` or `dataset.json` is a Decathlon task.
//! 4. `<root>/<split>/<subject>/{img,image,label,seg,mask,...}.nii[.gz]` is a subject-folder
//!    segmentation set; without a recognised split folder, `<root>/<subject>/...` is split `all`.
//! 5. `<root>/<split>/<Class>/<file>.{png,jpg,jpeg}` is a classification set; without a
//!    recognised split folder, `<root>/<Class>/<file>` is split `all` (MONAI's MedNIST tarball).

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::ids::{slug, stem};
use super::model::{Dataset, Item, Kind, Layout, Snapshot, Split};
use crate::store::ObjectMeta;

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

/// Roots of Decathlon tasks: folders with `imagesTr/`/`imagesTs/`/`labelsTr/` or `dataset.json`.
fn decathlon_roots(keys: &[&ObjectMeta]) -> Vec<String> {
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

/// Builds datasets out of a listing. `jsons` holds the parsed `dataset.json` of Decathlon
/// roots, keyed by the json's object key; `fallback_name` names a dataset whose root is the
/// data root itself.
pub fn discover(
    listing: &[ObjectMeta],
    jsons: &HashMap<String, DecathlonJson>,
    file: &CatalogFile,
    fallback_name: &str,
) -> Snapshot {
    let keys: Vec<&ObjectMeta> = listing.iter().filter(|m| !is_junk(&m.key)).collect();
    let overrides: Vec<(String, String)> = file
        .datasets
        .iter()
        .map(|d| (norm_prefix(&d.prefix), d.name.clone()))
        .collect();
    let by_key: HashMap<&str, &ObjectMeta> = keys.iter().map(|m| (m.key.as_str(), *m)).collect();

    // Group by (root, name): a name comes from an override or from the root's path.
    struct Building {
        layout: Option<Layout>,
        mixed_layouts: bool,
        // split -> group -> (images, labels)
        splits: Groups,
    }
    let mut building: BTreeMap<(String, String), Building> = BTreeMap::new();
    let dec_roots = decathlon_roots(&keys);
    let mut unmatched = 0usize;

    for m in &keys {
        let ov = overrides
            .iter()
            .filter(|(p, _)| m.key.starts_with(p.as_str()))
            .max_by_key(|(p, _)| p.len());
        let placement = match ov {
            Some((prefix, _)) => {
                let rel = &m.key[prefix.len()..];
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
            None => place(&m.key, &dec_roots),
        };
        let Some(p) = placement else {
            if !m.key.ends_with("dataset.json") {
                unmatched += 1;
            }
            continue;
        };
        let name = match ov {
            Some((_, name)) => name.clone(),
            None => dataset_name(&p.root, fallback_name),
        };
        let b = building
            .entry((p.root.clone(), name))
            .or_insert_with(|| Building {
                layout: None,
                mixed_layouts: false,
                splits: BTreeMap::new(),
            });
        match b.layout {
            None => b.layout = Some(p.layout),
            Some(l) if l != p.layout => {
                // One root with both images and volumes: serve the first layout seen, count
                // the rest as unmatched rather than guess.
                b.mixed_layouts = true;
                unmatched += 1;
                continue;
            }
            _ => {}
        }
        let entry = b
            .splits
            .entry(p.split)
            .or_default()
            .entry(p.group)
            .or_default();
        if p.is_label {
            entry.1.push((*m).clone());
        } else {
            entry.0.push((*m).clone());
        }
    }

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
                build_decathlon(&name, &root, b.splits, json, &by_key)
            }
        };
        let mut unique = ds.name.clone();
        let mut n = 2;
        while datasets.contains_key(&unique) {
            unique = format!("{}-{n}", ds.name);
            n += 1;
        }
        datasets.insert(unique.clone(), Dataset { name: unique, ..ds });
    }
    Snapshot {
        datasets,
        objects_listed: keys.len(),
        objects_unmatched: unmatched,
    }
}

fn dataset_name(root: &str, fallback: &str) -> String {
    let r = root.trim_end_matches('/');
    if r.is_empty() {
        slug(fallback)
    } else {
        slug(&r.replace('/', "-"))
    }
}

fn unique_id(by_id: &HashMap<String, usize>, id: String) -> String {
    if !by_id.contains_key(&id) {
        return id;
    }
    (2..)
        .map(|n| format!("{id}~{n}"))
        .find(|c| !by_id.contains_key(c))
        .expect("an unused suffix exists")
}

fn sort_splits(splits: &mut [Split]) {
    splits.sort_by(|a, b| {
        split_rank(&a.name)
            .cmp(&split_rank(&b.name))
            .then(a.name.cmp(&b.name))
    });
}

fn build_classification(name: &str, root: &str, splits: Groups) -> Dataset {
    let classes: Vec<String> = splits
        .values()
        .flat_map(|g| g.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut out = Vec::new();
    for (split, groups) in splits {
        let mut items = Vec::new();
        let mut by_id = HashMap::new();
        for (class, (images, _)) in groups {
            let ci = classes.binary_search(&class).ok();
            let mut images = images;
            images.sort_by(|a, b| a.key.cmp(&b.key));
            for img in images {
                let file = img.key.rsplit('/').next().unwrap_or(&img.key);
                let id = unique_id(&by_id, format!("{}~{}", slug(&class), slug(stem(file))));
                by_id.insert(id.clone(), items.len());
                items.push(Item {
                    id,
                    class: ci,
                    subject: None,
                    image: img,
                    label: None,
                });
            }
        }
        out.push(Split {
            name: slug(&split),
            items,
            by_id,
        });
    }
    sort_splits(&mut out);
    Dataset {
        name: name.into(),
        kind: Kind::Classification,
        layout: Layout::ClassFolders,
        root: root.into(),
        splits: out,
        classes,
        labels: BTreeMap::new(),
        info: BTreeMap::new(),
    }
}

/// Prefers `.nii.gz` over `.nii`, then the shortest key, so a choice among duplicates is stable.
fn pick(mut v: Vec<ObjectMeta>) -> Option<ObjectMeta> {
    v.sort_by(|a, b| {
        let gz = |m: &ObjectMeta| !m.key.ends_with(".gz");
        gz(a)
            .cmp(&gz(b))
            .then(a.key.len().cmp(&b.key.len()))
            .then(a.key.cmp(&b.key))
    });
    v.into_iter().next()
}

fn build_subjects(name: &str, root: &str, splits: Groups) -> Dataset {
    let mut out = Vec::new();
    for (split, groups) in splits {
        let mut items = Vec::new();
        let mut by_id = HashMap::new();
        for (subject, (images, labels)) in groups {
            let Some(image) = pick(images) else { continue };
            let id = unique_id(&by_id, slug(&subject));
            by_id.insert(id.clone(), items.len());
            items.push(Item {
                id,
                class: None,
                subject: Some(subject),
                image,
                label: pick(labels),
            });
        }
        out.push(Split {
            name: slug(&split),
            items,
            by_id,
        });
    }
    out.retain(|s| !s.items.is_empty());
    sort_splits(&mut out);
    Dataset {
        name: name.into(),
        kind: Kind::Segmentation,
        layout: Layout::SubjectFolders,
        root: root.into(),
        splits: out,
        classes: vec![],
        labels: BTreeMap::new(),
        info: BTreeMap::new(),
    }
}

/// `./imagesTr/x.nii.gz` relative to the task root -> a key.
fn resolve_rel(root: &str, p: &str) -> String {
    format!("{root}{}", p.trim_start_matches("./"))
}

fn build_decathlon(
    name: &str,
    root: &str,
    splits: Groups,
    json: Option<&DecathlonJson>,
    by_key: &HashMap<&str, &ObjectMeta>,
) -> Dataset {
    let mut out: Vec<Split> = Vec::new();
    let mut push = |split: &str, subject: &str, image: ObjectMeta, label: Option<ObjectMeta>| {
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
        });
    };
    let mut labels = BTreeMap::new();
    let mut info = BTreeMap::new();
    match json {
        Some(j) if !j.training.is_empty() || !j.test.is_empty() => {
            labels = j.labels.clone();
            info = j.rest.clone();
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
                push("train", stem(file), (*image).clone(), label);
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
                    push("test", stem(file), (*image).clone(), None);
                }
            }
        }
        other => {
            if let Some(j) = other {
                labels = j.labels.clone();
                info = j.rest.clone();
            }
            // No usable dataset.json: pair imagesTr/x with labelsTr/x by file name.
            for (split, groups) in splits {
                for (subject, (images, ls)) in groups {
                    if let Some(image) = pick(images) {
                        push(&slug(&split), &subject, image, pick(ls));
                    }
                }
            }
        }
    }
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(keys: &[&str]) -> Vec<ObjectMeta> {
        keys.iter()
            .map(|k| ObjectMeta {
                key: k.to_string(),
                size: 1,
                version: "v".into(),
            })
            .collect()
    }

    fn run(keys: &[&str]) -> Snapshot {
        discover(
            &meta(keys),
            &HashMap::new(),
            &CatalogFile {
                discover: true,
                ..Default::default()
            },
            "data",
        )
    }

    #[test]
    fn classification_with_splits_and_junk() {
        let s = run(&[
            "medmnist/train/CXR/2.png",
            "medmnist/train/AbdomenCT/1.png",
            "medmnist/train/AbdomenCT/._1.png",
            "medmnist/.DS_Store",
            "medmnist/test/Hand/9.png",
            "medmnist/val/Hand/3.jpeg",
            "medmnist/train/notes.txt",
        ]);
        let d = &s.datasets["medmnist"];
        assert_eq!(d.kind, Kind::Classification);
        assert_eq!(d.classes, ["AbdomenCT", "CXR", "Hand"]);
        assert_eq!(d.split_names(), ["train", "val", "test"]);
        let train = d.split("train").unwrap();
        assert_eq!(train.items[0].id, "AbdomenCT~1");
        assert_eq!(train.items[0].class, Some(0));
        assert_eq!(train.items[1].id, "CXR~2");
        assert_eq!(train.class_counts(3), [1, 1, 0]);
        assert_eq!(s.objects_unmatched, 1);
    }

    #[test]
    fn seed_s3_layout_and_mednist_tarball() {
        let s = run(&[
            "classification/raw/train/CXR/1.png",
            "MedNIST/Hand/000001.jpeg",
            "MedNIST/HeadCT/000001.jpeg",
        ]);
        assert_eq!(s.datasets["classification-raw"].split_names(), ["train"]);
        let m = &s.datasets["MedNIST"];
        assert_eq!(m.split_names(), ["all"]);
        assert_eq!(m.split("all").unwrap().items[1].id, "HeadCT~000001");
    }

    #[test]
    fn subject_folders_and_decathlon() {
        let s = run(&[
            "segmentation/train/subject_001/img.nii.gz",
            "segmentation/train/subject_001/label.nii.gz",
            "segmentation/valid/subject_002/img.nii.gz",
            "Task09_Spleen/dataset.json",
            "Task09_Spleen/imagesTr/spleen_2.nii.gz",
            "Task09_Spleen/imagesTr/._spleen_2.nii.gz",
            "Task09_Spleen/labelsTr/spleen_2.nii.gz",
            "Task09_Spleen/imagesTs/spleen_1.nii.gz",
        ]);
        let seg = &s.datasets["segmentation"];
        assert_eq!(seg.layout, Layout::SubjectFolders);
        assert_eq!(seg.split_names(), ["train", "valid"]);
        let sub = seg.split("train").unwrap().item("subject_001").unwrap();
        assert!(sub.label.is_some());
        assert!(seg.split("valid").unwrap().items[0].label.is_none());
        let task = &s.datasets["Task09_Spleen"];
        assert_eq!(task.layout, Layout::Decathlon);
        assert_eq!(task.split_names(), ["train", "test"]);
        let tr = task.split("train").unwrap().item("spleen_2").unwrap();
        assert_eq!(
            tr.label.as_ref().unwrap().key,
            "Task09_Spleen/labelsTr/spleen_2.nii.gz"
        );
    }

    #[test]
    fn decathlon_json_drives_items_and_labels() {
        let keys = meta(&[
            "Task04/dataset.json",
            "Task04/imagesTr/a.nii.gz",
            "Task04/labelsTr/a.nii.gz",
            "Task04/imagesTr/b.nii.gz",
            "Task04/imagesTs/c.nii.gz",
        ]);
        let json: DecathlonJson = serde_json::from_str(
            r#"{"name":"Hippocampus","labels":{"0":"background","1":"Anterior"},
                "training":[{"image":"./imagesTr/a.nii.gz","label":"./labelsTr/a.nii.gz"}],
                "test":["./imagesTs/c.nii.gz"]}"#,
        )
        .unwrap();
        let jsons = HashMap::from([("Task04/dataset.json".to_string(), json)]);
        let file = CatalogFile {
            discover: true,
            ..Default::default()
        };
        assert_eq!(decathlon_json_keys(&keys, &file), ["Task04/dataset.json"]);
        let s = discover(&keys, &jsons, &file, "data");
        let d = &s.datasets["Task04"];
        assert_eq!(d.labels["1"], "Anterior");
        assert_eq!(d.info["name"], "Hippocampus");
        // b is not in dataset.json's training list, so it is not served.
        assert_eq!(d.split("train").unwrap().items.len(), 1);
        assert_eq!(d.split("test").unwrap().items[0].id, "c");
    }

    #[test]
    fn decathlon_and_nnunet_label_maps_both_name_values() {
        let names = |text: &str| serde_json::from_str::<DecathlonJson>(text).unwrap().labels;
        let want: BTreeMap<String, String> = [("0", "background"), ("1", "liver")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        assert_eq!(names(r#"{"labels":{"0":"background","01":"liver"}}"#), want);
        assert_eq!(
            names(r#"{"labels":{"background":0,"liver":1,"tumour region":[1,2],"x":300}}"#),
            want
        );
        assert!(names(r#"{"labels":null}"#).is_empty());
        assert!(names(r#"{"labels":["background","liver"]}"#).is_empty());
        assert!(names(r#"{"name":"only a name"}"#).is_empty());
    }

    #[test]
    fn overrides_name_a_prefix_and_can_disable_discovery() {
        let keys = meta(&[
            "classification/raw/train/CXR/1.png",
            "other/train/CXR/1.png",
        ]);
        let file = CatalogFile {
            datasets: vec![DatasetOverride {
                name: "mednist".into(),
                prefix: "classification/raw".into(),
            }],
            discover: false,
        };
        let s = discover(&keys, &HashMap::new(), &file, "data");
        assert_eq!(s.datasets.keys().collect::<Vec<_>>(), ["mednist"]);
        assert_eq!(s.datasets["mednist"].root, "classification/raw/");
    }

    #[test]
    fn data_root_that_is_itself_a_dataset_uses_the_fallback_name() {
        let s = run(&["train/CXR/1.png"]);
        assert_eq!(s.datasets.keys().collect::<Vec<_>>(), ["data"]);
    }
}
