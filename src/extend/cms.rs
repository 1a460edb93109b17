//! CAdES (CMS `SignedData` of one signer), extended in its DER: the parts
//! it has are kept as they were encoded (the signed attributes, the
//! content, each certificate, CRL and unsigned attribute), new
//! certificates, CRLs and unsigned attributes are added, each set written
//! in DER order, and the lengths around them anew.

use cms::signed_data::{SignerIdentifier, SignerInfo};
use der::{Decode, Encode};
use inkan_keystore::DigestAlgorithm;
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use x509_cert::Certificate;

use super::seam::Extendable;
use crate::error::{Error, Result};
use crate::signing::format::Family;
use crate::signing::format::{ArchiveStamp, Level, ValidationData};
use crate::signing::signed_data::der_writer::{tlv, Tag};
use crate::signing::signed_data::{
    archive_v3_parts, attribute, ArchivedParts, ARCHIVE_TIME_STAMP_V3, ATS_HASH_INDEX_V3, SIGNATURE_TIME_STAMP_TOKEN,
};
use crate::tsa::Checked;
use crate::verify::cades::{children, tag};

const MESSAGE_DIGEST: der::oid::ObjectIdentifier = der::oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");

/// A CMS signature of one signer, in its parts.
pub struct Cades {
    pem: bool,
    /// `ContentInfo.contentType` (its TLV).
    content_info_type: Vec<u8>,
    /// `SignedData`'s version, digestAlgorithms and encapContentInfo (TLVs).
    head: Vec<Vec<u8>>,
    /// `encapContentInfo.eContentType` (its TLV).
    content_type: Vec<u8>,
    certificates: Vec<Vec<u8>>,
    crls: Vec<Vec<u8>>,
    /// The SignerInfo's fields from version to signature (TLVs).
    signed_fields: Vec<Vec<u8>>,
    /// Its unsigned attributes (each a DER `Attribute`), in DER order.
    unsigned: Vec<Vec<u8>>,
    digest_alg: DigestAlgorithm,
    message_digest: Vec<u8>,
    signature: Vec<u8>,
    signer: Vec<u8>,
}

fn not_der(what: &str) -> Error {
    Error::Invalid(format!("{what} is not DER: inkan extends CMS signatures in DER (or PEM around DER)"))
}

