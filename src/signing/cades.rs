//! CAdES-BES / baseline-B behind the format seam, detached or enveloping:
//! CMS `SignedData` built by [`super::signed_data`] from what the signer's
//! certificate encodes once ([`super::signers::Signer::cades`]).

use std::sync::Arc;
use std::time::SystemTime;

use inkan_keystore::DigestAlgorithm;

use crate::error::Result;

use super::format::{Encoder, Parts, Pending, ToBeSigned};
use super::signed_data::{assemble, prepare, SignedAttributes};
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
    attributes: SignedAttributes,
    content_len: Option<u64>,
}

impl Pending for Attributes {
    fn assemble(self: Box<Self>, signature: &[u8]) -> Result<Parts> {
        assemble(&self.signer.cades, self.digest_alg, &self.attributes, signature, self.content_len)
    }
}

impl Encoder for Cades {
    fn name(&self) -> &'static str {
        "cades-bes"
    }

    fn envelops(&self) -> bool {
        self.enveloping
    }

    fn prepare(
        &self,
        signer: &Arc<Signer>,
        digest_alg: DigestAlgorithm,
        message_digest: &[u8],
        signing_time: SystemTime,
        content_len: Option<u64>,
    ) -> Result<ToBeSigned> {
        let (attributes, scheme, digest) = prepare(&signer.cades, digest_alg, message_digest, signing_time)?;
        Ok(ToBeSigned {
            scheme,
            digest,
            pending: Box::new(Attributes {
                signer: Arc::clone(signer),
                digest_alg,
                attributes,
                content_len: if self.enveloping { content_len } else { None },
            }),
        })
    }
}
