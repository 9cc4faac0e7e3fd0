//! What the disk tier holds: decoded volumes (their voxels stay in the map), the patch
//! routes' foreground/background lists, gzip seek indexes, and volume facts (header and
//! display windows, for slab reads).

use std::borrow::Cow;

use super::OnDisk;
use crate::imaging::gzindex::GzIndex;
use crate::imaging::nifti::{Header, SharedBytes, Volume, VoxelBuf, Voxels};
use crate::imaging::patch::FgBgIndices;
use crate::imaging::stats::{DecodedVolume, VolumeFacts};

/// The voxels' bytes as stored in memory (native order).
pub(super) fn voxel_bytes(v: &Voxels) -> &[u8] {
    crate::with_voxels!(v, x => bytemuck::cast_slice(x.as_slice()))
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

    fn payload(&self) -> Vec<Cow<'_, [u8]>> {
        vec![Cow::Borrowed(voxel_bytes(&self.voxels))]
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
        let voxels = crate::match_dtype!(d.header.dtype, view);
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

    fn payload(&self) -> Vec<Cow<'_, [u8]>> {
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

    fn payload(&self) -> Vec<Cow<'_, [u8]>> {
        vec![
            Cow::Borrowed(bytemuck::cast_slice(&self.fg)),
            Cow::Borrowed(bytemuck::cast_slice(&self.bg)),
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

/// A gzip seek index, as its own GZIDX file (so an entry's payload is what indexed_gzip reads).
impl OnDisk for GzIndex {
    const KIND: &'static str = "gzip-index";

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({"format": "GZIDX v1"})
    }

    fn payload(&self) -> Vec<Cow<'_, [u8]>> {
        vec![Cow::Owned(self.to_bytes())]
    }

    fn rebuild(
        _: serde_json::Value,
        bytes: SharedBytes,
        start: usize,
        len: usize,
    ) -> Result<Self, String> {
        GzIndex::from_bytes(&(*bytes).as_ref()[start..start + len]).map_err(|e| e.to_string())
    }
}

impl OnDisk for VolumeFacts {
    const KIND: &'static str = "volume-facts";

    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    fn payload(&self) -> Vec<Cow<'_, [u8]>> {
        Vec::new()
    }

    fn rebuild(
        desc: serde_json::Value,
        _: SharedBytes,
        _: usize,
        _: usize,
    ) -> Result<Self, String> {
        serde_json::from_value(desc).map_err(|e| e.to_string())
    }
}
