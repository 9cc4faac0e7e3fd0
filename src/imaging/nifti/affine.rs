//! Voxel-to-world matrices: the qform quaternion to a matrix and back (as niftilib's
//! `nifti_quatern_to_mat44` and `nifti_mat44_to_quatern`), the Analyze-style matrix from voxel
//! sizes alone, and orientation codes. Which matrix a header's affine is, is `header.rs`'s
//! choice; this file only computes them.

/// The qform: rotation from the quaternion `(b, c, d)` (with `a` implied, non-negative), times
/// the voxel sizes `zooms` (the third negated when `qfac` is -1), plus `qoffset`.
pub(super) fn qform_matrix(
    quatern: [f64; 3],
    qoffset: [f64; 3],
    zooms: [f64; 3],
    qfac: f64,
) -> [[f64; 4]; 4] {
    let [b, c, d] = quatern;
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
    let z = [zooms[0], zooms[1], zooms[2] * qfac];
    let mut m = [[0.0; 4]; 4];
    for i in 0..3 {
        for j in 0..3 {
            m[i][j] = r[i][j] * z[j];
        }
        m[i][3] = qoffset[i];
    }
    m[3][3] = 1.0;
    m
}

/// nibabel's Analyze-style affine, for headers with neither form: voxel sizes on the
/// diagonal, x flipped, the volume's centre at the origin.
pub(super) fn pixdim_matrix(spatial: [usize; 3], zooms: [f64; 3]) -> [[f64; 4]; 4] {
    let mut m = [[0.0; 4]; 4];
    for i in 0..3 {
        m[i][i] = zooms[i];
        m[i][3] = -((spatial[i] as f64 - 1.0) / 2.0) * zooms[i];
    }
    m[0][0] = -m[0][0];
    m[0][3] = -m[0][3];
    m[3][3] = 1.0;
    m
}

/// The qform quaternion `(b, c, d)` and qfac of an affine, close to `nifti_mat44_to_quatern`:
/// each column is divided by its zoom, but the rotation is not orthogonalised, so an affine
/// with shear gives an approximate qform (the sform written beside it stays exact).
pub(super) fn qform_quaternion(affine: &[[f64; 4]; 4], zooms: &[f64]) -> ([f64; 3], f64) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
