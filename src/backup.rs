//! Backups of a node's data while it runs, and restores from them into a new
//! data directory.
//!
//! A backup is a directory: the database as it stood at one instant (SQLite's
//! `VACUUM INTO`, one read transaction while writers go on), a copy of
//! SoftHSM's token directory, the PINs file, and `manifest.json` (written
//! last: a backup without it is incomplete) with every file's size and
//! SHA-256. The token's files are copied, and the database after them, while
//! the token lock is held shared: no process writes the token meanwhile (key
//! generation, the audit seals' record), so the database is never older than
//! the token's copy: every key and every seal the token records is in it.
//!
//! What this does not copy: a database that is not a file (PostgreSQL: the
//! manifest says what to run instead), and a token that is not SoftHSM's (an
//! HSM keeps its keys and key-encryption keys; with wrapped keys, the store
//! holds every user's key and the HSM's own backup holds the KEK).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::store::{Snapshot, Store};

/// The manifest's name in a backup.
pub const MANIFEST: &str = "manifest.json";
/// What the manifest's `format` says.
pub const FORMAT: &str = "inkan-backup-1";
/// The database's file in a backup.
const DATABASE: &str = "inkan.db";
/// The token directory's copy in a backup.
const TOKEN: &str = "token";
/// The PINs file's copy in a backup.
const PINS: &str = "token-pins.toml";
/// Written first and removed with the manifest's arrival: only a directory
/// holding it is an incomplete backup that may be cleared.
const INCOMPLETE: &str = ".inkan-backup-incomplete";

/// A backup's description (`manifest.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// When it was taken (RFC 3339).
    pub made_at: String,
    /// The inkan that took it.
    pub inkan_version: String,
    /// The store's kind: `sqlite` or `postgresql`.
    pub store: String,
    /// The database's file in the backup, or what to run instead (a
    /// database that is not a file).
    pub database: Database,
    /// The token: `softhsm` (its directory copied) or the module, not copied.
    pub token: String,
    /// The audit log had at least this many rows when the backup began.
    pub audit_rows_at_least: i64,
    /// Every file, with its size and SHA-256 (hex), paths relative to the backup.
    pub files: Vec<FileEntry>,
}

/// Where a backup's database is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Database {
    /// In this file of the backup.
    File(String),
    /// Not in the backup: what copies it.
    External(String),
}

/// One file of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the backup directory, `/`-separated.
    pub path: String,
    /// Its size.
    pub bytes: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Unavailable(format!("{what} {}: {e}", path.display()))
}

