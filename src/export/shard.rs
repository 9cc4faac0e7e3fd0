//! One WebDataset shard: a POSIX tar built in memory, each member's data range recorded as it
//! is appended (that is how `serve` later reads one item by range, without the tar's index).
//! Headers are fixed (mode 0644, uid/gid 0, mtime 0), so the same items give the same bytes
//! and the same SHA-256 on every run: a rerun's shard can be compared with a stored one.

use crate::catalog::ids::fnv1a;

/// Tar's block size: headers and data are padded to it.
const BLOCK: u64 = 512;

/// A shard being built.
pub struct ShardBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for ShardBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ShardBuilder {
    pub fn new() -> Self {
        ShardBuilder {
            tar: tar::Builder::new(Vec::new()),
        }
    }

    /// Appends a file; returns its data's `[offset, length]` in the tar.
    pub fn append(&mut self, name: &str, data: &[u8]) -> std::io::Result<[u64; 2]> {
        let mut h = tar::Header::new_ustar();
        h.set_path(name)?;
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        self.tar.append(&h, data)?;
        let end = self.tar.get_ref().len() as u64;
        let len = data.len() as u64;
        Ok([end - len.div_ceil(BLOCK) * BLOCK, len])
    }

    /// Bytes so far.
    pub fn len(&self) -> u64 {
        self.tar.get_ref().len() as u64
    }

    /// Whether nothing was appended.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The finished tar (with its two zero blocks).
    pub fn finish(self) -> std::io::Result<Vec<u8>> {
        self.tar.into_inner()
    }
}

/// Bytes a file of `len` bytes takes in a tar: its header and its padded data.
pub fn member_bytes(len: usize) -> u64 {
    BLOCK + (len as u64).div_ceil(BLOCK) * BLOCK
}

/// The WebDataset key of an item: its id when that has no `.` (WebDataset splits a member's
/// name at the first dot) and fits a ustar name, else a cleaned id with a hash of the real one
/// (kept in the item's `.json` and in the manifest).
pub fn member_key(id: &str) -> String {
    if !id.contains('.') && id.len() <= 80 {
        return id.to_string();
    }
    let cleaned: String = id
        .chars()
        .take(60)
        .map(|c| if c == '.' { '_' } else { c })
        .collect();
    format!("{cleaned}-{:08x}", fnv1a(id.as_bytes()) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_point_at_the_data_and_the_tar_reads_back() {
        let mut b = ShardBuilder::new();
        let a = b.append("x.image.npy", &[7u8; 700]).unwrap();
        let c = b.append("x.cls", b"3").unwrap();
        let bytes = b.finish().unwrap();
        assert_eq!(a, [512, 700]);
        assert_eq!(c, [512 + 1024 + 512, 1]);
        assert_eq!(&bytes[c[0] as usize..][..1], b"3");
        assert_eq!(bytes.len() % 512, 0);
        let mut ar = tar::Archive::new(bytes.as_slice());
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["x.image.npy", "x.cls"]);
        assert_eq!(member_bytes(700), 512 + 1024);
    }

    #[test]
    fn keys_have_no_dots() {
        assert_eq!(member_key("spleen_10"), "spleen_10");
        let k = member_key("a.b");
        assert!(k.starts_with("a_b-") && !k.contains('.'));
        assert_ne!(member_key("a.b"), member_key("a_b.")); // distinct ids stay distinct
        assert!(member_key(&"x".repeat(200)).len() < 100);
    }
}
