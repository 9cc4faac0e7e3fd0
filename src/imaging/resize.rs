//! Resizing channel-first arrays the way MONAI's `Resize` does (through torch), one spatial
//! axis at a time. Every mode here is separable, so resizing axis by axis gives the same
//! numbers as torch's 2D/3D kernels up to float rounding.

use ndarray::{ArrayD, ArrayViewD, Axis, Ix4, IxDyn, Zip};

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
/// is never copied whole as float32 before shrinking. `a` may have any memory layout.
pub fn resize_from<T, F>(
    a: ArrayViewD<T>,
    spatial: &[usize],
    mode: ResizeMode,
    conv: F,
) -> ArrayD<f32>
where
    T: Copy,
    F: Fn(T) -> f32,
{
    assert_eq!(a.ndim(), spatial.len() + 1, "one size per spatial axis");
    assert!(spatial.iter().all(|&s| s > 0), "sizes must be positive");
    let mut todo: Vec<usize> = (1..a.ndim())
        .filter(|&ax| a.shape()[ax] != spatial[ax - 1])
        .collect();
    // The axis with contiguous lanes first: it reads the big input in memory order, and when
    // downsampling the strided passes then run on an already smaller array.
    todo.sort_by_key(|&ax| (a.strides()[ax].unsigned_abs(), std::cmp::Reverse(ax)));
    let Some((&first, rest)) = todo.split_first() else {
        return a.map(|&v| conv(v)).as_standard_layout().into_owned();
    };
    let mut cur = resize_axis_map(a, first, spatial[first - 1], mode, &conv);
    for &ax in rest {
        cur = resize_axis_map(cur.view(), ax, spatial[ax - 1], mode, &|v: f32| v);
    }
    if cur.is_standard_layout() {
        cur
    } else {
        cur.as_standard_layout().into_owned()
    }
}

/// Resizes one axis.
pub fn resize_axis(a: ArrayViewD<f32>, axis: usize, out: usize, mode: ResizeMode) -> ArrayD<f32> {
    resize_axis_map(a, axis, out, mode, &|v: f32| v)
}

/// An array of `shape` whose axes are laid out in memory in the same order as `like`'s, so
/// passes over it keep the input's access pattern.
fn zeros_like_layout<T>(shape: &[usize], like: &ArrayViewD<T>) -> ArrayD<f32> {
    let strides = like.strides();
    let mut order: Vec<usize> = (0..shape.len()).collect();
    // Outermost (largest stride) first.
    order.sort_by_key(|&i| (std::cmp::Reverse(strides[i].unsigned_abs()), i));
    let permuted: Vec<usize> = order.iter().map(|&i| shape[i]).collect();
    let mut inverse = vec![0; order.len()];
    for (k, &i) in order.iter().enumerate() {
        inverse[i] = k;
    }
    ArrayD::<f32>::zeros(IxDyn(&permuted)).permuted_axes(IxDyn(&inverse))
}

fn resize_axis_map<T, F>(
    a: ArrayViewD<T>,
    axis: usize,
    out: usize,
    mode: ResizeMode,
    conv: &F,
) -> ArrayD<f32>
where
    T: Copy,
    F: Fn(T) -> f32,
{
    let n_in = a.shape()[axis];
    let mut shape = a.shape().to_vec();
    shape[axis] = out;
    let mut res = zeros_like_layout(&shape, &a);
    // Kernels work on slices; strided lanes are gathered into a scratch buffer first.
    let mut scratch_in: Vec<T> = Vec::new();
    let mut scratch_out: Vec<f32> = vec![0.0; out];
    let mut run = |kernel: &dyn Fn(&[T], &mut [f32])| {
        Zip::from(res.lanes_mut(Axis(axis)))
            .and(a.lanes(Axis(axis)))
            .for_each(|mut o, src| {
                let src: &[T] = match src.to_slice() {
                    Some(s) => s,
                    None => {
                        scratch_in.clear();
                        scratch_in.extend(src.iter().copied());
                        &scratch_in
                    }
                };
                match o.as_slice_mut() {
                    Some(dst) => kernel(src, dst),
                    None => {
                        kernel(src, &mut scratch_out);
                        o.iter_mut().zip(&scratch_out).for_each(|(d, &v)| *d = v);
                    }
                }
            });
    };
    match mode {
        ResizeMode::Area => {
            let windows: Vec<(usize, usize)> = (0..out)
                .map(|i| {
                    let start = i * n_in / out;
                    let end = ((i + 1) * n_in).div_ceil(out);
                    (start, end)
                })
                .collect();
            run(&|src, dst| {
                for (ov, &(s, e)) in dst.iter_mut().zip(&windows) {
                    // Sum each window directly: a running sum would smear one NaN over
                    // every later window, while torch keeps it inside its own windows.
                    let sum: f64 = src[s..e].iter().map(|&v| f64::from(conv(v))).sum();
                    *ov = (sum / (e - s) as f64) as f32;
                }
            });
        }
        ResizeMode::Nearest => {
            let idx = nearest_indices(n_in, out);
            run(&|src, dst| {
                for (ov, &k) in dst.iter_mut().zip(&idx) {
                    *ov = conv(src[k]);
                }
            });
        }
        ResizeMode::Linear => {
            let scale = n_in as f32 / out as f32;
            let taps: Vec<(usize, usize, f32)> = (0..out)
                .map(|i| {
                    let real = (scale * (i as f32 + 0.5) - 0.5).max(0.0);
                    let i0 = (real.floor() as usize).min(n_in - 1);
                    let i1 = if i0 < n_in - 1 { i0 + 1 } else { i0 };
                    let l1 = (real - i0 as f32).clamp(0.0, 1.0);
                    (i0, i1, l1)
                })
                .collect();
            run(&|src, dst| {
                for (ov, &(i0, i1, l1)) in dst.iter_mut().zip(&taps) {
                    *ov = (1.0 - l1) * conv(src[i0]) + l1 * conv(src[i1]);
                }
            });
        }
    }
    res
}

/// torch's legacy `nearest` source indices: `min(floor(f32(i) * f32(in)/f32(out)), in - 1)`.
pub fn nearest_indices(n_in: usize, out: usize) -> Vec<usize> {
    let scale = n_in as f32 / out as f32;
    (0..out)
        .map(|i| (((i as f32) * scale).floor() as usize).min(n_in - 1))
        .collect()
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
    use ndarray::{ArrayD, IxDyn};

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
}