fn sha256_file(path: &Path) -> Result<(u64, String)> {
    let mut file = fs::File::open(path).map_err(|e| io("cannot read", path, e))?;
    let mut hasher = Sha256::new();
    let (mut bytes, mut buf) = (0u64, vec![0u8; 1 << 16]);
    loop {
        let n = std::io::Read::read(&mut file, &mut buf).map_err(|e| io("cannot read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((bytes, crate::encoding::hex(&hasher.finalize())))
}

/// Creates a directory only its owner may enter.
fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| io("cannot create", dir, e))
}

/// Copies a file, readable by its owner only, and syncs it.
fn copy_private(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut src = fs::File::open(from).map_err(|e| io("cannot read", from, e))?;
    let mut dst = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(|e| io("cannot create", to, e))?;
    std::io::copy(&mut src, &mut dst).map_err(|e| io("cannot write", to, e))?;
    dst.sync_all().map_err(|e| io("cannot sync", to, e))
}

/// Copies a directory tree (files and directories only).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    private_dir(to)?;
    let mut entries: Vec<_> = fs::read_dir(from)
        .map_err(|e| io("cannot read", from, e))?
        .collect::<std::io::Result<_>>()
        .map_err(|e| io("cannot read", from, e))?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let kind = entry.file_type().map_err(|e| io("cannot read", &entry.path(), e))?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            copy_private(&entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Every file under `dir`, relative to `base`, `/`-separated, sorted.
fn files_under(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(|e| io("cannot read", dir, e))? {
        let entry = entry.map_err(|e| io("cannot read", dir, e))?;
        let kind = entry.file_type().map_err(|e| io("cannot read", &entry.path(), e))?;
        if kind.is_dir() {
            files_under(base, &entry.path(), out)?;
        } else if kind.is_file() {
            out.push(entry.path().strip_prefix(base).map(Path::to_path_buf).unwrap_or_else(|_| entry.path()));
        }
    }
    out.sort();
    Ok(())
}

/// SoftHSM's token directory, as its configuration file names it.
fn softhsm_token_dir(conf: &Path) -> Result<PathBuf> {
    let text = fs::read_to_string(conf).map_err(|e| io("cannot read SoftHSM's configuration", conf, e))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("directories.tokendir"))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .map(|dir| PathBuf::from(dir.trim()))
        .next()
        .ok_or_else(|| Error::Invalid(format!("{} names no directories.tokendir", conf.display())))
}

/// Whether `dir` is a backup that was cut short: it carries the marker a
/// backup writes first, and nothing but what a backup writes (so that a
/// directory of other files is never cleared).
fn only_backup_files(dir: &Path) -> Result<bool> {
    if !dir.join(INCOMPLETE).exists() {
        return Ok(false);
    }
    for entry in fs::read_dir(dir).map_err(|e| io("cannot read", dir, e))? {
        let name = entry.map_err(|e| io("cannot read", dir, e))?.file_name();
        let ours = [DATABASE, TOKEN, PINS, INCOMPLETE].iter().any(|n| name == *n)
            || name.to_string_lossy().starts_with(MANIFEST);
        if !ours {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What [`backup`] did besides its manifest.
#[derive(Clone, Debug)]
pub struct Taken {
    /// The manifest written.
    pub manifest: Manifest,
    /// An incomplete backup in the directory was cleared first.
    pub replaced_incomplete: bool,
}

/// Takes a backup of `config`'s node into `out` (a new or empty directory,
/// or one holding an incomplete backup, which is taken again).
pub async fn backup(config: &Config, store: &dyn Store, out: &Path, now_ms: i64) -> Result<Taken> {
    let mut replaced_incomplete = false;
    if out.exists() {
        if out.join(MANIFEST).exists() {
            return Err(Error::Conflict(format!(
                "{} already holds a backup: choose a new directory for this one",
                out.display()
            )));
        }
        let empty = fs::read_dir(out).map_err(|e| io("cannot read", out, e))?.next().is_none();
        if !empty {
            if !only_backup_files(out)? {
                return Err(Error::Conflict(format!(
                    "{} is not empty and is not an incomplete backup: choose a new directory",
                    out.display()
                )));
            }
            // A backup killed before its manifest: taken again from the start.
            for name in [DATABASE, TOKEN, PINS, INCOMPLETE] {
                let p = out.join(name);
                let removed = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
                match removed {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io("cannot clear", &p, e)),
                    _ => {}
                }
            }
            replaced_incomplete = true;
        }
    }
    private_dir(out)?;
    {
        use std::os::unix::fs::PermissionsExt;
        // The owner's only, also a directory that existed (empty) before.
        fs::set_permissions(out, fs::Permissions::from_mode(0o700)).map_err(|e| io("cannot restrict", out, e))?;
    }
    fs::write(
        out.join(INCOMPLETE),
        b"an inkan backup being taken: cleared by the next run if this one was cut short\n",
    )
    .map_err(|e| io("cannot write", &out.join(INCOMPLETE), e))?;
    let audit_rows_at_least = {
        let mut tx = store.tx().read().await?;
        let head = crate::audit::AuditStore::audit_head(&mut *tx).await?;
        head.map_or(0, |(seq, _)| seq)
    };
    let softhsm = config.softhsm_conf().filter(|c| config.is_softhsm() && c.exists());
    let database = {
        // The token's files still while they are copied and the database
        // snapshot is taken (see the module).
        let _still = inkan_keystore::hold_token_files(config.token_lock_file().as_deref())
            .map_err(|e| Error::Unavailable(format!("cannot hold the token's files still: {e}")))?;
        if let Some(conf) = &softhsm {
            copy_tree(&softhsm_token_dir(conf)?, &out.join(TOKEN))?;
        }
        match store.snapshot(&out.join(DATABASE)).await? {
            Snapshot::Written => {
                use std::os::unix::fs::PermissionsExt;
                let file = out.join(DATABASE);
                fs::set_permissions(&file, fs::Permissions::from_mode(0o600))
                    .map_err(|e| io("cannot restrict", &file, e))?;
                Database::File(DATABASE.into())
            }
            Snapshot::External(how) => Database::External(how),
        }
    };
    let pins = config.pins_path();
    if pins.exists() {
        copy_private(&pins, &out.join(PINS))?;
    }
    let mut paths = Vec::new();
    files_under(out, out, &mut paths)?;
    let mut files = Vec::with_capacity(paths.len());
    for rel in paths.iter().filter(|p| !p.starts_with(MANIFEST) && !p.starts_with(INCOMPLETE)) {
        let (bytes, sha256) = sha256_file(&out.join(rel))?;
        files.push(FileEntry { path: rel.to_string_lossy().replace('\\', "/"), bytes, sha256 });
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        made_at: crate::clock::rfc3339_ms(now_ms),
        inkan_version: env!("CARGO_PKG_VERSION").into(),
        store: if config.store.url.is_some() { "postgresql" } else { "sqlite" }.into(),
        database,
        token: if softhsm.is_some() { "softhsm".into() } else { config.token.module.display().to_string() },
        audit_rows_at_least,
        files,
    };
    // The manifest last, whole or not at all: a backup without one is incomplete.
    let tmp = out.join(format!("{MANIFEST}.tmp"));
    let text = serde_json::to_vec_pretty(&manifest).map_err(Error::internal)?;
    {
        let mut f = fs::File::create(&tmp).map_err(|e| io("cannot create", &tmp, e))?;
        f.write_all(&text).map_err(|e| io("cannot write", &tmp, e))?;
        f.sync_all().map_err(|e| io("cannot sync", &tmp, e))?;
    }
    fs::rename(&tmp, out.join(MANIFEST)).map_err(|e| io("cannot write", &out.join(MANIFEST), e))?;
    fs::remove_file(out.join(INCOMPLETE)).map_err(|e| io("cannot remove", &out.join(INCOMPLETE), e))?;
    fs::File::open(out).and_then(|d| d.sync_all()).map_err(|e| io("cannot sync", out, e))?;
    Ok(Taken { manifest, replaced_incomplete })
}

/// Reads a backup's manifest and checks every file it lists (size and
/// SHA-256): a missing, shortened or altered file is refused by name.
pub fn check(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let text = fs::read(&path).map_err(|e| {
        Error::Invalid(format!(
            "{} is not a complete backup (its {MANIFEST} cannot be read: {e}); take a new one",
            dir.display()
        ))
    })?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| Error::Invalid(format!("{} is not a backup's manifest: {e}", path.display())))?;
    if manifest.format != FORMAT {
        return Err(Error::Invalid(format!(
            "{} is a backup of format {:?}; this inkan reads {FORMAT}",
            dir.display(),
            manifest.format
        )));
    }
    for f in &manifest.files {
        let rel = Path::new(&f.path);
        if rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            return Err(Error::Invalid(format!("the manifest names {} outside the backup", f.path)));
        }
        let (bytes, sha256) = sha256_file(&dir.join(rel))
            .map_err(|_| Error::Invalid(format!("the backup lacks {} (listed in its manifest)", f.path)))?;
        if (bytes, sha256.as_str()) != (f.bytes, f.sha256.as_str()) {
            return Err(Error::Invalid(format!(
                "{} in the backup is not what was backed up ({bytes} bytes, SHA-256 {sha256}; the manifest says {} bytes, {}): use another backup",
                f.path, f.bytes, f.sha256
            )));
        }
    }
    Ok(manifest)
}

/// What [`restore`] put where.
#[derive(Clone, Debug, Serialize)]
pub struct Restored {
    /// The backup's manifest.
    pub manifest: Manifest,
    /// The data directory made.
    pub data_dir: PathBuf,
    /// The database file written (none: restored by its server's tools).
    pub database: Option<PathBuf>,
    /// SoftHSM's configuration written, with the token's copy beside it.
    pub softhsm_conf: Option<PathBuf>,
}

/// Makes `config`'s data directory from the backup in `dir` (checked
/// first). The data directory must not exist or be empty, and the database
/// file and SoftHSM configuration must not exist: a restore never overwrites.
pub fn restore(config: &Config, dir: &Path) -> Result<Restored> {
    let manifest = check(dir)?;
    let data = &config.data_dir;
    if data.exists() && fs::read_dir(data).map_err(|e| io("cannot read", data, e))?.next().is_some() {
        return Err(Error::Conflict(format!(
            "the data directory {} is not empty: a restore makes a new one (move the old one away, or point \
             data_dir/INKAN_DATA_DIR elsewhere)",
            data.display()
        )));
    }
    let database = match &manifest.database {
        Database::File(name) if config.store.url.is_none() => Some((dir.join(name), config.store_path())),
        Database::File(_) => {
            return Err(Error::Invalid(
                "this backup holds a SQLite database, and this configuration uses PostgreSQL ([store] url)".into(),
            ))
        }
        Database::External(_) => None,
    };
    let softhsm = match (manifest.token.as_str(), config.softhsm_conf()) {
        ("softhsm", Some(conf)) if config.is_softhsm() => Some(conf),
        ("softhsm", _) => {
            return Err(Error::Invalid(
                "this backup holds a SoftHSM token, and this configuration's [token] module is not SoftHSM".into(),
            ))
        }
        _ => None,
    };
    for target in database.iter().map(|(_, to)| to).chain(softhsm.iter()) {
        if target.exists() {
            return Err(Error::Conflict(format!("{} exists: a restore never overwrites", target.display())));
        }
    }
    private_dir(data)?;
    if let Some(conf) = &softhsm {
        let tokens = conf.parent().unwrap_or(Path::new(".")).join("tokens");
        if dir.join(TOKEN).exists() {
            private_dir(conf.parent().unwrap_or(Path::new(".")))?;
            copy_tree(&dir.join(TOKEN), &tokens)?;
        }
        crate::setup::write_softhsm_conf(conf).map_err(|e| io("cannot write", conf, e))?;
    }
    if let Some((from, to)) = &database {
        if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
            private_dir(parent)?;
        }
        copy_private(from, to)?;
    }
    if dir.join(PINS).exists() && !config.pins_path().exists() {
        copy_private(&dir.join(PINS), &config.pins_path())?;
    }
    Ok(Restored { manifest, data_dir: data.clone(), database: database.map(|(_, to)| to), softhsm_conf: softhsm })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_directory_is_read_from_softhsms_configuration() {
        let dir = tempfile::tempdir().expect("tmp");
        let conf = dir.path().join("softhsm2.conf");
        fs::write(&conf, "# comment\ndirectories.tokendir = /srv/inkan/softhsm/tokens\nlog.level = ERROR\n")
            .expect("conf");
        assert_eq!(softhsm_token_dir(&conf).expect("dir"), PathBuf::from("/srv/inkan/softhsm/tokens"));
        fs::write(&conf, "log.level = ERROR\n").expect("conf");
        assert!(softhsm_token_dir(&conf).is_err());
    }

    #[test]
    fn a_checked_backup_names_what_is_missing_or_altered() {
        let dir = tempfile::tempdir().expect("tmp");
        fs::write(dir.path().join("a"), b"alpha").expect("a");
        let (bytes, sha256) = sha256_file(&dir.path().join("a")).expect("hash");
        let manifest = Manifest {
            format: FORMAT.into(),
            made_at: "2026-12-06T00:00:00Z".into(),
            inkan_version: "0".into(),
            store: "sqlite".into(),
            database: Database::File("a".into()),
            token: "softhsm".into(),
            audit_rows_at_least: 0,
            files: vec![FileEntry { path: "a".into(), bytes, sha256 }],
        };
        let write = |m: &Manifest| {
            fs::write(dir.path().join(MANIFEST), serde_json::to_vec(m).expect("json")).expect("manifest")
        };
        write(&manifest);
        assert!(check(dir.path()).is_ok());
        fs::write(dir.path().join("a"), b"alphA").expect("a");
        let e = check(dir.path()).expect_err("altered").to_string();
        assert!(e.contains("a in the backup is not what was backed up"), "{e}");
        let mut outside = manifest.clone();
        outside.files[0].path = "../a".into();
        write(&outside);
        assert!(check(dir.path()).expect_err("outside").to_string().contains("outside the backup"));
        fs::remove_file(dir.path().join("a")).expect("rm");
        write(&manifest);
        assert!(check(dir.path()).expect_err("missing").to_string().contains("lacks a"));
        fs::remove_file(dir.path().join(MANIFEST)).expect("rm");
        assert!(check(dir.path()).expect_err("none").to_string().contains("not a complete backup"));
    }
}
