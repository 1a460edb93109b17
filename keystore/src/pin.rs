//! A PIN that never reaches a log.

use std::fmt;
use zeroize::Zeroizing;

/// A token PIN (user or SO). `Debug` and `Display` print `***`; the bytes are
/// wiped from memory when the value is dropped.
#[derive(Clone)]
pub struct Pin(Zeroizing<String>);

impl Pin {
    /// Wraps a PIN.
    pub fn new(pin: impl Into<String>) -> Self {
        Pin(Zeroizing::new(pin.into()))
    }

    /// The PIN itself, for the one place that hands it to the token.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub(crate) fn to_auth_pin(&self) -> cryptoki::types::AuthPin {
        cryptoki::types::AuthPin::from(self.0.as_str())
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(***)")
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
