//! Keys kept outside the token: the stored form of a wrapped key, and what
//! its MAC covers.
//!
//! A wrapped key's private half exists in the token only as a session object
//! while it is cached; at rest it is a blob made by `C_WrapKey` with
//! `CKM_AES_KEY_WRAP_PAD` under a key-encryption key (KEK) that never leaves
//! the token. Next to the KEK the token holds a MAC key (HMAC-SHA-256, also
//! non-extractable) of the same index: the MAC binds the blob to the public
//! key and to the caller's binding (inkan: the user and the key generation),
//! so a blob copied into another user's record, or altered, is refused before
//! the token is asked to unwrap it.
//!
//! Stored form (what the caller keeps, opaque to it):
//!
//! ```text
//! MAGIC (8) | key type (1: RSA, 2: EC) | KEK index (u32 BE) | MAC (32) | blob
//! ```

use crate::error::{Error, Result};

/// The first bytes of a wrapped key's stored form. A token object's `CKA_ID`
/// made by inkan never starts with them (see [`is_wrapped`]).
pub(crate) const MAGIC: &[u8; 8] = b"inkanWK1";

/// Domain separation of the MAC input.
const MAC_CONTEXT: &[u8] = b"inkan-wrapped-key-v1\0";

/// Length of an HMAC-SHA-256.
pub(crate) const MAC_LEN: usize = 32;

/// `CKA_LABEL` of the KEKs and MAC keys.
pub(crate) const WRAPPING_LABEL: &str = "inkan:kek";

/// `CKA_ID` of the KEK with this index.
pub(crate) fn kek_id(index: u32) -> Vec<u8> {
    format!("inkan-kek-{index}").into_bytes()
}

/// `CKA_ID` of the MAC key with this index.
pub(crate) fn mac_key_id(index: u32) -> Vec<u8> {
    format!("inkan-mac-{index}").into_bytes()
}

/// The index of a KEK or MAC key from its `CKA_ID`.
pub(crate) fn index_of(id: &[u8], prefix: &str) -> Option<u32> {
    std::str::from_utf8(id).ok()?.strip_prefix(prefix)?.parse().ok()
}

/// Whether stored key bytes are a wrapped key (else a token object's `CKA_ID`).
pub(crate) fn is_wrapped(stored: &[u8]) -> bool {
    stored.starts_with(MAGIC)
}

/// The private key's type, recorded so that unwrapping can name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WrappedType {
    Rsa,
    Ec,
}

impl WrappedType {
    fn code(self) -> u8 {
        match self {
            WrappedType::Rsa => 1,
            WrappedType::Ec => 2,
        }
    }
}

/// A wrapped key's stored form, parsed.
#[derive(Debug)]
pub(crate) struct Wrapped<'a> {
    pub(crate) key_type: WrappedType,
    pub(crate) kek_index: u32,
    pub(crate) mac: &'a [u8],
    pub(crate) blob: &'a [u8],
}

const HEADER: usize = MAGIC.len() + 1 + 4;

impl<'a> Wrapped<'a> {
    /// Parses a stored form; anything malformed is refused as altered.
    pub(crate) fn parse(stored: &'a [u8]) -> Result<Wrapped<'a>> {
        let refused = |reason: &str| Error::KeyRefused { reason: reason.to_owned() };
        if !is_wrapped(stored) || stored.len() < HEADER + MAC_LEN + 16 {
            return Err(refused("the stored key is not a complete wrapped key"));
        }
        let key_type = match stored[MAGIC.len()] {
            1 => WrappedType::Rsa,
            2 => WrappedType::Ec,
            _ => return Err(refused("the stored key names an unknown key type")),
        };
        let mut index = [0u8; 4];
        index.copy_from_slice(&stored[MAGIC.len() + 1..HEADER]);
        Ok(Wrapped {
            key_type,
            kek_index: u32::from_be_bytes(index),
            mac: &stored[HEADER..HEADER + MAC_LEN],
            blob: &stored[HEADER + MAC_LEN..],
        })
    }

    /// The stored form of a blob with its MAC.
    pub(crate) fn encode(key_type: WrappedType, kek_index: u32, mac: &[u8], blob: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + mac.len() + blob.len());
        out.extend_from_slice(MAGIC);
        out.push(key_type.code());
        out.extend_from_slice(&kek_index.to_be_bytes());
        out.extend_from_slice(mac);
        out.extend_from_slice(blob);
        out
    }
}

/// What the MAC covers: the key type, the KEK, the blob, the public key and
/// the caller's binding, each length-prefixed.
pub(crate) fn mac_input(
    key_type: WrappedType,
    kek_index: u32,
    blob: &[u8],
    public_key: &[u8],
    binding: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAC_CONTEXT.len() + 5 + 12 + blob.len() + public_key.len() + binding.len());
    out.extend_from_slice(MAC_CONTEXT);
    out.push(key_type.code());
    out.extend_from_slice(&kek_index.to_be_bytes());
    for part in [blob, public_key, binding] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// Compares two MACs in time independent of where they differ.
pub(crate) fn macs_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_round_trips_and_refuses_the_malformed() {
        let mac = [7u8; MAC_LEN];
        let blob = [9u8; 40];
        let stored = Wrapped::encode(WrappedType::Ec, 3, &mac, &blob);
        let parsed = Wrapped::parse(&stored).expect("parse");
        assert_eq!(parsed.key_type, WrappedType::Ec);
        assert_eq!(parsed.kek_index, 3);
        assert_eq!(parsed.mac, mac);
        assert_eq!(parsed.blob, blob);
        assert!(Wrapped::parse(&stored[..HEADER + MAC_LEN]).is_err(), "truncated");
        let mut bad_type = stored.clone();
        bad_type[MAGIC.len()] = 9;
        assert!(Wrapped::parse(&bad_type).is_err(), "unknown type");
        assert!(Wrapped::parse(b"0123456789abcdef").is_err(), "an object id");
    }

    #[test]
    fn the_mac_input_separates_its_parts() {
        let a = mac_input(WrappedType::Rsa, 1, b"ab", b"c", b"u1");
        let b = mac_input(WrappedType::Rsa, 1, b"a", b"bc", b"u1");
        assert_ne!(a, b, "moving a byte between parts changes the input");
        assert_ne!(
            mac_input(WrappedType::Rsa, 1, b"x", b"y", b"u1"),
            mac_input(WrappedType::Rsa, 2, b"x", b"y", b"u1")
        );
        assert_ne!(
            mac_input(WrappedType::Rsa, 1, b"x", b"y", b"u1"),
            mac_input(WrappedType::Rsa, 1, b"x", b"y", b"u2")
        );
    }

    #[test]
    fn kek_ids_carry_their_index() {
        assert_eq!(index_of(&kek_id(12), "inkan-kek-"), Some(12));
        assert_eq!(index_of(&mac_key_id(4), "inkan-mac-"), Some(4));
        assert_eq!(index_of(b"inkan-kek-x", "inkan-kek-"), None);
        assert!(macs_equal(b"same", b"same"));
        assert!(!macs_equal(b"same", b"sane"));
        assert!(!macs_equal(b"same", b"sam"));
    }
}
