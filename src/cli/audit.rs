//! `inkan audit ...`

use clap::Subcommand;

use super::context::{CliError, Ctx, Output};
use crate::audit;
use crate::clock::rfc3339;
use crate::encoding::{hex, unhex};

/// `inkan audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of the whole log, every seal (the token's MACs),
    /// the token's record of its last seal, and every time-stamp (the TSA's
    /// anchors): says up to when the log is proven to have existed. Exit
    /// status 3: broken; 5: intact as far as it goes, but rows older than
    /// the grace are not sealed (or none is), or sealing stopped.
    Verify {
        /// Seals exported earlier (`inkan audit heads`, JSON lines or an
        /// array): each must still be in the log as it was.
        #[arg(long)]
        heads: Option<std::path::PathBuf>,
        /// Seconds a row may stay unsealed (a running server seals within one).
        #[arg(long, default_value_t = 10)]
        grace_secs: u64,
        /// Also check every archived segment in this directory (`inkan
        /// audit archive`) against the archive records.
        #[arg(long, value_name = "DIR")]
        archive: Option<std::path::PathBuf>,
    },
    /// Move rows older than `[audit] live_days` (or `--before`) out of the
    /// live store into a sealed segment file in DIR, then delete them
    /// (re-run after a kill: it finishes the deletion). `verify` goes on
    /// from the last segment; `verify --archive DIR` checks the segments.
    Archive {
        /// The directory of the segments (kept with the backups).
        #[arg(long, value_name = "DIR")]
        out: std::path::PathBuf,
        /// Archive rows sealed before this time: a date (YYYY-MM-DD, midnight
        /// in Japan) or an RFC 3339 time. Default: `[audit] live_days` ago.
        #[arg(long)]
        before: Option<String>,
    },
    /// Seal the chain's head now (a running server does it within a second)
    /// and, with a TSA, time-stamp it. Refuses a log that fails the token's
    /// record (the refusal stays in the token).
    Seal {
        /// Clear a refusal to seal that stands in the token: only if the
        /// whole log verifies now (with the token); an audit row says so.
        #[arg(long)]
        clear_refusal: bool,
    },
    /// Print the seals (one JSON object a line) to keep outside the database.
    Heads {
        /// Only seals of rows after this one.
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
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
        AuditCommand::Archive { out, before } => {
            let before_ms = match before.as_deref() {
                Some(text) => before_time(text)?,
                None => ctx.now_ms() - i64::try_from(ctx.config.audit.live_days).unwrap_or(i64::MAX / 2) * 86_400_000,
            };
            let keystore = ctx.keystore()?;
            let anchor = ctx.sealed_head().await;
            let mut bar: Option<(usize, super::progress::Progress)> = None;
            let mut shown = |done: usize, total: usize| {
                if bar.as_ref().is_none_or(|(t, _)| *t != total) {
                    bar = Some((total, super::progress::Progress::new("archived rows deleted", total, ctx.json)));
                }
                if let Some((_, b)) = bar.as_mut() {
                    b.set(done);
                }
            };
            let done = audit::archive::archive(
                store.as_ref(),
                &keystore,
                &out,
                before_ms,
                ctx.now_ms(),
                &ctx.actor,
                &mut shown,
            )
            .await?;
            if let Some(anchor) = anchor {
                ctx.seal_after(anchor).await?;
            }
            let text = match (&done.archived, &done.file) {
                (Some(a), Some(file)) => format!(
                    "rows {}-{} archived to {} (SHA-256 {}); {} rows deleted from the live store; check with `inkan audit verify --archive {}`",
                    a.first,
                    a.seq,
                    file.display(),
                    hex(&a.segment),
                    done.pruned,
                    out.display()
                ),
                _ => format!(
                    "nothing to archive: no row sealed before {} (and before the token's last seal){}",
                    rfc3339(before_ms),
                    if done.pruned > 0 { format!("; {} archived rows deleted", done.pruned) } else { String::new() }
                ),
            };
            Ok(Output::new(text, serde_json::to_value(&done)?))
        }
        AuditCommand::Verify { heads, grace_secs, archive } => {
            let heads = match &heads {
                Some(path) => read_heads(path)?,
                None => Vec::new(),
            };
            // Without the token the chain is still checked, the seals' MACs not.
            let keystore = match ctx.keystore() {
                Ok(k) => Some(k),
                Err(e) => {
                    eprintln!("warning: the seals cannot be checked without the token ({})", e.message);
                    None
                }
            };
            // Unsealed rows' age is taken at the snapshot, not after the walk:
            // a long walk must not age rows a running server is about to seal.
            let now = ctx.now_ms();
            let v = verified(ctx, store.as_ref(), keystore.as_ref(), &heads).await?;
            let segments = match (&archive, &keystore) {
                (Some(dir), Some(k)) => Some(
                    audit::archive::check(store.as_ref(), k, dir)
                        .await
                        .map_err(|e| CliError { message: format!("archive broken: {e}"), code: 3 })?,
                ),
                (Some(_), None) => {
                    return Err(CliError {
                        message: "the archive is checked with the token: make it available".into(),
                        code: 2,
                    })
                }
                _ => None,
            };
            let json = |v: &audit::Verification| serde_json::to_string(v).map_err(CliError::from);
            if let Some(b) = &v.broken {
                let message = if ctx.json {
                    json(&v)?
                } else {
                    format!("audit log broken at row {}: {} ({} rows before it verify)", b.seq, b.reason, v.rows)
                };
                return Err(CliError { message, code: 3 });
            }
            let mut text = verified_text(&v, now);
            let mut document = serde_json::to_value(&v)?;
            if let Some(c) = &segments {
                text.push_str(&format!(
                    "\narchive intact: {} segments, {} rows, {} seals checked by the token, {} time-stamps",
                    c.segments, c.rows, c.seals, c.timestamps
                ));
                if !c.unknown_files.is_empty() {
                    text.push_str(&format!("; files no archive record names: {}", c.unknown_files.join(", ")));
                }
                document["archive"] = serde_json::to_value(c)?;
            }
            match unvouched(&v, now, grace_secs) {
                None => Ok(Output::new(text, document)),
                Some(why) => Err(CliError {
                    message: if ctx.json { document.to_string() } else { format!("{text}\n{why}") },
                    code: 5,
                }),
            }
        }
        AuditCommand::Seal { clear_refusal } => {
            let keystore = ctx.keystore()?;
            if clear_refusal {
                let v = verified(ctx, store.as_ref(), Some(&keystore), &[]).await?;
                if let Some(b) = &v.broken {
                    return Err(CliError {
                        message: format!(
                            "the refusal to seal stays: the audit log is broken at row {}: {}",
                            b.seq, b.reason
                        ),
                        code: 3,
                    });
                }
                let actor = super::context::actor();
                match audit::seal::clear_refusal(store.as_ref(), &keystore, &actor, ctx.now_ms()).await? {
                    Some(r) => eprintln!("cleared the refusal to seal of {} ({})", rfc3339(r.at), r.reason),
                    None => eprintln!("no refusal to seal stood"),
                }
            }
            let sealed = audit::seal::seal_head(store.as_ref(), &keystore, &Default::default(), ctx.now_ms()).await?;
            let mut text = match sealed {
                Some(seq) => format!("audit log sealed through row {seq}"),
                None => "the audit log's head was sealed already (or the log is empty)".into(),
            };
            // With a TSA, the newest seal time-stamped too.
            let stamped = match crate::tsa::Tsa::new(&ctx.config.tsa)? {
                Some(tsa) => audit::stamp::stamp_head(store.as_ref(), &tsa, ctx.clock.now()).await.map_err(|e| {
                    CliError::from(format!("{text}, but not time-stamped: {e} (run `inkan audit seal` again later)"))
                })?,
                None => None,
            };
            if let Some((stamp, at)) = &stamped {
                text.push_str(&format!("; time-stamped at row {} ({at})", stamp.seq));
            }
            let stamped = stamped.map(|(s, at)| serde_json::json!({ "seq": s.seq, "time": at }));
            Ok(Output::new(text, serde_json::json!({ "sealed": sealed, "timestamped": stamped })))
        }
        AuditCommand::Heads { after } => {
            let seals = audit::seal::heads(store.as_ref(), after).await?;
            let exported: Vec<serde_json::Value> = seals.iter().map(head_json).collect();
            let text = exported.iter().map(|h| h.to_string()).collect::<Vec<_>>().join("\n");
            Ok(Output::new(text, serde_json::Value::Array(exported)))
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

/// `--before`: a date (midnight in Japan) or an RFC 3339 time, as Unix ms.
fn before_time(text: &str) -> Result<i64, CliError> {
    let full = if text.len() == 10 { format!("{text}T00:00:00+09:00") } else { text.to_owned() };
    crate::verify::time::parse(&full).map(|(t, _)| crate::clock::unix_ms(t)).ok_or_else(|| CliError {
        message: format!("--before {text:?}: give a date (2026-01-31) or an RFC 3339 time (2026-01-31T00:00:00+09:00)"),
        code: 2,
    })
}

/// A seal as exported: `{"seq", "hash", "prev", "mac", "at"}` (hex, RFC 3339).
fn head_json(s: &audit::Seal) -> serde_json::Value {
    let at = crate::clock::rfc3339_ms(s.at);
    serde_json::json!({ "seq": s.seq, "hash": hex(&s.hash), "prev": hex(&s.prev_mac), "mac": hex(&s.mac), "at": at })
}

/// An exported seal's time: RFC 3339, or Unix ms (exports made before 0.2).
fn head_time(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::String(text) => crate::verify::time::parse(text).map(|(t, _)| crate::clock::unix_ms(t)),
        other => other.as_i64(),
    }
}

/// Reads exported seals: JSON lines, or one JSON array.
fn read_heads(path: &std::path::Path) -> Result<Vec<audit::Seal>, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError { message: format!("cannot read {}: {e}", path.display()), code: 2 })?;
    let values: Vec<serde_json::Value> = if text.trim_start().starts_with('[') {
        serde_json::from_str(&text).map_err(|e| bad_heads(path, &e.to_string()))?
    } else {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(|e| bad_heads(path, &e.to_string())))
            .collect::<Result<_, _>>()?
    };
    values
        .iter()
        .map(|v| {
            Some(audit::Seal {
                seq: v["seq"].as_i64()?,
                hash: unhex(v["hash"].as_str()?)?,
                prev_mac: unhex(v["prev"].as_str()?)?,
                mac: unhex(v["mac"].as_str()?)?,
                at: head_time(&v["at"])?,
            })
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| bad_heads(path, "each seal needs seq, hash, prev, mac (hex) and at"))
}

