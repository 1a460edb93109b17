//! The stores: every domain area's storage traits (the [`crate::seam`]) composed into one
//! transaction type ([`Tx`]) and one store ([`Store`]), and their
//! implementations.
//!
//! The areas declare what they need next to their code: users and keys
//! ([`UserStore`]), the audit log ([`AuditStore`], and [`AuditLog`] for the
//! group-commit writer's own connection), clients ([`ClientStore`]), sessions
//! ([`SessionStore`]), card mappings ([`CardStore`]), phones ([`DeviceStore`]),
//! tickets ([`TicketStore`]), registration codes ([`RegcodeStore`]), and for
//! short-lived state, pending logins ([`OidcStore`]), SADs ([`SadStore`]) and
//! the session cache's [`Invalidation`]. [`sqlite`] implements them all for one
//! node, with [`memory`] for its short-lived state; [`postgres`] implements
//! them for several nodes sharing one database. Nothing outside `store/` names
//! a database driver.
//!
//! **Another backend**: a module here that implements [`Store`] and the area
//! traits for its transaction type, and a branch in
//! [`crate::setup::open_store`]. Nothing else changes.

pub mod memory;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::audit::{AuditLog, AuditStore};
use crate::auth::cards::CardStore;
use crate::auth::clients::ClientStore;
use crate::auth::oidc::OidcStore;
use crate::auth::sad::SadStore;
use crate::auth::sessions::{Invalidation, SessionStore};
use crate::fido::device::DeviceStore;
use crate::fido::regcode::RegcodeStore;
use crate::fido::ticket::TicketStore;
use crate::seam::{StoreError, Transaction, Transactions};
use crate::users::UserStore;

/// One transaction over every table the domain keeps.
pub trait Tx:
    Transaction + UserStore + AuditStore + ClientStore + SessionStore + CardStore + DeviceStore + TicketStore + RegcodeStore
{
}

/// A database: transactions over every area, the audit writer's connection,
/// and the short-lived state a login or a CSC authorization keeps for a few
/// minutes.
#[async_trait]
pub trait Store: Transactions<dyn Tx> {
    /// The store as a source of transactions (what domain operations take).
    fn tx(&self) -> &dyn Transactions<dyn Tx>;
    /// A separate connection for the audit log's group-commit writer.
    async fn audit_log(&self) -> Result<Box<dyn AuditLog>, StoreError>;
    /// Pending OpenID Connect requests and authorization codes.
    fn oidc(&self) -> Arc<dyn OidcStore>;
    /// CSC signature activation data.
    fn sads(&self) -> Arc<dyn SadStore>;
    /// Tells caches of auth sessions that something changed.
    fn invalidation(&self) -> Arc<dyn Invalidation>;
    /// Whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Where the data lives, for messages (`sqlite:var/inkan.db`).
    fn describe(&self) -> String;
    /// Copies the database as it stands at one instant, while others go on
    /// writing, into a new file `to` (SQLite: `VACUUM INTO`), or says how a
    /// database that is not a file is copied instead.
    async fn snapshot(&self, to: &std::path::Path) -> Result<Snapshot, StoreError>;
}

/// What [`Store::snapshot`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Snapshot {
    /// The database is in the file.
    Written,
    /// Not copied: the database server's own tools copy it (what to run).
    External(String),
}
