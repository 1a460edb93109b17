//! CAdES-BES / baseline-B behind the format seam, detached or enveloping:
//! CMS `SignedData` built by [`super::signed_data`] from what the signer's
//! certificate encodes once ([`super::signers::Signer::cades`]).

use std::time::SystemTime;

use inkan_keystore::DigestAlgorithm;

use crate::error::Result;

use super::format::{Encoder, Parts, TokenSign};
use super::signed_data::sign_with;
use super::signers::Signer;

/// CAdES-BES behind the format seam: detached, or enveloping the content.
#[derive(Clone, Copy, Debug)]
pub struct Cades {
    /// Whether the content goes inside the signature.
    pub enveloping: bool,
}

impl Encoder for Cades {
    fn name(&self) -> &'static str {
        "cades-bes"
    }

    fn envelops(&self) -> bool {
        self.enveloping
    }

    fn sign(
        &self,
        signer: &Signer,
        digest_alg: DigestAlgorithm,
        message_digest: &[u8],
        signing_time: SystemTime,
        content_len: Option<u64>,
        token: &mut TokenSign<'_>,
    ) -> Result<Parts> {
        let content_len = if self.enveloping { content_len } else { None };
        let a = sign_with(&signer.cades, digest_alg, message_digest, signing_time, content_len, token)?;
        Ok(Parts { prefix: a.prefix, suffix: a.suffix })
    }
}
