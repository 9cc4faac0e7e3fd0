//! The entry points that read a volume (from memory or a stream, gzipped or not) and the
//! voxel reader behind them: limits checked against the header first, then the voxels read
//! straight into a buffer of their stored type, exactly as far as the header says they reach.

use std::io::{BufRead, Read};

use crate::imaging::gzindex::{self, GzIndex};
use crate::imaging::gzip::{self, GzDecoder};

use super::{Header, Volume, VolumeError, VolumeLimits, Voxels, header, io_error};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Reads just the header (inflating only its first bytes).
pub fn read_header(bytes: &[u8]) -> Result<Header, VolumeError> {
    if bytes.starts_with(&GZIP_MAGIC) {
        let mut r = GzDecoder::new(bytes);
        header::read_from(&mut r)
    } else {
        header::read_from(&mut &bytes[..])
    }
}

/// Decodes a whole `.nii` or `.nii.gz` held in memory. A `.nii.gz` whose gzip trailer states
/// the size the header implies is inflated whole by libdeflate straight into the voxel buffer;
/// anything else (several members, bytes after the voxels, a corrupt stream) is streamed, which
/// reads only as far as the voxels reach and names what is wrong.
pub fn decode(bytes: &[u8], limits: &VolumeLimits) -> Result<Volume, VolumeError> {
    decode_with(bytes, limits, Inflate::Whole).map(|(v, _)| v)
}

/// The streaming decode of bytes in memory (the fallback of the whole-buffer paths).
fn decode_streamed(bytes: &[u8], limits: &VolumeLimits) -> Result<Volume, VolumeError> {
    if bytes.starts_with(&GZIP_MAGIC) {
        decode_from(&mut GzDecoder::new(bytes), limits)
    } else {
        decode_from(&mut &bytes[..], limits)
    }
}

/// Decodes a `.nii` or `.nii.gz` from a stream, e.g. an object still arriving from the
/// store: inflating starts with the first bytes, and the compressed file is never held whole.
pub fn decode_reader<R: Read>(r: R, limits: &VolumeLimits) -> Result<Volume, VolumeError> {
    let mut br = std::io::BufReader::with_capacity(256 << 10, r);
    let head = br.fill_buf().map_err(|e| io_error(e, "at its start"))?;
    if head.starts_with(&GZIP_MAGIC) {
        decode_from(&mut GzDecoder::new(br), limits)
    } else {
        decode_from(&mut br, limits)
    }
}

/// How a whole `.nii.gz` in memory is inflated into its voxel buffer.
#[derive(Debug, Clone, Copy)]
pub enum Inflate<'a> {
    /// libdeflate, one thread (the fastest single stream).
    Whole,
    /// zlib-rs, one thread, recording a seek index with a checkpoint about every `spacing`
    /// bytes of output.
    Indexing { spacing: u32 },
    /// From the checkpoints of this index (of this very file), on `threads` threads.
    Parallel { index: &'a GzIndex, threads: usize },
}

/// [`decode`], inflating as `how` says, plus the seek index when `how` builds one. Anything
/// the chosen way cannot do (a stream that is not one member of the expected size, an index
/// of another file) falls back to the streaming decode.
pub fn decode_with(
    bytes: &[u8],
    limits: &VolumeLimits,
    how: Inflate<'_>,
) -> Result<(Volume, Option<GzIndex>), VolumeError> {
    if bytes.starts_with(&GZIP_MAGIC)
        && let Some(v) = decode_whole_gz(bytes, limits, how)?
    {
        return Ok(v);
    }
    decode_streamed(bytes, limits).map(|v| (v, None))
}

/// The whole-buffer path of [`decode_with`]: `None` when it does not apply or the inflate
/// fails (the caller streams instead). Limits are checked before the buffer is allocated.
fn decode_whole_gz(
    gz: &[u8],
    limits: &VolumeLimits,
    how: Inflate<'_>,
) -> Result<Option<(Volume, Option<GzIndex>)>, VolumeError> {
    let header = header::read_from(&mut GzDecoder::new(gz))?;
    let data_bytes = check_limits(&header, limits)?;
    let total = header.vox_offset + data_bytes;
    let width = header.dtype.size() as u64;
    // The header and extensions are inflated into the front of the voxel buffer and dropped,
    // so they must end on a voxel boundary (NIfTI asks for a multiple of 16 anyway).
    if gzip::trailer_size(gz) != Some(total as u32) || header.vox_offset % width != 0 {
        return Ok(None);
    }
    let (Ok(n), Ok(prefix)) = (
        usize::try_from(header.voxels()),
        usize::try_from(header.vox_offset / width),
    ) else {
        return Ok(None);
    };
    let swap = header.big_endian != cfg!(target_endian = "big");
    let index;
    macro_rules! read_whole {
        ($t:ty, $variant:ident) => {{
            let mut v: Vec<$t> = vec![<$t>::default(); prefix + n];
            let buf: &mut [u8] = bytemuck::cast_slice_mut(&mut v);
            let done = match how {
                Inflate::Whole => gzip::inflate_exact(gz, buf).ok().map(|()| None),
                Inflate::Indexing { spacing } => {
                    gzindex::inflate_indexed(gz, buf, spacing).ok().map(Some)
                }
                Inflate::Parallel { index, threads } => {
                    gzindex::inflate_parallel(gz, index, buf, threads)
                        .ok()
                        .map(|()| None)
                }
            };
            let Some(built) = done else {
                return Ok(None);
            };
            index = built;
            v.drain(..prefix);
            if swap {
                swap_bytes(bytemuck::cast_slice_mut(&mut v), std::mem::size_of::<$t>());
            }
            Voxels::$variant(v.into())
        }};
    }
    let voxels = crate::match_dtype!(header.dtype, read_whole);
    Ok(Some((Volume { header, voxels }, index)))
}

