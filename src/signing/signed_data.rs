//! CMS `SignedData` (RFC 5652) as CAdES-BES / baseline-B wants it: the
//! signed attributes content-type, message-digest, signing-time and
//! signing-certificate-v2 (RFC 5035). The format behind the seam is
//! [`super::cades`]; this is its encoder, also usable on its own.
//!
//! The builder separates "bytes to sign" from "assemble with the signature"
//! (as x509-cert's `finalize()` / `assemble()`): [`prepare`] gives the
//! signed attributes and the digest of their DER `SET OF Attribute` that the
//! token signs, and [`assemble`] wraps the signature value into the
//! `ContentInfo` ([`Parts`]). The token call sits between the two and
//! nothing else does.
//!
//! Everything that depends only on the signer's certificate (its
//! IssuerAndSerialNumber, the signing-certificate-v2 attribute, the DER of the
//! certificate set) is encoded once in a [`SignerIdentity`], so a signature costs
//! four small attributes, one SHA-256 over them and one `C_Sign`.
//!
//! Output is DER. Attached (enveloping) signatures are produced as a prefix and a
//! suffix around the content, so a document of any size is streamed twice (hash,
//! then copy) and never held in memory.

pub(crate) mod der_writer;
mod ess;
mod oid;

use std::time::SystemTime;

use der::{Decode, Encode};
use inkan_keystore::{Digest, DigestAlgorithm, KeyAlgorithm, KeyRef, Keystore, SignatureScheme};
use x509_cert::Certificate;

use crate::config::RsaScheme;
use crate::error::{Error, Result};
use der_writer::{header, tlv, Tag};

pub use super::parts::Parts;

pub use ess::signing_certificate_v2;

/// Everything about a signer that does not change between signatures, encoded once.
#[derive(Clone, Debug)]
pub struct SignerIdentity {
    key: KeyRef,
    key_algorithm: KeyAlgorithm,
    rsa_scheme: RsaScheme,
    certificate: Vec<u8>,
    /// DER `IssuerAndSerialNumber`.
    sid: Vec<u8>,
    /// DER `Attribute` signing-certificate-v2.
    signing_certificate: Vec<u8>,
    /// DER `[0] IMPLICIT CertificateSet`: the signer's certificate, then the chain.
    certificates: Vec<u8>,
    /// The same certificates, each its DER.
    certificate_list: Vec<Vec<u8>>,
}

impl SignerIdentity {
    /// Prepares a signer: the token key, its certificate (DER) and the chain
    /// certificates to include (DER, signer's issuer first). A certificate that
    /// appears twice is included once.
    pub fn new(
        key: KeyRef,
        key_algorithm: KeyAlgorithm,
        rsa_scheme: RsaScheme,
        certificate: &[u8],
        chain: &[Vec<u8>],
    ) -> Result<Self> {
        let cert = Certificate::from_der(certificate).map_err(|e| Error::Invalid(format!("certificate: {e}")))?;
        let enc = |e: der::Error| Error::Invalid(format!("certificate: {e}"));
        let tbs = cert.tbs_certificate();
        let issuer = tbs.issuer().to_der().map_err(enc)?;
        let serial = tbs.serial_number().to_der().map_err(enc)?;
        let mut sid_body = issuer.clone();
        sid_body.extend_from_slice(&serial);
        let sid = tlv(Tag::SEQUENCE, &sid_body);
        let signing_certificate = signing_certificate_v2(certificate, &issuer, &serial);

        let mut certificate_list = vec![certificate.to_vec()];
        for c in chain {
            if !certificate_list.contains(c) {
                Certificate::from_der(c).map_err(|e| Error::Invalid(format!("certificate: chain: {e}")))?;
                certificate_list.push(c.clone());
            }
        }
        let certificates = tlv(Tag::CONTEXT_0_CONSTRUCTED, &certificate_list.concat());
        Ok(SignerIdentity {
            key,
            key_algorithm,
            rsa_scheme,
            certificate: certificate.to_vec(),
            certificate_list,
            sid,
            signing_certificate,
            certificates,
        })
    }

    /// The signer's certificate (DER).
    pub fn certificate(&self) -> &[u8] {
        &self.certificate
    }

