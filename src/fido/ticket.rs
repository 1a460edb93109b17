//! QR tickets: one PC flow (FIDO login, phone enrollment, device change, My
//! Number card link) as a typed state machine, persisted in one row.
//!
//! A ticket's [`Kind`] says what it is for and carries what only that kind
//! has (a login's pending OpenID Connect request, a registration code); the
//! phone's [`Action`] follows from the kind and the phase, so a login that
//! registers a phone cannot be written. Its [`Stage`] moves only through the
//! transitions below, each of which consumes the ticket and returns the next
//! one or a [`Refused`] that says why not. A stored row with an unknown value
//! or a combination no transition makes is an error, never a guess.
//!
//! ```text
//!   Confirm ──answer(yes)──▶ Waiting ◀────────────────────┐ take_ceremony
//!      │                       │ begin                       │ (one answer per challenge)
//!  answer(no)                  ▼                             │
//!      ▼                    Ceremony ────────────────────────┘
//!  Cancelled                   │ verified (after take_ceremony)
//!                              ▼
//!         Done  (a device change's old phone: Confirm, phase + 1 after yes)
//!                              │ collect (a login's PC fetches its code, once)
//!                              ▼
//!                          Collected   (a card link: Waiting ⇄ Collected)
//! ```
//!
//! Two secrets belong to a ticket. The **PC token** sits in the PC browser's
//! cookie (or, for the card-listener hand-off, in a one-time URL the PC
//! claims); the **phone token** is in the QR code. The phone token is derived
//! one-way from the PC token and the ticket's phase, so the PC page can redraw
//! its QR while the store keeps only hashes, and a phone never learns the PC
//! token: a phone alone cannot finish a PC login.
//!
//! **A new phone flow**: a [`Kind`] variant (its stored names in
//! [`Kind::names`] and [`Kind::from_names`], its phone action in
//! [`Ticket::action`], the stages it may reach in [`Ticket::check`]), and the
//! operation that opens it in [`super::flows`].

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::Method;
use crate::encoding::b64url;
use crate::seam::StoreError;

/// What the ticket is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// L1: a FIDO login for a pending OpenID Connect request (its handle).
    Login {
        /// The pending authorization request's handle.
        request: String,
    },
    /// E1/E2 (D2/D3 when a phone is registered): a phone registered after a
    /// card login on the PC.
    CardEnroll {
        /// The card that logged in: [`Method::Hpki`] or [`Method::Jpki`].
        card: Method,
    },
    /// E3: a phone registered with a printed registration code (no PC).
    CodeEnroll {
        /// The registration code's row.
        code: i64,
    },
    /// E3 for a user who has a phone: sign in with it to check it.
    CodeVerify {
        /// The registration code's row.
        code: i64,
    },
    /// D1: the old phone signs in, then the new phone registers.
    Change,
    /// E4: an HPKI card login on the PC, then the My Number card.
    Link,
}

impl Kind {
    /// The stored (purpose, via) of a kind.
    pub fn names(&self) -> (&'static str, &'static str) {
        match self {
            Kind::Login { .. } => ("login", "fido"),
            // Each card as itself: a kind never stores one method as another.
            Kind::CardEnroll { card } => ("enroll", card.as_str()),
            Kind::CodeEnroll { .. } => ("enroll", "regcode"),
            Kind::CodeVerify { .. } => ("verify", "regcode"),
            Kind::Change => ("change", "fido"),
            Kind::Link => ("link", "hpki"),
        }
    }

    /// The kind of a stored row: its purpose, via, request and code columns,
    /// which must fit together.
    pub fn from_names(
        purpose: &str,
        via: &str,
        request: Option<String>,
        code: Option<i64>,
    ) -> Result<Kind, StoreError> {
        // A card enrollment names its card as itself (any card method).
        let card = Method::parse(via).filter(|m| m.is_card());
        let kind = match (purpose, via, request, code, card) {
            ("login", "fido", Some(request), None, _) => Kind::Login { request },
            ("enroll", _, None, None, Some(card)) => Kind::CardEnroll { card },
            ("enroll", "regcode", None, Some(code), _) => Kind::CodeEnroll { code },
            ("verify", "regcode", None, Some(code), _) => Kind::CodeVerify { code },
            ("change", "fido", None, None, _) => Kind::Change,
            ("link", "hpki", None, None, _) => Kind::Link,
            (p, v, r, c, _) => {
                return Err(StoreError::Corrupt(format!(
                    "ticket of unknown kind: purpose {p:?}, via {v:?}, request {}, code {}",
                    if r.is_some() { "set" } else { "unset" },
                    if c.is_some() { "set" } else { "unset" },
                )))
            }
        };
        Ok(kind)
    }

