//! A corpus of bad and of unusual-but-valid files, each served through the real API by one
//! server instance per table (in process, through the router, so state and caches accumulate).
//!
//! `bad`: every hostile object answers a 4xx `application/problem+json` whose `detail` and
//! `object` name the object's key, and a known-good request right after each one is served
//! exactly as before. The whole table runs under a peak-RSS bound (a memory assertion: the
//! corpus holds a gzip bomb of 1 GiB of zeros, a PNG whose IDAT inflates to 1 GiB, and headers
//! claiming 10^10 pixels or 32767^3 voxels). No assertion here is about time.
//!
//! `unusual_but_valid`: files real datasets contain that exercise the less travelled paths of
//! the decoders (16-bit, palette, 1-bit PNG, big-endian NIfTI-1, NIfTI-2, NaN voxels, NaN
//! `scl_slope`, extensions, multi-member gzip), each served 200 with the values written.
//!
//! Failures are collected over the whole table and reported together, so one run lists every
//! case that misbehaves; a handler that panics is caught (each request runs in its own task)
//! and reported as such.

mod common;

use std::io::Write;
use std::sync::LazyLock;
use std::sync::atomic::Ordering;

use axum::Router;
use common::Resp;
use medserve::AppState;
use serde_json::{Value, json};

/// The two tables measure this process's memory: they never run at the same time.
static SERIAL: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(|| tokio::sync::Mutex::new(()));

// ---------------------------------------------------------------------------------------------
// Requests and memory
// ---------------------------------------------------------------------------------------------

/// `GET uri` in its own task, so a panicking handler is a reported failure, not a dead test.
async fn fetch(app: &Router, uri: &str) -> Result<Resp, String> {
    let (app, u) = (app.clone(), uri.to_string());
    tokio::spawn(async move { common::get(&app, &u).await })
        .await
        .map_err(|e| format!("the handler panicked: {e}"))
}

/// A line of `/proc/self/status`, in KiB.
fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Resets the peak RSS to the current RSS where the kernel allows it (`clear_refs` 5), and
/// returns the baseline to measure growth from (KiB) and whether the reset happened. Without
/// the reset the baseline is the earlier peak, which can only understate the growth.
fn reset_peak_rss() -> (u64, bool) {
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    (status_kib("VmHWM"), reset)
}

fn storage_bytes(s: &AppState) -> u64 {
    s.metrics.storage_get_bytes.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------------------
// File builders
// ---------------------------------------------------------------------------------------------

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Deterministic bytes with no structure (an LCG's high bytes).
fn garbage(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (s >> 56) as u8
        })
        .collect()
}

/// A PNG chunk: length, type, data, CRC over type and data.
fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc.sum().to_be_bytes());
    out
}

/// A PNG from its chunks (signature added).
fn png_of(chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for c in chunks {
        out.extend_from_slice(c);
    }
    out
}

fn ihdr(w: u32, h: u32, depth: u8, color: u8) -> Vec<u8> {
    let mut d = w.to_be_bytes().to_vec();
    d.extend_from_slice(&h.to_be_bytes());
    d.extend_from_slice(&[depth, color, 0, 0, 0]);
    chunk(b"IHDR", &d)
}

/// A PNG through the `png` crate's encoder.
fn png(
    w: u32,
    h: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    data: &[u8],
    palette: Option<(&[u8], Option<&[u8]>)>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(color);
    enc.set_depth(depth);
    if let Some((pal, trns)) = palette {
        enc.set_palette(pal.to_vec());
        if let Some(t) = trns {
            enc.set_trns(t.to_vec());
        }
    }
    let mut wr = enc.write_header().unwrap();
    wr.write_image_data(data).unwrap();
    wr.finish().unwrap();
    out
}

/// A valid 8-bit gray PNG with a gradient, `w` x `h`.
fn gray_png(w: u32, h: u32) -> Vec<u8> {
    let px: Vec<u8> = (0..w * h).map(|i| (i * 7 % 251) as u8).collect();
    png(
        w,
        h,
        png::ColorType::Grayscale,
        png::BitDepth::Eight,
        &px,
        None,
    )
}

/// A PNG's chunks as (type, data), CRCs dropped.
type Chunks = Vec<([u8; 4], Vec<u8>)>;

fn png_chunks(png: &[u8]) -> Chunks {
    let mut out = Vec::new();
    let mut i = 8;
    while i + 12 <= png.len() {
        let n = u32::from_be_bytes(png[i..i + 4].try_into().unwrap()) as usize;
        let kind: [u8; 4] = png[i + 4..i + 8].try_into().unwrap();
        out.push((kind, png[i + 8..i + 8 + n].to_vec()));
        i += 12 + n;
    }
    out
}

/// A grayscale JPEG at quality 100 (smooth, so it decodes back within a few levels).
fn jpeg_gray(w: u32, h: u32) -> (Vec<u8>, Vec<u8>) {
    let px: Vec<u8> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (40 + 2 * x + 3 * y) as u8))
        .collect();
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 100)
        .encode(&px, w, h, image::ExtendedColorType::L8)
        .unwrap();
    (out, px)
}

/// Offset of the first `FF <marker>` in a JPEG.
fn jpeg_marker(jpeg: &[u8], marker: u8) -> usize {
    jpeg.windows(2)
        .position(|m| m == [0xFF, marker])
        .unwrap_or_else(|| panic!("no marker FF{marker:02X}"))
}

/// Element bytes in either byte order.
macro_rules! bytes_of {
    ($v:expr, $big:expr) => {
        $v.iter()
            .flat_map(|x| {
                if $big {
                    x.to_be_bytes().to_vec()
                } else {
                    x.to_le_bytes().to_vec()
                }
            })
            .collect::<Vec<u8>>()
    };
}

/// A single-file NIfTI-1 by hand, either byte order: 348-byte header, 4 extension-flag bytes,
/// voxels (`data`, already in that byte order); unit sform (code 1), `scl_slope` 1.
fn nifti1(dims: &[i64], datatype: i16, bitpix: i16, data: &[u8], big: bool) -> Vec<u8> {
    let mut h = vec![0u8; 352];
    macro_rules! put {
        ($o:expr, $v:expr) => {{
            let b = if big {
                $v.to_be_bytes()
            } else {
                $v.to_le_bytes()
            };
            h[$o..$o + b.len()].copy_from_slice(&b);
        }};
    }
    put!(0, 348i32);
    put!(40, dims.len() as i16);
    for i in 0..7 {
        put!(42 + 2 * i, dims.get(i).map_or(1, |&d| d as i16));
    }
    put!(70, datatype);
    put!(72, bitpix);
    for i in 0..8 {
        put!(76 + 4 * i, 1f32);
    }
    put!(108, 352f32);
    put!(112, 1f32);
    put!(254, 1i16);
    put!(280, 1f32);
    put!(296 + 4, 1f32);
    put!(312 + 8, 1f32);
    h[344..348].copy_from_slice(b"n+1\0");
    h.extend_from_slice(data);
    h
}

