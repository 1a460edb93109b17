//! QR tickets: one row each. The row keeps the columns of the first schema
//! (purpose, via, action, step, ...); they are written from the typed ticket
//! and read back into it, and a row that does not decode is an error.

use std::ops::DerefMut;

use async_trait::async_trait;
use rusqlite::{params, Connection};

use super::{optional, SqliteTx};
use crate::fido::ticket::{Kind, PcInfo, Stage, Ticket, TicketStore};
use crate::seam::StoreError;

/// A decoy's row names its typed ID in `decoy_for` instead of `user_id`.
const COLUMNS: &str = "id, purpose, via, COALESCE(user_id, decoy_for), oidc_req, regcode_id, action, step, ceremony, \
                       phase, error, labelled, pc_claimed, expires_at, replace_ok, pc_info, decoy_for IS NOT NULL";

type Columns = (i64, String, String, String, Option<String>, Option<i64>, String, String, Option<String>, i64);

type Rest = (Option<String>, i64, i64, i64, i64, Option<String>, bool);

fn raw(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Columns, Rest)> {
    Ok((
        (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?),
        (r.get(10)?, r.get(11)?, r.get(12)?, r.get(13)?, r.get(14)?, r.get(15)?, r.get(16)?),
    ))
}

fn decode((c, rest): (Columns, Rest)) -> Result<Ticket, StoreError> {
    let (error, labelled, pc_claimed, expires_at, replace_ok, pc_info, decoy) = rest;
    let (id, purpose, via, user_id, request, code, action, step, ceremony, phase) = c;
    let ticket = Ticket {
        id,
        user_id,
        kind: Kind::from_names(&purpose, &via, request, code)?,
        stage: Stage::from_parts(&step, ceremony)?,
        phase,
        replace_confirmed: replace_ok == 1,
        labelled: labelled == 1,
        pc_claimed: pc_claimed == 1,
        error,
        expires_at,
        pc: pc_info.as_deref().map(PcInfo::decode).transpose()?,
        decoy,
    };
    if ticket.action().as_str() != action {
        return Err(StoreError::Corrupt(format!("ticket {id}: action {action:?} does not fit its kind and phase")));
    }
    ticket.check()
}

fn one(conn: &Connection, filter: &str, value: impl rusqlite::ToSql) -> Result<Option<Ticket>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM tickets WHERE {filter}"))?;
    optional(stmt.query_row([value], raw))?.map(decode).transpose()
}

#[async_trait]
impl<C: DerefMut<Target = Connection> + Send> TicketStore for SqliteTx<C> {
    async fn insert_ticket(
        &mut self,
        t: &Ticket,
        pc_hash: &[u8],
        phone_hash: &[u8],
        now: i64,
    ) -> Result<i64, StoreError> {
        let pc_info = t.pc.as_ref().map(PcInfo::encode).transpose()?;
        let conn = self.writing()?;
        let (purpose, via) = t.kind.names();
        conn.prepare_cached(
            "INSERT INTO tickets (phone_hash, pc_hash, pc_claimed, phase, replace_ok, purpose, via, user_id, oidc_req,
                                  regcode_id, action, step, ceremony, error, labelled, created_at, expires_at, pc_info,
                                  decoy_for)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
        )?
        .execute(params![
            phone_hash,
            pc_hash,
            t.pc_claimed as i64,
            t.phase,
            t.replace_confirmed as i64,
            purpose,
            via,
            (!t.decoy).then_some(&t.user_id),
            t.kind.request(),
            t.kind.code(),
            t.action().as_str(),
            t.stage.as_str(),
            t.stage.ceremony(),
            t.error,
            t.labelled as i64,
            now,
            t.expires_at,
            pc_info,
            t.decoy.then_some(&t.user_id)
        ])?;
        Ok(conn.last_insert_rowid())
    }

    async fn ticket(&mut self, id: i64) -> Result<Option<Ticket>, StoreError> {
        one(self.conn(), "id = ?1", id)
    }

    async fn ticket_by_pc(&mut self, pc_hash: &[u8]) -> Result<Option<Ticket>, StoreError> {
        one(self.conn(), "pc_hash = ?1", pc_hash)
    }

    async fn ticket_by_phone(&mut self, phone_hash: &[u8]) -> Result<Option<Ticket>, StoreError> {
        one(self.conn(), "phone_hash = ?1", phone_hash)
    }

    async fn update_ticket(&mut self, t: &Ticket) -> Result<(), StoreError> {
        let n = self
            .writing()?
            .prepare_cached(
                "UPDATE tickets SET pc_claimed = ?2, phase = ?3, replace_ok = ?4, action = ?5, step = ?6, ceremony = ?7,
                        error = ?8, labelled = ?9, expires_at = ?10
                 WHERE id = ?1",
            )?
            .execute(params![
                t.id,
                t.pc_claimed as i64,
                t.phase,
                t.replace_confirmed as i64,
                t.action().as_str(),
                t.stage.as_str(),
                t.stage.ceremony(),
                t.error,
                t.labelled as i64,
                t.expires_at
            ])?;
        if n == 1 {
            Ok(())
        } else {
            Err(StoreError::Failed(format!("ticket {} vanished", t.id)))
        }
    }

    async fn set_ticket_tokens(&mut self, id: i64, pc_hash: &[u8], phone_hash: &[u8]) -> Result<(), StoreError> {
        self.writing()?
            .prepare_cached("UPDATE tickets SET pc_hash = ?2, phone_hash = ?3 WHERE id = ?1")?
            .execute(params![id, pc_hash, phone_hash])?;
        Ok(())
    }

    async fn open_tickets(&mut self, user_id: &str) -> Result<Vec<Ticket>, StoreError> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT {COLUMNS} FROM tickets WHERE user_id = ?1 AND step NOT IN ('collected', 'cancelled') ORDER BY id"
        ))?;
        let rows = stmt.query_map([user_id], raw)?.collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(decode).collect()
    }

    async fn purge_tickets(&mut self, before: i64, decoys_before: i64) -> Result<usize, StoreError> {
        Ok(self
            .writing()?
            .prepare_cached("DELETE FROM tickets WHERE expires_at < ?1 OR (decoy_for IS NOT NULL AND expires_at < ?2)")?
            .execute([before, decoys_before])?)
    }

    async fn waiting_tickets(&mut self, id: &str, purpose: &str, via: &str) -> Result<Vec<Ticket>, StoreError> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT {COLUMNS} FROM tickets WHERE (user_id = ?1 OR decoy_for = ?1) AND purpose = ?2 AND via = ?3 \
             AND step = 'waiting' ORDER BY id"
        ))?;
        let rows = stmt.query_map(params![id, purpose, via], raw)?.collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(decode).collect()
    }

    async fn drop_ticket(&mut self, id: i64) -> Result<(), StoreError> {
        self.writing()?.prepare_cached("DELETE FROM tickets WHERE id = ?1")?.execute([id])?;
        Ok(())
    }
}
