//! HTTP surface: one table of routes (so tests can compare it with openapi.yaml), the
//! middleware stack, and the fallbacks that keep every error in problem+json.

use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::http::{HeaderName, Method, header};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get, post};
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, NotForContentType, Predicate};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::config::CorsOrigins;
use crate::error::AppError;
use crate::pipeline::{PatchQuery, SliceQuery};
use crate::state::AppState;
use images::ImageQuery;
use item::RouteQuery;
use volumes::query::VolumeRequest;

pub mod augment;
pub mod batches;
pub mod datasets;
pub mod explore;
pub mod extract;
pub mod files;
pub mod images;
pub mod item;
pub mod ops;
pub mod ranges;
pub mod response;
pub mod ui;
pub mod versions;
pub mod volumes;

/// One route: its path (axum syntax, which is also OpenAPI's), method, the query parameters
/// its handler accepts, and the handler.
pub struct Route {
    pub path: &'static str,
    pub method: Method,
    /// Every route under `/v1/datasets/{dataset}` (but `.../versions`) also takes `version`,
    /// and every route of one item `version_id` and `label_version_id`.
    pub query: Vec<&'static str>,
    pub handler: MethodRouter<AppState>,
}

/// The volume route and its aliases, whose extension fixes the format.
const VOLUME_PATHS: [&str; 5] = [
    "/v1/datasets/{dataset}/splits/{split}/items/{item}/volume",
    "/v1/datasets/{dataset}/splits/{split}/items/{item}/volume.nii.gz",
    "/v1/datasets/{dataset}/splits/{split}/items/{item}/volume.nii",
    "/v1/datasets/{dataset}/splits/{split}/items/{item}/volume.npy",
    "/v1/datasets/{dataset}/splits/{split}/items/{item}/volume.npz",
];

/// Every route we serve. `build_router` mounts exactly these; the contract test checks that
/// openapi.yaml names exactly these.
pub fn routes() -> Vec<Route> {
    let q = |path: &'static str, method, query: &'static [&'static str], handler| {
        let mut query = query.to_vec();
        if path.starts_with("/v1/datasets/{dataset}") && !path.ends_with("/versions") {
            query.push(extract::VERSION);
        }
        if path.contains("/items/{item}") {
            query.extend(extract::OBJECT_VERSIONS);
        }
        Route {
            path,
            method,
            query,
            handler,
        }
    };
    let r = |path, method, handler| q(path, method, &[], handler);
    let mut table = vec![
        r("/", Method::GET, get(ops::index)),
        r("/ui/{file}", Method::GET, get(ui::asset)),
        r("/healthz", Method::GET, get(ops::healthz)),
        r("/readyz", Method::GET, get(ops::readyz)),
        r("/openapi.yaml", Method::GET, get(ops::openapi)),
        r("/metrics", Method::GET, get(ops::metrics)),
        r("/v1/catalog/refresh", Method::POST, post(ops::refresh)),
        r("/v1/datasets", Method::GET, get(datasets::list_datasets)),
        r(
            "/v1/datasets/{dataset}",
            Method::GET,
            get(datasets::get_dataset),
        ),
        r(
            "/v1/datasets/{dataset}/versions",
            Method::GET,
            get(versions::list_versions),
        ),
        r(
            "/v1/datasets/{dataset}/splits",
            Method::GET,
            get(datasets::list_splits),
        ),
        r(
            "/v1/datasets/{dataset}/splits/{split}/classes",
            Method::GET,
            get(datasets::list_classes),
        ),
        q(
            "/v1/datasets/{dataset}/splits/{split}/items",
            Method::GET,
            datasets::ITEM_LIST_PARAMS,
            get(datasets::list_items),
        ),
        r(
            "/v1/datasets/{dataset}/splits/{split}/items/{item}",
            Method::GET,
            get(datasets::get_item),
        ),
        q(
            "/v1/datasets/{dataset}/splits/{split}/items/{item}/image",
            Method::GET,
            ImageQuery::PARAMS,
            get(images::get_image),
        ),
        q(
            "/v1/datasets/{dataset}/splits/{split}/items/{item}/file",
            Method::GET,
            files::FileQuery::PARAMS,
            get(files::get_file),
        ),
        q(
            "/v1/datasets/{dataset}/splits/{split}/items/{item}/slice",
            Method::GET,
            SliceQuery::PARAMS,
            get(volumes::get_slice),
        ),
        q(
            "/v1/datasets/{dataset}/splits/{split}/batches",
            Method::GET,
            batches::PLAN_PARAMS,
            get(batches::get_plan),
        ),
        q(
            "/v1/datasets/{dataset}/splits/{split}/batches/{batch}",
            Method::GET,
            &batches::BATCH_PARAMS,
            get(batches::get_batch),
        ),
        q(
            "/v1/datasets/{dataset}/splits/{split}/batch",
            Method::POST,
            batches::POST_PARAMS,
            post(batches::post_batch),
        ),
        r(
            "/v1/datasets/{dataset}/stats",
            Method::GET,
            get(explore::get_stats),
        ),
        q(
            "/v1/datasets/{dataset}/splits/{split}/items/{item}/histogram",
            Method::GET,
            explore::HistogramQuery::PARAMS,
            get(explore::get_histogram),
        ),
        q(
            "/v1/datasets/{dataset}/splits/{split}/montage",
            Method::GET,
            explore::MONTAGE_PARAMS,
            get(explore::get_montage),
        ),
        q(
            "/v1/datasets/{dataset}/splits/{split}/items/{item}/patches",
            Method::GET,
            PatchQuery::PARAMS,
            get(volumes::get_patches),
        ),
    ];
    // One handler: an alias fixes the format by its extension.
    for path in VOLUME_PATHS {
        table.push(q(
            path,
            Method::GET,
            VolumeRequest::PARAMS,
            get(volumes::get_volume),
        ));
    }
    table
}

