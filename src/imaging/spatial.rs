//! Deterministic spatial transforms with MONAI's semantics: `Flip(spatial_axis)` and the 2D
//! `Rotate(angle, keep_size=True, mode="bilinear", padding_mode="border",
//! align_corners=False)`. Pure functions on channel-first arrays; no I/O.
//!
//! Both work on the array *as MONAI holds it*: callers that keep a different axis order (the
//! 2D route serves `(C, H, W)` while MONAI's PNG reader gives `(C, W, H)`) pass a permuted view
//! and permute the result back, so axes and angles mean what they mean to MONAI.

use ndarray::{Array3, ArrayD, ArrayView3, ArrayViewD, Axis};

/// A set of spatial axes (bit `k` = spatial axis `k`, i.e. array axis `k + 1` of a
/// channel-first array), as MONAI's `Flip(spatial_axis=...)` takes them. Order does not
/// matter to a flip, so a set is the whole meaning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SpatialAxes(u8);

impl SpatialAxes {
    /// No axis: no flip.
    pub const NONE: SpatialAxes = SpatialAxes(0);

    /// Every spatial axis of a `rank`-D image (MONAI's `spatial_axis=None`).
    pub fn all(rank: usize) -> SpatialAxes {
        SpatialAxes(((1u16 << rank.min(8)) - 1) as u8)
    }

    /// Adds spatial axis `k` (< 8); false when it was already there.
    pub fn insert(&mut self, k: usize) -> bool {
        let bit = 1u8 << k;
        let fresh = self.0 & bit == 0;
        self.0 |= bit;
        fresh
    }

    /// True when no axis is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The spatial axes, ascending.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..8).filter(move |k| self.0 & (1 << k) != 0)
    }

    /// Canonical text: the axes ascending, comma-separated (`0,1`); empty for none.
    pub fn canonical(self) -> String {
        self.iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// MONAI `Flip(spatial_axis=axes)` on a channel-first array: reverses each named spatial axis
/// (array axis `k + 1`). Axes past the array's rank are ignored (callers validate them).
pub fn flip<T: Clone>(a: ArrayViewD<'_, T>, axes: SpatialAxes) -> ArrayD<T> {
    let mut v = a;
    let rank = v.ndim();
    for k in axes.iter().filter(|k| k + 1 < rank) {
        v.invert_axis(Axis(k + 1));
    }
    v.as_standard_layout().into_owned()
}

/// The affine of a grid after `flip(axes)`, as MONAI's `Flip` updates a MetaTensor's affine:
/// `affine @ F`, with `F` reversing voxel axis `k` (`i -> (n_k - 1) - i`) on a grid `grid`.
/// The voxels move, their world positions do not.
pub fn flipped_affine(
    affine: &[[f64; 4]; 4],
    grid: [usize; 3],
    axes: SpatialAxes,
) -> [[f64; 4]; 4] {
    let mut out = *affine;
    for k in axes.iter().filter(|&k| k < 3) {
        let n1 = grid[k] as f64 - 1.0;
        for row in out.iter_mut() {
            // column 3 += column k * (n_k - 1); column k = -column k
            row[3] += row[k] * n1;
            row[k] = -row[k];
        }
    }
    out
}

/// `torch.linspace(-1, 1, n) * (n - 1) / n` in float32, bit for bit as torch computes it on
/// the CPU (the first half as `fma(step, i, -1)`, the second half from the end): the base
/// grid of `affine_grid(align_corners=False)`.
fn base_grid(n: usize) -> Vec<f32> {
    if n <= 1 {
        return vec![0.0; n];
    }
    let step = 2.0f32 / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            let l = if i < half {
                step.mul_add(i as f32, -1.0)
            } else {
                (-step).mul_add((n - 1 - i) as f32, 1.0)
            };
            l * (n - 1) as f32 / n as f32
        })
        .collect()
}

type Mat3 = [[f32; 3]; 3];

/// A 3x3 product in float32, each entry `(a0*b0 + a1*b1) + a2*b2` (torch's CPU order here).
fn matmul(a: &Mat3, b: &Mat3) -> Mat3 {
    let mut c = [[0.0f32; 3]; 3];
    for (i, row) in c.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (a[i][0] * b[0][j] + a[i][1] * b[1][j]) + a[i][2] * b[2][j];
        }
    }
    c
}

