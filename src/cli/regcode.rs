//! `inkan regcode ...`: printed initial-registration codes for phones.

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;

use super::context::{lines, write_file, CliError, Ctx, Output};
use crate::fido::regcode::{self, Password};

/// `inkan regcode ...`
#[derive(Debug, Subcommand)]
pub enum RegcodeCommand {
    /// Issue a registration URL and password for a user (replaces the user's
    /// previous code); or, with --users FILE --out-dir DIR, a printable notice
    /// (`<USER_ID>.html`, QR code inside) for each user in the file, with the
    /// birth date as password where the file has one (else a random one).
    /// Run again after a kill: users whose notice is in DIR are left alone.
    Issue {
        /// The user.
        #[arg(required_unless_present = "users", conflicts_with = "users")]
        user_id: Option<String>,
        /// A CSV file: `user_id[,name,qualification[,birth date]]` per line (as for `user import`).
        #[arg(long, value_name = "FILE", requires = "out_dir", conflicts_with_all = ["password", "birthdate", "qr"])]
        users: Option<PathBuf>,
        /// The folder for the notices of --users.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
        /// The password to print on the notice (at least 6 characters; default: 10 random digits).
        #[arg(long, conflicts_with = "birthdate")]
        password: Option<String>,
        /// Use the user's birth date as the password (YYYYMMDD; not printed back).
        #[arg(long)]
        birthdate: Option<String>,
        /// Lifetime: `30d`, `72h`, `90m` (default: `[fido] regcode_days`).
        #[arg(long)]
        expires: Option<String>,
        /// Also write the URL as a QR code (SVG) to this file.
        #[arg(long)]
        qr: Option<PathBuf>,
    },
    /// List codes (newest first).
    List {
        /// Only this user's.
        user_id: Option<String>,
    },
    /// Revoke a user's active code.
    Revoke {
        /// The user.
        user_id: String,
    },
}

/// Parses `30d`, `72h`, `90m`, `45s` into milliseconds.
fn parse_duration(text: &str) -> Result<i64, CliError> {
    let bad = || CliError { message: format!("{text:?} is not a duration: write e.g. 30d, 72h or 90m"), code: 2 };
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = number.parse().map_err(|_| bad())?;
    let unit_ms = match unit {
        "d" => 86_400_000,
        "h" => 3_600_000,
        "m" => 60_000,
        "s" => 1_000,
        _ => return Err(bad()),
    };
    n.checked_mul(unit_ms).filter(|ms| *ms > 0).ok_or_else(bad)
}

/// Runs a `regcode` command.
pub async fn run(ctx: &Ctx, cmd: RegcodeCommand) -> Result<Output, CliError> {
    let store = ctx.store().await?;
    let store = store.as_ref();
    let now = ctx.now_ms();
    match cmd {
        RegcodeCommand::Issue { users: Some(file), out_dir: Some(dir), expires, .. } => {
            let lifetime = match expires {
                Some(e) => parse_duration(&e)?,
                None => ctx.config.fido.regcode_days as i64 * 86_400_000,
            };
            notices(ctx, store, &file, &dir, lifetime).await
        }
        RegcodeCommand::Issue { user_id: None, .. } | RegcodeCommand::Issue { users: Some(_), .. } => {
            Err(CliError { message: "give a user ID, or --users FILE with --out-dir DIR".into(), code: 2 })
        }
        RegcodeCommand::Issue { user_id: Some(user_id), password, birthdate, expires, qr, .. } => {
            let lifetime = match expires {
                Some(e) => parse_duration(&e)?,
                None => ctx.config.fido.regcode_days as i64 * 86_400_000,
            };
            let password = match (password, birthdate) {
                (Some(p), _) => Password::Given(p),
                (None, Some(d)) => Password::Birthdate(d),
                (None, None) => Password::Generate,
            };
            let issued =
                regcode::issue(store, now, &ctx.actor, &ctx.config.server.public_url, &user_id, password, lifetime)
                    .await?;
            if let Some(path) = &qr {
                let code = qrcode::QrCode::new(issued.url.as_bytes())?;
                let svg = code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(240, 240).build();
                write_file(path, svg.as_bytes())?;
            }
            let mut text = format!("registration URL for {}:\n  {}\n", issued.user_id, issued.url);
            match &issued.password {
                Some(p) => text.push_str(&format!("password: {p}\n")),
                None => text.push_str("password: the user's birth date (YYYYMMDD)\n"),
            }
            text.push_str(&format!("valid until {}; any earlier code of this user no longer works", issued.expires_at));
            if let Some(path) = &qr {
                text.push_str(&format!("\nQR code written to {}", path.display()));
            }
            let mut json = serde_json::to_value(&issued)?;
            json["qr"] = json!(qr);
            Ok(Output::new(text, json))
        }
        RegcodeCommand::List { user_id } => {
            let list = regcode::list(store, now, user_id.as_deref()).await?;
            let text = lines(&list, "no registration codes", |c| {
                format!(
                    "#{}  {}  {:8}  wrong passwords {}  issued {}  until {}",
                    c.id, c.user_id, c.status, c.failures, c.issued_at, c.expires_at
                )
            });
            Ok(Output::new(text, serde_json::to_value(&list)?))
        }
        RegcodeCommand::Revoke { user_id } => {
            let revoked = regcode::revoke(store, now, &ctx.actor, &user_id).await?;
            let text = if revoked {
                format!("the registration code of {user_id} is revoked")
            } else {
                format!("{user_id} has no active registration code (issue one with `inkan regcode issue {user_id}`)")
            };
            Ok(Output::new(text, json!({ "user_id": user_id, "revoked": revoked })))
        }
    }
}

