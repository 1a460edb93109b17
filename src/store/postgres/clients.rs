//! Signing systems (OpenID Connect clients).

use async_trait::async_trait;
use tokio_postgres::Row;

use super::row::get;
use super::PgTx;
use crate::auth::clients::{Client, ClientStore};
use crate::seam::StoreError;

const COLUMNS: &str = "id, name, secret_hash, redirect_uris, created_at";

fn client(r: &Row) -> Result<Client, StoreError> {
    let id: String = get(r, 0)?;
    let redirect_uris = serde_json::from_str(get(r, 3)?)
        .map_err(|e| StoreError::Corrupt(format!("redirect URIs of client {id}: {e}")))?;
    Ok(Client { name: get(r, 1)?, secret_hash: get(r, 2)?, redirect_uris, created_at: get(r, 4)?, id })
}

#[async_trait]
impl ClientStore for PgTx {
    async fn client(&mut self, id: &str) -> Result<Option<Client>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM clients WHERE id = $1");
        self.row(&sql, &[&id]).await?.as_ref().map(client).transpose()
    }

    async fn clients(&mut self) -> Result<Vec<Client>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM clients ORDER BY id COLLATE \"C\"");
        self.rows(&sql, &[]).await?.iter().map(client).collect()
    }

    async fn insert_client(&mut self, c: &Client) -> Result<(), StoreError> {
        let uris = serde_json::to_string(&c.redirect_uris).map_err(|e| StoreError::Failed(e.to_string()))?;
        let sql = format!("INSERT INTO clients ({COLUMNS}) VALUES ($1, $2, $3, $4, $5)");
        self.exec(&sql, &[&c.id, &c.name, &c.secret_hash, &uris, &c.created_at]).await?;
        Ok(())
    }

    async fn delete_client(&mut self, id: &str) -> Result<usize, StoreError> {
        self.exec("DELETE FROM clients WHERE id = $1", &[&id]).await?;
        Ok(self.exec("DELETE FROM sessions WHERE client_id = $1", &[&id]).await? as usize)
    }
}
