//! Users and keys.

use std::ops::DerefMut;

use async_trait::async_trait;
use rusqlite::{params, Connection};

use super::{optional, SqliteTx};
use crate::seam::StoreError;
use crate::users::{parse_algorithm, KeyRecord, KeyState, KeyStatus, User, UserStatus, UserStore};

const USER_COLUMNS: &str = "id, name, qualification, status, created_at";
const KEY_COLUMNS: &str =
    "user_id, generation, algorithm, token_id, public_key, csr, certificate, state, created_at, activated_at, retired_at";

type Raw<T> = Result<T, StoreError>;

fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Raw<User>> {
    let status: String = r.get(3)?;
    let user = User {
        id: r.get(0)?,
        name: r.get(1)?,
        qualification: r.get(2)?,
        status: UserStatus::Active,
        created_at: r.get(4)?,
    };
    Ok(status.parse().map(|status| User { status, ..user }))
}

fn key_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Raw<KeyRecord>> {
    let algorithm: String = r.get(2)?;
    let state: String = r.get(7)?;
    let (algorithm, state) = match (parse_algorithm(&algorithm), state.parse::<KeyState>()) {
        (Ok(a), Ok(s)) => (a, s),
        (Err(e), _) | (_, Err(e)) => return Ok(Err(e)),
    };
    Ok(Ok(KeyRecord {
        user_id: r.get(0)?,
        generation: r.get(1)?,
        algorithm,
        token_id: r.get(3)?,
        public_key: r.get(4)?,
        csr: r.get(5)?,
        certificate: r.get(6)?,
        state,
        created_at: r.get(8)?,
        activated_at: r.get(9)?,
        retired_at: r.get(10)?,
    }))
}

/// Collects rows whose decoding may fail on a stored value.
pub(super) fn collect<T>(rows: impl Iterator<Item = rusqlite::Result<Raw<T>>>) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    for row in rows {
        out.push(row??);
    }
    Ok(out)
}

fn keys_where(conn: &Connection, filter: &str, user_id: Option<&str>) -> Result<Vec<KeyRecord>, StoreError> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM keys WHERE {filter} ORDER BY user_id, generation");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([user_id], key_from_row)?;
    collect(rows)
}

#[async_trait]
impl<C: DerefMut<Target = Connection> + Send> UserStore for SqliteTx<C> {
    async fn user(&mut self, id: &str) -> Result<Option<User>, StoreError> {
        let mut stmt = self.conn().prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"))?;
        optional(stmt.query_row([id], user_from_row))?.transpose()
    }

    async fn users(&mut self) -> Result<Vec<User>, StoreError> {
        let mut stmt = self.conn().prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"))?;
        let rows = stmt.query_map([], user_from_row)?;
        collect(rows)
    }

    async fn key_status(&mut self) -> Result<Vec<KeyStatus>, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT u.id, EXISTS (SELECT 1 FROM keys k WHERE k.user_id = u.id AND k.state = 'active'), \
     (SELECT generation FROM keys k WHERE k.user_id = u.id AND k.state = 'pending') \
     FROM users u WHERE u.status = 'active' ORDER BY u.id",
        )?;
        let rows =
            stmt.query_map([], |r| Ok(KeyStatus { user_id: r.get(0)?, active: r.get(1)?, pending: r.get(2)? }))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    async fn insert_user(&mut self, user: &User) -> Result<(), StoreError> {
        self.writing()?
            .prepare_cached(&format!("INSERT INTO users ({USER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"))?
            .execute(params![user.id, user.name, user.qualification, user.status.as_str(), user.created_at])?;
        Ok(())
    }

    async fn set_user_status(&mut self, id: &str, status: UserStatus) -> Result<bool, StoreError> {
        let n = self
            .writing()?
            .prepare_cached("UPDATE users SET status = ?2 WHERE id = ?1")?
            .execute(params![id, status.as_str()])?;
        Ok(n == 1)
    }

    async fn keys(&mut self, user_id: Option<&str>) -> Result<Vec<KeyRecord>, StoreError> {
        keys_where(self.conn(), &super::user_filter(user_id, "user_id", 1), user_id)
    }

    async fn active_key(&mut self, user_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        Ok(keys_where(self.conn(), "user_id = ?1 AND state = 'active'", Some(user_id))?.pop())
    }

    async fn next_generation(&mut self, user_id: &str) -> Result<i64, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT COALESCE(MAX(generation), 0) + 1 FROM keys WHERE user_id = ?1")?
            .query_row([user_id], |r| r.get(0))?)
    }

    async fn insert_key(&mut self, key: &KeyRecord) -> Result<(), StoreError> {
        self.writing()?
            .prepare_cached(&format!(
                "INSERT INTO keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
            ))?
            .execute(params![
                key.user_id,
                key.generation,
                key.algorithm.as_str(),
                key.token_id,
                key.public_key,
                key.csr,
                key.certificate,
                key.state.as_str(),
                key.created_at,
                key.activated_at,
                key.retired_at
            ])?;
        Ok(())
    }

    async fn activate_key(
        &mut self,
        user_id: &str,
        generation: i64,
        certificate: &[u8],
        at: i64,
    ) -> Result<bool, StoreError> {
        let n = self
            .writing()?
            .prepare_cached(
                "UPDATE keys SET state = 'active', certificate = ?3, activated_at = ?4
                 WHERE user_id = ?1 AND generation = ?2 AND state = 'pending'",
            )?
            .execute(params![user_id, generation, certificate, at])?;
        Ok(n == 1)
    }

    async fn retire_key(&mut self, user_id: &str, generation: i64, at: i64) -> Result<bool, StoreError> {
        let n = self
            .writing()?
            .prepare_cached(
                "UPDATE keys SET state = 'retired', retired_at = ?3
                 WHERE user_id = ?1 AND generation = ?2 AND state != 'retired'",
            )?
            .execute(params![user_id, generation, at])?;
        Ok(n == 1)
    }

    async fn keys_after(&mut self, after: Option<(&str, i64)>, limit: usize) -> Result<Vec<KeyRecord>, StoreError> {
        let (user, generation) = after.unzip();
        let filter = if user.is_some() { "(user_id, generation) > (?1, ?2)" } else { "?1 IS NULL" };
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE {filter} ORDER BY user_id, generation LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![user, generation, limit as i64], key_from_row)?;
        collect(rows)
    }

    async fn replace_key_ref(
        &mut self,
        user_id: &str,
        generation: i64,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, StoreError> {
        let n = self
            .writing()?
            .prepare_cached("UPDATE keys SET token_id = ?4 WHERE user_id = ?1 AND generation = ?2 AND token_id = ?3")?
            .execute(params![user_id, generation, old, new])?;
        Ok(n == 1)
    }
}
