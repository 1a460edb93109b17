//! PKCS#10 certification requests signed by a key in the token.

use der::asn1::BitString;
use der::{Decode, Encode};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::name::Name;
use x509_cert::request::{CertReq, CertReqInfo, Version};

use crate::algorithm::{DigestAlgorithm, SignatureScheme};
use crate::error::{Error, Result};
use crate::keystore::{KeyRef, Keystore};

/// The `AlgorithmIdentifier` of a signature made with `scheme`
/// (RFC 4055 for RSA, RFC 5758 for ECDSA).
pub fn signature_algorithm(scheme: SignatureScheme) -> Result<AlgorithmIdentifierOwned> {
    use der::oid::db::rfc5912 as oids;
    let null = || Some(der::asn1::Null.into());
    Ok(match scheme {
        SignatureScheme::RsaPkcs1v15(d) => AlgorithmIdentifierOwned {
            oid: match d {
                DigestAlgorithm::Sha256 => oids::SHA_256_WITH_RSA_ENCRYPTION,
                DigestAlgorithm::Sha384 => oids::SHA_384_WITH_RSA_ENCRYPTION,
                DigestAlgorithm::Sha512 => oids::SHA_512_WITH_RSA_ENCRYPTION,
            },
            parameters: null(),
        },
        SignatureScheme::Ecdsa(d) => AlgorithmIdentifierOwned {
            oid: match d {
                DigestAlgorithm::Sha256 => oids::ECDSA_WITH_SHA_256,
                DigestAlgorithm::Sha384 => oids::ECDSA_WITH_SHA_384,
                DigestAlgorithm::Sha512 => oids::ECDSA_WITH_SHA_512,
            },
            parameters: None,
        },
        SignatureScheme::RsaPss(d) => pss_algorithm(d)?,
    })
}

/// `RSASSA-PSS-params` (RFC 4055 section 3.1) for MGF1 on `d` and a salt of `d`'s length.
fn pss_algorithm(d: DigestAlgorithm) -> Result<AlgorithmIdentifierOwned> {
    #[derive(der::Sequence)]
    struct PssParams {
        #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
        hash: AlgorithmIdentifierOwned,
        #[asn1(context_specific = "1", tag_mode = "EXPLICIT")]
        mgf: AlgorithmIdentifierOwned,
        #[asn1(context_specific = "2", tag_mode = "EXPLICIT")]
        salt_len: u32,
    }
    let invalid = |e: der::Error| Error::InvalidInput(e.to_string());
    let hash = AlgorithmIdentifierOwned { oid: d.oid(), parameters: Some(der::asn1::Null.into()) };
    let params = PssParams {
        mgf: AlgorithmIdentifierOwned {
            oid: der::oid::db::rfc5912::ID_MGF_1,
            parameters: Some(der::Any::encode_from(&hash).map_err(invalid)?),
        },
        hash,
        salt_len: d.output_len() as u32,
    };
    Ok(AlgorithmIdentifierOwned {
        oid: der::oid::db::rfc5912::ID_RSASSA_PSS,
        parameters: Some(der::Any::encode_from(&params).map_err(invalid)?),
    })
}

/// Whether DER `RSASSA-PSS-params` (RFC 4055 section 3.1) ask for what the
/// keystore signs with [`SignatureScheme::RsaPss`] on `d`: hash `d`, MGF1 on
/// `d`, a salt as long as `d`'s output, trailer field 1. Absent and NULL hash
/// parameters are both accepted (RFC 4055 section 2.1); the SHA-1 defaults
/// never fit.
pub fn pss_params_fit(d: DigestAlgorithm, params_der: &[u8]) -> bool {
    #[derive(der::Sequence)]
    struct Params {
        #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
        hash: Option<AlgorithmIdentifierOwned>,
        #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
        mgf: Option<AlgorithmIdentifierOwned>,
        #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
        salt_len: Option<u32>,
        #[asn1(context_specific = "3", tag_mode = "EXPLICIT", optional = "true")]
        trailer: Option<u32>,
    }
    let Ok(p) = <Params as der::Decode>::from_der(params_der) else { return false };
    let is_d = |a: &AlgorithmIdentifierOwned| a.oid == d.oid() && a.parameters.as_ref().is_none_or(|p| p.is_null());
    let mgf_on_d = |m: &AlgorithmIdentifierOwned| {
        m.oid == der::oid::db::rfc5912::ID_MGF_1
            && m.parameters
                .as_ref()
                .and_then(|a| der::Encode::to_der(a).ok())
                .and_then(|b| <AlgorithmIdentifierOwned as der::Decode>::from_der(&b).ok())
                .is_some_and(|h| is_d(&h))
    };
    p.hash.as_ref().is_some_and(is_d)
        && p.mgf.as_ref().is_some_and(mgf_on_d)
        && p.salt_len.unwrap_or(20) == d.output_len() as u32
        && p.trailer.unwrap_or(1) == 1
}

/// Builds a PKCS#10 request (RFC 2986) for `subject` and the token key `key`
/// whose public key is `public_key_der`, signed by that key. Returns DER.
pub fn build_csr(
    keystore: &Keystore,
    key: &KeyRef,
    public_key_der: &[u8],
    subject: Name,
    scheme: SignatureScheme,
) -> Result<Vec<u8>> {
    csr_signed_by(public_key_der, subject, scheme, |message| keystore.sign_message(key, scheme, message))
}

/// A PKCS#10 request for `public_key_der` and `subject`, whose
/// `CertificationRequestInfo` DER `sign` signs with `scheme`.
pub(crate) fn csr_signed_by(
    public_key_der: &[u8],
    subject: Name,
    scheme: SignatureScheme,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>>,
) -> Result<Vec<u8>> {
    let invalid = |e: der::Error| Error::InvalidInput(format!("certification request: {e}"));
    let info = CertReqInfo {
        version: Version::V1,
        subject,
        public_key: SubjectPublicKeyInfoOwned::from_der(public_key_der).map_err(invalid)?,
        attributes: Default::default(),
    };
    let to_sign = info.to_der().map_err(invalid)?;
    let signature = sign(&to_sign)?;
    CertReq {
        info,
        algorithm: signature_algorithm(scheme)?,
        signature: BitString::from_bytes(&signature).map_err(invalid)?,
    }
    .to_der()
    .map_err(invalid)
}