/// The `(2, 3)` float32 matrix MONAI hands to `torch.nn.functional.affine_grid` for
/// `Rotate(angle)` on spatial shape `(d0, d1)`, in torch's `(x = d1, y = d0)` order.
///
/// MONAI 1.6.1 (`transforms/spatial/functional.py::rotate`): `T = shift @ R @ shift_1` in
/// float64 numpy, `R = [[cos, -sin], [sin, cos]]`, `shift` = translate by `(d - 1) / 2`,
/// `shift_1` = its inverse; then `AffineTransform(normalized=False, reverse_indexing=True)`
/// (`networks/layers/spatial_transforms.py`) casts `T` to float32 and normalises it with
/// `to_norm_affine` (`networks/utils.py`): `S @ T @ inv(S)` in float32, with
/// `S = [[2/d, 0, 1/d - 1], ...]` (align_corners=False), then reverses the spatial axes.
fn rotation_theta(angle: f64, d0: usize, d1: usize) -> [[f32; 3]; 2] {
    let (s, c) = angle.sin_cos();
    let (cx, cy) = ((d0 as f64 - 1.0) / 2.0, (d1 as f64 - 1.0) / 2.0);
    let t: Mat3 = [
        [c as f32, -s as f32, ((c * -cx + -s * -cy) + cx) as f32],
        [s as f32, c as f32, ((s * -cx + c * -cy) + cy) as f32],
        [0.0, 0.0, 1.0],
    ];
    let norm = |d: usize| -> (f32, f32) {
        let d = d.max(1) as f64;
        ((2.0 / d) as f32, (1.0 / d - 1.0) as f32)
    };
    let ((a0, b0), (a1, b1)) = (norm(d0), norm(d1));
    let src: Mat3 = [[a0, 0.0, b0], [0.0, a1, b1], [0.0, 0.0, 1.0]];
    // np.linalg.inv of the float32 matrix (LAPACK in float32): 1/a and -b/a.
    let inv: Mat3 = [
        [1.0 / a0, 0.0, -b0 / a0],
        [0.0, 1.0 / a1, -b1 / a1],
        [0.0, 0.0, 1.0],
    ];
    let n = matmul(&matmul(&src, &t), &inv);
    [[n[1][1], n[1][0], n[1][2]], [n[0][1], n[0][0], n[0][2]]]
}

/// One source coordinate of `grid_sample(align_corners=False, padding_mode="border")`:
/// `fma(g + 1, size / 2, -0.5)` clipped to `[0, size - 1]` (NaN to 0), as torch's CPU kernel.
#[inline]
fn source_index(g: f32, size: usize) -> f32 {
    let v = (g + 1.0).mul_add(size as f32 / 2.0, -0.5);
    // max/min that turn NaN into 0, as torch's clip_coordinates does.
    let v = if v > 0.0 { v } else { 0.0 };
    let hi = (size - 1) as f32;
    if v < hi { v } else { hi }
}

