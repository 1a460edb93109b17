//! `/healthz`, `/readyz`, `/metrics` and the fallback.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use crate::auth::token_hash;

use super::address::ClientAddr;
use super::error::ApiError;
use super::state::App;

/// The process is up.
pub async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// The store and the token are usable.
pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    let store = app.store.ping().await;
    if let Err(e) = &store {
        tracing::warn!("readyz: store: {e}");
    }
    let token = app.signing.token_ready().await;
    let ok = store.is_ok() && token.is_ok();
    if let Err(e) = &token {
        tracing::warn!("readyz: token: {e}");
        app.metrics.token_error();
    }
    let body = json!({
        "status": if ok { "ready" } else { "unavailable" },
        "store": if store.is_ok() { "ok" } else { "unavailable" },
        "token": if token.is_ok() { "ok" } else { "unavailable" },
    });
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// Whether `/metrics` may answer: with a configured token, to that bearer
/// token only (compared in constant time); without one, to loopback clients.
fn metrics_allowed(token: Option<&str>, peer: Option<ClientAddr>, bearer: Option<&str>) -> bool {
    use subtle::ConstantTimeEq;
    match token {
        Some(token) => bearer.is_some_and(|b| bool::from(token_hash(b).ct_eq(&token_hash(token)))),
        None => peer.is_some_and(|p| p.0.is_loopback()),
    }
}

/// `GET /metrics`: Prometheus text (loopback clients, or the bearer token of
/// `[server] metrics_token`).
pub async fn metrics(State(app): State<Arc<App>>, peer: Option<Extension<ClientAddr>>, headers: HeaderMap) -> Response {
    let bearer =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if !metrics_allowed(
        app.config.server.metrics_token.as_ref().map(|t| t.0.as_str()),
        peer.map(|Extension(a)| a),
        bearer,
    ) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "access_denied",
            "/metrics answers loopback clients, or the bearer token of [server] metrics_token",
        )
        .into_response();
    }
    let active = crate::auth::sessions::count_active(app.store.as_ref(), app.now_ms()).await.unwrap_or(-1);
    let mut text = app.metrics.render(active);
    if let Some(writer) = app.signing.audit_writer() {
        let stats = writer.stats();
        text.push_str(&format!(
        "# HELP inkan_audit_commits_total Audit transactions committed.\n# TYPE inkan_audit_commits_total counter\ninkan_audit_commits_total {}\n\
# HELP inkan_audit_rows_total Audit rows committed by the group-commit writer.\n# TYPE inkan_audit_rows_total counter\ninkan_audit_rows_total {}\n",
        stats.commits.load(std::sync::atomic::Ordering::Relaxed),
        stats.rows.load(std::sync::atomic::Ordering::Relaxed),
    ));
    }
    let token = app.signing.token_sign_time();
    text.push_str(&format!(
        "# HELP inkan_token_sign_calls_total Signatures made by the token.\n# TYPE inkan_token_sign_calls_total counter\ninkan_token_sign_calls_total {}\n\
# HELP inkan_token_sign_cpu_seconds_total CPU time of this process inside the token's sign calls (a software token signs on the caller's thread).\n# TYPE inkan_token_sign_cpu_seconds_total counter\ninkan_token_sign_cpu_seconds_total {:.6}\n",
        token.calls(),
        token.cpu().as_secs_f64(),
    ));
    let cache = app.signing.key_cache();
    text.push_str(&format!(
        "# HELP inkan_key_cache_hits_total Signatures with a wrapped key already unwrapped in the token.
# TYPE inkan_key_cache_hits_total counter
inkan_key_cache_hits_total {}
# HELP inkan_key_cache_misses_total Wrapped keys unwrapped into the token (C_UnwrapKey).
# TYPE inkan_key_cache_misses_total counter
inkan_key_cache_misses_total {}
# HELP inkan_key_cache_evictions_total Unwrapped keys destroyed to make room.
# TYPE inkan_key_cache_evictions_total counter
inkan_key_cache_evictions_total {}
# HELP inkan_key_cache_refused_total Wrapped keys refused because their MAC did not match.
# TYPE inkan_key_cache_refused_total counter
inkan_key_cache_refused_total {}
# HELP inkan_key_cache_entries Unwrapped keys held in the token.
# TYPE inkan_key_cache_entries gauge
inkan_key_cache_entries {}
# HELP inkan_key_cache_capacity Unwrapped keys the cache may hold ([token] cache_size).
# TYPE inkan_key_cache_capacity gauge
inkan_key_cache_capacity {}
",
        cache.hits, cache.misses, cache.evictions, cache.refused, cache.entries, cache.capacity,
    ));
    let mut resp = text.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}

/// 404 in the API error format.
pub async fn not_found() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_for_loopback_or_the_configured_bearer_only() {
        let at = |ip: &str| Some(ClientAddr::of(ip.parse().expect("ip")));
        assert!(metrics_allowed(None, at("127.0.0.1"), None));
        assert!(metrics_allowed(None, at("::1"), None));
        assert!(!metrics_allowed(None, at("192.0.2.7"), Some("anything")));
        assert!(!metrics_allowed(None, None, None));
        assert!(metrics_allowed(Some("s3cret-s3cret-s3cret"), at("192.0.2.7"), Some("s3cret-s3cret-s3cret")));
        assert!(!metrics_allowed(Some("s3cret-s3cret-s3cret"), at("127.0.0.1"), None), "a token is asked of everyone");
        assert!(!metrics_allowed(Some("s3cret-s3cret-s3cret"), at("127.0.0.1"), Some("s3cret-s3cret-s3cre")));
    }
}
