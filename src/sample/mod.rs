//! Deterministic synthetic sample data, so the service runs (and the tests run) with no
//! download and no S3: a MedNIST-like classification set and small Decathlon-like CT volumes
//! with masks, in both segmentation layouts, plus a small task as data is found in the wild
//! (no `dataset.json`, headers without an sform, an image without a mask, a volume of NaNs).
//!
//! Same binary, same bytes: everything comes from a seeded SplitMix64, and gzip headers carry
//! no timestamp.

mod large;

pub use large::{
    LARGE_CT_DIMS, MEDNIST_COUNTS, mednist_class_counts, write_large_ct, write_mednist_sized,
};

use std::io::Write;
use std::path::Path;

use ndarray::{Array3, Array4};

/// The six MedNIST classes.
pub const CLASSES: [&str; 6] = ["AbdomenCT", "BreastMRI", "CXR", "ChestCT", "Hand", "HeadCT"];

/// Images per class in each split.
pub const SPLITS: [(&str, usize); 3] = [("train", 12), ("val", 3), ("test", 3)];

/// Side of every sample image, as MedNIST's.
pub const IMAGE_SIZE: usize = 64;

/// Grid of the sample CT volumes (x, y, z).
pub const VOLUME_DIMS: (usize, usize, usize) = (64, 64, 24);

/// Voxel spacing of the sample CT volumes in mm.
pub const VOLUME_SPACING: (f32, f32, f32) = (0.8, 0.8, 2.5);

/// Grid of the multi-modal MRI sample (x, y, z; 4 modalities on the 4th axis).
pub const MR_DIMS: (usize, usize, usize) = (40, 40, 20);

/// Voxel size of the MRI sample in mm.
pub const MR_SPACING: (f32, f32, f32) = (1.0, 1.0, 1.5);

/// Grid of the volumes of the `nojson` task (x, y, z): small, as CI writes them often.
pub const WILD_DIMS: (usize, usize, usize) = (24, 20, 8);

/// Voxel size of the `nojson` task in mm.
pub const WILD_SPACING: (f32, f32, f32) = (1.5, 1.5, 3.0);

/// A small, fast, well-mixed PRNG (SplitMix64); no crate needed for sample noise.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose whole stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    /// The next 64 uniformly distributed bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }
}

fn ellipse(x: f32, y: f32, cx: f32, cy: f32, rx: f32, ry: f32) -> bool {
    let dx = (x - cx) / rx;
    let dy = (y - cy) / ry;
    dx * dx + dy * dy <= 1.0
}

/// One 64x64 grayscale image of `class`, different for every `seed`.
pub fn class_image(class: &str, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    // Drawn before any noise: the stream's order is part of the bytes written.
    let jitter = Jitter {
        dx: rng.range(-3.0, 3.0),
        dy: rng.range(-3.0, 3.0),
        scale: rng.range(0.9, 1.1),
    };
    let anatomy = anatomy(class);
    let mut px = vec![0u8; IMAGE_SIZE * IMAGE_SIZE];
    for y in 0..IMAGE_SIZE {
        for x in 0..IMAGE_SIZE {
            let v = anatomy(x as f32 - jitter.dx, y as f32 - jitter.dy, jitter.scale);
            let noisy = v + rng.range(-10.0, 10.0);
            px[y * IMAGE_SIZE + x] = noisy.clamp(0.0, 255.0) as u8;
        }
    }
    px
}

/// Where one image's anatomy sits: shifted by (`dx`, `dy`) pixels and scaled by `scale`, so
/// no two images of a class are the same picture under different noise.
struct Jitter {
    dx: f32,
    dy: f32,
    scale: f32,
}

/// Intensity (0..=255, before noise) at a shifted point `(x, y)` for a size `scale`.
type Anatomy = fn(x: f32, y: f32, scale: f32) -> f32;

/// Centre of an image, in pixels.
const CENTRE: f32 = IMAGE_SIZE as f32 / 2.0;

