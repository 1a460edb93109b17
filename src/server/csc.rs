//! The Cloud Signature Consortium API, v2 under `/csc/v2/` and v1 under
//! `/csc/v1/` (v1 field names `hash`, `hashAlgo` accepted too), so existing CSC
//! clients work unchanged. authType `oauth2code` with inkan's OpenID Connect:
//! the access token is the auth session.
//!
//! A credential is one key generation of the session's user; its ID is
//! `<user ID>.g<generation>`. SCAL "1": the auth session suffices to sign;
//! SCAL "2": every signHash needs a SAD from `credentials/authorize` bound to
//! exactly its hashes (the signing pipeline enforces it; see
//! [`crate::auth::sad`]). A SAD is single-use, expires, and caps the number of
//! signatures.

use std::sync::Arc;

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

use crate::auth::principal::Principal;
use crate::eps::Kind;
use crate::error::{Error, Result};
use crate::signing::{Activation, EpsInput, Format, Level, Payload, Request, MAX_HASHES};

use super::api::decode_hashes;
use super::body::{read_json, read_json_or_empty, read_limited};
use super::state::App;

#[cfg(any(fuzzing, test))]
pub mod fuzz;
pub mod sign_doc;

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

fn invalid(param: &str) -> Error {
    Error::Invalid(format!("Invalid parameter {param}"))
}

/// The credential ID of a key generation.
fn credential_id(user_id: &str, generation: i64) -> String {
    format!("{user_id}.g{generation}")
}

/// The session's active credential, if `id` names it.
fn own_credential(principal: &Principal, id: &str) -> Result<i64> {
    match &principal.key {
        Some(k) if credential_id(&principal.user_id, k.generation) == id => Ok(k.generation),
        _ => Err(invalid("credentialID")),
    }
}

