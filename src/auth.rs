//! Optional API keys. When configured, every data route (`/v1/...`) and `/metrics` need
//! `Authorization: Bearer <key>`; the index, health, readiness and the contract stay open so
//! load balancers and people can find their way. Keys are compared as SHA-256 digests in
//! constant time, against every configured key, so neither timing nor length tells a caller
//! how close a guess was.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::AppError;

/// The configured keys, as digests only.
#[derive(Clone)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.digests.len())
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl ApiKeys {
    /// Keys as given (validated by the configuration).
    pub fn new<S: AsRef<str>>(keys: &[S]) -> Self {
        ApiKeys {
            digests: keys.iter().map(|k| digest(k.as_ref())).collect(),
        }
    }

    /// Whether `presented` is one of the keys, in time independent of which or how close.
    pub fn accepts(&self, presented: &str) -> bool {
        let d = digest(presented);
        let mut found = subtle::Choice::from(0);
        for k in &self.digests {
            found |= k.ct_eq(&d);
        }
        found.into()
    }
}

/// Whether `path` needs a key when keys are configured.
pub fn protected(path: &str) -> bool {
    path.starts_with("/v1/") || path == "/v1" || path == "/metrics"
}

/// Checks a key and tells the caller what to do.
pub fn check(keys: &ApiKeys, authorization: Option<&str>) -> Result<(), AppError> {
    let Some(value) = authorization else {
        return Err(AppError::Unauthorized(
            "this server needs an API key: send the header 'Authorization: Bearer <key>' (ask whoever runs it for a key)".into(),
        ));
    };
    let mut parts = value.trim().splitn(2, ' ');
    let scheme = parts.next().unwrap_or_default();
    let key = parts.next().map(str::trim).unwrap_or_default();
    if !scheme.eq_ignore_ascii_case("bearer") || key.is_empty() {
        return Err(AppError::Unauthorized(
            "the Authorization header must be 'Bearer <key>'".into(),
        ));
    }
    if keys.accepts(key) {
        Ok(())
    } else {
        Err(AppError::Forbidden(
            "this key is not one of this server's API keys: check it for typos or ask for a new one".into(),
        ))
    }
}

/// Middleware: refuses protected paths without a valid key.
pub async fn require_key(State(keys): State<Arc<ApiKeys>>, req: Request, next: Next) -> Response {
    if !protected(req.uri().path()) {
        return next.run(req).await;
    }
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match check(&keys, authorization) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_headers() {
        let keys = ApiKeys::new(&["k1-0123456789abcdef", "k2-0123456789abcdef"]);
        assert!(check(&keys, Some("Bearer k2-0123456789abcdef")).is_ok());
        assert!(check(&keys, Some("bearer  k1-0123456789abcdef ")).is_ok());
        assert!(matches!(check(&keys, None), Err(AppError::Unauthorized(_))));
        assert!(matches!(
            check(&keys, Some("Basic dXNlcjpwYXNz")),
            Err(AppError::Unauthorized(_))
        ));
        assert!(matches!(
            check(&keys, Some("Bearer")),
            Err(AppError::Unauthorized(_))
        ));
        assert!(matches!(
            check(&keys, Some("Bearer k1-0123456789abcdeX")),
            Err(AppError::Forbidden(_))
        ));
        assert!(!format!("{keys:?}").contains("k1"));
        assert!(protected("/v1/datasets") && protected("/metrics"));
        assert!(!protected("/healthz") && !protected("/openapi.yaml") && !protected("/"));
    }
}
