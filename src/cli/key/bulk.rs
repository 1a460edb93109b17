//! The bulk key commands: `key generate --all-without-key`, `key rotate
//! --users FILE|--all` and `key import-cert --dir`. Each shows a progress bar
//! on a terminal, reports per user what failed and why without stopping the
//! others (exit 4 then), and can be run again after a kill: a user whose new
//! key is pending gets its CSR file written again instead of another key, and
//! a certificate already imported counts as unchanged.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::cli::context::{read_certificate, CliError, Ctx, Output};
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
    /// Users whose rotation is done already (its CSR in the folder is their
    /// active key's): left alone.
    already: usize,
    /// Users not served.
    failed: Vec<Failure>,
    /// Keys generated per second.
    keys_per_second: f64,
}

/// The users of `key rotate --users FILE` (IDs, one per line; the first field
/// of a CSV line; `#` comments and a header skipped) or `--all`: enabled users
/// with an active key (or, resumed, a pending one).
pub fn chosen(status: Vec<KeyStatus>, file: Option<&Path>, all: bool) -> Result<Vec<KeyStatus>, CliError> {
    if all {
        return Ok(status.into_iter().filter(|k| k.active).collect());
    }
    let Some(file) = file else {
        return Err(CliError { message: "give --users FILE or --all".into(), code: 2 });
    };
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError { message: format!("cannot read {} ({e})", file.display()), code: 1 })?;
    let by_id: std::collections::HashMap<&str, &KeyStatus> = status.iter().map(|k| (k.user_id.as_str(), k)).collect();
    let (mut chosen, mut unknown) = (Vec::new(), Vec::new());
    let mut seen = std::collections::HashSet::new();
    for line in crate::cli::csv::lines(&text) {
        let id = match &line.fields {
            Ok(f) => f[0].trim().to_owned(),
            Err(e) => format!("line {}: {e}", line.number),
        };
        if !seen.insert(id.clone()) {
            continue;
        }
        match by_id.get(id.as_str()) {
            Some(k) if k.active => chosen.push((*k).clone()),
            _ => unknown.push(id),
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
    let mut report = GenerateReport { users: targets.len(), ..Default::default() };
    let mut bar = Progress::new("keys", targets.len(), ctx.json);
    let started = std::time::Instant::now();
    // Users per transaction. Test hook: INKAN_DANGER_BULK_CHUNK.
    let chunk = std::env::var("INKAN_DANGER_BULK_CHUNK").ok().and_then(|c| c.parse().ok()).unwrap_or(CHUNK).max(1);
    let mut done = 0;
    for part in targets.chunks(chunk) {
        let mut fresh = Vec::new();
        for target in part {
            let csr = dir.join(format!("{}.csr", target.user_id));
            let outcome = match target.pending {
                // A resumed run: the key is there, its CSR file may not be.
                Some(generation) => match keys::csr(store.tx(), &target.user_id, Some(generation)).await {
                    Ok(pem) => write_csr(&csr, &pem).map(|()| Made::Rewritten),
                    Err(e) => Err(CliError::from(e)),
                },
                // Run again after the certificates were imported: the CSR in
                // the folder is the active key's, which this rotation made.
                None if purpose == Purpose::Rotation && rotated_already(store.tx(), &target.user_id, &csr).await => {
                    Ok(Made::Already)
                }
                None => {
                    fresh.push(target.user_id.clone());
                    continue;
                }
            };
            report.count(&target.user_id, outcome);
        }
        if !fresh.is_empty() {
            let made = keys::generate_many(
                store.tx(),
                &keystore,
                ctx.clock.as_ref(),
                &ctx.actor,
                &fresh,
                alg,
                purpose,
                workers,
            )
            .await?;
            for (user_id, outcome) in made {
                let csr = dir.join(format!("{user_id}.csr"));
                let outcome = match outcome {
                    Ok(g) => write_csr(&csr, &g.csr_pem).map(|()| Made::Generated),
                    Err(e) => Err(CliError::from(e)),
                };
                report.count(&user_id, outcome);
            }
        }
        done += part.len();
        bar.set(done);
        crate::crash::point(&format!("key-bulk-after-{done}"));
    }
    report.keys_per_second = report.generated as f64 / started.elapsed().as_secs_f64().max(0.001);
    let verb = if purpose == Purpose::Rotation { "rotated" } else { "generated" };
    let mut text = format!(
        "{} users: {} keys {verb} ({:.1}/s), {} CSRs written again for pending keys, {} done before, {} failed; \
         CSRs in {}",
        report.users,
        report.generated,
        report.keys_per_second,
        report.csr_rewritten,
        report.already,
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

/// Users per transaction in a bulk generation.
const CHUNK: usize = 64;

/// What one user of a bulk generation got.
enum Made {
    /// A new key, with its CSR.
    Generated,
    /// The CSR of the pending key again.
    Rewritten,
    /// Nothing: done by an earlier run.
    Already,
}

impl GenerateReport {
    fn count(&mut self, user_id: &str, outcome: Result<Made, CliError>) {
        match outcome {
            Ok(Made::Generated) => self.generated += 1,
            Ok(Made::Rewritten) => self.csr_rewritten += 1,
            Ok(Made::Already) => self.already += 1,
            Err(e) => self.failed.push(Failure { user_id: user_id.to_owned(), error: e.message }),
        }
    }
}

/// Writes a CSR file whole (a temporary file renamed), without waiting for
/// the disk: a CSR lost to a power cut is written again by the next run,
/// from the pending key.
fn write_csr(path: &Path, pem: &str) -> Result<(), CliError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, pem)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| CliError { message: format!("cannot write {} ({e})", path.display()), code: 1 })
}

/// Whether `csr` is the CSR of the user's active key (a rotation done and imported).
async fn rotated_already(
    store: &dyn crate::seam::Transactions<dyn crate::store::Tx>,
    user_id: &str,
    csr: &Path,
) -> bool {
    let Ok(existing) = std::fs::read_to_string(csr) else { return false };
    let Ok(keys) = keys::list(store, Some(user_id)).await else { return false };
    keys.iter().any(|k| {
        k.state == crate::users::KeyState::Active && crate::pki::to_pem("CERTIFICATE REQUEST", &k.csr) == existing
    })
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
pub async fn import_certificates(
    ctx: &Ctx,
    dir: &Path,
    nonconforming: keys::Nonconforming,
) -> Result<Output, CliError> {
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
            let imported = keys::import_certificate(
                store.tx(),
                &ctx.config,
                ctx.clock.as_ref(),
                &ctx.actor,
                &user_id,
                &der,
                nonconforming,
            )
            .await?;
            for w in imported.warnings {
                eprintln!("warning: {user_id}: not the HPKI signing profile: {w}");
            }
            Ok(true)
        }
        .await;
        match outcome {
            Ok(true) => report.imported += 1,
            Ok(false) => report.unchanged += 1,
            Err(e) => report.failed.push(Failure { user_id: name, error: e.message }),
        }
        bar.set(i + 1);
        crate::crash::point(&format!("key-bulk-after-{}", i + 1));
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
pub(crate) fn finish(
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
