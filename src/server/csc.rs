//! The Cloud Signature Consortium API, v2 under `/csc/v2/` and v1 under
//! `/csc/v1/` (v1 field names `hash`, `hashAlgo` accepted too), so existing CSC
//! clients work unchanged. authType `oauth2code` with inkan's OpenID Connect:
//! the access token is the auth session.
//!
//! A credential is one key generation of the session's user; its ID is
//! `<user ID>.g<generation>`. SCAL "1": the auth session suffices to sign;
//! SCAL "2": every signHash needs a SAD from `credentials/authorize` bound to
//! exactly its hashes. A SAD is single-use, expires, and caps the number of
//! signatures.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64ct::{Base64, Encoding};
use der::Decode;
use inkan_keystore::{DigestAlgorithm, SignatureScheme};
use serde::Deserialize;
use serde_json::{json, Value};
use x509_cert::Certificate;

use crate::auth::session::Bearer;
use crate::auth::token_hash;

use super::api::{decode_hashes, require_sign_scope, sign_digests};
use super::body::read_json;
use super::error::ApiError;
use super::state::App;

mod oids {
    pub const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
    pub const SHA256_WITH_RSA: &str = "1.2.840.113549.1.1.11";
    pub const SHA384_WITH_RSA: &str = "1.2.840.113549.1.1.12";
    pub const SHA512_WITH_RSA: &str = "1.2.840.113549.1.1.13";
    pub const RSASSA_PSS: &str = "1.2.840.113549.1.1.10";
    pub const ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
    pub const ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";
    pub const ECDSA_SHA512: &str = "1.2.840.10045.4.3.4";
    pub const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
}

fn invalid(param: &str) -> ApiError {
    ApiError::bad_request(format!("Invalid parameter {param}"))
}

/// Signature activation data in flight.
#[derive(Debug, Default)]
pub struct Sads(Mutex<HashMap<Vec<u8>, Sad>>);

#[derive(Clone, Debug)]
struct Sad {
    session: Vec<u8>,
    credential_id: String,
    hashes: Option<Vec<Vec<u8>>>,
    remaining: u32,
    expires_at: i64,
}

impl Sads {
    fn put(&self, sad: Sad, now: i64) -> String {
        let token = crate::auth::random_token();
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| s.expires_at > now);
        map.insert(token_hash(&token), sad);
        token
    }

    /// Uses a SAD for `hashes`: it must belong to this session and credential,
    /// be unexpired, allow this many signatures and, when bound to hashes, be
    /// bound to exactly these. Single use: it is gone afterwards, whatever the outcome.
    fn consume(
        &self,
        token: &str,
        session: &[u8],
        credential_id: &str,
        hashes: &[Vec<u8>],
        now: i64,
    ) -> Result<(), ApiError> {
        let sad = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&token_hash(token))
            .ok_or_else(|| invalid("SAD"))?;
        if sad.expires_at <= now {
            return Err(ApiError::bad_request("SAD expired"));
        }
        if sad.session != session || sad.credential_id != credential_id {
            return Err(invalid("SAD"));
        }
        if hashes.len() as u64 > u64::from(sad.remaining) {
            return Err(ApiError::bad_request("Invalid parameter numSignatures: more hashes than the SAD authorizes"));
        }
        if let Some(bound) = &sad.hashes {
            let mut a = bound.clone();
            let mut b = hashes.to_vec();
            a.sort();
            b.sort();
            if a != b {
                return Err(ApiError::bad_request("Invalid parameter SAD: it was authorized for other hashes"));
            }
        }
        Ok(())
    }
}

/// The credential ID of a key generation.
fn credential_id(user_id: &str, generation: i64) -> String {
    format!("{user_id}.g{generation}")
}

/// The session's active credential, if `id` names it.
fn own_credential(bearer: &Bearer, id: &str) -> Result<i64, ApiError> {
    match &bearer.active_key {
        Some((generation, _, _)) if credential_id(&bearer.user_id, *generation) == id => Ok(*generation),
        _ => Err(invalid("credentialID")),
    }
}

