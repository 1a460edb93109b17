//! Printed initial-registration codes (E3, D4): a URL with a high-entropy code
//! and a password (a birth date or a printed one), hashed with Argon2id. Wrong
//! passwords count; at the limit the code locks. A new code for a user
//! replaces the old one; registering a phone uses the code up (a user who
//! already has a phone is offered a sign-in with it instead).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use async_trait::async_trait;
use serde::Serialize;

use crate::audit::{self, AuditStore, Event};
use crate::auth::{random_token, token_hash};
use crate::clock::rfc3339;
use crate::error::{Credential, Error, Forbidden, Gone, Missing, Result};
use crate::seam::{StoreError, Transaction, Transactions};
use crate::users::UserStore;

/// Where a code stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Usable.
    Active,
    /// Too many wrong passwords.
    Locked,
    /// Revoked by an operator.
    Revoked,
    /// A newer code replaced it.
    Replaced,
    /// A phone was registered with it.
    Used,
}

impl Status {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Locked => "locked",
            Status::Revoked => "revoked",
            Status::Replaced => "replaced",
            Status::Used => "used",
        }
    }

    /// The status of a stored name.
    pub fn parse(s: &str) -> Result<Status, StoreError> {
        Ok(match s {
            "active" => Status::Active,
            "locked" => Status::Locked,
            "revoked" => Status::Revoked,
            "replaced" => Status::Replaced,
            "used" => Status::Used,
            other => return Err(StoreError::Corrupt(format!("unknown registration code status {other:?}"))),
        })
    }
}

/// A registration code as stored.
#[derive(Clone, Debug)]
pub struct Regcode {
    /// Row ID.
    pub id: i64,
    /// The user.
    pub user_id: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Wrong passwords so far.
    pub failures: u32,
    /// Where it stands.
    pub status: Status,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub expires_at: i64,
}

/// What registration codes need from storage.
#[async_trait]
pub trait RegcodeStore: Send {
    /// Stores a new active code under the hash of its value, marking the
    /// user's active code replaced; returns how many were replaced.
    async fn insert_regcode(&mut self, code_hash: &[u8], code: &Regcode) -> Result<usize, StoreError>;
    /// A code by the hash of its value.
    async fn regcode_by_hash(&mut self, code_hash: &[u8]) -> Result<Option<Regcode>, StoreError>;
    /// Moves a code from one status to another; false if it was not in `from`.
    async fn set_regcode_status(&mut self, id: i64, from: Status, to: Status) -> Result<bool, StoreError>;
    /// Revokes the user's active code; false if there was none.
    async fn revoke_active_regcode(&mut self, user_id: &str) -> Result<bool, StoreError>;
    /// Counts a wrong password of an active code; returns the failures so far.
    async fn count_regcode_failure(&mut self, id: i64) -> Result<u32, StoreError>;
    /// Codes of one user (or all), newest first.
    async fn regcodes(&mut self, user_id: Option<&str>) -> Result<Vec<Regcode>, StoreError>;
}

/// What registration-code operations need in one transaction.
pub trait RegcodesTx: RegcodeStore + UserStore + AuditStore + Transaction {}
impl<T: RegcodeStore + UserStore + AuditStore + Transaction + ?Sized> RegcodesTx for T {}

/// A freshly issued code: shown once.
#[derive(Clone, Debug, Serialize)]
pub struct Issued {
    /// The user.
    pub user_id: String,
    /// The registration URL (holds the code).
    pub url: String,
    /// The password to print next to it (absent when it is the user's birth date).
    pub password: Option<String>,
    /// RFC 3339.
    pub expires_at: String,
}

/// A code as listed to operators.
#[derive(Clone, Debug, Serialize)]
pub struct RegcodeView {
    /// Row ID.
    pub id: i64,
    /// The user.
    pub user_id: String,
    /// `active`, `used`, `locked`, `revoked`, `replaced`, or `expired`.
    pub status: String,
    /// Wrong passwords so far.
    pub failures: u32,
    /// RFC 3339.
    pub issued_at: String,
    /// RFC 3339.
    pub expires_at: String,
}

/// The password a code is issued with.
pub enum Password {
    /// Given by the operator.
    Given(String),
    /// The user's birth date, `YYYYMMDD`.
    Birthdate(String),
    /// Generated: 10 digits.
    Generate,
}

