//! Printed initial-registration codes (E3, D4): a URL with a high-entropy code
//! and a password (a birth date or a printed one), hashed with Argon2id. Wrong
//! passwords count; at the limit the code locks. A new code for a user
//! replaces the old one; registering a phone uses the code up (a user who
//! already has a phone is offered a sign-in with it instead).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use crate::audit::{self, Event};
use crate::auth::{random_token, token_hash};
use crate::clock::rfc3339;
use crate::store::{Store, StoreError};
use crate::users::{self, UserError};

/// What can go wrong with a registration code.
#[derive(Debug, thiserror::Error)]
pub enum RegcodeError {
    /// No such code.
    #[error("unknown registration code")]
    Unknown,
    /// Past its expiry.
    #[error("the registration code has expired: ask the CA for a new one")]
    Expired,
    /// Too many wrong passwords.
    #[error("the registration code is locked after too many wrong passwords: ask the CA for a new one")]
    Locked,
    /// Revoked or replaced by a newer code.
    #[error("the registration code is no longer valid: use the newest one, or ask the CA for a new one")]
    Revoked,
    /// A phone was registered with it.
    #[error("the registration code has been used: ask the CA for a new one to register another phone")]
    Used,
    /// Wrong password; this many tries are left.
    #[error("wrong password ({left} tries left)")]
    WrongPassword {
        /// Tries left before the code locks.
        left: u32,
    },
    /// A bad argument (password format, duration).
    #[error("{0}")]
    Invalid(String),
    /// The user.
    #[error(transparent)]
    User(#[from] UserError),
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
}

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

fn hash_password(password: &str) -> Result<String, RegcodeError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| RegcodeError::Invalid(format!("no randomness: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| RegcodeError::Invalid(e.to_string()))?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| RegcodeError::Invalid(e.to_string()))?
        .to_string())
}

fn generated_password() -> String {
    let token = random_token();
    // Ten decimal digits from the token's bytes (reduction bias is negligible at 256 bits).
    token.bytes().take(10).map(|b| char::from(b'0' + b % 10)).collect()
}

/// Issues a code for a user, replacing any active one.
pub fn issue(
    store: &mut Store,
    now: i64,
    actor: &str,
    public_url: &str,
    user_id: &str,
    password: Password,
    lifetime_ms: i64,
) -> Result<Issued, RegcodeError> {
    users::get(store, user_id)?;
    if lifetime_ms <= 0 {
        return Err(RegcodeError::Invalid("the expiry must be in the future".into()));
    }
    let (secret, shown) = match password {
        Password::Given(p) if p.chars().count() >= 6 => (p.clone(), Some(p)),
        Password::Given(_) => return Err(RegcodeError::Invalid("the password must have at least 6 characters".into())),
        Password::Birthdate(d) if d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()) => (d, None),
        Password::Birthdate(_) => {
            return Err(RegcodeError::Invalid("the birth date must be 8 digits, YYYYMMDD".into()))
        }
        Password::Generate => {
            let p = generated_password();
            (p.clone(), Some(p))
        }
    };
    let hash = hash_password(&secret)?;
    let code = random_token();
    let code_hash = token_hash(&code);
    let expires_at = now + lifetime_ms;
    store.write(|t| {
        let replaced = t.execute(
            "UPDATE regcodes SET status = 'replaced' WHERE user_id = ?1 AND status = 'active'",
            params![user_id],
        )?;
        t.execute(
            "INSERT INTO regcodes (code_hash, user_id, password_hash, status, created_at, expires_at) VALUES (?1, ?2, ?3, 'active', ?4, ?5)",
            params![code_hash, user_id, hash, now, expires_at],
        )?;
        audit::append(
            t,
            now,
            &[Event {
                actor,
                event: "regcode.issue",
                user_id: Some(user_id),
                outcome: "ok",
                detail: serde_json::json!({ "expires_at": rfc3339(expires_at), "replaced": replaced }),
                ..Default::default()
            }],
        )?;
        Ok(())
    })?;
    Ok(Issued {
        user_id: user_id.to_owned(),
        url: format!("{}/r/{code}", public_url.trim_end_matches('/')),
        password: shown,
        expires_at: rfc3339(expires_at),
    })
}

/// Revokes a user's active code. Returns whether there was one.
pub fn revoke(store: &mut Store, now: i64, actor: &str, user_id: &str) -> Result<bool, RegcodeError> {
    users::get(store, user_id)?;
    let n = store.write(|t| {
        let n = t.execute(
            "UPDATE regcodes SET status = 'revoked' WHERE user_id = ?1 AND status = 'active'",
            params![user_id],
        )?;
        if n > 0 {
            audit::append(
                t,
                now,
                &[Event {
                    actor,
                    event: "regcode.revoke",
                    user_id: Some(user_id),
                    outcome: "ok",
                    ..Default::default()
                }],
            )?;
        }
        Ok(n)
    })?;
    Ok(n > 0)
}

