//! Round trips of the array encoders the volume and image routes answer with: an array made
//! from the fuzz bytes, written as `.npy`, `.npz` and NIfTI-1 (`.nii`, `.nii.gz`) by medserve,
//! reads back bit for bit (NaN payloads and -0.0 included) with ndarray-npy and with medserve's
//! own NIfTI decoder.
//!
//! Input layout: byte 0 picks the rank (1..=4) and the affine; the next `rank` bytes are the
//! dimensions (0..=16 each, shrunk until at most 4096 elements); the rest are the values
//! (float32 little endian, and uint8 for the mask), repeated to fill the array.
#![no_main]

use std::io::{Cursor, Read};

use libfuzzer_sys::fuzz_target;
use medserve::imaging::encode::nifti_dims;
use medserve::imaging::nifti::{self, OutType, VolumeLimits, Voxels};
use medserve::imaging::volume;
use medserve::imaging::{ResizeMode, encode};
use ndarray::{ArrayD, IxDyn};
use ndarray_npy::{NpzReader, ReadNpyExt};

const MAX_ELEMENTS: usize = 4096;
const LIMITS: VolumeLimits = VolumeLimits {
    max_voxels: 1 << 20,
    max_bytes: 64 << 20,
};

fn bits(a: &ArrayD<f32>) -> Vec<u32> {
    a.iter().map(|v| v.to_bits()).collect()
}

fn same_f32(a: &ArrayD<f32>, b: &ArrayD<f32>) -> bool {
    a.shape() == b.shape() && bits(a) == bits(b)
}

/// The value bytes cycled to `n` elements of `size` bytes (zeros when there are none).
fn fill(values: &[u8], n: usize, size: usize) -> Vec<u8> {
    if values.is_empty() {
        return vec![0; n * size];
    }
    values.iter().copied().cycle().take(n * size).collect()
}

/// An affine from the input: identity-like for most, with fuzzed scales, flips, shears and
/// non-finite entries for the rest (the writer derives the qform and pixdim from it).
fn affine(sel: u8, values: &[u8]) -> [[f64; 4]; 4] {
    let mut m = [
        [-0.8, 0.0, 0.0, 10.0],
        [0.0, 0.8, 0.0, -20.0],
        [0.0, 0.0, 2.5, 30.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    if sel & 0x40 != 0 {
        for (k, chunk) in values.chunks_exact(4).take(12).enumerate() {
            m[k / 4][k % 4] = f64::from(f32::from_le_bytes(chunk.try_into().unwrap()));
        }
    }
    m
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let rank = 1 + usize::from(sel & 3);
    if rest.len() < rank {
        return;
    }
    let (dims, values) = rest.split_at(rank);
    let mut shape: Vec<usize> = dims.iter().map(|&d| usize::from(d % 17)).collect();
    while shape.iter().product::<usize>() > MAX_ELEMENTS {
        let i = (0..rank).max_by_key(|&i| shape[i]).unwrap();
        shape[i] /= 2;
    }
    let n: usize = shape.iter().product();
    let floats: Vec<f32> = fill(values, n, 4)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let image = ArrayD::from_shape_vec(IxDyn(&shape), floats).unwrap();
    let mask = ArrayD::from_shape_vec(IxDyn(&shape), fill(values, n, 1)).unwrap();

    // .npy, float32 and uint8.
    let npy = encode::npy(&image).expect("npy of float32");
    let back = ArrayD::<f32>::read_npy(&npy[..]).expect("ndarray-npy reads our npy");
    assert!(same_f32(&image, &back), "npy float32 round trip");
    let npy = encode::npy_of(&mask).expect("npy of uint8");
    let back = ArrayD::<u8>::read_npy(&npy[..]).expect("ndarray-npy reads our uint8 npy");
    assert_eq!(mask, back, "npy uint8 round trip");

    // .npz with either or both arrays.
    let parts = [(true, true), (true, false), (false, true)][usize::from(sel >> 2) % 3];
    let npz = encode::npz(parts.0.then_some(&image), parts.1.then_some(&mask)).expect("npz");
    let mut z = NpzReader::new(Cursor::new(&npz[..])).expect("ndarray-npy reads our npz");
    assert_eq!(z.len(), usize::from(parts.0) + usize::from(parts.1));
    if parts.0 {
        let back: ArrayD<f32> = z.by_name("image").expect("image in npz");
        assert!(same_f32(&image, &back), "npz image round trip");
    }
    if parts.1 {
        let back: ArrayD<u8> = z.by_name("label").expect("label in npz");
        assert_eq!(mask, back, "npz label round trip");
    }

    // NIfTI-1 as the volume routes write it: a (C, X, Y, Z) array in file order.
    if rank != 4 || n == 0 {
        return;
    }
    let aff = affine(sel, values);
    let code = if sel & 0x80 != 0 { 0 } else { 2 };
    let ndims = nifti_dims(&shape);
    for (data, ty) in [
        (volume::to_file_order(&image), OutType::F32),
        (volume::to_file_order(&mask), OutType::U8),
    ] {
        let nii = nifti::encode_nifti1(&ndims, &aff, ty, &data, code);
        let gz = {
            let mut e = flate2::read::GzEncoder::new(&nii[..], flate2::Compression::fast());
            let mut out = Vec::new();
            e.read_to_end(&mut out).unwrap();
            out
        };
        for file in [&nii, &gz] {
            let vol = nifti::decode(file, &LIMITS)
                .unwrap_or_else(|e| panic!("our NIfTI ({ndims:?}, {ty:?}) does not decode: {e}"));
            let h = &vol.header;
            assert_eq!(h.spatial, [shape[1], shape[2], shape[3]]);
            assert_eq!(h.channels, shape[0]);
            assert!(!h.is_scaled());
            if code > 0 && aff.iter().flatten().all(|v| v.is_finite()) {
                for (i, row) in h.affine.iter().enumerate() {
                    for (j, &v) in row.iter().enumerate() {
                        assert_eq!(v, f64::from(aff[i][j] as f32), "affine[{i}][{j}]");
                    }
                }
            }
            match (&vol.voxels, ty) {
                (Voxels::F32(v), OutType::F32) => {
                    assert_eq!(bytemuck::cast_slice::<f32, u8>(v), &data[..]);
                    let a = volume::image_f32(&vol, None, ResizeMode::Area);
                    assert!(same_f32(&a, &image), "NIfTI float32 round trip");
                }
                (Voxels::U8(v), OutType::U8) => {
                    assert_eq!(&v[..], &data[..]);
                    let l = volume::label_u8(&vol).expect("uint8 NIfTI is a label");
                    assert_eq!(l.view().into_dyn(), mask.view(), "NIfTI uint8 round trip");
                }
                (v, _) => panic!("{ty:?} decoded as {:?}", std::mem::discriminant(v)),
            }
        }
    }
});
