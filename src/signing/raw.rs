//! The bare signature value over a digest: what CSC `signHash` and
//! `sign-hashes` with `"format": "raw"` return (PKCS#1 v1.5 or PSS for RSA,
//! ECDSA as DER).

use std::time::SystemTime;

use inkan_keystore::{DigestAlgorithm, SignatureScheme};

use crate::error::{Error, Result};

use super::format::{Encoder, Parts, TokenSign};
use super::signers::Signer;

/// The raw format: the credential's default scheme for the digest, or `scheme`.
#[derive(Clone, Copy, Debug)]
pub struct Raw {
    /// A scheme the caller chose (it must fit the key and the digest).
    pub scheme: Option<SignatureScheme>,
}

impl Encoder for Raw {
    fn name(&self) -> &'static str {
        "raw"
    }

    fn sign(
        &self,
        signer: &Signer,
        digest_alg: DigestAlgorithm,
        message_digest: &[u8],
        _signing_time: SystemTime,
        _content_len: Option<u64>,
        token: &mut TokenSign<'_>,
    ) -> Result<Parts> {
        if message_digest.len() != digest_alg.output_len() {
            return Err(Error::Invalid(format!(
                "a {} digest has {} bytes, not {}",
                digest_alg.name(),
                digest_alg.output_len(),
                message_digest.len()
            )));
        }
        let scheme = match self.scheme {
            Some(s) if s.digest_algorithm() != digest_alg || !s.fits(signer.algorithm) => {
                return Err(Error::Invalid("the signature scheme does not fit the key or the digest".into()))
            }
            Some(s) => s,
            None => signer.cades.scheme(digest_alg),
        };
        Ok(Parts { prefix: token(scheme, message_digest)?, suffix: Vec::new() })
    }
}