/// The drawing of `class`; an unknown class is drawn as a head CT.
fn anatomy(class: &str) -> Anatomy {
    match class {
        "AbdomenCT" => abdomen_ct,
        "BreastMRI" => breast_mri,
        "CXR" => cxr,
        "ChestCT" => chest_ct,
        "Hand" => hand,
        _ => head_ct,
    }
}

/// An abdomen with two organs and a bright vertebra.
fn abdomen_ct(x: f32, y: f32, scale: f32) -> f32 {
    if ellipse(x, y, CENTRE, CENTRE + 2.0, 26.0 * scale, 20.0 * scale) {
        let mut v = 110.0;
        if ellipse(x, y, CENTRE - 9.0, CENTRE - 2.0, 8.0, 6.0) {
            v = 150.0;
        }
        if ellipse(x, y, CENTRE + 10.0, CENTRE, 6.0, 7.0) {
            v = 140.0;
        }
        if ellipse(x, y, CENTRE, CENTRE + 15.0, 4.0, 4.0) {
            v = 240.0;
        }
        v
    } else {
        8.0
    }
}

/// Two breasts with a textured glandular pattern above the chest wall.
fn breast_mri(x: f32, y: f32, scale: f32) -> f32 {
    let l = ellipse(x, y, CENTRE - 13.0, CENTRE + 6.0, 13.0 * scale, 16.0);
    let r = ellipse(x, y, CENTRE + 13.0, CENTRE + 6.0, 13.0 * scale, 16.0);
    if (l || r) && y > CENTRE - 6.0 {
        90.0 + 40.0 * ((x * 0.6).sin() * (y * 0.4).cos()).abs()
    } else if y > CENTRE + 18.0 {
        60.0
    } else {
        5.0
    }
}

/// A chest radiograph: dark lungs either side of a bright spine.
fn cxr(x: f32, y: f32, scale: f32) -> f32 {
    let mut v = 170.0 - (y - CENTRE).abs();
    if ellipse(x, y, CENTRE - 12.0, CENTRE - 2.0, 9.0 * scale, 20.0)
        || ellipse(x, y, CENTRE + 12.0, CENTRE - 2.0, 9.0 * scale, 20.0)
    {
        v = 45.0;
    }
    if (x - CENTRE).abs() < 3.0 {
        v = 210.0;
    }
    v
}

/// An axial chest: dark lungs and a bright vertebra inside the body.
fn chest_ct(x: f32, y: f32, scale: f32) -> f32 {
    if ellipse(x, y, CENTRE, CENTRE, 28.0 * scale, 20.0 * scale) {
        if ellipse(x, y, CENTRE - 12.0, CENTRE - 1.0, 9.0, 13.0)
            || ellipse(x, y, CENTRE + 12.0, CENTRE - 1.0, 9.0, 13.0)
        {
            20.0
        } else if ellipse(x, y, CENTRE, CENTRE + 13.0, 3.5, 3.5) {
            235.0
        } else {
            120.0
        }
    } else {
        5.0
    }
}

/// A palm and five fingers.
fn hand(x: f32, y: f32, scale: f32) -> f32 {
    let palm = ellipse(x, y, CENTRE, CENTRE + 14.0, 14.0 * scale, 12.0);
    let finger = (0..5).any(|k| {
        let finger_x = CENTRE - 14.0 + 7.0 * k as f32;
        (x - finger_x).abs() < 2.5 && y > 6.0 + (k as f32 - 2.0).abs() * 3.0 && y < CENTRE + 8.0
    });
    if palm || finger { 200.0 } else { 25.0 }
}

/// A bright skull ring around brain tissue.
fn head_ct(x: f32, y: f32, scale: f32) -> f32 {
    let outer = ellipse(x, y, CENTRE, CENTRE, 25.0 * scale, 28.0 * scale);
    let inner = ellipse(x, y, CENTRE, CENTRE, 22.0 * scale, 25.0 * scale);
    if inner {
        100.0
            + if ellipse(x, y, CENTRE, CENTRE, 5.0, 8.0) {
                20.0
            } else {
                0.0
            }
    } else if outer {
        245.0
    } else {
        0.0
    }
}

