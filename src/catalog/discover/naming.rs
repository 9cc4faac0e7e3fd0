//! Dataset names from root prefixes: the workshop's storage layout and date versions.
//!
//! The workshop keeps `<area>/{raw,processed,artifacts}/` (`classification/raw/...`,
//! `segmentation/processed/<name>/`). In such an area, `raw/` holds the raw datasets (named
//! after the area, or after the folder under `raw/`), `processed/<name>/` the exports (named
//! `<name>`), and `artifacts/` (model outputs) is not data and is skipped. An area is a folder
//! holding `raw/` or `processed/`; the data root itself counts only when it holds two of the
//! three, so a plain dataset folder called `raw` keeps its name.
//!
//! A root whose last folder is a date (`.../2026-11-27/`) or ends in `@` and a date
//! (`mednist@2026-11-27/`) is that version of the dataset named by the rest.

use std::collections::{BTreeMap, BTreeSet};

use super::super::ids::slug;
use crate::store::ObjectMeta;

/// A dataset's name split into what clients type and the version it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Naming {
    pub base: String,
    pub version: Option<String>,
}

impl Naming {
    /// The name the dataset is served under: `base`, or `base@version`.
    pub fn full(&self) -> String {
        match &self.version {
            Some(v) => format!("{}@{v}", self.base),
            None => self.base.clone(),
        }
    }
}

const AREA_PARTS: [&str; 3] = ["raw", "processed", "artifacts"];

/// The areas of the workshop's layout found in a listing (`""` or ending in `/`).
#[derive(Debug, Default)]
pub(super) struct Areas(BTreeSet<String>);

impl Areas {
    pub fn find<'a>(keys: impl IntoIterator<Item = &'a ObjectMeta>) -> Self {
        let mut parts: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
        for m in keys {
            let segs: Vec<&str> = m.key.split('/').collect();
            // The file name itself is never an area part.
            for (i, s) in segs.iter().enumerate().take(segs.len().saturating_sub(1)) {
                if let Some(p) = AREA_PARTS.iter().find(|p| *p == s) {
                    let prefix: String = segs[..i].iter().map(|s| format!("{s}/")).collect();
                    parts.entry(prefix).or_default().insert(p);
                }
            }
        }
        Areas(
            parts
                .into_iter()
                .filter(|(prefix, found)| {
                    let data = found.contains("raw") || found.contains("processed");
                    data && (!prefix.is_empty() || found.len() >= 2)
                })
                .map(|(prefix, _)| prefix)
                .collect(),
        )
    }

    /// Whether `key` lies in an area's `artifacts/`.
    pub fn is_artifact(&self, key: &str) -> bool {
        self.0
            .iter()
            .any(|a| key.starts_with(a.as_str()) && key[a.len()..].starts_with("artifacts/"))
    }

    /// The name of the dataset rooted at `root` (`""` or ending in `/`); `fallback` names the
    /// data root itself.
    pub fn naming(&self, root: &str, fallback: &str) -> Naming {
        let mut segs: Vec<&str> = root.split('/').filter(|s| !s.is_empty()).collect();
        let mut version = None;
        if let Some(last) = segs.last().copied() {
            if is_version(last) {
                version = Some(last.to_string());
                segs.pop();
            } else if let Some((name, v)) = last.rsplit_once('@')
                && is_version(v)
                && !name.is_empty()
            {
                version = Some(v.to_string());
                *segs.last_mut().expect("not empty") = name;
            }
        }
        let joined = |s: &[&str]| -> String {
            if s.is_empty() {
                slug(fallback)
            } else {
                slug(&s.join("-"))
            }
        };
        let area = self.0.iter().filter(|a| {
            let n = a.split('/').filter(|s| !s.is_empty()).count();
            segs.len() > n
                && segs[..n].iter().zip(a.split('/')).all(|(x, y)| *x == y)
                && (segs[n] == "raw" || segs[n] == "processed")
        });
        // The deepest area wins (an area inside another's raw data is its own).
        let base = match area.max_by_key(|a| a.len()) {
            Some(a) => {
                let n = a.split('/').filter(|s| !s.is_empty()).count();
                let (before, part, after) = (&segs[..n], segs[n], &segs[n + 1..]);
                match (part, after.is_empty()) {
                    (_, false) => joined(after),
                    ("raw", true) => joined(before),
                    _ => format!("{}-processed", joined(before)),
                }
            }
            None => joined(&segs),
        };
        Naming { base, version }
    }
}

