//! The disk tier behind the RAM cache: decoded volumes written once, read back by memory map,
//! so a volume evicted from RAM (a training epoch over a Decathlon task does not fit) costs a
//! map and a checksum instead of another inflate. `--disk-cache-dir` / `--disk-cache-gb`.
//!
//! - **Keys**: an entry's file is named by the SHA-256 of its [`CacheKey`]'s text, which holds
//!   every source object's key and version (and medserve's version): a changed object, or a
//!   new release, never reads an old entry; the full text is stored inside and compared too.
//! - **Writes** go to a `*.tmp` name and are renamed into place when complete, so a reader
//!   never sees a half-written entry under its final name; a `*.tmp` left by a killed server
//!   is removed when the tier is opened.
//! - **Reads** check the magic, the lengths against the file's size, and a CRC-32 over the
//!   metadata and the voxels before anything is used; an entry that fails any check (torn by a
//!   crash, truncated, corrupted) is deleted and reported, and the caller decodes again.
//! - **Bounded** by bytes, least recently used first (use times kept in memory and in each
//!   file's modification time, so the order survives a restart).
//!
//! One directory belongs to one process: entries are mapped while in use, and a file truncated
//! under a live map would fault (deleting one is safe: the map keeps the data).
//!
//! File format (version 1, little-endian):
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..8 | magic `MSDISK` + format version `\x00\x01` |
//! | 8..12 | metadata length `m` (u32) |
//! | 12..16 | CRC-32 of the metadata and the payload |
//! | 16..24 | payload length `p` (u64) |
//! | 24..24+m | metadata: JSON `{"key", "kind", "header", "voxels"}` |
//! | to a multiple of 64 | zeros |
//! | then `p` bytes | the voxels in their stored type, native (little-endian) order |

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

mod kinds;

use super::CacheKey;
use crate::imaging::nifti::SharedBytes;

const MAGIC: &[u8; 8] = b"MSDISK\x00\x01";
const FIXED: usize = 24;
const ALIGN: usize = 64;
const MAX_META: usize = 1 << 20;
const SUFFIX: &str = "mvol";

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup<T> {
    Hit(Box<T>),
    Miss,
    /// An entry was there but failed a check; it has been deleted.
    Dropped(String),
}

/// What the disk tier can hold: a JSON description plus a payload of raw bytes.
pub trait OnDisk: Sized {
    /// The entry kind, stored and checked.
    const KIND: &'static str;
    /// What is needed besides the payload to rebuild the value.
    fn describe(&self) -> serde_json::Value;
    /// The payload's parts, written one after another.
    fn payload(&self) -> Vec<Cow<'_, [u8]>>;
    /// The value again, from its description and its payload (`len` bytes at `start` of the
    /// mapped file, which it may keep).
    fn rebuild(
        desc: serde_json::Value,
        bytes: SharedBytes,
        start: usize,
        len: usize,
    ) -> Result<Self, String>;
}

/// The disk tier.
#[derive(Debug)]
pub struct DiskCache {
    dir: PathBuf,
    budget: u64,
    index: Mutex<Index>,
    tmp_counter: AtomicU64,
}

#[derive(Debug, Default)]
struct Index {
    entries: HashMap<String, Slot>,
    bytes: u64,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    size: u64,
    used: u128,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    key: String,
    kind: String,
    desc: serde_json::Value,
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn file_name(key: &CacheKey) -> String {
    let digest = Sha256::digest(key.stable_text().as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.{SUFFIX}")
}

impl DiskCache {
    /// Opens (creating it if missing) the tier in `dir`, holding at most `budget` bytes: the
    /// entries there are indexed, leftovers of interrupted writes removed, and the oldest
    /// entries dropped if they pass the budget.
    pub fn open(dir: &Path, budget: u64) -> io::Result<DiskCache> {
        std::fs::create_dir_all(dir)?;
        let mut index = Index::default();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(meta) = e.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(e.path());
            } else if name.ends_with(&format!(".{SUFFIX}")) {
                let used = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                index.bytes += meta.len();
                index.entries.insert(
                    name,
                    Slot {
                        size: meta.len(),
                        used,
                    },
                );
            }
        }
        let cache = DiskCache {
            dir: dir.to_path_buf(),
            budget,
            index: Mutex::new(index),
            tmp_counter: AtomicU64::new(0),
        };
        cache.evict(0);
        Ok(cache)
    }

