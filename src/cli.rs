//! The operator CLI: argument definitions and dispatch.
//!
//! Every command prints a human summary, or with `--json` one JSON document on
//! stdout. Errors go to stderr (as `{"error": ...}` with `--json`) with a
//! non-zero exit code, and say what to do next.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use inkan_keystore::{KeyAlgorithm, Keystore, TokenInit};
use serde_json::{json, Value};

use crate::clock::{rfc3339, Clock, SystemClock};
use crate::config::Config;
use crate::keys::{self, KeyView, Purpose};
use crate::pki::profile::Qualification;
use crate::store::Store;
use crate::{audit, fixtures, users};

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
    Sign {
        /// The signer.
        user_id: String,
        /// The document.
        input: PathBuf,
        /// Where to write the signature (.p7s).
        #[arg(long, value_name = "OUT.p7s")]
        out: PathBuf,
        /// Envelope the document in the signature (default: detached).
        #[arg(long)]
        attached: bool,
    },
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

/// `inkan regcode ...`
#[derive(Debug, Subcommand)]
pub enum RegcodeCommand {
    /// Issue a registration URL and password for a user (replaces the user's previous code).
    Issue {
        /// The user.
        user_id: String,
        /// The password to print on the notice (at least 6 characters; default: 10 random digits).
        #[arg(long, conflicts_with = "birthdate")]
        password: Option<String>,
        /// Use the user's birth date as the password (YYYYMMDD; not printed back).
        #[arg(long)]
        birthdate: Option<String>,
        /// Lifetime: `30d`, `72h`, `90m` (default: `[fido] regcode_days`).
        #[arg(long)]
        expires: Option<String>,
        /// Also write the URL as a QR code (SVG) to this file.
        #[arg(long)]
        qr: Option<PathBuf>,
    },
    /// List codes (newest first).
    List {
        /// Only this user's.
        user_id: Option<String>,
    },
    /// Revoke a user's active code.
    Revoke {
        /// The user.
        user_id: String,
    },
}

/// `inkan device ...`
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Show a user's registered phone.
    Show {
        /// The user.
        user_id: String,
    },
    /// Remove a user's phone (lost or stolen): also ends the user's phone sessions.
    Remove {
        /// The user.
        user_id: String,
    },
}

/// `inkan user ...`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user.
    Add {
        /// User ID (本人ID), e.g. 999001-jpa.
        user_id: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// doctor, dentist or pharmacist.
        #[arg(long)]
        qualification: Qualification,
    },
    /// List users.
    List,
    /// Show a user with their keys.
    Show {
        /// User ID.
        user_id: String,
    },
    /// Disable a user: they can no longer sign.
    Disable {
        /// User ID.
        user_id: String,
    },
    /// Enable a disabled user.
    Enable {
        /// User ID.
        user_id: String,
    },
}

/// `inkan key ...`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate a user's first key pair in the token and write its CSR (state: pending).
    Generate {
        /// User ID.
        user_id: String,
        /// rsa2048 (default), rsa3072 or p256.
        #[arg(long, default_value = "rsa2048")]
        alg: KeyAlgorithm,
        /// Where to write the CSR (PEM).
        #[arg(long, value_name = "FILE")]
        csr_out: PathBuf,
    },
    /// HPKI card renewal: a next key generation, pending until its certificate is imported.
    Rotate {
        /// User ID.
        user_id: String,
        /// rsa2048 (default), rsa3072 or p256.
        #[arg(long, default_value = "rsa2048")]
        alg: KeyAlgorithm,
        /// Where to write the CSR (PEM).
        #[arg(long, value_name = "FILE")]
        csr_out: PathBuf,
    },
    /// Write the CSR of a pending key again.
    Csr {
        /// User ID.
        user_id: String,
        /// Generation (default: the pending one).
        #[arg(long)]
        generation: Option<i64>,
        /// Where to write the CSR (PEM).
        #[arg(long, value_name = "FILE")]
        csr_out: PathBuf,
    },
    /// Import the certificate of a pending key: activates it, retires the previous one.
    ImportCert {
        /// User ID.
        user_id: String,
        /// The certificate (PEM or DER).
        cert: PathBuf,
    },
    /// List keys (of one user, or all).
    List {
        /// User ID.
        user_id: Option<String>,
    },
    /// Retire a key generation: it signs no more.
    Retire {
        /// User ID.
        user_id: String,
        /// The generation to retire.
        #[arg(long)]
        generation: i64,
    },
    /// Show the protection attributes of a key in the token.
    Inspect {
        /// User ID.
        user_id: String,
        /// Generation (default: the active one).
        #[arg(long)]
        generation: Option<i64>,
    },
}

