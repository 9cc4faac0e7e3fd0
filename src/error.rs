//! The one error type every handler returns, rendered as RFC 9457 `application/problem+json`.
//!
//! Each variant fixes its HTTP status and a stable kebab-case `code` that clients can match on.
//! Messages are public: they name what was wrong and what is allowed. Details of 5xx errors are
//! logged, never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::pipeline::PipelineError;
use crate::store::StoreError;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Seconds a client should wait before retrying after a 503.
pub const RETRY_AFTER_SECS: u64 = 5;

/// Every failure a request can end in.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppError {
    /// 404: a dataset, split, class or item that does not exist; `available` lists what does.
    #[error("{what} '{name}' not found")]
    NotFound {
        what: &'static str,
        name: String,
        available: Vec<String>,
        /// Where to look when `available` is only a sample.
        hint: Option<String>,
    },
    /// 401: a protected route without a usable `Authorization: Bearer` header.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: a key that is not one of the server's.
    #[error("{0}")]
    Forbidden(String),
    /// 413: a request body larger than the configured limit (no route reads one).
    #[error("the request body has {0} bytes; this server accepts at most {1}")]
    BodyTooLarge(u64, u64),
    /// 404: no route matches the path.
    #[error("no route for {0}")]
    NoRoute(String),
    /// 405: the route exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 400: a query or path parameter is malformed or out of range.
    #[error("invalid parameter '{param}': {message}")]
    InvalidParameter {
        param: String,
        message: String,
        allowed: Option<String>,
    },
    /// 406: the Accept header asks for nothing this route can produce.
    #[error("none of the accepted media types can be produced")]
    NotAcceptable { available: Vec<String> },
    /// 422: the stored object could not be decoded (corrupt, truncated, unsupported).
    #[error("object '{key}' could not be decoded: {message}")]
    Undecodable { key: String, message: String },
    /// 422: the stored object, or what it decodes to, exceeds a configured limit.
    #[error("object '{key}' is too large: {message}")]
    TooLarge { key: String, message: String },
    /// 503: the storage backend cannot be reached or answered with a server error.
    #[error("storage unavailable: {0}")]
    StorageUnavailable(String),
    /// 503: the server is shedding load or the request took too long.
    #[error("server busy: {0}")]
    Busy(String),
    /// 416: a `Range` that starts past the end of a body of this many bytes.
    #[error("the range asked for starts past the end of the {0}-byte body")]
    RangeNotSatisfiable(u64),
    /// 404: the item exists but this representation does not apply to it.
    #[error("{0}")]
    NotApplicable(String),
    /// 500: a bug. The detail is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    /// Shorthand for a 400 on one parameter.
    pub fn param(param: impl Into<String>, message: impl Into<String>) -> Self {
        AppError::InvalidParameter {
            param: param.into(),
            message: message.into(),
            allowed: None,
        }
    }

    /// Shorthand for a 400 on one parameter that names the allowed values.
    pub fn param_allowed(
        param: impl Into<String>,
        message: impl Into<String>,
        allowed: impl Into<String>,
    ) -> Self {
        AppError::InvalidParameter {
            param: param.into(),
            message: message.into(),
            allowed: Some(allowed.into()),
        }
    }

    /// The HTTP status this error maps to.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::NotFound { .. } | AppError::NoRoute(_) | AppError::NotApplicable(_) => {
                StatusCode::NOT_FOUND
            }
            AppError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::BodyTooLarge(..) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::InvalidParameter { .. } => StatusCode::BAD_REQUEST,
            AppError::NotAcceptable { .. } => StatusCode::NOT_ACCEPTABLE,
            AppError::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            AppError::Undecodable { .. } | AppError::TooLarge { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            AppError::StorageUnavailable(_) | AppError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> String {
        match self {
            AppError::NotFound { what, .. } => format!("{}-not-found", what),
            AppError::NoRoute(_) => "route-not-found".into(),
            AppError::MethodNotAllowed => "method-not-allowed".into(),
            AppError::Unauthorized(_) => "unauthorized".into(),
            AppError::Forbidden(_) => "forbidden".into(),
            AppError::BodyTooLarge(..) => "body-too-large".into(),
            AppError::InvalidParameter { .. } => "invalid-parameter".into(),
            AppError::NotAcceptable { .. } => "not-acceptable".into(),
            AppError::RangeNotSatisfiable(_) => "range-not-satisfiable".into(),
            AppError::Undecodable { .. } => "undecodable-object".into(),
            AppError::TooLarge { .. } => "object-too-large".into(),
            AppError::StorageUnavailable(_) => "storage-unavailable".into(),
            AppError::Busy(_) => "server-busy".into(),
            AppError::NotApplicable(_) => "not-applicable".into(),
            AppError::Internal(_) => "internal-error".into(),
        }
    }

    fn title(&self) -> &'static str {
        match self {
            AppError::NotFound { .. } | AppError::NoRoute(_) => "Not found",
            AppError::MethodNotAllowed => "Method not allowed",
            AppError::Unauthorized(_) => "API key required",
            AppError::Forbidden(_) => "API key not accepted",
            AppError::BodyTooLarge(..) => "Request body too large",
            AppError::InvalidParameter { .. } => "Invalid parameter",
            AppError::NotAcceptable { .. } => "Not acceptable",
            AppError::RangeNotSatisfiable(_) => "Range not satisfiable",
            AppError::Undecodable { .. } => "Object could not be decoded",
            AppError::TooLarge { .. } => "Object too large",
            AppError::StorageUnavailable(_) => "Storage unavailable",
            AppError::Busy(_) => "Server busy",
            AppError::NotApplicable(_) => "Not applicable",
            AppError::Internal(_) => "Internal server error",
        }
    }

    fn problem(&self) -> Problem {
        let status = self.status();
        let code = self.code();
        let mut p = Problem {
            type_: format!("urn:medserve:problem:{code}"),
            title: self.title(),
            status: status.as_u16(),
            detail: self.to_string(),
            code,
            parameter: None,
            allowed: None,
            available: None,
            object: None,
        };
        match self {
            AppError::NotFound {
                available, hint, ..
            } => {
                p.available = Some(available.clone());
                if available.is_empty() {
                    p.detail.push_str("; nothing of that kind exists here");
                } else {
                    const SHOWN: usize = 20;
                    let mut list = available
                        .iter()
                        .take(SHOWN)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ");
                    if available.len() > SHOWN {
                        list.push_str(&format!(", ... ({} in all)", available.len()));
                    }
                    p.detail.push_str(&format!("; available: {list}"));
                }
                if let Some(h) = hint {
                    p.detail.push_str(&format!("; {h}"));
                }
            }
            AppError::InvalidParameter { param, allowed, .. } => {
                p.parameter = Some(param.clone());
                if let Some(a) = allowed {
                    p.detail.push_str(&format!("; allowed: {a}"));
                }
                p.allowed = allowed.clone();
            }
            AppError::NotAcceptable { available } => {
                p.detail
                    .push_str(&format!("; available: {}", available.join(", ")));
                p.available = Some(available.clone());
            }
            AppError::Undecodable { key, .. } | AppError::TooLarge { key, .. } => {
                p.object = Some(key.clone());
            }
            AppError::StorageUnavailable(_) => {
                p.detail = "the storage backend did not answer; retry later".into();
            }
            AppError::Internal(_) => {
                p.detail = "an internal error occurred; it has been logged".into();
            }
            AppError::NoRoute(_)
            | AppError::MethodNotAllowed
            | AppError::Unauthorized(_)
            | AppError::Forbidden(_)
            | AppError::BodyTooLarge(..)
            | AppError::Busy(_)
            | AppError::RangeNotSatisfiable(_)
            | AppError::NotApplicable(_) => {}
        }
        p
    }
}

