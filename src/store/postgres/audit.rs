//! The audit log's rows and head. A trigger (migration 1) refuses `UPDATE`,
//! `DELETE` and `TRUNCATE` on the rows. Appenders lock the head's row first,
//! so appends from every node form one chain.

use async_trait::async_trait;
use tokio_postgres::Row as PgRow;

use super::row::get;
use super::PgTx;
use crate::audit::{AuditStore, ChainedRow, Row};
use crate::storage::StoreError;

/// Reads `seq, at, actor, event, user_id, generation, digest, outcome, detail` (in that order).
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

    async fn insert_audit(&mut self, row: &Row, prev_hash: &[u8], hash: &[u8]) -> Result<(), StoreError> {
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
                &prev_hash,
                &hash,
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

    async fn audit_rows(&mut self, after_seq: i64, limit: usize) -> Result<Vec<ChainedRow>, StoreError> {
        let rows = self
            .rows(
                "SELECT seq, at, actor, event, user_id, generation, digest, outcome, detail, prev_hash, hash
                 FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after_seq, &(limit as i64)],
            )
            .await?;
        rows.iter().map(|r| Ok(ChainedRow { row: row(r)?, prev_hash: get(r, 9)?, hash: get(r, 10)? })).collect()
    }

    async fn audit_tail(&mut self, user_id: Option<&str>, limit: i64) -> Result<Vec<Row>, StoreError> {
        let rows = self
            .rows(
                "SELECT seq, at, actor, event, user_id, generation, digest, outcome, detail FROM audit
                 WHERE ($1::TEXT IS NULL OR user_id = $1) ORDER BY seq DESC LIMIT $2",
                &[&user_id, &limit],
            )
            .await?;
        rows.iter().map(row).collect()
    }
}
