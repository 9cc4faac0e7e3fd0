//! Criterion benchmarks of the pure 2D pipeline: decode, resize, scale, encode.
//!
//! Every input is made here, deterministically, from `medserve::sample`: a 64x64 8-bit
//! grayscale PNG like the sample data, and a 512x512 one made by enlarging a sample image 8x
//! with noise. Each group has a baseline measured in the same run, so results can be read as
//! ratios (see docs/PERFORMANCE.md); `chain/*` compares with `decode/png_u8/*`:
//! - `decode/png_u8/*`: the `png` crate decoding the same bytes into a `u8` buffer (the floor
//!   under our decode to f32 `(C, H, W)`);
//! - `resize/nearest/*`: the cheapest resampling, for `bilinear` and `area`;
//! - `intensity/clone/*`: a copy of the array, the floor under `scale_minmax` (whose timing
//!   excludes the copy it works on) and under `resize/identity_64_to_64` (which only copies);
//! - `encode/npy/*`: a header and one bulk copy of the array's bytes, the floor under the
//!   other encoders. (A bare `memcpy` into a new `Vec` was tried as the floor and rejected: on
//!   this 2-core AMD EPYC VM its time for 16 KiB swung 20x between runs with heap layout.)
//!
//! `cargo bench --bench pipeline` runs it (about 2 minutes on 2 cores);
//! `cargo bench --bench pipeline -- --test` (and `cargo test --all-targets`) runs every
//! benchmark once as a smoke test.

#[path = "common/ratios.rs"]
mod ratios;

use std::hint::black_box;
use std::io::Cursor;
use std::time::{Duration, SystemTime};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group};
use ndarray::{Array3, ArrayD};

use medserve::imaging::spatial::SpatialAxes;
use medserve::imaging::{
    ChannelMode, DecodeOptions, PaletteMode, ResizeMode, decode, encode, intensity, resize,
};
use medserve::pipeline::{Chain2d, Scale};
use medserve::sample::{IMAGE_SIZE, Rng, class_image, gray_png};

const OPTS: DecodeOptions = DecodeOptions {
    channels: ChannelMode::Native,
    palette: PaletteMode::Indices,
    max_pixels: 100_000_000,
};

/// The sample data's 64x64 HeadCT image, as PNG.
fn png_64() -> Vec<u8> {
    let px = class_image("HeadCT", 5);
    gray_png(IMAGE_SIZE as u32, IMAGE_SIZE as u32, &px).expect("encode 64x64 PNG")
}

/// A 512x512 grayscale PNG: a sample image enlarged 8x (nearest) plus +-8 of noise, so it
/// compresses like a real scan rather than like flat blocks.
fn png_512() -> Vec<u8> {
    const N: usize = 512;
    let small = class_image("ChestCT", 7);
    let f = N / IMAGE_SIZE;
    let mut rng = Rng::new(512);
    let mut px = vec![0u8; N * N];
    for y in 0..N {
        for x in 0..N {
            let v = f32::from(small[(y / f) * IMAGE_SIZE + x / f]) + rng.range(-8.0, 8.0);
            px[y * N + x] = v.clamp(0.0, 255.0) as u8;
        }
    }
    gray_png(N as u32, N as u32, &px).expect("encode 512x512 PNG")
}

/// What the `png` crate alone does with the bytes: header, inflate, unfilter into `u8`.
fn png_raw_decode(bytes: &[u8]) -> Vec<u8> {
    let mut dec = png::Decoder::new(Cursor::new(bytes));
    dec.set_transformations(png::Transformations::IDENTITY);
    let mut reader = dec.read_info().expect("png header");
    let mut buf = vec![0u8; reader.output_buffer_size().expect("buffer size")];
    reader.next_frame(&mut buf).expect("png frame");
    buf
}

fn decoded(bytes: &[u8]) -> ArrayD<f32> {
    decode::decode(bytes, &OPTS)
        .expect("decode")
        .data
        .into_dyn()
}

/// A `(C, H, W)` array in [0, 1], as the chain leaves it.
fn scaled(bytes: &[u8], channels: usize) -> ArrayD<f32> {
    let mut one = decoded(bytes);
    intensity::scale_minmax(&mut one);
    let (_, h, w) = (one.shape()[0], one.shape()[1], one.shape()[2]);
    // Further channels are shifted copies, so the channels differ.
    Array3::from_shape_fn((channels, h, w), |(c, y, x)| one[[0, y, (x + 17 * c) % w]]).into_dyn()
}

