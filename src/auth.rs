//! Authentication: who is asking, and how they proved it.
//!
//! - [`cards`] maps card certificates to users (HPKI mappings, My Number
//!   card links) and logs cards in (the chain is validated by [`crate::pki::trust`]);
//! - [`oidc`] is the OpenID Connect provider the signing systems use;
//! - [`sessions`] are what a login opens, and turn bearer tokens into a
//!   [`principal::Principal`] (cached, kept true by the store's invalidation);
//! - [`clients`] are the registered signing systems;
//! - [`sad`] is CSC signature activation data.
//!
//! **A new login method**: a variant of [`Method`] (the session and
//! the ID token's `acr` name it), the way it proves the user (a module here,
//! as [`cards`]), and its pages in `server/`; a session opened by it signs
//! like any other.

pub mod cards;
pub mod clients;
pub mod oidc;
pub mod principal;
pub mod sad;
pub mod sessions;

use base64ct::{Base64UrlUnpadded, Encoding};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How the user logged in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// HPKI card (TLS client certificate).
    Hpki,
    /// My Number card (JPKI client certificate).
    Jpki,
    /// FIDO2 phone.
    Fido,
}

impl Method {
    /// `hpki`, `jpki`, `fido` (also the OIDC `acr` value).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Hpki => "hpki",
            Method::Jpki => "jpki",
            Method::Fido => "fido",
        }
    }

    /// Parses an `acr_values` entry (or a stored value).
    pub fn parse(s: &str) -> Option<Method> {
        match s {
            "hpki" => Some(Method::Hpki),
            "jpki" => Some(Method::Jpki),
            "fido" => Some(Method::Fido),
            _ => None,
        }
    }
}

/// A random token of 32 bytes (256 bits), base64url without padding.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // getrandom only fails when the OS has no entropy source; then refuse to continue.
    getrandom::fill(&mut bytes).unwrap_or_else(|e| panic_no_entropy(e));
    Base64UrlUnpadded::encode_string(&bytes)
}

#[allow(clippy::panic)]
fn panic_no_entropy(e: getrandom::Error) -> ! {
    panic!("the operating system gives no randomness: {e}")
}

/// SHA-256 of a token: tokens are stored only as hashes.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Compares secrets in constant time.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