    /// How the user got here (`hpki`, `jpki`, `fido`, `regcode`), for the audit log.
    pub fn via(&self) -> &'static str {
        self.names().1
    }

    /// The pending OpenID Connect request of a login.
    pub fn request(&self) -> Option<&str> {
        match self {
            Kind::Login { request } => Some(request),
            _ => None,
        }
    }

    /// The registration code of a code ticket.
    pub fn code(&self) -> Option<i64> {
        match self {
            Kind::CodeEnroll { code } | Kind::CodeVerify { code } => Some(*code),
            _ => None,
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
    /// `authenticate`, `register`, `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Authenticate => "authenticate",
            Action::Register => "register",
            Action::None => "none",
        }
    }
}

/// Where the ticket stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The PC must answer "replace the registered phone?".
    Confirm,
    /// QR shown; the phone holds no challenge.
    Waiting,
    /// The phone holds a challenge; the ceremony's state (JSON) waits for its one answer.
    Ceremony(String),
    /// Finished; for a login, the PC has not fetched its code yet.
    Done,
    /// Finished and collected by the PC (a login), or used (a card link).
    Collected,
    /// Cancelled by the user or an operator.
    Cancelled,
}

impl Stage {
    /// Lowercase name (also what the PC page polls).
    pub fn as_str(&self) -> &'static str {
        match self {
            Stage::Confirm => "confirm",
            Stage::Waiting => "waiting",
            Stage::Ceremony(_) => "ceremony",
            Stage::Done => "done",
            Stage::Collected => "collected",
            Stage::Cancelled => "cancelled",
        }
    }

    /// The stage of a stored step name and ceremony column.
    pub fn from_parts(step: &str, ceremony: Option<String>) -> Result<Stage, StoreError> {
        let bad = |what: &str| StoreError::Corrupt(format!("ticket step {step:?} {what}"));
        match (step, ceremony) {
            ("ceremony", Some(state)) => Ok(Stage::Ceremony(state)),
            ("ceremony", None) => Err(bad("without its ceremony state")),
            (_, Some(_)) => Err(bad("with a ceremony state")),
            ("confirm", None) => Ok(Stage::Confirm),
            ("waiting", None) => Ok(Stage::Waiting),
            ("done", None) => Ok(Stage::Done),
            ("collected", None) => Ok(Stage::Collected),
            ("cancelled", None) => Ok(Stage::Cancelled),
            _ => Err(bad("is unknown")),
        }
    }

    /// The ceremony state, if the phone holds a challenge.
    pub fn ceremony(&self) -> Option<&str> {
        match self {
            Stage::Ceremony(s) => Some(s),
            _ => None,
        }
    }

    /// Finished (done or collected).
    pub fn finished(&self) -> bool {
        matches!(self, Stage::Done | Stage::Collected)
    }
}

/// A ticket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// Row ID.
    pub id: i64,
    /// The user.
    pub user_id: String,
    /// What for.
    pub kind: Kind,
    /// Where it stands.
    pub stage: Stage,
    /// Bumped when the QR changes (a device change: old phone, then new phone).
    pub phase: i64,
    /// The PC said yes to replacing the registered phone.
    pub replace_confirmed: bool,
    /// Whether the label screen was answered.
    pub labelled: bool,
    /// Whether the PC holds its token (false until a card-listener hand-off is claimed).
    pub pc_claimed: bool,
    /// Why the last phone attempt failed (shown on the PC).
    pub error: Option<String>,
    /// Unix ms.
    pub expires_at: i64,
    /// The PC that started it (none for registration codes, which have no PC,
    /// and tickets of an earlier inkan).
    pub pc: Option<PcInfo>,
    /// A decoy: a phone login or change started for an ID that has no usable
    /// phone (unknown, disabled, none registered). It looks and answers like
    /// any other ticket, offering passkeys no phone holds
    /// ([`super::decoy`]), and never finishes; `user_id` is the ID as typed.
    pub decoy: bool,
}

/// The PC that started a ticket: what the phone shows before it approves
/// anything, and the secret of the confirmation number the PC shows and the
/// phone's user types (a QR code sent to someone else's phone is of no use
/// without the number on the PC's screen).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcInfo {
    /// The PC's address, as inkan saw it.
    pub addr: String,
    /// Its network (IPv4 /24, IPv6 /48): a user's QR codes from one
    /// network replace each other first (empty in tickets of an earlier inkan).
    #[serde(default)]
    pub network: String,
    /// Its browser (`User-Agent`, at most 200 characters).
    pub agent: String,
    /// The signing system that asked for the login.
    pub system: Option<String>,
    /// When the ticket was opened (Unix ms).
    pub at: i64,
    /// 16 random bytes (hex): the confirmation numbers are derived from it.
    secret: String,
}

