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
use inkan_keystore::{Digest, DigestAlgorithm, SignatureScheme};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use x509_cert::Certificate;

use crate::auth::principal::Principal;
use crate::eps::Kind;
use crate::error::{Error, Result};
use crate::signing::format::Family;
use crate::signing::{Activation, EpsInput, Format, Level, Payload, Request, MAX_HASHES};

use super::api::{decode_hashes, Signatures};
use super::body::{read_json, read_json_or_empty, read_limited};
use super::error::ErrorBody;
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

/// The body of `info` (optional).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = CscInfoReq)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct InfoAsked {
    /// The language asked for (inkan answers in ja-JP).
    lang: Option<String>,
}

/// The answer of `info`: the service and what it signs.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CscInfo)]
#[serde(rename_all = "camelCase")]
pub struct Info {
    /// The CSC specification version.
    specs: &'static str,
    /// `inkan`.
    name: &'static str,
    /// The logo's URL.
    logo: String,
    /// `JP`.
    region: &'static str,
    /// `ja-JP`.
    lang: &'static str,
    /// What the service is.
    description: &'static str,
    /// `oauth2code`: inkan's OpenID Connect.
    auth_type: Vec<&'static str>,
    /// The issuer (RFC 8414 metadata at `/.well-known/oauth-authorization-server`): its
    /// endpoints are `/oidc/authorize` and `/oidc/token`, not CSC's `/oauth2/...`, so no
    /// `oauth2` base URL is named.
    oauth2_issuer: String,
    /// Always false.
    asynchronous_operation_mode: bool,
    /// The methods this service answers.
    methods: Vec<&'static str>,
    /// The signature algorithms (OIDs).
    sign_algorithms: SignAlgorithms,
    /// signDoc's formats.
    #[serde(rename = "signature_formats")]
    signature_formats: SignatureFormats,
    /// signDoc's levels (`Ades-B-B`, ...), as far as the TSA and validation data allow.
    #[serde(rename = "conformance_levels")]
    conformance_levels: Vec<String>,
}

/// The signature algorithms of `info`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignAlgorithms {
    /// OIDs.
    algos: Vec<&'static str>,
}

/// The signature formats of signDoc: CAdES (`C`, detached or attached) and
/// XAdES in the e-prescription profile (`X`: enveloped into the document,
/// or the signature element alone).
#[derive(Debug, Serialize, ToSchema)]
pub struct SignatureFormats {
    /// `C` and `X`.
    formats: Vec<&'static str>,
    /// Per format, its envelope properties.
    envelope_properties: Vec<Vec<&'static str>>,
}

/// `POST /csc/v2/info`: the service (no authentication).
#[utoipa::path(
    post,
    path = "/info",
    tag = "csc",
    operation_id = "cscInfo",
    request_body = Option<InfoAsked>,
    responses(
        (status = 200, description = "The service", body = Info),
        (status = 400, description = "Not the body CSC names", body = ErrorBody),
    )
)]
pub async fn info(State(app): State<Arc<App>>, body: Body) -> Result<Response> {
    let bytes = read_limited(body, super::body::MAX_OPEN_BODY_BYTES).await?;
    if !bytes.is_empty() {
        serde_json::from_slice::<InfoAsked>(&bytes).map_err(|e| Error::Invalid(format!("invalid JSON: {e}")))?;
    }
    let base = app.config.server.public_url.trim_end_matches('/');
    Ok(Json(Info {
        specs: "2.0.0.2",
        name: "inkan",
        logo: format!("{base}/static/logo.svg"),
        region: "JP",
        lang: "ja-JP",
        description: "inkan remote signing (HPKI second keys)",
        auth_type: vec!["oauth2code"],
        oauth2_issuer: base.to_string(),
        asynchronous_operation_mode: false,
        methods: vec![
            "credentials/list",
            "credentials/info",
            "credentials/authorize",
            "signatures/signHash",
            "signatures/signDoc",
        ],
        sign_algorithms: SignAlgorithms {
            algos: vec![oids::SHA256_WITH_RSA, oids::RSA_ENCRYPTION, oids::RSASSA_PSS, oids::ECDSA_SHA256],
        },
        signature_formats: signature_formats(),
        conformance_levels: app.signing.levels().iter().map(|l| format!("Ades-{}", l.as_str())).collect(),
    })
    .into_response())
}

/// signDoc's formats and their envelope properties.
fn signature_formats() -> SignatureFormats {
    SignatureFormats {
        formats: Family::ALL.iter().filter_map(|f| f.about().csc).collect(),
        envelope_properties: vec![vec!["Detached", "Attached"], vec!["Enveloped", "Detached"]],
    }
}

