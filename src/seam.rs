//! The storage seam: what every domain area builds its storage on (the error,
//! the transaction, and how transactions are opened). The stores that
//! implement it are in [`crate::store`].
//!
//! Each domain area declares the storage it needs as a trait next to its own
//! code ([`UserStore`](crate::users::UserStore), [`AuditStore`](crate::audit::AuditStore),
//! [`SessionStore`](crate::auth::sessions::SessionStore), ...), and its
//! operations take a [`Transactions`] source of any transaction type that has
//! those traits. [`crate::store`] composes every area's traits into one
//! transaction type and implements it (SQLite); the domain never names it, so
//! the dependencies run one way: domain → seam ← store.
//!
//! A transaction is an object: the domain reads, decides and writes inside it,
//! and [`Transaction::commit`] makes it durable (a transaction dropped without
//! a commit is rolled back). Writers are serialised: what a write transaction
//! has read stays true until it commits. Keep transactions short and never
//! wait for anything but the store inside one (no token calls, no network).
//! The traits are async so that a networked database does not block the
//! service's workers; the SQLite backend answers at once.

use async_trait::async_trait;

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
    /// A write was attempted in a read transaction (a bug in the caller).
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

/// Opens transactions of type `T`: a trait object of the storage traits a
/// domain operation needs (for the service, every area's; see [`crate::store`]).
#[async_trait]
pub trait Transactions<T: ?Sized + Send>: Send + Sync {
    /// A read transaction: a consistent view; writes in it fail.
    async fn read(&self) -> Result<Box<T>, StoreError>;
    /// A write transaction, serialised with every other writer.
    async fn write(&self) -> Result<Box<T>, StoreError>;
}