/// Uses a code up, inside the transaction that registered a phone with it.
pub fn mark_used(tx: &rusqlite::Transaction<'_>, id: i64) -> Result<(), StoreError> {
    tx.execute("UPDATE regcodes SET status = 'used' WHERE id = ?1 AND status = 'active'", params![id])?;
    Ok(())
}

/// Lists codes (newest first), of one user or all.
pub fn list(store: &Store, now: i64, user_id: Option<&str>) -> Result<Vec<RegcodeView>, StoreError> {
    let mut stmt = store.conn().prepare(
        "SELECT id, user_id, status, failures, created_at, expires_at FROM regcodes
         WHERE ?1 IS NULL OR user_id = ?1 ORDER BY id DESC",
    )?;
    let rows = stmt.query_map(params![user_id], |r| {
        let status: String = r.get(2)?;
        let expires_at: i64 = r.get(5)?;
        Ok(RegcodeView {
            id: r.get(0)?,
            user_id: r.get(1)?,
            status: if status == "active" && expires_at <= now { "expired".into() } else { status },
            failures: r.get(3)?,
            issued_at: rfc3339(r.get(4)?),
            expires_at: rfc3339(expires_at),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

struct Row {
    id: i64,
    user_id: String,
    password_hash: String,
    status: String,
    expires_at: i64,
}

fn find(store: &Store, code: &str) -> Result<Row, RegcodeError> {
    store
        .conn()
        .query_row(
            "SELECT id, user_id, password_hash, failures, status, expires_at FROM regcodes WHERE code_hash = ?1",
            params![token_hash(code)],
            |r| {
                Ok(Row {
                    id: r.get(0)?,
                    user_id: r.get(1)?,
                    password_hash: r.get(2)?,
                    status: r.get(4)?,
                    expires_at: r.get(5)?,
                })
            },
        )
        .optional()
        .map_err(StoreError::from)?
        .ok_or(RegcodeError::Unknown)
}

fn usable(row: &Row, now: i64) -> Result<(), RegcodeError> {
    match row.status.as_str() {
        "locked" => Err(RegcodeError::Locked),
        "revoked" | "replaced" => Err(RegcodeError::Revoked),
        "used" => Err(RegcodeError::Used),
        _ if row.expires_at <= now => Err(RegcodeError::Expired),
        _ => Ok(()),
    }
}

/// Whether a code can still be used (before the password is asked).
pub fn check(store: &Store, now: i64, code: &str) -> Result<String, RegcodeError> {
    let row = find(store, code)?;
    usable(&row, now)?;
    Ok(row.user_id)
}

/// Checks the password of a code (Argon2id: call off the async runtime). A
/// wrong one counts; at `max_tries` the code locks.
pub fn open(
    store: &std::sync::Mutex<Store>,
    now: i64,
    code: &str,
    password: &str,
    max_tries: u32,
) -> Result<Opened, RegcodeError> {
    let row = {
        let db = store.lock().unwrap_or_else(|p| p.into_inner());
        let row = find(&db, code)?;
        usable(&row, now)?;
        row
    };
    let good = PasswordHash::new(&row.password_hash)
        .map(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
        .map_err(|e| StoreError::Corrupt(format!("regcode {}: {e}", row.id)))?;
    let mut db = store.lock().unwrap_or_else(|p| p.into_inner());
    if good {
        // Re-read: the code may have been locked or replaced meanwhile.
        let row = find(&db, code)?;
        usable(&row, now)?;
        return Ok(Opened { id: row.id, user_id: row.user_id });
    }
    let failures = db.write(|t| {
        t.execute("UPDATE regcodes SET failures = failures + 1 WHERE id = ?1 AND status = 'active'", params![row.id])?;
        let failures: u32 =
            t.query_row("SELECT failures FROM regcodes WHERE id = ?1", params![row.id], |r| r.get(0))?;
        if failures >= max_tries {
            let n = t.execute(
                "UPDATE regcodes SET status = 'locked' WHERE id = ?1 AND status = 'active'",
                params![row.id],
            )?;
            if n == 1 {
                audit::append(
                    t,
                    now,
                    &[Event {
                        actor: &format!("user:{}", row.user_id),
                        event: "regcode.lock",
                        user_id: Some(&row.user_id),
                        outcome: "locked",
                        detail: serde_json::json!({ "failures": failures }),
                        ..Default::default()
                    }],
                )?;
            }
        }
        Ok(failures)
    })?;
    if failures >= max_tries {
        Err(RegcodeError::Locked)
    } else {
        Err(RegcodeError::WrongPassword { left: max_tries - failures })
    }
}
