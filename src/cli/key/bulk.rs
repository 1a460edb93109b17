//! The bulk key commands: `key generate --all-without-key`, `key rotate
//! --users FILE|--all` and `key import-cert --dir`. Each shows a progress bar
//! on a terminal, reports per user what failed and why without stopping the
//! others (exit 4 then), and can be run again after a kill: a user whose new
//! key is pending gets its CSR file written again instead of another key, and
//! a certificate already imported counts as unchanged.

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::cli::context::{read_certificate, write_file, CliError, Ctx, Output};
use crate::cli::progress::Progress;
use crate::keys::{self, Purpose};
use crate::users::KeyStatus;
use inkan_keystore::KeyAlgorithm;

/// One user a bulk command could not serve.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    /// The user (or the file, for certificates).
    pub user_id: String,
    /// What went wrong, and what to do.
    pub error: String,
}

/// What a bulk key generation did.
#[derive(Debug, Default, Serialize)]
struct GenerateReport {
    /// Users selected.
    users: usize,
    /// Keys generated, each with its CSR file.
    generated: usize,
    /// Users whose new key was pending already (a resumed run): CSR written again.
    csr_rewritten: usize,
    /// Users not served.
    failed: Vec<Failure>,
    /// Keys generated per second.
    keys_per_second: f64,
}

/// The users of `key rotate --users FILE` (IDs, one per line; the first field
/// of a CSV line; `#` comments and a header skipped) or `--all`: enabled users
/// with an active key (or, resumed, a pending one).
pub fn chosen(status: Vec<KeyStatus>, file: Option<&Path>, all: bool) -> Result<Vec<KeyStatus>, CliError> {
    let rotatable = |k: &KeyStatus| k.active || k.pending.is_some();
    if all {
        return Ok(status.into_iter().filter(rotatable).collect());
    }
    let Some(file) = file else {
        return Err(CliError { message: "give --users FILE or --all".into(), code: 2 });
    };
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError { message: format!("cannot read {} ({e})", file.display()), code: 1 })?;
    let by_id: std::collections::HashMap<&str, &KeyStatus> = status.iter().map(|k| (k.user_id.as_str(), k)).collect();
    let (mut chosen, mut unknown) = (Vec::new(), Vec::new());
    let mut seen = std::collections::HashSet::new();
    for line in text.lines() {
        let id = line.split(',').next().unwrap_or("").trim().trim_matches('"');
        if id.is_empty() || id.starts_with('#') || id.eq_ignore_ascii_case("user_id") || !seen.insert(id.to_owned()) {
            continue;
        }
        match by_id.get(id) {
            Some(k) if rotatable(k) => chosen.push((*k).clone()),
            _ => unknown.push(id.to_owned()),
        }
    }
    if !unknown.is_empty() {
        let shown: Vec<_> = unknown.iter().take(10).cloned().collect();
        return Err(CliError {
            message: format!(
                "{} user(s) in {} are unknown, disabled or have no active key ({}{}): fix the file, nothing was done",
                unknown.len(),
                file.display(),
                shown.join(", "),
                if unknown.len() > shown.len() { ", ..." } else { "" }
            ),
            code: 2,
        });
    }
    Ok(chosen)
}

