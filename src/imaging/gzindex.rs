//! A seek index for a gzip stream: checkpoints where inflating can restart (the position in
//! the compressed stream, the bits of its byte already used, and the 32 KiB of output before
//! it), recorded while the stream is inflated once. With it, a byte range of the inflated data
//! is read by inflating from the nearest checkpoint only, and a whole stream is inflated from
//! several checkpoints at once, one per core.
//!
//! The file format is indexed_gzip's (`GZIDX` version 1), which indexed_gzip (Python,
//! `IndexedGzipFile.import_index`) and rapidgzip read; for the same spacing the index written
//! here is byte-identical to the one indexed_gzip builds (tests/gzindex_compat.py).
//!
//! | bytes | field (little-endian) |
//! | --- | --- |
//! | 0..5 | `GZIDX` |
//! | 5 | version, 1 |
//! | 6 | flags, 0 |
//! | 7..15 | compressed size (u64) |
//! | 15..23 | uncompressed size (u64) |
//! | 23..27 | spacing (u32) |
//! | 27..31 | window size, 32768 (u32) |
//! | 31..35 | number of points (u32) |
//! | 18 per point | compressed offset (u64), uncompressed offset (u64), bits (u8), has window (u8) |
//! | 32768 per point with a window | the window, in point order |
//!
//! The first point is the start of the deflate data right after the gzip header (no window),
//! the last the end of the stream.
//! zlib's `Z_BLOCK`, `data_type`, `inflatePrime` and `inflateSetDictionary` do the work
//! (through `libz-rs-sys`, zlib's C API in Rust; flate2 does not expose them). Only
//! single-member streams are indexed. Pure: bytes in, bytes out.

use std::ffi::c_int;
use std::mem::MaybeUninit;

use libz_rs_sys as z;

/// Bytes of output a checkpoint keeps (deflate's largest distance).
pub const WINDOW: usize = 32 << 10;
const MAGIC: &[u8; 5] = b"GZIDX";
const FIXED: usize = 35;
const POINT: usize = 18;

/// Why a stream could not be indexed or read through its index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("corrupt gzip stream: {0}")]
    Corrupt(String),
    #[error("the gzip stream inflates to {got} bytes, not the {want} expected")]
    Size { got: u64, want: u64 },
    #[error("not indexable: {0}")]
    Unsupported(String),
    #[error("bad index: {0}")]
    BadIndex(String),
}

/// One place inflating can restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    /// Offset in the compressed stream of the first byte not fully used.
    pub cmp: u64,
    /// Offset in the inflated data.
    pub unc: u64,
    /// Bits of the byte before `cmp` that belong to the next block (0..=7).
    pub bits: u8,
    /// The `WINDOW` bytes of output before `unc` (zero-padded at the front near the start);
    /// `None` for the first point.
    pub window: Option<Box<[u8]>>,
}

/// The checkpoints of one gzip stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GzIndex {
    pub compressed_size: u64,
    pub uncompressed_size: u64,
    /// Least output between two checkpoints.
    pub spacing: u32,
    pub points: Vec<Point>,
}

/// A zlib inflate stream, ended on drop.
struct Inflater(Box<z::z_stream>);

impl Inflater {
    /// `window_bits` 31: gzip with header and trailer checks; -15: raw deflate.
    fn new(window_bits: c_int) -> Result<Inflater, IndexError> {
        // SAFETY: an all-zero z_stream is the documented initial state (no custom allocator,
        // no input yet); `inflateInit2_` fills in the rest.
        let mut s: Box<z::z_stream> = Box::new(unsafe { MaybeUninit::zeroed().assume_init() });
        let ret = unsafe {
            z::inflateInit2_(
                &mut *s,
                window_bits,
                z::zlibVersion(),
                std::mem::size_of::<z::z_stream>() as c_int,
            )
        };
        if ret != z::Z_OK {
            return Err(IndexError::Corrupt(format!("inflateInit2 failed ({ret})")));
        }
        Ok(Inflater(s))
    }

