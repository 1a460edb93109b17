//! The audit log's seal key: an HMAC-SHA-256 key that never leaves the token.
//! inkan MACs the head of its audit chain with it, so that whoever can write
//! the database, but cannot use the token, cannot recompute the chain.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::Keystore;
use crate::error::{from_cryptoki, Error, Result};

/// The seal key's `CKA_ID` and label.
const SEAL_KEY: &str = "inkan-audit-seal";

impl Keystore {
    /// The seal key, if the token has one (the caller holds the token lock).
    fn find_seal_key(session: &Session) -> Result<Option<ObjectHandle>> {
        let found = session
            .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Id(SEAL_KEY.as_bytes().to_vec())])
            .map_err(from_cryptoki)?;
        Ok(found.first().copied())
    }

    /// Makes the audit seal key unless the token has one; returns whether it
    /// was made. A 32-byte generic secret: sensitive, never extractable, not
    /// modifiable, `CKM_SHA256_HMAC` only. Call it where nothing else makes
    /// one at the same moment (`inkan init`, or under the database's audit
    /// lock): two would be two keys of one name.
    pub fn prepare_seal_key(&self) -> Result<bool> {
        self.with_session(|session| {
            let _writing = self.lock.exclusive()?;
            if Self::find_seal_key(session)?.is_some() {
                return Ok(false);
            }
            let template = super::kek::hmac_key_template(SEAL_KEY.as_bytes().to_vec(), SEAL_KEY.as_bytes());
            session.generate_key(&Mechanism::GenericSecretKeyGen, &template).map_err(from_cryptoki)?;
            Ok(true)
        })
    }

    /// The HMAC-SHA-256 of each input under the audit seal key, in one
    /// session ([`Error::KeyNotFound`] when the token has no seal key).
    pub fn seal(&self, inputs: &[Vec<u8>]) -> Result<Vec<Vec<u8>>> {
        self.with_session(|session| {
            let key = {
                let _reading = self.lock.shared()?;
                Self::find_seal_key(session)?
            }
            .ok_or_else(|| Error::KeyNotFound { id: SEAL_KEY.bytes().map(|b| format!("{b:02x}")).collect() })?;
            inputs.iter().map(|input| session.sign(&Mechanism::Sha256Hmac, key, input).map_err(from_cryptoki)).collect()
        })
    }
}
