//! `medserve export`: preprocess once. Every item of a dataset goes through a chain (the HTTP
//! routes' parameters and code: each array equals the `.npy` the image or volume route
//! answers) and is written into WebDataset tar shards of about `--shard-mb`, one folder per
//! split, with `manifest.json` at the root (`manifest.rs`).
//!
//! - Items are written in the batch plan's shuffled order (seed 0 unless `--seed`), so every
//!   shard holds a mix of classes, as WebDataset's shard-then-buffer shuffling wants.
//! - The items a shard holds are fixed before anything is computed (`items_per_shard` from the
//!   first item's size), and shards are byte-for-byte reproducible (`shard.rs`). A rerun keeps a
//!   stored shard whose manifest entry names the same items from the same object versions and
//!   whose bytes still hash to the recorded SHA-256; everything else is written again.
//! - A shard is visible under its name only once complete (`ObjectStore::put`: temporary name
//!   and rename on disk, single PUT or multipart upload on S3). The manifest is rewritten after
//!   every stored shard, `complete: false` until the last.
//! - One shard is stored while the next is computed; items are computed in parallel through
//!   the pipeline's CPU pool (all cores unless `--cpu-workers`).
//!
//! Random transforms and patches are refused: those stay on the fly.

mod cli;
mod items;
pub mod manifest;
mod progress;
pub mod shard;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use crate::catalog::{CatalogFile, Dataset, Item, Kind};
use crate::config::Limits;
use crate::pipeline::Pipeline;
use crate::pipeline::batch::{ORDER_ALGORITHM, order};
use crate::store::{ObjectStore, StoreError};
pub use cli::run as run_cli;
use items::{ItemChain, parse_item_chain, pick_dataset, render, sources_of};
pub use items::{PARAMS_2D, PARAMS_3D};
use manifest::{
    ChainInfo, FORMAT, FORMAT_VERSION, MANIFEST, Manifest, OrderInfo, ShardEntry, SourceDataset,
    SplitManifest,
};
use progress::Progress;
use shard::{ShardBuilder, member_bytes};

/// What to export and how.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The dataset's name; `None` when the source holds exactly one.
    pub dataset: Option<String>,
    /// Splits to export; empty: all.
    pub splits: Vec<String>,
    /// The chain's parameters, as `name=value` pairs of the HTTP query.
    pub params: Vec<(String, String)>,
    pub shard_bytes: u64,
    pub seed: u64,
    pub dry_run: bool,
    /// Overwrite a complete export made another way.
    pub replace: bool,
    pub cpu_workers: usize,
    pub cache_bytes: u64,
    /// A progress bar (a terminal) or plain lines.
    pub bar: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub items: usize,
    pub items_written: usize,
    pub shards_written: usize,
    pub shards_kept: usize,
    pub bytes_written: u64,
    pub seconds: f64,
    pub manifest: Option<Manifest>,
}

/// A shard to store: where, which items.
struct Planned<'a> {
    split: String,
    name: String,
    items: Vec<&'a Item>,
}

