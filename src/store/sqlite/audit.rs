//! The audit log's rows and head. Triggers refuse `UPDATE` and `DELETE` on
//! the rows (migration 1), but for the deletion of archived ones (10).

use std::ops::DerefMut;

use async_trait::async_trait;
use rusqlite::{params, Connection};

use super::{optional, SqliteTx};
use crate::audit::{Archived, AuditStore, Row, Seal, TimeStamp};
use crate::seam::StoreError;

/// Reads `seq, at, actor, event, user_id, generation, digest, outcome, detail, prev_hash, hash` (in that order).
fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
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
        prev_hash: r.get(9)?,
        hash: r.get(10)?,
    })
}

/// Reads `first, seq, hash, seal_mac, segment, file, at, prev_mac, mac`.
fn archived(r: &rusqlite::Row<'_>) -> rusqlite::Result<Archived> {
    Ok(Archived {
        first: r.get(0)?,
        seq: r.get(1)?,
        hash: r.get(2)?,
        seal_mac: r.get(3)?,
        segment: r.get(4)?,
        file: r.get(5)?,
        at: r.get(6)?,
        prev_mac: r.get(7)?,
        mac: r.get(8)?,
    })
}

#[async_trait]
impl<C: DerefMut<Target = Connection> + Send> AuditStore for SqliteTx<C> {
    async fn audit_head(&mut self) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        let mut stmt = self.conn().prepare_cached("SELECT seq, hash FROM audit_head WHERE id = 1")?;
        optional(stmt.query_row([], |r| Ok((r.get(0)?, r.get(1)?))))
    }

    async fn insert_audit(&mut self, row: &Row) -> Result<(), StoreError> {
        self.writing()?
            .prepare_cached(
                "INSERT INTO audit (seq, at, actor, event, user_id, generation, digest, outcome, detail, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                row.seq,
                row.at,
                row.actor,
                row.event,
                row.user_id,
                row.generation,
                row.digest,
                row.outcome,
                row.detail,
                row.prev_hash,
                row.hash
            ])?;
        Ok(())
    }

    async fn set_audit_head(&mut self, seq: i64, hash: &[u8]) -> Result<(), StoreError> {
        self.writing()?
            .prepare_cached(
                "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET seq = ?1, hash = ?2",
            )?
            .execute(params![seq, hash])?;
        Ok(())
    }

    async fn audit_rows(&mut self, after_seq: i64, limit: usize) -> Result<Vec<Row>, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT seq, at, actor, event, user_id, generation, digest, outcome, detail, prev_hash, hash
             FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after_seq, limit as i64], row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    async fn insert_audit_seal(&mut self, seal: &Seal) -> Result<(), StoreError> {
        self.writing()?
            .prepare_cached("INSERT INTO audit_seals (seq, hash, prev, mac, at) VALUES (?1, ?2, ?3, ?4, ?5)")?
            .execute(params![seal.seq, seal.hash, seal.prev_mac, seal.mac, seal.at])?;
        Ok(())
    }

    async fn audit_seals(&mut self, after_seq: i64, limit: usize) -> Result<Vec<Seal>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare_cached("SELECT seq, hash, prev, mac, at FROM audit_seals WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
        let seals = stmt
            .query_map(params![after_seq, limit as i64], |r| {
                Ok(Seal { seq: r.get(0)?, hash: r.get(1)?, prev_mac: r.get(2)?, mac: r.get(3)?, at: r.get(4)? })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(seals)
    }

    async fn last_audit_seal(&mut self) -> Result<Option<Seal>, StoreError> {
        let mut stmt =
            self.conn().prepare_cached("SELECT seq, hash, prev, mac, at FROM audit_seals ORDER BY seq DESC LIMIT 1")?;
        optional(stmt.query_row([], |r| {
            Ok(Seal { seq: r.get(0)?, hash: r.get(1)?, prev_mac: r.get(2)?, mac: r.get(3)?, at: r.get(4)? })
        }))
    }

    async fn insert_audit_timestamp(&mut self, stamp: &TimeStamp) -> Result<bool, StoreError> {
        let n = self
            .writing()?
            .prepare_cached("INSERT OR IGNORE INTO audit_timestamps (seq, hash, token, at) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![stamp.seq, stamp.hash, stamp.token, stamp.at])?;
        Ok(n == 1)
    }

    async fn audit_timestamps(&mut self, after_seq: i64, limit: usize) -> Result<Vec<TimeStamp>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare_cached("SELECT seq, hash, token, at FROM audit_timestamps WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
        let stamps = stmt
            .query_map(params![after_seq, limit as i64], |r| {
                Ok(TimeStamp { seq: r.get(0)?, hash: r.get(1)?, token: r.get(2)?, at: r.get(3)? })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(stamps)
    }

    async fn last_audit_timestamp(&mut self) -> Result<Option<TimeStamp>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare_cached("SELECT seq, hash, token, at FROM audit_timestamps ORDER BY seq DESC LIMIT 1")?;
        optional(
            stmt.query_row([], |r| Ok(TimeStamp { seq: r.get(0)?, hash: r.get(1)?, token: r.get(2)?, at: r.get(3)? })),
        )
    }

    async fn audit_archived(&mut self) -> Result<Option<Archived>, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT first, seq, hash, seal_mac, segment, file, at, prev_mac, mac FROM audit_archive ORDER BY seq DESC LIMIT 1",
        )?;
        optional(stmt.query_row([], archived))
    }

    async fn audit_archives(&mut self) -> Result<Vec<Archived>, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT first, seq, hash, seal_mac, segment, file, at, prev_mac, mac FROM audit_archive ORDER BY seq",
        )?;
        let all = stmt.query_map([], archived)?.collect::<Result<Vec<_>, _>>()?;
        Ok(all)
    }

    async fn insert_audit_archive(&mut self, a: &Archived) -> Result<(), StoreError> {
        self.writing()?
            .prepare_cached(
                "INSERT INTO audit_archive (first, seq, hash, seal_mac, segment, file, at, prev_mac, mac)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![a.first, a.seq, a.hash, a.seal_mac, a.segment, a.file, a.at, a.prev_mac, a.mac])?;
        Ok(())
    }

    async fn prune_audit(&mut self, through: i64, limit: usize) -> Result<usize, StoreError> {
        let conn = self.writing()?;
        let upto: Option<i64> = conn
            .prepare_cached("SELECT max(seq) FROM (SELECT seq FROM audit WHERE seq <= ?1 ORDER BY seq LIMIT ?2)")?
            .query_row(params![through, limit as i64], |r| r.get(0))?;
        let Some(upto) = upto else { return Ok(0) };
        conn.prepare_cached("DELETE FROM audit_seals WHERE seq <= ?1")?.execute([upto])?;
        conn.prepare_cached("DELETE FROM audit_timestamps WHERE seq <= ?1")?.execute([upto])?;
        Ok(conn.prepare_cached("DELETE FROM audit WHERE seq <= ?1")?.execute([upto])?)
    }

    async fn audit_tail(&mut self, user_id: Option<&str>, limit: i64) -> Result<Vec<Row>, StoreError> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT seq, at, actor, event, user_id, generation, digest, outcome, detail, prev_hash, hash FROM audit
             WHERE {} ORDER BY seq DESC LIMIT ?2",
            super::user_filter(user_id, "user_id", 1)
        ))?;
        let rows = stmt.query_map(params![user_id, limit], row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use crate::audit::{self, Event};
    use crate::store::sqlite::tests::{run, store};
    use crate::store::Store;

    /// An event whose detail names it (`a`, `b`, ...).
    fn ev(name: &str) -> Event<'static> {
        Event { detail: serde_json::json!({ "n": name }), ..Event::new("test", audit::Name::UserAdd) }
    }

    async fn append(store: &dyn Store, events: &[Event<'_>]) {
        let mut tx = store.write().await.expect("write");
        audit::append(&mut *tx, 1, events).await.expect("append");
        tx.commit().await.expect("commit");
    }

    #[test]
    fn chain_verifies_and_detects_edits_and_truncation() {
        let (dir, store) = store();
        run(async {
            append(&store, &[ev("a"), ev("b"), ev("c")]).await;
            let v = audit::verify(&store, None, &Default::default(), &[]).await.expect("verify");
            assert_eq!(v.rows, 3);
            assert!(v.broken.is_none());
            let conn = rusqlite::Connection::open(dir.path().join("t.db")).expect("db");
            conn.execute_batch("DROP TRIGGER audit_append_only_update; DROP TRIGGER audit_append_only_delete;")
                .expect("drop");
            conn.execute("UPDATE audit SET outcome = 'denied' WHERE seq = 2", []).expect("edit");
            let broken =
                audit::verify(&store, None, &Default::default(), &[]).await.expect("verify").broken.expect("broken");
            assert_eq!(broken.seq, 2);
            assert!(broken.reason.contains("edited"), "{}", broken.reason);
        });
    }

    #[test]
    fn deleted_tail_is_detected() {
        let (dir, store) = store();
        run(async {
            append(&store, &[ev("a"), ev("b")]).await;
            let conn = rusqlite::Connection::open(dir.path().join("t.db")).expect("db");
            conn.execute_batch("DROP TRIGGER audit_append_only_delete; DELETE FROM audit WHERE seq = 2;")
                .expect("delete");
            let broken =
                audit::verify(&store, None, &Default::default(), &[]).await.expect("verify").broken.expect("broken");
            assert_eq!(broken.seq, 2);
        });
    }

    #[test]
    fn triggers_refuse_updates() {
        let (dir, store) = store();
        run(async {
            append(&store, &[ev("a")]).await;
        });
        let conn = rusqlite::Connection::open(dir.path().join("t.db")).expect("db");
        let err = conn.execute("UPDATE audit SET outcome = 'x'", []).expect_err("refused");
        assert!(err.to_string().contains("append-only"), "{err}");
    }
}
