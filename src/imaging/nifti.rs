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

use std::io::{BufRead, Read};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

fn datatype_name(code: i64) -> String {
    match code {
        0 => "unknown (0)".into(),
        1 => "binary (1)".into(),
        32 => "complex64 (32)".into(),
        128 => "RGB24 (128)".into(),
        1536 => "float128 (1536)".into(),
        1792 => "complex128 (1792)".into(),
        2048 => "complex256 (2048)".into(),
        2304 => "RGBA32 (2304)".into(),
        c => format!("code {c}"),
    }
}

/// Where the affine came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffineSource {
    Sform,
    Qform,
    Pixdim,
}

impl AffineSource {
    pub fn name(self) -> &'static str {
        match self {
            AffineSource::Sform => "sform",
            AffineSource::Qform => "qform",
            AffineSource::Pixdim => "pixdim",
        }
    }
}

/// What we use from a NIfTI header.
#[derive(Debug, Clone, PartialEq)]
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
    U8(Vec<u8>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    U16(Vec<u16>),
    I32(Vec<i32>),
    U32(Vec<u32>),
    I64(Vec<i64>),
    U64(Vec<u64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
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

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Extensions between the header and the voxels larger than this are refused: real ones are
/// a few KiB, and skipping them costs inflating them.
const MAX_EXTENSION_BYTES: u64 = 64 << 20;

/// Reads just the header (inflating only its first bytes).
pub fn read_header(bytes: &[u8]) -> Result<Header, VolumeError> {
    if bytes.starts_with(&GZIP_MAGIC) {
        let mut r = flate2::bufread::MultiGzDecoder::new(bytes);
        read_header_from(&mut r)
    } else {
        read_header_from(&mut &bytes[..])
    }
}

/// Decodes a whole `.nii` or `.nii.gz` held in memory.
pub fn decode(bytes: &[u8], limits: &VolumeLimits) -> Result<Volume, VolumeError> {
    if bytes.starts_with(&GZIP_MAGIC) {
        let mut r = flate2::bufread::MultiGzDecoder::new(bytes);
        decode_from(&mut r, limits)
    } else {
        decode_from(&mut &bytes[..], limits)
    }
}

/// Decodes a `.nii` or `.nii.gz` from a stream, e.g. an object still arriving from the
/// store: inflating starts with the first bytes, and the compressed file is never held whole.
pub fn decode_reader<R: Read>(r: R, limits: &VolumeLimits) -> Result<Volume, VolumeError> {
    let mut br = std::io::BufReader::with_capacity(256 << 10, r);
    let head = br.fill_buf().map_err(|e| io_error(e, "at its start"))?;
    if head.starts_with(&GZIP_MAGIC) {
        decode_from(&mut flate2::bufread::MultiGzDecoder::new(br), limits)
    } else {
        decode_from(&mut br, limits)
    }
}

fn io_error(e: std::io::Error, what: &str) -> VolumeError {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            VolumeError::Truncated(format!("the file ends {what}"))
        }
        _ => VolumeError::Gzip(e.to_string()),
    }
}

fn read_header_from<R: Read>(r: &mut R) -> Result<Header, VolumeError> {
    let mut buf = [0u8; 540];
    r.read_exact(&mut buf[..4])
        .map_err(|e| io_error(e, "inside the header"))?;
    let le = i32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let be = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let (version, big_endian, len) = match (le, be) {
        (348, _) => (1, false, 348),
        (_, 348) => (1, true, 348),
        (540, _) => (2, false, 540),
        (_, 540) => (2, true, 540),
        _ => {
            return Err(VolumeError::NotNifti(format!(
                "the first 4 bytes (sizeof_hdr) are {le}, not 348 (NIfTI-1) or 540 (NIfTI-2)"
            )));
        }
    };
    r.read_exact(&mut buf[4..len])
        .map_err(|e| io_error(e, "inside the header"))?;
    if version == 1 {
        header_1(&buf[..348])
    } else {
        header_2(&buf[..540], big_endian)
    }
}

