//! Parity with MONAI: every case in tests/fixtures/monai2d (made by tools/make_monai_fixtures.py
//! with MONAI itself) must come out of our pipeline, and out of the HTTP API, within 1e-5;
//! among them MONAI's `Flip` and `Rotate` after the seed's chain (the `flip`/`rotate` cases).

mod common;

use std::path::{Path, PathBuf};

use medserve::imaging::spatial::SpatialAxes;
use medserve::imaging::{DecodeOptions, ResizeMode, decode};
use medserve::pipeline::{Chain2d, Scale};
use ndarray::ArrayD;
use ndarray_npy::ReadNpyExt;
use serde::Deserialize;

/// Max abs difference allowed for outputs in [0, 1], and relative for unscaled outputs.
const TOL: f32 = 1e-5;

#[derive(Debug, Deserialize)]
struct Manifest {
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    input: String,
    size: [usize; 2],
    mode: String,
    scale: String,
    expected: String,
    decoded: String,
    /// MONAI `Flip(spatial_axis=...)`: `"all"` or a list of axes of MONAI's `(C, W, H)`.
    #[serde(default)]
    flip: Option<serde_json::Value>,
    /// MONAI `Rotate(angle)` in radians.
    #[serde(default)]
    rotate: Option<f64>,
}

impl Case {
    /// The `flip=` value of the case, as the API spells it.
    fn flip_param(&self) -> Option<String> {
        self.flip.as_ref().map(|f| match f {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(a) => a
                .iter()
                .map(|v| v.as_u64().expect("axis").to_string())
                .collect::<Vec<_>>()
                .join(","),
            v => panic!("bad flip {v}"),
        })
    }

    fn flip_axes(&self) -> SpatialAxes {
        match self.flip_param().as_deref() {
            None => SpatialAxes::NONE,
            Some("all") => SpatialAxes::all(2),
            Some(list) => {
                let mut s = SpatialAxes::NONE;
                for t in list.split(',') {
                    s.insert(t.parse().unwrap());
                }
                s
            }
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/monai2d")
}

fn manifest() -> Manifest {
    let text = std::fs::read_to_string(root().join("manifest.json")).expect("manifest");
    serde_json::from_str(&text).expect("manifest json")
}

fn npy(rel: &str) -> ArrayD<f32> {
    let f = std::fs::File::open(root().join(rel)).expect(rel);
    ArrayD::<f32>::read_npy(f).expect("npy")
}

fn chain(c: &Case) -> Chain2d {
    Chain2d {
        decode: DecodeOptions::monai(1 << 30),
        size: (c.size[0], c.size[1]),
        mode: match c.mode.as_str() {
            "area" => ResizeMode::Area,
            "nearest" => ResizeMode::Nearest,
            "bilinear" => ResizeMode::Linear,
            m => panic!("unknown mode {m}"),
        },
        scale: match c.scale.as_str() {
            "minmax" => Scale::MinMax,
            _ => Scale::None,
        },
        flip: c.flip_axes(),
        rotate: c.rotate,
    }
}

/// Largest difference, relative to max(1, |expected|) so unscaled 16-bit values (up to 6e4,
/// where one float32 step is 4e-3) are held to float rounding, not to an absolute 1e-5.
fn max_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f32::max)
}

fn is_jpeg(c: &Case) -> bool {
    c.input.ends_with(".jpg") || c.input.ends_with(".jpeg")
}

#[test]
fn manifest_covers_every_mode_and_input_kind() {
    let m = manifest();
    assert!(m.cases.len() >= 40, "{} cases", m.cases.len());
    for mode in ["area", "nearest", "bilinear"] {
        assert!(m.cases.iter().any(|c| c.mode == mode));
    }
    for kind in ["gray16", "palette", "rgba", "la_", "jpg", "const"] {
        assert!(m.cases.iter().any(|c| c.input.contains(kind)), "{kind}");
    }
}

#[test]
fn manifest_covers_flips_and_rotations() {
    let m = manifest();
    for flip in ["0", "1", "0,1", "all"] {
        assert!(
            m.cases
                .iter()
                .any(|c| c.flip_param().as_deref() == Some(flip)),
            "{flip}"
        );
    }
    let pi = std::f64::consts::PI;
    for angle in [0.0, pi / 2.0, -pi / 2.0, pi, 15.0, 0.3] {
        assert!(m.cases.iter().any(|c| c.rotate == Some(angle)), "{angle}");
    }
    // Non-square outputs, where MONAI's (C, W, H) and our (C, H, W) differ.
    assert!(
        m.cases
            .iter()
            .any(|c| c.rotate.is_some() && c.size[0] != c.size[1])
    );
}

/// The worst difference per group of cases (seed chain, flips, rotations), printed so a run
/// shows the margin under TOL.
#[test]
fn augment_cases_report_their_margin() {
    let mut worst: std::collections::BTreeMap<&str, f32> = Default::default();
    let m = manifest();
    for c in &m.cases {
        let group = match (c.flip.is_some(), c.rotate.is_some()) {
            (false, false) => "seed chain",
            (true, false) => "flip",
            (false, true) => "rotate",
            (true, true) => "flip+rotate",
        };
        let d = max_diff(&chain(c).apply(&npy(&c.decoded)), &npy(&c.expected));
        let w = worst.entry(group).or_default();
        *w = w.max(d);
    }
    for (g, d) in &worst {
        eprintln!("{g}: max diff {d}");
        assert!(*d <= TOL, "{g}: {d}");
    }
}

