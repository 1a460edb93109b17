//! Errors as HTTP responses, mapped in one place.
//!
//! 4xx: the client's fault, with a message it can act on. 503: the token or the
//! store is unavailable. 500: an opaque body; the details go to the log only.
//! The body is `{"error", "error_description"}` (the OAuth and CSC format).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable code (`invalid_request`, `invalid_token`, ...).
    pub error: &'static str,
    /// What the client can do.
    pub description: String,
}

impl ApiError {
    /// 400 invalid_request.
    pub fn bad_request(description: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, error: "invalid_request", description: description.into() }
    }

    /// Any status and code.
    pub fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        ApiError { status, error, description: description.into() }
    }

    /// 401 invalid_token.
    pub fn invalid_token(description: impl Into<String>) -> Self {
        ApiError { status: StatusCode::UNAUTHORIZED, error: "invalid_token", description: description.into() }
    }

    /// 503: the token or the store is unavailable.
    pub fn unavailable(what: impl std::fmt::Display) -> Self {
        tracing::warn!("unavailable: {what}");
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error: "temporarily_unavailable",
            description: "the signing service is temporarily unavailable; retry later".into(),
        }
    }

    /// 500 with an opaque body; `detail` is logged.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {detail}");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "server_error",
            description: "internal error".into(),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match &e {
            crate::store::StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _))
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::CannotOpen
                ) =>
            {
                ApiError::unavailable(e)
            }
            _ => ApiError::internal(e),
        }
    }
}

impl From<inkan_keystore::Error> for ApiError {
    fn from(e: inkan_keystore::Error) -> Self {
        use inkan_keystore::Error as K;
        match e {
            K::TokenUnavailable { .. } | K::PoolExhausted { .. } | K::LoginFailed { .. } => ApiError::unavailable(e),
            K::InvalidInput(m) => ApiError::bad_request(m),
            K::MechanismUnsupported { .. } => ApiError::bad_request(format!("the key cannot do this: {e}")),
            K::KeyNotFound { .. } => ApiError::unavailable(format!("key missing from the token: {e}")),
            K::Pkcs11 { ref rv, .. }
                if rv == "CKR_DEVICE_REMOVED" || rv == "CKR_TOKEN_NOT_PRESENT" || rv == "CKR_GENERAL_ERROR" =>
            {
                ApiError::unavailable(e)
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<crate::cades::CadesError> for ApiError {
    fn from(e: crate::cades::CadesError) -> Self {
        match e {
            crate::cades::CadesError::Keystore(k) => k.into(),
            crate::cades::CadesError::InvalidDigest(m) => ApiError::bad_request(m),
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.error, "error_description": self.description });
        let mut resp = (self.status, axum::Json(body)).into_response();
        resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            let value = format!("Bearer error=\"{}\"", self.error);
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        resp
    }
}