fn header_1(buf: &[u8]) -> Result<Header, VolumeError> {
    let h = nifti::NiftiHeader::from_reader(buf)
        .map_err(|e| VolumeError::BadHeader(format!("NIfTI-1: {e}")))?;
    if h.magic != *b"n+1\0" {
        return Err(VolumeError::Unsupported(
            "a header-only .hdr/.img pair (magic 'ni1'); serve single-file .nii/.nii.gz".into(),
        ));
    }
    // The crate reads dims as u16; the format says int16 (negative dims are corrupt files).
    let dim: Vec<i64> = h.dim.iter().map(|&d| i64::from(d as i16)).collect();
    let pixdim: Vec<f64> = h.pixdim.iter().map(|&p| f64::from(p)).collect();
    let raw = RawHeader {
        version: 1,
        big_endian: h.endianness == nifti::Endianness::Big,
        dim,
        datatype: i64::from(h.datatype),
        pixdim,
        vox_offset: f64::from(h.vox_offset),
        scl_slope: f64::from(h.scl_slope),
        scl_inter: f64::from(h.scl_inter),
        qform_code: i64::from(h.qform_code),
        sform_code: i64::from(h.sform_code),
        quatern: [h.quatern_b, h.quatern_c, h.quatern_d].map(f64::from),
        qoffset: [h.quatern_x, h.quatern_y, h.quatern_z].map(f64::from),
        srow: [h.srow_x, h.srow_y, h.srow_z].map(|r| r.map(f64::from)),
        header_bytes: 348,
    };
    raw.finish()
}

fn header_2(b: &[u8], big: bool) -> Result<Header, VolumeError> {
    if &b[4..8] != b"n+2\0" {
        return Err(VolumeError::NotNifti(
            "sizeof_hdr says NIfTI-2 but the magic is not 'n+2'".into(),
        ));
    }
    let arr8 = |o: usize| -> [u8; 8] { b[o..o + 8].try_into().expect("8 bytes") };
    let i64_at = |o: usize| {
        if big {
            i64::from_be_bytes(arr8(o))
        } else {
            i64::from_le_bytes(arr8(o))
        }
    };
    let f64_at = |o: usize| {
        if big {
            f64::from_be_bytes(arr8(o))
        } else {
            f64::from_le_bytes(arr8(o))
        }
    };
    let i32_at = |o: usize| {
        let a: [u8; 4] = b[o..o + 4].try_into().expect("4 bytes");
        i64::from(if big {
            i32::from_be_bytes(a)
        } else {
            i32::from_le_bytes(a)
        })
    };
    let i16_at = |o: usize| {
        let a: [u8; 2] = b[o..o + 2].try_into().expect("2 bytes");
        i64::from(if big {
            i16::from_be_bytes(a)
        } else {
            i16::from_le_bytes(a)
        })
    };
    let raw = RawHeader {
        version: 2,
        big_endian: big,
        dim: (0..8).map(|i| i64_at(16 + 8 * i)).collect(),
        datatype: i16_at(12),
        pixdim: (0..8).map(|i| f64_at(104 + 8 * i)).collect(),
        vox_offset: i64_at(168) as f64,
        scl_slope: f64_at(176),
        scl_inter: f64_at(184),
        qform_code: i32_at(344),
        sform_code: i32_at(348),
        quatern: [f64_at(352), f64_at(360), f64_at(368)],
        qoffset: [f64_at(376), f64_at(384), f64_at(392)],
        srow: [0, 1, 2].map(|r| [0, 1, 2, 3].map(|c| f64_at(400 + 32 * r + 8 * c))),
        header_bytes: 540,
    };
    raw.finish()
}

/// Header fields of either version, widened.
struct RawHeader {
    version: u8,
    big_endian: bool,
    dim: Vec<i64>,
    datatype: i64,
    pixdim: Vec<f64>,
    vox_offset: f64,
    scl_slope: f64,
    scl_inter: f64,
    qform_code: i64,
    sform_code: i64,
    quatern: [f64; 3],
    qoffset: [f64; 3],
    srow: [[f64; 4]; 3],
    header_bytes: u64,
}

