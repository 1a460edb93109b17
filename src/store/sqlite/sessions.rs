//! Auth sessions.

use std::ops::DerefMut;

use async_trait::async_trait;
use rusqlite::{params, Connection};

use super::{optional, SqliteTx};
use crate::auth::sessions::{Session, SessionRecord, SessionStore};
use crate::auth::Method;
use crate::seam::StoreError;
use crate::users::{parse_algorithm, ActiveKey};

fn method(s: &str) -> Result<Method, StoreError> {
    Method::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown login method {s:?}")))
}

const COLUMNS: &str = "token_hash, user_id, method, client_id, scope, auth_time, created_at, expires_at";

fn session_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Session, StoreError>> {
    let m: String = r.get(2)?;
    let session = Session {
        token_hash: r.get(0)?,
        user_id: r.get(1)?,
        method: Method::Hpki,
        client_id: r.get(3)?,
        scope: r.get(4)?,
        auth_time: r.get(5)?,
        created_at: r.get(6)?,
        expires_at: r.get(7)?,
    };
    Ok(method(&m).map(|method| Session { method, ..session }))
}

#[async_trait]
impl<C: DerefMut<Target = Connection> + Send> SessionStore for SqliteTx<C> {
    async fn session(&mut self, token_hash: &[u8]) -> Result<Option<SessionRecord>, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT s.token_hash, s.user_id, s.method, s.client_id, s.scope, s.auth_time, s.created_at, s.expires_at,
                    u.status, k.generation, k.token_id, k.algorithm
             FROM sessions s JOIN users u ON u.id = s.user_id
             LEFT JOIN keys k ON k.user_id = s.user_id AND k.state = 'active'
             WHERE s.token_hash = ?1",
        )?;
        let row = optional(stmt.query_row([token_hash], |r| {
            let session = session_from_row(r)?;
            let status: String = r.get(8)?;
            let generation: Option<i64> = r.get(9)?;
            let key = match generation {
                Some(g) => Some((g, r.get::<_, Vec<u8>>(10)?, r.get::<_, String>(11)?)),
                None => None,
            };
            Ok((session, status, key))
        }))?;
        let Some((session, status, key)) = row else { return Ok(None) };
        let active_key = match key {
            Some((generation, token_id, alg)) => {
                Some(ActiveKey { generation, token_id, algorithm: parse_algorithm(&alg)? })
            }
            None => None,
        };
        Ok(Some(SessionRecord { session: session?, user_status: status.parse()?, active_key }))
    }

    async fn insert_session(&mut self, s: &Session) -> Result<(), StoreError> {
        self.writing()?
            .prepare_cached(&format!("INSERT INTO sessions ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"))?
            .execute(params![
                s.token_hash,
                s.user_id,
                s.method.as_str(),
                s.client_id,
                s.scope,
                s.auth_time,
                s.created_at,
                s.expires_at
            ])?;
        Ok(())
    }

    async fn delete_session(&mut self, token_hash: &[u8]) -> Result<Option<String>, StoreError> {
        let conn = self.writing()?;
        let user: Option<String> = optional(
            conn.prepare_cached("SELECT user_id FROM sessions WHERE token_hash = ?1")?
                .query_row([token_hash], |r| r.get(0)),
        )?;
        if user.is_some() {
            conn.prepare_cached("DELETE FROM sessions WHERE token_hash = ?1")?.execute([token_hash])?;
        }
        Ok(user)
    }

    async fn delete_sessions(&mut self, user_id: Option<&str>, method: Option<Method>) -> Result<usize, StoreError> {
        let sql = format!(
            "DELETE FROM sessions WHERE {} AND (?2 IS NULL OR method = ?2)",
            super::user_filter(user_id, "user_id", 1)
        );
        Ok(self.writing()?.prepare_cached(&sql)?.execute(params![user_id, method.map(Method::as_str)])?)
    }

    async fn sessions(&mut self, now: i64, user_id: Option<&str>) -> Result<Vec<Session>, StoreError> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT {COLUMNS} FROM sessions WHERE expires_at > ?1 AND {}
             ORDER BY user_id, auth_time",
            super::user_filter(user_id, "user_id", 2)
        ))?;
        let rows = stmt.query_map(params![now, user_id], session_from_row)?;
        super::users::collect(rows)
    }

    async fn count_sessions(&mut self, now: i64) -> Result<i64, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT COUNT(*) FROM sessions WHERE expires_at > ?1")?
            .query_row([now], |r| r.get(0))?)
    }

    async fn purge_sessions(&mut self, now: i64) -> Result<usize, StoreError> {
        Ok(self.writing()?.prepare_cached("DELETE FROM sessions WHERE expires_at <= ?1")?.execute([now])?)
    }
}
