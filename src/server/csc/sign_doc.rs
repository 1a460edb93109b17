//! `signatures/signDoc`: documents or their digests signed as CAdES
//! (detached or attached) or XAdES in the e-prescription profile.

use super::*;

/// One `documentDigests` entry of signDoc.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = SignDocDigests)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(super) struct DocumentDigests {
    /// Base64 digests of the documents.
    pub(super) hashes: Vec<String>,
    /// The digests' algorithm (OID).
    #[serde(rename = "hashAlgorithmOID")]
    pub(super) hash_algorithm_oid: String,
    /// `C` (CAdES) or `X` (XAdES in the e-prescription profile).
    pub(super) signature_format: String,
    /// `Ades-B-B` (default), `Ades-B-T`, `Ades-B-LT` or `Ades-B-LTA`.
    pub(super) conformance_level: Option<String>,
    /// The signature algorithm (OID); it must be the one inkan signs with (credentials/info).
    #[serde(rename = "signAlgo")]
    pub(super) sign_algo: Option<String>,
    /// Base64 DER parameters of signAlgo.
    #[serde(rename = "signAlgoParams")]
    pub(super) sign_algo_params: Option<String>,
    /// Accepted; inkan sets the signed properties of the profile.
    pub(super) signed_props: Option<Value>,
    /// `C`: `Detached` (default) or `Attached`; `X`: `Enveloped` (default) or `Detached`.
    pub(super) signed_envelope_property: Option<String>,
}

/// One `documents` entry of signDoc.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = SignDocDocument)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(super) struct Document {
    /// The document (base64).
    document: String,
    /// `C` (CAdES) or `X` (XAdES in the e-prescription profile).
    signature_format: String,
    /// `Ades-B-B` (default), `Ades-B-T`, `Ades-B-LT` or `Ades-B-LTA`.
    conformance_level: Option<String>,
    /// The signature algorithm (OID); it must be the one inkan signs with (credentials/info).
    #[serde(rename = "signAlgo")]
    sign_algo: Option<String>,
    /// Base64 DER parameters of signAlgo.
    #[serde(rename = "signAlgoParams")]
    sign_algo_params: Option<String>,
    /// Accepted; inkan sets the signed properties of the profile.
    signed_props: Option<Value>,
    /// `C`: `Detached` (default) or `Attached`; `X`: `Enveloped` (default) or `Detached`.
    signed_envelope_property: Option<String>,
}

/// The body of `signatures/signDoc`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(super) struct SignDocReq {
    /// The credential (`<user ID>.g<generation>`); default the session's.
    #[serde(rename = "credentialID")]
    pub(super) credential_id: Option<String>,
    /// `jp_eps_prescription` or `jp_eps_dispensing`: the kind of e-prescription for XAdES digests.
    #[serde(rename = "signatureQualifier")]
    pub(super) signature_qualifier: Option<String>,
    /// The SAD of credentials/authorize (required with SCAL 2).
    #[serde(rename = "SAD")]
    pub(super) sad: Option<String>,
    /// Digests to sign.
    #[serde(rename = "documentDigests")]
    pub(super) document_digests: Option<Vec<DocumentDigests>>,
    /// Documents to sign.
    pub(super) documents: Option<Vec<Document>>,
    /// Accepted; inkan answers synchronously (`S`).
    #[serde(rename = "operationMode")]
    pub(super) operation_mode: Option<String>,
    /// Accepted; inkan answers synchronously.
    #[serde(rename = "validity_period")]
    pub(super) validity_period: Option<u64>,
    /// Accepted; inkan answers synchronously.
    #[serde(rename = "response_uri")]
    pub(super) response_uri: Option<String>,
    /// Accepted and ignored.
    #[serde(rename = "clientData")]
    pub(super) client_data: Option<String>,
    /// Accepted; validation data is in the signature at B-LT.
    #[serde(rename = "returnValidationInfo")]
    pub(super) return_validation_info: Option<bool>,
}

/// The answer of `signatures/signDoc`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignDocAnswer {
    /// For `documents` signed attached or enveloped: each document with its signature (base64).
    #[serde(rename = "DocumentWithSignature", skip_serializing_if = "Option::is_none")]
    document_with_signature: Option<Vec<String>>,
    /// For digests and detached signatures: each signature (base64).
    #[serde(rename = "SignatureObject", skip_serializing_if = "Option::is_none")]
    signature_object: Option<Vec<String>>,
}

