//! Stable, URL-safe names for datasets and items.

/// Characters that never need percent-encoding in a path segment.
fn is_safe(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~')
}

/// FNV-1a, 64 bit: stable across releases and platforms (std's hasher is not), which matters
/// because the result ends up in URLs and ETags that clients keep.
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Makes a URL-safe name from arbitrary text. Safe text stays as it is; otherwise unsafe
/// characters become `_` and a short hash of the original keeps distinct names distinct.
pub fn slug(s: &str) -> String {
    if !s.is_empty() && s.chars().all(is_safe) && s != "." && s != ".." {
        return s.to_string();
    }
    let cleaned: String = s
        .chars()
        .map(|c| if is_safe(c) { c } else { '_' })
        .collect();
    format!("{cleaned}-{:08x}", fnv1a(s.as_bytes()) as u32)
}

/// The file name without `.nii.gz`, `.nii` or the last extension.
pub fn stem(file: &str) -> &str {
    for ext in [".nii.gz", ".nii"] {
        if let Some(s) = file.strip_suffix(ext)
            && !s.is_empty()
        {
            return s;
        }
    }
    match file.rfind('.') {
        Some(i) if i > 0 => &file[..i],
        _ => file,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_url_safe_and_distinct() {
        assert_eq!(slug("AbdomenCT"), "AbdomenCT");
        assert_eq!(slug("000001"), "000001");
        let a = slug("a b");
        let b = slug("a?b");
        assert!(a.starts_with("a_b-") && b.starts_with("a_b-"));
        assert_ne!(a, b);
        assert!(slug("..").starts_with("..-"));
        assert!(slug("").starts_with('-'));
    }

    #[test]
    fn stems() {
        assert_eq!(stem("spleen_10.nii.gz"), "spleen_10");
        assert_eq!(stem("img.nii"), "img");
        assert_eq!(stem("000001.png"), "000001");
        assert_eq!(stem(".hidden"), ".hidden");
    }
}
