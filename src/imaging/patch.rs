//! Patch sampling for 3D segmentation, the deterministic parts of MONAI 1.x
//! `RandCropByPosNegLabel(d)`: the foreground/background index lists
//! (`map_binary_to_indices`), a flat index back to a voxel (`np.unravel_index`), the shift of
//! a centre into the range where the patch fits (`correct_crop_centers`) and the crop itself
//! (`SpatialCrop(roi_center, roi_size)`). The random choices are the caller's (the pipeline
//! draws them; see `pipeline/patch.rs`). Pure: arrays in, arrays out.
//!
//! A patch larger than the grid along an axis is served as MONAI does with
//! `allow_smaller=True`: that axis is not cropped (the patch has the grid's extent there).
//! MONAI's default, `allow_smaller=False`, raises instead; a service that refused every
//! request whose resize grid is smaller than the patch would be of little use.

use std::ops::Range;

use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, Slice};

/// Flat indices (C order over the spatial grid `(X, Y, Z)`) of the voxels a centre may be
/// drawn from, ascending, as MONAI's `map_binary_to_indices` returns them.
///
/// Stored as `u32` (half of what `i64` would hold): a grid of more than `u32::MAX` voxels is
/// refused by [`map_binary_to_indices`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FgBgIndices {
    /// The spatial grid the indices refer to.
    pub shape: [usize; 3],
    /// Voxels whose label is non-zero (on any channel past the first, for one-hot labels).
    pub fg: Vec<u32>,
    /// Voxels whose label is zero, and, with an image threshold, whose image exceeds it on
    /// some channel.
    pub bg: Vec<u32>,
}

impl FgBgIndices {
    /// Bytes held.
    pub fn byte_len(&self) -> usize {
        (self.fg.len() + self.bg.len()) * std::mem::size_of::<u32>()
    }
}

/// Why indices could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("the label is {label:?} and the image {image:?}: they need one (X, Y, Z) grid")]
    GridMismatch {
        label: Vec<usize>,
        image: Vec<usize>,
    },
    #[error("arrays must be (C, X, Y, Z), got {0:?}")]
    NotChannelFirst3d(Vec<usize>),
    #[error("the patch at {0:?} leaves the grid: its centre was not corrected")]
    Uncorrected([usize; 3]),
    #[error("a grid of {0} voxels is more than patch sampling indexes (at most 2^32 - 1)")]
    TooManyVoxels(u64),
}

fn spatial(shape: &[usize]) -> Result<[usize; 3], PatchError> {
    match shape {
        [_, x, y, z] => Ok([*x, *y, *z]),
        _ => Err(PatchError::NotChannelFirst3d(shape.to_vec())),
    }
}

