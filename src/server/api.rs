//! inkan's signing API: `/api/v1/me`, `/api/v1/sign` (CAdES over any
//! document, XAdES into e-prescription documents), `/api/v1/sign-hashes`.
//! The bearer token is the auth session opened by a login.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64ct::{Base64, Encoding};
use inkan_keystore::{Digest, DigestAlgorithm};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::clock::rfc3339;
use crate::error::{Error, Result};
use crate::signing::format::Family;
use crate::signing::{Activation, EpsInput, Format, Level, Payload, Request, MAX_HASHES};

use super::body::{drain, read_json, read_limited, BodyDocument};
use super::state::App;

/// The answer of `GET /api/v1/me`: the session's user, its login and its key.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    /// The user's ID (the ID token's `sub`).
    pub user_id: String,
    /// The user's name as registered.
    pub name: String,
    /// `doctor`, `pharmacist`, ...: the HPKI qualification.
    pub qualification: String,
    /// How the session was opened: `hpki`, `jpki` or `fido` (the ID token's `acr`).
    pub method: String,
    /// The signing system the session was opened for.
    pub client_id: String,
    /// When the user logged in (RFC 3339).
    pub auth_time: String,
    /// When the session ends (RFC 3339).
    pub session_expires_at: String,
    /// The active key's certificate; null when the user has no active key.
    pub certificate: Option<MeCertificate>,
}

/// The certificate of the key a session signs with.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeCertificate {
    /// The key generation (a key rotation makes the next).
    pub generation: i64,
    /// The subject's distinguished name.
    pub subject: String,
    /// The issuer's distinguished name.
    pub issuer: String,
    /// The serial number in hex.
    pub serial: String,
    /// The end of its validity.
    pub not_after: String,
    /// The certificate in PEM.
    pub pem: String,
}

/// The answer of `POST /api/v1/sign-hashes` and of CSC's `signatures/signHash`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Signatures {
    /// One base64 signature per hash, in the order of the hashes.
    pub signatures: Vec<String>,
}

/// `GET /api/v1/me`: who the bearer token's session is, and its key.
#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "signing",
    operation_id = "me",
    security(("session" = [])),
    responses(
        (status = 200, description = "The session's user and key", body = Me),
        (status = 401, description = "No session, or it has ended or was revoked", body = super::error::ErrorBody),
    )
)]
pub async fn me(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response> {
    let principal = app.principal(&headers).await?;
    let user = crate::users::get(app.store.as_ref(), &principal.user_id).await?;
    let session = principal.session().ok_or_else(|| Error::Internal("a bearer without a session".into()))?;
    let certificate = match &principal.key {
        Some(_) => {
            let signer = app.signing.signer(&principal).await?;
            let cert =
                <x509_cert::Certificate as der::Decode>::from_der(signer.certificate()).map_err(Error::internal)?;
            Some(MeCertificate {
                generation: signer.generation,
                subject: cert.tbs_certificate().subject().to_string(),
                issuer: cert.tbs_certificate().issuer().to_string(),
                serial: crate::pki::serial_hex(&cert),
                not_after: cert.tbs_certificate().validity().not_after.to_string(),
                pem: crate::pki::to_pem("CERTIFICATE", signer.certificate()),
            })
        }
        None => None,
    };
    Ok(Json(Me {
        user_id: user.id,
        name: user.name,
        qualification: user.qualification,
        method: principal.method().to_string(),
        client_id: session.client_id.clone(),
        auth_time: rfc3339(session.auth_time),
        session_expires_at: rfc3339(session.expires_at),
        certificate,
    })
    .into_response())
}

/// Query of `POST /api/v1/sign`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SignQuery {
    /// `cades` (default) or `xades` (an e-prescription document).
    pub format: Option<String>,
    /// CAdES: detached (default) or enveloping.
    pub detached: Option<bool>,
    /// XAdES from a prescription CSV (`Content-Type: text/csv`): its PrescriptionId.
    pub prescription_id: Option<String>,
    /// `B-B` (default) or `B-T` (with a time-stamp from the TSA).
    pub level: Option<String>,
}