fn bench_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for (side, bytes) in [(64u64, png_64()), (512, png_512())] {
        g.throughput(Throughput::Elements(side * side));
        g.bench_with_input(BenchmarkId::new("png_u8", side), &bytes, |b, bytes| {
            b.iter(|| png_raw_decode(black_box(bytes)));
        });
        g.bench_with_input(BenchmarkId::new("ours_f32", side), &bytes, |b, bytes| {
            b.iter(|| decode::decode(black_box(bytes), &OPTS).expect("decode"));
        });
    }
    g.finish();
}

fn bench_resize(c: &mut Criterion) {
    let mut g = c.benchmark_group("resize");
    let small = decoded(&png_64());
    g.bench_function("identity_64_to_64", |b| {
        b.iter(|| resize::resize(black_box(&small), &[64, 64], ResizeMode::Area));
    });
    let big = decoded(&png_512());
    for (name, mode) in [
        ("area", ResizeMode::Area),
        ("nearest", ResizeMode::Nearest),
        ("bilinear", ResizeMode::Linear),
    ] {
        g.bench_function(BenchmarkId::new(name, "512_to_64"), |b| {
            b.iter(|| resize::resize(black_box(&big), &[64, 64], mode));
        });
    }
    g.finish();
}

fn bench_intensity(c: &mut Criterion) {
    let mut g = c.benchmark_group("intensity");
    for (side, a) in [(64u64, decoded(&png_64())), (512, decoded(&png_512()))] {
        g.throughput(Throughput::Elements(side * side));
        g.bench_with_input(BenchmarkId::new("clone", side), &a, |b, a| {
            b.iter(|| black_box(a).clone());
        });
        g.bench_with_input(BenchmarkId::new("scale_minmax", side), &a, |b, a| {
            b.iter_batched_ref(
                || a.clone(),
                |x| intensity::scale_minmax(black_box(x)),
                BatchSize::SmallInput,
            );
        });
    }
    g.finish();
}

fn bench_chain(c: &mut Criterion) {
    let mut g = c.benchmark_group("chain");
    let chain = Chain2d {
        decode: OPTS,
        size: (64, 64),
        mode: ResizeMode::Area,
        scale: Scale::MinMax,
        flip: SpatialAxes::NONE,
        rotate: None,
    };
    for (side, bytes) in [(64u64, png_64()), (512, png_512())] {
        g.throughput(Throughput::Elements(side * side));
        g.bench_with_input(
            BenchmarkId::new("decode_resize_scale", side),
            &bytes,
            |b, bytes| {
                b.iter(|| {
                    let d = decode::decode(black_box(bytes), &chain.decode).expect("decode");
                    chain.apply(&d.data.into_dyn())
                });
            },
        );
    }
    g.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    for (label, a) in [
        ("1x64x64", scaled(&png_64(), 1)),
        ("3x512x512", scaled(&png_512(), 3)),
    ] {
        g.throughput(Throughput::Elements(a.len() as u64));
        g.bench_with_input(BenchmarkId::new("npy", label), &a, |b, a| {
            b.iter(|| encode::npy(black_box(a)).expect("npy"));
        });
        g.bench_with_input(BenchmarkId::new("f32_le", label), &a, |b, a| {
            b.iter(|| encode::f32_le(black_box(a)));
        });
        g.bench_with_input(BenchmarkId::new("png8", label), &a, |b, a| {
            b.iter(|| encode::png8(black_box(a), 0.0, 1.0).expect("png8"));
        });
    }
    g.finish();
}

/// 20 benchmarks x (1 s warm-up + 3 s measurement) plus analysis: about 2 minutes.
fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_decode, bench_resize, bench_intensity, bench_chain, bench_encode
}

/// Each benchmark and the baseline of the same run it is read against.
const RATIOS: &[(&str, &str)] = &[
    ("decode/ours_f32/64", "decode/png_u8/64"),
    ("decode/ours_f32/512", "decode/png_u8/512"),
    ("chain/decode_resize_scale/64", "decode/png_u8/64"),
    ("chain/decode_resize_scale/512", "decode/png_u8/512"),
    ("resize/identity_64_to_64", "intensity/clone/64"),
    ("resize/bilinear/512_to_64", "resize/nearest/512_to_64"),
    ("resize/area/512_to_64", "resize/nearest/512_to_64"),
    ("intensity/scale_minmax/64", "intensity/clone/64"),
    ("intensity/scale_minmax/512", "intensity/clone/512"),
    ("encode/f32_le/1x64x64", "encode/npy/1x64x64"),
    ("encode/png8/1x64x64", "encode/npy/1x64x64"),
    ("encode/f32_le/3x512x512", "encode/npy/3x512x512"),
    ("encode/png8/3x512x512", "encode/npy/3x512x512"),
];

/// `criterion_main!(benches)` plus the ratio table.
fn main() {
    let since = SystemTime::now();
    benches();
    Criterion::default().configure_from_args().final_summary();
    ratios::print_ratios(RATIOS, since);
}
