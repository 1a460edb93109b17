//! `inkan backup` and `inkan restore`: a running node's data copied, and a
//! new data directory made from the copy.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::context::{CliError, Ctx, Output};
use crate::backup;

/// `inkan backup`
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// A new (or empty) directory for the backup; one holding an incomplete
    /// backup (killed before its manifest) is taken again.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// `inkan restore`
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A backup made by `inkan backup`.
    pub dir: PathBuf,
}

/// Takes a backup while the service runs.
pub async fn backup(ctx: &Ctx, args: BackupArgs) -> Result<Output, CliError> {
    let store = ctx.store().await?;
    let taken = backup::backup(&ctx.config, store.as_ref(), &args.out, ctx.now_ms()).await?;
    let m = &taken.manifest;
    let mut text = String::new();
    if taken.replaced_incomplete {
        text.push_str("an incomplete backup in that directory was cleared and taken again\n");
    }
    let bytes: u64 = m.files.iter().map(|f| f.bytes).sum();
    text.push_str(&format!(
        "backup of {} written to {}: {} files, {bytes} bytes, the audit log at row {} or later; checked by `inkan restore`",
        store.describe(),
        args.out.display(),
        m.files.len(),
        m.audit_rows_at_least
    ));
    if let backup::Database::External(how) = &m.database {
        text.push_str(&format!("\nthe database is not in it: copy it now with {how}"));
    }
    if m.token != "softhsm" {
        text.push_str(&format!(
            "\nthe token ({}) is not in it: its keys and key-encryption keys stay in the HSM, backed up by the HSM's own means",
            m.token
        ));
    }
    text.push_str("\nthe backup holds the token's PINs and keys: keep it as the token itself is kept");
    Ok(Output::new(text, serde_json::to_value(m)?))
}

/// Makes the configured data directory from a backup, ends every auth
/// session it held, seals the rows that wrote, and verifies the audit log
/// with the restored token.
pub async fn restore(ctx: &Ctx, args: RestoreArgs) -> Result<Output, CliError> {
    let restored = backup::restore(&ctx.config, &args.dir)?;
    // SoftHSM reads its configuration from the environment: the one just
    // written (one thread: the CLI's runtime runs on this one).
    ctx.config.export_softhsm_conf();
    let mut text = format!("restored the backup of {} into {}", restored.manifest.made_at, restored.data_dir.display());
    let Some(_) = &restored.database else {
        if let backup::Database::External(how) = &restored.manifest.database {
            text.push_str(&format!(
                "\nthe database is not in the backup: restore what `{how}` made, then end the sessions it holds \
                 (`inkan session revoke --all`) and run `inkan audit verify`"
            ));
        }
        return Ok(Output::new(text, json!({ "restored": restored, "sessions_ended": null, "audit": null })));
    };
    let store = ctx.store().await?;
    let anchor = crate::audit::seal::sealed_head(store.as_ref()).await?;
    // Sessions revoked after the backup would live again: every one ends.
    let ended = crate::auth::sessions::revoke(store.tx(), ctx.now_ms(), &ctx.actor, None, None).await?;
    // The token is used only if it came from the backup: an HSM (not in a
    // backup) may be the one production still seals with, and its record of
    // the last seal is ahead of any backup; sealing against it here would
    // move that record, or write a refusal into it, for every node.
    let restored_token = restored.softhsm_conf.is_some();
    let keystore = if restored_token { Some(ctx.keystore()?) } else { None };
    if let (Some(anchor), true) = (anchor, restored_token) {
        ctx.seal_after(anchor).await?;
    }
    let v = super::audit::verified(ctx, store.tx(), keystore.as_ref(), &[]).await?;
    if let Some(b) = &v.broken {
        return Err(CliError {
            message: format!(
                "restored, but the audit log is broken at row {}: {} (use another backup, or see `inkan audit verify`)",
                b.seq, b.reason
            ),
            code: 3,
        });
    }
    text.push_str(&format!(
        "\n{ended} auth sessions ended (users log in again)\n{}",
        super::audit::verified_text(&v, ctx.now_ms())
    ));
    if !restored_token {
        text.push_str(
            "\nthe token is not in the backup (an HSM): its seals were not checked and nothing was sealed here; \
             `inkan audit verify` with the token tells whether the HSM's record of its last seal is in this database",
        );
    }
    Ok(Output::new(text, json!({ "restored": restored, "sessions_ended": ended, "audit": v })))
}