/// The body of `credentials/list` (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = CredentialsListReq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct ListReq {
    /// The user (only the session's own).
    #[serde(rename = "userID")]
    user_id: Option<String>,
    /// With the credential's information.
    credential_info: Option<bool>,
    /// `none`, `single` (default) or `chain`.
    certificates: Option<String>,
    /// With the certificate's DNs, serial and validity.
    cert_info: Option<bool>,
    /// With how the credential is authorized.
    auth_info: Option<bool>,
    /// Accepted; the session has one credential.
    only_valid: Option<bool>,
    /// Accepted; inkan answers in ja-JP.
    lang: Option<String>,
    /// Accepted and ignored.
    client_data: Option<String>,
    /// Accepted; there is one page.
    max_results: Option<u32>,
    /// Accepted; there is one page.
    page_token: Option<String>,
}

/// The answer of `credentials/list`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialList {
    /// The session's credential (none without an active key): `<user ID>.g<generation>`.
    #[serde(rename = "credentialIDs")]
    credential_ids: Vec<String>,
    /// With `credentialInfo`: each credential's information.
    #[serde(rename = "credentialInfos", skip_serializing_if = "Option::is_none")]
    credential_infos: Option<Vec<CredentialInfo>>,
}

/// `POST /csc/v2/credentials/list`: the session's credential.
#[utoipa::path(
    post,
    path = "/credentials/list",
    tag = "csc",
    operation_id = "cscCredentialsList",
    security(("session" = [])),
    request_body = Option<ListReq>,
    responses(
        (status = 200, description = "The session's credential", body = CredentialList),
        (status = 400, description = "A parameter is not right", body = ErrorBody),
        (status = 401, description = "No session, or it has ended or was revoked", body = ErrorBody),
    )
)]
pub async fn credentials_list(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Result<Response> {
    let principal = app.principal(&headers).await?;
    let req: ListReq = read_json_or_empty(body, app.config.server.max_json_bytes).await?;
    if let Some(u) = &req.user_id {
        if u != &principal.user_id {
            return Err(invalid("userID"));
        }
    }
    let ids: Vec<String> = principal.key.iter().map(|k| credential_id(&principal.user_id, k.generation)).collect();
    let mut out = CredentialList { credential_ids: ids, credential_infos: None };
    if let (Some(true), Some(id)) = (req.credential_info, out.credential_ids.first()) {
        let mut info = credential_info(
            &app,
            &principal,
            req.certificates.as_deref(),
            req.cert_info.unwrap_or(false),
            req.auth_info.unwrap_or(false),
        )
        .await?;
        info.credential_id = Some(id.clone());
        out.credential_infos = Some(vec![info]);
    }
    Ok(Json(out).into_response())
}

/// X.509 time as CSC writes it: `YYYYMMDDHHMMSSZ` (GeneralizedTime).
fn csc_time(t: &x509_cert::time::Time) -> String {
    let dt = t.to_date_time();
    format!("{:04}{:02}{:02}{:02}{:02}{:02}Z", dt.year(), dt.month(), dt.day(), dt.hour(), dt.minutes(), dt.seconds())
}

/// A credential: its key, its certificate and how it is authorized.
#[derive(Debug, Serialize, ToSchema)]
#[allow(non_snake_case)]
pub struct CredentialInfo {
    /// In `credentials/list` only: the credential's ID.
    #[serde(rename = "credentialID", skip_serializing_if = "Option::is_none")]
    credential_id: Option<String>,
    /// What the credential is.
    description: &'static str,
    /// The key.
    key: KeyInfo,
    /// The certificate.
    cert: CertInfo,
    /// `oauth2code`.
    #[serde(rename = "authMode")]
    auth_mode: &'static str,
    /// `1`: the session suffices; `2`: every signHash needs a SAD bound to its hashes.
    SCAL: String,
    /// The most hashes one request signs.
    multisign: usize,
    /// `ja-JP`.
    lang: &'static str,
    /// signDoc's formats.
    signature_formats: SignatureFormats,
    /// The signDoc qualifiers of the e-prescription profile.
    #[serde(rename = "signatureQualifiers")]
    signature_qualifiers: Vec<&'static str>,
    /// With `authInfo`: how the credential is authorized.
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<AuthInfo>,
}

/// A credential's key.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyInfo {
    /// `enabled`.
    status: &'static str,
    /// The signature algorithms it signs with (OIDs).
    algo: Vec<&'static str>,
    /// Its length in bits.
    len: u32,
    /// An EC key's curve (OID).
    #[serde(skip_serializing_if = "Option::is_none")]
    curve: Option<&'static str>,
}