/// HTTP-level options that are not part of the handlers' state.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub cors: CorsOrigins,
    pub request_timeout: Duration,
    /// When set, `/v1/...` and `/metrics` need one of these keys.
    pub api_keys: Option<std::sync::Arc<crate::auth::ApiKeys>>,
    /// Largest request body accepted, in bytes (no route reads one; this bounds what a
    /// client can make the server receive).
    pub max_body_bytes: u64,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            cors: CorsOrigins::Any,
            request_timeout: Duration::from_secs(60),
            api_keys: None,
            max_body_bytes: 64 << 10,
        }
    }
}

/// A body announced (or streamed) beyond `max` bytes; bodies without a length are bounded
/// where they are read, and no route reads one.
fn body_too_large(req: &axum::extract::Request, max: u64) -> Option<AppError> {
    let len = req
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse::<u64>()
        .ok()?;
    (len > max).then_some(AppError::BodyTooLarge(len, max))
}

async fn no_route(uri: axum::http::Uri) -> AppError {
    AppError::NoRoute(uri.path().chars().take(200).collect())
}

async fn wrong_method() -> AppError {
    AppError::MethodNotAllowed
}

async fn timed_out(err: tower::BoxError) -> axum::response::Response {
    if err.is::<tower::timeout::error::Elapsed>() {
        AppError::Busy("the request took longer than the configured timeout".into()).into_response()
    } else {
        AppError::Internal(err.to_string()).into_response()
    }
}

fn cors_layer(cors: &CorsOrigins) -> CorsLayer {
    let origin = match cors {
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => AllowOrigin::list(
            list.iter()
                .filter_map(|o| o.parse().ok())
                .collect::<Vec<_>>(),
        ),
    };
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([Method::GET, Method::HEAD, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::ACCEPT,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            header::RANGE,
            header::IF_RANGE,
        ])
        .expose_headers([
            header::ETAG,
            header::CONTENT_LENGTH,
            header::CONTENT_RANGE,
            header::ACCEPT_RANGES,
            header::CONTENT_DISPOSITION,
            response::X_SHAPE,
            response::X_DTYPE,
            response::X_AUGMENT,
            HeaderName::from_static("x-request-id"),
        ])
        .max_age(Duration::from_secs(3600))
}

