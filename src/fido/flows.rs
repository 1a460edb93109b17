//! The phone flows: L1 (FIDO login), E1–E4 (enrollment, card link), D1–D3
//! (device change), as operations the PC and phone pages call.
//!
//! Each operation reads a ticket inside a write transaction, asks the ticket
//! for its next state ([`super::ticket`]), and writes it back with whatever
//! else the step changes (a device, a registration code, the audit log) in the
//! same transaction. WebAuthn verification and password hashing run between
//! transactions, never inside one.
//!
//! When the phone fails, the ticket notes why ([`Failure`]) and the PC page
//! shows it too.

use std::sync::Arc;

use serde::Serialize;
use webauthn_rs::prelude::Passkey;

use crate::audit::{self, Event};
use crate::auth::cards::{CardAuth, CardsTx};
use crate::auth::oidc::{Provider, ProviderTx};
use crate::auth::Method;
use crate::auth::{random_token, token_hash};
use crate::clock::{rfc3339, Clock};
use crate::config::Config;
use crate::encoding::b64url;
use crate::error::{Credential, Error, Forbidden, Gone, Missing, Result};
use crate::seam::Transactions;

use super::decoy::Decoys;
use super::device::{self, DevicesTx, Retirement};
use super::regcode::{self, RegcodesTx, Status};
use super::ticket::{phone_token, Action, Kind, PcInfo, Refused, Stage, Ticket};
use super::RelyingParty;

/// Why the phone's last attempt failed, as the ticket keeps it for the PC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Failure {
    /// inkan refused the phone's answer (the reason says why).
    Refused(String),
    /// The user has no registered phone (removed meanwhile).
    NoDevice,
    /// The user is disabled.
    Disabled,
    /// This phone's registration was replaced or removed (Unix ms).
    Retired {
        /// Why.
        reason: Retirement,
        /// When.
        at: i64,
    },
    /// The phone's browser gave up without an answer: it holds no passkey
    /// for this user, or the user cancelled.
    NotAllowed,
    /// A phone typed a confirmation number other than the PC's: the QR code
    /// may have reached a phone whose user does not see this PC.
    WrongCode,
    /// A message stored as it is shown (tickets of an earlier inkan).
    Shown(String),
}

impl Failure {
    /// The stored form (the ticket's `error`).
    pub fn encode(&self) -> String {
        match self {
            Failure::Refused(reason) => format!("refused:{reason}"),
            Failure::NoDevice => "no_device".into(),
            Failure::Disabled => "disabled".into(),
            Failure::Retired { reason, at } => format!("retired:{}:{at}", reason.as_str()),
            Failure::NotAllowed => "not_allowed".into(),
            Failure::WrongCode => "wrong_code".into(),
            Failure::Shown(text) => text.clone(),
        }
    }

    /// A stored failure (anything else is shown as it was stored).
    pub fn decode(text: &str) -> Failure {
        match text.split_once(':') {
            Some(("refused", reason)) => Failure::Refused(reason.to_owned()),
            Some(("retired", rest)) => {
                let (reason, at) = rest.split_once(':').unwrap_or((rest, "0"));
                let reason = if reason == "removed" { Retirement::Removed } else { Retirement::Replaced };
                Failure::Retired { reason, at: at.parse().unwrap_or(0) }
            }
            _ => match text {
                "no_device" => Failure::NoDevice,
                "disabled" => Failure::Disabled,
                "not_allowed" => Failure::NotAllowed,
                "wrong_code" => Failure::WrongCode,
                other => Failure::Shown(other.to_owned()),
            },
        }
    }
}

/// The result of the PC's poll.
#[derive(Clone, Debug)]
pub struct PcStatus {
    /// The ticket, after this poll.
    pub ticket: Ticket,
    /// For a finished login: where the PC goes with its authorization code
    /// (`None` if the login request expired meanwhile).
    pub login: Option<Option<String>>,
}

/// A PC ticket's page: the ticket and the phone token its QR code holds.
#[derive(Clone, Debug)]
pub struct PcView {
    /// The ticket.
    pub ticket: Ticket,
    /// The phone token of the current phase.
    pub phone_token: String,
}