    /// One `inflate` call over `input` into `out`; returns (status, consumed, produced).
    fn step(&mut self, input: &[u8], out: &mut [u8], flush: c_int) -> (c_int, usize, usize) {
        let avail_in = input.len().min(u32::MAX as usize) as u32;
        let avail_out = out.len().min(u32::MAX as usize) as u32;
        self.0.next_in = input.as_ptr();
        self.0.avail_in = avail_in;
        self.0.next_out = out.as_mut_ptr();
        self.0.avail_out = avail_out;
        // SAFETY: next_in/avail_in and next_out/avail_out describe live slices for this call.
        let ret = unsafe { z::inflate(&mut *self.0, flush) };
        let consumed = (avail_in - self.0.avail_in) as usize;
        let produced = (avail_out - self.0.avail_out) as usize;
        self.0.next_in = std::ptr::null();
        self.0.avail_in = 0;
        self.0.next_out = std::ptr::null_mut();
        self.0.avail_out = 0;
        (ret, consumed, produced)
    }

    fn message(&self, ret: c_int) -> String {
        if self.0.msg.is_null() {
            format!("zlib error {ret}")
        } else {
            // SAFETY: zlib's `msg` is a NUL-terminated static string when set.
            unsafe { std::ffi::CStr::from_ptr(self.0.msg) }
                .to_string_lossy()
                .into_owned()
        }
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: initialised by inflateInit2_ in `new`.
        unsafe { z::inflateEnd(&mut *self.0) };
    }
}

/// The window before `unc` in `out` (which holds the output from offset 0).
fn window_at(out: &[u8], unc: usize) -> Box<[u8]> {
    let mut w = vec![0u8; WINDOW];
    let have = unc.min(WINDOW);
    w[WINDOW - have..].copy_from_slice(&out[unc - have..unc]);
    w.into_boxed_slice()
}

/// Inflates the single-member gzip stream `gz` into `out`, which it must fill exactly,
/// recording a checkpoint at the first block boundary at least `spacing` bytes of output
/// after the previous one. The gzip trailer (CRC-32, length) is checked.
pub fn inflate_indexed(gz: &[u8], out: &mut [u8], spacing: u32) -> Result<GzIndex, IndexError> {
    if spacing == 0 {
        return Err(IndexError::Unsupported("spacing 0".into()));
    }
    let mut s = Inflater::new(31)?;
    let (mut pos_in, mut pos_out) = (0usize, 0usize);
    let mut points: Vec<Point> = Vec::new();
    loop {
        // Stopping at every block boundary (Z_BLOCK) is only needed once the next checkpoint
        // is due; before that, inflate straight up to where it is due.
        let due = points
            .last()
            .map_or(0, |p: &Point| p.unc as usize + spacing as usize)
            .min(out.len());
        let (ret, consumed, produced) = if pos_out < due && !points.is_empty() {
            s.step(&gz[pos_in..], &mut out[pos_out..due], z::Z_NO_FLUSH)
        } else {
            s.step(&gz[pos_in..], &mut out[pos_out..], z::Z_BLOCK)
        };
        let bounded = pos_out < due && !points.is_empty();
        pos_in += consumed;
        pos_out += produced;
        match ret {
            z::Z_STREAM_END => break,
            z::Z_OK => {}
            // Stopped at `due` with more to come: go on.
            z::Z_BUF_ERROR if bounded && pos_out == due && due < out.len() => continue,
            z::Z_BUF_ERROR if pos_out == out.len() => {
                return Err(IndexError::Size {
                    got: pos_out as u64 + 1,
                    want: out.len() as u64,
                });
            }
            z::Z_BUF_ERROR => {
                return Err(IndexError::Corrupt(
                    "the stream ends before its end marker".into(),
                ));
            }
            _ => return Err(IndexError::Corrupt(s.message(ret))),
        }
        if consumed == 0 && produced == 0 && pos_in == gz.len() {
            return Err(IndexError::Corrupt(
                "the stream ends before its end marker".into(),
            ));
        }
        if bounded {
            continue;
        }
        let dt = s.0.data_type;
        if points.is_empty() {
            // The first return is right after the gzip header, before the first block.
            points.push(Point {
                cmp: pos_in as u64,
                unc: 0,
                bits: 0,
                window: None,
            });
            continue;
        }
        let at_boundary = dt & 128 != 0 && dt & 64 == 0;
        let last = points.last().map_or(0, |p| p.unc);
        if at_boundary && pos_out as u64 - last >= u64::from(spacing) {
            points.push(Point {
                cmp: pos_in as u64,
                unc: pos_out as u64,
                bits: (dt & 7) as u8,
                window: Some(window_at(out, pos_out)),
            });
        }
    }
    if pos_out != out.len() {
        return Err(IndexError::Size {
            got: pos_out as u64,
            want: out.len() as u64,
        });
    }
    if pos_in != gz.len() {
        return Err(IndexError::Unsupported(
            "bytes follow the first gzip member (several members or trailing data)".into(),
        ));
    }
    // indexed_gzip ends its index with a point at the end of the stream; so do we, so that
    // both write the same file.
    if points.last().is_some_and(|p| p.unc < pos_out as u64) {
        points.push(Point {
            cmp: pos_in as u64,
            unc: pos_out as u64,
            bits: 0,
            window: Some(window_at(out, pos_out)),
        });
    }
    Ok(GzIndex {
        compressed_size: gz.len() as u64,
        uncompressed_size: pos_out as u64,
        spacing,
        points,
    })
}

