//! `POST /api/v1/verify`: a signature validated as `inkan verify` does, for
//! anyone holding an auth session's bearer token. The body is the file: an
//! e-prescription document (`application/xml`), a CMS signature
//! (`application/pkcs7-signature`, `application/pkcs7-mime`,
//! `application/cms`, `application/octet-stream`; DER or PEM), or JSON
//! `{"signature": base64, "content": base64?, "at": RFC 3339?}` for a
//! detached CMS with its content. The answer is the report (200 whatever
//! the indication); a body that is not one of these is a 400.
//!
//! `POST /api/v1/extend?level=` takes the same bodies and answers the
//! signature extended to that level ([`crate::extend`]).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64ct::{Base64, Encoding};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::api::hold;
use super::body::{drain, read_limited};
use super::state::App;
use crate::error::{Error, Result};
use crate::signing::format::{Family, Level};

/// The query of `POST /api/v1/verify`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VerifyQuery {
    /// The validation time (RFC 3339; default now).
    at: Option<String>,
}

/// The JSON body of `POST /api/v1/verify` and `/api/v1/extend`: a CMS
/// signature with its detached content.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyJson {
    /// The CMS signature (base64 of DER or PEM).
    signature: String,
    /// The content of a detached signature (base64).
    content: Option<String>,
    /// verify only: the validation time (RFC 3339; default now).
    at: Option<String>,
}

/// A signed file from a request body, its room held while it is worked on.
pub(super) struct File {
    /// The signature: a document or a CMS signature.
    pub input: Vec<u8>,
    /// The content of a detached CMS signature.
    pub content: Option<Vec<u8>>,
    /// The `at` of a JSON body.
    pub at: Option<String>,
    /// The room the file takes ([`hold`]).
    pub room: super::limits::Room,
}

/// Reads the signed file of `POST /api/v1/verify` or `/extend` (`what`):
/// `Ok(None)` when there is no room for it now (the body drained).
pub(super) async fn read_file(
    app: &App,
    principal: &crate::auth::principal::Principal,
    headers: &HeaderMap,
    body: Body,
    what: &str,
) -> Result<Option<File>> {
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
                "{what} takes Content-Type application/xml (an e-prescription document), application/pkcs7-signature \
                 (a CMS signature) or application/json ({{\"signature\", \"content\"}}), not {value:?}"
            )))
        }
    };
    let max = app.config.verify.max_bytes;
    // Base64 in JSON takes a third more.
    let limit = if json { max / 3 * 4 + 4096 } else { max };
    // The file is held and parsed in memory: room for it first.
    let Some(room) = hold(app, principal, headers, limit) else {
        let mut body = body;
        drain(&mut body).await;
        return Ok(None);
    };
    let bytes = read_limited(body, limit).await?;
    if bytes.is_empty() {
        return Err(Error::Invalid("the body is empty: send the signed file".into()));
    }
    if !json {
        return Ok(Some(File { input: bytes, content: None, at: None, room }));
    }
    let req: VerifyJson = serde_json::from_slice(&bytes).map_err(|e| Error::Invalid(format!("invalid JSON: {e}")))?;
    let decode =
        |what: &str, b64: &str| Base64::decode_vec(b64).map_err(|_| Error::Invalid(format!("{what} is not base64")));
    let signature = decode("signature", &req.signature)?;
    let content = req.content.as_deref().map(|c| decode("content", c)).transpose()?;
    if signature.len() + content.as_ref().map_or(0, Vec::len) > max {
        return Err(Error::TooLarge { limit: max });
    }
    Ok(Some(File { input: signature, content, at: req.at, room }))
}

/// `POST /api/v1/verify`: a signed file validated.
///
/// The answer is the report (200 whatever the indication); a body that is
/// not a signed file is a 400.
#[utoipa::path(
    post,
    path = "/api/v1/verify",
    tag = "verification",
    operation_id = "verify",
    security(("session" = [])),
    params(VerifyQuery),
    request_body(
        description = "An e-prescription document, a CMS signature (DER or PEM), or JSON with a detached CMS \
                       signature and its content",
        content(
            (VerifyJson = "application/json"),
            ("application/xml"),
            ("text/xml"),
            ("application/pkcs7-signature"),
            ("application/pkcs7-mime"),
            ("application/cms"),
            ("application/octet-stream"),
        ),
    ),
    responses(
        (status = 200, description = "The validation report (ETSI TS 119 102-1 indications)", body = crate::verify::Report),
        (status = 400, description = "Not a signed file inkan reads", body = super::error::ErrorBody),
        (status = 401, description = "No session, or it has ended or was revoked", body = super::error::ErrorBody),
        (status = 413, description = "The file is over `[verify] max_bytes`", body = super::error::ErrorBody),
        (status = 503, description = "No room for the file now: retry later", body = super::error::ErrorBody),
    )
)]
pub async fn verify(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<VerifyQuery>,
    body: Body,
) -> Result<Response> {
    let principal = app.principal(&headers).await?;
    let Some(file) = read_file(&app, &principal, &headers, body, "verify").await? else {
        return Ok(super::limits::no_room());
    };
    let at = match file.at.or(q.at) {
        Some(text) => crate::verify::validation_time(&text)?,
        None => app.clock.now(),
    };
    let trust = Arc::clone(&app.trust);
    // Canonicalisation and signature checks are CPU work: off the runtime,
    // as many at once as the node has cores (more wait their turn), the
    // file's room and the slot held until the work ends, even if the
    // client has gone.
    let slot = slots().acquire_owned().await.map_err(Error::internal)?;
    let (input, content, room) = (file.input, file.content, file.room);
    let report = tokio::task::spawn_blocking(move || {
        let _held = (room, slot);
        crate::verify::validate(&input, content.as_deref(), &trust, at)
    })
    .await
    .map_err(Error::internal)?;
    Ok(Json(report).into_response())
}

