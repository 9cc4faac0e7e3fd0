//! Intensity transforms, with MONAI's semantics.

use ndarray::ArrayD;

/// MONAI `ScaleIntensity()` (minv=0, maxv=1): global min-max over every channel to [0, 1],
/// computed as MONAI's `rescale_array` does in float32: `(x - min) / (max - min)`.
/// A constant image becomes all zeros, as `rescale_array` returns `arr * minv`.
/// NaNs are ignored when finding the range and stay NaN.
pub fn scale_minmax(a: &mut ArrayD<f32>) {
    let (lo, hi) = match a.as_slice_memory_order() {
        Some(s) => finite_range(s.iter().copied()),
        None => finite_range(a.iter().copied()),
    };
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return;
    };
    let apply = |f: &dyn Fn(f32) -> f32, a: &mut ArrayD<f32>| match a.as_slice_memory_order_mut() {
        Some(s) => s.iter_mut().for_each(|v| *v = f(*v)),
        None => a.mapv_inplace(f),
    };
    if lo == hi {
        apply(&|v: f32| if v.is_nan() { v } else { 0.0 }, a);
        return;
    }
    let span = hi - lo;
    apply(&|v: f32| (v - lo) / span, a);
}

/// Smallest and largest non-NaN values.
pub fn finite_range(values: impl Iterator<Item = f32>) -> (Option<f32>, Option<f32>) {
    let (lo, hi) = values.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
        // f32::min/max skip NaN operands, so NaNs never become the range.
        (lo.min(v), hi.max(v))
    });
    if lo > hi {
        (None, None)
    } else {
        (Some(lo), Some(hi))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    #[test]
    fn minmax_and_constant() {
        let mut a = ArrayD::from_shape_vec(IxDyn(&[1, 3]), vec![2., 4., 6.]).unwrap();
        scale_minmax(&mut a);
        assert_eq!(a.as_slice().unwrap(), [0., 0.5, 1.]);
        let mut c = ArrayD::from_elem(IxDyn(&[1, 2]), 7.0f32);
        scale_minmax(&mut c);
        assert_eq!(c.as_slice().unwrap(), [0., 0.]);
    }
}