/// `POST /api/v1/sign?format=cades|xades`: a document signed.
///
/// CAdES over any document (the
/// body, streamed: a detached signature hashes it in constant memory), or
/// XAdES into an e-prescription document (`application/xml`: the document
/// comes back signed) or from a prescription CSV (`text/csv` with
/// `prescription_id`: the minimal document comes back signed).
#[utoipa::path(
    post,
    path = "/api/v1/sign",
    tag = "signing",
    operation_id = "sign",
    security(("session" = [])),
    params(SignQuery),
    request_body(
        description = "CAdES: any document (streamed). XAdES: an e-prescription or dispensing document, or a \
                       prescription CSV with `prescription_id`.",
        content(("application/octet-stream"), ("application/xml"), ("text/xml"), ("text/csv"), ("*/*")),
    ),
    responses(
        (status = 200, description = "The CAdES signature (DER), or the signed XML document",
         content(("application/pkcs7-signature"), ("application/xml"))),
        (status = 400, description = "A parameter or the document is not right", body = super::error::ErrorBody),
        (status = 401, description = "No session, or it has ended or was revoked", body = super::error::ErrorBody),
        (status = 403, description = "No sign scope or no active key", body = super::error::ErrorBody),
        (status = 409, description = "B-LT, B-LTA: a certificate of the chain is revoked", body = super::error::ErrorBody),
        (status = 413, description = "The body is over the limit", body = super::error::ErrorBody),
        (status = 422, description = "A dispensing record whose doctor's signature does not verify", body = super::error::ErrorBody),
        (status = 503, description = "The token, the store or the TSA is unavailable: retry later", body = super::error::ErrorBody),
    )
)]
pub async fn sign(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<SignQuery>,
    body: Body,
) -> Result<Response> {
    let principal = app.principal(&headers).await?;
    let level: Level = q.level.as_deref().unwrap_or("B-B").parse()?;
    let family = match &q.format {
        Some(name) => Family::from_api(name, &[Family::Cades, Family::Xades])?,
        None => Family::Cades,
    };
    match family {
        Family::Cades if q.prescription_id.is_none() => {
            sign_cades(&app, &principal, &headers, q.detached, level, body).await
        }
        Family::Cades => Err(Error::Invalid("prescription_id goes with format=xades".into())),
        Family::Xades if q.detached.is_none() => {
            sign_xades(&app, &principal, &headers, q.prescription_id, level, body).await
        }
        _ => Err(Error::Invalid(
            "detached is a CAdES parameter: XAdES goes into the document (use sign-hashes for the signature alone)"
                .into(),
        )),
    }
}

/// The bytes a request's `Content-Length` announces, at most `max`.
fn announced(headers: &HeaderMap, max: usize) -> usize {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(max, |len| len.min(max))
}

/// Room in the budget for documents held in memory (`[limits]
/// enveloped_bytes`), if there is some now.
pub(super) fn hold(
    app: &App,
    principal: &crate::auth::principal::Principal,
    headers: &HeaderMap,
    max: usize,
) -> Option<super::limits::Room> {
    let session = principal.session().map(|s| s.token_hash.clone()).unwrap_or_default();
    app.limits.hold_enveloped(&session, announced(headers, max))
}

async fn sign_cades(
    app: &App,
    principal: &crate::auth::principal::Principal,
    headers: &HeaderMap,
    detached: Option<bool>,
    level: Level,
    body: Body,
) -> Result<Response> {
    let detached = detached.unwrap_or(true);
    let max = app.config.server.max_document_bytes;
    // An enveloped document is kept while it is signed: room for it first.
    let _room = if detached {
        None
    } else {
        match hold(app, principal, headers, max) {
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
            principal,
            Request {
                payload: Payload::Document { source: &mut document, keep: Some(max) },
                format: if detached { Format::CadesDetached } else { Format::CadesEnveloping },
                generation: None,
                activation: Activation::Session,
                via: "api.sign",
                detail: None,
                level,
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
    let about = Family::Cades.about();
    let disposition = format!("attachment; filename=\"signature.{}\"", about.extension);
    let mut resp = der.into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(about.media_type));
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(resp)
}

/// What a body's `Content-Type` says it is, for XAdES.
fn eps_media_type(headers: &HeaderMap) -> Result<&'static str> {
    let value = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/xml" | "text/xml" => Ok("xml"),
        "text/csv" => Ok("csv"),
        _ => Err(Error::Invalid(format!(
            "format=xades takes Content-Type application/xml (an e-prescription document) or text/csv with \
             prescription_id (a prescription CSV), not {value:?}"
        ))),
    }
}