/// Whether `bytes` look like a gzip stream.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// Header, limits, extensions, voxels: the one path behind every entry point.
fn decode_from<R: Read>(r: &mut R, limits: &VolumeLimits) -> Result<Volume, VolumeError> {
    let header = header::read_from(r)?;
    let data_bytes = check_limits(&header, limits)?;
    skip_extensions(r, &header)?;
    let n = usize::try_from(header.voxels())
        .map_err(|_| VolumeError::TooLarge("too many voxels".into()))?;
    let swap = header.big_endian != cfg!(target_endian = "big");
    macro_rules! read_typed {
        ($t:ty, $variant:ident) => {{
            let mut v: Vec<$t> = vec![<$t>::default(); n];
            read_voxels(
                r,
                bytemuck::cast_slice_mut(&mut v),
                data_bytes,
                header.vox_offset,
            )?;
            if swap {
                swap_bytes(bytemuck::cast_slice_mut(&mut v), std::mem::size_of::<$t>());
            }
            Voxels::$variant(v.into())
        }};
    }
    let voxels = crate::match_dtype!(header.dtype, read_typed);
    Ok(Volume { header, voxels })
}

/// Where axial planes `z` (every x and y at each z, of one channel) lie in the decompressed
/// file: the byte range a slab read fetches or inflates. The range must be within the grid.
pub fn slab_range(h: &Header, z: std::ops::Range<usize>, channel: usize) -> std::ops::Range<u64> {
    let [x, y, nz] = h.spatial;
    let plane = (x * y * h.dtype.size()) as u64;
    let first = channel as u64 * nz as u64 + z.start as u64;
    let start = h.vox_offset + first * plane;
    start..start + z.len() as u64 * plane
}

/// A slab of axial planes as a volume of its own (Z = `depth`, `channels` channels, the
/// header's scaling and affine kept), from the [`slab_range`]s of each channel in turn, in the
/// file's byte order.
pub fn slab_volume(
    h: &Header,
    depth: usize,
    channels: usize,
    bytes: &[u8],
) -> Result<Volume, VolumeError> {
    let [x, y, _] = h.spatial;
    let n = x * y * depth * channels;
    if bytes.len() != n * h.dtype.size() {
        return Err(VolumeError::Truncated(format!(
            "a slab of {x}x{y}x{depth}x{channels} voxels needs {} bytes, {} were read",
            n * h.dtype.size(),
            bytes.len()
        )));
    }
    let swap = h.big_endian != cfg!(target_endian = "big");
    macro_rules! typed {
        ($t:ty, $variant:ident) => {{
            let mut v: Vec<$t> = vec![<$t>::default(); n];
            bytemuck::cast_slice_mut::<$t, u8>(&mut v).copy_from_slice(bytes);
            if swap {
                swap_bytes(bytemuck::cast_slice_mut(&mut v), std::mem::size_of::<$t>());
            }
            Voxels::$variant(v.into())
        }};
    }
    let voxels = crate::match_dtype!(h.dtype, typed);
    let header = Header {
        spatial: [x, y, depth],
        channels,
        ..h.clone()
    };
    Ok(Volume { header, voxels })
}

/// The bytes of voxels the header promises, refused when they or the file would pass `limits`.
pub fn check_limits(header: &Header, limits: &VolumeLimits) -> Result<u64, VolumeError> {
    let voxels = header.voxels();
    let data_bytes = voxels
        .checked_mul(header.dtype.size() as u64)
        .ok_or_else(|| VolumeError::TooLarge("the header's dimensions overflow".into()))?;
    let [x, y, z] = header.spatial;
    if voxels > limits.max_voxels {
        return Err(VolumeError::TooLarge(format!(
            "the header claims {x}x{y}x{z}x{} = {voxels} voxels; this server decodes at most {} (--max-voxels)",
            header.channels, limits.max_voxels
        )));
    }
    let total = header.vox_offset + data_bytes;
    if total > limits.max_bytes {
        return Err(VolumeError::TooLarge(format!(
            "the header says the voxels end at byte {total}; this server decodes at most {} bytes (--max-volume-mb)",
            limits.max_bytes
        )));
    }
    Ok(data_bytes)
}

/// Skips the extensions between the header and the voxels without keeping them.
fn skip_extensions<R: Read>(r: &mut R, header: &Header) -> Result<(), VolumeError> {
    let skip = header.vox_offset - header.header_bytes;
    let skipped = std::io::copy(&mut r.by_ref().take(skip), &mut std::io::sink())
        .map_err(|e| io_error(e, "inside the extensions"))?;
    if skipped < skip {
        return Err(VolumeError::Truncated(format!(
            "the header puts the voxels at byte {} but the file has {} bytes",
            header.vox_offset,
            header.header_bytes + skipped
        )));
    }
    Ok(())
}

/// Fills `buf` from `r`, reporting how much was there when the file ends early.
fn read_voxels<R: Read>(
    r: &mut R,
    buf: &mut [u8],
    want: u64,
    offset: u64,
) -> Result<(), VolumeError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => {
                return Err(VolumeError::Truncated(format!(
                    "the header promises {want} bytes of voxels from byte {offset}, the file holds {got}"
                )));
            }
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(VolumeError::Truncated(format!(
                    "the gzip stream ends after {got} of {want} bytes of voxels"
                )));
            }
            Err(e) => return Err(VolumeError::Gzip(e.to_string())),
        }
    }
    Ok(())
}

/// Reverses every `width`-byte value in place: file byte order to native.
fn swap_bytes(bytes: &mut [u8], width: usize) {
    if width > 1 {
        bytes.chunks_exact_mut(width).for_each(<[u8]>::reverse);
    }
}