/// `POST /csc/v2/info` (no authentication).
pub async fn info(State(app): State<Arc<App>>, body: Body) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Req {
        lang: Option<String>,
    }
    let bytes = super::body::read_limited(body, app.config.server.max_json_bytes).await?;
    if !bytes.is_empty() {
        serde_json::from_slice::<Req>(&bytes).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    }
    let base = app.config.server.public_url.trim_end_matches('/');
    Ok(Json(json!({
        "specs": "2.0.0.2",
        "name": "inkan",
        "logo": format!("{base}/static/logo.svg"),
        "region": "JP",
        "lang": "ja-JP",
        "description": "inkan remote signing (HPKI second keys)",
        "authType": ["oauth2code"],
        "oauth2": base,
        "oauth2Issuer": base,
        "asynchronousOperationMode": false,
        "methods": ["credentials/list", "credentials/info", "credentials/authorize", "signatures/signHash", "signatures/signDoc"],
        "signAlgorithms": { "algos": [oids::SHA256_WITH_RSA, oids::RSA_ENCRYPTION, oids::RSASSA_PSS, oids::ECDSA_SHA256] },
        "signature_formats": { "formats": ["C"], "envelope_properties": [["Detached", "Attached"]] },
        "conformance_levels": ["Ades-B-B"],
    }))
    .into_response())
}

/// `credentials/list`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct ListReq {
    #[serde(rename = "userID")]
    user_id: Option<String>,
    credential_info: Option<bool>,
    certificates: Option<String>,
    cert_info: Option<bool>,
    auth_info: Option<bool>,
    only_valid: Option<bool>,
    lang: Option<String>,
    client_data: Option<String>,
    max_results: Option<u32>,
    page_token: Option<String>,
}

/// `POST /csc/v2/credentials/list`
pub async fn credentials_list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bearer = app.bearer(&headers)?;
    let req: ListReq = read_json_or_empty(body, app.config.server.max_json_bytes).await?;
    if let Some(u) = &req.user_id {
        if u != &bearer.user_id {
            return Err(invalid("userID"));
        }
    }
    let ids: Vec<String> = bearer.active_key.iter().map(|(g, _, _)| credential_id(&bearer.user_id, *g)).collect();
    let mut out = json!({ "credentialIDs": ids });
    if req.credential_info == Some(true) && bearer.active_key.is_some() {
        let info = credential_info(
            &app,
            &bearer,
            req.certificates.as_deref(),
            req.cert_info.unwrap_or(false),
            req.auth_info.unwrap_or(false),
        )?;
        let mut info = info;
        info["credentialID"] = json!(ids[0]);
        out["credentialInfos"] = json!([info]);
    }
    Ok(Json(out).into_response())
}

async fn read_json_or_empty<T: serde::de::DeserializeOwned + Default>(body: Body, limit: usize) -> Result<T, ApiError> {
    let bytes = super::body::read_limited(body, limit).await?;
    if bytes.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}

/// X.509 time as CSC writes it: `YYYYMMDDHHMMSSZ` (GeneralizedTime).
fn csc_time(t: &x509_cert::time::Time) -> String {
    let dt = t.to_date_time();
    format!("{:04}{:02}{:02}{:02}{:02}{:02}Z", dt.year(), dt.month(), dt.day(), dt.hour(), dt.minutes(), dt.seconds())
}

fn credential_info(
    app: &App,
    bearer: &Bearer,
    certificates: Option<&str>,
    cert_info: bool,
    auth_info: bool,
) -> Result<Value, ApiError> {
    let (identity, _) = app.signer(bearer)?;
    let cert = Certificate::from_der(identity.certificate()).map_err(ApiError::internal)?;
    let spki = cert.tbs_certificate().subject_public_key_info();
    let is_ec = spki.algorithm.oid.to_string() == oids::EC_PUBLIC_KEY;
    let (algos, len) = if is_ec {
        (json!([oids::ECDSA_SHA256, oids::ECDSA_SHA384, oids::ECDSA_SHA512]), 256)
    } else {
        let bits = rsa_bits(spki);
        (
            json!([
                oids::SHA256_WITH_RSA,
                oids::RSA_ENCRYPTION,
                oids::SHA384_WITH_RSA,
                oids::SHA512_WITH_RSA,
                oids::RSASSA_PSS
            ]),
            bits,
        )
    };
    let now = app.clock.now();
    let (nb, na) = crate::pki::validity(&cert);
    let status = if now > na || now < nb { "expired" } else { "valid" };
    let mut certs = Vec::new();
    match certificates.unwrap_or("single") {
        "none" => {}
        "single" => certs.push(Base64::encode_string(identity.certificate())),
        "chain" => {
            certs.push(Base64::encode_string(identity.certificate()));
            certs.extend(app.chain.iter().map(|c| Base64::encode_string(c)));
        }
        _ => return Err(invalid("certificates")),
    }
    let mut cert_obj = json!({ "status": status, "certificates": certs });
    if cert_info {
        let tbs = cert.tbs_certificate();
        cert_obj["issuerDN"] = json!(tbs.issuer().to_string());
        cert_obj["serialNumber"] = json!(crate::pki::serial_hex(&cert));
        cert_obj["subjectDN"] = json!(tbs.subject().to_string());
        cert_obj["validFrom"] = json!(csc_time(&tbs.validity().not_before));
        cert_obj["validTo"] = json!(csc_time(&tbs.validity().not_after));
    }
    let scal = app.config.csc.scal.clone();
    let mut out = json!({
        "description": "HPKI second key (セカンド鍵)",
        "key": { "status": "enabled", "algo": algos, "len": len },
        "cert": cert_obj,
        "authMode": "oauth2code",
        "SCAL": scal,
        "multisign": super::api::MAX_HASHES,
        "lang": "ja-JP",
    });
    if is_ec {
        out["key"]["curve"] = json!("1.2.840.10045.3.1.7");
    }
    if auth_info {
        out["auth"] = json!({ "mode": "oauth2code" });
    }
    Ok(out)
}

