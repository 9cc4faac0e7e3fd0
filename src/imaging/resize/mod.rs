//! Resizing channel-first arrays the way MONAI's `Resize` does (through torch), one spatial
//! axis at a time. Every mode here is separable, so resizing axis by axis gives the same
//! numbers as torch's 2D/3D kernels up to float rounding.
//!
//! This file holds the entry points and the memory layout: `fused.rs` resizes the outer axes
//! in one streaming pass (across threads for big inputs), `plan.rs` says where each output
//! sample of one axis comes from and resizes contiguous lanes.

mod fused;
mod plan;

use ndarray::{ArrayD, ArrayViewD, Ix4, IxDyn};

use fused::{Level, PARALLEL_MIN, fused_parallel};
pub use plan::nearest_indices;
use plan::{Plan, resize_lanes};

/// Interpolation, named as in MONAI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeMode {
    /// MONAI's default: torch adaptive average pooling. Output `i` averages input
    /// `[floor(i*in/out), ceil((i+1)*in/out))`; windows overlap for non-integer ratios, and
    /// upsampling repeats values (it is not nearest-neighbour on every grid).
    Area,
    /// torch's legacy `nearest`: `src = min(floor(f32(i) * f32(in)/f32(out)), in - 1)` in
    /// float32 (not the exact rational, which differs for some sizes). The only mode for masks.
    Nearest,
    /// torch `bilinear`/`trilinear` with `align_corners=False`, no anti-aliasing (MONAI's
    /// defaults): linear along each axis from the source coordinate `(i + 0.5) * in/out - 0.5`.
    Linear,
}

impl ResizeMode {
    /// The MONAI name, for canonical strings.
    pub fn name(self, spatial_dims: usize) -> &'static str {
        match (self, spatial_dims) {
            (ResizeMode::Area, _) => "area",
            (ResizeMode::Nearest, _) => "nearest",
            (ResizeMode::Linear, 3) => "trilinear",
            (ResizeMode::Linear, _) => "bilinear",
        }
    }
}

/// Resizes the spatial axes (every axis after the first, which holds channels) to `spatial`.
/// Axes whose size already matches are left untouched, as MONAI does. The result is C-order.
///
/// # Panics
/// If `spatial` does not name one size per spatial axis or a size is zero (the caller
/// validates request parameters before calling).
pub fn resize(a: &ArrayD<f32>, spatial: &[usize], mode: ResizeMode) -> ArrayD<f32> {
    resize_from(a.view(), spatial, mode, |v| v)
}

/// [`resize`] of an array of any element type, converting each element with `conv` as it is
/// first read: a volume stays in its stored type (int16 CT is half the memory of float32) and
/// is never copied whole as float32 before shrinking. `a` may have any memory layout; a dense
/// one (C, F or any axis permutation, like a NIfTI volume viewed channel-first) is read in
/// place.
pub fn resize_from<T, F>(
    a: ArrayViewD<T>,
    spatial: &[usize],
    mode: ResizeMode,
    conv: F,
) -> ArrayD<f32>
where
    T: Copy + Sync,
    F: Fn(T) -> f32 + Sync,
{
    assert_eq!(a.ndim(), spatial.len() + 1, "one size per spatial axis");
    assert!(spatial.iter().all(|&s| s > 0), "sizes must be positive");
    let mut target = vec![a.shape()[0]];
    target.extend_from_slice(spatial);
    // Axes in memory order, outermost first.
    let mut axes: Vec<usize> = (0..a.ndim()).collect();
    axes.sort_by_key(|&i| (std::cmp::Reverse(a.strides()[i].unsigned_abs()), i));
    let dims: Vec<usize> = axes.iter().map(|&i| a.shape()[i]).collect();
    match a
        .as_slice_memory_order()
        .filter(|_| a.strides().iter().all(|&s| s >= 0))
    {
        Some(src) => resize_dense(src, dims, &axes, &target, mode, &conv, PARALLEL_MIN),
        None => {
            let owned = a.as_standard_layout();
            let src = owned.as_slice().expect("standard layout is contiguous");
            let identity: Vec<usize> = (0..a.ndim()).collect();
            resize_dense(
                src,
                a.shape().to_vec(),
                &identity,
                &target,
                mode,
                &conv,
                PARALLEL_MIN,
            )
        }
    }
}

/// Resizes one axis.
pub fn resize_axis(a: ArrayViewD<f32>, axis: usize, out: usize, mode: ResizeMode) -> ArrayD<f32> {
    let mut spatial = a.shape()[1..].to_vec();
    spatial[axis - 1] = out;
    resize_from(a, &spatial, mode, |v| v)
}

