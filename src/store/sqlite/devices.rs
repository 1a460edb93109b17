//! Registered and retired phones. Passkeys are stored as webauthn-rs's JSON.

use std::ops::DerefMut;

use async_trait::async_trait;
use rusqlite::{params, Connection};
use webauthn_rs::prelude::Passkey;

use super::{optional, SqliteTx};
use crate::fido::device::{Device, DeviceStore, RetiredDevice, Retirement, RETIRED_KEPT};
use crate::seam::StoreError;

fn passkey(user_id: &str, json: &str) -> Result<Passkey, StoreError> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::Corrupt(format!("device of {user_id}: stored passkey unreadable: {e}")))
}

fn to_json(p: &Passkey) -> Result<String, StoreError> {
    serde_json::to_string(p).map_err(|e| StoreError::Failed(e.to_string()))
}

#[async_trait]
impl<C: DerefMut<Target = Connection> + Send> DeviceStore for SqliteTx<C> {
    async fn device(&mut self, user_id: &str) -> Result<Option<Device>, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT credential_id, passkey, counter, label, created_at, last_used_at FROM devices WHERE user_id = ?1",
        )?;
        let row = optional(stmt.query_row([user_id], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, Option<i64>>(5)?,
            ))
        }))?;
        let Some((credential_id, json, counter, label, created_at, last_used_at)) = row else {
            return Ok(None);
        };
        Ok(Some(Device {
            user_id: user_id.to_owned(),
            credential_id,
            passkey: passkey(user_id, &json)?,
            counter: u32::try_from(counter).map_err(|_| StoreError::Corrupt(format!("counter {counter}")))?,
            label,
            created_at,
            last_used_at,
        }))
    }

    async fn put_device(&mut self, d: &Device) -> Result<(), StoreError> {
        let json = to_json(&d.passkey)?;
        self.writing()?
            .prepare_cached(
                "INSERT INTO devices (user_id, credential_id, passkey, counter, label, created_at, last_used_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(user_id) DO UPDATE SET credential_id = excluded.credential_id, passkey = excluded.passkey,
                     counter = excluded.counter, label = excluded.label, created_at = excluded.created_at,
                     last_used_at = excluded.last_used_at",
            )?
            .execute(params![d.user_id, d.credential_id, json, d.counter, d.label, d.created_at, d.last_used_at])?;
        Ok(())
    }

    async fn record_device_use(
        &mut self,
        user_id: &str,
        credential_id: &[u8],
        passkey: &Passkey,
        counter: u32,
        expected_counter: u32,
        at: i64,
    ) -> Result<bool, StoreError> {
        let json = to_json(passkey)?;
        let n = self
            .writing()?
            .prepare_cached(
                "UPDATE devices SET passkey = ?3, counter = ?4, last_used_at = ?5
                 WHERE user_id = ?1 AND credential_id = ?2 AND counter = ?6",
            )?
            .execute(params![user_id, credential_id, json, counter, at, expected_counter])?;
        Ok(n == 1)
    }

    async fn set_device_label(&mut self, user_id: &str, label: &str) -> Result<bool, StoreError> {
        let n = self
            .writing()?
            .prepare_cached("UPDATE devices SET label = ?2 WHERE user_id = ?1")?
            .execute(params![user_id, label])?;
        Ok(n == 1)
    }

    async fn delete_device(&mut self, user_id: &str) -> Result<bool, StoreError> {
        Ok(self.writing()?.prepare_cached("DELETE FROM devices WHERE user_id = ?1")?.execute([user_id])? == 1)
    }

    async fn retire_device(&mut self, r: &RetiredDevice) -> Result<(), StoreError> {
        let json = to_json(&r.passkey)?;
        let conn = self.writing()?;
        conn.prepare_cached(
            "INSERT OR REPLACE INTO retired_devices (credential_id, user_id, passkey, label, registered_at, retired_at, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![r.credential_id, r.user_id, json, r.label, r.registered_at, r.retired_at, r.reason.as_str()])?;
        conn.prepare_cached(
            "DELETE FROM retired_devices WHERE user_id = ?1 AND credential_id NOT IN
                (SELECT credential_id FROM retired_devices WHERE user_id = ?1 ORDER BY retired_at DESC LIMIT ?2)",
        )?
        .execute(params![r.user_id, RETIRED_KEPT as i64])?;
        Ok(())
    }

    async fn retired_devices(&mut self, user_id: &str) -> Result<Vec<RetiredDevice>, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT credential_id, passkey, label, registered_at, retired_at, reason FROM retired_devices
             WHERE user_id = ?1 ORDER BY retired_at DESC",
        )?;
        let rows = stmt
            .query_map([user_id], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(credential_id, json, label, registered_at, retired_at, reason)| {
                Ok(RetiredDevice {
                    user_id: user_id.to_owned(),
                    credential_id,
                    passkey: passkey(user_id, &json)?,
                    label,
                    registered_at,
                    retired_at,
                    reason: match reason.as_str() {
                        "replaced" => Retirement::Replaced,
                        "removed" => Retirement::Removed,
                        other => return Err(StoreError::Corrupt(format!("unknown retirement {other:?}"))),
                    },
                })
            })
            .collect()
    }
}
