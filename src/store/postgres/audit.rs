//! The audit log's rows and head. A trigger (migration 1) refuses `UPDATE`,
//! `DELETE` and `TRUNCATE` on the rows. Appenders lock the head's row first,
//! so appends from every node form one chain.

use async_trait::async_trait;
use tokio_postgres::Row as PgRow;

use super::row::get;
use super::PgTx;
use crate::audit::{Archived, AuditStore, Row, Seal, TimeStamp};
use crate::seam::StoreError;

/// Reads `seq, at, actor, event, user_id, generation, digest, outcome, detail, prev_hash, hash` (in that order).
fn row(r: &PgRow) -> Result<Row, StoreError> {
    Ok(Row {
        seq: get(r, 0)?,
        at: get(r, 1)?,
        actor: get(r, 2)?,
        event: get(r, 3)?,
        user_id: get(r, 4)?,
        generation: get(r, 5)?,
        digest: get(r, 6)?,
        outcome: get(r, 7)?,
        detail: get(r, 8)?,
        prev_hash: get(r, 9)?,
        hash: get(r, 10)?,
    })
}

/// Reads `first, seq, hash, seal_mac, segment, file, at, prev_mac, mac`.
fn archived(r: &PgRow) -> Result<Archived, StoreError> {
    Ok(Archived {
        first: get(r, 0)?,
        seq: get(r, 1)?,
        hash: get(r, 2)?,
        seal_mac: get(r, 3)?,
        segment: get(r, 4)?,
        file: get(r, 5)?,
        at: get(r, 6)?,
        prev_mac: get(r, 7)?,
        mac: get(r, 8)?,
    })
}