fn rsa_bits(spki: &spki::SubjectPublicKeyInfoOwned) -> u32 {
    use rsa::pkcs8::DecodePublicKey;
    use rsa::traits::PublicKeyParts;
    der::Encode::to_der(spki)
        .ok()
        .and_then(|d| rsa::RsaPublicKey::from_public_key_der(&d).ok())
        .map(|k| k.n().bits())
        .unwrap_or(2048)
}

/// `credentials/info`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct InfoReq {
    #[serde(rename = "credentialID")]
    credential_id: String,
    certificates: Option<String>,
    cert_info: Option<bool>,
    auth_info: Option<bool>,
    lang: Option<String>,
    client_data: Option<String>,
}

/// `POST /csc/v2/credentials/info`
pub async fn credentials_info(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bearer = app.bearer(&headers)?;
    let req: InfoReq = read_json(body, app.config.server.max_json_bytes).await?;
    own_credential(&bearer, &req.credential_id)?;
    Ok(Json(credential_info(
        &app,
        &bearer,
        req.certificates.as_deref(),
        req.cert_info.unwrap_or(false),
        req.auth_info.unwrap_or(false),
    )?)
    .into_response())
}

/// Hashes given as v2 `hashes` or v1 `hash`, with `hashAlgorithmOID` (v2) or `hashAlgo` (v1).
fn hashes_and_alg(
    hashes: Option<Vec<String>>,
    hash: Option<Vec<String>>,
    oid: Option<&str>,
    algo: Option<&str>,
) -> Result<(Vec<Vec<u8>>, Option<DigestAlgorithm>), ApiError> {
    let list = hashes.or(hash);
    let alg = match oid.or(algo) {
        Some(o) => Some(
            o.parse::<der::oid::ObjectIdentifier>()
                .ok()
                .and_then(|oid| DigestAlgorithm::from_oid(&oid))
                .ok_or_else(|| invalid("hashAlgorithmOID"))?,
        ),
        None => None,
    };
    match list {
        None => Ok((Vec::new(), alg)),
        Some(l) => {
            let alg_for_len = alg.unwrap_or(DigestAlgorithm::Sha256);
            Ok((
                decode_hashes(&l, alg_for_len)
                    .map_err(|e| ApiError::bad_request(format!("Invalid parameter hashes: {}", e.description)))?,
                Some(alg_for_len),
            ))
        }
    }
}

/// `credentials/authorize`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, non_snake_case)]
struct AuthorizeReq {
    #[serde(rename = "credentialID")]
    credential_id: String,
    #[serde(rename = "numSignatures")]
    num_signatures: u32,
    hashes: Option<Vec<String>>,
    hash: Option<Vec<String>>,
    #[serde(rename = "hashAlgorithmOID")]
    hash_algorithm_oid: Option<String>,
    #[serde(rename = "hashAlgo")]
    hash_algo: Option<String>,
    PIN: Option<String>,
    OTP: Option<String>,
    description: Option<String>,
    #[serde(rename = "clientData")]
    client_data: Option<String>,
}

