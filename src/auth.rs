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
//! **A new login method**: a variant of [`Method`] and its row in
//! [`Method::about`] (the compiler asks for it: the match is exhaustive; a
//! unit test holds [`Method::ALL`] to the rows): its `acr`, its proof, its
//! name in the pages and where its login starts. Discovery, the chooser page,
//! `/oidc/authorize`'s redirect, the ID token's `amr` and the pages' wording read
//! the row. Then the way it proves the user (a module here, as [`cards`]) and
//! its pages in `server/`; a session opened by it signs like any other.

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

/// What a login method is: everything the rest of inkan says of it.
#[derive(Debug)]
pub struct About {
    /// Its name in sessions, the store and the ID token's `acr` (and `acr_values`).
    pub acr: &'static str,
    /// The ID token's `amr` (RFC 8176): `sc` (smart card), `hwk` (hardware key).
    pub amr: &'static str,
    /// Its proof: a card's TLS client certificate (on the card listener), or a phone's WebAuthn assertion.
    pub proof: Proof,
    /// What the pages call it (HPKIカード, ...).
    pub name_ja: &'static str,
}

/// How a login method proves the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proof {
    /// A card's certificate on the card listener: `/login/<acr>` there.
    Card,
    /// A phone's WebAuthn assertion through a QR code: `/login/fido` on the main listener.
    Phone,
}

impl Method {
    /// Every method, in the order the pages offer them.
    pub const ALL: [Method; 3] = [Method::Hpki, Method::Jpki, Method::Fido];

    /// The method's row: the one place a method is described.
    pub fn about(self) -> &'static About {
        match self {
            Method::Hpki => &About { acr: "hpki", amr: "sc", proof: Proof::Card, name_ja: "HPKIカード" },
            Method::Jpki => {
                &About { acr: "jpki", amr: "sc", proof: Proof::Card, name_ja: "マイナンバーカード" }
            }
            Method::Fido => &About { acr: "fido", amr: "hwk", proof: Proof::Phone, name_ja: "スマートフォン" },
        }
    }

    /// `hpki`, `jpki`, `fido` (also the OIDC `acr` value).
    pub fn as_str(self) -> &'static str {
        self.about().acr
    }

    /// Parses an `acr_values` entry (or a stored value).
    pub fn parse(s: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// Whether the user logs in with a card on the card listener.
    pub fn is_card(self) -> bool {
        self.about().proof == Proof::Card
    }

    /// Where its login starts for the pending or sealed request `req`
    /// (URL-encoded): on the card listener at `card_url` for a card, on this
    /// listener for a phone.
    pub fn login_url(self, card_url: &str, req: &str) -> String {
        match self.about().proof {
            Proof::Card => format!("{}/login/{}?req={req}", card_url.trim_end_matches('/'), self.as_str()),
            Proof::Phone => format!("/login/{}?req={req}", self.as_str()),
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

#[cfg(test)]
mod method_tests {
    use super::*;

    #[test]
    fn every_method_has_one_row_and_all_names_each_once() {
        // A variant missing from ALL: its name would not parse back.
        for probe in [Method::Hpki, Method::Jpki, Method::Fido] {
            // A new variant fails to compile here until it is probed too.
            let probed = match probe {
                Method::Hpki | Method::Jpki | Method::Fido => true,
            };
            assert!(probed);
            assert_eq!(Method::parse(probe.as_str()), Some(probe), "{probe:?} is in Method::ALL");
            // The serde name (sessions, tickets) is the acr.
            assert_eq!(serde_json::to_value(probe).ok(), Some(serde_json::json!(probe.as_str())));
        }
        let mut acrs: Vec<&str> = Method::ALL.iter().map(|m| m.as_str()).collect();
        acrs.sort_unstable();
        acrs.dedup();
        assert_eq!(acrs.len(), Method::ALL.len(), "one acr per method");
        assert_eq!(Method::Hpki.login_url("https://c:8444/", "r1"), "https://c:8444/login/hpki?req=r1");
        assert_eq!(Method::Fido.login_url("https://c:8444", "r1"), "/login/fido?req=r1");
        assert!(Method::Jpki.is_card() && !Method::Fido.is_card());
    }
}
