//! The operator CLI: the top-level commands and what they share. Each command
//! group is a file of its own (`cli/user.rs`, `cli/key.rs`, ...) with its
//! arguments and its handler, which calls the domain and renders.
//!
//! Every command prints a human summary, or with `--json` one JSON document on
//! stdout. Errors go to stderr (as `{"error": ...}` with `--json`) with a
//! non-zero exit code, and say what to do next.

mod audit;
mod backup;
mod client;
mod config;
mod context;
mod csv;
mod dev;
mod device;
mod extend;
mod hpki;
mod jpki;
mod kek;
mod key;
mod progress;
mod regcode;
mod session;
mod setup;
mod sign;
mod user;
mod verify;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::clock::SystemClock;
use crate::config::Config;

pub use audit::AuditCommand;
pub use client::ClientCommand;
pub use config::ConfigCommand;
pub use dev::DevCommand;
pub use device::DeviceCommand;
pub use hpki::HpkiCommand;
pub use jpki::JpkiCommand;
pub use kek::KekCommand;
pub use key::KeyCommand;
pub use regcode::RegcodeCommand;
pub use session::SessionCommand;
pub use user::UserCommand;

pub use context::{CliError, Ctx, Output};

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
    /// The configuration: every setting explained (`example`), a
    /// configuration checked (`check`).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage users' second keys and certificates.
    #[command(subcommand)]
    Key(KeyCommand),
    /// The token's key-encryption keys (status, rotation).
    #[command(subcommand)]
    Kek(KekCommand),
    /// Validate a signature: an e-prescription XML document (XAdES) or a
    /// CMS signature (CAdES, DER or PEM). Exit status: 0 TOTAL_PASSED,
    /// 1 TOTAL_FAILED, 2 INDETERMINATE, 3 not validated (an error).
    Verify(verify::VerifyArgs),
    /// Extend a signature made earlier to a higher level (B-T, B-LT,
    /// B-LTA), or renew its archive time-stamp (B-LTA again): time-stamps
    /// from `[tsa]`, CRLs from `[pki] crls` or the distribution points. No
    /// signing key is used; the signature must validate now.
    Extend(extend::ExtendArgs),
    /// Sign a file locally with a user's active key (CAdES-BES, DER).
    Sign(sign::SignArgs),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Copy this node's data while it runs (the database at one instant,
    /// SoftHSM's token, the PINs file, a manifest with their hashes).
    Backup(backup::BackupArgs),
    /// Make the configured data directory (new or empty) from a backup,
    /// end the auth sessions it held, and verify its audit log.
    Restore(backup::RestoreArgs),
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

/// Runs a parsed command.
pub fn run(cli: Cli) -> Result<Output, CliError> {
    if let Command::Config(ConfigCommand::Example) = cli.command {
        return config::example();
    }
    let config = Config::load(cli.config.as_deref())?;
    crate::logging::init(config.log.format);
    if let Command::Config(ConfigCommand::Check) = cli.command {
        return config::check(&config, cli.config.as_deref());
    }
    // SoftHSM reads its configuration from the environment: set it while this
    // process has one thread.
    config.export_softhsm_conf();
    if let Command::Serve { demo } = cli.command {
        crate::server::serve(config, demo)?;
        return Ok(Output::new("", serde_json::json!({ "stopped": true })));
    }
    let ctx = Ctx {
        config,
        clock: Arc::new(SystemClock),
        actor: context::actor(),
        json: cli.json,
        opened: Default::default(),
    };
    // Commands read and write the store through its (async) seam; the CLI
    // runs them one at a time on a runtime of its own.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // Where the audit chain stood, sealed, before the command (none: no
    // database yet, or rows nobody sealed, which this command leaves alone).
    let sealed_before = match &cli.command {
        Command::Audit(_)
        | Command::Dev(_)
        | Command::Verify(_)
        | Command::Config(_)
        | Command::Backup(_)
        | Command::Restore(_) => None,
        _ => runtime.block_on(ctx.sealed_head()),
    };
    let result = runtime.block_on(dispatch(&ctx, cli.command));
    if let (true, Some(anchor)) = (ctx.opened.load(std::sync::atomic::Ordering::Relaxed), sealed_before) {
        // The rows this command wrote, sealed by the token now (no token
        // call if it wrote none).
        if let Err(e) = runtime.block_on(ctx.seal_after(anchor)) {
            eprintln!(
                "warning: the audit rows of this command are not sealed ({}); a running server seals them if the log checks out against the token's record (`inkan audit verify` tells)",
                e.message
            );
        }
    }
    if ctx.opened.load(std::sync::atomic::Ordering::Relaxed) {
        // Running servers re-read auth sessions (revocations, disabled users,
        // new keys, removed devices take effect with their next request; on
        // PostgreSQL, within a second on every node).
        if let Err(e) = runtime.block_on(crate::setup::invalidation(&ctx.config).bump()) {
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
        Command::Init => setup::init(ctx).await,
        Command::Demo => setup::demo(ctx).await,
        Command::Serve { .. } | Command::Config(_) => {
            Err(CliError { message: "serve and config run outside the CLI's runtime".into(), code: 1 })
        }
        Command::User(cmd) => user::run(ctx, cmd).await,
        Command::Key(cmd) => key::run(ctx, cmd).await,
        Command::Kek(cmd) => kek::run(ctx, cmd).await,
        Command::Sign(args) => sign::run(ctx, args).await,
        Command::Verify(args) => verify::run(ctx, args),
        Command::Extend(args) => extend::run(ctx, args).await,
        Command::Audit(cmd) => audit::run(ctx, cmd).await,
        Command::Client(cmd) => client::run(ctx, cmd).await,
        Command::Session(cmd) => session::run(ctx, cmd).await,
        Command::Hpki(cmd) => hpki::run(ctx, cmd).await,
        Command::Jpki(cmd) => jpki::run(ctx, cmd).await,
        Command::Regcode(cmd) => regcode::run(ctx, cmd).await,
        Command::Device(cmd) => device::run(ctx, cmd).await,
        Command::Dev(cmd) => dev::run(ctx, cmd),
        Command::Backup(args) => backup::backup(ctx, args).await,
        Command::Restore(args) => backup::restore(ctx, args).await,
    }
}