/// `POST /csc/v2/credentials/authorize`
pub async fn credentials_authorize(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bearer = app.bearer(&headers)?;
    require_sign_scope(&bearer)?;
    let req: AuthorizeReq = read_json(body, app.config.server.max_json_bytes).await?;
    own_credential(&bearer, &req.credential_id)?;
    if req.num_signatures == 0 || req.num_signatures as usize > super::api::MAX_HASHES {
        return Err(invalid("numSignatures"));
    }
    let (hashes, _) =
        hashes_and_alg(req.hashes, req.hash, req.hash_algorithm_oid.as_deref(), req.hash_algo.as_deref())?;
    if !hashes.is_empty() && hashes.len() != req.num_signatures as usize {
        return Err(ApiError::bad_request("Invalid parameter numSignatures: it must equal the number of hashes"));
    }
    if app.config.csc.scal == "2" && hashes.is_empty() {
        return Err(ApiError::bad_request("Missing parameter hashes: SCAL 2 binds the SAD to the hashes"));
    }
    let now = app.now_ms();
    let lifetime = app.config.csc.sad_lifetime_secs as i64;
    let sad = app.sads.put(
        Sad {
            session: bearer.token_hash.clone(),
            credential_id: req.credential_id,
            hashes: (!hashes.is_empty()).then_some(hashes),
            remaining: req.num_signatures,
            expires_at: now + lifetime * 1000,
        },
        now,
    );
    Ok(Json(json!({ "SAD": sad, "expiresIn": lifetime })).into_response())
}

/// `signatures/signHash`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct SignHashReq {
    #[serde(rename = "credentialID")]
    credential_id: String,
    #[serde(rename = "SAD")]
    sad: Option<String>,
    hashes: Option<Vec<String>>,
    hash: Option<Vec<String>>,
    #[serde(rename = "hashAlgorithmOID")]
    hash_algorithm_oid: Option<String>,
    #[serde(rename = "hashAlgo")]
    hash_algo: Option<String>,
    #[serde(rename = "signAlgo")]
    sign_algo: String,
    #[serde(rename = "signAlgoParams")]
    sign_algo_params: Option<String>,
    #[serde(rename = "operationMode")]
    operation_mode: Option<String>,
    #[serde(rename = "validity_period")]
    validity_period: Option<u64>,
    #[serde(rename = "response_uri")]
    response_uri: Option<String>,
    #[serde(rename = "clientData")]
    client_data: Option<String>,
}

/// The scheme for a CSC signAlgo with a key, and the digest algorithm it implies.
fn scheme_for(sign_algo: &str, hash_alg: Option<DigestAlgorithm>, is_rsa: bool) -> Result<SignatureScheme, ApiError> {
    let implied = match sign_algo {
        oids::SHA256_WITH_RSA | oids::ECDSA_SHA256 => Some(DigestAlgorithm::Sha256),
        oids::SHA384_WITH_RSA | oids::ECDSA_SHA384 => Some(DigestAlgorithm::Sha384),
        oids::SHA512_WITH_RSA | oids::ECDSA_SHA512 => Some(DigestAlgorithm::Sha512),
        oids::RSA_ENCRYPTION | oids::RSASSA_PSS => None,
        _ => return Err(invalid("signAlgo")),
    };
    let alg = match (implied, hash_alg) {
        (Some(i), Some(h)) if i != h => {
            return Err(ApiError::bad_request("Invalid parameter hashAlgorithmOID: it contradicts signAlgo"))
        }
        (Some(i), _) => i,
        (None, Some(h)) => h,
        (None, None) => {
            return Err(ApiError::bad_request("Missing parameter hashAlgorithmOID (required with this signAlgo)"))
        }
    };
    let scheme = match sign_algo {
        oids::ECDSA_SHA256 | oids::ECDSA_SHA384 | oids::ECDSA_SHA512 => SignatureScheme::Ecdsa(alg),
        oids::RSASSA_PSS => SignatureScheme::RsaPss(alg),
        _ => SignatureScheme::RsaPkcs1v15(alg),
    };
    let fits = matches!(scheme, SignatureScheme::Ecdsa(_)) != is_rsa;
    if !fits {
        return Err(ApiError::bad_request("Invalid parameter signAlgo: it does not fit the credential's key"));
    }
    Ok(scheme)
}

