//! `inkan hpki ...`: HPKI card certificates mapped to users.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;

use super::context::{read_certificate, CliError, Ctx, Output};
use crate::auth::cards::{self, CardView};
use crate::auth::Method;

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

/// Card lines for people.
pub fn card_lines(list: &[CardView]) -> String {
    super::context::lines(list, "none", |c| {
        format!("{}  serial {}  {}  (issuer {}, until {})", c.user_id, c.serial, c.subject, c.issuer, c.not_after)
    })
}

/// Runs an `hpki` command.
pub async fn run(ctx: &Ctx, cmd: HpkiCommand) -> Result<Output, CliError> {
    let store = ctx.store().await?;
    let (store, clock) = (store.as_ref(), ctx.clock.as_ref());
    match cmd {
        HpkiCommand::Map { user_id, cert, by_subject } => {
            let der = read_certificate(&cert)?;
            let v = if by_subject {
                cards::hpki_map_subject(store, clock, &ctx.actor, &user_id, &der).await?
            } else {
                cards::hpki_map(store, clock, &ctx.actor, &user_id, &der).await?
            };
            let text = if by_subject {
                format!("HPKI cards with {} (issuer {}) mapped to {}", v.subject, v.issuer, v.user_id)
            } else {
                format!("HPKI card {} mapped to {}", v.subject, v.user_id)
            };
            Ok(Output::new(text, serde_json::to_value(&v)?))
        }
        HpkiCommand::Unmap { user_id, cert, by_subject } => {
            let der = read_certificate(&cert)?;
            if by_subject {
                cards::hpki_unmap_subject(store, clock, &ctx.actor, &user_id, &der).await?;
            } else {
                cards::hpki_unmap(store, clock, &ctx.actor, &user_id, &der).await?;
            }
            Ok(Output::new(format!("HPKI card unmapped from {user_id}"), json!({ "user_id": user_id })))
        }
        HpkiCommand::List { user_id } => {
            let list = cards::list(store, Method::Hpki, user_id.as_deref()).await?;
            Ok(Output::new(card_lines(&list), serde_json::to_value(&list)?))
        }
    }
}