/// Largest body compressed on the fly. Compression runs on the async runtime's threads, not
/// in the CPU pool: a large array body (a batch, a volume, patches; float arrays shrink little)
/// would hold a runtime thread for seconds per request (a schema-valid 500 MB patch response
/// took more than 10 s gzipped). Past this, bodies go as they are.
pub const MAX_COMPRESSED_BYTES: u64 = 32 << 20;

/// Never compress a partial body (206): its `Content-Range` counts the bytes of the
/// representation itself, which a content coding would change. Whole bodies of ranged routes
/// may still be compressed (a `.nii` is; `.gz` files never are, by their media type).
#[derive(Debug, Clone, Copy)]
struct NotPartial;

impl Predicate for NotPartial {
    fn should_compress<B: axum::body::HttpBody>(&self, response: &axum::http::Response<B>) -> bool {
        !response.headers().contains_key(header::CONTENT_RANGE)
    }
}

/// Compress only bodies of known size up to `.0` bytes.
#[derive(Debug, Clone, Copy)]
struct SizeAtMost(u64);

impl Predicate for SizeAtMost {
    fn should_compress<B: axum::body::HttpBody>(&self, response: &axum::http::Response<B>) -> bool {
        response
            .body()
            .size_hint()
            .exact()
            .is_some_and(|n| n <= self.0)
    }
}

/// The application: routes, fallbacks and middleware. Tests and `main` use the same one.
///
/// Middleware, outermost first: request id (so every log line and response carries it) ->
/// trace -> CORS (so even errors and timeouts are readable cross-origin) -> compression
/// (JSON, f32 and npy only: never PNG or `.gz`) -> timeout (answers 503 problem+json).
pub fn build_router(state: AppState, http: &HttpOptions) -> Router {
    let mut router: Router<AppState> = Router::new();
    let mut table = routes();
    // axum wants one MethodRouter per path: merge the methods of equal paths.
    table.sort_by_key(|r| r.path);
    let mut i = 0;
    while i < table.len() {
        let path = table[i].path;
        let mut mr: MethodRouter<AppState> = MethodRouter::new();
        while i < table.len() && table[i].path == path {
            mr = mr.merge(std::mem::replace(
                &mut table[i].handler,
                MethodRouter::new(),
            ));
            i += 1;
        }
        router = router.route(path, mr.fallback(wrong_method));
    }
    let compress = DefaultPredicate::new()
        .and(NotForContentType::const_new("application/gzip"))
        .and(NotForContentType::const_new("application/x-gzip"))
        .and(SizeAtMost(MAX_COMPRESSED_BYTES))
        .and(NotPartial);
    let x_request_id = HeaderName::from_static("x-request-id");
    let mut router = router.fallback(no_route);
    if let Some(keys) = &http.api_keys {
        // Inside CORS: preflights are answered before any key is asked for, and refusals
        // carry the CORS headers so a browser can read them.
        router = router.layer(axum::middleware::from_fn_with_state(
            keys.clone(),
            crate::auth::require_key,
        ));
    }
    let max_body = http.max_body_bytes;
    router = router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| async move {
            match body_too_large(&req, max_body) {
                Some(e) => e.into_response(),
                None => next.run(req).await,
            }
        },
    ));
    router
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(x_request_id.clone(), MakeRequestUuid))
                .layer(PropagateRequestIdLayer::new(x_request_id))
                .layer(
                    TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                        let id = req
                            .headers()
                            .get("x-request-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-");
                        tracing::info_span!("request", method = %req.method(), uri = %req.uri(), request_id = %id)
                    }),
                )
                .layer(cors_layer(&http.cors))
                .layer(CompressionLayer::new().compress_when(compress))
                .layer(HandleErrorLayer::new(timed_out))
                .timeout(http.request_timeout),
        )
        .with_state(state)
}
