//! Short-lived state kept in this process's memory: pending OpenID Connect
//! requests and authorization codes, CSC SADs. The SQLite backend (one node)
//! uses it; a backend shared by several nodes keeps the same things in its
//! database instead. Expired entries are dropped whenever a new one is added.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::auth::oidc::{AuthRequest, Code, OidcStore};
use crate::auth::sad::{Sad, SadStore};
use crate::storage::StoreError;

/// The maps.
#[derive(Debug, Default)]
pub struct Memory {
    requests: Mutex<HashMap<String, AuthRequest>>,
    codes: Mutex<HashMap<Vec<u8>, Code>>,
    sads: Mutex<HashMap<Vec<u8>, Sad>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl OidcStore for Memory {
    async fn put_request(&self, id: &str, request: &AuthRequest, now: i64) -> Result<(), StoreError> {
        let mut map = lock(&self.requests);
        map.retain(|_, r| r.expires_at > now);
        map.insert(id.to_owned(), request.clone());
        Ok(())
    }

    async fn request(&self, id: &str, now: i64) -> Result<Option<AuthRequest>, StoreError> {
        Ok(lock(&self.requests).get(id).filter(|r| r.expires_at > now).cloned())
    }

    async fn take_request(&self, id: &str) -> Result<Option<AuthRequest>, StoreError> {
        Ok(lock(&self.requests).remove(id))
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

    async fn keep_spent_code(&self, code_hash: &[u8], code: &Code, now: i64) -> Result<(), StoreError> {
        self.put_code(code_hash, code, now).await
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
