//! What every command handler gets and gives: the context (configuration,
//! clock, actor, the store and the token on demand), the output, the error.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::Value;

use crate::clock::Clock;
use crate::config::Config;
use crate::seam::Transactions;
use crate::signing::{AuditSink, Signing};
use crate::store::{Store, Tx};

/// A command's result: JSON for scripts, text for people, and the exit
/// status (0 but for a command whose answer is a verdict: `inkan verify`).
pub struct Output {
    /// The JSON document.
    pub json: Value,
    /// The text.
    pub text: String,
    /// The exit status.
    pub code: i32,
}

impl Output {
    /// An output from its text and JSON.
    pub fn new(text: impl Into<String>, json: Value) -> Output {
        Output { text: text.into(), json, code: 0 }
    }
}

/// A CLI failure: the message (no secrets) and the exit code.
#[derive(Debug)]
pub struct CliError {
    /// What went wrong and what to do.
    pub message: String,
    /// Exit code.
    pub code: i32,
}

impl<E: std::fmt::Display> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError { message: e.to_string(), code: 1 }
    }
}

/// What every command handler gets.
pub struct Ctx {
    /// The configuration.
    pub config: Config,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Who acts, for the audit log: `cli:<os user>`.
    pub actor: String,
    /// Whether `--json` was given.
    pub json: bool,
    /// Whether the command opened the store (then running servers are told
    /// to re-read auth sessions afterwards).
    pub opened: AtomicBool,
}

impl Ctx {
    /// The store (opened, created and migrated as needed).
    pub async fn store(&self) -> Result<Arc<dyn Store>, CliError> {
        // Only `inkan init` makes a database: a command run in the wrong
        // directory says so instead of working on a new, empty one.
        crate::setup::require_database(&self.config)?;
        self.opened.store(true, Ordering::Relaxed);
        Ok(crate::setup::open_store(&self.config).await?)
    }

    /// The audit chain's head if it is sealed, before a command runs.
    pub async fn sealed_head(&self) -> Option<(i64, Vec<u8>)> {
        crate::setup::require_database(&self.config).ok()?;
        let store = crate::setup::open_store(&self.config).await.ok()?;
        crate::audit::seal::sealed_head(store.as_ref()).await.ok().flatten()
    }

    /// Seals the rows a command wrote after the sealed head `anchor` (opens
    /// the token only if it wrote some).
    pub async fn seal_after(&self, (seq, hash): (i64, Vec<u8>)) -> Result<(), CliError> {
        let store = self.store().await?;
        if crate::audit::seal::needs_seal(store.as_ref()).await? {
            let keystore = self.keystore()?;
            let anchor = if seq > 0 { crate::audit::seal::Anchor::at(seq, hash) } else { Default::default() };
            crate::audit::seal::seal_head(store.as_ref(), &keystore, &anchor, self.now_ms()).await?;
        }
        Ok(())
    }

    /// The token.
    pub fn keystore(&self) -> Result<crate::keystore::Keystore, CliError> {
        Ok(crate::setup::open_keystore(&self.config)?)
    }

    /// The signing pipeline over `store` and the token; audit rows are
    /// committed one request at a time.
    pub fn signing(&self, store: &Arc<dyn Store>) -> Result<Signing<dyn Tx>, CliError> {
        Ok(Signing::new(
            &self.config,
            Arc::new(self.keystore()?),
            Arc::clone(store) as Arc<dyn Transactions<dyn Tx>>,
            store.sads(),
            Arc::clone(&self.clock),
            AuditSink::Direct,
            Default::default(),
        )?)
    }

    /// Now, Unix ms.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

/// The audit log's name for the operator: `cli:<os user>`.
pub fn actor() -> String {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "operator".into());
    format!("cli:{user}")
}

/// Writes a file atomically, with an error that names it.
pub fn write_file(path: &Path, contents: &[u8]) -> Result<(), CliError> {
    write_atomic(path, contents)
        .map_err(|e| CliError { message: format!("cannot write {}: {e}", path.display()), code: 1 })
}

/// The first certificate in a file (PEM or DER).
pub fn read_certificate(path: &Path) -> Result<Vec<u8>, CliError> {
    crate::pki::read_certificates(path)?
        .into_iter()
        .next()
        .ok_or_else(|| CliError { message: format!("{}: no certificate in the file", path.display()), code: 1 })
}

/// Lines of a list, or `empty` when there are none.
pub fn lines<T>(items: &[T], empty: &str, line: impl Fn(&T) -> String) -> String {
    if items.is_empty() {
        empty.to_owned()
    } else {
        items.iter().map(line).collect::<Vec<_>>().join("\n")
    }
}

/// Writes a file atomically (temp file in the same directory + fsync + rename).
fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