/// A valid code after the right password.
#[derive(Clone, Debug)]
pub struct Opened {
    /// Row ID.
    pub id: i64,
    /// The user.
    pub user_id: String,
}

fn hash_password(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(Error::internal)?;
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt).map_err(Error::internal)?.to_string())
}

fn generated_password() -> String {
    let token = random_token();
    // Ten decimal digits from the token's bytes (reduction bias is negligible at 256 bits).
    token.bytes().take(10).map(|b| char::from(b'0' + b % 10)).collect()
}

/// Issues a code for a user, replacing any active one.
pub async fn issue<T: RegcodesTx + ?Sized>(
    store: &dyn Transactions<T>,
    now: i64,
    actor: &str,
    public_url: &str,
    user_id: &str,
    password: Password,
    lifetime_ms: i64,
) -> Result<Issued> {
    if lifetime_ms <= 0 {
        return Err(Error::Invalid("the expiry must be in the future".into()));
    }
    let (secret, shown) = match password {
        Password::Given(p) if p.chars().count() >= 6 => (p.clone(), Some(p)),
        Password::Given(_) => return Err(Error::Invalid("the password must have at least 6 characters".into())),
        Password::Birthdate(d) if is_birthdate(&d) => (d, None),
        Password::Birthdate(_) => {
            return Err(Error::Invalid("the birth date must be a date of the calendar, 8 digits, YYYYMMDD".into()))
        }
        Password::Generate => {
            let p = generated_password();
            (p.clone(), Some(p))
        }
    };
    crate::users::get(store, user_id).await?;
    let hash = tokio::task::spawn_blocking(move || hash_password(&secret)).await.map_err(Error::internal)??;
    let code = random_token();
    let expires_at = now + lifetime_ms;
    let mut tx = store.write().await?;
    crate::users::get_in(&mut *tx, user_id).await?;
    let replaced = tx
        .insert_regcode(
            &token_hash(&code),
            &Regcode {
                id: 0,
                user_id: user_id.to_owned(),
                password_hash: hash,
                failures: 0,
                status: Status::Active,
                created_at: now,
                expires_at,
            },
        )
        .await?;
    audit::append(
        &mut *tx,
        now,
        &[Event {
            user_id: Some(user_id.into()),
            outcome: "ok",
            detail: serde_json::json!({ "expires_at": rfc3339(expires_at), "replaced": replaced }),
            ..Event::new(actor, crate::audit::Name::RegcodeIssue)
        }],
    )
    .await?;
    tx.commit().await?;
    Ok(Issued {
        user_id: user_id.to_owned(),
        url: format!("{}/r/{code}", public_url.trim_end_matches('/')),
        password: shown,
        expires_at: rfc3339(expires_at),
    })
}

