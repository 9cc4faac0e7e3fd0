//! Parity with MONAI for volumes: every case in tests/fixtures/monai3d (made by
//! tools/make_monai_fixtures_3d.py with MONAI itself: `LoadImaged -> EnsureChannelFirstd ->
//! Resized -> ScaleIntensityRanged [-> Flipd]`, masks `Resized(mode="nearest") [-> Flipd]`)
//! must come out of our decoder and transforms within 1e-5, masks identical, and a flipped
//! volume's affine equal to MONAI's.

use std::path::{Path, PathBuf};

use medserve::imaging::ResizeMode;
use medserve::imaging::nifti::{self, VolumeLimits};
use medserve::imaging::spatial::{self, SpatialAxes};
use medserve::imaging::volume::{self, LabelSelect, RangeScale};
use ndarray::ArrayD;
use ndarray_npy::ReadNpyExt;
use serde::Deserialize;

const TOL: f32 = 1e-5;

#[derive(Debug, Deserialize)]
struct Manifest {
    cases: Vec<Case>,
    inputs: Vec<Input>,
}

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    input: String,
    label: Option<String>,
    size: Option<[usize; 3]>,
    mode: Option<String>,
    scale: Option<Scale>,
    expected_image: String,
    expected_label: Option<String>,
    /// MONAI `Flipd(spatial_axis=...)`: `"all"` or a list of voxel axes.
    #[serde(default)]
    flip: Option<serde_json::Value>,
    /// MONAI's image affine after the chain (flip cases only).
    #[serde(default)]
    expected_affine: Option<[[f64; 4]; 4]>,
}

impl Case {
    fn flip_axes(&self) -> SpatialAxes {
        match &self.flip {
            None => SpatialAxes::NONE,
            Some(serde_json::Value::String(s)) if s == "all" => SpatialAxes::all(3),
            Some(serde_json::Value::Array(a)) => {
                let mut s = SpatialAxes::NONE;
                for v in a {
                    s.insert(v.as_u64().expect("axis") as usize);
                }
                s
            }
            Some(v) => panic!("bad flip {v}"),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Scale {
    a_min: f32,
    a_max: f32,
    b_min: f32,
    b_max: f32,
    clip: bool,
}

#[derive(Debug, Deserialize)]
struct Input {
    file: String,
    affine: [[f64; 4]; 4],
    orientation: String,
    decoded: String,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/monai3d")
}

fn manifest() -> Manifest {
    let text = std::fs::read_to_string(root().join("manifest.json")).expect("manifest");
    serde_json::from_str(&text).expect("manifest json")
}

fn npy<T: ndarray_npy::ReadableElement>(rel: &str) -> ArrayD<T> {
    let f = std::fs::File::open(root().join(rel)).expect(rel);
    ArrayD::<T>::read_npy(f).expect("npy")
}

fn load(rel: &str) -> nifti::Volume {
    let bytes = std::fs::read(root().join(rel)).expect(rel);
    let limits = VolumeLimits {
        max_voxels: 1 << 30,
        max_bytes: 1 << 32,
    };
    nifti::decode(&bytes, &limits).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn max_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f32::max)
}

#[test]
fn decoding_equals_nibabel_and_monai_load() {
    let m = manifest();
    assert!(m.inputs.len() >= 8);
    for input in &m.inputs {
        let v = load(&input.file);
        let ours = volume::image_f32(&v, None, ResizeMode::Area);
        let theirs = npy::<f32>(&input.decoded);
        assert_eq!(ours.shape(), theirs.shape(), "{}", input.file);
        assert_eq!(
            max_diff(&ours, &theirs),
            0.0,
            "{}: decode differs",
            input.file
        );
        let codes: String = v.header.orientation().iter().collect();
        assert_eq!(codes, input.orientation, "{}", input.file);
        for i in 0..4 {
            for j in 0..4 {
                assert!(
                    (v.header.affine[i][j] - input.affine[i][j]).abs() < 1e-4,
                    "{}: affine {:?} vs {:?}",
                    input.file,
                    v.header.affine,
                    input.affine
                );
            }
        }
    }
}

#[test]
fn every_case_matches_monai() {
    let m = manifest();
    assert!(m.cases.len() >= 20);
    let mut worst = (0.0f32, String::new());
    for c in &m.cases {
        let v = load(&c.input);
        let mode = match c.mode.as_deref() {
            None | Some("area") => ResizeMode::Area,
            Some("trilinear") => ResizeMode::Linear,
            Some("nearest") => ResizeMode::Nearest,
            Some(m) => panic!("unknown mode {m}"),
        };
        let mut img = volume::image_f32(&v, c.size, mode);
        if let Some(s) = &c.scale {
            RangeScale {
                a_min: s.a_min,
                a_max: s.a_max,
                b_min: s.b_min,
                b_max: s.b_max,
                clip: s.clip,
            }
            .apply(&mut img);
        }
        let flip = c.flip_axes();
        let img = spatial::flip(img.view(), flip);
        let want = npy::<f32>(&c.expected_image);
        let d = max_diff(&img, &want);
        assert!(d <= TOL, "{}: max diff {d}", c.name);
        if d > worst.0 {
            worst = (d, c.name.clone());
        }
        if let (Some(l), Some(e)) = (&c.label, &c.expected_label) {
            let lv = load(l);
            let mask = volume::label_u8(&lv).expect("label");
            let ours =
                volume::label_resized(mask.view().into_dyn(), c.size, &LabelSelect::default());
            let ours = spatial::flip(ours.view(), flip);
            let theirs = npy::<u8>(e);
            assert_eq!(ours, theirs, "{}: label differs", c.name);
        }
        if let Some(want) = c.expected_affine {
            let from = v.header.spatial;
            let to = c.size.unwrap_or(from);
            let ours = spatial::flipped_affine(
                &volume::resized_affine(&v.header.affine, from, to),
                to,
                flip,
            );
            for i in 0..4 {
                for j in 0..4 {
                    assert!(
                        (ours[i][j] - want[i][j]).abs() < 1e-4,
                        "{}: affine {ours:?} vs MONAI {want:?}",
                        c.name
                    );
                }
            }
        }
    }
    eprintln!("worst image difference: {} ({})", worst.0, worst.1);
    let flips = m.cases.iter().filter(|c| c.flip.is_some()).count();
    assert!(flips >= 8, "only {flips} flip cases");
}
