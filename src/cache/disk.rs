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

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::CacheKey;
use crate::imaging::nifti::{Dtype, Header, SharedBytes, Volume, VoxelBuf, Voxels};
use crate::imaging::patch::FgBgIndices;
use crate::imaging::stats::DecodedVolume;

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
    fn payload(&self) -> Vec<&[u8]>;
    /// The value again, from its description and its payload (`len` bytes at `start` of the
    /// mapped file, which it may keep).
    fn rebuild(
        desc: serde_json::Value,
        bytes: SharedBytes,
        start: usize,
        len: usize,
    ) -> Result<Self, String>;
}

#[derive(serde::Serialize, serde::Deserialize)]
struct VolumeDesc {
    header: Header,
    voxels: u64,
}

impl OnDisk for Volume {
    const KIND: &'static str = "volume";

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({"header": self.header, "voxels": self.header.voxels()})
    }

    fn payload(&self) -> Vec<&[u8]> {
        vec![voxel_bytes(&self.voxels)]
    }

    fn rebuild(
        desc: serde_json::Value,
        shared: SharedBytes,
        start: usize,
        len: usize,
    ) -> Result<Self, String> {
        let d: VolumeDesc = serde_json::from_value(desc).map_err(|e| e.to_string())?;
        let n = usize::try_from(d.voxels).map_err(|_| "too many voxels".to_string())?;
        if d.voxels != d.header.voxels()
            || (n as u64).checked_mul(d.header.dtype.size() as u64) != Some(len as u64)
        {
            return Err("the voxel count does not match the payload".into());
        }
        macro_rules! view {
            ($t:ty, $variant:ident) => {
                Voxels::$variant(VoxelBuf::<$t>::view(shared, start, n).map_err(|e| e.to_string())?)
            };
        }
        let voxels = match d.header.dtype {
            Dtype::U8 => view!(u8, U8),
            Dtype::I8 => view!(i8, I8),
            Dtype::I16 => view!(i16, I16),
            Dtype::U16 => view!(u16, U16),
            Dtype::I32 => view!(i32, I32),
            Dtype::U32 => view!(u32, U32),
            Dtype::I64 => view!(i64, I64),
            Dtype::U64 => view!(u64, U64),
            Dtype::F32 => view!(f32, F32),
            Dtype::F64 => view!(f64, F64),
        };
        Ok(Volume {
            header: d.header,
            voxels,
        })
    }
}

impl OnDisk for DecodedVolume {
    const KIND: &'static str = "volume";

    fn describe(&self) -> serde_json::Value {
        self.volume.describe()
    }

    fn payload(&self) -> Vec<&[u8]> {
        self.volume.payload()
    }

