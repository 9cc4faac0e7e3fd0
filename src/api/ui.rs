//! The exploration page: `GET /` for a browser, and its assets under `/ui/{file}`.
//!
//! Every file is compiled into the binary from `ui/` at the crate root, so the page needs
//! nothing installed and loads nothing from outside medserve (workshop machines are often
//! offline, and a page that pulls scripts from a CDN would also leak which data people look
//! at). The set of names is fixed: no request parameter ever reaches the file system.

use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::extract::{Params, Path, RawPairs};
use super::response::{body_etag, not_modified, with_validators};
use crate::error::AppError;

/// The page itself, served at `/` to clients that prefer HTML.
pub const INDEX_HTML: &str = include_str!("../../ui/index.html");

/// The pinned NiiVue release vendored in `ui/vendor/` (see its README there).
pub const NIIVUE_VERSION: &str = "0.69.0";

/// One embedded file.
pub struct Asset {
    /// The name under `/ui/`.
    pub name: &'static str,
    pub content_type: &'static str,
    /// The page's own files are revalidated on every load (a new binary must show its new
    /// page at once, and a 304 costs nothing); the vendored bundle has its version in its
    /// name, so its bytes never change under that name.
    pub cache_control: &'static str,
    pub body: &'static [u8],
}

const REVALIDATE: &str = "no-cache";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Every file `/ui/{file}` serves; any other name is 404.
pub const ASSETS: [Asset; 6] = [
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        cache_control: REVALIDATE,
        body: include_bytes!("../../ui/app.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        cache_control: REVALIDATE,
        body: include_bytes!("../../ui/style.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        cache_control: REVALIDATE,
        body: include_bytes!("../../ui/favicon.svg"),
    },
    Asset {
        name: "niivue-0.69.0.umd.js",
        content_type: "text/javascript; charset=utf-8",
        cache_control: IMMUTABLE,
        body: include_bytes!("../../ui/vendor/niivue-0.69.0.umd.js"),
    },
    Asset {
        name: "niivue-LICENSE.txt",
        content_type: "text/plain; charset=utf-8",
        cache_control: REVALIDATE,
        body: include_bytes!("../../ui/vendor/LICENSE"),
    },
    Asset {
        name: "vendor-README.txt",
        content_type: "text/plain; charset=utf-8",
        cache_control: REVALIDATE,
        body: include_bytes!("../../ui/vendor/README"),
    },
];

/// ETags of the assets (and of the page, last), hashed once: the NiiVue bundle is 2 MB.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| a.body)
        .chain([INDEX_HTML.as_bytes()])
        .map(body_etag)
        .collect()
});

/// A static body with its validators; 304 when the client holds it already.
fn static_response(
    headers: &HeaderMap,
    etag: &str,
    content_type: &'static str,
    cache_control: &'static str,
    body: &'static [u8],
) -> Response {
    let resp = if not_modified(headers, etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
            body,
        )
            .into_response()
    };
    with_validators(resp, etag, cache_control)
}

/// The page, for `GET /` when the client prefers HTML.
pub fn index_html(headers: &HeaderMap) -> Response {
    let etag = &ETAGS[ASSETS.len()];
    static_response(
        headers,
        etag,
        "text/html; charset=utf-8",
        REVALIDATE,
        INDEX_HTML.as_bytes(),
    )
}

/// `GET /ui/{file}`
pub async fn asset(
    headers: HeaderMap,
    Path(file): Path<String>,
    q: RawPairs,
) -> Result<Response, AppError> {
    Params::new(q, &[])?;
    let Some(i) = ASSETS.iter().position(|a| a.name == file) else {
        return Err(AppError::NotFound {
            what: "asset",
            name: file.chars().take(100).collect(),
            available: ASSETS.iter().map(|a| a.name.to_string()).collect(),
            hint: None,
        });
    };
    let a = &ASSETS[i];
    Ok(static_response(
        &headers,
        &ETAGS[i],
        a.content_type,
        a.cache_control,
        a.body,
    ))
}

/// Whether the client prefers HTML to JSON, by the `Accept` header's q-values (RFC 9110
/// §12.5.1: each type takes the q of the most specific range matching it). A browser's
/// `text/html,...,*/*;q=0.8` prefers HTML; curl's `*/*`, no header, and `application/json`
/// keep the JSON index every script and test already reads. On a tie JSON wins unless
/// `text/html` is named more specifically or earlier.
pub fn prefers_html(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    // (q, specificity, position) of the range that decides for `ty/sub`.
    let rank = |ty: &str, sub: &str| -> Option<(f32, u8, usize)> {
        let mut best: Option<(f32, u8, usize)> = None;
        for (i, part) in accept.split(',').enumerate() {
            let mut it = part.split(';');
            let media = it.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = it
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let Some((t, s)) = media.split_once('/') else {
                continue;
            };
            let spec = match (t, s) {
                _ if t == ty && s == sub => 2,
                _ if t == ty && s == "*" => 1,
                ("*", "*") => 0,
                _ => continue,
            };
            if best.is_none_or(|b| spec > b.1) {
                best = Some((q, spec, i));
            }
        }
        best
    };
    let Some((qh, sh, ih)) = rank("text", "html") else {
        return false;
    };
    if qh <= 0.0 {
        return false;
    }
    match rank("application", "json") {
        None => true,
        Some((qj, sj, ij)) => qh > qj || (qh == qj && (sh > sj || (sh == sj && ih < ij))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn browsers_get_html_and_everyone_else_json() {
        let chrome = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7";
        let firefox = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        for a in [
            chrome,
            firefox,
            "text/html",
            "text/*",
            "text/html, application/json",
        ] {
            assert!(prefers_html(&accept(a)), "{a}");
        }
        assert!(!prefers_html(&HeaderMap::new()));
        for a in [
            "*/*",
            "application/json",
            "application/json, text/html",
            "text/html;q=0.5, application/json",
            "text/html;q=0, */*",
            "image/png",
            "*/*, text/*;q=0.1",
        ] {
            assert!(!prefers_html(&accept(a)), "{a}");
        }
    }

    #[test]
    fn asset_names_are_unique_and_plain() {
        for (i, a) in ASSETS.iter().enumerate() {
            assert!(!a.name.contains('/') && !a.body.is_empty(), "{}", a.name);
            assert!(ASSETS[..i].iter().all(|b| b.name != a.name), "{}", a.name);
        }
        assert!(ASSETS.iter().any(|a| a.name.contains(NIIVUE_VERSION)));
    }
}