impl GzIndex {
    /// The last point at or before inflated offset `at`.
    pub fn point_before(&self, at: u64) -> &Point {
        let i = self.points.partition_point(|p| p.unc <= at);
        &self.points[i.saturating_sub(1)]
    }

    /// Bytes held in memory (mostly windows).
    pub fn byte_len(&self) -> usize {
        self.points.len() * (std::mem::size_of::<Point>())
            + self.points.iter().filter(|p| p.window.is_some()).count() * WINDOW
    }

    /// Where the compressed bytes needed from `p` start: the byte holding its first bits.
    pub fn input_start(p: &Point) -> u64 {
        p.cmp - u64::from(p.bits > 0)
    }

    /// Fills `out` with the inflated bytes from offset `from`, inflating from point `p` (at
    /// or before `from`), given the compressed bytes `input` starting at
    /// [`input_start(p)`](Self::input_start). Bytes between the point and `from` are
    /// inflated and dropped. No checksum is checked here (raw deflate has none); whole
    /// streams are checked by [`inflate_parallel`].
    pub fn read_from(p: &Point, input: &[u8], from: u64, out: &mut [u8]) -> Result<(), IndexError> {
        if from < p.unc {
            return Err(IndexError::BadIndex("the point is after the offset".into()));
        }
        let mut s = Inflater::new(-15)?;
        let mut input = input;
        if p.bits > 0 {
            let Some((&first, rest)) = input.split_first() else {
                return Err(IndexError::BadIndex("no input at the point".into()));
            };
            // SAFETY: an initialised raw inflate stream.
            let ret = unsafe {
                z::inflatePrime(
                    &mut *s.0,
                    c_int::from(p.bits),
                    c_int::from(first >> (8 - p.bits)),
                )
            };
            if ret != z::Z_OK {
                return Err(IndexError::BadIndex(format!("inflatePrime failed ({ret})")));
            }
            input = rest;
        }
        if let Some(w) = &p.window {
            // SAFETY: `w` is a live buffer of `w.len()` bytes.
            let ret = unsafe { z::inflateSetDictionary(&mut *s.0, w.as_ptr(), w.len() as u32) };
            if ret != z::Z_OK {
                return Err(IndexError::BadIndex(format!(
                    "inflateSetDictionary failed ({ret})"
                )));
            }
        }
        let mut skip = from - p.unc;
        let mut scratch = vec![
            0u8;
            if skip > 0 {
                (64 << 10).min(skip as usize)
            } else {
                0
            }
        ];
        let mut filled = 0usize;
        let mut pos = 0usize;
        while filled < out.len() {
            let target: &mut [u8] = if skip > 0 {
                let n = scratch.len().min(skip as usize);
                &mut scratch[..n]
            } else {
                &mut out[filled..]
            };
            let (ret, consumed, produced) = s.step(&input[pos..], target, z::Z_NO_FLUSH);
            pos += consumed;
            if skip > 0 {
                skip -= produced as u64;
            } else {
                filled += produced;
            }
            match ret {
                z::Z_OK => {}
                z::Z_STREAM_END if filled == out.len() && skip == 0 => break,
                z::Z_STREAM_END => {
                    return Err(IndexError::Size {
                        got: from + filled as u64,
                        want: from + out.len() as u64,
                    });
                }
                z::Z_BUF_ERROR if consumed == 0 && produced == 0 => {
                    return Err(IndexError::Corrupt(
                        "the compressed bytes end before the range does".into(),
                    ));
                }
                z::Z_BUF_ERROR => {}
                _ => return Err(IndexError::Corrupt(s.message(ret))),
            }
        }
        Ok(())
    }

