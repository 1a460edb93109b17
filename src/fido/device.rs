//! The registered phone: one passkey per user. Registering a new one replaces
//! the old in the same transaction, so there is never a moment with neither.
//! A replaced or removed phone is kept a while as retired (its passkey, when
//! and why), so that the phone, if it still tries, is told why it no longer
//! signs in instead of being sent to check its biometrics.

use async_trait::async_trait;
use serde::Serialize;
use webauthn_rs::prelude::Passkey;

use crate::audit::AuditStore;
use crate::audit::{self, Event};
use crate::auth::sessions::SessionStore;
use crate::auth::Method;
use crate::clock::rfc3339;
use crate::encoding::b64url;
use crate::error::Result;
use crate::seam::{StoreError, Transaction, Transactions};
use crate::users::UserStore;

use super::ticket::TicketStore;

/// A user's registered phone.
#[derive(Clone, Debug)]
pub struct Device {
    /// Owner.
    pub user_id: String,
    /// WebAuthn credential ID.
    pub credential_id: Vec<u8>,
    /// The passkey (public key and flags), as webauthn-rs keeps it.
    pub passkey: Passkey,
    /// The last sign counter seen.
    pub counter: u32,
    /// A name for people ("iPhone", "Android", ...).
    pub label: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms of the last sign-in.
    pub last_used_at: Option<i64>,
}

/// Why a phone was retired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Retirement {
    /// Another phone was registered in its place.
    Replaced,
    /// An operator removed it (lost or stolen).
    Removed,
}

impl Retirement {
    /// `replaced` or `removed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Retirement::Replaced => "replaced",
            Retirement::Removed => "removed",
        }
    }
}

/// A phone that no longer signs in.
#[derive(Clone, Debug)]
pub struct RetiredDevice {
    /// Its former owner.
    pub user_id: String,
    /// WebAuthn credential ID.
    pub credential_id: Vec<u8>,
    /// Its passkey (to verify that a phone presenting it really holds it).
    pub passkey: Passkey,
    /// Its label.
    pub label: String,
    /// Unix ms of its registration.
    pub registered_at: i64,
    /// Unix ms.
    pub retired_at: i64,
    /// Why.
    pub reason: Retirement,
}

/// Retired phones kept per user, newest first.
pub const RETIRED_KEPT: usize = 3;

/// A device as shown to operators (no key material).
#[derive(Clone, Debug, Serialize)]
pub struct DeviceView {
    /// Owner.
    pub user_id: String,
    /// base64url.
    pub credential_id: String,
    /// Label.
    pub label: String,
    /// Last sign counter.
    pub counter: u32,
    /// RFC 3339.
    pub registered_at: String,
    /// RFC 3339, if used.
    pub last_used_at: Option<String>,
}

impl Device {
    /// The operator's view.
    pub fn view(&self) -> DeviceView {
        DeviceView {
            user_id: self.user_id.clone(),
            credential_id: b64url(&self.credential_id),
            label: self.label.clone(),
            counter: self.counter,
            registered_at: rfc3339(self.created_at),
            last_used_at: self.last_used_at.map(rfc3339),
        }
    }
}

/// What phones need from storage.
#[async_trait]
pub trait DeviceStore: Send {
    /// The user's phone, if any.
    async fn device(&mut self, user_id: &str) -> Result<Option<Device>, StoreError>;
    /// Makes `device` the user's phone, replacing any other.
    async fn put_device(&mut self, device: &Device) -> Result<(), StoreError>;
    /// Records a sign-in: the new counter and passkey state, only if the
    /// device is still the one that signed and its counter still
    /// `expected_counter` (false otherwise).
    async fn record_device_use(
        &mut self,
        user_id: &str,
        credential_id: &[u8],
        passkey: &Passkey,
        counter: u32,
        expected_counter: u32,
        at: i64,
    ) -> Result<bool, StoreError>;
    /// Sets the label of the user's phone; false if there is none.
    async fn set_device_label(&mut self, user_id: &str, label: &str) -> Result<bool, StoreError>;
    /// Removes the user's phone; false if there was none.
    async fn delete_device(&mut self, user_id: &str) -> Result<bool, StoreError>;
    /// Keeps a retired phone (and forgets the user's oldest beyond [`RETIRED_KEPT`]).
    async fn retire_device(&mut self, retired: &RetiredDevice) -> Result<(), StoreError>;
    /// The user's retired phones, newest first.
    async fn retired_devices(&mut self, user_id: &str) -> Result<Vec<RetiredDevice>, StoreError>;
}