/// Generates a key (first or rotation) for each of `targets`, one per core
/// at a time, writing `<dir>/<USER_ID>.csr` after each key is recorded.
pub async fn generate(
    ctx: &Ctx,
    targets: Vec<KeyStatus>,
    alg: KeyAlgorithm,
    dir: &Path,
    purpose: Purpose,
) -> Result<Output, CliError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError { message: format!("cannot make {} ({e})", dir.display()), code: 1 })?;
    let store = ctx.store().await?;
    let keystore = Arc::new(ctx.keystore()?);
    let workers = keystore.pool_size().max(1);
    let report = Mutex::new(GenerateReport { users: targets.len(), ..Default::default() });
    let bar = Mutex::new(Progress::new("keys", targets.len(), ctx.json));
    let queue = Mutex::new(targets.into_iter());
    let done = Mutex::new(0usize);
    let started = std::time::Instant::now();
    let worker = || async {
        loop {
            let Some(target) = queue.lock().unwrap_or_else(|p| p.into_inner()).next() else { break };
            let csr = dir.join(format!("{}.csr", target.user_id));
            let outcome = match target.pending {
                // A resumed run: the key is there, its CSR file may not be.
                Some(generation) => {
                    keys::csr(store.tx(), &target.user_id, Some(generation)).await.map(|pem| (pem, false))
                }
                None => {
                    keys::generate(store.tx(), &keystore, ctx.clock.as_ref(), &ctx.actor, &target.user_id, alg, purpose)
                        .await
                        .map(|g| (g.csr_pem, true))
                }
            };
            let outcome = outcome.map_err(CliError::from).and_then(|(pem, new)| {
                write_file(&csr, pem.as_bytes())?;
                Ok(new)
            });
            {
                let mut r = report.lock().unwrap_or_else(|p| p.into_inner());
                match outcome {
                    Ok(true) => r.generated += 1,
                    Ok(false) => r.csr_rewritten += 1,
                    Err(e) => r.failed.push(Failure { user_id: target.user_id.clone(), error: e.message }),
                }
            }
            let n = {
                let mut d = done.lock().unwrap_or_else(|p| p.into_inner());
                *d += 1;
                *d
            };
            bar.lock().unwrap_or_else(|p| p.into_inner()).set(n);
            crate::users::crash_point(&format!("key-bulk-after-{n}"));
        }
    };
    futures_util::future::join_all((0..workers).map(|_| worker())).await;
    let mut report = report.into_inner().unwrap_or_else(|p| p.into_inner());
    report.keys_per_second = report.generated as f64 / started.elapsed().as_secs_f64().max(0.001);
    let verb = if purpose == Purpose::Rotation { "rotated" } else { "generated" };
    let mut text = format!(
        "{} users: {} keys {verb} ({:.1}/s), {} CSRs written again for pending keys, {} failed; CSRs in {}",
        report.users,
        report.generated,
        report.keys_per_second,
        report.csr_rewritten,
        report.failed.len(),
        dir.display()
    );
    finish(
        ctx,
        &mut text,
        &report.failed,
        serde_json::to_value(&report)?,
        "next: have the HPKI CA issue the certificates, then `inkan key import-cert --dir <CERTS>`",
    )
}

/// What a bulk certificate import did.
#[derive(Debug, Default, Serialize)]
struct ImportReport {
    /// Certificate files read.
    files: usize,
    /// Keys activated.
    imported: usize,
    /// Certificates already imported (a run again).
    unchanged: usize,
    /// Files not imported.
    failed: Vec<Failure>,
}

/// Imports every certificate in `dir`, each for the user named by its
/// subject's serialNumber (else the file's name without extension).
pub async fn import_certificates(ctx: &Ctx, dir: &Path) -> Result<Output, CliError> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| CliError { message: format!("cannot read the folder {} ({e})", dir.display()), code: 1 })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()).is_some_and(|e| ["pem", "crt", "cer", "der"].contains(&e)))
        .collect();
    files.sort();
    let store = ctx.store().await?;
    let mut report = ImportReport { files: files.len(), ..Default::default() };
    let mut bar = Progress::new("certificates", files.len(), ctx.json);
    for (i, file) in files.iter().enumerate() {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let outcome = async {
            let der = read_certificate(file)?;
            let cert = <x509_cert::Certificate as der::Decode>::from_der(&der)
                .map_err(|e| CliError::from(format!("not a certificate: {e}")))?;
            let user_id = crate::auth::cards::subject_serial_number(&cert)
                .or_else(|| file.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .unwrap_or_default();
            let known = keys::list(store.tx(), Some(&user_id)).await?;
            if known.iter().any(|k| k.certificate.as_deref() == Some(der.as_slice())) {
                return Ok::<_, CliError>(false);
            }
            keys::import_certificate(store.tx(), &ctx.config, ctx.clock.as_ref(), &ctx.actor, &user_id, &der).await?;
            Ok(true)
        }
        .await;
        match outcome {
            Ok(true) => report.imported += 1,
            Ok(false) => report.unchanged += 1,
            Err(e) => report.failed.push(Failure { user_id: name, error: e.message }),
        }
        bar.set(i + 1);
        crate::users::crash_point(&format!("key-bulk-after-{}", i + 1));
    }
    let mut text = format!(
        "{} certificates: {} imported, {} already imported, {} refused",
        report.files,
        report.imported,
        report.unchanged,
        report.failed.len()
    );
    finish(ctx, &mut text, &report.failed, serde_json::to_value(&report)?, "the users sign with their new keys now")
}

/// The end of a bulk command: the summary, then each failure; exit 4 when some failed.
fn finish(
    ctx: &Ctx,
    text: &mut String,
    failed: &[Failure],
    json: serde_json::Value,
    next: &str,
) -> Result<Output, CliError> {
    for f in failed {
        text.push_str(&format!("\n  {}: {}", f.user_id, f.error));
    }
    if failed.is_empty() {
        text.push_str(&format!("\n  {next}"));
        return Ok(Output::new(text.clone(), json));
    }
    text.push_str("\n  fix these and run the same command again: what was done is kept");
    Err(CliError { message: if ctx.json { json.to_string() } else { text.clone() }, code: 4 })
}
