//! A lock file that orders the processes sharing one SoftHSM token directory.
//!
//! SoftHSM 2.6.1 releases its lock on an object file before the file's new
//! contents are written (fixed upstream in SoftHSMv2 #578, after 2.6.1): a
//! process that reads `token.object` meanwhile (at `C_Initialize`, or when it
//! indexes the token's objects) finds it empty and takes the token for
//! invalid, until it initialises the module again. Every `C_Login` rewrites
//! `token.object`; creating or destroying objects rewrites their files.
//! Processes of inkan that share a token directory (nodes, the CLI) therefore
//! hold this lock exclusively around what writes the directory (module
//! initialisation with its first login, logins, key generation, destruction)
//! and shared around object searches. Signatures with known handles read no
//! file and take no lock.
//!
//! The lock is `flock(2)` on a file of its own, opened per use: locks of one
//! open file are shared by all its users, so threads of one process would not
//! exclude each other through one open file. A thread that holds the lock and
//! asks again (opening the keystore logs in) gets it at once.

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::path::PathBuf;

use crate::error::{Error, Result};

/// The lock file (none for tokens that need none).
#[derive(Clone, Debug, Default)]
pub(crate) struct TokenLock {
    path: Option<PathBuf>,
}

thread_local! {
    /// Locks this thread holds (any kind): a nested request is granted at once.
    static HELD: Cell<u32> = const { Cell::new(0) };
}

/// Held until dropped.
#[must_use]
pub(crate) struct Held(Option<File>);

impl Drop for Held {
    fn drop(&mut self) {
        HELD.with(|h| h.set(h.get().saturating_sub(1)));
        // Closing the file releases the lock.
        self.0.take();
    }
}

impl TokenLock {
    /// A lock at `path`, or none.
    pub(crate) fn new(path: Option<PathBuf>) -> TokenLock {
        TokenLock { path }
    }

    fn open(&self) -> Result<Option<File>> {
        let Some(path) = &self.path else { return Ok(None) };
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(path).map_err(|e| {
            Error::TokenUnavailable { reason: format!("cannot open the token lock file {}: {e}", path.display()) }
        })?;
        Ok(Some(file))
    }

    /// For writing the token directory: excludes every other holder.
    pub(crate) fn exclusive(&self) -> Result<Held> {
        self.take(true)
    }

    /// For reading the token directory: excludes writers only.
    pub(crate) fn shared(&self) -> Result<Held> {
        self.take(false)
    }

    fn take(&self, exclusive: bool) -> Result<Held> {
        // Nested in a lock this thread holds: granted (the outer one covers it;
        // an outer shared lock is never asked for an exclusive one).
        let file = if HELD.with(Cell::get) > 0 { None } else { self.open()? };
        if let Some(f) = &file {
            let locked = if exclusive { f.lock() } else { f.lock_shared() };
            locked.map_err(|e| Error::TokenUnavailable { reason: format!("cannot lock the token lock file: {e}") })?;
        }
        HELD.with(|h| h.set(h.get() + 1));
        Ok(Held(file))
    }
}

/// The token directory's files held still for a copy (a backup): writers of
/// every process sharing the lock file wait until this is dropped; signing
/// with known handles goes on.
#[must_use = "the files are held still only while this lives"]
pub struct TokenFilesHeld(#[allow(dead_code)] Held);

/// Takes the lock file shared (see the module): the token directory's files
/// do not change until the result is dropped. Without a lock file (a token
/// that needs none), nothing is held.
pub fn hold_token_files(lock_file: Option<&std::path::Path>) -> Result<TokenFilesHeld> {
    Ok(TokenFilesHeld(TokenLock::new(lock_file.map(std::path::Path::to_path_buf)).shared()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_exclude_each_other_and_readers_share() {
        let dir = tempfile::tempdir().expect("dir");
        let lock = TokenLock::new(Some(dir.path().join("t.lock")));
        let a = lock.shared().expect("shared");
        let b = lock.shared().expect("another shared");
        // A writer waits for both readers.
        let path = dir.path().join("t.lock");
        let probe = File::open(&path).expect("open");
        assert!(matches!(probe.try_lock(), Err(std::fs::TryLockError::WouldBlock)));
        drop((a, b));
        probe.try_lock().expect("free once the readers are gone");
        drop(probe);
        let w = lock.exclusive().expect("exclusive");
        let probe = File::open(&path).expect("open");
        assert!(matches!(probe.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock)));
        // The same thread asking again (nested) is not blocked by itself.
        let nested = lock.exclusive().expect("nested");
        drop(nested);
        drop(w);
        assert!(TokenLock::new(None).exclusive().is_ok(), "no lock file: nothing to wait for");
    }
}