/// Encodes 8-bit grayscale pixels as PNG.
pub fn gray_png(width: u32, height: u32, pixels: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, width, height);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(std::io::Error::other)?;
    w.write_image_data(pixels).map_err(std::io::Error::other)?;
    w.finish().map_err(std::io::Error::other)?;
    Ok(out)
}

/// A CT-like volume in Hounsfield units and its mask: air (-1000) around a soft-tissue body
/// (~40 HU), a bony spine (~700 HU), an organ (label 1, ~60 HU) and a lesion in it (label 2,
/// ~110 HU). Indexed `[x, y, z]`.
pub fn ct_volume(seed: u64, dims: (usize, usize, usize)) -> (Array3<i16>, Array3<u8>) {
    let mut rng = Rng::new(seed);
    let (nx, ny, nz) = dims;
    let (fx, fy, fz) = (nx as f32, ny as f32, nz as f32);
    let organ = (
        fx * rng.range(0.30, 0.40),
        fy * rng.range(0.40, 0.50),
        fz * 0.5,
        fx * rng.range(0.10, 0.14),
        fy * rng.range(0.09, 0.12),
        fz * rng.range(0.25, 0.35),
    );
    let lesion_r = organ.3.min(organ.4) * 0.4;
    let mut img = Array3::<i16>::zeros(dims);
    let mut lab = Array3::<u8>::zeros(dims);
    for ((x, y, z), v) in img.indexed_iter_mut() {
        let (px, py, pz) = (x as f32 + 0.5, y as f32 + 0.5, z as f32 + 0.5);
        let body = ellipse(px, py, fx * 0.5, fy * 0.5, fx * 0.42, fy * 0.34);
        let mut hu = if body {
            40.0 + rng.range(-15.0, 15.0)
        } else {
            -1000.0 + rng.range(-20.0, 20.0)
        };
        if ellipse(px, py, fx * 0.5, fy * 0.28, fx * 0.06, fy * 0.06) {
            hu = 700.0 + rng.range(-60.0, 60.0);
        }
        let d = ((px - organ.0) / organ.3).powi(2)
            + ((py - organ.1) / organ.4).powi(2)
            + ((pz - organ.2) / organ.5).powi(2);
        if d <= 1.0 {
            hu = 60.0 + rng.range(-8.0, 8.0);
            lab[[x, y, z]] = 1;
            let dl =
                ((px - organ.0).powi(2) + (py - organ.1).powi(2) + ((pz - organ.2) * 0.5).powi(2))
                    .sqrt();
            if dl <= lesion_r {
                hu = 110.0 + rng.range(-8.0, 8.0);
                lab[[x, y, z]] = 2;
            }
        }
        *v = hu.round() as i16;
    }
    (img, lab)
}

/// Modalities of the multi-modal MRI sample, in channel order (as the Decathlon's BrainTumour).
pub const MR_MODALITIES: [&str; 4] = ["FLAIR", "T1w", "t1gd", "T2w"];

/// A 4D multi-modal brain-MRI-like volume `[x, y, z, modality]` (float32, background 0, each
/// modality with its own contrast) and its mask: 1 edema, 2 non-enhancing tumour,
/// 3 enhancing tumour (the Decathlon's BrainTumour labels).
pub fn mr_volume(seed: u64, dims: (usize, usize, usize)) -> (Array4<f32>, Array3<u8>) {
    let mut rng = Rng::new(seed);
    let (nx, ny, nz) = dims;
    let (fx, fy, fz) = (nx as f32, ny as f32, nz as f32);
    let centre = (
        fx * rng.range(0.38, 0.62),
        fy * rng.range(0.38, 0.62),
        fz * rng.range(0.40, 0.60),
    );
    let r = fx.min(fy) * rng.range(0.10, 0.14);
    // Tissue intensities per modality: brain, edema, necrotic core, enhancing rim.
    const CONTRAST: [[f32; 4]; 4] = [
        [400.0, 900.0, 600.0, 700.0],
        [500.0, 420.0, 300.0, 520.0],
        [480.0, 470.0, 320.0, 1200.0],
        [600.0, 1100.0, 1300.0, 800.0],
    ];
    let mut img = Array4::<f32>::zeros((nx, ny, nz, MR_MODALITIES.len()));
    let mut lab = Array3::<u8>::zeros(dims);
    for ((x, y, z), l) in lab.indexed_iter_mut() {
        let (px, py, pz) = (x as f32 + 0.5, y as f32 + 0.5, z as f32 + 0.5);
        let head = ((px - fx * 0.5) / (fx * 0.42)).powi(2)
            + ((py - fy * 0.5) / (fy * 0.46)).powi(2)
            + ((pz - fz * 0.5) / (fz * 0.48)).powi(2);
        if head > 1.0 {
            continue;
        }
        let d =
            ((px - centre.0).powi(2) + (py - centre.1).powi(2) + ((pz - centre.2) * 2.0).powi(2))
                .sqrt();
        let tissue = if d <= r * 0.45 {
            *l = 2;
            2
        } else if d <= r * 0.7 {
            *l = 3;
            3
        } else if d <= r * 1.4 {
            *l = 1;
            1
        } else {
            0
        };
        for (m, contrast) in CONTRAST.iter().enumerate() {
            img[[x, y, z, m]] = (contrast[tissue] * (1.0 + rng.range(-0.08, 0.08))).round();
        }
    }
    (img, lab)
}

