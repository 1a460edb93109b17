//! Printed registration codes.

use std::ops::DerefMut;

use async_trait::async_trait;
use rusqlite::{params, Connection};

use super::{optional, SqliteTx};
use crate::fido::regcode::{Regcode, RegcodeStore, Status};
use crate::seam::StoreError;

const COLUMNS: &str = "id, user_id, password_hash, failures, status, created_at, expires_at";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Regcode, StoreError>> {
    let status: String = r.get(4)?;
    let code = Regcode {
        id: r.get(0)?,
        user_id: r.get(1)?,
        password_hash: r.get(2)?,
        failures: r.get(3)?,
        status: Status::Active,
        created_at: r.get(5)?,
        expires_at: r.get(6)?,
    };
    Ok(Status::parse(&status).map(|status| Regcode { status, ..code }))
}

#[async_trait]
impl<C: DerefMut<Target = Connection> + Send> RegcodeStore for SqliteTx<C> {
    async fn insert_regcode(&mut self, code_hash: &[u8], c: &Regcode) -> Result<usize, StoreError> {
        let conn = self.writing()?;
        let replaced = conn
            .prepare_cached("UPDATE regcodes SET status = 'replaced' WHERE user_id = ?1 AND status = 'active'")?
            .execute([&c.user_id])?;
        conn.prepare_cached(
            "INSERT INTO regcodes (code_hash, user_id, password_hash, failures, status, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            code_hash,
            c.user_id,
            c.password_hash,
            c.failures,
            c.status.as_str(),
            c.created_at,
            c.expires_at
        ])?;
        Ok(replaced)
    }

    async fn regcode_by_hash(&mut self, code_hash: &[u8]) -> Result<Option<Regcode>, StoreError> {
        let mut stmt = self.conn().prepare_cached(&format!("SELECT {COLUMNS} FROM regcodes WHERE code_hash = ?1"))?;
        optional(stmt.query_row([code_hash], from_row))?.transpose()
    }

    async fn set_regcode_status(&mut self, id: i64, from: Status, to: Status) -> Result<bool, StoreError> {
        let n = self
            .writing()?
            .prepare_cached("UPDATE regcodes SET status = ?3 WHERE id = ?1 AND status = ?2")?
            .execute(params![id, from.as_str(), to.as_str()])?;
        Ok(n == 1)
    }

    async fn revoke_active_regcode(&mut self, user_id: &str) -> Result<bool, StoreError> {
        let n = self
            .writing()?
            .prepare_cached("UPDATE regcodes SET status = 'revoked' WHERE user_id = ?1 AND status = 'active'")?
            .execute([user_id])?;
        Ok(n > 0)
    }

    async fn count_regcode_failure(&mut self, id: i64) -> Result<u32, StoreError> {
        let conn = self.writing()?;
        conn.prepare_cached("UPDATE regcodes SET failures = failures + 1 WHERE id = ?1 AND status = 'active'")?
            .execute([id])?;
        Ok(conn.prepare_cached("SELECT failures FROM regcodes WHERE id = ?1")?.query_row([id], |r| r.get(0))?)
    }

    async fn regcodes(&mut self, user_id: Option<&str>) -> Result<Vec<Regcode>, StoreError> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT {COLUMNS} FROM regcodes WHERE {} ORDER BY id DESC",
            super::user_filter(user_id, "user_id", 1)
        ))?;
        let rows = stmt.query_map([user_id], from_row)?;
        super::users::collect(rows)
    }
}