/// `POST /csc/v2/signatures/signHash`
pub async fn sign_hash(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let bearer = app.bearer(&headers)?;
    require_sign_scope(&bearer)?;
    let req: SignHashReq = read_json(body, app.config.server.max_json_bytes).await?;
    let generation = own_credential(&bearer, &req.credential_id)?;
    let (_, _, algorithm) = bearer.active_key.clone().ok_or_else(|| invalid("credentialID"))?;
    let is_rsa = algorithm.starts_with("rsa");
    let oid_alg = match req.hash_algorithm_oid.as_deref().or(req.hash_algo.as_deref()) {
        Some(o) => Some(
            o.parse::<der::oid::ObjectIdentifier>()
                .ok()
                .and_then(|o| DigestAlgorithm::from_oid(&o))
                .ok_or_else(|| invalid("hashAlgorithmOID"))?,
        ),
        None => None,
    };
    let scheme = scheme_for(&req.sign_algo, oid_alg, is_rsa)?;
    let alg = scheme.digest_algorithm();
    let list = req.hashes.or(req.hash).ok_or_else(|| ApiError::bad_request("Missing parameter hashes"))?;
    let hashes = decode_hashes(&list, alg)
        .map_err(|e| ApiError::bad_request(format!("Invalid parameter hashes: {}", e.description)))?;
    match (&req.sad, app.config.csc.scal.as_str()) {
        (Some(sad), _) => app.sads.consume(sad, &bearer.token_hash, &req.credential_id, &hashes, app.now_ms())?,
        (None, "2") => return Err(ApiError::bad_request("Missing parameter SAD (SCAL 2)")),
        (None, _) => {}
    }
    let (identity, _) = app.signer(&bearer)?;
    let started = std::time::Instant::now();
    let announced = app.audit.expect();
    let ks = Arc::clone(&app.keystore);
    let key = identity.key().clone();
    let to_sign = hashes.clone();
    let values = tokio::task::spawn_blocking(move || {
        to_sign.iter().map(|h| ks.sign_digest(&key, scheme, h)).collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(ApiError::internal)?;
    let values = match values {
        Ok(v) => v,
        Err(e) => {
            app.metrics.signatures(hashes.len() as u64, false, started.elapsed());
            return Err(e.into());
        }
    };
    let records = hashes
        .iter()
        .map(|d| super::audit_writer::Record {
            actor: format!("client:{}", bearer.client_id),
            event: "sign",
            user_id: Some(bearer.user_id.clone()),
            generation: Some(generation),
            digest: Some(format!("{}:{}", alg.name().to_ascii_lowercase().replace('-', ""), crate::keys::hex(d))),
            outcome: "ok",
            detail: json!({ "via": "csc.signHash", "signAlgo": req.sign_algo, "method": bearer.method }),
        })
        .collect();
    let signed = std::time::Instant::now();
    app.audit.commit(app.now_ms(), records, Some(announced)).await.map_err(ApiError::unavailable)?;
    app.metrics.audit_wait(signed.elapsed());
    app.metrics.signatures(hashes.len() as u64, true, started.elapsed());
    Ok(Json(json!({ "signatures": values.iter().map(|v| Base64::encode_string(v)).collect::<Vec<_>>() }))
        .into_response())
}

/// One `documentDigests` entry of signDoc.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct DocumentDigests {
    hashes: Vec<String>,
    #[serde(rename = "hashAlgorithmOID")]
    hash_algorithm_oid: String,
    signature_format: String,
    conformance_level: Option<String>,
    #[serde(rename = "signAlgo")]
    sign_algo: Option<String>,
    #[serde(rename = "signAlgoParams")]
    sign_algo_params: Option<String>,
    signed_props: Option<Value>,
    signed_envelope_property: Option<String>,
}

/// One `documents` entry of signDoc.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Document {
    document: String,
    signature_format: String,
    conformance_level: Option<String>,
    #[serde(rename = "signAlgo")]
    sign_algo: Option<String>,
    #[serde(rename = "signAlgoParams")]
    sign_algo_params: Option<String>,
    signed_props: Option<Value>,
    signed_envelope_property: Option<String>,
}

/// `signatures/signDoc`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct SignDocReq {
    #[serde(rename = "credentialID")]
    credential_id: Option<String>,
    #[serde(rename = "signatureQualifier")]
    signature_qualifier: Option<String>,
    #[serde(rename = "SAD")]
    sad: Option<String>,
    #[serde(rename = "documentDigests")]
    document_digests: Option<Vec<DocumentDigests>>,
    documents: Option<Vec<Document>>,
    #[serde(rename = "operationMode")]
    operation_mode: Option<String>,
    #[serde(rename = "validity_period")]
    validity_period: Option<u64>,
    #[serde(rename = "response_uri")]
    response_uri: Option<String>,
    #[serde(rename = "clientData")]
    client_data: Option<String>,
    #[serde(rename = "returnValidationInfo")]
    return_validation_info: Option<bool>,
}

