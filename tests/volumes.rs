//! The 3D API over HTTP, in process through the router: `/slice`, `/volume` (+ aliases), the
//! `volume`/`label` item metadata, MONAI parity of what goes over the wire, hostile NIfTI
//! objects, and the volume cache.
//!
//! Expected values come from decoding the sample files independently where possible (raw
//! voxels indexed by hand), and from the MONAI-made fixtures in tests/fixtures/monai3d.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use common::{Resp, app, assert_problem, get, get_with, parse_npy};
use medserve::AppState;
use medserve::imaging::ResizeMode;
use medserve::imaging::encode::label_colour;
use medserve::imaging::nifti::{self, Dtype, OutType, Volume, VolumeLimits, Voxels};
use medserve::imaging::volume::{self, Plane, SliceAt};
use ndarray::ArrayD;
use ndarray_npy::{NpzReader, ReadNpyExt};
use serde_json::{Value, json};

const SPLEEN: &str = "/v1/datasets/Task09_Spleen/splits/train/items/spleen_10";
const SPLEEN_NO_LABEL: &str = "/v1/datasets/Task09_Spleen/splits/test/items/spleen_1";
const BRATS: &str = "/v1/datasets/Task01_BrainTumour/splits/train/items/BRATS_001";
const SUBJECT_NII: &str = "/v1/datasets/segmentation/splits/valid/items/subject_005";
const MEDNIST: &str = "/v1/datasets/medmnist/splits/train/items/HeadCT~005001";

const SPLEEN_IMG: &str = "Task09_Spleen/imagesTr/spleen_10.nii.gz";
const SPLEEN_LAB: &str = "Task09_Spleen/labelsTr/spleen_10.nii.gz";
const BRATS_IMG: &str = "Task01_BrainTumour/imagesTr/BRATS_001.nii.gz";
const BRATS_LAB: &str = "Task01_BrainTumour/labelsTr/BRATS_001.nii.gz";

/// The sample CT grid.
const X: usize = 64;
const Y: usize = 64;
const Z: usize = 24;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn big_limits() -> VolumeLimits {
    VolumeLimits {
        max_voxels: 1 << 30,
        max_bytes: 1 << 32,
    }
}

