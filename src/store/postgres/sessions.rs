//! Auth sessions.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::row::get;
use super::PgTx;
use crate::auth::sessions::{Session, SessionRecord, SessionStore};
use crate::auth::Method;
use crate::seam::StoreError;
use crate::users::{parse_algorithm, ActiveKey, UserStatus};

const COLUMNS: &str = "token_hash, user_id, method, client_id, scope, auth_time, created_at, expires_at";

fn session(r: &Row) -> Result<Session, StoreError> {
    let method: &str = get(r, 2)?;
    Ok(Session {
        token_hash: get(r, 0)?,
        user_id: get(r, 1)?,
        method: Method::parse(method).ok_or_else(|| StoreError::Corrupt(format!("unknown login method {method:?}")))?,
        client_id: get(r, 3)?,
        scope: get(r, 4)?,
        auth_time: get(r, 5)?,
        created_at: get(r, 6)?,
        expires_at: get(r, 7)?,
    })
}

#[async_trait]
impl SessionStore for PgTx {
    async fn session(&mut self, token_hash: &[u8]) -> Result<Option<SessionRecord>, StoreError> {
        let row = self
            .row(
                "SELECT s.token_hash, s.user_id, s.method, s.client_id, s.scope, s.auth_time, s.created_at,
                        s.expires_at, u.status, k.generation, k.token_id, k.algorithm
                 FROM sessions s JOIN users u ON u.id = s.user_id
                 LEFT JOIN keys k ON k.user_id = s.user_id AND k.state = 'active'
                 WHERE s.token_hash = $1",
                &[&token_hash],
            )
            .await?;
        let Some(r) = row else { return Ok(None) };
        let active_key = match get::<Option<i64>>(&r, 9)? {
            Some(generation) => {
                Some(ActiveKey { generation, token_id: get(&r, 10)?, algorithm: parse_algorithm(get(&r, 11)?)? })
            }
            None => None,
        };
        Ok(Some(SessionRecord {
            session: session(&r)?,
            user_status: get::<&str>(&r, 8)?.parse::<UserStatus>()?,
            active_key,
        }))
    }

    async fn insert_session(&mut self, s: &Session) -> Result<(), StoreError> {
        let sql = format!("INSERT INTO sessions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)");
        self.exec(
            &sql,
            &[
                &s.token_hash,
                &s.user_id,
                &s.method.as_str(),
                &s.client_id,
                &s.scope,
                &s.auth_time,
                &s.created_at,
                &s.expires_at,
            ],
        )
        .await?;
        Ok(())
    }

    async fn delete_session(&mut self, token_hash: &[u8]) -> Result<Option<String>, StoreError> {
        let rows =
            self.exec_rows("DELETE FROM sessions WHERE token_hash = $1 RETURNING user_id", &[&token_hash]).await?;
        rows.first().map(|r| get(r, 0)).transpose()
    }

    async fn delete_sessions(&mut self, user_id: Option<&str>, method: Option<Method>) -> Result<usize, StoreError> {
        let sql = format!(
            "DELETE FROM sessions WHERE {} AND ($2::TEXT IS NULL OR method = $2)",
            super::user_filter(user_id, "user_id", 1)
        );
        let n = self.exec(&sql, &[&user_id, &method.map(Method::as_str)]).await?;
        Ok(n as usize)
    }

    async fn sessions(&mut self, now: i64, user_id: Option<&str>) -> Result<Vec<Session>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM sessions WHERE expires_at > $1 AND {}
             ORDER BY user_id COLLATE \"C\", auth_time",
            super::user_filter(user_id, "user_id", 2)
        );
        self.rows(&sql, &[&now, &user_id]).await?.iter().map(session).collect()
    }

    async fn count_sessions(&mut self, now: i64) -> Result<i64, StoreError> {
        let row = self.row("SELECT COUNT(*) FROM sessions WHERE expires_at > $1", &[&now]).await?;
        row.as_ref().map(|r| get(r, 0)).unwrap_or(Ok(0))
    }

    async fn purge_sessions(&mut self, now: i64) -> Result<usize, StoreError> {
        Ok(self.exec("DELETE FROM sessions WHERE expires_at <= $1", &[&now]).await? as usize)
    }
}