fn bad_heads(path: &std::path::Path, why: &str) -> CliError {
    CliError { message: format!("{} is not a file of `inkan audit heads`: {why}", path.display()), code: 2 }
}

/// The TSA anchors time-stamps are checked against (`[verify]
/// tsa_anchors`, else `[tsa] ca`); `None` without any.
fn tsa_anchors(ctx: &Ctx) -> Option<Vec<x509_cert::Certificate>> {
    let paths =
        if ctx.config.verify.tsa_anchors.is_empty() { &ctx.config.tsa.ca } else { &ctx.config.verify.tsa_anchors };
    let mut out = Vec::new();
    for p in paths {
        match crate::pki::read_certificates(p) {
            Ok(ders) => {
                out.extend(ders.iter().filter_map(|d| <x509_cert::Certificate as der::Decode>::from_der(d).ok()))
            }
            Err(e) => {
                eprintln!("warning: the TSA anchor {} cannot be read ({e}): time-stamps not checked", p.display())
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The chain, seals and token record checked, then the time-stamps.
pub(super) async fn verified(
    ctx: &Ctx,
    store: &dyn crate::seam::Transactions<dyn crate::store::Tx>,
    keystore: Option<&inkan_keystore::Keystore>,
    heads: &[audit::Seal],
) -> Result<audit::Verification, CliError> {
    // The token before the database (see `audit::verify`).
    let token = match keystore {
        Some(k) => audit::seal::token_state(k)?,
        None => Default::default(),
    };
    let mut v = audit::verify(store, keystore, &token, heads).await?;
    if v.broken.is_none() {
        let anchors = tsa_anchors(ctx);
        let base = v.archived_through.unwrap_or(0);
        match audit::stamp::prove(store, anchors.as_deref(), (base, base + v.rows)).await? {
            Ok(proof) => v.time = Some(proof).filter(|p| p.timestamps > 0),
            Err(broken) => {
                v.rows = v.rows.min(broken.seq - 1 - base);
                v.broken = Some(broken);
            }
        }
    }
    Ok(v)
}

/// Why an intact log is still not vouched for: rows unsealed past the
/// grace (none sealed at all counts), or sealing stopped.
fn unvouched(v: &audit::Verification, now: i64, grace_secs: u64) -> Option<String> {
    if let Some(r) = &v.refusal {
        return Some(format!(
            "sealing stopped at {} and stays stopped: {} (when `inkan audit verify` finds the log intact, `inkan \
             audit seal --clear-refusal` resumes it)",
            rfc3339(r.at),
            r.reason
        ));
    }
    let age_ms = v.unsealed_since.map_or(0, |at| (now - at).max(0));
    (v.unsealed > 0 && age_ms > i64::try_from(grace_secs).unwrap_or(i64::MAX).saturating_mul(1000)).then(|| {
        let after = v.sealed_through.map_or_else(|| "no row is sealed".to_owned(), |s| format!("after row {s}"));
        format!(
            "not vouched for: {} rows ({after}) are not sealed, the first written {} s ago, longer than the grace \
             of {grace_secs} s (a running server seals within a second): nothing proves they are as written, and \
             seals after them may have been removed. `inkan audit tail` shows them.",
            v.unsealed,
            age_ms / 1000
        )
    })
}

pub(super) fn verified_text(v: &audit::Verification, now: i64) -> String {
    let mut text = format!("audit log intact: {} rows, hash chain verified", v.rows);
    if let Some(a) = v.archived_through {
        text.push_str(&format!(" (from row {}: rows through {a} are archived)", a + 1));
    }
    match (v.sealed_through, v.seals_checked) {
        (Some(s), true) => text.push_str(&format!("; sealed through row {s} ({} seals checked by the token)", v.seals)),
        (Some(s), false) => text.push_str(&format!("; seals through row {s} NOT checked (no token)")),
        (None, _) if v.rows > 0 => text.push_str("; no row is sealed yet"),
        (None, _) => {}
    }
    match &v.time {
        Some(audit::TimeProof { proven_through: Some(seq), proven_at: Some(at), tsa, timestamps, .. }) => text
            .push_str(&format!(
                "; time-stamped through row {seq}: the log up to it existed by {at} ({}; {timestamps} time-stamps \
                 checked)",
                tsa.as_deref().unwrap_or("the TSA")
            )),
        Some(p) if !p.checked => text.push_str(&format!(
            "; {} time-stamps NOT checked (no TSA anchors: set [tsa] ca or [verify] tsa_anchors)",
            p.timestamps
        )),
        _ => {}
    }
    if v.heads_checked > 0 {
        text.push_str(&format!("; {} exported seals found as exported", v.heads_checked));
    }
    if let Some(r) = v.token_record {
        text.push_str(&format!("; the token's record of its last seal (row {r}) found"));
    }
    if v.unsealed > 0 {
        let age = v.unsealed_since.map_or(0, |at| (now - at).max(0) / 1000);
        text.push_str(&format!(
            "\n{} rows after the last seal are not sealed yet, the first written {age} s ago (a running server \
             seals within a second)",
            v.unsealed
        ));
    }
    if v.heads_archived > 0 {
        text.push_str(&format!(
            "; {} exported seals are of archived rows and were not checked against the live log",
            v.heads_archived
        ));
    }
    text
}
