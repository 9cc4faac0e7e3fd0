//! Datasets `medserve export` wrote: a folder with a complete `manifest.json` is one dataset
//! whose items are the manifest's, each pointing at its byte ranges in a listed shard. Shards
//! missing from the listing, or listed with another size than recorded, are left out (their
//! items with them) and logged; an incomplete manifest (an export still running, or killed)
//! is not served.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::super::ids::slug;
use super::super::model::{Dataset, Item, Kind, Layout, Member, Processed, Split};
use super::sort_splits;
use crate::export::manifest::{FORMAT, MANIFEST, Manifest};
use crate::store::ObjectMeta;

/// Keys that may be an export's manifest.
pub fn manifest_keys(listing: &[ObjectMeta]) -> Vec<String> {
    listing
        .iter()
        .filter(|m| m.key == MANIFEST || m.key.ends_with(&format!("/{MANIFEST}")))
        .map(|m| m.key.clone())
        .collect()
}

/// The roots (`""` or ending in `/`) of the complete exports among the parsed manifests.
pub fn export_roots(exports: &HashMap<String, Manifest>) -> Vec<(String, &Manifest)> {
    let mut roots: Vec<(String, &Manifest)> = exports
        .iter()
        .filter(|(_, m)| m.format == FORMAT && m.complete)
        .map(|(k, m)| (k[..k.len() - MANIFEST.len()].to_string(), m))
        .collect();
    roots.sort_by(|a, b| a.0.cmp(&b.0));
    roots
}

/// The processed dataset at `root`.
pub fn build_processed(
    name: &str,
    root: &str,
    m: &Manifest,
    by_key: &HashMap<&str, &ObjectMeta>,
) -> Dataset {
    let kind = match m.dataset.kind.as_str() {
        "segmentation" => Kind::Segmentation,
        _ => Kind::Classification,
    };
    let mut splits = Vec::new();
    let mut shards = 0;
    for (split, sm) in &m.splits {
        let mut items: Vec<((Option<usize>, String), Item)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for shard in &sm.shards {
            let key = format!("{root}{}", shard.name);
            let Some(obj) = by_key.get(key.as_str()).filter(|o| o.size == shard.size) else {
                tracing::warn!(shard = %key, "an exported shard is missing or has another size than its manifest records; its items are not served");
                continue;
            };
            shards += 1;
            for it in &shard.items {
                if !seen.insert(it.id.clone()) {
                    continue;
                }
                let range = |r: [u64; 2]| r[0]..r[0].saturating_add(r[1]);
                let image = (it.image[1] > 0).then(|| range(it.image));
                let order = match kind {
                    Kind::Classification => (
                        it.class,
                        it.source.first().map(|o| o.key.clone()).unwrap_or_default(),
                    ),
                    Kind::Segmentation => (None, it.id.clone()),
                };
                items.push((
                    order,
                    Item {
                        id: it.id.clone(),
                        class: it.class,
                        subject: it.subject.clone(),
                        image: (*obj).clone(),
                        label: it.label.map(|_| (*obj).clone()),
                        member: Some(Member {
                            image,
                            label: it.label.map(range),
                        }),
                    },
                ));
            }
        }
        // The raw dataset's order (classification: class, then object key; segmentation: id),
        // so a plan over the export picks the items it picks over the raw dataset.
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let items: Vec<Item> = items.into_iter().map(|(_, it)| it).collect();
        let by_id: HashMap<String, usize> = items
            .iter()
            .enumerate()
            .map(|(i, it)| (it.id.clone(), i))
            .collect();
        if !items.is_empty() {
            splits.push(Split {
                name: slug(split),
                items,
                by_id,
            });
        }
    }
    sort_splits(&mut splits);
    Dataset {
        name: name.into(),
        kind,
        layout: Layout::WebDataset,
        root: root.into(),
        splits,
        classes: m.dataset.classes.clone(),
        labels: m.dataset.labels.clone(),
        info: BTreeMap::new(),
        processed: Some(Arc::new(Processed {
            source_name: m.dataset.name.clone(),
            source: m.dataset.source.clone(),
            params: m.chain.params.clone(),
            canonical: m.chain.canonical.clone(),
            medserve_version: m.medserve_version.clone(),
            shards,
        })),
    }
}
