//! The format seam: a signature in three steps, as x509-cert's builder
//! separates "bytes to sign" (`finalize`) from "assemble with the
//! signature" (`assemble`).
//!
//! 1. **prepare** ([`Encoder::prepare`]): from what is signed (a message
//!    digest; for XAdES Reference 1's digest and, with it, the document the
//!    signature goes into) build what the token signs: for CAdES the signed
//!    attributes, for XAdES the canonical SignedInfo. Returns the digest the
//!    token signs, with which scheme, and the format's own state
//!    ([`Pending`]);
//! 2. **sign**: one `C_Sign` by the pipeline, nothing else;
//! 3. **assemble** ([`Pending::assemble`]): the signature value into the
//!    format's output ([`Parts`]).
//!
//! Steps that come after signing (a timestamp over the signature value) take
//! the assembled output; the pipeline need not change for them.
//!
//! An enveloping format is assembled around the content ([`Parts`]), so the
//! pipeline never copies a document it streams.
//!
//! **A new format**: a module in `signing/` with an [`Encoder`], and a
//! [`super::Format`] variant that names it. Callers choose the variant;
//! nothing else changes.

use std::sync::Arc;
use std::time::SystemTime;

use inkan_keystore::{DigestAlgorithm, SignatureScheme};

use crate::error::Result;

use super::signers::Signer;

pub use super::parts::{Parts, TokenSign};

/// What the token signs for one signature, and what the format needs to
/// assemble it afterwards.
pub struct ToBeSigned {
    /// The scheme of the one token call.
    pub scheme: SignatureScheme,
    /// The digest the token signs.
    pub digest: Vec<u8>,
    /// The format's state until the signature value comes back.
    pub pending: Box<dyn Pending>,
}

/// A prepared signature waiting for its value.
pub trait Pending: Send {
    /// Assembles the format's output around the token's signature value.
    fn assemble(self: Box<Self>, signature: &[u8]) -> Result<Parts>;
}

/// One signature format.
pub trait Encoder: Send + Sync {
    /// Its name in the audit log (`cades-bes`, `raw`, `xades-bes`).
    fn name(&self) -> &'static str;

    /// Whether the content goes inside the signature.
    fn envelops(&self) -> bool {
        false
    }

    /// Checks, before anything is used up, that `signer` may sign what
    /// this format signs (XAdES: a prescription only by a doctor or
    /// dentist, a dispensing record only by a pharmacist).
    fn permits(&self, _signer: &Signer) -> Result<()> {
        Ok(())
    }

    /// What the audit row says of what was signed, beyond its digest (XAdES:
    /// the kind, the PrescriptionId or DispensingId and the CSV's hash; never
    /// the content).
    fn audit(&self) -> Option<serde_json::Value> {
        None
    }

    /// Step 1 for one message digest: what the token signs. `content_len`
    /// is the length of the content an enveloping format is assembled around.
    fn prepare(
        &self,
        signer: &Arc<Signer>,
        digest_alg: DigestAlgorithm,
        message_digest: &[u8],
        signing_time: SystemTime,
        content_len: Option<u64>,
    ) -> Result<ToBeSigned>;
}

/// The three steps for one digest: prepare, one token call, assemble.
pub fn sign(
    encoder: &dyn Encoder,
    signer: &Arc<Signer>,
    digest_alg: DigestAlgorithm,
    message_digest: &[u8],
    signing_time: SystemTime,
    content_len: Option<u64>,
    token: &mut TokenSign<'_>,
) -> Result<Parts> {
    let to_sign = encoder.prepare(signer, digest_alg, message_digest, signing_time, content_len)?;
    let signature = token(to_sign.scheme, &to_sign.digest)?;
    to_sign.pending.assemble(&signature)
}
