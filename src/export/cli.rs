//! `medserve export`'s flags turned into stores and [`ExportOptions`].

use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::anyhow;

use super::{ExportOptions, Summary, export};
use crate::config::{DataRoot, ExportArgs};
use crate::store::{LocalStore, ObjectStore};

/// Runs `medserve export` as its flags say.
pub async fn run(a: &ExportArgs) -> anyhow::Result<Summary> {
    let params = a
        .params
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| {
                    anyhow!("chain parameter '{p}': expected NAME=VALUE, e.g. size=64,64")
                })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if a.shard_mb == 0 {
        return Err(anyhow!("--shard-mb: must be at least 1"));
    }
    let from = DataRoot::parse(&a.data).map_err(|e| anyhow!("{e}"))?;
    let to = DataRoot::parse(&a.to).map_err(|e| anyhow!("{}", e.replace("--data", "--to")))?;
    if let DataRoot::Local(d) = &from
        && !d.is_dir()
    {
        return Err(anyhow!("--data {}: not a folder", d.display()));
    }
    let source = crate::open_root(&from, a.s3_endpoint.clone(), a.s3_region.clone()).await?;
    let dest: Option<Arc<dyn ObjectStore>> = match &to {
        DataRoot::Local(d) if a.dry_run && !d.exists() => None,
        DataRoot::Local(d) => {
            std::fs::create_dir_all(d).map_err(|e| anyhow!("--to {}: {e}", d.display()))?;
            Some(Arc::new(
                LocalStore::new(d).map_err(|e| anyhow!("--to {}: {e}", d.display()))?,
            ))
        }
        other => Some(crate::open_root(other, a.s3_endpoint.clone(), a.s3_region.clone()).await?),
    };
    let opts = ExportOptions {
        dataset: a.dataset.clone(),
        splits: a.splits.clone(),
        params,
        shard_bytes: a.shard_mb << 20,
        seed: a.seed,
        dry_run: a.dry_run,
        replace: a.replace,
        cpu_workers: a.cpu_workers,
        cache_bytes: a.cache_mb << 20,
        bar: std::io::stderr().is_terminal(),
    };
    export(source, dest, &opts).await
}