impl Cades {
    /// Reads a CMS `SignedData` (DER, or PEM `CMS`/`PKCS7`) of one signer.
    pub fn open(input: &[u8]) -> Result<Cades> {
        let pem = input.starts_with(b"-----BEGIN");
        let der = if pem {
            match der::pem::decode_vec(input) {
                Ok((label, der)) if label == "CMS" || label == "PKCS7" => der,
                Ok((label, _)) => return Err(Error::Invalid(format!("a PEM {label}, not CMS or PKCS7"))),
                Err(e) => return Err(Error::Invalid(format!("not PEM: {e}"))),
            }
        } else {
            input.to_vec()
        };
        let ci = children(&der).ok_or_else(|| not_der("the ContentInfo"))?;
        let [content_info_type, explicit] = ci.as_slice() else { return Err(not_der("the ContentInfo")) };
        if der::oid::ObjectIdentifier::from_der(content_info_type).ok()
            != Some(der::oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2"))
        {
            return Err(Error::Invalid("a CMS ContentInfo that is not SignedData".into()));
        }
        let explicit = children(explicit).ok_or_else(|| not_der("the ContentInfo"))?;
        let [sd] = explicit.as_slice() else { return Err(not_der("the ContentInfo")) };
        let sd = children(sd).ok_or_else(|| not_der("the SignedData"))?;
        if sd.len() < 4 {
            return Err(not_der("the SignedData"));
        }
        let encap = children(sd[2]).ok_or_else(|| not_der("the encapContentInfo"))?;
        let content_type = encap.first().ok_or_else(|| not_der("the encapContentInfo"))?.to_vec();
        let (mut certificates, mut crls) = (Vec::new(), Vec::new());
        for part in &sd[3..sd.len() - 1] {
            let items = children(part).ok_or_else(|| not_der("the SignedData"))?;
            match tag(part) {
                0xa0 => certificates = items.iter().map(|c| c.to_vec()).collect(),
                0xa1 => crls = items.iter().map(|c| c.to_vec()).collect(),
                _ => return Err(not_der("the SignedData")),
            }
        }
        let signer_infos = children(sd[sd.len() - 1]).ok_or_else(|| not_der("the signerInfos"))?;
        let [raw_si] = signer_infos.as_slice() else {
            return Err(Error::Invalid(format!(
                "the signature has {} signers: inkan extends a signature of one signer",
                signer_infos.len()
            )));
        };
        let fields = children(raw_si).ok_or_else(|| not_der("the SignerInfo"))?;
        let (signed_fields, unsigned) = match fields.split_last() {
            Some((last, rest)) if tag(last) == 0xa1 => {
                (rest.to_vec(), children(last).ok_or_else(|| not_der("the unsigned attributes"))?)
            }
            _ => (fields.clone(), Vec::new()),
        };
        let si = SignerInfo::from_der(raw_si).map_err(|e| Error::Invalid(format!("the SignerInfo: {e}")))?;
        let digest_alg = DigestAlgorithm::from_oid(&si.digest_alg.oid).ok_or_else(|| {
            Error::Unprocessable(format!("the digest algorithm {} is not one inkan uses", si.digest_alg.oid))
        })?;
        let message_digest = si
            .signed_attrs
            .as_ref()
            .and_then(|attrs| attrs.iter().find(|a| a.oid == MESSAGE_DIGEST))
            .and_then(|a| a.values.iter().next())
            .and_then(|v| v.decode_as::<der::asn1::OctetString>().ok())
            .ok_or_else(|| Error::Unprocessable("the signer has no message-digest attribute: not CAdES".into()))?
            .as_bytes()
            .to_vec();
        let signer = certificates
            .iter()
            .find(|c| {
                Certificate::from_der(c).is_ok_and(|c| match &si.sid {
                    SignerIdentifier::IssuerAndSerialNumber(isn) => {
                        c.tbs_certificate().issuer() == &isn.issuer
                            && c.tbs_certificate().serial_number() == &isn.serial_number
                    }
                    SignerIdentifier::SubjectKeyIdentifier(ski) => {
                        matches!(c.tbs_certificate().get_extension::<SubjectKeyIdentifier>(), Ok(Some((_, k))) if k == *ski)
                    }
                })
            })
            .cloned()
            .ok_or_else(|| Error::Unprocessable("the signature does not hold its signer's certificate".into()))?;
        let mut out = Cades {
            pem,
            content_info_type: content_info_type.to_vec(),
            head: sd[..3].iter().map(|p| p.to_vec()).collect(),
            content_type,
            certificates,
            crls,
            signed_fields: signed_fields.iter().map(|f| f.to_vec()).collect(),
            unsigned: unsigned.iter().map(|a| a.to_vec()).collect(),
            digest_alg,
            message_digest,
            signature: si.signature.as_bytes().to_vec(),
            signer,
        };
        out.unsigned.sort();
        Ok(out)
    }

    /// The values of the unsigned attributes of type `oid` (each a TLV).
    fn values(&self, oid: der::oid::ObjectIdentifier) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for attr in &self.unsigned {
            let a = x509_cert::attr::Attribute::from_der(attr)
                .map_err(|e| Error::Unprocessable(format!("an unsigned attribute: {e}")))?;
            if a.oid == oid {
                for v in a.values.iter() {
                    out.push(v.to_der().map_err(Error::internal)?);
                }
            }
        }
        Ok(out)
    }

    fn has(&self, oid: der::oid::ObjectIdentifier) -> bool {
        self.values(oid).is_ok_and(|v| !v.is_empty())
    }

    fn add_attribute(&mut self, oid: der::oid::ObjectIdentifier, value: &[u8]) -> Result<()> {
        self.unsigned.push(attribute(oid, value)?);
        self.unsigned.sort();
        Ok(())
    }

    fn add_certificates(&mut self, certs: &[Vec<u8>]) {
        for c in certs {
            if !self.certificates.contains(c) {
                self.certificates.push(c.clone());
            }
        }
    }

    fn add_crls(&mut self, crls: &[Vec<u8>]) {
        for c in crls {
            if !self.crls.contains(c) {
                self.crls.push(c.clone());
            }
        }
    }

    /// The archive-time-stamp-v3's hash index and input over the signature as it is now.
    fn archive(&self) -> Result<(Vec<u8>, Vec<u8>)> {
        archive_v3_parts(
            self.digest_alg,
            &ArchivedParts {
                content_type: &self.content_type,
                content_digest: &self.message_digest,
                signed_fields: &self.signed_fields.concat(),
                certificates: &self.certificates,
                crls: &self.crls,
                unsigned: &self.unsigned,
            },
        )
    }
}

