//! Parity with MONAI for patch sampling: every case in tests/fixtures/monai_patches (made by
//! tools/make_monai_fixtures_patches.py with MONAI's own `RandCropByPosNegLabeld`, fed fixed
//! choices of list and position) must give the same foreground/background lists, the same
//! corrected centres and the same crops, exactly; and `correct_crop_centers` must agree on
//! every (grid, patch, centre) of its table.

use std::path::{Path, PathBuf};

use medserve::imaging::patch::{self, FgBgIndices};
use ndarray::{ArrayD, Ix1, Ix2};
use ndarray_npy::ReadNpyExt;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Manifest {
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    volume: String,
    shape: [usize; 3],
    patch: [usize; 3],
    image_threshold: Option<f32>,
    samples: usize,
    crop_shape: [usize; 3],
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/monai_patches")
}

fn npy<T: ndarray_npy::ReadableElement>(rel: &str) -> ArrayD<T> {
    let f = std::fs::File::open(root().join(rel)).expect(rel);
    ArrayD::<T>::read_npy(f).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn manifest() -> Manifest {
    let text = std::fs::read_to_string(root().join("manifest.json")).expect("manifest");
    serde_json::from_str(&text).expect("manifest json")
}

fn as_u32(a: ArrayD<i64>) -> Vec<u32> {
    a.into_dimensionality::<Ix1>()
        .unwrap()
        .iter()
        .map(|&i| u32::try_from(i).unwrap())
        .collect()
}

/// NaN-aware exact equality (the blob image holds NaNs, which crops copy as they are).
fn same_bits(a: &ArrayD<f32>, b: &ArrayD<f32>) -> bool {
    a.shape() == b.shape()
        && a.iter()
            .zip(b.iter())
            .all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn indices_centres_and_crops_equal_monai() {
    let m = manifest();
    assert!(m.cases.len() >= 8);
    let mut saw = (false, false, false);
    for case in &m.cases {
        let name = &case.name;
        let label = npy::<u8>(&format!("volumes/{}_label.npy", case.volume));
        let image = npy::<f32>(&format!("volumes/{}_image.npy", case.volume));
        assert_eq!(&label.shape()[1..], case.shape, "{name}");
        let ix = patch::map_binary_to_indices(
            label.view(),
            case.image_threshold.map(|t| (image.view(), t)),
        )
        .unwrap();
        let want = FgBgIndices {
            shape: case.shape,
            fg: as_u32(npy(&format!("{name}/fg.npy"))),
            bg: as_u32(npy(&format!("{name}/bg.npy"))),
        };
        assert_eq!(ix, want, "{name}: fg/bg indices");

        let pick_fg = npy::<u8>(&format!("{name}/pick_fg.npy"));
        let pick_index = npy::<i64>(&format!("{name}/pick_index.npy"));
        let expected = npy::<i64>(&format!("{name}/center.npy"))
            .into_dimensionality::<Ix2>()
            .unwrap();
        assert_eq!(pick_fg.len(), case.samples);
        let centers: Vec<[usize; 3]> = pick_fg
            .iter()
            .zip(pick_index.iter())
            .map(|(&f, &i)| {
                let list = if f == 1 { &ix.fg } else { &ix.bg };
                let voxel = patch::unravel(list[i as usize] as usize, ix.shape);
                patch::correct_crop_center(voxel, case.patch, ix.shape)
            })
            .collect();
        for (k, c) in centers.iter().enumerate() {
            let want: Vec<usize> = expected.row(k).iter().map(|&v| v as usize).collect();
            assert_eq!(c.to_vec(), want, "{name}: centre of sample {k}");
        }
        assert_eq!(
            patch::patch_shape(case.patch, case.shape),
            case.crop_shape,
            "{name}"
        );
        let image_crops = patch::crops(image.view(), &centers, case.patch).unwrap();
        let label_crops = patch::crops(label.view(), &centers, case.patch).unwrap();
        assert!(
            same_bits(&image_crops, &npy(&format!("{name}/image_crops.npy"))),
            "{name}: image crops"
        );
        assert_eq!(
            label_crops,
            npy::<u8>(&format!("{name}/label_crops.npy")),
            "{name}: label crops"
        );
        for (k, c) in centers.iter().enumerate() {
            let one = image_crops.index_axis(ndarray::Axis(0), k).to_owned();
            assert!(
                same_bits(&patch::crop(image.view(), *c, case.patch), &one),
                "{name}"
            );
        }
        saw.0 |= case.patch.iter().zip(case.shape).any(|(p, n)| *p > n);
        saw.1 |= ix.fg.is_empty();
        saw.2 |= case.image_threshold.is_some();
    }
    assert_eq!(saw, (true, true, true), "the fixtures cover the edge cases");
}

#[test]
fn correct_crop_centers_table_equals_monai() {
    let text = std::fs::read_to_string(root().join("correct_centers.json")).unwrap();
    let rows: Vec<[usize; 4]> = serde_json::from_str(&text).unwrap();
    assert!(rows.len() > 1000);
    for [n, p, c, want] in rows {
        let got = patch::correct_crop_center([c, 0, 0], [p, 1, 1], [n, 1, 1])[0];
        assert_eq!(got, want, "grid {n}, patch {p}, centre {c}");
    }
}
