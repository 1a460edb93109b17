//! QR tickets: one PC flow (FIDO login, phone enrollment, device change, My
//! Number card link) as a state machine persisted in one row.
//!
//! Two secrets belong to a ticket. The **PC token** sits in the PC browser's
//! cookie (or, for the card-listener hand-off, in a one-time URL the PC claims);
//! the **phone token** is in the QR code. The phone token is derived one-way
//! from the PC token and the ticket's phase, so the PC page can redraw its QR
//! while the store keeps only hashes, and a phone never learns the PC token:
//! a phone alone cannot finish a PC login.
//!
//! ```text
//!   confirm ──yes──▶ waiting ◀──────────────┐ (ceremony taken: one try)
//!      │               │ begin               │
//!      no              ▼                     │
//!      ▼            ceremony ── take ────────┘
//!  cancelled           │ verified
//!                      ▼
//!        done (or confirm again: device change, old phone signed in)
//!                      │ collect (login: the PC gets its code once)
//!                      ▼
//!                  collected
//! ```

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use crate::auth::{b64url, random_token, token_hash};
use crate::store::{Store, StoreError};

/// What the ticket is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// L1: FIDO login for an OIDC authorization request.
    Login,
    /// E1/E2/E3 (and D2/D3 with the replace question): register a phone.
    Enroll,
    /// D1: the old phone signs in, then the new one registers.
    Change,
    /// E3 for a user who already has a phone: sign in to check it.
    Verify,
    /// E4: HPKI login done, the My Number card comes next.
    Link,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Login => "login",
            Purpose::Enroll => "enroll",
            Purpose::Change => "change",
            Purpose::Verify => "verify",
            Purpose::Link => "link",
        }
    }

    fn parse(s: &str) -> Purpose {
        match s {
            "login" => Purpose::Login,
            "enroll" => Purpose::Enroll,
            "change" => Purpose::Change,
            "verify" => Purpose::Verify,
            _ => Purpose::Link,
        }
    }
}

/// What the phone does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// WebAuthn get (sign in with the registered phone).
    Authenticate,
    /// WebAuthn create (register this phone).
    Register,
    /// No phone step (card link).
    None,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Authenticate => "authenticate",
            Action::Register => "register",
            Action::None => "none",
        }
    }

    fn parse(s: &str) -> Action {
        match s {
            "authenticate" => Action::Authenticate,
            "register" => Action::Register,
            _ => Action::None,
        }
    }
}

/// Where the ticket stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The PC must answer "replace the registered phone?".
    Confirm,
    /// QR shown; the phone has not (successfully) started.
    Waiting,
    /// The phone holds a challenge.
    Ceremony,
    /// Finished; for a login, the PC has not fetched its code yet.
    Done,
    /// Finished and collected by the PC.
    Collected,
    /// Cancelled by the user or an operator.
    Cancelled,
}

impl Step {
    /// Lowercase name (also what the PC page polls).
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Confirm => "confirm",
            Step::Waiting => "waiting",
            Step::Ceremony => "ceremony",
            Step::Done => "done",
            Step::Collected => "collected",
            Step::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Step {
        match s {
            "confirm" => Step::Confirm,
            "waiting" => Step::Waiting,
            "ceremony" => Step::Ceremony,
            "done" => Step::Done,
            "collected" => Step::Collected,
            _ => Step::Cancelled,
        }
    }
}

/// A ticket row.
#[derive(Clone, Debug)]
pub struct Ticket {
    /// Row ID.
    pub id: i64,
    /// What for.
    pub purpose: Purpose,
    /// How the user got here: `hpki`, `jpki`, `fido`, `regcode`.
    pub via: String,
    /// The user.
    pub user_id: String,
    /// The OIDC authorization request (login).
    pub oidc_req: Option<String>,
    /// The registration code (E3).
    pub regcode_id: Option<i64>,
    /// Next phone action.
    pub action: Action,
    /// State.
    pub step: Step,
    /// Bumped when the QR changes (device change: old phone, then new phone).
    pub phase: i64,
    /// Why the last phone attempt failed.
    pub error: Option<String>,
    /// Whether the label screen was answered.
    pub labelled: bool,
    /// Whether the PC took its token over (card-listener hand-off).
    pub pc_claimed: bool,
    /// Unix ms.
    pub expires_at: i64,
}

