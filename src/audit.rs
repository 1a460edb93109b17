//! The audit log: append-only and hash-chained.
//!
//! Every row stores `hash = SHA-256(prev_hash || canonical(row))`, where
//! `prev_hash` is the previous row's hash (32 zero bytes for the first row) and
//! `canonical` is a length-prefixed encoding of every column ([`row_hash`]). The last row's
//! sequence number and hash are also kept as the chain's head, updated in the
//! same transaction, so a deleted tail is detected as well as an edited,
//! inserted or deleted row in the middle. The store refuses updates and
//! deletes of rows (SQLite: triggers); the chain catches whoever gets around that.
//!
//! What the chain alone does not stop: someone with write access who
//! recomputes every hash after their edit. Seals close that ([`seal`]): the
//! head is MACed by a key that never leaves the token (`audit_seals`), each
//! seal chained to the one before, by the server within a second of every
//! commit and by the CLI after a command that wrote rows; [`verify`] checks
//! every seal against the row it names. A recomputed chain no longer matches
//! the seals after the edit, and a sealer never seals over it. What seals
//! alone do not stop: deleting the tail back to an older seal, or a rewrite
//! made while no inkan ran; the exported seals ([`seal::heads`], kept
//! elsewhere by the operator) catch those.
//!
//! Rows of administrative changes are appended inside the change's own
//! transaction ([`append`]); the signatures' rows go through the group-commit
//! [`writer`], which shares one commit among the rows of concurrent requests.

pub mod archive;
mod name;
pub mod seal;
pub mod stamp;
pub mod writer;

use std::borrow::Cow;

use async_trait::async_trait;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::seam::{StoreError, Transaction, Transactions};

pub use name::Name;

/// One audit event to append: borrowed where it is made in a transaction
/// ([`append`]), owned (`Event<'static>`) while it waits in the group-commit
/// writer's queue; stored, it is a [`Row`].
#[derive(Clone, Debug, Serialize)]
pub struct Event<'a> {
    /// Who acted: `cli:<os user>`, `client:<client>`, `user:<id>`.
    pub actor: Cow<'a, str>,
    /// What happened.
    pub event: Name,
    /// The user concerned.
    pub user_id: Option<Cow<'a, str>>,
    /// The key generation concerned.
    pub generation: Option<i64>,
    /// For signatures: the signed digest, `sha256:<hex>`.
    pub digest: Option<Cow<'a, str>>,
    /// `ok` or an error class.
    pub outcome: &'static str,
    /// More, as JSON (never a secret).
    pub detail: serde_json::Value,
}

impl<'a> Event<'a> {
    /// An event of `actor` named `event`, `ok`, about no user, key or
    /// digest, without detail: fields are then set with `..Event::new(..)`
    /// or [`Event::user`].
    pub fn new(actor: impl Into<Cow<'a, str>>, event: Name) -> Event<'a> {
        Event {
            actor: actor.into(),
            event,
            user_id: None,
            generation: None,
            digest: None,
            outcome: "ok",
            detail: serde_json::Value::Null,
        }
    }

    /// The event about `user_id`.
    pub fn user(mut self, user_id: impl Into<Cow<'a, str>>) -> Event<'a> {
        self.user_id = Some(user_id.into());
        self
    }

    /// The event with `detail`.
    pub fn detail(mut self, detail: serde_json::Value) -> Event<'a> {
        self.detail = detail;
        self
    }
}

/// A stored audit row, with its links in the hash chain.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Sequence number.
    pub seq: i64,
    /// Unix milliseconds (RFC 3339 in JSON).
    #[serde(serialize_with = "crate::clock::as_rfc3339")]
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
    /// The previous row's hash (not shown in listings).
    #[serde(skip)]
    pub prev_hash: Vec<u8>,
    /// This row's hash: [`row_hash`] of the previous one and this row's columns.
    #[serde(skip)]
    pub hash: Vec<u8>,
}