fn check_format(format: &str, level: Option<&str>) -> Result<(), ApiError> {
    if format != "C" {
        return Err(ApiError::bad_request("Invalid parameter signature_format: only C (CAdES) is supported"));
    }
    if let Some(l) = level {
        if !l.eq_ignore_ascii_case("AdES-B-B") && !l.eq_ignore_ascii_case("AdES-B") {
            return Err(ApiError::bad_request("Invalid parameter conformance_level: only AdES-B-B is supported"));
        }
    }
    Ok(())
}

/// `POST /csc/v2/signatures/signDoc`: CAdES-BES for digests (detached) and documents.
pub async fn sign_doc(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let bearer = app.bearer(&headers)?;
    require_sign_scope(&bearer)?;
    let req: SignDocReq = read_json(body, app.config.server.max_document_bytes).await?;
    let credential = match &req.credential_id {
        Some(id) => id.clone(),
        None => bearer
            .active_key
            .iter()
            .map(|(g, _, _)| credential_id(&bearer.user_id, *g))
            .next()
            .ok_or_else(|| invalid("credentialID"))?,
    };
    own_credential(&bearer, &credential)?;
    let (identity, generation) = app.signer(&bearer)?;
    let mut signature_objects = Vec::new();
    let mut with_signature = Vec::new();
    let mut all_hashes = Vec::new();
    struct Job {
        alg: DigestAlgorithm,
        hashes: Vec<Vec<u8>>,
        attached: bool,
        content: Option<Vec<u8>>,
    }
    let mut jobs: Vec<Job> = Vec::new();
    for dd in req.document_digests.iter().flatten() {
        check_format(&dd.signature_format, dd.conformance_level.as_deref())?;
        let alg = dd
            .hash_algorithm_oid
            .parse::<der::oid::ObjectIdentifier>()
            .ok()
            .and_then(|o| DigestAlgorithm::from_oid(&o))
            .ok_or_else(|| invalid("hashAlgorithmOID"))?;
        let hashes = decode_hashes(&dd.hashes, alg)
            .map_err(|e| ApiError::bad_request(format!("Invalid parameter hashes: {}", e.description)))?;
        all_hashes.extend(hashes.iter().cloned());
        jobs.push(Job { alg, hashes, attached: false, content: None });
    }
    for doc in req.documents.iter().flatten() {
        check_format(&doc.signature_format, doc.conformance_level.as_deref())?;
        let content = Base64::decode_vec(&doc.document).map_err(|_| invalid("document"))?;
        let attached = match doc.signed_envelope_property.as_deref().unwrap_or("Detached") {
            "Detached" => false,
            "Attached" | "Enveloping" => true,
            _ => return Err(invalid("signed_envelope_property")),
        };
        let digest = DigestAlgorithm::Sha256.digest(&content);
        all_hashes.push(digest.clone());
        jobs.push(Job { alg: DigestAlgorithm::Sha256, hashes: vec![digest], attached, content: Some(content) });
    }
    if jobs.is_empty() {
        return Err(ApiError::bad_request("Missing parameter documentDigests or documents"));
    }
    match (&req.sad, app.config.csc.scal.as_str()) {
        (Some(sad), _) => app.sads.consume(sad, &bearer.token_hash, &credential, &all_hashes, app.now_ms())?,
        (None, "2") => return Err(ApiError::bad_request("Missing parameter SAD (SCAL 2)")),
        (None, _) => {}
    }
    for Job { alg, hashes, attached, content } in jobs {
        let len = content.as_ref().map(|c| c.len() as u64);
        let batch = super::api::Batch {
            alg,
            digests: hashes,
            raw: false,
            content_len: if attached { len } else { None },
            via: "csc.signDoc",
        };
        let parts = sign_digests(&app, &bearer, Arc::clone(&identity), generation, batch).await?;
        for p in parts {
            match (&content, attached) {
                (Some(c), true) => {
                    let mut der = p.prefix;
                    der.extend_from_slice(c);
                    der.extend_from_slice(&p.suffix);
                    with_signature.push(Base64::encode_string(&der));
                }
                // Detached: the signature object alone, as for digests.
                _ => signature_objects.push(Base64::encode_string(&p.into_detached())),
            }
        }
    }
    let mut out = json!({});
    if !with_signature.is_empty() {
        out["DocumentWithSignature"] = json!(with_signature);
    }
    if !signature_objects.is_empty() {
        out["SignatureObject"] = json!(signature_objects);
    }
    Ok((StatusCode::OK, Json(out)).into_response())
}