/// A signDoc entry's format family (its `signature_format`, CSC's code of
/// the family) and level.
pub(super) fn check_format(format: &str, level: Option<&str>) -> Result<(Family, Level)> {
    let Some(format) = Family::from_csc(format) else {
        let codes: Vec<String> = Family::ALL
            .iter()
            .filter_map(|f| f.about().csc.map(|c| format!("{c} ({}{})", f.about().name, f.about().note)))
            .collect();
        return Err(Error::Invalid(format!("Invalid parameter signature_format: {}", codes.join(" or "))));
    };
    let level = match level {
        None => Level::BB,
        Some(l) => l.parse().map_err(|_| {
            Error::Invalid("Invalid parameter conformance_level: Ades-B-B, Ades-B-T, Ades-B-LT or Ades-B-LTA".into())
        })?,
    };
    Ok((format, level))
}

/// XAdES in the e-prescription profile signs with RSASSA-PKCS1-v1_5 (or
/// ECDSA for an EC key) over SHA-256, whatever `[signing] rsa_scheme` says.
fn check_xades_sign_algo(is_rsa: bool, sign_algo: Option<&str>, params: Option<&str>) -> Result<()> {
    let ours = if is_rsa {
        SignatureScheme::RsaPkcs1v15(DigestAlgorithm::Sha256)
    } else {
        SignatureScheme::Ecdsa(DigestAlgorithm::Sha256)
    };
    if let Some(sign_algo) = sign_algo {
        if scheme_for(sign_algo, Some(DigestAlgorithm::Sha256), is_rsa)? != ours {
            return Err(Error::Invalid(
                "Invalid parameter signAlgo: XAdES in the e-prescription profile is RSA-SHA256 (ECDSA-SHA256 for an \
                 EC key)"
                    .into(),
            ));
        }
    }
    check_sign_algo_params(ours, params)
}

/// The kind of e-prescription a signDoc request signs over digests: its
/// `signatureQualifier`.
fn digests_kind(qualifier: Option<&str>) -> Result<Kind> {
    match qualifier {
        Some(q) if q == Kind::Prescription.signature_qualifier() => Ok(Kind::Prescription),
        Some(q) if q == Kind::Dispensing.signature_qualifier() => Ok(Kind::Dispensing),
        _ => Err(Error::Invalid(format!(
            "Invalid parameter signatureQualifier: documentDigests with signature_format X need {} or {}",
            Kind::Prescription.signature_qualifier(),
            Kind::Dispensing.signature_qualifier()
        ))),
    }
}