/// What the phone flows need in one transaction.
pub trait PhonesTx: DevicesTx + RegcodesTx + CardsTx {}
impl<T: DevicesTx + RegcodesTx + CardsTx + ?Sized> PhonesTx for T {}

/// The phone flows.
pub struct Phones<T: ?Sized + Send> {
    store: Arc<dyn Transactions<T>>,
    clock: Arc<dyn Clock>,
    rp: RelyingParty,
    ticket_ms: i64,
    regcode_max_tries: u32,
    decoys: Decoys,
}

fn refused(e: Refused) -> Error {
    match e {
        Refused::Expired => Error::Gone(Gone::Expired, "the QR code has expired: start again".into()),
        Refused::Stage(what) => Error::Conflict(format!("the ticket cannot {what} now: see the PC")),
    }
}

fn not_the_users_phone() -> Error {
    Error::Unauthenticated(Credential::Phone, "the credential is not this user's registered device".into())
}

fn unknown_ticket() -> Error {
    Error::NotFound(Missing::Ticket, "unknown or used ticket".into())
}

impl<T: PhonesTx + ?Sized> Phones<T> {
    /// The flows with the relying party of `[fido]` and `[server] public_url`,
    /// and the decoys of IDs without a usable phone.
    pub fn new(
        config: &Config,
        store: Arc<dyn Transactions<T>>,
        clock: Arc<dyn Clock>,
        decoys: Decoys,
    ) -> Result<Self> {
        Ok(Phones {
            store,
            clock,
            rp: RelyingParty::new(config)?,
            ticket_ms: config.fido.ticket_secs as i64 * 1000,
            regcode_max_tries: config.fido.regcode_max_tries,
            decoys,
        })
    }

