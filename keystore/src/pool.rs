//! A pool of logged-in PKCS#11 sessions.
//!
//! A `cryptoki::session::Session` is `Send` but not `Sync`: one thread at a time.
//! The pool lends a session to one caller at a time and takes it back when the
//! guard drops. A session that failed in a way that suggests it is stale is
//! discarded instead, and a fresh one is opened (and logged in) on the next
//! checkout, so the pool heals without a restart.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The pool's bookkeeping: idle sessions and how many exist in all.
struct Slots<T> {
    idle: Vec<T>,
    open: usize,
}

/// Sessions shared by worker threads.
pub(crate) struct Pool<T> {
    slots: Mutex<Slots<T>>,
    freed: Condvar,
    size: usize,
    wait: Duration,
}

/// A session lent by the pool; returned on drop unless [`Lease::discard`] was called.
pub(crate) struct Lease<'a, T> {
    pool: &'a Pool<T>,
    session: Option<T>,
}

impl<T> Pool<T> {
    pub(crate) fn new(size: usize, wait: Duration) -> Pool<T> {
        Pool { slots: Mutex::new(Slots { idle: Vec::with_capacity(size), open: 0 }), freed: Condvar::new(), size, wait }
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }

    fn lock(&self) -> MutexGuard<'_, Slots<T>> {
        // A poisoned lock only means another thread panicked while holding it;
        // the Vec and counter inside stay consistent, so keep going.
        self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Lends an idle session, or opens a new one with `open` while fewer than
    /// `size` exist, or waits for one to come back.
    pub(crate) fn get(&self, open: impl FnOnce() -> Result<T>) -> Result<Lease<'_, T>> {
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

impl<T> Lease<'_, T> {
    /// Drops the session instead of returning it to the pool.
    pub(crate) fn discard(mut self) {
        if self.session.take().is_some() {
            self.pool.lock().open -= 1;
            self.pool.freed.notify_one();
        }
    }
}

impl<T> std::ops::Deref for Lease<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // The option is only emptied by `discard`, which consumes the lease.
        self.session.as_ref().unwrap_or_else(|| unreachable!("lease used after discard"))
    }
}

impl<T> Drop for Lease<'_, T> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.pool.lock().idle.push(session);
            self.pool.freed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn lends_at_most_size_and_reuses() {
        let pool: Pool<usize> = Pool::new(2, Duration::from_millis(50));
        let opened = AtomicUsize::new(0);
        let open = || Ok(opened.fetch_add(1, Ordering::SeqCst));
        let a = pool.get(open).expect("first");
        let b = pool.get(open).expect("second");
        let err = pool.get(open).err().expect("exhausted");
        assert!(matches!(err, Error::PoolExhausted { size: 2, .. }), "{err:?}");
        drop(a);
        let c = pool.get(open).expect("reused");
        assert_eq!(opened.load(Ordering::SeqCst), 2, "no third session was opened");
        drop((b, c));
    }

    #[test]
    fn discarded_sessions_are_replaced() {
        let pool: Pool<usize> = Pool::new(1, Duration::from_millis(50));
        let opened = AtomicUsize::new(0);
        let open = || Ok(opened.fetch_add(1, Ordering::SeqCst));
        pool.get(open).expect("first").discard();
        let again = pool.get(open).expect("replacement");
        assert_eq!(*again, 1);
    }

    #[test]
    fn a_failed_open_frees_its_place() {
        let pool: Pool<usize> = Pool::new(1, Duration::from_millis(50));
        assert!(pool.get(|| Err(Error::TokenUnavailable { reason: "down".into() })).is_err());
        assert!(pool.get(|| Ok(7)).is_ok(), "the failed open did not leak a slot");
    }

    #[test]
    fn waiters_get_returned_sessions() {
        let pool: Arc<Pool<usize>> = Arc::new(Pool::new(1, Duration::from_secs(5)));
        let held = pool.get(|| Ok(1)).expect("first");
        let p2 = Arc::clone(&pool);
        let waiter = std::thread::spawn(move || p2.get(|| Ok(2)).map(|l| *l));
        std::thread::sleep(Duration::from_millis(50));
        drop(held);
        assert_eq!(waiter.join().expect("thread").expect("lease"), 1);
    }
}