impl Ticket {
    /// Whether the ticket is past its lifetime (finished tickets never expire).
    pub fn expired(&self, now: i64) -> bool {
        !matches!(self.step, Step::Done | Step::Collected) && self.expires_at <= now
    }
}

/// A new ticket.
pub struct NewTicket<'a> {
    /// What for.
    pub purpose: Purpose,
    /// How the user got here.
    pub via: &'a str,
    /// The user.
    pub user_id: &'a str,
    /// The OIDC request (login).
    pub oidc_req: Option<&'a str>,
    /// The registration code (E3).
    pub regcode_id: Option<i64>,
    /// First phone action.
    pub action: Action,
    /// First step (`Confirm` or `Waiting`).
    pub step: Step,
    /// Whether the PC already holds its token (false: it must claim it once).
    pub pc_claimed: bool,
}

/// The phone token for a PC token and phase (one-way).
pub fn phone_token(pc_token: &str, phase: i64) -> String {
    b64url(&Sha256::digest(format!("inkan phone ticket\0{pc_token}\0{phase}").as_bytes()))
}

const COLUMNS: &str =
    "id, purpose, via, user_id, oidc_req, regcode_id, action, step, phase, error, labelled, pc_claimed, expires_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Ticket> {
    Ok(Ticket {
        id: r.get(0)?,
        purpose: Purpose::parse(&r.get::<_, String>(1)?),
        via: r.get(2)?,
        user_id: r.get(3)?,
        oidc_req: r.get(4)?,
        regcode_id: r.get(5)?,
        action: Action::parse(&r.get::<_, String>(6)?),
        step: Step::parse(&r.get::<_, String>(7)?),
        phase: r.get(8)?,
        error: r.get(9)?,
        labelled: r.get::<_, i64>(10)? == 1,
        pc_claimed: r.get::<_, i64>(11)? == 1,
        expires_at: r.get(12)?,
    })
}

/// Creates a ticket; returns it with its PC token (the phone token follows from it).
pub fn create(
    store: &mut Store,
    now: i64,
    lifetime_ms: i64,
    new: NewTicket<'_>,
) -> Result<(Ticket, String), StoreError> {
    let pc = random_token();
    let phone_hash = token_hash(&phone_token(&pc, 0));
    let id = store.write(|t| {
        // Old tickets are kept a day for support questions, then dropped.
        t.execute("DELETE FROM tickets WHERE expires_at < ?1", params![now - 86_400_000])?;
        t.execute(
            "INSERT INTO tickets (phone_hash, pc_hash, pc_claimed, purpose, via, user_id, oidc_req, regcode_id, action, step, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                phone_hash,
                token_hash(&pc),
                new.pc_claimed as i64,
                new.purpose.as_str(),
                new.via,
                new.user_id,
                new.oidc_req,
                new.regcode_id,
                new.action.as_str(),
                new.step.as_str(),
                now,
                now + lifetime_ms
            ],
        )?;
        Ok(t.last_insert_rowid())
    })?;
    let ticket = by_id(store.conn(), id)?.ok_or_else(|| StoreError::Corrupt("ticket vanished".into()))?;
    Ok((ticket, pc))
}

/// A ticket by row ID.
pub fn by_id(conn: &Connection, id: i64) -> Result<Option<Ticket>, StoreError> {
    Ok(conn.query_row(&format!("SELECT {COLUMNS} FROM tickets WHERE id = ?1"), params![id], row).optional()?)
}

