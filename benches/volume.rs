//! Criterion benchmarks of the 3D path on a CT-sized volume: what a cold request for a
//! `(1, 128, 128, 64)` float32 volume costs, stage by stage, against the floor under it.
//!
//! The input is a 512x512x200 int16 CT-like `.nii.gz` (about 100 MB of voxels) made once from
//! `medserve::sample::ct_volume(1, ..)`, gzipped at flate2's default level (6), and kept in
//! `target/bench-data/` (reused when present; `MEDSERVE_BENCH_VOLUME=/path/file.nii.gz` uses
//! another file). In `--test` mode (`cargo test --all-targets`, `cargo bench -- --test`) a
//! 64x64x25 volume is made instead, so the smoke test stays quick in a debug build.
//!
//! Every benchmark is in the group `volume` and is read as a ratio to a baseline of the same run:
//! - `inflate_only`: `flate2`'s `MultiGzDecoder` (zlib-rs) alone inflating the file into a
//!   `Vec` sized from the gzip ISIZE trailer: the floor before issue 12, kept as the baseline;
//! - `inflate_backend`: the whole-buffer inflate medserve uses for an object in memory
//!   (`imaging::gzip::inflate_exact`: libdeflate); `inflate_mask_zlib_rs` /
//!   `inflate_mask_backend` the two on the matching mask;
//! - `fetch_local`: `std::fs::read` of the `.nii.gz` (what the local store does; the file is
//!   in the page cache after the first read, so this is a memory copy, not a disk read);
//! - `decode`: `nifti::decode` of the file in memory (libdeflate straight into typed int16
//!   voxels), as the local store's requests do; `decode_stream_file` the streaming decode
//!   (zlib-rs) from the file, as remote stores' requests do;
//! - `resize_area_128x128x64`, `resize_trilinear_128x128x64`: `volume::image_f32` of the
//!   decoded volume (int16 -> float32 conversion is fused into the first resize pass);
//! - `scale_range`: `RangeScale(-1000, 1000, 0, 1)` on the `(1, 128, 128, 64)` result;
//! - `encode_npy`: `.npy` of the scaled result;
//! - `cold_total`: bytes -> decode -> area resize -> scale -> npy (a cold request minus the
//!   fetch and HTTP); `warm_transform`: the same from an already decoded volume;
//! - `gzindex_build`: a full inflate that records the seek index (every 1 MiB),
//!   `inflate_parallel_2` the full inflate from its checkpoints on 2 threads (goal: at most
//!   1/1.7 of `inflate_only`), `slab_read_axial` one axial slice's bytes from the nearest
//!   checkpoint;
//! - `disk_load`: the decoded volume read back from the disk tier (`cache::disk`: mapped,
//!   CRC-checked), read against `decode`; `recold_disk`: that plus the transform, read against
//!   `cold_total` (goal: at most 0.25x); `disk_store`: writing the entry;
//! - `label_nearest_128x128x64`: `label_u8` + `label_resized` of the matching mask;
//! - `slice_axial_png`: the middle axial slice as an 8-bit PNG in a -1000..1000 window.
//!
//! `cargo bench --bench volume` runs it (well under 3 minutes on 2 cores, plus about 15 s
//! the first time to make the file); `scripts/bench-volume.sh` adds the nibabel + MONAI
//! baseline and the summary table.

#[path = "common/ratios.rs"]
mod ratios;

use std::hint::black_box;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use criterion::{BatchSize, Criterion, SamplingMode};
use ndarray::{ArrayD, Axis};

use medserve::cache::disk::{DiskCache, Lookup};
use medserve::cache::{CacheKey, Stage};
use medserve::imaging::nifti::{self, OutType, Volume, VolumeLimits};
use medserve::imaging::volume::{self, LabelSelect, RangeScale, SliceAt};
use medserve::imaging::{ResizeMode, encode, gzindex, gzip};
use medserve::store::ObjectMeta;

