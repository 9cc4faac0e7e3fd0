//! Optional API keys: every data route and /metrics need one, health and the contract stay
//! open, CORS keeps working, and the refusals say what to do.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use common::{assert_problem, get, get_with, send};
use medserve::auth::ApiKeys;

const KEY: &str = "workshop-key-0123456789";
const OTHER: &str = "second-key-abcdefghijkl";

fn app_with_keys() -> axum::Router {
    let (_, state) = common::app();
    medserve::build_router(
        state,
        &medserve::HttpOptions {
            api_keys: Some(Arc::new(ApiKeys::new(&[KEY, OTHER]))),
            ..Default::default()
        },
    )
}

fn bearer(k: &str) -> String {
    format!("Bearer {k}")
}

#[tokio::test]
async fn data_routes_need_a_key_and_health_stays_open() {
    let app = app_with_keys();
    for open in ["/", "/healthz", "/readyz", "/openapi.yaml"] {
        assert_eq!(get(&app, open).await.status, 200, "{open}");
    }
    let item = "/v1/datasets/Task09_Spleen/splits/train/items/spleen_10";
    for uri in [
        "/v1/datasets".to_string(),
        "/metrics".into(),
        format!("{item}/slice"),
        format!("{item}/volume.nii.gz"),
        "/v1/nothing-here".into(),
    ] {
        let r = get(&app, &uri).await;
        let j = assert_problem(&r, 401, "unauthorized");
        assert!(
            j["detail"]
                .as_str()
                .unwrap()
                .contains("Authorization: Bearer"),
            "{j}"
        );
        assert_eq!(r.header("www-authenticate"), "Bearer realm=\"medserve\"");
        let wrong = get_with(
            &app,
            &uri,
            &[("authorization", "Bearer not-a-key-000000000")],
        )
        .await;
        assert_problem(&wrong, 403, "forbidden");
        let basic = get_with(&app, &uri, &[("authorization", "Basic dXNlcjpwYXNz")]).await;
        assert_problem(&basic, 401, "unauthorized");
    }
    for k in [KEY, OTHER] {
        let ok = get_with(&app, "/v1/datasets", &[("authorization", &bearer(k))]).await;
        assert_eq!(ok.status, 200);
        let v = get_with(
            &app,
            &format!("{item}/volume?size=8,8,4"),
            &[("authorization", &bearer(k))],
        )
        .await;
        assert_eq!(v.status, 200);
    }
    let m = get_with(&app, "/metrics", &[("authorization", &bearer(KEY))]).await;
    assert_eq!(m.status, 200);
}

#[tokio::test]
async fn cors_preflight_needs_no_key_and_refusals_are_readable_cross_origin() {
    let app = app_with_keys();
    let pre = send(
        &app,
        Request::options("/v1/datasets")
            .header("origin", "https://viewer.example")
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(pre.status.is_success(), "{}", pre.status);
    assert!(
        pre.header("access-control-allow-headers")
            .contains("authorization"),
        "{:?}",
        pre.header("access-control-allow-headers")
    );
    let refused = get_with(
        &app,
        "/v1/datasets",
        &[("origin", "https://viewer.example")],
    )
    .await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("access-control-allow-origin"), "*");
    let ok = get_with(
        &app,
        "/v1/datasets",
        &[
            ("origin", "https://viewer.example"),
            ("authorization", &bearer(KEY)),
        ],
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("access-control-allow-origin"), "*");
}

#[tokio::test]
async fn without_keys_everything_is_open() {
    let (app, _) = common::app();
    assert_eq!(get(&app, "/v1/datasets").await.status, 200);
    assert_eq!(get(&app, "/metrics").await.status, 200);
}
