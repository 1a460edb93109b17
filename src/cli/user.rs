//! `inkan user ...`

use clap::Subcommand;
use serde_json::json;

use super::context::{lines, CliError, Ctx, Output};
use super::key::key_line;
use super::progress::Progress;
use crate::clock::rfc3339;
use crate::keys::{self, KeyView};
use crate::pki::profile::Qualification;
use crate::users;

/// `inkan user ...`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user.
    Add {
        /// User ID (本人ID), e.g. 999001-jpa.
        user_id: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// doctor, dentist or pharmacist.
        #[arg(long)]
        qualification: Qualification,
    },
    /// Add many users from a CSV file: `user_id,name,qualification[,birth date]`
    /// per line (a header line and `#` comments are skipped). Rows in error are
    /// reported and the others imported; run it again after fixing them or
    /// after a kill: existing identical users are left as they are.
    Import {
        /// The CSV file (UTF-8).
        file: std::path::PathBuf,
    },
    /// List users.
    List,
    /// Show a user with their keys.
    Show {
        /// User ID.
        user_id: String,
    },
    /// Disable a user: they can no longer sign.
    Disable {
        /// User ID.
        user_id: String,
    },
    /// Enable a disabled user.
    Enable {
        /// User ID.
        user_id: String,
    },
    /// Users are never removed (their signatures must stay attributable):
    /// says so, and what to do instead. Changes nothing.
    Remove {
        /// User ID.
        user_id: String,
    },
}

/// Runs a `user` command.
pub async fn run(ctx: &Ctx, cmd: UserCommand) -> Result<Output, CliError> {
    if let UserCommand::Remove { user_id } = &cmd {
        return Err(CliError {
            message: format!(
                "users are disabled, never removed: the audit log, the keys and the certificates of {user_id}'s \
                 signatures name them for as long as the signed documents are kept, and a removed ID could be \
                 given to someone else. To end what they can do: `inkan user disable {user_id}` (logins, \
                 signatures and sessions end), `inkan key retire {user_id} --generation N`, `inkan device remove \
                 {user_id}`, `inkan hpki unmap` / `inkan jpki unlink {user_id}`"
            ),
            code: 2,
        });
    }
    let store = ctx.store().await?;
    let store = store.as_ref();
    let clock = ctx.clock.as_ref();
    match cmd {
        UserCommand::Add { user_id, name, qualification } => {
            let u = users::add(store, clock, &ctx.actor, &user_id, &name, qualification).await?;
            Ok(Output::new(
                format!(
                    "user {} ({}, {}) added\n  next: inkan key generate {} --csr-out {}.csr",
                    u.id, u.name, u.qualification, u.id, u.id
                ),
                serde_json::to_value(&u)?,
            ))
        }
        UserCommand::Import { file } => {
            let text = std::fs::read_to_string(&file).map_err(|e| CliError {
                message: format!("cannot read {} ({e}): give a UTF-8 CSV file", file.display()),
                code: 1,
            })?;
            let (rows, failed) = parse_users_csv(&text);
            let report = users::ImportReport { rows: failed.len(), failed, ..Default::default() };
            let mut bar = Progress::new("users", rows.len(), ctx.json);
            let mut progress = |done: usize| bar.set(done);
            let report = users::import(store, clock, &ctx.actor, &rows, report, &mut progress).await?;
            let mut text = format!(
                "{} rows: {} users added, {} already there, {} refused",
                report.rows,
                report.added,
                report.unchanged,
                report.failed.len()
            );
            for f in &report.failed {
                text.push_str(&format!("\n  line {}: {}: {}", f.line, f.user_id, f.error));
            }
            if !report.failed.is_empty() {
                text.push_str("\n  fix these rows and run the same command again: imported users are kept");
            }
            let json = serde_json::to_value(&report)?;
            if report.failed.is_empty() {
                Ok(Output::new(text, json))
            } else {
                // Exit 4: done, except the rows reported.
                Err(CliError { message: if ctx.json { json.to_string() } else { text }, code: 4 })
            }
        }
        UserCommand::List => {
            let list = users::list(store).await?;
            let text = lines(
                &list,
                "no users yet: add one with `inkan user add <USER_ID> --name <NAME> --qualification doctor`",
                |u| format!("{}  {}  {}  {}", u.id, u.qualification, u.status.as_str(), u.name),
            );
            Ok(Output::new(text, serde_json::to_value(&list)?))
        }
        UserCommand::Show { user_id } => {
            let u = users::get(store, &user_id).await?;
            let keys: Vec<KeyView> = keys::list(store, Some(&user_id)).await?.iter().map(KeyView::from).collect();
            let mut text = format!(
                "{}  {}  {}  {}  created {}",
                u.id,
                u.name,
                u.qualification,
                u.status.as_str(),
                rfc3339(u.created_at)
            );
            for k in &keys {
                text.push_str("\n  ");
                text.push_str(&key_line(k));
            }
            Ok(Output::new(text, json!({ "user": u, "keys": keys })))
        }
        UserCommand::Disable { user_id } => {
            let u = users::set_status(store, clock, &ctx.actor, &user_id, false).await?;
            Ok(Output::new(format!("user {} disabled: signing refused from now on", u.id), serde_json::to_value(&u)?))
        }
        UserCommand::Enable { user_id } => {
            let u = users::set_status(store, clock, &ctx.actor, &user_id, true).await?;
            Ok(Output::new(format!("user {} enabled", u.id), serde_json::to_value(&u)?))
        }
        UserCommand::Remove { .. } => Err(CliError { message: "users are never removed".into(), code: 2 }),
    }
}

