//! A dataset's fingerprint, as nnU-Net's dataset analysis computes one, built an item at a
//! time: what the images are (sizes, PIL modes, bit depths, per-class value histograms) or
//! what the volumes are (shapes, spacings, orientations, intensity percentiles over all and
//! over foreground voxels, per label: voxels, fraction and 3D connected components). Pure:
//! the per-item work ([`ImageStats::add`], [`volume_summary`]) runs on the caller's thread,
//! and the accumulators merge and report in any order of items.

use std::collections::BTreeMap;

use ndarray::ArrayView4;
use serde::Serialize;

use super::histogram::{ValueCounts, bin_of};
use super::nifti::{Dtype, Volume};
use super::volume::Voxel;
use super::{Decoded, ImageInfo};
use crate::with_voxels;

/// Bins of the per-class histograms of 2D datasets.
pub const IMAGE_BINS: usize = 64;

/// The intensity percentiles of volumes (nnU-Net's fingerprint: 0.5, 50, 99.5).
pub const VOLUME_PERCENTILES: [(&str, f64); 3] = [("p0_5", 0.5), ("p50", 50.0), ("p99_5", 99.5)];

/// An item that could not be read, named by its object key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemError {
    pub object: String,
    pub detail: String,
}

/// The mode Pillow (MONAI's PNG reader) gives a file with this header: `1`, `L`, `LA`, `I;16`,
/// `RGB`, `RGBA` or `P`.
pub fn pil_mode(info: &ImageInfo) -> String {
    match (info.color_type, info.bit_depth) {
        ("gray", 1) => "1".into(),
        ("gray", 16) => "I;16".into(),
        ("gray", _) => "L".into(),
        ("gray-alpha", _) => "LA".into(),
        ("rgb", _) => "RGB".into(),
        ("rgba", _) => "RGBA".into(),
        ("palette", _) => "P".into(),
        (other, _) => other.to_uppercase(),
    }
}

fn bump(map: &mut BTreeMap<String, u64>, key: String) {
    *map.entry(key).or_insert(0) += 1;
}

/// What the 2D items of a dataset are, so far.
#[derive(Debug, Clone, Default)]
pub struct ImageStats {
    sizes: BTreeMap<String, u64>,
    modes: BTreeMap<String, u64>,
    bit_depths: BTreeMap<String, u64>,
    /// Per class index: how often each raw value occurs (allocated on first use).
    values: Vec<Option<Vec<u64>>>,
    /// Whether a value above 255 (a 16-bit file) was seen: the histogram's range.
    wide: bool,
    pub errors: Vec<ItemError>,
}

/// The 2D part of the statistics body.
#[derive(Debug, Clone, Serialize)]
pub struct ImagesReport {
    pub sizes: BTreeMap<String, u64>,
    pub modes: BTreeMap<String, u64>,
    pub bit_depths: BTreeMap<String, u64>,
    pub histogram: ClassHistogram,
    pub errors: Vec<ItemError>,
}

/// Per class, `bins` equal bins over the nominal range of the raw values.
#[derive(Debug, Clone, Serialize)]
pub struct ClassHistogram {
    pub bins: usize,
    pub range: [u32; 2],
    pub per_class: BTreeMap<String, Vec<u64>>,
}

impl ImageStats {
    /// Counts one decoded image (MONAI's decoding: channels as stored, palette indices) of
    /// class `class`; every sample of every channel goes into the class's histogram.
    pub fn add(&mut self, class: usize, d: &Decoded) {
        bump(
            &mut self.sizes,
            format!("{}x{}", d.info.width, d.info.height),
        );
        bump(&mut self.modes, pil_mode(&d.info));
        bump(&mut self.bit_depths, d.info.bit_depth.to_string());
        if self.values.len() <= class {
            self.values.resize(class + 1, None);
        }
        // 256 counters a class until a 16-bit value shows up: a dataset of many 8-bit
        // classes stays small.
        let counts = self.values[class].get_or_insert_with(|| vec![0; 256]);
        for &v in d.data.iter() {
            let i = v.clamp(0.0, 65535.0) as usize;
            if i >= counts.len() {
                counts.resize(1 << 16, 0);
                self.wide = true;
            }
            counts[i] += 1;
        }
    }

