//! The SQLite store: users, keys and the audit log.
//!
//! One file in WAL mode with `synchronous = FULL`: a committed transaction
//! survives a killed process and a power cut. The schema is migrated forward on
//! open (`PRAGMA user_version` counts the applied migrations).

mod migrations;

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

pub use rusqlite;

/// A store error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed (I/O, corruption, a constraint).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was written by a newer inkan.
    #[error("the database has schema version {found}, newer than this inkan ({known}): upgrade inkan")]
    TooNew {
        /// Version in the file.
        found: i64,
        /// Latest version this build knows.
        known: i64,
    },
    /// A stored value cannot be read back.
    #[error("stored data unreadable: {0}")]
    Corrupt(String),
}

/// A user (a doctor, dentist or pharmacist).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct User {
    /// User ID (本人ID), e.g. `999001-jpa`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Qualification (`doctor`, `dentist`, `pharmacist`).
    pub qualification: String,
    /// `active` or `disabled`.
    pub status: String,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
}

/// A key generation of a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// Owner.
    pub user_id: String,
    /// 1, 2, ... per user.
    pub generation: i64,
    /// `rsa2048`, `rsa3072`, `p256`.
    pub algorithm: String,
    /// `CKA_ID` in the token.
    pub token_id: Vec<u8>,
    /// DER SubjectPublicKeyInfo.
    pub public_key: Vec<u8>,
    /// DER PKCS#10 request.
    pub csr: Vec<u8>,
    /// DER certificate, once imported.
    pub certificate: Option<Vec<u8>>,
    /// `pending`, `active` or `retired`.
    pub state: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub activated_at: Option<i64>,
    /// Unix milliseconds.
    pub retired_at: Option<i64>,
}

/// The database.
pub struct Store {
    conn: Connection,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.conn.path()).finish()
    }
}

const KEY_COLUMNS: &str =
    "user_id, generation, algorithm, token_id, public_key, csr, certificate, state, created_at, activated_at, retired_at";

fn key_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRecord> {
    Ok(KeyRecord {
        user_id: row.get(0)?,
        generation: row.get(1)?,
        algorithm: row.get(2)?,
        token_id: row.get(3)?,
        public_key: row.get(4)?,
        csr: row.get(5)?,
        certificate: row.get(6)?,
        state: row.get(7)?,
        created_at: row.get(8)?,
        activated_at: row.get(9)?,
        retired_at: row.get(10)?,
    })
}

fn user_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        name: row.get(1)?,
        qualification: row.get(2)?,
        status: row.get(3)?,
        created_at: row.get(4)?,
    })
}

impl Store {
    /// Opens (creating if needed) and migrates the database file, with `synchronous = FULL`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with(path, crate::config::Synchronous::Full)
    }

    /// Opens with a chosen durability level.
    pub fn open_with(path: &Path, synchronous: crate::config::Synchronous) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                        Some(format!("cannot create {}: {e}", dir.display())),
                    )
                })?;
            }
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let level = match synchronous {
            crate::config::Synchronous::Full => "FULL",
            crate::config::Synchronous::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", level)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Reads of the database file through a memory map: no read() per page when
        // another connection's commit has emptied this connection's page cache.
        conn.pragma_update(None, "mmap_size", 256i64 << 20)?;
        let mut store = Store { conn };
        migrations::migrate(&mut store.conn)?;
        Ok(store)
    }

    /// Runs `f` in an immediate (write-locking) transaction and commits it.
    pub fn write<T>(&mut self, f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }

    /// The underlying connection (reads).
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// A user by ID.
    pub fn user(&self, id: &str) -> Result<Option<User>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, name, qualification, status, created_at FROM users WHERE id = ?1",
                [id],
                user_from_row,
            )
            .optional()?)
    }

    /// All users, by ID.
    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        let mut stmt =
            self.conn.prepare("SELECT id, name, qualification, status, created_at FROM users ORDER BY id")?;
        let rows = stmt.query_map([], user_from_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Keys of one user (or of everyone), oldest generation first.
    pub fn keys(&self, user_id: Option<&str>) -> Result<Vec<KeyRecord>, StoreError> {
        let sql =
            format!("SELECT {KEY_COLUMNS} FROM keys WHERE (?1 IS NULL OR user_id = ?1) ORDER BY user_id, generation");
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([user_id], key_from_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The user's active key, if any.
    pub fn active_key(&self, user_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM keys WHERE user_id = ?1 AND state = 'active'");
        Ok(self.conn.query_row(&sql, [user_id], key_from_row).optional()?)
    }
}

/// Writes inside a transaction.
pub mod tx {
    use super::*;

    /// Inserts a user.
    pub fn insert_user(tx: &Transaction<'_>, user: &User) -> Result<(), StoreError> {
        tx.execute(
            "INSERT INTO users (id, name, qualification, status, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![user.id, user.name, user.qualification, user.status, user.created_at],
        )?;
        Ok(())
    }

    /// Sets a user's status.
    pub fn set_user_status(tx: &Transaction<'_>, id: &str, status: &str) -> Result<usize, StoreError> {
        Ok(tx.execute("UPDATE users SET status = ?2 WHERE id = ?1", params![id, status])?)
    }

    /// Inserts a key generation.
    pub fn insert_key(tx: &Transaction<'_>, key: &KeyRecord) -> Result<(), StoreError> {
        tx.execute(
            &format!("INSERT INTO keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
            params![
                key.user_id,
                key.generation,
                key.algorithm,
                key.token_id,
                key.public_key,
                key.csr,
                key.certificate,
                key.state,
                key.created_at,
                key.activated_at,
                key.retired_at
            ],
        )?;
        Ok(())
    }

    /// The next generation number of a user's keys.
    pub fn next_generation(tx: &Transaction<'_>, user_id: &str) -> Result<i64, StoreError> {
        Ok(tx.query_row("SELECT COALESCE(MAX(generation), 0) + 1 FROM keys WHERE user_id = ?1", [user_id], |r| {
            r.get(0)
        })?)
    }

    /// Retires the user's active key (if any); returns its generation.
    pub fn retire_active(tx: &Transaction<'_>, user_id: &str, at: i64) -> Result<Option<i64>, StoreError> {
        let generation: Option<i64> = tx
            .query_row("SELECT generation FROM keys WHERE user_id = ?1 AND state = 'active'", [user_id], |r| r.get(0))
            .optional()?;
        if let Some(g) = generation {
            retire(tx, user_id, g, at)?;
        }
        Ok(generation)
    }

    /// Retires one generation.
    pub fn retire(tx: &Transaction<'_>, user_id: &str, generation: i64, at: i64) -> Result<usize, StoreError> {
        Ok(tx.execute(
            "UPDATE keys SET state = 'retired', retired_at = ?3 WHERE user_id = ?1 AND generation = ?2 AND state != 'retired'",
            params![user_id, generation, at],
        )?)
    }

    /// Makes a pending key active with its certificate.
    pub fn activate(
        tx: &Transaction<'_>,
        user_id: &str,
        generation: i64,
        certificate: &[u8],
        at: i64,
    ) -> Result<usize, StoreError> {
        Ok(tx.execute(
            "UPDATE keys SET state = 'active', certificate = ?3, activated_at = ?4 WHERE user_id = ?1 AND generation = ?2 AND state = 'pending'",
            params![user_id, generation, certificate, at],
        )?)
    }
}
