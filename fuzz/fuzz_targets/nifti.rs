//! NIfTI-1/NIfTI-2 reading (`.nii` and `.nii.gz`): `read_header`, `decode` and the streaming
//! `decode_reader` must return an error for bad input, never panic or allocate past the limits,
//! and agree with each other, as must the seek index's ways (recording it, then inflating from
//! its checkpoints on two threads, planes read from checkpoints or byte ranges) and its file
//! reader on any bytes. A volume that decodes also
//! goes through the cheap transforms the volume and slice routes run on it.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use medserve::imaging::ResizeMode;
use medserve::imaging::gzindex;
use medserve::imaging::nifti::{self, Inflate, Volume, VolumeLimits, Voxels};
use medserve::imaging::volume::{self, LabelSelect, Plane, SliceAt};
use medserve::with_voxels;

/// Small enough that a hostile header cannot make one run slow or large (the server's defaults
/// are 512 Mi voxels and 2 GiB); large enough for every seed.
const LIMITS: VolumeLimits = VolumeLimits {
    max_voxels: 2 << 20,
    max_bytes: 64 << 20,
};

/// Native-grid transforms (a float32 copy of every voxel) only below this many voxels.
const NATIVE_MAX: u64 = 1 << 16;

fn voxel_bytes(v: &Voxels) -> &[u8] {
    with_voxels!(v, x => bytemuck::cast_slice(x.as_slice()))
}

/// Equal headers (through Debug, so NaNs compare equal) and equal voxel bits.
fn same(a: &Volume, b: &Volume) -> bool {
    format!("{:?}", a.header) == format!("{:?}", b.header)
        && std::mem::discriminant(&a.voxels) == std::mem::discriminant(&b.voxels)
        && voxel_bytes(&a.voxels) == voxel_bytes(&b.voxels)
}

/// A few axial planes `(z, channel, bytes in the decompressed file)` of a volume.
fn planes(h: &nifti::Header) -> Vec<(usize, usize, std::ops::Range<u64>)> {
    let nz = h.spatial[2];
    if h.voxels() == 0 {
        return Vec::new();
    }
    [(0, 0), (nz / 2, h.channels - 1), (nz - 1, 0)]
        .into_iter()
        .map(|(z, c)| (z, c, nifti::slab_range(h, z..z + 1, c)))
        .collect()
}

/// Asserts that `bytes`, read as plane `z` of `channel`, show what the decoded volume does.
fn same_plane(vol: &Volume, z: usize, channel: usize, bytes: &[u8]) {
    let plane = nifti::slab_volume(&vol.header, 1, 1, bytes).expect("a plane of a decoded volume");
    let bits = |a: ndarray::Array2<f32>| a.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let at = SliceAt {
        axis: 2,
        index: z,
        channel,
    };
    assert_eq!(
        bits(volume::image_slice(&plane, SliceAt::FIRST)),
        bits(volume::image_slice(vol, at)),
        "plane {z} of channel {channel} read by range differs"
    );
}