    /// The token key.
    pub fn key(&self) -> &KeyRef {
        &self.key
    }

    /// The signature scheme for a digest algorithm.
    pub fn scheme(&self, digest: DigestAlgorithm) -> SignatureScheme {
        match (self.key_algorithm.is_rsa(), self.rsa_scheme) {
            (true, RsaScheme::Pkcs1v15) => SignatureScheme::RsaPkcs1v15(digest),
            (true, RsaScheme::Pss) => SignatureScheme::RsaPss(digest),
            (false, _) => SignatureScheme::Ecdsa(digest),
        }
    }
}

/// The signed attributes of one signature.
#[derive(Clone, Debug)]
pub struct SignedAttributes {
    /// The DER-sorted attributes, without the SET header.
    body: Vec<u8>,
}

impl SignedAttributes {
    /// Encodes content-type (id-data), message-digest, signing-time and
    /// signing-certificate-v2, in DER `SET OF` order.
    pub fn new(identity: &SignerIdentity, message_digest: &[u8], signing_time: SystemTime) -> Result<Self> {
        let enc = |e: der::Error| Error::Invalid(e.to_string());
        let attr = |oid: der::oid::ObjectIdentifier, value: &[u8]| -> Result<Vec<u8>> {
            let mut body = oid.to_der().map_err(enc)?;
            body.extend_from_slice(&tlv(Tag::SET, value));
            Ok(tlv(Tag::SEQUENCE, &body))
        };
        let time = x509_cert::time::Time::try_from(signing_time).map_err(enc)?.to_der().map_err(enc)?;
        let mut attrs = [
            attr(oid::CONTENT_TYPE, &oid::DATA.to_der().map_err(enc)?)?,
            attr(oid::MESSAGE_DIGEST, &tlv(Tag::OCTET_STRING, message_digest))?,
            attr(oid::SIGNING_TIME, &time)?,
            identity.signing_certificate.clone(),
        ];
        // DER: the elements of a SET OF are sorted by their encodings (X.690 11.6).
        attrs.sort();
        Ok(SignedAttributes { body: attrs.concat() })
    }

    /// The DER `SET OF Attribute` that is hashed and signed (RFC 5652 5.4).
    pub fn to_be_signed(&self) -> Vec<u8> {
        tlv(Tag::SET, &self.body)
    }
}

fn algorithm_identifier(oid: der::oid::ObjectIdentifier, null_params: bool) -> Vec<u8> {
    let mut body = oid.to_der().unwrap_or_default();
    if null_params {
        body.extend_from_slice(&[0x05, 0x00]);
    }
    tlv(Tag::SEQUENCE, &body)
}

fn signature_algorithm(scheme: SignatureScheme) -> Result<Vec<u8>> {
    Ok(match scheme {
        // RFC 3370 2.2: rsaEncryption is what most validators expect in a SignerInfo.
        SignatureScheme::RsaPkcs1v15(_) => algorithm_identifier(oid::RSA_ENCRYPTION, true),
        other => inkan_keystore::signature_algorithm(other)?.to_der().map_err(Error::internal)?,
    })
}

/// What a signature carries besides its signer's certificates and signed
/// attributes: unsigned attributes (DER `Attribute`s: a signature
/// time-stamp), and the validation data of B-LT (more certificates, CRLs).
#[derive(Clone, Debug, Default)]
pub struct Extras<'a> {
    /// Unsigned attributes, each the DER of an `Attribute`.
    pub unsigned: &'a [Vec<u8>],
    /// Certificates added to `SignedData.certificates` (DER; those already
    /// there are not repeated).
    pub certificates: &'a [Vec<u8>],
    /// CRLs for `SignedData.crls` (DER `CertificateList`s).
    pub crls: &'a [Vec<u8>],
}

