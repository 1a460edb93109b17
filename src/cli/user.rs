//! `inkan user ...`

use clap::Subcommand;
use serde_json::json;

use super::context::{lines, CliError, Ctx, Output};
use super::key::key_line;
use crate::clock::rfc3339;
use crate::keys::{self, KeyView};
use crate::pki::profile::Qualification;
use crate::users;

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

/// Runs a `user` command.
pub async fn run(ctx: &Ctx, cmd: UserCommand) -> Result<Output, CliError> {
    let store = ctx.store().await?;
    let store = store.as_ref();
    let clock = ctx.clock.as_ref();
    match cmd {
        UserCommand::Add { user_id, name, qualification } => {
            let u = users::add(store, clock, &ctx.actor, &user_id, &name, qualification).await?;
            Ok(Output::new(
                format!(
                    "user {} ({}, {}) added\n  next: inkan key generate {} --csr-out {}.csr",
                    u.id, u.name, u.qualification, u.id, u.id
                ),
                serde_json::to_value(&u)?,
            ))
        }
        UserCommand::List => {
            let list = users::list(store).await?;
            let text = lines(
                &list,
                "no users yet: add one with `inkan user add <USER_ID> --name <NAME> --qualification doctor`",
                |u| format!("{}  {}  {}  {}", u.id, u.qualification, u.status.as_str(), u.name),
            );
            Ok(Output::new(text, serde_json::to_value(&list)?))
        }
        UserCommand::Show { user_id } => {
            let u = users::get(store, &user_id).await?;
            let keys: Vec<KeyView> = keys::list(store, Some(&user_id)).await?.iter().map(KeyView::from).collect();
            let mut text = format!(
                "{}  {}  {}  {}  created {}",
                u.id,
                u.name,
                u.qualification,
                u.status.as_str(),
                rfc3339(u.created_at)
            );
            for k in &keys {
                text.push_str("\n  ");
                text.push_str(&key_line(k));
            }
            Ok(Output::new(text, json!({ "user": u, "keys": keys })))
        }
        UserCommand::Disable { user_id } => {
            let u = users::set_status(store, clock, &ctx.actor, &user_id, false).await?;
            Ok(Output::new(format!("user {} disabled: signing refused from now on", u.id), serde_json::to_value(&u)?))
        }
        UserCommand::Enable { user_id } => {
            let u = users::set_status(store, clock, &ctx.actor, &user_id, true).await?;
            Ok(Output::new(format!("user {} enabled", u.id), serde_json::to_value(&u)?))
        }
    }
}
