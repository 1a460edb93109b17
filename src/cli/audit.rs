//! `inkan audit ...`

use clap::Subcommand;

use super::context::{CliError, Ctx, Output};
use crate::audit;
use crate::clock::rfc3339;

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

/// Runs an `audit` command; a broken chain exits with code 3.
pub async fn run(ctx: &Ctx, cmd: AuditCommand) -> Result<Output, CliError> {
    let store = ctx.store().await?;
    match cmd {
        AuditCommand::Verify => {
            let v = audit::verify(store.as_ref()).await?;
            match &v.broken {
                None => Ok(Output::new(
                    format!("audit log intact: {} rows, hash chain verified", v.rows),
                    serde_json::to_value(&v)?,
                )),
                Some(b) => Err(CliError {
                    message: if ctx.json {
                        serde_json::to_string(&v)?
                    } else {
                        format!("audit log broken at row {}: {} ({} rows before it verify)", b.seq, b.reason, v.rows)
                    },
                    code: 3,
                }),
            }
        }
        AuditCommand::Tail { user, limit } => {
            let rows = audit::tail(store.as_ref(), user.as_deref(), limit).await?;
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
            Ok(Output::new(text, serde_json::to_value(&rows)?))
        }
    }
}