const FULL_DIMS: [usize; 3] = [512, 512, 200];
const TEST_DIMS: [usize; 3] = [64, 64, 25];
const TARGET: [usize; 3] = [128, 128, 64];
const SPACING: [f64; 3] = [0.7, 0.7, 2.5];
const LIMITS: VolumeLimits = VolumeLimits {
    max_voxels: 1 << 32,
    max_bytes: 1 << 34,
};
const WINDOW: RangeScale = RangeScale {
    a_min: -1000.0,
    a_max: 1000.0,
    b_min: 0.0,
    b_max: 1.0,
    clip: false,
};

/// Criterion's own rule: test mode unless run with `--bench` alone.
fn test_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |a: &str| args.iter().any(|x| x == a);
    !has("--bench") || has("--test")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from)
}

/// A centred RAS+ affine with CT-like spacing.
fn affine(dims: [usize; 3]) -> [[f64; 4]; 4] {
    let mut a = [[0.0; 4]; 4];
    for k in 0..3 {
        a[k][k] = SPACING[k];
        a[k][3] = -SPACING[k] * dims[k] as f64 / 2.0;
    }
    a[3][3] = 1.0;
    a
}

/// The NIfTI-1 header (+ 4 empty extension bytes) of an int16 volume: `encode_nifti1` writes
/// only float32/uint8, so its uint8 header is patched to datatype 4 (int16), bitpix 16.
fn header_i16(dims: [usize; 3]) -> Vec<u8> {
    let mut h = nifti::encode_nifti1(&dims, &affine(dims), OutType::U8, &[], 1);
    h[70..72].copy_from_slice(&4i16.to_le_bytes());
    h[72..74].copy_from_slice(&16i16.to_le_bytes());
    h
}

/// Writes the CT-like int16 volume of `dims` as `.nii.gz` (flate2 default level) to `path`,
/// through a temporary file so an interrupted run leaves nothing half-written.
fn generate(path: &Path, dims: [usize; 3]) -> std::io::Result<()> {
    let t = Instant::now();
    eprintln!(
        "volume bench: generating {} ({}x{}x{} int16)...",
        path.display(),
        dims[0],
        dims[1],
        dims[2]
    );
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let (img, _) = medserve::sample::ct_volume(1, (dims[0], dims[1], dims[2]));
    // `[x, y, z]` C-order, transposed: iterates with x fastest, NIfTI's file order.
    let voxels: Vec<i16> = img.t().iter().copied().collect();
    let tmp = path.with_extension("gz.partial");
    let file = std::fs::File::create(&tmp)?;
    let mut gz =
        flate2::write::GzEncoder::new(BufWriter::new(file), flate2::Compression::default());
    gz.write_all(&header_i16(dims))?;
    gz.write_all(bytemuck::cast_slice(&voxels))?;
    gz.finish()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    std::fs::rename(&tmp, path)?;
    eprintln!(
        "volume bench: wrote {:.1} MB in {:.1} s",
        std::fs::metadata(path)?.len() as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The `.nii.gz` under test: `MEDSERVE_BENCH_VOLUME`, else the generated one (made if missing).
fn volume_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var_os("MEDSERVE_BENCH_VOLUME") {
            return PathBuf::from(p);
        }
        let dims = if test_mode() { TEST_DIMS } else { FULL_DIMS };
        let path = target_dir()
            .join("bench-data")
            .join(format!("ct_{}x{}x{}.nii.gz", dims[0], dims[1], dims[2]));
        if !path.is_file() {
            generate(&path, dims).expect("generate the benchmark volume");
        }
        path
    })
}

/// The compressed file, read once.
fn file_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let p = volume_path();
        std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    })
}

fn decoded() -> &'static Volume {
    static VOL: OnceLock<Volume> = OnceLock::new();
    VOL.get_or_init(|| nifti::decode(file_bytes(), &LIMITS).expect("decode the volume"))
}