/// Wraps a signature value into `ContentInfo { SignedData }`, with room for
/// `content_len` bytes of enveloped content (`None`: detached), and the
/// `extras` of the level asked.
pub fn assemble(
    identity: &SignerIdentity,
    digest: DigestAlgorithm,
    attributes: &SignedAttributes,
    signature: &[u8],
    content_len: Option<u64>,
    extras: &Extras<'_>,
) -> Result<Parts> {
    let digest_alg = algorithm_identifier(digest.oid(), false);
    // SignerInfo (RFC 5652 5.3), version 1: sid is an IssuerAndSerialNumber.
    let mut si = signed_fields(identity, digest, attributes, signature)?;
    let unsigned = unsigned_list(extras);
    if !unsigned.is_empty() {
        // unsignedAttrs [1] IMPLICIT SET OF Attribute, in DER order.
        si.extend_from_slice(&tlv(Tag::CONTEXT_1_CONSTRUCTED, &unsigned.concat()));
    }
    let signer_infos = tlv(Tag::SET, &tlv(Tag::SEQUENCE, &si));

    // EncapsulatedContentInfo: eContentType id-data, eContent only when enveloping.
    let data_oid = oid::DATA.to_der().map_err(Error::internal)?;
    let mut eci_head = Vec::new();
    let eci_len = match content_len {
        None => data_oid.len() as u64,
        Some(n) => {
            let octets = header_len(n) as u64 + n;
            data_oid.len() as u64 + header_len(octets) as u64 + octets
        }
    };
    header(Tag::SEQUENCE, eci_len, &mut eci_head);
    eci_head.extend_from_slice(&data_oid);
    if let Some(n) = content_len {
        header(Tag::CONTEXT_0_CONSTRUCTED, header_len(n) as u64 + n, &mut eci_head);
        header(Tag::OCTET_STRING, n, &mut eci_head);
    }

    // SignedData (RFC 5652 5.1), version 1.
    let mut sd_head = vec![0x02, 0x01, 0x01];
    sd_head.extend_from_slice(&tlv(Tag::SET, &digest_alg));
    // certificates [0] IMPLICIT CertificateSet, crls [1] IMPLICIT RevocationInfoChoices.
    let mut sd_tail = if extras.certificates.iter().all(|c| identity.certificate_list.contains(c)) {
        identity.certificates.clone()
    } else {
        tlv(Tag::CONTEXT_0_CONSTRUCTED, &certificate_list(identity, extras).concat())
    };
    let crls = crl_list(extras);
    if !crls.is_empty() {
        sd_tail.extend_from_slice(&tlv(Tag::CONTEXT_1_CONSTRUCTED, &crls.concat()));
    }
    sd_tail.extend_from_slice(&signer_infos);
    let content_total = content_len.unwrap_or(0);
    let sd_len = sd_head.len() as u64 + eci_head.len() as u64 + content_total + sd_tail.len() as u64;

    let signed_data_oid = oid::SIGNED_DATA.to_der().map_err(Error::internal)?;
    let explicit_len = header_len(sd_len) as u64 + sd_len;
    let ci_len = signed_data_oid.len() as u64 + header_len(explicit_len) as u64 + explicit_len;

    let mut prefix = Vec::with_capacity(64 + sd_head.len() + eci_head.len());
    header(Tag::SEQUENCE, ci_len, &mut prefix);
    prefix.extend_from_slice(&signed_data_oid);
    header(Tag::CONTEXT_0_CONSTRUCTED, explicit_len, &mut prefix);
    header(Tag::SEQUENCE, sd_len, &mut prefix);
    prefix.extend_from_slice(&sd_head);
    prefix.extend_from_slice(&eci_head);
    Ok(Parts { prefix, suffix: sd_tail, document: None })
}

/// The SignerInfo's fields up to its signature: version, sid,
/// digestAlgorithm, signedAttrs (`[0]`), signatureAlgorithm, signature.
fn signed_fields(
    identity: &SignerIdentity,
    digest: DigestAlgorithm,
    attributes: &SignedAttributes,
    signature: &[u8],
) -> Result<Vec<u8>> {
    let mut si = vec![0x02, 0x01, 0x01];
    si.extend_from_slice(&identity.sid);
    si.extend_from_slice(&algorithm_identifier(digest.oid(), false));
    si.extend_from_slice(&tlv(Tag::CONTEXT_0_CONSTRUCTED, &attributes.body));
    si.extend_from_slice(&signature_algorithm(identity.scheme(digest))?);
    si.extend_from_slice(&tlv(Tag::OCTET_STRING, signature));
    Ok(si)
}

