//! Short-lived state shared by the nodes: pending OpenID Connect requests,
//! authorization codes and CSC SADs, in `UNLOGGED` tables, as JSON. Each call
//! is one statement on its own (autocommit): a code or SAD is taken with
//! `DELETE ... RETURNING`, so exactly one request on one node gets it. Expired
//! rows are purged whenever a new one is added.

use async_trait::async_trait;
use deadpool_postgres::Pool;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_postgres::types::ToSql;

use super::row::get;
use crate::auth::oidc::{AuthRequest, Code, OidcStore};
use crate::auth::sad::{Sad, SadStore};
use crate::seam::StoreError;

/// The three tables.
#[derive(Debug)]
pub struct Short {
    pool: Pool,
}

impl Short {
    /// On the requests' pool.
    pub fn new(pool: Pool) -> Short {
        Short { pool }
    }

    async fn one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<String>, StoreError> {
        let conn = self.pool.get().await?;
        let stmt = conn.prepare_cached(sql).await?;
        conn.query_opt(&stmt, params).await?.map(|r| get(&r, 0)).transpose()
    }

    async fn exec(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<(), StoreError> {
        let conn = self.pool.get().await?;
        let stmt = conn.prepare_cached(sql).await?;
        conn.execute(&stmt, params).await?;
        Ok(())
    }
}

fn to_json(value: &impl Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Failed(e.to_string()))
}

fn from_json<T: DeserializeOwned>(json: Option<String>, what: &str) -> Result<Option<T>, StoreError> {
    json.map(|j| serde_json::from_str(&j).map_err(|e| StoreError::Corrupt(format!("stored {what}: {e}")))).transpose()
}

#[async_trait]
impl OidcStore for Short {
    async fn put_request(&self, id: &str, request: &AuthRequest, _now: i64, max: usize) -> Result<(), StoreError> {
        // A ring of `max` slots: a new request takes the next slot, replacing
        // whatever (the oldest, or an expired one) was there. O(1) whatever
        // the flood; readers skip expired rows.
        self.exec(
            "INSERT INTO oidc_requests (id, request, expires_at, slot)
             VALUES ($1, $2, $3, nextval('oidc_request_slots') % $4)
             ON CONFLICT (slot) DO UPDATE
                 SET id = EXCLUDED.id, request = EXCLUDED.request, expires_at = EXCLUDED.expires_at",
            &[&id, &to_json(request)?, &request.expires_at, &(max.min(i64::MAX as usize) as i64)],
        )
        .await
    }

    async fn request(&self, id: &str, now: i64) -> Result<Option<AuthRequest>, StoreError> {
        let json =
            self.one("SELECT request FROM oidc_requests WHERE id = $1 AND expires_at > $2", &[&id, &now]).await?;
        from_json(json, "authorization request")
    }

    async fn take_request(&self, id: &str) -> Result<Option<AuthRequest>, StoreError> {
        let json = self.one("DELETE FROM oidc_requests WHERE id = $1 RETURNING request", &[&id]).await?;
        from_json(json, "authorization request")
    }

    async fn put_code(&self, code_hash: &[u8], code: &Code, now: i64) -> Result<(), StoreError> {
        self.exec(
            "WITH purged AS (DELETE FROM oidc_codes WHERE expires_at <= $4)
             INSERT INTO oidc_codes (code_hash, code, expires_at) VALUES ($1, $2, $3)",
            &[&code_hash, &to_json(code)?, &code.expires_at, &now],
        )
        .await
    }

    async fn take_code(&self, code_hash: &[u8]) -> Result<Option<Code>, StoreError> {
        let json = self.one("DELETE FROM oidc_codes WHERE code_hash = $1 RETURNING code", &[&code_hash]).await?;
        from_json(json, "authorization code")
    }

    async fn keep_spent_code(&self, marker: &[u8], code: &Code, now: i64) -> Result<(), StoreError> {
        self.put_code(marker, code, now).await
    }

    async fn has_code(&self, code_hash: &[u8]) -> Result<bool, StoreError> {
        let found = self.one("SELECT 'yes' FROM oidc_codes WHERE code_hash = $1", &[&code_hash]).await?;
        Ok(found.is_some())
    }
}

#[async_trait]
impl SadStore for Short {
    async fn put_sad(&self, sad_hash: &[u8], sad: &Sad, now: i64, max: usize) -> Result<bool, StoreError> {
        // Two requests of one session at the same moment may both pass the
        // count: the cap is exceeded by at most the requests in flight.
        let conn = self.pool.get().await?;
        let stmt = conn
            .prepare_cached(
                "WITH purged AS (DELETE FROM sads WHERE expires_at <= $4)
                 INSERT INTO sads (sad_hash, sad, expires_at, session)
                 SELECT $1, $2, $3, $5
                 WHERE (SELECT count(*) FROM sads WHERE session = $5 AND expires_at > $4) < $6",
            )
            .await?;
        let n = conn
            .execute(
                &stmt,
                &[
                    &sad_hash,
                    &to_json(sad)?,
                    &sad.expires_at,
                    &now,
                    &sad.session,
                    &i64::try_from(max).unwrap_or(i64::MAX),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    async fn take_sad(&self, sad_hash: &[u8]) -> Result<Option<Sad>, StoreError> {
        let json = self.one("DELETE FROM sads WHERE sad_hash = $1 RETURNING sad", &[&sad_hash]).await?;
        from_json(json, "SAD")
    }
}
