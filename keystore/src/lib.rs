//! inkan's signing core: each user's second key lives in a PKCS#11 token.
//!
//! This crate knows PKCS#11 and nothing about HTTP or SQL. It loads a module by
//! path, finds the token by its label (never by slot number: SoftHSM renumbers
//! slots), logs in once per process and keeps a pool of logged-in sessions, one
//! per worker (a PKCS#11 session must not be used by two threads at once).
//!
//! Callers name keys with an opaque [`KeyRef`] (the key's `CKA_ID`), never with an
//! object handle or a label: object handles are resolved once and cached, so the
//! sign path never calls `C_FindObjects` (SoftHSM scans every object on each
//! search, 0.4 s at 10k key pairs). When a handle goes stale (a logout elsewhere,
//! a token re-insert) the session is dropped, the cache cleared, the keystore logs
//! in again and the operation is retried once.
//!
//! ```no_run
//! use inkan_keystore::{Digest, DigestAlgorithm, Keystore, KeystoreConfig, KeyAlgorithm, KeyRef, Pin, SignatureScheme};
//! # fn main() -> Result<(), inkan_keystore::Error> {
//! let ks = Keystore::open(KeystoreConfig::new("/usr/lib/softhsm/libsofthsm2.so", "inkan", Pin::new("1234")))?;
//! let key = KeyRef::from_id(b"example-key".to_vec());
//! let generated = ks.generate_key_pair(KeyAlgorithm::Rsa2048, &key, "inkan:999001-jpa")?;
//! let digest = Digest::of(DigestAlgorithm::Sha256, b"a document");
//! let signature = ks.sign_digest(&key, SignatureScheme::RsaPkcs1v15(DigestAlgorithm::Sha256), &digest)?;
//! # let _ = (generated, signature); Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod algorithm;
mod csr;
mod error;
mod keystore;
mod lockfile;
mod pin;
mod pool;
mod public_key;
mod token;
mod wrapped;

pub use algorithm::{Digest, DigestAlgorithm, KeyAlgorithm, SignatureScheme, WrongLength};
pub use csr::{build_csr, pss_params_fit, signature_algorithm};
pub use error::{Error, Result, ReturnValue};
pub use keystore::{
    create_trusted_kek, CacheStats, DataObject, GeneratedKey, KekInfo, KekKind, KeyProtection, KeyRef, KeyStorage,
    Keystore, KeystoreConfig, SignTime, WrappingReady, DEFAULT_CACHE_SIZE,
};
pub use lockfile::{hold_token_files, TokenFilesHeld};
pub use pin::Pin;
pub use token::{init_token, pin_limits, PinLimits, TokenInit};
