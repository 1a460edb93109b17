//! inkan's signing API: `/api/v1/me`, `/api/v1/sign`, `/api/v1/sign-hashes`.
//! The bearer token is the auth session opened by a login.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64ct::{Base64, Encoding};
use http_body_util::BodyExt;
use inkan_keystore::DigestAlgorithm;
use serde::Deserialize;
use serde_json::json;

use crate::auth::session::Bearer;
use crate::cades::{self, SignerIdentity};
use crate::clock::rfc3339;
use crate::keys::hex;

use super::audit_writer::Record;
use super::body::{read_json, too_large};
use super::error::ApiError;
use super::state::App;

/// Batches up to this size are signed on the request's own worker thread.
const INLINE_SIGNATURES: usize = 4;

/// Most digests in one request.
pub const MAX_HASHES: usize = 1000;

/// Requires the `sign` scope.
pub fn require_sign_scope(bearer: &Bearer) -> Result<(), ApiError> {
    if bearer.scope.split(' ').any(|s| s == "sign") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "the access token was not granted the sign scope",
        ))
    }
}

/// `GET /api/v1/me`
pub async fn me(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let bearer = app.bearer(&headers)?;
    let user = crate::users::get(&app.db(), &bearer.user_id).map_err(ApiError::internal)?;
    let certificate = match &bearer.active_key {
        Some(_) => {
            let (identity, generation) = app.signer(&bearer)?;
            let cert = <x509_cert::Certificate as der::Decode>::from_der(identity.certificate())
                .map_err(ApiError::internal)?;
            json!({
                "generation": generation,
                "subject": cert.tbs_certificate().subject().to_string(),
                "issuer": cert.tbs_certificate().issuer().to_string(),
                "serial": crate::pki::serial_hex(&cert),
                "not_after": cert.tbs_certificate().validity().not_after.to_string(),
                "pem": crate::pki::to_pem("CERTIFICATE", identity.certificate()),
            })
        }
        None => serde_json::Value::Null,
    };
    Ok(Json(json!({
        "user_id": user.id,
        "name": user.name,
        "qualification": user.qualification,
        "method": bearer.method,
        "client_id": bearer.client_id,
        "auth_time": rfc3339(bearer.auth_time),
        "session_expires_at": rfc3339(bearer.expires_at),
        "certificate": certificate,
    }))
    .into_response())
}

/// Query of `POST /api/v1/sign`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignQuery {
    /// Detached (default) or enveloping.
    pub detached: Option<bool>,
}

/// Digests to sign in one request.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Their hash algorithm.
    pub alg: DigestAlgorithm,
    /// The digests.
    pub digests: Vec<Vec<u8>>,
    /// Bare signature values instead of CAdES.
    pub raw: bool,
    /// For an enveloping CAdES signature: the content length.
    pub content_len: Option<u64>,
    /// Which endpoint (for the audit log).
    pub via: &'static str,
}

/// Signs a batch for the session's user, commits the audit rows, returns the
/// signatures in order: CAdES DER, or bare signature values (`raw`).
pub async fn sign_digests(
    app: &Arc<App>,
    bearer: &Bearer,
    identity: Arc<SignerIdentity>,
    generation: i64,
    batch: Batch,
) -> Result<Vec<cades::Assembled>, ApiError> {
    let Batch { alg, digests, raw, content_len, via } = batch;
    let started = Instant::now();
    for d in &digests {
        if d.len() != alg.output_len() {
            return Err(ApiError::bad_request(format!(
                "a {} digest has {} bytes, not {}",
                alg.name(),
                alg.output_len(),
                d.len()
            )));
        }
    }
    let announced = app.audit.expect();
    let now = app.clock.now();
    let ks = Arc::clone(&app.keystore);
    let id = Arc::clone(&identity);
    let hashes = digests.clone();
    let work = move || {
        hashes
            .iter()
            .map(|d| {
                if raw {
                    let value = ks.sign_digest(id.key(), id.scheme(alg), d)?;
                    Ok(cades::Assembled { prefix: value, suffix: Vec::new() })
                } else {
                    cades::sign_parts(&ks, &id, alg, d, now, content_len)
                }
            })
            .collect::<Result<Vec<_>, cades::CadesError>>()
    };
    // A few signatures run right here: moving them to the blocking pool costs two
    // thread hand-offs per request, more than the worker is held up (about 1 ms
    // per RSA-2048 signature, and the pool has only as many sessions as cores).
    // Larger batches go to the blocking pool so they do not stall other requests.
    let result = if digests.len() <= INLINE_SIGNATURES {
        work()
    } else {
        tokio::task::spawn_blocking(work).await.map_err(ApiError::internal)?
    };
    let n = digests.len() as u64;
    let signatures = match result {
        Ok(s) => s,
        Err(e) => {
            app.metrics.signatures(n, false, started.elapsed());
            if matches!(&e, cades::CadesError::Keystore(k) if k.is_unavailable() || matches!(k, inkan_keystore::Error::Pkcs11 { .. }))
            {
                app.metrics.token_error();
            }
            return Err(e.into());
        }
    };
    let records = digests
        .iter()
        .map(|d| Record {
            actor: format!("client:{}", bearer.client_id),
            event: "sign",
            user_id: Some(bearer.user_id.clone()),
            generation: Some(generation),
            digest: Some(format!("{}:{}", alg.name().to_ascii_lowercase().replace('-', ""), hex(d))),
            outcome: "ok",
            detail: json!({ "via": via, "format": if raw { "raw" } else { "cades-bes" }, "method": bearer.method }),
        })
        .collect();
    let signed = Instant::now();
    app.audit.commit(app.now_ms(), records, Some(announced)).await.map_err(ApiError::unavailable)?;
    app.metrics.audit_wait(signed.elapsed());
    app.metrics.signatures(n, true, started.elapsed());
    Ok(signatures)
}

