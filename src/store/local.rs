//! The default backend: a folder on the local disk.
//!
//! The root is canonicalised once; every resolved path is canonicalised again and must stay
//! under it, so neither `..` nor a symlink pointing outside can leak a file.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{
    LimitedReader, ObjectAt, ObjectMeta, ObjectReader, ObjectStore, ReadFailure, StoreError,
    validate_key, validate_prefix,
};

/// Objects are the regular files below `root`; keys are their relative paths with `/`.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    /// What clients are told instead of `root` (see [`ObjectStore::public_location`]).
    label: String,
}

impl LocalStore {
    /// Opens an existing directory.
    pub fn new(root: impl AsRef<Path>) -> std::io::Result<Self> {
        let root = std::fs::canonicalize(root.as_ref())?;
        if !root.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(LocalStore {
            root,
            label: "./".into(),
        })
    }

    /// Names the folder to clients as `label` (default `./`: paths relative to the data root)
    /// instead of its filesystem path, e.g. `sample:` for generated sample data.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// The canonical root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Maps a key to a path inside the root, refusing anything that resolves outside it.
    fn resolve(&self, key: &str) -> Result<PathBuf, StoreError> {
        validate_key(key)?;
        let path = self.root.join(key);
        match std::fs::canonicalize(&path) {
            Ok(real) if real.starts_with(&self.root) && real.is_file() => Ok(real),
            Ok(real) if real.starts_with(&self.root) => Err(StoreError::NotFound(key.into())),
            Ok(_) => Err(StoreError::InvalidKey {
                key: key.into(),
                reason: "resolves outside the data root",
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::NotFound(key.into()))
            }
            Err(e) => Err(io_error(key, e)),
        }
    }

    fn meta_of(&self, key: &str, md: &std::fs::Metadata) -> ObjectMeta {
        ObjectMeta {
            key: key.to_string(),
            size: md.len(),
            version: version_of(md),
            version_id: None,
        }
    }

    /// The key of `at`; a folder keeps one version of each file.
    fn latest_only<'a>(&self, at: ObjectAt<'a>) -> Result<&'a str, StoreError> {
        match at.version_id {
            None => Ok(at.key),
            Some(v) => Err(StoreError::NoVersions {
                store: "a local folder",
                key: at.key.into(),
                version_id: v.into(),
            }),
        }
    }
}

/// Size and modification time identify a local file's content well enough for caching.
fn version_of(md: &std::fs::Metadata) -> String {
    let mtime = md
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}-{:x}", md.len(), mtime)
}

fn io_error(key: &str, e: std::io::Error) -> StoreError {
    match e.kind() {
        std::io::ErrorKind::NotFound => StoreError::NotFound(key.into()),
        _ => StoreError::Unavailable(format!("reading '{key}': {e}")),
    }
}

