//! Byte ranges (RFC 9110 §14) on bodies we serve whole: `Range: bytes=a-b | a- | -n` with
//! `If-Range`, answered 206 with `Content-Range`, or 416 with `Content-Range: bytes */N`.
//! What RFC 9110 lets a server ignore, we ignore (the whole body, 200): another unit, a
//! malformed header, several ranges (viewers ask for one at a time; multipart bodies would buy
//! nothing), and an `If-Range` that is not our current strong ETag (a date, or an old tag).

use std::ops::Range;

use axum::http::{HeaderMap, HeaderValue, header};

/// What to send for a body of `size` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangePlan {
    /// The whole body, 200.
    Whole,
    /// These bytes, 206.
    Partial(Range<u64>),
    /// 416: the one range asked for starts past the end.
    Unsatisfiable,
}

/// The plan for a request's `Range` and `If-Range` against a body of `size` bytes whose
/// strong ETag is `etag`.
pub fn plan(headers: &HeaderMap, etag: &str, size: u64) -> RangePlan {
    let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return RangePlan::Whole;
    };
    if let Some(if_range) = headers.get(header::IF_RANGE) {
        // Only a strong ETag equal to ours keeps the range (a date never does: we send no
        // Last-Modified).
        if if_range.to_str().ok().map(str::trim) != Some(etag) || etag.starts_with("W/") {
            return RangePlan::Whole;
        }
    }
    parse(range, size)
}

/// One `Range` header value against a body of `size` bytes.
fn parse(value: &str, size: u64) -> RangePlan {
    let Some((unit, spec)) = value.split_once('=') else {
        return RangePlan::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return RangePlan::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangePlan::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim().is_empty(), number(first), number(last)) {
        // `-n`: the last n bytes.
        (true, _, Some(n)) => {
            if n == 0 || size == 0 {
                RangePlan::Unsatisfiable
            } else {
                RangePlan::Partial(size.saturating_sub(n)..size)
            }
        }
        // `a-` and `a-b`.
        (false, Some(a), b) if last.trim().is_empty() || b.is_some() => {
            if b.is_some_and(|b| b < a) {
                return RangePlan::Whole;
            }
            if a >= size {
                return RangePlan::Unsatisfiable;
            }
            let end = b.map_or(size, |b| b.saturating_add(1).min(size));
            RangePlan::Partial(a..end)
        }
        _ => RangePlan::Whole,
    }
}

/// `Content-Range` of a 206.
pub fn content_range(r: &Range<u64>, size: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("bytes {}-{}/{size}", r.start, r.end - 1))
        .expect("digits and punctuation")
}

/// `Content-Range` of a 416.
pub fn unsatisfied_range(size: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("bytes */{size}")).expect("digits and punctuation")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_three_forms_and_clamping() {
        use RangePlan::*;
        for (v, want) in [
            ("bytes=0-99", Partial(0..100)),
            ("bytes=100-", Partial(100..1000)),
            ("bytes=-100", Partial(900..1000)),
            ("bytes=-5000", Partial(0..1000)),
            ("bytes=990-5000", Partial(990..1000)),
            ("bytes=999-999", Partial(999..1000)),
            ("BYTES = 5-9", Partial(5..10)),
            ("bytes=1000-", Unsatisfiable),
            ("bytes=1000-2000", Unsatisfiable),
            ("bytes=-0", Unsatisfiable),
            // Ignored: the whole body.
            ("bytes=9-5", Whole),
            ("bytes=0-1,5-9", Whole),
            ("items=0-5", Whole),
            ("bytes=a-5", Whole),
            ("bytes=-", Whole),
            ("bytes=5", Whole),
            ("bytes=+5-9", Whole),
            ("bytes=99999999999999999999999-", Whole),
            ("", Whole),
        ] {
            assert_eq!(parse(v, 1000), want, "{v}");
        }
        assert_eq!(parse("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse("bytes=-1", 0), Unsatisfiable);
    }

    #[test]
    fn if_range_keeps_the_range_only_for_our_strong_etag() {
        let etag = "\"abc\"";
        let h = |ir: Option<&str>| {
            let mut v = vec![("range", "bytes=0-9")];
            if let Some(ir) = ir {
                v.push(("if-range", ir));
            }
            plan(&headers(&v), etag, 100)
        };
        assert_eq!(h(None), RangePlan::Partial(0..10));
        assert_eq!(h(Some("\"abc\"")), RangePlan::Partial(0..10));
        assert_eq!(h(Some("\"old\"")), RangePlan::Whole);
        assert_eq!(h(Some("W/\"abc\"")), RangePlan::Whole);
        assert_eq!(h(Some("Sat, 05 Dec 2026 10:00:00 GMT")), RangePlan::Whole);
        assert_eq!(plan(&HeaderMap::new(), etag, 100), RangePlan::Whole);
    }

    #[test]
    fn content_range_values() {
        assert_eq!(content_range(&(0..100), 1000), "bytes 0-99/1000");
        assert_eq!(unsatisfied_range(1000), "bytes */1000");
    }
}