async fn sign_xades(
    app: &App,
    principal: &crate::auth::principal::Principal,
    headers: &HeaderMap,
    prescription_id: Option<String>,
    level: Level,
    body: Body,
) -> Result<Response> {
    // Refused before the body is read (the pipeline checks again).
    principal.require_sign_scope()?;
    principal.active_key()?;
    let input = match (eps_media_type(headers)?, prescription_id) {
        ("csv", Some(id)) => {
            crate::eps::csv::check_id(&id)?;
            Some(id)
        }
        ("csv", None) => return Err(Error::Invalid("a prescription CSV needs its prescription_id".into())),
        (_, Some(_)) => return Err(Error::Invalid("prescription_id goes with a CSV (Content-Type: text/csv)".into())),
        _ => None,
    };
    let max = app.config.signing.max_xml_bytes;
    // The document is held and parsed in memory: room for it first.
    let Some(_room) = hold(app, principal, headers, max) else {
        let mut body = body;
        drain(&mut body).await;
        return Ok(super::limits::no_room());
    };
    let bytes = read_limited(body, max).await?;
    let input = match input {
        Some(prescription_id) => EpsInput::PrescriptionCsv { csv: bytes, prescription_id },
        None => EpsInput::Document(bytes),
    };
    let mut signed = app
        .signing
        .sign(
            principal,
            Request {
                payload: Payload::Eps(input),
                format: Format::Xades(None),
                generation: None,
                activation: Activation::Session,
                via: "api.sign",
                detail: None,
                level,
            },
        )
        .await?;
    let parts = signed.signatures.pop().ok_or_else(|| Error::Internal("no signature".into()))?;
    let document = parts.document.ok_or_else(|| Error::Internal("no signed document".into()))?;
    let mut resp = document.into_response();
    let media = format!("{}; charset=utf-8", Family::Xades.about().media_type);
    if let Ok(value) = HeaderValue::from_str(&media) {
        resp.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    Ok(resp)
}

/// Body of `POST /api/v1/sign-hashes`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SignHashes {
    /// Base64 digests.
    pub hashes: Vec<String>,
    /// `SHA-256` (default), `SHA-384`, `SHA-512`.
    pub hash_algorithm: Option<String>,
    /// `cades` (default), `raw`, or `xades` (each answer an `xs:Signature`
    /// element over a Reference 1 digest).
    pub format: Option<String>,
    /// With `xades`: `prescription` or `dispensing`.
    pub kind: Option<String>,
    /// `B-B` (default) or `B-T` (CAdES: each signature time-stamped).
    pub level: Option<String>,
}

/// Decodes base64 digests (standard or URL-safe alphabet) of `alg`: the
/// one place a client's digest is checked for its algorithm's length.
pub fn decode_hashes(hashes: &[String], alg: DigestAlgorithm) -> Result<Vec<Digest>> {
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
            Digest::new(alg, bytes).map_err(|e| Error::Invalid(format!("hashes[{i}]: {e}")))
        })
        .collect()
}

/// `POST /api/v1/sign-hashes`: digests signed, one signature each.
#[utoipa::path(
    post,
    path = "/api/v1/sign-hashes",
    tag = "signing",
    operation_id = "signHashes",
    security(("session" = [])),
    request_body = SignHashes,
    responses(
        (status = 200, description = "One signature per digest", body = Signatures),
        (status = 400, description = "A parameter or a digest is not right", body = super::error::ErrorBody),
        (status = 401, description = "No session, or it has ended or was revoked", body = super::error::ErrorBody),
        (status = 403, description = "No sign scope or no active key", body = super::error::ErrorBody),
        (status = 409, description = "B-LT, B-LTA: a certificate of the chain is revoked", body = super::error::ErrorBody),
        (status = 503, description = "The token, the store or the TSA is unavailable: retry later", body = super::error::ErrorBody),
    )
)]
pub async fn sign_hashes(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Result<Response> {
    let principal = app.principal(&headers).await?;
    // Refused before the body is read (the pipeline checks again).
    principal.require_sign_scope()?;
    let req: SignHashes = read_json(body, app.config.server.max_json_bytes).await?;
    let alg: DigestAlgorithm = req.hash_algorithm.as_deref().unwrap_or("SHA-256").parse()?;
    let family = match &req.format {
        Some(name) => Family::from_api(name, &Family::ALL)?,
        None => Family::Cades,
    };
    let format = match (family, req.kind.as_deref()) {
        (Family::Cades, None) => Format::CadesDetached,
        (Family::Raw, None) => Format::Raw(None),
        (Family::Xades, Some(kind)) => Format::Xades(Some(kind.parse()?)),
        (Family::Xades, None) => {
            return Err(Error::Invalid("format xades needs the kind: \"prescription\" or \"dispensing\"".into()))
        }
        (Family::Cades | Family::Raw, Some(_)) => return Err(Error::Invalid("kind goes with format xades".into())),
    };
    let digests = decode_hashes(&req.hashes, alg)?;
    let signed = app
        .signing
        .sign(
            &principal,
            Request {
                payload: Payload::Digests(digests),
                format,
                generation: None,
                activation: Activation::Session,
                via: "api.sign-hashes",
                detail: None,
                level: req.level.as_deref().unwrap_or("B-B").parse()?,
            },
        )
        .await?;
    let signatures: Vec<String> =
        signed.signatures.into_iter().map(|p| Base64::encode_string(&p.into_detached())).collect();
    Ok(Json(Signatures { signatures }).into_response())
}