/// Walks `dir` depth-first without following symlinked directories (no cycles); symlinked
/// files are kept only when they resolve inside `root`.
fn walk(root: &Path, dir: &Path, out: &mut Vec<ObjectMeta>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let ft = entry.file_type()?;
        if ft.is_dir() {
            walk(root, &path, out)?;
            continue;
        }
        let md = if ft.is_symlink() {
            match std::fs::canonicalize(&path) {
                Ok(real) if real.starts_with(root) && real.is_file() => std::fs::metadata(&real)?,
                _ => continue,
            }
        } else if ft.is_file() {
            entry.metadata()?
        } else {
            continue;
        };
        let Ok(rel) = path.strip_prefix(root) else {
            continue;
        };
        let Some(key) = rel.to_str() else {
            // Non-UTF-8 names cannot be keys; S3 has none either.
            continue;
        };
        let key = key.replace(std::path::MAIN_SEPARATOR, "/");
        out.push(ObjectMeta {
            size: md.len(),
            version: version_of(&md),
            key,
            version_id: None,
        });
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for LocalStore {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn public_location(&self) -> String {
        self.label.clone()
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        validate_prefix(prefix)?;
        let root = self.root.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || {
            // A vanished root is an outage, not an empty store: never replace a good catalog
            // with an empty one because a mount went away.
            if !root.is_dir() {
                return Err(StoreError::Unavailable(format!(
                    "{} is not a readable directory",
                    root.display()
                )));
            }
            // Walk only the deepest directory the prefix names, then filter by the full prefix.
            let dir_part = match prefix.rfind('/') {
                Some(i) => &prefix[..i],
                None => "",
            };
            let mut out = Vec::new();
            walk(&root, &root.join(dir_part), &mut out)
                .map_err(|e| StoreError::Unavailable(format!("listing '{prefix}': {e}")))?;
            out.retain(|m| m.key.starts_with(&prefix));
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("listing task failed: {e}")))?
    }

    async fn head(&self, at: ObjectAt<'_>) -> Result<ObjectMeta, StoreError> {
        let key = self.latest_only(at)?;
        let path = self.resolve(key)?;
        let md = tokio::fs::metadata(&path)
            .await
            .map_err(|e| io_error(key, e))?;
        Ok(self.meta_of(key, &md))
    }

    fn whole_reads_are_cheap(&self) -> bool {
        true
    }

    async fn get(
        &self,
        at: ObjectAt<'_>,
        max_bytes: u64,
    ) -> Result<(ObjectMeta, Bytes), StoreError> {
        let key = self.latest_only(at)?;
        let (meta, mut reader) = self.open(at, max_bytes).await?;
        let key = key.to_string();
        // One blocking task for the whole read: tokio's File hops to the blocking pool per
        // chunk, which costs several times the read itself for objects of tens of MB. The
        // reader stops past the limit even if the file grew after it was measured.
        tokio::task::spawn_blocking(move || {
            let mut buf = Vec::with_capacity(meta.size as usize);
            std::io::Read::read_to_end(&mut reader, &mut buf)
                .map_err(|e| ReadFailure::find(&e).unwrap_or_else(|| io_error(&key, e)))?;
            Ok((meta, Bytes::from(buf)))
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("reading a file: {e}")))?
    }

    async fn open(
        &self,
        at: ObjectAt<'_>,
        max_bytes: u64,
    ) -> Result<(ObjectMeta, ObjectReader), StoreError> {
        let key = self.latest_only(at)?;
        let path = self.resolve(key)?;
        let store = self.clone();
        let key = key.to_string();
        tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&path).map_err(|e| io_error(&key, e))?;
            let md = file.metadata().map_err(|e| io_error(&key, e))?;
            let meta = store.meta_of(&key, &md);
            if meta.size > max_bytes {
                return Err(StoreError::TooLarge {
                    key,
                    size: meta.size,
                    limit: max_bytes,
                });
            }
            let reader: ObjectReader = Box::new(LimitedReader::new(file, &key, max_bytes));
            Ok((meta, reader))
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("opening a file: {e}")))?
    }

    async fn get_range(&self, at: ObjectAt<'_>, range: Range<u64>) -> Result<Bytes, StoreError> {
        let key = self.latest_only(at)?;
        let path = self.resolve(key)?;
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| io_error(key, e))?;
        let len = file.metadata().await.map_err(|e| io_error(key, e))?.len();
        let start = range.start.min(len);
        let end = range.end.min(len).max(start);
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(|e| io_error(key, e))?;
        let mut buf = Vec::with_capacity((end - start) as usize);
        file.take(end - start)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| io_error(key, e))?;
        Ok(Bytes::from(buf))
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<ObjectMeta, StoreError> {
        validate_key(key)?;
        let store = self.clone();
        let key = key.to_string();
        tokio::task::spawn_blocking(move || {
            let path = store.root.join(&key);
            let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
                return Err(StoreError::InvalidKey {
                    key,
                    reason: "names no file",
                });
            };
            std::fs::create_dir_all(dir).map_err(|e| io_error(&key, e))?;
            // A symlinked folder on the way could lead outside the root: refuse to write there.
            let real = std::fs::canonicalize(dir).map_err(|e| io_error(&key, e))?;
            if !real.starts_with(&store.root) {
                return Err(StoreError::InvalidKey {
                    key,
                    reason: "resolves outside the data root",
                });
            }
            // Hidden (discovery skips dot files) and fixed per key, so a write killed half-way
            // is replaced by the next attempt instead of piling up.
            let tmp = real.join(format!(".{}.partial", name.to_string_lossy()));
            let write = || -> std::io::Result<std::fs::Metadata> {
                let mut f = std::fs::File::create(&tmp)?;
                std::io::Write::write_all(&mut f, &body)?;
                f.sync_all()?;
                let md = f.metadata()?;
                std::fs::rename(&tmp, real.join(name))?;
                Ok(md)
            };
            let md = write().map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                StoreError::Unavailable(format!("writing '{key}': {e}"))
            })?;
            let md = std::fs::metadata(real.join(name)).unwrap_or(md);
            Ok(store.meta_of(&key, &md))
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("writing a file: {e}")))?
    }

    async fn ping(&self) -> Result<(), StoreError> {
        match tokio::fs::metadata(&self.root).await {
            Ok(md) if md.is_dir() => Ok(()),
            Ok(_) => Err(StoreError::Unavailable(format!(
                "{} is no longer a directory",
                self.root.display()
            ))),
            Err(e) => Err(StoreError::Unavailable(format!(
                "{}: {e}",
                self.root.display()
            ))),
        }
    }
}