/// MONAI `map_binary_to_indices(label, image, image_threshold)` on a `(C, X, Y, Z)` label and,
/// when `image` is given, a `(C', X, Y, Z)` image with its threshold.
///
/// As in MONAI: a label of more than one channel is one-hot and its channel 0 (background) is
/// ignored; foreground is any non-zero channel and **ignores the image**; background is the
/// rest, restricted with an image to voxels where `image > threshold` on some channel. The
/// comparison is in float32, as torch compares a float32 tensor with a Python float (so
/// `0.1` is `0.1f32` and a voxel equal to it is not above it); NaN is never above.
pub fn map_binary_to_indices(
    label: ArrayViewD<'_, u8>,
    image: Option<(ArrayViewD<'_, f32>, f32)>,
) -> Result<FgBgIndices, PatchError> {
    let shape = spatial(label.shape())?;
    let n: usize = shape.iter().product();
    if n as u64 > u64::from(u32::MAX) {
        return Err(PatchError::TooManyVoxels(n as u64));
    }
    let label = label.as_standard_layout();
    let channels = label.shape()[0];
    let lab = label.as_slice().expect("standard layout is contiguous");
    let first = if channels > 1 { 1 } else { 0 };
    let is_fg = |i: usize| (first..channels).any(|c| lab[c * n + i] != 0);
    let valid: Option<Vec<bool>> = match image {
        None => None,
        Some((img, threshold)) => {
            if spatial(img.shape())? != shape {
                return Err(PatchError::GridMismatch {
                    label: label.shape().to_vec(),
                    image: img.shape().to_vec(),
                });
            }
            let img = img.as_standard_layout();
            let px = img.as_slice().expect("standard layout is contiguous");
            let mut valid = vec![false; n];
            for plane in px.chunks_exact(n) {
                for (v, &x) in valid.iter_mut().zip(plane) {
                    *v |= x > threshold;
                }
            }
            Some(valid)
        }
    };
    let (mut fg, mut bg) = (Vec::new(), Vec::new());
    for i in 0..n {
        if is_fg(i) {
            fg.push(i as u32);
        } else if valid.as_ref().is_none_or(|v| v[i]) {
            bg.push(i as u32);
        }
    }
    Ok(FgBgIndices { shape, fg, bg })
}

/// `np.unravel_index(i, shape)` in C order.
pub fn unravel(i: usize, shape: [usize; 3]) -> [usize; 3] {
    let [_, y, z] = shape;
    [i / (y * z), (i / z) % y, i % z]
}

/// MONAI `correct_crop_centers(center, patch, shape, allow_smaller=True)`: a centre moved into
/// `[floor(p/2), floor(n + 1 - p/2) - 1]` per axis, `p` the patch side capped at the grid's `n`.
///
/// Kept as MONAI computes it, quirks included: for an even side the centre voxel sits at
/// offset `p/2` of the patch (one past the middle), for an odd side at `(p-1)/2`; the upper
/// bound is `floor(n + 1 - p/2)` (`n + 1 - ceil(p/2)` in integers, as MONAI's float
/// subtraction cast to `uint16` truncates), and where it equals the lower bound MONAI adds one.
pub fn correct_crop_center(center: [usize; 3], patch: [usize; 3], shape: [usize; 3]) -> [usize; 3] {
    std::array::from_fn(|a| {
        let (n, p) = (shape[a], patch[a].min(shape[a]));
        let start = p / 2;
        let mut end = n + 1 - p.div_ceil(2);
        if start == end {
            end += 1;
        }
        center[a].max(start).min(end - 1)
    })
}

/// The voxel ranges MONAI `SpatialCrop(roi_center=center, roi_size=patch)` takes from a grid
/// of `shape`: `start = max(c - floor(p/2), 0)`, `end = start + p`, clipped to the grid (as a
/// Python slice is).
pub fn crop_ranges(center: [usize; 3], patch: [usize; 3], shape: [usize; 3]) -> [Range<usize>; 3] {
    std::array::from_fn(|a| {
        let start = center[a].saturating_sub(patch[a] / 2).min(shape[a]);
        start..(start + patch[a]).min(shape[a])
    })
}

/// The spatial shape of every patch once its centre is corrected: the patch, capped at the
/// grid along each axis.
pub fn patch_shape(patch: [usize; 3], shape: [usize; 3]) -> [usize; 3] {
    std::array::from_fn(|a| patch[a].min(shape[a]))
}

/// MONAI `SpatialCrop(roi_center=center, roi_size=patch)` of a `(C, X, Y, Z)` array: every
/// channel, the spatial ranges of [`crop_ranges`]. A copy, so values are exactly the input's.
pub fn crop<T: Clone>(a: ArrayViewD<'_, T>, center: [usize; 3], patch: [usize; 3]) -> ArrayD<T> {
    crop_view(a, center, patch).to_owned()
}

fn crop_view<'a, T>(
    mut a: ArrayViewD<'a, T>,
    center: [usize; 3],
    patch: [usize; 3],
) -> ArrayViewD<'a, T> {
    let shape = [a.shape()[1], a.shape()[2], a.shape()[3]];
    for (k, range) in crop_ranges(center, patch, shape).into_iter().enumerate() {
        a.slice_axis_inplace(Axis(k + 1), Slice::from(range));
    }
    a
}

