//! The SQLite backend: the embedded default for one node.
//!
//! One database file in WAL mode (`synchronous = FULL` unless configured): a
//! committed transaction survives a killed process and a power cut. The schema
//! is migrated forward on open (`PRAGMA user_version` counts the applied
//! migrations, see `migrations.rs`). Requests share one connection (writes
//! are serialised by SQLite anyway; reads are short); the audit log's
//! group-commit writer has a connection of its own, so requests never wait for
//! its syncs. Write transactions are `BEGIN IMMEDIATE`: what they read stays
//! true until they commit, also against other processes (the CLI).
//!
//! Short-lived state (pending OpenID Connect requests and codes, CSC SADs)
//! lives in this process's memory ([`super::memory`]): one node has no one to
//! share it with, and a login in flight when the process stops is simply
//! started again. Caches of auth sessions learn of changes through a small
//! epoch file beside the database ([`epoch`]), which the CLI replaces after
//! every command.
//!
//! One file per domain area implements that area's storage trait for
//! [`SqliteTx`].

mod audit;
mod cards;
mod clients;
mod devices;
pub mod epoch;
mod migrations;
mod regcodes;
mod sessions;
mod tickets;
mod users;

use std::ops::DerefMut;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode};

use crate::audit::{AuditLog, AuditTx};
use crate::auth::oidc::OidcStore;
use crate::auth::sad::SadStore;
use crate::auth::sessions::Invalidation;
use crate::config::Synchronous;
use crate::seam::{StoreError, Transaction, Transactions};
use crate::store::{Store, Tx};

use super::memory::Memory;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _) => match f.code {
                ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::CannotOpen
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::ReadOnly
                | ErrorCode::PermissionDenied => StoreError::Unavailable(e.to_string()),
                ErrorCode::ConstraintViolation => StoreError::Conflict(e.to_string()),
                ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => StoreError::Corrupt(e.to_string()),
                _ => StoreError::Failed(e.to_string()),
            },
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..) => StoreError::Corrupt(e.to_string()),
            _ => StoreError::Failed(e.to_string()),
        }
    }
}

/// The SQLite store.
pub struct SqliteStore {
    path: PathBuf,
    synchronous: Synchronous,
    conn: Arc<tokio::sync::Mutex<Connection>>,
    memory: Arc<Memory>,
    epoch: Arc<epoch::EpochFile>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish()
    }
}

/// Statements kept prepared per connection.
const STATEMENT_CACHE: usize = 64;

/// Opens a connection with inkan's settings and migrates the schema.
fn connect(path: &Path, synchronous: Synchronous) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
        }
    }
    // A new database is made readable by its owner only; SQLite gives its
    // -wal and -shm files the database file's mode.
    if !path.exists() {
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StoreError::Unavailable(format!("cannot create {}: {e}", path.display()))),
        }
    }
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let level = match synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", level)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Reads of the database file through a memory map: no read() per page when
    // another connection's commit has emptied this connection's page cache.
    conn.pragma_update(None, "mmap_size", 256i64 << 20)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    migrations::migrate(&mut conn)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database file.
    pub fn open(path: &Path, synchronous: Synchronous) -> Result<SqliteStore, StoreError> {
        let conn = connect(path, synchronous)?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            synchronous,
            conn: Arc::new(tokio::sync::Mutex::new(conn)),
            memory: Arc::new(Memory::default()),
            epoch: Arc::new(epoch::EpochFile::new(epoch::path_for(path))),
        })
    }

    async fn begin(&self, writable: bool) -> Result<SqliteTx<Shared>, StoreError> {
        SqliteTx::begin(Arc::clone(&self.conn).lock_owned().await, writable)
    }
}

/// The shared connection, held by one transaction at a time.
type Shared = tokio::sync::OwnedMutexGuard<Connection>;

#[async_trait]
impl Transactions<dyn Tx> for SqliteStore {
    async fn read(&self) -> Result<Box<dyn Tx>, StoreError> {
        Ok(Box::new(self.begin(false).await?))
    }

