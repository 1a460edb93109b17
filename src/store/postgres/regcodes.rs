//! Printed registration codes.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::row::{count_u32, get};
use super::PgTx;
use crate::fido::regcode::{Regcode, RegcodeStore, Status};
use crate::seam::StoreError;

const COLUMNS: &str = "id, user_id, password_hash, failures, status, created_at, expires_at";

fn regcode(r: &Row) -> Result<Regcode, StoreError> {
    Ok(Regcode {
        id: get(r, 0)?,
        user_id: get(r, 1)?,
        password_hash: get(r, 2)?,
        failures: count_u32(get(r, 3)?, "registration code failures")?,
        status: Status::parse(get(r, 4)?)?,
        created_at: get(r, 5)?,
        expires_at: get(r, 6)?,
    })
}

#[async_trait]
impl RegcodeStore for PgTx {
    async fn insert_regcode(&mut self, code_hash: &[u8], c: &Regcode) -> Result<usize, StoreError> {
        let replaced = self
            .exec("UPDATE regcodes SET status = 'replaced' WHERE user_id = $1 AND status = 'active'", &[&c.user_id])
            .await?;
        self.exec(
            "INSERT INTO regcodes (code_hash, user_id, password_hash, failures, status, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &code_hash,
                &c.user_id,
                &c.password_hash,
                &i64::from(c.failures),
                &c.status.as_str(),
                &c.created_at,
                &c.expires_at,
            ],
        )
        .await?;
        Ok(replaced as usize)
    }

    async fn regcode_by_hash(&mut self, code_hash: &[u8]) -> Result<Option<Regcode>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM regcodes WHERE code_hash = $1");
        self.row(&sql, &[&code_hash]).await?.as_ref().map(regcode).transpose()
    }

    async fn set_regcode_status(&mut self, id: i64, from: Status, to: Status) -> Result<bool, StoreError> {
        let n = self
            .exec("UPDATE regcodes SET status = $3 WHERE id = $1 AND status = $2", &[&id, &from.as_str(), &to.as_str()])
            .await?;
        Ok(n == 1)
    }

    async fn revoke_active_regcode(&mut self, user_id: &str) -> Result<bool, StoreError> {
        let n = self
            .exec("UPDATE regcodes SET status = 'revoked' WHERE user_id = $1 AND status = 'active'", &[&user_id])
            .await?;
        Ok(n > 0)
    }

    async fn count_regcode_failure(&mut self, id: i64) -> Result<u32, StoreError> {
        self.exec("UPDATE regcodes SET failures = failures + 1 WHERE id = $1 AND status = 'active'", &[&id]).await?;
        let row = self.row("SELECT failures FROM regcodes WHERE id = $1", &[&id]).await?;
        let row = row.ok_or_else(|| StoreError::Failed(format!("registration code {id} vanished")))?;
        count_u32(get(&row, 0)?, "registration code failures")
    }

    async fn regcodes(&mut self, user_id: Option<&str>) -> Result<Vec<Regcode>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM regcodes WHERE {} ORDER BY id DESC",
            super::user_filter(user_id, "user_id", 1)
        );
        self.rows(&sql, &[&user_id]).await?.iter().map(regcode).collect()
    }
}