    /// The index as indexed_gzip's `GZIDX` v1 file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let windows = self.points.iter().filter(|p| p.window.is_some()).count();
        let mut b = Vec::with_capacity(FIXED + self.points.len() * POINT + windows * WINDOW);
        b.extend_from_slice(MAGIC);
        b.push(1);
        b.push(0);
        b.extend_from_slice(&self.compressed_size.to_le_bytes());
        b.extend_from_slice(&self.uncompressed_size.to_le_bytes());
        b.extend_from_slice(&self.spacing.to_le_bytes());
        b.extend_from_slice(&(WINDOW as u32).to_le_bytes());
        b.extend_from_slice(&(self.points.len() as u32).to_le_bytes());
        for p in &self.points {
            b.extend_from_slice(&p.cmp.to_le_bytes());
            b.extend_from_slice(&p.unc.to_le_bytes());
            b.push(p.bits);
            b.push(u8::from(p.window.is_some()));
        }
        for w in self.points.iter().filter_map(|p| p.window.as_deref()) {
            b.extend_from_slice(w);
        }
        b
    }

    /// Reads a `GZIDX` v1 file, checking every length and offset before use.
    pub fn from_bytes(b: &[u8]) -> Result<GzIndex, IndexError> {
        let bad = |m: &str| IndexError::BadIndex(m.to_string());
        if b.len() < FIXED || &b[..5] != MAGIC {
            return Err(bad("not a GZIDX file"));
        }
        if b[5] != 1 || b[6] != 0 {
            return Err(bad("unsupported GZIDX version or flags"));
        }
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let (compressed_size, uncompressed_size) = (u64_at(7), u64_at(15));
        let (spacing, window, n) = (u32_at(23), u32_at(27), u32_at(31) as usize);
        if window as usize != WINDOW {
            return Err(bad("window size is not 32768"));
        }
        let table_end = n
            .checked_mul(POINT)
            .and_then(|t| t.checked_add(FIXED))
            .filter(|&e| e <= b.len())
            .ok_or_else(|| bad("truncated point table"))?;
        let mut points = Vec::with_capacity(n);
        let mut wpos = table_end;
        for i in 0..n {
            let o = FIXED + i * POINT;
            let (cmp, unc, bits, has) = (u64_at(o), u64_at(o + 8), b[o + 16], b[o + 17]);
            if bits > 7 || has > 1 || cmp > compressed_size || unc > uncompressed_size {
                return Err(bad("a point is out of range"));
            }
            if points
                .last()
                .is_some_and(|q: &Point| q.unc > unc || q.cmp > cmp)
            {
                return Err(bad("points are out of order"));
            }
            if bits > 0 && cmp == 0 {
                return Err(bad("a point's bits are before the stream"));
            }
            let window = if has == 1 {
                let w = b
                    .get(wpos..wpos + WINDOW)
                    .ok_or_else(|| bad("truncated windows"))?;
                wpos += WINDOW;
                Some(w.to_vec().into_boxed_slice())
            } else {
                None
            };
            points.push(Point {
                cmp,
                unc,
                bits,
                window,
            });
        }
        if wpos != b.len() {
            return Err(bad("bytes after the last window"));
        }
        if points.first().is_none_or(|p| p.unc != 0) {
            return Err(bad("the first point is not at the start"));
        }
        Ok(GzIndex {
            compressed_size,
            uncompressed_size,
            spacing,
            points,
        })
    }
}