/// Revokes a user's active code. Returns whether there was one.
pub async fn revoke<T: RegcodesTx + ?Sized>(
    store: &dyn Transactions<T>,
    now: i64,
    actor: &str,
    user_id: &str,
) -> Result<bool> {
    let mut tx = store.write().await?;
    crate::users::get_in(&mut *tx, user_id).await?;
    if !tx.revoke_active_regcode(user_id).await? {
        return Ok(false);
    }
    audit::append(
        &mut *tx,
        now,
        &[Event {
            user_id: Some(user_id.into()),
            outcome: "ok",
            ..Event::new(actor, crate::audit::Name::RegcodeRevoke)
        }],
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Lists codes (newest first), of one user or all.
pub async fn list<T: RegcodesTx + ?Sized>(
    store: &dyn Transactions<T>,
    now: i64,
    user_id: Option<&str>,
) -> Result<Vec<RegcodeView>> {
    let mut tx = store.read().await?;
    if let Some(u) = user_id {
        crate::users::get_in(&mut *tx, u).await?;
    }
    Ok(tx
        .regcodes(user_id)
        .await?
        .into_iter()
        .map(|c| RegcodeView {
            id: c.id,
            user_id: c.user_id,
            status: if c.status == Status::Active && c.expires_at <= now {
                "expired".into()
            } else {
                c.status.as_str().into()
            },
            failures: c.failures,
            issued_at: rfc3339(c.created_at),
            expires_at: rfc3339(c.expires_at),
        })
        .collect())
}

/// Why a code cannot be used, as an error.
fn unusable(code: &Regcode, now: i64) -> Result<()> {
    match code.status {
        Status::Locked => Err(Error::Forbidden(
            Forbidden::Locked,
            "the registration code is locked after too many wrong passwords: ask the CA for a new one".into(),
        )),
        Status::Revoked | Status::Replaced => Err(Error::Gone(
            Gone::Revoked,
            "the registration code is no longer valid: use the newest one, or ask the CA for a new one".into(),
        )),
        Status::Used => Err(Error::Gone(
            Gone::Used,
            "the registration code has been used: ask the CA for a new one to register another phone".into(),
        )),
        Status::Active if code.expires_at <= now => {
            Err(Error::Gone(Gone::Expired, "the registration code has expired: ask the CA for a new one".into()))
        }
        Status::Active => Ok(()),
    }
}

async fn find<T: RegcodesTx + ?Sized>(store: &dyn Transactions<T>, code: &str) -> Result<Regcode> {
    store
        .read()
        .await?
        .regcode_by_hash(&token_hash(code))
        .await?
        .ok_or_else(|| Error::NotFound(Missing::Code, "unknown registration code".into()))
}

/// Whether a code can still be used (before the password is asked); returns its user.
pub async fn check<T: RegcodesTx + ?Sized>(store: &dyn Transactions<T>, now: i64, code: &str) -> Result<String> {
    let row = find(store, code).await?;
    unusable(&row, now)?;
    Ok(row.user_id)
}

/// Checks the password of a code (Argon2id, on the blocking pool). A wrong
/// one counts; at `max_tries` the code locks.
pub async fn open<T: RegcodesTx + ?Sized>(
    store: &dyn Transactions<T>,
    now: i64,
    code: &str,
    password: &str,
    max_tries: u32,
) -> Result<Opened> {
    let row = find(store, code).await?;
    unusable(&row, now)?;
    let (hash, password) = (row.password_hash.clone(), password.to_owned());
    let good = tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).map(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
    })
    .await
    .map_err(Error::internal)?
    .map_err(|e| Error::Internal(format!("regcode {}: stored password hash unreadable: {e}", row.id)))?;
    let mut tx = store.write().await?;
    // Re-read: the code may have been locked or replaced meanwhile.
    let row = tx
        .regcode_by_hash(&token_hash(code))
        .await?
        .ok_or_else(|| Error::NotFound(Missing::Code, "unknown registration code".into()))?;
    unusable(&row, now)?;
    if good {
        return Ok(Opened { id: row.id, user_id: row.user_id });
    }
    let failures = tx.count_regcode_failure(row.id).await?;
    if failures >= max_tries && tx.set_regcode_status(row.id, Status::Active, Status::Locked).await? {
        audit::append(
            &mut *tx,
            now,
            &[Event {
                user_id: Some(row.user_id.as_str().into()),
                outcome: "locked",
                detail: serde_json::json!({ "failures": failures }),
                ..Event::new(format!("user:{}", row.user_id), crate::audit::Name::RegcodeLock)
            }],
        )
        .await?;
    }
    tx.commit().await?;
    if failures >= max_tries {
        unusable(&Regcode { status: Status::Locked, ..row }, now)?;
    }
    let left = max_tries - failures;
    Err(Error::Unauthenticated(Credential::Password { left }, format!("wrong password ({left} tries left)")))
}

/// Whether `d` is a birth date as the cards print it: `YYYYMMDD`, a day of
/// the (Gregorian) calendar, in the years 1900 to 2099.
pub fn is_birthdate(d: &str) -> bool {
    if d.len() != 8 || !d.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let n = |r: std::ops::Range<usize>| d[r].parse::<u32>().unwrap_or(0);
    let (year, month, day) = (n(0..4), n(4..6), n(6..8));
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1900..=2099).contains(&year) && (1..=days).contains(&day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn birth_dates_are_days_of_the_calendar() {
        for good in ["19800131", "20000229", "19960229", "20241231", "19000101"] {
            assert!(is_birthdate(good), "{good}");
        }
        for bad in ["19801340", "19800230", "19000229", "19800431", "18991231", "1980013", "1980-1-1", "198001310"] {
            assert!(!is_birthdate(bad), "{bad}");
        }
    }
}