/// `SignedData.certificates` as [`assemble`] writes them: the signer's and
/// its chain, then each extra one not already there.
fn certificate_list(identity: &SignerIdentity, extras: &Extras<'_>) -> Vec<Vec<u8>> {
    let mut all = identity.certificate_list.clone();
    for c in extras.certificates {
        if !all.contains(c) {
            all.push(c.clone());
        }
    }
    all
}

/// `SignedData.crls` as [`assemble`] writes them: each once, in order.
fn crl_list(extras: &Extras<'_>) -> Vec<Vec<u8>> {
    let mut crls: Vec<Vec<u8>> = Vec::new();
    for c in extras.crls {
        if !crls.contains(c) {
            crls.push(c.clone());
        }
    }
    crls
}

/// The unsigned attributes as [`assemble`] writes them: in DER order.
fn unsigned_list(extras: &Extras<'_>) -> Vec<Vec<u8>> {
    let mut sorted = extras.unsigned.to_vec();
    sorted.sort();
    sorted
}

/// id-aa-ets-archiveTimestampV3 (EN 319 122-1 5.5.3).
pub const ARCHIVE_TIME_STAMP_V3: der::oid::ObjectIdentifier = der::oid::ObjectIdentifier::new_unwrap("0.4.0.1733.2.4");
/// id-aa-ATSHashIndex-v3 (EN 319 122-1 5.5.2).
pub const ATS_HASH_INDEX_V3: der::oid::ObjectIdentifier = der::oid::ObjectIdentifier::new_unwrap("0.4.0.19122.1.5");

/// An archive-time-stamp-v3 of a signature as [`assemble`] would write it
/// with `extras` (EN 319 122-1 5.5.2, 5.5.3), with `alg` (the signature's
/// digest algorithm, whose digest of the content it uses): the DER of the
/// `ATSHashIndexV3` (which goes into the time-stamp token's unsigned
/// attributes) and the time-stamp's input, the concatenation of
/// `eContentType`, the content's digest, the SignerInfo's signed fields
/// and that index.
///
/// ```text
/// ATSHashIndexV3 ::= SEQUENCE {
///    hashIndAlgorithm             AlgorithmIdentifier,
///    certificatesHashIndex        SEQUENCE OF OCTET STRING,
///    crlsHashIndex                SEQUENCE OF OCTET STRING,
///    unsignedAttrValuesHashIndex  SEQUENCE OF OCTET STRING }
/// ```
/// Each certificate and CRL hashed whole; each unsigned attribute value
/// hashed with its attribute's type before it (`attrType || attrValue`).
pub fn archive_v3(
    identity: &SignerIdentity,
    alg: DigestAlgorithm,
    attributes: &SignedAttributes,
    signature: &[u8],
    content_digest: &[u8],
    extras: &Extras<'_>,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let data_oid = oid::DATA.to_der().map_err(Error::internal)?;
    let signed_fields = signed_fields(identity, alg, attributes, signature)?;
    archive_v3_parts(
        alg,
        &ArchivedParts {
            content_type: &data_oid,
            content_digest,
            signed_fields: &signed_fields,
            certificates: &certificate_list(identity, extras),
            crls: &crl_list(extras),
            unsigned: &unsigned_list(extras),
        },
    )
}

/// What an archive-time-stamp-v3 covers of a signature, each as its DER.
pub struct ArchivedParts<'a> {
    /// `SignedData.encapContentInfo.eContentType` (its TLV).
    pub content_type: &'a [u8],
    /// The content's digest with the time-stamp's algorithm.
    pub content_digest: &'a [u8],
    /// The SignerInfo's fields from `version` to `signature` (their TLVs, concatenated).
    pub signed_fields: &'a [u8],
    /// `SignedData.certificates`, each whole.
    pub certificates: &'a [Vec<u8>],
    /// `SignedData.crls`, each whole.
    pub crls: &'a [Vec<u8>],
    /// The SignerInfo's unsigned attributes, each a DER `Attribute`.
    pub unsigned: &'a [Vec<u8>],
}

