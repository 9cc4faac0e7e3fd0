//! The invariants ARCHITECTURE.md states about which module may depend on which, checked on
//! the source text: a module that names a forbidden crate or module anywhere in its code
//! (comments aside) fails here, with the file and line.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, or `dir` itself when it is a file.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    if dir.is_file() {
        return vec![dir.to_path_buf()];
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
    out
}

/// `(file:line, line)` of every code line under `src/<part>` that names one of `forbidden`.
fn offences(part: &str, forbidden: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(part);
    let files = rust_files(&root);
    assert!(
        !files.is_empty(),
        "nothing to check under {}",
        root.display()
    );
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for word in forbidden {
                if code.contains(word) {
                    found.push(format!(
                        "{}:{}: {} ({word})",
                        f.display(),
                        i + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    found
}

fn check(part: &str, forbidden: &[&str], rule: &str) {
    let found = offences(part, forbidden);
    assert!(found.is_empty(), "{rule}:\n{}", found.join("\n"));
}

/// Our HTTP server and what serves requests (the S3 client's own HTTP is the store's business).
const HTTP: &[&str] = &[
    "axum",
    "tower",
    "StatusCode",
    "crate::api",
    "crate::error",
    "AppError",
    "AppState",
    "crate::state",
];

#[test]
fn imaging_does_no_io_and_knows_nothing_of_the_rest() {
    check(
        "imaging",
        &[
            "tokio",
            "std::fs",
            "std::net",
            "async ",
            "crate::store",
            "crate::cache",
            "crate::pipeline",
            "crate::catalog",
            "crate::config",
            "aws_",
        ],
        "imaging/ is pure: no I/O, no async runtime, nothing of ours outside imaging/",
    );
    check("imaging", HTTP, "imaging/ knows no HTTP");
}

#[test]
fn store_and_catalog_know_no_http() {
    check("store", HTTP, "store/ knows no HTTP");
    check("catalog", HTTP, "catalog/ knows no HTTP");
}

#[test]
fn cache_and_pipeline_know_no_http() {
    check("cache", HTTP, "cache/ knows no HTTP");
    check(
        "pipeline",
        HTTP,
        "pipeline/ knows no HTTP (its errors map to HTTP in error.rs)",
    );
    check(
        "cache",
        &["crate::pipeline"],
        "the cache knows nothing of the pipeline that fills it",
    );
}

#[test]
fn api_never_touches_the_store() {
    check(
        "api",
        &["crate::store", "ObjectStore", ".store."],
        "api/ reaches objects only through the pipeline and the catalog",
    );
}
