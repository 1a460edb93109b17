//! `inkan device ...`: users' registered phones.

use clap::Subcommand;
use serde_json::json;

use super::context::{CliError, Ctx, Output};
use crate::fido::device;

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

/// Runs a `device` command.
pub async fn run(ctx: &Ctx, cmd: DeviceCommand) -> Result<Output, CliError> {
    let store = ctx.store().await?;
    let store = store.as_ref();
    match cmd {
        DeviceCommand::Show { user_id } => {
            crate::users::get(store, &user_id).await?;
            let view = device::get(store, &user_id).await?.map(|d| d.view());
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
            Ok(Output::new(text, json!({ "user_id": user_id, "device": view })))
        }
        DeviceCommand::Remove { user_id } => {
            let removed = device::remove(store, ctx.now_ms(), &ctx.actor, &user_id).await?;
            let text = match &removed {
                Some(d) => format!(
                    "removed the phone of {user_id} ({}); its phone sessions are ended. To register a new one: `inkan regcode issue {user_id}`",
                    d.label
                ),
                None => format!("{user_id} has no registered phone: nothing removed"),
            };
            Ok(Output::new(text, json!({ "user_id": user_id, "removed": removed })))
        }
    }
}
