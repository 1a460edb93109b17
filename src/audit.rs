//! The audit log: append-only and hash-chained.
//!
//! Every row stores `hash = SHA-256(prev_hash || canonical(row))`, where
//! `prev_hash` is the previous row's hash (32 zero bytes for the first row) and
//! `canonical` is a length-prefixed encoding of every column. The last row's
//! sequence number and hash are also kept as the chain's head, updated in the
//! same transaction, so a deleted tail is detected as well as an edited,
//! inserted or deleted row in the middle. The store refuses updates and
//! deletes of rows (SQLite: triggers); the chain catches whoever gets around that.
//!
//! What the chain does not stop: someone with write access who recomputes every
//! hash after their edit. Anchoring the head outside the database (a MAC with a
//! key in the token, or periodic export) closes that and is planned.
//!
//! Rows of administrative changes are appended inside the change's own
//! transaction ([`append`]); the signatures' rows go through the group-commit
//! [`writer`], which shares one commit among the rows of concurrent requests.

pub mod writer;

use async_trait::async_trait;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::storage::{StoreError, Transaction, Transactions};

/// One audit event to append.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Event<'a> {
    /// Who acted: `cli:<os user>`, `client:<client>`, `user:<id>`.
    pub actor: &'a str,
    /// What happened: `user.add`, `key.generate`, `key.activate`, `sign`, ...
    pub event: &'a str,
    /// The user concerned.
    pub user_id: Option<&'a str>,
    /// The key generation concerned.
    pub generation: Option<i64>,
    /// For signatures: the signed digest, `sha256:<hex>`.
    pub digest: Option<&'a str>,
    /// `ok` or an error class.
    pub outcome: &'a str,
    /// More, as JSON (never a secret).
    pub detail: serde_json::Value,
}

/// A stored audit row.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Sequence number.
    pub seq: i64,
    /// Unix milliseconds.
    pub at: i64,
    /// See [`Event::actor`].
    pub actor: String,
    /// See [`Event::event`].
    pub event: String,
    /// See [`Event::user_id`].
    pub user_id: Option<String>,
    /// See [`Event::generation`].
    pub generation: Option<i64>,
    /// See [`Event::digest`].
    pub digest: Option<String>,
    /// See [`Event::outcome`].
    pub outcome: String,
    /// JSON text.
    pub detail: String,
}

/// A row with its chain links, as stored.
#[derive(Clone, Debug)]
pub struct ChainedRow {
    /// The row.
    pub row: Row,
    /// The previous row's hash.
    pub prev_hash: Vec<u8>,
    /// This row's hash.
    pub hash: Vec<u8>,
}

/// What the audit log needs from storage.
#[async_trait]
pub trait AuditStore: Send {
    /// The chain's head: the last row's sequence number and hash.
    async fn audit_head(&mut self) -> Result<Option<(i64, Vec<u8>)>, StoreError>;
    /// Inserts one row with its links.
    async fn insert_audit(&mut self, row: &Row, prev_hash: &[u8], hash: &[u8]) -> Result<(), StoreError>;
    /// Moves the chain's head.
    async fn set_audit_head(&mut self, seq: i64, hash: &[u8]) -> Result<(), StoreError>;
    /// Up to `limit` rows after `after_seq`, in order.
    async fn audit_rows(&mut self, after_seq: i64, limit: usize) -> Result<Vec<ChainedRow>, StoreError>;
    /// The latest rows, newest first (optionally of one user).
    async fn audit_tail(&mut self, user_id: Option<&str>, limit: i64) -> Result<Vec<Row>, StoreError>;
    /// Appends rows (in order, already chained to the head) and moves the
    /// head to the last: row by row unless the store can do it at once (a
    /// networked database in one statement).
    async fn append_audit(&mut self, rows: &[ChainedRow]) -> Result<(), StoreError> {
        for r in rows {
            self.insert_audit(&r.row, &r.prev_hash, &r.hash).await?;
        }
        if let Some(last) = rows.last() {
            self.set_audit_head(last.row.seq, &last.hash).await?;
        }
        Ok(())
    }
}

/// A transaction that only appends to the audit log (the group-commit writer's).
pub trait AuditTx: AuditStore + Transaction {}
impl<T: AuditStore + Transaction + ?Sized> AuditTx for T {}

/// A connection of its own for the audit log's group-commit writer, so that
/// request transactions never wait for its syncs.
#[async_trait]
pub trait AuditLog: Send {
    /// Starts a write transaction on this connection.
    async fn write(&mut self) -> Result<Box<dyn AuditTx + '_>, StoreError>;
    /// Called when no row waits: a moment for maintenance (SQLite checkpoints its WAL).
    async fn idle(&mut self) -> Result<(), StoreError>;
}

