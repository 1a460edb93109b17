//! The PostgreSQL backend: one database shared by every node.
//!
//! Requests take connections from a pool (`[store] max_connections`, 16 by
//! default); the audit log's group-commit writer and the session cache's
//! listener have a connection each besides. TLS to the database is rustls,
//! verifying the server against `[store] ca`.
//!
//! **Transactions.** A read transaction is `REPEATABLE READ READ ONLY`: one
//! consistent snapshot (the audit verification reads the whole chain in
//! pages). A write transaction takes one transaction-scoped advisory lock
//! first, so writers are serialised across every node and every CLI process,
//! as with SQLite: what a write transaction has read stays true until it
//! commits. The audit writer's transactions do not take it; they lock the
//! chain's head row (`audit_head ... FOR UPDATE`), as request transactions
//! that append audit rows do, so two nodes never fork the chain. Writing
//! transactions commit with `synchronous_commit = on` whatever the server's
//! default. A transaction dropped without a commit (also a request's future
//! dropped mid-query) is rolled back on a task of its own before its
//! connection goes back to the pool; a transaction left idle on a connection
//! whose node died is ended by PostgreSQL after 10 s, and a lock is waited
//! for 5 s at most (`connect.rs`).
//!
//! **Short-lived state** (pending OpenID Connect requests and codes, CSC SADs)
//! lives in `UNLOGGED` tables ([`short`]): any node can finish a login another
//! began, a code or SAD is taken with one `DELETE ... RETURNING` (once, across
//! nodes), and nothing is written to the WAL for them: a PostgreSQL crash or
//! fail-over forgets logins in flight, which are started again.
//!
//! **Invalidation** of auth-session caches is a version row bumped with a
//! `NOTIFY` ([`epoch`]): every node listens, and also reads the row every
//! 200 ms, so a change made anywhere reaches every node's cache within a
//! second even when a notification is lost.
//!
//! **Schema.** `migrations.rs` moves the schema forward on open, under an
//! advisory lock (two nodes starting at once migrate once), with the same
//! versions as the SQLite schema; a test compares the two.

mod audit;
mod cards;
mod clients;
pub mod connect;
mod devices;
pub mod epoch;
mod migrations;
mod regcodes;
mod row;
mod sessions;
pub mod short;
mod tickets;
mod users;

use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{Object, Pool, PoolError};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::audit::{AuditLog, AuditTx};
use crate::auth::oidc::OidcStore;
use crate::auth::sad::SadStore;
use crate::auth::sessions::Invalidation;
use crate::config::StoreConfig;
use crate::seam::{StoreError, Transaction, Transactions};
use crate::store::{Store, Tx};

use connect::Connect;

/// The advisory lock every write transaction takes (`pg_advisory_xact_lock`):
/// "inkan" and 1 (writers).
const WRITE_LOCK: i64 = 0x696e_6b61_6e00_0001;

/// How a write transaction begins: with the write lock.
static WRITE_BEGIN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("BEGIN; SET LOCAL synchronous_commit = on; SELECT pg_advisory_xact_lock({WRITE_LOCK})")
});

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            let message = format!("{} ({code})", db.message());
            return match &code[..2] {
                // integrity constraint violations
                "23" => StoreError::Conflict(message),
                // serialization failure, deadlock; connection exceptions; too
                // many connections, disk full; shutting down, starting up;
                // lock not available; wrong credentials
                "40" | "08" | "53" | "57" | "55" | "28" => StoreError::Unavailable(message),
                _ => StoreError::Failed(message),
            };
        }
        let source = std::error::Error::source(&e);
        let io = source.is_some_and(|s| s.is::<std::io::Error>());
        // The cause says what to do (refused, unknown CA, timed out).
        let message = match source {
            Some(cause) => format!("PostgreSQL: {e}: {cause}"),
            None => format!("PostgreSQL: {e}"),
        };
        if e.is_closed() || io {
            StoreError::Unavailable(message)
        } else {
            StoreError::Failed(message)
        }
    }
}

impl From<PoolError> for StoreError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => e.into(),
            PoolError::Timeout(_) => {
                StoreError::Unavailable(format!("no PostgreSQL connection within {} s", connect::POOL_WAIT.as_secs()))
            }
            PoolError::Closed => StoreError::Unavailable("the PostgreSQL pool is closed".into()),
            other => StoreError::Failed(format!("PostgreSQL pool: {other}")),
        }
    }
}

