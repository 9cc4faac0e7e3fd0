//! Pure transforms of decoded volumes: MONAI's 3D chain (`EnsureChannelFirst -> Resize ->
//! ScaleIntensityRange`, masks by nearest neighbour), slices in voxel or display orientation,
//! label selection, and the statistics item metadata and windows need.
//!
//! Arrays out of here are channel-first `(C, X, Y, Z)` C-order, as MONAI holds them; voxels
//! are converted to float32 as nibabel's `get_fdata()` does (`raw * slope + inter` in float64,
//! then float32) at the moment they are first read.

use ndarray::{
    Array2, ArrayD, ArrayView2, ArrayView4, ArrayViewD, Axis, CowArray, Ix4, IxDyn, ShapeBuilder,
};

use super::nifti::{Header, Volume, Voxels};
use super::resize::{self, ResizeMode};
use crate::with_voxels;

/// Stored voxel types, widened for arithmetic.
pub trait Voxel: Copy + Send + Sync + 'static {
    fn to_f64(self) -> f64;
    /// nibabel's unscaled value as float32 (`float64(x)` cast to float32). Direct for types
    /// whose values float64 holds exactly, so the cast is one rounding either way; it lets
    /// the compiler vectorise the conversion.
    fn to_f32(self) -> f32;
}

macro_rules! voxel_exact {
    ($($t:ty),*) => {$(impl Voxel for $t {
        fn to_f64(self) -> f64 { f64::from(self) }
        fn to_f32(self) -> f32 { self as f32 }
    })*};
}
voxel_exact!(u8, i8, i16, u16, i32, u32, f32, f64);

macro_rules! voxel_wide {
    ($($t:ty),*) => {$(impl Voxel for $t {
        fn to_f64(self) -> f64 { self as f64 }
        // Through float64, as nibabel: a direct cast could round differently.
        fn to_f32(self) -> f32 { self as f64 as f32 }
    })*};
}
voxel_wide!(i64, u64);

/// `(C, X, Y, Z)` view of voxels stored in file order.
pub fn view4<'a, T>(v: &'a [T], h: &Header) -> ArrayView4<'a, T> {
    let [x, y, z] = h.spatial;
    ArrayView4::from_shape((x, y, z, h.channels).f(), v)
        .expect("decode sized the voxels from the header")
        .permuted_axes([3, 0, 1, 2])
}

/// nibabel's per-voxel float value, as float32.
#[inline]
fn fdata<T: Voxel>(v: T, slope: f64, inter: f64) -> f32 {
    (v.to_f64() * slope + inter) as f32
}

/// The whole image as float32 `(C, X', Y', Z')`: resized to `size` with `mode` when given,
/// else on its native grid. Equals MONAI's `LoadImage -> EnsureChannelFirst -> Resize`.
pub fn image_f32(vol: &Volume, size: Option<[usize; 3]>, mode: ResizeMode) -> ArrayD<f32> {
    let h = &vol.header;
    let (s, i) = (h.scl_slope, h.scl_inter);
    let target = size.unwrap_or(h.spatial);
    with_voxels!(&vol.voxels, v => {
        let view = view4(v, h).into_dyn();
        if h.is_scaled() {
            resize::resize_from(view, &target, mode, |x| fdata(x, s, i))
        } else {
            resize::resize_from(view, &target, mode, Voxel::to_f32)
        }
    })
}

/// Why a volume cannot serve as a mask.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LabelError {
    #[error("label voxels must be whole numbers in 0..=255; found {0}")]
    NotALabel(f64),
}

