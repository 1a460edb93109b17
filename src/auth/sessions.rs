//! Auth sessions: what a login opens (18 hours by default) and what a signing
//! system holds as its bearer token. The token itself is only ever returned
//! once; the store keeps its SHA-256.
//!
//! [`Sessions`] turns a bearer token into a [`Principal`]. It keeps the sessions
//! it has read in memory, so a signature costs no database read: the cache is
//! emptied whenever the store's [`Invalidation`] stamp changes (every CLI
//! command and every logout changes it), and an entry is trusted for at most
//! [`CACHE_TTL_MS`] without a read, which bounds anything that bypasses the
//! stamp (a hand edit of the database).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::Serialize;

use crate::audit::AuditStore;
use crate::audit::{self, Event};
use crate::clock::{rfc3339, Clock};
use crate::error::{Credential, Error, Result};
use crate::seam::{StoreError, Transaction, Transactions};
use crate::users::UserStore;
use crate::users::{ActiveKey, UserStatus};

use super::principal::{Authority, Principal, SessionGrant};
use super::Method;

/// A session as stored.
#[derive(Clone, Debug)]
pub struct Session {
    /// SHA-256 of the bearer token.
    pub token_hash: Vec<u8>,
    /// Owner.
    pub user_id: String,
    /// Login method.
    pub method: Method,
    /// The signing system.
    pub client_id: String,
    /// Granted scope.
    pub scope: String,
    /// Unix ms of the login.
    pub auth_time: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub expires_at: i64,
}