#[async_trait]
impl AuditStore for PgTx {
    async fn audit_head(&mut self) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        // In a writing transaction, the lock that orders every node's appends.
        let sql = format!("SELECT seq, hash FROM audit_head WHERE id = 1{}", self.lock_clause());
        match self.row(&sql, &[]).await? {
            Some(r) => Ok(Some((get(&r, 0)?, get(&r, 1)?))),
            None => Ok(None),
        }
    }

    async fn insert_audit(&mut self, row: &Row) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO audit (seq, at, actor, event, user_id, generation, digest, outcome, detail, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &row.seq,
                &row.at,
                &row.actor,
                &row.event,
                &row.user_id,
                &row.generation,
                &row.digest,
                &row.outcome,
                &row.detail,
                &row.prev_hash,
                &row.hash,
            ],
        )
        .await?;
        Ok(())
    }

    async fn set_audit_head(&mut self, seq: i64, hash: &[u8]) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO audit_head (id, seq, hash) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            &[&seq, &hash],
        )
        .await?;
        Ok(())
    }

    async fn audit_rows(&mut self, after_seq: i64, limit: usize) -> Result<Vec<Row>, StoreError> {
        let rows = self
            .rows(
                "SELECT seq, at, actor, event, user_id, generation, digest, outcome, detail, prev_hash, hash
                 FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after_seq, &(limit as i64)],
            )
            .await?;
        rows.iter().map(row).collect()
    }

    async fn append_audit(&mut self, rows: &[Row]) -> Result<(), StoreError> {
        let Some(last) = rows.last() else { return Ok(()) };
        // One statement (one round trip) for a whole group commit: the rows as
        // arrays, and the head.
        let seq: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        let at: Vec<i64> = rows.iter().map(|r| r.at).collect();
        let actor: Vec<&str> = rows.iter().map(|r| r.actor.as_str()).collect();
        let event: Vec<&str> = rows.iter().map(|r| r.event.as_str()).collect();
        let user_id: Vec<Option<&str>> = rows.iter().map(|r| r.user_id.as_deref()).collect();
        let generation: Vec<Option<i64>> = rows.iter().map(|r| r.generation).collect();
        let digest: Vec<Option<&str>> = rows.iter().map(|r| r.digest.as_deref()).collect();
        let outcome: Vec<&str> = rows.iter().map(|r| r.outcome.as_str()).collect();
        let detail: Vec<&str> = rows.iter().map(|r| r.detail.as_str()).collect();
        let prev_hash: Vec<&[u8]> = rows.iter().map(|r| r.prev_hash.as_slice()).collect();
        let hash: Vec<&[u8]> = rows.iter().map(|r| r.hash.as_slice()).collect();
        let n = self
            .exec(
                "WITH appended AS (
                     INSERT INTO audit (seq, at, actor, event, user_id, generation, digest, outcome, detail, prev_hash, hash)
                     SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::BIGINT[],
                                          $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::BYTEA[], $11::BYTEA[])
                 )
                 UPDATE audit_head SET seq = $12, hash = $13 WHERE id = 1",
                &[
                    &seq,
                    &at,
                    &actor,
                    &event,
                    &user_id,
                    &generation,
                    &digest,
                    &outcome,
                    &detail,
                    &prev_hash,
                    &hash,
                    &last.seq,
                    &last.hash,
                ],
            )
            .await?;
        if n != 1 {
            return Err(StoreError::Corrupt("the audit head row is missing".into()));
        }
        Ok(())
    }

    async fn insert_audit_seal(&mut self, seal: &Seal) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO audit_seals (seq, hash, prev, mac, at) VALUES ($1, $2, $3, $4, $5)",
            &[&seal.seq, &seal.hash, &seal.prev_mac, &seal.mac, &seal.at],
        )
        .await?;
        Ok(())
    }

    async fn audit_seals(&mut self, after_seq: i64, limit: usize) -> Result<Vec<Seal>, StoreError> {
        let rows = self
            .rows(
                "SELECT seq, hash, prev, mac, at FROM audit_seals WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after_seq, &(limit as i64)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Seal { seq: get(r, 0)?, hash: get(r, 1)?, prev_mac: get(r, 2)?, mac: get(r, 3)?, at: get(r, 4)? })
            })
            .collect()
    }

    async fn last_audit_seal(&mut self) -> Result<Option<Seal>, StoreError> {
        let rows = self.rows("SELECT seq, hash, prev, mac, at FROM audit_seals ORDER BY seq DESC LIMIT 1", &[]).await?;
        rows.first()
            .map(|r| {
                Ok(Seal { seq: get(r, 0)?, hash: get(r, 1)?, prev_mac: get(r, 2)?, mac: get(r, 3)?, at: get(r, 4)? })
            })
            .transpose()
    }

    async fn insert_audit_timestamp(&mut self, stamp: &TimeStamp) -> Result<bool, StoreError> {
        let n = self
            .exec(
                "INSERT INTO audit_timestamps (seq, hash, token, at) VALUES ($1, $2, $3, $4) ON CONFLICT (seq) DO NOTHING",
                &[&stamp.seq, &stamp.hash, &stamp.token, &stamp.at],
            )
            .await?;
        Ok(n == 1)
    }

    async fn audit_timestamps(&mut self, after_seq: i64, limit: usize) -> Result<Vec<TimeStamp>, StoreError> {
        let rows = self
            .rows(
                "SELECT seq, hash, token, at FROM audit_timestamps WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after_seq, &(limit as i64)],
            )
            .await?;
        rows.iter()
            .map(|r| Ok(TimeStamp { seq: get(r, 0)?, hash: get(r, 1)?, token: get(r, 2)?, at: get(r, 3)? }))
            .collect()
    }

    async fn last_audit_timestamp(&mut self) -> Result<Option<TimeStamp>, StoreError> {
        let rows =
            self.rows("SELECT seq, hash, token, at FROM audit_timestamps ORDER BY seq DESC LIMIT 1", &[]).await?;
        rows.first()
            .map(|r| Ok(TimeStamp { seq: get(r, 0)?, hash: get(r, 1)?, token: get(r, 2)?, at: get(r, 3)? }))
            .transpose()
    }

    async fn audit_archived(&mut self) -> Result<Option<Archived>, StoreError> {
        let r = self
            .row(
                "SELECT first, seq, hash, seal_mac, segment, file, at, prev_mac, mac FROM audit_archive
                 ORDER BY seq DESC LIMIT 1",
                &[],
            )
            .await?;
        r.as_ref().map(archived).transpose()
    }

    async fn audit_archives(&mut self) -> Result<Vec<Archived>, StoreError> {
        let rows = self
            .rows(
                "SELECT first, seq, hash, seal_mac, segment, file, at, prev_mac, mac FROM audit_archive ORDER BY seq",
                &[],
            )
            .await?;
        rows.iter().map(archived).collect()
    }

    async fn insert_audit_archive(&mut self, a: &Archived) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO audit_archive (first, seq, hash, seal_mac, segment, file, at, prev_mac, mac)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[&a.first, &a.seq, &a.hash, &a.seal_mac, &a.segment, &a.file, &a.at, &a.prev_mac, &a.mac],
        )
        .await?;
        Ok(())
    }

    async fn prune_audit(&mut self, through: i64, limit: usize) -> Result<usize, StoreError> {
        let limit = limit as i64;
        let upto = self
            .row(
                "SELECT max(seq) FROM (SELECT seq FROM audit WHERE seq <= $1 ORDER BY seq LIMIT $2) s",
                &[&through, &limit],
            )
            .await?;
        let Some(upto) = upto.map(|r| get::<Option<i64>>(&r, 0)).transpose()?.flatten() else { return Ok(0) };
        self.exec("DELETE FROM audit_seals WHERE seq <= $1", &[&upto]).await?;
        self.exec("DELETE FROM audit_timestamps WHERE seq <= $1", &[&upto]).await?;
        Ok(self.exec("DELETE FROM audit WHERE seq <= $1", &[&upto]).await? as usize)
    }

    async fn audit_tail(&mut self, user_id: Option<&str>, limit: i64) -> Result<Vec<Row>, StoreError> {
        let rows = self
            .rows(
                &format!(
                    "SELECT seq, at, actor, event, user_id, generation, digest, outcome, detail, prev_hash, hash FROM audit
                     WHERE {} ORDER BY seq DESC LIMIT $2",
                    super::user_filter(user_id, "user_id", 1)
                ),
                &[&user_id, &limit],
            )
            .await?;
        rows.iter().map(row).collect()
    }
}