/// The `(1, 128, 128, 64)` area-resized and window-scaled image.
fn scaled() -> &'static ArrayD<f32> {
    static OUT: OnceLock<ArrayD<f32>> = OnceLock::new();
    OUT.get_or_init(|| {
        let mut a = volume::image_f32(decoded(), Some(TARGET), ResizeMode::Area);
        WINDOW.apply(&mut a);
        a
    })
}

/// The mask matching the file's grid (made again from the same seed; kept uncompressed, as
/// only the transform is measured).
fn mask() -> &'static Volume {
    static MASK: OnceLock<Volume> = OnceLock::new();
    MASK.get_or_init(|| {
        let dims = decoded().header.spatial;
        let (_, lab) = medserve::sample::ct_volume(1, (dims[0], dims[1], dims[2]));
        let bytes: Vec<u8> = lab.t().iter().copied().collect();
        let nii = nifti::encode_nifti1(&dims, &affine(dims), OutType::U8, &bytes, 1);
        nifti::decode(&nii, &LIMITS).expect("decode the mask")
    })
}

/// The uncompressed size from the gzip trailer (ISIZE, mod 2^32; exact below 4 GiB).
fn gzip_isize(gz: &[u8]) -> usize {
    let t: [u8; 4] = gz[gz.len() - 4..].try_into().expect("gzip trailer");
    u32::from_le_bytes(t) as usize
}

/// The mask of `mask()` as a `.nii.gz` at the default level: masks compress 100x and inflate
/// at a different speed than CT.
fn mask_gz() -> &'static [u8] {
    static GZ: OnceLock<Vec<u8>> = OnceLock::new();
    GZ.get_or_init(|| {
        let m = mask();
        let nii = nifti::encode_nifti1(
            &m.header.spatial,
            &m.header.affine,
            OutType::U8,
            match &m.voxels {
                nifti::Voxels::U8(v) => v,
                _ => unreachable!("masks are written as uint8"),
            },
            1,
        );
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&nii).expect("gzip");
        e.finish().expect("gzip")
    })
}

/// Today's floor (before issue 12): flate2's zlib-rs, nothing else. Kept as the baseline
/// every ratio of this group is read against, whichever backend medserve now uses.
fn inflate_only(gz: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(gzip_isize(gz));
    flate2::bufread::MultiGzDecoder::new(gz)
        .read_to_end(&mut out)
        .expect("inflate");
    out
}

/// The inflate medserve uses for an object in memory (`imaging::gzip::inflate_exact`:
/// libdeflate, whole buffer, into a fresh buffer sized from the trailer as `decode` does).
fn inflate_backend(gz: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; gzip_isize(gz)];
    gzip::inflate_exact(gz, &mut out).expect("inflate");
    out
}

/// The seek index of the file (checkpoints every 1 MiB of output).
fn gz_index() -> &'static gzindex::GzIndex {
    static IX: OnceLock<gzindex::GzIndex> = OnceLock::new();
    IX.get_or_init(|| {
        let gz = file_bytes();
        let mut out = vec![0u8; gzip_isize(gz)];
        gzindex::inflate_indexed(gz, &mut out, 1 << 20).expect("index")
    })
}

/// A disk tier in `target/bench-data/disk-tier` holding the decoded volume, and its key.
fn disk_entry() -> &'static (DiskCache, CacheKey) {
    static ENTRY: OnceLock<(DiskCache, CacheKey)> = OnceLock::new();
    ENTRY.get_or_init(|| {
        let dir = target_dir().join("bench-data").join("disk-tier");
        let disk = DiskCache::open(&dir, 4 << 30).expect("disk tier");
        let obj = ObjectMeta {
            key: volume_path().display().to_string(),
            size: file_bytes().len() as u64,
            version: "bench".into(),
            version_id: None,
        };
        let key = CacheKey::new(Stage::Volume, [&obj], &"nifti");
        disk.store(&key, decoded()).expect("store");
        (disk, key)
    })
}