/// A date version: `YYYY-MM-DD`, optionally followed by `T`, `.`, `_` or `-` and more
/// URL-safe text (`2026-11-27T1030`, `2026-11-27.2`). Versions sort as text, newest last.
pub fn is_version(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 10 || !s.is_char_boundary(10) {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap_or(0);
    let date = digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && (1..=12).contains(&num(5..7))
        && (1..=31).contains(&num(8..10));
    let rest = &s[10..];
    date && (rest.is_empty()
        || (matches!(rest.as_bytes()[0], b'T' | b'.' | b'_' | b'-')
            && rest.len() > 1
            && rest[1..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: &str) -> ObjectMeta {
        ObjectMeta {
            key: key.into(),
            size: 1,
            version: "v".into(),
            version_id: None,
        }
    }

    fn areas(keys: &[&str]) -> Areas {
        let metas: Vec<ObjectMeta> = keys.iter().map(|k| meta(k)).collect();
        Areas::find(&metas)
    }

    #[test]
    fn versions_are_dates() {
        for v in [
            "2026-11-27",
            "2026-11-27T1030",
            "2026-11-27.2",
            "2026-01-01_b",
        ] {
            assert!(is_version(v), "{v}");
        }
        for v in [
            "2026-13-01",
            "2026-11-00",
            "2026-11-2",
            "20261127",
            "2026-11-27.",
            "v2",
            "",
        ] {
            assert!(!is_version(v), "{v}");
        }
    }

    #[test]
    fn the_workshop_layout_names_datasets_by_area_and_export() {
        let a = areas(&[
            "classification/raw/train/CXR/1.png",
            "classification/processed/mednist-64/manifest.json",
            "classification/artifacts/model.pt",
            "segmentation/raw/2026-11-27/train/s1/img.nii.gz",
        ]);
        let n = |root| a.naming(root, "bucket");
        assert_eq!(n("classification/raw/").full(), "classification");
        assert_eq!(
            n("classification/processed/mednist-64/").full(),
            "mednist-64"
        );
        assert_eq!(n("classification/raw/medmnist/").full(), "medmnist");
        assert_eq!(
            n("segmentation/raw/2026-11-27/").full(),
            "segmentation@2026-11-27"
        );
        assert_eq!(
            n("segmentation/raw/Task09@2026-11-27/").full(),
            "Task09@2026-11-27"
        );
        assert_eq!(n("other/thing/").full(), "other-thing");
        assert!(a.is_artifact("classification/artifacts/plots/CXR/1.png"));
        assert!(!a.is_artifact("classification/raw/train/artifacts/1.png"));
    }

    #[test]
    fn a_root_holding_only_raw_is_not_an_area() {
        let a = areas(&["raw/train/s1/img.nii"]);
        assert_eq!(a.naming("raw/", "data").full(), "raw");
        let b = areas(&["raw/train/CXR/1.png", "processed/x/manifest.json"]);
        assert_eq!(b.naming("raw/", "classification").full(), "classification");
        assert_eq!(b.naming("processed/x/", "classification").full(), "x");
    }

    #[test]
    fn dated_folders_outside_the_layout_are_versions_too() {
        let a = Areas::default();
        assert_eq!(
            a.naming("mednist/2026-11-27/", "d").full(),
            "mednist@2026-11-27"
        );
        assert_eq!(
            a.naming("mednist@2026-11-20/", "d").full(),
            "mednist@2026-11-20"
        );
        assert_eq!(
            a.naming("2026-11-20/", "bucket").full(),
            "bucket@2026-11-20"
        );
        assert_eq!(a.naming("a@b/", "d").base, slug("a@b"));
    }
}
