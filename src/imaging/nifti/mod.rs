//! NIfTI-1 and NIfTI-2 volumes from bytes (`.nii` or `.nii.gz`), and NIfTI-1 out.
//!
//! Reading follows nibabel, which MONAI's `LoadImage` reads through: voxels in file order
//! `[x, y, z(, t)]` (Fortran order), `raw * scl_slope + scl_inter` in float64 (a slope of 0 or
//! a non-finite slope means unscaled), the affine from the sform, else the qform, else pixdim.
//!
//! Hostile files are the normal case for a server: every size comes from the header and is
//! checked against [`VolumeLimits`] *before* anything is allocated; a gzip stream is inflated
//! exactly as far as the header says the voxels reach (a bomb of compressed zeros after them
//! is never read), straight into a buffer of the final size and type (no growing `Vec`).
//!
//! The `nifti` crate parses NIfTI-1 headers (both byte orders); it has no NIfTI-2 reader and its
//! writer only writes to file paths and panics on negative pixdims in `qform_affine`, so the
//! NIfTI-2 header, the affine and the NIfTI-1 writer for responses are here.
//!
//! This file holds the types; `header.rs` turns either header version into a checked
//! [`Header`], `affine.rs` the voxel-to-world matrix math, `read.rs` the entry points and the
//! voxel reader, `write.rs` the NIfTI-1 writer.

mod affine;
mod buf;
mod header;
mod read;
#[cfg(test)]
mod tests;
mod write;

pub use affine::axcodes;
pub use buf::{SharedBytes, ViewError, VoxelBuf};
pub use read::{
    Inflate, check_limits, decode, decode_reader, decode_with, is_gzip, read_header, slab_range,
    slab_volume,
};
pub use write::{OutType, encode_nifti1};

/// Limits checked against the header before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeLimits {
    /// Most voxels (all channels) a volume may have.
    pub max_voxels: u64,
    /// Most bytes the decompressed file may have (header + extensions + voxels).
    pub max_bytes: u64,
}

/// Why a volume could not be decoded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VolumeError {
    #[error("not a NIfTI file: {0}")]
    NotNifti(String),
    #[error("corrupt NIfTI header: {0}")]
    BadHeader(String),
    #[error("unsupported NIfTI file: {0}")]
    Unsupported(String),
    #[error("truncated NIfTI file: {0}")]
    Truncated(String),
    #[error("corrupt gzip stream: {0}")]
    Gzip(String),
    #[error("{0}")]
    TooLarge(String),
}

/// Voxel types we decode (NIfTI `datatype` codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Dtype {
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

impl Dtype {
    /// The type of a NIfTI `datatype` code, if we decode it.
    fn from_code(code: i64) -> Option<Dtype> {
        Some(match code {
            2 => Dtype::U8,
            4 => Dtype::I16,
            8 => Dtype::I32,
            16 => Dtype::F32,
            64 => Dtype::F64,
            256 => Dtype::I8,
            512 => Dtype::U16,
            768 => Dtype::U32,
            1024 => Dtype::I64,
            1280 => Dtype::U64,
            _ => return None,
        })
    }

    /// Bytes per voxel.
    pub fn size(self) -> usize {
        match self {
            Dtype::U8 | Dtype::I8 => 1,
            Dtype::I16 | Dtype::U16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::U64 | Dtype::F64 => 8,
        }
    }

    /// NumPy's name.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::U8 => "uint8",
            Dtype::I8 => "int8",
            Dtype::I16 => "int16",
            Dtype::U16 => "uint16",
            Dtype::I32 => "int32",
            Dtype::U32 => "uint32",
            Dtype::I64 => "int64",
            Dtype::U64 => "uint64",
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
        }
    }
}

/// Where the affine came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AffineSource {
    Sform,
    Qform,
    Pixdim,
}

impl AffineSource {
    /// The name volume metadata reports (`sform`, `qform`, `pixdim`).
    pub fn name(self) -> &'static str {
        match self {
            AffineSource::Sform => "sform",
            AffineSource::Qform => "qform",
            AffineSource::Pixdim => "pixdim",
        }
    }
}