/// The rows of a user CSV file, and the lines that cannot be rows.
fn parse_users_csv(text: &str) -> (Vec<users::ImportRow>, Vec<users::ImportFailure>) {
    let (mut rows, mut failed) = (Vec::new(), Vec::new());
    for line in super::csv::lines(text) {
        let line_no = line.number;
        let fields = match line.fields {
            Ok(f) => f,
            Err(e) => {
                failed.push(users::ImportFailure { line: line_no, user_id: String::new(), error: e });
                continue;
            }
        };
        let id = fields[0].trim().to_owned();
        let fail = |error: String| users::ImportFailure { line: line_no, user_id: id.clone(), error };
        if !(3..=4).contains(&fields.len()) {
            failed.push(fail(format!("{} fields: a row is user_id,name,qualification[,birth date]", fields.len())));
            continue;
        }
        if let Some(birth) = fields.get(3).map(|b| b.trim()).filter(|b| !b.is_empty()) {
            if !crate::fido::regcode::is_birthdate(birth) {
                failed.push(fail(format!("birth date {birth:?}: write a date of the calendar, 8 digits, YYYYMMDD")));
                continue;
            }
        }
        rows.push(users::ImportRow { line: line_no, id, name: fields[1].clone(), qualification: fields[2].clone() });
    }
    (rows, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_quotes_headers_and_bad_lines() {
        let text = "user_id,name,qualification\n\
                    # a comment\n\
                    100001,山田 太郎,doctor\n\
                    \"100002\",\"佐藤, \"\"花子\"\"\",pharmacist,19800123\r\n\
                    \n\
                    100003,only two\n\
                    100004,\"open,dentist\n";
        let (rows, failed) = parse_users_csv(text);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!((rows[0].line, rows[0].id.as_str(), rows[0].name.as_str()), (3, "100001", "山田 太郎"));
        assert_eq!((rows[1].id.as_str(), rows[1].name.as_str()), ("100002", "佐藤, \"花子\""));
        assert_eq!(failed.iter().map(|f| f.line).collect::<Vec<_>>(), vec![6, 7]);
        assert!(failed[0].error.contains("2 fields"), "{failed:?}");
        assert!(failed[1].error.contains("not closed"), "{failed:?}");
    }
}
