//! The API is a contract: openapi.yaml and the router must name the same routes, methods and
//! query parameters, and every documented operation must be reachable as documented.

mod common;

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Method, Request};
use serde_json::{Value, json};

const METHODS: [&str; 7] = ["get", "post", "put", "delete", "patch", "head", "options"];

fn spec() -> Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    serde_yaml_ng::from_str(&text).expect("openapi.yaml parses")
}

fn spec_operations(spec: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for m in METHODS {
            if item.get(m).is_some() {
                out.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// Resolves `{"$ref": "#/components/..."}` one level.
fn deref<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let mut cur = spec;
            for part in r.trim_start_matches("#/").split('/') {
                cur = &cur[part];
            }
            cur
        }
        None => v,
    }
}

fn spec_query_params(spec: &Value, path: &str, method: &str) -> BTreeSet<String> {
    let item = &spec["paths"][path];
    let mut params: Vec<&Value> = Vec::new();
    for list in [&item["parameters"], &item[method]["parameters"]] {
        if let Some(a) = list.as_array() {
            params.extend(a.iter().map(|p| deref(spec, p)));
        }
    }
    let mut names = BTreeSet::new();
    for p in params.into_iter().filter(|p| p["in"] == "query") {
        let schema = deref(spec, &p["schema"]);
        if schema["type"] == "object" {
            // The object form (`style: form, explode: true`): each property is one `name=value`
            // pair, and the schema must be closed, as the server refuses unknown names.
            assert_eq!(p["style"], "form", "{path}: {p}");
            assert_eq!(p["explode"], true, "{path}: {p}");
            assert_eq!(schema["additionalProperties"], false, "{path}: {schema}");
            names.extend(schema["properties"].as_object().unwrap().keys().cloned());
        } else {
            names.insert(p["name"].as_str().unwrap().to_string());
        }
    }
    names
}

#[test]
fn router_and_spec_name_the_same_operations() {
    let spec = spec();
    let in_spec = spec_operations(&spec);
    let in_router: BTreeSet<(String, String)> = medserve::api::routes()
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    let missing_in_spec: Vec<_> = in_router.difference(&in_spec).collect();
    let missing_in_router: Vec<_> = in_spec.difference(&in_router).collect();
    assert!(
        missing_in_spec.is_empty() && missing_in_router.is_empty(),
        "routes not in openapi.yaml: {missing_in_spec:?}; operations in openapi.yaml without a route: {missing_in_router:?}"
    );
}

#[test]
fn router_and_spec_name_the_same_query_parameters() {
    let spec = spec();
    for r in medserve::api::routes() {
        let documented = spec_query_params(&spec, r.path, &r.method.as_str().to_lowercase());
        let accepted: BTreeSet<String> = r.query.iter().map(|s| s.to_string()).collect();
        assert_eq!(documented, accepted, "{} {}", r.method, r.path);
    }
}

#[test]
fn every_operation_documents_its_errors_as_problem_json() {
    let spec = spec();
    for (method, path) in spec_operations(&spec) {
        let op = &spec["paths"][&path][method.to_lowercase()];
        assert!(
            op["operationId"].is_string(),
            "{method} {path}: operationId"
        );
        let responses = op["responses"].as_object().expect("responses");
        for (status, resp) in responses {
            let resp = deref(&spec, resp);
            if status.starts_with('4') || status.starts_with('5') {
                assert!(
                    resp["content"].get("application/problem+json").is_some(),
                    "{method} {path} {status} must be problem+json"
                );
            }
        }
        if path.starts_with("/v1/") {
            for s in ["400", "503"] {
                assert!(
                    responses.contains_key(s),
                    "{method} {path} documents no {s}"
                );
            }
        }
    }
}

/// Fills path parameters with values that exist in the sample data: a segmentation item for
/// the volume routes, a classification item for the rest.
fn concrete(path: &str) -> String {
    let (dataset, item) =
        if path.ends_with("/slice") || path.contains("/volume") || path.ends_with("/patches") {
            ("Task09_Spleen", "spleen_10")
        } else {
            ("medmnist", "HeadCT~005001")
        };
    path.replace("{dataset}", dataset)
        .replace("{split}", "train")
        .replace("{item}", item)
        .replace("{batch}", "0")
        .replace("{file}", "app.js")
}

