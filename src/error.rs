//! The domain's error: one type for every operation of users, keys, signing,
//! auth and phones, grouped by what the caller can do about it (as the
//! keystore's errors are).
//!
//! The adapters map it in one place each: the HTTP service to a status code and
//! an OAuth/CSC error code (`server/error.rs`) or a page, the CLI to a message
//! and an exit code. Messages are for operators and client developers (English,
//! saying what to do next); the pages speak Japanese and choose their words
//! from the variant and its reason, never from the message. No message holds a
//! secret.

use crate::pki::trust::CardCertError;
use crate::seam::StoreError;

/// A domain operation that cannot be done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or asks for something impossible: fix it.
    #[error("{0}")]
    Invalid(String),
    /// A body or document is larger than the limit.
    #[error("the request body is larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The caller's credential is missing, unknown, expired or wrong:
    /// authenticate again.
    #[error("{1}")]
    Unauthenticated(Credential, String),
    /// Authenticated, but not allowed now: an operator (or a registration) can
    /// change that.
    #[error("{1}")]
    Forbidden(Forbidden, String),
    /// Nothing by that name.
    #[error("{1}")]
    NotFound(Missing, String),
    /// The current state does not allow it; the message says what to do first.
    #[error("{0}")]
    Conflict(String),
    /// Well-formed, but what it holds fails a check (a signature inside it
    /// does not verify); the message names what failed.
    #[error("{0}")]
    Unprocessable(String),
    /// Used up, expired, replaced or locked: start over, or ask for a new one.
    #[error("{1}")]
    Gone(Gone, String),
    /// The token or the store cannot be used now: retry later.
    #[error("{0}")]
    Unavailable(String),
    /// No time-stamp authority stamped the signature (each named, with why):
    /// retry later, or ask for a level without a time-stamp.
    #[error("the time-stamp authority did not stamp the signature: {0}")]
    TsaUnavailable(String),
    /// The certificates or CRLs a B-LT signature carries could not be had
    /// (a distribution point did not answer, no current CRL): retry later,
    /// or ask for a lower level.
    #[error("the validation data of the signature could not be gathered: {0}")]
    NoValidationData(String),
    /// A fault in inkan or in its data; nothing the caller can do. The details
    /// are logged, never shown to a client.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Which credential failed.
#[derive(Debug)]
pub enum Credential {
    /// A bearer token (an auth session).
    Bearer,
    /// A signing system's client ID and secret.
    Client,
    /// An authorization code (or its PKCE verifier, client, redirect URI).
    Grant,
    /// A registration code's password; this many tries are left.
    Password {
        /// Wrong passwords left before the code locks.
        left: u32,
    },
    /// A card certificate (HPKI or My Number card).
    Card(CardCertError),
    /// A phone's WebAuthn answer.
    Phone,
    /// The confirmation number a PC shows, typed on the phone.
    Confirmation,
}

/// Why an authenticated caller may not go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forbidden {
    /// The access token lacks the scope.
    Scope,
    /// The user is disabled.
    Disabled,
    /// The user has no active signing key.
    NoActiveKey,
    /// The user has no registered phone.
    NoDevice,
    /// The user's qualification (or certificate's hcRole) may not sign this
    /// kind of document.
    Role,
    /// The card or phone belongs to someone else, or the ID does not match.
    WrongUser,
    /// A registration code locked after too many wrong passwords.
    Locked,
    /// The phone's registration was retired: replaced by another phone, or
    /// removed by an operator (`removed`), at Unix ms `at`.
    Retired {
        /// Removed by an operator (else replaced by another phone).
        removed: bool,
        /// When (Unix ms).
        at: i64,
    },
}

/// What was not found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// A user ID.
    User,
    /// A key generation.
    Key,
    /// A signing system (client ID).
    Client,
    /// A card mapping or link.
    Card,
    /// A QR ticket (or its token).
    Ticket,
    /// A registration code.
    Code,
    /// A pending authorization request.
    Request,
    /// Anything else (a file, a device).
    Other,
}

/// Why something can no longer be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gone {
    /// Past its lifetime.
    Expired,
    /// Single use, and used.
    Used,
    /// Revoked, or replaced by a newer one.
    Revoked,
}

/// Results of domain operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An internal error from anything displayable (logged by the adapters).
    pub fn internal(e: impl std::fmt::Display) -> Error {
        Error::Internal(e.to_string())
    }

    /// Whether retrying later may help (token, store or TSA unavailable).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::TsaUnavailable(_) | Error::NoValidationData(_))
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => Error::Unavailable(e.to_string()),
            // A uniqueness rule the domain did not check first: a fault, not
            // the caller's (the domain checks the clashes it expects).
            StoreError::TooNew { .. } => Error::Unavailable(e.to_string()),
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<inkan_keystore::Error> for Error {
    fn from(e: inkan_keystore::Error) -> Self {
        use inkan_keystore::{Error as K, ReturnValue};
        match e {
            K::TokenUnavailable { .. } | K::PoolExhausted { .. } | K::LoginFailed { .. } => {
                Error::Unavailable(format!("token: {e}"))
            }
            K::KeyNotFound { .. } => Error::Unavailable(format!("key missing from the token: {e}")),
            // The stored key does not match its record: data, not the caller.
            K::KeyRefused { .. } => Error::Internal(format!("token: {e}")),
            K::InvalidInput(m) => Error::Invalid(m),
            K::MechanismUnsupported { .. } => Error::Invalid(format!("the key cannot do this: {e}")),
            K::Pkcs11 { rv, .. }
                if [ReturnValue::DEVICE_REMOVED, ReturnValue::TOKEN_NOT_PRESENT, ReturnValue::GENERAL_ERROR]
                    .contains(&rv) =>
            {
                Error::Unavailable(format!("token: {e}"))
            }
            other => Error::Internal(format!("token: {other}")),
        }
    }
}

impl From<crate::pki::PkiError> for Error {
    fn from(e: crate::pki::PkiError) -> Self {
        Error::Invalid(e.0)
    }
}