fuzz_target!(|data: &[u8]| {
    let header = nifti::read_header(data);
    let whole = nifti::decode(data, &LIMITS);
    let streamed = nifti::decode_reader(std::io::Cursor::new(data), &LIMITS);
    // The same file gzipped decodes to the same volume, or fails too.
    if !nifti::is_gzip(data) {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).unwrap();
        let gz = gz.finish().unwrap();
        match (nifti::decode(&gz, &LIMITS), &whole) {
            (Ok(a), Ok(b)) => assert!(same(&a, b), ".nii.gz and .nii decode differently"),
            (Err(_), Err(_)) => {}
            (a, b) => panic!(
                ".nii.gz and .nii disagree: {:?} vs {:?}",
                a.map(|v| v.header),
                b.as_ref().map(|v| &v.header)
            ),
        }
    }
    let vol = match (whole, streamed) {
        (Ok(a), Ok(b)) => {
            assert!(same(&a, &b), "decode and decode_reader disagree");
            a
        }
        (Err(_), Err(_)) => return,
        (a, b) => panic!(
            "decode and decode_reader disagree: {:?} vs {:?}",
            a.map(|v| v.header),
            b.map(|v| v.header)
        ),
    };
    // The seek index's ways of inflating a .nii.gz agree with the others: recording the index,
    // then from its checkpoints on two threads (a hostile GZIDX never gets past its reader).
    let _ = gzindex::GzIndex::from_bytes(data);
    if nifti::is_gzip(data) {
        match nifti::decode_with(data, &LIMITS, Inflate::Indexing { spacing: 4096 }) {
            Ok((v, index)) => {
                assert!(same(&v, &vol), "the indexing decode disagrees");
                if let Some(index) = index {
                    let again = gzindex::GzIndex::from_bytes(&index.to_bytes())
                        .expect("an index reads back");
                    assert_eq!(again, index);
                    let (p, _) = nifti::decode_with(
                        data,
                        &LIMITS,
                        Inflate::Parallel {
                            index: &index,
                            threads: 2,
                        },
                    )
                    .expect("the parallel decode fails where the others succeed");
                    assert!(same(&p, &vol), "the parallel decode disagrees");
                    // Planes read from the checkpoints (the slice route's slab reads).
                    for (z, c, r) in planes(&vol.header) {
                        let at = index.point_before(r.start);
                        let from = gzindex::GzIndex::input_start(at) as usize;
                        let mut out = vec![0u8; (r.end - r.start) as usize];
                        gzindex::GzIndex::read_from(at, &data[from..], r.start, &mut out)
                            .expect("a plane of a stream that inflates reads from its index");
                        same_plane(&vol, z, c, &out);
                    }
                }
            }
            Err(e) => panic!("the indexing decode fails where the others succeed: {e}"),
        }
    }
    let header = header.expect("read_header fails on a file decode reads");
    assert_eq!(format!("{header:?}"), format!("{:?}", vol.header));

    // Planes read from their byte ranges (the slice route's slab reads) equal the decoded ones.
    if !nifti::is_gzip(data) {
        for (z, c, r) in planes(&vol.header) {
            same_plane(&vol, z, c, &data[r.start as usize..r.end as usize]);
        }
    }

    let h = &vol.header;
    let n = h.voxels();
    assert!(n <= LIMITS.max_voxels);
    assert_eq!(vol.voxels.byte_len() as u64, n * h.dtype.size() as u64);
    let _ = h.orientation();
    let _ = volume::intensity_range(&vol);

    // The image chain, resized to a small grid in every mode.
    for mode in [ResizeMode::Area, ResizeMode::Linear, ResizeMode::Nearest] {
        let a = volume::image_f32(&vol, Some([4, 4, 4]), mode);
        assert_eq!(a.shape(), [h.channels, 4, 4, 4]);
    }
    let _ = volume::resized_affine(&h.affine, h.spatial, [4, 4, 4]);

    // Middle slices along each axis and each anatomical plane, as the slice route cuts them.
    let channel = h.channels - 1;
    let _ = volume::percentiles(&vol, channel, 0.5, 99.5, true);
    for axis in 0..3 {
        let at = SliceAt {
            axis,
            index: h.spatial[axis] / 2,
            channel,
        };
        let s = volume::image_slice(&vol, at);
        for plane in [Plane::Axial, Plane::Coronal, Plane::Sagittal] {
            let plan = volume::display_plan(h.orientation(), plane);
            let _ = volume::orient(s.view(), plan);
        }
    }

    // The label chain (when the voxels are whole numbers in 0..=255).
    if let Ok(label) = volume::label_u8(&vol) {
        assert_eq!(
            label.shape(),
            [h.channels, h.spatial[0], h.spatial[1], h.spatial[2]]
        );
        let counts = volume::label_counts(&label.view());
        assert_eq!(counts.iter().map(|&(_, c)| c).sum::<u64>(), n);
        let select = LabelSelect {
            keep: Some(vec![1, 2]),
            binary: true,
        };
        let r = volume::label_resized(label.view().into_dyn(), Some([4, 4, 4]), &select);
        assert!(r.iter().all(|&v| v <= 1));
        let at = SliceAt {
            axis: 2,
            index: h.spatial[2] / 2,
            channel,
        };
        let _ = volume::label_slice(&label.view(), at);
    }

    // Native-grid conversions (what the volume route returns without a size).
    if n <= NATIVE_MAX {
        let a = volume::image_f32(&vol, None, ResizeMode::Area);
        assert_eq!(
            a.shape(),
            [h.channels, h.spatial[0], h.spatial[1], h.spatial[2]]
        );
        let _ = volume::to_file_order(&a);
    }
});