fn disk_load(disk: &DiskCache, key: &CacheKey) -> Volume {
    match disk.load::<Volume>(key) {
        Lookup::Hit(v) => *v,
        other => panic!("disk tier: {other:?}"),
    }
}

/// Area resize + scale + npy of a decoded volume: the transform part of a request.
fn transform(vol: &Volume) -> Vec<u8> {
    let mut a = volume::image_f32(vol, Some(TARGET), ResizeMode::Area);
    WINDOW.apply(&mut a);
    encode::npy(&a).expect("npy")
}

fn bench_volume(c: &mut Criterion) {
    let mut g = c.benchmark_group("volume");
    // Flat: the big benchmarks take a good fraction of a second each, and linear sampling
    // would need 55 iterations for 10 samples.
    g.sampling_mode(SamplingMode::Flat);

    g.bench_function("fetch_local", |b| {
        let p = volume_path();
        b.iter(|| std::fs::read(black_box(p)).expect("read"));
    });
    g.bench_function("inflate_only", |b| {
        let gz = file_bytes();
        b.iter(|| inflate_only(black_box(gz)));
    });
    g.bench_function("inflate_backend", |b| {
        let gz = file_bytes();
        b.iter(|| inflate_backend(black_box(gz)));
    });
    g.bench_function("inflate_mask_zlib_rs", |b| {
        let gz = mask_gz();
        b.iter(|| inflate_only(black_box(gz)));
    });
    g.bench_function("inflate_mask_backend", |b| {
        let gz = mask_gz();
        b.iter(|| inflate_backend(black_box(gz)));
    });
    // The seek index: built during a full inflate (zlib-rs with Z_BLOCK stops), then a full
    // inflate from its checkpoints on 2 threads, and one axial slice's bytes (512x512 int16)
    // read from the nearest checkpoint.
    g.bench_function("gzindex_build", |b| {
        let gz = file_bytes();
        b.iter(|| {
            let mut out = vec![0u8; gzip_isize(gz)];
            gzindex::inflate_indexed(black_box(gz), &mut out, 1 << 20).expect("index")
        });
    });
    g.bench_function("inflate_parallel_2", |b| {
        let (gz, ix) = (file_bytes(), gz_index());
        b.iter(|| {
            let mut out = vec![0u8; gzip_isize(gz)];
            gzindex::inflate_parallel(black_box(gz), ix, &mut out, 2).expect("inflate");
            out
        });
    });
    g.bench_function("slab_read_axial", |b| {
        let (gz, ix) = (file_bytes(), gz_index());
        let h = &decoded().header;
        let plane = (h.spatial[0] * h.spatial[1] * 2) as u64;
        let at = h.vox_offset + plane * (h.spatial[2] as u64 / 2);
        b.iter(|| {
            let p = ix.point_before(at);
            let mut out = vec![0u8; plane as usize];
            let input = &gz[gzindex::GzIndex::input_start(p) as usize..];
            gzindex::GzIndex::read_from(p, input, black_box(at), &mut out).expect("read");
            out
        });
    });
    g.bench_function("decode", |b| {
        let gz = file_bytes();
        b.iter(|| nifti::decode(black_box(gz), &LIMITS).expect("decode"));
    });
    for (name, mode) in [
        ("resize_area_128x128x64", ResizeMode::Area),
        ("resize_trilinear_128x128x64", ResizeMode::Linear),
    ] {
        g.bench_function(name, |b| {
            let vol = decoded();
            b.iter(|| volume::image_f32(black_box(vol), Some(TARGET), mode));
        });
    }
    g.bench_function("scale_range", |b| {
        let before = volume::image_f32(decoded(), Some(TARGET), ResizeMode::Area);
        b.iter_batched_ref(
            || before.clone(),
            |a| WINDOW.apply(black_box(a)),
            BatchSize::LargeInput,
        );
    });
    g.bench_function("encode_npy", |b| {
        let a = scaled();
        b.iter(|| encode::npy(black_box(a)).expect("npy"));
    });
    g.bench_function("cold_total", |b| {
        let gz = file_bytes();
        b.iter(|| transform(&nifti::decode(black_box(gz), &LIMITS).expect("decode")));
    });
    // What the server does on a cold request: the object streamed from the store (here the
    // local file) into the decoder, which inflates while it reads, then the transform.
    g.bench_function("decode_stream_file", |b| {
        let p = volume_path();
        b.iter(|| {
            let f = std::fs::File::open(black_box(p)).expect("open");
            nifti::decode_reader(f, &LIMITS).expect("decode")
        });
    });
    g.bench_function("cold_stream", |b| {
        let p = volume_path();
        b.iter(|| {
            let f = std::fs::File::open(black_box(p)).expect("open");
            transform(&nifti::decode_reader(f, &LIMITS).expect("decode"))
        });
    });
    // The disk tier: the decoded volume mapped back and checked (CRC-32), alone and followed
    // by the transform (a "re-cold" request: the volume left RAM but not the disk).
    g.bench_function("disk_load", |b| {
        let (disk, key) = disk_entry();
        b.iter(|| disk_load(disk, key));
    });
    g.bench_function("recold_disk", |b| {
        let (disk, key) = disk_entry();
        b.iter(|| transform(&disk_load(disk, key)));
    });
    g.bench_function("disk_store", |b| {
        let (disk, key) = disk_entry();
        let vol = decoded();
        b.iter(|| disk.store(key, black_box(vol)).expect("store"));
    });
    g.bench_function("warm_transform", |b| {
        let vol = decoded();
        b.iter(|| transform(black_box(vol)));
    });
    g.bench_function("label_nearest_128x128x64", |b| {
        let m = mask();
        let select = LabelSelect::default();
        b.iter(|| {
            let lab = volume::label_u8(black_box(m)).expect("label");
            volume::label_resized(lab.view().into_dyn(), Some(TARGET), &select)
        });
    });
    g.bench_function("slice_axial_png", |b| {
        let vol = decoded();
        let at = SliceAt {
            axis: 2,
            index: vol.header.spatial[2] / 2,
            channel: 0,
        };
        b.iter(|| {
            let s = volume::image_slice(black_box(vol), at).insert_axis(Axis(0));
            encode::png8(&s.into_dyn(), WINDOW.a_min, WINDOW.a_max).expect("png")
        });
    });
    g.finish();
}