impl RawHeader {
    fn finish(self) -> Result<Header, VolumeError> {
        let ndim = self.dim[0];
        if !(1..=7).contains(&ndim) {
            return Err(VolumeError::BadHeader(format!(
                "dim[0] (number of dimensions) is {ndim}, not 1..7"
            )));
        }
        let dims = &self.dim[1..=ndim as usize];
        if let Some((i, d)) = dims.iter().enumerate().find(|&(_, &d)| d <= 0) {
            return Err(VolumeError::BadHeader(format!(
                "dim[{}] is {d}; every dimension must be at least 1",
                i + 1
            )));
        }
        if let Some((i, d)) = dims.iter().enumerate().skip(4).find(|&(_, &d)| d > 1) {
            return Err(VolumeError::Unsupported(format!(
                "dim[{}] is {d}: volumes with more than 4 dimensions are not served",
                i + 1
            )));
        }
        let get = |i: usize| dims.get(i).copied().unwrap_or(1);
        let to_usize = |d: i64| {
            usize::try_from(d)
                .map_err(|_| VolumeError::TooLarge(format!("dimension {d} is too large")))
        };
        let spatial = [to_usize(get(0))?, to_usize(get(1))?, to_usize(get(2))?];
        let channels = to_usize(get(3))?;
        // NIfTI-2 dims are i64: their product can overflow u64, and every later size check
        // (and `Header::voxels`) relies on it not doing so.
        spatial
            .iter()
            .chain([&channels])
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
            .ok_or_else(|| {
                VolumeError::TooLarge(format!(
                    "the header's dimensions {}x{}x{}x{channels} overflow a voxel count",
                    spatial[0], spatial[1], spatial[2]
                ))
            })?;
        let dtype = Dtype::from_code(self.datatype).ok_or_else(|| {
            VolumeError::Unsupported(format!(
                "voxel datatype {} (served: uint8, int8, int16, uint16, int32, uint32, int64, uint64, float32, float64)",
                datatype_name(self.datatype)
            ))
        })?;
        if !self.vox_offset.is_finite()
            || self.vox_offset < 0.0
            || self.vox_offset > (self.header_bytes + MAX_EXTENSION_BYTES) as f64
        {
            return Err(VolumeError::BadHeader(format!(
                "vox_offset {} is outside {}..={}",
                self.vox_offset,
                self.header_bytes,
                self.header_bytes + MAX_EXTENSION_BYTES
            )));
        }
        // nibabel reads single files with vox_offset 0 from the end of the header.
        let vox_offset = (self.vox_offset as u64).max(self.header_bytes);
        let pix = |i: usize| {
            let p = self.pixdim.get(i).copied().unwrap_or(1.0).abs();
            if p.is_finite() && p > 0.0 { p } else { 1.0 }
        };
        let pixdim = [pix(1), pix(2), pix(3)];
        // nibabel: a zero or non-finite slope means "not scaled"; a NaN intercept is 0.
        let (scl_slope, scl_inter) = if self.scl_slope.is_finite() && self.scl_slope != 0.0 {
            let inter = if self.scl_inter.is_finite() {
                self.scl_inter
            } else {
                0.0
            };
            (self.scl_slope, inter)
        } else {
            (1.0, 0.0)
        };
        let (affine, affine_source) = self.affine(spatial, pixdim);
        Ok(Header {
            version: self.version,
            big_endian: self.big_endian,
            spatial,
            channels,
            dtype,
            vox_offset,
            pixdim,
            scl_slope,
            scl_inter,
            affine,
            affine_source,
            header_bytes: self.header_bytes,
        })
    }

