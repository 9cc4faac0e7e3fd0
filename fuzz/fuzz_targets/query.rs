//! Query-string parsing, exactly as a request reaches it: the query of an `http::Uri` through
//! axum's `Query::try_from_uri` (what the `RawPairs` extractor runs; its rejection becomes our
//! error), then `Params::new` against a route's allowed names and the route's parsing: the
//! image route (`ImageQuery`, content negotiation), the item list (`limit`, `offset`, as
//! `list_items` reads them), the slice, volume and patch routes, and the batch route's
//! position and chain grammars for either kind of dataset. Errors must be 4xx problem+json responses, never
//! panics. Bytes that no URI holds go straight to serde_urlencoded, the same deserializer.
//!
//! Input layout: `[ACCEPT "\n"] QUERY`. A request's query cannot hold a raw newline, so text
//! before the first one is the `Accept` header; without one there is no `Accept`.
#![no_main]

use std::sync::Arc;

use axum::extract::Query;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::IntoResponse;
use libfuzzer_sys::fuzz_target;
use medserve::api::batches::{BATCH_PARAMS, parse_chain, parse_position};
use medserve::api::datasets::ITEM_LIST_PARAMS;
use medserve::api::extract::{Params, RawPairs};
use medserve::api::images::ImageQuery;
use medserve::api::item::{QueryContext, RouteQuery};
use medserve::api::volumes::query::VolumeRequest;
use medserve::cache::Canonical;
use medserve::catalog::{Dataset, Kind, Layout, Processed};
use medserve::config::Limits;
use medserve::error::AppError;
use medserve::pipeline::{PatchQuery, SliceQuery};

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

fn context<'a>(headers: &'a HeaderMap, limits: &'a Limits, path: &'a str) -> QueryContext<'a> {
    QueryContext {
        headers,
        limits,
        path,
    }
}

/// A route's parsing as its extractor runs it, up to the store: names, then the grammar.
fn parse<Q: RouteQuery>(raw: RawPairs, cx: &QueryContext<'_>) -> Result<Q, AppError> {
    let p = Params::new(raw, Q::PARAMS)?;
    Q::parse(&p, cx)
}

/// `GET .../items/{item}/image`: the route's parsing and what it promises.
fn image(raw: RawPairs, cx: &QueryContext<'_>) -> Result<(), AppError> {
    let q: ImageQuery = parse(raw, cx)?;
    let max = cx.limits.max_output_side;
    let chain = q.chain;
    assert!((1..=max).contains(&chain.size.0) && (1..=max).contains(&chain.size.1));
    assert_eq!(chain.decode.max_pixels, cx.limits.max_pixels);
    let _ = chain.canonical();
    Ok(())
}

/// `GET .../items`: the names and numbers `list_items` checks before it lists anything.
fn items(raw: RawPairs, limits: &Limits) -> Result<(), AppError> {
    let p = Params::new(raw, ITEM_LIST_PARAMS)?;
    let max = limits.max_page;
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
    let limits = Limits::default();
    if let Err(e) = items(RawPairs(pairs.clone()), &limits) {
        render(e);
    }
    const ITEM: &str = "/v1/datasets/d/splits/s/items/i";
    if let Err(e) = image(
        RawPairs(pairs.clone()),
        &context(&headers, &limits, &format!("{ITEM}/image")),
    ) {
        render(e);
    }
    // The slice and volume routes' parsers (the volume aliases fix the format by extension).
    for ext in ["", ".nii.gz", ".npz"] {
        let path = format!("{ITEM}/volume{ext}");
        if let Err(e) =
            parse::<VolumeRequest>(RawPairs(pairs.clone()), &context(&headers, &limits, &path))
        {
            render(e);
        }
    }
    if let Err(e) = parse::<SliceQuery>(
        RawPairs(pairs.clone()),
        &context(&headers, &limits, &format!("{ITEM}/slice")),
    ) {
        render(e);
    }
    if let Err(e) = parse::<PatchQuery>(
        RawPairs(pairs.clone()),
        &context(&headers, &limits, &format!("{ITEM}/patches")),
    ) {
        render(e);
    }
    // The batch route: its position, then the chain of either kind of dataset, raw or
    // processed.
    let processed = Arc::new(Processed {
        source_name: "src".into(),
        source: "./src/".into(),
        params: "size=8,8".into(),
        canonical: String::new(),
        medserve_version: String::new(),
        shards: 0,
    });
    for (kind, processed) in [
        (Kind::Classification, None),
        (Kind::Segmentation, None),
        (Kind::Classification, Some(processed.clone())),
        (Kind::Segmentation, Some(processed)),
    ] {
        let ds = Dataset {
            name: "d".into(),
            kind,
            layout: Layout::ClassFolders,
            root: String::new(),
            splits: vec![],
            classes: vec![],
            labels: Default::default(),
            info: Default::default(),
            processed,
        };
        let cx = context(&headers, &limits, "/v1/datasets/d/splits/s/batches/0");
        let parsed = Params::new(RawPairs(pairs.clone()), &BATCH_PARAMS)
            .and_then(|p| parse_position(&p, "0").and_then(|_| parse_chain(&p, &cx, &ds)));
        if let Err(e) = parsed {
            render(e);
        }
    }
});
