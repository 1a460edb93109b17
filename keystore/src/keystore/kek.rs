//! Key-encryption keys (KEKs): the two kinds, making them, and wrapping a
//! key again under a newer one (a KEK rotation).
//!
//! - A **strict** KEK (the default, `inkan init`) is a private token object
//!   whose `CKA_UNWRAP_TEMPLATE` makes every key it unwraps sensitive and
//!   non-extractable: nobody, with or without the user PIN, can read a key
//!   it unwrapped, and nobody can wrap one again, so its keys can never move
//!   to another KEK (a new KEK means new user keys).
//! - A **trusted** KEK is made by the security officer with `CKA_TRUSTED`;
//!   its unwrap template makes every key sensitive and `CKA_WRAP_WITH_TRUSTED`,
//!   so a key it unwraps may be wrapped again, but only under a key the
//!   security officer trusted: another KEK. That is what a rotation does. A
//!   PKCS#11 security officer can make public objects only, and SoftHSM keeps
//!   a public object's value unencrypted in its token directory: on SoftHSM a
//!   trusted KEK is only as safe as that directory (use it with an HSM).

use std::path::Path;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::UserType;

use super::{find_slot, in_module, load_module, unwrap_template, KeyRef, Keystore, WrappingReady};
use crate::error::{from_cryptoki, Error, Result};
use crate::lockfile::TokenLock;
use crate::pin::Pin;
use crate::wrapped;

/// How a KEK lets the keys it unwraps be used ([`KekInfo::kind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KekKind {
    /// Keys it unwraps can never be wrapped again (the default).
    Strict,
    /// Trusted by the token: keys it unwraps can be wrapped again under
    /// trusted keys only (a KEK rotation).
    Trusted,
}

impl KekKind {
    /// `strict` or `trusted`.
    pub fn as_str(self) -> &'static str {
        match self {
            KekKind::Strict => "strict",
            KekKind::Trusted => "trusted",
        }
    }
}

/// A KEK in the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KekInfo {
    /// Its index (`CKA_ID inkan-kek-<index>`); new keys are wrapped under the highest.
    pub index: u32,
    /// Strict or trusted.
    pub kind: KekKind,
    /// Whether the token holds its MAC key too (a KEK made by a killed
    /// command may lack it until [`Keystore::prepare_wrapping`] runs).
    pub has_mac_key: bool,
}

/// The AES key-wrap mechanisms for private keys of a token offering
/// `offered`, the preferred first: RFC 5649 is `CKM_AES_KEY_WRAP_KWP` in
/// PKCS#11 3.0 (kryoptic) and `CKM_AES_KEY_WRAP_PAD` in SoftHSM 2.6.
pub(super) fn wrap_mechanisms(offered: &[cryptoki_sys::CK_MECHANISM_TYPE]) -> [cryptoki_sys::CK_MECHANISM_TYPE; 2] {
    use inkan_pkcs11_ffi::{CKM_AES_KEY_WRAP_KWP as KWP, CKM_AES_KEY_WRAP_PAD as PAD};
    if offered.contains(&KWP) || !offered.contains(&PAD) {
        [KWP, PAD]
    } else {
        [PAD, KWP]
    }
}

/// The attributes of KEK `index`: AES-256, sensitive, never extractable, not
/// modifiable, wrap and unwrap only. A trusted one is public (the security
/// officer can make nothing else) and `CKA_TRUSTED`.
fn kek_template(index: u32, kind: KekKind) -> Vec<Attribute> {
    let trusted = kind == KekKind::Trusted;
    let mut template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
        Attribute::Private(!trusted),
        Attribute::Id(wrapped::kek_id(index)),
        Attribute::Label(wrapped::WRAPPING_LABEL.as_bytes().to_vec()),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(false),
        Attribute::ValueLen(32.into()),
        Attribute::Wrap(true),
        Attribute::Unwrap(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::Copyable(false),
    ];
    if trusted {
        template.push(Attribute::Trusted(true));
    }
    template
}

/// What a KEK forces on every key it unwraps. Both kinds: a sensitive
/// private key (never a secret key: a blob unwrapped as a generic secret
/// could feed a key derivation), that derives nothing. Strict: never
/// extractable. Trusted: private (so that unwrapping needs a login even under
/// a public KEK), extractable at most under trusted keys.
fn kek_unwrap_template(kind: KekKind) -> Vec<Attribute> {
    let mut template =
        vec![Attribute::Class(ObjectClass::PRIVATE_KEY), Attribute::Sensitive(true), Attribute::Derive(false)];
    match kind {
        KekKind::Strict => template.push(Attribute::Extractable(false)),
        KekKind::Trusted => template.extend([Attribute::Private(true), Attribute::WrapWithTrusted(true)]),
    }
    template
}

