//! Certificates: the HPKI and JPKI profiles, a small CA (for the fixture PKI,
//! the demo and tests), the checks made when a certificate is imported, and
//! the validation of card certificates against a scheme's trust store
//! ([`trust`]).

pub mod ca;
pub mod crl;
pub mod path;
pub mod profile;
pub mod trust;

use std::path::Path;
use std::time::SystemTime;

use der::asn1::{PrintableStringRef, SetOfVec, Utf8StringRef};
use der::{Decode, Encode};
use rsa::signature::Verifier;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::name::Name;
use x509_cert::Certificate;

/// A certificate problem, said so that an operator knows what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PkiError(pub String);

impl From<der::Error> for PkiError {
    fn from(e: der::Error) -> Self {
        PkiError(format!("malformed ASN.1: {e}"))
    }
}

/// Encodes DER as PEM with the given label (`CERTIFICATE`, `X509 CRL`, ...).
pub fn to_pem(label: &'static str, der: &[u8]) -> String {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der).unwrap_or_default()
}

/// Reads every certificate in a PEM file (or one DER certificate).
pub fn read_certificates(path: &Path) -> Result<Vec<Vec<u8>>, PkiError> {
    let bytes = std::fs::read(path).map_err(|e| PkiError(format!("cannot read {}: {e}", path.display())))?;
    parse_certificates(&bytes).map_err(|e| PkiError(format!("{}: {e}", path.display())))
}

/// Parses PEM (one or more `CERTIFICATE` blocks) or a single DER certificate.
pub fn parse_certificates(bytes: &[u8]) -> Result<Vec<Vec<u8>>, PkiError> {
    if bytes.starts_with(b"-----")
        || bytes.iter().take(64).all(|b| b.is_ascii()) && bytes.windows(5).any(|w| w == b"-----")
    {
        let certs = Certificate::load_pem_chain(bytes).map_err(|e| PkiError(format!("not a PEM certificate: {e}")))?;
        if certs.is_empty() {
            return Err(PkiError("no certificate in the file".into()));
        }
        return certs.iter().map(|c| c.to_der().map_err(PkiError::from)).collect();
    }
    let cert = Certificate::from_der(bytes).map_err(|e| PkiError(format!("not a DER certificate: {e}")))?;
    Ok(vec![cert.to_der()?])
}

/// One certificate from a file.
pub fn read_certificate(path: &Path) -> Result<Certificate, PkiError> {
    let der = read_certificates(path)?.into_iter().next().ok_or_else(|| PkiError("empty file".into()))?;
    Ok(Certificate::from_der(&der)?)
}

/// The kind of string an attribute value is encoded as.
#[derive(Clone, Copy, Debug)]
pub enum StringKind {
    /// PrintableString (country, serial numbers, ASCII names)
    Printable,
    /// UTF8String (names that may be Japanese)
    Utf8,
}

/// Builds a distinguished name from (attribute type, kind, value), most general first.
pub fn name(parts: &[(der::oid::ObjectIdentifier, StringKind, &str)]) -> Result<Name, PkiError> {
    let mut rdns: Vec<SetOfVec<AttributeTypeAndValue>> = Vec::new();
    for (oid, kind, value) in parts {
        let value = match kind {
            StringKind::Printable => der::Any::encode_from(&PrintableStringRef::new(value)?)?,
            StringKind::Utf8 => der::Any::encode_from(&Utf8StringRef::new(value)?)?,
        };
        let mut rdn = SetOfVec::new();
        rdn.insert(AttributeTypeAndValue { oid: *oid, value })?;
        rdns.push(rdn);
    }
    Ok(Name::from_der(&rdns.to_der()?)?)
}

/// Renders a name like OpenSSL's RFC 2253 style (`CN=...,O=...,C=JP`).
pub fn display_name(name: &Name) -> String {
    name.to_string()
}

/// The certificate's serial number as upper-case hex.
pub fn serial_hex(cert: &Certificate) -> String {
    cert.tbs_certificate().serial_number().as_bytes().iter().map(|b| format!("{b:02X}")).collect()
}

