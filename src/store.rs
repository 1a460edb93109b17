//! The storage seam: what the domain needs from a database, and the SQLite
//! implementation of it.
//!
//! Each domain area declares the storage it needs as a trait next to its own
//! code: [`UserStore`](crate::users::UserStore) (users and keys),
//! [`AuditStore`](crate::audit::AuditStore), [`ClientStore`](crate::auth::clients::ClientStore),
//! [`SessionStore`](crate::auth::sessions::SessionStore),
//! [`CardStore`](crate::auth::cards::CardStore), [`DeviceStore`](crate::fido::device::DeviceStore),
//! [`TicketStore`](crate::fido::ticket::TicketStore),
//! [`RegcodeStore`](crate::fido::regcode::RegcodeStore), and for short-lived state
//! [`OidcStore`](crate::auth::oidc::OidcStore), [`SadStore`](crate::auth::sad::SadStore)
//! and [`Invalidation`](crate::auth::sessions::Invalidation). A backend implements
//! them all; nothing outside `store/` names a database driver.
//!
//! A [`Tx`] is one transaction over every table: the domain reads, decides and
//! writes inside it, and [`Transaction::commit`] makes it durable (a transaction
//! dropped without a commit is rolled back). Writers are serialised: what a write
//! transaction has read stays true until it commits. Keep transactions short and
//! never wait for anything but the store inside one (no token calls, no network).
//!
//! **Adding a backend** (PostgreSQL next): a module under `store/` that implements
//! [`Store`] and the area traits, and a branch in [`open`]. The traits are async
//! so that a networked database does not block the service's workers; the SQLite
//! backend answers at once.

pub mod memory;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::audit::AuditStore;
use crate::auth::cards::CardStore;
use crate::auth::clients::ClientStore;
use crate::auth::oidc::OidcStore;
use crate::auth::sad::SadStore;
use crate::auth::sessions::{Invalidation, SessionStore};
use crate::config::Config;
use crate::fido::device::DeviceStore;
use crate::fido::regcode::RegcodeStore;
use crate::fido::ticket::TicketStore;
use crate::users::UserStore;

/// A storage failure, grouped by what the caller can do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be used right now (busy, locked, unreachable, disk
    /// full): retry later (HTTP 503).
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness rule refused the write: something with this key exists.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A stored value cannot be read back (an unknown state, a broken row).
    #[error("stored data unreadable: {0}")]
    Corrupt(String),
    /// The database was written by a newer inkan.
    #[error("the database has schema version {found}, newer than this inkan ({known}): upgrade inkan")]
    TooNew {
        /// Version in the database.
        found: i64,
        /// Latest version this build knows.
        known: i64,
    },
    /// A write in a read transaction (a bug in the caller).
    #[error("a write was attempted in a read transaction")]
    ReadOnly,
    /// Any other failure of the database.
    #[error("database error: {0}")]
    Failed(String),
}

/// The end of a transaction.
#[async_trait]
pub trait Transaction: Send {
    /// Makes every write of the transaction durable, at once.
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

/// One transaction over every table the domain keeps.
pub trait Tx:
    Transaction + UserStore + AuditStore + ClientStore + SessionStore + CardStore + DeviceStore + TicketStore + RegcodeStore
{
}

/// A transaction that only appends to the audit log (the group-commit writer's).
pub trait AuditTx: Transaction + AuditStore {}

/// A connection of its own for the audit log's group-commit writer, so that
/// request transactions never wait for its syncs.
#[async_trait]
pub trait AuditLog: Send {
    /// Starts a write transaction on this connection.
    async fn write(&mut self) -> Result<Box<dyn AuditTx + '_>, StoreError>;
    /// Called when no row waits: a moment for maintenance (SQLite checkpoints its WAL).
    async fn idle(&mut self) -> Result<(), StoreError>;
}

/// A database: transactions, plus the short-lived state a login or a CSC
/// authorization keeps for a few minutes.
#[async_trait]
pub trait Store: Send + Sync {
    /// A read transaction: a consistent view; writes in it fail.
    async fn read(&self) -> Result<Box<dyn Tx + '_>, StoreError>;
    /// A write transaction, serialised with every other writer.
    async fn write(&self) -> Result<Box<dyn Tx + '_>, StoreError>;
    /// A separate connection for the audit log's group-commit writer.
    async fn audit_log(&self) -> Result<Box<dyn AuditLog>, StoreError>;
    /// Pending OpenID Connect requests and authorization codes.
    fn oidc(&self) -> &dyn OidcStore;
    /// CSC signature activation data.
    fn sads(&self) -> &dyn SadStore;
    /// Tells caches of auth sessions that something changed.
    fn invalidation(&self) -> Arc<dyn Invalidation>;
    /// Whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Where the data lives, for messages (`sqlite:var/inkan.db`).
    fn describe(&self) -> String;
}

/// Opens the configured store (SQLite at `[store] path`), creating and
/// migrating it as needed.
pub fn open(config: &Config) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(sqlite::SqliteStore::open(&config.store_path(), config.store.synchronous)?))
}

/// Opens the configured store only if its database exists (for commands that
/// must not create one).
pub fn exists(config: &Config) -> bool {
    config.store_path().exists()
}