/// A sample file decoded by the library's decoder, independently of the server.
fn sample_vol(rel: &str) -> Volume {
    let bytes = std::fs::read(common::sample_dir().join(rel)).expect(rel);
    nifti::decode(&bytes, &big_limits()).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn i16_voxels(v: &Volume) -> Vec<f32> {
    match &v.voxels {
        Voxels::I16(d) => d.iter().map(|&x| f32::from(x)).collect(),
        other => panic!(
            "expected int16 voxels, got {:?}",
            std::mem::discriminant(other)
        ),
    }
}

fn u8_voxels(v: &Volume) -> Vec<u8> {
    match &v.voxels {
        Voxels::U8(d) => d.to_vec(),
        other => panic!(
            "expected uint8 voxels, got {:?}",
            std::mem::discriminant(other)
        ),
    }
}

fn f32_voxels(v: &Volume) -> Vec<f32> {
    match &v.voxels {
        Voxels::F32(d) => d.to_vec(),
        other => panic!(
            "expected float32 voxels, got {:?}",
            std::mem::discriminant(other)
        ),
    }
}

/// File-order index of voxel `(x, y, z, c)` in an `nx` x `ny` x `nz` grid.
fn at(dims: [usize; 3], x: usize, y: usize, z: usize, c: usize) -> usize {
    let [nx, ny, nz] = dims;
    x + nx * (y + ny * (z + nz * c))
}

fn f32_body(body: &[u8]) -> Vec<f32> {
    assert_eq!(body.len() % 4, 0);
    body.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn npy_u8(body: &[u8]) -> ArrayD<u8> {
    ArrayD::<u8>::read_npy(std::io::Cursor::new(body)).expect("uint8 npy")
}

fn npy_f32(body: &[u8]) -> ArrayD<f32> {
    ArrayD::<f32>::read_npy(std::io::Cursor::new(body)).expect("float32 npy")
}

/// The text of a version-1 `.npy` header.
fn npy_header(body: &[u8]) -> String {
    assert!(body.starts_with(b"\x93NUMPY"), "not npy");
    let len = u16::from_le_bytes([body[8], body[9]]) as usize;
    String::from_utf8_lossy(&body[10..10 + len]).to_string()
}

/// An 8-bit gray PNG: (width, height, pixels row-major).
fn png_gray(body: &[u8]) -> (u32, u32, Vec<u8>) {
    let img = image::load_from_memory(body).expect("png");
    assert_eq!(img.color(), image::ColorType::L8);
    let g = img.into_luma8();
    (g.width(), g.height(), g.into_raw())
}

/// An 8-bit RGB PNG: (width, height, pixels row-major, 3 per pixel).
fn png_rgb(body: &[u8]) -> (u32, u32, Vec<u8>) {
    let img = image::load_from_memory(body).expect("png");
    assert_eq!(img.color(), image::ColorType::Rgb8);
    let g = img.into_rgb8();
    (g.width(), g.height(), g.into_raw())
}

/// The gray level the server's PNG windowing gives `v` for the window `lo..hi`.
fn gray(v: f32, lo: f32, hi: f32) -> u8 {
    let span = if hi > lo { hi - lo } else { 1.0 };
    let t = ((v - lo) / span).clamp(0.0, 1.0);
    if t.is_nan() {
        0
    } else {
        (t * 255.0).round() as u8
    }
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("gzip");
    out
}

fn ok(r: &Resp, what: &str) {
    assert_eq!(
        r.status,
        200,
        "{what}: {}",
        String::from_utf8_lossy(&r.body[..r.body.len().min(600)])
    );
}

async fn get_ok(app: &Router, uri: &str) -> Resp {
    let r = get(app, uri).await;
    ok(&r, uri);
    r
}

/// Asserts a 400 naming `param`, and returns the problem.
async fn bad_param(app: &Router, uri: &str, param: &str) -> Value {
    let j = assert_problem(&get(app, uri).await, 400, "invalid-parameter");
    assert_eq!(j["parameter"], param, "{uri}: {j}");
    j
}

fn counter(state: &AppState) -> (u64, u64, u64) {
    let m = &state.metrics;
    (
        m.storage_gets.load(Ordering::SeqCst),
        m.decodes.load(Ordering::SeqCst),
        m.transforms.load(Ordering::SeqCst),
    )
}

fn npz_arrays(body: &[u8]) -> (Option<ArrayD<f32>>, Option<ArrayD<u8>>, Vec<String>) {
    let mut r = NpzReader::new(std::io::Cursor::new(body)).expect("npz");
    let mut names = r.names().unwrap();
    names.sort();
    let img = names
        .contains(&"image".to_string())
        .then(|| r.by_name::<_, ndarray::IxDyn>("image.npy").unwrap());
    let lab = names
        .contains(&"label".to_string())
        .then(|| r.by_name::<_, ndarray::IxDyn>("label.npy").unwrap());
    (img, lab, names)
}

// ---------------------------------------------------------------------------------------------
// 1. Slices
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn slice_default_is_a_middle_axial_gray_png() {
    let (app, _) = app();
    let r = get_ok(&app, &format!("{SPLEEN}/slice")).await;
    assert_eq!(r.header("content-type"), "image/png");
    assert_eq!(r.header("x-shape"), "64,64");
    assert_eq!(r.header("x-dtype"), "uint8");
    assert!(r.header("etag").starts_with('"'));
    let (w, h, _) = png_gray(&r.body);
    assert_eq!((w, h), (64, 64));
    // Middle of the 24 axial slices, auto window.
    let explicit = get_ok(
        &app,
        &format!("{SPLEEN}/slice?axis=axial&index=12&part=image&preset=auto&channel=0&format=png"),
    )
    .await;
    assert_eq!(explicit.body, r.body);
}

#[tokio::test]
async fn slice_every_axis_has_its_shape_bounds_and_middle() {
    let (app, _) = app();
    // (axis, slices along it, X-Shape)
    let cases = [
        ("0", X, "64,24"),
        ("1", Y, "64,24"),
        ("2", Z, "64,64"),
        ("axial", Z, "64,64"),
        ("coronal", Y, "24,64"),
        ("sagittal", X, "24,64"),
    ];
    for (axis, n, shape) in cases {
        let base = format!("{SPLEEN}/slice?axis={axis}&format=f32");
        let mid = get_ok(&app, &base).await;
        assert_eq!(mid.header("x-shape"), shape, "axis={axis}");
        assert_eq!(mid.header("x-dtype"), "float32", "axis={axis}");
        let (h, w) = shape.split_once(',').unwrap();
        let hw: usize = h.parse::<usize>().unwrap() * w.parse::<usize>().unwrap();
        assert_eq!(mid.body.len(), 4 * hw, "axis={axis}");
        // The default index is the middle one.
        let explicit = get_ok(&app, &format!("{base}&index={}", n / 2)).await;
        assert_eq!(explicit.body, mid.body, "axis={axis}: default index is n/2");
        // The first and last are fine, n is not.
        get_ok(&app, &format!("{base}&index=0")).await;
        let last = get_ok(&app, &format!("{base}&index={}", n - 1)).await;
        assert_eq!(last.header("x-shape"), shape);
        // Past the end: that slice does not exist (404), and the answer says which do.
        let j = assert_problem(
            &get(&app, &format!("{base}&index={n}")).await,
            404,
            "slice-not-found",
        );
        assert_eq!(
            j["available"],
            json!([format!("index 0..={}", n - 1)]),
            "axis={axis}: {j}"
        );
        // PNG has the same H x W.
        let png = get_ok(&app, &format!("{SPLEEN}/slice?axis={axis}")).await;
        let (pw, ph, _) = png_gray(&png.body);
        assert_eq!(format!("{ph},{pw}"), shape, "axis={axis} png");
    }
    bad_param(&app, &format!("{SPLEEN}/slice?index=-1"), "index").await;
    bad_param(&app, &format!("{SPLEEN}/slice?index=abc"), "index").await;
    bad_param(&app, &format!("{SPLEEN}/slice?axis=3"), "axis").await;
    bad_param(&app, &format!("{SPLEEN}/slice?axis=transverse"), "axis").await;
    bad_param(&app, &format!("{SPLEEN}/slice?part=mask"), "part").await;
    bad_param(&app, &format!("{SPLEEN}/slice?format=jpeg"), "format").await;
    bad_param(&app, &format!("{SPLEEN}/slice?zoom=2"), "zoom").await;
    bad_param(&app, &format!("{SPLEEN}/slice?axis=0&axis=1"), "axis").await;
}

#[tokio::test]
async fn slice_values_equal_the_decoded_voxels() {
    let (app, _) = app();
    let vol = sample_vol(SPLEEN_IMG);
    assert_eq!(vol.header.spatial, [X, Y, Z]);
    let raw = i16_voxels(&vol);
    for k in [0, 7, 12, 23] {
        let f = get_ok(&app, &format!("{SPLEEN}/slice?axis=2&index={k}&format=f32")).await;
        assert_eq!(f.header("content-type"), "application/octet-stream");
        assert_eq!(f.header("x-shape"), "64,64");
        let vals = f32_body(&f.body);
        // nibabel's get_fdata()[:, :, k]: rows x, columns y.
        for x in 0..X {
            for y in 0..Y {
                assert_eq!(
                    vals[x * Y + y],
                    raw[at([X, Y, Z], x, y, k, 0)],
                    "f32 [{x}, {y}, {k}]"
                );
            }
        }
        let lib = volume::image_slice(
            &vol,
            SliceAt {
                axis: 2,
                index: k,
                channel: 0,
            },
        );
        assert_eq!(vals, lib.iter().copied().collect::<Vec<_>>());
        let n = get_ok(&app, &format!("{SPLEEN}/slice?axis=2&index={k}&format=npy")).await;
        assert_eq!(n.header("content-type"), "application/x-npy");
        assert_eq!(n.header("x-dtype"), "float32");
        let (shape, nv) = parse_npy(&n.body);
        assert_eq!(shape, [X, Y]);
        assert_eq!(nv, vals, "npy and f32 agree");
    }
    // The other numeric axes keep the remaining axes in file order.
    for axis in [0usize, 1] {
        let k = 20;
        let n = get_ok(
            &app,
            &format!("{SPLEEN}/slice?axis={axis}&index={k}&format=npy"),
        )
        .await;
        let (shape, nv) = parse_npy(&n.body);
        let (h, w) = if axis == 0 { (Y, Z) } else { (X, Z) };
        assert_eq!(shape, [h, w]);
        for r in 0..h {
            for c in 0..w {
                let want = if axis == 0 {
                    raw[at([X, Y, Z], k, r, c, 0)]
                } else {
                    raw[at([X, Y, Z], r, k, c, 0)]
                };
                assert_eq!(nv[r * w + c], want, "axis {axis} [{r}, {c}]");
            }
        }
    }
}

#[tokio::test]
async fn slice_planes_are_radiological() {
    let (app, _) = app();
    let vol = sample_vol(SPLEEN_IMG);
    assert_eq!(vol.header.orientation(), ['R', 'A', 'S']);
    let raw = i16_voxels(&vol);
    let d = [X, Y, Z];
    // Axial: anterior (high y) at the top, patient right (high x) on the image's left:
    // the voxel slice transposed and flipped both ways.
    let k = 9;
    let a = f32_body(
        &get_ok(
            &app,
            &format!("{SPLEEN}/slice?axis=axial&index={k}&format=f32"),
        )
        .await
        .body,
    );
    for r in 0..Y {
        for c in 0..X {
            assert_eq!(
                a[r * X + c],
                raw[at(d, X - 1 - c, Y - 1 - r, k, 0)],
                "axial"
            );
        }
    }
    // The library's plan says the same.
    let plan = volume::display_plan(vol.header.orientation(), Plane::Axial);
    let s = volume::image_slice(
        &vol,
        SliceAt {
            axis: plan.axis,
            index: k,
            channel: 0,
        },
    );
    let o = volume::orient(s.view(), plan);
    assert_eq!(a, o.iter().copied().collect::<Vec<_>>());
    // Coronal: superior (high z) at the top, right on the left.
    let j = 30;
    let c = f32_body(
        &get_ok(
            &app,
            &format!("{SPLEEN}/slice?axis=coronal&index={j}&format=f32"),
        )
        .await
        .body,
    );
    for r in 0..Z {
        for col in 0..X {
            assert_eq!(
                c[r * X + col],
                raw[at(d, X - 1 - col, j, Z - 1 - r, 0)],
                "coronal"
            );
        }
    }
    // Sagittal: superior at the top, anterior (high y) on the left.
    let i = 33;
    let s = f32_body(
        &get_ok(
            &app,
            &format!("{SPLEEN}/slice?axis=sagittal&index={i}&format=f32"),
        )
        .await
        .body,
    );
    for r in 0..Z {
        for col in 0..Y {
            assert_eq!(
                s[r * Y + col],
                raw[at(d, i, Y - 1 - col, Z - 1 - r, 0)],
                "sagittal"
            );
        }
    }
    // Label slices follow the same orientation.
    let lab = u8_voxels(&sample_vol(SPLEEN_LAB));
    let l = npy_u8(
        &get_ok(
            &app,
            &format!("{SPLEEN}/slice?axis=axial&index=12&part=label&format=npy"),
        )
        .await
        .body,
    );
    assert_eq!(l.shape(), [Y, X]);
    for r in 0..Y {
        for col in 0..X {
            assert_eq!(l[[r, col]], lab[at(d, X - 1 - col, Y - 1 - r, 12, 0)]);
        }
    }
}

#[tokio::test]
async fn slice_channels_of_the_4d_subject() {
    let (app, _) = app();
    let vol = sample_vol(BRATS_IMG);
    assert_eq!((vol.header.spatial, vol.header.channels), ([40, 40, 20], 4));
    let raw = f32_voxels(&vol);
    let mut bodies = Vec::new();
    for ch in 0..4 {
        let r = get_ok(
            &app,
            &format!("{BRATS}/slice?axis=2&index=10&channel={ch}&format=f32"),
        )
        .await;
        assert_eq!(r.header("x-shape"), "40,40");
        let v = f32_body(&r.body);
        for x in 0..40 {
            for y in 0..40 {
                assert_eq!(v[x * 40 + y], raw[at([40, 40, 20], x, y, 10, ch)]);
            }
        }
        bodies.push(v);
        get_ok(&app, &format!("{BRATS}/slice?channel={ch}")).await;
    }
    assert_ne!(bodies[0], bodies[1], "channels differ");
    let channel_404 = |uri: String, available: &'static str| {
        let app = app.clone();
        async move {
            let j = assert_problem(&get(&app, &uri).await, 404, "channel-not-found");
            assert_eq!(j["available"], json!([available]), "{uri}");
        }
    };
    channel_404(format!("{BRATS}/slice?channel=4"), "channel 0..=3").await;
    // A 3D volume has one channel.
    channel_404(format!("{SPLEEN}/slice?channel=1"), "channel 0..=0").await;
}

#[tokio::test]
async fn slice_label_png_npy_and_f32_hold_the_raw_values() {
    let (app, _) = app();
    let lab = u8_voxels(&sample_vol(SPLEEN_LAB));
    let k = 12;
    let expect: Vec<u8> = (0..X)
        .flat_map(|x| (0..Y).map(move |y| (x, y)))
        .map(|(x, y)| lab[at([X, Y, Z], x, y, k, 0)])
        .collect();
    let values: BTreeSet<u8> = expect.iter().copied().collect();
    assert_eq!(
        values,
        BTreeSet::from([0, 1, 2]),
        "the sample slice has both labels"
    );

    let png = get_ok(&app, &format!("{SPLEEN}/slice?axis=2&index={k}&part=label")).await;
    assert_eq!(png.header("content-type"), "image/png");
    assert_eq!(png.header("x-dtype"), "uint8");
    let (w, h, px) = png_gray(&png.body);
    assert_eq!((h, w), (X as u32, Y as u32));
    assert_eq!(px, expect, "label PNG pixels are the label values");

    let npy = get_ok(
        &app,
        &format!("{SPLEEN}/slice?axis=2&index={k}&part=label&format=npy"),
    )
    .await;
    assert_eq!(npy.header("x-dtype"), "uint8");
    assert_eq!(npy.header("x-shape"), "64,64");
    assert!(
        npy_header(&npy.body).contains("'descr': '|u1'"),
        "{}",
        npy_header(&npy.body)
    );
    let a = npy_u8(&npy.body);
    assert_eq!(a.shape(), [X, Y]);
    assert_eq!(a.iter().copied().collect::<Vec<_>>(), expect);

    let f = get_ok(
        &app,
        &format!("{SPLEEN}/slice?axis=2&index={k}&part=label&format=f32"),
    )
    .await;
    assert_eq!(f.header("x-dtype"), "float32");
    assert_eq!(
        f32_body(&f.body),
        expect.iter().map(|&v| f32::from(v)).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn slice_overlay_blends_the_mask_over_the_gray_image() {
    let (app, _) = app();
    let q = "axis=axial&index=12";
    let img = get_ok(&app, &format!("{SPLEEN}/slice?{q}")).await;
    let (_, _, g) = png_gray(&img.body);
    let lab = get_ok(&app, &format!("{SPLEEN}/slice?{q}&part=label")).await;
    let (_, _, l) = png_gray(&lab.body);

    let ov0 = get_ok(&app, &format!("{SPLEEN}/slice?{q}&part=overlay&opacity=0")).await;
    assert_eq!(ov0.header("content-type"), "image/png");
    let (w, h, rgb) = png_rgb(&ov0.body);
    assert_eq!((w, h), (64, 64));
    let replicated: Vec<u8> = g.iter().flat_map(|&v| [v, v, v]).collect();
    assert_eq!(rgb, replicated, "opacity 0 is the gray image in 3 channels");

    let ov = get_ok(&app, &format!("{SPLEEN}/slice?{q}&part=overlay")).await;
    let (_, _, rgb) = png_rgb(&ov.body);
    let mut coloured = 0;
    for (i, &m) in l.iter().enumerate() {
        let p = &rgb[3 * i..3 * i + 3];
        if m == 0 {
            assert_eq!(p, [g[i]; 3], "unlabelled pixels stay gray");
        } else {
            assert_ne!(p[0], p[1], "labelled pixels are tinted");
            coloured += 1;
        }
    }
    assert!(coloured > 0);

    let ov1 = get_ok(&app, &format!("{SPLEEN}/slice?{q}&part=overlay&opacity=1")).await;
    let (_, _, rgb) = png_rgb(&ov1.body);
    for (i, &m) in l.iter().enumerate() {
        if m != 0 {
            assert_eq!(
                rgb[3 * i..3 * i + 3],
                label_colour(m),
                "opacity 1 is the colour"
            );
        }
    }

    for bad in ["1.5", "-0.1", "abc", "nan"] {
        bad_param(
            &app,
            &format!("{SPLEEN}/slice?part=overlay&opacity={bad}"),
            "opacity",
        )
        .await;
    }
    for f in ["npy", "f32"] {
        bad_param(
            &app,
            &format!("{SPLEEN}/slice?part=overlay&format={f}"),
            "format",
        )
        .await;
    }
}

#[tokio::test]
async fn slice_windows_and_presets_map_hu_to_gray() {
    let (app, _) = app();
    let vol = sample_vol(SPLEEN_IMG);
    let raw = i16_voxels(&vol);
    let k = 12;
    let slice: Vec<f32> = (0..X)
        .flat_map(|x| (0..Y).map(move |y| (x, y)))
        .map(|(x, y)| raw[at([X, Y, Z], x, y, k, 0)])
        .collect();
    let expect = |lo: f32, hi: f32| slice.iter().map(|&v| gray(v, lo, hi)).collect::<Vec<_>>();
    let base = format!("{SPLEEN}/slice?axis=2&index={k}");

    let w = get_ok(&app, &format!("{base}&window=40,400")).await;
    let (_, _, px) = png_gray(&w.body);
    assert_eq!(px, expect(-160.0, 240.0), "window=40,400");
    let a = get_ok(&app, &format!("{base}&a_min=-160&a_max=240")).await;
    assert_eq!(a.body, w.body, "a_min/a_max is the same window");

    for (preset, c, wd) in [
        ("ct-abdomen", 40.0f32, 400.0f32),
        ("ct-lung", -600.0, 1500.0),
        ("ct-bone", 400.0, 1800.0),
        ("ct-brain", 40.0, 80.0),
        ("ct-soft-tissue", 50.0, 350.0),
    ] {
        let r = get_ok(&app, &format!("{base}&preset={preset}")).await;
        let (_, _, px) = png_gray(&r.body);
        assert_eq!(px, expect(c - wd / 2.0, c + wd / 2.0), "preset {preset}");
    }
    // auto: 1st..99th percentile of all voxels; mri: 0.5th..99.5th of the non-zero ones.
    let auto = volume::percentiles(&vol, 0, 1.0, 99.0, false).unwrap();
    let mri = volume::percentiles(&vol, 0, 0.5, 99.5, true).unwrap();
    for (preset, (lo, hi)) in [("auto", auto), ("mri", mri)] {
        let r = get_ok(&app, &format!("{base}&preset={preset}")).await;
        let (_, _, px) = png_gray(&r.body);
        assert_eq!(px, expect(lo as f32, hi as f32), "preset {preset}");
    }
    let default = get_ok(&app, &base).await;
    let (_, _, px) = png_gray(&default.body);
    assert_eq!(
        px,
        expect(auto.0 as f32, auto.1 as f32),
        "auto is the default"
    );
    // Windows only change PNGs: f32 stays raw.
    let f = get_ok(&app, &format!("{base}&format=f32&preset=ct-bone")).await;
    assert_eq!(f32_body(&f.body), slice);

    // At most one way to set the window, and each well-formed.
    let two = [
        ("window=40,400&preset=ct-lung", "preset"),
        ("window=40,400&a_min=0&a_max=1", "a_min"),
        ("a_min=0&a_max=1&preset=mri", "preset"),
        ("window=40,400&a_max=1", "a_min"),
    ];
    for (q, p) in two {
        bad_param(&app, &format!("{base}&{q}"), p).await;
    }
    // A zero-width window is a threshold at its center, the same as a_min == a_max
    // (MONAI's ScaleIntensityRange shifts by a_min instead of dividing by zero, then clips).
    let zero = get_ok(&app, &format!("{base}&window=40,0")).await;
    let same = get_ok(&app, &format!("{base}&a_min=40&a_max=40")).await;
    assert_eq!(zero.body, same.body);
    let (_, _, px) = png_gray(&zero.body);
    assert!(
        px.contains(&0) && px.contains(&255),
        "both sides of 40 HU occur"
    );
    for (q, p) in [
        ("window=40", "window"),
        ("window=40,-5", "window"),
        ("window=a,b", "window"),
        ("window=40,+5", "window"),
        ("window=1e3,400", "window"),
        ("window=40,400.", "window"),
        ("window=12345678,1", "window"),
        ("window=%2040,400", "window"),
        ("a_min=0", "a_max"),
        ("a_max=0", "a_min"),
        ("a_min=inf&a_max=1", "a_min"),
        ("a_min=1e39&a_max=1", "a_min"),
        ("preset=ct-liver", "preset"),
    ] {
        bad_param(&app, &format!("{base}&{q}"), p).await;
    }
}

#[tokio::test]
async fn slice_errors_on_items_without_labels_and_wrong_kinds() {
    let (app, _) = app();
    // The image of an unlabelled item is fine.
    get_ok(&app, &format!("{SPLEEN_NO_LABEL}/slice")).await;
    for part in ["label", "overlay"] {
        let r = get(&app, &format!("{SPLEEN_NO_LABEL}/slice?part={part}")).await;
        let j = assert_problem(&r, 404, "label-not-found");
        assert!(j["detail"].as_str().unwrap().contains("spleen_1"), "{j}");
    }
    // Slices are for segmentation items; /image for classification items.
    assert_problem(
        &get(&app, &format!("{MEDNIST}/slice")).await,
        404,
        "not-applicable",
    );
    for item in [SPLEEN, BRATS, SUBJECT_NII] {
        assert_problem(
            &get(&app, &format!("{item}/image")).await,
            404,
            "not-applicable",
        );
    }
    assert_problem(
        &get(
            &app,
            "/v1/datasets/Task09_Spleen/splits/train/items/spleen_99/slice",
        )
        .await,
        404,
        "item-not-found",
    );
}

#[tokio::test]
async fn slice_etag_gives_304() {
    let (app, _) = app();
    let uri = format!("{SPLEEN}/slice?axis=coronal&part=overlay");
    let first = get_ok(&app, &uri).await;
    let etag = first.header("etag").to_string();
    let again = get_with(&app, &uri, &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    let other = get_ok(&app, &format!("{uri}&opacity=0.5")).await;
    assert_ne!(other.header("etag"), etag);
}

#[tokio::test]
async fn defaults_spelled_out_share_the_etag() {
    let (app, _) = app();
    let pairs = [
        (
            format!("{SPLEEN}/slice"),
            format!("{SPLEEN}/slice?axis=axial&index=12"),
        ),
        (
            format!("{SPLEEN}/slice?axis=0&format=f32"),
            format!("{SPLEEN}/slice?axis=0&index=32&format=f32"),
        ),
        (
            format!("{SPLEEN}/volume"),
            format!("{SPLEEN}/volume?size=64,64,24"),
        ),
    ];
    for (implicit, explicit) in pairs {
        let a = get_ok(&app, &implicit).await;
        let b = get_ok(&app, &explicit).await;
        assert_eq!(a.body, b.body, "{explicit}");
        assert_eq!(
            a.header("etag"),
            b.header("etag"),
            "{implicit} vs {explicit}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Volumes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn volume_default_is_float32_npy_of_the_native_grid() {
    let (app, _) = app();
    let raw = i16_voxels(&sample_vol(SPLEEN_IMG));
    let r = get_ok(&app, &format!("{SPLEEN}/volume")).await;
    assert_eq!(r.header("content-type"), "application/x-npy");
    assert_eq!(r.header("x-shape"), "1,64,64,24");
    assert_eq!(r.header("x-dtype"), "float32");
    assert!(npy_header(&r.body).contains("'descr': '<f4'"));
    let a = npy_f32(&r.body);
    assert_eq!(a.shape(), [1, X, Y, Z]);
    for ((_, x, y, z), &v) in a
        .view()
        .into_dimensionality::<ndarray::Ix4>()
        .unwrap()
        .indexed_iter()
    {
        assert_eq!(v, raw[at([X, Y, Z], x, y, z, 0)], "[{x}, {y}, {z}]");
    }
}

#[tokio::test]
async fn volume_resizes_with_each_mode() {
    let (app, _) = app();
    let raw = i16_voxels(&sample_vol(SPLEEN_IMG));
    let d = [X, Y, Z];
    // Halving every axis: area and trilinear (align_corners=False) both average 2x2x2 blocks;
    // nearest takes voxel 2i.
    let block_mean = |x: usize, y: usize, z: usize| {
        let mut s = 0.0f64;
        for dz in 0..2 {
            for dy in 0..2 {
                for dx in 0..2 {
                    s += f64::from(raw[at(d, 2 * x + dx, 2 * y + dy, 2 * z + dz, 0)]);
                }
            }
        }
        (s / 8.0) as f32
    };
    let vol = sample_vol(SPLEEN_IMG);
    for (mode, rm) in [
        ("area", ResizeMode::Area),
        ("trilinear", ResizeMode::Linear),
        ("nearest", ResizeMode::Nearest),
    ] {
        let r = get_ok(&app, &format!("{SPLEEN}/volume?size=32,32,12&mode={mode}")).await;
        assert_eq!(r.header("x-shape"), "1,32,32,12", "{mode}");
        let a = npy_f32(&r.body);
        assert_eq!(a.shape(), [1, 32, 32, 12]);
        let lib = volume::image_f32(&vol, Some([32, 32, 12]), rm);
        assert_eq!(a, lib, "{mode}: the library's chain");
        for x in 0..32 {
            for y in 0..32 {
                for z in 0..12 {
                    let v = a[[0, x, y, z]];
                    let want = if mode == "nearest" {
                        raw[at(d, 2 * x, 2 * y, 2 * z, 0)]
                    } else {
                        block_mean(x, y, z)
                    };
                    assert!(
                        (v - want).abs() <= 1e-3 * want.abs().max(1.0),
                        "{mode} [{x}, {y}, {z}]: {v} vs {want}"
                    );
                }
            }
        }
    }
    // Default mode is area.
    assert_eq!(
        get_ok(&app, &format!("{SPLEEN}/volume?size=32,32,12"))
            .await
            .body,
        get_ok(&app, &format!("{SPLEEN}/volume?size=32,32,12&mode=area"))
            .await
            .body
    );
    bad_param(&app, &format!("{SPLEEN}/volume?mode=cubic"), "mode").await;
}

#[tokio::test]
async fn volume_scale_intensity_range() {
    let (app, _) = app();
    let raw = i16_voxels(&sample_vol(SPLEEN_IMG));
    let cases: [(&str, f32, f32, f32, f32, bool); 5] = [
        ("a_min=-1000&a_max=1000", -1000.0, 1000.0, 0.0, 1.0, false),
        ("a_min=-1000&a_max=500", -1000.0, 500.0, 0.0, 1.0, false),
        (
            "a_min=-1000&a_max=500&clip=true",
            -1000.0,
            500.0,
            0.0,
            1.0,
            true,
        ),
        (
            "a_min=-1000&a_max=1000&b_min=-1&b_max=1&clip=false",
            -1000.0,
            1000.0,
            -1.0,
            1.0,
            false,
        ),
        (
            "a_min=-200&a_max=300&b_min=-1&b_max=1&clip=true&scale=range",
            -200.0,
            300.0,
            -1.0,
            1.0,
            true,
        ),
    ];
    for (q, a_min, a_max, b_min, b_max, clip) in cases {
        let r = get_ok(&app, &format!("{SPLEEN}/volume?{q}")).await;
        let a = npy_f32(&r.body);
        assert_eq!(a.shape(), [1, X, Y, Z]);
        let mut hi = f32::MIN;
        let mut lo = f32::MAX;
        for ((_, x, y, z), &v) in a
            .view()
            .into_dimensionality::<ndarray::Ix4>()
            .unwrap()
            .indexed_iter()
        {
            let s = raw[at([X, Y, Z], x, y, z, 0)];
            let mut want = (s - a_min) / (a_max - a_min) * (b_max - b_min) + b_min;
            if clip {
                want = want.max(b_min).min(b_max);
            }
            assert!((v - want).abs() <= 1e-6, "{q} [{x},{y},{z}]: {v} vs {want}");
            hi = hi.max(v);
            lo = lo.min(v);
        }
        if clip {
            assert!(lo >= b_min && hi <= b_max, "{q}: {lo}..{hi}");
        }
        if q == "a_min=-1000&a_max=500" {
            assert!(hi > 1.0, "without clip, bone (~700 HU) exceeds 1: max {hi}");
            assert!(
                lo < 0.0,
                "without clip, air below -1000 HU goes under 0: {lo}"
            );
        }
        if q == "a_min=-1000&a_max=500&clip=true" {
            assert_eq!((lo, hi), (0.0, 1.0));
        }
    }
    // scale=none is the default without a_min.
    assert_eq!(
        get_ok(&app, &format!("{SPLEEN}/volume?scale=none"))
            .await
            .body,
        get_ok(&app, &format!("{SPLEEN}/volume")).await.body
    );
    // Equal ends: MONAI shifts instead of dividing by zero (`x - a_min + b_min`) and does
    // not clip; reversed ends invert.
    let raw = f32_body(
        &get_ok(&app, &format!("{SPLEEN}/volume?format=f32"))
            .await
            .body,
    );
    let same = f32_body(
        &get_ok(
            &app,
            &format!("{SPLEEN}/volume?format=f32&a_min=5&a_max=5&b_min=2&clip=true"),
        )
        .await
        .body,
    );
    let expect: Vec<f32> = raw.iter().map(|x| x - 5.0 + 2.0).collect();
    assert_eq!(
        same, expect,
        "a_min == a_max is x - a_min + b_min, unclipped"
    );
    let inverted = f32_body(
        &get_ok(
            &app,
            &format!("{SPLEEN}/volume?format=f32&a_min=1000&a_max=-1000"),
        )
        .await
        .body,
    );
    let expect: Vec<f32> = raw.iter().map(|x| (x - 1000.0) / -2000.0).collect();
    assert_eq!(inverted, expect, "reversed ends invert");
    let v = format!("{SPLEEN}/volume");
    for (q, p) in [
        ("scale=none&a_min=-1000&a_max=1000", "scale"),
        ("scale=range", "a_min"),
        ("scale=zscore", "scale"),
        ("b_min=0", "b_min"),
        ("b_max=1", "b_max"),
        ("clip=true", "clip"),
        ("a_min=-1000", "a_max"),
        ("a_max=1000", "a_min"),
        ("a_min=abc&a_max=1", "a_min"),
        ("a_min=-1000&a_max=1000&clip=1", "clip"),
        ("a_min=-1000&a_max=1000&clip=maybe", "clip"),
        ("a_min=-1000&a_max=1000&b_min=x", "b_min"),
    ] {
        bad_param(&app, &format!("{v}?{q}"), p).await;
    }
}

#[tokio::test]
async fn volume_size_errors() {
    let (app, _) = app();
    let v = format!("{SPLEEN}/volume");
    for size in [
        "0,32,12",
        "32,0,12",
        "32,32",
        "32,32,12,1",
        "5000,32,12",
        "a,b,c",
        "32,32,x",
        "",
        "-1,2,3",
        "1000,1000,1000",
        "257,8,8",
        "8,%208,8",
    ] {
        let j = bad_param(&app, &format!("{v}?size={size}"), "size").await;
        assert!(j["allowed"].as_str().unwrap().contains("1..=256"), "{j}");
    }
    get_ok(&app, &format!("{v}?size=1,1,1")).await;
    get_ok(&app, &format!("{v}?size=001,1,1")).await;
}

#[tokio::test]
async fn volume_arrays_beyond_max_output_are_refused_before_they_are_computed() {
    // The sample CT is 64x64x24: 384 KiB as float32, 96 KiB as a uint8 mask.
    let limits = medserve::config::Limits {
        max_output_bytes: 200_000,
        ..Default::default()
    };
    let (app, state) = common::app_with_limits(limits);
    let transforms = || state.metrics.transforms.load(Ordering::Relaxed);
    let before = transforms();
    for (query, object) in [
        ("", SPLEEN_IMG),
        ("?format=nii.gz", SPLEEN_IMG),
        ("?part=both&format=npz", SPLEEN_IMG),
        ("?part=label&format=f32", SPLEEN_LAB),
        ("?size=64,64,24", SPLEEN_IMG),
    ] {
        let r = get(&app, &format!("{SPLEEN}/volume{query}")).await;
        let j = assert_problem(&r, 422, "object-too-large");
        assert_eq!(j["object"], object, "{query}: {j}");
        let detail = j["detail"].as_str().unwrap();
        assert!(
            detail.contains("64x64x24") && detail.contains("--max-output-mb"),
            "{query}: {detail}"
        );
        assert!(detail.contains("size=X,Y,Z"), "{detail}");
    }
    assert_eq!(
        transforms(),
        before,
        "nothing is transformed for a refused response"
    );
    // Within the bound: a smaller grid, or the native mask as uint8.
    for query in [
        "?size=32,32,12",
        "?part=label",
        "?part=both&format=npz&size=32,32,24",
    ] {
        get_ok(&app, &format!("{SPLEEN}/volume{query}")).await;
    }
    // Slices are never that large.
    get_ok(&app, &format!("{SPLEEN}/slice?format=npy")).await;
}

#[tokio::test]
async fn volume_labels_select_and_binarise() {
    let (app, _) = app();
    let lab = u8_voxels(&sample_vol(SPLEEN_LAB));
    let count = |v: u8| lab.iter().filter(|&&x| x == v).count();
    let r = get_ok(&app, &format!("{SPLEEN}/volume?part=label")).await;
    assert_eq!(r.header("content-type"), "application/x-npy");
    assert_eq!(r.header("x-dtype"), "uint8");
    assert_eq!(r.header("x-shape"), "1,64,64,24");
    assert!(npy_header(&r.body).contains("'descr': '|u1'"));
    let a = npy_u8(&r.body);
    assert_eq!(a.shape(), [1, X, Y, Z]);
    let values: BTreeSet<u8> = a.iter().copied().collect();
    assert_eq!(values, BTreeSet::from([0, 1, 2]));
    for ((_, x, y, z), &v) in a
        .view()
        .into_dimensionality::<ndarray::Ix4>()
        .unwrap()
        .indexed_iter()
    {
        assert_eq!(v, lab[at([X, Y, Z], x, y, z, 0)]);
    }

    let two = npy_u8(
        &get_ok(&app, &format!("{SPLEEN}/volume?part=label&labels=2"))
            .await
            .body,
    );
    assert_eq!(
        two.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([0, 2])
    );
    assert_eq!(two.iter().filter(|&&v| v == 2).count(), count(2));

    let bin = npy_u8(
        &get_ok(&app, &format!("{SPLEEN}/volume?part=label&binary=true"))
            .await
            .body,
    );
    assert_eq!(
        bin.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([0, 1])
    );
    assert_eq!(bin.iter().filter(|&&v| v == 1).count(), count(1) + count(2));

    let one_bin = npy_u8(
        &get_ok(
            &app,
            &format!("{SPLEEN}/volume?part=label&labels=1&binary=true"),
        )
        .await
        .body,
    );
    assert_eq!(one_bin.iter().filter(|&&v| v == 1).count(), count(1));

    // Resized masks use nearest neighbour: voxel 2i.
    let small = npy_u8(
        &get_ok(
            &app,
            &format!("{SPLEEN}/volume?part=label&size=32,32,12&mode=area"),
        )
        .await
        .body,
    );
    assert_eq!(small.shape(), [1, 32, 32, 12]);
    for ((_, x, y, z), &v) in small
        .view()
        .into_dimensionality::<ndarray::Ix4>()
        .unwrap()
        .indexed_iter()
    {
        assert_eq!(v, lab[at([X, Y, Z], 2 * x, 2 * y, 2 * z, 0)]);
    }

    // f32 of a label is float32 too.
    let f = get_ok(&app, &format!("{SPLEEN}/volume?part=label&format=f32")).await;
    assert_eq!(f.header("x-dtype"), "float32");
    assert_eq!(f.body.len(), 4 * X * Y * Z);

    let v = format!("{SPLEEN}/volume");
    for (q, p) in [
        ("labels=2", "labels"),
        ("part=image&labels=1", "labels"),
        ("binary=true", "binary"),
        ("part=label&labels=300", "labels"),
        ("part=label&labels=a", "labels"),
        ("part=label&binary=yes", "binary"),
        ("part=both", "part"),
        ("part=both&format=npy", "part"),
        ("part=both&format=f32", "part"),
        ("part=both&format=nii", "part"),
        ("part=both&format=nii.gz", "part"),
        ("part=mask", "part"),
        ("format=zarr", "format"),
        ("size=1,1,1&size=2,2,2", "size"),
        ("sizes=1,1,1", "sizes"),
        ("flip=3", "flip"),
        ("flip=0,0", "flip"),
        ("flip=0,1,2,1", "flip"),
        ("flip=", "flip"),
        ("flip=none", "flip"),
    ] {
        bad_param(&app, &format!("{v}?{q}"), p).await;
    }
}

#[tokio::test]
async fn volume_npz_holds_image_and_label() {
    let (app, _) = app();
    let r = get_ok(&app, &format!("{SPLEEN}/volume?part=both&format=npz")).await;
    assert_eq!(r.header("content-type"), "application/x-npz");
    let (img, lab, names) = npz_arrays(&r.body);
    assert_eq!(names, ["image", "label"]);
    let img = img.unwrap();
    let lab = lab.unwrap();
    assert_eq!(img.shape(), [1, X, Y, Z]);
    assert_eq!(lab.shape(), [1, X, Y, Z]);
    // The same arrays as the single-array routes.
    let npy_img = npy_f32(&get_ok(&app, &format!("{SPLEEN}/volume")).await.body);
    let npy_lab = npy_u8(
        &get_ok(&app, &format!("{SPLEEN}/volume?part=label"))
            .await
            .body,
    );
    assert_eq!(img, npy_img);
    assert_eq!(lab, npy_lab);
    // The dtypes inside the zip: float32 image, uint8 label.
    let mut zip = NpzReader::new(std::io::Cursor::new(&r.body)).unwrap();
    assert!(
        zip.by_name::<ndarray::OwnedRepr<u8>, ndarray::IxDyn>("image.npy")
            .is_err()
    );
    assert!(
        zip.by_name::<ndarray::OwnedRepr<f32>, ndarray::IxDyn>("label.npy")
            .is_err()
    );

    let only_img = get_ok(&app, &format!("{SPLEEN}/volume?format=npz")).await;
    assert_eq!(npz_arrays(&only_img.body).2, ["image"]);
    let only_lab = get_ok(
        &app,
        &format!("{SPLEEN}/volume?format=npz&part=label&binary=true"),
    )
    .await;
    let (_, l, names) = npz_arrays(&only_lab.body);
    assert_eq!(names, ["label"]);
    assert!(l.unwrap().iter().all(|&v| v <= 1));
}

#[tokio::test]
async fn volume_f32_is_raw_little_endian() {
    let (app, _) = app();
    let r = get_ok(&app, &format!("{SPLEEN}/volume?format=f32&size=32,16,12")).await;
    assert_eq!(r.header("content-type"), "application/octet-stream");
    assert_eq!(r.header("x-shape"), "1,32,16,12");
    assert_eq!(r.header("x-dtype"), "float32");
    let shape: Vec<usize> = r
        .header("x-shape")
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(r.body.len(), 4 * shape.iter().product::<usize>());
    let npy = npy_f32(
        &get_ok(&app, &format!("{SPLEEN}/volume?size=32,16,12"))
            .await
            .body,
    );
    assert_eq!(f32_body(&r.body), npy.iter().copied().collect::<Vec<_>>());
}

/// The affine of a grid resized from `from` to `to` voxels, worked out by hand: voxel size
/// `in/out` times the old one; voxel 0's centre at old index `(s - 1) / 2`.
fn expected_affine(a: &[[f64; 4]; 4], from: [usize; 3], to: [usize; 3]) -> [[f64; 4]; 4] {
    let mut out = *a;
    for r in 0..3 {
        let mut origin = a[r][3];
        for k in 0..3 {
            let s = from[k] as f64 / to[k] as f64;
            out[r][k] = a[r][k] * s;
            origin += a[r][k] * (s - 1.0) / 2.0;
        }
        out[r][3] = origin;
    }
    out
}

fn assert_affine_close(got: &[[f64; 4]; 4], want: &[[f64; 4]; 4], what: &str) {
    for i in 0..4 {
        for j in 0..4 {
            assert!(
                (got[i][j] - want[i][j]).abs() < 1e-4,
                "{what}: affine {got:?} vs {want:?}"
            );
        }
    }
}

#[tokio::test]
async fn volume_nifti_outputs_carry_the_resized_affine() {
    let (app, _) = app();
    let src = sample_vol(SPLEEN_IMG);
    let src_affine = src.header.affine;
    // The sample: 0.8 x 0.8 x 2.5 mm, centred.
    assert_affine_close(
        &src_affine,
        &[
            [0.8, 0.0, 0.0, -25.6],
            [0.0, 0.8, 0.0, -25.6],
            [0.0, 0.0, 2.5, -30.0],
            [0.0, 0.0, 0.0, 1.0],
        ],
        "source",
    );
    for (size, to) in [
        ("32,32,12", [32usize, 32, 12]),
        ("48,40,10", [48, 40, 10]),
        ("64,64,24", [64, 64, 24]),
    ] {
        for fmt in ["nii", "nii.gz"] {
            let img = get_ok(&app, &format!("{SPLEEN}/volume?format={fmt}&size={size}")).await;
            let lab = get_ok(
                &app,
                &format!("{SPLEEN}/volume?format={fmt}&size={size}&part=label"),
            )
            .await;
            let want_type = if fmt == "nii" {
                "application/octet-stream"
            } else {
                "application/gzip"
            };
            assert_eq!(img.header("content-type"), want_type);
            assert_eq!(img.header("x-shape"), format!("1,{size}"));
            assert_eq!(img.header("x-dtype"), "float32");
            assert_eq!(lab.header("x-dtype"), "uint8");
            if fmt == "nii.gz" {
                assert!(img.body.starts_with(&[0x1f, 0x8b]));
            }
            let vi = nifti::decode(&img.body, &big_limits()).expect("image nifti");
            let vl = nifti::decode(&lab.body, &big_limits()).expect("label nifti");
            assert_eq!(vi.header.version, 1);
            assert_eq!(vi.header.spatial, to);
            assert_eq!(vi.header.channels, 1);
            assert_eq!(vi.header.dtype, Dtype::F32);
            assert_eq!(vl.header.spatial, to);
            assert_eq!(vl.header.dtype, Dtype::U8);
            let want = expected_affine(&src_affine, [X, Y, Z], to);
            assert_affine_close(&vi.header.affine, &want, &format!("{fmt} {size}"));
            assert_eq!(vi.header.affine, vl.header.affine, "image and mask line up");
            assert_eq!(vi.header.orientation(), ['R', 'A', 'S']);
            // Voxel size = source extent / new size.
            let ext = [X as f64 * 0.8, Y as f64 * 0.8, Z as f64 * 2.5];
            for k in 0..3 {
                let col = (0..3)
                    .map(|i| vi.header.affine[i][k].powi(2))
                    .sum::<f64>()
                    .sqrt();
                assert!((col - ext[k] / to[k] as f64).abs() < 1e-4, "{col}");
                assert!((vi.header.pixdim[k] - ext[k] / to[k] as f64).abs() < 1e-4);
            }
            // The voxels are the npy's.
            let npy = npy_f32(
                &get_ok(&app, &format!("{SPLEEN}/volume?size={size}"))
                    .await
                    .body,
            );
            assert_eq!(volume::image_f32(&vi, None, ResizeMode::Area), npy);
            let npy_l = npy_u8(
                &get_ok(&app, &format!("{SPLEEN}/volume?size={size}&part=label"))
                    .await
                    .body,
            );
            assert_eq!(volume::label_u8(&vl).unwrap().into_dyn(), npy_l.view());
        }
    }
}

#[tokio::test]
async fn volume_nii_gz_is_never_content_encoded_but_npy_and_json_are() {
    let (app, _) = app();
    let gzip = [("accept-encoding", "gzip")];
    let plain = get_ok(&app, &format!("{SPLEEN}/volume.nii.gz?size=32,32,12")).await;
    let r = get_with(
        &app,
        &format!("{SPLEEN}/volume.nii.gz?size=32,32,12"),
        &gzip,
    )
    .await;
    ok(&r, "nii.gz");
    assert_eq!(r.header("content-type"), "application/gzip");
    assert_eq!(
        r.header("content-encoding"),
        "",
        "a .gz file is not re-encoded"
    );
    assert_eq!(r.body, plain.body);
    nifti::decode(&r.body, &big_limits()).expect("a NIfTI after one gunzip");
    let r = get_with(&app, &format!("{SPLEEN}/volume?format=nii.gz"), &gzip).await;
    assert_eq!(r.header("content-encoding"), "");

    let n = get_with(&app, &format!("{SPLEEN}/volume?size=32,32,12"), &gzip).await;
    ok(&n, "npy");
    assert_eq!(n.header("content-encoding"), "gzip");
    assert_eq!(n.header("content-type"), "application/x-npy");
    let (shape, _) = parse_npy(&gunzip(&n.body));
    assert_eq!(shape, [1, 32, 32, 12]);

    let f = get_with(&app, &format!("{SPLEEN}/volume?format=f32"), &gzip).await;
    assert_eq!(f.header("content-encoding"), "gzip");
    assert_eq!(gunzip(&f.body).len(), 4 * X * Y * Z);

    let nii = get_with(&app, &format!("{SPLEEN}/volume.nii"), &gzip).await;
    assert_eq!(nii.header("content-encoding"), "gzip");
    nifti::decode(&gunzip(&nii.body), &big_limits()).expect("nii after transport gunzip");

    let j = get_with(&app, SPLEEN, &gzip).await;
    ok(&j, "item json");
    assert_eq!(j.header("content-encoding"), "gzip");
    let meta: Value = serde_json::from_slice(&gunzip(&j.body)).unwrap();
    assert_eq!(meta["volume"]["shape"], serde_json::json!([64, 64, 24]));

    // Past 32 MiB a body goes as it is: compressing it would hold a runtime thread for
    // seconds (256^3 float32 is 64 MiB).
    let big = get_with(&app, &format!("{SPLEEN}/volume?size=256,256,256"), &gzip).await;
    ok(&big, "large npy");
    assert_eq!(big.header("content-encoding"), "");
    assert_eq!(
        big.body.len() as u64,
        4 * 256 * 256 * 256 + 128,
        "an npy header and the voxels"
    );
}

#[tokio::test]
async fn volume_aliases_equal_the_format_parameter() {
    let (app, _) = app();
    for (alias, fmt) in [
        ("volume.nii.gz", "nii.gz"),
        ("volume.nii", "nii"),
        ("volume.npy", "npy"),
        ("volume.npz", "npz"),
    ] {
        for q in [
            "",
            "size=32,32,12&mode=trilinear&a_min=-1000&a_max=1000",
            "part=label&labels=1",
        ] {
            let amp = if q.is_empty() { "" } else { "&" };
            let a = get_ok(&app, &format!("{SPLEEN}/{alias}?{q}")).await;
            let b = get_ok(&app, &format!("{SPLEEN}/volume?format={fmt}{amp}{q}")).await;
            assert_eq!(a.body, b.body, "{alias}?{q}");
            assert_eq!(
                a.header("content-type"),
                b.header("content-type"),
                "{alias}"
            );
            assert_eq!(a.header("etag"), b.header("etag"), "{alias}");
            assert_eq!(a.header("x-shape"), b.header("x-shape"), "{alias}");
            // Repeating the alias's own format is fine.
            let c = get_ok(&app, &format!("{SPLEEN}/{alias}?format={fmt}{amp}{q}")).await;
            assert_eq!(c.body, a.body);
        }
        let other = if fmt == "npy" { "nii" } else { "npy" };
        let j = bad_param(&app, &format!("{SPLEEN}/{alias}?format={other}"), "format").await;
        assert_eq!(j["allowed"], fmt, "{j}");
    }
    bad_param(
        &app,
        &format!("{SPLEEN}/volume.nii.gz?format=f32"),
        "format",
    )
    .await;
    bad_param(&app, &format!("{SPLEEN}/volume.npz?format=nii"), "format").await;
    // part=both needs the npz alias.
    get_ok(&app, &format!("{SPLEEN}/volume.npz?part=both")).await;
    bad_param(&app, &format!("{SPLEEN}/volume.nii.gz?part=both"), "part").await;
    bad_param(&app, &format!("{SPLEEN}/volume.npy?part=both"), "part").await;
}

#[tokio::test]
async fn volume_of_the_4d_subject_has_channels_first() {
    let (app, _) = app();
    let raw = f32_voxels(&sample_vol(BRATS_IMG));
    let lab = u8_voxels(&sample_vol(BRATS_LAB));
    let d = [40, 40, 20];
    let r = get_ok(&app, &format!("{BRATS}/volume")).await;
    assert_eq!(r.header("x-shape"), "4,40,40,20");
    let a = npy_f32(&r.body);
    assert_eq!(a.shape(), [4, 40, 40, 20]);
    for ((c, x, y, z), &v) in a
        .view()
        .into_dimensionality::<ndarray::Ix4>()
        .unwrap()
        .indexed_iter()
    {
        assert_eq!(v, raw[at(d, x, y, z, c)]);
    }
    let l = npy_u8(
        &get_ok(&app, &format!("{BRATS}/volume?part=label"))
            .await
            .body,
    );
    assert_eq!(l.shape(), [1, 40, 40, 20]);
    assert_eq!(
        l.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([0, 1, 2, 3])
    );
    assert_eq!(l.iter().copied().collect::<Vec<_>>().len(), lab.len());
    let (img, lab2, _) = npz_arrays(
        &get_ok(&app, &format!("{BRATS}/volume.npz?part=both&size=20,20,10"))
            .await
            .body,
    );
    assert_eq!(img.unwrap().shape(), [4, 20, 20, 10]);
    assert_eq!(lab2.unwrap().shape(), [1, 20, 20, 10]);

    // NIfTI out: channels on the 4th axis.
    let nii = get_ok(&app, &format!("{BRATS}/volume.nii.gz?size=20,20,10")).await;
    assert_eq!(nii.header("x-shape"), "4,20,20,10");
    let v = nifti::decode(&nii.body, &big_limits()).unwrap();
    assert_eq!((v.header.spatial, v.header.channels), ([20, 20, 10], 4));
    let npy = npy_f32(
        &get_ok(&app, &format!("{BRATS}/volume?size=20,20,10"))
            .await
            .body,
    );
    assert_eq!(volume::image_f32(&v, None, ResizeMode::Area), npy);
    let nl = nifti::decode(
        &get_ok(
            &app,
            &format!("{BRATS}/volume.nii.gz?size=20,20,10&part=label"),
        )
        .await
        .body,
        &big_limits(),
    )
    .unwrap();
    assert_eq!((nl.header.spatial, nl.header.channels), ([20, 20, 10], 1));
    assert_eq!(nl.header.affine, v.header.affine);
}

#[tokio::test]
async fn volume_of_an_uncompressed_nii_subject() {
    let (app, _) = app();
    let src = sample_vol("segmentation/valid/subject_005/img.nii");
    let raw = i16_voxels(&src);
    let a = npy_f32(&get_ok(&app, &format!("{SUBJECT_NII}/volume")).await.body);
    assert_eq!(a.shape(), [1, X, Y, Z]);
    assert_eq!(a[[0, 5, 6, 7]], raw[at([X, Y, Z], 5, 6, 7, 0)]);
    let l = npy_u8(
        &get_ok(&app, &format!("{SUBJECT_NII}/volume?part=label"))
            .await
            .body,
    );
    assert_eq!(l.shape(), [1, X, Y, Z]);
    let n = get_ok(&app, &format!("{SUBJECT_NII}/volume.nii.gz?size=32,32,12")).await;
    let v = nifti::decode(&n.body, &big_limits()).unwrap();
    assert_eq!(v.header.spatial, [32, 32, 12]);
    get_ok(&app, &format!("{SUBJECT_NII}/slice?part=overlay")).await;
    let meta = get_ok(&app, SUBJECT_NII).await.json();
    assert_eq!(meta["volume"]["format"], "nifti1");
    assert_eq!(meta["label"]["shape"], serde_json::json!([64, 64, 24]));
}

#[tokio::test]
async fn volume_errors_on_missing_labels_and_wrong_kinds() {
    let (app, _) = app();
    get_ok(&app, &format!("{SPLEEN_NO_LABEL}/volume")).await;
    get_ok(&app, &format!("{SPLEEN_NO_LABEL}/volume.npz")).await;
    for uri in [
        format!("{SPLEEN_NO_LABEL}/volume?part=label"),
        format!("{SPLEEN_NO_LABEL}/volume.npz?part=both"),
        format!("{SPLEEN_NO_LABEL}/volume.nii.gz?part=label"),
    ] {
        let j = assert_problem(&get(&app, &uri).await, 404, "label-not-found");
        assert!(j["detail"].as_str().unwrap().contains("spleen_1"), "{j}");
    }
    for suffix in [
        "volume",
        "volume.nii.gz",
        "volume.nii",
        "volume.npy",
        "volume.npz",
    ] {
        assert_problem(
            &get(&app, &format!("{MEDNIST}/{suffix}")).await,
            404,
            "not-applicable",
        );
    }
}

#[tokio::test]
async fn volume_etag_gives_304_and_differs_by_transform() {
    let (app, _) = app();
    let uri = format!("{SPLEEN}/volume.nii.gz?size=32,32,12&a_min=-1000&a_max=1000");
    let first = get_ok(&app, &uri).await;
    let etag = first.header("etag").to_string();
    assert!(etag.starts_with('"'));
    assert_eq!(first.header("cache-control"), "public, max-age=300");
    let again = get_with(&app, &uri, &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), etag);
    let mut tags = BTreeSet::from([etag]);
    for other in [
        format!("{SPLEEN}/volume.nii.gz?size=32,32,12"),
        format!("{SPLEEN}/volume.nii.gz?size=32,32,12&a_min=-1000&a_max=1000&clip=true"),
        format!("{SPLEEN}/volume.nii?size=32,32,12&a_min=-1000&a_max=1000"),
        format!("{SPLEEN}/volume.nii.gz?size=32,32,12&a_min=-1000&a_max=1000&part=label"),
        format!("{SPLEEN}/volume.nii.gz?size=32,32,12&a_min=-1000&a_max=1000&mode=nearest"),
    ] {
        assert!(
            tags.insert(get_ok(&app, &other).await.header("etag").to_string()),
            "{other} shares a tag"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Item metadata
// ---------------------------------------------------------------------------------------------

fn close(v: &Value, want: f64, what: &str) {
    let got = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: {v} is not a number"));
    assert!((got - want).abs() < 1e-5, "{what}: {got} vs {want}");
}

#[tokio::test]
async fn item_metadata_describes_volume_and_label() {
    let (app, _) = app();
    let j = get_ok(&app, SPLEEN).await.json();
    let v = &j["volume"];
    assert_eq!(v["format"], "nifti1");
    assert_eq!(v["shape"], serde_json::json!([64, 64, 24]));
    assert_eq!(v["channels"], 1);
    assert_eq!(v["dtype"], "int16");
    assert_eq!(v["byte_order"], "little");
    assert_eq!(v["orientation"], "RAS");
    assert_eq!(v["affine_source"], "sform");
    close(&v["scl_slope"], 1.0, "scl_slope");
    close(&v["scl_inter"], 0.0, "scl_inter");
    for (k, s) in [0.8, 0.8, 2.5].into_iter().enumerate() {
        close(&v["spacing"][k], s, "spacing");
    }
    let want = [
        [0.8, 0.0, 0.0, -25.6],
        [0.0, 0.8, 0.0, -25.6],
        [0.0, 0.0, 2.5, -30.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    for (i, row) in want.iter().enumerate() {
        for (k, &w) in row.iter().enumerate() {
            close(&v["affine"][i][k], w, "affine");
        }
    }
    let raw = i16_voxels(&sample_vol(SPLEEN_IMG));
    let min = raw.iter().copied().fold(f32::MAX, f32::min);
    let max = raw.iter().copied().fold(f32::MIN, f32::max);
    close(&v["intensity"]["min"], f64::from(min), "min");
    close(&v["intensity"]["max"], f64::from(max), "max");
    assert!(min < -950.0 && max > 600.0);

    let l = &j["label"];
    assert_eq!(l["shape"], serde_json::json!([64, 64, 24]));
    assert_eq!(l["dtype"], "uint8");
    let lab = u8_voxels(&sample_vol(SPLEEN_LAB));
    let values = l["values"].as_array().unwrap();
    let names = ["background", "spleen", "lesion"];
    assert_eq!(values.len(), 3, "{l}");
    let mut total = 0;
    for (i, e) in values.iter().enumerate() {
        assert_eq!(e["value"], i);
        assert_eq!(e["name"], names[i]);
        let n = e["voxels"].as_u64().unwrap();
        assert_eq!(n as usize, lab.iter().filter(|&&x| x as usize == i).count());
        total += n;
    }
    assert_eq!(total as usize, X * Y * Z);

    let b = get_ok(&app, BRATS).await.json();
    let v = &b["volume"];
    assert_eq!(v["shape"], serde_json::json!([40, 40, 20]));
    assert_eq!(v["channels"], 4);
    assert_eq!(v["dtype"], "float32");
    assert_eq!(v["orientation"], "RAS");
    for (k, s) in [1.0, 1.0, 1.5].into_iter().enumerate() {
        close(&v["spacing"][k], s, "spacing");
    }
    close(&v["affine"][2][2], 1.5, "affine");
    close(&v["affine"][0][3], -20.0, "affine origin");
    let raw = f32_voxels(&sample_vol(BRATS_IMG));
    close(&v["intensity"]["min"], 0.0, "min");
    close(
        &v["intensity"]["max"],
        f64::from(raw.iter().copied().fold(f32::MIN, f32::max)),
        "max",
    );
    let values = b["label"]["values"].as_array().unwrap();
    let names = [
        "background",
        "edema",
        "non-enhancing tumor",
        "enhancing tumour",
    ];
    assert_eq!(values.len(), 4, "{}", b["label"]);
    let sum: u64 = values
        .iter()
        .enumerate()
        .map(|(i, e)| {
            assert_eq!(e["value"], i);
            assert_eq!(e["name"], names[i]);
            e["voxels"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(sum, 40 * 40 * 20);

    // No label object without a mask.
    let t = get_ok(&app, SPLEEN_NO_LABEL).await.json();
    assert!(t["volume"].is_object());
    assert!(t.get("label").is_none_or(Value::is_null), "{t}");
}

/// The sample's `nojson` task is data as found in the wild: no `dataset.json`, headers without
/// an sform, an image without a mask, a volume of NaNs. Each is described as openapi.yaml says
/// (and `tests/contract.rs` checks the same bodies against the schemas).
#[tokio::test]
async fn item_metadata_of_data_found_in_the_wild() {
    let (app, _) = app();
    let base = "/v1/datasets/nojson/splits";
    let d = get_ok(&app, "/v1/datasets/nojson").await.json();
    assert_eq!(d["layout"], "decathlon");
    assert_eq!(d["labels"], json!({}), "no dataset.json, no names");
    assert_eq!(d["info"], json!({}));

    // Neither sform nor qform: nibabel's pixdim affine (x flipped, centred); unnamed labels.
    let a = get_ok(&app, &format!("{base}/train/items/case_001"))
        .await
        .json();
    let v = &a["volume"];
    assert_eq!(v["affine_source"], "pixdim");
    assert_eq!(v["orientation"], "LAS");
    let want = [
        [-1.5, 0.0, 0.0, 17.25],
        [0.0, 1.5, 0.0, -14.25],
        [0.0, 0.0, 3.0, -10.5],
        [0.0, 0.0, 0.0, 1.0],
    ];
    for (i, row) in want.iter().enumerate() {
        for (k, &w) in row.iter().enumerate() {
            close(&v["affine"][i][k], w, "pixdim affine");
        }
    }
    let values = a["label"]["values"].as_array().unwrap();
    assert_eq!(values.len(), 3, "{}", a["label"]);
    for (i, e) in values.iter().enumerate() {
        assert_eq!(e["value"], i);
        assert!(e["name"].is_null(), "{e}: a value without a name is null");
    }

    // Only a qform (a half turn about z): LPS; no mask: no label member.
    let b = get_ok(&app, &format!("{base}/train/items/case_002"))
        .await
        .json();
    assert_eq!(b["volume"]["affine_source"], "qform");
    assert_eq!(b["volume"]["orientation"], "LPS");
    close(&b["volume"]["affine"][0][3], 20.0, "qoffset x");
    assert_eq!(
        (&b["has_label"], &b["label_key"]),
        (&json!(false), &Value::Null)
    );
    assert!(b.get("label").is_none(), "{b}");

    // No finite voxel: no intensity range, and still a picture and an array.
    let c = format!("{base}/test/items/case_003");
    let j = get_ok(&app, &c).await.json();
    assert_eq!(j["volume"]["dtype"], "float32");
    assert!(j["volume"]["intensity"].is_null(), "{j}");
    for q in [
        "/slice",
        "/slice?preset=mri",
        "/slice?format=npy",
        "/volume?size=4,4,4",
    ] {
        get_ok(&app, &format!("{c}{q}")).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 4. MONAI parity over HTTP
// ---------------------------------------------------------------------------------------------

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/monai3d")
}

fn fixture_npy<T: ndarray_npy::ReadableElement>(rel: &str) -> ArrayD<T> {
    let f = std::fs::File::open(fixtures().join(rel)).expect(rel);
    ArrayD::<T>::read_npy(f).expect("npy")
}

#[tokio::test]
async fn monai_parity_over_http() {
    let dir = tempfile::tempdir().unwrap();
    for (item, img, lab) in [
        ("ct", "ct_i16.nii.gz", "ct_i16_label.nii.gz"),
        ("mr", "mr_4d_f32.nii.gz", "mr_4d_label.nii.gz"),
    ] {
        for (src, dst) in [(img, "img.nii.gz"), (lab, "label.nii.gz")] {
            let bytes = std::fs::read(fixtures().join("inputs").join(src)).unwrap();
            common::put(dir.path(), &format!("seg/train/{item}/{dst}"), &bytes);
        }
    }
    let (app, _) = common::app_on(dir.path());
    let text = std::fs::read_to_string(fixtures().join("manifest.json")).unwrap();
    let manifest: Value = serde_json::from_str(&text).unwrap();
    let (mut checked, mut flipped) = (0, 0);
    for c in manifest["cases"].as_array().unwrap() {
        let item = match c["input"].as_str().unwrap() {
            "inputs/ct_i16.nii.gz" => "ct",
            "inputs/mr_4d_f32.nii.gz" => "mr",
            _ => continue,
        };
        let name = c["name"].as_str().unwrap();
        let mut q = String::from("part=both");
        if let Some(size) = c["size"].as_array() {
            let s: Vec<String> = size.iter().map(|v| v.to_string()).collect();
            q.push_str(&format!("&size={}", s.join(",")));
            if let Some(m) = c["mode"].as_str() {
                q.push_str(&format!("&mode={m}"));
            }
        }
        if c["scale"].is_object() {
            let s = &c["scale"];
            let n = |k: &str| s[k].as_f64().unwrap();
            q.push_str(&format!(
                "&a_min={}&a_max={}&b_min={}&b_max={}&clip={}",
                n("a_min"),
                n("a_max"),
                n("b_min"),
                n("b_max"),
                s["clip"].as_bool().unwrap()
            ));
        }
        match &c["flip"] {
            Value::Null => {}
            Value::String(f) => q.push_str(&format!("&flip={f}")),
            Value::Array(a) => {
                let axes: Vec<String> = a.iter().map(|v| v.to_string()).collect();
                q.push_str(&format!("&flip={}", axes.join(",")));
            }
            v => panic!("{name}: flip {v}"),
        }
        let uri = format!("/v1/datasets/seg/splits/train/items/{item}/volume.npz?{q}");
        let r = get_ok(&app, &uri).await;
        let (img, lab, _) = npz_arrays(&r.body);
        let img = img.expect("image.npy");
        let want = fixture_npy::<f32>(c["expected_image"].as_str().unwrap());
        assert_eq!(img.shape(), want.shape(), "{name}");
        let worst = img
            .iter()
            .zip(want.iter())
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0.0f32, f32::max);
        assert!(worst <= 1e-5, "{name}: max difference {worst} ({uri})");
        let want_l = fixture_npy::<u8>(c["expected_label"].as_str().unwrap());
        assert_eq!(lab.expect("label.npy"), want_l, "{name}: label ({uri})");
        if let Some(want) = c["expected_affine"].as_array() {
            // A flip moves the affine with the voxels, as MONAI's Flip does.
            let q = q.replace("part=both", "part=image");
            let uri = format!("/v1/datasets/seg/splits/train/items/{item}/volume.nii?{q}");
            let r = get_ok(&app, &uri).await;
            let limits = medserve::imaging::nifti::VolumeLimits {
                max_voxels: 1 << 30,
                max_bytes: 1 << 32,
            };
            let v = medserve::imaging::nifti::decode(&r.body, &limits).unwrap();
            for (i, row) in want.iter().enumerate().take(3) {
                for (j, w) in row.as_array().unwrap().iter().enumerate() {
                    let (ours, w) = (v.header.affine[i][j], w.as_f64().unwrap());
                    assert!(
                        (ours - w).abs() < 1e-3,
                        "{name}: affine[{i}][{j}] {ours} vs MONAI {w}"
                    );
                }
            }
            flipped += 1;
        }
        checked += 1;
    }
    assert!(checked >= 18, "only {checked} cases");
    assert!(flipped >= 8, "only {flipped} flip cases");
}

/// Every MONAI fixture input served alone: the native volume is nibabel's `get_fdata()` exactly
/// (scaled, big-endian, float64, plain `.nii` included), slices index it, and the metadata
/// reports the header as nibabel read it.
#[tokio::test]
async fn every_fixture_input_decodes_over_http_as_nibabel() {
    let text = std::fs::read_to_string(fixtures().join("manifest.json")).unwrap();
    let manifest: Value = serde_json::from_str(&text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let inputs = manifest["inputs"].as_array().unwrap();
    let mut items = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        let file = input["file"].as_str().unwrap();
        let ext = if file.ends_with(".gz") {
            "nii.gz"
        } else {
            "nii"
        };
        let bytes = std::fs::read(fixtures().join(file)).unwrap();
        let id = format!("s{i}");
        common::put(dir.path(), &format!("fx/all/{id}/img.{ext}"), &bytes);
        items.push((id, input));
    }
    let (app, _) = common::app_on(dir.path());
    for (id, input) in items {
        let file = input["file"].as_str().unwrap();
        let item = format!("/v1/datasets/fx/splits/all/items/{id}");
        let want = fixture_npy::<f32>(input["decoded"].as_str().unwrap());
        let got = npy_f32(&get_ok(&app, &format!("{item}/volume")).await.body);
        assert_eq!(got, want, "{file}: volume differs from get_fdata()");
        let shape = want.shape().to_vec();
        let k = shape[3] / 3;
        let last = shape[0] - 1;
        let s = get_ok(
            &app,
            &format!("{item}/slice?axis=2&index={k}&channel={last}&format=f32"),
        )
        .await;
        assert_eq!(s.header("x-shape"), format!("{},{}", shape[1], shape[2]));
        let plane: Vec<f32> = want
            .slice(ndarray::s![last, .., .., k])
            .iter()
            .copied()
            .collect();
        assert_eq!(f32_body(&s.body), plane, "{file}: slice");
        // Axial display: anterior up, patient right on the left, whatever the storage order.
        let codes: Vec<char> = input["orientation"].as_str().unwrap().chars().collect();
        let (nx, ny) = (shape[1], shape[2]);
        let ax = f32_body(
            &get_ok(
                &app,
                &format!("{item}/slice?axis=axial&index={k}&channel={last}&format=f32"),
            )
            .await
            .body,
        );
        assert_eq!(ax.len(), nx * ny);
        for r in 0..ny {
            for c in 0..nx {
                let y = if codes[1] == 'A' { ny - 1 - r } else { r };
                let x = if codes[0] == 'R' { nx - 1 - c } else { c };
                assert_eq!(ax[r * nx + c], want[[last, x, y, k]], "{file}: axial");
            }
        }
        // NIfTI out: the input's affine, resized.
        let to = [shape[1] / 2 + 1, shape[2] / 2, shape[3] / 2];
        let nii = get_ok(
            &app,
            &format!("{item}/volume.nii?size={},{},{}", to[0], to[1], to[2]),
        )
        .await;
        let out = nifti::decode(&nii.body, &big_limits()).unwrap();
        let mut src = [[0.0; 4]; 4];
        for (i, row) in src.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = input["affine"][i][j].as_f64().unwrap();
            }
        }
        assert_affine_close(
            &out.header.affine,
            &expected_affine(&src, [shape[1], shape[2], shape[3]], to),
            file,
        );
        assert_eq!(out.header.channels, shape[0]);

        let meta = get_ok(&app, &item).await.json();
        let v = &meta["volume"];
        assert_eq!(v["orientation"], input["orientation"], "{file}");
        assert_eq!(v["dtype"], input["dtype"], "{file}");
        assert_eq!(v["byte_order"], input["endianness"], "{file}");
        assert_eq!(v["shape"], serde_json::json!(&shape[1..]), "{file}");
        assert_eq!(v["channels"], shape[0], "{file}");
        close(&v["scl_slope"], input["scl_slope"].as_f64().unwrap(), file);
        close(&v["scl_inter"], input["scl_inter"].as_f64().unwrap(), file);
        for i in 0..4 {
            for j in 0..4 {
                let a = input["affine"][i][j].as_f64().unwrap();
                let g = v["affine"][i][j].as_f64().unwrap();
                assert!((a - g).abs() < 1e-4, "{file}: affine {v}");
            }
        }
        let lo = want.iter().copied().fold(f32::MAX, f32::min);
        let hi = want.iter().copied().fold(f32::MIN, f32::max);
        close(&v["intensity"]["min"], f64::from(lo), file);
        close(&v["intensity"]["max"], f64::from(hi), file);
    }
}

/// Masks stored as float or int16 (common in the wild) serve as uint8; a mask whose values
/// are not whole numbers in 0..=255 is a 422 naming the mask.
#[tokio::test]
async fn masks_stored_as_other_types_are_converted_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dims = [4usize, 3, 2];
    let img: Vec<f32> = (0..24).map(|v| v as f32 * 10.0).collect();
    let img_bytes = nifti::encode_nifti1(
        &dims,
        &IDENTITY,
        OutType::F32,
        bytemuck::cast_slice(&img),
        1,
    );
    let good: Vec<f32> = (0..24).map(|v| (v % 3) as f32).collect();
    let bad: Vec<f32> = (0..24).map(|v| if v == 5 { 0.5 } else { 0.0 }).collect();
    for (id, lab) in [("float", &good), ("half", &bad)] {
        common::put(
            dir.path(),
            &format!("m/all/{id}/img.nii.gz"),
            &gz(&img_bytes),
        );
        let l = nifti::encode_nifti1(&dims, &IDENTITY, OutType::F32, bytemuck::cast_slice(lab), 1);
        common::put(dir.path(), &format!("m/all/{id}/label.nii.gz"), &gz(&l));
    }
    let (app, _) = common::app_on(dir.path());
    let base = "/v1/datasets/m/splits/all/items";
    let r = get_ok(&app, &format!("{base}/float/volume?part=label")).await;
    assert_eq!(r.header("x-dtype"), "uint8");
    let a = npy_u8(&r.body);
    assert_eq!(a.shape(), [1, 4, 3, 2]);
    for ((_, x, y, z), &v) in a
        .view()
        .into_dimensionality::<ndarray::Ix4>()
        .unwrap()
        .indexed_iter()
    {
        assert_eq!(f32::from(v), good[at(dims, x, y, z, 0)]);
    }
    let meta = get_ok(&app, &format!("{base}/float")).await.json();
    assert_eq!(meta["label"]["dtype"], "float32");
    assert_eq!(meta["label"]["values"].as_array().unwrap().len(), 3);
    for uri in [
        format!("{base}/half/volume?part=label"),
        format!("{base}/half/slice?part=overlay&axis=2&index=0"),
        format!("{base}/half"),
    ] {
        let j = assert_problem(&get(&app, &uri).await, 422, "undecodable-object");
        assert_eq!(j["object"], "m/all/half/label.nii.gz", "{uri}: {j}");
        assert!(j["detail"].as_str().unwrap().contains("0.5"), "{uri}: {j}");
    }
    get_ok(&app, &format!("{base}/half/volume")).await;
}

/// A single-file NIfTI-2 (`n+2`) of int16 voxels written by hand, either byte order:
/// 540-byte header, 4 extension bytes, voxels; sform code 1.
fn nifti2_i16(dims: [usize; 3], affine: &[[f64; 4]; 4], data: &[i16], big: bool) -> Vec<u8> {
    let mut h = vec![0u8; 544];
    let w = |h: &mut Vec<u8>, o: usize, b: &[u8]| h[o..o + b.len()].copy_from_slice(b);
    macro_rules! put {
        ($o:expr, $v:expr) => {
            if big {
                w(&mut h, $o, &$v.to_be_bytes())
            } else {
                w(&mut h, $o, &$v.to_le_bytes())
            }
        };
    }
    put!(0, 540i32);
    w(&mut h, 4, b"n+2\0\r\n\x1a\n");
    put!(12, 4i16);
    put!(14, 16i16);
    put!(16, 3i64);
    for i in 0..7 {
        put!(24 + 8 * i, dims.get(i).map_or(1, |&d| d as i64));
    }
    put!(104, 1.0f64);
    // pixdim: the affine's column norms.
    for (k, offset) in [112usize, 120, 128].into_iter().enumerate() {
        let norm = affine[..3]
            .iter()
            .map(|row| row[k].powi(2))
            .sum::<f64>()
            .sqrt();
        put!(offset, norm);
    }
    put!(168, 544i64);
    put!(176, 1.0f64);
    put!(348, 1i32);
    for (r, row) in affine.iter().take(3).enumerate() {
        for (c, v) in row.iter().enumerate() {
            put!(400 + 32 * r + 8 * c, *v);
        }
    }
    for v in data {
        if big {
            h.extend_from_slice(&v.to_be_bytes());
        } else {
            h.extend_from_slice(&v.to_le_bytes());
        }
    }
    h
}

#[tokio::test]
async fn nifti2_volumes_in_either_byte_order() {
    let dir = tempfile::tempdir().unwrap();
    let dims = [5usize, 4, 3];
    let data: Vec<i16> = (0..60).map(|v| (v * 37 % 200 - 100) as i16).collect();
    let affine = [
        [-1.5, 0.0, 0.0, 10.0],
        [0.0, 2.0, 0.0, -5.0],
        [0.0, 0.0, 3.0, 7.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    for (id, big) in [("le", false), ("be", true)] {
        let bytes = nifti2_i16(dims, &affine, &data, big);
        common::put(dir.path(), &format!("n2/all/{id}/img.nii.gz"), &gz(&bytes));
    }
    let (app, _) = common::app_on(dir.path());
    for (id, order) in [("le", "little"), ("be", "big")] {
        let item = format!("/v1/datasets/n2/splits/all/items/{id}");
        let meta = get_ok(&app, &item).await.json();
        let v = &meta["volume"];
        assert_eq!(v["format"], "nifti2", "{v}");
        assert_eq!(v["byte_order"], order);
        assert_eq!(v["dtype"], "int16");
        assert_eq!(v["shape"], serde_json::json!([5, 4, 3]));
        assert_eq!(v["orientation"], "LAS");
        assert_eq!(v["affine_source"], "sform");
        for (i, row) in affine.iter().enumerate() {
            for (j, &a) in row.iter().enumerate() {
                close(&v["affine"][i][j], a, "affine");
            }
        }
        close(&v["intensity"]["min"], -100.0, "min");
        let a = npy_f32(&get_ok(&app, &format!("{item}/volume")).await.body);
        assert_eq!(a.shape(), [1, 5, 4, 3]);
        for ((_, x, y, z), &got) in a
            .view()
            .into_dimensionality::<ndarray::Ix4>()
            .unwrap()
            .indexed_iter()
        {
            assert_eq!(got, f32::from(data[at(dims, x, y, z, 0)]), "{id}");
        }
        // Out as NIfTI-1 with the same affine.
        let out = nifti::decode(
            &get_ok(&app, &format!("{item}/volume.nii")).await.body,
            &big_limits(),
        )
        .unwrap();
        assert_eq!(out.header.version, 1);
        assert_affine_close(&out.header.affine, &affine, id);
    }
}

#[tokio::test]
async fn head_requests_on_volumes_carry_headers_only() {
    let (app, _) = app();
    let r = common::call(
        &app,
        axum::http::Method::HEAD,
        format!("{SPLEEN}/volume.nii.gz?size=32,32,12"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("x-shape"), "1,32,32,12");
    assert_eq!(r.header("content-type"), "application/gzip");
}

// ---------------------------------------------------------------------------------------------
// 5. Hostile files
// ---------------------------------------------------------------------------------------------

const IDENTITY: [[f64; 4]; 4] = [
    [1.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.0],
    [0.0, 0.0, 0.0, 1.0],
];

/// A valid little 2x2x2 uint8 NIfTI-1, uncompressed, to be spoiled.
fn tiny_nifti() -> Vec<u8> {
    nifti::encode_nifti1(&[2, 2, 2], &IDENTITY, OutType::U8, &[1; 8], 1)
}

fn patch_i16(b: &mut [u8], offset: usize, v: i16) {
    b[offset..offset + 2].copy_from_slice(&v.to_le_bytes());
}

/// A header claiming `dims` uint8 voxels followed by `zeros` bytes of zeros, gzipped.
fn gzip_claiming(dims: &[usize], zeros: usize) -> Vec<u8> {
    let header = nifti::encode_nifti1(dims, &IDENTITY, OutType::U8, &[], 1);
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&header).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut left = zeros;
    while left > 0 {
        let n = left.min(chunk.len());
        e.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    e.finish().unwrap()
}

#[tokio::test]
async fn hostile_files_are_422_naming_the_object_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let put = |subject: &str, file: &str, bytes: &[u8]| {
        common::put(dir.path(), &format!("bad/train/{subject}/{file}"), bytes)
    };
    let sample = |rel: &str| std::fs::read(common::sample_dir().join(rel)).unwrap();
    let good_img = sample("segmentation/train/subject_001/img.nii.gz");
    put("good", "img.nii.gz", &good_img);
    put(
        "good",
        "label.nii.gz",
        &sample("segmentation/train/subject_001/label.nii.gz"),
    );

    put("truncated", "img.nii.gz", &good_img[..good_img.len() / 2]);
    let mut huge = tiny_nifti();
    for i in 0..3 {
        patch_i16(&mut huge, 42 + 2 * i, i16::MAX);
    }
    put("huge", "img.nii.gz", &gz(&huge));
    // 10^9 voxels claimed, a few MB of zeros behind: refused from the header.
    put(
        "bomb",
        "img.nii.gz",
        &gzip_claiming(&[1000, 1000, 1000], 4 << 20),
    );
    // Within the limits (8 * 10^6 voxels) but the data stops after 1 MB.
    put(
        "short",
        "img.nii.gz",
        &gzip_claiming(&[200, 200, 200], 1 << 20),
    );
    let mut dtype = tiny_nifti();
    patch_i16(&mut dtype, 70, 1536);
    put("dtype", "img.nii.gz", &gz(&dtype));
    let mut negdim = tiny_nifti();
    patch_i16(&mut negdim, 42, -3);
    put("negdim", "img.nii", &negdim);
    let mut offset = tiny_nifti();
    offset[108..112].copy_from_slice(&100_000f32.to_le_bytes());
    put("offset", "img.nii.gz", &gz(&offset));
    put("png", "img.nii.gz", &common::tiny_png());
    put("empty", "img.nii.gz", b"");
    // A mask on another grid than its image.
    put("grid", "img.nii.gz", &good_img);
    put(
        "grid",
        "label.nii.gz",
        &std::fs::read(fixtures().join("inputs/ct_i16_label.nii.gz")).unwrap(),
    );

    let s = common::state_with_limits(
        Arc::new(medserve::store::LocalStore::new(dir.path()).unwrap()),
        medserve::config::Limits {
            max_voxels: 10_000_000,
            ..Default::default()
        },
    );
    let app = medserve::build_router(s.clone(), &medserve::HttpOptions::default());
    let base = "/v1/datasets/bad/splits/train/items";
    let good = format!("{base}/good/volume.npz?part=both&size=16,16,8");
    let good_body = get_ok(&app, &good).await.body;

    let cases = [
        ("truncated", "img.nii.gz", "undecodable-object", "truncated"),
        ("huge", "img.nii.gz", "object-too-large", "voxels"),
        ("bomb", "img.nii.gz", "object-too-large", "1000x1000x1000"),
        ("short", "img.nii.gz", "undecodable-object", "truncated"),
        ("dtype", "img.nii.gz", "undecodable-object", "float128"),
        ("negdim", "img.nii", "undecodable-object", "dim[1] is -3"),
        ("offset", "img.nii.gz", "undecodable-object", "truncated"),
        ("png", "img.nii.gz", "undecodable-object", "not a NIfTI"),
        ("empty", "img.nii.gz", "undecodable-object", "truncated"),
    ];
    for (id, file, code, mention) in cases {
        let key = format!("bad/train/{id}/{file}");
        for suffix in [
            "/volume",
            "/volume.nii.gz?size=8,8,8",
            "/slice",
            "/slice?part=image&format=npy",
            "",
        ] {
            let uri = format!("{base}/{id}{suffix}");
            let j = assert_problem(&get(&app, &uri).await, 422, code);
            assert_eq!(j["object"], key, "{uri}: {j}");
            let detail = j["detail"].as_str().unwrap();
            assert!(detail.contains(&key), "{uri}: {j}");
            assert!(detail.contains(mention), "{uri}: {j}");
            // The next request is served as before.
            assert_eq!(get_ok(&app, &good).await.body, good_body, "after {uri}");
        }
    }

    // The grid mismatch: the image alone is fine, anything with the mask names both keys.
    get_ok(&app, &format!("{base}/grid/volume")).await;
    get_ok(&app, &format!("{base}/grid/slice")).await;
    for suffix in [
        "/volume?part=label",
        "/volume.npz?part=both",
        "/volume.nii.gz?part=label&size=8,8,8",
        "/slice?part=label",
        "/slice?part=overlay",
        "",
    ] {
        let uri = format!("{base}/grid{suffix}");
        let j = assert_problem(&get(&app, &uri).await, 422, "undecodable-object");
        let detail = j["detail"].as_str().unwrap();
        assert!(detail.contains("bad/train/grid/img.nii.gz"), "{uri}: {j}");
        assert!(detail.contains("bad/train/grid/label.nii.gz"), "{uri}: {j}");
        assert_eq!(j["object"], "bad/train/grid/label.nii.gz", "{uri}: {j}");
        assert_eq!(get_ok(&app, &good).await.body, good_body, "after {uri}");
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Cache
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn concurrent_cold_volume_requests_fetch_and_decode_each_object_once() {
    let (app, state) = app();
    let item = "/v1/datasets/Task09_Spleen/splits/train/items/spleen_6";
    assert_eq!(counter(&state), (0, 0, 0));
    let uris: Vec<String> = [
        "/volume",
        "/volume?format=f32",
        "/volume.nii.gz",
        "/volume.nii?size=32,32,12",
        "/volume.npy?size=16,16,8&mode=trilinear",
        "/volume.npz?part=both",
        "/volume.npz?part=both&size=32,32,12",
        "/volume?part=label",
        "/volume?part=label&binary=true&size=32,32,12",
        "/volume?a_min=-1000&a_max=1000&clip=true",
        "/slice",
        "/slice?part=overlay",
        "/slice?axis=0&format=npy",
        "",
        "/volume",
        "/volume.npz?part=both",
    ]
    .iter()
    .map(|s| format!("{item}{s}"))
    .collect();
    assert_eq!(uris.len(), 16);
    let tasks: Vec<_> = uris
        .iter()
        .map(|uri| {
            let (app, uri) = (app.clone(), uri.clone());
            tokio::spawn(async move { get(&app, &uri).await })
        })
        .collect();
    let mut bodies = Vec::new();
    for (t, uri) in tasks.into_iter().zip(&uris) {
        let r = t.await.unwrap();
        ok(&r, uri);
        bodies.push(r.body);
    }
    assert_eq!(bodies[0], bodies[14]);
    assert_eq!(bodies[5], bodies[15]);
    let (gets, decodes, transforms) = counter(&state);
    assert_eq!(gets, 2, "one storage GET per object (image and mask)");
    assert_eq!(decodes, 2, "one decode per object");
    let m = String::from_utf8(get(&app, "/metrics").await.body).unwrap();
    assert!(m.contains("\nmedserve_storage_get_total 2\n"), "{m}");
    assert!(m.contains("\nmedserve_decode_total 2\n"), "{m}");

    // Another transform of the same subject: computed, but from the cached volumes.
    get_ok(
        &app,
        &format!("{item}/volume.npz?part=both&size=20,20,10&mode=nearest&a_min=0&a_max=100"),
    )
    .await;
    get_ok(
        &app,
        &format!("{item}/slice?axis=sagittal&index=3&part=label"),
    )
    .await;
    let (gets2, decodes2, transforms2) = counter(&state);
    assert_eq!((gets2, decodes2), (2, 2), "no new GET or decode");
    assert!(transforms2 > transforms, "the new transform was computed");
    let m = String::from_utf8(get(&app, "/metrics").await.body).unwrap();
    assert!(m.contains("\nmedserve_storage_get_total 2\n"), "{m}");
    assert!(m.contains("\nmedserve_decode_total 2\n"), "{m}");
}
