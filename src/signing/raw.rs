//! The bare signature value over a digest: what CSC `signHash` and
//! `sign-hashes` with `"format": "raw"` return (PKCS#1 v1.5 or PSS for RSA,
//! ECDSA as DER).

use std::sync::Arc;
use std::time::SystemTime;

use inkan_keystore::{Digest, SignatureScheme};

use crate::error::{Error, Result};

use super::format::{Assembled, Encoder, Family, Parts, Pending, ToBeSigned, Unsigned};
use super::signers::Signer;

/// The raw format: the credential's default scheme for the digest, or `scheme`.
#[derive(Clone, Copy, Debug)]
pub struct Raw {
    /// A scheme the caller chose (it must fit the key and the digest).
    pub scheme: Option<SignatureScheme>,
}

/// The signature value is the output.
struct Value;

impl Pending for Value {
    fn assemble(self: Box<Self>, signature: &[u8]) -> Result<Box<dyn Assembled>> {
        Ok(Box::new(Signature(signature.to_vec())))
    }
}

/// A bare signature value: it takes no unsigned properties.
struct Signature(Vec<u8>);

impl Assembled for Signature {
    fn finish(self: Box<Self>, _unsigned: &Unsigned) -> Result<Parts> {
        Ok(Parts { prefix: self.0, ..Parts::default() })
    }
}

impl Encoder for Raw {
    fn family(&self) -> Family {
        Family::Raw
    }

    fn prepare(
        &self,
        signer: &Arc<Signer>,
        message_digest: &Digest,
        _signing_time: SystemTime,
        _content_len: Option<u64>,
    ) -> Result<ToBeSigned> {
        let digest_alg = message_digest.algorithm();
        let scheme = match self.scheme {
            Some(s) if s.digest_algorithm() != digest_alg || !s.fits(signer.algorithm) => {
                return Err(Error::Invalid("the signature scheme does not fit the key or the digest".into()))
            }
            Some(s) => s,
            None => signer.cades.scheme(digest_alg),
        };
        Ok(ToBeSigned { scheme, digest: message_digest.clone(), pending: Box::new(Value) })
    }
}
