//! medserve: medical-imaging training data over HTTP.
//!
//! Lists datasets (MedNIST-style 2D classification sets, Decathlon-style 3D segmentation sets)
//! kept in a folder or S3, and serves their images preprocessed exactly as MONAI would.
//! `main.rs` only parses flags and calls [`run`]; tests build the same router through
//! [`build_router`] and [`AppState`].
//!
//! A request flows one way: api -> pipeline -> cache (store and imaging inside) -> response;
//! see ARCHITECTURE.md.

use std::sync::Arc;
use std::time::Duration;

pub mod api;
pub mod auth;
pub mod cache;
pub mod catalog;
pub mod config;
pub mod error;
pub mod export;
pub mod imaging;
pub mod metrics;
pub mod pipeline;
pub mod sample;
pub mod serve;
pub mod state;
pub mod store;

pub use api::{HttpOptions, build_router};
pub use state::AppState;

use catalog::{Catalog, CatalogFile};
use config::{Config, DataRoot, Limits};
use store::{LocalStore, ObjectStore};
#[cfg(feature = "s3")]
use store::{S3Options, S3Store};

/// Builds the shared state over any store.
pub fn state_for_store(
    store: Arc<dyn ObjectStore>,
    limits: Limits,
    cache_bytes: u64,
    listing_ttl: Duration,
    catalog_file: CatalogFile,
    cpu_workers: usize,
) -> AppState {
    let metrics = Arc::new(metrics::Metrics::default());
    AppState {
        catalog: Arc::new(Catalog::new(store.clone(), listing_ttl, catalog_file)),
        pipeline: pipeline::Pipeline::new(store, limits, cache_bytes, cpu_workers, metrics.clone()),
        metrics,
    }
}

/// Opens the store the config names, generating sample data first when it names none.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn ObjectStore>> {
    open_root(
        &config.data,
        config.s3_endpoint.clone(),
        config.s3_region.clone(),
    )
    .await
}

/// Opens a data root (a folder, S3, or generated sample data).
#[cfg_attr(not(feature = "s3"), allow(unused_variables))]
pub async fn open_root(
    data: &DataRoot,
    endpoint: Option<String>,
    region: Option<String>,
) -> anyhow::Result<Arc<dyn ObjectStore>> {
    Ok(match data {
        DataRoot::Local(dir) => Arc::new(
            LocalStore::new(dir).map_err(|e| anyhow::anyhow!("--data {}: {e}", dir.display()))?,
        ),
        DataRoot::Sample(dir) => {
            if !dir.join("medmnist").is_dir() {
                let n = sample::write_sample_data(dir).map_err(|e| {
                    anyhow::anyhow!("writing sample data to {}: {e}", dir.display())
                })?;
                tracing::info!(files = n, dir = %dir.display(), "generated sample data");
            }
            Arc::new(LocalStore::new(dir)?.with_label("sample:"))
        }
        #[cfg(not(feature = "s3"))]
        DataRoot::S3 { .. } => anyhow::bail!(
            "--data: this medserve was built without S3 support (cargo feature `s3`, on by default)"
        ),
        #[cfg(feature = "s3")]
        DataRoot::S3 { bucket, prefix } => Arc::new(
            S3Store::new(S3Options {
                bucket: bucket.clone(),
                prefix: prefix.clone(),
                endpoint,
                region,
                credentials: None,
                attempt_timeout: Duration::from_secs(20),
                max_attempts: 3,
            })
            .await,
        ),
    })
}

/// Reads the optional catalog file.
pub fn read_catalog_file(config: &Config) -> anyhow::Result<CatalogFile> {
    match &config.catalog {
        None => Ok(CatalogFile {
            discover: true,
            ..Default::default()
        }),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--catalog {}: {e}", path.display()))?;
            serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("--catalog {}: {e}", path.display()))
        }
    }
}

/// Serves until SIGTERM or ctrl-c, then lets in-flight requests finish; connection timeouts
/// and the connection cap are [`serve::serve`]'s.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    let catalog_file = read_catalog_file(&config)?;
    let mut state = state_for_store(
        store.clone(),
        config.limits,
        config.cache_bytes,
        config.listing_ttl,
        catalog_file,
        config.cpu_workers,
    );
    if let Some((dir, bytes)) = &config.disk_cache {
        let disk = cache::disk::DiskCache::open(dir, *bytes)
            .map_err(|e| anyhow::anyhow!("--disk-cache-dir {}: {e}", dir.display()))?;
        let (held, entries) = disk.usage();
        tracing::info!(dir = %dir.display(), gb = bytes >> 30, held_mb = held >> 20, entries, "disk cache open");
        state.pipeline = state.pipeline.with_disk_cache(Arc::new(disk));
    }
    let app = build_router(
        state,
        &HttpOptions {
            cors: config.cors.clone(),
            request_timeout: config.request_timeout,
            api_keys: (!config.api_keys.is_empty())
                .then(|| std::sync::Arc::new(auth::ApiKeys::new(&config.api_keys))),
            max_body_bytes: config.max_body_bytes,
        },
    );
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(data = %store.describe(), cache_mb = config.cache_bytes >> 20, "medserve listening on http://{addr}");
    print_welcome(&addr.to_string());
    serve::serve(listener, app, config.connections, shutdown_signal()).await?;
    tracing::info!("medserve stopped");
    Ok(())
}

fn print_welcome(addr: &str) {
    let host = addr.replace("0.0.0.0", "127.0.0.1");
    println!(
        "\nmedserve is serving on http://{addr}\n\nTry:\n  curl http://{host}/v1/datasets\n  curl http://{host}/v1/datasets/medmnist/splits/train/classes\n  curl 'http://{host}/v1/datasets/medmnist/splits/train/items?class=HeadCT&limit=2'\n  curl -o head.png http://{host}/v1/datasets/medmnist/splits/train/items/HeadCT~005001/image\n  curl -o head.npy 'http://{host}/v1/datasets/medmnist/splits/train/items/HeadCT~005001/image?format=npy'\n"
    );
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