/// What we use from a NIfTI header (serialisable: the disk cache stores it beside the voxels).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Header {
    /// 1 or 2.
    pub version: u8,
    pub big_endian: bool,
    /// `[X, Y, Z]` (missing spatial axes are 1).
    pub spatial: [usize; 3],
    /// The 4th axis (modalities or time points); 1 for 3D files.
    pub channels: usize,
    pub dtype: Dtype,
    /// Byte offset of the voxels in the (decompressed) file.
    pub vox_offset: u64,
    /// Voxel sizes from pixdim (absolute values).
    pub pixdim: [f64; 3],
    /// Applied when converting to float: `raw * slope + inter` (1, 0 when unscaled).
    pub scl_slope: f64,
    pub scl_inter: f64,
    /// Voxel `(i, j, k, 1)` -> world (RAS+ mm), row-major.
    pub affine: [[f64; 4]; 4],
    pub affine_source: AffineSource,
    /// Header size: 348 or 540.
    pub header_bytes: u64,
}

impl Header {
    /// Voxels over all channels (checked not to overflow when the header was read).
    pub fn voxels(&self) -> u64 {
        self.spatial.iter().map(|&d| d as u64).product::<u64>() * self.channels as u64
    }

    /// Whether values need `scl_slope`/`scl_inter`.
    pub fn is_scaled(&self) -> bool {
        self.scl_slope != 1.0 || self.scl_inter != 0.0
    }

    /// Orientation codes as nibabel's `aff2axcodes` (e.g. `RAS`, `LPS`).
    pub fn orientation(&self) -> [char; 3] {
        axcodes(&self.affine)
    }
}

/// Voxels in their stored type, file order (`x` fastest, then y, z, channel), native endian.
#[derive(Debug, Clone, PartialEq)]
pub enum Voxels {
    U8(VoxelBuf<u8>),
    I8(VoxelBuf<i8>),
    I16(VoxelBuf<i16>),
    U16(VoxelBuf<u16>),
    I32(VoxelBuf<i32>),
    U32(VoxelBuf<u32>),
    I64(VoxelBuf<i64>),
    U64(VoxelBuf<u64>),
    F32(VoxelBuf<f32>),
    F64(VoxelBuf<f64>),
}

/// `$m!(T, Variant)` for the stored type `$dtype` (a [`Dtype`]) names: the one list of the
/// types every typed read dispatches on (`$m` is a macro of the caller's).
#[macro_export]
macro_rules! match_dtype {
    ($dtype:expr, $m:ident) => {
        match $dtype {
            $crate::imaging::nifti::Dtype::U8 => $m!(u8, U8),
            $crate::imaging::nifti::Dtype::I8 => $m!(i8, I8),
            $crate::imaging::nifti::Dtype::I16 => $m!(i16, I16),
            $crate::imaging::nifti::Dtype::U16 => $m!(u16, U16),
            $crate::imaging::nifti::Dtype::I32 => $m!(i32, I32),
            $crate::imaging::nifti::Dtype::U32 => $m!(u32, U32),
            $crate::imaging::nifti::Dtype::I64 => $m!(i64, I64),
            $crate::imaging::nifti::Dtype::U64 => $m!(u64, U64),
            $crate::imaging::nifti::Dtype::F32 => $m!(f32, F32),
            $crate::imaging::nifti::Dtype::F64 => $m!(f64, F64),
        }
    };
}

/// Runs `$body` with `$v` bound to the typed `Vec` inside a [`Voxels`].
#[macro_export]
macro_rules! with_voxels {
    ($voxels:expr, $v:ident => $body:expr) => {
        match $voxels {
            $crate::imaging::nifti::Voxels::U8($v) => $body,
            $crate::imaging::nifti::Voxels::I8($v) => $body,
            $crate::imaging::nifti::Voxels::I16($v) => $body,
            $crate::imaging::nifti::Voxels::U16($v) => $body,
            $crate::imaging::nifti::Voxels::I32($v) => $body,
            $crate::imaging::nifti::Voxels::U32($v) => $body,
            $crate::imaging::nifti::Voxels::I64($v) => $body,
            $crate::imaging::nifti::Voxels::U64($v) => $body,
            $crate::imaging::nifti::Voxels::F32($v) => $body,
            $crate::imaging::nifti::Voxels::F64($v) => $body,
        }
    };
}

impl Voxels {
    /// Bytes held.
    pub fn byte_len(&self) -> usize {
        with_voxels!(self, v => std::mem::size_of_val(v.as_slice()))
    }
}

/// A decoded volume: header facts and voxels in their stored type (int16 CT stays int16, half
/// the memory of float32; conversion happens on the way out).
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    pub header: Header,
    pub voxels: Voxels,
}

/// A failed read as a [`VolumeError`]: an early end is a truncated file; any other failure is
/// reported as the gzip stream's. `what` says where, as in "the file ends inside the header".
fn io_error(e: std::io::Error, what: &str) -> VolumeError {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            VolumeError::Truncated(format!("the file ends {what}"))
        }
        _ => VolumeError::Gzip(e.to_string()),
    }
}