/// Inflates the whole of `gz` (a single-member gzip stream) into `out` from the index's
/// points, in `threads` contiguous parts at once, then checks the gzip trailer: the CRC-32 of
/// the parts, combined, and the length.
pub fn inflate_parallel(
    gz: &[u8],
    index: &GzIndex,
    out: &mut [u8],
    threads: usize,
) -> Result<(), IndexError> {
    if index.compressed_size != gz.len() as u64 || index.uncompressed_size != out.len() as u64 {
        return Err(IndexError::BadIndex(
            "the index is for another stream".into(),
        ));
    }
    if gz.len() < 18 {
        return Err(IndexError::Corrupt("too short for gzip".into()));
    }
    // Parts start at points, balanced by output bytes.
    let total = out.len() as u64;
    let threads = threads.clamp(1, index.points.len());
    let mut starts: Vec<&Point> = Vec::with_capacity(threads);
    for t in 0..threads {
        let target = total * t as u64 / threads as u64;
        let p = index.point_before(target);
        if starts.last().is_none_or(|q| q.unc < p.unc) || starts.is_empty() {
            starts.push(p);
        }
    }
    let mut bounds: Vec<u64> = starts.iter().map(|p| p.unc).collect();
    bounds.push(total);
    let mut parts: Vec<&mut [u8]> = Vec::with_capacity(starts.len());
    let mut rest = out;
    for w in bounds.windows(2) {
        let (a, b) = rest.split_at_mut((w[1] - w[0]) as usize);
        parts.push(a);
        rest = b;
    }
    let results: Vec<Result<crc32fast::Hasher, IndexError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = starts
            .iter()
            .zip(parts)
            .map(|(p, part)| {
                scope.spawn(move || {
                    let input = &gz[GzIndex::input_start(p) as usize..];
                    GzIndex::read_from(p, input, p.unc, part)?;
                    let mut h = crc32fast::Hasher::new();
                    h.update(part);
                    Ok(h)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(IndexError::Corrupt("an inflate thread panicked".into()))
                })
            })
            .collect()
    });
    let mut crc = crc32fast::Hasher::new();
    for r in results {
        crc.combine(&r?);
    }
    let t = gz.len() - 8;
    let want_crc = u32::from_le_bytes(gz[t..t + 4].try_into().expect("4 bytes"));
    let want_len = u32::from_le_bytes(gz[t + 4..].try_into().expect("4 bytes"));
    if crc.finalize() != want_crc || want_len != total as u32 {
        return Err(IndexError::Corrupt(
            "the gzip trailer's CRC-32 or length does not match".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sample(n: usize, seed: u32) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                // Runs and noise: both stored, fixed and dynamic blocks appear.
                if (i / 4096) % 3 == 0 {
                    (i / 64) as u8
                } else {
                    (x % 23) as u8
                }
            })
            .collect()
    }

    fn gz(data: &[u8], level: u32) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn indexed(data: &[u8], z: &[u8], spacing: u32) -> GzIndex {
        let mut out = vec![0u8; data.len()];
        let ix = inflate_indexed(z, &mut out, spacing).unwrap();
        assert_eq!(out, data);
        ix
    }

    #[test]
    fn every_range_read_from_its_point_equals_the_data() {
        let data = sample(3 << 20, 7);
        for level in [1, 6, 9] {
            let z = gz(&data, level);
            let ix = indexed(&data, &z, 256 << 10);
            // zlib-rs's level 1 writes few, large blocks: fewer places to restart.
            let least = if level == 1 { 2 } else { 6 };
            assert!(
                ix.points.len() >= least,
                "level {level}: {} points",
                ix.points.len()
            );
            assert_eq!(ix.points[0].unc, 0);
            for (a, len) in [
                (0, 100),
                (1, 70_000),
                (1 << 20, 5),
                (data.len() - 10, 10),
                (777_777, 900_000),
            ] {
                let p = ix.point_before(a as u64);
                let mut out = vec![0u8; len];
                GzIndex::read_from(
                    p,
                    &z[GzIndex::input_start(p) as usize..],
                    a as u64,
                    &mut out,
                )
                .unwrap();
                assert_eq!(out, data[a..a + len], "level {level} at {a}");
            }
        }
    }

    #[test]
    fn parallel_inflate_equals_the_data_and_checks_the_trailer() {
        let data = sample(2 << 20, 3);
        let z = gz(&data, 6);
        let ix = indexed(&data, &z, 128 << 10);
        for threads in [1, 2, 3, 8] {
            let mut out = vec![0u8; data.len()];
            inflate_parallel(&z, &ix, &mut out, threads).unwrap();
            assert_eq!(out, data, "{threads} threads");
        }
        let mut bad = z.clone();
        let n = bad.len();
        bad[n - 6] ^= 1;
        let mut out = vec![0u8; data.len()];
        assert!(inflate_parallel(&bad, &ix, &mut out, 2).is_err());
        // A flipped bit in the middle of the data is caught by the CRC or by inflate.
        let mut bad = z.clone();
        bad[n / 2] ^= 0x10;
        assert!(inflate_parallel(&bad, &ix, &mut out, 2).is_err());
    }

    #[test]
    fn gzidx_round_trips_and_refuses_damage() {
        let data = sample(1 << 20, 11);
        let z = gz(&data, 6);
        let ix = indexed(&data, &z, 64 << 10);
        let b = ix.to_bytes();
        assert_eq!(GzIndex::from_bytes(&b).unwrap(), ix);
        assert!(GzIndex::from_bytes(&b[..b.len() - 1]).is_err());
        assert!(GzIndex::from_bytes(&b[..40]).is_err());
        let mut v2 = b.clone();
        v2[5] = 2;
        assert!(GzIndex::from_bytes(&v2).is_err());
        let mut huge = b.clone();
        huge[31..35].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(GzIndex::from_bytes(&huge).is_err());
        let mut disorder = b.clone();
        // The second point's uncompressed offset set past the third's.
        disorder[FIXED + POINT + 8..FIXED + POINT + 16]
            .copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        assert!(GzIndex::from_bytes(&disorder).is_err());
    }

    #[test]
    fn what_cannot_be_indexed_is_refused() {
        let data = sample(200_000, 5);
        let z = gz(&data, 6);
        let mut short = vec![0u8; data.len() - 1];
        assert!(matches!(
            inflate_indexed(&z, &mut short, 1 << 16),
            Err(IndexError::Size { .. })
        ));
        let mut long = vec![0u8; data.len() + 1];
        assert!(matches!(
            inflate_indexed(&z, &mut long, 1 << 16),
            Err(IndexError::Size { .. })
        ));
        let mut out = vec![0u8; data.len()];
        assert!(inflate_indexed(&z[..z.len() / 2], &mut out, 1 << 16).is_err());
        let mut two = z.clone();
        two.extend(gz(b"more", 6));
        assert!(matches!(
            inflate_indexed(&two, &mut out, 1 << 16),
            Err(IndexError::Unsupported(_))
        ));
        let mut bad = z.clone();
        let n = bad.len();
        bad[n - 8] ^= 1;
        assert!(inflate_indexed(&bad, &mut out, 1 << 16).is_err());
    }
}