    async fn write(&self) -> Result<Box<dyn Tx>, StoreError> {
        Ok(Box::new(self.begin(true).await?))
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn tx(&self) -> &dyn Transactions<dyn Tx> {
        self
    }

    async fn audit_log(&self) -> Result<Box<dyn AuditLog>, StoreError> {
        Ok(Box::new(SqliteAuditLog { conn: connect(&self.path, self.synchronous)? }))
    }

    fn oidc(&self) -> Arc<dyn OidcStore> {
        Arc::clone(&self.memory) as Arc<dyn OidcStore>
    }

    fn sads(&self) -> Arc<dyn SadStore> {
        Arc::clone(&self.memory) as Arc<dyn SadStore>
    }

    fn invalidation(&self) -> Arc<dyn Invalidation> {
        Arc::clone(&self.epoch) as Arc<dyn Invalidation>
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let conn = self.conn.lock().await;
        conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    async fn snapshot(&self, to: &Path) -> Result<crate::store::Snapshot, StoreError> {
        // A connection of its own: the copy is one read transaction (WAL:
        // writers go on), and the store's shared connection stays free.
        let conn = connect(&self.path, self.synchronous)?;
        let target = to.to_str().ok_or_else(|| StoreError::Failed(format!("{} is not UTF-8", to.display())))?;
        conn.execute("VACUUM INTO ?1", [target])?;
        Ok(crate::store::Snapshot::Written)
    }
}

/// A transaction on a connection (the shared one, or the audit writer's).
pub struct SqliteTx<C: DerefMut<Target = Connection> + Send> {
    conn: C,
    writable: bool,
    /// Begun and neither committed nor rolled back.
    open: bool,
}

impl<C: DerefMut<Target = Connection> + Send> SqliteTx<C> {
    fn begin(conn: C, writable: bool) -> Result<Self, StoreError> {
        conn.execute_batch(if writable { "BEGIN IMMEDIATE" } else { "BEGIN DEFERRED" })?;
        Ok(SqliteTx { conn, writable, open: true })
    }

    /// The connection, for reads.
    fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The connection, for writes: refused in a read transaction.
    fn writing(&self) -> Result<&Connection, StoreError> {
        if self.writable {
            Ok(&self.conn)
        } else {
            Err(StoreError::ReadOnly)
        }
    }
}

impl<C: DerefMut<Target = Connection> + Send> Drop for SqliteTx<C> {
    fn drop(&mut self) {
        if self.open {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::warn!("rollback failed: {e}");
            }
        }
    }
}

#[async_trait]
impl<C: DerefMut<Target = Connection> + Send> Transaction for SqliteTx<C> {
    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        self.conn.execute_batch("COMMIT")?;
        self.open = false;
        Ok(())
    }
}

impl<C: DerefMut<Target = Connection> + Send> Tx for SqliteTx<C> {}

/// The audit writer's own connection.
struct SqliteAuditLog {
    conn: Connection,
}

#[async_trait]
impl AuditLog for SqliteAuditLog {
    async fn write(&mut self) -> Result<Box<dyn AuditTx + '_>, StoreError> {
        Ok(Box::new(SqliteTx::begin(&mut self.conn, true)?))
    }

    async fn idle(&mut self) -> Result<(), StoreError> {
        self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }
}

/// The condition of a query over everyone's rows or one user's: `?n IS NULL`
/// without a user, `column = ?n` with one (so that the column's index is
/// used: SQLite plans `?n IS NULL OR column = ?n` as a scan of the table).
pub(super) fn user_filter(user_id: Option<&str>, column: &str, n: usize) -> String {
    match user_id {
        Some(_) => format!("{column} = ?{n}"),
        None => format!("?{n} IS NULL"),
    }
}

/// Reads an optional row.
fn optional<T>(r: rusqlite::Result<T>) -> Result<Option<T>, StoreError> {
    use rusqlite::OptionalExtension;
    Ok(r.optional()?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A store in a temporary directory.
    pub fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("t.db"), Synchronous::Full).expect("open");
        (dir, store)
    }

    /// Runs a future to completion (SQLite's are ready at once).
    pub fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f)
    }

    #[test]
    fn a_dropped_transaction_is_rolled_back_and_reads_refuse_writes() {
        let (_dir, store) = store();
        run(async {
            let user = crate::users::User {
                id: "u1".into(),
                name: "n".into(),
                qualification: "doctor".into(),
                status: crate::users::UserStatus::Active,
                created_at: 1,
            };
            {
                let mut tx = store.write().await.expect("write");
                tx.insert_user(&user).await.expect("insert");
            }
            assert!(store.read().await.expect("read").user("u1").await.expect("user").is_none());
            let mut tx = store.write().await.expect("write");
            tx.insert_user(&user).await.expect("insert");
            tx.commit().await.expect("commit");
            assert_eq!(store.read().await.expect("read").user("u1").await.expect("user"), Some(user.clone()));
            let err = store.read().await.expect("read").insert_user(&user).await.expect_err("read-only");
            assert!(matches!(err, StoreError::ReadOnly), "{err}");
            let mut tx = store.write().await.expect("write");
            let err = tx.insert_user(&user).await.expect_err("duplicate");
            assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        });
    }
}
