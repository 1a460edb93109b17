//! CAdES-BES / baseline-B behind the format seam, detached or enveloping:
//! CMS `SignedData` built by [`super::signed_data`] from what the signer's
//! certificate encodes once ([`super::signers::Signer::cades`]).

use std::sync::Arc;
use std::time::SystemTime;

use inkan_keystore::{Digest, DigestAlgorithm};

use crate::error::Result;

use super::format::{Assembled, Encoder, Family, Parts, Pending, ToBeSigned, Unsigned};
use super::signed_data::{assemble, prepare, Extras, SignedAttributes};
use super::signers::Signer;

/// CAdES-BES behind the format seam: detached, or enveloping the content.
#[derive(Clone, Copy, Debug)]
pub struct Cades {
    /// Whether the content goes inside the signature.
    pub enveloping: bool,
}

/// Signed attributes waiting for their signature value.
struct Attributes {
    signer: Arc<Signer>,
    digest_alg: DigestAlgorithm,
    message_digest: Vec<u8>,
    attributes: SignedAttributes,
    content_len: Option<u64>,
}

impl Pending for Attributes {
    fn assemble(self: Box<Self>, signature: &[u8]) -> Result<Box<dyn Assembled>> {
        Ok(Box::new(Signature { attributes: *self, value: signature.to_vec() }))
    }
}

/// A CAdES signature: its signed attributes and value, assembled into DER
/// when its unsigned attributes are known.
struct Signature {
    attributes: Attributes,
    value: Vec<u8>,
}

impl Assembled for Signature {
    /// CAdES-T: the time-stamp is over the value of `SignerInfo.signature`
    /// (the OCTET STRING's contents; EN 319 122-1 5.3).
    fn signature_timestamp_input(&self) -> Result<Option<Vec<u8>>> {
        Ok(Some(self.value.clone()))
    }

    /// CAdES-A (EN 319 122-1 5.5.3): archive-time-stamp-v3 over the
    /// content's digest, the SignerInfo's signed fields and the hash index
    /// of the certificates, CRLs and unsigned attributes B-LT wrote; its
    /// imprint with the signature's digest algorithm.
    fn archive_timestamp_input(&self, unsigned: &Unsigned) -> Result<Option<(DigestAlgorithm, Vec<u8>)>> {
        let (attrs, certificates, crls) = self.lt_parts(unsigned)?;
        let extras = Extras { unsigned: &attrs, certificates: &certificates, crls: &crls };
        let (_, input) = self.archive(&extras)?;
        Ok(Some((self.attributes.digest_alg, input)))
    }

    /// B-T: the signature-time-stamp-token attribute; B-LT: the TSA's
    /// certificates next to the signer's, and the CRLs of both paths, in
    /// `SignedData` (EN 319 122-1 baseline LT); B-LTA: the
    /// archive-time-stamp-v3 attribute (its token carrying the
    /// ats-hash-index-v3), then its TSA's certificates and CRLs.
    fn finish(self: Box<Self>, unsigned: &Unsigned) -> Result<Parts> {
        let a = &self.attributes;
        let (mut attrs, mut certificates, mut crls) = self.lt_parts(unsigned)?;
        if let Some(archive) = &unsigned.archive_timestamp {
            let extras = Extras { unsigned: &attrs, certificates: &certificates, crls: &crls };
            let (index, _) = self.archive(&extras)?;
            let index = super::signed_data::attribute(super::signed_data::ATS_HASH_INDEX_V3, &index)?;
            let token = crate::tsa::token::with_unsigned_attribute(&archive.stamp.token, &index)
                .map_err(|e| crate::error::Error::Internal(e.0))?;
            attrs.push(super::signed_data::attribute(super::signed_data::ARCHIVE_TIME_STAMP_V3, &token)?);
            certificates.extend(archive.stamp.path.iter().cloned());
            crls.extend(archive.tsa_crls.iter().cloned());
        }
        let extras = Extras { unsigned: &attrs, certificates: &certificates, crls: &crls };
        assemble(&a.signer.cades, a.digest_alg, &a.attributes, &self.value, a.content_len, &extras)
    }
}

impl Signature {
    /// What B-T and B-LT add: the unsigned attributes, certificates and CRLs.
    #[allow(clippy::type_complexity)]
    fn lt_parts(&self, unsigned: &Unsigned) -> Result<(Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<Vec<u8>>)> {
        let mut attrs = Vec::new();
        if let Some(stamp) = &unsigned.signature_timestamp {
            attrs.push(super::signed_data::attribute(super::signed_data::SIGNATURE_TIME_STAMP_TOKEN, &stamp.token)?);
        }
        let (certificates, crls) = match &unsigned.validation {
            Some(v) => (
                [v.signer_chain.clone(), v.tsa_path.clone()].concat(),
                [v.signer_crls.clone(), v.tsa_crls.clone()].concat(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        Ok((attrs, certificates, crls))
    }

    /// The hash index and the input of an archive-time-stamp-v3 over the
    /// signature as it would be written with `extras`.
    fn archive(&self, extras: &Extras<'_>) -> Result<(Vec<u8>, Vec<u8>)> {
        let a = &self.attributes;
        super::signed_data::archive_v3(
            &a.signer.cades,
            a.digest_alg,
            &a.attributes,
            &self.value,
            &a.message_digest,
            extras,
        )
    }
}

impl Encoder for Cades {
    fn family(&self) -> Family {
        Family::Cades
    }

    fn envelops(&self) -> bool {
        self.enveloping
    }

    fn prepare(
        &self,
        signer: &Arc<Signer>,
        message_digest: &Digest,
        signing_time: SystemTime,
        content_len: Option<u64>,
    ) -> Result<ToBeSigned> {
        let digest_alg = message_digest.algorithm();
        let (attributes, scheme, digest) = prepare(&signer.cades, message_digest, signing_time)?;
        Ok(ToBeSigned {
            scheme,
            digest,
            pending: Box::new(Attributes {
                signer: Arc::clone(signer),
                digest_alg,
                message_digest: message_digest.as_bytes().to_vec(),
                attributes,
                content_len: if self.enveloping { content_len } else { None },
            }),
        })
    }
}
