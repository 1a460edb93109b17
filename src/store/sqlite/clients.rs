//! Signing systems (OpenID Connect clients).

use std::ops::DerefMut;

use async_trait::async_trait;
use rusqlite::{params, Connection};

use super::{optional, SqliteTx};
use crate::auth::clients::{Client, ClientStore};
use crate::seam::StoreError;

const COLUMNS: &str = "id, name, secret_hash, redirect_uris, created_at";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Client, StoreError>> {
    let uris: String = r.get(3)?;
    let id: String = r.get(0)?;
    let redirect_uris = match serde_json::from_str(&uris) {
        Ok(u) => u,
        Err(e) => return Ok(Err(StoreError::Corrupt(format!("redirect URIs of client {id}: {e}")))),
    };
    Ok(Ok(Client { id, name: r.get(1)?, secret_hash: r.get(2)?, redirect_uris, created_at: r.get(4)? }))
}

#[async_trait]
impl<C: DerefMut<Target = Connection> + Send> ClientStore for SqliteTx<C> {
    async fn client(&mut self, id: &str) -> Result<Option<Client>, StoreError> {
        let mut stmt = self.conn().prepare_cached(&format!("SELECT {COLUMNS} FROM clients WHERE id = ?1"))?;
        optional(stmt.query_row([id], from_row))?.transpose()
    }

    async fn clients(&mut self) -> Result<Vec<Client>, StoreError> {
        let mut stmt = self.conn().prepare_cached(&format!("SELECT {COLUMNS} FROM clients ORDER BY id"))?;
        let rows = stmt.query_map([], from_row)?;
        super::users::collect(rows)
    }

    async fn insert_client(&mut self, client: &Client) -> Result<(), StoreError> {
        let uris = serde_json::to_string(&client.redirect_uris).map_err(|e| StoreError::Failed(e.to_string()))?;
        self.writing()?
            .prepare_cached(&format!("INSERT INTO clients ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"))?
            .execute(params![client.id, client.name, client.secret_hash, uris, client.created_at])?;
        Ok(())
    }

    async fn delete_client(&mut self, id: &str) -> Result<usize, StoreError> {
        let conn = self.writing()?;
        conn.prepare_cached("DELETE FROM clients WHERE id = ?1")?.execute([id])?;
        Ok(conn.prepare_cached("DELETE FROM sessions WHERE client_id = ?1")?.execute([id])?)
    }
}
