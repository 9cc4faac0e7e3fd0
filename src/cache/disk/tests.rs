use super::*;
use crate::cache::Stage;
use crate::imaging::nifti::{Volume, Voxels};
use crate::store::ObjectMeta;

fn key(name: &str, version: &str) -> CacheKey {
    let obj = ObjectMeta {
        key: name.into(),
        size: 1,
        version: version.into(),
        version_id: None,
    };
    CacheKey::new(Stage::Volume, [&obj], &"nifti")
}

fn volume(seed: u8, n: usize) -> Volume {
    let bytes = crate::imaging::nifti::encode_nifti1(
        &[n, 1, 1],
        &[
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ],
        crate::imaging::nifti::OutType::F32,
        bytemuck::cast_slice(
            &(0..n)
                .map(|i| f32::from(seed) + i as f32 * 0.5)
                .collect::<Vec<f32>>(),
        ),
        1,
    );
    crate::imaging::nifti::decode(
        &bytes,
        &crate::imaging::nifti::VolumeLimits {
            max_voxels: 1 << 30,
            max_bytes: 1 << 31,
        },
    )
    .unwrap()
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn a_stored_volume_reads_back_equal_and_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskCache::open(dir.path(), 1 << 30).unwrap();
    let (k, v) = (key("a.nii.gz", "1"), volume(7, 1000));
    assert!(matches!(disk.load::<Volume>(&k), Lookup::Miss));
    assert!(disk.store(&k, &v).unwrap());
    let Lookup::Hit(back) = disk.load::<Volume>(&k) else {
        panic!("expected a hit")
    };
    assert_eq!(*back, v);
    assert!(matches!(&back.voxels, Voxels::F32(b) if b.is_shared()));
    // Another version of the object is another entry.
    assert!(matches!(
        disk.load::<Volume>(&key("a.nii.gz", "2")),
        Lookup::Miss
    ));
    // A reopened tier finds it.
    let again = DiskCache::open(dir.path(), 1 << 30).unwrap();
    assert!(matches!(again.load::<Volume>(&k), Lookup::Hit(_)));
}

#[test]
fn corrupt_or_truncated_entries_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskCache::open(dir.path(), 1 << 30).unwrap();
    let (k, v) = (key("a.nii.gz", "1"), volume(3, 5000));
    for damage in 0..4 {
        disk.store(&k, &v).unwrap();
        let path = entries(dir.path()).pop().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        match damage {
            0 => {
                let at = bytes.len() - 100;
                bytes[at] ^= 0x40;
            }
            1 => bytes.truncate(bytes.len() - 1),
            2 => bytes.truncate(10),
            _ => bytes[30] ^= 1,
        }
        std::fs::write(&path, &bytes).unwrap();
        assert!(
            matches!(disk.load::<Volume>(&k), Lookup::Dropped(_)),
            "damage {damage}"
        );
        assert!(entries(dir.path()).is_empty(), "damage {damage}");
        assert_eq!(disk.usage(), (0, 0));
        assert!(matches!(disk.load::<Volume>(&k), Lookup::Miss));
    }
}

#[test]
fn leftovers_of_interrupted_writes_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskCache::open(dir.path(), 1 << 30).unwrap();
    let k = key("a.nii.gz", "1");
    disk.store(&k, &volume(1, 100)).unwrap();
    let half = dir.path().join(format!("{}.99.0.tmp", file_name(&k)));
    std::fs::write(&half, b"MSDISK\x00\x01 half of an entry").unwrap();
    let disk = DiskCache::open(dir.path(), 1 << 30).unwrap();
    assert!(!half.exists());
    assert_eq!(disk.usage().1, 1);
}

#[test]
fn the_budget_drops_the_least_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let one = {
        let d = tempfile::tempdir().unwrap();
        let c = DiskCache::open(d.path(), 1 << 30).unwrap();
        c.store(&key("x", "1"), &volume(0, 4000)).unwrap();
        c.usage().0
    };
    let disk = DiskCache::open(dir.path(), one * 2 + one / 2).unwrap();
    let (a, b, c) = (key("a", "1"), key("b", "1"), key("c", "1"));
    disk.store(&a, &volume(1, 4000)).unwrap();
    disk.store(&b, &volume(2, 4000)).unwrap();
    assert!(matches!(disk.load::<Volume>(&a), Lookup::Hit(_)));
    disk.store(&c, &volume(3, 4000)).unwrap();
    assert!(
        matches!(disk.load::<Volume>(&b), Lookup::Miss),
        "b was least recent"
    );
    assert!(matches!(disk.load::<Volume>(&a), Lookup::Hit(_)));
    assert!(matches!(disk.load::<Volume>(&c), Lookup::Hit(_)));
    assert_eq!(disk.usage(), (2 * one, 2));
    assert_eq!(entries(dir.path()).len(), 2);
    // A volume larger than the whole budget is not written.
    let tiny = DiskCache::open(tempfile::tempdir().unwrap().path(), 100).unwrap();
    assert!(!tiny.store(&a, &volume(1, 4000)).unwrap());
}