/// The mask as `u8` `(C, X, Y, Z)`: borrowed when stored as unscaled uint8 (the usual case),
/// otherwise converted, refusing values that are not whole numbers in 0..=255.
pub fn label_u8(vol: &Volume) -> Result<CowArray<'_, u8, Ix4>, LabelError> {
    let h = &vol.header;
    if let (Voxels::U8(v), false) = (&vol.voxels, h.is_scaled()) {
        return Ok(CowArray::from(view4(v, h)));
    }
    let (s, i) = (h.scl_slope, h.scl_inter);
    with_voxels!(&vol.voxels, v => {
        let mut out = Vec::with_capacity(v.len());
        for &x in v.iter() {
            let f = x.to_f64() * s + i;
            if !(0.0..=255.0).contains(&f) || f.fract() != 0.0 {
                return Err(LabelError::NotALabel(f));
            }
            out.push(f as u8);
        }
        let [x, y, z] = h.spatial;
        let a = ndarray::Array4::from_shape_vec((x, y, z, h.channels).f(), out)
            .expect("sized from the header")
            .permuted_axes([3, 0, 1, 2]);
        Ok(CowArray::from(a))
    })
}

/// Which label values to keep and whether to merge them into 1 (the seed's binary task).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelect {
    /// Values kept; everything else becomes 0. `None` keeps all.
    pub keep: Option<Vec<u8>>,
    pub binary: bool,
}

impl LabelSelect {
    /// Canonical text for cache keys.
    pub fn canonical(&self) -> String {
        let keep = match &self.keep {
            None => "all".to_string(),
            Some(k) => k.iter().map(u8::to_string).collect::<Vec<_>>().join(","),
        };
        format!("labels({keep}),binary({})", self.binary)
    }

    /// Applies the selection to one value.
    #[inline]
    pub fn map(&self, v: u8) -> u8 {
        let kept = self.keep.as_ref().is_none_or(|k| v == 0 || k.contains(&v));
        match (kept, self.binary) {
            (false, _) => 0,
            (true, true) => u8::from(v != 0),
            (true, false) => v,
        }
    }

    fn is_identity(&self) -> bool {
        self.keep.is_none() && !self.binary
    }
}

/// The mask resized by nearest neighbour (MONAI `Resized(mode="nearest")`), then selected.
pub fn label_resized(
    label: ArrayViewD<u8>,
    size: Option<[usize; 3]>,
    select: &LabelSelect,
) -> ArrayD<u8> {
    let mut out = match size {
        Some(s) if s[..] != label.shape()[1..] => resize::resize_nearest(label, &s),
        _ => label.as_standard_layout().into_owned(),
    };
    if !select.is_identity() {
        out.mapv_inplace(|v| select.map(v));
    }
    out
}

/// MONAI `ScaleIntensityRange` parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RangeScale {
    pub a_min: f32,
    pub a_max: f32,
    pub b_min: f32,
    pub b_max: f32,
    pub clip: bool,
}

impl RangeScale {
    /// Canonical text for cache keys.
    pub fn canonical(&self) -> String {
        format!(
            "range({},{},{},{},clip={})",
            self.a_min, self.a_max, self.b_min, self.b_max, self.clip
        )
    }

    /// Applies it in place, in float32 and in MONAI's order of operations:
    /// `(x - a_min) / (a_max - a_min) * (b_max - b_min) + b_min`, then `clip` to
    /// `[b_min, b_max]` as `torch.clamp` does. Without `clip`, values outside `[a_min, a_max]`
    /// land outside `[b_min, b_max]` (bone above 1, for the seed's CT window).
    ///
    /// `a_min == a_max` is MONAI's special case: `x - a_min + b_min`, neither divided nor
    /// clipped.
    pub fn apply(&self, a: &mut ArrayD<f32>) {
        let span = self.a_max - self.a_min;
        let out_span = self.b_max - self.b_min;
        let (a_min, b_min, b_max, clip) = (self.a_min, self.b_min, self.b_max, self.clip);
        let degenerate = span == 0.0;
        let f = move |x: f32| {
            if degenerate {
                return x - a_min + b_min;
            }
            let y = (x - a_min) / span * out_span + b_min;
            if clip { y.max(b_min).min(b_max) } else { y }
        };
        match a.as_slice_memory_order_mut() {
            Some(s) => s.iter_mut().for_each(|v| *v = f(*v)),
            None => a.mapv_inplace(f),
        }
    }
}

/// Voxel axis, index and channel of one slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceAt {
    pub axis: usize,
    pub index: usize,
    pub channel: usize,
}