/// notBefore / notAfter.
pub fn validity(cert: &Certificate) -> (SystemTime, SystemTime) {
    let v = cert.tbs_certificate().validity();
    (v.not_before.to_system_time(), v.not_after.to_system_time())
}

/// Checks that `cert` is valid at `now`.
pub fn check_validity(cert: &Certificate, now: SystemTime) -> Result<(), PkiError> {
    let (not_before, not_after) = validity(cert);
    if now > not_after {
        return Err(PkiError(format!(
            "the certificate expired on {} (serial {})",
            cert.tbs_certificate().validity().not_after,
            serial_hex(cert)
        )));
    }
    if now < not_before {
        return Err(PkiError(format!(
            "the certificate is not valid before {} (serial {})",
            cert.tbs_certificate().validity().not_before,
            serial_hex(cert)
        )));
    }
    Ok(())
}

/// Checks that `issuer` signed `cert`: the names match and the signature verifies
/// (RSA PKCS#1 v1.5 with SHA-256/384/512).
pub fn check_issued_by(cert: &Certificate, issuer: &Certificate) -> Result<(), PkiError> {
    let not_issued = || {
        PkiError(format!(
            "the certificate was not issued by the configured CA {} (its issuer is {})",
            issuer.tbs_certificate().subject(),
            cert.tbs_certificate().issuer()
        ))
    };
    if cert.tbs_certificate().issuer() != issuer.tbs_certificate().subject() {
        return Err(not_issued());
    }
    let tbs = cert.tbs_certificate().to_der()?;
    let signature =
        cert.signature().as_bytes().ok_or_else(|| PkiError("signature is not a whole number of bytes".into()))?;
    let spki = issuer.tbs_certificate().subject_public_key_info();
    // A signature that verified once verifies again: the same TSA's
    // certificate in every token, the same CAs in every path.
    let key = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for part in [&tbs[..], &cert.signature_algorithm().to_der()?, signature, &spki.to_der()?] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        <[u8; 32]>::from(h.finalize())
    };
    if issued_verified().lock().unwrap_or_else(|p| p.into_inner()).contains(&key) {
        return Ok(());
    }
    match verify_signature(&tbs, cert.signature_algorithm(), signature, spki) {
        Ok(()) => {
            let mut verified = issued_verified().lock().unwrap_or_else(|p| p.into_inner());
            if verified.len() >= MAX_ISSUED_VERIFIED {
                verified.clear();
            }
            verified.insert(key);
            Ok(())
        }
        Err(SignatureCheck::Unsupported(e)) => Err(PkiError(e)),
        Err(SignatureCheck::Invalid) => Err(not_issued()),
    }
}

/// Certificate signatures verified so far, at most this many (then the
/// memory starts over).
const MAX_ISSUED_VERIFIED: usize = 4096;

/// SHA-256 of each (certificate's signed part, its signature, the
/// issuer's key) whose signature verified.
fn issued_verified() -> &'static std::sync::Mutex<std::collections::HashSet<[u8; 32]>> {
    static VERIFIED: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<[u8; 32]>>> =
        std::sync::OnceLock::new();
    VERIFIED.get_or_init(Default::default)
}

/// Why a signature did not verify.
#[derive(Debug)]
pub enum SignatureCheck {
    /// The signature is wrong.
    Invalid,
    /// The algorithm or key is not one inkan checks.
    Unsupported(String),
}

