//! Resizing channel-first arrays the way MONAI's `Resize` does (through torch), one spatial
//! axis at a time. Every mode here is separable, so resizing axis by axis gives the same
//! numbers as torch's 2D/3D kernels up to float rounding.

use ndarray::{ArrayD, ArrayViewD, Axis, Zip};

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
/// Axes whose size already matches are left untouched, as MONAI does.
///
/// # Panics
/// If `spatial` does not name one size per spatial axis or a size is zero (the caller
/// validates request parameters before calling).
pub fn resize(a: &ArrayD<f32>, spatial: &[usize], mode: ResizeMode) -> ArrayD<f32> {
    assert_eq!(a.ndim(), spatial.len() + 1, "one size per spatial axis");
    assert!(spatial.iter().all(|&s| s > 0), "sizes must be positive");
    let mut cur: Option<ArrayD<f32>> = None;
    // Last axis first: its lanes are contiguous, and when downsampling, the strided passes
    // over the other axes then run on an already smaller array.
    for (i, &out) in spatial.iter().enumerate().rev() {
        let axis = i + 1;
        let view = cur.as_ref().map_or_else(|| a.view(), |c| c.view());
        if view.shape()[axis] == out {
            continue;
        }
        cur = Some(resize_axis(view, axis, out, mode));
    }
    cur.unwrap_or_else(|| a.clone())
}

/// Resizes one axis.
pub fn resize_axis(a: ArrayViewD<f32>, axis: usize, out: usize, mode: ResizeMode) -> ArrayD<f32> {
    let n_in = a.shape()[axis];
    let mut shape = a.shape().to_vec();
    shape[axis] = out;
    let mut res = ArrayD::<f32>::zeros(shape);
    match mode {
        ResizeMode::Area => {
            let windows: Vec<(usize, usize)> = (0..out)
                .map(|i| {
                    let start = i * n_in / out;
                    let end = ((i + 1) * n_in).div_ceil(out);
                    (start, end)
                })
                .collect();
            Zip::from(res.lanes_mut(Axis(axis)))
                .and(a.lanes(Axis(axis)))
                .for_each(|mut o, src| {
                    for (ov, &(s, e)) in o.iter_mut().zip(&windows) {
                        // Sum each window directly: a running sum would smear one NaN over
                        // every later window, while torch keeps it inside its own windows.
                        let sum: f64 = (s..e).map(|k| f64::from(src[k])).sum();
                        *ov = (sum / (e - s) as f64) as f32;
                    }
                });
        }
        ResizeMode::Nearest => {
            let scale = n_in as f32 / out as f32;
            let idx: Vec<usize> = (0..out)
                .map(|i| (((i as f32) * scale).floor() as usize).min(n_in - 1))
                .collect();
            Zip::from(res.lanes_mut(Axis(axis)))
                .and(a.lanes(Axis(axis)))
                .for_each(|mut o, src| {
                    for (ov, &k) in o.iter_mut().zip(&idx) {
                        *ov = src[k];
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
            Zip::from(res.lanes_mut(Axis(axis)))
                .and(a.lanes(Axis(axis)))
                .for_each(|mut o, src| {
                    for (ov, &(i0, i1, l1)) in o.iter_mut().zip(&taps) {
                        *ov = (1.0 - l1) * src[i0] + l1 * src[i1];
                    }
                });
        }
    }
    res
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
