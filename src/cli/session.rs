//! `inkan session ...`: auth sessions.

use clap::Subcommand;
use serde_json::json;

use super::context::{lines, CliError, Ctx, Output};
use crate::auth::sessions;

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

/// Runs a `session` command.
pub async fn run(ctx: &Ctx, cmd: SessionCommand) -> Result<Output, CliError> {
    let store = ctx.store().await?;
    match cmd {
        SessionCommand::List { user_id } => {
            let list = sessions::list(store.as_ref(), ctx.now_ms(), user_id.as_deref()).await?;
            let text = lines(&list, "no active sessions", |s| {
                format!(
                    "{}  {}  {}  {}  login {}  until {}",
                    s.id, s.user_id, s.method, s.client_id, s.auth_time, s.expires_at
                )
            });
            Ok(Output::new(text, serde_json::to_value(&list)?))
        }
        SessionCommand::Revoke { user_id, all } => {
            let target = if all { None } else { user_id.as_deref() };
            let n = sessions::revoke(store.as_ref(), ctx.now_ms(), &ctx.actor, target, None).await?;
            Ok(Output::new(format!("{n} session(s) ended"), json!({ "sessions_ended": n })))
        }
    }
}
