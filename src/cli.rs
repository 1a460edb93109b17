//! The operator CLI: the top-level commands and what they share. Each command
//! group is a file of its own (`cli/user.rs`, `cli/key.rs`, ...) with its
//! arguments and its handler, which calls the domain and renders.
//!
//! Every command prints a human summary, or with `--json` one JSON document on
//! stdout. Errors go to stderr (as `{"error": ...}` with `--json`) with a
//! non-zero exit code, and say what to do next.

mod audit;
mod client;
mod dev;
mod device;
mod hpki;
mod jpki;
mod key;
mod regcode;
mod session;
mod setup;
mod sign;
mod user;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::store::Store;

pub use audit::AuditCommand;
pub use client::ClientCommand;
pub use dev::DevCommand;
pub use device::DeviceCommand;
pub use hpki::HpkiCommand;
pub use jpki::JpkiCommand;
pub use key::KeyCommand;
pub use regcode::RegcodeCommand;
pub use session::SessionCommand;
pub use user::UserCommand;

/// inkan: remote signing for doctors and pharmacists.
#[derive(Debug, Parser)]
#[command(name = "inkan", version, about, propagate_version = true)]
pub struct Cli {
    /// Configuration file (default: $INKAN_CONFIG, ./inkan.toml, or embedded defaults).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print one JSON document instead of text (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the data directory, the database and the SoftHSM token (idempotent).
    Init,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage users' second keys and certificates.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Sign a file locally with a user's active key (CAdES-BES, DER).
    Sign(sign::SignArgs),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Set up everything with demo users and sign a demo document.
    Demo,
    /// Run the HTTPS service.
    Serve {
        /// Embedded defaults plus demo users, card mappings and a demo client (prints its secret).
        #[arg(long)]
        demo: bool,
    },
    /// Signing systems (OpenID Connect clients).
    #[command(subcommand)]
    Client(ClientCommand),
    /// Auth sessions.
    #[command(subcommand)]
    Session(SessionCommand),
    /// HPKI card certificates mapped to users.
    #[command(subcommand)]
    Hpki(HpkiCommand),
    /// My Number card (JPKI) certificates linked to users.
    #[command(subcommand)]
    Jpki(JpkiCommand),
    /// Printed initial-registration codes (registration URL + password) for phones.
    #[command(subcommand)]
    Regcode(RegcodeCommand),
    /// Users' registered phones (FIDO2 passkeys).
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Development tools: the fixture PKI (test keys only, never production).
    #[command(subcommand)]
    Dev(DevCommand),
}

/// A command's result: JSON for scripts, text for people.
pub struct Output {
    /// The JSON document.
    pub json: Value,
    /// The text.
    pub text: String,
}

impl Output {
    /// An output from its text and JSON.
    pub fn new(text: impl Into<String>, json: Value) -> Output {
        Output { text: text.into(), json }
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
}

impl Ctx {
    /// The store (opened, created and migrated as needed).
    pub fn store(&self) -> Result<Arc<dyn Store>, CliError> {
        Ok(crate::setup::open_store(&self.config)?)
    }

    /// The token.
    pub fn keystore(&self) -> Result<crate::keystore::Keystore, CliError> {
        Ok(crate::setup::open_keystore(&self.config)?)
    }

    /// Now, Unix ms.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

fn actor() -> String {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "operator".into());
    format!("cli:{user}")
}

/// Writes a file atomically, with an error that names it.
pub fn write_file(path: &Path, contents: &[u8]) -> Result<(), CliError> {
    crate::config::write_atomic(path, contents)
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

/// Runs a parsed command.
pub fn run(cli: Cli) -> Result<Output, CliError> {
    let config = Config::load(cli.config.as_deref())?;
    if let Command::Serve { demo } = cli.command {
        crate::server::serve(config, demo)?;
        return Ok(Output::new("", serde_json::json!({ "stopped": true })));
    }
    let ctx = Ctx { config, clock: Arc::new(SystemClock), actor: actor(), json: cli.json };
    // Commands read and write the store through its (async) seam; the CLI
    // runs them one at a time on a runtime of its own.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = runtime.block_on(dispatch(&ctx, cli.command));
    if crate::store::exists(&ctx.config) {
        // Running servers re-read auth sessions (revocations, disabled users,
        // new keys, removed devices take effect with their next request).
        if let Err(e) = crate::store::open(&ctx.config).and_then(|s| s.invalidation().bump()) {
            eprintln!(
                "warning: cannot tell running servers about this change ({e}); they see it within {} s",
                crate::auth::sessions::CACHE_TTL_MS / 1000
            );
        }
    }
    result
}

async fn dispatch(ctx: &Ctx, command: Command) -> Result<Output, CliError> {
    match command {
        Command::Init => setup::init(ctx),
        Command::Demo => setup::demo(ctx).await,
        Command::Serve { .. } => Err(CliError { message: "serve runs outside the CLI's runtime".into(), code: 1 }),
        Command::User(cmd) => user::run(ctx, cmd).await,
        Command::Key(cmd) => key::run(ctx, cmd).await,
        Command::Sign(args) => sign::run(ctx, args).await,
        Command::Audit(cmd) => audit::run(ctx, cmd).await,
        Command::Client(cmd) => client::run(ctx, cmd).await,
        Command::Session(cmd) => session::run(ctx, cmd).await,
        Command::Hpki(cmd) => hpki::run(ctx, cmd).await,
        Command::Jpki(cmd) => jpki::run(ctx, cmd).await,
        Command::Regcode(cmd) => regcode::run(ctx, cmd).await,
        Command::Device(cmd) => device::run(ctx, cmd).await,
        Command::Dev(cmd) => dev::run(ctx, cmd),
    }
}
