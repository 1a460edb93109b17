//! `inkan client ...`: signing systems.

use clap::Subcommand;
use serde_json::json;

use super::context::{lines, CliError, Ctx, Output};
use crate::auth::clients;

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

/// Runs a `client` command.
pub async fn run(ctx: &Ctx, cmd: ClientCommand) -> Result<Output, CliError> {
    let store = ctx.store().await?;
    let store = store.as_ref();
    match cmd {
        ClientCommand::Add { name, redirect_uris, id } => {
            let (c, secret) =
                clients::add(store, ctx.clock.as_ref(), &ctx.actor, &name, &redirect_uris, id.as_deref()).await?;
            Ok(Output::new(
                format!(
                    "client {} registered\n  client_id:     {}\n  client_secret: {}   (shown only now: store it in the signing system)\n  redirect URIs: {}",
                    c.name,
                    c.id,
                    secret,
                    c.redirect_uris.join(", ")
                ),
                json!({ "client_id": c.id, "client_secret": secret, "name": c.name, "redirect_uris": c.redirect_uris }),
            ))
        }
        ClientCommand::List => {
            let list = clients::list(store).await?;
            let text = lines(
                &list,
                "no clients: register one with `inkan client add --name <NAME> --redirect-uri <URI>`",
                |c| format!("{}  {}  {}", c.id, c.name, c.redirect_uris.join(" ")),
            );
            Ok(Output::new(text, serde_json::to_value(&list)?))
        }
        ClientCommand::Remove { client_id } => {
            let ended = clients::remove(store, ctx.clock.as_ref(), &ctx.actor, &client_id).await?;
            Ok(Output::new(
                format!("client {client_id} removed ({ended} session(s) ended)"),
                json!({ "client_id": client_id, "sessions_ended": ended }),
            ))
        }
    }
}
