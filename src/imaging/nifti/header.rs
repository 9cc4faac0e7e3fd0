//! Either header version -> [`Header`]: NIfTI-1 through the `nifti` crate, NIfTI-2 by hand,
//! both byte orders. Every size the header states (dimensions, their product, `vox_offset`) is
//! checked here, so the reader can allocate from a [`Header`] without checking again; scaling,
//! voxel sizes and the choice of affine follow nibabel.

use std::io::Read;

use super::{AffineSource, Dtype, Header, VolumeError, affine, io_error};

/// Extensions between the header and the voxels larger than this are refused: real ones are
/// a few KiB, and skipping them costs inflating them.
const MAX_EXTENSION_BYTES: u64 = 64 << 20;

/// Reads and checks the header at the start of `r`, leaving `r` just after it.
pub(super) fn read_from<R: Read>(r: &mut R) -> Result<Header, VolumeError> {
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

/// NIfTI-1 through the `nifti` crate, which handles both byte orders.
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

/// NIfTI-2 by hand (the `nifti` crate has no reader for it), at the standard's offsets.
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

/// How a refusal names a datatype code we do not decode.
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
    /// Checks the fields and applies nibabel's defaults; errors come in the order the fields
    /// are checked (shape, datatype, vox_offset).
    fn finish(self) -> Result<Header, VolumeError> {
        let (spatial, channels) = self.shape()?;
        let dtype = self.dtype()?;
        let vox_offset = self.vox_offset()?;
        let pixdim = self.zooms();
        let (scl_slope, scl_inter) = self.scaling();
        let (affine, affine_source) = self.best_affine(spatial, pixdim);
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

    /// `([X, Y, Z], channels)`, refusing non-positive dimensions, more than 4 non-trivial axes
    /// and sizes whose product overflows.
    fn shape(&self) -> Result<([usize; 3], usize), VolumeError> {
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
        Ok((spatial, channels))
    }

    /// The voxel type; an error names a datatype we do not serve.
    fn dtype(&self) -> Result<Dtype, VolumeError> {
        Dtype::from_code(self.datatype).ok_or_else(|| {
            VolumeError::Unsupported(format!(
                "voxel datatype {} (served: uint8, int8, int16, uint16, int32, uint32, int64, uint64, float32, float64)",
                datatype_name(self.datatype)
            ))
        })
    }

    /// Where the voxels start in the decompressed file, at most [`MAX_EXTENSION_BYTES`] past
    /// the header.
    fn vox_offset(&self) -> Result<u64, VolumeError> {
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
        Ok((self.vox_offset as u64).max(self.header_bytes))
    }

    /// Voxel sizes (absolute values); a zero or non-finite pixdim counts as 1.
    fn zooms(&self) -> [f64; 3] {
        let pix = |i: usize| {
            let p = self.pixdim.get(i).copied().unwrap_or(1.0).abs();
            if p.is_finite() && p > 0.0 { p } else { 1.0 }
        };
        [pix(1), pix(2), pix(3)]
    }

    /// `(scl_slope, scl_inter)`; nibabel: a zero or non-finite slope means "not scaled", a NaN
    /// intercept is 0.
    fn scaling(&self) -> (f64, f64) {
        if self.scl_slope.is_finite() && self.scl_slope != 0.0 {
            let inter = if self.scl_inter.is_finite() {
                self.scl_inter
            } else {
                0.0
            };
            (self.scl_slope, inter)
        } else {
            (1.0, 0.0)
        }
    }

    /// nibabel's `get_best_affine`: sform if `sform_code > 0`, else qform if `qform_code > 0`,
    /// else the Analyze-style affine from pixdim (x flipped, centred). A matrix with a
    /// non-finite entry falls through to the next.
    fn best_affine(&self, spatial: [usize; 3], zooms: [f64; 3]) -> ([[f64; 4]; 4], AffineSource) {
        let finite = |m: &[[f64; 4]; 4]| m.iter().flatten().all(|v| v.is_finite());
        if self.sform_code > 0 {
            let s = self.srow;
            let m = [s[0], s[1], s[2], [0.0, 0.0, 0.0, 1.0]];
            if finite(&m) {
                return (m, AffineSource::Sform);
            }
        }
        if self.qform_code > 0 {
            let qfac = if self.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
            let m = affine::qform_matrix(self.quatern, self.qoffset, zooms, qfac);
            if finite(&m) {
                return (m, AffineSource::Qform);
            }
        }
        (affine::pixdim_matrix(spatial, zooms), AffineSource::Pixdim)
    }
}