/// The PostgreSQL store.
pub struct PgStore {
    connect: Connect,
    pool: Pool,
    short: Arc<short::Short>,
    epoch: Arc<epoch::PgEpoch>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("url", &self.connect.shown()).finish()
    }
}

impl PgStore {
    /// Connects, migrates the schema and starts listening for changes of the
    /// auth state. Needs a tokio runtime.
    pub async fn open(store: &StoreConfig) -> Result<PgStore, StoreError> {
        let connect = Connect::new(store)?;
        let pool = connect.pool(store.max_connections as usize)?;
        {
            let mut conn = pool.get().await?;
            migrations::migrate(&mut conn).await?;
        }
        let epoch = epoch::PgEpoch::start(connect.clone(), pool.clone());
        Ok(PgStore { short: Arc::new(short::Short::new(pool.clone())), connect, pool, epoch })
    }

    async fn begin(&self, mode: Mode) -> Result<PgTx, StoreError> {
        PgTx::begin(self.pool.get().await?, mode).await
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.epoch.stop();
    }
}

#[async_trait]
impl Transactions<dyn Tx> for PgStore {
    async fn read(&self) -> Result<Box<dyn Tx>, StoreError> {
        Ok(Box::new(self.begin(Mode::Read).await?))
    }

    async fn write(&self) -> Result<Box<dyn Tx>, StoreError> {
        Ok(Box::new(self.begin(Mode::Write).await?))
    }
}

#[async_trait]
impl Store for PgStore {
    fn tx(&self) -> &dyn Transactions<dyn Tx> {
        self
    }

    async fn audit_log(&self) -> Result<Box<dyn AuditLog>, StoreError> {
        Ok(Box::new(PgAuditLog { pool: self.connect.pool(1)? }))
    }

    fn oidc(&self) -> Arc<dyn OidcStore> {
        Arc::clone(&self.short) as Arc<dyn OidcStore>
    }

    fn sads(&self) -> Arc<dyn SadStore> {
        Arc::clone(&self.short) as Arc<dyn SadStore>
    }

    fn invalidation(&self) -> Arc<dyn Invalidation> {
        Arc::clone(&self.epoch) as Arc<dyn Invalidation>
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let conn = self.pool.get().await?;
        conn.simple_query("SELECT 1").await?;
        Ok(())
    }

    fn describe(&self) -> String {
        self.connect.shown().to_owned()
    }

    async fn snapshot(&self, _to: &std::path::Path) -> Result<crate::store::Snapshot, StoreError> {
        Ok(crate::store::Snapshot::External(format!(
            "pg_dump --format=custom --file=inkan.pgdump '{}' (after this backup: the database must not be older \
             than the token's copy; with a streaming standby, its base backup and WAL archive instead)",
            self.connect.shown()
        )))
    }
}

/// What a transaction may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// A consistent snapshot; writes fail.
    Read,
    /// Serialised with every other writer (the write lock).
    Write,
    /// The audit writer's: serialised with other appenders by the chain head's row lock.
    Append,
}

/// A transaction on a pooled connection.
pub struct PgTx {
    /// `None` once handed to the rollback task.
    conn: Option<Object>,
    mode: Mode,
    /// The `BEGIN` (with the write lock) not yet sent: it goes in one round
    /// trip with the first read, or alone before the first write.
    pending: Option<&'static str>,
    /// Begun and neither committed nor rolled back.
    open: bool,
}

/// What a transaction of each mode begins with.
fn begin_sql(mode: Mode) -> &'static str {
    match mode {
        Mode::Read => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        Mode::Write => WRITE_BEGIN.as_str(),
        // A commit is acknowledged only once it is flushed (and, with
        // synchronous standbys, on them), whatever the server's default.
        Mode::Append => "BEGIN; SET LOCAL synchronous_commit = on",
    }
}

impl PgTx {
    async fn begin(conn: Object, mode: Mode) -> Result<PgTx, StoreError> {
        Ok(PgTx { conn: Some(conn), mode, pending: Some(begin_sql(mode)), open: false })
    }

    /// The connection (present until the transaction ends).
    fn client(&self) -> Result<&Object, StoreError> {
        self.conn.as_ref().ok_or_else(|| StoreError::Failed("the transaction has ended".into()))
    }