/// Makes trusted KEK `index` in the token labelled `label`, as the security
/// officer (in a session of its own: call it while no keystore of this
/// process is logged in, as the token allows one kind of login at a time).
/// Returns false if the token holds that KEK already. Its MAC key is made by
/// the next [`Keystore::prepare_wrapping`].
pub fn create_trusted_kek(
    module: &Path,
    label: &str,
    so_pin: &Pin,
    lock_file: Option<&Path>,
    index: u32,
) -> Result<bool> {
    let _writing = TokenLock::new(lock_file.map(Path::to_path_buf)).exclusive()?;
    let ctx = load_module(module)?;
    let slot = find_slot(&ctx, module, label)?;
    let session = ctx.open_rw_session(slot).map_err(|e| in_module(from_cryptoki(e), module, "C_OpenSession"))?;
    session.login(UserType::So, Some(&so_pin.to_auth_pin())).map_err(|e| match from_cryptoki(e) {
        Error::LoginFailed { reason } => Error::LoginFailed {
            reason: format!("the token refused the SO PIN ({reason}): give it as INKAN_TOKEN_SO_PIN"),
        },
        other => in_module(other, module, "C_Login (security officer)"),
    })?;
    let made = (|| {
        let existing = session
            .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Id(wrapped::kek_id(index))])
            .map_err(from_cryptoki)?;
        if !existing.is_empty() {
            return Ok(false);
        }
        let ext = inkan_pkcs11_ffi::Module::open(module)
            .map_err(|e| in_module(from_cryptoki(e), module, "C_GetFunctionList"))?;
        let offered = ext.mechanisms(slot).map_err(from_cryptoki)?;
        let allowed = [wrap_mechanisms(&offered)[0]];
        let kek = ext
            .generate_key_with_unwrap_template(
                &session,
                &Mechanism::AesKeyGen,
                &kek_template(index, KekKind::Trusted),
                &allowed,
                &kek_unwrap_template(KekKind::Trusted),
            )
            .map_err(|e| in_module(from_cryptoki(e), module, "C_GenerateKey (trusted KEK)"))?;
        // Some modules accept CKA_TRUSTED in the template and ignore it.
        let trusted = session.get_attributes(kek, &[AttributeType::Trusted]).map_err(from_cryptoki)?;
        if !trusted.contains(&Attribute::Trusted(true)) {
            let left = match session.destroy_object(kek) {
                Ok(()) => String::new(),
                Err(e) => format!(
                    "; it could not be removed ({}): remove the object with CKA_ID inkan-kek-{index} with the \
                     module's own tool before anything else",
                    from_cryptoki(e)
                ),
            };
            return Err(Error::TokenUnavailable {
                reason: format!(
                    "PKCS#11 module {} made the trusted KEK but did not mark it trusted (CKA_TRUSTED): \
                     this token cannot rotate KEKs, keep [token] kek = \"strict\"{left}",
                    module.display()
                ),
            });
        }
        Ok(true)
    })();
    if let Err(e) = session.logout() {
        // The session closes right after; its login goes with it.
        let _ = from_cryptoki(e);
    }
    made
}

/// The template of an HMAC key made in the token: a 32-byte generic secret,
/// sensitive, never extractable, not modifiable, `CKM_SHA256_HMAC` only.
pub(super) fn hmac_key_template(id: Vec<u8>, label: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Id(id),
        Attribute::Label(label.to_vec()),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(false),
        Attribute::Derive(false),
        Attribute::ValueLen(32.into()),
        Attribute::Sign(true),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::AllowedMechanisms(vec![cryptoki::mechanism::MechanismType::SHA256_HMAC]),
    ]
}