/// Resizes a dense buffer whose memory-order sizes are `dims` (outermost first) and whose
/// memory position `m` holds logical axis `axes[m]`, to the logical shape `target`.
///
/// The outer axes are resized together in one streaming pass (`fused.rs`): every input row is
/// converted and added into the output rows whose windows hold it, so the input is read once,
/// in order, and no full-size intermediate is allocated. The innermost (contiguous) axis is
/// resized last, on the already reduced rows.
fn resize_dense<T, F>(
    src: &[T],
    dims: Vec<usize>,
    axes: &[usize],
    target: &[usize],
    mode: ResizeMode,
    conv: &F,
    parallel_min: usize,
) -> ArrayD<f32>
where
    T: Copy + Sync,
    F: Fn(T) -> f32 + Sync,
{
    let last = dims.len() - 1;
    let out_dims: Vec<usize> = axes.iter().map(|&ax| target[ax]).collect();
    let levels: Vec<Level> = (0..dims.len())
        .map(|m| {
            let inner_in: usize = dims[m + 1..].iter().product();
            let inner_out: usize = if m == last {
                1
            } else {
                out_dims[m + 1..last].iter().product::<usize>() * dims[last]
            };
            let plan = (m != last && dims[m] != out_dims[m])
                .then(|| Plan::new(dims[m], out_dims[m], mode));
            Level::new(
                dims[m],
                if m == last { dims[m] } else { out_dims[m] },
                inner_in,
                inner_out,
                plan,
            )
        })
        .collect();
    let mut mid_dims = out_dims.clone();
    mid_dims[last] = dims[last];
    let mut mid = vec![0.0f32; mid_dims.iter().product()];
    if !mid.is_empty() {
        fused_parallel(&levels, src, &mut mid, conv, parallel_min);
    }
    let cur = if dims[last] == out_dims[last] {
        mid
    } else {
        resize_lanes(&mid, &mid_dims, out_dims[last], mode)
    };
    let shape: Vec<usize> = target.to_vec();
    let data = to_logical_order(&cur, &out_dims, axes);
    ArrayD::from_shape_vec(IxDyn(&shape), data).expect("sized from the target")
}

/// Rearranges a dense buffer from memory order (`dims[m]` is logical axis `axes[m]`) into the
/// logical C order. Tiled over the two axes that are innermost in the source and in the
/// destination, so both sides are read and written a cache line at a time (ndarray's
/// element-wise copy of a permuted view reads one of them with a large stride).
fn to_logical_order(src: &[f32], dims: &[usize], axes: &[usize]) -> Vec<f32> {
    let nd = dims.len();
    if axes.iter().enumerate().all(|(m, &ax)| m == ax) {
        return src.to_vec();
    }
    let mut shape = vec![0; nd];
    let mut s_stride = vec![0; nd];
    for (m, &ax) in axes.iter().enumerate() {
        shape[ax] = dims[m];
        s_stride[ax] = dims[m + 1..].iter().product::<usize>();
    }
    let mut d_stride = vec![1; nd];
    for ax in (0..nd.saturating_sub(1)).rev() {
        d_stride[ax] = d_stride[ax + 1] * shape[ax + 1];
    }
    let a = axes[nd - 1]; // contiguous in the source
    let b = nd - 1; // contiguous in the destination
    let mut dst = vec![0.0f32; src.len()];
    let others: Vec<usize> = (0..nd).filter(|&ax| ax != a && ax != b).collect();
    let mut idx = vec![0usize; others.len()];
    const T: usize = 16;
    loop {
        let base_s: usize = others
            .iter()
            .zip(&idx)
            .map(|(&ax, &i)| i * s_stride[ax])
            .sum();
        let base_d: usize = others
            .iter()
            .zip(&idx)
            .map(|(&ax, &i)| i * d_stride[ax])
            .sum();
        if a == b {
            let n = shape[a];
            dst[base_d..base_d + n].copy_from_slice(&src[base_s..base_s + n]);
        } else {
            for ta in (0..shape[a]).step_by(T) {
                for tb in (0..shape[b]).step_by(T) {
                    for i in ta..(ta + T).min(shape[a]) {
                        let (so, dof) = (base_s + i, base_d + i * d_stride[a]);
                        for j in tb..(tb + T).min(shape[b]) {
                            dst[dof + j] = src[so + j * s_stride[b]];
                        }
                    }
                }
            }
        }
        // Odometer over the other axes.
        let mut k = others.len();
        loop {
            if k == 0 {
                return dst;
            }
            k -= 1;
            idx[k] += 1;
            if idx[k] < shape[others[k]] {
                break;
            }
            idx[k] = 0;
        }
    }
}

