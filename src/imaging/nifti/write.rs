//! The NIfTI-1 writer for responses: one little-endian single file (header, an empty
//! extension flag, voxels) from an affine and voxels already in file order. Here rather than in
//! the `nifti` crate, whose writer only writes to file paths and panics on negative pixdims.

use super::affine::qform_quaternion;

/// Element types we write to NIfTI responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutType {
    F32,
    U8,
}

/// A single-file NIfTI-1 (little endian): header, 4 empty extension bytes, voxels.
/// `dims` is `[X, Y, Z]` or `[X, Y, Z, C]`; `data` is already in file order (x fastest).
/// Writes the same affine as sform and (as far as a rotation allows) qform, both with `code`
/// (responses use 2, aligned); pixdim holds the affine's column norms.
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
    let (quat, qfac) = qform_quaternion(affine, &zooms);
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