    /// Sends the `BEGIN` if it has not gone yet.
    async fn begun(&mut self) -> Result<(), StoreError> {
        if let Some(begin) = self.pending.take() {
            // Part of it may succeed: from now on a drop rolls back.
            self.open = true;
            self.client()?.batch_execute(begin).await?;
        }
        Ok(())
    }

    /// Whether this transaction may write.
    fn writable(&self) -> bool {
        self.mode != Mode::Read
    }

    /// `FOR UPDATE` in a writing transaction (a read-only one may not lock).
    fn lock_clause(&self) -> &'static str {
        if self.writable() {
            " FOR UPDATE"
        } else {
            ""
        }
    }

    /// Rows of a query; the first read of a transaction carries its `BEGIN`
    /// (pipelined: sent first, answered first, one round trip for both).
    async fn rows(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        let stmt = self.client()?.prepare_cached(sql).await?;
        let pending = self.pending.take();
        if pending.is_some() {
            // From the moment the BEGIN may be sent, a drop (also of this
            // future, when a client goes away) rolls back.
            self.open = true;
        }
        let client = self.client()?;
        let result = match pending {
            Some(begin) => {
                let (begun, rows) = tokio::join!(biased; client.batch_execute(begin), client.query(&stmt, params));
                begun?;
                rows
            }
            None => client.query(&stmt, params).await,
        };
        match result {
            Ok(rows) => Ok(rows),
            // Text with a NUL byte, which PostgreSQL cannot hold, matches no
            // row (as it finds none in SQLite).
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::CHARACTER_NOT_IN_REPERTOIRE) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// At most one row of a query.
    async fn row(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, StoreError> {
        let mut rows = self.rows(sql, params).await?;
        if rows.len() > 1 {
            return Err(StoreError::Corrupt(format!("{} rows where one was expected", rows.len())));
        }
        Ok(rows.pop())
    }

    /// A write; returns the rows it changed. Refused in a read transaction.
    async fn exec(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        if !self.writable() {
            return Err(StoreError::ReadOnly);
        }
        self.begun().await?;
        let client = self.client()?;
        let stmt = client.prepare_cached(sql).await?;
        Ok(client.execute(&stmt, params).await?)
    }

    /// A write that returns rows. Refused in a read transaction.
    async fn exec_rows(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        if !self.writable() {
            return Err(StoreError::ReadOnly);
        }
        self.begun().await?;
        self.rows(sql, params).await
    }
}

impl Drop for PgTx {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if !self.open {
            return;
        }
        // Roll back before the connection goes back to the pool; without a
        // runtime (or when that fails), close it: the server rolls back.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = conn.batch_execute("ROLLBACK").await {
                        tracing::debug!("rollback failed, connection closed: {e}");
                        drop(Object::take(conn));
                    }
                });
            }
            Err(_) => drop(Object::take(conn)),
        }
    }
}

#[async_trait]
impl Transaction for PgTx {
    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        if self.pending.take().is_some() {
            // Nothing was read or written: nothing to commit.
            return Ok(());
        }
        let result = self.client()?.batch_execute("COMMIT").await;
        match result {
            Ok(()) => {
                self.open = false;
                Ok(())
            }
            Err(e) => {
                // A failed COMMIT leaves nothing open; a lost connection is
                // not reused.
                self.open = false;
                if let Some(conn) = self.conn.take() {
                    drop(Object::take(conn));
                }
                Err(e.into())
            }
        }
    }
}

impl Tx for PgTx {}

/// The audit writer's own connection (a pool of one, which reconnects after
/// the database comes back).
struct PgAuditLog {
    pool: Pool,
}

#[async_trait]
impl AuditLog for PgAuditLog {
    async fn write(&mut self) -> Result<Box<dyn AuditTx + '_>, StoreError> {
        Ok(Box::new(PgTx::begin(self.pool.get().await?, Mode::Append).await?))
    }

    async fn idle(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The condition of a query over everyone's rows or one user's: `$n IS NULL`
/// without a user, `column = $n` with one (so that the column's index is
/// used whatever plan the server caches for the statement).
pub(super) fn user_filter(user_id: Option<&str>, column: &str, n: usize) -> String {
    match user_id {
        Some(_) => format!("{column} = ${n}"),
        None => format!("${n}::TEXT IS NULL"),
    }
}