    /// nibabel's `get_best_affine`: sform if `sform_code > 0`, else qform if `qform_code > 0`,
    /// else the Analyze-style affine from pixdim (x flipped, centred).
    fn affine(&self, spatial: [usize; 3], zooms: [f64; 3]) -> ([[f64; 4]; 4], AffineSource) {
        let finite = |m: &[[f64; 4]; 4]| m.iter().flatten().all(|v| v.is_finite());
        if self.sform_code > 0 {
            let s = self.srow;
            let m = [s[0], s[1], s[2], [0.0, 0.0, 0.0, 1.0]];
            if finite(&m) {
                return (m, AffineSource::Sform);
            }
        }
        if self.qform_code > 0 {
            let [b, c, d] = self.quatern;
            let a = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
            let r = [
                [
                    a * a + b * b - c * c - d * d,
                    2.0 * (b * c - a * d),
                    2.0 * (b * d + a * c),
                ],
                [
                    2.0 * (b * c + a * d),
                    a * a + c * c - b * b - d * d,
                    2.0 * (c * d - a * b),
                ],
                [
                    2.0 * (b * d - a * c),
                    2.0 * (c * d + a * b),
                    a * a + d * d - c * c - b * b,
                ],
            ];
            let qfac = if self.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
            let z = [zooms[0], zooms[1], zooms[2] * qfac];
            let mut m = [[0.0; 4]; 4];
            for i in 0..3 {
                for j in 0..3 {
                    m[i][j] = r[i][j] * z[j];
                }
                m[i][3] = self.qoffset[i];
            }
            m[3][3] = 1.0;
            if finite(&m) {
                return (m, AffineSource::Qform);
            }
        }
        let mut m = [[0.0; 4]; 4];
        for i in 0..3 {
            m[i][i] = zooms[i];
            m[i][3] = -((spatial[i] as f64 - 1.0) / 2.0) * zooms[i];
        }
        m[0][0] = -m[0][0];
        m[0][3] = -m[0][3];
        m[3][3] = 1.0;
        (m, AffineSource::Pixdim)
    }
}

/// nibabel's `aff2axcodes` for the usual labels: for each voxel axis, the world axis it runs
/// closest to and its direction (`R`/`L`, `A`/`P`, `S`/`I`).
pub fn axcodes(affine: &[[f64; 4]; 4]) -> [char; 3] {
    // Greedy by magnitude: the strongest (voxel axis, world axis) pair first, so two voxel axes
    // never claim the same world axis.
    let mut pairs: Vec<(f64, usize, usize)> = Vec::with_capacity(9);
    for (w, row) in affine.iter().take(3).enumerate() {
        for (v, &x) in row.iter().take(3).enumerate() {
            let norm = (0..3).map(|k| affine[k][v].powi(2)).sum::<f64>().sqrt();
            pairs.push((if norm > 0.0 { x.abs() / norm } else { 0.0 }, v, w));
        }
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut out = ['?'; 3];
    let mut used_w = [false; 3];
    for (_, v, w) in pairs {
        if out[v] != '?' || used_w[w] {
            continue;
        }
        used_w[w] = true;
        let positive = affine[w][v] >= 0.0;
        out[v] = match (w, positive) {
            (0, true) => 'R',
            (0, false) => 'L',
            (1, true) => 'A',
            (1, false) => 'P',
            (2, true) => 'S',
            _ => 'I',
        };
    }
    out
}

fn decode_from<R: Read>(r: &mut R, limits: &VolumeLimits) -> Result<Volume, VolumeError> {
    let header = read_header_from(r)?;
    let voxels = header.voxels();
    let data_bytes = voxels
        .checked_mul(header.dtype.size() as u64)
        .ok_or_else(|| VolumeError::TooLarge("the header's dimensions overflow".into()))?;
    let [x, y, z] = header.spatial;
    if voxels > limits.max_voxels {
        return Err(VolumeError::TooLarge(format!(
            "the header claims {x}x{y}x{z}x{} = {voxels} voxels; this server decodes at most {} (--max-voxels)",
            header.channels, limits.max_voxels
        )));
    }
    let total = header.vox_offset + data_bytes;
    if total > limits.max_bytes {
        return Err(VolumeError::TooLarge(format!(
            "the header says the voxels end at byte {total}; this server decodes at most {} bytes (--max-volume-mb)",
            limits.max_bytes
        )));
    }
    // Skip extensions without keeping them.
    let skip = header.vox_offset - header.header_bytes;
    let skipped = std::io::copy(&mut r.by_ref().take(skip), &mut std::io::sink())
        .map_err(|e| io_error(e, "inside the extensions"))?;
    if skipped < skip {
        return Err(VolumeError::Truncated(format!(
            "the header puts the voxels at byte {} but the file has {} bytes",
            header.vox_offset,
            header.header_bytes + skipped
        )));
    }
    let n = usize::try_from(voxels).map_err(|_| VolumeError::TooLarge("too many voxels".into()))?;
    let swap = header.big_endian != cfg!(target_endian = "big");
    macro_rules! read_typed {
        ($t:ty, $variant:ident) => {{
            let mut v: Vec<$t> = vec![<$t>::default(); n];
            read_voxels(
                r,
                bytemuck::cast_slice_mut(&mut v),
                data_bytes,
                header.vox_offset,
            )?;
            if swap {
                swap_bytes(bytemuck::cast_slice_mut(&mut v), std::mem::size_of::<$t>());
            }
            Voxels::$variant(v)
        }};
    }
    let voxels = match header.dtype {
        Dtype::U8 => read_typed!(u8, U8),
        Dtype::I8 => read_typed!(i8, I8),
        Dtype::I16 => read_typed!(i16, I16),
        Dtype::U16 => read_typed!(u16, U16),
        Dtype::I32 => read_typed!(i32, I32),
        Dtype::U32 => read_typed!(u32, U32),
        Dtype::I64 => read_typed!(i64, I64),
        Dtype::U64 => read_typed!(u64, U64),
        Dtype::F32 => read_typed!(f32, F32),
        Dtype::F64 => read_typed!(f64, F64),
    };
    Ok(Volume { header, voxels })
}

/// Fills `buf` from `r`, reporting how much was there when the file ends early.
fn read_voxels<R: Read>(
    r: &mut R,
    buf: &mut [u8],
    want: u64,
    offset: u64,
) -> Result<(), VolumeError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => {
                return Err(VolumeError::Truncated(format!(
                    "the header promises {want} bytes of voxels from byte {offset}, the file holds {got}"
                )));
            }
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(VolumeError::Truncated(format!(
                    "the gzip stream ends after {got} of {want} bytes of voxels"
                )));
            }
            Err(e) => return Err(VolumeError::Gzip(e.to_string())),
        }
    }
    Ok(())
}

