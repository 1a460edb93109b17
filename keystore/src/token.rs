//! Token initialisation (`inkan init`): find or create a token by its label.

use std::path::Path;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::UserType;

use crate::error::{from_cryptoki, Error, Result};
use crate::keystore::{find_slot_locked, in_module, load_module, module_lock};
use crate::lockfile::TokenLock;
use crate::pin::Pin;

/// What [`init_token`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenInit {
    /// A token with this label existed already; nothing was changed.
    Existing,
    /// A free slot was initialised with this label and the user PIN was set.
    Created,
    /// A token with this label had no user PIN yet (an initialisation killed
    /// half-way): its user PIN was set now.
    Finished,
}

/// The PIN lengths a token accepts (`ulMinPinLen`, `ulMaxPinLen`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinLimits {
    /// Shortest PIN.
    pub min: usize,
    /// Longest PIN.
    pub max: usize,
}

/// The PIN lengths of the token labelled `label`, or else of the first slot
/// [`init_token`] would initialise.
pub fn pin_limits(module: &Path, label: &str) -> Result<PinLimits> {
    let ctx = load_module(module)?;
    let _serial = module_lock();
    let slot = match find_slot_locked(&ctx, module, label) {
        Ok(slot) => slot,
        Err(_) => free_slot(&ctx, module, label)?,
    };
    let info = ctx.get_token_info(slot).map_err(|e| in_module(from_cryptoki(e), module, "C_GetTokenInfo"))?;
    Ok(PinLimits { min: info.min_pin_length(), max: info.max_pin_length() })
}

/// The first slot whose token is not initialised.
fn free_slot(ctx: &cryptoki::context::Pkcs11, module: &Path, label: &str) -> Result<cryptoki::slot::Slot> {
    for slot in ctx.get_slots_with_token().map_err(|e| in_module(from_cryptoki(e), module, "C_GetSlotList"))? {
        // A slot whose information cannot be read is not one to initialise.
        if ctx.get_token_info(slot).is_ok_and(|info| !info.token_initialized()) {
            return Ok(slot);
        }
    }
    Err(Error::TokenUnavailable {
        reason: format!(
            "no token labelled {label:?} and no free slot to create one in, in PKCS#11 module {}",
            module.display()
        ),
    })
}

/// Makes sure a token labelled `label` exists: if none does, initialises the
/// first free slot (SoftHSM always offers one) with the SO PIN and sets the
/// user PIN. Idempotent. The slot is found again by label afterwards, because
/// SoftHSM renumbers slots when a token is initialised. `lock_file` is the
/// keystore's (see [`crate::KeystoreConfig::lock_file`]): held throughout.
pub fn init_token(
    module: &Path,
    label: &str,
    so_pin: &Pin,
    user_pin: &Pin,
    lock_file: Option<&Path>,
) -> Result<TokenInit> {
    let _writing = TokenLock::new(lock_file.map(Path::to_path_buf)).exclusive()?;
    let ctx = load_module(module)?;
    let _serial = module_lock();
    if let Ok(slot) = find_slot_locked(&ctx, module, label) {
        let info = ctx.get_token_info(slot).map_err(|e| in_module(from_cryptoki(e), module, "C_GetTokenInfo"))?;
        if info.user_pin_initialized() {
            return Ok(TokenInit::Existing);
        }
        // Initialised, but killed before its user PIN was set: finish it.
        set_user_pin(&ctx, slot, so_pin, user_pin)?;
        return Ok(TokenInit::Finished);
    }
    let slot = free_slot(&ctx, module, label)?;
    ctx.init_token(slot, &so_pin.to_auth_pin(), label).map_err(from_cryptoki)?;
    if std::env::var("INKAN_DANGER_CRASH_AT").is_ok_and(|p| p == "init-after-init-token") {
        eprintln!("INKAN_DANGER_CRASH_AT=init-after-init-token: aborting");
        std::process::abort();
    }
    let slot = find_slot_locked(&ctx, module, label)?;
    set_user_pin(&ctx, slot, so_pin, user_pin)?;
    Ok(TokenInit::Created)
}

/// Logs in as the security officer and sets the user PIN.
fn set_user_pin(
    ctx: &cryptoki::context::Pkcs11,
    slot: cryptoki::slot::Slot,
    so_pin: &Pin,
    user_pin: &Pin,
) -> Result<()> {
    let session = ctx.open_rw_session(slot).map_err(from_cryptoki)?;
    session.login(UserType::So, Some(&so_pin.to_auth_pin())).map_err(from_cryptoki)?;
    session.init_pin(&user_pin.to_auth_pin()).map_err(from_cryptoki)?;
    match session.logout() {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserNotLoggedIn, _)) => Ok(()),
        Err(e) => Err(from_cryptoki(e)),
    }
}