impl Extendable for Cades {
    fn format(&self) -> &'static str {
        Family::Cades.about().name
    }

    /// As the validation reads it ([`crate::verify::cades::level`]).
    fn level(&self) -> Level {
        crate::verify::cades::level(
            self.has(SIGNATURE_TIME_STAMP_TOKEN),
            !self.crls.is_empty(),
            self.has(ARCHIVE_TIME_STAMP_V3),
        )
        .parse()
        .unwrap_or_default()
    }

    fn signer_certificate(&self) -> Result<Vec<u8>> {
        Ok(self.signer.clone())
    }

    fn certificates(&self) -> Vec<Vec<u8>> {
        self.certificates.clone()
    }

    /// The value of `SignerInfo.signature`.
    fn signature_timestamp_input(&self) -> Result<Vec<u8>> {
        Ok(self.signature.clone())
    }

    fn signature_timestamp(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.values(SIGNATURE_TIME_STAMP_TOKEN)?.into_iter().next())
    }

    /// The archive time-stamp made last (by its time).
    fn newest_archive_timestamp(&self) -> Result<Option<Vec<u8>>> {
        let mut stamps = self.values(ARCHIVE_TIME_STAMP_V3)?;
        stamps.sort_by_key(|t| crate::tsa::token::tst_info(t).ok().map(|i| i.gen_time));
        Ok(stamps.pop())
    }

    fn add_signature_timestamp(&mut self, stamp: &Checked) -> Result<()> {
        self.add_attribute(SIGNATURE_TIME_STAMP_TOKEN, &stamp.token)
    }

    /// The signer's CA certificates and the TSA's next to the signer's, the
    /// CRLs of both paths, in `SignedData` (EN 319 122-1 baseline LT).
    fn add_long_term(&mut self, data: &ValidationData) -> Result<()> {
        self.add_certificates(&data.signer_chain);
        self.add_certificates(&data.tsa_path);
        self.add_crls(&data.signer_crls);
        self.add_crls(&data.tsa_crls);
        Ok(())
    }

    fn add_archive_validation(&mut self, path: &[Vec<u8>], crls: &[Vec<u8>]) -> Result<()> {
        self.add_certificates(path);
        self.add_crls(crls);
        Ok(())
    }

    /// EN 319 122-1 5.5.3, with the signature's digest algorithm.
    fn archive_timestamp_input(&self) -> Result<(DigestAlgorithm, Vec<u8>)> {
        let (_, input) = self.archive()?;
        Ok((self.digest_alg, input))
    }

    /// The archive-time-stamp-v3 attribute (its token carrying the
    /// ats-hash-index-v3 it was made over), then its TSA's certificates and CRLs.
    fn add_archive_timestamp(&mut self, archive: &ArchiveStamp) -> Result<()> {
        let (index, _) = self.archive()?;
        let index = attribute(ATS_HASH_INDEX_V3, &index)?;
        let token = crate::tsa::token::with_unsigned_attribute(&archive.stamp.token, &index)
            .map_err(|e| Error::Internal(e.0))?;
        self.add_attribute(ARCHIVE_TIME_STAMP_V3, &token)?;
        self.add_certificates(&archive.stamp.path);
        self.add_crls(&archive.tsa_crls);
        Ok(())
    }

    fn into_bytes(self: Box<Self>) -> Result<Vec<u8>> {
        let mut si = self.signed_fields.concat();
        if !self.unsigned.is_empty() {
            si.extend_from_slice(&tlv(Tag::CONTEXT_1_CONSTRUCTED, &self.unsigned.concat()));
        }
        // CertificateSet and RevocationInfoChoices are SETs: in DER order
        // (the archive time-stamps' hash indexes do not depend on it).
        let (mut certificates, mut crls) = (self.certificates.clone(), self.crls.clone());
        certificates.sort();
        crls.sort();
        let mut sd = self.head.concat();
        if !certificates.is_empty() {
            sd.extend_from_slice(&tlv(Tag::CONTEXT_0_CONSTRUCTED, &certificates.concat()));
        }
        if !crls.is_empty() {
            sd.extend_from_slice(&tlv(Tag::CONTEXT_1_CONSTRUCTED, &crls.concat()));
        }
        sd.extend_from_slice(&tlv(Tag::SET, &tlv(Tag::SEQUENCE, &si)));
        let mut ci = self.content_info_type.clone();
        ci.extend_from_slice(&tlv(Tag::CONTEXT_0_CONSTRUCTED, &tlv(Tag::SEQUENCE, &sd)));
        let der = tlv(Tag::SEQUENCE, &ci);
        if self.pem {
            let pem = der::pem::encode_string("CMS", der::pem::LineEnding::LF, &der).map_err(Error::internal)?;
            return Ok(pem.into_bytes());
        }
        Ok(der)
    }
}
