//! Auth sessions: what a login opens (18 hours by default) and what a signing
//! system holds as its bearer token. The token itself is only ever returned
//! once; the store keeps its SHA-256.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::audit::{self, Event};
use crate::clock::rfc3339;
use crate::store::{Store, StoreError};

/// How the user logged in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// HPKI card (TLS client certificate).
    Hpki,
    /// My Number card (JPKI client certificate).
    Jpki,
    /// FIDO2 phone.
    Fido,
}

impl Method {
    /// `hpki`, `jpki`, `fido` (also the OIDC `acr` value).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Hpki => "hpki",
            Method::Jpki => "jpki",
            Method::Fido => "fido",
        }
    }

    /// Parses an `acr_values` entry.
    pub fn parse(s: &str) -> Option<Method> {
        match s {
            "hpki" => Some(Method::Hpki),
            "jpki" => Some(Method::Jpki),
            "fido" => Some(Method::Fido),
            _ => None,
        }
    }
}

/// What a bearer token stands for, read in one query with the user's state and active key.
#[derive(Clone, Debug)]
pub struct Bearer {
    /// Session owner.
    pub user_id: String,
    /// Login method.
    pub method: String,
    /// The signing system.
    pub client_id: String,
    /// Granted scope.
    pub scope: String,
    /// Unix ms of the login.
    pub auth_time: i64,
    /// Unix ms.
    pub expires_at: i64,
    /// `active` or `disabled`.
    pub user_status: String,
    /// The active key: generation, CKA_ID, algorithm.
    pub active_key: Option<(i64, Vec<u8>, String)>,
    /// The stored hash of the token.
    pub token_hash: Vec<u8>,
}

/// A session as listed to operators.
#[derive(Clone, Debug, Serialize)]
pub struct SessionView {
    /// Owner.
    pub user_id: String,
    /// Login method.
    pub method: String,
    /// Client.
    pub client_id: String,
    /// RFC 3339.
    pub auth_time: String,
    /// RFC 3339.
    pub expires_at: String,
    /// First 8 hex digits of the token hash (to tell sessions apart).
    pub id: String,
}

/// Opens a session; returns the bearer token.
#[allow(clippy::too_many_arguments)]
pub fn create(
    store: &mut Store,
    now: i64,
    user_id: &str,
    method: Method,
    client_id: &str,
    scope: &str,
    auth_time: i64,
    lifetime_ms: i64,
) -> Result<String, StoreError> {
    let token = super::random_token();
    let hash = super::token_hash(&token);
    store.write(|t| {
        t.execute(
            "INSERT INTO sessions (token_hash, user_id, method, client_id, scope, auth_time, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![hash, user_id, method.as_str(), client_id, scope, auth_time, now, now + lifetime_ms],
        )?;
        audit::append(
            t,
            now,
            &[Event {
                actor: &format!("user:{user_id}"),
                event: "session.open",
                user_id: Some(user_id),
                outcome: "ok",
                detail: serde_json::json!({ "method": method.as_str(), "client_id": client_id, "expires_at": rfc3339(now + lifetime_ms) }),
                ..Default::default()
            }],
        )?;
        Ok(())
    })?;
    Ok(token)
}

/// Looks a bearer token up (expired or not: the caller decides).
pub fn lookup(conn: &Connection, token: &str) -> Result<Option<Bearer>, StoreError> {
    let hash = super::token_hash(token);
    let mut stmt = conn.prepare_cached(
        "SELECT s.user_id, s.method, s.client_id, s.scope, s.auth_time, s.expires_at, u.status,
                k.generation, k.token_id, k.algorithm
         FROM sessions s JOIN users u ON u.id = s.user_id
         LEFT JOIN keys k ON k.user_id = s.user_id AND k.state = 'active'
         WHERE s.token_hash = ?1",
    )?;
    Ok(stmt
        .query_row([&hash], |r| {
            let generation: Option<i64> = r.get(7)?;
            Ok(Bearer {
                user_id: r.get(0)?,
                method: r.get(1)?,
                client_id: r.get(2)?,
                scope: r.get(3)?,
                auth_time: r.get(4)?,
                expires_at: r.get(5)?,
                user_status: r.get(6)?,
                active_key: match generation {
                    Some(g) => Some((g, r.get(8)?, r.get(9)?)),
                    None => None,
                },
                token_hash: hash.clone(),
            })
        })
        .optional()?)
}

/// Ends one session by its token (logout); returns whether it existed.
pub fn revoke_token(store: &mut Store, now: i64, actor: &str, token: &str) -> Result<bool, StoreError> {
    let hash = super::token_hash(token);
    store.write(|t| {
        let user: Option<String> =
            t.query_row("SELECT user_id FROM sessions WHERE token_hash = ?1", [&hash], |r| r.get(0)).optional()?;
        let Some(user) = user else { return Ok(false) };
        t.execute("DELETE FROM sessions WHERE token_hash = ?1", [&hash])?;
        audit::append(
            t,
            now,
            &[Event {
                actor,
                event: "session.logout",
                user_id: Some(&user),
                outcome: "ok",
                detail: serde_json::json!({}),
                ..Default::default()
            }],
        )?;
        Ok(true)
    })
}

/// Ends sessions of one user (optionally only those of one method), or of everyone.
pub fn revoke(
    store: &mut Store,
    now: i64,
    actor: &str,
    user_id: Option<&str>,
    method: Option<Method>,
) -> Result<usize, StoreError> {
    store.write(|t| {
        let n = t.execute(
            "DELETE FROM sessions WHERE (?1 IS NULL OR user_id = ?1) AND (?2 IS NULL OR method = ?2)",
            params![user_id, method.map(Method::as_str)],
        )?;
        audit::append(
            t,
            now,
            &[Event {
                actor,
                event: "session.revoke",
                user_id,
                outcome: "ok",
                detail: serde_json::json!({ "sessions": n, "method": method.map(Method::as_str) }),
                ..Default::default()
            }],
        )?;
        Ok(n)
    })
}

/// Sessions not yet expired (of one user, or all).
pub fn list(conn: &Connection, now: i64, user_id: Option<&str>) -> Result<Vec<SessionView>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT user_id, method, client_id, auth_time, expires_at, token_hash FROM sessions
         WHERE expires_at > ?1 AND (?2 IS NULL OR user_id = ?2) ORDER BY user_id, auth_time",
    )?;
    let rows = stmt
        .query_map(params![now, user_id], |r| {
            let hash: Vec<u8> = r.get(5)?;
            Ok(SessionView {
                user_id: r.get(0)?,
                method: r.get(1)?,
                client_id: r.get(2)?,
                auth_time: rfc3339(r.get(3)?),
                expires_at: rfc3339(r.get(4)?),
                id: crate::keys::hex(&hash[..4]),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Number of sessions not yet expired.
pub fn count_active(conn: &Connection, now: i64) -> Result<i64, StoreError> {
    Ok(conn.query_row("SELECT COUNT(*) FROM sessions WHERE expires_at > ?1", [now], |r| r.get(0))?)
}

/// Removes expired sessions.
pub fn purge_expired(store: &mut Store, now: i64) -> Result<usize, StoreError> {
    store.write(|t| Ok(t.execute("DELETE FROM sessions WHERE expires_at <= ?1", [now])?))
}