impl std::fmt::Debug for PcInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcInfo")
            .field("addr", &self.addr)
            .field("agent", &self.agent)
            .field("system", &self.system)
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

impl PcInfo {
    /// The stored form (JSON).
    pub fn encode(&self) -> Result<String, StoreError> {
        serde_json::to_string(self).map_err(|e| StoreError::Corrupt(format!("pc_info: {e}")))
    }

    /// A stored form read back.
    pub fn decode(text: &str) -> Result<PcInfo, StoreError> {
        serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("pc_info: {e}")))
    }

    /// A PC's details, with a fresh secret.
    pub fn new(
        addr: &str,
        network: &str,
        agent: &str,
        system: Option<String>,
        at: i64,
    ) -> crate::error::Result<PcInfo> {
        let mut secret = [0u8; 16];
        getrandom::fill(&mut secret).map_err(crate::error::Error::internal)?;
        Ok(PcInfo {
            addr: addr.to_owned(),
            network: network.to_owned(),
            agent: agent.chars().take(200).collect(),
            system,
            at,
            secret: crate::encoding::hex(&secret),
        })
    }

    /// The four-digit confirmation number of a phase (a new QR code, a new number).
    pub fn code(&self, phase: i64) -> String {
        let digest = Sha256::new()
            .chain_update(b"inkan confirmation number\0")
            .chain_update(self.secret.as_bytes())
            .chain_update(phase.to_be_bytes())
            .finalize();
        let n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % 10_000;
        format!("{n:04}")
    }
}

/// A transition the ticket's state does not allow.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Past its lifetime.
    #[error("the ticket has expired")]
    Expired,
    /// Not in a stage (or of a kind) where this can happen.
    #[error("the ticket cannot {0} now")]
    Stage(&'static str),
}

impl Ticket {
    /// A new ticket of `kind` for `user_id`: a card enrollment for a user who
    /// has a phone starts with the replace question, the rest with the QR code.
    pub fn new(
        kind: Kind,
        user_id: &str,
        has_device: bool,
        pc_claimed: bool,
        now: i64,
        lifetime_ms: i64,
        pc: Option<PcInfo>,
    ) -> Ticket {
        let stage = match kind {
            Kind::CardEnroll { .. } if has_device => Stage::Confirm,
            _ => Stage::Waiting,
        };
        Ticket {
            id: 0,
            user_id: user_id.to_owned(),
            kind,
            stage,
            phase: 0,
            replace_confirmed: false,
            labelled: false,
            pc_claimed,
            error: None,
            expires_at: now + lifetime_ms,
            pc,
            decoy: false,
        }
    }

    /// A decoy of `kind` (a phone login or change) for an ID without a usable
    /// phone: waiting for a phone like any new ticket of its kind.
    pub fn decoy(kind: Kind, user_id: &str, now: i64, lifetime_ms: i64, pc: PcInfo) -> Ticket {
        Ticket { decoy: true, ..Ticket::new(kind, user_id, true, true, now, lifetime_ms, Some(pc)) }
    }

    /// The confirmation number the phone's user must type before the phone
    /// may answer: for a ticket a PC started and shows (phone login, phone
    /// change, card enrollment), none for one without a PC.
    pub fn confirmation(&self) -> Option<String> {
        match (&self.kind, &self.pc) {
            (Kind::Login { .. } | Kind::Change | Kind::CardEnroll { .. }, Some(pc)) => Some(pc.code(self.phase)),
            _ => None,
        }
    }

    /// What the phone does next.
    pub fn action(&self) -> Action {
        match self.kind {
            Kind::Login { .. } | Kind::CodeVerify { .. } => Action::Authenticate,
            Kind::CardEnroll { .. } | Kind::CodeEnroll { .. } => Action::Register,
            Kind::Change if self.phase == 0 => Action::Authenticate,
            Kind::Change => Action::Register,
            Kind::Link => Action::None,
        }
    }

    /// Whether the ticket is past its lifetime (finished tickets never expire).
    pub fn expired(&self, now: i64) -> bool {
        !self.stage.finished() && self.expires_at <= now
    }

