//! Authentication: card certificates, auth sessions, OpenID Connect.

pub mod cards;
pub mod certificate;
pub mod clients;
pub mod epoch;
pub mod oidc;
pub mod session;

use base64ct::{Base64UrlUnpadded, Encoding};
use sha2::{Digest, Sha256};

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

/// base64url without padding.
pub fn b64url(data: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(data)
}
