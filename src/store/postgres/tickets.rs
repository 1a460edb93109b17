//! QR tickets: one row each, written from the typed ticket and read back into
//! it (a row that does not decode is an error).

use async_trait::async_trait;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::row::get;
use super::PgTx;
use crate::fido::ticket::{Kind, PcInfo, Stage, Ticket, TicketStore};
use crate::seam::StoreError;

/// A decoy's row names its typed ID in `decoy_for` instead of `user_id`.
const COLUMNS: &str = "id, purpose, via, COALESCE(user_id, decoy_for), oidc_req, regcode_id, action, step, ceremony, \
                       phase, error, labelled, pc_claimed, expires_at, replace_ok, pc_info, decoy_for IS NOT NULL";

fn decode(r: &Row) -> Result<Ticket, StoreError> {
    let id: i64 = get(r, 0)?;
    let action: &str = get(r, 6)?;
    let ticket = Ticket {
        id,
        user_id: get(r, 3)?,
        kind: Kind::from_names(get(r, 1)?, get(r, 2)?, get(r, 4)?, get(r, 5)?)?,
        stage: Stage::from_parts(get(r, 7)?, get(r, 8)?)?,
        phase: get(r, 9)?,
        error: get(r, 10)?,
        labelled: get(r, 11)?,
        pc_claimed: get(r, 12)?,
        expires_at: get(r, 13)?,
        replace_confirmed: get(r, 14)?,
        pc: get::<Option<String>>(r, 15)?.as_deref().map(PcInfo::decode).transpose()?,
        decoy: get(r, 16)?,
    };
    if ticket.action().as_str() != action {
        return Err(StoreError::Corrupt(format!("ticket {id}: action {action:?} does not fit its kind and phase")));
    }
    ticket.check()
}

impl PgTx {
    async fn ticket_where(&mut self, filter: &str, value: &(dyn ToSql + Sync)) -> Result<Option<Ticket>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM tickets WHERE {filter}");
        self.row(&sql, &[value]).await?.as_ref().map(decode).transpose()
    }
}

#[async_trait]
impl TicketStore for PgTx {
    async fn insert_ticket(
        &mut self,
        t: &Ticket,
        pc_hash: &[u8],
        phone_hash: &[u8],
        now: i64,
    ) -> Result<i64, StoreError> {
        let (purpose, via) = t.kind.names();
        let pc_info = t.pc.as_ref().map(PcInfo::encode).transpose()?;
        let rows = self
            .exec_rows(
                "INSERT INTO tickets (phone_hash, pc_hash, pc_claimed, phase, replace_ok, purpose, via, user_id,
                                      oidc_req, regcode_id, action, step, ceremony, error, labelled, created_at,
                                      expires_at, pc_info, decoy_for)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
                 RETURNING id",
                &[
                    &phone_hash,
                    &pc_hash,
                    &t.pc_claimed,
                    &t.phase,
                    &t.replace_confirmed,
                    &purpose,
                    &via,
                    &(!t.decoy).then_some(&t.user_id),
                    &t.kind.request(),
                    &t.kind.code(),
                    &t.action().as_str(),
                    &t.stage.as_str(),
                    &t.stage.ceremony(),
                    &t.error,
                    &t.labelled,
                    &now,
                    &t.expires_at,
                    &pc_info,
                    &t.decoy.then_some(&t.user_id),
                ],
            )
            .await?;
        rows.first().map(|r| get(r, 0)).unwrap_or_else(|| Err(StoreError::Failed("no ticket id returned".into())))
    }

    async fn ticket(&mut self, id: i64) -> Result<Option<Ticket>, StoreError> {
        self.ticket_where("id = $1", &id).await
    }

    async fn ticket_by_pc(&mut self, pc_hash: &[u8]) -> Result<Option<Ticket>, StoreError> {
        self.ticket_where("pc_hash = $1", &pc_hash).await
    }

    async fn ticket_by_phone(&mut self, phone_hash: &[u8]) -> Result<Option<Ticket>, StoreError> {
        self.ticket_where("phone_hash = $1", &phone_hash).await
    }

    async fn update_ticket(&mut self, t: &Ticket) -> Result<(), StoreError> {
        let n = self
            .exec(
                "UPDATE tickets SET pc_claimed = $2, phase = $3, replace_ok = $4, action = $5, step = $6,
                        ceremony = $7, error = $8, labelled = $9, expires_at = $10
                 WHERE id = $1",
                &[
                    &t.id,
                    &t.pc_claimed,
                    &t.phase,
                    &t.replace_confirmed,
                    &t.action().as_str(),
                    &t.stage.as_str(),
                    &t.stage.ceremony(),
                    &t.error,
                    &t.labelled,
                    &t.expires_at,
                ],
            )
            .await?;
        if n == 1 {
            Ok(())
        } else {
            Err(StoreError::Failed(format!("ticket {} vanished", t.id)))
        }
    }

    async fn set_ticket_tokens(&mut self, id: i64, pc_hash: &[u8], phone_hash: &[u8]) -> Result<(), StoreError> {
        self.exec("UPDATE tickets SET pc_hash = $2, phone_hash = $3 WHERE id = $1", &[&id, &pc_hash, &phone_hash])
            .await?;
        Ok(())
    }

    async fn open_tickets(&mut self, user_id: &str) -> Result<Vec<Ticket>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM tickets WHERE user_id = $1 AND step NOT IN ('collected', 'cancelled') ORDER BY id"
        );
        self.rows(&sql, &[&user_id]).await?.iter().map(decode).collect()
    }

    async fn purge_tickets(&mut self, before: i64, decoys_before: i64) -> Result<usize, StoreError> {
        let sql = "DELETE FROM tickets WHERE expires_at < $1 OR (decoy_for IS NOT NULL AND expires_at < $2)";
        Ok(self.exec(sql, &[&before, &decoys_before]).await? as usize)
    }

    async fn waiting_tickets(&mut self, id: &str, purpose: &str, via: &str) -> Result<Vec<Ticket>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM tickets WHERE (user_id = $1 OR decoy_for = $1) AND purpose = $2 AND via = $3 \
             AND step = 'waiting' ORDER BY id"
        );
        self.rows(&sql, &[&id, &purpose, &via]).await?.iter().map(decode).collect()
    }

    async fn drop_ticket(&mut self, id: i64) -> Result<(), StoreError> {
        self.exec("DELETE FROM tickets WHERE id = $1", &[&id]).await?;
        Ok(())
    }
}