/// A credential's certificate.
#[derive(Debug, Serialize, ToSchema)]
#[allow(non_snake_case)]
pub struct CertInfo {
    /// `valid` or `expired`.
    status: &'static str,
    /// Base64 DER: none, the certificate, or the chain (`certificates`).
    certificates: Vec<String>,
    /// With `certInfo`: the issuer's DN.
    #[serde(skip_serializing_if = "Option::is_none")]
    issuerDN: Option<String>,
    /// With `certInfo`: the serial number in hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    serialNumber: Option<String>,
    /// With `certInfo`: the subject's DN.
    #[serde(skip_serializing_if = "Option::is_none")]
    subjectDN: Option<String>,
    /// With `certInfo`: the start of its validity (`YYYYMMDDHHMMSSZ`).
    #[serde(skip_serializing_if = "Option::is_none")]
    validFrom: Option<String>,
    /// With `certInfo`: the end of its validity (`YYYYMMDDHHMMSSZ`).
    #[serde(skip_serializing_if = "Option::is_none")]
    validTo: Option<String>,
}

/// How a credential is authorized.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuthInfo {
    /// `oauth2code`.
    mode: &'static str,
}

async fn credential_info(
    app: &App,
    principal: &Principal,
    certificates: Option<&str>,
    cert_info: bool,
    auth_info: bool,
) -> Result<CredentialInfo> {
    let signer = app.signing.signer(principal).await?;
    let cert = Certificate::from_der(signer.certificate()).map_err(Error::internal)?;
    let spki = cert.tbs_certificate().subject_public_key_info();
    let is_ec = spki.algorithm.oid.to_string() == oids::EC_PUBLIC_KEY;
    let (algos, len) = if is_ec {
        (vec![oids::ECDSA_SHA256, oids::ECDSA_SHA384, oids::ECDSA_SHA512], 256)
    } else {
        let bits = rsa_bits(spki);
        (
            vec![
                oids::SHA256_WITH_RSA,
                oids::RSA_ENCRYPTION,
                oids::SHA384_WITH_RSA,
                oids::SHA512_WITH_RSA,
                oids::RSASSA_PSS,
            ],
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
    let tbs = cert.tbs_certificate();
    let shown = |text: String| cert_info.then_some(text);
    let cert_obj = CertInfo {
        status,
        certificates: certs,
        issuerDN: shown(tbs.issuer().to_string()),
        serialNumber: shown(crate::pki::serial_hex(&cert)),
        subjectDN: shown(tbs.subject().to_string()),
        validFrom: shown(csc_time(&tbs.validity().not_before)),
        validTo: shown(csc_time(&tbs.validity().not_after)),
    };
    Ok(CredentialInfo {
        credential_id: None,
        description: "HPKI second key (セカンド鍵)",
        key: KeyInfo { status: "enabled", algo: algos, len, curve: is_ec.then_some("1.2.840.10045.3.1.7") },
        cert: cert_obj,
        auth_mode: "oauth2code",
        SCAL: app.config.csc.scal.clone(),
        multisign: MAX_HASHES,
        lang: "ja-JP",
        signature_formats: signature_formats(),
        signature_qualifiers: vec![Kind::Prescription.signature_qualifier(), Kind::Dispensing.signature_qualifier()],
        auth: auth_info.then_some(AuthInfo { mode: "oauth2code" }),
    })
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

/// The body of `credentials/info`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = CredentialsInfoReq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct InfoReq {
    /// The credential: `<user ID>.g<generation>` (credentials/list).
    #[serde(rename = "credentialID")]
    credential_id: String,
    /// `none`, `single` (default) or `chain`.
    certificates: Option<String>,
    /// With the certificate's DNs, serial and validity.
    cert_info: Option<bool>,
    /// With how the credential is authorized.
    auth_info: Option<bool>,
    /// Accepted; inkan answers in ja-JP.
    lang: Option<String>,
    /// Accepted and ignored.
    client_data: Option<String>,
}

/// `POST /csc/v2/credentials/info`: a credential's key and certificate.
#[utoipa::path(
    post,
    path = "/credentials/info",
    tag = "csc",
    operation_id = "cscCredentialsInfo",
    security(("session" = [])),
    request_body = InfoReq,
    responses(
        (status = 200, description = "The credential", body = CredentialInfo),
        (status = 400, description = "Not the session's credential, or a parameter is not right", body = ErrorBody),
        (status = 401, description = "No session, or it has ended or was revoked", body = ErrorBody),
    )
)]
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
) -> Result<(Vec<Digest>, Option<DigestAlgorithm>)> {
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

/// The body of `credentials/authorize` (v1's `hash` and `hashAlgo` too).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = CredentialsAuthorizeReq)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, non_snake_case)]
struct AuthorizeReq {
    /// The credential: `<user ID>.g<generation>` (credentials/list).
    #[serde(rename = "credentialID")]
    credential_id: String,
    /// How many signatures the SAD allows (1 to the credential's multisign).
    #[serde(rename = "numSignatures")]
    num_signatures: u32,
    /// The base64 hashes the SAD (or the signature) is for.
    hashes: Option<Vec<String>>,
    /// CSC v1's name of `hashes`.
    hash: Option<Vec<String>>,
    /// The hashes' algorithm (OID); implied by signAlgo when it names one.
    #[serde(rename = "hashAlgorithmOID")]
    hash_algorithm_oid: Option<String>,
    /// CSC v1's name of `hashAlgorithmOID`.
    #[serde(rename = "hashAlgo")]
    hash_algo: Option<String>,
    /// Not used: the auth session activates the key.
    PIN: Option<String>,
    /// Not used: the auth session activates the key.
    OTP: Option<String>,
    /// Accepted and ignored.
    description: Option<String>,
    /// Accepted and ignored.
    #[serde(rename = "clientData")]
    client_data: Option<String>,
}

/// The answer of `credentials/authorize`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CredentialsAuthorized)]
pub struct Authorized {
    /// The Signature Activation Data: single-use, bound to the hashes given.
    #[serde(rename = "SAD")]
    sad: String,
    /// Seconds it stays valid.
    #[serde(rename = "expiresIn")]
    expires_in: i64,
}

/// `POST /csc/v2/credentials/authorize`: a SAD for the hashes to be signed.
#[utoipa::path(
    post,
    path = "/credentials/authorize",
    tag = "csc",
    operation_id = "cscCredentialsAuthorize",
    security(("session" = [])),
    request_body = AuthorizeReq,
    responses(
        (status = 200, description = "The SAD", body = Authorized),
        (status = 400, description = "Not the session's credential, or a parameter is not right", body = ErrorBody),
        (status = 401, description = "No session, or it has ended or was revoked", body = ErrorBody),
        (status = 403, description = "No sign scope or no active key", body = ErrorBody),
        (status = 409, description = "The session holds as many unused SADs as it may", body = ErrorBody),
    )
)]
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
    Ok(Json(Authorized { sad, expires_in: lifetime }).into_response())
}

