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

mod format;

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
mod tests;