/// Verifies a signature made by `signer`'s key over `tbs` (RSA PKCS#1 v1.5 with
/// SHA-256/384/512, the algorithms of the HPKI and JPKI CAs).
pub fn verify_signature(
    tbs: &[u8],
    algorithm: &spki::AlgorithmIdentifierOwned,
    signature: &[u8],
    signer: &spki::SubjectPublicKeyInfoOwned,
) -> Result<(), SignatureCheck> {
    use der::oid::db::rfc5912 as oids;
    use rsa::pkcs8::DecodePublicKey;
    // ring's verification first (an order of magnitude faster); it refuses
    // keys under 2048 bits as it refuses a bad signature, so what it does
    // not accept the rsa crate decides, as it always did.
    let fast: Option<&'static ring::signature::RsaParameters> = match algorithm.oid {
        o if o == oids::SHA_256_WITH_RSA_ENCRYPTION => Some(&ring::signature::RSA_PKCS1_2048_8192_SHA256),
        o if o == oids::SHA_384_WITH_RSA_ENCRYPTION => Some(&ring::signature::RSA_PKCS1_2048_8192_SHA384),
        o if o == oids::SHA_512_WITH_RSA_ENCRYPTION => Some(&ring::signature::RSA_PKCS1_2048_8192_SHA512),
        _ => None,
    };
    if let (Some(parameters), true) = (fast, signer.algorithm.oid == oids::RSA_ENCRYPTION) {
        let key = ring::signature::UnparsedPublicKey::new(parameters, signer.subject_public_key.raw_bytes());
        if key.verify(tbs, signature).is_ok() {
            return Ok(());
        }
    }
    let spki = signer.to_der().map_err(|e| SignatureCheck::Unsupported(e.to_string()))?;
    let key = rsa::RsaPublicKey::from_public_key_der(&spki)
        .map_err(|e| SignatureCheck::Unsupported(format!("the issuer's key is not an RSA key inkan can check: {e}")))?;
    let sig = rsa::pkcs1v15::Signature::try_from(signature).map_err(|_| SignatureCheck::Invalid)?;
    let ok = if algorithm.oid == oids::SHA_256_WITH_RSA_ENCRYPTION {
        rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key).verify(tbs, &sig).is_ok()
    } else if algorithm.oid == oids::SHA_384_WITH_RSA_ENCRYPTION {
        rsa::pkcs1v15::VerifyingKey::<sha2::Sha384>::new(key).verify(tbs, &sig).is_ok()
    } else if algorithm.oid == oids::SHA_512_WITH_RSA_ENCRYPTION {
        rsa::pkcs1v15::VerifyingKey::<sha2::Sha512>::new(key).verify(tbs, &sig).is_ok()
    } else {
        return Err(SignatureCheck::Unsupported(format!("unsupported signature algorithm {}", algorithm.oid)));
    };
    if ok {
        Ok(())
    } else {
        Err(SignatureCheck::Invalid)
    }
}

/// Verifies a CMS `SignerInfo`'s signature (RFC 5652 5.4) over `data`
/// (the DER of its signed attributes) with `cert`'s key: `algorithm` as the
/// SignerInfo names it, with `digest` its digestAlgorithm. RSASSA-PKCS1-v1_5
/// (`rsaEncryption` or `sha*WithRSAEncryption`), RSASSA-PSS with the
/// parameters inkan signs with (the digest, MGF1 on it, a salt of its
/// length), ECDSA P-256 with SHA-256 (DER `r, s`).
pub fn verify_cms_signature(
    cert: &Certificate,
    algorithm: &spki::AlgorithmIdentifierOwned,
    digest: inkan_keystore::DigestAlgorithm,
    data: &[u8],
    signature: &[u8],
) -> Result<(), SignatureCheck> {
    use der::oid::db::rfc5912 as oids;
    use inkan_keystore::DigestAlgorithm as D;
    let spki = cert.tbs_certificate().subject_public_key_info();
    let pkcs1 = |d: D| {
        let oid = match d {
            D::Sha256 => oids::SHA_256_WITH_RSA_ENCRYPTION,
            D::Sha384 => oids::SHA_384_WITH_RSA_ENCRYPTION,
            D::Sha512 => oids::SHA_512_WITH_RSA_ENCRYPTION,
        };
        verify_signature(data, &spki::AlgorithmIdentifierOwned { oid, parameters: None }, signature, spki)
    };
    match algorithm.oid {
        oids::RSA_ENCRYPTION => pkcs1(digest),
        o if o == oids::SHA_256_WITH_RSA_ENCRYPTION
            || o == oids::SHA_384_WITH_RSA_ENCRYPTION
            || o == oids::SHA_512_WITH_RSA_ENCRYPTION =>
        {
            verify_signature(data, algorithm, signature, spki)
        }
        oids::ID_RSASSA_PSS => {
            use rsa::pkcs8::DecodePublicKey;
            use rsa::signature::Verifier;
            let params = algorithm.parameters.as_ref().and_then(|p| p.to_der().ok()).unwrap_or_default();
            if !inkan_keystore::pss_params_fit(digest, &params) {
                return Err(SignatureCheck::Unsupported(
                    "RSASSA-PSS parameters other than the digest, MGF1 on it and a salt of its length".into(),
                ));
            }
            let der = spki.to_der().map_err(|e| SignatureCheck::Unsupported(e.to_string()))?;
            let key = rsa::RsaPublicKey::from_public_key_der(&der)
                .map_err(|e| SignatureCheck::Unsupported(format!("not an RSA key: {e}")))?;
            let sig = rsa::pss::Signature::try_from(signature).map_err(|_| SignatureCheck::Invalid)?;
            let ok = match digest {
                D::Sha256 => rsa::pss::VerifyingKey::<sha2::Sha256>::new(key).verify(data, &sig).is_ok(),
                D::Sha384 => rsa::pss::VerifyingKey::<sha2::Sha384>::new(key).verify(data, &sig).is_ok(),
                D::Sha512 => rsa::pss::VerifyingKey::<sha2::Sha512>::new(key).verify(data, &sig).is_ok(),
            };
            if ok {
                Ok(())
            } else {
                Err(SignatureCheck::Invalid)
            }
        }
        oids::ECDSA_WITH_SHA_256 if digest == D::Sha256 => {
            use p256::ecdsa::signature::Verifier as _;
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(spki.subject_public_key.raw_bytes())
                .map_err(|_| SignatureCheck::Unsupported("ecdsa-with-SHA256 with a key that is not P-256".into()))?;
            let sig = p256::ecdsa::Signature::from_der(signature).map_err(|_| SignatureCheck::Invalid)?;
            key.verify(data, &sig).map_err(|_| SignatureCheck::Invalid)
        }
        other => Err(SignatureCheck::Unsupported(format!("signature algorithm {other} with {}", digest.name()))),
    }
}