impl Keystore {
    /// Makes sure the token's newest KEK has its MAC key, and that there is
    /// a KEK at all (`inkan init`): if there is none, makes strict KEK 1.
    /// Idempotent; a MAC key left alone by a killed run is reused. (A trusted
    /// KEK is made first by [`create_trusted_kek`].)
    ///
    /// The MAC key is a 32-byte generic secret, sensitive, never extractable,
    /// allowed `CKM_SHA256_HMAC` only.
    pub fn prepare_wrapping(&self) -> Result<WrappingReady> {
        self.with_session(|session| {
            let _writing = self.lock.exclusive()?;
            self.forget_newest_kek();
            let (index, created) = match self.newest_kek(session)? {
                Some(index) => (index, false),
                None => (1, true),
            };
            let has = |id: Vec<u8>| -> Result<bool> {
                Ok(!session
                    .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Id(id)])
                    .map_err(from_cryptoki)?
                    .is_empty())
            };
            if !has(wrapped::mac_key_id(index))? {
                let mac = hmac_key_template(wrapped::mac_key_id(index), wrapped::WRAPPING_LABEL.as_bytes());
                session.generate_key(&Mechanism::GenericSecretKeyGen, &mac).map_err(from_cryptoki)?;
            }
            if created {
                let allowed = [self.wrap_mechanisms()?[0]];
                self.ext()?
                    .generate_key_with_unwrap_template(
                        session,
                        &Mechanism::AesKeyGen,
                        &kek_template(index, KekKind::Strict),
                        &allowed,
                        &kek_unwrap_template(KekKind::Strict),
                    )
                    .map_err(from_cryptoki)?;
            }
            self.forget_newest_kek();
            Ok(WrappingReady { kek_index: index, created })
        })
    }

    /// The KEKs in the token, oldest first.
    pub fn keks(&self) -> Result<Vec<KekInfo>> {
        self.with_session(|session| self.list_keks(session))
    }

    /// The KEKs and MAC keys in the token, found by their label, oldest first.
    pub(super) fn list_keks(&self, session: &cryptoki::session::Session) -> Result<Vec<KekInfo>> {
        let _reading = self.lock.shared()?;
        let found = session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(wrapped::WRAPPING_LABEL.as_bytes().to_vec()),
            ])
            .map_err(from_cryptoki)?;
        let (mut keks, mut macs) = (Vec::new(), Vec::new());
        for handle in found {
            let attrs =
                session.get_attributes(handle, &[AttributeType::Id, AttributeType::Trusted]).map_err(from_cryptoki)?;
            let id = attrs.iter().find_map(|a| if let Attribute::Id(id) = a { Some(id.clone()) } else { None });
            let trusted = attrs.iter().any(|a| matches!(a, Attribute::Trusted(true)));
            let Some(id) = id else { continue };
            if let Some(index) = wrapped::index_of(&id, "inkan-kek-") {
                keks.push((index, if trusted { KekKind::Trusted } else { KekKind::Strict }));
            } else if let Some(index) = wrapped::index_of(&id, "inkan-mac-") {
                macs.push(index);
            }
        }
        keks.sort_unstable_by_key(|(index, _)| *index);
        Ok(keks.into_iter().map(|(index, kind)| KekInfo { index, kind, has_mac_key: macs.contains(&index) }).collect())
    }

    /// Wraps a wrapped key again under KEK `to` (a KEK rotation): checks its
    /// MAC, unwraps it into a session object, wraps it under `to`, destroys
    /// the object and MACs the new blob with `to`'s MAC key, for the same
    /// public key and binding. A key under `to` already comes back as it is.
    /// Refused: a key whose MAC does not match ([`Error::KeyRefused`]), and a
    /// key under a strict KEK or a target that is not trusted
    /// ([`Error::InvalidInput`], saying what to do instead).
    pub fn rewrap(&self, key: &KeyRef, to: u32) -> Result<KeyRef> {
        let parsed = wrapped::Wrapped::parse(key.stored())?;
        if parsed.kek_index == to {
            return Ok(key.clone());
        }
        self.with_session(|session| {
            let from = self.wrapping_keys(session, parsed.kek_index)?;
            let target = self.wrapping_keys(session, to)?;
            if !target.trusted {
                return Err(Error::InvalidInput(format!(
                    "key-encryption key {to} is not trusted by the token: no key can be wrapped under it again"
                )));
            }
            if !from.trusted {
                return Err(Error::InvalidInput(format!(
                    "wrapped key {} is under strict key-encryption key {}, which never lets a key out again: \
                     rotate this user's key instead (inkan key rotate)",
                    key.hex(),
                    parsed.kek_index
                )));
            }
            self.check_mac(session, key, &parsed, from.mac)?;
            let template = unwrap_template(parsed.key_type, true, true);
            let handle = self.with_wrap_mechanism(|m| {
                self.ext()?.unwrap_key(session, m, from.kek, parsed.blob, &template).map_err(from_cryptoki)
            })?;
            let blob = self
                .with_wrap_mechanism(|m| self.ext()?.wrap_key(session, m, target.kek, handle).map_err(from_cryptoki));
            if let Err(e) = session.destroy_object(handle) {
                // A session object: it goes with the session at the latest.
                let _ = from_cryptoki(e);
            }
            let blob = blob?;
            let input = wrapped::mac_input(parsed.key_type, to, &blob, &key.0.public_key, &key.0.binding);
            let mac = session.sign(&Mechanism::Sha256Hmac, target.mac, &input).map_err(from_cryptoki)?;
            let stored = wrapped::Wrapped::encode(parsed.key_type, to, &mac, &blob);
            Ok(KeyRef::new(stored, key.0.binding.clone(), key.0.public_key.clone()))
        })
    }

    /// Checks that the token reserves `CKA_TRUSTED` to its security officer,
    /// as PKCS#11 says: tries to make a trusted session key as the user. A
    /// module that lets the user (kryoptic 1.5.4 does) would let anyone with
    /// the user PIN wrap a key unwrapped by a trusted KEK under a key of their
    /// own, and read it: then trusted KEKs must not be used
    /// ([`Error::MechanismUnsupported`]).
    pub fn check_trust_reserved(&self) -> Result<()> {
        self.with_session(|session| {
            let refused = |e: &CkError| {
                matches!(
                    e,
                    CkError::Pkcs11(
                        RvError::AttributeReadOnly
                            | RvError::AttributeValueInvalid
                            | RvError::AttributeTypeInvalid
                            | RvError::TemplateInconsistent
                            | RvError::ActionProhibited
                            | RvError::UserNotLoggedIn,
                        _,
                    )
                )
            };
            let common = [
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
                Attribute::Wrap(true),
            ];
            // Three ways a user could come by a trusted key: generate one,
            // import one of a known value, or mark one of their own.
            let mut generated = common.to_vec();
            generated.extend([Attribute::ValueLen(32.into()), Attribute::Trusted(true)]);
            let mut imported = common.to_vec();
            imported.extend([Attribute::Value(vec![0x42; 32]), Attribute::Trusted(true)]);
            let mut plain = common.to_vec();
            plain.push(Attribute::ValueLen(32.into()));
            let mut made = Vec::new();
            let mut found = None;
            for attempt in 0..3 {
                let handle = match attempt {
                    0 => session.generate_key(&Mechanism::AesKeyGen, &generated),
                    1 => session.create_object(&imported),
                    _ => match session.generate_key(&Mechanism::AesKeyGen, &plain) {
                        Ok(h) => {
                            made.push(h);
                            session.update_attributes(h, &[Attribute::Trusted(true)]).map(|()| h)
                        }
                        Err(e) => Err(e),
                    },
                };
                match handle {
                    Ok(h) => {
                        if attempt < 2 {
                            made.push(h);
                        }
                        let attrs = session.get_attributes(h, &[AttributeType::Trusted]).map_err(from_cryptoki)?;
                        if attrs.contains(&Attribute::Trusted(true)) {
                            found = Some(["generate", "import", "mark"][attempt]);
                            break;
                        }
                    }
                    Err(e) if refused(&e) => {}
                    Err(e) => {
                        for h in &made {
                            let _ = session.destroy_object(*h);
                        }
                        return Err(from_cryptoki(e));
                    }
                }
            }
            for h in made {
                if let Err(e) = session.destroy_object(h) {
                    // A session object: it goes with the session at the latest.
                    let _ = from_cryptoki(e);
                }
            }
            let Some(how) = found else { return Ok(()) };
            Err(Error::MechanismUnsupported {
                mechanism: format!(
                    "CKA_TRUSTED for the security officer only: PKCS#11 module {} lets a user mark a key trusted \
                     ({how}), so under a trusted KEK anyone with the user PIN could wrap out and read every key; \
                     keep [token] kek = \"strict\" with this module",
                    self.module.display()
                ),
            })
        })
    }

    /// The newest KEK's index, read from the token now (not cached).
    pub fn newest_kek_index(&self) -> Result<Option<u32>> {
        self.forget_newest_kek();
        self.with_session(|session| self.newest_kek(session))
    }

    fn forget_newest_kek(&self) {
        self.wrapping.write().unwrap_or_else(|p| p.into_inner()).newest = None;
    }
}
