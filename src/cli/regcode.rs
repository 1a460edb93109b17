//! `inkan regcode ...`: printed initial-registration codes for phones.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;

use super::context::{lines, write_file, CliError, Ctx, Output};
use crate::fido::regcode::{self, Password};

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

/// Runs a `regcode` command.
pub async fn run(ctx: &Ctx, cmd: RegcodeCommand) -> Result<Output, CliError> {
    let store = ctx.store().await?;
    let store = store.as_ref();
    let now = ctx.now_ms();
    match cmd {
        RegcodeCommand::Issue { user_id, password, birthdate, expires, qr } => {
            let lifetime = match expires {
                Some(e) => parse_duration(&e)?,
                None => ctx.config.fido.regcode_days as i64 * 86_400_000,
            };
            let password = match (password, birthdate) {
                (Some(p), _) => Password::Given(p),
                (None, Some(d)) => Password::Birthdate(d),
                (None, None) => Password::Generate,
            };
            let issued =
                regcode::issue(store, now, &ctx.actor, &ctx.config.server.public_url, &user_id, password, lifetime)
                    .await?;
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
            Ok(Output::new(text, json))
        }
        RegcodeCommand::List { user_id } => {
            let list = regcode::list(store, now, user_id.as_deref()).await?;
            let text = lines(&list, "no registration codes", |c| {
                format!(
                    "#{}  {}  {:8}  wrong passwords {}  issued {}  until {}",
                    c.id, c.user_id, c.status, c.failures, c.issued_at, c.expires_at
                )
            });
            Ok(Output::new(text, serde_json::to_value(&list)?))
        }
        RegcodeCommand::Revoke { user_id } => {
            let revoked = regcode::revoke(store, now, &ctx.actor, &user_id).await?;
            let text = if revoked {
                format!("the registration code of {user_id} is revoked")
            } else {
                format!("{user_id} has no active registration code (issue one with `inkan regcode issue {user_id}`)")
            };
            Ok(Output::new(text, json!({ "user_id": user_id, "revoked": revoked })))
        }
    }
}
