//! Reading request bodies with limits and our error format.

use axum::body::Body;
use axum::http::StatusCode;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// 413 with a message that names the limit.
pub fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request",
        format!("the request body is larger than {limit} bytes"),
    )
}

/// How much of an oversized body is still read (and dropped) before answering
/// 413, so that a client that sends it all reads the answer instead of a reset.
const DRAIN_LIMIT: usize = 8 << 20;

/// Reads and drops the rest of a refused body, up to [`DRAIN_LIMIT`] bytes.
pub async fn drain(body: &mut Body) {
    let mut drained = 0usize;
    while drained < DRAIN_LIMIT {
        match body.frame().await {
            Some(Ok(frame)) => drained += frame.data_ref().map_or(0, |d| d.len()),
            _ => break,
        }
    }
}

/// Reads the whole body, refusing more than `limit` bytes.
pub async fn read_limited(body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut body = body;
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        if let Some(data) = frame.data_ref() {
            if out.len() + data.len() > limit {
                drain(&mut body).await;
                return Err(too_large(limit));
            }
            out.extend_from_slice(data);
        }
    }
    Ok(out)
}

/// Reads and parses a JSON body (unknown fields and wrong types are refused by
/// the target type's serde attributes).
pub async fn read_json<T: DeserializeOwned>(body: Body, limit: usize) -> Result<T, ApiError> {
    let bytes = read_limited(body, limit).await?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}
