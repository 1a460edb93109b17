//! Signing systems registered by operators: client ID, secret, redirect URIs.

use async_trait::async_trait;
use serde::Serialize;

use crate::audit::AuditStore;
use crate::audit::{self, Event};
use crate::clock::Clock;
use crate::error::{Credential, Error, Missing, Result};
use crate::seam::{StoreError, Transaction, Transactions};

/// A registered client.
#[derive(Clone, Debug, Serialize)]
pub struct Client {
    /// client_id
    pub id: String,
    /// Display name.
    pub name: String,
    /// Exact redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Unix ms (RFC 3339 in JSON).
    #[serde(serialize_with = "crate::clock::as_rfc3339")]
    pub created_at: i64,
    /// SHA-256 of the secret (the secret itself is shown once and never stored).
    #[serde(skip)]
    pub secret_hash: Vec<u8>,
}

impl Client {
    /// Whether `secret` is this client's secret.
    pub fn check_secret(&self, secret: &str) -> bool {
        super::constant_time_eq(&super::token_hash(secret), &self.secret_hash)
    }
}

/// What clients need from storage.
#[async_trait]
pub trait ClientStore: Send {
    /// A client by ID.
    async fn client(&mut self, id: &str) -> Result<Option<Client>, StoreError>;
    /// All clients, by ID.
    async fn clients(&mut self) -> Result<Vec<Client>, StoreError>;
    /// Registers a client ([`StoreError::Conflict`] if the ID exists).
    async fn insert_client(&mut self, client: &Client) -> Result<(), StoreError>;
    /// Removes a client and ends its sessions; returns the number of sessions ended.
    async fn delete_client(&mut self, id: &str) -> Result<usize, StoreError>;
}

/// What client operations need in one transaction.
pub trait ClientsTx: ClientStore + AuditStore + Transaction {}
impl<T: ClientStore + AuditStore + Transaction + ?Sized> ClientsTx for T {}

fn check_redirect_uri(uri: &str) -> Result<()> {
    let ok =
        (uri.starts_with("https://") || uri.starts_with("http://localhost") || uri.starts_with("http://127.0.0.1"))
            && !uri.contains('#')
            && !uri.chars().any(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "redirect URI {uri:?} must be https:// (or http://localhost for development) without a fragment"
        )))
    }
}

fn unknown(id: &str) -> Error {
    Error::NotFound(Missing::Client, format!("unknown client {id:?}: see `inkan client list`"))
}

/// Registers a client; returns it and its secret (shown once, stored hashed).
pub async fn add<T: ClientsTx + ?Sized>(
    store: &dyn Transactions<T>,
    clock: &dyn Clock,
    actor: &str,
    name: &str,
    redirect_uris: &[String],
    id: Option<&str>,
) -> Result<(Client, String)> {
    if name.trim().is_empty() {
        return Err(Error::Invalid("the client needs a name".into()));
    }
    if redirect_uris.is_empty() {
        return Err(Error::Invalid("give at least one --redirect-uri".into()));
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
    let mut tx = store.write().await?;
    if tx.client(&id).await?.is_some() {
        return Err(Error::Conflict(format!("client {id:?} exists already")));
    }
    tx.insert_client(&client).await?;
    audit::append(
        &mut *tx,
        now,
        &[Event { outcome: "ok", detail: serde_json::json!({ "client_id": client.id, "name": client.name, "redirect_uris": client.redirect_uris }), ..Event::new(actor, crate::audit::Name::ClientAdd) }],
    )
    .await?;
    tx.commit().await?;
    Ok((client, secret))
}

/// A client by ID.
pub async fn get<T: ClientsTx + ?Sized>(store: &dyn Transactions<T>, id: &str) -> Result<Option<Client>> {
    Ok(store.read().await?.client(id).await?)
}

/// All clients.
pub async fn list<T: ClientsTx + ?Sized>(store: &dyn Transactions<T>) -> Result<Vec<Client>> {
    Ok(store.read().await?.clients().await?)
}

/// A client that proves itself with its secret.
pub async fn authenticate<T: ClientsTx + ?Sized>(
    store: &dyn Transactions<T>,
    id: &str,
    secret: &str,
) -> Result<Client> {
    let refused = || Error::Unauthenticated(Credential::Client, "client authentication failed".into());
    let client = get(store, id).await?.ok_or_else(refused)?;
    if client.check_secret(secret) {
        Ok(client)
    } else {
        Err(refused())
    }
}

/// Removes a client and ends its sessions; returns how many sessions ended.
pub async fn remove<T: ClientsTx + ?Sized>(
    store: &dyn Transactions<T>,
    clock: &dyn Clock,
    actor: &str,
    id: &str,
) -> Result<usize> {
    let now = clock.now_ms();
    let mut tx = store.write().await?;
    if tx.client(id).await?.is_none() {
        return Err(unknown(id));
    }
    let ended = tx.delete_client(id).await?;
    audit::append(
        &mut *tx,
        now,
        &[Event {
            outcome: "ok",
            detail: serde_json::json!({ "client_id": id, "sessions_ended": ended }),
            ..Event::new(actor, crate::audit::Name::ClientRemove)
        }],
    )
    .await?;
    tx.commit().await?;
    Ok(ended)
}
