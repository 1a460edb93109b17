//! The audit log's time anchor: with a TSA, the chain is time-stamped at
//! its newest seal (by `inkan audit seal`, and by the server every `[tsa]
//! audit_every_secs`); `inkan audit verify` says up to which row and when
//! the log is proven to have existed, and a token that is not the TSA's,
//! or a chain rewritten under it, breaks it. Each token is also checked by
//! `openssl ts -verify` over the row's hash.

use std::time::{Duration, Instant};

use crate::harness::Env;
use crate::http::Server;
use crate::tsa::{tsa_env, Certomancer};

/// `openssl ts -verify -digest` of a stored token over its row's hash.
fn openssl_checks(env: &Env, tsa: &Certomancer, seq: i64) {
    let row = env.sql_ok(&format!("SELECT hash, token FROM audit_timestamps WHERE seq = {seq}"));
    let (hash, token) = row[0].split_once('|').expect("hash|token");
    let unhex = |h: &str| {
        let h = h.trim_start_matches("\\x");
        (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex")).collect::<Vec<u8>>()
    };
    let token_path = env.path(&format!("audit-{seq}.tst"));
    std::fs::write(&token_path, unhex(token)).expect("token");
    let out = std::process::Command::new("openssl")
        .args(["ts", "-verify", "-token_in", "-in"])
        .arg(&token_path)
        .args(["-digest", hash.trim_start_matches("\\x"), "-CAfile"])
        .arg(&tsa.root)
        .output()
        .expect("openssl");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("Verification: OK"), "openssl ts -verify: {text}");
}

#[test]
fn the_audit_log_is_time_stamped_at_its_seals_and_verify_says_until_when_it_is_proven() {
    let tsa = Certomancer::start();
    let env = Env::new();
    let mut vars = tsa_env(&tsa);
    vars.push(("INKAN_TSA_AUDIT_EVERY_SECS", "1".into()));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.add_user("900001", "doctor");
    env.add_user("900002", "doctor");

    // `inkan audit seal` seals and time-stamps the head.
    let r = env.run_with(&["--json", "audit", "seal"], &vars);
    assert_eq!(r.code, 0, "{r:?}");
    let head = env.audit_rows();
    assert_eq!(r.json()["timestamped"]["seq"], head, "{}", r.stdout);
    openssl_checks(&env, &tsa, head);
    let r = env.run_with(&["audit", "verify"], &vars);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains(&format!("time-stamped through row {head}: the log up to it existed by ")),
        "{}",
        r.stdout
    );
    // Without the TSA's anchors they are counted, not trusted.
    let r = env.run(&["audit", "verify"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("1 time-stamps NOT checked"), "{}", r.stdout);

    // A running server time-stamps the newest seal when it is due.
    let server = Server::start(&env, &vars);
    env.add_user("900003", "doctor");
    let head = env.audit_rows();
    let started = Instant::now();
    let proven = loop {
        let v = env.run_with(&["--json", "audit", "verify"], &vars).json();
        if v["time"]["proven_through"] == head {
            break v;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "not time-stamped: {v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(proven["time"]["checked"], true, "{proven}");
    assert!(proven["time"]["tsa"].as_str().is_some_and(|t| !t.is_empty()), "{proven}");
    openssl_checks(&env, &tsa, head);
    drop(server);

    // Someone with the database: the newest token swapped for an older
    // one (over another row's hash) is not a proof of this row.
    let on = if env.on_postgres() { " ON audit_timestamps" } else { "" };
    let first = env.sql_ok("SELECT min(seq) FROM audit_timestamps")[0].clone();
    env.sql_ok(&format!(
        "DROP TRIGGER audit_timestamps_append_only_update{on}; \
         UPDATE audit_timestamps SET token = (SELECT token FROM audit_timestamps WHERE seq = {first}) WHERE seq = {head}; \
         SELECT 1"
    ));
    let r = env.run_with(&["audit", "verify"], &vars);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains(&format!("broken at row {head}")) && r.stderr.contains("does not check"), "{}", r.stderr);
}
