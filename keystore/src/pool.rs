//! A pool of logged-in PKCS#11 sessions.
//!
//! A `cryptoki::session::Session` is `Send` but not `Sync`: one thread at a time.
//! The pool lends a session to one caller at a time and takes it back when the
//! guard drops. A session that failed in a way that suggests it is stale is
//! discarded instead, and a fresh one is opened (and logged in) on the next
//! checkout, so the pool heals without a restart.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cryptoki::session::Session;

use crate::error::{Error, Result};

/// The pool's bookkeeping: idle sessions and how many exist in all.
struct Slots {
    idle: Vec<Session>,
    open: usize,
}

/// Sessions shared by worker threads.
pub(crate) struct Pool {
    slots: Mutex<Slots>,
    freed: Condvar,
    size: usize,
    wait: Duration,
}

/// A session lent by the pool; returned on drop unless [`Lease::discard`] was called.
pub(crate) struct Lease<'a> {
    pool: &'a Pool,
    session: Option<Session>,
}

impl Pool {
    pub(crate) fn new(size: usize, wait: Duration) -> Pool {
        Pool { slots: Mutex::new(Slots { idle: Vec::with_capacity(size), open: 0 }), freed: Condvar::new(), size, wait }
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        // A poisoned lock only means another thread panicked while holding it;
        // the Vec and counter inside stay consistent, so keep going.
        self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Lends an idle session, or opens a new one with `open` while fewer than
    /// `size` exist, or waits for one to come back.
    pub(crate) fn get(&self, open: impl FnOnce() -> Result<Session>) -> Result<Lease<'_>> {
        let started = Instant::now();
        let mut slots = self.lock();
        loop {
            if let Some(session) = slots.idle.pop() {
                return Ok(Lease { pool: self, session: Some(session) });
            }
            if slots.open < self.size {
                slots.open += 1;
                drop(slots);
                return match open() {
                    Ok(session) => Ok(Lease { pool: self, session: Some(session) }),
                    Err(e) => {
                        self.lock().open -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            let waited = started.elapsed();
            if waited >= self.wait {
                return Err(Error::PoolExhausted { size: self.size, waited_ms: waited.as_millis() as u64 });
            }
            slots = self
                .freed
                .wait_timeout(slots, self.wait - waited)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
    }

    /// Closes every idle session (after a logout or when the token went away).
    pub(crate) fn drain_idle(&self) {
        let mut slots = self.lock();
        let n = slots.idle.len();
        slots.idle.clear();
        slots.open -= n;
    }
}

impl Lease<'_> {
    /// Drops the session instead of returning it to the pool.
    pub(crate) fn discard(mut self) {
        if self.session.take().is_some() {
            self.pool.lock().open -= 1;
            self.pool.freed.notify_one();
        }
    }
}

impl std::ops::Deref for Lease<'_> {
    type Target = Session;
    fn deref(&self) -> &Session {
        // The option is only emptied by `discard`, which consumes the lease.
        self.session.as_ref().unwrap_or_else(|| unreachable!("lease used after discard"))
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.pool.lock().idle.push(session);
            self.pool.freed.notify_one();
        }
    }
}
