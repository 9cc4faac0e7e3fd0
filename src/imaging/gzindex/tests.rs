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
    disorder[FIXED + POINT + 8..FIXED + POINT + 16].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
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