/// `inkan client ...`
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register a signing system; prints its client_id and secret (shown once).
    Add {
        /// Display name.
        #[arg(long)]
        name: String,
        /// Exact redirect URI (repeatable).
        #[arg(long = "redirect-uri", required = true)]
        redirect_uris: Vec<String>,
        /// Choose the client_id (default: generated).
        #[arg(long)]
        id: Option<String>,
    },
    /// List clients.
    List,
    /// Remove a client and end its sessions.
    Remove {
        /// client_id
        client_id: String,
    },
}

/// `inkan session ...`
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// List sessions not yet expired.
    List {
        /// Only this user's.
        user_id: Option<String>,
    },
    /// End a user's sessions, or everyone's.
    Revoke {
        /// The user.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        user_id: Option<String>,
        /// Every session of every user.
        #[arg(long)]
        all: bool,
    },
}

/// `inkan hpki ...`
#[derive(Debug, Subcommand)]
pub enum HpkiCommand {
    /// Map an HPKI card certificate (its issuer and serial) to a user.
    Map {
        /// The user.
        user_id: String,
        /// The card's certificate (PEM or DER).
        cert: PathBuf,
        /// Map every card of this issuer with the certificate's subject
        /// serialNumber (the registry number): renewed cards map too.
        #[arg(long)]
        by_subject: bool,
    },
    /// Remove a mapping.
    Unmap {
        /// The user.
        user_id: String,
        /// The card's certificate.
        cert: PathBuf,
        /// Remove the subject mapping (see `map --by-subject`).
        #[arg(long)]
        by_subject: bool,
    },
    /// List mappings.
    List {
        /// Only this user's.
        user_id: Option<String>,
    },
}

/// `inkan jpki ...`
#[derive(Debug, Subcommand)]
pub enum JpkiCommand {
    /// Link a My Number card certificate to a user.
    Link {
        /// The user.
        user_id: String,
        /// The card's user-authentication certificate (PEM or DER).
        cert: PathBuf,
    },
    /// Unlink a card (or, without a certificate, all of the user's cards).
    Unlink {
        /// The user.
        user_id: String,
        /// The card's certificate.
        cert: Option<PathBuf>,
    },
    /// List links.
    List {
        /// Only this user's.
        user_id: Option<String>,
    },
    /// Import a renewal list: CSV `old_issuer_der_hex,old_serial_hex,new_cert_base64_der` per line.
    ImportRenewals {
        /// The CSV file.
        file: PathBuf,
    },
}

/// `inkan audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of the whole log.
    Verify,
    /// Show the latest rows.
    Tail {
        /// Only this user's rows.
        #[arg(long)]
        user: Option<String>,
        /// How many rows.
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
}

/// `inkan dev ...`
#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Regenerate the fixture PKI (fixtures/pki) with new keys.
    Fixtures {
        /// Output directory.
        #[arg(long, default_value = "fixtures/pki")]
        out: PathBuf,
    },
    /// Issue a second certificate from a CSR with the fixture HPKI signing CA.
    IssueCert {
        /// The CSR (PEM or DER).
        #[arg(long)]
        csr: PathBuf,
        /// Where to write the certificate (PEM).
        #[arg(long)]
        out: PathBuf,
        /// The holder's qualification (hcRole).
        #[arg(long, default_value = "doctor")]
        qualification: Qualification,
        /// CA certificate.
        #[arg(long, default_value = "fixtures/pki/hpki-signing-ca.pem")]
        ca_cert: PathBuf,
        /// CA key.
        #[arg(long, default_value = "fixtures/pki/hpki-signing-ca.key")]
        ca_key: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 1825)]
        days: u64,
        /// Issue a certificate that expired yesterday (for tests).
        #[arg(long)]
        expired: bool,
    },
}

/// A command's result: JSON for scripts, text for people.
pub struct Output {
    /// The JSON document.
    pub json: Value,
    /// The text.
    pub text: String,
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

fn actor() -> String {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "operator".into());
    format!("cli:{user}")
}