/// What the token MACs to seal row `seq` with chain hash `hash`, chained to
/// the previous seal's MAC (empty for the first seal): a seal removed from
/// the middle breaks the next one.
pub fn seal_input(seq: i64, hash: &[u8], prev_mac: &[u8]) -> Vec<u8> {
    let mut out = b"inkan audit seal v1\0".to_vec();
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&(hash.len() as u32).to_be_bytes());
    out.extend_from_slice(hash);
    out.extend_from_slice(prev_mac);
    out
}

/// A seal of the chain at row `seq`: the token's HMAC of the row's hash and
/// the previous seal's MAC ([`seal_input`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seal {
    /// The row sealed.
    pub seq: i64,
    /// Its hash (the chain up to it).
    pub hash: Vec<u8>,
    /// The previous seal's MAC (empty for the first).
    pub prev_mac: Vec<u8>,
    /// HMAC-SHA-256 of [`seal_input`] by the token's seal key.
    pub mac: Vec<u8>,
    /// When it was made (Unix ms).
    pub at: i64,
}

/// Why sealing stopped: kept in the token until an operator clears it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The row the sealer was checking.
    pub seq: i64,
    /// When it refused (Unix ms; RFC 3339 in JSON).
    #[serde(serialize_with = "crate::clock::as_rfc3339")]
    pub at: i64,
    /// What it found.
    pub reason: String,
}

/// What the token keeps about the audit log ([`seal::token_state`]).
#[derive(Clone, Debug, Default)]
pub struct TokenState {
    /// The last seal it recorded (the highest row).
    pub last: Option<Seal>,
    /// A refusal to seal, if one stands (the first).
    pub refusal: Option<Refusal>,
}

/// A time-stamp of the chain (RFC 3161) at a sealed row: its token's
/// imprint is that row's hash (SHA-256), so that it proves the row, and
/// through the chain every row before it, existed at the token's time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeStamp {
    /// The row stamped.
    pub seq: i64,
    /// Its hash (the token's imprint).
    pub hash: Vec<u8>,
    /// The token (DER `ContentInfo`), as the TSA sent it.
    pub token: Vec<u8>,
    /// When it was stored (Unix ms).
    pub at: i64,
}

/// An archived segment of the chain, as the live store keeps it: its rows
/// (through `seq`) are in a segment file ([`archive`]) and no longer here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Archived {
    /// Its first row.
    pub first: i64,
    /// Its last row: a sealed one.
    pub seq: i64,
    /// That row's hash: the live chain's first row links to it.
    #[serde(serialize_with = "hex_bytes")]
    pub hash: Vec<u8>,
    /// The MAC of that row's seal: the live chain's first seal links to it.
    #[serde(serialize_with = "hex_bytes")]
    pub seal_mac: Vec<u8>,
    /// SHA-256 of the segment file.
    #[serde(serialize_with = "hex_bytes")]
    pub segment: Vec<u8>,
    /// The segment file's name.
    pub file: String,
    /// When it was archived (Unix ms; RFC 3339 in JSON).
    #[serde(serialize_with = "crate::clock::as_rfc3339")]
    pub at: i64,
    /// The previous archive record's MAC (empty for the first).
    #[serde(serialize_with = "hex_bytes")]
    pub prev_mac: Vec<u8>,
    /// The token's seal key's HMAC of [`archive_input`].
    #[serde(serialize_with = "hex_bytes")]
    pub mac: Vec<u8>,
}

fn hex_bytes<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::encoding::hex(bytes))
}

