//! Errors as HTTP responses, mapped in one place.
//!
//! 4xx: the client's fault, with a message it can act on. 503: the token or the
//! store is unavailable. 500: an opaque body; the details go to the log only.
//! The body is `{"error", "error_description"}` (the OAuth and CSC format).
//! Pages (HTML, Japanese) pick their own words from the same [`Error`]s, in the
//! page modules.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{Credential, Error, Forbidden};

/// The body of every error answer of the API, CSC and OIDC endpoints.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code: `invalid_request`, `invalid_token`, `invalid_client`, `invalid_grant`,
    /// `insufficient_scope`, `access_denied`, `unsupported_grant_type`, `too_many_requests`,
    /// `temporarily_unavailable`, `server_error`.
    pub error: &'static str,
    /// What the client can do about it.
    pub error_description: String,
}

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

    /// 503: the token or the store is unavailable; `what` is logged (one line
    /// a second at most: while the database is away, every request would log).
    pub fn unavailable(what: impl std::fmt::Display) -> Self {
        if let Some(suppressed) = UNAVAILABLE_LOG.admit() {
            match suppressed {
                0 => tracing::warn!("unavailable: {what}"),
                n => tracing::warn!("unavailable: {what} (and {n} more answered 503 since the last line)"),
            }
        }
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

/// The 503 lines.
static UNAVAILABLE_LOG: crate::throttle::Throttle = crate::throttle::Throttle::new();

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        use StatusCode as S;
        match e {
            Error::Invalid(m) => ApiError::bad_request(m),
            Error::TooLarge { limit } => ApiError::new(
                S::PAYLOAD_TOO_LARGE,
                "invalid_request",
                format!("the request body is larger than {limit} bytes"),
            ),
            Error::Unauthenticated(Credential::Bearer, m) => ApiError::new(S::UNAUTHORIZED, "invalid_token", m),
            Error::Unauthenticated(Credential::Client, m) => ApiError::new(S::UNAUTHORIZED, "invalid_client", m),
            Error::Unauthenticated(Credential::Grant, m) => ApiError::new(S::BAD_REQUEST, "invalid_grant", m),
            Error::Unauthenticated(Credential::Card(_), m) => ApiError::new(S::FORBIDDEN, "access_denied", m),
            Error::Unauthenticated(Credential::Password { .. } | Credential::Phone | Credential::Confirmation, m) => {
                ApiError::bad_request(m)
            }
            Error::Forbidden(Forbidden::Scope, m) => ApiError::new(S::FORBIDDEN, "insufficient_scope", m),
            Error::Forbidden(Forbidden::NoActiveKey, m) => ApiError::new(S::FORBIDDEN, "invalid_request", m),
            Error::Forbidden(_, m) => ApiError::new(S::FORBIDDEN, "access_denied", m),
            Error::NotFound(_, m) => ApiError::new(S::NOT_FOUND, "invalid_request", m),
            Error::Conflict(m) => ApiError::new(S::CONFLICT, "invalid_request", m),
            Error::Unprocessable(m) => ApiError::new(S::UNPROCESSABLE_ENTITY, "invalid_request", m),
            Error::Gone(_, m) => ApiError::new(S::GONE, "invalid_request", m),
            Error::Unavailable(m) => ApiError::unavailable(m),
            // The TSA is named (its URL is no secret): the client can tell the
            // operator which one, or ask for B-B.
            e @ Error::TsaUnavailable(_) => ApiError::new(
                S::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                format!("{e}; retry later, or ask for level B-B"),
            ),
            e @ Error::NoValidationData(_) => ApiError::new(
                S::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                format!("{e}; retry later, or ask for level B-T"),
            ),
            Error::Internal(m) => ApiError::internal(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: self.error, error_description: self.description };
        let mut resp = (self.status, axum::Json(body)).into_response();
        resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            let value = format!("Bearer error=\"{}\"", self.error);
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        resp
    }
}

/// Domain errors answer as API errors.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}