fn nifti_header(spacing: (f32, f32, f32), dims: (usize, usize, usize)) -> nifti::NiftiHeader {
    let (sx, sy, sz) = spacing;
    let mut h = nifti::NiftiHeader {
        pixdim: [1.0, sx, sy, sz, 1.0, 1.0, 1.0, 1.0],
        scl_slope: 1.0,
        scl_inter: 0.0,
        // mm and seconds.
        xyzt_units: 2 | 8,
        qform_code: 0,
        sform_code: 1,
        ..Default::default()
    };
    // Centred RAS+ grid, as a scanner-to-RAS transform.
    h.srow_x = [sx, 0.0, 0.0, -sx * dims.0 as f32 / 2.0];
    h.srow_y = [0.0, sy, 0.0, -sy * dims.1 as f32 / 2.0];
    h.srow_z = [0.0, 0.0, sz, -sz * dims.2 as f32 / 2.0];
    let mut descrip = b"medserve synthetic sample".to_vec();
    descrip.resize(80, 0);
    h.descrip = descrip;
    h
}

fn write_volume<T, D>(
    path: &Path,
    data: &ndarray::Array<T, D>,
    spacing: (f32, f32, f32),
) -> std::io::Result<()>
where
    T: nifti::DataElement + bytemuck::Pod,
    D: ndarray::Dimension + ndarray::RemoveAxis,
{
    let sh = data.shape();
    let header = nifti_header(spacing, (sh[0], sh[1], sh[2]));
    write_volume_with(path, data, &header)
}

fn write_volume_with<T, D>(
    path: &Path,
    data: &ndarray::Array<T, D>,
    header: &nifti::NiftiHeader,
) -> std::io::Result<()>
where
    T: nifti::DataElement + bytemuck::Pod,
    D: ndarray::Dimension + ndarray::RemoveAxis,
{
    nifti::writer::WriterOptions::new(path)
        .reference_header(header)
        .write_nifti(data)
        .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))
}

fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)
}

/// Writes the whole sample tree into `dir` (created if missing). Returns the number of files.
pub fn write_sample_data(dir: &Path) -> std::io::Result<usize> {
    Ok(write_mednist(&dir.join("medmnist"))?
        + write_subject_folders(&dir.join("segmentation"))?
        + write_brain_tumour(&dir.join("Task01_BrainTumour"))?
        + write_nojson(&dir.join("nojson"))?
        + write_spleen(&dir.join("Task09_Spleen"))?)
}

/// The MedNIST-like classification set: `split/class/NNNNNN.png`, each image seeded by its
/// split, class and index.
fn write_mednist(root: &Path) -> std::io::Result<usize> {
    let mut files = 0;
    for (si, (split, per_class)) in SPLITS.iter().enumerate() {
        for (ci, class) in CLASSES.iter().enumerate() {
            for i in 0..*per_class {
                let seed = ((si as u64) << 32) | ((ci as u64) << 16) | i as u64;
                let px = class_image(class, seed);
                let png = gray_png(IMAGE_SIZE as u32, IMAGE_SIZE as u32, &px)?;
                let path = root
                    .join(split)
                    .join(class)
                    .join(format!("{:06}.png", si * 10_000 + ci * 1000 + i + 1));
                write_file(&path, &png)?;
                files += 1;
            }
        }
    }
    Ok(files)
}