async fn read_manifest(dest: &dyn ObjectStore) -> anyhow::Result<Option<Manifest>> {
    match dest.get(MANIFEST.into(), 256 << 20).await {
        Ok((_, bytes)) => match serde_json::from_slice::<Manifest>(&bytes) {
            Ok(m) if m.format == FORMAT => Ok(Some(m)),
            _ => {
                tracing::warn!("ignoring an unreadable {MANIFEST} at the destination");
                Ok(None)
            }
        },
        Err(StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(anyhow!("reading the destination's {MANIFEST}: {e}")),
    }
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A stored shard whose entry names these items and whose bytes still hash as recorded.
async fn still_good(
    dest: &dyn ObjectStore,
    old: &ShardEntry,
    planned: &[&Item],
    chain: &ItemChain,
) -> bool {
    let same_items = old.items.len() == planned.len()
        && old
            .items
            .iter()
            .zip(planned)
            .all(|(m, it)| m.id == it.id && m.source == sources_of(it, chain));
    if !same_items || old.sha256.is_empty() {
        return false;
    }
    match dest
        .get((&old.name).into(), old.size.saturating_add(1))
        .await
    {
        Ok((_, bytes)) => {
            let bytes = bytes.to_vec();
            let hash = tokio::task::spawn_blocking(move || sha256_hex(&bytes)).await;
            hash.is_ok_and(|h| h == old.sha256)
        }
        Err(_) => false,
    }
}

async fn write_manifest(dest: &dyn ObjectStore, m: &Manifest) -> anyhow::Result<()> {
    let body = serde_json::to_vec_pretty(m)?;
    dest.put(MANIFEST, Bytes::from(body))
        .await
        .map_err(|e| anyhow!("writing {MANIFEST}: {e}"))?;
    Ok(())
}

/// Exports one dataset of `source` into `dest` (`None`: a destination that does not exist
/// yet, allowed for a dry run). Plain progress and the dry run's plan go to stderr/stdout.
pub async fn export(
    source: Arc<dyn ObjectStore>,
    dest: Option<Arc<dyn ObjectStore>>,
    opts: &ExportOptions,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let state = crate::state_for_store(
        source.clone(),
        Limits::default(),
        opts.cache_bytes,
        Duration::from_secs(24 * 3600),
        CatalogFile {
            datasets: vec![],
            discover: true,
        },
        opts.cpu_workers,
    );
    let snap = state
        .catalog
        .snapshot()
        .await
        .context("listing the source")?;
    let ds = pick_dataset(&snap, opts.dataset.as_deref())?;
    let chain = parse_item_chain(ds, &opts.params)?;
    let params = opts
        .params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    for s in &opts.splits {
        if ds.split(s).is_none() {
            bail!(
                "--splits {s}: dataset '{}' has splits {}",
                ds.name,
                ds.split_names().join(", ")
            );
        }
    }
    let splits: Vec<_> = ds
        .splits
        .iter()
        .filter(|s| opts.splits.is_empty() || opts.splits.contains(&s.name))
        .filter(|s| !s.items.is_empty())
        .collect();
    let ordered: Vec<(&str, Vec<&Item>)> = splits
        .iter()
        .map(|s| {
            let o = order(Some(opts.seed), 0, s.items.len());
            (
                s.name.as_str(),
                o.iter().map(|&i| &s.items[i as usize]).collect(),
            )
        })
        .collect();
    let Some((first_split, first)) = ordered
        .iter()
        .find_map(|(s, v)| v.first().map(|i| (*s, *i)))
    else {
        bail!("dataset '{}' has no items to export", ds.name);
    };
    let pipeline = &state.pipeline;
    let one = render(pipeline, ds, first_split, first, &chain, &params)
        .await
        .with_context(|| format!("item '{}' of split {first_split}", first.id))?;
    let per_item: u64 = one.members.iter().map(|(_, b)| member_bytes(b.len())).sum();
    let items_per_shard = (opts.shard_bytes / per_item.max(1)).max(1) as usize;

    let mut manifest = Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        medserve_version: env!("CARGO_PKG_VERSION").into(),
        complete: false,
        dataset: SourceDataset {
            name: ds.name.clone(),
            kind: match ds.kind {
                Kind::Classification => "classification",
                Kind::Segmentation => "segmentation",
            }
            .into(),
            layout: serde_json::to_value(ds.layout)?
                .as_str()
                .unwrap_or_default()
                .into(),
            source: format!("{}{}", source.public_location(), ds.root),
            classes: ds.classes.clone(),
            labels: ds.labels.clone(),
        },
        chain: ChainInfo {
            params: params.clone(),
            canonical: chain.canonical(),
            route: match chain {
                ItemChain::Image(_) => "image",
                ItemChain::Volume { .. } => "volume",
            }
            .into(),
            members: chain.members(ds),
        },
        order: OrderInfo {
            algorithm: ORDER_ALGORITHM.into(),
            seed: opts.seed,
        },
        items_per_shard,
        splits: BTreeMap::new(),
    };
    let mut planned = Vec::new();
    for (split, items) in &ordered {
        let mut classes = BTreeMap::new();
        for it in items {
            if let Some(c) = it.class.and_then(|c| ds.classes.get(c)) {
                *classes.entry(c.clone()).or_insert(0) += 1;
            }
        }
        manifest.splits.insert(
            split.to_string(),
            SplitManifest {
                items: items.len(),
                classes,
                shards: vec![],
            },
        );
        for (k, chunk) in items.chunks(items_per_shard).enumerate() {
            planned.push(Planned {
                split: split.to_string(),
                name: format!("{split}/{split}-{k:06}.tar"),
                items: chunk.to_vec(),
            });
        }
    }

    // What a previous run left.
    let old = match &dest {
        Some(d) => read_manifest(d.as_ref()).await?,
        None => None,
    };
    let old = match old {
        Some(o) if o.same_plan(&manifest) => Some(o),
        Some(o) if o.complete && !opts.replace => bail!(
            "the destination holds a complete export of '{}' made with `{}` ({} items per shard, \
             order seed {}); pass --replace to overwrite it",
            o.dataset.name,
            o.chain.params,
            o.items_per_shard,
            o.order.seed
        ),
        _ => None,
    };
    let mut to_write = Vec::new();
    for p in planned {
        let kept = match (&old, &dest) {
            (Some(o), Some(d)) => {
                let entry = o
                    .splits
                    .get(&p.split)
                    .and_then(|s| s.shards.iter().find(|e| e.name == p.name));
                match entry {
                    Some(e) if still_good(d.as_ref(), e, &p.items, &chain).await => Some(e.clone()),
                    _ => None,
                }
            }
            _ => None,
        };
        match kept {
            Some(e) => manifest
                .splits
                .get_mut(&p.split)
                .expect("planned split")
                .shards
                .push(e),
            None => to_write.push(p),
        }
    }
    let kept = manifest
        .splits
        .values()
        .map(|s| s.shards.len())
        .sum::<usize>();
    let mut summary = Summary {
        items: manifest.item_count(),
        shards_kept: kept,
        ..Default::default()
    };

    if opts.dry_run || dest.is_none() {
        print_plan(&manifest, &to_write, per_item, opts);
        summary.seconds = started.elapsed().as_secs_f64();
        summary.manifest = Some(manifest);
        return Ok(summary);
    }
    let dest = dest.expect("checked above");
    let total_items: usize = to_write.iter().map(|p| p.items.len()).sum();
    let progress = Progress::new(opts.bar, total_items, to_write.len(), kept);

    // The store writes one shard while the next is computed.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, ShardEntry, Bytes)>(1);
    let uploader = {
        let dest = dest.clone();
        let mut manifest = manifest.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut written = (0usize, 0u64);
            while let Some((split, entry, body)) = rx.recv().await {
                dest.put(&entry.name, body)
                    .await
                    .map_err(|e| anyhow!("storing {}: {e}", entry.name))?;
                written.0 += 1;
                written.1 += entry.size;
                progress.stored(&entry);
                manifest
                    .splits
                    .get_mut(&split)
                    .expect("planned")
                    .shards
                    .push(entry);
                write_manifest(dest.as_ref(), &manifest).await?;
            }
            anyhow::Ok((manifest, written))
        })
    };
    let in_flight = (pipeline.pool().workers() * 2).max(2);
    let mut failed = None;
    for p in &to_write {
        let built = build_shard(pipeline, ds, p, &chain, &params, in_flight, &progress).await;
        match built {
            Ok((entry, body)) => {
                if tx.send((p.split.clone(), entry, body)).await.is_err() {
                    break; // the uploader failed: its error is reported below
                }
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let stored = uploader.await.map_err(|e| anyhow!("storing shards: {e}"))?;
    progress.finish();
    if let Some(e) = failed {
        return Err(e);
    }
    let (mut manifest, (shards, bytes)) = stored?;
    for s in manifest.splits.values_mut() {
        s.shards.sort_by(|a, b| a.name.cmp(&b.name));
    }
    manifest.complete = true;
    write_manifest(dest.as_ref(), &manifest).await?;
    summary.items_written = total_items;
    summary.shards_written = shards;
    summary.bytes_written = bytes;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.manifest = Some(manifest);
    Ok(summary)
}

/// One shard's items computed (in parallel, kept in order) and appended to a tar.
async fn build_shard(
    pipeline: &Pipeline,
    ds: &Dataset,
    p: &Planned<'_>,
    chain: &ItemChain,
    params: &str,
    in_flight: usize,
    progress: &Progress,
) -> anyhow::Result<(ShardEntry, Bytes)> {
    let mut rendered = futures::stream::iter(p.items.iter().copied())
        .map(|it| async move {
            render(pipeline, ds, &p.split, it, chain, params)
                .await
                .with_context(|| format!("item '{}' of split {}", it.id, p.split))
        })
        .buffered(in_flight);
    let mut tar = ShardBuilder::new();
    let mut items = Vec::with_capacity(p.items.len());
    while let Some(r) = rendered.try_next().await? {
        let mut entry = r.entry;
        for (suffix, body) in &r.members {
            let range = tar.append(&format!("{}.{suffix}", entry.key), body)?;
            match *suffix {
                "image.npy" => entry.image = range,
                "label.npy" => entry.label = Some(range),
                _ => {}
            }
            progress.bytes(body.len() as u64);
        }
        progress.item();
        items.push(entry);
    }
    let body = tar.finish()?;
    let (body, sha256) = tokio::task::spawn_blocking(move || {
        let h = sha256_hex(&body);
        (body, h)
    })
    .await?;
    let entry = ShardEntry {
        name: p.name.clone(),
        size: body.len() as u64,
        sha256,
        items,
    };
    Ok((entry, Bytes::from(body)))
}

fn print_plan(m: &Manifest, to_write: &[Planned<'_>], per_item: u64, opts: &ExportOptions) {
    println!(
        "export of dataset '{}' ({}, {} items) from {}",
        m.dataset.name,
        m.dataset.kind,
        m.item_count(),
        m.dataset.source
    );
    println!(
        "chain: {}  ->  {}",
        if m.chain.params.is_empty() {
            "(defaults)"
        } else {
            &m.chain.params
        },
        m.chain.canonical
    );
    println!(
        "{} items per shard (one item takes {per_item} bytes in a shard; --shard-mb {})",
        m.items_per_shard,
        opts.shard_bytes >> 20
    );
    for s in m.splits.values().flat_map(|s| &s.shards) {
        println!(
            "  keep   {}  ({} items, {} bytes, checksum matches)",
            s.name,
            s.items.len(),
            s.size
        );
    }
    for p in to_write {
        println!(
            "  write  {}  ({} items, about {} bytes)",
            p.name,
            p.items.len(),
            p.items.len() as u64 * per_item + 1024
        );
    }
    println!("  write  {MANIFEST}");
    if opts.dry_run {
        println!("dry run: nothing was written");
    }
}