/// Opens the store (creating the data directory).
fn store(config: &Config) -> Result<Store, CliError> {
    Store::open(&config.store_path()).map_err(|e| CliError {
        message: format!("cannot open the database {}: {e}", config.store_path().display()),
        code: 1,
    })
}

/// Opens the keystore.
fn keystore(config: &Config) -> Result<Keystore, CliError> {
    config.export_softhsm_conf();
    let ks_config = config.keystore()?;
    Keystore::open(ks_config).map_err(|e| {
        let hint = match &e {
            inkan_keystore::Error::LoginFailed { .. } => {
                " (check INKAN_TOKEN_USER_PIN or the pins file written by `inkan init`)"
            }
            inkan_keystore::Error::TokenUnavailable { .. } => " (run `inkan init`, or check [token] module and label)",
            _ => "",
        };
        CliError { message: format!("cannot use the token {:?}: {e}{hint}", config.token.label), code: 1 }
    })
}

fn write_file(path: &Path, contents: &[u8]) -> Result<(), CliError> {
    crate::config::write_atomic(path, contents)
        .map_err(|e| CliError { message: format!("cannot write {}: {e}", path.display()), code: 1 })
}

fn key_line(k: &KeyView) -> String {
    let mut line =
        format!("{}  gen {}  {:8} {:8} created {}", k.user_id, k.generation, k.algorithm, k.state, k.created_at);
    if let Some(serial) = &k.certificate_serial {
        line.push_str(&format!("  cert {serial}"));
        if let Some(na) = &k.certificate_not_after {
            line.push_str(&format!(" until {na}"));
        }
    }
    line
}

/// Runs a parsed command.
pub fn run(cli: Cli) -> Result<Output, CliError> {
    let config = Config::load(cli.config.as_deref())?;
    let serving = matches!(cli.command, Command::Serve { .. });
    let result = dispatch(cli, &config);
    if !serving && config.store_path().exists() {
        // Running servers re-read auth sessions (revocations, disabled users,
        // new keys, removed devices take effect with their next request).
        let epoch = crate::auth::epoch::path_for(&config.store_path());
        if let Err(e) = crate::auth::epoch::bump(&epoch) {
            eprintln!("warning: cannot update {}: {e}; a running server sees this change within 10 s", epoch.display());
        }
    }
    result
}