impl SliceAt {
    /// The only axial plane of a one-plane volume (a slab read).
    pub const FIRST: SliceAt = SliceAt {
        axis: 2,
        index: 0,
        channel: 0,
    };
}

/// One image slice as float32 `(H, W)` in voxel order: the two remaining axes in file order,
/// so `axis = 2` gives nibabel's `get_fdata()[:, :, index]`.
pub fn image_slice(vol: &Volume, at: SliceAt) -> Array2<f32> {
    let h = &vol.header;
    let (s, i) = (h.scl_slope, h.scl_inter);
    with_voxels!(&vol.voxels, v => {
        let plane = view4(v, h)
            .index_axis_move(Axis(0), at.channel)
            .index_axis_move(Axis(at.axis), at.index);
        let mut out = Array2::<f32>::zeros(plane.dim());
        if h.is_scaled() {
            ndarray::Zip::from(&mut out).and(&plane).for_each(|o, &x| *o = fdata(x, s, i));
        } else {
            ndarray::Zip::from(&mut out).and(&plane).for_each(|o, &x| *o = x.to_f32());
        }
        out
    })
}

/// One mask slice `(H, W)` in voxel order.
pub fn label_slice(label: &ArrayView4<u8>, at: SliceAt) -> Array2<u8> {
    label
        .index_axis(Axis(0), at.channel.min(label.shape()[0] - 1))
        .index_axis_move(Axis(at.axis), at.index)
        .to_owned()
}

/// Anatomical planes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plane {
    Axial,
    Coronal,
    Sagittal,
}

/// How to turn a voxel-order slice into the radiological display: which voxel axis is cut,
/// whether rows and columns swap, and which of them run backwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisplayPlan {
    pub axis: usize,
    pub transpose: bool,
    pub flip_rows: bool,
    pub flip_cols: bool,
}

/// The display plan of `plane` for orientation codes `codes` (from the affine): axial shows
/// anterior at the top and the patient's right on the image's left; coronal superior at the
/// top, right on the left; sagittal superior at the top, anterior on the left.
pub fn display_plan(codes: [char; 3], plane: Plane) -> DisplayPlan {
    let find = |pair: [char; 2]| codes.iter().position(|c| pair.contains(c)).unwrap_or(0);
    let lr = find(['L', 'R']);
    let ap = find(['A', 'P']);
    let si = find(['S', 'I']);
    // (cut axis, row axis, row runs backwards when its code is, col axis, col backwards when)
    let (axis, row, row_flip, col, col_flip) = match plane {
        Plane::Axial => (si, ap, 'A', lr, 'R'),
        Plane::Coronal => (ap, si, 'S', lr, 'R'),
        Plane::Sagittal => (lr, si, 'S', ap, 'A'),
    };
    DisplayPlan {
        axis,
        // In a voxel-order slice, rows are the lower of the two remaining axes.
        transpose: row > col,
        flip_rows: codes[row] == row_flip,
        flip_cols: codes[col] == col_flip,
    }
}

/// Applies a display plan to a voxel-order slice.
pub fn orient<T: Clone>(slice: ArrayView2<T>, plan: DisplayPlan) -> Array2<T> {
    let mut v = slice;
    if plan.transpose {
        v = v.reversed_axes();
    }
    if plan.flip_rows {
        v.invert_axis(Axis(0));
    }
    if plan.flip_cols {
        v.invert_axis(Axis(1));
    }
    v.as_standard_layout().into_owned()
}

/// Smallest and largest finite float value (after scaling) over every channel.
pub fn intensity_range(vol: &Volume) -> Option<(f64, f64)> {
    let h = &vol.header;
    let (s, i) = (h.scl_slope, h.scl_inter);
    let (lo, hi) = with_voxels!(&vol.voxels, v => {
        v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            let f = x.to_f64();
            if f.is_finite() { (lo.min(f), hi.max(f)) } else { (lo, hi) }
        })
    });
    if lo > hi {
        return None;
    }
    // Scaling is monotonic (a negative slope swaps the ends).
    let (a, b) = (lo * s + i, hi * s + i);
    Some((a.min(b), a.max(b)))
}