fn swap_bytes(bytes: &mut [u8], width: usize) {
    if width > 1 {
        bytes.chunks_exact_mut(width).for_each(<[u8]>::reverse);
    }
}

/// Whether `bytes` look like a gzip stream.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// Element types we write to NIfTI responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutType {
    F32,
    U8,
}

/// A single-file NIfTI-1 (little endian): header, 4 empty extension bytes, voxels.
/// `dims` is `[X, Y, Z]` or `[X, Y, Z, C]`; `data` is already in file order (x fastest).
/// Writes the same affine as sform and (as far as a rotation allows) qform, code 2 (aligned)
/// unless `code` says otherwise; pixdim holds the affine's column norms.
#[allow(
    clippy::needless_range_loop,
    reason = "header offsets and matrix indices read best as indices"
)]
pub fn encode_nifti1(
    dims: &[usize],
    affine: &[[f64; 4]; 4],
    ty: OutType,
    data: &[u8],
    code: i16,
) -> Vec<u8> {
    let mut h = vec![0u8; 352];
    let put_i16 = |h: &mut [u8], o: usize, v: i16| h[o..o + 2].copy_from_slice(&v.to_le_bytes());
    let put_i32 = |h: &mut [u8], o: usize, v: i32| h[o..o + 4].copy_from_slice(&v.to_le_bytes());
    let put_f32 = |h: &mut [u8], o: usize, v: f32| h[o..o + 4].copy_from_slice(&v.to_le_bytes());
    put_i32(&mut h, 0, 348);
    put_i16(&mut h, 40, dims.len() as i16);
    for (i, &d) in dims.iter().enumerate() {
        put_i16(&mut h, 42 + 2 * i, i16::try_from(d).unwrap_or(i16::MAX));
    }
    for i in dims.len()..7 {
        put_i16(&mut h, 42 + 2 * i, 1);
    }
    let (code_ty, bitpix) = match ty {
        OutType::F32 => (16, 32),
        OutType::U8 => (2, 8),
    };
    put_i16(&mut h, 70, code_ty);
    put_i16(&mut h, 72, bitpix);
    let zooms: Vec<f64> = (0..3)
        .map(|j| (0..3).map(|i| affine[i][j].powi(2)).sum::<f64>().sqrt())
        .collect();
    let (quat, qfac) = quaternion(affine, &zooms);
    put_f32(&mut h, 76, qfac as f32);
    for j in 0..3 {
        put_f32(&mut h, 80 + 4 * j, zooms[j] as f32);
    }
    for j in 3..8 {
        put_f32(&mut h, 80 + 4 * j, 1.0);
    }
    put_f32(&mut h, 108, 352.0);
    put_f32(&mut h, 112, 1.0);
    put_f32(&mut h, 116, 0.0);
    h[123] = 2 | 8; // mm, seconds
    let descrip = b"medserve";
    h[148..148 + descrip.len()].copy_from_slice(descrip);
    put_i16(&mut h, 252, code);
    put_i16(&mut h, 254, code);
    for (k, q) in quat.iter().enumerate() {
        put_f32(&mut h, 256 + 4 * k, *q as f32);
    }
    for k in 0..3 {
        put_f32(&mut h, 268 + 4 * k, affine[k][3] as f32);
    }
    for (r, off) in [(0, 280), (1, 296), (2, 312)] {
        for c in 0..4 {
            put_f32(&mut h, off + 4 * c, affine[r][c] as f32);
        }
    }
    h[344..348].copy_from_slice(b"n+1\0");
    let mut out = Vec::with_capacity(352 + data.len());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

/// The qform quaternion `(b, c, d)` and qfac of an affine, as `nifti_mat44_to_quatern` does
/// (the rotation is orthogonalised first, so shears are dropped from the qform only).
fn quaternion(affine: &[[f64; 4]; 4], zooms: &[f64]) -> ([f64; 3], f64) {
    let mut r = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            r[i][j] = if zooms[j] > 0.0 {
                affine[i][j] / zooms[j]
            } else if i == j {
                1.0
            } else {
                0.0
            };
        }
    }
    let det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1])
        - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
        + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
    let qfac = if det < 0.0 { -1.0 } else { 1.0 };
    if qfac < 0.0 {
        for row in &mut r {
            row[2] = -row[2];
        }
    }
    let a = r[0][0] + r[1][1] + r[2][2] + 1.0;
    let (a, b, c, d) = if a > 0.5 {
        let a = 0.5 * a.sqrt();
        (
            a,
            0.25 * (r[2][1] - r[1][2]) / a,
            0.25 * (r[0][2] - r[2][0]) / a,
            0.25 * (r[1][0] - r[0][1]) / a,
        )
    } else {
        let xd = 1.0 + r[0][0] - (r[1][1] + r[2][2]);
        let yd = 1.0 + r[1][1] - (r[0][0] + r[2][2]);
        let zd = 1.0 + r[2][2] - (r[0][0] + r[1][1]);
        if xd > 1.0 {
            let b = 0.5 * xd.sqrt();
            (
                0.25 * (r[2][1] - r[1][2]) / b,
                b,
                0.25 * (r[0][1] + r[1][0]) / b,
                0.25 * (r[0][2] + r[2][0]) / b,
            )
        } else if yd > 1.0 {
            let c = 0.5 * yd.sqrt();
            (
                0.25 * (r[0][2] - r[2][0]) / c,
                0.25 * (r[0][1] + r[1][0]) / c,
                c,
                0.25 * (r[1][2] + r[2][1]) / c,
            )
        } else {
            let d = 0.5 * zd.max(0.0).sqrt();
            let d = if d > 0.0 { d } else { 1.0 };
            (
                0.25 * (r[1][0] - r[0][1]) / d,
                0.25 * (r[0][2] + r[2][0]) / d,
                0.25 * (r[1][2] + r[2][1]) / d,
                d,
            )
        }
    };
    // The quaternion and its negation are the same rotation; NIfTI stores a >= 0.
    let s = if a < 0.0 { -1.0 } else { 1.0 };
    ([b * s, c * s, d * s], qfac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> VolumeLimits {
        VolumeLimits {
            max_voxels: 1 << 24,
            max_bytes: 1 << 28,
        }
    }

    fn sample(dims: &[usize], ty: OutType, data: &[u8]) -> Vec<u8> {
        let aff = [
            [-0.8, 0.0, 0.0, 10.0],
            [0.0, 0.8, 0.0, -20.0],
            [0.0, 0.0, 2.5, 30.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        encode_nifti1(dims, &aff, ty, data, 1)
    }

    #[test]
    fn round_trip_and_header_facts() {
        let data: Vec<u8> = (0..24).collect();
        let bytes = sample(&[2, 3, 4], OutType::U8, &data);
        let v = decode(&bytes, &limits()).unwrap();
        assert_eq!(v.header.spatial, [2, 3, 4]);
        assert_eq!(v.header.channels, 1);
        assert_eq!(v.header.orientation(), ['L', 'A', 'S']);
        assert_eq!(v.header.affine_source, AffineSource::Sform);
        assert_eq!(v.voxels, Voxels::U8(data));
        // The qform we write is the same transform.
        let mut q = bytes.clone();
        q[254..256].copy_from_slice(&0i16.to_le_bytes());
        let vq = decode(&q, &limits()).unwrap();
        assert_eq!(vq.header.affine_source, AffineSource::Qform);
        for i in 0..4 {
            for j in 0..4 {
                assert!(
                    (vq.header.affine[i][j] - v.header.affine[i][j]).abs() < 1e-5,
                    "{:?}",
                    vq.header.affine
                );
            }
        }
    }

    #[test]
    fn gzip_truncated_and_limits() {
        let data = vec![7u8; 4000];
        let raw = sample(&[20, 20, 10], OutType::U8, &data);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &raw).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(decode(&gz, &limits()).unwrap().voxels, Voxels::U8(data));
        let e = decode(&gz[..gz.len() / 2], &limits()).unwrap_err();
        assert!(matches!(e, VolumeError::Truncated(_)), "{e}");
        let e = decode(&raw[..1000], &limits()).unwrap_err();
        assert!(matches!(e, VolumeError::Truncated(_)), "{e}");
        let small = VolumeLimits {
            max_voxels: 100,
            max_bytes: 1 << 20,
        };
        assert!(matches!(decode(&gz, &small), Err(VolumeError::TooLarge(_))));
    }

    #[test]
    fn hostile_headers() {
        let base = sample(&[2, 2, 2], OutType::U8, &[0; 8]);
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = base.clone();
            f(&mut b);
            decode(&b, &limits()).unwrap_err().to_string()
        };
        let e = with(&|b| b[42..44].copy_from_slice(&(-3i16).to_le_bytes()));
        assert!(e.contains("dim[1] is -3"), "{e}");
        let e = with(&|b| b[70..72].copy_from_slice(&1536i16.to_le_bytes()));
        assert!(e.contains("float128"), "{e}");
        let e = with(&|b| {
            for i in 0..3 {
                b[42 + 2 * i..44 + 2 * i].copy_from_slice(&i16::MAX.to_le_bytes());
            }
        });
        assert!(e.contains("voxels"), "{e}");
        let e = with(&|b| b[108..112].copy_from_slice(&1e12f32.to_le_bytes()));
        assert!(e.contains("vox_offset"), "{e}");
        let e = with(&|b| b[0..4].copy_from_slice(b"GIF8"));
        assert!(e.contains("not a NIfTI"), "{e}");
    }

    #[test]
    fn big_endian_and_scaling() {
        // A big-endian int16 NIfTI-1 by hand: swap every field we set.
        let mut b = sample(&[2, 1, 1], OutType::U8, &[]);
        let be16 = |b: &mut Vec<u8>, o: usize| {
            let v = i16::from_le_bytes([b[o], b[o + 1]]);
            b[o..o + 2].copy_from_slice(&v.to_be_bytes());
        };
        let be32 = |b: &mut Vec<u8>, o: usize| {
            let v: [u8; 4] = b[o..o + 4].try_into().unwrap();
            b[o..o + 4].copy_from_slice(&[v[3], v[2], v[1], v[0]]);
        };
        b[70..72].copy_from_slice(&4i16.to_le_bytes());
        b[72..74].copy_from_slice(&16i16.to_le_bytes());
        b[112..116].copy_from_slice(&2.0f32.to_le_bytes());
        b[116..120].copy_from_slice(&(-1.0f32).to_le_bytes());
        be32(&mut b, 0);
        for o in (40..56).step_by(2).chain([70, 72, 252, 254]) {
            be16(&mut b, o);
        }
        for o in (76..124).step_by(4).chain((256..344).step_by(4)) {
            if o != 120 {
                be32(&mut b, o);
            }
        }
        b.extend_from_slice(&300i16.to_be_bytes());
        b.extend_from_slice(&(-5i16).to_be_bytes());
        let v = decode(&b, &limits()).unwrap();
        assert!(v.header.big_endian);
        assert_eq!(v.voxels, Voxels::I16(vec![300, -5]));
        assert_eq!((v.header.scl_slope, v.header.scl_inter), (2.0, -1.0));
    }

    #[test]
    fn every_served_dtype_decodes_to_its_values() {
        // (datatype code, bitpix, little-endian bytes of [1, -2 or max, 3], expected floats)
        let cases: [(i16, i16, Vec<u8>, [f64; 3]); 10] = [
            (2, 8, vec![1, 255, 3], [1.0, 255.0, 3.0]),
            (256, 8, vec![1, 0xfe, 3], [1.0, -2.0, 3.0]),
            (
                4,
                16,
                [1i16, -2, 3].iter().flat_map(|v| v.to_le_bytes()).collect(),
                [1.0, -2.0, 3.0],
            ),
            (
                512,
                16,
                [1u16, 65535, 3]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                [1.0, 65535.0, 3.0],
            ),
            (
                8,
                32,
                [1i32, -2, 3].iter().flat_map(|v| v.to_le_bytes()).collect(),
                [1.0, -2.0, 3.0],
            ),
            (
                768,
                32,
                [1u32, u32::MAX, 3]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                [1.0, 4294967295.0, 3.0],
            ),
            (
                1024,
                64,
                [1i64, -2, 3].iter().flat_map(|v| v.to_le_bytes()).collect(),
                [1.0, -2.0, 3.0],
            ),
            (
                1280,
                64,
                [1u64, 1 << 40, 3]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                [1.0, (1u64 << 40) as f64, 3.0],
            ),
            (
                16,
                32,
                [1f32, -2.5, f32::NAN]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                [1.0, -2.5, f64::NAN],
            ),
            (
                64,
                64,
                [1f64, -2.5, 3.25]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                [1.0, -2.5, 3.25],
            ),
        ];
        for (code, bitpix, data, want) in cases {
            let mut b = sample(&[3, 1, 1], OutType::U8, &data);
            b[70..72].copy_from_slice(&code.to_le_bytes());
            b[72..74].copy_from_slice(&bitpix.to_le_bytes());
            let v = decode(&b, &limits()).unwrap_or_else(|e| panic!("{code}: {e}"));
            assert_eq!(v.header.dtype.size() * 8, bitpix as usize);
            let got = crate::imaging::volume::image_f32(&v, None, crate::imaging::ResizeMode::Area);
            for (g, w) in got.iter().zip(want) {
                assert!(
                    (w.is_nan() && g.is_nan()) || f64::from(*g) == w as f32 as f64,
                    "{code}: {got:?} vs {want:?}"
                );
            }
        }
    }

    #[test]
    fn nan_slope_means_unscaled() {
        let mut b = sample(&[1, 1, 1], OutType::U8, &[5]);
        b[112..116].copy_from_slice(&f32::NAN.to_le_bytes());
        let v = decode(&b, &limits()).unwrap();
        assert!(!v.header.is_scaled());
    }

    #[test]
    fn orientation_codes() {
        let lps = [
            [-1.0, 0.0, 0.0, 0.0],
            [0.0, -1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        assert_eq!(axcodes(&lps), ['L', 'P', 'S']);
        let swapped = [
            [0.0, 0.9, 0.1, 0.0],
            [0.0, 0.1, -1.0, 0.0],
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        assert_eq!(axcodes(&swapped), ['S', 'R', 'P']);
    }
}
