//! The service's shared state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use inkan_keystore::{KeyAlgorithm, KeyRef, Keystore};

use crate::auth::certificate::TrustStore;
use crate::auth::oidc::Pending;
use crate::auth::session::Bearer;
use crate::cades::SignerIdentity;
use crate::clock::Clock;
use crate::config::Config;
use crate::store::Store;

use super::audit_writer::AuditWriter;
use super::csc::Sads;
use super::error::ApiError;
use super::metrics::Metrics;

/// Cached auth sessions. Emptied whenever the auth epoch changes; an entry read
/// from the database is kept only if no change happened meanwhile (`generation`).
#[derive(Default)]
struct SessionCache {
    stamp: Option<crate::auth::epoch::Stamp>,
    generation: u64,
    entries: HashMap<Vec<u8>, (Bearer, i64)>,
}

/// Sessions kept in memory at most (then the cache starts over).
const MAX_CACHED_SESSIONS: usize = 100_000;
/// How long a cached session is trusted without a database read, as a bound
/// for changes that bypass the epoch (a process killed between its commit and
/// its bump, an edit by hand).
const SESSION_CACHE_TTL_MS: i64 = 10_000;

/// Everything a request handler needs.
pub struct App {
    /// Configuration.
    pub config: Config,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// The token.
    pub keystore: Arc<Keystore>,
    /// The store (short reads and writes; the audit log has its own connection).
    db: Mutex<Store>,
    /// Group-committed audit rows.
    pub audit: AuditWriter,
    /// Chain certificates included in every signature (signing CA first).
    pub chain: Vec<Vec<u8>>,
    /// Signer identities by (user, key generation).
    signers: Mutex<HashMap<(String, i64), Arc<SignerIdentity>>>,
    /// Auth sessions by token hash, valid while the auth epoch file is unchanged.
    sessions: Mutex<SessionCache>,
    /// The auth epoch file (see [`crate::auth::epoch`]).
    epoch: crate::auth::epoch::Watcher,
    /// OIDC requests and codes in flight.
    pub pending: Pending,
    /// HPKI card trust store.
    pub hpki: TrustStore,
    /// JPKI card trust store.
    pub jpki: TrustStore,
    /// The platform key that signs ID tokens.
    pub platform_key: KeyRef,
    /// Its JWK key ID.
    pub kid: String,
    /// Its JWK.
    pub jwk: serde_json::Value,
    /// CSC signature activation data.
    pub sads: Sads,
    /// Prometheus counters.
    pub metrics: Metrics,
    /// Demo client (demo mode only): id and secret.
    pub demo_client: Option<(String, String)>,
    /// The WebAuthn relying party.
    pub rp: crate::fido::RelyingParty,
    /// Page templates.
    pub templates: super::pages::Templates,
}