/// 11 benchmarks x (1 s warm-up + 3 s, or 10 iterations when longer) plus analysis: about a
/// minute on 2 cores once the file exists.
fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

/// Each benchmark and the baseline of the same run it is read against.
const RATIOS: &[(&str, &str)] = &[
    ("volume/inflate_backend", "volume/inflate_only"),
    ("volume/inflate_mask_backend", "volume/inflate_mask_zlib_rs"),
    ("volume/decode", "volume/inflate_only"),
    ("volume/cold_total", "volume/inflate_only"),
    ("volume/resize_area_128x128x64", "volume/inflate_only"),
    ("volume/resize_trilinear_128x128x64", "volume/inflate_only"),
    ("volume/warm_transform", "volume/inflate_only"),
    ("volume/gzindex_build", "volume/inflate_only"),
    ("volume/inflate_parallel_2", "volume/inflate_only"),
    ("volume/slab_read_axial", "volume/inflate_only"),
    ("volume/disk_load", "volume/decode"),
    ("volume/recold_disk", "volume/cold_total"),
    ("volume/disk_store", "volume/decode"),
    ("volume/fetch_local", "volume/inflate_only"),
    ("volume/decode_stream_file", "volume/inflate_only"),
    ("volume/cold_stream", "volume/inflate_only"),
];

/// `criterion_main!` for one group, plus the ratio table.
fn main() {
    let since = SystemTime::now();
    let mut c = config().configure_from_args();
    bench_volume(&mut c);
    c.final_summary();
    ratios::print_ratios(RATIOS, since);
}
