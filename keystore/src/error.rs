//! Errors grouped by what the caller can do about them.

use cryptoki::error::{Error as CkError, RvError};

/// A keystore error. The variants say what the caller can do:
///
/// - [`Error::TokenUnavailable`]: retry later, alert an operator (HTTP 503);
/// - [`Error::LoginFailed`]: fix the PIN in the configuration;
/// - [`Error::KeyNotFound`]: the key was never generated or was destroyed;
/// - [`Error::KeyRefused`]: a wrapped key's MAC does not match: never use it, alert;
/// - [`Error::MechanismUnsupported`]: the token cannot do this algorithm;
/// - [`Error::PoolExhausted`]: every session is busy: back off and retry;
/// - [`Error::InvalidInput`]: the caller passed something malformed;
/// - [`Error::Pkcs11`]: any other return value ([`ReturnValue`]), tagged with the C function;
/// - [`Error::Interface`]: the PKCS#11 binding failed before or after the call.
///
/// No message ever contains a PIN.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The module could not be loaded, the token is missing or does not answer.
    #[error("token unavailable: {reason}")]
    TokenUnavailable {
        /// What went wrong, with the module path or token label.
        reason: String,
    },
    /// The token refused the PIN (wrong, locked, or not initialised).
    #[error("token login failed: {reason}")]
    LoginFailed {
        /// The token's answer, e.g. `CKR_PIN_INCORRECT`.
        reason: String,
    },
    /// No private key with this reference is in the token.
    #[error("key not found in the token (CKA_ID {id})")]
    KeyNotFound {
        /// The key's CKA_ID in hex.
        id: String,
    },
    /// The token does not support the mechanism or key type.
    #[error("mechanism not supported by the token: {mechanism}")]
    MechanismUnsupported {
        /// The mechanism, e.g. `CKM_RSA_PKCS_PSS`.
        mechanism: String,
    },
    /// No session became free in time.
    #[error("all {size} token sessions are busy (waited {waited_ms} ms)")]
    PoolExhausted {
        /// Number of sessions in the pool.
        size: usize,
        /// How long the caller waited.
        waited_ms: u64,
    },
    /// A wrapped key was refused before use: its MAC does not match its blob,
    /// public key and binding (copied into another record, or altered).
    #[error("wrapped key refused: {reason}")]
    KeyRefused {
        /// What did not match.
        reason: String,
    },
    /// The input cannot be signed as asked (e.g. a digest of another algorithm than the scheme's).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Any other PKCS#11 failure.
    #[error("PKCS#11 {function} returned {rv}")]
    Pkcs11 {
        /// The C function, e.g. `C_Sign`.
        function: String,
        /// The return value, e.g. [`ReturnValue::DEVICE_ERROR`].
        rv: ReturnValue,
    },
    /// The binding to the module failed around a call (a value it could not
    /// convert, a function the module lacks): no return value to act on.
    #[error("PKCS#11 interface: {reason}")]
    Interface {
        /// What failed.
        reason: String,
    },
}

/// A PKCS#11 return value (`CKR_...`): compared as a value, shown by its
/// name in the standard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReturnValue(RvError);

impl ReturnValue {
    /// `CKR_GENERAL_ERROR`
    pub const GENERAL_ERROR: ReturnValue = ReturnValue(RvError::GeneralError);
    /// `CKR_DEVICE_ERROR`
    pub const DEVICE_ERROR: ReturnValue = ReturnValue(RvError::DeviceError);
    /// `CKR_DEVICE_REMOVED`
    pub const DEVICE_REMOVED: ReturnValue = ReturnValue(RvError::DeviceRemoved);
    /// `CKR_TOKEN_NOT_PRESENT`
    pub const TOKEN_NOT_PRESENT: ReturnValue = ReturnValue(RvError::TokenNotPresent);
    /// `CKR_CRYPTOKI_NOT_INITIALIZED`
    pub const CRYPTOKI_NOT_INITIALIZED: ReturnValue = ReturnValue(RvError::CryptokiNotInitialized);
    /// `CKR_USER_NOT_LOGGED_IN`
    pub const USER_NOT_LOGGED_IN: ReturnValue = ReturnValue(RvError::UserNotLoggedIn);
    /// `CKR_OBJECT_HANDLE_INVALID`
    pub const OBJECT_HANDLE_INVALID: ReturnValue = ReturnValue(RvError::ObjectHandleInvalid);
    /// `CKR_KEY_HANDLE_INVALID`
    pub const KEY_HANDLE_INVALID: ReturnValue = ReturnValue(RvError::KeyHandleInvalid);
    /// `CKR_SESSION_HANDLE_INVALID`
    pub const SESSION_HANDLE_INVALID: ReturnValue = ReturnValue(RvError::SessionHandleInvalid);
    /// `CKR_SESSION_CLOSED`
    pub const SESSION_CLOSED: ReturnValue = ReturnValue(RvError::SessionClosed);
    /// `CKR_KEY_TYPE_INCONSISTENT`
    pub const KEY_TYPE_INCONSISTENT: ReturnValue = ReturnValue(RvError::KeyTypeInconsistent);
    /// `CKR_KEY_FUNCTION_NOT_PERMITTED`
    pub const KEY_FUNCTION_NOT_PERMITTED: ReturnValue = ReturnValue(RvError::KeyFunctionNotPermitted);