/// The smallest valid body of an operation that needs one.
fn body_of(path: &str) -> Body {
    if path.ends_with("/batch") {
        Body::from(r#"{"ids": ["HeadCT~005001"]}"#)
    } else {
        Body::empty()
    }
}

/// `?name=example&...` for the required properties of an operation's object query (each
/// with its first documented example), or nothing.
fn required_query(spec: &Value, path: &str, method: &str) -> String {
    let mut pairs = Vec::new();
    let params = spec["paths"][path][method]["parameters"].as_array();
    for p in params.into_iter().flatten().map(|p| deref(spec, p)) {
        let schema = deref(spec, &p["schema"]);
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap();
            let example = &schema["properties"][name]["examples"][0];
            let value = match example {
                Value::String(s) => s.clone(),
                Value::Null => panic!("{path}: required '{name}' has no example"),
                v => v.to_string(),
            };
            pairs.push(format!("{name}={value}"));
        }
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    }
}

#[tokio::test]
async fn every_documented_operation_is_served_and_others_are_405() {
    let (app, _) = common::app();
    let spec = spec();
    for (method, path) in spec_operations(&spec) {
        let uri = concrete(&path) + &required_query(&spec, &path, &method.to_lowercase());
        let req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(&uri)
            .body(body_of(&path))
            .unwrap();
        let r = common::send(&app, req).await;
        assert!(
            r.status.is_success(),
            "{method} {uri}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        let documented = &spec["paths"][&path][method.to_lowercase()]["responses"];
        assert!(
            documented.get(r.status.as_str()).is_some(),
            "{method} {uri} answered {} which is not documented",
            r.status
        );
        let wrong = Request::builder()
            .method(Method::DELETE)
            .uri(&uri)
            .body(Body::empty())
            .unwrap();
        assert_eq!(common::send(&app, wrong).await.status, 405, "DELETE {uri}");
    }
}

/// Every catalog document of a data root (the index, the listing, each dataset, split, class
/// list, item page and item), plus errors of each kind, checked against its documented schema.
/// Returns how many bodies were checked and every violation found.
async fn crawl(app: &axum::Router) -> (usize, Vec<String>) {
    let mut uris: Vec<(Method, String)> = [
        "/",
        "/healthz",
        "/readyz",
        "/v1/datasets",
        "/v1/datasets/nope",
        "/v1/datasets?x=1",
    ]
    .iter()
    .map(|u| (Method::GET, u.to_string()))
    .collect();
    uris.push((Method::POST, "/v1/catalog/refresh".into()));
    let list = common::get(app, "/v1/datasets").await.json();
    for ds in list.as_array().expect("a list") {
        let base = ds["url"].as_str().unwrap().to_string();
        uris.push((Method::GET, base.clone()));
        uris.push((Method::GET, format!("{base}/splits")));
        uris.push((Method::GET, format!("{base}/splits/nope/items")));
        for sp in ds["splits"].as_array().unwrap() {
            let sp = format!("{base}/splits/{}", sp.as_str().unwrap());
            uris.push((Method::GET, format!("{sp}/classes")));
            uris.push((Method::GET, format!("{sp}/items?class=nope")));
            uris.push((Method::GET, format!("{sp}/items/nope")));
            let page = format!("{sp}/items?limit=1000");
            uris.push((Method::GET, page.clone()));
            for it in common::get(app, &page).await.json()["items"]
                .as_array()
                .unwrap()
            {
                uris.push((Method::GET, it["url"].as_str().unwrap().to_string()));
            }
        }
    }
    let mut problems = Vec::new();
    for (method, uri) in &uris {
        let r = common::call(app, method.clone(), uri).await;
        problems.extend(common::schema::violations(method.as_str(), uri, &r));
    }
    (uris.len(), problems)
}

#[tokio::test]
async fn every_catalog_document_of_the_sample_data_matches_its_schema() {
    let (app, _) = common::app();
    let (checked, problems) = crawl(&app).await;
    assert!(checked > 150, "only {checked} documents");
    assert!(
        problems.is_empty(),
        "{} of {checked} responses break openapi.yaml:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

fn png_of(w: u32, h: u32, color: png::ColorType, depth: png::BitDepth, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(color);
    enc.set_depth(depth);
    if color == png::ColorType::Indexed {
        enc.set_palette(vec![0, 0, 0, 255, 0, 0, 0, 255, 0, 255, 255, 255]);
    }
    let mut wr = enc.write_header().unwrap();
    wr.write_image_data(data).unwrap();
    wr.finish().unwrap();
    out
}

/// Layouts as found on data we did not make: `dataset.json` with only some keys, nnU-Net v2
/// label maps, unreadable or empty ones, one whose training list names no file; subject folders
/// with a missing image or mask; a classification set at the data root itself with JPEG,
/// 16-bit and palette PNGs. Every catalog document must still match openapi.yaml.
#[tokio::test]
async fn catalog_documents_of_layouts_found_in_the_wild_match_their_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sample = common::sample_dir().join("nojson");
    let copy = |from: &str, to: &str| {
        let bytes = std::fs::read(sample.join(from)).unwrap();
        common::put(d, to, &bytes);
    };
    let (img, lab, nolab) = (
        "imagesTr/case_001.nii.gz",
        "labelsTr/case_001.nii.gz",
        "imagesTr/case_002.nii.gz",
    );
    // Only a name and labels for some values; pairs found by file name.
    common::put(
        d,
        "partial/dataset.json",
        br#"{"name": "Partial", "labels": {"0": "background"}}"#,
    );
    copy(img, "partial/imagesTr/a.nii.gz");
    copy(lab, "partial/labelsTr/a.nii.gz");
    copy(nolab, "partial/imagesTs/b.nii.gz");
    // nnU-Net v2's label map (name -> value) and keys the Decathlon never had.
    common::put(
        d,
        "nnunet/dataset.json",
        br#"{"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1, "lesion": 2},
            "numTraining": 1, "file_ending": ".nii.gz"}"#,
    );
    copy(img, "nnunet/imagesTr/c.nii.gz");
    copy(lab, "nnunet/labelsTr/c.nii.gz");
    common::put(d, "broken/dataset.json", b"{\"name\": ");
    copy(img, "broken/imagesTr/d.nii.gz");
    common::put(d, "empty/dataset.json", b"{}");
    copy(nolab, "empty/imagesTr/e.nii.gz");
    common::put(
        d,
        "stale/dataset.json",
        br#"{"training": [{"image": "./imagesTr/gone.nii.gz", "label": null}], "test": []}"#,
    );
    copy(img, "stale/imagesTr/f.nii.gz");
    // A subject without a mask, and a mask without its image (not an item).
    copy(nolab, "subjects/train/s1/img.nii.gz");
    copy(lab, "subjects/train/s2/label.nii.gz");
    // The data root itself is a classification set (split `all`).
    common::put(d, "CXR/1.png", &common::tiny_png());
    let px16: Vec<u8> = (0u16..64).flat_map(|v| (v * 1000).to_be_bytes()).collect();
    let g16 = png_of(
        8,
        8,
        png::ColorType::Grayscale,
        png::BitDepth::Sixteen,
        &px16,
    );
    common::put(d, "CXR/2.png", &g16);
    let pal = png_of(
        8,
        8,
        png::ColorType::Indexed,
        png::BitDepth::Eight,
        &[2u8; 64],
    );
    common::put(d, "Hand/3.png", &pal);
    let mut jpg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, 90)
        .encode(&[128u8; 64], 8, 8, image::ExtendedColorType::L8)
        .unwrap();
    common::put(d, "Hand/4.jpg", &jpg);

    let (app, _) = common::app_on(d);
    let (checked, problems) = crawl(&app).await;
    assert!(
        problems.is_empty(),
        "{} of {checked} responses break openapi.yaml:\n{}",
        problems.len(),
        problems.join("\n")
    );

    let list = common::get(&app, "/v1/datasets").await.json();
    let by_name = |n: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|ds| ds["name"] == n)
            .unwrap_or_else(|| panic!("no dataset {n} in {list}"))
            .clone()
    };
    let root = list
        .as_array()
        .unwrap()
        .iter()
        .find(|ds| ds["kind"] == "classification")
        .unwrap();
    assert_eq!(
        (&root["source"], &root["splits"]),
        (&json!("./"), &json!(["all"]))
    );
    assert_eq!(
        by_name("stale")["items"],
        0,
        "a training list of missing files"
    );
    assert_eq!(by_name("stale")["splits"], json!([]));
    assert_eq!(by_name("subjects")["items"], 1);

    let item =
        |ds: &str, split: &str, id: &str| format!("/v1/datasets/{ds}/splits/{split}/items/{id}");
    let names = |j: &Value| -> Vec<Value> {
        j["label"]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].clone())
            .collect()
    };
    let p = common::get(&app, "/v1/datasets/partial").await.json();
    assert_eq!(p["info"], json!({"name": "Partial"}));
    assert_eq!(p["labels"], json!({"0": "background"}));
    let a = common::get(&app, &item("partial", "train", "a"))
        .await
        .json();
    assert_eq!(names(&a), [json!("background"), Value::Null, Value::Null]);
    let n = common::get(&app, "/v1/datasets/nnunet").await.json();
    assert_eq!(
        n["labels"],
        json!({"0": "background", "1": "organ", "2": "lesion"})
    );
    assert_eq!(n["info"]["file_ending"], ".nii.gz");
    let c = common::get(&app, &item("nnunet", "train", "c"))
        .await
        .json();
    assert_eq!(
        names(&c),
        [json!("background"), json!("organ"), json!("lesion")]
    );
    let b = common::get(&app, "/v1/datasets/broken").await.json();
    assert_eq!((&b["labels"], &b["info"]), (&json!({}), &json!({})));
}
