//! A time-stamp token (RFC 3161 §2.4.2: a CMS `SignedData` over a
//! `TSTInfo`), checked before anything is built on it: the content type,
//! the imprint and the nonce of the request, one signer whose signed
//! attributes hold the content type and the message digest of the
//! `TSTInfo`, the ESS signing-certificate (v1 or v2) naming the TSA's
//! certificate, the signature with that certificate's key, the certificate's
//! extendedKeyUsage (critical, timeStamping alone) and its path to the
//! configured anchors at the token's time.

use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier};
use const_oid::ObjectIdentifier;
use der::{Decode, Encode};
use inkan_keystore::DigestAlgorithm;
use x509_cert::ext::pkix::{ExtendedKeyUsage, SubjectKeyIdentifier};
use x509_cert::Certificate;

use super::asn1::TstInfo;

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Which kind of check refused a token (a validation report classifies by it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Not a token as RFC 3161 makes them.
    Format,
    /// The imprint is not over what it should be.
    Imprint,
    /// Its signature, message digest or ESS certificate id does not match.
    Crypto,
    /// The TSA's certificate is not for time-stamping.
    Constraints,
    /// No path from the TSA's certificate to an anchor, at the token's time.
    Path,
}

impl Refused {
    /// Which kind of check refused the token (from the words [`check`] uses).
    pub fn problem(&self) -> Problem {
        let m = self.0.as_str();
        // By the start of the message, which is this module's own words
        // (names from certificates come later in it, and never decide).
        if m.starts_with("the TSA's certificate: ") {
            Problem::Path
        } else if m.starts_with("the token's imprint") {
            Problem::Imprint
        } else if m.starts_with("the token's signature does not verify")
            || m.starts_with("the token's message-digest does not match")
            || m.starts_with("the token's ESS signing-certificate names another")
        {
            Problem::Crypto
        } else if m.starts_with("the TSA's certificate has") || m.starts_with("the TSA's certificate is not for") {
            Problem::Constraints
        } else {
            Problem::Format
        }
    }
}

fn refused(message: impl Into<String>) -> Refused {
    Refused(message.into())
}

/// OIDs of RFC 3161, RFC 5652 and RFC 5035.
pub mod oids {
    use const_oid::ObjectIdentifier;
    /// id-signedData.
    pub const SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
    /// id-ct-TSTInfo.
    pub const TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
    /// id-contentType.
    pub const CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
    /// id-messageDigest.
    pub const MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
    /// id-aa-signingCertificate (ESS, SHA-1).
    pub const SIGNING_CERTIFICATE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.12");
    /// id-aa-signingCertificateV2.
    pub const SIGNING_CERTIFICATE_V2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.47");
    /// id-kp-timeStamping.
    pub const TIME_STAMPING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");
    /// SHA-1.
    pub const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
    /// rsaEncryption.
    pub const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
}

/// A token that passed every check.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The token (DER of its `ContentInfo`), as the TSA sent it.
    pub token: Vec<u8>,
    /// What it says.
    pub info: TstInfo,
    /// The TSA's certificate (DER).
    pub tsa_certificate: Vec<u8>,
    /// The path from it to an anchor (DER, the TSA's first).
    pub path: Vec<Vec<u8>>,
}

/// What the token must stamp: the digest algorithm and digest of the
/// request, and its nonce (big-endian, as sent).
#[derive(Clone, Debug)]
pub struct Expected<'a> {
    /// The imprint's algorithm.
    pub alg: DigestAlgorithm,
    /// The imprint.
    pub digest: &'a [u8],
    /// The nonce sent, if any.
    pub nonce: Option<&'a [u8]>,
}

/// A digest of SHA-2 (what a token's message digest may use).
fn digest_of(oid: &ObjectIdentifier, data: &[u8]) -> Option<Vec<u8>> {
    DigestAlgorithm::from_oid(oid).map(|a| a.digest(data))
}