/// The seed's subject-folder layout: `split/subject_NNN/{img,label}.nii.gz`.
fn write_subject_folders(root: &Path) -> std::io::Result<usize> {
    let mut files = 0;
    for (split, subjects) in [("train", &[1u64, 2, 3][..]), ("valid", &[4u64][..])] {
        for &s in subjects {
            let (img, lab) = ct_volume(100 + s, VOLUME_DIMS);
            let sub = root.join(split).join(format!("subject_{s:03}"));
            std::fs::create_dir_all(&sub)?;
            write_volume(&sub.join("img.nii.gz"), &img, VOLUME_SPACING)?;
            write_volume(&sub.join("label.nii.gz"), &lab, VOLUME_SPACING)?;
            files += 2;
        }
    }
    // One uncompressed subject: `.nii` is as common as `.nii.gz` in the wild.
    let (img, lab) = ct_volume(105, VOLUME_DIMS);
    let sub = root.join("valid/subject_005");
    std::fs::create_dir_all(&sub)?;
    write_volume(&sub.join("img.nii"), &img, VOLUME_SPACING)?;
    write_volume(&sub.join("label.nii"), &lab, VOLUME_SPACING)?;
    Ok(files + 2)
}

/// The Decathlon's own layout (`imagesTr`, `labelsTr`, `imagesTs`, `dataset.json`) with CT
/// volumes, plus the junk its real tarballs carry.
fn write_spleen(task: &Path) -> std::io::Result<usize> {
    let mut files = 0;
    for d in ["imagesTr", "labelsTr", "imagesTs"] {
        std::fs::create_dir_all(task.join(d))?;
    }
    let train = [2u64, 6, 10];
    for &s in &train {
        let (img, lab) = ct_volume(200 + s, VOLUME_DIMS);
        // An image and its label share the file name, as in the Decathlon.
        let name = format!("spleen_{s}.nii.gz");
        write_volume(&task.join("imagesTr").join(&name), &img, VOLUME_SPACING)?;
        write_volume(&task.join("labelsTr").join(&name), &lab, VOLUME_SPACING)?;
        files += 2;
    }
    let (img, _) = ct_volume(201, VOLUME_DIMS);
    write_volume(&task.join("imagesTs/spleen_1.nii.gz"), &img, VOLUME_SPACING)?;
    files += 1;
    // The real Decathlon tarballs carry macOS AppleDouble files; the catalog must skip them.
    write_file(
        &task.join("imagesTr/._spleen_2.nii.gz"),
        b"\x00\x05\x16\x07junk",
    )?;
    files += 1;
    let json = serde_json::json!({
        "name": "Spleen",
        "description": "Synthetic spleen-like CT volumes generated by medserve (not real patients)",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "spleen", "2": "lesion"},
        "numTraining": train.len(),
        "numTest": 1,
        "training": train.iter().map(|s| serde_json::json!({
            "image": format!("./imagesTr/spleen_{s}.nii.gz"),
            "label": format!("./labelsTr/spleen_{s}.nii.gz"),
        })).collect::<Vec<_>>(),
        "test": ["./imagesTs/spleen_1.nii.gz"],
    });
    let text = serde_json::to_vec_pretty(&json).map_err(std::io::Error::other)?;
    write_file(&task.join("dataset.json"), &text)?;
    Ok(files + 1)
}