/// The query of `POST /api/v1/extend`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExtendQuery {
    /// The level asked: `B-T`, `B-LT` or `B-LTA` (B-LTA on a B-LTA
    /// signature renews its archive time-stamp).
    level: Option<String>,
}

/// `POST /api/v1/extend?level=`: the file extended ([`crate::extend`]),
/// in the form it came (an XML document, a CMS signature in DER or PEM),
/// with `X-Inkan-Level` and `X-Inkan-Extended-From`.
#[utoipa::path(
    post,
    path = "/api/v1/extend",
    tag = "verification",
    operation_id = "extend",
    security(("session" = [])),
    params(ExtendQuery),
    request_body(
        description = "The signed file, as for verify (without `at`)",
        content(
            (VerifyJson = "application/json"),
            ("application/xml"),
            ("text/xml"),
            ("application/pkcs7-signature"),
            ("application/pkcs7-mime"),
            ("application/cms"),
            ("application/octet-stream"),
        ),
    ),
    responses(
        (status = 200, description = "The file extended, in the form it came",
         content(("application/xml"), ("application/pkcs7-signature"), ("application/x-pem-file")),
         headers(
             ("X-Inkan-Level" = String, description = "The level the file has now"),
             ("X-Inkan-Extended-From" = String, description = "The level it had"),
         )),
        (status = 400, description = "Not a signed file inkan reads, or no level", body = super::error::ErrorBody),
        (status = 401, description = "No session, or it has ended or was revoked", body = super::error::ErrorBody),
        (status = 403, description = "No sign scope", body = super::error::ErrorBody),
        (status = 409, description = "A certificate of the chain is revoked", body = super::error::ErrorBody),
        (status = 422, description = "The signature does not validate: it is not extended", body = super::error::ErrorBody),
        (status = 503, description = "The TSA or validation data is unavailable: retry later", body = super::error::ErrorBody),
    )
)]
pub async fn extend(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<ExtendQuery>,
    body: Body,
) -> Result<Response> {
    let principal = app.principal(&headers).await?;
    // It asks the TSA on the user's behalf, as signing does.
    principal.require_sign_scope()?;
    let level: Level =
        q.level.as_deref().ok_or_else(|| Error::Invalid("level= is required: B-T, B-LT or B-LTA".into()))?.parse()?;
    let Some(file) = read_file(&app, &principal, &headers, body, "extend").await? else {
        return Ok(super::limits::no_room());
    };
    if file.at.is_some() {
        return Err(Error::Invalid("at is for verify: a signature is extended now".into()));
    }
    // Two validations (on the blocking pool), CRL fetches and the TSA's
    // calls: one of the node's extension slots (as many as cores, apart
    // from verify's: a slow TSA does not hold up validation), and the
    // file's room, until the work ends.
    let _held = (file.room, extension_slots().acquire_owned().await.map_err(Error::internal)?);
    let extended = app.extender.extend(file.input, file.content, level).await?;
    crate::extend::record(
        app.store.as_ref(),
        &principal.actor,
        Some(&principal.user_id),
        &extended,
        app.clock.now_ms(),
    )
    .await?;
    tracing::info!(
        user = %principal.user_id,
        format = extended.format,
        from = extended.from,
        level = extended.level,
        renewed = extended.renewed,
        "signature extended"
    );
    let xml = extended.format == Family::Xades.about().name;
    let media = match (xml, extended.bytes.starts_with(b"-----")) {
        (true, _) => format!("{}; charset=utf-8", Family::Xades.about().media_type),
        (false, true) => "application/x-pem-file".to_string(),
        (false, false) => Family::Cades.about().media_type.to_string(),
    };
    let mut resp = extended.bytes.into_response();
    let h = resp.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&media) {
        h.insert(header::CONTENT_TYPE, value);
    }
    h.insert("x-inkan-level", HeaderValue::from_static(extended.level));
    h.insert("x-inkan-extended-from", HeaderValue::from_static(extended.from));
    Ok(resp)
}

/// Extensions at once on this node: one per core.
fn extension_slots() -> Arc<tokio::sync::Semaphore> {
    static SLOTS: std::sync::OnceLock<Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    Arc::clone(SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Arc::new(tokio::sync::Semaphore::new(cores))
    }))
}

/// Validations at once on this node: one per core.
fn slots() -> Arc<tokio::sync::Semaphore> {
    static SLOTS: std::sync::OnceLock<Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    Arc::clone(SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Arc::new(tokio::sync::Semaphore::new(cores))
    }))
}