/// A single-file NIfTI-2 by hand, either byte order: 540-byte header, 4 extension-flag bytes,
/// voxels; int64 dims, so it can claim what NIfTI-1's int16 cannot.
fn nifti2(dims: &[i64], datatype: i16, bitpix: i16, data: &[u8], big: bool) -> Vec<u8> {
    let mut h = vec![0u8; 544];
    macro_rules! put {
        ($o:expr, $v:expr) => {{
            let b = if big {
                $v.to_be_bytes()
            } else {
                $v.to_le_bytes()
            };
            h[$o..$o + b.len()].copy_from_slice(&b);
        }};
    }
    put!(0, 540i32);
    h[4..12].copy_from_slice(b"n+2\0\r\n\x1a\n");
    put!(12, datatype);
    put!(14, bitpix);
    put!(16, dims.len() as i64);
    for i in 0..7 {
        put!(24 + 8 * i, dims.get(i).copied().unwrap_or(1));
    }
    for i in 0..8 {
        put!(104 + 8 * i, 1f64);
    }
    put!(168, 544i64);
    put!(176, 1f64);
    put!(348, 1i32);
    put!(400, 1f64);
    put!(432 + 8, 1f64);
    put!(464 + 16, 1f64);
    h.extend_from_slice(data);
    h
}

fn patch(b: &mut [u8], offset: usize, bytes: &[u8]) {
    b[offset..offset + bytes.len()].copy_from_slice(bytes);
}

/// A little-endian int16 NIfTI-1 with `x + 10y + 100z - 300` in every voxel.
fn good_nifti(d: [i64; 3]) -> Vec<u8> {
    let v = ramp_i16(d);
    nifti1(&d, 4, 16, &bytes_of!(v, false), false)
}

fn ramp_i16(d: [i64; 3]) -> Vec<i16> {
    let mut v = Vec::new();
    for z in 0..d[2] {
        for y in 0..d[1] {
            for x in 0..d[0] {
                v.push((x + 10 * y + 100 * z - 300) as i16);
            }
        }
    }
    v
}

/// Raw deflate blocks that inflate to `n` zeros, ending on a full flush (byte-aligned, no
/// reference to earlier data), so copies can be concatenated into a longer stream.
fn deflate_zeros(n: usize) -> Vec<u8> {
    let mut c = flate2::Compress::new(flate2::Compression::best(), false);
    let input = vec![0u8; n];
    let mut out = Vec::with_capacity(n / 500 + 1024);
    let mut pos = 0;
    loop {
        let before = c.total_in() as usize;
        out.reserve(64 << 10);
        c.compress_vec(&input[pos..], &mut out, flate2::FlushCompress::Full)
            .unwrap();
        pos += c.total_in() as usize - before;
        if pos == n && out.len() < out.capacity() {
            break;
        }
    }
    out
}

/// One raw deflate stream: `prefix` (stored, full flush), then `copies` copies of `zeros`, then
/// an empty final block.
fn deflate_bomb(prefix: &[u8], zeros: &[u8], copies: usize) -> Vec<u8> {
    let mut c = flate2::Compress::new(flate2::Compression::fast(), false);
    let mut out = Vec::with_capacity(prefix.len() + 1024 + zeros.len() * copies);
    c.compress_vec(prefix, &mut out, flate2::FlushCompress::Full)
        .unwrap();
    assert_eq!(c.total_in() as usize, prefix.len());
    for _ in 0..copies {
        out.extend_from_slice(zeros);
    }
    // BFINAL=1, BTYPE=01 (fixed Huffman), end-of-block.
    out.extend_from_slice(&[0x03, 0x00]);
    out
}

/// A zlib stream of `copies * zeros_len` zeros (a PNG's IDAT of all-zero rows, filter 0).
fn zlib_zeros(zeros: &[u8], zeros_len: usize, copies: usize) -> Vec<u8> {
    let mut z = vec![0x78, 0x01];
    z.extend_from_slice(&deflate_bomb(&[], zeros, copies));
    // Adler-32 of n zeros: a stays 1, b = n mod 65521.
    let n = (zeros_len as u64 * copies as u64) % 65521;
    z.extend_from_slice(&(((n as u32) << 16) | 1).to_be_bytes());
    z
}

/// A gzip file whose content is `prefix` followed by `copies * zeros_len` zeros.
fn gzip_bomb(prefix: &[u8], zeros: &[u8], zeros_len: usize, copies: usize) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.extend_from_slice(&deflate_bomb(prefix, zeros, copies));
    let mut crc = flate2::Crc::new();
    crc.update(prefix);
    let mut block = flate2::Crc::new();
    block.update(&vec![0u8; zeros_len]);
    for _ in 0..copies {
        crc.combine(&block);
    }
    out.extend_from_slice(&crc.sum().to_le_bytes());
    let total = prefix.len() as u64 + (zeros_len * copies) as u64;
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out
}

// ---------------------------------------------------------------------------------------------
// Item URLs
// ---------------------------------------------------------------------------------------------

/// The item URL of an object key: `<ds>/<split>/<Class>/<stem>.<png|jpg>` is item
/// `<Class>~<stem>`, `<ds>/<split>/<subject>/img.nii[.gz]` is item `<subject>`.
fn item_url(key: &str) -> String {
    let p: Vec<&str> = key.split('/').collect();
    let [ds, split, folder, file] = p[..] else {
        panic!("unexpected key {key}")
    };
    if file.starts_with("img.nii") {
        format!("/v1/datasets/{ds}/splits/{split}/items/{folder}")
    } else {
        let stem = file.rsplit_once('.').map_or(file, |(s, _)| s);
        format!("/v1/datasets/{ds}/splits/{split}/items/{folder}~{stem}")
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Bad files
// ---------------------------------------------------------------------------------------------

/// What a bad object must answer on every route of its case.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// A problem+json with this status and code whose `detail` names the object and says
    /// `mention`, and whose `object` is the key.
    Problem(u16, &'static str, &'static str),
    /// 200: what follows the bytes the header needs is never read (checked separately).
    Served,
    /// Either served, or a 4xx problem naming the object: never a 5xx, never a panic.
    NoServerError,
}

struct Bad {
    name: &'static str,
    /// Object key, relative to the data root.
    key: String,
    bytes: Vec<u8>,
    /// Suffixes after the item URL.
    routes: &'static [&'static str],
    expect: Expect,
}

const IMAGE_ROUTES: &[&str] = &["/image", "/image?format=npy&channels=1", ""];
const VOLUME_ROUTES: &[&str] = &["/volume", "/slice", "/volume.nii.gz?size=8,8,8", ""];

const UNDECODABLE: &str = "undecodable-object";
const TOO_LARGE: &str = "object-too-large";

const GOOD_2D: &str = "/v1/datasets/img2d/splits/train/items/Good~ok/image?format=npy&scale=none";
const GOOD_3D: &str = "/v1/datasets/vol3d/splits/train/items/good/volume";

/// Dims of the in-limits gzip bomb: 64^3 uint8 voxels (256 KiB) before 1 GiB of zeros.
const BOMB_DIMS: [i64; 3] = [64, 64, 64];
/// Zeros behind the bomb headers: copies of a 4 MiB block.
const BOMB_BLOCK: usize = 4 << 20;
const BOMB_COPIES: usize = 256;

