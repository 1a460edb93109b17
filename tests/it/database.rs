//! The PostgreSQL store itself (whatever `INKAN_TEST_STORE` says): the same
//! schema as SQLite's, migrations by several processes at once, TLS to the
//! database, no password in any message.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use crate::harness::{fixture, root, Env};
use crate::postgres;

/// Tables only PostgreSQL has: SQLite keeps their contents in one process's
/// memory (pending logins, SADs) or in a file (the auth epoch), or counts its
/// schema in `PRAGMA user_version`.
const POSTGRES_ONLY: &[&str] = &["auth_epoch", "oidc_requests", "oidc_codes", "sads", "inkan_schema"];

fn set(rows: Vec<String>) -> BTreeSet<String> {
    rows.into_iter().collect()
}

#[test]
fn both_backends_have_the_same_schema_version_tables_columns_and_indexes() {
    let sqlite = Env::bare_on(false);
    sqlite.ok(&["init"]);
    let pg = Env::bare_on(true);
    pg.ok(&["init"]);

    assert_eq!(sqlite.sql_ok("PRAGMA user_version"), pg.sql_ok("SELECT version FROM inkan_schema"));

    // Each column with whether it may be NULL (a primary key column may not,
    // in SQLite's STRICT tables as in PostgreSQL).
    let sqlite_columns = set(sqlite.sql_ok(
        "SELECT m.name || '.' || p.name || CASE WHEN p.\"notnull\" = 1 OR p.pk > 0 THEN ' not null' ELSE '' END
         FROM sqlite_master m, pragma_table_info(m.name) p WHERE m.type = 'table'",
    ));
    let pg_columns = set(pg.sql_ok(
        "SELECT table_name || '.' || column_name || CASE WHEN is_nullable = 'NO' THEN ' not null' ELSE '' END
         FROM information_schema.columns WHERE table_schema = 'public'",
    ));
    let shared: BTreeSet<String> = pg_columns
        .iter()
        .filter(|c| !POSTGRES_ONLY.contains(&c.split('.').next().unwrap_or_default()))
        .cloned()
        .collect();
    assert_eq!(sqlite_columns, shared, "a migration was added to one backend only, or differs");
    assert!(sqlite_columns.len() > 80, "the schema was read: {sqlite_columns:?}");

    let sqlite_indexes =
        set(sqlite.sql_ok("SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_autoindex%'"));
    let pg_indexes = set(pg.sql_ok(
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'
         AND indexname NOT LIKE '%_pkey' AND indexname NOT LIKE '%_key'",
    ));
    let pg_shared: BTreeSet<String> =
        pg_indexes.iter().filter(|i| !POSTGRES_ONLY.iter().any(|t| i.starts_with(t))).cloned().collect();
    assert_eq!(sqlite_indexes, pg_shared);

    let sqlite_triggers = set(sqlite.sql_ok("SELECT name FROM sqlite_master WHERE type = 'trigger'"));
    let pg_triggers = set(pg.sql_ok("SELECT DISTINCT trigger_name FROM information_schema.triggers"));
    assert!(sqlite_triggers.is_subset(&pg_triggers), "{sqlite_triggers:?} {pg_triggers:?}");
    let truncate = set(pg.sql_ok("SELECT tgname FROM pg_trigger WHERE tgname = 'audit_append_only_truncate'"));
    assert_eq!(truncate.len(), 1, "PostgreSQL also refuses TRUNCATE of the audit log");
}

#[test]
fn processes_that_open_a_new_database_at_once_migrate_it_once() {
    let env = Env::bare_on(true);
    env.ok(&["init"]);
    let fresh = postgres::shared().create_database();
    let started: Vec<_> = (0..4)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_inkan"))
                .arg("--config")
                .arg(&env.config)
                .args(["--json", "user", "list"])
                .env("INKAN_STORE_URL", fresh.url())
                .current_dir(root())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("inkan")
        })
        .collect();
    for child in started {
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    }
    assert_eq!(fresh.psql("SELECT version FROM inkan_schema").expect("version"), vec!["11"]);
    assert_eq!(fresh.psql("SELECT seq FROM audit_head").expect("head"), vec!["0"]);
}

#[test]
fn tls_to_postgres_verifies_the_server_with_the_configured_ca() {
    // it_tls accepts TLS connections only (pg_hba.conf of the test cluster).
    let env = Env::bare_with(Some(postgres::shared().tls_database()));
    let root_ca = fixture("hpki-root.pem");
    let root_ca = root_ca.to_str().expect("utf-8");

    let r = env.run(&["init"]);
    assert_ne!(r.code, 0, "a plain connection is refused by the server");
    assert!(r.stderr.contains("cannot open the database") && r.stderr.contains("no encryption"), "{}", r.stderr);

    let r = env.run_with(&["init"], &[("INKAN_STORE_CA", fixture("jpki-root.pem").to_str().expect("utf-8"))]);
    assert_ne!(r.code, 0, "a server certificate from another CA is refused");
    assert!(r.stderr.to_lowercase().contains("certificate"), "{}", r.stderr);

    let r = env.run_with(&["init"], &[("INKAN_STORE_CA", root_ca)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = env.run_with(
        &["--json", "user", "add", "100001", "--name", "試験", "--qualification", "doctor"],
        &[("INKAN_STORE_CA", root_ca)],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let ssl = env.db.as_ref().expect("db").psql("SELECT count(*) FROM users").expect("rows");
    assert_eq!(ssl, vec!["1"]);

    // Asking for TLS without saying whom to trust is a configuration error.
    let url = format!("{}?sslmode=require", env.db.as_ref().expect("db").url());
    let r = env.run_with(&["user", "list"], &[("INKAN_STORE_URL", &url)]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("[store] ca"), "{}", r.stderr);
}

#[test]
fn database_passwords_stay_out_of_messages() {
    let env = Env::bare_on(true);
    env.ok(&["init"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let in_url = format!("postgres://inkan:s3cret-pw@127.0.0.1:{port}/nowhere");
    // A password may hold characters that end a URL's host part elsewhere.
    let odd = format!("postgres://inkan:s3cret-pw/x?y@127.0.0.1:{port}/nowhere");
    let apart = format!("postgres://inkan@127.0.0.1:{port}/nowhere");
    for vars in [
        vec![("INKAN_STORE_URL", in_url.as_str())],
        vec![("INKAN_STORE_URL", odd.as_str())],
        vec![("INKAN_STORE_URL", apart.as_str()), ("INKAN_STORE_PASSWORD", "s3cret-pw")],
    ] {
        let r = env.run_with(&["user", "list"], &vars);
        assert_ne!(r.code, 0, "nothing listens on port {port}");
        assert!(!r.stderr.contains("s3cret-pw") && !r.stdout.contains("s3cret-pw"), "{}", r.stderr);
        assert!(r.stderr.contains("cannot open the database"), "{}", r.stderr);
    }
}
