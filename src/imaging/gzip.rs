//! The two ways a `.nii.gz` is inflated, chosen by measurement (docs/PERFORMANCE.md, "Inflate
//! backends"):
//!
//! - [`GzDecoder`], streaming (flate2 over zlib-rs): for an object still arriving from a remote
//!   store, so inflating overlaps the download and the compressed file is never held whole;
//! - [`inflate_exact`], whole buffer (libdeflate): for an object already in memory, when the
//!   size of its output is known in advance (the NIfTI header says where the voxels end).
//!   libdeflate inflated the CTs and masks measured here in 0.55-0.70x and 0.3x of zlib-rs's
//!   time; it cannot stop early or resume, which is why the streaming path stays.
//!
//! Intel's ISA-L (igzip) was measured too and not kept: 0.72-0.96x of zlib-rs on CT and
//! between 0.27x and 1.3x on masks, for a C build that needs nasm and autotools.

use std::io::{self, BufRead, Read};

pub use flate2::bufread::MultiGzDecoder as GzDecoder;

/// Why a whole-buffer inflate did not give exactly the bytes asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WholeError {
    /// The stream is corrupt, is several members, has bytes after its end, or inflates to more
    /// than the buffer (its trailer's CRC-32 and length are checked).
    #[error("the gzip stream is corrupt or larger than expected")]
    BadOrLarger,
    /// It inflates to fewer bytes than the buffer holds.
    #[error("the gzip stream holds {0} bytes, fewer than expected")]
    Shorter(usize),
}

/// The uncompressed size a gzip stream's trailer states (ISIZE: the length mod 2^32), if the
/// buffer is long enough to be a gzip stream at all.
pub fn trailer_size(gz: &[u8]) -> Option<u32> {
    let t = gz.len().checked_sub(4).filter(|_| gz.len() >= 18)?;
    Some(u32::from_le_bytes(gz[t..].try_into().ok()?))
}

/// Inflates the single gzip member `gz` into `out`, which it must fill exactly. Callers fall
/// back to [`GzDecoder`] on any error: it reads only as far as needed (a bomb of zeros after
/// the voxels never is) and names what is wrong with the file precisely.
pub fn inflate_exact(gz: &[u8], out: &mut [u8]) -> Result<(), WholeError> {
    match libdeflater::Decompressor::new().gzip_decompress(gz, out) {
        Ok(n) if n == out.len() => Ok(()),
        Ok(n) => Err(WholeError::Shorter(n)),
        Err(_) => Err(WholeError::BadOrLarger),
    }
}

/// Inflates all of `r` with the streaming decoder (a test and benchmark helper; the NIfTI
/// reader reads only what it needs).
pub fn inflate_all<R: BufRead>(r: R, out: &mut Vec<u8>) -> io::Result<usize> {
    GzDecoder::new(r).read_to_end(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8], level: u32) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn sample(n: usize) -> Vec<u8> {
        // Compressible but not trivial: a slow ramp with noise, as CT rows are.
        let mut x = 0x2545_f491_u32;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                ((i / 97) as u8).wrapping_add((x & 7) as u8)
            })
            .collect()
    }

    #[test]
    fn whole_equals_streaming_at_every_level() {
        let data = sample(300_000);
        for level in [0, 1, 6, 9] {
            let z = gz(&data, level);
            assert_eq!(trailer_size(&z), Some(data.len() as u32));
            let mut out = vec![0u8; data.len()];
            inflate_exact(&z, &mut out).unwrap();
            assert_eq!(out, data, "level {level}");
            let mut streamed = Vec::new();
            inflate_all(&z[..], &mut streamed).unwrap();
            assert_eq!(streamed, data, "level {level}");
        }
    }

    #[test]
    fn a_buffer_of_the_wrong_size_is_refused() {
        let data = sample(50_000);
        let z = gz(&data, 6);
        let mut small = vec![0u8; data.len() - 1];
        assert_eq!(inflate_exact(&z, &mut small), Err(WholeError::BadOrLarger));
        let mut large = vec![0u8; data.len() + 1];
        assert_eq!(
            inflate_exact(&z, &mut large),
            Err(WholeError::Shorter(data.len()))
        );
    }

    #[test]
    fn truncated_corrupt_or_several_members_are_refused_whole() {
        let data = sample(40_000);
        let z = gz(&data, 6);
        let mut out = vec![0u8; data.len()];
        for cut in (0..z.len()).step_by(331).chain([z.len() - 1, z.len() - 4]) {
            assert!(inflate_exact(&z[..cut], &mut out).is_err(), "cut {cut}");
        }
        for at in [8, 4, 40] {
            let mut bad = z.clone();
            let n = bad.len();
            bad[n - at] ^= 1;
            assert!(inflate_exact(&bad, &mut out).is_err(), "flipped at -{at}");
        }
        let mut two = gz(&data[..20_000], 6);
        two.extend(gz(&data[20_000..], 6));
        assert!(inflate_exact(&two, &mut out).is_err());
        // ...which the streaming decoder reads as one stream.
        let mut streamed = Vec::new();
        inflate_all(&two[..], &mut streamed).unwrap();
        assert_eq!(streamed, data);
    }

    #[test]
    fn trailer_size_needs_a_whole_gzip_frame() {
        assert_eq!(trailer_size(&[0; 17]), None);
        assert_eq!(trailer_size(&gz(b"", 6)), Some(0));
    }
}
