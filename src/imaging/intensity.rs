//! Intensity transforms, with MONAI's semantics.

use ndarray::ArrayD;

/// MONAI `ScaleIntensity()` (minv=0, maxv=1): global min-max over every channel to [0, 1].
/// A constant image becomes all zeros, as MONAI's `rescale_array` returns `arr * minv`.
/// NaNs are ignored when finding the range and stay NaN.
pub fn scale_minmax(a: &mut ArrayD<f32>) {
    let (lo, hi) = finite_range(a.iter().copied());
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return;
    };
    if lo == hi {
        a.mapv_inplace(|v| if v.is_nan() { v } else { 0.0 });
        return;
    }
    let (lo, span) = (f64::from(lo), f64::from(hi) - f64::from(lo));
    a.mapv_inplace(|v| ((f64::from(v) - lo) / span) as f32);
}

/// Smallest and largest non-NaN values.
pub fn finite_range(values: impl Iterator<Item = f32>) -> (Option<f32>, Option<f32>) {
    let mut lo: Option<f32> = None;
    let mut hi: Option<f32> = None;
    for v in values.filter(|v| !v.is_nan()) {
        lo = Some(lo.map_or(v, |l| l.min(v)));
        hi = Some(hi.map_or(v, |h| h.max(v)));
    }
    (lo, hi)
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
