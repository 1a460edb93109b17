//! `inkan kek ...`: the token's key-encryption keys.

use std::sync::Arc;

use clap::Subcommand;

use super::context::{CliError, Ctx, Output};
use crate::cli::key::bulk::{finish, Failure};
use crate::cli::progress::Progress;
use crate::config::schema::KekKind;
use crate::kek;

/// `inkan kek ...`
#[derive(Debug, Subcommand)]
pub enum KekCommand {
    /// The token's KEKs (strict or trusted) and how many stored keys each wraps.
    Status,
    /// Wraps every stored key again under a new trusted KEK (needs
    /// `[token] kek = "trusted"` and the SO PIN). Run again after a kill: an
    /// unfinished rotation is finished, not started over.
    Rotate,
}

/// Runs a `kek` command.
pub async fn run(ctx: &Ctx, cmd: KekCommand) -> Result<Output, CliError> {
    match cmd {
        KekCommand::Status => status(ctx).await,
        KekCommand::Rotate => rotate(ctx).await,
    }
}

async fn status(ctx: &Ctx) -> Result<Output, CliError> {
    let store = ctx.store().await?;
    let keystore = Arc::new(ctx.keystore()?);
    let status = kek::status(store.tx(), &keystore).await?;
    let mut text = String::new();
    for k in &status.keks {
        let newest = if Some(k.index) == status.newest().map(|n| n.index) { "  (new keys go here)" } else { "" };
        let mac = if k.has_mac_key { "" } else { "  no MAC key yet: run `inkan init`" };
        text.push_str(&format!("KEK {}  {}  {} keys{newest}{mac}\n", k.index, k.kind, k.keys));
    }
    if status.keks.is_empty() {
        text.push_str("no key-encryption key in the token: run `inkan init`\n");
    }
    text.push_str(&format!("{} keys kept as token objects", status.object_keys));
    for (index, n) in &status.missing_kek {
        text.push_str(&format!(
            "\nwarning: {n} keys name KEK {index}, which the token does not hold: they cannot sign \
             (see `inkan key list`, rotate their users' keys)"
        ));
    }
    Ok(Output::new(text, serde_json::to_value(&status)?))
}

async fn rotate(ctx: &Ctx) -> Result<Output, CliError> {
    if ctx.config.token.kek != KekKind::Trusted {
        return Err(CliError {
            message: "a KEK rotation needs trusted KEKs: keys under a strict KEK (the default) can never be \
                      wrapped again. On a token that keeps CKA_TRUSTED for its security officer (an HSM), set \
                      [token] kek = \"trusted\" (INKAN_TOKEN_KEK=trusted); see docs/operating.md, \"Keys kept outside the \
                      token\". With strict KEKs, replace a KEK by rotating every user's key: \
                      inkan key rotate --all --csr-dir DIR"
                .into(),
            code: 2,
        });
    }
    let store = ctx.store().await?;
    let mut keystore = Arc::new(ctx.keystore()?);
    let ks = Arc::clone(&keystore);
    tokio::task::spawn_blocking(move || ks.check_trust_reserved()).await??;
    let status = kek::status(store.tx(), &keystore).await?;
    let Some(newest) = status.newest() else {
        return Err(CliError { message: "no key-encryption key in the token: run `inkan init`".into(), code: 1 });
    };
    // An unfinished rotation (its KEK made, keys still under older trusted
    // KEKs, or its MAC key missing) is finished; else a new one starts.
    let trusted = newest.kind == inkan_keystore::KekKind::Trusted.as_str();
    let resumed = trusted && (status.movable_to(newest.index) > 0 || !newest.has_mac_key);
    let to = if resumed { newest.index } else { newest.index + 1 };
    let mut steps = Vec::new();
    if resumed {
        steps.push(format!("finishing the rotation to KEK {to}"));
    } else {
        let so_pin = ctx.config.so_pin()?;
        let owned = Arc::try_unwrap(keystore)
            .map_err(|_| CliError { message: "the token is still in use in this process".into(), code: 1 })?;
        let cfg = ctx.config.clone();
        let (reopened, made, made_steps) = tokio::task::spawn_blocking(move || {
            let mut steps = Vec::new();
            crate::setup::make_trusted_kek(&cfg, owned, &so_pin, to, &mut steps).map(|(k, m)| (k, m, steps))
        })
        .await??;
        keystore = Arc::new(reopened);
        steps.extend(made_steps);
        if made {
            kek::record_created(store.tx(), ctx.clock.as_ref(), &ctx.actor, to, inkan_keystore::KekKind::Trusted)
                .await?;
        }
    }
    let ks = Arc::clone(&keystore);
    let ready = tokio::task::spawn_blocking(move || ks.prepare_wrapping()).await??;
    if ready.kek_index != to {
        return Err(CliError {
            message: format!(
                "the token's newest KEK is {} where {to} was expected (another `kek rotate` at the same time?): \
                 run `inkan kek status`, then this command again",
                ready.kek_index
            ),
            code: 1,
        });
    }
    let mut bar = Progress::new("keys", status.movable_to(to) + status.stuck_below(to), ctx.json);
    let workers = keystore.pool_size().max(1);
    let done = kek::rewrap_all(store.tx(), &keystore, ctx.clock.as_ref(), &ctx.actor, to, workers, &mut |n| bar.set(n))
        .await?;
    let mut text = format!(
        "{}\n{} keys wrapped again under KEK {to} ({:.0}/s), {} unchanged, {} failed",
        steps.join("\n"),
        done.moved,
        done.keys_per_second,
        done.unchanged,
        done.failed.len()
    );
    let failed: Vec<Failure> = done
        .failed
        .iter()
        .map(|f| Failure { user_id: format!("{} (generation {})", f.user_id, f.generation), error: f.error.clone() })
        .collect();
    let older: Vec<String> =
        status.keks.iter().filter(|k| k.index < to).map(|k| k.index.to_string()).collect::<Vec<_>>();
    let next = if older.is_empty() {
        "every stored key is under the newest KEK".to_owned()
    } else {
        format!(
            "KEK(s) {} stay in the token (signing nodes may still hold records read before): \
             `inkan kek status` shows what each still wraps",
            older.join(", ")
        )
    };
    finish(ctx, &mut text, &failed, serde_json::to_value(&done)?, &next)
}