    /// The report, with class names for the class indices (every class listed, zeros when
    /// none of its items was counted yet).
    pub fn report(&self, classes: &[String]) -> ImagesReport {
        let top: u32 = if self.wide { 65535 } else { 255 };
        let per_class = classes
            .iter()
            .enumerate()
            .map(|(ci, name)| {
                let mut bins = vec![0u64; IMAGE_BINS];
                if let Some(Some(counts)) = self.values.get(ci) {
                    for (v, &n) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
                        bins[bin_of(v as f64, 0.0, f64::from(top), IMAGE_BINS)] += n;
                    }
                }
                (name.clone(), bins)
            })
            .collect();
        ImagesReport {
            sizes: self.sizes.clone(),
            modes: self.modes.clone(),
            bit_depths: self.bit_depths.clone(),
            histogram: ClassHistogram {
                bins: IMAGE_BINS,
                range: [0, top],
                per_class,
            },
            errors: self.errors.clone(),
        }
    }
}

/// What one volume (and its mask) contributes.
#[derive(Debug, Clone, Default)]
pub struct VolumeSummary {
    pub shape: String,
    pub spacing: String,
    pub orientation: String,
    pub all: ValueCounts,
    pub foreground: ValueCounts,
    /// Label value -> (voxels, connected components).
    pub labels: BTreeMap<u8, (u64, u64)>,
    /// Voxels of the mask (0 without one).
    pub mask_voxels: u64,
}

