//! Dataset discovery with a TTL: one listing of the store, parsed into datasets, re-listed in
//! the background once older than the TTL, or at once on a manual refresh. Nothing is listed
//! before the first request.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

pub mod discover;
pub mod ids;
pub mod model;

/// An item's objects, as listed (and, with `?version_id=`, pinned to a stored version).
pub use crate::store::ObjectMeta;
pub use discover::{CatalogFile, DatasetOverride};
pub use model::{Dataset, Item, Kind, Layout, Member, Processed, Snapshot, Split};

use crate::export::manifest::Manifest;
use crate::store::{ObjectStore, StoreError};
use discover::DecathlonJson;

/// Largest `dataset.json` we read; real ones are a few hundred KiB.
const MAX_DATASET_JSON: u64 = 16 << 20;
/// Largest export `manifest.json` we read: about 250 bytes per item, so MedNIST's 59k items
/// are 15 MB.
const MAX_MANIFEST: u64 = 256 << 20;

/// The current snapshot and when it was taken.
#[derive(Debug, Clone)]
struct Loaded {
    snapshot: Arc<Snapshot>,
    at: Instant,
}

/// Lazily listed, TTL-cached view of every dataset in the store.
#[derive(Debug)]
pub struct Catalog {
    store: Arc<dyn ObjectStore>,
    ttl: Duration,
    file: CatalogFile,
    fallback_name: String,
    current: RwLock<Option<Loaded>>,
    /// Only one listing runs at a time; others wait for its result.
    refreshing: Arc<tokio::sync::Mutex<()>>,
}

impl Catalog {
    /// A catalog over `store`; lists nothing until first asked.
    pub fn new(store: Arc<dyn ObjectStore>, ttl: Duration, file: CatalogFile) -> Self {
        // The data root's folder name; for the workshop's `<area>/raw`, the area's.
        let described = store.describe();
        let mut segs = described
            .trim_end_matches('/')
            .rsplit(['/', ':'])
            .filter(|s| !s.is_empty());
        let fallback_name = match (segs.next(), segs.next()) {
            (Some("raw"), Some(area)) => area,
            (Some(last), _) => last,
            (None, _) => "data",
        }
        .to_string();
        Catalog {
            store,
            ttl,
            file,
            fallback_name,
            current: RwLock::new(None),
            refreshing: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Where the data lives, as clients may see it (never a server path).
    pub fn public_location(&self) -> String {
        self.store.public_location()
    }

    /// Whether the store answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }

    /// The current snapshot. Only the very first call waits for a listing; after that a
    /// snapshot older than the TTL is still served while one background task lists the store
    /// again (stale-while-revalidate), so no request pays for re-listing a large bucket. When
    /// that re-listing fails, the previous snapshot keeps serving.
    pub async fn snapshot(self: &Arc<Self>) -> Result<Arc<Snapshot>, StoreError> {
        let current = self.current.read().expect("catalog lock poisoned").clone();
        match current {
            Some(l) if l.at.elapsed() < self.ttl => Ok(l.snapshot),
            Some(l) => {
                if let Ok(guard) = self.refreshing.clone().try_lock_owned() {
                    let this = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = this.load().await {
                            tracing::warn!(error = %e, "re-listing failed; serving the previous catalog");
                        }
                        drop(guard);
                    });
                }
                Ok(l.snapshot)
            }
            None => {
                let _guard = self.refreshing.lock().await;
                if let Some(l) = self.current.read().expect("catalog lock poisoned").clone() {
                    return Ok(l.snapshot);
                }
                self.load().await
            }
        }
    }

    /// Lists the store now, whatever the TTL says.
    pub async fn refresh(&self) -> Result<Arc<Snapshot>, StoreError> {
        let _guard = self.refreshing.lock().await;
        self.load().await
    }

    async fn load(&self) -> Result<Arc<Snapshot>, StoreError> {
        let started = Instant::now();
        let listing = self.store.list("").await?;
        let mut jsons = HashMap::new();
        for key in discover::decathlon_json_keys(&listing, &self.file) {
            match self.store.get((&key).into(), MAX_DATASET_JSON).await {
                Ok((_, bytes)) => match serde_json::from_slice::<DecathlonJson>(&bytes) {
                    Ok(j) => {
                        jsons.insert(key, j);
                    }
                    Err(e) => {
                        tracing::warn!(key = %key, error = %e, "ignoring unreadable dataset.json")
                    }
                },
                Err(StoreError::Unavailable(m)) => return Err(StoreError::Unavailable(m)),
                Err(e) => tracing::warn!(key = %key, error = %e, "ignoring dataset.json"),
            }
        }
        let mut exports = HashMap::new();
        for key in discover::manifest_keys(&listing) {
            match self.store.get((&key).into(), MAX_MANIFEST).await {
                Ok((_, bytes)) => {
                    // Other tools write files called manifest.json too: only ours count.
                    if let Ok(m) = serde_json::from_slice::<Manifest>(&bytes) {
                        exports.insert(key, m);
                    }
                }
                Err(StoreError::Unavailable(m)) => return Err(StoreError::Unavailable(m)),
                Err(e) => tracing::warn!(key = %key, error = %e, "ignoring manifest.json"),
            }
        }
        let snapshot = Arc::new(discover::discover(
            &listing,
            &jsons,
            &exports,
            &self.file,
            &self.fallback_name,
        ));
        tracing::info!(
            datasets = snapshot.datasets.len(),
            objects = snapshot.objects_listed,
            unmatched = snapshot.objects_unmatched,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "catalog listed"
        );
        *self.current.write().expect("catalog lock poisoned") = Some(Loaded {
            snapshot: snapshot.clone(),
            at: Instant::now(),
        });
        Ok(snapshot)
    }
}