/// A Decathlon-layout task as found in the wild, where the catalog and the item metadata have
/// the least to go on: no `dataset.json` (so no label has a name and there is no `info`),
/// `case_001` (int16 CT with a mask) with neither sform nor qform (the affine comes from
/// pixdim), `case_002` (no mask) with only a qform (LPS), and `imagesTs/case_003`, a float32
/// volume of NaNs (no intensity range, no auto window).
fn write_nojson(task: &Path) -> std::io::Result<usize> {
    for d in ["imagesTr", "labelsTr", "imagesTs"] {
        std::fs::create_dir_all(task.join(d))?;
    }
    let (sx, sy, sz) = WILD_SPACING;
    let bare = nifti::NiftiHeader {
        pixdim: [1.0, sx, sy, sz, 1.0, 1.0, 1.0, 1.0],
        xyzt_units: 2 | 8,
        qform_code: 0,
        sform_code: 0,
        ..Default::default()
    };
    let (img, lab) = ct_volume(401, WILD_DIMS);
    write_volume_with(&task.join("imagesTr/case_001.nii.gz"), &img, &bare)?;
    write_volume_with(&task.join("labelsTr/case_001.nii.gz"), &lab, &bare)?;
    // A 180 degree turn about z (quaternion b=c=0, d=1): x runs to the left, y to posterior.
    let qform_only = nifti::NiftiHeader {
        qform_code: 1,
        quatern_d: 1.0,
        quatern_x: 20.0,
        quatern_y: 15.0,
        ..bare.clone()
    };
    let (img, _) = ct_volume(402, WILD_DIMS);
    write_volume_with(&task.join("imagesTr/case_002.nii.gz"), &img, &qform_only)?;
    let nan = Array3::<f32>::from_elem(WILD_DIMS, f32::NAN);
    write_volume_with(&task.join("imagesTs/case_003.nii.gz"), &nan, &bare)?;
    Ok(4)
}

/// A Decathlon-style multi-modal MRI task: 4D float32 volumes (4 modalities on the 4th axis).
fn write_brain_tumour(task: &Path) -> std::io::Result<usize> {
    let mut files = 0;
    for d in ["imagesTr", "labelsTr", "imagesTs"] {
        std::fs::create_dir_all(task.join(d))?;
    }
    let train = [1u64, 2];
    for &s in &train {
        let (img, lab) = mr_volume(300 + s, MR_DIMS);
        let name = format!("BRATS_{s:03}.nii.gz");
        write_volume(&task.join("imagesTr").join(&name), &img, MR_SPACING)?;
        write_volume(&task.join("labelsTr").join(&name), &lab, MR_SPACING)?;
        files += 2;
    }
    let (img, _) = mr_volume(303, MR_DIMS);
    write_volume(&task.join("imagesTs/BRATS_003.nii.gz"), &img, MR_SPACING)?;
    files += 1;
    let json = serde_json::json!({
        "name": "BRATS",
        "description": "Synthetic multi-modal brain-MRI-like volumes generated by medserve (not real patients)",
        "tensorImageSize": "4D",
        "modality": MR_MODALITIES.iter().enumerate().map(|(i, m)| (i.to_string(), *m)).collect::<std::collections::BTreeMap<_, _>>(),
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
        "numTraining": train.len(),
        "numTest": 1,
        "training": train.iter().map(|s| serde_json::json!({
            "image": format!("./imagesTr/BRATS_{s:03}.nii.gz"),
            "label": format!("./labelsTr/BRATS_{s:03}.nii.gz"),
        })).collect::<Vec<_>>(),
        "test": ["./imagesTs/BRATS_003.nii.gz"],
    });
    let text = serde_json::to_vec_pretty(&json).map_err(std::io::Error::other)?;
    write_file(&task.join("dataset.json"), &text)?;
    Ok(files + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_differ_by_class_and_seed() {
        let a = class_image("HeadCT", 1);
        assert_eq!(a, class_image("HeadCT", 1));
        assert_ne!(a, class_image("HeadCT", 2));
        assert_ne!(a, class_image("Hand", 1));
    }

    #[test]
    fn volume_has_air_tissue_bone_and_both_labels() {
        let (img, lab) = ct_volume(7, (32, 32, 12));
        let min = *img.iter().min().unwrap();
        let max = *img.iter().max().unwrap();
        assert!(min < -950 && max > 600, "{min}..{max}");
        assert!(lab.iter().any(|&v| v == 1) && lab.iter().any(|&v| v == 2));
    }
}
