//! The auth epoch: SQLite's [`Invalidation`]. A small file next to the
//! database that a process replaces (a new random value, written and renamed
//! into place) after a change that may affect a live auth session: a revoked
//! session, a disabled user, a new active key, a removed device. The server
//! keeps auth sessions in memory and checks the file per request; when it
//! changed, the cache is emptied. A revocation by `inkan session revoke` in
//! another process thus takes effect with the next request, without a database
//! read per request. The file must be on a local file system: the check
//! compares the file's device and inode.
//!
//! The server checks through a [`Watcher`], which keeps the file it last read
//! open and asks per request only whether the path still names that file (one
//! `stat`, compared by device and inode): `bump` renames a new file over it, so
//! from that moment on the path names another inode, and the next request reads
//! the new value. An inode number cannot be reused while the old file is held
//! open, and unlike a link count this also holds when the file has other links
//! or an NFS client keeps the replaced file under another name. Without a
//! watcher, the value is compared ([`stamp`]); file times are too coarse.

use std::path::{Path, PathBuf};

use crate::auth::sessions::{Invalidation, Stamp};
use crate::seam::StoreError;

/// The epoch file of a database.
pub fn path_for(store_path: &Path) -> PathBuf {
    let mut name = store_path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".auth-epoch");
    store_path.with_file_name(name)
}

/// The file's current value; `None` if it cannot be read (then nothing may be cached).
pub fn stamp(path: &Path) -> Option<Stamp> {
    read_stamp(&mut std::fs::File::open(path).ok()?)
}

/// Reads the epoch file once per change: holds it open and returns the value
/// read from it for as long as the path names that file.
#[derive(Debug)]
pub struct Watcher {
    path: PathBuf,
    open: std::sync::Mutex<Option<Read>>,
}

/// The file a [`Watcher`] read last.
#[derive(Debug)]
struct Read {
    /// Kept open, so that its inode number stays its own.
    _file: std::fs::File,
    /// (device, inode).
    id: (u64, u64),
    value: Stamp,
}

impl Watcher {
    /// Watches the epoch file at `path` (which need not exist yet).
    pub fn new(path: PathBuf) -> Watcher {
        Watcher { path, open: std::sync::Mutex::new(None) }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current value, as [`stamp`] would read it; `None` if it cannot be read.
    pub fn stamp(&self) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::fs::metadata(&self.path).ok().map(|m| (m.dev(), m.ino()));
        if let (Some(read), Some(now)) = (open.as_ref(), now) {
            // Still the same file (a file edited in place is not how the epoch
            // changes: see `bump`).
            if read.id == now {
                return Some(read.value.clone());
            }
        }
        *open = None;
        let mut file = std::fs::File::open(&self.path).ok()?;
        let meta = file.metadata().ok()?;
        let stamp = read_stamp(&mut file)?;
        *open = Some(Read { _file: file, id: (meta.dev(), meta.ino()), value: stamp.clone() });
        Some(stamp)
    }
}

/// The epoch file of a database, watched.
#[derive(Debug)]
pub struct EpochFile(Watcher);

impl EpochFile {
    /// The epoch file at `path` (which need not exist yet).
    pub fn new(path: PathBuf) -> EpochFile {
        EpochFile(Watcher::new(path))
    }
}

#[async_trait::async_trait]
impl Invalidation for EpochFile {
    fn stamp(&self) -> Option<Stamp> {
        self.0.stamp()
    }

    async fn bump(&self) -> Result<(), StoreError> {
        bump(self.0.path())
            .map_err(|e| StoreError::Unavailable(format!("cannot update {}: {e}", self.0.path().display())))
    }
}

fn read_stamp(file: &mut std::fs::File) -> Option<Stamp> {
    use std::io::Read;
    let mut value = String::new();
    file.read_to_string(&mut value).ok()?;
    Some(value).filter(|v| !v.is_empty()).map(|v| Stamp(v.into()))
}

/// Replaces the file: every process that caches auth sessions of this
/// database drops them before its next request.
pub fn bump(path: &Path) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, format!("{}\n", crate::auth::random_token()))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bump_changes_the_stamp() {
        let dir = tempfile::tempdir().expect("dir");
        let path = path_for(&dir.path().join("inkan.db"));
        assert!(path.ends_with("inkan.db.auth-epoch"));
        assert_eq!(stamp(&path), None);
        bump(&path).expect("bump");
        let first = stamp(&path).expect("stamp");
        for _ in 0..20 {
            bump(&path).expect("bump");
            assert_ne!(stamp(&path).expect("stamp"), first, "a new value each time, even within one clock tick");
        }
    }

    #[test]
    fn the_watcher_sees_every_bump_at_once() {
        let dir = tempfile::tempdir().expect("dir");
        let path = path_for(&dir.path().join("inkan.db"));
        let watcher = Watcher::new(path.clone());
        assert_eq!(watcher.stamp(), None, "no file yet");
        bump(&path).expect("bump");
        let mut seen = watcher.stamp().expect("stamp");
        assert_eq!(Some(&seen), stamp(&path).as_ref());
        assert_eq!(watcher.stamp(), Some(seen.clone()), "unchanged while the file is");
        for _ in 0..20 {
            bump(&path).expect("bump");
            let now = watcher.stamp().expect("stamp");
            assert_ne!(now, seen, "the next read after a bump sees it");
            assert_eq!(Some(&now), stamp(&path).as_ref());
            seen = now;
        }
        // A second link to the file (a backup tool's hard link) must not hide a bump.
        let link = dir.path().join("epoch-backup");
        std::fs::hard_link(&path, &link).expect("link");
        bump(&path).expect("bump");
        let now = watcher.stamp().expect("stamp");
        assert_ne!(now, seen, "a bump is seen although the old file is still linked elsewhere");
        seen = now;
        std::fs::remove_file(&path).expect("rm");
        assert_eq!(watcher.stamp(), None, "a deleted file: nothing may be cached");
        bump(&path).expect("bump");
        assert!(watcher.stamp().is_some_and(|s| s != seen));
    }
}
