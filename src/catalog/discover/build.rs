//! Classification and subject-folder datasets out of grouped keys, and the helpers every
//! layout shares (stable unique ids, split order, the choice among duplicate volumes).

use std::collections::{BTreeMap, HashMap};

use super::Groups;
use super::split_rank;
use crate::catalog::ids::{slug, stem};
use crate::catalog::model::{Dataset, Item, Kind, Layout, Split};
use crate::store::ObjectMeta;

pub(super) fn unique_id(by_id: &HashMap<String, usize>, id: String) -> String {
    if !by_id.contains_key(&id) {
        return id;
    }
    (2..)
        .map(|n| format!("{id}~{n}"))
        .find(|c| !by_id.contains_key(c))
        .expect("an unused suffix exists")
}

pub(super) fn sort_splits(splits: &mut [Split]) {
    splits.sort_by(|a, b| {
        split_rank(&a.name)
            .cmp(&split_rank(&b.name))
            .then(a.name.cmp(&b.name))
    });
}

pub(super) fn build_classification(name: &str, root: &str, splits: Groups) -> Dataset {
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
                    member: None,
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
        processed: None,
    }
}

/// Prefers `.nii.gz` over `.nii`, then the shortest key, so a choice among duplicates is stable.
pub(super) fn pick(mut v: Vec<ObjectMeta>) -> Option<ObjectMeta> {
    v.sort_by(|a, b| {
        let gz = |m: &ObjectMeta| !m.key.ends_with(".gz");
        gz(a)
            .cmp(&gz(b))
            .then(a.key.len().cmp(&b.key.len()))
            .then(a.key.cmp(&b.key))
    });
    v.into_iter().next()
}

pub(super) fn build_subjects(name: &str, root: &str, splits: Groups) -> Dataset {
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
                member: None,
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
        processed: None,
    }
}