/// Nearest-neighbour resize of the spatial axes of any element type (masks stay `u8`).
/// Returns a C-order array.
pub fn resize_nearest<T: Copy>(a: ArrayViewD<T>, spatial: &[usize]) -> ArrayD<T> {
    assert_eq!(a.ndim(), spatial.len() + 1, "one size per spatial axis");
    let mut shape = vec![a.shape()[0]];
    shape.extend_from_slice(spatial);
    let maps: Vec<Vec<usize>> = (1..a.ndim())
        .map(|ax| nearest_indices(a.shape()[ax], spatial[ax - 1]))
        .collect();
    if let Ok(a4) = a.view().into_dimensionality::<Ix4>() {
        // The common case (channel + 3 spatial axes) without a per-voxel index vector.
        let mut out = Vec::with_capacity(shape.iter().product());
        for c in 0..shape[0] {
            for &x in &maps[0] {
                for &y in &maps[1] {
                    for &z in &maps[2] {
                        out.push(a4[[c, x, y, z]]);
                    }
                }
            }
        }
        return ArrayD::from_shape_vec(IxDyn(&shape), out).expect("sized from shape");
    }
    ArrayD::from_shape_fn(IxDyn(&shape), |ix| {
        let mut src = ix.clone();
        for (k, m) in maps.iter().enumerate() {
            src[k + 1] = m[ix[k + 1]];
        }
        a[src]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn, ShapeBuilder};

    fn arr(v: &[f32]) -> ArrayD<f32> {
        ArrayD::from_shape_vec(IxDyn(&[1, v.len()]), v.to_vec()).unwrap()
    }

    #[test]
    fn area_windows_overlap_for_non_integer_ratios() {
        // 5 -> 3: windows [0,2) [1,4) [3,5)
        let r = resize(&arr(&[0., 1., 2., 3., 4.]), &[3], ResizeMode::Area);
        assert_eq!(r.as_slice().unwrap(), [0.5, 2.0, 3.5]);
    }

    #[test]
    fn area_keeps_nan_in_its_own_window() {
        let r = resize(&arr(&[f32::NAN, 1., 2., 3.]), &[2], ResizeMode::Area);
        assert!(r[[0, 0]].is_nan());
        assert_eq!(r[[0, 1]], 2.5);
    }

    #[test]
    fn nearest_uses_float32_scale() {
        // 3 -> 5: scale 0.6 -> floor(0, .6, 1.2, 1.8, 2.4) = 0 0 1 1 2
        let r = resize(&arr(&[10., 20., 30.]), &[5], ResizeMode::Nearest);
        assert_eq!(r.as_slice().unwrap(), [10., 10., 20., 20., 30.]);
    }

    #[test]
    fn linear_half_pixel_centres() {
        // 2 -> 4: src = max(0.5*(i+0.5)-0.5, 0) = 0, .25, .75, 1.25 (clamped to the last)
        let r = resize(&arr(&[0., 4.]), &[4], ResizeMode::Linear);
        assert_eq!(r.as_slice().unwrap(), [0., 1., 3., 4.]);
    }

    #[test]
    fn same_size_is_identity() {
        let a = arr(&[3., 1., 2.]);
        for m in [ResizeMode::Area, ResizeMode::Nearest, ResizeMode::Linear] {
            assert_eq!(resize(&a, &[3], m), a);
        }
    }

    #[test]
    fn threads_give_the_same_numbers_as_one() {
        // A (1, X, Y, Z) volume stored x-fastest, as NIfTI files are.
        let (x, y, z) = (37, 29, 23);
        let data: Vec<i16> = (0..x * y * z)
            .map(|i| ((i * 7919) % 2003) as i16 - 1000)
            .collect();
        let dims = vec![1, z, y, x];
        let axes = [0, 3, 2, 1];
        for mode in [ResizeMode::Area, ResizeMode::Nearest, ResizeMode::Linear] {
            for target in [[1, 16, 12, 9], [1, 50, 40, 30], [1, 37, 10, 23]] {
                let conv = |v: i16| f32::from(v);
                let one =
                    resize_dense(&data, dims.clone(), &axes, &target, mode, &conv, usize::MAX);
                let many = resize_dense(&data, dims.clone(), &axes, &target, mode, &conv, 0);
                assert_eq!(one, many, "{mode:?} {target:?}");
                // And both equal the array-based reference, axis by axis.
                let arr = ndarray::Array3::from_shape_vec(
                    (x, y, z).f(),
                    data.iter().map(|&v| f32::from(v)).collect(),
                )
                .unwrap()
                .insert_axis(ndarray::Axis(0))
                .into_dyn();
                let reference = resize(&arr.as_standard_layout().into_owned(), &target[1..], mode);
                let diff = one
                    .iter()
                    .zip(reference.iter())
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(diff < 1e-3, "{mode:?} {target:?}: {diff}");
            }
        }
    }
}
