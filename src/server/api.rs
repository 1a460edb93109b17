//! inkan's signing API: `/api/v1/me`, `/api/v1/sign`, `/api/v1/sign-hashes`.
//! The bearer token is the auth session opened by a login.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64ct::{Base64, Encoding};
use inkan_keystore::DigestAlgorithm;
use serde::Deserialize;
use serde_json::json;

use crate::clock::rfc3339;
use crate::error::{Error, Result};
use crate::signing::{Activation, Format, Payload, Request, MAX_HASHES};

use super::body::{drain, read_json, BodyDocument};
use super::state::App;

/// `GET /api/v1/me`
pub async fn me(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response> {
    let principal = app.principal(&headers).await?;
    let user = crate::users::get(app.store.as_ref(), &principal.user_id).await?;
    let session = principal.session().ok_or_else(|| Error::Internal("a bearer without a session".into()))?;
    let certificate = match &principal.key {
        Some(_) => {
            let signer = app.signing.signer(&principal).await?;
            let cert =
                <x509_cert::Certificate as der::Decode>::from_der(signer.certificate()).map_err(Error::internal)?;
            json!({
                "generation": signer.generation,
                "subject": cert.tbs_certificate().subject().to_string(),
                "issuer": cert.tbs_certificate().issuer().to_string(),
                "serial": crate::pki::serial_hex(&cert),
                "not_after": cert.tbs_certificate().validity().not_after.to_string(),
                "pem": crate::pki::to_pem("CERTIFICATE", signer.certificate()),
            })
        }
        None => serde_json::Value::Null,
    };
    Ok(Json(json!({
        "user_id": user.id,
        "name": user.name,
        "qualification": user.qualification,
        "method": principal.method(),
        "client_id": session.client_id,
        "auth_time": rfc3339(session.auth_time),
        "session_expires_at": rfc3339(session.expires_at),
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

/// `POST /api/v1/sign?detached=true|false`: the body is the document, streamed
/// (a detached signature hashes it in constant memory).
pub async fn sign(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<SignQuery>,
    body: Body,
) -> Result<Response> {
    let principal = app.principal(&headers).await?;
    let detached = q.detached.unwrap_or(true);
    let max = app.config.server.max_document_bytes;
    // An enveloped document is kept while it is signed: room for it first.
    let _room = if detached {
        None
    } else {
        let len = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .map_or(max, |len| len.min(max));
        let session = principal.session().map(|s| s.token_hash.clone()).unwrap_or_default();
        match app.limits.hold_enveloped(&session, len) {
            Some(room) => Some(room),
            None => {
                let mut body = body;
                drain(&mut body).await;
                return Ok(super::limits::no_room());
            }
        }
    };
    let mut document = BodyDocument(body);
    let signed = app
        .signing
        .sign(
            &principal,
            Request {
                payload: Payload::Document { source: &mut document, keep: Some(max) },
                format: if detached { Format::CadesDetached } else { Format::CadesEnveloping },
                generation: None,
                activation: Activation::Session,
                via: "api.sign",
                detail: None,
            },
        )
        .await;
    let mut signed = match signed {
        Ok(s) => s,
        Err(e @ Error::TooLarge { .. }) => {
            drain(&mut document.0).await;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let parts = signed.signatures.pop().ok_or_else(|| Error::Internal("no signature".into()))?;
    let der = parts.around(signed.content.as_deref().unwrap_or_default());
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

/// Decodes base64 digests (standard or URL-safe alphabet) of `alg`.
pub fn decode_hashes(hashes: &[String], alg: DigestAlgorithm) -> Result<Vec<Vec<u8>>> {
    if hashes.is_empty() {
        return Err(Error::Invalid("hashes must hold at least one digest".into()));
    }
    if hashes.len() > MAX_HASHES {
        return Err(Error::Invalid(format!("at most {MAX_HASHES} hashes per request")));
    }
    hashes
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let bytes = Base64::decode_vec(h)
                .or_else(|_| base64ct::Base64Url::decode_vec(h))
                .or_else(|_| base64ct::Base64UrlUnpadded::decode_vec(h))
                .map_err(|_| Error::Invalid(format!("hashes[{i}] is not base64")))?;
            if bytes.len() != alg.output_len() {
                return Err(Error::Invalid(format!(
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
pub async fn sign_hashes(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Result<Response> {
    let principal = app.principal(&headers).await?;
    // Refused before the body is read (the pipeline checks again).
    principal.require_sign_scope()?;
    let req: SignHashes = read_json(body, app.config.server.max_json_bytes).await?;
    let alg: DigestAlgorithm = req.hash_algorithm.as_deref().unwrap_or("SHA-256").parse()?;
    let format = match req.format.as_deref().unwrap_or("cades") {
        "cades" => Format::CadesDetached,
        "raw" => Format::Raw(None),
        other => return Err(Error::Invalid(format!("format must be cades or raw, not {other:?}"))),
    };
    let digests = decode_hashes(&req.hashes, alg)?;
    let signed = app
        .signing
        .sign(
            &principal,
            Request {
                payload: Payload::Digests { alg, digests },
                format,
                generation: None,
                activation: Activation::Session,
                via: "api.sign-hashes",
                detail: None,
            },
        )
        .await?;
    let signatures: Vec<String> =
        signed.signatures.into_iter().map(|p| Base64::encode_string(&p.into_detached())).collect();
    Ok(Json(json!({ "signatures": signatures })).into_response())
}
