//! Short-lived state kept in this process's memory: pending OpenID Connect
//! requests and authorization codes, CSC SADs. The SQLite backend (one node)
//! uses it; a backend shared by several nodes keeps the same things in its
//! database instead. Expired entries are dropped whenever a new one is added.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::auth::oidc::{AuthRequest, Code, OidcStore};
use crate::auth::sad::{Sad, SadStore};
use crate::seam::StoreError;

/// The maps.
#[derive(Debug, Default)]
pub struct Memory {
    requests: Mutex<Pending>,
    codes: Mutex<HashMap<Vec<u8>, Code>>,
    sads: Mutex<HashMap<Vec<u8>, Sad>>,
}

/// Pending authorization requests, and their handles in the order they came
/// (all live equally long): the oldest are found without a scan.
#[derive(Debug, Default)]
struct Pending {
    by_id: HashMap<String, AuthRequest>,
    order: std::collections::VecDeque<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl OidcStore for Memory {
    async fn put_request(&self, id: &str, request: &AuthRequest, now: i64, max: usize) -> Result<(), StoreError> {
        let mut pending = lock(&self.requests);
        let Pending { by_id, order } = &mut *pending;
        // From the oldest: drop handles already taken, expired requests, and
        // the oldest live ones while there is no room.
        while let Some(oldest) = order.front() {
            let gone = match by_id.get(oldest) {
                None => true,
                Some(r) => r.expires_at <= now || by_id.len() >= max,
            };
            if !gone {
                break;
            }
            if let Some(oldest) = order.pop_front() {
                by_id.remove(&oldest);
            }
        }
        by_id.insert(id.to_owned(), request.clone());
        order.push_back(id.to_owned());
        Ok(())
    }

    async fn request(&self, id: &str, now: i64) -> Result<Option<AuthRequest>, StoreError> {
        Ok(lock(&self.requests).by_id.get(id).filter(|r| r.expires_at > now).cloned())
    }

    async fn take_request(&self, id: &str) -> Result<Option<AuthRequest>, StoreError> {
        // Its handle leaves the queue when it reaches the front.
        Ok(lock(&self.requests).by_id.remove(id))
    }

    async fn put_code(&self, code_hash: &[u8], code: &Code, now: i64) -> Result<(), StoreError> {
        let mut map = lock(&self.codes);
        map.retain(|_, c| c.expires_at > now);
        map.insert(code_hash.to_vec(), code.clone());
        Ok(())
    }

    async fn take_code(&self, code_hash: &[u8]) -> Result<Option<Code>, StoreError> {
        Ok(lock(&self.codes).remove(code_hash))
    }

    async fn keep_spent_code(&self, marker: &[u8], code: &Code, now: i64) -> Result<(), StoreError> {
        self.put_code(marker, code, now).await
    }

    async fn has_code(&self, code_hash: &[u8]) -> Result<bool, StoreError> {
        Ok(lock(&self.codes).contains_key(code_hash))
    }
}

#[async_trait]
impl SadStore for Memory {
    async fn put_sad(&self, sad_hash: &[u8], sad: &Sad, now: i64, max: usize) -> Result<bool, StoreError> {
        let mut map = lock(&self.sads);
        map.retain(|_, s| s.expires_at > now);
        if map.values().filter(|s| s.session == sad.session).count() >= max {
            return Ok(false);
        }
        map.insert(sad_hash.to_vec(), sad.clone());
        Ok(true)
    }

    async fn take_sad(&self, sad_hash: &[u8]) -> Result<Option<Sad>, StoreError> {
        Ok(lock(&self.sads).remove(sad_hash))
    }
}
