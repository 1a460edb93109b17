//! `POST /api/v1/verify`: a signature validated as `inkan verify` does, for
//! anyone holding an auth session's bearer token. The body is the file: an
//! e-prescription document (`application/xml`), a CMS signature
//! (`application/pkcs7-signature`, `application/pkcs7-mime`,
//! `application/cms`, `application/octet-stream`; DER or PEM), or JSON
//! `{"signature": base64, "content": base64?, "at": RFC 3339?}` for a
//! detached CMS with its content. The answer is the report (200 whatever
//! the indication); a body that is not one of these is a 400.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64ct::{Base64, Encoding};
use serde::Deserialize;

use super::api::hold;
use super::body::{drain, read_limited};
use super::state::App;
use crate::error::{Error, Result};

/// The query of `POST /api/v1/verify`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
    /// The validation time (RFC 3339; default now).
    at: Option<String>,
}

/// The JSON body of `POST /api/v1/verify`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyJson {
    signature: String,
    content: Option<String>,
    at: Option<String>,
}

/// `POST /api/v1/verify`
pub async fn verify(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<VerifyQuery>,
    body: Body,
) -> Result<Response> {
    let principal = app.principal(&headers).await?;
    let value = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let json = match essence.as_str() {
        "application/json" => true,
        "application/xml"
        | "text/xml"
        | "application/pkcs7-signature"
        | "application/pkcs7-mime"
        | "application/cms"
        | "application/octet-stream" => false,
        _ => {
            return Err(Error::Invalid(format!(
                "verify takes Content-Type application/xml (an e-prescription document), application/pkcs7-signature \
                 (a CMS signature) or application/json ({{\"signature\", \"content\"}}), not {value:?}"
            )))
        }
    };
    let max = app.config.verify.max_bytes;
    // Base64 in JSON takes a third more.
    let limit = if json { max / 3 * 4 + 4096 } else { max };
    // The file is held and parsed in memory: room for it first.
    let Some(_room) = hold(&app, &principal, &headers, limit) else {
        let mut body = body;
        drain(&mut body).await;
        return Ok(super::limits::no_room());
    };
    let bytes = read_limited(body, limit).await?;
    if bytes.is_empty() {
        return Err(Error::Invalid("the body is empty: send the signed file".into()));
    }
    let (input, content, at) = if json {
        let req: VerifyJson =
            serde_json::from_slice(&bytes).map_err(|e| Error::Invalid(format!("invalid JSON: {e}")))?;
        let decode = |what: &str, b64: &str| {
            Base64::decode_vec(b64).map_err(|_| Error::Invalid(format!("{what} is not base64")))
        };
        let signature = decode("signature", &req.signature)?;
        let content = req.content.as_deref().map(|c| decode("content", c)).transpose()?;
        if signature.len() + content.as_ref().map_or(0, Vec::len) > max {
            return Err(Error::TooLarge { limit: max });
        }
        (signature, content, req.at.or(q.at))
    } else {
        (bytes, None, q.at)
    };
    let at = match at {
        Some(text) => crate::verify::validation_time(&text)?,
        None => app.clock.now(),
    };
    let trust = Arc::clone(&app.trust);
    // Canonicalisation and signature checks are CPU work: off the runtime,
    // as many at once as the node has cores (more wait their turn), the
    // file's room and the slot held until the work ends, even if the
    // client has gone.
    let slot = slots().acquire_owned().await.map_err(Error::internal)?;
    let report = tokio::task::spawn_blocking(move || {
        let _held = (_room, slot);
        crate::verify::validate(&input, content.as_deref(), &trust, at)
    })
    .await
    .map_err(Error::internal)?;
    Ok(Json(report).into_response())
}

/// Validations at once on this node: one per core.
fn slots() -> Arc<tokio::sync::Semaphore> {
    static SLOTS: std::sync::OnceLock<Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    Arc::clone(SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Arc::new(tokio::sync::Semaphore::new(cores))
    }))
}