/// `POST /api/v1/sign?detached=true|false`: the body is the document.
pub async fn sign(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<SignQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    let bearer = app.bearer(&headers)?;
    require_sign_scope(&bearer)?;
    let (identity, generation) = app.signer(&bearer)?;
    let detached = q.detached.unwrap_or(true);
    let limit = app.config.server.max_document_bytes;

    // Stream the body: hash as it comes; keep it only when enveloping.
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut kept = Vec::new();
    let mut len: u64 = 0;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad_request(format!("cannot read the document: {e}")))?;
        if let Some(data) = frame.data_ref() {
            len += data.len() as u64;
            hasher.update(data);
            if !detached {
                if kept.len() + data.len() > limit {
                    super::body::drain(&mut body).await;
                    return Err(too_large(limit));
                }
                kept.extend_from_slice(data);
            }
        }
    }
    let digest = hasher.finalize().to_vec();
    let mut parts = sign_digests(
        &app,
        &bearer,
        identity,
        generation,
        Batch {
            alg: DigestAlgorithm::Sha256,
            digests: vec![digest],
            raw: false,
            content_len: (!detached).then_some(len),
            via: "api.sign",
        },
    )
    .await?;
    let parts = parts.pop().ok_or_else(|| ApiError::internal("no signature"))?;
    let mut der = parts.prefix;
    der.extend_from_slice(&kept);
    der.extend_from_slice(&parts.suffix);
    let mut resp = der.into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/pkcs7-signature"));
    resp.headers_mut()
        .insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"signature.p7s\""));
    Ok(resp)
}

/// Body of `POST /api/v1/sign-hashes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SignHashes {
    /// Base64 digests.
    pub hashes: Vec<String>,
    /// `SHA-256` (default), `SHA-384`, `SHA-512`.
    pub hash_algorithm: Option<String>,
    /// `cades` (default) or `raw`.
    pub format: Option<String>,
}

/// Decodes base64 digests (standard or URL-safe alphabet).
pub fn decode_hashes(hashes: &[String], alg: DigestAlgorithm) -> Result<Vec<Vec<u8>>, ApiError> {
    if hashes.is_empty() {
        return Err(ApiError::bad_request("hashes must hold at least one digest"));
    }
    if hashes.len() > MAX_HASHES {
        return Err(ApiError::bad_request(format!("at most {MAX_HASHES} hashes per request")));
    }
    hashes
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let bytes = Base64::decode_vec(h)
                .or_else(|_| base64ct::Base64Url::decode_vec(h))
                .or_else(|_| base64ct::Base64UrlUnpadded::decode_vec(h))
                .map_err(|_| ApiError::bad_request(format!("hashes[{i}] is not base64")))?;
            if bytes.len() != alg.output_len() {
                return Err(ApiError::bad_request(format!(
                    "hashes[{i}] has {} bytes; a {} digest has {}",
                    bytes.len(),
                    alg.name(),
                    alg.output_len()
                )));
            }
            Ok(bytes)
        })
        .collect()
}

/// `POST /api/v1/sign-hashes`
pub async fn sign_hashes(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let bearer = app.bearer(&headers)?;
    require_sign_scope(&bearer)?;
    let req: SignHashes = read_json(body, app.config.server.max_json_bytes).await?;
    let alg: DigestAlgorithm =
        req.hash_algorithm.as_deref().unwrap_or("SHA-256").parse().map_err(ApiError::bad_request)?;
    let raw = match req.format.as_deref().unwrap_or("cades") {
        "cades" => false,
        "raw" => true,
        other => return Err(ApiError::bad_request(format!("format must be cades or raw, not {other:?}"))),
    };
    let digests = decode_hashes(&req.hashes, alg)?;
    let (identity, generation) = app.signer(&bearer)?;
    let parts = sign_digests(
        &app,
        &bearer,
        identity,
        generation,
        Batch { alg, digests, raw, content_len: None, via: "api.sign-hashes" },
    )
    .await?;
    let signatures: Vec<String> = parts.into_iter().map(|p| Base64::encode_string(&p.into_detached())).collect();
    Ok(Json(json!({ "signatures": signatures })).into_response())
}
