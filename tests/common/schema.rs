//! Response bodies against the schemas `openapi.yaml` documents for them (JSON Schema 2020-12,
//! checked with the `jsonschema` crate): the route template a path matches, the documented
//! response of the status, the schema of the content type.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde_json::{Value, json};

use super::Resp;

/// The spec as JSON, read once per test binary.
pub fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml"))
            .expect("openapi.yaml");
        serde_yaml_ng::from_str(&text).expect("openapi.yaml parses")
    })
}

/// Resolves a `$ref` to `#/components/...` (one level).
fn deref(v: &Value) -> &Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .trim_start_matches("#/")
            .split('/')
            .fold(spec(), |cur, part| &cur[part]),
        None => v,
    }
}

/// The spec's path template a concrete path matches (`/v1/datasets/medmnist` ->
/// `/v1/datasets/{dataset}`); literal segments win over parameters.
pub fn template_of(path: &str) -> Option<String> {
    let segs: Vec<&str> = path.split('/').collect();
    spec()["paths"]
        .as_object()?
        .keys()
        .filter(|t| {
            let ts: Vec<&str> = t.split('/').collect();
            ts.len() == segs.len()
                && ts.iter().zip(&segs).all(|(t, s)| {
                    (t.starts_with('{') && t.ends_with('}') && !s.is_empty()) || t == s
                })
        })
        .min_by_key(|t| t.matches('{').count())
        .cloned()
}

type Validators = Mutex<HashMap<String, &'static jsonschema::Validator>>;

/// One compiled validator per schema location, kept for the test binary's life.
fn validator(pointer: &str, schema: &Value) -> &'static jsonschema::Validator {
    static CACHE: OnceLock<Validators> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut map = cache.lock().unwrap();
    map.entry(pointer.to_string()).or_insert_with(|| {
        // The schema with the spec's components beside it, so `#/components/...` resolves.
        let root = json!({"allOf": [schema], "components": spec()["components"]});
        let v = jsonschema::draft202012::new(&root)
            .unwrap_or_else(|e| panic!("{pointer}: not a valid JSON Schema: {e}"));
        Box::leak(Box::new(v))
    })
}

/// Checks a JSON (or problem+json) body against the schema documented for `method path` and
/// the response's status and content type. Returns the problems found (empty: conforms);
/// bodies of other media types are only checked to be documented.
pub fn violations(method: &str, uri: &str, r: &Resp) -> Vec<String> {
    let path = uri.split('?').next().unwrap_or(uri);
    let Some(template) = template_of(path) else {
        return vec![format!("{method} {uri}: no path of openapi.yaml matches")];
    };
    let op = &spec()["paths"][&template][method.to_lowercase()];
    let status = r.status.as_str();
    let Some(resp) = op["responses"]
        .get(status)
        .or_else(|| op["responses"].get("default"))
    else {
        return vec![format!("{method} {uri}: status {status} is not documented")];
    };
    let resp = deref(resp);
    let ctype = r.header("content-type");
    let media = ctype.split(';').next().unwrap_or("").trim();
    if resp.get("content").is_none() {
        return Vec::new();
    }
    let Some(content) = resp["content"].get(media) else {
        return vec![format!(
            "{method} {uri}: {status} as {media} is not documented (documented: {})",
            resp["content"]
        )];
    };
    if !media.ends_with("json") {
        return Vec::new();
    }
    let body = r.json();
    // A `oneOf` with a discriminator: check the branch the body names, so a violation is
    // reported as itself rather than as "matches none of the branches".
    let mut schema = content["schema"].clone();
    let mut pointer = format!("{template} {method} {status} {media}");
    let d = &deref(&content["schema"])["discriminator"];
    if let Some(branch) = d["propertyName"]
        .as_str()
        .and_then(|p| body[p].as_str())
        .and_then(|v| d["mapping"][v].as_str())
    {
        pointer = branch.to_string();
        schema = json!({ "$ref": branch });
    }
    validator(&pointer, &schema)
        .iter_errors(&body)
        .map(|e| {
            let mut what = e.to_string();
            if what.len() > 300 {
                what.truncate(300);
                what.push_str("...");
            }
            format!(
                "{method} {uri} ({status}): {what} at '{}' (schema {})",
                e.instance_path(),
                e.schema_path()
            )
        })
        .collect()
}
