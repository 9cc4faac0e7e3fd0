//! Query-string parsing, exactly as a request reaches it: the query of an `http::Uri` through
//! axum's `Query::try_from_uri` (what the `RawPairs` extractor runs; its rejection becomes our
//! error), then `Params::new` against a route's allowed names and the route's parsing: the
//! image route (`parse_image_params`, content negotiation) and the item list (`limit`,
//! `offset`, as `list_items` reads them). Errors must be 4xx problem+json responses, never
//! panics. Bytes that no URI holds go straight to serde_urlencoded, the same deserializer.
//!
//! Input layout: `[ACCEPT "\n"] QUERY`. A request's query cannot hold a raw newline, so text
//! before the first one is the `Accept` header; without one there is no `Accept`.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::Query;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::IntoResponse;
use libfuzzer_sys::fuzz_target;
use medserve::api::datasets::ITEM_LIST_PARAMS;
use medserve::api::extract::{Params, RawPairs};
use medserve::api::images::{IMAGE_PARAMS, parse_image_params};
use medserve::api::response;
use medserve::api::volumes::{self, VolumeFormat};
use medserve::error::AppError;
use medserve::store::LocalStore;
use medserve::{AppState, state_for_store};

/// The state `parse_image_params` reads its limits from: the server's defaults, over the
/// system's temp folder (never listed or read; nothing is created).
fn state() -> &'static AppState {
    static STATE: OnceLock<AppState> = OnceLock::new();
    STATE.get_or_init(|| {
        let store = LocalStore::new(std::env::temp_dir()).expect("temp folder as a store");
        state_for_store(
            Arc::new(store),
            Default::default(),
            1 << 20,
            Duration::from_secs(60),
            Default::default(),
            1,
        )
    })
}

/// What the handler would answer with on this error: status, problem+json body and headers.
fn render(e: AppError) {
    let status = e.status();
    assert!(
        status.is_client_error(),
        "a bad query is a 4xx, got {status}: {e}"
    );
    let _ = e.code();
    let _ = e.to_string();
    let resp = e.into_response();
    assert_eq!(resp.status(), status);
}

/// `GET .../items/{item}/image`: the handler's parsing, up to the store.
fn image(raw: RawPairs, state: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    let p = Params::new(raw, IMAGE_PARAMS)?;
    let (chain, explicit) = parse_image_params(&p, state)?;
    let max = state.limits.max_output_side;
    assert!((1..=max).contains(&chain.size.0) && (1..=max).contains(&chain.size.1));
    assert_eq!(chain.decode.max_pixels, state.limits.max_pixels);
    let _ = chain.canonical();
    let format = response::negotiate(explicit, headers)?;
    if explicit.is_some() {
        assert_eq!(Some(format), explicit);
    }
    Ok(())
}

/// `GET .../items`: the names and numbers `list_items` checks before it lists anything.
fn items(raw: RawPairs, state: &AppState) -> Result<(), AppError> {
    let p = Params::new(raw, ITEM_LIST_PARAMS)?;
    let max = state.limits.max_page;
    let limit = p.usize_in("limit", 100.min(max), 1, max)?;
    let offset = p.usize_in("offset", 0, 0, usize::MAX / 2)?;
    assert!((1..=max).contains(&limit) && offset <= usize::MAX / 2);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let (accept, query) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (Some(&data[..i]), &data[i + 1..]),
        None => (None, data),
    };
    let mut headers = HeaderMap::new();
    if let Some(v) = accept.and_then(|a| HeaderValue::from_bytes(a).ok()) {
        headers.insert(header::ACCEPT, v);
    }

    let mut target = b"/v1/q?".to_vec();
    target.extend_from_slice(query);
    let raw = match Uri::try_from(target) {
        Ok(uri) => match Query::<RawPairs>::try_from_uri(&uri) {
            Ok(Query(raw)) => raw,
            Err(rejection) => return render(AppError::from(rejection)),
        },
        Err(_) => match serde_urlencoded::from_bytes::<RawPairs>(query) {
            Ok(raw) => raw,
            Err(_) => return,
        },
    };
    let pairs = raw.0;
    let state = state();
    if let Err(e) = items(RawPairs(pairs.clone()), state) {
        render(e);
    }
    if let Err(e) = image(RawPairs(pairs.clone()), state, &headers) {
        render(e);
    }

    // The slice and volume routes' parsers, through their doc(hidden) wrappers.
    for fixed in [None, Some(VolumeFormat::NiiGz), Some(VolumeFormat::Npz)] {
        if let Err(e) = volumes::fuzz_parse_volume(RawPairs(pairs.clone()), state, fixed) {
            render(e);
        }
    }
    if let Err(e) = volumes::fuzz_parse_slice(RawPairs(pairs.clone()), &headers) {
        render(e);
    }
});