/// Flip and Rotate alone, applied to MONAI's own input of them (the seed chain's output for the
/// same image, size, mode and scale), equal MONAI's output to the bit: the rotation repeats
/// torch's float32 arithmetic, not just its mathematics.
#[test]
fn flip_and_rotate_alone_equal_monai_bit_for_bit() {
    let m = manifest();
    let mut checked = 0;
    for c in m
        .cases
        .iter()
        .filter(|c| c.flip.is_some() || c.rotate.is_some())
    {
        let Some(seed) = m.cases.iter().find(|s| {
            s.flip.is_none()
                && s.rotate.is_none()
                && (&s.input, s.size, &s.mode, &s.scale) == (&c.input, c.size, &c.mode, &c.scale)
        }) else {
            continue;
        };
        // Resize to the same shape is the identity and scale=none leaves values alone, so
        // this chain is only the flip and the rotation.
        let only = Chain2d {
            scale: Scale::None,
            ..chain(c)
        };
        let got = only.apply(&npy(&seed.expected));
        let want = npy(&c.expected);
        assert_eq!(got.shape(), want.shape(), "{}", c.name);
        let same = got
            .iter()
            .zip(want.iter())
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{}: max diff {}", c.name, max_diff(&got, &want));
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} cases");
}

#[test]
fn png_decoding_equals_monai_loadimage() {
    for c in manifest().cases.iter().filter(|c| !is_jpeg(c)) {
        let bytes = std::fs::read(root().join(&c.input)).unwrap();
        let d = decode::decode(&bytes, &chain(c).decode).unwrap();
        let want = npy(&c.decoded);
        let got = d.data.into_dyn();
        assert_eq!(got.shape(), want.shape(), "{}", c.name);
        assert_eq!(
            max_diff(&got, &want),
            0.0,
            "{}: PNG decoding must be exact",
            c.name
        );
    }
}

#[test]
fn transforms_equal_monai_on_monai_decoded_input() {
    // Isolates resize + scale from decoding (JPEG decoders differ slightly; see below).
    for c in &manifest().cases {
        let got = chain(c).apply(&npy(&c.decoded));
        let d = max_diff(&got, &npy(&c.expected));
        assert!(d <= TOL, "{}: max diff {d}", c.name);
    }
}

#[test]
fn whole_pipeline_equals_monai_for_png() {
    for c in manifest().cases.iter().filter(|c| !is_jpeg(c)) {
        let bytes = std::fs::read(root().join(&c.input)).unwrap();
        let ch = chain(c);
        let d = decode::decode(&bytes, &ch.decode).unwrap();
        let got = ch.apply(&d.data.into_dyn());
        let diff = max_diff(&got, &npy(&c.expected));
        assert!(diff <= TOL, "{}: max diff {diff}", c.name);
    }
}

/// libjpeg-turbo (Pillow, so MONAI) and the `image` crate's decoder use different IDCT and
/// chroma-upsampling arithmetic, so JPEG pixels may differ by a few levels. We bound it
/// rather than pretend it is zero; PNG (the MedNIST/MedMNIST format) is exact.
#[test]
fn jpeg_decoding_is_within_a_few_levels_of_libjpeg() {
    for c in manifest().cases.iter().filter(|c| is_jpeg(c)) {
        let bytes = std::fs::read(root().join(&c.input)).unwrap();
        let got = decode::decode(&bytes, &chain(c).decode)
            .unwrap()
            .data
            .into_dyn();
        let want = npy(&c.decoded);
        assert_eq!(got.shape(), want.shape(), "{}", c.name);
        let max = got
            .iter()
            .zip(want.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        let mean = got
            .iter()
            .zip(want.iter())
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / got.len() as f32;
        eprintln!(
            "{}: JPEG decode vs libjpeg: max {max} levels, mean {mean:.4}",
            c.name
        );
        assert!(
            max <= 4.0 && mean <= 0.5,
            "{}: max {max}, mean {mean}",
            c.name
        );
    }
}

/// The same numbers through the HTTP API as `.npy`.
#[tokio::test]
async fn http_npy_equals_monai_for_png() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest();
    for c in &m.cases {
        let file = Path::new(&c.input).file_name().unwrap();
        let dst = dir.path().join("parity/all/fixtures").join(file);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(root().join(&c.input), dst).unwrap();
    }
    let (app, _) = common::app_on(dir.path());
    for c in m.cases.iter().filter(|c| !is_jpeg(c)) {
        let stem = Path::new(&c.input).file_stem().unwrap().to_str().unwrap();
        let mut uri = format!(
            "/v1/datasets/parity/splits/all/items/fixtures~{stem}/image?format=npy&size={},{}&mode={}&scale={}",
            c.size[0], c.size[1], c.mode, c.scale
        );
        if let Some(f) = c.flip_param() {
            uri.push_str(&format!("&flip={f}"));
        }
        if let Some(a) = c.rotate {
            // Display is the shortest decimal that reads back as the same f64.
            uri.push_str(&format!("&rotate={a}"));
        }
        let r = common::get(&app, &uri).await;
        assert_eq!(r.status, 200, "{uri}: {}", String::from_utf8_lossy(&r.body));
        let got = ArrayD::<f32>::read_npy(std::io::Cursor::new(&r.body)).unwrap();
        let diff = max_diff(&got, &npy(&c.expected));
        assert!(diff <= TOL, "{}: max diff {diff} over HTTP", c.name);
    }
}
