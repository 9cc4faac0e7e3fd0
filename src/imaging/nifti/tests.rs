//! Round trips through the writer and the reader: header facts, gzip, limits, hostile headers,
//! byte order, scaling and every served datatype.

use super::*;

fn limits() -> VolumeLimits {
    VolumeLimits {
        max_voxels: 1 << 24,
        max_bytes: 1 << 28,
    }
}

fn sample(dims: &[usize], ty: OutType, data: &[u8]) -> Vec<u8> {
    let aff = [
        [-0.8, 0.0, 0.0, 10.0],
        [0.0, 0.8, 0.0, -20.0],
        [0.0, 0.0, 2.5, 30.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    encode_nifti1(dims, &aff, ty, data, 1)
}

#[test]
fn round_trip_and_header_facts() {
    let data: Vec<u8> = (0..24).collect();
    let bytes = sample(&[2, 3, 4], OutType::U8, &data);
    let v = decode(&bytes, &limits()).unwrap();
    assert_eq!(v.header.spatial, [2, 3, 4]);
    assert_eq!(v.header.channels, 1);
    assert_eq!(v.header.orientation(), ['L', 'A', 'S']);
    assert_eq!(v.header.affine_source, AffineSource::Sform);
    assert_eq!(v.voxels, Voxels::U8(data.into()));
    // The qform we write is the same transform.
    let mut q = bytes.clone();
    q[254..256].copy_from_slice(&0i16.to_le_bytes());
    let vq = decode(&q, &limits()).unwrap();
    assert_eq!(vq.header.affine_source, AffineSource::Qform);
    for i in 0..4 {
        for j in 0..4 {
            assert!(
                (vq.header.affine[i][j] - v.header.affine[i][j]).abs() < 1e-5,
                "{:?}",
                vq.header.affine
            );
        }
    }
}

#[test]
fn gzip_truncated_and_limits() {
    let data = vec![7u8; 4000];
    let raw = sample(&[20, 20, 10], OutType::U8, &data);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    let gz = gz.finish().unwrap();
    assert_eq!(
        decode(&gz, &limits()).unwrap().voxels,
        Voxels::U8(data.into())
    );
    let e = decode(&gz[..gz.len() / 2], &limits()).unwrap_err();
    assert!(matches!(e, VolumeError::Truncated(_)), "{e}");
    let e = decode(&raw[..1000], &limits()).unwrap_err();
    assert!(matches!(e, VolumeError::Truncated(_)), "{e}");
    let small = VolumeLimits {
        max_voxels: 100,
        max_bytes: 1 << 20,
    };
    assert!(matches!(decode(&gz, &small), Err(VolumeError::TooLarge(_))));
}

#[test]
fn hostile_headers() {
    let base = sample(&[2, 2, 2], OutType::U8, &[0; 8]);
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = base.clone();
        f(&mut b);
        decode(&b, &limits()).unwrap_err().to_string()
    };
    let e = with(&|b| b[42..44].copy_from_slice(&(-3i16).to_le_bytes()));
    assert!(e.contains("dim[1] is -3"), "{e}");
    let e = with(&|b| b[70..72].copy_from_slice(&1536i16.to_le_bytes()));
    assert!(e.contains("float128"), "{e}");
    let e = with(&|b| {
        for i in 0..3 {
            b[42 + 2 * i..44 + 2 * i].copy_from_slice(&i16::MAX.to_le_bytes());
        }
    });
    assert!(e.contains("voxels"), "{e}");
    let e = with(&|b| b[108..112].copy_from_slice(&1e12f32.to_le_bytes()));
    assert!(e.contains("vox_offset"), "{e}");
    let e = with(&|b| b[0..4].copy_from_slice(b"GIF8"));
    assert!(e.contains("not a NIfTI"), "{e}");
}

#[test]
fn big_endian_and_scaling() {
    // A big-endian int16 NIfTI-1 by hand: swap every field we set.
    let mut b = sample(&[2, 1, 1], OutType::U8, &[]);
    let be16 = |b: &mut Vec<u8>, o: usize| {
        let v = i16::from_le_bytes([b[o], b[o + 1]]);
        b[o..o + 2].copy_from_slice(&v.to_be_bytes());
    };
    let be32 = |b: &mut Vec<u8>, o: usize| {
        let v: [u8; 4] = b[o..o + 4].try_into().unwrap();
        b[o..o + 4].copy_from_slice(&[v[3], v[2], v[1], v[0]]);
    };
    b[70..72].copy_from_slice(&4i16.to_le_bytes());
    b[72..74].copy_from_slice(&16i16.to_le_bytes());
    b[112..116].copy_from_slice(&2.0f32.to_le_bytes());
    b[116..120].copy_from_slice(&(-1.0f32).to_le_bytes());
    be32(&mut b, 0);
    for o in (40..56).step_by(2).chain([70, 72, 252, 254]) {
        be16(&mut b, o);
    }
    for o in (76..124).step_by(4).chain((256..344).step_by(4)) {
        if o != 120 {
            be32(&mut b, o);
        }
    }
    b.extend_from_slice(&300i16.to_be_bytes());
    b.extend_from_slice(&(-5i16).to_be_bytes());
    let v = decode(&b, &limits()).unwrap();
    assert!(v.header.big_endian);
    assert_eq!(v.voxels, Voxels::I16(vec![300, -5].into()));
    assert_eq!((v.header.scl_slope, v.header.scl_inter), (2.0, -1.0));
    // A plane read from its byte range is swapped the same way.
    let r = slab_range(&v.header, 0..1, 0);
    let p = slab_volume(&v.header, 1, 1, &b[r.start as usize..r.end as usize]).unwrap();
    assert_eq!(p.voxels, v.voxels);
    assert_eq!(p.header.spatial, [2, 1, 1]);
}

#[test]
fn slabs_from_byte_ranges_equal_the_decoded_planes() {
    // 3x2 planes, 4 deep, 2 channels: plane (z, c) holds 100 * c + 10 * z + i.
    let (x, y, z, c) = (3usize, 2usize, 4usize, 2usize);
    let vals: Vec<f32> = (0..c)
        .flat_map(|ch| {
            (0..z).flat_map(move |k| (0..x * y).map(move |i| (100 * ch + 10 * k + i) as f32))
        })
        .collect();
    let data: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let file = sample(&[x, y, z, c], OutType::F32, &data);
    let h = read_header(&file).unwrap();
    for ch in 0..c {
        for k in 0..z {
            let r = slab_range(&h, k..k + 1, ch);
            let p = slab_volume(&h, 1, 1, &file[r.start as usize..r.end as usize]).unwrap();
            let want: Vec<f32> = (0..x * y).map(|i| (100 * ch + 10 * k + i) as f32).collect();
            assert_eq!(p.voxels, Voxels::F32(want.into()), "z {k} channel {ch}");
            assert_eq!((p.header.spatial, p.header.channels), ([x, y, 1], 1));
        }
    }
    let r = slab_range(&h, 0..1, 0);
    assert!(slab_volume(&h, 1, 1, &file[r.start as usize..r.end as usize - 1]).is_err());
    // Planes 1..3 of both channels: the two channels' ranges one after the other.
    let mut both = Vec::new();
    for ch in 0..c {
        let r = slab_range(&h, 1..3, ch);
        both.extend_from_slice(&file[r.start as usize..r.end as usize]);
    }
    let s = slab_volume(&h, 2, 2, &both).unwrap();
    let want: Vec<f32> = (0..c)
        .flat_map(|ch| {
            (1..3).flat_map(move |k| (0..x * y).map(move |i| (100 * ch + 10 * k + i) as f32))
        })
        .collect();
    assert_eq!(s.voxels, Voxels::F32(want.into()));
    assert_eq!((s.header.spatial, s.header.channels), ([x, y, 2], 2));
}

/// The little-endian bytes of a list of numbers of one type.
macro_rules! le {
    ($($v:expr),*) => {
        [$($v),*].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()
    };
}

#[test]
fn every_served_dtype_decodes_to_its_values() {
    // (datatype code, bitpix, little-endian bytes of [1, -2 or max, 3], expected floats)
    let cases: [(i16, i16, Vec<u8>, [f64; 3]); 10] = [
        (2, 8, vec![1, 255, 3], [1.0, 255.0, 3.0]),
        (256, 8, vec![1, 0xfe, 3], [1.0, -2.0, 3.0]),
        (4, 16, le![1i16, -2, 3], [1.0, -2.0, 3.0]),
        (512, 16, le![1u16, 65535, 3], [1.0, 65535.0, 3.0]),
        (8, 32, le![1i32, -2, 3], [1.0, -2.0, 3.0]),
        (768, 32, le![1u32, u32::MAX, 3], [1.0, 4294967295.0, 3.0]),
        (1024, 64, le![1i64, -2, 3], [1.0, -2.0, 3.0]),
        (
            1280,
            64,
            le![1u64, 1 << 40, 3],
            [1.0, (1u64 << 40) as f64, 3.0],
        ),
        (16, 32, le![1f32, -2.5, f32::NAN], [1.0, -2.5, f64::NAN]),
        (64, 64, le![1f64, -2.5, 3.25], [1.0, -2.5, 3.25]),
    ];
    for (code, bitpix, data, want) in cases {
        let mut b = sample(&[3, 1, 1], OutType::U8, &data);
        b[70..72].copy_from_slice(&code.to_le_bytes());
        b[72..74].copy_from_slice(&bitpix.to_le_bytes());
        let v = decode(&b, &limits()).unwrap_or_else(|e| panic!("{code}: {e}"));
        assert_eq!(v.header.dtype.size() * 8, bitpix as usize);
        let got = crate::imaging::volume::image_f32(&v, None, crate::imaging::ResizeMode::Area);
        for (g, w) in got.iter().zip(want) {
            assert!(
                (w.is_nan() && g.is_nan()) || f64::from(*g) == w as f32 as f64,
                "{code}: {got:?} vs {want:?}"
            );
        }
    }
}

#[test]
fn nan_slope_means_unscaled() {
    let mut b = sample(&[1, 1, 1], OutType::U8, &[5]);
    b[112..116].copy_from_slice(&f32::NAN.to_le_bytes());
    let v = decode(&b, &limits()).unwrap();
    assert!(!v.header.is_scaled());
}

#[test]
fn every_inflate_gives_the_same_volume() {
    use crate::imaging::gzindex;
    use std::io::Write;
    let n = 96 * 96 * 40;
    let mut x = 0x1234_5678_u32;
    let data: Vec<f32> = (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (i % 97) as f32 + (x % 8) as f32 * 0.25
        })
        .collect();
    let nii = sample(&[96, 96, 40], OutType::F32, bytemuck::cast_slice(&data));
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&nii).unwrap();
    let gz = e.finish().unwrap();
    let whole = decode(&gz, &limits()).unwrap();
    let (indexing, index) =
        decode_with(&gz, &limits(), Inflate::Indexing { spacing: 64 << 10 }).unwrap();
    let index = index.expect("an index");
    assert!(index.points.len() > 4);
    assert_eq!(indexing, whole);
    for threads in [1, 2, 3] {
        let (parallel, none) = decode_with(
            &gz,
            &limits(),
            Inflate::Parallel {
                index: &index,
                threads,
            },
        )
        .unwrap();
        assert!(none.is_none());
        assert_eq!(parallel, whole);
    }
    // An index of another file is not used: the streaming decode answers instead.
    let other = gzindex::GzIndex {
        compressed_size: 1,
        ..index.clone()
    };
    let (v, _) = decode_with(
        &gz,
        &limits(),
        Inflate::Parallel {
            index: &other,
            threads: 2,
        },
    )
    .unwrap();
    assert_eq!(v, whole);
    // A truncated file is refused the same way by every path.
    for how in [
        Inflate::Whole,
        Inflate::Indexing { spacing: 1 << 16 },
        Inflate::Parallel {
            index: &index,
            threads: 2,
        },
    ] {
        assert!(matches!(
            decode_with(&gz[..gz.len() / 2], &limits(), how),
            Err(VolumeError::Truncated(_) | VolumeError::Gzip(_))
        ));
    }
}