/// The ticket a PC token stands for.
pub fn by_pc(conn: &Connection, pc_token: &str) -> Result<Option<Ticket>, StoreError> {
    Ok(conn
        .query_row(&format!("SELECT {COLUMNS} FROM tickets WHERE pc_hash = ?1"), params![token_hash(pc_token)], row)
        .optional()?)
}

/// The ticket a phone token (from the QR) stands for.
pub fn by_phone(conn: &Connection, phone_token: &str) -> Result<Option<Ticket>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM tickets WHERE phone_hash = ?1"),
            params![token_hash(phone_token)],
            row,
        )
        .optional()?)
}

/// The PC takes its ticket over from a hand-off URL, once: the ticket gets a
/// new PC token (returned, for the cookie) so that the one in the URL is spent.
pub fn claim(store: &mut Store, handoff: &str) -> Result<Option<String>, StoreError> {
    let Some(ticket) = by_pc(store.conn(), handoff)? else {
        return Ok(None);
    };
    let pc = random_token();
    let phone_hash = token_hash(&phone_token(&pc, ticket.phase));
    let n = store.write(|t| {
        Ok(t.execute(
            "UPDATE tickets SET pc_claimed = 1, pc_hash = ?2, phone_hash = ?3 WHERE pc_hash = ?1 AND pc_claimed = 0",
            params![token_hash(handoff), token_hash(&pc), phone_hash],
        )?)
    })?;
    Ok((n == 1).then_some(pc))
}

/// Cancels a ticket inside the caller's transaction.
pub fn cancel(tx: &rusqlite::Transaction<'_>, id: i64) -> Result<(), StoreError> {
    tx.execute("UPDATE tickets SET step = 'cancelled', ceremony = NULL WHERE id = ?1", params![id])?;
    Ok(())
}

/// The PC answers "replace the registered phone?": yes moves on to a fresh QR
/// for the new phone (the old phone keeps working until it has registered);
/// no cancels. False if the ticket was not waiting for the answer.
pub fn answer_replace(
    store: &mut Store,
    now: i64,
    lifetime_ms: i64,
    pc_token: &str,
    yes: bool,
) -> Result<bool, StoreError> {
    let Some(ticket) = by_pc(store.conn(), pc_token)? else {
        return Ok(false);
    };
    if ticket.step != Step::Confirm || ticket.expired(now) {
        return Ok(false);
    }
    let phase = ticket.phase + 1;
    let phone_hash = token_hash(&phone_token(pc_token, phase));
    let n = store.write(|t| {
        Ok(if yes {
            t.execute(
                "UPDATE tickets SET step = 'waiting', action = 'register', phase = ?2, phone_hash = ?3, error = NULL,
                        expires_at = ?4, replace_ok = 1
                 WHERE id = ?1 AND step = 'confirm'",
                params![ticket.id, phase, phone_hash, now + lifetime_ms],
            )?
        } else {
            t.execute("UPDATE tickets SET step = 'cancelled' WHERE id = ?1 AND step = 'confirm'", params![ticket.id])?
        })
    })?;
    Ok(n == 1)
}

/// The phone starts its ceremony: the state is kept for exactly one answer. A
/// new start replaces an unanswered challenge (the user cancelled the prompt).
pub fn begin(store: &mut Store, now: i64, ticket: &Ticket, ceremony: &str) -> Result<bool, StoreError> {
    let n = store.write(|t| {
        Ok(t.execute(
            "UPDATE tickets SET step = 'ceremony', ceremony = ?2, error = NULL
             WHERE id = ?1 AND step IN ('waiting', 'ceremony') AND expires_at > ?3 AND phase = ?4",
            params![ticket.id, ceremony, now, ticket.phase],
        )?)
    })?;
    Ok(n == 1)
}

