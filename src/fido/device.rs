//! The registered phone: one passkey per user. Registering a new one replaces
//! the old in a single statement, so there is never a moment with neither.

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;
use webauthn_rs::prelude::Passkey;

use crate::audit::{self, Event};
use crate::auth::b64url;
use crate::clock::rfc3339;
use crate::store::{Store, StoreError};

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

/// The user's device, if any.
pub fn get(conn: &Connection, user_id: &str) -> Result<Option<Device>, StoreError> {
    let row = conn
        .query_row(
            "SELECT credential_id, passkey, counter, label, created_at, last_used_at FROM devices WHERE user_id = ?1",
            params![user_id],
            |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                ))
            },
        )
        .optional()?;
    let Some((credential_id, passkey, counter, label, created_at, last_used_at)) = row else {
        return Ok(None);
    };
    let passkey: Passkey = serde_json::from_str(&passkey)
        .map_err(|e| StoreError::Corrupt(format!("device of {user_id}: stored passkey unreadable: {e}")))?;
    Ok(Some(Device {
        user_id: user_id.to_owned(),
        credential_id,
        passkey,
        counter: u32::try_from(counter).unwrap_or(u32::MAX),
        label,
        created_at,
        last_used_at,
    }))
}

/// Installs a newly registered passkey as the user's device (counter 0),
/// replacing the old one in the same statement. Returns the replaced credential ID, if any.
pub fn install(
    tx: &Transaction<'_>,
    now: i64,
    actor: &str,
    user_id: &str,
    passkey: &Passkey,
    label: &str,
    via: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    let old: Option<Vec<u8>> = tx
        .query_row("SELECT credential_id FROM devices WHERE user_id = ?1", params![user_id], |r| r.get(0))
        .optional()?;
    let credential_id: &[u8] = passkey.cred_id().as_ref();
    let json = serde_json::to_string(passkey).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    tx.execute(
        "INSERT INTO devices (user_id, credential_id, passkey, counter, label, created_at, last_used_at)
         VALUES (?1, ?2, ?3, 0, ?4, ?5, NULL)
         ON CONFLICT(user_id) DO UPDATE SET credential_id = excluded.credential_id, passkey = excluded.passkey,
             counter = excluded.counter, label = excluded.label, created_at = excluded.created_at, last_used_at = NULL",
        params![user_id, credential_id, json, label, now],
    )?;
    let event = if old.is_some() { "fido.replace" } else { "fido.register" };
    let mut detail = serde_json::json!({ "credential_id": b64url(credential_id), "label": label, "via": via });
    if let Some(old) = &old {
        detail["replaced_credential_id"] = b64url(old).into();
    }
    audit::append(
        tx,
        now,
        &[Event { actor, event, user_id: Some(user_id), outcome: "ok", detail, ..Default::default() }],
    )?;
    Ok(old)
}

/// Records a sign-in: the new counter and passkey state, only if the device is
/// still the one that signed and its counter still the one checked (a
/// replacement or another sign-in in between makes this fail).
pub fn record_use(
    tx: &Transaction<'_>,
    now: i64,
    device: &Device,
    passkey: &Passkey,
    counter: u32,
) -> Result<bool, StoreError> {
    let json = serde_json::to_string(passkey).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let n = tx.execute(
        "UPDATE devices SET passkey = ?3, counter = ?4, last_used_at = ?5
         WHERE user_id = ?1 AND credential_id = ?2 AND counter = ?6",
        params![device.user_id, device.credential_id, json, counter, now, device.counter],
    )?;
    Ok(n == 1)
}

/// Sets the label of the user's current device.
pub fn set_label(tx: &Transaction<'_>, user_id: &str, label: &str) -> Result<bool, StoreError> {
    Ok(tx.execute("UPDATE devices SET label = ?2 WHERE user_id = ?1", params![user_id, label])? == 1)
}

/// Removes a user's device (lost phone): also ends the user's FIDO sessions and
/// open tickets. Returns what was removed.
pub fn remove(store: &mut Store, now: i64, actor: &str, user_id: &str) -> Result<Option<DeviceView>, StoreError> {
    store.write(|t| {
        // Read and delete in one transaction: the row removed is the row named in the audit.
        let Some(device) = get(t, user_id)? else {
            return Ok(None);
        };
        t.execute("DELETE FROM devices WHERE user_id = ?1", params![user_id])?;
        let sessions =
            t.execute("DELETE FROM sessions WHERE user_id = ?1 AND method = 'fido'", params![user_id])?;
        t.execute(
            "UPDATE tickets SET step = 'cancelled', ceremony = NULL WHERE user_id = ?1 AND step NOT IN ('collected', 'cancelled')",
            params![user_id],
        )?;
        audit::append(
            t,
            now,
            &[Event {
                actor,
                event: "fido.remove",
                user_id: Some(user_id),
                outcome: "ok",
                detail: serde_json::json!({ "credential_id": b64url(&device.credential_id), "sessions_revoked": sessions }),
                ..Default::default()
            }],
        )?;
        Ok(Some(device.view()))
    })
}
