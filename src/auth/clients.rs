//! Signing systems registered by operators: client ID, secret, redirect URIs.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use crate::audit::{self, Event};
use crate::clock::Clock;
use crate::store::{Store, StoreError};

/// A registered client.
#[derive(Clone, Debug, Serialize)]
pub struct Client {
    /// client_id
    pub id: String,
    /// Display name.
    pub name: String,
    /// Exact redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Unix ms.
    pub created_at: i64,
    #[serde(skip)]
    secret_hash: Vec<u8>,
}

impl Client {
    /// Whether `secret` is this client's secret.
    pub fn check_secret(&self, secret: &str) -> bool {
        super::constant_time_eq(&super::token_hash(secret), &self.secret_hash)
    }
}

/// A client problem.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// Unknown client.
    #[error("unknown client {0:?}: see `inkan client list`")]
    Unknown(String),
    /// Database.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for ClientError {
    fn from(e: rusqlite::Error) -> Self {
        ClientError::Store(e.into())
    }
}

fn check_redirect_uri(uri: &str) -> Result<(), ClientError> {
    let ok =
        (uri.starts_with("https://") || uri.starts_with("http://localhost") || uri.starts_with("http://127.0.0.1"))
            && !uri.contains('#')
            && !uri.chars().any(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(ClientError::Invalid(format!(
            "redirect URI {uri:?} must be https:// (or http://localhost for development) without a fragment"
        )))
    }
}

/// Registers a client; returns it and its secret (shown once, stored hashed).
pub fn add(
    store: &mut Store,
    clock: &dyn Clock,
    actor: &str,
    name: &str,
    redirect_uris: &[String],
    id: Option<&str>,
) -> Result<(Client, String), ClientError> {
    if name.trim().is_empty() {
        return Err(ClientError::Invalid("the client needs a name".into()));
    }
    if redirect_uris.is_empty() {
        return Err(ClientError::Invalid("give at least one --redirect-uri".into()));
    }
    for uri in redirect_uris {
        check_redirect_uri(uri)?;
    }
    let id = id.map(str::to_owned).unwrap_or_else(|| format!("client-{}", &super::random_token()[..16]));
    let secret = super::random_token();
    let now = clock.now_ms();
    let client = Client {
        id: id.clone(),
        name: name.trim().to_owned(),
        redirect_uris: redirect_uris.to_vec(),
        created_at: now,
        secret_hash: super::token_hash(&secret),
    };
    let uris = serde_json::to_string(&client.redirect_uris).map_err(|e| ClientError::Invalid(e.to_string()))?;
    store.write(|t| {
        t.execute(
            "INSERT INTO clients (id, name, secret_hash, redirect_uris, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![client.id, client.name, client.secret_hash, uris, now],
        )?;
        audit::append(t, now, &[Event { actor, event: "client.add", outcome: "ok", detail: serde_json::json!({ "client_id": client.id, "name": client.name, "redirect_uris": client.redirect_uris }), ..Default::default() }])?;
        Ok(())
    })
    .map_err(|e| match e {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            ClientError::Invalid(format!("client {id:?} exists already"))
        }
        other => ClientError::Store(other),
    })?;
    Ok((client, secret))
}

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Client> {
    let uris: String = r.get(3)?;
    Ok(Client {
        id: r.get(0)?,
        name: r.get(1)?,
        secret_hash: r.get(2)?,
        redirect_uris: serde_json::from_str(&uris).unwrap_or_default(),
        created_at: r.get(4)?,
    })
}

/// A client by ID.
pub fn get(store: &Store, id: &str) -> Result<Option<Client>, ClientError> {
    Ok(store
        .conn()
        .query_row("SELECT id, name, secret_hash, redirect_uris, created_at FROM clients WHERE id = ?1", [id], from_row)
        .optional()?)
}

/// All clients.
pub fn list(store: &Store) -> Result<Vec<Client>, ClientError> {
    let mut stmt =
        store.conn().prepare("SELECT id, name, secret_hash, redirect_uris, created_at FROM clients ORDER BY id")?;
    let rows = stmt.query_map([], from_row)?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Removes a client and ends its sessions.
pub fn remove(store: &mut Store, clock: &dyn Clock, actor: &str, id: &str) -> Result<usize, ClientError> {
    if get(store, id)?.is_none() {
        return Err(ClientError::Unknown(id.to_owned()));
    }
    let now = clock.now_ms();
    Ok(store.write(|t| {
        t.execute("DELETE FROM clients WHERE id = ?1", [id])?;
        let ended = t.execute("DELETE FROM sessions WHERE client_id = ?1", [id])?;
        audit::append(
            t,
            now,
            &[Event {
                actor,
                event: "client.remove",
                outcome: "ok",
                detail: serde_json::json!({ "client_id": id, "sessions_ended": ended }),
                ..Default::default()
            }],
        )?;
        Ok(ended)
    })?)
}