    /// The relying party.
    pub fn rp(&self) -> &RelyingParty {
        &self.rp
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Checks that a user exists, is enabled and (if `need_device`) has a
    /// phone. The same reads whatever the answer: an open start page must
    /// not take longer for one kind of ID than for another.
    async fn check_user(&self, tx: &mut T, user_id: &str, need_device: bool) -> Result<bool> {
        let user = tx.user(user_id).await?;
        let has_device = tx.device(user_id).await?.is_some();
        let user = user.ok_or_else(|| crate::users::unknown(user_id))?;
        if !user.is_active() {
            return Err(crate::users::disabled(user_id));
        }
        if need_device && !has_device {
            return Err(Error::Forbidden(Forbidden::NoDevice, format!("user {user_id} has no registered phone")));
        }
        Ok(has_device)
    }

    /// Opens a ticket for the user (a decoy, for a phone login or change of
    /// an ID without a usable phone); returns the PC token.
    async fn open(
        &self,
        user_id: &str,
        kind: Kind,
        need_device: bool,
        pc_claimed: bool,
        pc_info: PcInfo,
    ) -> Result<String> {
        let now = self.now();
        let pc = random_token();
        // An ID in a form no user can have is refused before anything is read.
        crate::users::validate_id(user_id)?;
        let checked = self.check_user(&mut *self.store.read().await?, user_id, need_device).await;
        let ticket = match checked {
            Ok(has_device) => Ticket::new(kind, user_id, has_device, pc_claimed, now, self.ticket_ms, Some(pc_info)),
            // Anyone may start a phone login or change for any ID: an ID
            // without a usable phone gets a decoy, written and shown like a
            // real ticket, so that the answer does not tell which IDs exist.
            Err(Error::NotFound(Missing::User, _) | Error::Forbidden(Forbidden::Disabled | Forbidden::NoDevice, _))
                if matches!(kind, Kind::Login { .. } | Kind::Change) =>
            {
                Ticket::decoy(kind, user_id, now, self.ticket_ms, pc_info)
            }
            Err(e) => return Err(e),
        };
        let mut tx = self.store.write().await?;
        // Old tickets are kept a day for support questions, then dropped;
        // decoys as soon as they expire (at most `open_per_second` ×
        // `ticket_secs` of them, however long a flood of made-up IDs lasts).
        tx.purge_tickets(now - 86_400_000, now).await?;
        // A few QR codes per user and flow wait at once: a new start replaces
        // an unused one (a flood of starts for one ID rewrites rows instead
        // of adding them), its own network's first; one a phone has begun is
        // never replaced. Decoys alike (the same answers for any ID).
        let (purpose, via) = ticket.kind.names();
        let network = ticket.pc.as_ref().map_or("", |p| p.network.as_str());
        for id in super::waiting::make_room(&tx.waiting_tickets(user_id, purpose, via).await?, network) {
            tx.drop_ticket(id).await?;
        }
        tx.insert_ticket(&ticket, &token_hash(&pc), &token_hash(&phone_token(&pc, 0)), now).await?;
        tx.commit().await?;
        Ok(pc)
    }

    /// L1: a FIDO login for a pending OpenID Connect request; returns the PC token.
    pub async fn start_login<P: ProviderTx + ?Sized>(
        &self,
        oidc: &Provider<P>,
        request_id: &str,
        user_id: &str,
        mut pc: PcInfo,
    ) -> Result<String> {
        let request = oidc.pending(request_id).await?;
        if request.login_hint.as_ref().is_some_and(|h| h != user_id) {
            return Err(Error::Forbidden(
                Forbidden::WrongUser,
                "the user ID is not the login_hint of the request".into(),
            ));
        }
        // Before any ceremony: a request that asked for a card is not a phone's.
        if let Some(asked) = request.asked_other_than(crate::auth::Method::Fido) {
            return Err(Error::Conflict(format!(
                "the signing system asked for a {} login (acr_values), not a phone",
                asked.as_str()
            )));
        }
        pc.system = Some(oidc.client_name(&request.client_id).await?);
        self.open(user_id, Kind::Login { request: request_id.to_owned() }, true, true, pc).await
    }

    /// D1: the old phone signs in, then the new one registers; returns the PC token.
    pub async fn start_change(&self, user_id: &str, pc: PcInfo) -> Result<String> {
        self.open(user_id, Kind::Change, true, true, pc).await
    }

    /// E1/E2 (D2/D3) after a card login on the card listener; returns a
    /// one-time hand-off token the PC claims on the main listener.
    pub async fn start_card_enroll(&self, card: Method, user_id: &str, pc: PcInfo) -> Result<String> {
        self.open(user_id, Kind::CardEnroll { card }, false, false, pc).await
    }

    /// E4 after an HPKI card login; returns the token of the My Number card step.
    pub async fn start_link(&self, user_id: &str, pc: PcInfo) -> Result<String> {
        self.open(user_id, Kind::Link, false, true, pc).await
    }

    /// The PC takes its ticket over from a hand-off token, once: the ticket
    /// gets a fresh PC token (returned, for the cookie), so the one in the
    /// hand-off URL is spent.
    pub async fn claim(&self, handoff: &str) -> Result<String> {
        let used = || Error::Gone(Gone::Used, "the hand-off URL has been used".into());
        // Read first: an unknown or spent token costs no write lock.
        let found = self.store.read().await?.ticket_by_pc(&token_hash(handoff)).await?.ok_or_else(unknown_ticket)?;
        if found.pc_claimed {
            return Err(used());
        }
        let mut tx = self.store.write().await?;
        let ticket = tx.ticket_by_pc(&token_hash(handoff)).await?.ok_or_else(unknown_ticket)?;
        let ticket = ticket.claim().map_err(|_| used())?;
        let pc = random_token();
        tx.update_ticket(&ticket).await?;
        tx.set_ticket_tokens(ticket.id, &token_hash(&pc), &token_hash(&phone_token(&pc, ticket.phase))).await?;
        tx.commit().await?;
        Ok(pc)
    }

    /// The PC's ticket while it lasts. One past its expiry and one not known
    /// (never issued, or gone: a decoy's row goes when it expires, a real
    /// ticket's a day later) answer alike, expired: otherwise an expired
    /// QR code would tell, for a day, whose ID has a phone.
    async fn pc_ticket(&self, tx: &mut T, pc: &str) -> Result<Ticket> {
        match tx.ticket_by_pc(&token_hash(pc)).await?.filter(|t| t.pc_claimed) {
            Some(t) if !t.expired(self.now()) => Ok(t),
            _ => Err(refused(Refused::Expired)),
        }
    }

    /// The PC's page: its ticket and the phone token of its QR code.
    pub async fn pc_view(&self, pc: &str) -> Result<PcView> {
        let ticket = self.pc_ticket(&mut *self.store.read().await?, pc).await?;
        let phone_token = phone_token(pc, ticket.phase);
        Ok(PcView { ticket, phone_token })
    }

    /// What the PC polls. A finished login is collected here, once, and its
    /// authorization code issued to this PC only.
    pub async fn pc_status<P: ProviderTx + ?Sized>(&self, oidc: &Provider<P>, pc: &str) -> Result<PcStatus> {
        // The poll reads; only a finished login is written (collected), and
        // its state is read again inside the write transaction.
        let collectable = |t: &Ticket| matches!(t.kind, Kind::Login { .. }) && t.stage == Stage::Done;
        let ticket = self.pc_ticket(&mut *self.store.read().await?, pc).await?;
        if !collectable(&ticket) {
            return Ok(PcStatus { ticket, login: None });
        }
        let mut tx = self.store.write().await?;
        let ticket = self.pc_ticket(&mut *tx, pc).await?;
        let Kind::Login { request } = &ticket.kind else {
            return Ok(PcStatus { ticket, login: None });
        };
        if ticket.stage != Stage::Done {
            return Ok(PcStatus { ticket, login: None });
        }
        let request = request.clone();
        let collected = ticket.collect().map_err(refused)?;
        tx.update_ticket(&collected).await?;
        tx.commit().await?;
        let redirect = match oidc.finish_login(&request, &collected.user_id, Method::Fido).await {
            Ok(url) => Some(url),
            Err(Error::NotFound(..)) => None,
            Err(e) => return Err(e),
        };
        Ok(PcStatus { ticket: collected, login: Some(redirect) })
    }

    /// The PC answers "replace the registered phone?".
    pub async fn answer(&self, pc: &str, yes: bool) -> Result<Ticket> {
        let now = self.now();
        // Read first: a ticket that is not waiting for the answer costs no write lock.
        let found = self.pc_ticket(&mut *self.store.read().await?, pc).await?;
        found.answer(now, yes, self.ticket_ms).map_err(refused)?;
        let mut tx = self.store.write().await?;
        let ticket = self.pc_ticket(&mut *tx, pc).await?;
        let next = ticket.answer(now, yes, self.ticket_ms).map_err(refused)?;
        tx.update_ticket(&next).await?;
        // A new phase: the QR code changes, the old phone token is spent.
        tx.set_ticket_tokens(next.id, &token_hash(pc), &token_hash(&phone_token(pc, next.phase))).await?;
        tx.commit().await?;
        Ok(next)
    }

    /// The phone's ticket while it lasts; expired and unknown alike (see
    /// [`Phones::pc_ticket`]).
    async fn phone_ticket(&self, tx: &mut T, phone: &str) -> Result<Ticket> {
        match tx.ticket_by_phone(&token_hash(phone)).await? {
            Some(t) if !t.expired(self.now()) => Ok(t),
            _ => Err(refused(Refused::Expired)),
        }
    }

    /// The phone's page: the ticket (an expired one is an error).
    pub async fn phone_view(&self, phone: &str) -> Result<Ticket> {
        self.phone_ticket(&mut *self.store.read().await?, phone).await
    }

    /// Cancels a ticket, noting why (the PC shows it).
    async fn cancel_for(&self, id: i64, failure: &Failure) -> Result<()> {
        self.update_noted(id, failure, true).await
    }

    /// Notes a failure on a ticket (the PC shows it).
    async fn note(&self, id: i64, failure: &Failure) -> Result<()> {
        self.update_noted(id, failure, false).await
    }

    async fn update_noted(&self, id: i64, failure: &Failure, cancel: bool) -> Result<()> {
        let mut tx = self.store.write().await?;
        let Some(ticket) = tx.ticket(id).await? else { return Ok(()) };
        let ticket = if cancel {
            match ticket.cancel() {
                Ok(t) => t,
                Err(_) => return Ok(()),
            }
        } else {
            ticket
        };
        tx.update_ticket(&ticket.with_error(failure.encode())).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The phone starts its WebAuthn ceremony: returns the options (JSON);
    /// the challenge is kept in the ticket for exactly one answer.
    ///
    /// A ticket a PC shows asks first for the PC's confirmation number
    /// (`code`): missing, it is asked for; wrong, the ticket is cancelled
    /// (the QR code may have reached someone who does not see the PC) and
    /// the PC says so.
    pub async fn begin(&self, phone: &str, code: Option<&str>) -> Result<serde_json::Value> {
        let now = self.now();
        let (ticket, user, device, retired) = {
            let mut tx = self.store.read().await?;
            let ticket = self.phone_ticket(&mut *tx, phone).await?;
            // A decoy reads the same rows (its ID may even be a user's), and ignores them.
            let user = tx.user(&ticket.user_id).await?;
            let device = tx.device(&ticket.user_id).await?;
            let retired = tx.retired_devices(&ticket.user_id).await?;
            if ticket.decoy {
                (ticket, None, None, Vec::new())
            } else {
                let user = user.ok_or_else(|| crate::users::unknown(&ticket.user_id))?;
                (ticket, Some(user), device, retired)
            }
        };
        if ticket.expired(now) {
            return Err(refused(Refused::Expired));
        }
        if !matches!(ticket.stage, Stage::Waiting | Stage::Ceremony(_)) {
            return Err(refused(Refused::Stage("start a phone ceremony")));
        }
        if let Some(expected) = ticket.confirmation() {
            match code.map(str::trim) {
                None | Some("") => {
                    return Err(Error::Unauthenticated(
                        Credential::Confirmation,
                        "type the confirmation number the PC shows".into(),
                    ))
                }
                Some(given) if given == expected => {}
                Some(_) => {
                    self.cancel_for(ticket.id, &Failure::WrongCode).await?;
                    return Err(Error::Gone(
                        Gone::Revoked,
                        "the confirmation number is not the PC's: this QR code is cancelled".into(),
                    ));
                }
            }
        }
        if let Some(user) = user.as_ref().filter(|u| !u.is_active()) {
            self.note(ticket.id, &Failure::Disabled).await?;
            return Err(crate::users::disabled(&user.id));
        }
        let (options, state) = match ticket.action() {
            Action::Register => {
                let (o, s) = self.rp.start_registration(&ticket.user_id, device.as_ref().map(|d| &d.passkey))?;
                (serde_json::to_value(o).map_err(Error::internal)?, s)
            }
            Action::Authenticate => {
                // A decoy offers passkeys no phone holds, the same ones for the same ID.
                let passkeys = if ticket.decoy {
                    self.decoys.passkeys(&ticket.user_id)?
                } else {
                    let Some(device) = device else {
                        self.note(ticket.id, &Failure::NoDevice).await?;
                        return Err(Error::Forbidden(
                            Forbidden::NoDevice,
                            format!("user {} has no registered phone", ticket.user_id),
                        ));
                    };
                    // The registered phone first, then the retired ones: a phone
                    // that still holds a retired passkey answers, and is told why
                    // it no longer signs in. Credential IDs are not secrets (the
                    // current one is offered to whoever holds the QR code anyway);
                    // this tells such a holder at most that the user changed
                    // phones, up to RETIRED_KEPT times.
                    let mut passkeys: Vec<Passkey> = vec![device.passkey];
                    passkeys.extend(retired.into_iter().map(|r| r.passkey));
                    passkeys
                };
                let (o, s) = self.rp.start_authentication(&passkeys)?;
                (serde_json::to_value(o).map_err(Error::internal)?, s)
            }
            Action::None => return Err(Error::Invalid("this ticket has no phone step".into())),
        };
        let mut tx = self.store.write().await?;
        let current = tx.ticket(ticket.id).await?.filter(|t| t.phase == ticket.phase).ok_or_else(unknown_ticket)?;
        let started = current.begin(now, state).map_err(refused)?;
        tx.update_ticket(&started).await?;
        tx.commit().await?;
        Ok(options)
    }

    /// The phone's answer to its ceremony, verified once per challenge.
    /// Returns the phone's next page (relative to `/m/<token>`: `""` or `"/label"`).
    pub async fn finish(&self, phone: &str, response: &[u8], user_agent: &str) -> Result<&'static str> {
        let now = self.now();
        let used = || Error::Gone(Gone::Used, "the challenge is used or expired: press the button again".into());
        // Read first: a phone holding no challenge costs no write lock.
        let found = self.phone_ticket(&mut *self.store.read().await?, phone).await?;
        found.take_ceremony(now).map_err(|_| used())?;
        // Single use: the challenge is gone from here on, whatever the outcome.
        let (ticket, state) = {
            let mut tx = self.store.write().await?;
            let ticket = self.phone_ticket(&mut *tx, phone).await?;
            let (waiting, state) = ticket.take_ceremony(now).map_err(|_| {
                Error::Gone(Gone::Used, "the challenge is used or expired: press the button again".into())
            })?;
            tx.update_ticket(&waiting).await?;
            tx.commit().await?;
            (waiting, state)
        };
        let outcome = match ticket.action() {
            Action::Register => self.register(&ticket, response, &state, user_agent, now).await,
            Action::Authenticate => self.authenticate(&ticket, response, &state, now).await,
            Action::None => Err(Error::Invalid("this ticket has no phone step".into())),
        };
        if let Err(e) = &outcome {
            let failure = match e {
                Error::Forbidden(Forbidden::Retired { removed, at }, _) => Some(Failure::Retired {
                    reason: if *removed { Retirement::Removed } else { Retirement::Replaced },
                    at: *at,
                }),
                Error::Forbidden(Forbidden::NoDevice, _) => Some(Failure::NoDevice),
                Error::Unauthenticated(_, reason) | Error::Conflict(reason) => Some(Failure::Refused(reason.clone())),
                _ => None,
            };
            if let Some(f) = failure {
                tracing::info!(user = %ticket.user_id, "phone refused: {e}");
                self.note(ticket.id, &f).await?;
            }
        }
        outcome
    }

    async fn register(
        &self,
        t: &Ticket,
        response: &[u8],
        state: &str,
        user_agent: &str,
        now: i64,
    ) -> Result<&'static str> {
        let passkey = self.rp.finish_registration(response, state)?;
        let label = format!("{} {}", auto_label(user_agent), rfc3339(now + 9 * 3_600_000).get(..10).unwrap_or(""));
        let mut tx = self.store.write().await?;
        let current = tx.ticket(t.id).await?.filter(|c| c.phase == t.phase).ok_or_else(unknown_ticket)?;
        // A phone registered meanwhile (another ticket) is replaced only after a yes.
        if tx.device(&t.user_id).await?.is_some() && !current.replace_confirmed {
            if let Kind::CodeEnroll { .. } = current.kind {
                // No PC to ask: a registration code does not replace a phone.
                tx.update_ticket(&current.cancel().map_err(refused)?).await?;
                tx.commit().await?;
                return Err(Error::Conflict(
                    "a phone is already registered for this user: sign in with it, or ask the CA to remove it first"
                        .into(),
                ));
            }
            tx.update_ticket(&current.ask_replace().map_err(refused)?).await?;
            tx.commit().await?;
            return Err(Error::Conflict(
                "a phone was registered for this user meanwhile: answer the replace question on the PC, or sign in with that phone".into(),
            ));
        }
        let done = current.verified().map_err(|_| Error::Conflict("the ticket moved on meanwhile".into()))?;
        tx.update_ticket(&done).await?;
        device::install(&mut *tx, now, &format!("user:{}", t.user_id), &t.user_id, &passkey, &label, t.kind.via())
            .await?;
        if let Some(code) = t.kind.code() {
            tx.set_regcode_status(code, Status::Active, Status::Used).await?;
        }
        tx.commit().await?;
        Ok("/label")
    }

