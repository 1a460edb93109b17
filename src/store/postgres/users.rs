//! Users and keys.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::row::get;
use super::PgTx;
use crate::seam::StoreError;
use crate::users::{parse_algorithm, KeyRecord, KeyState, KeyStatus, User, UserStatus, UserStore};

const USER_COLUMNS: &str = "id, name, qualification, status, created_at";
const KEY_COLUMNS: &str =
    "user_id, generation, algorithm, token_id, public_key, csr, certificate, state, created_at, activated_at, retired_at";

fn user(r: &Row) -> Result<User, StoreError> {
    Ok(User {
        id: get(r, 0)?,
        name: get(r, 1)?,
        qualification: get(r, 2)?,
        status: get::<&str>(r, 3)?.parse::<UserStatus>()?,
        created_at: get(r, 4)?,
    })
}

fn key(r: &Row) -> Result<KeyRecord, StoreError> {
    Ok(KeyRecord {
        user_id: get(r, 0)?,
        generation: get(r, 1)?,
        algorithm: parse_algorithm(get(r, 2)?)?,
        token_id: get(r, 3)?,
        public_key: get(r, 4)?,
        csr: get(r, 5)?,
        certificate: get(r, 6)?,
        state: get::<&str>(r, 7)?.parse::<KeyState>()?,
        created_at: get(r, 8)?,
        activated_at: get(r, 9)?,
        retired_at: get(r, 10)?,
    })
}

#[async_trait]
impl UserStore for PgTx {
    async fn user(&mut self, id: &str) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        self.row(&sql, &[&id]).await?.as_ref().map(user).transpose()
    }

    async fn users(&mut self) -> Result<Vec<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY id COLLATE \"C\"");
        self.rows(&sql, &[]).await?.iter().map(user).collect()
    }

    async fn key_status(&mut self) -> Result<Vec<KeyStatus>, StoreError> {
        let sql = "SELECT u.id, EXISTS (SELECT 1 FROM keys k WHERE k.user_id = u.id AND k.state = 'active'), \
     (SELECT generation FROM keys k WHERE k.user_id = u.id AND k.state = 'pending') \
     FROM users u WHERE u.status = 'active' ORDER BY u.id COLLATE \"C\"";
        self.rows(sql, &[])
            .await?
            .iter()
            .map(|r| Ok(KeyStatus { user_id: get(r, 0)?, active: get(r, 1)?, pending: get(r, 2)? }))
            .collect()
    }

    async fn insert_user(&mut self, u: &User) -> Result<(), StoreError> {
        let sql = format!("INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5)");
        self.exec(&sql, &[&u.id, &u.name, &u.qualification, &u.status.as_str(), &u.created_at]).await?;
        Ok(())
    }

    async fn set_user_status(&mut self, id: &str, status: UserStatus) -> Result<bool, StoreError> {
        Ok(self.exec("UPDATE users SET status = $2 WHERE id = $1", &[&id, &status.as_str()]).await? == 1)
    }

    async fn keys(&mut self, user_id: Option<&str>) -> Result<Vec<KeyRecord>, StoreError> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE {} ORDER BY user_id COLLATE \"C\", generation",
            super::user_filter(user_id, "user_id", 1)
        );
        self.rows(&sql, &[&user_id]).await?.iter().map(key).collect()
    }

    async fn active_key(&mut self, user_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM keys WHERE user_id = $1 AND state = 'active'");
        self.row(&sql, &[&user_id]).await?.as_ref().map(key).transpose()
    }

    async fn next_generation(&mut self, user_id: &str) -> Result<i64, StoreError> {
        let row = self.row("SELECT COALESCE(MAX(generation), 0) + 1 FROM keys WHERE user_id = $1", &[&user_id]).await?;
        row.as_ref().map(|r| get(r, 0)).unwrap_or(Ok(1))
    }

    async fn insert_key(&mut self, k: &KeyRecord) -> Result<(), StoreError> {
        let sql = format!("INSERT INTO keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)");
        self.exec(
            &sql,
            &[
                &k.user_id,
                &k.generation,
                &k.algorithm.as_str(),
                &k.token_id,
                &k.public_key,
                &k.csr,
                &k.certificate,
                &k.state.as_str(),
                &k.created_at,
                &k.activated_at,
                &k.retired_at,
            ],
        )
        .await?;
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
            .exec(
                "UPDATE keys SET state = 'active', certificate = $3, activated_at = $4
                 WHERE user_id = $1 AND generation = $2 AND state = 'pending'",
                &[&user_id, &generation, &certificate, &at],
            )
            .await?;
        Ok(n == 1)
    }

    async fn retire_key(&mut self, user_id: &str, generation: i64, at: i64) -> Result<bool, StoreError> {
        let n = self
            .exec(
                "UPDATE keys SET state = 'retired', retired_at = $3
                 WHERE user_id = $1 AND generation = $2 AND state != 'retired'",
                &[&user_id, &generation, &at],
            )
            .await?;
        Ok(n == 1)
    }

    async fn keys_after(&mut self, after: Option<(&str, i64)>, limit: usize) -> Result<Vec<KeyRecord>, StoreError> {
        // The database's own collation in both the order and the comparison,
        // so that the primary key's index serves every page.
        let (user, generation) = after.unzip();
        let filter = if user.is_some() {
            "(user_id, generation) > ($1, $2::BIGINT)"
        } else {
            "$1::TEXT IS NULL AND $2::BIGINT IS NULL"
        };
        let sql = format!("SELECT {KEY_COLUMNS} FROM keys WHERE {filter} ORDER BY user_id, generation LIMIT $3");
        self.rows(&sql, &[&user, &generation, &(limit as i64)]).await?.iter().map(key).collect()
    }

    async fn replace_key_ref(
        &mut self,
        user_id: &str,
        generation: i64,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, StoreError> {
        let n = self
            .exec(
                "UPDATE keys SET token_id = $4 WHERE user_id = $1 AND generation = $2 AND token_id = $3",
                &[&user_id, &generation, &old, &new],
            )
            .await?;
        Ok(n == 1)
    }
}