    /// The name in the standard (`CKR_USER_NOT_LOGGED_IN`).
    pub fn name(self) -> String {
        rv_name(self.0)
    }
}

impl std::fmt::Display for ReturnValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// Result with the keystore's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Whether the failure means the token (or its module) is not usable right now.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::TokenUnavailable { .. } | Error::PoolExhausted { .. })
    }

    /// Whether the token looks gone, so that re-initialising the module may help.
    pub(crate) fn needs_reset(&self) -> bool {
        match self {
            Error::TokenUnavailable { .. } => true,
            Error::Pkcs11 { rv, .. } => RESET.contains(rv),
            _ => false,
        }
    }

    /// Whether the session or the cached handles are stale and a re-login and a
    /// fresh handle lookup may help.
    pub(crate) fn is_stale(&self) -> bool {
        matches!(self, Error::Pkcs11 { rv, .. } if STALE.contains(rv))
    }

    /// [`Error::is_stale`], or a general error, which some modules answer for
    /// a handle used after a logout elsewhere (kryoptic): worth one retry on
    /// a fresh session before the module is reset.
    pub(crate) fn may_be_stale(&self) -> bool {
        self.is_stale() || matches!(self, Error::TokenUnavailable { reason } if reason.ends_with("CKR_GENERAL_ERROR"))
    }
}

const STALE: &[ReturnValue] = &[
    ReturnValue::USER_NOT_LOGGED_IN,
    ReturnValue::OBJECT_HANDLE_INVALID,
    ReturnValue::KEY_HANDLE_INVALID,
    ReturnValue::SESSION_HANDLE_INVALID,
    ReturnValue::SESSION_CLOSED,
    ReturnValue::DEVICE_REMOVED,
    ReturnValue::TOKEN_NOT_PRESENT,
    ReturnValue::CRYPTOKI_NOT_INITIALIZED,
];

const RESET: &[ReturnValue] = &[
    ReturnValue::GENERAL_ERROR,
    ReturnValue::DEVICE_ERROR,
    ReturnValue::DEVICE_REMOVED,
    ReturnValue::TOKEN_NOT_PRESENT,
    ReturnValue::CRYPTOKI_NOT_INITIALIZED,
];

/// Name of a PKCS#11 return value as in the standard (`CKR_...`).
pub(crate) fn rv_name(rv: RvError) -> String {
    let debug = format!("{rv:?}");
    let mut name = String::from("CKR_");
    for (i, ch) in debug.chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(ch.to_ascii_uppercase());
    }
    name
}

/// Converts a cryptoki error into the group the caller can act on.
pub(crate) fn from_cryptoki(err: CkError) -> Error {
    match err {
        CkError::LibraryLoading(e) => {
            Error::TokenUnavailable { reason: format!("cannot load the PKCS#11 module: {e}") }
        }
        CkError::Pkcs11(rv, function) => {
            let name = rv_name(rv);
            let function = format!("C_{function:?}");
            match rv {
                RvError::PinIncorrect
                | RvError::PinLocked
                | RvError::PinExpired
                | RvError::PinInvalid
                | RvError::PinLenRange
                | RvError::UserPinNotInitialized => Error::LoginFailed { reason: name },
                RvError::MechanismInvalid | RvError::MechanismParamInvalid | RvError::KeyTypeInconsistent => {
                    Error::MechanismUnsupported { mechanism: format!("{name} from {function}") }
                }
                RvError::DeviceError
                | RvError::DeviceMemory
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::GeneralError
                | RvError::CryptokiNotInitialized => {
                    Error::TokenUnavailable { reason: format!("{function} returned {name}") }
                }
                _ => Error::Pkcs11 { function, rv: ReturnValue(rv) },
            }
        }
        other => Error::Interface { reason: other.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rv_names_follow_the_standard() {
        assert_eq!(rv_name(RvError::UserNotLoggedIn), "CKR_USER_NOT_LOGGED_IN");
        assert_eq!(rv_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
    }

    #[test]
    fn return_values_compare_as_values_and_show_their_names() {
        let err = from_cryptoki(CkError::Pkcs11(RvError::SessionClosed, cryptoki::context::Function::Sign));
        assert!(matches!(&err, Error::Pkcs11 { rv, .. } if *rv == ReturnValue::SESSION_CLOSED), "{err:?}");
        assert!(err.is_stale() && !err.needs_reset());
        assert_eq!(err.to_string(), "PKCS#11 C_Sign returned CKR_SESSION_CLOSED");
        assert_eq!(ReturnValue::KEY_FUNCTION_NOT_PERMITTED.to_string(), "CKR_KEY_FUNCTION_NOT_PERMITTED");
    }

    #[test]
    fn wrong_pin_is_a_login_failure() {
        let err = from_cryptoki(CkError::Pkcs11(RvError::PinIncorrect, cryptoki::context::Function::Login));
        assert!(matches!(err, Error::LoginFailed { .. }), "{err:?}");
    }
}