/// Takes the ceremony state out (single use): the ticket is back to waiting,
/// whatever the verification then says.
pub fn take(store: &mut Store, now: i64, id: i64) -> Result<Option<String>, StoreError> {
    store.write(|t| {
        let state: Option<String> = t
            .query_row(
                "SELECT ceremony FROM tickets WHERE id = ?1 AND step = 'ceremony' AND expires_at > ?2",
                params![id, now],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        if state.is_some() {
            t.execute("UPDATE tickets SET step = 'waiting', ceremony = NULL WHERE id = ?1", params![id])?;
        }
        Ok(state)
    })
}

/// Notes why the phone's last attempt failed (shown on the PC).
pub fn note_error(store: &mut Store, id: i64, error: &str) -> Result<(), StoreError> {
    store.write(|t| {
        t.execute("UPDATE tickets SET error = ?2 WHERE id = ?1", params![id, error])?;
        Ok(())
    })
}

/// Moves a verified ticket on, inside the caller's transaction: to `Confirm`
/// after the old phone of a device change signed in, else to `Done`.
pub fn advance(tx: &rusqlite::Transaction<'_>, ticket: &Ticket) -> Result<bool, StoreError> {
    let next = if ticket.purpose == Purpose::Change && ticket.action == Action::Authenticate {
        Step::Confirm
    } else {
        Step::Done
    };
    Ok(tx.execute(
        "UPDATE tickets SET step = ?2, error = NULL WHERE id = ?1 AND step = 'waiting' AND phase = ?3",
        params![ticket.id, next.as_str(), ticket.phase],
    )? == 1)
}

/// Whether the user said yes to replacing the registered phone on this ticket.
pub fn replace_confirmed(tx: &rusqlite::Transaction<'_>, id: i64) -> Result<bool, StoreError> {
    Ok(tx.query_row("SELECT replace_ok FROM tickets WHERE id = ?1", params![id], |r| r.get::<_, i64>(0))? == 1)
}

/// A phone was registered for the user after this ticket began without one:
/// the PC must answer the replace question first.
pub fn require_confirmation(tx: &rusqlite::Transaction<'_>, id: i64) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE tickets SET step = 'confirm' WHERE id = ?1 AND step = 'waiting' AND pc_hash IS NOT NULL",
        params![id],
    )?;
    Ok(())
}

/// Puts a used card-link ticket back (the link was refused, the user may try another card).
pub fn untake_link(store: &mut Store, id: i64) -> Result<(), StoreError> {
    store.write(|t| {
        t.execute(
            "UPDATE tickets SET step = 'waiting' WHERE id = ?1 AND step = 'collected' AND purpose = 'link'",
            params![id],
        )?;
        Ok(())
    })
}

/// The PC collects a finished ticket (a login's code is issued once).
pub fn collect(store: &mut Store, id: i64) -> Result<bool, StoreError> {
    store.write(|t| {
        Ok(t.execute("UPDATE tickets SET step = 'collected' WHERE id = ?1 AND step = 'done'", params![id])? == 1)
    })
}

/// Marks the label screen answered (once).
pub fn mark_labelled(store: &mut Store, id: i64) -> Result<bool, StoreError> {
    store.write(|t| Ok(t.execute("UPDATE tickets SET labelled = 1 WHERE id = ?1 AND labelled = 0", params![id])? == 1))
}

/// Uses a card-link ticket (E4): waiting → collected, once, before expiry.
pub fn take_link(store: &mut Store, now: i64, pc_token: &str) -> Result<Option<Ticket>, StoreError> {
    let Some(ticket) = by_pc(store.conn(), pc_token)? else {
        return Ok(None);
    };
    if ticket.purpose != Purpose::Link {
        return Ok(None);
    }
    let n = store.write(|t| {
        Ok(t.execute(
            "UPDATE tickets SET step = 'collected' WHERE id = ?1 AND step = 'waiting' AND expires_at > ?2",
            params![ticket.id, now],
        )?)
    })?;
    Ok((n == 1).then_some(ticket))
}
