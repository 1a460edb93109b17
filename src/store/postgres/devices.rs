//! Registered and retired phones. Passkeys are stored as webauthn-rs's JSON.

use async_trait::async_trait;
use webauthn_rs::prelude::Passkey;

use super::row::{count_u32, get};
use super::PgTx;
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
impl DeviceStore for PgTx {
    async fn device(&mut self, user_id: &str) -> Result<Option<Device>, StoreError> {
        let row = self
            .row(
                "SELECT credential_id, passkey, counter, label, created_at, last_used_at FROM devices WHERE user_id = $1",
                &[&user_id],
            )
            .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(Device {
            user_id: user_id.to_owned(),
            credential_id: get(&r, 0)?,
            passkey: passkey(user_id, get(&r, 1)?)?,
            counter: count_u32(get(&r, 2)?, "counter")?,
            label: get(&r, 3)?,
            created_at: get(&r, 4)?,
            last_used_at: get(&r, 5)?,
        }))
    }

    async fn put_device(&mut self, d: &Device) -> Result<(), StoreError> {
        let json = to_json(&d.passkey)?;
        self.exec(
            "INSERT INTO devices (user_id, credential_id, passkey, counter, label, created_at, last_used_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (user_id) DO UPDATE SET credential_id = excluded.credential_id, passkey = excluded.passkey,
                 counter = excluded.counter, label = excluded.label, created_at = excluded.created_at,
                 last_used_at = excluded.last_used_at",
            &[&d.user_id, &d.credential_id, &json, &i64::from(d.counter), &d.label, &d.created_at, &d.last_used_at],
        )
        .await?;
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
            .exec(
                "UPDATE devices SET passkey = $3, counter = $4, last_used_at = $5
                 WHERE user_id = $1 AND credential_id = $2 AND counter = $6",
                &[&user_id, &credential_id, &json, &i64::from(counter), &at, &i64::from(expected_counter)],
            )
            .await?;
        Ok(n == 1)
    }

    async fn set_device_label(&mut self, user_id: &str, label: &str) -> Result<bool, StoreError> {
        Ok(self.exec("UPDATE devices SET label = $2 WHERE user_id = $1", &[&user_id, &label]).await? == 1)
    }

    async fn delete_device(&mut self, user_id: &str) -> Result<bool, StoreError> {
        Ok(self.exec("DELETE FROM devices WHERE user_id = $1", &[&user_id]).await? == 1)
    }

    async fn retire_device(&mut self, r: &RetiredDevice) -> Result<(), StoreError> {
        let json = to_json(&r.passkey)?;
        self.exec(
            "INSERT INTO retired_devices (credential_id, user_id, passkey, label, registered_at, retired_at, reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (credential_id) DO UPDATE SET user_id = excluded.user_id, passkey = excluded.passkey,
                 label = excluded.label, registered_at = excluded.registered_at, retired_at = excluded.retired_at,
                 reason = excluded.reason",
            &[&r.credential_id, &r.user_id, &json, &r.label, &r.registered_at, &r.retired_at, &r.reason.as_str()],
        )
        .await?;
        self.exec(
            "DELETE FROM retired_devices WHERE user_id = $1 AND credential_id NOT IN
                (SELECT credential_id FROM retired_devices WHERE user_id = $1 ORDER BY retired_at DESC LIMIT $2)",
            &[&r.user_id, &(RETIRED_KEPT as i64)],
        )
        .await?;
        Ok(())
    }

    async fn retired_devices(&mut self, user_id: &str) -> Result<Vec<RetiredDevice>, StoreError> {
        let rows = self
            .rows(
                "SELECT credential_id, passkey, label, registered_at, retired_at, reason FROM retired_devices
                 WHERE user_id = $1 ORDER BY retired_at DESC",
                &[&user_id],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(RetiredDevice {
                    user_id: user_id.to_owned(),
                    credential_id: get(r, 0)?,
                    passkey: passkey(user_id, get(r, 1)?)?,
                    label: get(r, 2)?,
                    registered_at: get(r, 3)?,
                    retired_at: get(r, 4)?,
                    reason: match get::<&str>(r, 5)? {
                        "replaced" => Retirement::Replaced,
                        "removed" => Retirement::Removed,
                        other => return Err(StoreError::Corrupt(format!("unknown retirement {other:?}"))),
                    },
                })
            })
            .collect()
    }
}