fn bad_table() -> Vec<Bad> {
    use Expect::{NoServerError, Problem, Served};
    let k2 = |f: &str| format!("img2d/train/Bad/{f}");
    let k3 = |subject: &str, f: &str| format!("vol3d/train/{subject}/{f}");
    let mut t = Vec::new();
    let mut add = |name, key: String, bytes, routes, expect| {
        t.push(Bad {
            name,
            key,
            bytes,
            routes,
            expect,
        })
    };

    // --- 2D: PNG and JPEG under a MedNIST layout ---
    let good = gray_png(32, 32);
    let chunks = png_chunks(&good);
    let idat = chunks.iter().position(|(k, _)| k == b"IDAT").unwrap();
    let rebuild = |f: &dyn Fn(&mut Chunks)| {
        let mut c = chunks.clone();
        f(&mut c);
        png_of(&c.iter().map(|(k, d)| chunk(k, d)).collect::<Vec<_>>())
    };
    add(
        "png truncated",
        k2("truncated.png"),
        good[..good.len() / 2].to_vec(),
        IMAGE_ROUTES,
        Problem(422, UNDECODABLE, "corrupt PNG"),
    );
    // One bit flipped inside IDAT, CRC left as it was.
    let mut flipped = good.clone();
    let at = 8
        + chunks[..idat]
            .iter()
            .map(|(_, d)| 12 + d.len())
            .sum::<usize>()
        + 8
        + 20;
    flipped[at] ^= 0x10;
    add(
        "png IDAT bit flip (bad CRC)",
        k2("badcrc.png"),
        flipped,
        IMAGE_ROUTES,
        Problem(422, UNDECODABLE, "corrupt PNG"),
    );
    // The first deflate block claims the reserved type 3, CRC recomputed: bad zlib only.
    add(
        "png bad zlib (valid CRC)",
        k2("badzlib.png"),
        rebuild(&|c| c[idat].1[2] |= 0b110),
        IMAGE_ROUTES,
        Problem(422, UNDECODABLE, "corrupt PNG"),
    );
    add(
        "png zlib header broken (valid CRC)",
        k2("badzhdr.png"),
        rebuild(&|c| c[idat].1[0] = 0x7a),
        IMAGE_ROUTES,
        Problem(422, UNDECODABLE, "corrupt PNG"),
    );
    add(
        "png IDAT holds half the rows (valid CRC)",
        k2("shortidat.png"),
        {
            let rows: Vec<u8> = (0..16).flat_map(|_| [0u8; 33]).collect();
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            z.write_all(&rows).unwrap();
            let z = z.finish().unwrap();
            rebuild(&|c| c[idat].1 = z.clone())
        },
        IMAGE_ROUTES,
        Problem(422, UNDECODABLE, "corrupt PNG"),
    );
    add(
        "png without IDAT",
        k2("noidat.png"),
        png_of(&[ihdr(8, 8, 8, 0), chunk(b"IEND", &[])]),
        IMAGE_ROUTES,
        Problem(422, UNDECODABLE, "corrupt PNG"),
    );
    add(
        "png IHDR 100000x100000",
        k2("huge.png"),
        png_of(&[ihdr(100_000, 100_000, 8, 0), chunk(b"IEND", &[])]),
        IMAGE_ROUTES,
        Problem(422, TOO_LARGE, "100000x100000"),
    );
    add(
        "png IHDR 0x0",
        k2("zero.png"),
        png_of(&[ihdr(0, 0, 8, 0), chunk(b"IEND", &[])]),
        IMAGE_ROUTES,
        Problem(422, UNDECODABLE, "0x0"),
    );
    add(
        "png IHDR 4294967295x1",
        k2("wide.png"),
        png_of(&[ihdr(u32::MAX, 1, 8, 0), chunk(b"IEND", &[])]),
        IMAGE_ROUTES,
        Problem(422, TOO_LARGE, "4294967295x1"),
    );
    add(
        "png IHDR bad bit depth 3",
        k2("depth3.png"),
        png_of(&[ihdr(8, 8, 3, 0), chunk(b"IEND", &[])]),
        IMAGE_ROUTES,
        Problem(422, UNDECODABLE, "corrupt PNG"),
    );
    add(
        "png palette index past the palette (expand)",
        k2("paloob.png"),
        png(
            2,
            1,
            png::ColorType::Indexed,
            png::BitDepth::Eight,
            &[0, 5],
            Some((&[0, 0, 0, 255, 255, 255], None)),
        ),
        &["/image?palette=expand", "/image?channels=1"],
        Problem(422, UNDECODABLE, "palette index 5"),
    );
    // A valid 64x64 gray PNG whose IDAT inflates to 1 GiB of zeros (the rows need 4160 bytes).
    let zeros = deflate_zeros(BOMB_BLOCK);
    add(
        "png IDAT inflating to 1 GiB",
        k2("bomb.png"),
        png_of(&[
            ihdr(64, 64, 8, 0),
            chunk(b"IDAT", &zlib_zeros(&zeros, BOMB_BLOCK, BOMB_COPIES)),
            chunk(b"IEND", &[]),
        ]),
        IMAGE_ROUTES,
        NoServerError,
    );
    let (jpeg, _) = jpeg_gray(32, 32);
    let sof = jpeg_marker(&jpeg, 0xC0);
    add(
        "jpeg SOI+SOF then end of file",
        k2("j_sofonly.jpg"),
        {
            let len = u16::from_be_bytes([jpeg[sof + 2], jpeg[sof + 3]]) as usize;
            let mut b = vec![0xFF, 0xD8];
            b.extend_from_slice(&jpeg[sof..sof + 2 + len]);
            b
        },
        IMAGE_ROUTES,
        Problem(422, UNDECODABLE, "corrupt JPEG"),
    );
    add(
        "jpeg headers then garbage, no EOI",
        k2("j_garbage.jpg"),
        {
            let sos = jpeg_marker(&jpeg, 0xDA);
            let len = u16::from_be_bytes([jpeg[sos + 2], jpeg[sos + 3]]) as usize;
            let mut b = jpeg[..sos + 2 + len].to_vec();
            b.extend(garbage(64, 7).into_iter().map(|x| x & 0x7f));
            b
        },
        IMAGE_ROUTES,
        Problem(422, UNDECODABLE, "corrupt JPEG"),
    );
    add(
        "jpeg cut in its scan",
        k2("j_cutscan.jpg"),
        {
            let sos = jpeg_marker(&jpeg, 0xDA);
            jpeg[..sos + (jpeg.len() - sos) / 3].to_vec()
        },
        IMAGE_ROUTES,
        Problem(422, UNDECODABLE, "corrupt JPEG"),
    );
    add(
        "jpeg SOF 65500x65500",
        k2("j_huge.jpg"),
        {
            let mut b = jpeg.clone();
            patch(&mut b, sof + 5, &65500u16.to_be_bytes());
            patch(&mut b, sof + 7, &65500u16.to_be_bytes());
            b
        },
        IMAGE_ROUTES,
        Problem(422, TOO_LARGE, "65500x65500"),
    );
    add(
        "empty .png",
        k2("empty.png"),
        Vec::new(),
        IMAGE_ROUTES,
        Problem(422, UNDECODABLE, "not a PNG or JPEG"),
    );
    add(
        "text named .png",
        k2("text.png"),
        b"<html>404 Not Found</html>\n".to_vec(),
        IMAGE_ROUTES,
        Problem(422, UNDECODABLE, "not a PNG or JPEG"),
    );
    add(
        "NIfTI named .png",
        k2("nifti.png"),
        gz(&good_nifti([4, 4, 4])),
        IMAGE_ROUTES,
        Problem(422, UNDECODABLE, "not a PNG or JPEG"),
    );

    // --- 3D: NIfTI under a segmentation layout ---
    let good3 = gz(&good_nifti([16, 16, 8]));
    let tiny = || good_nifti([2, 2, 2]);
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = tiny();
        f(&mut b);
        b
    };
    add(
        "gzip truncated",
        k3("gz_truncated", "img.nii.gz"),
        good3[..good3.len() / 2].to_vec(),
        VOLUME_ROUTES,
        Problem(422, UNDECODABLE, "truncated"),
    );
    add(
        "gzip with a corrupt deflate block",
        k3("gz_corrupt", "img.nii.gz"),
        {
            let mut b = good3.clone();
            b[10] |= 0b110;
            b
        },
        VOLUME_ROUTES,
        Problem(422, UNDECODABLE, "corrupt gzip"),
    );
    // 64^3 uint8 voxels within the limits, then 1 GiB of zeros: served from the first 256 KiB.
    let bomb_header = nifti1(&BOMB_DIMS, 2, 8, &[], false);
    add(
        "gzip bomb: 64^3 header + 1 GiB of zeros",
        k3("gz_bomb", "img.nii.gz"),
        gzip_bomb(&bomb_header, &zeros, BOMB_BLOCK, BOMB_COPIES),
        VOLUME_ROUTES,
        Served,
    );
    let over = nifti1(&[32767, 32767, 32767], 2, 8, &[], false);
    add(
        "gzip bomb: 32767^3 header + 1 GiB of zeros",
        k3("gz_bomb_over", "img.nii.gz"),
        gzip_bomb(&over, &zeros, BOMB_BLOCK, BOMB_COPIES),
        VOLUME_ROUTES,
        Problem(422, TOO_LARGE, "32767x32767x32767"),
    );
    add(
        "header 512^3 uint8 within limits, 1 MiB of voxels",
        k3("short", "img.nii.gz"),
        gzip_bomb(
            &nifti1(&[512, 512, 512], 2, 8, &[], false),
            &deflate_zeros(1 << 20),
            1 << 20,
            1,
        ),
        VOLUME_ROUTES,
        Problem(422, UNDECODABLE, "truncated"),
    );
    add(
        "header 800^3 float64: voxels within, bytes past --max-volume-mb",
        k3("bytes_over", "img.nii.gz"),
        gz(&nifti1(&[800, 800, 800], 64, 64, &[], false)),
        VOLUME_ROUTES,
        Problem(422, TOO_LARGE, "--max-volume-mb"),
    );
    add(
        "dim[1] negative",
        k3("dim_negative", "img.nii"),
        with(&|b| patch(b, 42, &(-3i16).to_le_bytes())),
        VOLUME_ROUTES,
        Problem(422, UNDECODABLE, "dim[1] is -3"),
    );
    add(
        "dim[2] zero",
        k3("dim_zero", "img.nii.gz"),
        gz(&with(&|b| patch(b, 44, &0i16.to_le_bytes()))),
        VOLUME_ROUTES,
        Problem(422, UNDECODABLE, "dim[2] is 0"),
    );
    add(
        "dim[0] zero",
        k3("ndim_zero", "img.nii.gz"),
        gz(&with(&|b| patch(b, 40, &0i16.to_le_bytes()))),
        VOLUME_ROUTES,
        Problem(422, UNDECODABLE, "dim[0]"),
    );
    add(
        "5D with dim[5]=2",
        k3("five_d", "img.nii.gz"),
        gz(&nifti1(&[2, 2, 2, 1, 2], 2, 8, &[0; 16], false)),
        VOLUME_ROUTES,
        Problem(422, UNDECODABLE, "more than 4 dimensions"),
    );
    add(
        "NIfTI-2 dim 2^31-1",
        k3("n2_dim_i32max", "img.nii.gz"),
        gz(&nifti2(&[(1 << 31) - 1, 1, 1], 2, 8, &[], false)),
        VOLUME_ROUTES,
        Problem(422, TOO_LARGE, "2147483647x1x1"),
    );
    add(
        "NIfTI-2 dims 2^31 x 2",
        k3("n2_dim_2p31", "img.nii.gz"),
        gz(&nifti2(&[1 << 31, 2, 1], 2, 8, &[], false)),
        VOLUME_ROUTES,
        Problem(422, TOO_LARGE, "2147483648x2x1"),
    );
    add(
        "NIfTI-2 dims (2^31)^3: voxel count overflows u64",
        k3("n2_overflow", "img.nii.gz"),
        gz(&nifti2(&[1 << 31, 1 << 31, 1 << 31], 2, 8, &[], false)),
        VOLUME_ROUTES,
        Problem(422, TOO_LARGE, "overflow"),
    );
    add(
        "NIfTI-2 dims 2^32 x 2^32: voxel count wraps to 0",
        k3("n2_wraps", "img.nii.gz"),
        gz(&nifti2(&[1 << 32, 1 << 32, 1], 2, 8, &[], false)),
        VOLUME_ROUTES,
        Problem(422, TOO_LARGE, "overflow"),
    );
    add(
        "NIfTI-2 2^20 x 2^20 x 2^20 x 2^10 channels: overflows with channels",
        k3("n2_channels", "img.nii.gz"),
        gz(&nifti2(
            &[1 << 20, 1 << 20, 1 << 20, 1 << 10],
            2,
            8,
            &[],
            false,
        )),
        VOLUME_ROUTES,
        Problem(422, TOO_LARGE, "overflow"),
    );
    add(
        "NIfTI-2 2^31 x 2^31 x 2 int16: bytes overflow u64",
        k3("n2_bytes", "img.nii.gz"),
        gz(&nifti2(&[1 << 31, 1 << 31, 2], 4, 16, &[], false)),
        VOLUME_ROUTES,
        Problem(422, TOO_LARGE, "overflow"),
    );
    add(
        "datatype float128",
        k3("dtype_f128", "img.nii.gz"),
        gz(&with(&|b| patch(b, 70, &1536i16.to_le_bytes()))),
        VOLUME_ROUTES,
        Problem(422, UNDECODABLE, "float128"),
    );
    add(
        "datatype 9999",
        k3("dtype_9999", "img.nii.gz"),
        gz(&with(&|b| patch(b, 70, &9999i16.to_le_bytes()))),
        VOLUME_ROUTES,
        Problem(422, UNDECODABLE, "code 9999"),
    );
    add(
        "vox_offset past the end",
        k3("offset_past_end", "img.nii.gz"),
        gz(&with(&|b| patch(b, 108, &100_000f32.to_le_bytes()))),
        VOLUME_ROUTES,
        Problem(422, UNDECODABLE, "truncated"),
    );
    add(
        "vox_offset 1e12",
        k3("offset_huge", "img.nii"),
        with(&|b| patch(b, 108, &1e12f32.to_le_bytes())),
        VOLUME_ROUTES,
        Problem(422, UNDECODABLE, "vox_offset"),
    );
    add(
        "vox_offset NaN",
        k3("offset_nan", "img.nii"),
        with(&|b| patch(b, 108, &f32::NAN.to_le_bytes())),
        VOLUME_ROUTES,
        Problem(422, UNDECODABLE, "vox_offset"),
    );
    add(
        "header-only magic ni1",
        k3("magic_ni1", "img.nii.gz"),
        gz(&with(&|b| patch(b, 344, b"ni1\0"))),
        VOLUME_ROUTES,
        Problem(422, UNDECODABLE, ".hdr/.img"),
    );
    add(
        "PNG named .nii.gz",
        k3("png_named_nii", "img.nii.gz"),
        gray_png(8, 8),
        VOLUME_ROUTES,
        Problem(422, UNDECODABLE, "not a NIfTI"),
    );
    add(
        "empty .nii.gz",
        k3("empty", "img.nii.gz"),
        Vec::new(),
        VOLUME_ROUTES,
        Problem(422, UNDECODABLE, "truncated"),
    );
    add(
        "garbage bytes",
        k3("garbage", "img.nii"),
        garbage(4096, 1),
        VOLUME_ROUTES,
        Problem(422, UNDECODABLE, "not a NIfTI"),
    );
    add(
        "gzip of garbage",
        k3("gz_garbage", "img.nii.gz"),
        gz(&garbage(4096, 2)),
        VOLUME_ROUTES,
        Problem(422, UNDECODABLE, "not a NIfTI"),
    );
    add(
        "gzip magic then garbage",
        k3("gz_magic_garbage", "img.nii.gz"),
        {
            let mut b = vec![0x1f, 0x8b];
            b.extend(garbage(4096, 3));
            b
        },
        VOLUME_ROUTES,
        Problem(422, UNDECODABLE, "gzip"),
    );
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_are_4xx_naming_the_object_and_the_server_keeps_serving() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let table = bad_table();
    for c in &table {
        common::put(dir.path(), &c.key, &c.bytes);
    }
    common::put(dir.path(), "img2d/train/Good/ok.png", &gray_png(16, 16));
    common::put(
        dir.path(),
        "vol3d/train/good/img.nii.gz",
        &gz(&good_nifti([6, 5, 4])),
    );
    let sizes: Vec<u64> = table.iter().map(|c| c.bytes.len() as u64).collect();

    let (app, state) = common::app_on(dir.path());
    let good_2d = fetch(&app, GOOD_2D).await.unwrap();
    let good_3d = fetch(&app, GOOD_3D).await.unwrap();
    assert_eq!(
        good_2d.status,
        200,
        "{}",
        String::from_utf8_lossy(&good_2d.body)
    );
    assert_eq!(
        good_3d.status,
        200,
        "{}",
        String::from_utf8_lossy(&good_3d.body)
    );

    let (base_kib, reset) = reset_peak_rss();
    let mut failures: Vec<String> = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    let mut requests = 0;
    for (c, &size) in table.iter().zip(&sizes) {
        let item = item_url(&c.key);
        // Most bytes any one request read from the store (failures are not cached, so
        // every request reads again).
        let mut read = 0;
        let mut seen = Vec::new();
        for suffix in c.routes {
            let uri = format!("{item}{suffix}");
            requests += 1;
            let read_before = storage_bytes(&state);
            let r = fetch(&app, &uri).await;
            read = read.max(storage_bytes(&state) - read_before);
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!("{}: {uri}: {e}", c.name));
                    seen.push("panic".to_string());
                    continue;
                }
            };
            let status = r.status.as_u16();
            let problem = (r.header("content-type") == "application/problem+json")
                .then(|| serde_json::from_slice::<Value>(&r.body).ok())
                .flatten();
            let code = problem
                .as_ref()
                .and_then(|j| j["code"].as_str())
                .unwrap_or("-")
                .to_string();
            seen.push(if status == 200 {
                "200".into()
            } else {
                format!("{status} {code}")
            });
            let names_object = |j: &Value| {
                j["object"] == c.key.as_str()
                    && j["detail"].as_str().is_some_and(|d| d.contains(&c.key))
            };
            let got = match &problem {
                Some(j) => j.to_string(),
                None => format!("{} ({} bytes)", r.header("content-type"), r.body.len()),
            };
            // Whatever it answers, it answers as openapi.yaml documents.
            for v in common::schema::violations("GET", &uri, &r) {
                failures.push(format!("{}: {v}", c.name));
            }
            let mut fail = |what: String| {
                failures.push(format!("{}: {uri}: {what}; got {status} {got}", c.name))
            };
            match c.expect {
                Expect::Problem(want_status, want_code, mention) => match &problem {
                    Some(j)
                        if status == want_status
                            && code == want_code
                            && j["status"] == want_status
                            && names_object(j) =>
                    {
                        let detail = j["detail"].as_str().unwrap_or("");
                        if !detail.contains(mention) {
                            fail(format!("the detail does not mention '{mention}'"));
                        }
                    }
                    _ => fail(format!(
                        "expected {want_status} {want_code} naming the object"
                    )),
                },
                Expect::Served => {
                    if status != 200 {
                        fail("expected 200".into());
                    }
                }
                Expect::NoServerError => {
                    let ok = status == 200
                        || ((400..500).contains(&status)
                            && problem.as_ref().is_some_and(names_object));
                    if !ok {
                        fail("expected 200 or a 4xx problem naming the object".into());
                    }
                }
            }
            // The server keeps serving, the same bytes as before.
            for (good, want) in [(GOOD_2D, &good_2d), (GOOD_3D, &good_3d)] {
                match fetch(&app, good).await {
                    Ok(g) if g.status == 200 && g.body == want.body => {}
                    Ok(g) => failures.push(format!(
                        "{}: after {uri}: {good} answered {} with other bytes",
                        c.name, g.status
                    )),
                    Err(e) => failures.push(format!("{}: after {uri}: {good}: {e}", c.name)),
                }
            }
        }
        seen.dedup();
        lines.push(format!(
            "  {:<66} -> {:<26} (read at most {read} of {size} bytes)",
            c.name,
            seen.join(" | ")
        ));
        if matches!(c.expect, Expect::Served) && read >= size {
            failures.push(format!(
                "{}: the whole object ({size} bytes) was read; only what the header needs should be",
                c.name
            ));
        }
    }

    // The in-limits bomb is served with its 64^3 zeros and nothing after them.
    let bomb = item_url(
        &table
            .iter()
            .find(|c| c.key.contains("gz_bomb/"))
            .unwrap()
            .key,
    );
    match fetch(&app, &format!("{bomb}/volume")).await {
        Ok(r) if r.status == 200 => {
            let (shape, v) = common::parse_npy(&r.body);
            assert_eq!(shape, [1, 64, 64, 64]);
            assert!(v.iter().all(|&x| x == 0.0));
        }
        other => failures.push(format!("gz_bomb volume: {:?}", other.map(|r| r.status))),
    }

    let peak_kib = status_kib("VmHWM");
    let growth_mb = peak_kib.saturating_sub(base_kib) / 1024;
    for l in &lines {
        eprintln!("{l}");
    }
    let served = table
        .iter()
        .filter(|c| !matches!(c.expect, Expect::Problem(..)))
        .count();
    eprintln!(
        "bad files: {} cases ({requests} requests), all 4xx naming the object except {served} \
         bombs served from the bytes their header needs{}; peak RSS growth {growth_mb} MB{}",
        table.len(),
        if failures.is_empty() {
            String::new()
        } else {
            format!("; {} FAILURES", failures.len())
        },
        if reset {
            ""
        } else {
            " (VmHWM could not be reset: growth over the earlier peak)"
        },
    );
    const BOUND_MB: u64 = 512;
    assert!(
        growth_mb < BOUND_MB,
        "peak RSS grew by {growth_mb} MB serving the bad table (bound {BOUND_MB} MB)"
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Unusual but valid
// ---------------------------------------------------------------------------------------------

/// What a request for an unusual file must answer (always 200).
enum Want {
    /// `.npy` float32 of this shape and exactly these values (NaN where NaN).
    Npy(Vec<usize>, Vec<f32>),
    /// `.npy` float32 of this shape, values within `tol`.
    NpyNear(Vec<usize>, Vec<f32>, f32),
    /// A PNG of this width and height.
    Png(u32, u32),
    /// JSON whose value at each pointer is the given one.
    Json(Vec<(&'static str, Value)>),
    /// Any 200.
    Ok,
}

struct Unusual {
    name: &'static str,
    key: String,
    bytes: Vec<u8>,
    checks: Vec<(&'static str, Want)>,
}

/// The 2D array query for a native-size (`H,W`), unscaled `.npy`.
macro_rules! raw_image {
    ($h:literal, $w:literal) => {
        concat!(
            "/image?format=npy&scale=none&mode=nearest&size=",
            $h,
            ",",
            $w
        )
    };
}

/// Voxels in file order (x fastest) -> the `(1, X, Y, Z)` C-order values the API serves.
fn c_order(d: [usize; 3], file: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(file.len());
    for x in 0..d[0] {
        for y in 0..d[1] {
            for z in 0..d[2] {
                out.push(file[x + d[0] * (y + d[1] * z)]);
            }
        }
    }
    out
}

fn unusual_table() -> Vec<Unusual> {
    use Want::{Json, Npy, NpyNear, Png};
    let k2 = |f: &str| format!("odd2d/train/Odd/{f}");
    let k3 = |subject: &str, f: &str| format!("odd3d/train/{subject}/{f}");
    let mut t = Vec::new();

    // --- 2D ---
    let g16: Vec<u16> = vec![0, 1, 1000, 32768, 60000, 65535];
    t.push(Unusual {
        name: "16-bit gray PNG keeps raw values",
        key: k2("gray16.png"),
        bytes: png(
            3,
            2,
            png::ColorType::Grayscale,
            png::BitDepth::Sixteen,
            &bytes_of!(g16, true),
            None,
        ),
        checks: vec![
            (
                raw_image!(2, 3),
                Npy(vec![1, 2, 3], g16.iter().map(|&v| f32::from(v)).collect()),
            ),
            ("", Json(vec![("/image/bit_depth", json!(16))])),
        ],
    });
    let pal = [10u8, 20, 30, 200, 100, 0, 0, 255, 7, 1, 2, 3];
    let idx = [0u8, 1, 2, 3, 1, 0];
    let expand = |c: usize| idx.iter().map(move |&i| f32::from(pal[3 * i as usize + c]));
    t.push(Unusual {
        name: "palette PNG: indices, or expanded to RGB",
        key: k2("palette.png"),
        bytes: png(
            3,
            2,
            png::ColorType::Indexed,
            png::BitDepth::Eight,
            &idx,
            Some((&pal, None)),
        ),
        checks: vec![
            (
                raw_image!(2, 3),
                Npy(vec![1, 2, 3], idx.iter().map(|&i| f32::from(i)).collect()),
            ),
            (
                "/image?format=npy&scale=none&mode=nearest&size=2,3&palette=index",
                Npy(vec![1, 2, 3], idx.iter().map(|&i| f32::from(i)).collect()),
            ),
            (
                "/image?format=npy&scale=none&mode=nearest&size=2,3&palette=expand",
                Npy(vec![3, 2, 3], (0..3).flat_map(expand).collect::<Vec<f32>>()),
            ),
            ("/image?palette=expand", Png(64, 64)),
            ("", Json(vec![("/image/color_type", json!("palette"))])),
        ],
    });
    let trns = [255u8, 0, 128];
    t.push(Unusual {
        name: "4-bit palette PNG with tRNS, expanded to RGBA",
        key: k2("palette_trns.png"),
        bytes: png(
            3,
            2,
            png::ColorType::Indexed,
            png::BitDepth::Four,
            // Indices 0,1,2 / 3,1,0 packed two per byte, rows padded to a byte.
            &[0x01, 0x20, 0x31, 0x00],
            Some((&pal, Some(&trns))),
        ),
        checks: vec![
            (
                raw_image!(2, 3),
                Npy(vec![1, 2, 3], idx.iter().map(|&i| f32::from(i)).collect()),
            ),
            (
                "/image?format=npy&scale=none&mode=nearest&size=2,3&palette=expand",
                Npy(
                    vec![4, 2, 3],
                    (0..3)
                        .flat_map(expand)
                        .chain(
                            idx.iter()
                                .map(|&i| f32::from(trns.get(i as usize).copied().unwrap_or(255))),
                        )
                        .collect(),
                ),
            ),
        ],
    });
    t.push(Unusual {
        name: "gray+alpha PNG: 2 channels",
        key: k2("gray_alpha.png"),
        bytes: png(
            2,
            2,
            png::ColorType::GrayscaleAlpha,
            png::BitDepth::Eight,
            &[10, 255, 20, 128, 30, 0, 40, 7],
            None,
        ),
        checks: vec![
            (
                raw_image!(2, 2),
                Npy(
                    vec![2, 2, 2],
                    vec![10.0, 20.0, 30.0, 40.0, 255.0, 128.0, 0.0, 7.0],
                ),
            ),
            (
                "/image?format=npy&scale=none&mode=nearest&size=2,2&channels=1",
                Npy(vec![1, 2, 2], vec![10.0, 20.0, 30.0, 40.0]),
            ),
        ],
    });
    // 10 wide: each row is 2 bytes, the last 6 bits padding.
    let bits: Vec<u8> = (0..20).map(|i| u8::from(i % 3 == 0)).collect();
    let packed: Vec<u8> = bits
        .chunks(10)
        .flat_map(|row| {
            let mut b = [0u8; 2];
            for (x, &v) in row.iter().enumerate() {
                b[x / 8] |= v << (7 - x % 8);
            }
            b
        })
        .collect();
    t.push(Unusual {
        name: "1-bit gray PNG, width 10: 0/1",
        key: k2("onebit.png"),
        bytes: png(
            10,
            2,
            png::ColorType::Grayscale,
            png::BitDepth::One,
            &packed,
            None,
        ),
        checks: vec![(
            raw_image!(2, 10),
            Npy(vec![1, 2, 10], bits.iter().map(|&b| f32::from(b)).collect()),
        )],
    });
    t.push(Unusual {
        name: "2-bit gray PNG: scaled by 85",
        key: k2("twobit.png"),
        bytes: png(
            4,
            1,
            png::ColorType::Grayscale,
            png::BitDepth::Two,
            &[0b00_01_10_11],
            None,
        ),
        checks: vec![(
            raw_image!(1, 4),
            Npy(vec![1, 1, 4], vec![0.0, 85.0, 170.0, 255.0]),
        )],
    });
    let rgb16: Vec<u16> = vec![0x1234, 0xFF00, 0x00FF, 0xABCD, 0x0100, 0xFFFF];
    t.push(Unusual {
        name: "16-bit RGB PNG: high byte (Pillow)",
        key: k2("rgb16.png"),
        bytes: png(
            2,
            1,
            png::ColorType::Rgb,
            png::BitDepth::Sixteen,
            &bytes_of!(rgb16, true),
            None,
        ),
        checks: vec![(
            raw_image!(1, 2),
            // Interleaved (x0: r g b, x1: r g b) -> planar (C, 1, 2).
            Npy(
                vec![3, 1, 2],
                vec![0x12u8, 0xAB, 0xFF, 0x01, 0x00, 0xFF]
                    .into_iter()
                    .map(f32::from)
                    .collect::<Vec<f32>>(),
            ),
        )],
    });
    // IDAT split into many chunks, one of them empty, with an unknown ancillary chunk first.
    let split = {
        let src = gray_png(5, 3);
        let mut chunks = vec![ihdr(5, 3, 8, 0), chunk(b"teSt", b"ignored")];
        let z: Vec<u8> = png_chunks(&src)
            .into_iter()
            .filter(|(k, _)| k == b"IDAT")
            .flat_map(|(_, d)| d)
            .collect();
        chunks.push(chunk(b"IDAT", &[]));
        for part in z.chunks(3) {
            chunks.push(chunk(b"IDAT", part));
        }
        chunks.push(chunk(b"IEND", &[]));
        png_of(&chunks)
    };
    t.push(Unusual {
        name: "PNG with IDAT split in 3-byte chunks, an empty IDAT, an unknown chunk",
        key: k2("split_idat.png"),
        bytes: split,
        checks: vec![(
            raw_image!(3, 5),
            Npy(
                vec![1, 3, 5],
                (0..15u32).map(|i| (i * 7 % 251) as f32).collect(),
            ),
        )],
    });
    let (jpeg, jpx) = jpeg_gray(16, 8);
    t.push(Unusual {
        name: "grayscale JPEG",
        key: k2("gray.jpg"),
        bytes: jpeg,
        checks: vec![(
            raw_image!(8, 16),
            NpyNear(
                vec![1, 8, 16],
                jpx.iter().map(|&v| f32::from(v)).collect(),
                3.0,
            ),
        )],
    });

    // --- 3D ---
    let d = [4usize, 3, 2];
    let di = d.map(|v| v as i64);
    let raw = ramp_i16(di);
    let raw_f: Vec<f32> = raw.iter().map(|&v| f32::from(v)).collect();
    let scaled: Vec<f32> = raw
        .iter()
        .map(|&v| (f64::from(v) * 2.0 - 1.0) as f32)
        .collect();
    let vol = |values: &[f32]| Npy(vec![1, d[0], d[1], d[2]], c_order(d, values));
    let meta = |pairs: Vec<(&'static str, Value)>| ("", Json(pairs));

    let mut be = nifti1(&di, 4, 16, &bytes_of!(raw, true), true);
    patch(&mut be, 112, &2f32.to_be_bytes());
    patch(&mut be, 116, &(-1f32).to_be_bytes());
    t.push(Unusual {
        name: "big-endian NIfTI-1 int16, scl_slope 2, scl_inter -1",
        key: k3("be_n1", "img.nii.gz"),
        bytes: gz(&be),
        checks: vec![
            ("/volume", vol(&scaled)),
            (
                "/slice?axis=2&index=1&format=npy",
                Npy(
                    vec![4, 3],
                    (0..4)
                        .flat_map(|x| (0..3).map(move |y| (x, y)))
                        .map(|(x, y)| scaled[x + 4 * (y + 3)])
                        .collect(),
                ),
            ),
            ("/slice", Png(4, 3)),
            meta(vec![
                ("/volume/byte_order", json!("big")),
                ("/volume/format", json!("nifti1")),
                ("/volume/scl_slope", json!(2.0)),
                ("/volume/intensity/min", json!(-601.0)),
            ]),
        ],
    });
    let f64s: Vec<f64> = raw.iter().map(|&v| f64::from(v) / 4.0).collect();
    t.push(Unusual {
        name: "big-endian NIfTI-1 float64, uncompressed .nii",
        key: k3("be_f64", "img.nii"),
        bytes: nifti1(&di, 64, 64, &bytes_of!(f64s, true), true),
        checks: vec![(
            "/volume",
            vol(&f64s.iter().map(|&v| v as f32).collect::<Vec<_>>()),
        )],
    });
    for (subject, big) in [("n2_le", false), ("n2_be", true)] {
        t.push(Unusual {
            name: if big {
                "NIfTI-2 big-endian int16"
            } else {
                "NIfTI-2 little-endian int16"
            },
            key: k3(subject, "img.nii.gz"),
            bytes: gz(&nifti2(&di, 4, 16, &bytes_of!(raw, big), big)),
            checks: vec![
                ("/volume", vol(&raw_f)),
                ("/slice", Png(4, 3)),
                meta(vec![
                    ("/volume/format", json!("nifti2")),
                    (
                        "/volume/byte_order",
                        json!(if big { "big" } else { "little" }),
                    ),
                ]),
            ],
        });
    }
    let f32s: Vec<f32> = raw_f.iter().map(|&v| v * 0.5).collect();
    t.push(Unusual {
        name: "NIfTI-2 big-endian float32",
        key: k3("n2_be_f32", "img.nii"),
        bytes: nifti2(&di, 16, 32, &bytes_of!(f32s, true), true),
        checks: vec![("/volume", vol(&f32s))],
    });
    let mut nan = f32s.clone();
    for i in [0, 5, 23] {
        nan[i] = f32::NAN;
    }
    let finite = |v: &[f32]| {
        let f = v.iter().copied().filter(|x| x.is_finite());
        (
            f.clone().fold(f32::INFINITY, f32::min),
            f.fold(f32::NEG_INFINITY, f32::max),
        )
    };
    let (lo, hi) = finite(&nan);
    t.push(Unusual {
        name: "float32 volume with NaN voxels",
        key: k3("nan_voxels", "img.nii.gz"),
        bytes: gz(&nifti1(&di, 16, 32, &bytes_of!(nan, false), false)),
        checks: vec![
            ("/volume", vol(&nan)),
            ("/volume?format=npy&a_min=-200&a_max=200", {
                let s: Vec<f32> = nan
                    .iter()
                    .map(|&v| ((f64::from(v) + 200.0) / 400.0) as f32)
                    .collect();
                NpyNear(vec![1, d[0], d[1], d[2]], c_order(d, &s), 1e-6)
            }),
            ("/slice", Png(4, 3)),
            ("/slice?part=image&preset=mri", Png(4, 3)),
            (
                "/slice?axis=2&index=0&format=npy",
                Npy(
                    vec![4, 3],
                    (0..4)
                        .flat_map(|x| (0..3).map(move |y| (x, y)))
                        .map(|(x, y)| nan[x + 4 * y])
                        .collect(),
                ),
            ),
            ("/volume.nii.gz?size=2,2,2", Want::Ok),
            meta(vec![
                ("/volume/intensity/min", json!(lo)),
                ("/volume/intensity/max", json!(hi)),
            ]),
        ],
    });
    let mut nan_slope = nifti1(&di, 4, 16, &bytes_of!(raw, false), false);
    patch(&mut nan_slope, 112, &f32::NAN.to_le_bytes());
    patch(&mut nan_slope, 116, &5f32.to_le_bytes());
    t.push(Unusual {
        name: "NaN scl_slope (and scl_inter 5): unscaled, as nibabel",
        key: k3("nan_slope", "img.nii.gz"),
        bytes: gz(&nan_slope),
        checks: vec![
            ("/volume", vol(&raw_f)),
            meta(vec![
                ("/volume/scl_slope", json!(1.0)),
                ("/volume/scl_inter", json!(0.0)),
            ]),
        ],
    });
    let mut zero_slope = nifti1(&di, 4, 16, &bytes_of!(raw, false), false);
    patch(&mut zero_slope, 112, &0f32.to_le_bytes());
    patch(&mut zero_slope, 116, &5f32.to_le_bytes());
    t.push(Unusual {
        name: "zero scl_slope: unscaled",
        key: k3("zero_slope", "img.nii.gz"),
        bytes: gz(&zero_slope),
        checks: vec![("/volume", vol(&raw_f))],
    });
    // A 48-byte extension between header and voxels; vox_offset 400.
    let ext = {
        let plain = nifti1(&di, 4, 16, &bytes_of!(raw, false), false);
        let mut b = plain[..348].to_vec();
        b.extend_from_slice(&[1, 0, 0, 0]);
        b.extend_from_slice(&48i32.to_le_bytes());
        b.extend_from_slice(&6i32.to_le_bytes());
        b.extend_from_slice(&[b'x'; 40]);
        patch(&mut b, 108, &400f32.to_le_bytes());
        b.extend_from_slice(&plain[352..]);
        b
    };
    t.push(Unusual {
        name: "NIfTI-1 with a header extension (vox_offset 400)",
        key: k3("extension", "img.nii.gz"),
        bytes: gz(&ext),
        checks: vec![("/volume", vol(&raw_f))],
    });
    let plain = good_nifti(di);
    t.push(Unusual {
        name: "multi-member gzip (header and voxels in separate members)",
        key: k3("multi_member", "img.nii.gz"),
        bytes: [gz(&plain[..200]), gz(&plain[200..300]), gz(&plain[300..])].concat(),
        checks: vec![("/volume", vol(&raw_f))],
    });
    let mut zeros_after = good_nifti(di);
    for i in 4..8 {
        patch(&mut zeros_after, 40 + 2 * i, &0i16.to_le_bytes());
    }
    t.push(Unusual {
        name: "dim[4..7] zero past dim[0]=3 (ignored, as nibabel)",
        key: k3("unused_dims_zero", "img.nii.gz"),
        bytes: gz(&zeros_after),
        checks: vec![("/volume", vol(&raw_f))],
    });
    let five = {
        let mut b = nifti1(&[4, 3, 2, 1, 1], 4, 16, &bytes_of!(raw, false), false);
        patch(&mut b, 40, &5i16.to_le_bytes());
        b
    };
    t.push(Unusual {
        name: "dim[0]=5 with trailing dims of 1",
        key: k3("trailing_ones", "img.nii.gz"),
        bytes: gz(&five),
        checks: vec![("/volume", vol(&raw_f))],
    });
    let ch2: Vec<i16> = raw
        .iter()
        .chain(
            raw.iter()
                .map(|v| v.wrapping_neg())
                .collect::<Vec<_>>()
                .iter(),
        )
        .copied()
        .collect();
    t.push(Unusual {
        name: "4D, 2 channels: channels first",
        key: k3("two_channels", "img.nii.gz"),
        bytes: gz(&nifti1(&[4, 3, 2, 2], 4, 16, &bytes_of!(ch2, false), false)),
        checks: vec![
            ("/volume", {
                let mut v = c_order(d, &raw_f);
                v.extend(c_order(d, &raw_f).iter().map(|&x| -x));
                Npy(vec![2, d[0], d[1], d[2]], v)
            }),
            ("/slice?channel=1", Png(4, 3)),
            meta(vec![("/volume/channels", json!(2))]),
        ],
    });
    t
}

fn same(a: f32, b: f32, tol: f32) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= tol
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusual_but_valid_files_are_served_with_their_values() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let table = unusual_table();
    for c in &table {
        common::put(dir.path(), &c.key, &c.bytes);
    }
    let (app, _) = common::app_on(dir.path());
    let mut failures: Vec<String> = Vec::new();
    let mut requests = 0;
    for c in &table {
        let item = item_url(&c.key);
        for (suffix, want) in &c.checks {
            requests += 1;
            let uri = format!("{item}{suffix}");
            let r = match fetch(&app, &uri).await {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!("{}: {uri}: {e}", c.name));
                    continue;
                }
            };
            if r.status != 200 {
                failures.push(format!(
                    "{}: {uri}: {} {}",
                    c.name,
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ));
                continue;
            }
            for v in common::schema::violations("GET", &uri, &r) {
                failures.push(format!("{}: {v}", c.name));
            }
            let problem = match want {
                Want::Npy(shape, values) | Want::NpyNear(shape, values, _) => {
                    let tol = match want {
                        Want::NpyNear(_, _, t) => *t,
                        _ => 0.0,
                    };
                    let (got_shape, got) = common::parse_npy(&r.body);
                    if got_shape != *shape {
                        Some(format!("shape {got_shape:?}, want {shape:?}"))
                    } else {
                        got.iter()
                            .zip(values)
                            .position(|(&g, &w)| !same(g, w, tol))
                            .map(|i| {
                                format!("value {i}: {} != {} (got {got:?})", got[i], values[i])
                            })
                    }
                }
                Want::Png(w, h) => {
                    let d = png::Decoder::new(std::io::Cursor::new(&r.body[..]));
                    match d.read_info() {
                        Ok(rd) if (rd.info().width, rd.info().height) == (*w, *h) => None,
                        Ok(rd) => Some(format!(
                            "PNG {}x{}, want {w}x{h}",
                            rd.info().width,
                            rd.info().height
                        )),
                        Err(e) => Some(format!("not a PNG: {e}")),
                    }
                }
                Want::Json(pairs) => {
                    let j = r.json();
                    pairs
                        .iter()
                        .find(|(p, v)| j.pointer(p) != Some(v))
                        .map(|(p, v)| format!("{p} is {:?}, want {v}", j.pointer(p)))
                }
                Want::Ok => None,
            };
            if let Some(p) = problem {
                failures.push(format!("{}: {uri}: {p}", c.name));
            }
        }
        eprintln!("  {:<72} -> 200 x {}", c.name, c.checks.len());
    }
    eprintln!(
        "unusual but valid: {} cases ({requests} requests), {}",
        table.len(),
        if failures.is_empty() {
            "all 200 with the values written".to_string()
        } else {
            format!("{} failures", failures.len())
        }
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn corpus_builders_are_what_they_claim() {
    // The bombs are what they claim (on fewer copies of a smaller block): whole streams, CRC-32,
    // ISIZE and Adler-32 included.
    let zeros = deflate_zeros(1 << 16);
    let header = nifti1(&BOMB_DIMS, 2, 8, &[], false);
    let bomb = gzip_bomb(&header, &zeros, 1 << 16, 5);
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bomb[..]), &mut out).unwrap();
    assert_eq!(out.len(), header.len() + 5 * (1 << 16));
    assert_eq!(&out[..header.len()], &header[..]);
    assert!(out[header.len()..].iter().all(|&b| b == 0));
    let mut out = Vec::new();
    // 2 x 65536 zeros: past the Adler-32 modulus 65521.
    let z = zlib_zeros(&zeros, 1 << 16, 2);
    std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(&z[..]), &mut out).unwrap();
    assert_eq!(out.len(), 2 << 16);
    assert!(out.iter().all(|&b| b == 0));
    // The hand-written NIfTI files decode with the library's own reader.
    let v = medserve::imaging::nifti::decode(
        &good_nifti([4, 3, 2]),
        &medserve::imaging::nifti::VolumeLimits {
            max_voxels: 1 << 20,
            max_bytes: 1 << 20,
        },
    )
    .unwrap();
    assert_eq!(v.header.spatial, [4, 3, 2]);
}