/// A session with what a request needs to know about its user, read at once.
#[derive(Clone, Debug)]
pub struct SessionRecord {
    /// The session.
    pub session: Session,
    /// Whether its user may sign.
    pub user_status: UserStatus,
    /// Its user's active key.
    pub active_key: Option<ActiveKey>,
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

impl From<&Session> for SessionView {
    fn from(s: &Session) -> Self {
        SessionView {
            user_id: s.user_id.clone(),
            method: s.method.as_str().into(),
            client_id: s.client_id.clone(),
            auth_time: rfc3339(s.auth_time),
            expires_at: rfc3339(s.expires_at),
            id: crate::encoding::hex(s.token_hash.get(..4).unwrap_or_default()),
        }
    }
}

/// What auth sessions need from storage.
#[async_trait]
pub trait SessionStore: Send {
    /// A session by its token hash, with its user's status and active key
    /// (expired or not: the caller decides).
    async fn session(&mut self, token_hash: &[u8]) -> Result<Option<SessionRecord>, StoreError>;
    /// Opens a session.
    async fn insert_session(&mut self, session: &Session) -> Result<(), StoreError>;
    /// Ends one session; returns its user, if it existed.
    async fn delete_session(&mut self, token_hash: &[u8]) -> Result<Option<String>, StoreError>;
    /// Ends the sessions of one user (optionally of one method only), or of everyone.
    async fn delete_sessions(&mut self, user_id: Option<&str>, method: Option<Method>) -> Result<usize, StoreError>;
    /// Sessions not yet expired (of one user, or all), by user and login time.
    async fn sessions(&mut self, now: i64, user_id: Option<&str>) -> Result<Vec<Session>, StoreError>;
    /// Number of sessions not yet expired.
    async fn count_sessions(&mut self, now: i64) -> Result<i64, StoreError>;
    /// Removes expired sessions.
    async fn purge_sessions(&mut self, now: i64) -> Result<usize, StoreError>;
}

/// One version of the auth state, as an [`Invalidation`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp(pub Arc<str>);

/// How caches of auth sessions learn that something changed (a revoked
/// session, a disabled user, a new active key, a removed device).
#[async_trait]
pub trait Invalidation: Send + Sync {
    /// The current version; `None` if it cannot be known (then nothing may be
    /// cached). Called per request: answers from memory or a `stat`.
    fn stamp(&self) -> Option<Stamp>;
    /// Tells every cache (in every process or node) that the auth state changed.
    async fn bump(&self) -> Result<(), StoreError>;
}

/// What session operations need in one transaction.
pub trait SessionsTx: SessionStore + UserStore + AuditStore + Transaction {}
impl<T: SessionStore + UserStore + AuditStore + Transaction + ?Sized> SessionsTx for T {}

/// Opens a session for `token` (a fresh random token, the bearer); returns it.
#[allow(clippy::too_many_arguments)]
pub async fn create<T: SessionsTx + ?Sized>(
    store: &dyn Transactions<T>,
    token: String,
    now: i64,
    user_id: &str,
    method: Method,
    client_id: &str,
    scope: &str,
    auth_time: i64,
    lifetime_ms: i64,
) -> Result<String> {
    let session = Session {
        token_hash: super::token_hash(&token),
        user_id: user_id.to_owned(),
        method,
        client_id: client_id.to_owned(),
        scope: scope.to_owned(),
        auth_time,
        created_at: now,
        expires_at: now + lifetime_ms,
    };
    let mut tx = store.write().await?;
    tx.insert_session(&session).await?;
    audit::append(
        &mut *tx,
        now,
        &[Event { user_id: Some(user_id.into()), outcome: "ok", detail: serde_json::json!({ "method": method.as_str(), "client_id": client_id, "expires_at": rfc3339(session.expires_at) }), ..Event::new(format!("user:{user_id}"), crate::audit::Name::SessionOpen) }],
    )
    .await?;
    tx.commit().await?;
    Ok(token)
}

/// Ends one session by its token (logout); returns whether it existed.
pub async fn revoke_token<T: SessionsTx + ?Sized>(
    store: &dyn Transactions<T>,
    now: i64,
    actor: &str,
    token: &str,
) -> Result<bool> {
    revoke_hash(store, now, actor, &super::token_hash(token), crate::audit::Name::SessionLogout, serde_json::json!({}))
        .await
}

/// Ends one session by its token's hash, with an audit row `event` (and
/// `detail`) if it existed; returns whether it did.
async fn revoke_hash<T: SessionsTx + ?Sized>(
    store: &dyn Transactions<T>,
    now: i64,
    actor: &str,
    token_hash: &[u8],
    event: crate::audit::Name,
    detail: serde_json::Value,
) -> Result<bool> {
    let mut tx = store.write().await?;
    let Some(user) = tx.delete_session(token_hash).await? else {
        return Ok(false);
    };
    audit::append(
        &mut *tx,
        now,
        &[Event { user_id: Some(user.as_str().into()), outcome: "ok", detail, ..Event::new(actor, event) }],
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Ends sessions of one user (optionally only those of one method), or of everyone.
pub async fn revoke<T: SessionsTx + ?Sized>(
    store: &dyn Transactions<T>,
    now: i64,
    actor: &str,
    user_id: Option<&str>,
    method: Option<Method>,
) -> Result<usize> {
    let mut tx = store.write().await?;
    if let Some(u) = user_id {
        crate::users::get_in(&mut *tx, u).await?;
    }
    let n = tx.delete_sessions(user_id, method).await?;
    audit::append(
        &mut *tx,
        now,
        &[Event {
            user_id: user_id.map(Into::into),
            outcome: "ok",
            detail: serde_json::json!({ "sessions": n, "method": method.map(Method::as_str) }),
            ..Event::new(actor, crate::audit::Name::SessionRevoke)
        }],
    )
    .await?;
    tx.commit().await?;
    Ok(n)
}

/// Sessions not yet expired (of one user, or all).
pub async fn list<T: SessionsTx + ?Sized>(
    store: &dyn Transactions<T>,
    now: i64,
    user_id: Option<&str>,
) -> Result<Vec<SessionView>> {
    let mut tx = store.read().await?;
    if let Some(u) = user_id {
        crate::users::get_in(&mut *tx, u).await?;
    }
    Ok(tx.sessions(now, user_id).await?.iter().map(SessionView::from).collect())
}

/// Number of sessions not yet expired.
pub async fn count_active<T: SessionsTx + ?Sized>(store: &dyn Transactions<T>, now: i64) -> Result<i64> {
    Ok(store.read().await?.count_sessions(now).await?)
}

/// Removes expired sessions.
pub async fn purge_expired<T: SessionsTx + ?Sized>(store: &dyn Transactions<T>, now: i64) -> Result<usize> {
    let mut tx = store.write().await?;
    let n = tx.purge_sessions(now).await?;
    tx.commit().await?;
    Ok(n)
}

/// Sessions kept in memory at most (then the cache starts over).
const MAX_CACHED_SESSIONS: usize = 100_000;
/// How long a cached session is trusted without a database read, as a bound
/// for changes that bypass the invalidation stamp (a process killed between
/// its commit and its bump, an edit by hand).
pub const CACHE_TTL_MS: i64 = 10_000;

/// Cached sessions. Emptied whenever the stamp changes; an entry read from the
/// store is kept only if no change happened meanwhile (`generation`).
#[derive(Default)]
struct Cache {
    stamp: Option<Stamp>,
    generation: u64,
    entries: HashMap<Vec<u8>, (Arc<SessionRecord>, i64)>,
}

/// Bearer tokens to principals, with a cache kept true by the store's [`Invalidation`].
pub struct Sessions<T: ?Sized + Send> {
    store: Arc<dyn Transactions<T>>,
    clock: Arc<dyn Clock>,
    invalidation: Arc<dyn Invalidation>,
    cache: Mutex<Cache>,
}

impl<T: SessionsTx + ?Sized> Sessions<T> {
    /// Sessions of `store`, whose changes `invalidation` announces; starts
    /// from a fresh stamp (whatever changed before is in the store).
    pub async fn new(
        store: Arc<dyn Transactions<T>>,
        invalidation: Arc<dyn Invalidation>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        invalidation.bump().await?;
        Ok(Sessions { store, clock, invalidation, cache: Mutex::new(Cache::default()) })
    }

    /// The principal behind a bearer token: the session must exist, not be
    /// expired, and belong to an enabled user.
    pub async fn authenticate(&self, token: &str) -> Result<Principal> {
        let invalid = |m: &str| Error::Unauthenticated(Credential::Bearer, m.to_owned());
        if token.is_empty() || token.len() > 256 {
            return Err(invalid("the Authorization header must be Bearer <access token>"));
        }
        let record =
            self.session(token).await?.ok_or_else(|| invalid("unknown or revoked access token: log in again"))?;
        if record.session.expires_at <= self.clock.now_ms() {
            return Err(invalid("the auth session has expired: log in again"));
        }
        if record.user_status != UserStatus::Active {
            return Err(invalid("the user is disabled"));
        }
        let s = &record.session;
        Ok(Principal {
            user_id: s.user_id.clone(),
            actor: format!("client:{}", s.client_id),
            authority: Authority::Session(SessionGrant {
                client_id: s.client_id.clone(),
                method: s.method,
                scope: s.scope.clone(),
                auth_time: s.auth_time,
                expires_at: s.expires_at,
                token_hash: s.token_hash.clone(),
            }),
            key: record.active_key.clone(),
        })
    }

    /// The session of a token: from memory while the stamp is unchanged and
    /// the entry is fresh, else from the store.
    async fn session(&self, token: &str) -> Result<Option<Arc<SessionRecord>>> {
        let hash = super::token_hash(token);
        let now = self.clock.now_ms();
        let stamp = self.invalidation.stamp();
        let generation = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.stamp != stamp || stamp.is_none() {
                cache.entries.clear();
                cache.stamp = stamp.clone();
                cache.generation += 1;
            }
            if let Some((record, cached_at)) = cache.entries.get(&hash) {
                if now - cached_at < CACHE_TTL_MS {
                    return Ok(Some(Arc::clone(record)));
                }
            }
            cache.generation
        };
        let found = self.store.read().await?.session(&hash).await?.map(Arc::new);
        if let (Some(record), Some(_)) = (&found, &stamp) {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            // Only if nothing changed since this request looked at the stamp.
            if cache.generation == generation {
                if cache.entries.len() >= MAX_CACHED_SESSIONS {
                    cache.entries.clear();
                }
                cache.entries.insert(hash, (Arc::clone(record), now));
            }
        }
        Ok(found)
    }

    /// After this process changed sessions: drop the cache here and tell
    /// everyone else through the store.
    pub async fn changed(&self) {
        self.forget();
        if let Err(e) = self.invalidation.bump().await {
            tracing::warn!("cannot announce a session change: {e}");
        }
        // Entries read from now on belong to the new stamp (or none are kept).
        self.forget();
    }

    /// Empties this process's cache.
    fn forget(&self) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.entries.clear();
        cache.generation += 1;
        cache.stamp = self.invalidation.stamp();
    }

    /// RFC 7009 logout by a client: ends the session if that client holds it
    /// (any other token is ignored, as the RFC asks).
    pub async fn logout(&self, client_id: &str, token: &str) -> Result<()> {
        let owner = self.store.read().await?.session(&super::token_hash(token)).await?;
        if owner.is_some_and(|r| r.session.client_id == client_id) {
            revoke_token(self.store.as_ref(), self.clock.now_ms(), &format!("client:{client_id}"), token).await?;
            self.changed().await;
        }
        Ok(())
    }

    /// Ends a session by its token's hash (a replayed authorization code);
    /// `reason` goes to the audit row.
    pub async fn end_by_hash(&self, actor: &str, token_hash: &[u8], reason: &str) -> Result<()> {
        let detail = serde_json::json!({ "sessions": 1, "reason": reason });
        if revoke_hash(
            self.store.as_ref(),
            self.clock.now_ms(),
            actor,
            token_hash,
            crate::audit::Name::SessionRevoke,
            detail,
        )
        .await?
        {
            self.changed().await;
        }
        Ok(())
    }

    /// Ends a session by its token (a page's own logout, as in the demo).
    pub async fn end(&self, actor: &str, token: &str) -> Result<()> {
        revoke_token(self.store.as_ref(), self.clock.now_ms(), actor, token).await?;
        self.changed().await;
        Ok(())
    }
}
