//! Every endpoint and every error, through `build_router` (and once through a real listener).

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{app, assert_problem, call, get, get_with, metric, parse_npy, send};

const ITEM: &str = "/v1/datasets/medmnist/splits/train/items/HeadCT~005001";

#[tokio::test]
async fn index_health_ready_spec_metrics() {
    let (app, _) = app();
    let r = get(&app, "/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["links"]["datasets"], "/v1/datasets");
    assert_eq!(get(&app, "/healthz").await.json()["status"], "ok");
    let ready = get(&app, "/readyz").await.json();
    assert_eq!(ready, serde_json::json!({"status": "ready", "store": "./"}));
    let spec = get(&app, "/openapi.yaml").await;
    assert_eq!(spec.header("content-type"), "application/yaml");
    assert!(String::from_utf8_lossy(&spec.body).starts_with("openapi: 3.1"));
    let m = get(&app, "/metrics").await;
    assert!(String::from_utf8_lossy(&m.body).contains("medserve_storage_get_total"));
}

#[tokio::test]
async fn datasets_listing_names_all_three_layouts_and_no_server_path() {
    let (app, _) = app();
    let r = get(&app, "/v1/datasets").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "application/json");
    let j = r.json();
    let names: Vec<&str> = j
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "Task01_BrainTumour",
            "Task09_Spleen",
            "medmnist",
            "nojson",
            "segmentation"
        ]
    );
    let m = &j[2];
    assert_eq!(m["kind"], "classification");
    assert_eq!(m["splits"], serde_json::json!(["train", "val", "test"]));
    assert_eq!(m["items"], 6 * (12 + 3 + 3));
    // Relative to the data root, never the server's path to it.
    assert_eq!(m["source"], "./medmnist/");
    assert_eq!(j[4]["source"], "./segmentation/");
    let root = common::sample_dir().to_str().unwrap();
    assert!(!String::from_utf8_lossy(&r.body).contains(root));
    assert_eq!(j[0]["kind"], "segmentation");
    assert_eq!(j[0]["layout"], "decathlon");
    assert_eq!(j[1]["layout"], "decathlon");
    assert_eq!(j[3]["layout"], "decathlon");
    assert_eq!(j[4]["layout"], "subject-folders");
    let d = get(&app, "/v1/datasets/Task09_Spleen").await.json();
    assert_eq!(d["source"], "./Task09_Spleen/");
}

#[tokio::test]
async fn dataset_details_have_splits_classes_and_labels() {
    let (app, _) = app();
    let j = get(&app, "/v1/datasets/medmnist").await.json();
    assert_eq!(
        j["splits"][0],
        serde_json::json!({"name": "train", "count": 72})
    );
    let classes = j["classes"].as_array().unwrap();
    assert_eq!(classes.len(), 6);
    assert_eq!(classes[0]["name"], "AbdomenCT");
    assert_eq!(classes[5]["index"], 5);
    assert_eq!(
        classes[2]["counts"],
        serde_json::json!({"train": 12, "val": 3, "test": 3})
    );

    let t = get(&app, "/v1/datasets/Task09_Spleen").await.json();
    assert_eq!(t["labels"]["1"], "spleen");
    assert_eq!(t["info"]["modality"]["0"], "CT");
    // The AppleDouble junk file next to the volumes is not an item.
    assert_eq!(
        t["splits"],
        serde_json::json!([{"name":"train","count":3},{"name":"test","count":1}])
    );
}

#[tokio::test]
async fn splits_and_classes() {
    let (app, _) = app();
    let s = get(&app, "/v1/datasets/segmentation/splits").await.json();
    assert_eq!(
        s,
        serde_json::json!([{"name":"train","count":3},{"name":"valid","count":2}])
    );
    let c = get(&app, "/v1/datasets/medmnist/splits/test/classes")
        .await
        .json();
    assert_eq!(
        c[3],
        serde_json::json!({"name": "ChestCT", "index": 3, "count": 3})
    );
    let r = get(&app, "/v1/datasets/segmentation/splits/train/classes").await;
    assert_problem(&r, 404, "not-applicable");
}