/// Whether the certificate's keyUsage has nonRepudiation (contentCommitment),
/// which an HPKI signing certificate must have.
pub fn has_non_repudiation(cert: &Certificate) -> bool {
    use x509_cert::ext::pkix::{KeyUsage, KeyUsages};
    matches!(cert.tbs_certificate().get_extension::<KeyUsage>(), Ok(Some((_, ku))) if ku.0.contains(KeyUsages::NonRepudiation))
}

/// Verifies an XMLDSig signature value made by `cert`'s key over `data` (the
/// canonical SignedInfo) with the `SignatureMethod` named by `method`:
/// RSASSA-PKCS1-v1_5 with SHA-256/384/512, or ECDSA P-256 with SHA-256 (the
/// value `r || s`). The error says what failed.
pub fn verify_xml_signature(cert: &Certificate, method: &str, data: &[u8], signature: &[u8]) -> Result<(), String> {
    use crate::xml::uri;
    let spki = cert.tbs_certificate().subject_public_key_info();
    let invalid = || "the signature value does not verify with the signer's certificate".to_owned();
    if method == uri::ECDSA_SHA256 {
        use p256::ecdsa::signature::Verifier as _;
        let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(spki.subject_public_key.raw_bytes())
            .map_err(|_| "ecdsa-sha256 with a certificate that has no P-256 key".to_owned())?;
        let sig = p256::ecdsa::Signature::from_slice(signature).map_err(|_| invalid())?;
        return key.verify(data, &sig).map_err(|_| invalid());
    }
    let oid = match method {
        uri::RSA_SHA256 => der::oid::db::rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
        uri::RSA_SHA384 => der::oid::db::rfc5912::SHA_384_WITH_RSA_ENCRYPTION,
        uri::RSA_SHA512 => der::oid::db::rfc5912::SHA_512_WITH_RSA_ENCRYPTION,
        other => return Err(format!("unknown SignatureMethod {other:?}")),
    };
    let alg = spki::AlgorithmIdentifierOwned { oid, parameters: None };
    match verify_signature(data, &alg, signature, spki) {
        Ok(()) => Ok(()),
        Err(SignatureCheck::Invalid) => Err(invalid()),
        Err(SignatureCheck::Unsupported(e)) => Err(e),
    }
}