/// What phone operations need in one transaction.
pub trait DevicesTx: DeviceStore + UserStore + SessionStore + TicketStore + AuditStore + Transaction {}
impl<T: DeviceStore + UserStore + SessionStore + TicketStore + AuditStore + Transaction + ?Sized> DevicesTx for T {}

/// The user's phone, if any.
pub async fn get<T: DevicesTx + ?Sized>(store: &dyn Transactions<T>, user_id: &str) -> Result<Option<Device>> {
    Ok(store.read().await?.device(user_id).await?)
}

/// Installs a newly registered passkey as the user's phone (counter 0),
/// retiring the one it replaces, inside the caller's transaction. Returns the
/// replaced credential ID, if any.
pub async fn install<X: DeviceStore + AuditStore + ?Sized>(
    tx: &mut X,
    now: i64,
    actor: &str,
    user_id: &str,
    passkey: &Passkey,
    label: &str,
    via: &str,
) -> Result<Option<Vec<u8>>> {
    let old = tx.device(user_id).await?;
    let credential_id: Vec<u8> = AsRef::<[u8]>::as_ref(passkey.cred_id()).to_vec();
    tx.put_device(&Device {
        user_id: user_id.to_owned(),
        credential_id: credential_id.clone(),
        passkey: passkey.clone(),
        counter: 0,
        label: label.to_owned(),
        created_at: now,
        last_used_at: None,
    })
    .await?;
    let event = if old.is_some() { crate::audit::Name::FidoReplace } else { crate::audit::Name::FidoRegister };
    let mut detail = serde_json::json!({ "credential_id": b64url(&credential_id), "label": label, "via": via });
    if let Some(old) = &old {
        detail["replaced_credential_id"] = b64url(&old.credential_id).into();
        if old.credential_id != credential_id {
            tx.retire_device(&retired(old, now, Retirement::Replaced)).await?;
        }
    }
    audit::append(
        &mut *tx,
        now,
        &[Event { user_id: Some(user_id.into()), outcome: "ok", detail, ..Event::new(actor, event) }],
    )
    .await?;
    Ok(old.map(|d| d.credential_id))
}

fn retired(d: &Device, now: i64, reason: Retirement) -> RetiredDevice {
    RetiredDevice {
        user_id: d.user_id.clone(),
        credential_id: d.credential_id.clone(),
        passkey: d.passkey.clone(),
        label: d.label.clone(),
        registered_at: d.created_at,
        retired_at: now,
        reason,
    }
}

/// Removes a user's phone (lost or stolen): also ends the user's phone
/// sessions and cancels the user's open tickets. Returns what was removed.
pub async fn remove<T: DevicesTx + ?Sized>(
    store: &dyn Transactions<T>,
    now: i64,
    actor: &str,
    user_id: &str,
) -> Result<Option<DeviceView>> {
    let mut tx = store.write().await?;
    crate::users::get_in(&mut *tx, user_id).await?;
    // Read and delete in one transaction: the row removed is the row named in the audit.
    let Some(device) = tx.device(user_id).await? else {
        return Ok(None);
    };
    tx.delete_device(user_id).await?;
    tx.retire_device(&retired(&device, now, Retirement::Removed)).await?;
    let sessions = tx.delete_sessions(Some(user_id), Some(Method::Fido)).await?;
    for ticket in tx.open_tickets(user_id).await? {
        if let Ok(cancelled) = ticket.cancel() {
            tx.update_ticket(&cancelled).await?;
        }
    }
    audit::append(
        &mut *tx,
        now,
        &[Event {
            user_id: Some(user_id.into()),
            outcome: "ok",
            detail: serde_json::json!({ "credential_id": b64url(&device.credential_id), "sessions_revoked": sessions }),
            ..Event::new(actor, crate::audit::Name::FidoRemove)
        }],
    )
    .await?;
    tx.commit().await?;
    Ok(Some(device.view()))
}