/// `POST /csc/v2/signatures/signDoc`: CAdES-BES for digests (detached) and
/// documents; XAdES-BES for e-prescription documents (into the document,
/// or the signature element alone) and Reference 1 digests.
///
/// One SAD covers every hash of the request (for XAdES, Reference 1's
/// digest, whether the client sent the document or the digest); the
/// signatures are made per entry, each through the signing pipeline.
#[utoipa::path(
    post,
    path = "/signatures/signDoc",
    tag = "csc",
    operation_id = "cscSignDoc",
    security(("session" = [])),
    request_body = SignDocReq,
    responses(
        (status = 200, description = "The signed documents or the signature objects", body = SignDocAnswer),
        (status = 400, description = "A parameter is not right, or the SAD does not cover the hashes", body = ErrorBody),
        (status = 401, description = "No session, or it has ended or was revoked", body = ErrorBody),
        (status = 403, description = "No sign scope or no active key", body = ErrorBody),
        (status = 409, description = "B-LT, B-LTA: a certificate of the chain is revoked", body = ErrorBody),
        (status = 422, description = "A dispensing record whose doctor's signature does not verify", body = ErrorBody),
        (status = 503, description = "The token, the store or the TSA is unavailable: retry later", body = ErrorBody),
    )
)]
pub async fn sign_doc(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Result<Response> {
    let principal = app.principal(&headers).await?;
    // Refused before the body is read (the pipeline checks again).
    principal.require_sign_scope()?;
    // The documents are held while they are signed: room for the request
    // first, by its Content-Length, as for enveloped documents.
    let max = app.config.server.max_document_bytes;
    let Some(_room) = crate::server::api::hold(&app, &principal, &headers, max) else {
        let mut body = body;
        crate::server::body::drain(&mut body).await;
        return Ok(crate::server::limits::no_room());
    };
    let req: SignDocReq = read_json(body, max).await?;
    let credential = match &req.credential_id {
        Some(id) => id.clone(),
        None => principal
            .key
            .iter()
            .map(|k| credential_id(&principal.user_id, k.generation))
            .next()
            .ok_or_else(|| invalid("credentialID"))?,
    };
    let generation = own_credential(&principal, &credential)?;
    /// What one entry asks for, and how its answer is given.
    enum Out {
        /// `SignatureObject`: the signature alone.
        Object,
        /// `DocumentWithSignature`: CAdES around the content.
        Around(Vec<u8>),
        /// `DocumentWithSignature`: the XAdES document with its signature.
        Spliced,
    }
    struct Job {
        payload: JobPayload,
        out: Out,
        level: Level,
    }
    enum JobPayload {
        Digests(Vec<Digest>, Format),
        Enveloping(Digest, u64),
        Eps(Arc<crate::eps::Document>),
    }
    impl Job {
        fn hashes(&self) -> Vec<Digest> {
            match &self.payload {
                JobPayload::Digests(h, _) => h.clone(),
                JobPayload::Enveloping(d, _) => vec![d.clone()],
                JobPayload::Eps(doc) => vec![doc.digest.clone()],
            }
        }
    }
    let mut jobs: Vec<Job> = Vec::new();
    // One request makes at most MAX_HASHES signatures, however it spreads
    // them over documentDigests entries and documents (each entry alone is
    // also checked by the pipeline).
    let entries = req.document_digests.iter().flatten().map(|d| d.hashes.len()).sum::<usize>()
        + req.documents.iter().flatten().count();
    if entries > MAX_HASHES {
        return Err(Error::Invalid(format!(
            "Invalid parameter documentDigests: at most {MAX_HASHES} signatures per request \
             (hashes of every documentDigests entry and documents together), {entries} asked"
        )));
    }
    let is_rsa = principal.key.as_ref().is_some_and(|k| k.algorithm.is_rsa());
    // The scheme the pipeline signs CAdES with for this signer (without a
    // key: no check here, the pipeline refuses).
    let signer = match principal.key {
        Some(_) => Some(app.signing.signer(&principal).await?),
        None => None,
    };
    let cades_algo = |alg: DigestAlgorithm, sign_algo: Option<&str>, params: Option<&str>| match &signer {
        Some(s) => check_doc_sign_algo(s.cades.scheme(alg), sign_algo, params),
        None => Ok(()),
    };
    for dd in req.document_digests.iter().flatten() {
        let (format, level) = check_format(&dd.signature_format, dd.conformance_level.as_deref())?;
        let alg = dd
            .hash_algorithm_oid
            .parse::<der::oid::ObjectIdentifier>()
            .ok()
            .and_then(|o| DigestAlgorithm::from_oid(&o))
            .ok_or_else(|| invalid("hashAlgorithmOID"))?;
        let format = match format {
            // signDoc names no raw format (from_csc never gives it).
            Family::Raw => return Err(invalid("signature_format")),
            Family::Cades => {
                cades_algo(alg, dd.sign_algo.as_deref(), dd.sign_algo_params.as_deref())?;
                Format::CadesDetached
            }
            Family::Xades => {
                if alg != DigestAlgorithm::Sha256 {
                    return Err(Error::Invalid(
                        "Invalid parameter hashAlgorithmOID: Reference 1 digests are SHA-256".into(),
                    ));
                }
                if !matches!(dd.signed_envelope_property.as_deref(), None | Some("Detached")) {
                    return Err(invalid("signed_envelope_property"));
                }
                check_xades_sign_algo(is_rsa, dd.sign_algo.as_deref(), dd.sign_algo_params.as_deref())?;
                Format::Xades(Some(digests_kind(req.signature_qualifier.as_deref())?))
            }
        };
        let hashes =
            decode_hashes(&dd.hashes, alg).map_err(|e| Error::Invalid(format!("Invalid parameter hashes: {e}")))?;
        jobs.push(Job { payload: JobPayload::Digests(hashes, format), out: Out::Object, level });
    }
    for doc in req.documents.iter().flatten() {
        let (format, level) = check_format(&doc.signature_format, doc.conformance_level.as_deref())?;
        let content = Base64::decode_vec(&doc.document).map_err(|_| invalid("document"))?;
        match format {
            Family::Raw => return Err(invalid("signature_format")),
            Family::Cades => {
                cades_algo(DigestAlgorithm::Sha256, doc.sign_algo.as_deref(), doc.sign_algo_params.as_deref())?;
                let attached = match doc.signed_envelope_property.as_deref().unwrap_or("Detached") {
                    "Detached" => false,
                    "Attached" | "Enveloping" => true,
                    _ => return Err(invalid("signed_envelope_property")),
                };
                let digest = Digest::of(DigestAlgorithm::Sha256, &content);
                jobs.push(if attached {
                    let len = content.len() as u64;
                    Job { payload: JobPayload::Enveloping(digest, len), out: Out::Around(content), level }
                } else {
                    Job { payload: JobPayload::Digests(vec![digest], Format::CadesDetached), out: Out::Object, level }
                });
            }
            Family::Xades => {
                check_xades_sign_algo(is_rsa, doc.sign_algo.as_deref(), doc.sign_algo_params.as_deref())?;
                let out = match doc.signed_envelope_property.as_deref().unwrap_or("Enveloped") {
                    "Enveloped" => Out::Spliced,
                    "Detached" => Out::Object,
                    _ => return Err(invalid("signed_envelope_property")),
                };
                if content.len() > app.config.signing.max_xml_bytes {
                    return Err(Error::TooLarge { limit: app.config.signing.max_xml_bytes });
                }
                // Read here: Reference 1's digest is what the SAD covers.
                let document = crate::signing::read_eps(EpsInput::Document(content)).await?;
                jobs.push(Job { payload: JobPayload::Eps(document), out, level });
            }
        }
    }
    if jobs.is_empty() {
        return Err(Error::Invalid("Missing parameter documentDigests or documents".into()));
    }
    // Every entry's level must be one that can be made, before the SAD is used.
    for job in &jobs {
        let (format, document) = match &job.payload {
            JobPayload::Digests(_, format) => (*format, None),
            JobPayload::Enveloping(..) => (Format::CadesEnveloping, None),
            JobPayload::Eps(document) => (Format::Xades(None), Some(document)),
        };
        app.signing
            .check_level(format, document, job.level)
            .map_err(|e| Error::Invalid(format!("Invalid parameter conformance_level: {e}")))?;
    }
    // One SAD for the whole request: checked against every hash, once.
    let all: Vec<Digest> = jobs.iter().flat_map(Job::hashes).collect();
    let mut taken = app.signing.activate(&principal, generation, req.sad.as_deref(), &all).await?;
    let mut signature_objects = Vec::new();
    let mut with_signature = Vec::new();
    for Job { payload, out, level } in jobs {
        let (payload, format) = match payload {
            JobPayload::Digests(digests, format) => (Payload::Digests(digests), format),
            JobPayload::Enveloping(digest, len) => (Payload::Hashed { digest, len }, Format::CadesEnveloping),
            JobPayload::Eps(document) => (Payload::Eps(EpsInput::Read(document)), Format::Xades(None)),
        };
        let signed = app
            .signing
            .sign(
                &principal,
                Request {
                    payload,
                    format,
                    generation: Some(generation),
                    activation: Activation::Granted,
                    via: "csc.signDoc",
                    detail: None,
                    level,
                },
            )
            .await;
        // A token or store outage before the first signature leaves the SAD
        // as it was: the client retries with it. After one, it stays used.
        let signed = match signed {
            Ok(signed) => signed,
            Err(e) => {
                if e.is_unavailable() {
                    if let Some(sad) = taken.take() {
                        app.signing.give_back(sad).await;
                    }
                }
                return Err(e);
            }
        };
        taken = None;
        for p in signed.signatures {
            match &out {
                Out::Around(content) => with_signature.push(Base64::encode_string(&p.around(content))),
                Out::Spliced => {
                    let document = p.document.ok_or_else(|| Error::Internal("no signed document".into()))?;
                    with_signature.push(Base64::encode_string(&document));
                }
                // Detached: the signature object alone, as for digests.
                Out::Object => signature_objects.push(Base64::encode_string(&p.into_detached())),
            }
        }
    }
    let out = SignDocAnswer {
        document_with_signature: (!with_signature.is_empty()).then_some(with_signature),
        signature_object: (!signature_objects.is_empty()).then_some(signature_objects),
    };
    Ok((StatusCode::OK, Json(out)).into_response())
}