/// One user a bulk issue could not serve.
#[derive(Debug, serde::Serialize)]
struct NoticeFailure {
    line: usize,
    user_id: String,
    error: String,
}

/// What `regcode issue --users` did.
#[derive(Debug, Default, serde::Serialize)]
struct NoticeReport {
    users: usize,
    issued: usize,
    /// Users whose notice was in the folder already (a run again): left alone.
    unchanged: usize,
    failed: Vec<NoticeFailure>,
}

/// `regcode issue --users FILE --out-dir DIR`: a notice per user, one Argon2
/// hash per core at a time.
async fn notices(
    ctx: &Ctx,
    store: &dyn crate::store::Store,
    file: &std::path::Path,
    dir: &std::path::Path,
    lifetime: i64,
) -> Result<Output, CliError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError { message: format!("cannot read {} ({e})", file.display()), code: 1 })?;
    // The notices hold passwords: the folder is its owner's only.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| CliError { message: format!("cannot make {} ({e})", dir.display()), code: 1 })?;
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for line in super::csv::lines(&text) {
        let fields = match line.fields {
            Ok(f) => f,
            Err(e) => {
                failed.push(NoticeFailure { line: line.number, user_id: String::new(), error: e });
                continue;
            }
        };
        let id = fields[0].trim().to_owned();
        // One code per user: a repeated line would replace a printed one.
        if !seen.insert(id.clone()) {
            continue;
        }
        let birth = fields.get(3).map(|b| b.trim().to_owned()).filter(|b| !b.is_empty());
        rows.push((line.number, id, birth));
    }
    let report = std::sync::Mutex::new(NoticeReport { users: rows.len() + failed.len(), failed, ..Default::default() });
    let bar = std::sync::Mutex::new(super::progress::Progress::new("notices", rows.len(), ctx.json));
    let queue = std::sync::Mutex::new(rows.into_iter());
    let done = std::sync::Mutex::new(0usize);
    let now = ctx.now_ms();
    let worker = || async {
        loop {
            let Some((line, user_id, birth)) = queue.lock().unwrap_or_else(|p| p.into_inner()).next() else { break };
            let path = dir.join(format!("{user_id}.html"));
            let outcome = async {
                if crate::users::validate_id(&user_id).is_ok() && path.exists() {
                    return Ok::<_, CliError>(false);
                }
                let user = crate::users::get(store.tx(), &user_id).await?;
                let password = birth.clone().map(Password::Birthdate).unwrap_or(Password::Generate);
                let issued = regcode::issue(
                    store.tx(),
                    now,
                    &ctx.actor,
                    &ctx.config.server.public_url,
                    &user_id,
                    password,
                    lifetime,
                )
                .await?;
                crate::config::secrets::write_private(&path, notice(&user, &issued)?.as_bytes())
                    .map_err(|e| CliError { message: format!("cannot write {} ({e})", path.display()), code: 1 })?;
                Ok(true)
            }
            .await;
            {
                let mut r = report.lock().unwrap_or_else(|p| p.into_inner());
                match outcome {
                    Ok(true) => r.issued += 1,
                    Ok(false) => r.unchanged += 1,
                    Err(e) => r.failed.push(NoticeFailure { line, user_id, error: e.message }),
                }
            }
            let n = {
                let mut d = done.lock().unwrap_or_else(|p| p.into_inner());
                *d += 1;
                *d
            };
            bar.lock().unwrap_or_else(|p| p.into_inner()).set(n);
            crate::crash::point(&format!("regcode-bulk-after-{n}"));
        }
    };
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    futures_util::future::join_all((0..workers).map(|_| worker())).await;
    let mut report = report.into_inner().unwrap_or_else(|p| p.into_inner());
    report.failed.sort_by_key(|f| f.line);
    let mut text = format!(
        "{} users: {} notices written to {}, {} there already (left alone), {} failed",
        report.users,
        report.issued,
        dir.display(),
        report.unchanged,
        report.failed.len()
    );
    for f in &report.failed {
        text.push_str(&format!("\n  line {}: {}: {}", f.line, f.user_id, f.error));
    }
    let json = serde_json::to_value(&report)?;
    if report.failed.is_empty() {
        text.push_str("\n  print the notices and hand each to its user; each replaces any earlier code of that user");
        Ok(Output::new(text, json))
    } else {
        text.push_str("\n  fix these and run the same command again: notices written are kept");
        Err(CliError { message: if ctx.json { json.to_string() } else { text }, code: 4 })
    }
}

/// A printable notice (A4, Japanese) with the QR code, the URL, the password
/// (or where to find it) and the expiry, from the pages' templates.
fn notice(user: &crate::users::User, issued: &regcode::Issued) -> Result<String, CliError> {
    let qr = qrcode::QrCode::new(issued.url.as_bytes())?;
    let qr = qr.render::<qrcode::render::svg::Color<'_>>().min_dimensions(240, 240).build();
    let ctx = minijinja::context! {
        user_id => &user.id,
        name => &user.name,
        qr,
        url => &issued.url,
        password => &issued.password,
        expires => &issued.expires_at,
    };
    crate::server::pages::templates()
        .html("notice.html", "HPKIセカンド電子証明書 初期登録用QR", ctx)
        .map_err(|e| CliError::from(format!("the notice could not be written: {e}")))
}