/// Percentiles of one channel (after scaling), from at most ~1M evenly strided voxels;
/// `nonzero` skips zeros (MRI background). `None` when there is nothing finite to rank.
pub fn percentiles(
    vol: &Volume,
    channel: usize,
    lo_pct: f64,
    hi_pct: f64,
    nonzero: bool,
) -> Option<(f64, f64)> {
    let h = &vol.header;
    let (s, i) = (h.scl_slope, h.scl_inter);
    let per = h.spatial.iter().product::<usize>();
    let step = (per / (1 << 20)).max(1);
    let mut sample: Vec<f64> = with_voxels!(&vol.voxels, v => {
        v[channel * per..(channel + 1) * per]
            .iter()
            .step_by(step)
            .map(|&x| x.to_f64() * s + i)
            .filter(|f| f.is_finite() && (!nonzero || *f != 0.0))
            .collect()
    });
    if sample.is_empty() {
        return None;
    }
    let mut rank = |p: f64| {
        let k = ((p / 100.0) * (sample.len() - 1) as f64).round() as usize;
        *sample.select_nth_unstable_by(k, f64::total_cmp).1
    };
    Some((rank(lo_pct), rank(hi_pct)))
}

/// Voxels per label value, ascending by value.
pub fn label_counts(label: &ArrayView4<u8>) -> Vec<(u8, u64)> {
    let mut counts = [0u64; 256];
    match label.as_slice_memory_order() {
        Some(s) => s.iter().for_each(|&v| counts[v as usize] += 1),
        None => label.iter().for_each(|&v| counts[v as usize] += 1),
    }
    counts
        .iter()
        .enumerate()
        .filter(|&(_, &c)| c > 0)
        .map(|(v, &c)| (v as u8, c))
        .collect()
}

/// The affine of a resized grid: voxel size `in/out` times the old one along each axis, and
/// the origin moved so the new grid covers the same extent (voxel centres as in area and
/// linear resizing with `align_corners=False`: new voxel `i` sits at old `(i + 0.5)*s - 0.5`).
pub fn resized_affine(affine: &[[f64; 4]; 4], from: [usize; 3], to: [usize; 3]) -> [[f64; 4]; 4] {
    let s: Vec<f64> = (0..3).map(|k| from[k] as f64 / to[k] as f64).collect();
    let shift: Vec<f64> = s.iter().map(|&sk| (sk - 1.0) / 2.0).collect();
    let mut out = *affine;
    for (r, row) in out.iter_mut().take(3).enumerate() {
        let a = &affine[r];
        for k in 0..3 {
            row[k] = a[k] * s[k];
        }
        row[3] = a[3] + (0..3).map(|k| a[k] * shift[k]).sum::<f64>();
    }
    out
}

