//! `/healthz`, `/readyz`, `/metrics` and the fallback.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

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

/// Prometheus text.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
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
