//! `inkan key ...`: the second-key lifecycle.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use inkan_keystore::KeyAlgorithm;
use serde_json::json;

use super::context::{lines, read_certificate, write_file, CliError, Ctx, Output};

pub(crate) mod bulk;
use crate::keys::{self, KeyView, Purpose};
use crate::users::KeyState;

/// `inkan key ...`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate a user's first key and write its CSR (state: pending); or,
    /// with --all-without-key, one for every enabled user without an active
    /// key, a CSR file per user in --csr-dir (run it again after a kill).
    Generate {
        /// User ID.
        #[arg(required_unless_present = "all_without_key", conflicts_with = "all_without_key")]
        user_id: Option<String>,
        /// rsa2048 (default), rsa3072 or p256.
        #[arg(long, default_value = "rsa2048")]
        alg: KeyAlgorithm,
        /// Where to write the CSR (PEM).
        #[arg(long, value_name = "FILE", required_unless_present = "all_without_key")]
        csr_out: Option<PathBuf>,
        /// Every enabled user without an active key (with --csr-dir).
        #[arg(long, requires = "csr_dir")]
        all_without_key: bool,
        /// The folder for the CSRs of a bulk run (`<USER_ID>.csr`).
        #[arg(long, value_name = "DIR", conflicts_with = "csr_out")]
        csr_dir: Option<PathBuf>,
    },
    /// HPKI card renewal: a next key generation, pending until its certificate
    /// is imported; or, with --users FILE or --all, for many users (a CA
    /// renewal), a CSR file per user in --csr-dir.
    Rotate {
        /// User ID.
        #[arg(required_unless_present_any = ["all", "users"], conflicts_with_all = ["all", "users"])]
        user_id: Option<String>,
        /// rsa2048 (default), rsa3072 or p256.
        #[arg(long, default_value = "rsa2048")]
        alg: KeyAlgorithm,
        /// Where to write the CSR (PEM).
        #[arg(long, value_name = "FILE", required_unless_present_any = ["all", "users"])]
        csr_out: Option<PathBuf>,
        /// A file of user IDs, one per line (the first field of a CSV line).
        #[arg(long, value_name = "FILE", conflicts_with = "all", requires = "csr_dir")]
        users: Option<PathBuf>,
        /// Every enabled user with an active key.
        #[arg(long, requires = "csr_dir")]
        all: bool,
        /// The folder for the CSRs of a bulk run (`<USER_ID>.csr`).
        #[arg(long, value_name = "DIR", conflicts_with = "csr_out")]
        csr_dir: Option<PathBuf>,
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
    /// Import the certificate of a pending key: activates it, retires the
    /// previous one. With --dir: every certificate in a folder, each matched
    /// to its user by the subject's serialNumber (else the file name).
    ImportCert {
        /// User ID.
        #[arg(required_unless_present = "dir", conflicts_with = "dir")]
        user_id: Option<String>,
        /// The certificate (PEM or DER).
        #[arg(required_unless_present = "dir")]
        cert: Option<PathBuf>,
        /// A folder of certificates (.pem, .crt, .cer, .der).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Import a certificate that does not fit the HPKI signing profile
        /// (keyUsage nonRepudiation, an HPKI signing policy, the user's
        /// hcRole), with warnings: for a CA under test only.
        #[arg(long)]
        danger_accept_nonconforming: bool,
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

/// One line per key, for people.
pub fn key_line(k: &KeyView) -> String {
    let mut line = format!(
        "{}  gen {}  {:8} {:8} {:7} created {}",
        k.user_id, k.generation, k.algorithm, k.state, k.storage, k.created_at
    );
    if let Some(serial) = &k.certificate_serial {
        line.push_str(&format!("  cert {serial}"));
        if let Some(na) = &k.certificate_not_after {
            line.push_str(&format!(" until {na}"));
        }
    }
    line
}

async fn generate(
    ctx: &Ctx,
    user_id: &str,
    alg: KeyAlgorithm,
    csr_out: &Path,
    purpose: Purpose,
) -> Result<Output, CliError> {
    let store = ctx.store().await?;
    // Refuse early, before touching the token, when the user does not exist.
    crate::users::get(store.as_ref(), user_id).await?;
    let ks = std::sync::Arc::new(ctx.keystore()?);
    let g = keys::generate(store.as_ref(), &ks, ctx.clock.as_ref(), &ctx.actor, user_id, alg, purpose).await?;
    write_file(csr_out, g.csr_pem.as_bytes())?;
    Ok(Output::new(
        format!(
            "{} key generation {} ({}) generated in the token, pending its certificate\n  CSR written to {}\n  next: have the HPKI CA issue a certificate, then `inkan key import-cert {} <CERT.pem>`",
            g.key.user_id,
            g.key.generation,
            g.key.algorithm,
            csr_out.display(),
            g.key.user_id
        ),
        json!({ "key": g.key, "csr_out": csr_out, "orphans_removed": g.orphans_removed }),
    ))
}

fn nonconforming(danger: bool) -> keys::Nonconforming {
    if danger {
        keys::Nonconforming::DangerAccept
    } else {
        keys::Nonconforming::Refuse
    }
}

/// Runs a `key` command.
pub async fn run(ctx: &Ctx, cmd: KeyCommand) -> Result<Output, CliError> {
    match cmd {
        KeyCommand::Generate { user_id: Some(user_id), alg, csr_out: Some(csr_out), .. } => {
            generate(ctx, &user_id, alg, &csr_out, Purpose::First).await
        }
        KeyCommand::Generate { alg, csr_dir: Some(dir), all_without_key: true, .. } => {
            let status = keys::status(ctx.store().await?.tx()).await?;
            let targets: Vec<_> = status.into_iter().filter(|k| !k.active).collect();
            bulk::generate(ctx, targets, alg, &dir, Purpose::First).await
        }
        KeyCommand::Rotate { user_id: Some(user_id), alg, csr_out: Some(csr_out), .. } => {
            generate(ctx, &user_id, alg, &csr_out, Purpose::Rotation).await
        }
        KeyCommand::Rotate { alg, users, all, csr_dir: Some(dir), .. } => {
            let status = keys::status(ctx.store().await?.tx()).await?;
            let targets = bulk::chosen(status, users.as_deref(), all)?;
            bulk::generate(ctx, targets, alg, &dir, Purpose::Rotation).await
        }
        KeyCommand::Generate { .. } | KeyCommand::Rotate { .. } => Err(CliError {
            message: "give a user ID and --csr-out, or a bulk selection with --csr-dir".into(),
            code: 2,
        }),
        KeyCommand::ImportCert { dir: Some(dir), danger_accept_nonconforming, .. } => {
            bulk::import_certificates(ctx, &dir, nonconforming(danger_accept_nonconforming)).await
        }
        KeyCommand::Csr { user_id, generation, csr_out } => {
            let pem = keys::csr(ctx.store().await?.as_ref(), &user_id, generation).await?;
            write_file(&csr_out, pem.as_bytes())?;
            Ok(Output::new(format!("CSR written to {}", csr_out.display()), json!({ "csr_out": csr_out })))
        }
        KeyCommand::ImportCert { user_id: Some(user_id), cert: Some(cert), danger_accept_nonconforming, .. } => {
            let store = ctx.store().await?;
            crate::users::get(store.as_ref(), &user_id).await?;
            let der =
                read_certificate(&cert).map_err(|e| CliError::from(format!("certificate refused: {}", e.message)))?;
            let imported = keys::import_certificate(
                store.as_ref(),
                &ctx.config,
                ctx.clock.as_ref(),
                &ctx.actor,
                &user_id,
                &der,
                nonconforming(danger_accept_nonconforming),
            )
            .await?;
            let k = &imported.key;
            let mut text = format!(
                "certificate imported: {} key generation {} is active\n  {}",
                k.user_id,
                k.generation,
                key_line(k)
            );
            for w in &imported.warnings {
                text.push_str(&format!("\n  warning: not the HPKI signing profile: {w}"));
            }
            Ok(Output::new(text, serde_json::to_value(&imported)?))
        }
        KeyCommand::ImportCert { .. } => {
            Err(CliError { message: "give a user ID and a certificate file, or --dir".into(), code: 2 })
        }
        KeyCommand::List { user_id } => {
            let keys: Vec<KeyView> =
                keys::list(ctx.store().await?.as_ref(), user_id.as_deref()).await?.iter().map(KeyView::from).collect();
            Ok(Output::new(lines(&keys, "no keys", key_line), serde_json::to_value(&keys)?))
        }
        KeyCommand::Retire { user_id, generation } => {
            let k =
                keys::retire(ctx.store().await?.as_ref(), ctx.clock.as_ref(), &ctx.actor, &user_id, generation).await?;
            Ok(Output::new(format!("{} key generation {} retired", k.user_id, k.generation), serde_json::to_value(&k)?))
        }
        KeyCommand::Inspect { user_id, generation } => {
            let record = keys::find(ctx.store().await?.as_ref(), &user_id, generation, KeyState::Active).await?;
            let ks = ctx.keystore()?;
            let key = crate::keys::key_ref(&record);
            let p = ks.protection(&key)?;
            let json = json!({
                "user_id": user_id, "generation": record.generation, "storage": key.storage().as_str(),
                "sensitive": p.sensitive, "extractable": p.extractable,
                "always_sensitive": p.always_sensitive, "never_extractable": p.never_extractable,
                "sign": p.sign, "decrypt": p.decrypt, "unwrap": p.unwrap, "derive": p.derive,
            });
            let mut text = serde_json::to_string_pretty(&json)?;
            if key.storage() == inkan_keystore::KeyStorage::Wrapped {
                text.push_str(
                    "\nwrapped: kept outside the token under its key-encryption key; the copy unwrapped for signing \
                     is sensitive and non-extractable (the key-encryption key's unwrap template forces it), and \
                     PKCS#11 reports always_sensitive and never_extractable false for every unwrapped key",
                );
            }
            Ok(Output::new(text, json))
        }
    }
}
