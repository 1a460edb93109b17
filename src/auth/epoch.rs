//! The auth epoch: a small file next to the database that a process replaces
//! (a new random value, written and renamed into place) after a change that may
//! affect a live auth session: a revoked session, a disabled user, a new active
//! key, a removed device. The server keeps auth sessions in memory and reads the
//! file (a few bytes) per request; when it changed, the cache is emptied. The
//! value is compared rather than the file's inode or time: inodes are reused
//! and file times are coarse. A revocation by `inkan session revoke` in another process thus
//! takes effect with the next request, without a database read per request.

use std::path::{Path, PathBuf};

/// The epoch file of a database.
pub fn path_for(store_path: &Path) -> PathBuf {
    let mut name = store_path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".auth-epoch");
    store_path.with_file_name(name)
}

/// One version of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp(String);

/// The file's current value; `None` if it cannot be read (then nothing may be cached).
///
/// Read on every authenticated request, so with as few system calls as a file
/// allows: open, one read (the value is a few dozen bytes), close.
pub fn stamp(path: &Path) -> Option<Stamp> {
    use std::io::Read;
    let mut buf = [0u8; 128];
    let n = std::fs::File::open(path).ok()?.read(&mut buf).ok()?;
    // A value that fills the buffer was not written by `bump`: read it whole.
    if n == buf.len() {
        return std::fs::read_to_string(path).ok().filter(|v| !v.is_empty()).map(Stamp);
    }
    std::str::from_utf8(&buf[..n]).ok().filter(|v| !v.is_empty()).map(|v| Stamp(v.to_owned()))
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
}
