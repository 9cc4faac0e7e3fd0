//! Data at real sizes, for trying medserve as it is used and for benchmarks (never the
//! default): MedNIST's 58,954 images (or any count in its proportions) and a 512x512x200 CT.

use std::path::Path;

use super::{CLASSES, IMAGE_SIZE, VOLUME_SPACING, class_image, ct_volume, gray_png, write_volume};

/// MedNIST's real class sizes (58,954 images in all), in [`CLASSES`] order.
pub const MEDNIST_COUNTS: [usize; 6] = [10_000, 8_954, 10_000, 10_000, 10_000, 10_000];

/// `n` images split over the classes in MedNIST's proportions: each class's exact share
/// rounded down, the remainder going to the largest fractional parts (ties to the earlier
/// class), so the counts sum to `n` exactly and `n = 58954` gives MedNIST's own counts.
pub fn mednist_class_counts(n: usize) -> [usize; 6] {
    let total: usize = MEDNIST_COUNTS.iter().sum();
    let mut out = [0usize; 6];
    let mut rest: Vec<(usize, usize)> = Vec::new();
    for (i, &c) in MEDNIST_COUNTS.iter().enumerate() {
        out[i] = n * c / total;
        rest.push(((n * c) % total, i));
    }
    rest.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let short = n - out.iter().sum::<usize>();
    for &(_, i) in rest.iter().take(short) {
        out[i] += 1;
    }
    out
}

/// Writes `mednist/<Class>/NNNNNN.png` (a class-folder dataset without splits, served as split
/// `all`, as the real MedNIST is laid out): `n` images of the sample generator in MedNIST's
/// class proportions, each seeded by its class and index. Written on every core. Returns the
/// file count.
pub fn write_mednist_sized(dir: &Path, n: usize) -> std::io::Result<usize> {
    let root = dir.join("mednist");
    let jobs: Vec<(usize, usize)> = mednist_class_counts(n)
        .iter()
        .enumerate()
        .flat_map(|(ci, &k)| (0..k).map(move |i| (ci, i)))
        .collect();
    for class in CLASSES {
        std::fs::create_dir_all(root.join(class))?;
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = jobs.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| {
                let root = &root;
                scope.spawn(move || -> std::io::Result<()> {
                    for &(ci, i) in part {
                        let class = CLASSES[ci];
                        let seed = (3u64 << 40) | ((ci as u64) << 24) | i as u64;
                        let px = class_image(class, seed);
                        let png = gray_png(IMAGE_SIZE as u32, IMAGE_SIZE as u32, &px)?;
                        let path = root
                            .join(class)
                            .join(format!("{:06}.png", ci * 100_000 + i));
                        std::fs::write(path, png)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .map_err(|_| std::io::Error::other("writer panicked"))?
        })
    })?;
    Ok(jobs.len())
}

/// Grid of the full-size CT subject (`sample-data --large`): a typical Decathlon CT.
pub const LARGE_CT_DIMS: (usize, usize, usize) = (512, 512, 200);

/// Writes `large/train/ct_512/{img,label}.nii.gz`: a 512x512x200 int16 CT-like volume and its
/// mask, what the benchmarks and load tests of real-size volumes read. Returns the file count.
pub fn write_large_ct(dir: &Path) -> std::io::Result<usize> {
    let (img, lab) = ct_volume(512, LARGE_CT_DIMS);
    let sub = dir.join("large/train/ct_512");
    std::fs::create_dir_all(&sub)?;
    write_volume(&sub.join("img.nii.gz"), &img, VOLUME_SPACING)?;
    write_volume(&sub.join("label.nii.gz"), &lab, VOLUME_SPACING)?;
    Ok(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mednist_proportions() {
        assert_eq!(mednist_class_counts(58_954), MEDNIST_COUNTS);
        for n in [0, 1, 7, 600, 1000] {
            let c = mednist_class_counts(n);
            assert_eq!(c.iter().sum::<usize>(), n);
            for (k, m) in c.iter().zip(MEDNIST_COUNTS) {
                assert!(*k - n * m / 58_954 <= 1, "{n}: {c:?}");
            }
        }
    }
}