    /// Whether a stored ticket is one the transitions can make: its stage fits
    /// its kind and phase.
    pub fn check(self) -> Result<Ticket, StoreError> {
        let ok = match (&self.kind, &self.stage) {
            (_, Stage::Cancelled) => true,
            (Kind::Link, stage) => matches!(stage, Stage::Waiting | Stage::Collected) && self.phase == 0,
            (Kind::Login { .. }, stage) => !matches!(stage, Stage::Confirm) && self.phase == 0,
            (Kind::CodeEnroll { .. } | Kind::CodeVerify { .. }, stage) => {
                !matches!(stage, Stage::Confirm | Stage::Collected) && self.phase == 0
            }
            (Kind::CardEnroll { .. } | Kind::Change, stage) => !matches!(stage, Stage::Collected),
        };
        // A decoy is a phone login or change that no phone ever finished.
        let decoy_ok = !self.decoy
            || (matches!(self.kind, Kind::Login { .. } | Kind::Change)
                && self.phase == 0
                && !self.replace_confirmed
                && !self.labelled
                && matches!(self.stage, Stage::Waiting | Stage::Ceremony(_) | Stage::Cancelled));
        if ok && decoy_ok && self.phase >= 0 {
            Ok(self)
        } else {
            Err(StoreError::Corrupt(format!(
                "ticket {} is {:?} at phase {} in stage {}: no transition leads there",
                self.id,
                self.kind.names(),
                self.phase,
                self.stage.as_str()
            )))
        }
    }

    fn expect(&self, now: i64, ok: bool, what: &'static str) -> Result<(), Refused> {
        if self.expired(now) {
            return Err(Refused::Expired);
        }
        if ok {
            Ok(())
        } else {
            Err(Refused::Stage(what))
        }
    }

    /// The phone starts its ceremony: the state is kept for exactly one answer.
    /// A new start replaces an unanswered challenge (the user cancelled the prompt).
    pub fn begin(self, now: i64, ceremony: String) -> Result<Ticket, Refused> {
        let ok = matches!(self.stage, Stage::Waiting | Stage::Ceremony(_)) && self.action() != Action::None;
        self.expect(now, ok, "start a phone ceremony")?;
        Ok(Ticket { stage: Stage::Ceremony(ceremony), error: None, ..self })
    }

    /// Takes the ceremony state out (single use): the ticket is back to
    /// waiting, whatever the verification then says.
    pub fn take_ceremony(self, now: i64) -> Result<(Ticket, String), Refused> {
        self.expect(now, matches!(self.stage, Stage::Ceremony(_)), "take an answer")?;
        match self.stage {
            Stage::Ceremony(state) => Ok((Ticket { stage: Stage::Waiting, ..self }, state)),
            _ => Err(Refused::Stage("take an answer")),
        }
    }

    /// The phone's answer was verified: the old phone of a device change goes
    /// on to the replace question, everything else is done.
    pub fn verified(self) -> Result<Ticket, Refused> {
        if self.stage != Stage::Waiting || self.action() == Action::None || self.decoy {
            return Err(Refused::Stage("finish a phone ceremony"));
        }
        let next = match (&self.kind, self.action()) {
            (Kind::Change, Action::Authenticate) => Stage::Confirm,
            _ => Stage::Done,
        };
        Ok(Ticket { stage: next, error: None, ..self })
    }

    /// A phone was registered for the user after this ticket began without
    /// one: the PC must answer the replace question first.
    pub fn ask_replace(self) -> Result<Ticket, Refused> {
        let ok = self.stage == Stage::Waiting && matches!(self.kind, Kind::CardEnroll { .. } | Kind::Change);
        if !ok {
            return Err(Refused::Stage("ask the replace question"));
        }
        Ok(Ticket { stage: Stage::Confirm, ..self })
    }

    /// The PC answers "replace the registered phone?": yes moves on to a fresh
    /// QR (the next phase) for the new phone, whose lifetime starts now; the
    /// old phone keeps working until the new one has registered. No cancels.
    pub fn answer(self, now: i64, yes: bool, lifetime_ms: i64) -> Result<Ticket, Refused> {
        self.expect(now, self.stage == Stage::Confirm, "answer the replace question")?;
        Ok(if yes {
            Ticket {
                stage: Stage::Waiting,
                phase: self.phase + 1,
                replace_confirmed: true,
                error: None,
                expires_at: now + lifetime_ms,
                ..self
            }
        } else {
            Ticket { stage: Stage::Cancelled, ..self }
        })
    }

