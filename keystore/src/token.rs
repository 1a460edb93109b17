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
    if find_slot_locked(&ctx, module, label).is_ok() {
        return Ok(TokenInit::Existing);
    }
    let mut free = None;
    for slot in ctx.get_slots_with_token().map_err(|e| in_module(from_cryptoki(e), module, "C_GetSlotList"))? {
        // A slot whose information cannot be read is not one to initialise.
        if ctx.get_token_info(slot).is_ok_and(|info| !info.token_initialized()) {
            free = Some(slot);
            break;
        }
    }
    let slot = free.ok_or_else(|| Error::TokenUnavailable {
        reason: format!(
            "no token labelled {label:?} and no free slot to create one in, in PKCS#11 module {}",
            module.display()
        ),
    })?;
    ctx.init_token(slot, &so_pin.to_auth_pin(), label).map_err(from_cryptoki)?;
    let slot = find_slot_locked(&ctx, module, label)?;
    let session = ctx.open_rw_session(slot).map_err(from_cryptoki)?;
    session.login(UserType::So, Some(&so_pin.to_auth_pin())).map_err(from_cryptoki)?;
    session.init_pin(&user_pin.to_auth_pin()).map_err(from_cryptoki)?;
    match session.logout() {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserNotLoggedIn, _)) => {}
        Err(e) => return Err(from_cryptoki(e)),
    }
    Ok(TokenInit::Created)
}
