//! The signing-certificate-v2 attribute (RFC 5035, ESS update).
//!
//! ```text
//! SigningCertificateV2 ::= SEQUENCE {
//!     certs        SEQUENCE OF ESSCertIDv2,
//!     policies     SEQUENCE OF PolicyInformation OPTIONAL }
//! ESSCertIDv2 ::= SEQUENCE {
//!     hashAlgorithm AlgorithmIdentifier DEFAULT {algorithm id-sha256},
//!     certHash      Hash,
//!     issuerSerial  IssuerSerial OPTIONAL }
//! IssuerSerial ::= SEQUENCE {
//!     issuer        GeneralNames,
//!     serialNumber  CertificateSerialNumber }
//! ```
//! The hash is SHA-256, the DEFAULT, so `hashAlgorithm` is omitted (DER).

use sha2::{Digest, Sha256};

use super::der_writer::{tlv, Tag};
use super::oid;

/// The DER `Attribute` signing-certificate-v2 for a certificate, given the DER of
/// its issuer `Name` and of its serial number `INTEGER`.
pub fn signing_certificate_v2(certificate: &[u8], issuer_name: &[u8], serial: &[u8]) -> Vec<u8> {
    let cert_hash = tlv(Tag::OCTET_STRING, &Sha256::digest(certificate));
    // GeneralNames ::= SEQUENCE OF GeneralName; directoryName [4] is EXPLICIT (Name is a CHOICE).
    let general_names = tlv(Tag::SEQUENCE, &tlv(Tag::CONTEXT_4_CONSTRUCTED, issuer_name));
    let issuer_serial = tlv(Tag::SEQUENCE, &[general_names, serial.to_vec()].concat());
    let ess_cert_id = tlv(Tag::SEQUENCE, &[cert_hash, issuer_serial].concat());
    let value = tlv(Tag::SEQUENCE, &tlv(Tag::SEQUENCE, &ess_cert_id));
    let mut attr = der::Encode::to_der(&oid::SIGNING_CERTIFICATE_V2).unwrap_or_default();
    attr.extend_from_slice(&tlv(Tag::SET, &value));
    tlv(Tag::SEQUENCE, &attr)
}