/// What the token MACs for an archive record: its rows, the hash and seal
/// it ends at, the segment file's digest, chained to the record before.
pub fn archive_input(a: &Archived) -> Vec<u8> {
    let mut out = b"inkan audit archive v1\0".to_vec();
    out.extend_from_slice(&a.first.to_be_bytes());
    out.extend_from_slice(&a.seq.to_be_bytes());
    for part in [&a.hash[..], &a.seal_mac[..], &a.segment[..], a.file.as_bytes(), &a.prev_mac[..]] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// What the audit log needs from storage.
#[async_trait]
pub trait AuditStore: Send {
    /// The chain's head: the last row's sequence number and hash.
    async fn audit_head(&mut self) -> Result<Option<(i64, Vec<u8>)>, StoreError>;
    /// Inserts one row with its links.
    async fn insert_audit(&mut self, row: &Row) -> Result<(), StoreError>;
    /// Moves the chain's head.
    async fn set_audit_head(&mut self, seq: i64, hash: &[u8]) -> Result<(), StoreError>;
    /// Up to `limit` rows after `after_seq`, in order.
    async fn audit_rows(&mut self, after_seq: i64, limit: usize) -> Result<Vec<Row>, StoreError>;
    /// The latest rows, newest first (optionally of one user).
    async fn audit_tail(&mut self, user_id: Option<&str>, limit: i64) -> Result<Vec<Row>, StoreError>;
    /// Keeps a seal of the chain (append-only).
    async fn insert_audit_seal(&mut self, seal: &Seal) -> Result<(), StoreError>;
    /// Up to `limit` seals of rows after `after_seq`, in order.
    async fn audit_seals(&mut self, after_seq: i64, limit: usize) -> Result<Vec<Seal>, StoreError>;
    /// The last seal.
    async fn last_audit_seal(&mut self) -> Result<Option<Seal>, StoreError>;
    /// Keeps a time-stamp of the chain (append-only); false if that row
    /// has one already (another node stamped it).
    async fn insert_audit_timestamp(&mut self, stamp: &TimeStamp) -> Result<bool, StoreError>;
    /// Up to `limit` time-stamps of rows after `after_seq`, in order.
    async fn audit_timestamps(&mut self, after_seq: i64, limit: usize) -> Result<Vec<TimeStamp>, StoreError>;
    /// The time-stamp of the latest row.
    async fn last_audit_timestamp(&mut self) -> Result<Option<TimeStamp>, StoreError>;
    /// The last archive record, if any ([`Archived`]).
    async fn audit_archived(&mut self) -> Result<Option<Archived>, StoreError>;
    /// Every archive record, in order (one per `inkan audit archive` run).
    async fn audit_archives(&mut self) -> Result<Vec<Archived>, StoreError>;
    /// Keeps an archive record (append-only): rows through its `seq` may
    /// then be deleted.
    async fn insert_audit_archive(&mut self, archived: &Archived) -> Result<(), StoreError>;
    /// Deletes up to `limit` rows through `through` (archived ones), with
    /// their seals and time-stamps; returns how many rows it deleted.
    async fn prune_audit(&mut self, through: i64, limit: usize) -> Result<usize, StoreError>;
    /// Appends rows (in order, already chained to the head) and moves the
    /// head to the last: row by row unless the store can do it at once (a
    /// networked database in one statement).
    async fn append_audit(&mut self, rows: &[Row]) -> Result<(), StoreError> {
        for r in rows {
            self.insert_audit(r).await?;
        }
        if let Some(last) = rows.last() {
            self.set_audit_head(last.seq, &last.hash).await?;
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

/// A row's hash: SHA-256 of the previous row's hash and the row's columns,
/// each length-prefixed (`None` and empty text differ). Public: anyone may
/// recompute the chain; only the token can seal it.
pub fn row_hash(prev: &[u8], row: &Row) -> [u8; 32] {
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
    // Rows written for an HTTPS request name it (its id, in the detail).
    let request = crate::request_id::current().is_some();
    for (at, events) in groups {
        for e in *events {
            seq += 1;
            let mut row = Row {
                seq,
                at: *at,
                actor: e.actor.to_string(),
                event: e.event.as_str().to_owned(),
                user_id: e.user_id.as_deref().map(str::to_owned),
                generation: e.generation,
                digest: e.digest.as_deref().map(str::to_owned),
                outcome: e.outcome.to_owned(),
                detail: if request {
                    let mut detail = e.detail.clone();
                    crate::request_id::stamp(&mut detail);
                    detail.to_string()
                } else {
                    e.detail.to_string()
                },
                prev_hash: Vec::new(),
                hash: Vec::new(),
            };
            row.hash = row_hash(&prev, &row).to_vec();
            row.prev_hash = std::mem::replace(&mut prev, row.hash.clone());
            rows.push(row);
        }
        last.push(seq);
    }
    tx.append_audit(&rows).await?;
    Ok(last)
}

/// What [`verify`] found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Verification {
    /// Rows checked (in the live store: after the archived ones).
    pub rows: i64,
    /// The last row moved to an archive segment, if any (`inkan audit
    /// archive`; `verify --archive` checks the segments).
    pub archived_through: Option<i64>,
    /// The first problem, if any.
    pub broken: Option<Broken>,
    /// Seals whose MAC the token checked (0 without the token).
    pub seals: i64,
    /// Whether the seals' MACs were checked (the token was at hand).
    pub seals_checked: bool,
    /// The last row a valid seal covers (and with it, every row before it).
    pub sealed_through: Option<i64>,
    /// Rows after it: not sealed yet (a running server seals within a
    /// second), or left unsealed by whoever wrote them.
    pub unsealed: i64,
    /// When the first unsealed row was written (Unix ms).
    #[serde(serialize_with = "crate::clock::as_rfc3339_opt")]
    pub unsealed_since: Option<i64>,
    /// Exported seals ([`seal::heads`]) checked against the log.
    pub heads_checked: usize,
    /// Exported seals of rows archived since: not in the live log, so not
    /// checked by this walk.
    pub heads_archived: usize,
    /// The row of the last seal the token recorded, found in the log as it
    /// was sealed (with the token only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_record: Option<i64>,
    /// Why sealing stopped, if it did: kept in the token until an operator
    /// clears it (with the token only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
    /// What the chain's time-stamps prove ([`stamp::prove`]), if it has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<TimeProof>,
}

/// What the time-stamps of the chain prove.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TimeProof {
    /// Time-stamps found.
    pub timestamps: usize,
    /// Whether they were checked against TSA anchors (`[verify]
    /// tsa_anchors`, else `[tsa] ca`).
    pub checked: bool,
    /// The latest row a checked time-stamp covers (and every row before it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proven_through: Option<i64>,
    /// When that time-stamp says the row existed (RFC 3339, the TSA's time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proven_at: Option<String>,
    /// The TSA that said so (its certificate's subject).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tsa: Option<String>,
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

/// Walks the whole chain, in pages of rows, and every seal: each must name a
/// row of the log with the hash it sealed, and (with `keystore`) carry the
/// token's MAC of it. `heads` (seals exported earlier) must still be in the
/// log as they were, and so must the seal the `token` recorded last: read it
/// ([`seal::token_state`]) before calling this, so that a record another
/// node writes meanwhile is of a seal the database already holds (without
/// the token: the default, nothing recorded).
pub async fn verify<T: AuditTx + ?Sized>(
    store: &dyn Transactions<T>,
    keystore: Option<&inkan_keystore::Keystore>,
    token: &TokenState,
    heads: &[Seal],
) -> Result<Verification, crate::error::Error> {
    let mut v = Verification { seals_checked: keystore.is_some(), ..Default::default() };
    let mut tx = store.read().await?;
    // Archived rows are a segment file's ([`archive`]): the live chain goes
    // on from the last archive record, which the token MACed.
    let archived = tx.audit_archived().await?;
    let base = archived.as_ref().map_or(0, |a| a.seq);
    let mut prev = archived.as_ref().map_or_else(|| vec![0u8; 32], |a| a.hash.clone());
    let mut expected_seq = base + 1;
    let broken = |mut v: Verification, seq: i64, reason: String| {
        v.rows = seq - 1 - base;
        v.broken = Some(Broken { seq, reason });
        Ok(v)
    };
    if let Some(a) = &archived {
        v.archived_through = Some(a.seq);
        v.sealed_through = Some(a.seq);
        if let Some(keystore) = keystore {
            let mac = keystore.seal(&[archive_input(a)]).map_err(crate::error::Error::from)?;
            let ok = mac.first().is_some_and(|m| bool::from(subtle::ConstantTimeEq::ct_eq(&m[..], &a.mac[..])));
            if !ok {
                return broken(
                    v,
                    a.seq + 1,
                    format!(
                        "the archive record of rows {}-{} was not made by this token's seal key: rows were removed \
                         under a forged record",
                        a.first, a.seq
                    ),
                );
            }
        }
    }
    let mut heads: std::collections::VecDeque<&Seal> = {
        // An export appended to a file again holds seals twice: once each;
        // those of archived rows are the archive's to check.
        v.heads_archived = heads.iter().filter(|h| h.seq <= base).count();
        let mut sorted: Vec<&Seal> = heads.iter().filter(|h| h.seq > base).collect();
        sorted.sort_by(|a, b| a.seq.cmp(&b.seq).then_with(|| a.hash.cmp(&b.hash)));
        sorted.dedup_by(|a, b| a.seq == b.seq && a.hash == b.hash);
        sorted.into()
    };
    let mut prev_mac: Vec<u8> = archived.as_ref().map(|a| a.seal_mac.clone()).unwrap_or_default();
    let mut seals: std::collections::VecDeque<Seal> = std::collections::VecDeque::new();
    let (mut seals_after, mut seals_done) = (base, false);
    let mut pending_since = None;
    v.refusal = token.refusal.clone();
    let recorded = token.last.clone();
    let gone = |r: &Seal| {
        format!(
            "the token sealed row {} at {}, and that seal is no longer in the database: seals were removed",
            r.seq,
            crate::clock::rfc3339(r.at)
        )
    };
    if let Some(r) = recorded.as_ref().filter(|r| r.seq <= base) {
        let reason = format!("the token's last seal (row {}) is of an archived row: the log was cut after it", r.seq);
        return broken(v, base + 1, reason);
    }
    loop {
        let page = tx.audit_rows(expected_seq - 1, VERIFY_PAGE).await?;
        let done = page.len() < VERIFY_PAGE;
        let last_seq = page.last().map_or(expected_seq - 1, |r| r.seq);
        while !seals_done && seals.back().is_none_or(|s| s.seq <= last_seq) {
            let more = tx.audit_seals(seals_after, VERIFY_PAGE).await?;
            seals_done = more.len() < VERIFY_PAGE;
            seals_after = more.last().map_or(seals_after, |s| s.seq);
            seals.extend(more);
        }
        let mut to_check: Vec<Seal> = Vec::new();
        // The token's record missing from the database: reported after the
        // seals before it are checked (an earlier forged seal comes first).
        let mut late = None;
        for row in page {
            if row.seq != expected_seq {
                return broken(v, expected_seq, format!("row {expected_seq} is missing (next row is {})", row.seq));
            }
            if row.prev_hash != prev {
                return broken(
                    v,
                    row.seq,
                    "its prev_hash does not match the previous row: a row before it was changed or removed".into(),
                );
            }
            if row_hash(&prev, &row)[..] != row.hash[..] {
                return broken(v, row.seq, "its contents do not match its hash: the row was edited".into());
            }
            if seals.front().is_some_and(|s| s.seq == row.seq) {
                let seal = seals.pop_front().unwrap_or_else(|| unreachable!("front checked"));
                if seal.hash != row.hash {
                    return broken(v, row.seq, recomputed(row.seq));
                }
                if seal.prev_mac != prev_mac {
                    return broken(
                        v,
                        row.seq,
                        "its seal does not follow the seal before it: a seal between them was removed".into(),
                    );
                }
                if let Some(r) = recorded.as_ref().filter(|r| r.seq == row.seq) {
                    if r.mac != seal.mac || r.hash != seal.hash {
                        late = Some((row.seq, gone(r)));
                        break;
                    }
                    v.token_record = Some(r.seq);
                }
                prev_mac = seal.mac.clone();
                to_check.push(seal);
                v.sealed_through = Some(row.seq);
                pending_since = None;
            } else {
                if let Some(r) = recorded.as_ref().filter(|r| r.seq == row.seq) {
                    late = Some((row.seq, gone(r)));
                    break;
                }
                if pending_since.is_none() {
                    pending_since = Some(row.at);
                }
            }
            while heads.front().is_some_and(|h| h.seq == row.seq) {
                let head = heads.pop_front().unwrap_or_else(|| unreachable!("front checked"));
                if head.hash != row.hash {
                    return broken(
                        v,
                        row.seq,
                        format!(
                            "its hash is not the one exported (sealed {}): the log was rewritten after the export",
                            crate::clock::rfc3339(head.at)
                        ),
                    );
                }
                to_check.push(head.clone());
                v.heads_checked += 1;
            }
            prev = row.hash;
            expected_seq += 1;
            v.rows += 1;
        }
        if let Some(keystore) = keystore.filter(|_| !to_check.is_empty()) {
            let inputs: Vec<Vec<u8>> = to_check.iter().map(|s| seal_input(s.seq, &s.hash, &s.prev_mac)).collect();
            let macs = keystore.seal(&inputs).map_err(crate::error::Error::from)?;
            for (s, mac) in to_check.iter().zip(macs) {
                if !bool::from(subtle::ConstantTimeEq::ct_eq(&mac[..], &s.mac[..])) {
                    let reason = format!(
                        "its seal was not made by this token's seal key: the chain was recomputed, or the seal forged ({})",
                        recomputed(s.seq)
                    );
                    let rows = v.rows;
                    let mut out = broken(v, s.seq, reason)?;
                    out.rows = rows.min(s.seq - 1 - base);
                    return Ok(out);
                }
                v.seals += 1;
            }
        }
        if let Some((seq, reason)) = late {
            return broken(v, seq, reason);
        }
        if done {
            break;
        }
    }
    let count = base + v.rows;
    // A seal that names a row after the log's end: the token's record, one
    // in the database, or one exported.
    let past_end = |what: String| format!("{what}, after the log's last row {count}: rows were deleted from the end");
    if let Some(r) = recorded.as_ref().filter(|r| r.seq > count) {
        let what = format!("the token sealed row {} at {}", r.seq, crate::clock::rfc3339(r.at));
        return broken(v, count + 1, past_end(what));
    }
    if let Some(s) = seals.front() {
        return broken(v, count + 1, past_end(format!("a seal names row {}", s.seq)));
    }
    if let Some(h) = heads.front() {
        let what = format!("the exported seal of row {} (sealed {}) names it", h.seq, crate::clock::rfc3339(h.at));
        return broken(v, count + 1, past_end(what));
    }
    match tx.audit_head().await? {
        None if count == 0 => {}
        None => return broken(v, count, "the chain head record is missing".into()),
        Some((seq, hash)) => {
            if seq != count || hash != prev {
                return broken(
                    v,
                    count + 1,
                    format!(
                        "the log ends at row {count} but its head records row {seq}: rows were deleted from the end"
                    ),
                );
            }
        }
    }
    v.unsealed = count - v.sealed_through.unwrap_or(0);
    if count == 0 {
        v.unsealed = 0;
    }
    v.unsealed_since = pending_since.filter(|_| v.unsealed > 0);
    Ok(v)
}

fn recomputed(seq: i64) -> String {
    format!("row {seq} no longer has the hash its seal was made for: the chain was recomputed at or before it")
}

/// The latest rows, newest first (optionally of one user).
pub async fn tail<T: AuditTx + ?Sized>(
    store: &dyn Transactions<T>,
    user_id: Option<&str>,
    limit: i64,
) -> Result<Vec<Row>, StoreError> {
    store.read().await?.audit_tail(user_id, limit).await
}