impl App {
    /// Assembles the state.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        clock: Arc<dyn Clock>,
        keystore: Arc<Keystore>,
        store: Store,
        audit: AuditWriter,
        chain: Vec<Vec<u8>>,
        hpki: TrustStore,
        jpki: TrustStore,
        platform_key: KeyRef,
        platform_spki: &[u8],
        demo_client: Option<(String, String)>,
    ) -> Result<App, String> {
        let kid = crate::auth::oidc::kid(platform_spki);
        let jwk = crate::auth::oidc::jwk(platform_spki, &kid).ok_or("the platform key is not a P-256 key")?;
        let rp = crate::fido::RelyingParty::new(&config)?;
        let epoch_path = crate::auth::epoch::path_for(&config.store_path());
        // Start from a known epoch (whatever changed before this start is in the database).
        crate::auth::epoch::bump(&epoch_path).map_err(|e| format!("{}: {e}", epoch_path.display()))?;
        let templates = super::pages::Templates::new()?;
        Ok(App {
            config,
            clock,
            keystore,
            db: Mutex::new(store),
            audit,
            chain,
            signers: Mutex::new(HashMap::new()),
            sessions: Mutex::new(SessionCache::default()),
            epoch: crate::auth::epoch::Watcher::new(epoch_path),
            pending: Pending::default(),
            hpki,
            jpki,
            platform_key,
            kid,
            jwk,
            sads: Sads::default(),
            metrics: Metrics::default(),
            demo_client,
            rp,
            templates,
        })
    }

    /// The store, for a short read or write.
    pub fn db(&self) -> MutexGuard<'_, Store> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store's lock, for work that must hold it only between slow steps.
    pub fn db_mutex(&self) -> &Mutex<Store> {
        &self.db
    }

    /// Now, in Unix ms.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The auth session behind a bearer token: it must exist, not be expired,
    /// belong to an enabled user and grant `sign` if `signing`.
    pub fn bearer(&self, headers: &axum::http::HeaderMap) -> Result<Bearer, ApiError> {
        let value = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::invalid_token("missing Authorization: Bearer <access token>"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 256)
            .ok_or_else(|| ApiError::invalid_token("the Authorization header must be Bearer <access token>"))?;
        let bearer = self
            .session(token)?
            .ok_or_else(|| ApiError::invalid_token("unknown or revoked access token: log in again"))?;
        if bearer.expires_at <= self.now_ms() {
            return Err(ApiError::invalid_token("the auth session has expired: log in again"));
        }
        if bearer.user_status != "active" {
            return Err(ApiError::invalid_token("the user is disabled"));
        }
        Ok(bearer)
    }

    /// The auth session of a token: from memory while the auth epoch is
    /// unchanged and the entry is fresh, else from the database.
    fn session(&self, token: &str) -> Result<Option<Bearer>, ApiError> {
        let hash = crate::auth::token_hash(token);
        let now = self.now_ms();
        let stamp = self.epoch.stamp();
        let generation = {
            let mut cache = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            if cache.stamp != stamp || stamp.is_none() {
                cache.entries.clear();
                cache.stamp = stamp.clone();
                cache.generation += 1;
            }
            if let Some((bearer, cached_at)) = cache.entries.get(&hash) {
                if now - cached_at < SESSION_CACHE_TTL_MS {
                    return Ok(Some(bearer.clone()));
                }
            }
            cache.generation
        };
        let found = crate::auth::session::lookup(self.db().conn(), token)?;
        if let (Some(bearer), Some(_)) = (&found, &stamp) {
            let mut cache = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            // Only if nothing changed since this request looked at the epoch.
            if cache.generation == generation {
                if cache.entries.len() >= MAX_CACHED_SESSIONS {
                    cache.entries.clear();
                }
                cache.entries.insert(hash, (bearer.clone(), now));
            }
        }
        Ok(found)
    }

    /// After this process changed sessions (a logout): drop the cache here and
    /// tell other processes through the epoch.
    pub fn sessions_changed(&self) {
        let mut cache = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        cache.entries.clear();
        cache.generation += 1;
        if let Err(e) = crate::auth::epoch::bump(self.epoch.path()) {
            tracing::warn!("cannot update {}: {e}", self.epoch.path().display());
        }
        cache.stamp = self.epoch.stamp();
    }

    /// The signer for a session's user: the active key with its certificate.
    pub fn signer(&self, bearer: &Bearer) -> Result<(Arc<SignerIdentity>, i64), ApiError> {
        let Some((generation, token_id, algorithm)) = &bearer.active_key else {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "invalid_request",
                format!("user {} has no active signing key; ask the operator", bearer.user_id),
            ));
        };
        let cache_key = (bearer.user_id.clone(), *generation);
        if let Some(s) = self.signers.lock().unwrap_or_else(|p| p.into_inner()).get(&cache_key) {
            return Ok((Arc::clone(s), *generation));
        }
        let certificate = self
            .db()
            .keys(Some(&bearer.user_id))?
            .into_iter()
            .find(|k| k.generation == *generation)
            .and_then(|k| k.certificate)
            .ok_or_else(|| ApiError::internal("active key without certificate"))?;
        let alg: KeyAlgorithm = algorithm.parse().map_err(ApiError::internal)?;
        let identity = SignerIdentity::new(
            KeyRef::from_id(token_id.clone()),
            alg,
            self.config.signing.rsa_scheme,
            &certificate,
            &self.chain,
        )
        .map_err(ApiError::internal)?;
        let identity = Arc::new(identity);
        self.signers.lock().unwrap_or_else(|p| p.into_inner()).insert(cache_key, Arc::clone(&identity));
        Ok((identity, *generation))
    }
}