fn dispatch(cli: Cli, config: &Config) -> Result<Output, CliError> {
    let config = config.clone();
    let clock = SystemClock;
    let actor = actor();
    match cli.command {
        Command::Init => init(&config),
        Command::User(cmd) => user(&config, &clock, &actor, cmd),
        Command::Key(cmd) => key(&config, &clock, &actor, cmd),
        Command::Sign { user_id, input, out, attached } => {
            let mut store = store(&config)?;
            keys::signer(&store, &config, &user_id)?;
            if !input.is_file() {
                return Err(CliError { message: format!("{}: no such file", input.display()), code: 1 });
            }
            let ks = keystore(&config)?;
            let signed = keys::sign_file(&mut store, &ks, &config, &clock, &actor, &user_id, &input, &out, attached)?;
            Ok(Output {
                text: format!(
                    "signed {} as {} (key generation {}), {} signature written to {}\n  verify: openssl cms -verify -binary -inform DER -in {}{} -CAfile <(cat fixtures/pki/hpki-root.pem fixtures/pki/hpki-signing-ca.pem) -purpose any -out /dev/null",
                    input.display(),
                    signed.user_id,
                    signed.generation,
                    if attached { "attached" } else { "detached" },
                    signed.out,
                    signed.out,
                    if attached { String::new() } else { format!(" -content {}", input.display()) },
                ),
                json: serde_json::to_value(&signed)?,
            })
        }
        Command::Audit(AuditCommand::Verify) => {
            let store = store(&config)?;
            let v = audit::verify(store.conn())?;
            match &v.broken {
                None => Ok(Output {
                    text: format!("audit log intact: {} rows, hash chain verified", v.rows),
                    json: serde_json::to_value(&v)?,
                }),
                Some(b) => Err(CliError {
                    message: if cli.json {
                        serde_json::to_string(&v)?
                    } else {
                        format!("audit log broken at row {}: {} ({} rows before it verify)", b.seq, b.reason, v.rows)
                    },
                    code: 3,
                }),
            }
        }
        Command::Audit(AuditCommand::Tail { user, limit }) => {
            let store = store(&config)?;
            let rows = audit::tail(store.conn(), user.as_deref(), limit)?;
            let text = rows
                .iter()
                .map(|r| {
                    format!(
                        "#{} {} {} {} user={} gen={} {} {}",
                        r.seq,
                        rfc3339(r.at),
                        r.actor,
                        r.event,
                        r.user_id.as_deref().unwrap_or("-"),
                        r.generation.map(|g| g.to_string()).unwrap_or_else(|| "-".into()),
                        r.outcome,
                        r.digest.as_deref().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            Ok(Output { text, json: serde_json::to_value(&rows)? })
        }
        Command::Demo => fixtures::demo(&config, &clock),
        Command::Serve { demo } => {
            crate::server::serve(config, demo).map_err(|message| CliError { message, code: 1 })?;
            Ok(Output { text: String::new(), json: json!({ "stopped": true }) })
        }
        Command::Client(cmd) => client(&config, &clock, &actor, cmd),
        Command::Session(cmd) => session(&config, &clock, &actor, cmd),
        Command::Regcode(cmd) => regcode(&config, &clock, &actor, cmd),
        Command::Device(cmd) => device(&config, &clock, &actor, cmd),
        Command::Hpki(cmd) => hpki(&config, &clock, &actor, cmd),
        Command::Jpki(cmd) => jpki(&config, &clock, &actor, cmd),
        Command::Dev(DevCommand::Fixtures { out }) => {
            let files = fixtures::generate(&out, &clock)?;
            Ok(Output {
                text: format!("wrote {} files to {}", files.len(), out.display()),
                json: json!({ "out": out, "files": files }),
            })
        }
        Command::Dev(DevCommand::IssueCert { csr, out, qualification, ca_cert, ca_key, days, expired }) => {
            let cert = fixtures::issue_from_csr_file(&csr, &ca_cert, &ca_key, qualification, days, expired, &clock)?;
            write_file(&out, crate::pki::to_pem("CERTIFICATE", &cert).as_bytes())?;
            Ok(Output { text: format!("certificate written to {}", out.display()), json: json!({ "out": out }) })
        }
    }
}

/// `inkan init` for a loaded configuration.
pub fn init(config: &Config) -> Result<Output, CliError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| CliError { message: format!("cannot create {}: {e}", config.data_dir.display()), code: 1 })?;
    let mut steps = Vec::new();
    if let Some(conf) = config.softhsm_conf() {
        if fixtures::write_softhsm_conf(&conf)? {
            steps.push(format!("SoftHSM configuration written to {}", conf.display()));
        }
    }
    config.export_softhsm_conf();
    let (so_pin, user_pin) = config.init_pins()?;
    let token = inkan_keystore::init_token(&config.token.module, &config.token.label, &so_pin, &user_pin)
        .map_err(|e| CliError { message: format!("cannot set up the token {:?}: {e}", config.token.label), code: 1 })?;
    steps.push(match token {
        TokenInit::Created => {
            format!("token {:?} created (PINs in {})", config.token.label, config.pins_path().display())
        }
        TokenInit::Existing => format!("token {:?} exists", config.token.label),
    });
    // Check the PIN works.
    keystore(config)?;
    store(config)?;
    steps.push(format!("database {} ready", config.store_path().display()));
    Ok(Output {
        text: steps.join("\n"),
        json: json!({
            "data_dir": config.data_dir,
            "database": config.store_path(),
            "token": config.token.label,
            "token_created": token == TokenInit::Created,
        }),
    })
}

fn user(config: &Config, clock: &dyn Clock, actor: &str, cmd: UserCommand) -> Result<Output, CliError> {
    let mut store = store(config)?;
    match cmd {
        UserCommand::Add { user_id, name, qualification } => {
            let u = users::add(&mut store, clock, actor, &user_id, &name, qualification)?;
            Ok(Output {
                text: format!(
                    "user {} ({}, {}) added\n  next: inkan key generate {} --csr-out {}.csr",
                    u.id, u.name, u.qualification, u.id, u.id
                ),
                json: serde_json::to_value(&u)?,
            })
        }
        UserCommand::List => {
            let list = store.users()?;
            let text = if list.is_empty() {
                "no users yet: add one with `inkan user add <USER_ID> --name <NAME> --qualification doctor`".into()
            } else {
                list.iter()
                    .map(|u| format!("{}  {}  {}  {}", u.id, u.qualification, u.status, u.name))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            Ok(Output { text, json: serde_json::to_value(&list)? })
        }
        UserCommand::Show { user_id } => {
            let u = users::get(&store, &user_id)?;
            let keys: Vec<KeyView> = store.keys(Some(&user_id))?.iter().map(KeyView::from).collect();
            let mut text =
                format!("{}  {}  {}  {}  created {}", u.id, u.name, u.qualification, u.status, rfc3339(u.created_at));
            for k in &keys {
                text.push_str("\n  ");
                text.push_str(&key_line(k));
            }
            Ok(Output { text, json: json!({ "user": u, "keys": keys }) })
        }
        UserCommand::Disable { user_id } => {
            let u = users::set_status(&mut store, clock, actor, &user_id, false)?;
            Ok(Output {
                text: format!("user {} disabled: signing refused from now on", u.id),
                json: serde_json::to_value(&u)?,
            })
        }
        UserCommand::Enable { user_id } => {
            let u = users::set_status(&mut store, clock, actor, &user_id, true)?;
            Ok(Output { text: format!("user {} enabled", u.id), json: serde_json::to_value(&u)? })
        }
    }
}

fn key(config: &Config, clock: &dyn Clock, actor: &str, cmd: KeyCommand) -> Result<Output, CliError> {
    let mut store = store(config)?;
    match cmd {
        KeyCommand::Generate { user_id, alg, csr_out } => {
            generate(config, &mut store, clock, actor, &user_id, alg, &csr_out, Purpose::First)
        }
        KeyCommand::Rotate { user_id, alg, csr_out } => {
            generate(config, &mut store, clock, actor, &user_id, alg, &csr_out, Purpose::Rotation)
        }
        KeyCommand::Csr { user_id, generation, csr_out } => {
            let pem = keys::csr(&store, &user_id, generation)?;
            write_file(&csr_out, pem.as_bytes())?;
            Ok(Output { text: format!("CSR written to {}", csr_out.display()), json: json!({ "csr_out": csr_out }) })
        }
        KeyCommand::ImportCert { user_id, cert } => {
            let k = keys::import_certificate(&mut store, config, clock, actor, &user_id, &cert)?;
            Ok(Output {
                text: format!(
                    "certificate imported: {} key generation {} is active\n  {}",
                    k.user_id,
                    k.generation,
                    key_line(&k)
                ),
                json: serde_json::to_value(&k)?,
            })
        }
        KeyCommand::List { user_id } => {
            if let Some(u) = &user_id {
                users::get(&store, u)?;
            }
            let keys: Vec<KeyView> = store.keys(user_id.as_deref())?.iter().map(KeyView::from).collect();
            let text = if keys.is_empty() {
                "no keys".into()
            } else {
                keys.iter().map(key_line).collect::<Vec<_>>().join("\n")
            };
            Ok(Output { text, json: serde_json::to_value(&keys)? })
        }
        KeyCommand::Retire { user_id, generation } => {
            let k = keys::retire(&mut store, clock, actor, &user_id, generation)?;
            Ok(Output {
                text: format!("{} key generation {} retired", k.user_id, k.generation),
                json: serde_json::to_value(&k)?,
            })
        }
        KeyCommand::Inspect { user_id, generation } => {
            users::get(&store, &user_id)?;
            let records = store.keys(Some(&user_id))?;
            let record = match generation {
                Some(g) => records.iter().find(|k| k.generation == g),
                None => records.iter().find(|k| k.state == "active"),
            }
            .ok_or_else(|| CliError {
                message: format!("no such key of {user_id}: see `inkan key list {user_id}`"),
                code: 1,
            })?;
            let ks = keystore(config)?;
            let p = ks.protection(&inkan_keystore::KeyRef::from_id(record.token_id.clone()))?;
            let json = json!({
                "user_id": user_id, "generation": record.generation,
                "sensitive": p.sensitive, "extractable": p.extractable,
                "always_sensitive": p.always_sensitive, "never_extractable": p.never_extractable,
                "sign": p.sign, "decrypt": p.decrypt, "unwrap": p.unwrap, "derive": p.derive,
            });
            Ok(Output { text: serde_json::to_string_pretty(&json)?, json })
        }
    }
}

fn client(config: &Config, clock: &dyn Clock, actor: &str, cmd: ClientCommand) -> Result<Output, CliError> {
    use crate::auth::clients;
    let mut store = store(config)?;
    match cmd {
        ClientCommand::Add { name, redirect_uris, id } => {
            let (c, secret) = clients::add(&mut store, clock, actor, &name, &redirect_uris, id.as_deref())?;
            Ok(Output {
                text: format!(
                    "client {} registered\n  client_id:     {}\n  client_secret: {}   (shown only now: store it in the signing system)\n  redirect URIs: {}",
                    c.name,
                    c.id,
                    secret,
                    c.redirect_uris.join(", ")
                ),
                json: json!({ "client_id": c.id, "client_secret": secret, "name": c.name, "redirect_uris": c.redirect_uris }),
            })
        }
        ClientCommand::List => {
            let list = clients::list(&store)?;
            let text = if list.is_empty() {
                "no clients: register one with `inkan client add --name <NAME> --redirect-uri <URI>`".into()
            } else {
                list.iter()
                    .map(|c| format!("{}  {}  {}", c.id, c.name, c.redirect_uris.join(" ")))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            Ok(Output { text, json: serde_json::to_value(&list)? })
        }
        ClientCommand::Remove { client_id } => {
            let ended = clients::remove(&mut store, clock, actor, &client_id)?;
            Ok(Output {
                text: format!("client {client_id} removed ({ended} session(s) ended)"),
                json: json!({ "client_id": client_id, "sessions_ended": ended }),
            })
        }
    }
}

fn session(config: &Config, clock: &dyn Clock, actor: &str, cmd: SessionCommand) -> Result<Output, CliError> {
    use crate::auth::session;
    let mut store = store(config)?;
    match cmd {
        SessionCommand::List { user_id } => {
            if let Some(u) = &user_id {
                users::get(&store, u)?;
            }
            let list = session::list(store.conn(), clock.now_ms(), user_id.as_deref())?;
            let text = if list.is_empty() {
                "no active sessions".into()
            } else {
                list.iter()
                    .map(|s| {
                        format!(
                            "{}  {}  {}  {}  login {}  until {}",
                            s.id, s.user_id, s.method, s.client_id, s.auth_time, s.expires_at
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            Ok(Output { text, json: serde_json::to_value(&list)? })
        }
        SessionCommand::Revoke { user_id, all } => {
            if let Some(u) = &user_id {
                users::get(&store, u)?;
            }
            let target = if all { None } else { user_id.as_deref() };
            let n = session::revoke(&mut store, clock.now_ms(), actor, target, None)?;
            Ok(Output { text: format!("{n} session(s) ended"), json: json!({ "sessions_ended": n }) })
        }
    }
}

/// Parses `30d`, `72h`, `90m`, `45s` into milliseconds.
fn parse_duration(text: &str) -> Result<i64, CliError> {
    let bad = || CliError { message: format!("{text:?} is not a duration: write e.g. 30d, 72h or 90m"), code: 2 };
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = number.parse().map_err(|_| bad())?;
    let unit_ms = match unit {
        "d" => 86_400_000,
        "h" => 3_600_000,
        "m" => 60_000,
        "s" => 1_000,
        _ => return Err(bad()),
    };
    n.checked_mul(unit_ms).filter(|ms| *ms > 0).ok_or_else(bad)
}

fn regcode(config: &Config, clock: &dyn Clock, actor: &str, cmd: RegcodeCommand) -> Result<Output, CliError> {
    use crate::fido::regcode::{self, Password};
    let mut store = store(config)?;
    let now = clock.now_ms();
    match cmd {
        RegcodeCommand::Issue { user_id, password, birthdate, expires, qr } => {
            let lifetime = match expires {
                Some(e) => parse_duration(&e)?,
                None => config.fido.regcode_days as i64 * 86_400_000,
            };
            let password = match (password, birthdate) {
                (Some(p), _) => Password::Given(p),
                (None, Some(d)) => Password::Birthdate(d),
                (None, None) => Password::Generate,
            };
            let issued =
                regcode::issue(&mut store, now, actor, &config.server.public_url, &user_id, password, lifetime)?;
            if let Some(path) = &qr {
                let code = qrcode::QrCode::new(issued.url.as_bytes())?;
                let svg = code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(240, 240).build();
                write_file(path, svg.as_bytes())?;
            }
            let mut text = format!("registration URL for {}:\n  {}\n", issued.user_id, issued.url);
            match &issued.password {
                Some(p) => text.push_str(&format!("password: {p}\n")),
                None => text.push_str("password: the user's birth date (YYYYMMDD)\n"),
            }
            text.push_str(&format!("valid until {}; any earlier code of this user no longer works", issued.expires_at));
            if let Some(path) = &qr {
                text.push_str(&format!("\nQR code written to {}", path.display()));
            }
            let mut json = serde_json::to_value(&issued)?;
            json["qr"] = json!(qr);
            Ok(Output { text, json })
        }
        RegcodeCommand::List { user_id } => {
            if let Some(u) = &user_id {
                users::get(&store, u)?;
            }
            let list = regcode::list(&store, now, user_id.as_deref())?;
            let text = if list.is_empty() {
                "no registration codes".into()
            } else {
                list.iter()
                    .map(|c| {
                        format!(
                            "#{}  {}  {:8}  wrong passwords {}  issued {}  until {}",
                            c.id, c.user_id, c.status, c.failures, c.issued_at, c.expires_at
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            Ok(Output { text, json: serde_json::to_value(&list)? })
        }
        RegcodeCommand::Revoke { user_id } => {
            let revoked = regcode::revoke(&mut store, now, actor, &user_id)?;
            let text = if revoked {
                format!("the registration code of {user_id} is revoked")
            } else {
                format!("{user_id} has no active registration code (issue one with `inkan regcode issue {user_id}`)")
            };
            Ok(Output { text, json: json!({ "user_id": user_id, "revoked": revoked }) })
        }
    }
}

fn device(config: &Config, clock: &dyn Clock, actor: &str, cmd: DeviceCommand) -> Result<Output, CliError> {
    use crate::fido::device;
    let mut store = store(config)?;
    match cmd {
        DeviceCommand::Show { user_id } => {
            users::get(&store, &user_id)?;
            let view = device::get(store.conn(), &user_id)?.map(|d| d.view());
            let text = match &view {
                Some(d) => format!(
                    "{}  {}  registered {}  last used {}  credential {}",
                    d.user_id,
                    d.label,
                    d.registered_at,
                    d.last_used_at.as_deref().unwrap_or("never"),
                    d.credential_id
                ),
                None => format!("{user_id} has no registered phone (issue a code: `inkan regcode issue {user_id}`)"),
            };
            Ok(Output { text, json: json!({ "user_id": user_id, "device": view }) })
        }
        DeviceCommand::Remove { user_id } => {
            users::get(&store, &user_id)?;
            let removed = device::remove(&mut store, clock.now_ms(), actor, &user_id)?;
            let text = match &removed {
                Some(d) => format!(
                    "removed the phone of {user_id} ({}); its phone sessions are ended. To register a new one: `inkan regcode issue {user_id}`",
                    d.label
                ),
                None => format!("{user_id} has no registered phone: nothing removed"),
            };
            Ok(Output { text, json: json!({ "user_id": user_id, "removed": removed }) })
        }
    }
}

fn card_lines(list: &[crate::auth::cards::CardView]) -> String {
    if list.is_empty() {
        return "none".into();
    }
    list.iter()
        .map(|c| {
            format!("{}  serial {}  {}  (issuer {}, until {})", c.user_id, c.serial, c.subject, c.issuer, c.not_after)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn hpki(config: &Config, clock: &dyn Clock, actor: &str, cmd: HpkiCommand) -> Result<Output, CliError> {
    use crate::auth::cards;
    let mut store = store(config)?;
    match cmd {
        HpkiCommand::Map { user_id, cert, by_subject: true } => {
            let der = crate::pki::read_certificates(&cert)?.into_iter().next().ok_or_else(|| CliError {
                message: format!("{}: no certificate in the file", cert.display()),
                code: 1,
            })?;
            let v = cards::hpki_map_subject(&mut store, clock, actor, &user_id, &der)?;
            Ok(Output {
                text: format!("HPKI cards with {} (issuer {}) mapped to {}", v.subject, v.issuer, v.user_id),
                json: serde_json::to_value(&v)?,
            })
        }
        HpkiCommand::Map { user_id, cert, by_subject: false } => {
            let v = cards::hpki_map_file(&mut store, clock, actor, &user_id, &cert)?;
            Ok(Output {
                text: format!("HPKI card {} mapped to {}", v.subject, v.user_id),
                json: serde_json::to_value(&v)?,
            })
        }
        HpkiCommand::Unmap { user_id, cert, by_subject } => {
            if by_subject {
                let der = crate::pki::read_certificates(&cert)?.into_iter().next().ok_or_else(|| CliError {
                    message: format!("{}: no certificate in the file", cert.display()),
                    code: 1,
                })?;
                cards::hpki_unmap_subject(&mut store, clock, actor, &user_id, &der)?;
            } else {
                cards::hpki_unmap(&mut store, clock, actor, &user_id, &cert)?;
            }
            Ok(Output { text: format!("HPKI card unmapped from {user_id}"), json: json!({ "user_id": user_id }) })
        }
        HpkiCommand::List { user_id } => {
            let list = cards::list(store.conn(), "hpki", user_id.as_deref())?;
            Ok(Output { text: card_lines(&list), json: serde_json::to_value(&list)? })
        }
    }
}

fn jpki(config: &Config, clock: &dyn Clock, actor: &str, cmd: JpkiCommand) -> Result<Output, CliError> {
    use crate::auth::cards;
    let mut store = store(config)?;
    match cmd {
        JpkiCommand::Link { user_id, cert } => {
            let v = cards::jpki_link_file(&mut store, clock, actor, &user_id, &cert)?;
            Ok(Output {
                text: format!("My Number card (serial {}) linked to {}", v.serial, v.user_id),
                json: serde_json::to_value(&v)?,
            })
        }
        JpkiCommand::Unlink { user_id, cert } => {
            let n = cards::jpki_unlink(&mut store, clock, actor, &user_id, cert.as_deref())?;
            Ok(Output {
                text: format!("{n} My Number card link(s) of {user_id} removed"),
                json: json!({ "user_id": user_id, "removed": n }),
            })
        }
        JpkiCommand::List { user_id } => {
            let list = cards::list(store.conn(), "jpki", user_id.as_deref())?;
            Ok(Output { text: card_lines(&list), json: serde_json::to_value(&list)? })
        }
        JpkiCommand::ImportRenewals { file } => {
            let csv = std::fs::read_to_string(&file)
                .map_err(|e| CliError { message: format!("cannot read {}: {e}", file.display()), code: 1 })?;
            let quiet = std::env::var_os("INKAN_NO_PROGRESS").is_some();
            let outcomes = cards::import_renewals(&mut store, clock, actor, &csv, |i, n| {
                if !quiet && (i == n || i % 100 == 0) {
                    eprint!("\rrenewals: {i}/{n}");
                    if i == n {
                        eprintln!();
                    }
                }
            })?;
            let moved = outcomes.iter().filter(|o| o.outcome == "moved").count();
            let problems: Vec<String> = outcomes
                .iter()
                .filter(|o| o.outcome != "moved")
                .map(|o| format!("  line {}: {}", o.line, o.outcome))
                .collect();
            Ok(Output {
                text: format!(
                    "{moved} link(s) moved to renewed certificates{}{}",
                    if problems.is_empty() { "" } else { "\n" },
                    problems.join("\n")
                ),
                json: json!({ "moved": moved, "lines": outcomes }),
            })
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn generate(
    config: &Config,
    store: &mut Store,
    clock: &dyn Clock,
    actor: &str,
    user_id: &str,
    alg: KeyAlgorithm,
    csr_out: &Path,
    purpose: Purpose,
) -> Result<Output, CliError> {
    // Refuse early, before touching the token, when the user does not exist.
    users::get(store, user_id)?;
    let ks = keystore(config)?;
    let g = keys::generate(store, &ks, clock, actor, user_id, alg, purpose)?;
    write_file(csr_out, g.csr_pem.as_bytes())?;
    Ok(Output {
        text: format!(
            "{} key generation {} ({}) generated in the token, pending its certificate\n  CSR written to {}\n  next: have the HPKI CA issue a certificate, then `inkan key import-cert {} <CERT.pem>`",
            g.key.user_id,
            g.key.generation,
            g.key.algorithm,
            csr_out.display(),
            g.key.user_id
        ),
        json: json!({ "key": g.key, "csr_out": csr_out, "orphans_removed": g.orphans_removed }),
    })
}
