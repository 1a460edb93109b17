//! `inkan jpki ...`: My Number card certificates linked to users.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;

use super::context::{read_certificate, CliError, Ctx, Output};
use super::hpki::card_lines;
use crate::auth::cards;
use crate::auth::Method;

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

/// Runs a `jpki` command.
pub async fn run(ctx: &Ctx, cmd: JpkiCommand) -> Result<Output, CliError> {
    let store = ctx.store().await?;
    let (store, clock) = (store.as_ref(), ctx.clock.as_ref());
    match cmd {
        JpkiCommand::Link { user_id, cert } => {
            let v = cards::jpki_link(store, clock, &ctx.actor, &user_id, &read_certificate(&cert)?).await?;
            Ok(Output::new(
                format!("My Number card (serial {}) linked to {}", v.serial, v.user_id),
                serde_json::to_value(&v)?,
            ))
        }
        JpkiCommand::Unlink { user_id, cert } => {
            let der = cert.as_deref().map(read_certificate).transpose()?;
            let n = cards::jpki_unlink(store, clock, &ctx.actor, &user_id, der.as_deref()).await?;
            Ok(Output::new(
                format!("{n} My Number card link(s) of {user_id} removed"),
                json!({ "user_id": user_id, "removed": n }),
            ))
        }
        JpkiCommand::List { user_id } => {
            let list = cards::list(store, Method::Jpki, user_id.as_deref()).await?;
            Ok(Output::new(card_lines(&list), serde_json::to_value(&list)?))
        }
        JpkiCommand::ImportRenewals { file } => {
            let csv = std::fs::read_to_string(&file)
                .map_err(|e| CliError { message: format!("cannot read {}: {e}", file.display()), code: 1 })?;
            let quiet = ctx.json || std::env::var_os("INKAN_NO_PROGRESS").is_some();
            let outcomes = cards::import_renewals(store, clock, &ctx.actor, &csv, |i, n| {
                if !quiet && (i == n || i % 100 == 0) {
                    eprint!("\rrenewals: {i}/{n}");
                    if i == n {
                        eprintln!();
                    }
                }
            })
            .await?;
            let moved = outcomes.iter().filter(|o| o.outcome == "moved").count();
            let problems: Vec<String> = outcomes
                .iter()
                .filter(|o| o.outcome != "moved")
                .map(|o| format!("  line {}: {}", o.line, o.outcome))
                .collect();
            Ok(Output::new(
                format!(
                    "{moved} link(s) moved to renewed certificates{}{}",
                    if problems.is_empty() { "" } else { "\n" },
                    problems.join("\n")
                ),
                json!({ "moved": moved, "lines": outcomes }),
            ))
        }
    }
}