/// MONAI `Rotate(angle, keep_size=True, mode="bilinear", padding_mode="border",
/// align_corners=False)` on a `(C, d0, d1)` array as MONAI holds it: every output pixel pulls
/// from the input at the pixel rotated by `angle` radians about the centre, bilinearly, the
/// border repeated outside. Float32 arithmetic in torch's order (affine_grid, then
/// grid_sample's fused multiply-adds), so results equal MONAI's to the last bit on the inputs
/// we tested.
pub fn rotate2d(a: ArrayView3<'_, f32>, angle: f64) -> Array3<f32> {
    let (ch, d0, d1) = a.dim();
    let mut out = Array3::<f32>::zeros((ch, d0, d1));
    if ch == 0 || d0 == 0 || d1 == 0 {
        return out;
    }
    let t = rotation_theta(angle, d0, d1);
    let (bx, by) = (base_grid(d1), base_grid(d0));
    for (h, &y) in by.iter().enumerate() {
        for (w, &x) in bx.iter().enumerate() {
            let gx = (x * t[0][0] + y * t[0][1]) + t[0][2];
            let gy = (x * t[1][0] + y * t[1][1]) + t[1][2];
            let ix = source_index(gx, d1);
            let iy = source_index(gy, d0);
            let (x0, y0) = (ix.floor(), iy.floor());
            let (we, ns) = (ix - x0, iy - y0);
            let (e, s) = (1.0 - we, 1.0 - ns);
            let (nw, ne, sw, se) = (s * e, s * we, ns * e, ns * we);
            let (xi, yi) = (x0 as usize, y0 as usize);
            // Neighbours past the edge contribute nothing (their weight is 0 there).
            let (x1ok, y1ok) = (xi + 1 < d1, yi + 1 < d0);
            for c in 0..ch {
                let v = |yy: usize, xx: usize| a[[c, yy, xx]];
                let mut acc = v(yi, xi) * nw;
                if x1ok {
                    acc = v(yi, xi + 1).mul_add(ne, acc);
                }
                if y1ok {
                    acc = v(yi + 1, xi).mul_add(sw, acc);
                }
                if x1ok && y1ok {
                    acc = v(yi + 1, xi + 1).mul_add(se, acc);
                }
                out[[c, h, w]] = acc;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array, IxDyn};

    #[test]
    fn axes_sets() {
        let mut s = SpatialAxes::NONE;
        assert!(s.is_empty());
        assert!(s.insert(1));
        assert!(!s.insert(1));
        assert!(s.insert(0));
        assert_eq!(s, SpatialAxes::all(2));
        assert_eq!(s.canonical(), "0,1");
        assert_eq!(SpatialAxes::all(3).canonical(), "0,1,2");
    }

    #[test]
    fn flip_reverses_spatial_axes_only() {
        let a = Array::from_shape_vec(IxDyn(&[2, 2, 3]), (0..12).collect::<Vec<i32>>()).unwrap();
        let mut ax = SpatialAxes::NONE;
        ax.insert(1);
        let f = flip(a.view(), ax);
        assert_eq!(
            f.as_slice().unwrap(),
            &[2, 1, 0, 5, 4, 3, 8, 7, 6, 11, 10, 9]
        );
        let f = flip(a.view(), SpatialAxes::all(2));
        assert_eq!(
            f.as_slice().unwrap(),
            &[5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6]
        );
        assert_eq!(flip(f.view(), SpatialAxes::all(2)), a);
    }

    #[test]
    fn flipped_affine_keeps_world_positions() {
        let aff = [
            [2.0, 0.0, 0.0, 10.0],
            [0.0, 3.0, 0.0, -5.0],
            [0.0, 0.0, 1.5, 1.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let mut ax = SpatialAxes::NONE;
        ax.insert(0);
        ax.insert(2);
        let f = flipped_affine(&aff, [4, 5, 6], ax);
        // voxel (0, j, 0) of the flipped grid is voxel (3, j, 5) of the original
        let world = |m: &[[f64; 4]; 4], v: [f64; 3]| {
            (0..3)
                .map(|r| m[r][0] * v[0] + m[r][1] * v[1] + m[r][2] * v[2] + m[r][3])
                .collect::<Vec<_>>()
        };
        assert_eq!(world(&f, [0.0, 2.0, 0.0]), world(&aff, [3.0, 2.0, 5.0]));
    }

    #[test]
    fn quarter_turns_of_a_square_move_pixels_exactly_enough() {
        let a = Array3::from_shape_fn((1, 4, 4), |(_, i, j)| (i * 4 + j) as f32);
        // A half turn of a square maps (i, j) -> (3 - i, 3 - j) up to float32 rounding.
        let r = rotate2d(a.view(), std::f64::consts::PI);
        for i in 0..4 {
            for j in 0..4 {
                assert!((r[[0, i, j]] - a[[0, 3 - i, 3 - j]]).abs() < 1e-4);
            }
        }
        // Angle 0 is MONAI's Rotate(0): a resampling that lands on the pixels (to rounding).
        let z = rotate2d(a.view(), 0.0);
        assert!(z.iter().zip(a.iter()).all(|(x, y)| (x - y).abs() < 1e-5));
    }

    #[test]
    fn base_grid_is_torch_linspace() {
        assert_eq!(base_grid(1), vec![0.0]);
        let g = base_grid(2);
        assert_eq!(g, vec![-0.5, 0.5]);
    }
}