    async fn authenticate(&self, t: &Ticket, response: &[u8], state: &str, now: i64) -> Result<&'static str> {
        let result = self.rp.finish_authentication(response, state)?;
        if t.decoy {
            // Not reached (no phone holds a decoy's key); were it, the answer
            // a real ticket gives a passkey that is not the user's.
            return Err(not_the_users_phone());
        }
        let used: &[u8] = result.cred_id().as_ref();
        let mut tx = self.store.write().await?;
        let Some(device) = tx.device(&t.user_id).await? else {
            return Err(Error::Forbidden(Forbidden::NoDevice, "no registered device".into()));
        };
        if used != device.credential_id.as_slice() {
            let retired = tx.retired_devices(&t.user_id).await?.into_iter().find(|r| r.credential_id == used);
            return Err(match retired {
                Some(r) => Error::Forbidden(
                    Forbidden::Retired { removed: r.reason == Retirement::Removed, at: r.retired_at },
                    format!("this phone's registration was {} on {}", r.reason.as_str(), rfc3339(r.retired_at)),
                ),
                None => not_the_users_phone(),
            });
        }
        if !super::counter_ok(device.counter, result.counter()) {
            return Err(Error::Unauthenticated(
                crate::error::Credential::Phone,
                format!(
                    "the sign counter went backwards ({} after {}): the authenticator may be cloned",
                    result.counter(),
                    device.counter
                ),
            ));
        }
        let mut passkey = device.passkey.clone();
        passkey.update_credential(&result);
        let moved = || Error::Conflict("the ticket or the device changed meanwhile".into());
        let current = tx.ticket(t.id).await?.filter(|c| c.phase == t.phase).ok_or_else(moved)?;
        let next = current.verified().map_err(|_| moved())?;
        if !tx
            .record_device_use(&t.user_id, &device.credential_id, &passkey, result.counter(), device.counter, now)
            .await?
        {
            return Err(moved());
        }
        tx.update_ticket(&next).await?;
        let purpose = match t.kind {
            Kind::Login { .. } => "login",
            Kind::Change => "device_change",
            _ => "check",
        };
        audit::append(
            &mut *tx,
            now,
            &[Event { user_id: Some(t.user_id.as_str().into()), outcome: "ok", detail: serde_json::json!({ "purpose": purpose, "credential_id": b64url(&device.credential_id), "counter": result.counter() }), ..Event::new(format!("user:{}", t.user_id), crate::audit::Name::FidoSignin) }],
        )
        .await?;
        tx.commit().await?;
        Ok("")
    }

    /// The phone's browser gave up a sign-in without an answer
    /// (`NotAllowedError`: no passkey for this user on the phone, or the user
    /// cancelled). Noted for the PC; returns the failure noted (a sign-in for
    /// a user whose phone was removed meanwhile says so). A registration has
    /// nothing to give up this way (its page shows the browser's error).
    pub async fn phone_gave_up(&self, phone: &str) -> Result<Failure> {
        let (ticket, has_device) = {
            let mut tx = self.store.read().await?;
            let ticket = self.phone_ticket(&mut *tx, phone).await?;
            let has_device = tx.device(&ticket.user_id).await?.is_some();
            (ticket, has_device)
        };
        if ticket.action() != Action::Authenticate {
            return Err(refused(Refused::Stage("give up a sign-in")));
        }
        // Only a phone that began the ceremony, with the confirmation number
        // the PC shows, may say what the PC then shows (decoys begin alike).
        if !matches!(ticket.stage, Stage::Ceremony(_)) {
            return Err(refused(Refused::Stage("give up a sign-in before the phone began it with the PC's number")));
        }
        // A decoy's phone is told what a real ticket's foreign phone is told.
        let failure = if ticket.decoy || has_device { Failure::NotAllowed } else { Failure::NoDevice };
        self.note(ticket.id, &failure).await?;
        Ok(failure)
    }

    /// The label screen after a registration: the ticket and the phone's
    /// current label, or `None` if the screen is not (or no longer) due.
    pub async fn label_view(&self, phone: &str) -> Result<(Ticket, Option<String>)> {
        let mut tx = self.store.read().await?;
        let ticket = self.phone_ticket(&mut *tx, phone).await?;
        if ticket.action() != Action::Register || !ticket.stage.finished() || ticket.labelled {
            return Ok((ticket, None));
        }
        let label = tx.device(&ticket.user_id).await?.map(|d| d.label).unwrap_or_default();
        Ok((ticket, Some(label)))
    }

    /// Answers the label screen (once): OK with a label keeps it, cancel keeps
    /// the automatic one. Returns the ticket, and whether this answer counted.
    pub async fn label(&self, phone: &str, label: Option<&str>) -> Result<(Ticket, bool)> {
        // Read first: a ticket that takes no label costs no write lock.
        let found = self.phone_ticket(&mut *self.store.read().await?, phone).await?;
        if found.clone().label().is_err() {
            return Ok((found, false));
        }
        let mut tx = self.store.write().await?;
        let ticket = self.phone_ticket(&mut *tx, phone).await?;
        let Ok(labelled) = ticket.clone().label() else {
            return Ok((ticket, false));
        };
        tx.update_ticket(&labelled).await?;
        if let Some(l) = label.map(|l| l.trim().chars().take(64).collect::<String>()).filter(|l| !l.is_empty()) {
            tx.set_device_label(&labelled.user_id, &l).await?;
        }
        tx.commit().await?;
        Ok((labelled, true))
    }

    /// Whether a printed registration code can still be used.
    pub async fn regcode_check(&self, code: &str) -> Result<String> {
        regcode::check(self.store.as_ref(), self.now(), code).await
    }

    /// E3: the password of a printed code opens a phone-only ticket (register,
    /// or sign in when the user has a phone); returns its phone token.
    pub async fn regcode_open(&self, code: &str, password: &str) -> Result<String> {
        let now = self.now();
        let opened = regcode::open(self.store.as_ref(), now, code, password, self.regcode_max_tries).await?;
        let pc = random_token();
        let mut tx = self.store.write().await?;
        let has_device = self.check_user(&mut *tx, &opened.user_id, false).await?;
        let kind = if has_device { Kind::CodeVerify { code: opened.id } } else { Kind::CodeEnroll { code: opened.id } };
        let ticket = Ticket::new(kind, &opened.user_id, has_device, true, now, self.ticket_ms, None);
        tx.insert_ticket(&ticket, &token_hash(&pc), &token_hash(&phone_token(&pc, 0)), now).await?;
        tx.commit().await?;
        Ok(phone_token(&pc, 0))
    }

    /// E4 ends: the My Number card of this connection (validated) is linked
    /// to the ticket's user. One ticket links one card; a refused card leaves
    /// the ticket usable for another try. Returns the user.
    pub async fn link(&self, cards: &CardAuth, token: &str, chain: &[Vec<u8>]) -> Result<String> {
        let now = self.now();
        let ticket = {
            let mut tx = self.store.read().await?;
            tx.ticket_by_pc(&token_hash(token)).await?.filter(|t| t.kind == Kind::Link).ok_or_else(unknown_ticket)?
        };
        if ticket.expired(now) {
            return Err(refused(Refused::Expired));
        }
        if ticket.stage != Stage::Waiting {
            return Err(Error::Gone(Gone::Used, "this card link has been used".into()));
        }
        cards.validate(Method::Jpki, chain, self.clock.now())?;
        let cert = chain.first().ok_or_else(unknown_ticket)?;
        // Use the ticket first: one ticket links one card, also under concurrent requests.
        {
            let mut tx = self.store.write().await?;
            let current = tx.ticket(ticket.id).await?.ok_or_else(unknown_ticket)?;
            let used =
                current.use_link(now).map_err(|_| Error::Gone(Gone::Used, "this card link has been used".into()))?;
            tx.update_ticket(&used).await?;
            tx.commit().await?;
        }
        let linked = crate::auth::cards::jpki_link(
            self.store.as_ref(),
            self.clock.as_ref(),
            &format!("user:{}", ticket.user_id),
            &ticket.user_id,
            cert,
        )
        .await;
        if linked.is_err() {
            // Nothing was linked: the user may try again with the right card.
            let mut tx = self.store.write().await?;
            if let Some(back) = tx.ticket(ticket.id).await?.and_then(|t| t.restore_link().ok()) {
                tx.update_ticket(&back).await?;
                tx.commit().await?;
            }
        }
        linked?;
        Ok(ticket.user_id)
    }
}

/// A label from the browser's User-Agent (the user may change it).
pub fn auto_label(user_agent: &str) -> &'static str {
    if user_agent.contains("iPhone") {
        "iPhone"
    } else if user_agent.contains("iPad") {
        "iPad"
    } else if user_agent.contains("Android") {
        "Android"
    } else {
        "スマートフォン"
    }
}

#[cfg(test)]
mod tests;