/// The `ATSHashIndexV3` (DER) and the time-stamp's input over `parts`
/// with `alg` (see [`archive_v3`]).
pub fn archive_v3_parts(alg: DigestAlgorithm, parts: &ArchivedParts<'_>) -> Result<(Vec<u8>, Vec<u8>)> {
    let hashes = |items: &[Vec<u8>]| -> Vec<u8> {
        tlv(Tag::SEQUENCE, &items.iter().flat_map(|i| tlv(Tag::OCTET_STRING, &alg.digest(i))).collect::<Vec<u8>>())
    };
    let mut values = Vec::new();
    for attr in parts.unsigned {
        let parsed = x509_cert::attr::Attribute::from_der(attr).map_err(Error::internal)?;
        let attr_type = parsed.oid.to_der().map_err(Error::internal)?;
        for value in parsed.values.iter() {
            let mut input = attr_type.clone();
            input.extend_from_slice(&value.to_der().map_err(Error::internal)?);
            values.push(input);
        }
    }
    // Always written: Annex D of EN 319 122-1 V1.2.1 and later declares
    // hashIndAlgorithm without a DEFAULT, and readers of the older syntax
    // (Bouncy Castle, DSS) accept it present.
    let mut index = algorithm_identifier(alg.oid(), false);
    index.extend_from_slice(&hashes(parts.certificates));
    index.extend_from_slice(&hashes(parts.crls));
    index.extend_from_slice(&hashes(&values));
    let index = tlv(Tag::SEQUENCE, &index);
    let mut input = parts.content_type.to_vec();
    input.extend_from_slice(parts.content_digest);
    input.extend_from_slice(parts.signed_fields);
    input.extend_from_slice(&index);
    Ok((index, input))
}

fn header_len(len: u64) -> usize {
    let mut v = Vec::with_capacity(10);
    header(Tag::SEQUENCE, len, &mut v);
    v.len()
}

/// id-aa-signatureTimeStampToken (RFC 3161 Appendix A): an unsigned
/// attribute holding a time-stamp token over the signature value.
pub const SIGNATURE_TIME_STAMP_TOKEN: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.14");

/// An `Attribute` (RFC 5652 5.3) of one value, given as its DER.
pub fn attribute(oid: der::oid::ObjectIdentifier, value: &[u8]) -> Result<Vec<u8>> {
    let mut body = oid.to_der().map_err(Error::internal)?;
    body.extend_from_slice(&tlv(Tag::SET, value));
    Ok(tlv(Tag::SEQUENCE, &body))
}

/// The first step of a signature: the signed attributes over the message
/// digest, and what the token signs (the scheme, the digest of the
/// attributes' DER `SET OF`). [`assemble`] is the last.
pub fn prepare(
    identity: &SignerIdentity,
    message_digest: &Digest,
    signing_time: SystemTime,
) -> Result<(SignedAttributes, SignatureScheme, Digest)> {
    let digest_alg = message_digest.algorithm();
    let attributes = SignedAttributes::new(identity, message_digest.as_bytes(), signing_time)?;
    let to_sign = Digest::of(digest_alg, &attributes.to_be_signed());
    Ok((attributes, identity.scheme(digest_alg), to_sign))
}

/// Signs a precomputed digest of the content with the token, on its own
/// (the pipeline goes through [`super::cades`]); returns the DER of a
/// detached signature.
pub fn sign_digest(
    keystore: &Keystore,
    identity: &SignerIdentity,
    message_digest: &Digest,
    signing_time: SystemTime,
) -> Result<Vec<u8>> {
    let (attributes, scheme, to_sign) = prepare(identity, message_digest, signing_time)?;
    let signature = keystore.sign_digest(identity.key(), scheme, &to_sign)?;
    let digest_alg = message_digest.algorithm();
    Ok(assemble(identity, digest_alg, &attributes, &signature, None, &Extras::default())?.into_detached())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lengths() {
        let mut v = Vec::new();
        header(Tag::SEQUENCE, 0x7f, &mut v);
        assert_eq!(v, [0x30, 0x7f]);
        v.clear();
        header(Tag::SEQUENCE, 0x80, &mut v);
        assert_eq!(v, [0x30, 0x81, 0x80]);
        v.clear();
        header(Tag::SEQUENCE, 0x1_0000, &mut v);
        assert_eq!(v, [0x30, 0x83, 0x01, 0x00, 0x00]);
    }
}