/// `(C, X, Y, Z)` C-order -> bytes in NIfTI file order (x fastest, channel slowest).
pub fn to_file_order<T: Copy + bytemuck::Pod>(a: &ArrayD<T>) -> Vec<u8> {
    let mut out: Vec<T> = Vec::with_capacity(a.len());
    if a.ndim() == 4 {
        // (C, X, Y, Z) -> iterate as (C, Z, Y, X) so x varies fastest.
        let v = a.view().permuted_axes(IxDyn(&[0, 3, 2, 1]));
        out.extend(v.iter().copied());
    } else {
        out.extend(a.t().iter().copied());
    }
    bytemuck::cast_slice(&out).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::nifti::{self, OutType};

    fn vol_u8(dims: [usize; 3], data: Vec<u8>) -> Volume {
        let aff = [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let bytes = nifti::encode_nifti1(&dims, &aff, OutType::U8, &data, 1);
        nifti::decode(
            &bytes,
            &nifti::VolumeLimits {
                max_voxels: 1 << 20,
                max_bytes: 1 << 24,
            },
        )
        .unwrap()
    }

    #[test]
    fn slices_follow_nibabel_indexing() {
        // data[x + 2*y + 6*z] = value at (x, y, z) for a 2x3x4 grid.
        let v = vol_u8([2, 3, 4], (0..24).collect());
        let s = image_slice(
            &v,
            SliceAt {
                axis: 2,
                index: 1,
                channel: 0,
            },
        );
        assert_eq!(s.dim(), (2, 3));
        assert_eq!(s[[1, 2]], (1 + 2 * 2 + 6) as f32);
        let a = image_f32(&v, None, ResizeMode::Area);
        assert_eq!(a.shape(), [1, 2, 3, 4]);
        assert_eq!(a[[0, 1, 2, 3]], (1 + 4 + 18) as f32);
        let bytes = to_file_order(&a.mapv(|x| x as u8));
        assert_eq!(bytes, (0..24).collect::<Vec<u8>>());
    }

    #[test]
    fn radiological_display() {
        // RAS: axial rows run A->P (flip y), columns R->L (flip x), x is the row axis of a
        // voxel-order z slice, so it is transposed.
        let p = display_plan(['R', 'A', 'S'], Plane::Axial);
        assert_eq!(
            p,
            DisplayPlan {
                axis: 2,
                transpose: true,
                flip_rows: true,
                flip_cols: true
            }
        );
        let p = display_plan(['L', 'P', 'S'], Plane::Axial);
        assert_eq!(
            p,
            DisplayPlan {
                axis: 2,
                transpose: true,
                flip_rows: false,
                flip_cols: false
            }
        );
        let p = display_plan(['R', 'A', 'S'], Plane::Sagittal);
        assert_eq!(
            p,
            DisplayPlan {
                axis: 0,
                transpose: true,
                flip_rows: true,
                flip_cols: true
            }
        );
        let p = display_plan(['R', 'A', 'S'], Plane::Coronal);
        assert_eq!(
            p,
            DisplayPlan {
                axis: 1,
                transpose: true,
                flip_rows: true,
                flip_cols: true
            }
        );
        let m = Array2::from_shape_vec((2, 2), vec![1, 2, 3, 4]).unwrap();
        let o = orient(
            m.view(),
            DisplayPlan {
                axis: 0,
                transpose: true,
                flip_rows: true,
                flip_cols: false,
            },
        );
        assert_eq!(o, Array2::from_shape_vec((2, 2), vec![2, 4, 1, 3]).unwrap());
    }

    #[test]
    fn range_scale_as_monai() {
        let mut a = ArrayD::from_shape_vec(IxDyn(&[1, 3]), vec![-1000.0f32, 0.0, 1500.0]).unwrap();
        let mut r = RangeScale {
            a_min: -1000.0,
            a_max: 1000.0,
            b_min: 0.0,
            b_max: 1.0,
            clip: false,
        };
        let mut b = a.clone();
        r.apply(&mut a);
        assert_eq!(a.as_slice().unwrap(), [0.0, 0.5, 1.25]);
        r.clip = true;
        r.apply(&mut b);
        assert_eq!(b.as_slice().unwrap(), [0.0, 0.5, 1.0]);
    }

    #[test]
    fn label_selection() {
        let keep = LabelSelect {
            keep: Some(vec![2]),
            binary: false,
        };
        assert_eq!([0, 1, 2, 3].map(|v| keep.map(v)), [0, 0, 2, 0]);
        let bin = LabelSelect {
            keep: None,
            binary: true,
        };
        assert_eq!([0, 1, 2].map(|v| bin.map(v)), [0, 1, 1]);
        let v = vol_u8([2, 1, 1], vec![0, 3]);
        let l = label_u8(&v).unwrap();
        assert_eq!(label_counts(&l.view()), [(0, 1), (3, 1)]);
    }

    #[test]
    fn resized_affine_keeps_extent() {
        let a = [
            [2.0, 0.0, 0.0, 10.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let r = resized_affine(&a, [4, 4, 4], [2, 4, 4]);
        // New voxels are 4 mm; voxel 0 sits at old 0.5 -> 11 mm.
        assert_eq!(r[0][0], 4.0);
        assert_eq!(r[0][3], 11.0);
        assert_eq!(r[1], a[1]);
    }
}