/// The body of `signatures/signHash` (v1's `hash` and `hashAlgo` too).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct SignHashReq {
    /// The credential: `<user ID>.g<generation>` (credentials/list).
    #[serde(rename = "credentialID")]
    credential_id: String,
    /// The SAD of credentials/authorize (required with SCAL 2).
    #[serde(rename = "SAD")]
    sad: Option<String>,
    /// The base64 hashes the SAD (or the signature) is for.
    hashes: Option<Vec<String>>,
    /// CSC v1's name of `hashes`.
    hash: Option<Vec<String>>,
    /// The hashes' algorithm (OID); implied by signAlgo when it names one.
    #[serde(rename = "hashAlgorithmOID")]
    hash_algorithm_oid: Option<String>,
    /// CSC v1's name of `hashAlgorithmOID`.
    #[serde(rename = "hashAlgo")]
    hash_algo: Option<String>,
    /// The signature algorithm (OID; credentials/info lists them).
    #[serde(rename = "signAlgo")]
    sign_algo: String,
    /// Base64 DER parameters (RSASSA-PSS: MGF1 on the same hash, salt the hash length).
    #[serde(rename = "signAlgoParams")]
    sign_algo_params: Option<String>,
    /// Accepted; inkan answers synchronously (`S`).
    #[serde(rename = "operationMode")]
    operation_mode: Option<String>,
    /// Accepted; inkan answers synchronously.
    #[serde(rename = "validity_period")]
    validity_period: Option<u64>,
    /// Accepted; inkan answers synchronously.
    #[serde(rename = "response_uri")]
    response_uri: Option<String>,
    /// Accepted and ignored.
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

/// `POST /csc/v2/signatures/signHash`: raw signature values over hashes.
#[utoipa::path(
    post,
    path = "/signatures/signHash",
    tag = "csc",
    operation_id = "cscSignHash",
    security(("session" = [])),
    request_body = SignHashReq,
    responses(
        (status = 200, description = "One signature value per hash", body = Signatures),
        (status = 400, description = "A parameter is not right, or the SAD does not cover the hashes", body = ErrorBody),
        (status = 401, description = "No session, or it has ended or was revoked", body = ErrorBody),
        (status = 403, description = "No sign scope or no active key", body = ErrorBody),
        (status = 503, description = "The token or the store is unavailable: retry later", body = ErrorBody),
    )
)]
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
                payload: Payload::Digests(digests),
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
    Ok(Json(Signatures { signatures: values }).into_response())
}
