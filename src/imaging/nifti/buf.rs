//! [`VoxelBuf`]: the storage behind [`Voxels`](super::Voxels): a `Vec` the decoder filled, or
//! a typed view into shared bytes owned elsewhere (a memory-mapped file of the disk cache).
//! Either way it reads as a `&[T]`; nothing here does I/O.

use std::fmt;
use std::sync::Arc;

/// Bytes owned by something else and kept alive as long as any buffer views them.
pub type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A voxel buffer: owned, or a view into [`SharedBytes`].
pub struct VoxelBuf<T> {
    inner: Inner<T>,
}

enum Inner<T> {
    Owned(Vec<T>),
    Shared {
        bytes: SharedBytes,
        start: usize,
        len: usize,
    },
}

/// Why shared bytes cannot be viewed as voxels.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ViewError(String);

impl<T: bytemuck::Pod> VoxelBuf<T> {
    /// `len` values of `T` at byte `start` of `bytes`, refused when they pass the end or are
    /// not aligned for `T`.
    pub fn view(bytes: SharedBytes, start: usize, len: usize) -> Result<Self, ViewError> {
        let width = std::mem::size_of::<T>();
        let end = len
            .checked_mul(width)
            .and_then(|n| n.checked_add(start))
            .filter(|&end| end <= (*bytes).as_ref().len())
            .ok_or_else(|| ViewError(format!("{len} values from byte {start} pass the end")))?;
        bytemuck::try_cast_slice::<u8, T>(&(*bytes).as_ref()[start..end])
            .map_err(|e| ViewError(format!("voxels at byte {start}: {e}")))?;
        Ok(VoxelBuf {
            inner: Inner::Shared { bytes, start, len },
        })
    }

    /// The values.
    pub fn as_slice(&self) -> &[T] {
        match &self.inner {
            Inner::Owned(v) => v,
            Inner::Shared { bytes, start, len } => {
                let b = &(**bytes).as_ref()[*start..*start + *len * std::mem::size_of::<T>()];
                // Checked when the view was made; the bytes behind an Arc never change.
                bytemuck::cast_slice(b)
            }
        }
    }

    /// Whether the values live in shared bytes (the disk cache's map) rather than a `Vec`.
    pub fn is_shared(&self) -> bool {
        matches!(self.inner, Inner::Shared { .. })
    }
}

impl<T: bytemuck::Pod> std::ops::Deref for VoxelBuf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T> From<Vec<T>> for VoxelBuf<T> {
    fn from(v: Vec<T>) -> Self {
        VoxelBuf {
            inner: Inner::Owned(v),
        }
    }
}

impl<T: Clone> Clone for VoxelBuf<T> {
    fn clone(&self) -> Self {
        VoxelBuf {
            inner: match &self.inner {
                Inner::Owned(v) => Inner::Owned(v.clone()),
                Inner::Shared { bytes, start, len } => Inner::Shared {
                    bytes: bytes.clone(),
                    start: *start,
                    len: *len,
                },
            },
        }
    }
}

impl<T: bytemuck::Pod + PartialEq> PartialEq for VoxelBuf<T> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<T: bytemuck::Pod + fmt::Debug> fmt::Debug for VoxelBuf<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.as_slice();
        let kind = if self.is_shared() { "shared" } else { "owned" };
        write!(f, "VoxelBuf({kind}, {} values", s.len())?;
        if s.len() <= 16 {
            write!(f, ": {s:?}")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_check_bounds_and_alignment() {
        let raw: Vec<u8> = (0..64).collect();
        let bytes: SharedBytes = Arc::new(raw.clone());
        let v = VoxelBuf::<u8>::view(bytes.clone(), 8, 16).unwrap();
        assert_eq!(&v[..], &raw[8..24]);
        assert!(v.is_shared());
        assert_eq!(v, VoxelBuf::from(raw[8..24].to_vec()));
        assert!(VoxelBuf::<u8>::view(bytes.clone(), 60, 5).is_err());
        assert!(VoxelBuf::<u8>::view(bytes.clone(), 1, usize::MAX).is_err());
        let base = (*bytes).as_ref().as_ptr() as usize;
        let odd = if base.is_multiple_of(2) { 1 } else { 0 };
        assert!(VoxelBuf::<u16>::view(bytes, odd, 4).is_err());
    }
}
