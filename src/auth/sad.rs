//! Signature activation data (CSC `credentials/authorize`): a short-lived,
//! single-use authorization to sign with one credential of one session, a
//! number of times, optionally bound to exactly the hashes to be signed (what
//! SCAL 2 requires).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::seam::StoreError;

use super::token_hash;

/// A SAD as stored (under the hash of its value).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sad {
    /// The auth session it belongs to (token hash).
    pub session: Vec<u8>,
    /// The key generation it authorizes.
    pub generation: i64,
    /// The hashes it is bound to, if any.
    pub hashes: Option<Vec<Vec<u8>>>,
    /// Signatures it allows.
    pub remaining: u32,
    /// Unix ms.
    pub expires_at: i64,
}

/// What SADs need from storage: short-lived, each call atomic.
#[async_trait]
pub trait SadStore: Send + Sync {
    /// Keeps a SAD until it expires, unless its session holds `max` unexpired
    /// SADs already (then false, nothing kept).
    async fn put_sad(&self, sad_hash: &[u8], sad: &Sad, now: i64, max: usize) -> Result<bool, StoreError>;
    /// Takes a SAD out (single use), expired or not.
    async fn take_sad(&self, sad_hash: &[u8]) -> Result<Option<Sad>, StoreError>;
}

fn invalid(param: &str) -> Error {
    Error::Invalid(format!("Invalid parameter {param}"))
}

/// Unused, unexpired SADs one auth session may hold: what a client can make
/// the server keep is bounded (each SAD may bind up to 1,000 hashes).
pub const MAX_PER_SESSION: usize = 16;

/// Issues a SAD; returns its value. Refused while the session holds
/// [`MAX_PER_SESSION`] unused ones.
pub async fn authorize(store: &dyn SadStore, sad: Sad, now: i64) -> Result<String> {
    let token = super::random_token();
    if !store.put_sad(&token_hash(&token), &sad, now, MAX_PER_SESSION).await? {
        return Err(Error::Conflict(format!(
            "this session holds {MAX_PER_SESSION} unused SADs already: use them (signHash, signDoc) or let them \
             expire before asking for more"
        )));
    }
    Ok(token)
}

/// A SAD taken out by [`consume`]: given back ([`give_back`]) when the
/// signatures it was taken for could not be made because the token or the
/// store was unavailable (a 503 must not use up the client's authorization).
#[derive(Debug)]
pub struct Taken {
    hash: Vec<u8>,
    sad: Sad,
}

/// Uses a SAD for `hashes`: it must belong to this session and key generation,
/// be unexpired, allow this many signatures and, when bound to hashes, be bound
/// to exactly these. Single use: it is gone afterwards, whatever the outcome,
/// unless it is given back.
pub async fn consume(
    store: &dyn SadStore,
    token: &str,
    session: &[u8],
    generation: i64,
    hashes: &[inkan_keystore::Digest],
    now: i64,
) -> Result<Taken> {
    let hash = token_hash(token);
    let sad = store.take_sad(&hash).await?.ok_or_else(|| invalid("SAD"))?;
    if sad.expires_at <= now {
        return Err(Error::Invalid("SAD expired".into()));
    }
    if sad.session != session || sad.generation != generation {
        return Err(invalid("SAD"));
    }
    if hashes.len() as u64 > u64::from(sad.remaining) {
        return Err(Error::Invalid("Invalid parameter numSignatures: more hashes than the SAD authorizes".into()));
    }
    if let Some(bound) = &sad.hashes {
        let mut a = bound.clone();
        let mut b: Vec<Vec<u8>> = hashes.iter().map(|d| d.as_bytes().to_vec()).collect();
        a.sort();
        b.sort();
        if a != b {
            return Err(Error::Invalid("Invalid parameter SAD: it was authorized for other hashes".into()));
        }
    }
    Ok(Taken { hash, sad })
}

/// Puts a taken SAD back as it was (its session's cap does not apply: the
/// SAD was counted before it was taken). A failure is logged: the client then
/// asks for a new SAD.
pub async fn give_back(store: &dyn SadStore, taken: Taken, now: i64) {
    match store.put_sad(&taken.hash, &taken.sad, now, usize::MAX).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!("a SAD taken for signatures that could not be made was not given back"),
        Err(e) => tracing::warn!("a SAD taken for signatures that could not be made was not given back: {e}"),
    }
}