    /// The PC collects a finished login (its authorization code is issued once).
    pub fn collect(self) -> Result<Ticket, Refused> {
        if !matches!(self.kind, Kind::Login { .. }) || self.stage != Stage::Done {
            return Err(Refused::Stage("be collected"));
        }
        Ok(Ticket { stage: Stage::Collected, ..self })
    }

    /// The label screen after a registration was answered (once).
    pub fn label(self) -> Result<Ticket, Refused> {
        if self.action() != Action::Register || !self.stage.finished() || self.labelled {
            return Err(Refused::Stage("take a label"));
        }
        Ok(Ticket { labelled: true, ..self })
    }

    /// A card link's ticket is used by a My Number card login (once, before expiry).
    pub fn use_link(self, now: i64) -> Result<Ticket, Refused> {
        self.expect(now, self.kind == Kind::Link && self.stage == Stage::Waiting, "link a card")?;
        Ok(Ticket { stage: Stage::Collected, ..self })
    }

    /// A used card link's ticket is put back (the card was refused; the user
    /// may try another).
    pub fn restore_link(self) -> Result<Ticket, Refused> {
        if self.kind != Kind::Link || self.stage != Stage::Collected {
            return Err(Refused::Stage("be used again"));
        }
        Ok(Ticket { stage: Stage::Waiting, ..self })
    }

    /// The PC took its ticket over from the card listener's hand-off URL (once).
    pub fn claim(self) -> Result<Ticket, Refused> {
        if self.pc_claimed {
            return Err(Refused::Stage("be claimed again"));
        }
        Ok(Ticket { pc_claimed: true, ..self })
    }

    /// Cancelled (by the user, an operator, or because its phone went away).
    /// A collected or cancelled ticket stays as it is.
    pub fn cancel(self) -> Result<Ticket, Refused> {
        if matches!(self.stage, Stage::Collected | Stage::Cancelled) {
            return Err(Refused::Stage("be cancelled"));
        }
        Ok(Ticket { stage: Stage::Cancelled, ..self })
    }

    /// Notes why the phone's last attempt failed (the PC shows it).
    pub fn with_error(self, error: String) -> Ticket {
        Ticket { error: Some(error), ..self }
    }
}

/// The phone token for a PC token and phase (one-way).
pub fn phone_token(pc_token: &str, phase: i64) -> String {
    b64url(&Sha256::digest(format!("inkan phone ticket\0{pc_token}\0{phase}").as_bytes()))
}

/// What tickets need from storage. Tickets are read and written whole inside a
/// write transaction: the transaction makes a read-decide-write atomic.
#[async_trait]
pub trait TicketStore: Send {
    /// Stores a new ticket with the hashes of its tokens; returns its ID.
    async fn insert_ticket(
        &mut self,
        ticket: &Ticket,
        pc_hash: &[u8],
        phone_hash: &[u8],
        now: i64,
    ) -> Result<i64, StoreError>;
    /// A ticket by ID.
    async fn ticket(&mut self, id: i64) -> Result<Option<Ticket>, StoreError>;
    /// The ticket a PC token's hash stands for.
    async fn ticket_by_pc(&mut self, pc_hash: &[u8]) -> Result<Option<Ticket>, StoreError>;
    /// The ticket a phone token's hash stands for.
    async fn ticket_by_phone(&mut self, phone_hash: &[u8]) -> Result<Option<Ticket>, StoreError>;
    /// Writes a ticket's state (everything but its tokens).
    async fn update_ticket(&mut self, ticket: &Ticket) -> Result<(), StoreError>;
    /// Replaces a ticket's token hashes (a claimed hand-off, a new phase).
    async fn set_ticket_tokens(&mut self, id: i64, pc_hash: &[u8], phone_hash: &[u8]) -> Result<(), StoreError>;
    /// A user's tickets that are neither collected nor cancelled.
    async fn open_tickets(&mut self, user_id: &str) -> Result<Vec<Ticket>, StoreError>;
    /// Drops tickets that expired before `before`, and decoys that expired
    /// before `decoys_before` (nobody asks support about a decoy); returns
    /// how many.
    async fn purge_tickets(&mut self, before: i64, decoys_before: i64) -> Result<usize, StoreError>;
    /// The tickets of one ID (the user's, and the decoys made for the ID)
    /// of one purpose and via (as [`Kind::names`] gives them) that still
    /// wait for a phone (a QR code nobody has used), oldest first.
    async fn waiting_tickets(&mut self, id: &str, purpose: &str, via: &str) -> Result<Vec<Ticket>, StoreError>;
    /// Deletes one ticket.
    async fn drop_ticket(&mut self, id: i64) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests;