/// A spacing with at most 3 decimals, trailing zeros dropped (`0.8`, `2.5`, `1`).
pub fn fmt_spacing(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// Counts every finite value of `v` (scaled by `slope`, `inter`) into `out`, and into `fg`
/// those where `mask` (file order, one value per spatial voxel) is non-zero. Types of at most
/// 16 bits are counted exactly through a dense table of raw values; wider ones are rounded
/// (see [`ValueCounts`]).
fn count_values<T: Voxel>(
    v: &[T],
    exact: bool,
    (slope, inter): (f64, f64),
    mask: Option<&[u8]>,
    out: &mut ValueCounts,
    fg: &mut ValueCounts,
) {
    let per = mask.map_or(1, <[u8]>::len).max(1);
    if exact {
        // Raw values of 8- and 16-bit types lie in -32768..=65535.
        const OFF: i64 = 32768;
        let mut all = vec![0u64; 98304];
        let mut fore = vec![0u64; if mask.is_some() { 98304 } else { 0 }];
        for (i, &x) in v.iter().enumerate() {
            let k = (x.to_f64() as i64 + OFF) as usize;
            all[k] += 1;
            if let Some(m) = mask
                && m[i % per] > 0
            {
                fore[k] += 1;
            }
        }
        for (table, dst) in [(&all, &mut *out), (&fore, &mut *fg)] {
            for (k, &n) in table.iter().enumerate().filter(|(_, n)| **n > 0) {
                let f = (k as i64 - OFF) as f64 * slope + inter;
                if f.is_finite() {
                    dst.add(f, n);
                }
            }
        }
    } else {
        for (i, &x) in v.iter().enumerate() {
            let f = x.to_f64() * slope + inter;
            if !f.is_finite() {
                continue;
            }
            out.add_rounded(f);
            if let Some(m) = mask
                && m[i % per] > 0
            {
                fg.add_rounded(f);
            }
        }
    }
}

/// One volume's contribution: header facts, intensity counts (foreground where `label` > 0)
/// and, with a mask `(1, X, Y, Z)` on the image's grid, its label voxels and 6-connected
/// components.
pub fn volume_summary(img: &Volume, label: Option<&ArrayView4<u8>>) -> VolumeSummary {
    let h = &img.header;
    let [x, y, z] = h.spatial;
    let mut shape = format!("{x}x{y}x{z}");
    if h.channels > 1 {
        shape.push_str(&format!("x{}", h.channels));
    }
    let spacing = h
        .pixdim
        .iter()
        .map(|&p| fmt_spacing(p))
        .collect::<Vec<_>>()
        .join("x");
    // The mask in file order (x fastest): reversing the axes of (1, X, Y, Z) and reading in
    // logical order gives exactly that.
    // Only an F-order array's memory is file order (a C-order one's is z fastest).
    let mask: Option<Vec<u8>> = label.map(|l| match l.as_slice_memory_order() {
        Some(s) if l.t().is_standard_layout() => s.to_vec(),
        _ => l.t().iter().copied().collect(),
    });
    let exact = matches!(h.dtype, Dtype::U8 | Dtype::I8 | Dtype::I16 | Dtype::U16);
    let mut s = VolumeSummary {
        shape,
        spacing,
        orientation: h.orientation().iter().collect(),
        ..Default::default()
    };
    let scale = if h.is_scaled() {
        (h.scl_slope, h.scl_inter)
    } else {
        (1.0, 0.0)
    };
    with_voxels!(&img.voxels, v => count_values(
        v,
        exact,
        scale,
        mask.as_deref(),
        &mut s.all,
        &mut s.foreground,
    ));
    if let Some(m) = &mask {
        s.mask_voxels = m.len() as u64;
        let comps = components(m, h.spatial);
        let mut voxels = [0u64; 256];
        m.iter().for_each(|&v| voxels[v as usize] += 1);
        for v in 1..256 {
            if voxels[v] > 0 {
                s.labels.insert(v as u8, (voxels[v], comps[v]));
            }
        }
    }
    s
}

/// Connected components of each label value in a file-order mask of `dims` (x fastest),
/// 6-connectivity as `scipy.ndimage.label`'s default structure: voxels sharing a face and a
/// value are one component. Union-find with path halving; index 0 (background) is left 0.
pub fn components(mask: &[u8], dims: [usize; 3]) -> [u64; 256] {
    let [nx, ny, _] = dims;
    let mut parent: Vec<u32> = (0..mask.len() as u32).collect();
    fn find(p: &mut [u32], mut i: u32) -> u32 {
        while p[i as usize] != i {
            p[i as usize] = p[p[i as usize] as usize];
            i = p[i as usize];
        }
        i
    }
    let union = |p: &mut Vec<u32>, a: usize, b: usize| {
        let (ra, rb) = (find(p, a as u32), find(p, b as u32));
        if ra != rb {
            p[ra.max(rb) as usize] = ra.min(rb);
        }
    };
    for (i, &v) in mask.iter().enumerate() {
        if v == 0 {
            continue;
        }
        let xi = i % nx;
        let yi = (i / nx) % ny;
        let zi = i / (nx * ny);
        if xi > 0 && mask[i - 1] == v {
            union(&mut parent, i, i - 1);
        }
        if yi > 0 && mask[i - nx] == v {
            union(&mut parent, i, i - nx);
        }
        if zi > 0 && mask[i - nx * ny] == v {
            union(&mut parent, i, i - nx * ny);
        }
    }
    let mut out = [0u64; 256];
    for (i, &v) in mask.iter().enumerate() {
        if v != 0 && find(&mut parent, i as u32) == i as u32 {
            out[v as usize] += 1;
        }
    }
    out
}

/// What the volumes of a dataset are, so far.
#[derive(Debug, Clone, Default)]
pub struct VolumeStats {
    shapes: BTreeMap<String, u64>,
    spacings: BTreeMap<String, u64>,
    orientations: BTreeMap<String, u64>,
    all: ValueCounts,
    foreground: ValueCounts,
    labels: BTreeMap<u8, (u64, u64)>,
    mask_voxels: u64,
    pub errors: Vec<ItemError>,
}

/// Percentiles by name; null when nothing was counted.
pub type Percentiles = BTreeMap<&'static str, Option<f64>>;

/// One label value's totals over every mask.
#[derive(Debug, Clone, Serialize)]
pub struct LabelReport {
    pub voxels: u64,
    /// `voxels` over the voxels of every mask counted.
    pub fraction: f64,
    /// 6-connected components, summed over the masks.
    pub components: u64,
}

/// Intensity percentiles over every voxel and over foreground voxels.
#[derive(Debug, Clone, Serialize)]
pub struct Intensity {
    pub all: Percentiles,
    pub foreground: Percentiles,
}

/// The 3D part of the statistics body.
#[derive(Debug, Clone, Serialize)]
pub struct VolumesReport {
    pub shapes: BTreeMap<String, u64>,
    pub spacings: BTreeMap<String, u64>,
    pub orientations: BTreeMap<String, u64>,
    pub intensity: Intensity,
    pub labels: BTreeMap<String, LabelReport>,
    pub errors: Vec<ItemError>,
}

fn percentiles(c: &ValueCounts) -> Percentiles {
    let ps: Vec<f64> = VOLUME_PERCENTILES.iter().map(|p| p.1).collect();
    let got = c.percentiles(&ps);
    VOLUME_PERCENTILES
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (*name, got.as_ref().map(|g| g[i])))
        .collect()
}