/// A certificate's hash as an ESS certificate id names it: SHA-2, or SHA-1
/// in the v1 attribute (RFC 2634, which TSAs still send).
fn cert_hash(oid: &ObjectIdentifier, data: &[u8]) -> Option<Vec<u8>> {
    if *oid == oids::SHA1 {
        use sha1::Digest;
        return Some(sha1::Sha1::digest(data).to_vec());
    }
    digest_of(oid, data)
}

/// An integer's value bytes without leading zeros (a nonce compared as a number).
fn number(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// A token's `SignedData`, the DER of its `TSTInfo`, and what that says.
fn open(token: &[u8]) -> Result<(SignedData, Vec<u8>, TstInfo), Refused> {
    let ci = ContentInfo::from_der(token).map_err(|e| refused(format!("the token is not a ContentInfo: {e}")))?;
    if ci.content_type != oids::SIGNED_DATA {
        return Err(refused(format!("the token is a {}, not a SignedData", ci.content_type)));
    }
    let sd: SignedData = ci.content.decode_as().map_err(|e| refused(format!("the token's SignedData: {e}")))?;
    if sd.encap_content_info.econtent_type != oids::TST_INFO {
        return Err(refused(format!(
            "the token's content is a {}, not a TSTInfo",
            sd.encap_content_info.econtent_type
        )));
    }
    let econtent = sd.encap_content_info.econtent.as_ref().ok_or_else(|| refused("the token holds no TSTInfo"))?;
    let tst_der = der::asn1::OctetString::from_der(&econtent.to_der().map_err(|e| refused(e.to_string()))?)
        .map_err(|e| refused(format!("the token's eContent: {e}")))?
        .as_bytes()
        .to_vec();
    let info = TstInfo::from_der(&tst_der).map_err(|e| refused(e.0))?;
    Ok((sd, tst_der, info))
}

/// What a token says (its `TSTInfo`), unchecked: what a validator reads
/// first, to know the imprint's algorithm.
pub fn tst_info(token: &[u8]) -> Result<TstInfo, Refused> {
    open(token).map(|(_, _, info)| info)
}

/// Checks `token` (DER of a `ContentInfo`) against what was asked and the
/// TSA `anchors` (see the module documentation). `extra` certificates
/// (configured intermediates) may complete the path.
pub fn check(
    token: &[u8],
    expected: &Expected<'_>,
    anchors: &[Certificate],
    extra: &[Certificate],
) -> Result<Checked, Refused> {
    let (sd, tst_der, info) = open(token)?;

    // What was asked.
    if info.message_imprint.hash_algorithm.oid != expected.alg.oid()
        || info.message_imprint.hashed_message.as_bytes() != expected.digest
    {
        return Err(refused("the token's imprint is not the request's (another document's time-stamp)"));
    }
    match (expected.nonce, info.nonce.as_deref()) {
        (Some(sent), Some(got)) if number(sent) == number(got) => {}
        (Some(_), _) => return Err(refused("the token's nonce is not the request's (a replayed or mixed-up answer)")),
        (None, _) => {}
    }

    // One signer, its signed attributes.
    let mut signers = sd.signer_infos.0.iter();
    let (Some(si), None) = (signers.next(), signers.next()) else {
        return Err(refused("the token does not have exactly one signer"));
    };
    let attrs = si.signed_attrs.as_ref().ok_or_else(|| refused("the token's signer has no signed attributes"))?;
    let attr = |oid: ObjectIdentifier| attrs.iter().find(|a| a.oid == oid).and_then(|a| a.values.iter().next());
    let content_type = attr(oids::CONTENT_TYPE)
        .and_then(|v| v.decode_as::<ObjectIdentifier>().ok())
        .ok_or_else(|| refused("the token's signed attributes lack content-type"))?;
    if content_type != oids::TST_INFO {
        return Err(refused("the token's signed content-type is not id-ct-TSTInfo"));
    }
    let message_digest = attr(oids::MESSAGE_DIGEST)
        .and_then(|v| v.decode_as::<der::asn1::OctetString>().ok())
        .ok_or_else(|| refused("the token's signed attributes lack message-digest"))?;
    let computed = digest_of(&si.digest_alg.oid, &tst_der).ok_or_else(|| {
        refused(format!("the token's digest algorithm {} is not one inkan checks", si.digest_alg.oid))
    })?;
    if message_digest.as_bytes() != computed {
        return Err(refused("the token's message-digest does not match its TSTInfo"));
    }

    // The TSA's certificate: the signer's, among the token's certificates.
    let certs: Vec<Certificate> = sd
        .certificates
        .iter()
        .flat_map(|set| set.0.iter())
        .filter_map(|c| match c {
            cms::cert::CertificateChoices::Certificate(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    let tsa = certs
        .iter()
        .find(|c| match &si.sid {
            SignerIdentifier::IssuerAndSerialNumber(isn) => {
                c.tbs_certificate().issuer() == &isn.issuer && c.tbs_certificate().serial_number() == &isn.serial_number
            }
            SignerIdentifier::SubjectKeyIdentifier(ski) => {
                matches!(c.tbs_certificate().get_extension::<SubjectKeyIdentifier>(), Ok(Some((_, k))) if k == *ski)
            }
        })
        .ok_or_else(|| refused("the token does not carry the TSA's certificate (was certReq ignored?)"))?;
    let tsa_der = tsa.to_der().map_err(|e| refused(e.to_string()))?;
    check_ess(&attr, &tsa_der)?;

    // The signature over the DER of the signed attributes (a SET OF).
    let signed = attrs.to_der().map_err(|e| refused(e.to_string()))?;
    let algorithm = if si.signature_algorithm.oid == oids::RSA_ENCRYPTION {
        // rsaEncryption: the hash is the signer's digest algorithm.
        use der::oid::db::rfc5912 as o;
        let oid = match DigestAlgorithm::from_oid(&si.digest_alg.oid) {
            Some(DigestAlgorithm::Sha256) => o::SHA_256_WITH_RSA_ENCRYPTION,
            Some(DigestAlgorithm::Sha384) => o::SHA_384_WITH_RSA_ENCRYPTION,
            Some(DigestAlgorithm::Sha512) => o::SHA_512_WITH_RSA_ENCRYPTION,
            None => return Err(refused("the token is signed with a digest inkan does not check (SHA-1?)")),
        };
        spki::AlgorithmIdentifierOwned { oid, parameters: None }
    } else {
        si.signature_algorithm.clone()
    };
    crate::pki::verify_signature(
        &signed,
        &algorithm,
        si.signature.as_bytes(),
        tsa.tbs_certificate().subject_public_key_info(),
    )
    .map_err(|e| match e {
        crate::pki::SignatureCheck::Invalid => {
            refused("the token's signature does not verify with the TSA's certificate")
        }
        crate::pki::SignatureCheck::Unsupported(m) => refused(format!("the token's signature: {m}")),
    })?;

    // The TSA's certificate is for time-stamping only, and chains to an anchor.
    match tsa.tbs_certificate().get_extension::<ExtendedKeyUsage>() {
        Ok(Some((true, eku))) if eku.0 == [oids::TIME_STAMPING] => {}
        Ok(Some((false, _))) => return Err(refused("the TSA's certificate has a non-critical extendedKeyUsage")),
        Ok(Some(_)) => return Err(refused("the TSA's certificate is not for time-stamping alone (extendedKeyUsage)")),
        _ => return Err(refused("the TSA's certificate has no extendedKeyUsage timeStamping")),
    }
    let mut intermediates: Vec<Certificate> = certs.iter().filter(|c| *c != tsa).cloned().collect();
    intermediates.extend(extra.iter().cloned());
    let path = crate::pki::path::build(tsa, &intermediates, anchors, info.gen_time)
        .map_err(|e| refused(format!("the TSA's certificate: {e}")))?;
    let path = path.iter().map(|c| c.to_der()).collect::<Result<Vec<_>, _>>().map_err(|e| refused(e.to_string()))?;
    Ok(Checked { token: token.to_vec(), info, tsa_certificate: tsa_der, path })
}

/// The ESS signing-certificate (v2, or v1 with SHA-1): its first ESSCertID
/// is the TSA's certificate.
fn check_ess<'a>(attr: &dyn Fn(ObjectIdentifier) -> Option<&'a der::Any>, tsa_der: &[u8]) -> Result<(), Refused> {
    ess_names(attr(oids::SIGNING_CERTIFICATE_V2), attr(oids::SIGNING_CERTIFICATE), tsa_der)
        .map_err(|e| refused(format!("the token's {e}")))
}

/// Whether an ESS signing-certificate attribute (RFC 5035 v2, else RFC
/// 2634 v1 with SHA-1: the values of the attributes, if present) names
/// `cert_der` in its first ESSCertID. The error says what is wrong, from
/// "ESS signing-certificate ...".
pub fn ess_names(v2: Option<&der::Any>, v1: Option<&der::Any>, cert_der: &[u8]) -> Result<(), String> {
    use der::{Reader, SliceReader};
    let (value, v2) = match (v2, v1) {
        (Some(v), _) => (v, true),
        (None, Some(v)) => (v, false),
        (None, None) => return Err("signed attributes lack an ESS signing-certificate".into()),
    };
    let bad = |e: der::Error| format!("ESS signing-certificate: {e}");
    let der_value = value.to_der().map_err(bad)?;
    let mut reader = SliceReader::new(&der_value).map_err(bad)?;
    // SigningCertificate(V2) ::= SEQUENCE { certs SEQUENCE OF ESSCertID(v2), ... }
    let (alg, hash) = reader
        .sequence(|r| {
            let first = r.sequence(|certs| {
                certs
                    .sequence(|id| {
                        let alg = if v2 && der::Tag::peek(id)? == der::Tag::Sequence {
                            spki::AlgorithmIdentifierOwned::decode(id)?.oid
                        } else if v2 {
                            DigestAlgorithm::Sha256.oid()
                        } else {
                            oids::SHA1
                        };
                        let hash = der::asn1::OctetString::decode(id)?;
                        // issuerSerial, if any, is not needed once the hash matches.
                        while !id.is_finished() {
                            der::Any::decode(id)?;
                        }
                        Ok::<_, der::Error>((alg, hash))
                    })
                    .and_then(|first| {
                        while !certs.is_finished() {
                            der::Any::decode(certs)?;
                        }
                        Ok::<_, der::Error>(first)
                    })
            })?;
            while !r.is_finished() {
                der::Any::decode(r)?;
            }
            Ok(first)
        })
        .map_err(bad)?;
    let computed = cert_hash(&alg, cert_der).ok_or_else(|| format!("ESSCertID hash algorithm {alg} unknown"))?;
    if hash.as_bytes() != computed {
        return Err("ESS signing-certificate names another certificate than the signer's".into());
    }
    Ok(())
}

/// The token with `attribute` (DER of an `Attribute`) among its signer's
/// unsigned attributes (the TSA's signature does not cover them): where an
/// archive-time-stamp-v3 keeps its `ats-hash-index-v3`. The signed parts
/// are re-encoded as they came (DER in, DER out).
pub fn with_unsigned_attribute(token: &[u8], attribute: &[u8]) -> Result<Vec<u8>, Refused> {
    let bad = |e: der::Error| refused(format!("the token: {e}"));
    let mut ci = ContentInfo::from_der(token).map_err(bad)?;
    let mut sd: SignedData = ci.content.decode_as().map_err(bad)?;
    let attribute = x509_cert::attr::Attribute::from_der(attribute).map_err(bad)?;
    let mut infos: Vec<cms::signed_data::SignerInfo> = sd.signer_infos.0.into_vec();
    let si = infos.first_mut().ok_or_else(|| refused("the token has no signer"))?;
    let mut attrs = si.unsigned_attrs.take().map(|a| a.into_vec()).unwrap_or_default();
    attrs.push(attribute);
    si.unsigned_attrs = Some(der::asn1::SetOfVec::try_from(attrs).map_err(bad)?);
    sd.signer_infos = cms::signed_data::SignerInfos::try_from(infos).map_err(bad)?;
    ci.content = der::Any::encode_from(&sd).map_err(bad)?;
    ci.to_der().map_err(bad)
}
