//! The format seam: what a signature format does with a digest.
//!
//! A format builds what the token signs from the message digest (for CAdES,
//! the signed attributes), calls the token once through the closure it is
//! given, and assembles the result, as x509-cert's builder separates
//! "bytes to sign" from "assemble". The token call sits between the two and
//! nothing else does. An enveloping format is assembled around the content
//! ([`Parts`]), so the pipeline never copies a document it streams.
//!
//! **A new format** (XAdES next): a module in `signing/` with an [`Encoder`],
//! and a [`super::Format`] variant that names it. Callers choose the variant;
//! nothing else changes.

use std::time::SystemTime;

use inkan_keystore::{DigestAlgorithm, SignatureScheme};

use crate::error::Result;

use super::signers::Signer;

/// The token's signature with a scheme over a digest: one `C_Sign`.
pub type TokenSign<'a> = dyn FnMut(SignatureScheme, &[u8]) -> inkan_keystore::Result<Vec<u8>> + 'a;

/// A finished signature around its (optional) content: `prefix || content ||
/// suffix` is the whole signature.
#[derive(Clone, Debug, Default)]
pub struct Parts {
    /// Everything before the content (all of a detached signature but its suffix).
    pub prefix: Vec<u8>,
    /// Everything after the content.
    pub suffix: Vec<u8>,
}

impl Parts {
    /// The signature of a detached format (no content between prefix and suffix).
    pub fn into_detached(self) -> Vec<u8> {
        let mut der = self.prefix;
        der.extend_from_slice(&self.suffix);
        der
    }

    /// The signature with `content` between prefix and suffix.
    pub fn around(self, content: &[u8]) -> Vec<u8> {
        let mut der = self.prefix;
        der.reserve(content.len() + self.suffix.len());
        der.extend_from_slice(content);
        der.extend_from_slice(&self.suffix);
        der
    }
}

/// One signature format.
pub trait Encoder: Send + Sync {
    /// Its name in the audit log (`cades-bes`, `raw`).
    fn name(&self) -> &'static str;

    /// Whether the content goes inside the signature.
    fn envelops(&self) -> bool {
        false
    }

    /// Signs one message digest for `signer`: builds what the token signs,
    /// calls `token` once, assembles. `content_len` is the length of the
    /// content an enveloping format is assembled around.
    fn sign(
        &self,
        signer: &Signer,
        digest_alg: DigestAlgorithm,
        message_digest: &[u8],
        signing_time: SystemTime,
        content_len: Option<u64>,
        token: &mut TokenSign<'_>,
    ) -> Result<Parts>;
}