impl VolumeStats {
    /// Adds one volume's summary.
    pub fn add(&mut self, s: &VolumeSummary) {
        bump(&mut self.shapes, s.shape.clone());
        bump(&mut self.spacings, s.spacing.clone());
        bump(&mut self.orientations, s.orientation.clone());
        self.all.merge(&s.all);
        self.foreground.merge(&s.foreground);
        for (&v, &(n, c)) in &s.labels {
            let e = self.labels.entry(v).or_insert((0, 0));
            e.0 += n;
            e.1 += c;
        }
        self.mask_voxels += s.mask_voxels;
    }

    /// The report so far.
    pub fn report(&self) -> VolumesReport {
        VolumesReport {
            shapes: self.shapes.clone(),
            spacings: self.spacings.clone(),
            orientations: self.orientations.clone(),
            intensity: Intensity {
                all: percentiles(&self.all),
                foreground: percentiles(&self.foreground),
            },
            labels: self
                .labels
                .iter()
                .map(|(&v, &(voxels, components))| {
                    (
                        v.to_string(),
                        LabelReport {
                            voxels,
                            fraction: voxels as f64 / self.mask_voxels.max(1) as f64,
                            components,
                        },
                    )
                })
                .collect(),
            errors: self.errors.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_connected_components() {
        // 3x3x2: value 1 at (0,0,0) and (2,2,0) (apart), (2,2,1) joins the second through z;
        // value 2 at (1,0,0) touches value 1 but is its own component; diagonal voxels of
        // value 3 at (0,2,0) and (1,1,1) are two components.
        let mut m = vec![0u8; 18];
        let at = |x: usize, y: usize, z: usize| x + 3 * (y + 3 * z);
        m[at(0, 0, 0)] = 1;
        m[at(2, 2, 0)] = 1;
        m[at(2, 2, 1)] = 1;
        m[at(1, 0, 0)] = 2;
        m[at(0, 2, 0)] = 3;
        m[at(1, 1, 1)] = 3;
        let c = components(&m, [3, 3, 2]);
        assert_eq!((c[1], c[2], c[3]), (2, 1, 2));
    }

    #[test]
    fn spacings_and_modes() {
        assert_eq!(fmt_spacing(f64::from(0.8f32)), "0.8");
        assert_eq!(fmt_spacing(2.5), "2.5");
        assert_eq!(fmt_spacing(1.0), "1");
        assert_eq!(fmt_spacing(0.12345), "0.123");
    }
}