/// RFC 9457 problem details plus our extension members.
#[derive(Debug, Serialize)]
struct Problem {
    #[serde(rename = "type")]
    type_: String,
    title: &'static str,
    status: u16,
    detail: String,
    code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    available: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    object: Option<String>,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, code = %self.code(), "request failed");
        } else {
            tracing::debug!(error = %self, code = %self.code(), "request rejected");
        }
        let body = serde_json::to_vec(&self.problem()).unwrap_or_else(|_| b"{}".to_vec());
        let mut resp = (status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if let AppError::RangeNotSatisfiable(size) = &self {
            headers.insert(
                header::CONTENT_RANGE,
                crate::api::ranges::unsatisfied_range(*size),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"medserve\""),
            );
        }
        resp
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(key) => AppError::NotFound {
                what: "object",
                name: key,
                available: vec![],
                hint: Some("it was listed but is gone; POST /v1/catalog/refresh".into()),
            },
            // Keys come from listings, never from clients: a refused one is an object we
            // cannot serve, not a bad request.
            StoreError::InvalidKey { key, reason } => AppError::Undecodable {
                key,
                message: format!("its key is refused: {reason}"),
            },
            StoreError::TooLarge { key, size, limit } => AppError::TooLarge {
                key,
                message: format!("{size} bytes exceeds the limit of {limit} bytes"),
            },
            StoreError::NoSuchVersion { key, version_id } => AppError::NotFound {
                what: "object-version",
                name: version_id,
                available: vec![],
                hint: Some(format!(
                    "object '{key}' has no such version (S3 lists an object's versions with \
                     ListObjectVersions, `aws s3api list-object-versions`)"
                )),
            },
            StoreError::NoVersions {
                store,
                key,
                version_id,
            } => AppError::NotFound {
                what: "object-version",
                name: version_id,
                available: vec![],
                hint: Some(format!(
                    "object '{key}' is in {store}, which keeps no object versions; version ids \
                     are for versioned S3 buckets"
                )),
            },
            StoreError::Unavailable(msg) => AppError::StorageUnavailable(msg),
        }
    }
}

impl From<PipelineError> for AppError {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Store(e) => e.into(),
            PipelineError::Undecodable { key, message } => AppError::Undecodable { key, message },
            PipelineError::TooLarge { key, message } => AppError::TooLarge { key, message },
            PipelineError::Missing {
                what,
                name,
                available,
                hint,
            } => AppError::NotFound {
                what,
                name,
                available,
                hint,
            },
            PipelineError::Busy(m) => AppError::Busy(m),
            PipelineError::Internal(m) => AppError::Internal(m),
        }
    }
}