fn canonical(prev: &[u8], row: &Row) -> [u8; 32] {
    fn field(h: &mut Sha256, v: Option<&[u8]>) {
        match v {
            None => h.update([0u8]),
            Some(b) => {
                h.update([1u8]);
                h.update((b.len() as u64).to_be_bytes());
                h.update(b);
            }
        }
    }
    let mut h = Sha256::new();
    h.update(prev);
    h.update(row.seq.to_be_bytes());
    h.update(row.at.to_be_bytes());
    field(&mut h, Some(row.actor.as_bytes()));
    field(&mut h, Some(row.event.as_bytes()));
    field(&mut h, row.user_id.as_deref().map(str::as_bytes));
    field(&mut h, row.generation.map(|g| g.to_be_bytes()).as_ref().map(|b| &b[..]));
    field(&mut h, row.digest.as_deref().map(str::as_bytes));
    field(&mut h, Some(row.outcome.as_bytes()));
    field(&mut h, Some(row.detail.as_bytes()));
    h.finalize().into()
}

/// Appends events in order inside the caller's transaction; returns the last
/// sequence number.
pub async fn append<A: AuditStore + ?Sized>(tx: &mut A, at: i64, events: &[Event<'_>]) -> Result<i64, StoreError> {
    Ok(append_groups(tx, &[(at, events)]).await?.pop().unwrap_or_default())
}

/// Appends groups of events (each with its own time) in order inside the
/// caller's transaction, reading and moving the chain head once; returns each
/// group's last sequence number.
pub async fn append_groups<A: AuditStore + ?Sized>(
    tx: &mut A,
    groups: &[(i64, &[Event<'_>])],
) -> Result<Vec<i64>, StoreError> {
    let (mut seq, mut prev) = tx.audit_head().await?.unwrap_or((0, vec![0u8; 32]));
    let mut last = Vec::with_capacity(groups.len());
    let mut rows = Vec::with_capacity(groups.iter().map(|(_, e)| e.len()).sum());
    for (at, events) in groups {
        for e in *events {
            seq += 1;
            let row = Row {
                seq,
                at: *at,
                actor: e.actor.to_owned(),
                event: e.event.to_owned(),
                user_id: e.user_id.map(str::to_owned),
                generation: e.generation,
                digest: e.digest.map(str::to_owned),
                outcome: e.outcome.to_owned(),
                detail: e.detail.to_string(),
            };
            let hash = canonical(&prev, &row).to_vec();
            rows.push(ChainedRow { row, prev_hash: std::mem::replace(&mut prev, hash.clone()), hash });
        }
        last.push(seq);
    }
    tx.append_audit(&rows).await?;
    Ok(last)
}

/// What [`verify`] found.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    /// Rows checked.
    pub rows: i64,
    /// The first problem, if any.
    pub broken: Option<Broken>,
}

/// Where the chain breaks.
#[derive(Clone, Debug, Serialize)]
pub struct Broken {
    /// The row (sequence number) at which the chain breaks.
    pub seq: i64,
    /// What is wrong there.
    pub reason: String,
}

/// Rows read per transaction while verifying.
const VERIFY_PAGE: usize = 10_000;

/// Walks the whole chain, in pages of rows.
pub async fn verify<T: AuditTx + ?Sized>(store: &dyn Transactions<T>) -> Result<Verification, StoreError> {
    let mut prev = vec![0u8; 32];
    let mut expected_seq = 1;
    let mut count = 0;
    let broken = |seq: i64, reason: String| Ok(Verification { rows: seq - 1, broken: Some(Broken { seq, reason }) });
    let mut tx = store.read().await?;
    loop {
        let page = tx.audit_rows(expected_seq - 1, VERIFY_PAGE).await?;
        let done = page.len() < VERIFY_PAGE;
        for ChainedRow { row, prev_hash, hash } in page {
            if row.seq != expected_seq {
                return broken(expected_seq, format!("row {expected_seq} is missing (next row is {})", row.seq));
            }
            if prev_hash != prev {
                return broken(
                    row.seq,
                    "its prev_hash does not match the previous row: a row before it was changed or removed".into(),
                );
            }
            if canonical(&prev, &row)[..] != hash[..] {
                return broken(row.seq, "its contents do not match its hash: the row was edited".into());
            }
            prev = hash;
            expected_seq += 1;
            count += 1;
        }
        if done {
            break;
        }
    }
    match tx.audit_head().await? {
        None if count == 0 => {}
        None => return broken(count, "the chain head record is missing".into()),
        Some((seq, hash)) => {
            if seq != count || hash != prev {
                return broken(
                    count + 1,
                    format!(
                        "the log ends at row {count} but its head records row {seq}: rows were deleted from the end"
                    ),
                );
            }
        }
    }
    Ok(Verification { rows: count, broken: None })
}

/// The latest rows, newest first (optionally of one user).
pub async fn tail<T: AuditTx + ?Sized>(
    store: &dyn Transactions<T>,
    user_id: Option<&str>,
    limit: i64,
) -> Result<Vec<Row>, StoreError> {
    store.read().await?.audit_tail(user_id, limit).await
}