    /// Bytes held and entries.
    pub fn usage(&self) -> (u64, usize) {
        let ix = self.lock();
        (ix.bytes, ix.entries.len())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        // A panic while holding the lock leaves a consistent map (every update is one insert
        // or remove), so a poisoned lock is still usable.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether an entry is held under `key` (not checked: [`load`](Self::load) may still find
    /// it damaged). Cheap: the tier's own index, no file access.
    pub fn contains(&self, key: &CacheKey) -> bool {
        self.lock().entries.contains_key(&file_name(key))
    }

    /// The value stored under `key`, if present and intact. Blocking (maps and checksums the
    /// file): call it from a CPU job.
    pub fn load<T: OnDisk>(&self, key: &CacheKey) -> Lookup<T> {
        let name = file_name(key);
        if !self.lock().entries.contains_key(&name) {
            return Lookup::Miss;
        }
        let path = self.dir.join(&name);
        match read_entry::<T>(&path, key) {
            Ok(v) => {
                let now = now_nanos();
                if let Some(slot) = self.lock().entries.get_mut(&name) {
                    slot.used = now;
                }
                // The use time survives a restart in the file's mtime; failing to set it only
                // makes the order after a restart less exact.
                if let Ok(f) = File::options().write(true).open(&path) {
                    let _ = f.set_modified(SystemTime::now());
                }
                Lookup::Hit(Box::new(v))
            }
            Err(EntryError::Missing) => {
                self.forget(&name);
                Lookup::Miss
            }
            Err(EntryError::Bad(why)) => {
                let _ = std::fs::remove_file(&path);
                self.forget(&name);
                Lookup::Dropped(format!("{name}: {why}"))
            }
        }
    }

    fn forget(&self, name: &str) {
        let mut ix = self.lock();
        if let Some(slot) = ix.entries.remove(name) {
            ix.bytes -= slot.size;
        }
    }

    /// Writes `value` under `key` (replacing any entry there), then drops the least recently
    /// used entries past the budget. Blocking. A value larger than the whole budget is not
    /// written.
    pub fn store<T: OnDisk>(&self, key: &CacheKey, value: &T) -> io::Result<bool> {
        let payload = value.payload();
        let meta = serde_json::to_vec(&Meta {
            key: key.stable_text(),
            kind: T::KIND.into(),
            desc: value.describe(),
        })
        .map_err(io::Error::other)?;
        let start = payload_start(meta.len());
        let size = (start + payload.iter().map(|p| p.len()).sum::<usize>()) as u64;
        if size > self.budget || meta.len() > MAX_META {
            return Ok(false);
        }
        let name = file_name(key);
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!("{name}.{}.{n}.tmp", std::process::id()));
        let written = write_entry(&tmp, &meta, start, &payload)
            .and_then(|()| std::fs::rename(&tmp, self.dir.join(&name)));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        {
            let mut ix = self.lock();
            if let Some(old) = ix.entries.insert(
                name.clone(),
                Slot {
                    size,
                    used: now_nanos(),
                },
            ) {
                ix.bytes -= old.size;
            }
            ix.bytes += size;
        }
        self.evict(0);
        Ok(true)
    }

    /// Deletes least recently used entries until `extra` more bytes fit in the budget.
    fn evict(&self, extra: u64) {
        let victims: Vec<String> = {
            let mut ix = self.lock();
            let mut order: Vec<(u128, String, u64)> = ix
                .entries
                .iter()
                .map(|(n, s)| (s.used, n.clone(), s.size))
                .collect();
            order.sort();
            let mut out = Vec::new();
            for (_, name, size) in order {
                if ix.bytes + extra <= self.budget {
                    break;
                }
                ix.entries.remove(&name);
                ix.bytes -= size;
                out.push(name);
            }
            out
        };
        for name in victims {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
    }
}

fn payload_start(meta_len: usize) -> usize {
    (FIXED + meta_len).div_ceil(ALIGN) * ALIGN
}

fn write_entry(
    path: &Path,
    meta: &[u8],
    start: usize,
    payload: &[Cow<'_, [u8]>],
) -> io::Result<()> {
    let mut crc = crc32fast::Hasher::new();
    crc.update(meta);
    payload.iter().for_each(|p| crc.update(p));
    let len: usize = payload.iter().map(|p| p.len()).sum();
    let mut head = Vec::with_capacity(start);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    head.extend_from_slice(&crc.finalize().to_le_bytes());
    head.extend_from_slice(&(len as u64).to_le_bytes());
    head.extend_from_slice(meta);
    head.resize(start, 0);
    let mut f = io::BufWriter::with_capacity(1 << 20, File::create(path)?);
    f.write_all(&head)?;
    for p in payload {
        f.write_all(p)?;
    }
    f.flush()
}

enum EntryError {
    Missing,
    Bad(String),
}

fn bad(why: impl Into<String>) -> EntryError {
    EntryError::Bad(why.into())
}

/// Reads and checks one entry; what it rebuilds may keep the map.
fn read_entry<T: OnDisk>(path: &Path, key: &CacheKey) -> Result<T, EntryError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(EntryError::Missing),
        Err(e) => return Err(bad(format!("cannot open: {e}"))),
    };
    // SAFETY: the directory is this process's alone (module doc): entries are replaced by
    // rename and removed by unlink, never truncated or rewritten in place, so the mapped
    // bytes do not change while mapped.
    let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }
        .map_err(|e| bad(format!("cannot map: {e}")))?;
    let b: &[u8] = &map;
    if b.len() < FIXED || &b[..8] != MAGIC {
        return Err(bad("not an entry of this format version"));
    }
    let word = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
    let meta_len = word(8) as usize;
    let crc = word(12);
    let payload_len = u64::from_le_bytes(b[16..24].try_into().expect("8 bytes"));
    if meta_len > MAX_META {
        return Err(bad("metadata length out of range"));
    }
    let start = payload_start(meta_len);
    let expected = (start as u64).checked_add(payload_len);
    if expected != Some(b.len() as u64) {
        return Err(bad(format!(
            "the file has {} bytes, its header says {}",
            b.len(),
            expected.map_or_else(|| "more than 2^64".into(), |n| n.to_string())
        )));
    }
    let meta_bytes = &b[FIXED..FIXED + meta_len];
    let mut h = crc32fast::Hasher::new();
    h.update(meta_bytes);
    h.update(&b[start..]);
    if h.finalize() != crc {
        return Err(bad("checksum mismatch"));
    }
    let meta: Meta =
        serde_json::from_slice(meta_bytes).map_err(|e| bad(format!("metadata: {e}")))?;
    if meta.key != key.stable_text() || meta.kind != T::KIND {
        return Err(bad("holds another key"));
    }
    let len = b.len() - start;
    T::rebuild(meta.desc, std::sync::Arc::new(map), start, len).map_err(bad)
}

#[cfg(test)]
mod tests;
