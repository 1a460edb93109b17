//! The audit log: append-only and hash-chained.
//!
//! Every row stores `hash = SHA-256(prev_hash || canonical(row))`, where
//! `prev_hash` is the previous row's hash (32 zero bytes for the first row) and
//! `canonical` is a length-prefixed encoding of every column. The last row's
//! sequence number and hash are also kept in `audit_head`, updated in the same
//! transaction, so a deleted tail is detected as well as an edited, inserted or
//! deleted row in the middle. SQL triggers refuse `UPDATE` and `DELETE` on the
//! table; the chain catches whoever drops the triggers first.
//!
//! What the chain does not stop: someone with write access who recomputes every
//! hash after their edit. Anchoring the head outside the database (a MAC with a
//! key in the token, or periodic export) closes that and is planned.

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::store::StoreError;

/// One audit event to append.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Event<'a> {
    /// Who acted: `cli:<os user>`, `api:<client>`, `user:<id>`.
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

impl Row {
    /// Reads the columns `seq, at, actor, event, user_id, generation, digest, outcome, detail` (in that order).
    fn from_sql(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
        Ok(Row {
            seq: r.get(0)?,
            at: r.get(1)?,
            actor: r.get(2)?,
            event: r.get(3)?,
            user_id: r.get(4)?,
            generation: r.get(5)?,
            digest: r.get(6)?,
            outcome: r.get(7)?,
            detail: r.get(8)?,
        })
    }
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

/// Appends events in order inside `tx`; returns the last sequence number.
pub fn append(tx: &Transaction<'_>, at: i64, events: &[Event<'_>]) -> Result<i64, StoreError> {
    Ok(append_groups(tx, &[(at, events)])?.pop().unwrap_or_default())
}

/// Appends groups of events (each with its own time) in order inside `tx`,
/// reading and moving the chain head once; returns each group's last sequence
/// number.
pub fn append_groups(tx: &Transaction<'_>, groups: &[(i64, &[Event<'_>])]) -> Result<Vec<i64>, StoreError> {
    let head: Option<(i64, Vec<u8>)> = tx
        .prepare_cached("SELECT seq, hash FROM audit_head WHERE id = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (mut seq, mut prev) = head.unwrap_or((0, vec![0u8; 32]));
    let mut insert = tx.prepare_cached(
        "INSERT INTO audit (seq, at, actor, event, user_id, generation, digest, outcome, detail, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    let mut last = Vec::with_capacity(groups.len());
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
            let hash = canonical(&prev, &row);
            insert.execute(params![
                row.seq,
                row.at,
                row.actor,
                row.event,
                row.user_id,
                row.generation,
                row.digest,
                row.outcome,
                row.detail,
                prev,
                &hash[..]
            ])?;
            prev = hash.to_vec();
        }
        last.push(seq);
    }
    tx.prepare_cached(
        "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?1, ?2) ON CONFLICT (id) DO UPDATE SET seq = ?1, hash = ?2",
    )?
    .execute(params![seq, prev])?;
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

/// Walks the whole chain.
pub fn verify(conn: &Connection) -> Result<Verification, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT seq, at, actor, event, user_id, generation, digest, outcome, detail, prev_hash, hash FROM audit ORDER BY seq",
    )?;
    let mut rows = stmt.query([])?;
    let mut prev = vec![0u8; 32];
    let mut expected_seq = 1;
    let mut count = 0;
    let broken = |seq: i64, reason: String| Ok(Verification { rows: seq - 1, broken: Some(Broken { seq, reason }) });
    while let Some(r) = rows.next()? {
        let row = Row::from_sql(r)?;
        let stored_prev: Vec<u8> = r.get(9)?;
        let stored_hash: Vec<u8> = r.get(10)?;
        if row.seq != expected_seq {
            return broken(expected_seq, format!("row {expected_seq} is missing (next row is {})", row.seq));
        }
        if stored_prev != prev {
            return broken(
                row.seq,
                "its prev_hash does not match the previous row: a row before it was changed or removed".into(),
            );
        }
        if canonical(&prev, &row)[..] != stored_hash[..] {
            return broken(row.seq, "its contents do not match its hash: the row was edited".into());
        }
        prev = stored_hash;
        expected_seq += 1;
        count += 1;
    }
    let head: Option<(i64, Vec<u8>)> = conn
        .query_row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match head {
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
pub fn tail(conn: &Connection, user_id: Option<&str>, limit: i64) -> Result<Vec<Row>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT seq, at, actor, event, user_id, generation, digest, outcome, detail FROM audit
         WHERE (?1 IS NULL OR user_id = ?1) ORDER BY seq DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![user_id, limit], Row::from_sql)?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("t.db")).expect("open");
        (dir, store)
    }

    fn ev(event: &str) -> Event<'_> {
        Event { actor: "test", event, outcome: "ok", detail: serde_json::json!({}), ..Default::default() }
    }

    #[test]
    fn chain_verifies_and_detects_edits_and_truncation() {
        let (_dir, mut store) = store();
        store.write(|tx| append(tx, 1, &[ev("a"), ev("b"), ev("c")])).expect("append");
        let v = verify(store.conn()).expect("verify");
        assert_eq!(v.rows, 3);
        assert!(v.broken.is_none());

        store
            .conn()
            .execute_batch("DROP TRIGGER audit_append_only_update; DROP TRIGGER audit_append_only_delete;")
            .expect("drop");
        store.conn().execute("UPDATE audit SET outcome = 'denied' WHERE seq = 2", []).expect("edit");
        let broken = verify(store.conn()).expect("verify").broken.expect("broken");
        assert_eq!(broken.seq, 2);
        assert!(broken.reason.contains("edited"), "{}", broken.reason);
    }

    #[test]
    fn deleted_tail_is_detected() {
        let (_dir, mut store) = store();
        store.write(|tx| append(tx, 1, &[ev("a"), ev("b")])).expect("append");
        store
            .conn()
            .execute_batch("DROP TRIGGER audit_append_only_delete; DELETE FROM audit WHERE seq = 2;")
            .expect("delete");
        let broken = verify(store.conn()).expect("verify").broken.expect("broken");
        assert_eq!(broken.seq, 2);
    }

    #[test]
    fn triggers_refuse_updates() {
        let (_dir, mut store) = store();
        store.write(|tx| append(tx, 1, &[ev("a")])).expect("append");
        let err = store.conn().execute("UPDATE audit SET outcome = 'x'", []).expect_err("refused");
        assert!(err.to_string().contains("append-only"), "{err}");
    }
}