/// The [`crop`]s of a `(C, X, Y, Z)` array at each of `centers`, stacked into
/// `(N, C, px, py, pz)`. Every centre must have been corrected ([`correct_crop_center`]) so
/// that the crops share [`patch_shape`].
pub fn crops<T: Clone>(
    a: ArrayViewD<'_, T>,
    centers: &[[usize; 3]],
    patch: [usize; 3],
) -> Result<ArrayD<T>, PatchError> {
    let grid = spatial(a.shape())?;
    let [px, py, pz] = patch_shape(patch, grid);
    let dims = [centers.len(), a.shape()[0], px, py, pz];
    let mut data = Vec::with_capacity(dims.iter().product());
    for &c in centers {
        let v = crop_view(a.view(), c, patch);
        if v.shape()[1..] != dims[2..] {
            return Err(PatchError::Uncorrected(c));
        }
        // Row by row along the innermost axis (contiguous in a standard-layout grid): an
        // element-wise walk of a dynamic-rank view cost ~35 ms per 96x96x64 float32 patch.
        for row in v.lanes(Axis(v.ndim() - 1)) {
            match row.as_slice() {
                Some(s) => data.extend_from_slice(s),
                None => data.extend(row.iter().cloned()),
            }
        }
    }
    Ok(ArrayD::from_shape_vec(IxDyn(&dims), data).expect("the crops fill the shape"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    #[test]
    fn indices_follow_monai_docstring() {
        // MONAI's example: label [[[0,1,1],[1,0,1],[1,1,0]]] -> fg [1,2,3,5,6,7], bg [0,4,8].
        let lab = Array4::from_shape_vec((1, 1, 3, 3), vec![0u8, 1, 1, 1, 0, 1, 1, 1, 0])
            .unwrap()
            .into_dyn();
        let ix = map_binary_to_indices(lab.view(), None).unwrap();
        assert_eq!(ix.fg, [1, 2, 3, 5, 6, 7]);
        assert_eq!(ix.bg, [0, 4, 8]);
        // With an image, only background above the threshold (in float32) remains.
        let img = Array4::from_shape_vec(
            (1, 1, 3, 3),
            vec![0.2f32, 0.0, 0.0, 0.0, 0.1, 0.0, 0.0, 0.0, f32::NAN],
        )
        .unwrap()
        .into_dyn();
        let ix = map_binary_to_indices(lab.view(), Some((img.view(), 0.1))).unwrap();
        assert_eq!(ix.fg, [1, 2, 3, 5, 6, 7]);
        assert_eq!(ix.bg, [0]);
    }

    #[test]
    fn one_hot_labels_drop_the_background_channel() {
        let mut lab = ArrayD::<u8>::zeros(IxDyn(&[2, 1, 1, 3]));
        lab[[0, 0, 0, 0]] = 1; // background channel: ignored
        lab[[1, 0, 0, 2]] = 1;
        let ix = map_binary_to_indices(lab.view(), None).unwrap();
        assert_eq!((ix.fg, ix.bg), (vec![2], vec![0, 1]));
    }

    #[test]
    fn centres_stay_where_the_patch_fits_and_crops_have_its_shape() {
        let shape = [20, 18, 12];
        for patch in [[8, 8, 6], [7, 5, 3], [24, 9, 16], [1, 1, 1]] {
            for i in [0, 7, 1000, 20 * 18 * 12 - 1] {
                let c = correct_crop_center(unravel(i, shape), patch, shape);
                let r = crop_ranges(c, patch, shape);
                let got: Vec<usize> = r.iter().map(|r| r.len()).collect();
                assert_eq!(got, patch_shape(patch, shape), "{patch:?} {i}");
            }
        }
        assert_eq!(unravel(20 * 18 * 12 - 1, shape), [19, 17, 11]);
        assert_eq!(unravel(18 * 12 + 12 + 1, shape), [1, 1, 1]);
    }
}