    fn rebuild(
        desc: serde_json::Value,
        bytes: SharedBytes,
        start: usize,
        len: usize,
    ) -> Result<Self, String> {
        Volume::rebuild(desc, bytes, start, len).map(DecodedVolume::new)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct IndicesDesc {
    shape: [usize; 3],
    fg: u64,
    bg: u64,
}

/// Copied out of the map (the lists are `Vec`s everywhere else); still far cheaper than a
/// pass over the mask.
impl OnDisk for FgBgIndices {
    const KIND: &'static str = "fg-bg-indices";

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({"shape": self.shape, "fg": self.fg.len(), "bg": self.bg.len()})
    }

    fn payload(&self) -> Vec<&[u8]> {
        vec![
            bytemuck::cast_slice(&self.fg),
            bytemuck::cast_slice(&self.bg),
        ]
    }

    fn rebuild(
        desc: serde_json::Value,
        bytes: SharedBytes,
        start: usize,
        len: usize,
    ) -> Result<Self, String> {
        let d: IndicesDesc = serde_json::from_value(desc).map_err(|e| e.to_string())?;
        let words = d.fg.checked_add(d.bg).and_then(|w| w.checked_mul(4));
        if words != Some(len as u64) {
            return Err("the list lengths do not match the payload".into());
        }
        let all: &[u32] = bytemuck::try_cast_slice(&(*bytes).as_ref()[start..start + len])
            .map_err(|e| e.to_string())?;
        let (fg, bg) = all.split_at(d.fg as usize);
        Ok(FgBgIndices {
            shape: d.shape,
            fg: fg.to_vec(),
            bg: bg.to_vec(),
        })
    }
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

fn voxel_bytes(v: &Voxels) -> &[u8] {
    crate::with_voxels!(v, x => bytemuck::cast_slice(x.as_slice()))
}

fn write_entry(path: &Path, meta: &[u8], start: usize, payload: &[&[u8]]) -> io::Result<()> {
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
mod tests {
    use super::*;
    use crate::cache::Stage;
    use crate::store::ObjectMeta;

    fn key(name: &str, version: &str) -> CacheKey {
        let obj = ObjectMeta {
            key: name.into(),
            size: 1,
            version: version.into(),
        };
        CacheKey::new(Stage::Volume, [&obj], &"nifti")
    }

    fn volume(seed: u8, n: usize) -> Volume {
        let bytes = crate::imaging::nifti::encode_nifti1(
            &[n, 1, 1],
            &[
                [1.0, 0.0, 0.0, 0.0],
                [0.0, 1.0, 0.0, 0.0],
                [0.0, 0.0, 1.0, 0.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
            crate::imaging::nifti::OutType::F32,
            bytemuck::cast_slice(
                &(0..n)
                    .map(|i| f32::from(seed) + i as f32 * 0.5)
                    .collect::<Vec<f32>>(),
            ),
            1,
        );
        crate::imaging::nifti::decode(
            &bytes,
            &crate::imaging::nifti::VolumeLimits {
                max_voxels: 1 << 30,
                max_bytes: 1 << 31,
            },
        )
        .unwrap()
    }

    fn entries(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_stored_volume_reads_back_equal_and_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskCache::open(dir.path(), 1 << 30).unwrap();
        let (k, v) = (key("a.nii.gz", "1"), volume(7, 1000));
        assert!(matches!(disk.load::<Volume>(&k), Lookup::Miss));
        assert!(disk.store(&k, &v).unwrap());
        let Lookup::Hit(back) = disk.load::<Volume>(&k) else {
            panic!("expected a hit")
        };
        assert_eq!(*back, v);
        assert!(matches!(&back.voxels, Voxels::F32(b) if b.is_shared()));
        // Another version of the object is another entry.
        assert!(matches!(
            disk.load::<Volume>(&key("a.nii.gz", "2")),
            Lookup::Miss
        ));
        // A reopened tier finds it.
        let again = DiskCache::open(dir.path(), 1 << 30).unwrap();
        assert!(matches!(again.load::<Volume>(&k), Lookup::Hit(_)));
    }

    #[test]
    fn corrupt_or_truncated_entries_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskCache::open(dir.path(), 1 << 30).unwrap();
        let (k, v) = (key("a.nii.gz", "1"), volume(3, 5000));
        for damage in 0..4 {
            disk.store(&k, &v).unwrap();
            let path = entries(dir.path()).pop().unwrap();
            let mut bytes = std::fs::read(&path).unwrap();
            match damage {
                0 => {
                    let at = bytes.len() - 100;
                    bytes[at] ^= 0x40;
                }
                1 => bytes.truncate(bytes.len() - 1),
                2 => bytes.truncate(10),
                _ => bytes[30] ^= 1,
            }
            std::fs::write(&path, &bytes).unwrap();
            assert!(
                matches!(disk.load::<Volume>(&k), Lookup::Dropped(_)),
                "damage {damage}"
            );
            assert!(entries(dir.path()).is_empty(), "damage {damage}");
            assert_eq!(disk.usage(), (0, 0));
            assert!(matches!(disk.load::<Volume>(&k), Lookup::Miss));
        }
    }

    #[test]
    fn leftovers_of_interrupted_writes_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskCache::open(dir.path(), 1 << 30).unwrap();
        let k = key("a.nii.gz", "1");
        disk.store(&k, &volume(1, 100)).unwrap();
        let half = dir.path().join(format!("{}.99.0.tmp", file_name(&k)));
        std::fs::write(&half, b"MSDISK\x00\x01 half of an entry").unwrap();
        let disk = DiskCache::open(dir.path(), 1 << 30).unwrap();
        assert!(!half.exists());
        assert_eq!(disk.usage().1, 1);
    }

    #[test]
    fn the_budget_drops_the_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let one = {
            let d = tempfile::tempdir().unwrap();
            let c = DiskCache::open(d.path(), 1 << 30).unwrap();
            c.store(&key("x", "1"), &volume(0, 4000)).unwrap();
            c.usage().0
        };
        let disk = DiskCache::open(dir.path(), one * 2 + one / 2).unwrap();
        let (a, b, c) = (key("a", "1"), key("b", "1"), key("c", "1"));
        disk.store(&a, &volume(1, 4000)).unwrap();
        disk.store(&b, &volume(2, 4000)).unwrap();
        assert!(matches!(disk.load::<Volume>(&a), Lookup::Hit(_)));
        disk.store(&c, &volume(3, 4000)).unwrap();
        assert!(
            matches!(disk.load::<Volume>(&b), Lookup::Miss),
            "b was least recent"
        );
        assert!(matches!(disk.load::<Volume>(&a), Lookup::Hit(_)));
        assert!(matches!(disk.load::<Volume>(&c), Lookup::Hit(_)));
        assert_eq!(disk.usage(), (2 * one, 2));
        assert_eq!(entries(dir.path()).len(), 2);
        // A volume larger than the whole budget is not written.
        let tiny = DiskCache::open(tempfile::tempdir().unwrap().path(), 100).unwrap();
        assert!(!tiny.store(&a, &volume(1, 4000)).unwrap());
    }
}