/// `POST /csc/v2/info` (no authentication).
pub async fn info(State(app): State<Arc<App>>, body: Body) -> Result<Response> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Req {
        lang: Option<String>,
    }
    let bytes = read_limited(body, super::body::MAX_OPEN_BODY_BYTES).await?;
    if !bytes.is_empty() {
        serde_json::from_slice::<Req>(&bytes).map_err(|e| Error::Invalid(format!("invalid JSON: {e}")))?;
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
        // The issuer (RFC 8414 metadata at /.well-known/oauth-authorization-server):
        // its endpoints are /oidc/authorize and /oidc/token, not CSC's
        // /oauth2/..., so no `oauth2` base URL is named.
        "oauth2Issuer": base,
        "asynchronousOperationMode": false,
        "methods": ["credentials/list", "credentials/info", "credentials/authorize", "signatures/signHash", "signatures/signDoc"],
        "signAlgorithms": { "algos": [oids::SHA256_WITH_RSA, oids::RSA_ENCRYPTION, oids::RSASSA_PSS, oids::ECDSA_SHA256] },
        "signature_formats": signature_formats(),
        "conformance_levels": app.signing.levels().iter().map(|l| format!("Ades-{}", l.as_str())).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// The signature formats of signDoc: CAdES (`C`, detached or attached) and
/// XAdES in the e-prescription profile (`X`: enveloped into the document,
/// or the signature element alone).
fn signature_formats() -> Value {
    json!({ "formats": ["C", "X"], "envelope_properties": [["Detached", "Attached"], ["Enveloped", "Detached"]] })
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
pub async fn credentials_list(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Result<Response> {
    let principal = app.principal(&headers).await?;
    let req: ListReq = read_json_or_empty(body, app.config.server.max_json_bytes).await?;
    if let Some(u) = &req.user_id {
        if u != &principal.user_id {
            return Err(invalid("userID"));
        }
    }
    let ids: Vec<String> = principal.key.iter().map(|k| credential_id(&principal.user_id, k.generation)).collect();
    let mut out = json!({ "credentialIDs": ids });
    if req.credential_info == Some(true) && principal.key.is_some() {
        let info = credential_info(
            &app,
            &principal,
            req.certificates.as_deref(),
            req.cert_info.unwrap_or(false),
            req.auth_info.unwrap_or(false),
        )
        .await?;
        let mut info = info;
        info["credentialID"] = json!(ids[0]);
        out["credentialInfos"] = json!([info]);
    }
    Ok(Json(out).into_response())
}

/// X.509 time as CSC writes it: `YYYYMMDDHHMMSSZ` (GeneralizedTime).
fn csc_time(t: &x509_cert::time::Time) -> String {
    let dt = t.to_date_time();
    format!("{:04}{:02}{:02}{:02}{:02}{:02}Z", dt.year(), dt.month(), dt.day(), dt.hour(), dt.minutes(), dt.seconds())
}

async fn credential_info(
    app: &App,
    principal: &Principal,
    certificates: Option<&str>,
    cert_info: bool,
    auth_info: bool,
) -> Result<Value> {
    let signer = app.signing.signer(principal).await?;
    let cert = Certificate::from_der(signer.certificate()).map_err(Error::internal)?;
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
        "single" => certs.push(Base64::encode_string(signer.certificate())),
        "chain" => {
            certs.push(Base64::encode_string(signer.certificate()));
            certs.extend(signer.chain.iter().map(|c| Base64::encode_string(c)));
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
        "multisign": MAX_HASHES,
        "lang": "ja-JP",
        "signature_formats": signature_formats(),
        "signatureQualifiers": [Kind::Prescription.signature_qualifier(), Kind::Dispensing.signature_qualifier()],
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
pub async fn credentials_info(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Result<Response> {
    let principal = app.principal(&headers).await?;
    let req: InfoReq = read_json(body, app.config.server.max_json_bytes).await?;
    own_credential(&principal, &req.credential_id)?;
    Ok(Json(
        credential_info(
            &app,
            &principal,
            req.certificates.as_deref(),
            req.cert_info.unwrap_or(false),
            req.auth_info.unwrap_or(false),
        )
        .await?,
    )
    .into_response())
}

/// Hashes given as v2 `hashes` or v1 `hash`, with `hashAlgorithmOID` (v2) or `hashAlgo` (v1).
fn hashes_and_alg(
    hashes: Option<Vec<String>>,
    hash: Option<Vec<String>>,
    oid: Option<&str>,
    algo: Option<&str>,
) -> Result<(Vec<Vec<u8>>, Option<DigestAlgorithm>)> {
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
                decode_hashes(&l, alg_for_len).map_err(|e| Error::Invalid(format!("Invalid parameter hashes: {e}")))?,
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
pub async fn credentials_authorize(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Result<Response> {
    let principal = app.principal(&headers).await?;
    // Refused before the body is read (the pipeline checks again).
    principal.require_sign_scope()?;
    let req: AuthorizeReq = read_json(body, app.config.server.max_json_bytes).await?;
    let generation = own_credential(&principal, &req.credential_id)?;
    if req.num_signatures == 0 || req.num_signatures as usize > MAX_HASHES {
        return Err(invalid("numSignatures"));
    }
    let (hashes, _) =
        hashes_and_alg(req.hashes, req.hash, req.hash_algorithm_oid.as_deref(), req.hash_algo.as_deref())?;
    let (sad, lifetime) = app.signing.authorize(&principal, generation, req.num_signatures, hashes).await?;
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
fn scheme_for(sign_algo: &str, hash_alg: Option<DigestAlgorithm>, is_rsa: bool) -> Result<SignatureScheme> {
    let implied = match sign_algo {
        oids::SHA256_WITH_RSA | oids::ECDSA_SHA256 => Some(DigestAlgorithm::Sha256),
        oids::SHA384_WITH_RSA | oids::ECDSA_SHA384 => Some(DigestAlgorithm::Sha384),
        oids::SHA512_WITH_RSA | oids::ECDSA_SHA512 => Some(DigestAlgorithm::Sha512),
        oids::RSA_ENCRYPTION | oids::RSASSA_PSS => None,
        _ => return Err(invalid("signAlgo")),
    };
    let alg = match (implied, hash_alg) {
        (Some(i), Some(h)) if i != h => {
            return Err(Error::Invalid("Invalid parameter hashAlgorithmOID: it contradicts signAlgo".into()))
        }
        (Some(i), _) => i,
        (None, Some(h)) => h,
        (None, None) => {
            return Err(Error::Invalid("Missing parameter hashAlgorithmOID (required with this signAlgo)".into()))
        }
    };
    let scheme = match sign_algo {
        oids::ECDSA_SHA256 | oids::ECDSA_SHA384 | oids::ECDSA_SHA512 => SignatureScheme::Ecdsa(alg),
        oids::RSASSA_PSS => SignatureScheme::RsaPss(alg),
        _ => SignatureScheme::RsaPkcs1v15(alg),
    };
    let fits = matches!(scheme, SignatureScheme::Ecdsa(_)) != is_rsa;
    if !fits {
        return Err(Error::Invalid("Invalid parameter signAlgo: it does not fit the credential's key".into()));
    }
    Ok(scheme)
}

/// Checks `signAlgoParams` (base64 DER): inkan signs RSA-PSS one way only
/// (MGF1 on the same hash, a salt as long as the hash), and other algorithms
/// take no parameters. Anything else is refused, not signed in a way the
/// client would not verify.
fn check_sign_algo_params(scheme: SignatureScheme, params: Option<&str>) -> Result<()> {
    let Some(params) = params else { return Ok(()) };
    let der = Base64::decode_vec(params).map_err(|_| invalid("signAlgoParams"))?;
    let fits = match scheme {
        SignatureScheme::RsaPss(d) => inkan_keystore::pss_params_fit(d, &der),
        // Absent, or an ASN.1 NULL.
        _ => der.is_empty() || der == [0x05, 0x00],
    };
    if fits {
        return Ok(());
    }
    Err(Error::Invalid(
        "Invalid parameter signAlgoParams: inkan signs RSASSA-PSS with MGF1 on the same hash, a salt as long as the \
         hash and trailer field 1, and other algorithms without parameters"
            .into(),
    ))
}

/// Checks a signDoc entry's `signAlgo` and `signAlgoParams` against the
/// scheme inkan signs CAdES with for this key (`[signing] rsa_scheme` for
/// RSA, ECDSA for EC) and the entry's hash: a client that asks for another
/// gets an error, not a signature it would not verify.
/// Checks a CAdES entry's `signAlgo` and its parameters against `ours`, the
/// scheme the signing pipeline signs with for this signer and digest
/// ([`crate::signing::Signer`]'s, never derived again here).
fn check_doc_sign_algo(ours: SignatureScheme, sign_algo: Option<&str>, params: Option<&str>) -> Result<()> {
    let alg = ours.digest_algorithm();
    let is_rsa = !matches!(ours, SignatureScheme::Ecdsa(_));
    if let Some(sign_algo) = sign_algo {
        if scheme_for(sign_algo, Some(alg), is_rsa)? != ours {
            return Err(Error::Invalid(format!(
                "Invalid parameter signAlgo: inkan signs CAdES for this credential with {} (see credentials/info)",
                match ours {
                    SignatureScheme::Ecdsa(_) => "ECDSA",
                    SignatureScheme::RsaPss(_) => "RSASSA-PSS",
                    _ => "RSASSA-PKCS1-v1_5",
                }
            )));
        }
    }
    check_sign_algo_params(ours, params)
}

/// `POST /csc/v2/signatures/signHash`
pub async fn sign_hash(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Result<Response> {
    let principal = app.principal(&headers).await?;
    // Refused before the body is read (the pipeline checks again).
    principal.require_sign_scope()?;
    let req: SignHashReq = read_json(body, app.config.server.max_json_bytes).await?;
    let generation = own_credential(&principal, &req.credential_id)?;
    let is_rsa = principal.key.as_ref().is_some_and(|k| k.algorithm.is_rsa());
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
    check_sign_algo_params(scheme, req.sign_algo_params.as_deref())?;
    let alg = scheme.digest_algorithm();
    let list = req.hashes.or(req.hash).ok_or_else(|| Error::Invalid("Missing parameter hashes".into()))?;
    let digests = decode_hashes(&list, alg).map_err(|e| Error::Invalid(format!("Invalid parameter hashes: {e}")))?;
    let signed = app
        .signing
        .sign(
            &principal,
            Request {
                payload: Payload::Digests { alg, digests },
                format: Format::Raw(Some(scheme)),
                generation: Some(generation),
                activation: Activation::Csc(req.sad.as_deref()),
                via: "csc.signHash",
                detail: Some(json!({ "signAlgo": req.sign_algo })),
                level: Level::BB,
            },
        )
        .await?;
    let values: Vec<String> = signed.signatures.into_iter().map(|p| Base64::encode_string(&p.prefix)).collect();
    Ok(Json(json!({ "signatures": values })).into_response())
}