#[tokio::test]
async fn item_pages() {
    let (app, _) = app();
    let j = get(
        &app,
        "/v1/datasets/medmnist/splits/train/items?limit=5&offset=10",
    )
    .await
    .json();
    assert_eq!(
        (
            j["total"].as_u64(),
            j["offset"].as_u64(),
            j["limit"].as_u64()
        ),
        (Some(72), Some(10), Some(5))
    );
    let items = j["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    assert_eq!(items[0]["id"], "AbdomenCT~000011");
    assert_eq!(items[2]["id"], "BreastMRI~001001");
    assert_eq!(items[2]["label"], 1);
    assert_eq!(items[2]["class"], "BreastMRI");

    let j = get(&app, "/v1/datasets/medmnist/splits/train/items?class=Hand")
        .await
        .json();
    assert_eq!(j["total"], 12);
    assert_eq!(j["limit"], 100);
    assert!(
        j["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["label"] == 4)
    );

    let past = get(&app, "/v1/datasets/medmnist/splits/train/items?offset=1000")
        .await
        .json();
    assert_eq!(past["items"], serde_json::json!([]));
    assert_eq!(past["total"], 72);

    let seg = get(&app, "/v1/datasets/Task09_Spleen/splits/test/items")
        .await
        .json();
    assert_eq!(seg["items"][0]["id"], "spleen_1");
    assert_eq!(seg["items"][0]["has_label"], false);
    let tr = get(&app, "/v1/datasets/segmentation/splits/train/items")
        .await
        .json();
    assert_eq!(tr["items"][0]["has_label"], true);
    assert_eq!(
        tr["items"][0]["label_key"],
        "segmentation/train/subject_001/label.nii.gz"
    );
}

#[tokio::test]
async fn item_metadata() {
    let (app, _) = app();
    let j = get(&app, ITEM).await.json();
    assert_eq!(j["class"], "HeadCT");
    assert_eq!(j["label"], 5);
    assert_eq!(j["objects"][0]["key"], "medmnist/train/HeadCT/005001.png");
    assert!(j["objects"][0]["size"].as_u64().unwrap() > 100);
    assert_eq!(
        j["image"],
        serde_json::json!({"format":"png","width":64,"height":64,"channels":1,"bit_depth":8,"color_type":"gray"})
    );
    let s = get(
        &app,
        "/v1/datasets/Task09_Spleen/splits/train/items/spleen_2",
    )
    .await
    .json();
    assert_eq!(s["objects"].as_array().unwrap().len(), 2);
    assert_eq!(s["objects"][1]["role"], "label");
}

#[tokio::test]
async fn image_formats_and_headers() {
    let (app, _) = app();
    let png = get(&app, &format!("{ITEM}/image")).await;
    assert_eq!(png.status, 200);
    assert_eq!(png.header("content-type"), "image/png");
    assert!(png.body.starts_with(b"\x89PNG"));
    assert_eq!(png.header("x-shape"), "1,64,64");
    assert!(png.header("etag").starts_with('"'));
    assert_eq!(png.header("cache-control"), "public, max-age=300");
    let img = image::load_from_memory(&png.body).unwrap();
    assert_eq!((img.width(), img.height()), (64, 64));

    let f = get(&app, &format!("{ITEM}/image?format=f32&size=32,48")).await;
    assert_eq!(f.header("content-type"), "application/octet-stream");
    assert_eq!(f.header("x-shape"), "1,32,48");
    assert_eq!(f.header("x-dtype"), "float32");
    assert_eq!(f.body.len(), 32 * 48 * 4);
    let vals: Vec<f32> = f
        .body
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let (lo, hi) = vals
        .iter()
        .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    assert_eq!((lo, hi), (0.0, 1.0), "ScaleIntensity maps to [0, 1]");

    let n = get(&app, &format!("{ITEM}/image?format=npy")).await;
    assert_eq!(n.header("content-type"), "application/x-npy");
    let (shape, values) = parse_npy(&n.body);
    assert_eq!(shape, [1, 64, 64]);
    assert_eq!(values.len(), 4096);
    assert!(
        n.header("content-disposition")
            .contains("HeadCT~005001.npy")
    );

    // Unscaled values keep their 8-bit range.
    let raw = get(
        &app,
        &format!("{ITEM}/image?format=npy&scale=none&mode=nearest"),
    )
    .await;
    let (_, v) = parse_npy(&raw.body);
    assert!(
        v.iter()
            .all(|x| x.fract() == 0.0 && (0.0..=255.0).contains(x))
    );
    assert!(v.iter().cloned().fold(0.0, f32::max) > 200.0);
}

#[tokio::test]
async fn accept_header_negotiates_and_406_says_what_exists() {
    let (app, _) = app();
    let uri = format!("{ITEM}/image");
    let r = get_with(&app, &uri, &[("accept", "application/x-npy")]).await;
    assert_eq!(r.header("content-type"), "application/x-npy");
    let r = get_with(&app, &uri, &[("accept", "application/octet-stream")]).await;
    assert_eq!(r.header("content-type"), "application/octet-stream");
    let r = get_with(&app, &uri, &[("accept", "text/html,*/*;q=0.8")]).await;
    assert_eq!(r.header("content-type"), "image/png");
    let r = get_with(&app, &uri, &[("accept", "text/html")]).await;
    let j = assert_problem(&r, 406, "not-acceptable");
    assert!(j["detail"].as_str().unwrap().contains("application/x-npy"));
    // An explicit format beats Accept.
    let r = get_with(
        &app,
        &format!("{uri}?format=png"),
        &[("accept", "text/html")],
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn etags_give_304_and_differ_by_transform_and_format() {
    let (app, _) = app();
    let uri = format!("{ITEM}/image");
    let first = get(&app, &uri).await;
    let etag = first.header("etag").to_string();
    let again = get_with(&app, &uri, &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), etag);
    let other = get(&app, &format!("{uri}?mode=nearest")).await;
    assert_ne!(other.header("etag"), etag);
    let npy = get(&app, &format!("{uri}?format=npy")).await;
    assert_ne!(npy.header("etag"), etag);
    // Same parameters, same tag: the canonical chain is the identity.
    assert_eq!(
        get(&app, &format!("{uri}?size=64,64&mode=area&scale=minmax"))
            .await
            .header("etag"),
        etag
    );

    let list = get(&app, "/v1/datasets").await;
    let tag = list.header("etag").to_string();
    assert_eq!(list.header("cache-control"), "no-cache");
    let r = get_with(&app, "/v1/datasets", &[("if-none-match", &tag)]).await;
    assert_eq!(r.status, 304);
}

/// Bodies are cached next to their arrays: a warm request encodes and transforms nothing and
/// answers exactly what the first did (body, ETag, headers), random transforms included; a new
/// format of a cached chain encodes once more from the cached array.
#[tokio::test]
async fn warm_image_requests_are_served_the_cached_body() {
    let (app, _) = app();
    let queries = [
        "",
        "?format=npy",
        "?format=f32",
        "?rand_flip=1&rand_rotate=0.3&rand_rotate_prob=1&seed=7&epoch=2",
    ];
    let mut firsts = Vec::new();
    for q in queries {
        firsts.push(get(&app, &format!("{ITEM}/image{q}")).await);
    }
    let encodes = metric(&app, "medserve_encode_total").await;
    let transforms = metric(&app, "medserve_transform_total").await;
    assert_eq!(encodes, 4);
    for (q, first) in queries.iter().zip(&firsts) {
        assert_eq!(first.status, 200, "{q}");
        let again = get(&app, &format!("{ITEM}/image{q}")).await;
        assert_eq!(again.body, first.body, "{q}");
        for h in [
            "etag",
            "content-type",
            "content-length",
            "content-disposition",
            "cache-control",
            "vary",
            "x-shape",
            "x-dtype",
            "x-augment",
        ] {
            assert_eq!(again.header(h), first.header(h), "{q}: {h}");
        }
    }
    assert!(!firsts[3].header("x-augment").is_empty());
    assert_eq!(metric(&app, "medserve_encode_total").await, encodes);
    assert_eq!(metric(&app, "medserve_transform_total").await, transforms);

    let npy_of_drawn = get(&app, &format!("{ITEM}/image{}&format=npy", queries[3])).await;
    assert_eq!(
        npy_of_drawn.header("x-augment"),
        firsts[3].header("x-augment")
    );
    assert_eq!(metric(&app, "medserve_encode_total").await, encodes + 1);
    assert_eq!(metric(&app, "medserve_transform_total").await, transforms);
}

#[tokio::test]
async fn not_found_errors_say_what_exists() {
    let (app, _) = app();
    let cases = [
        ("/v1/datasets/nope", "dataset-not-found", "medmnist"),
        (
            "/v1/datasets/nope/splits",
            "dataset-not-found",
            "Task09_Spleen",
        ),
        (
            "/v1/datasets/medmnist/splits/nope/classes",
            "split-not-found",
            "train",
        ),
        (
            "/v1/datasets/medmnist/splits/nope/items",
            "split-not-found",
            "val",
        ),
        (
            "/v1/datasets/medmnist/splits/train/items?class=Brain",
            "class-not-found",
            "HeadCT",
        ),
        (
            "/v1/datasets/medmnist/splits/train/items/nope",
            "item-not-found",
            "AbdomenCT~000001",
        ),
        (
            "/v1/datasets/medmnist/splits/train/items/nope/image",
            "item-not-found",
            "page through",
        ),
        ("/v1/nothing", "route-not-found", "/v1/nothing"),
    ];
    for (uri, code, mention) in cases {
        let j = assert_problem(&get(&app, uri).await, 404, code);
        assert!(
            j["detail"].as_str().unwrap().contains(mention),
            "{uri}: {j}"
        );
    }
    let r = get(
        &app,
        "/v1/datasets/Task09_Spleen/splits/train/items/spleen_2/image",
    )
    .await;
    assert_problem(&r, 404, "not-applicable");
}

#[tokio::test]
async fn bad_parameters_are_400_naming_what_is_allowed() {
    let (app, _) = app();
    let img = format!("{ITEM}/image");
    let cases = [
        (format!("{img}?size=0,64"), "size", "1..=4096"),
        (format!("{img}?size=64"), "size", "H,W"),
        (format!("{img}?size=99999,1"), "size", "1..=4096"),
        (
            format!("{img}?mode=cubic"),
            "mode",
            "area, nearest, bilinear",
        ),
        (format!("{img}?scale=zscore"), "scale", "minmax, none"),
        (format!("{img}?channels=3"), "channels", "native, 1"),
        (format!("{img}?palette=rgb"), "palette", "index, expand"),
        (format!("{img}?format=jpeg"), "format", "png, f32, npy"),
        (
            format!("{img}?flip=2"),
            "flip",
            "all, or distinct spatial axes from 0, 1",
        ),
        (format!("{img}?flip=0,0"), "flip", "twice"),
        (format!("{img}?flip="), "flip", "all, or"),
        (format!("{img}?flip=0,"), "flip", "all, or"),
        (format!("{img}?flip=x"), "flip", "all, or"),
        (format!("{img}?flip=-1"), "flip", "all, or"),
        (format!("{img}?rotate=nan"), "rotate", "±1e6"),
        (format!("{img}?rotate=inf"), "rotate", "±1e6"),
        (format!("{img}?rotate=1e7"), "rotate", "±1e6"),
        (format!("{img}?rotate="), "rotate", "±1e6"),
        (format!("{img}?rotate=0.3rad"), "rotate", "±1e6"),
        (format!("{img}?sizes=1,1"), "sizes", "size, mode, scale"),
        (
            format!("{img}?mode=area&mode=nearest"),
            "mode",
            "more than once",
        ),
        (
            "/v1/datasets/medmnist/splits/train/items?limit=0".into(),
            "limit",
            "1..=1000",
        ),
        (
            "/v1/datasets/medmnist/splits/train/items?limit=5000".into(),
            "limit",
            "1..=1000",
        ),
        (
            "/v1/datasets/medmnist/splits/train/items?offset=-1".into(),
            "offset",
            "whole number",
        ),
        ("/v1/datasets?verbose=1".into(), "verbose", "none"),
    ];
    for (uri, param, mention) in cases {
        let j = assert_problem(&get(&app, &uri).await, 400, "invalid-parameter");
        assert_eq!(j["parameter"], param, "{uri}");
        assert!(
            j["detail"].as_str().unwrap().contains(mention),
            "{uri}: {j}"
        );
    }
    // A class filter on a segmentation dataset names a class that does not exist there.
    let j = assert_problem(
        &get(&app, "/v1/datasets/segmentation/splits/train/items?class=x").await,
        404,
        "class-not-found",
    );
    assert_eq!(j["available"], serde_json::json!([]));
    assert!(
        j["detail"]
            .as_str()
            .unwrap()
            .contains("segmentation dataset"),
        "{j}"
    );
}

/// `flip` and `rotate` are part of the chain's canonical text: each changes the ETag; the same
/// flip spelled differently (`all`, `1,0`, `0,1`) is one entry; `rotate=0` is MONAI's
/// `Rotate(0)` (a resampling), not the absent parameter.
#[tokio::test]
async fn flip_and_rotate_name_their_own_results() {
    let (app, _) = app();
    let img = format!("{ITEM}/image?format=npy");
    let etag = |r: &common::Resp| r.headers["etag"].to_str().unwrap().to_string();
    let mut seen = std::collections::BTreeMap::new();
    for q in [
        "",
        "&flip=0",
        "&flip=1",
        "&flip=all",
        "&flip=1,0",
        "&flip=0,1",
        "&rotate=0",
        "&rotate=-0",
        "&rotate=0.3",
        "&rotate=0.30",
        "&rotate=3e-1",
        "&flip=0&rotate=0.3",
    ] {
        let r = get(&app, &format!("{img}{q}")).await;
        assert_eq!(r.status, 200, "{q}: {}", String::from_utf8_lossy(&r.body));
        seen.insert(q, etag(&r));
    }
    let same = |a: &str, b: &str| assert_eq!(seen[a], seen[b], "{a} vs {b}");
    let differ = |a: &str, b: &str| assert_ne!(seen[a], seen[b], "{a} vs {b}");
    same("&flip=all", "&flip=1,0");
    same("&flip=all", "&flip=0,1");
    same("&rotate=0", "&rotate=-0");
    same("&rotate=0.3", "&rotate=0.30");
    same("&rotate=0.3", "&rotate=3e-1");
    for (a, b) in [
        ("", "&flip=0"),
        ("&flip=0", "&flip=1"),
        ("&flip=1", "&flip=all"),
        ("", "&rotate=0"),
        ("&rotate=0", "&rotate=0.3"),
        ("&rotate=0.3", "&flip=0&rotate=0.3"),
    ] {
        differ(a, b);
    }
    // flip=0 mirrors the width (MONAI's axis 0 of its (C, W, H) array), our last axis.
    let (shape, plain) = parse_npy(&get(&app, &img).await.body);
    let (_, flipped) = parse_npy(&get(&app, &format!("{img}&flip=0")).await.body);
    let w = shape[2];
    for (row, frow) in plain.chunks(w).zip(flipped.chunks(w)) {
        assert!(row.iter().eq(frow.iter().rev()));
    }
}

#[tokio::test]
async fn wrong_method_is_405_problem() {
    let (app, _) = app();
    let r = call(&app, Method::DELETE, "/v1/datasets").await;
    assert_problem(&r, 405, "method-not-allowed");
    let r = call(&app, Method::GET, "/v1/catalog/refresh").await;
    assert_problem(&r, 405, "method-not-allowed");
}

#[tokio::test]
async fn head_requests_carry_headers_without_a_body() {
    let (app, _) = app();
    let r = call(&app, Method::HEAD, format!("{ITEM}/image?format=npy")).await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("x-shape"), "1,64,64");
}

#[tokio::test]
async fn cors_lets_browsers_read_arrays() {
    let (app, _) = app();
    let r = get_with(
        &app,
        &format!("{ITEM}/image?format=f32"),
        &[("origin", "http://viewer.test")],
    )
    .await;
    assert_eq!(r.header("access-control-allow-origin"), "*");
    let exposed = r
        .header("access-control-expose-headers")
        .to_ascii_lowercase();
    for h in [
        "etag",
        "content-length",
        "content-range",
        "x-shape",
        "x-dtype",
    ] {
        assert!(exposed.contains(h), "{h} not exposed: {exposed}");
    }
    let pre = send(
        &app,
        Request::options("/v1/datasets")
            .header("origin", "http://viewer.test")
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(pre.status.is_success());
    assert!(
        pre.header("access-control-allow-headers")
            .to_ascii_lowercase()
            .contains("authorization")
    );
}

#[tokio::test]
async fn cors_can_be_limited_to_listed_origins() {
    let s = common::state(std::sync::Arc::new(
        medserve::store::LocalStore::new(common::sample_dir()).unwrap(),
    ));
    let app = medserve::build_router(
        s,
        &medserve::HttpOptions {
            cors: medserve::config::CorsOrigins::List(vec!["https://ok.example".into()]),
            ..Default::default()
        },
    );
    let ok = get_with(&app, "/v1/datasets", &[("origin", "https://ok.example")]).await;
    assert_eq!(
        ok.header("access-control-allow-origin"),
        "https://ok.example"
    );
    let no = get_with(&app, "/v1/datasets", &[("origin", "https://evil.example")]).await;
    assert_eq!(no.header("access-control-allow-origin"), "");
}

#[tokio::test]
async fn compression_for_arrays_and_json_but_never_png() {
    let (app, _) = app();
    let gz = [("accept-encoding", "gzip")];
    let f = get_with(&app, &format!("{ITEM}/image?format=f32"), &gz).await;
    assert_eq!(f.header("content-encoding"), "gzip");
    let j = get_with(&app, "/v1/datasets/medmnist/splits/train/items", &gz).await;
    assert_eq!(j.header("content-encoding"), "gzip");
    let p = get_with(&app, &format!("{ITEM}/image"), &gz).await;
    assert_eq!(p.header("content-encoding"), "");
}

#[tokio::test]
async fn request_ids_are_set_and_propagated() {
    let (app, _) = app();
    let r = get(&app, "/healthz").await;
    assert_eq!(r.header("x-request-id").len(), 36);
    let r = get_with(&app, "/healthz", &[("x-request-id", "abc-123")]).await;
    assert_eq!(r.header("x-request-id"), "abc-123");
}

#[tokio::test]
async fn concurrent_cold_requests_fetch_and_decode_once() {
    let (app, state) = app();
    let uri = format!("{ITEM}/image?format=npy&size=40,40");
    let before = state
        .metrics
        .storage_gets
        .load(std::sync::atomic::Ordering::SeqCst);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (app, uri) = (app.clone(), uri.clone());
            tokio::spawn(async move { get(&app, &uri).await })
        })
        .collect();
    let mut bodies = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        bodies.push(r.body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    let after = state
        .metrics
        .storage_gets
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        after - before,
        1,
        "16 concurrent cold requests, one storage GET"
    );
    assert_eq!(
        state
            .metrics
            .transforms
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    // Another transform of the same image reuses the decoded array: no new GET.
    get(&app, &format!("{ITEM}/image?size=20,20")).await;
    assert_eq!(
        state
            .metrics
            .storage_gets
            .load(std::sync::atomic::Ordering::SeqCst),
        after
    );
    let m = String::from_utf8(get(&app, "/metrics").await.body).unwrap();
    assert!(
        m.contains(&format!("medserve_storage_get_total {after}")),
        "{m}"
    );
}

#[tokio::test]
async fn corrupt_and_oversized_objects_are_422_naming_the_object() {
    let dir = tempfile::tempdir().unwrap();
    let put =
        |rel: &str, bytes: &[u8]| common::put(dir.path(), &format!("bad/all/Class/{rel}"), bytes);
    let good = common::tiny_png();
    put("truncated.png", &good[..good.len() / 2]);
    put("empty.png", b"");
    put("text.png", b"this is not an image");
    put(
        "broken.jpg",
        &[0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F', 0],
    );
    // A PNG header claiming 100000 x 100000 pixels and nothing else.
    let huge = common::png_header_only(100_000, 100_000);
    put("huge.png", &huge);
    put("ok.png", &good);
    let (app, _) = common::app_on(dir.path());
    for (id, code) in [
        ("truncated", "undecodable-object"),
        ("empty", "undecodable-object"),
        ("text", "undecodable-object"),
        ("broken", "undecodable-object"),
        ("huge", "object-too-large"),
    ] {
        for suffix in ["/image", ""] {
            let uri = format!("/v1/datasets/bad/splits/all/items/Class~{id}{suffix}");
            let j = assert_problem(&get(&app, &uri).await, 422, code);
            assert!(
                j["object"].as_str().unwrap().starts_with("bad/all/Class/"),
                "{j}"
            );
            assert!(
                j["detail"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("Class/{id}")),
                "{j}"
            );
        }
    }
    // The server is fine afterwards.
    assert_eq!(
        get(&app, "/v1/datasets/bad/splits/all/items/Class~ok/image")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn objects_over_the_size_limit_are_refused_before_reading() {
    let s = common::state_with_limits(
        std::sync::Arc::new(medserve::store::LocalStore::new(common::sample_dir()).unwrap()),
        medserve::config::Limits {
            max_object_bytes: 100,
            ..Default::default()
        },
    );
    let app = medserve::build_router(s, &medserve::HttpOptions::default());
    let j = assert_problem(
        &get(&app, &format!("{ITEM}/image")).await,
        422,
        "object-too-large",
    );
    assert_eq!(j["object"], "medmnist/train/HeadCT/005001.png");
}

#[tokio::test]
async fn catalog_is_listed_lazily_cached_and_refreshable() {
    let dir = tempfile::tempdir().unwrap();
    let add = |rel: &str| common::put(dir.path(), rel, &common::tiny_png());
    add("ds/train/A/1.png");
    let (app, _) = common::app_on(dir.path());
    assert_eq!(get(&app, "/v1/datasets/ds").await.json()["items"], 1);
    add("ds/train/A/2.png");
    // Within the TTL the listing is reused...
    assert_eq!(get(&app, "/v1/datasets/ds").await.json()["items"], 1);
    // ...until a refresh.
    let r = call(&app, Method::POST, "/v1/catalog/refresh").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["datasets"], 1);
    assert_eq!(get(&app, "/v1/datasets/ds").await.json()["items"], 2);
}

/// Listing documents are cached per catalog snapshot: a repeat is the same bytes and ETag
/// and adds no cache entry; a refresh that changes the catalog changes every document.
#[tokio::test]
async fn listing_documents_are_cached_per_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let add = |rel: &str| common::put(dir.path(), rel, &common::tiny_png());
    add("ds/train/A/1.png");
    let (app, _) = common::app_on(dir.path());
    let uris = [
        "/v1/datasets",
        "/v1/datasets/ds",
        "/v1/datasets/ds/splits",
        "/v1/datasets/ds/splits/train/classes",
        "/v1/datasets/ds/splits/train/items",
        "/v1/datasets/ds/splits/train/items?limit=1&class=A",
    ];
    let mut first = Vec::new();
    for u in uris {
        first.push(get(&app, u).await);
    }
    let entries = metric(&app, "medserve_cache_entries").await;
    for (u, f) in uris.iter().zip(&first) {
        assert_eq!(f.status, 200, "{u}");
        let again = get(&app, u).await;
        assert_eq!(again.body, f.body, "{u}");
        assert_eq!(again.header("etag"), f.header("etag"), "{u}");
        let r = get_with(&app, u, &[("if-none-match", f.header("etag"))]).await;
        assert_eq!(r.status, 304, "{u}");
    }
    assert_eq!(metric(&app, "medserve_cache_entries").await, entries);

    add("ds/train/A/2.png");
    assert_eq!(
        call(&app, Method::POST, "/v1/catalog/refresh").await.status,
        200
    );
    for (u, f) in uris.iter().zip(&first) {
        let now = get(&app, u).await;
        assert_ne!(now.header("etag"), f.header("etag"), "{u}");
    }
    let page = get(&app, "/v1/datasets/ds/splits/train/items").await.json();
    assert_eq!(page["total"], 2);
}

#[tokio::test]
async fn decoding_options_luminance_and_palette() {
    let dir = tempfile::tempdir().unwrap();
    let fx = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/monai2d/inputs");
    let dst = dir.path().join("fx/all/c");
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["rgb_w90_h64.png", "palette_w66_h66.png"] {
        std::fs::copy(fx.join(f), dst.join(f)).unwrap();
    }
    let (app, _) = common::app_on(dir.path());
    let base = "/v1/datasets/fx/splits/all/items";
    let shape = |r: &common::Resp| r.header("x-shape").to_string();
    assert_eq!(
        shape(&get(&app, &format!("{base}/c~rgb_w90_h64/image?format=npy")).await),
        "3,64,64"
    );
    assert_eq!(
        shape(
            &get(
                &app,
                &format!("{base}/c~rgb_w90_h64/image?format=npy&channels=1")
            )
            .await
        ),
        "1,64,64"
    );
    assert_eq!(
        shape(&get(&app, &format!("{base}/c~palette_w66_h66/image?format=npy")).await),
        "1,64,64"
    );
    assert_eq!(
        shape(
            &get(
                &app,
                &format!("{base}/c~palette_w66_h66/image?format=npy&palette=expand")
            )
            .await
        ),
        "3,64,64"
    );
    let meta = get(&app, &format!("{base}/c~palette_w66_h66")).await.json();
    assert_eq!(meta["image"]["color_type"], "palette");
    assert_eq!(meta["image"]["bit_depth"], 4);
    // An RGB PNG renders as an RGB PNG.
    let png = get(&app, &format!("{base}/c~rgb_w90_h64/image")).await;
    assert_eq!(
        image::load_from_memory(&png.body).unwrap().color(),
        image::ColorType::Rgb8
    );
}

#[tokio::test]
async fn a_real_listener_serves_the_same_router() {
    let (app, _) = app();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(
            format!("GET {ITEM}/image?format=npy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.to_ascii_lowercase().contains("x-shape: 1,64,64"));
    let body_at = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(buf[body_at..].starts_with(b"\x93NUMPY"));
    server.abort();
}

#[tokio::test]
async fn a_vanished_data_folder_is_an_outage_not_an_empty_catalog() {
    let dir = tempfile::tempdir().unwrap();
    common::put(dir.path(), "ds/train/A/1.png", &common::tiny_png());
    let (app, _) = common::app_on(dir.path());
    assert_eq!(get(&app, "/v1/datasets/ds").await.status, 200);
    std::fs::remove_dir_all(dir.path()).unwrap();
    let r = call(&app, Method::POST, "/v1/catalog/refresh").await;
    assert_problem(&r, 503, "storage-unavailable");
    assert_eq!(r.header("retry-after"), "5");
    assert_problem(&get(&app, "/readyz").await, 503, "storage-unavailable");
    // The catalog listed before the outage keeps answering.
    assert_eq!(get(&app, "/v1/datasets/ds").await.status, 200);
}

#[tokio::test]
async fn an_expired_listing_is_served_while_it_is_refreshed_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let add = |rel: &str| common::put(dir.path(), rel, &common::tiny_png());
    add("ds/train/A/1.png");
    let s = medserve::state_for_store(
        std::sync::Arc::new(medserve::store::LocalStore::new(dir.path()).unwrap()),
        medserve::config::Limits::default(),
        1 << 20,
        std::time::Duration::ZERO,
        medserve::catalog::CatalogFile {
            discover: true,
            ..Default::default()
        },
        1,
    );
    let app = medserve::build_router(s, &medserve::HttpOptions::default());
    assert_eq!(get(&app, "/v1/datasets/ds").await.json()["items"], 1);
    add("ds/train/A/2.png");
    let mut seen = 0;
    for _ in 0..200 {
        seen = get(&app, "/v1/datasets/ds").await.json()["items"]
            .as_u64()
            .unwrap();
        if seen == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(seen, 2, "the background re-listing picked up the new file");
}

/// State over the sample data with one CPU worker and room for `max_queue` waiting jobs.
fn one_worker_queue(max_queue: usize) -> medserve::AppState {
    medserve::state_for_store(
        std::sync::Arc::new(medserve::store::LocalStore::new(common::sample_dir()).unwrap()),
        medserve::config::Limits {
            max_queue,
            ..Default::default()
        },
        64 << 20,
        std::time::Duration::from_secs(300),
        medserve::catalog::CatalogFile {
            discover: true,
            ..Default::default()
        },
        1,
    )
}

#[tokio::test]
async fn cpu_jobs_queue_up_to_the_limit_then_answer_503() {
    let s = one_worker_queue(0);
    let app = medserve::build_router(s.clone(), &medserve::HttpOptions::default());
    let uri = "/v1/datasets/medmnist/splits/train/items/HeadCT~005001/image?size=17,19";
    // Every worker busy (we hold the only one) and no room to wait: refused at once.
    let held = s.pipeline.pool().hold_worker().unwrap();
    let r = get(&app, uri).await;
    assert_problem(&r, 503, "server-busy");
    assert_eq!(r.header("retry-after"), "5");
    assert_eq!(s.pipeline.pool().queued(), 0);
    drop(held);
    assert_eq!(get(&app, uri).await.status, 200);
}

#[tokio::test]
async fn a_queued_cpu_job_waits_for_a_worker() {
    let s = one_worker_queue(1);
    let app = medserve::build_router(s.clone(), &medserve::HttpOptions::default());
    let held = s.pipeline.pool().hold_worker().unwrap();
    let waiting = {
        let app = app.clone();
        tokio::spawn(async move {
            get(
                &app,
                "/v1/datasets/medmnist/splits/train/items/CXR~002001/image?size=13,11",
            )
            .await
        })
    };
    // Bounded wait until the first job is in the queue.
    for _ in 0..2000 {
        if s.pipeline.pool().queued() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(s.pipeline.pool().queued(), 1);
    let second = get(
        &app,
        "/v1/datasets/medmnist/splits/train/items/Hand~004001/image?size=13,11",
    )
    .await;
    assert_problem(&second, 503, "server-busy");
    drop(held);
    assert_eq!(waiting.await.unwrap().status, 200);
    assert_eq!(s.pipeline.pool().queued(), 0);
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let (app, _) = app();
    let big = send(
        &app,
        Request::post("/v1/catalog/refresh")
            .header("content-length", "70000")
            .body(Body::from(vec![b'x'; 70000]))
            .unwrap(),
    )
    .await;
    let j = assert_problem(&big, 413, "body-too-large");
    assert!(j["detail"].as_str().unwrap().contains("65536"), "{j}");
    let small = send(
        &app,
        Request::post("/v1/catalog/refresh")
            .header("content-length", "2")
            .body(Body::from("{}"))
            .unwrap(),
    )
    .await;
    assert_eq!(small.status, 200);
}

/// A browser's `Accept` (Chromium's navigation header).
const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7";

#[tokio::test]
async fn index_is_the_page_for_browsers_and_json_for_everyone_else() {
    let (app, _) = app();
    let page = get_with(&app, "/", &[("accept", BROWSER_ACCEPT)]).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    assert_eq!(page.header("vary"), "accept");
    assert_eq!(page.header("cache-control"), "no-cache");
    let html = String::from_utf8(page.body.clone()).unwrap();
    assert!(html.starts_with("<!doctype html>") && html.contains("ui/app.js"));
    // The page's ETag answers 304, and differs from the JSON's.
    let etag = page.header("etag").to_string();
    let again = get_with(
        &app,
        "/",
        &[("accept", BROWSER_ACCEPT), ("if-none-match", &etag)],
    )
    .await;
    assert_eq!(again.status, 304);

    // curl (`*/*`), no Accept, a script asking for JSON: the JSON index as before.
    for accept in [
        Some("*/*"),
        None,
        Some("application/json"),
        Some("application/json, text/html"),
    ] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        let r = get_with(&app, "/", &headers).await;
        assert_eq!(r.status, 200, "{accept:?}");
        assert_eq!(r.header("content-type"), "application/json", "{accept:?}");
        assert_eq!(r.header("vary"), "accept", "{accept:?}");
        assert_eq!(r.json()["links"]["datasets"], "/v1/datasets");
        assert_ne!(r.header("etag"), etag);
    }
    // HEAD of the page: headers, no body.
    let head = send(
        &app,
        Request::head("/")
            .header("accept", BROWSER_ACCEPT)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(head.header("content-type"), "text/html; charset=utf-8");
    assert!(head.body.is_empty());
    // Still strict about its query string, whichever representation.
    let r = get_with(&app, "/?x=1", &[("accept", BROWSER_ACCEPT)]).await;
    assert_problem(&r, 400, "invalid-parameter");
}

#[tokio::test]
async fn ui_assets_have_their_content_types_and_validators_and_nothing_else_is_served() {
    let (app, _) = app();
    for (name, ty, cache) in [
        ("app.js", "text/javascript; charset=utf-8", "no-cache"),
        ("style.css", "text/css; charset=utf-8", "no-cache"),
        ("favicon.svg", "image/svg+xml", "no-cache"),
        (
            "niivue-0.69.0.umd.js",
            "text/javascript; charset=utf-8",
            "public, max-age=31536000, immutable",
        ),
        (
            "niivue-LICENSE.txt",
            "text/plain; charset=utf-8",
            "no-cache",
        ),
        ("vendor-README.txt", "text/plain; charset=utf-8", "no-cache"),
    ] {
        let uri = format!("/ui/{name}");
        let r = get(&app, &uri).await;
        assert_eq!(r.status, 200, "{uri}");
        assert_eq!(r.header("content-type"), ty, "{uri}");
        assert_eq!(r.header("cache-control"), cache, "{uri}");
        assert!(!r.body.is_empty(), "{uri}");
        let etag = r.header("etag").to_string();
        assert!(etag.starts_with('"') && etag.len() == 18, "{uri}: {etag}");
        let again = get_with(&app, &uri, &[("if-none-match", &etag)]).await;
        assert_eq!(again.status, 304, "{uri}");
        assert!(again.body.is_empty());
    }
    let license = get(&app, "/ui/niivue-LICENSE.txt").await;
    assert!(String::from_utf8_lossy(&license.body).contains("BSD 2-Clause"));
    // A fixed set of names: anything else, traversal included, is 404 naming what exists.
    for uri in [
        "/ui/nope.js",
        "/ui/index.html",
        "/ui/..%2FCargo.toml",
        "/ui/vendor%2FLICENSE",
    ] {
        let r = get(&app, uri).await;
        assert_problem(&r, 404, "asset-not-found");
        assert!(
            r.json()["available"].as_array().unwrap().len() == 6,
            "{uri}"
        );
    }
    assert_problem(&get(&app, "/ui/").await, 404, "route-not-found");
    assert_problem(&get(&app, "/ui/app.js?v=1").await, 400, "invalid-parameter");
}

/// The page must work behind a reverse proxy under a path prefix: no URL in it may start
/// at the server's root.
#[tokio::test]
async fn the_page_uses_only_relative_urls() {
    let (app, _) = app();
    let html =
        String::from_utf8(get_with(&app, "/", &[("accept", "text/html")]).await.body).unwrap();
    let js = String::from_utf8(get(&app, "/ui/app.js").await.body).unwrap();
    for (name, text) in [("index.html", &html), ("app.js", &js)] {
        for bad in [
            "src=\"/",
            "href=\"/",
            "src='/",
            "href='/",
            "fetch('/",
            "fetch(\"/",
            "fetch(`/",
            "url(/",
            "\"/v1/",
            "'/v1/",
            "`/v1/",
            "\"/ui/",
            "'/ui/",
            "`/ui/",
        ] {
            assert!(!text.contains(bad), "{name} contains {bad}");
        }
        // Nothing from elsewhere either: no absolute URL at all.
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "{name}"
        );
    }
    assert!(html.contains("href=\"ui/style.css\"") && html.contains("src=\"ui/app.js\""));
}

#[tokio::test]
async fn a_preset_given_as_a_window_is_told_which_presets_exist() {
    let (app, _) = app();
    let slice = "/v1/datasets/Task09_Spleen/splits/train/items/spleen_10/slice";
    let r = get(&app, &format!("{slice}?window=ct-abdomen")).await;
    assert_problem(&r, 400, "invalid-parameter");
    let j = r.json();
    assert_eq!(j["parameter"], "window");
    let detail = j["detail"].as_str().unwrap();
    assert!(detail.contains("use preset=ct-abdomen"), "{detail}");
    for preset in [
        "ct-abdomen",
        "ct-lung",
        "ct-bone",
        "ct-brain",
        "ct-soft-tissue",
        "mri",
        "auto",
    ] {
        assert!(j["allowed"].as_str().unwrap().contains(preset), "{j}");
    }
    // Any other bad window names them too, without claiming it was a preset.
    let r = get(&app, &format!("{slice}?window=wide")).await;
    let detail = r.json()["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains("'wide' is not center,width") && detail.contains("preset=<ct-abdomen"),
        "{detail}"
    );
}
