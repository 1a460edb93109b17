//! Operating inkan: structured logs and request ids, the configuration
//! explained and checked, the systemd unit.

use base64ct::{Base64, Encoding};
use serde_json::{json, Value};

use crate::harness::{fixture, root, Env};
use crate::http::{login, register_client, Client, Server};

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8")
}

/// Signs one digest with `X-Request-Id: chosen`; returns the answer's id.
fn sign_with_id(server: &Server, access: &str, chosen: &str) -> String {
    let bearer = format!("Bearer {access}");
    let body = json!({ "hashes": [Base64::encode_string(&[7u8; 32])] }).to_string();
    let r = Client::new().post(
        &server.url("/api/v1/sign-hashes"),
        &[("authorization", &bearer), ("content-type", "application/json"), ("x-request-id", chosen)],
        body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.headers.get("x-request-id").cloned().expect("every answer names its request")
}

/// The request ids the audit log's signature rows name, newest first.
fn signed_request_ids(env: &Env) -> Vec<String> {
    let rows = env.json(&["audit", "tail", "--limit", "50"]);
    rows.as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["event"] == "sign")
        .map(|r| {
            let detail: Value = serde_json::from_str(r["detail"].as_str().expect("detail")).expect("JSON detail");
            detail["request_id"].as_str().expect("a signature's row names its request").to_owned()
        })
        .collect()
}

#[test]
fn json_logs_name_every_request_which_its_answer_and_audit_row_carry_and_hold_no_secret() {
    let env = Env::new();
    env.user_with_key("100001", "rsa2048");
    env.ok(&["hpki", "map", "100001", s(&fixture("holders/hpki-doctor.pem"))]);
    let client = register_client(&env);
    let mut server = Server::start(&env, &[("INKAN_LOG", "debug"), ("INKAN_LOG_FORMAT", "json")]);
    let tokens = login(&server, &client, "hpki-doctor", "hpki");
    let access = tokens["access_token"].as_str().expect("access").to_owned();

    // A client not trusted with ids gets one made for it.
    let made = sign_with_id(&server, &access, "chosen-by-the-client");
    assert_ne!(made, "chosen-by-the-client");
    assert!(made.len() == 24 && made.bytes().all(|b| b.is_ascii_hexdigit()), "{made}");
    assert_eq!(signed_request_ids(&env).first(), Some(&made), "the audit row names the request");
    let refused = Client::new().get(&server.url("/api/v1/me"), &[]);
    assert_eq!(refused.status, 401);
    assert!(refused.headers.contains_key("x-request-id"), "refusals are named too");

    let log = server.kill();
    let lines: Vec<Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))).collect();
    for l in &lines {
        for field in ["timestamp", "level", "target"] {
            assert!(l.get(field).is_some(), "{field} missing: {l}");
        }
    }
    let access_line = lines
        .iter()
        .find(|l| l["target"] == "inkan::access" && l["route"] == "/api/v1/sign-hashes")
        .expect("an access line for the signature");
    assert_eq!(access_line["level"], "INFO");
    assert_eq!(access_line["method"], "POST");
    assert_eq!(access_line["status"], 200);
    assert!(access_line["ms"].as_f64().is_some_and(|ms| ms > 0.0), "{access_line}");
    assert_eq!(access_line["span"]["request_id"], made.as_str());
    let token_line = lines.iter().find(|l| l["target"] == "inkan::access" && l["route"] == "/oidc/token");
    assert!(token_line.is_some_and(|l| l["status"] == 200), "the token exchange is logged");

    // No secret in any field: the client's secret, the tokens, the PINs.
    let mut secrets = vec![crate::harness::USER_PIN.to_owned(), crate::harness::SO_PIN.to_owned()];
    secrets.push(client.secret.clone());
    secrets.push(access.clone());
    secrets.extend(["refresh_token", "id_token"].iter().filter_map(|k| tokens[*k].as_str().map(str::to_owned)));
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "a secret reached the log");
    }
    assert!(lines.len() >= 6, "one line a request at least: {log}");
}

#[test]
fn a_trusted_client_names_its_requests_and_others_cannot() {
    let env = Env::new();
    env.user_with_key("100001", "rsa2048");
    env.ok(&["hpki", "map", "100001", s(&fixture("holders/hpki-doctor.pem"))]);
    let client = register_client(&env);
    let server = Server::start(&env, &[("INKAN_SERVER_REQUEST_ID_FROM", "127.0.0.0/8")]);
    let access = login(&server, &client, "hpki-doctor", "hpki")["access_token"].as_str().expect("a").to_owned();
    assert_eq!(sign_with_id(&server, &access, "rx-system:42.a_b-c"), "rx-system:42.a_b-c");
    assert_eq!(signed_request_ids(&env).first().map(String::as_str), Some("rx-system:42.a_b-c"));
    // An id that could forge a log line or hide in one is replaced.
    for bad in ["two words", "x\"}{\"level\":\"ERROR", &"a".repeat(65)] {
        let id = sign_with_id(&server, &access, bad);
        assert!(id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{bad:?} → {id}");
    }
}

#[test]
fn config_example_explains_every_setting_and_check_shows_what_is_in_effect() {
    let env = Env::new();
    // The example needs no configuration, reads back as the defaults, and
    // names every setting's variable.
    let bare = std::process::Command::new(env!("CARGO_BIN_EXE_inkan"))
        .args(["--config", "/nonexistent/inkan.toml", "config", "example"])
        .output()
        .expect("inkan");
    assert!(bare.status.success(), "{}", String::from_utf8_lossy(&bare.stderr));
    let example = String::from_utf8(bare.stdout).expect("utf-8");
    let table: toml::Table = toml::from_str(&example).expect("the example is a configuration file");
    assert_eq!(table["limits"]["connections"].as_integer(), Some(4096));
    for var in ["INKAN_DATA_DIR", "INKAN_TOKEN_USER_PIN", "INKAN_LOG_FORMAT", "INKAN_SERVER_REQUEST_ID_FROM"] {
        assert!(example.contains(&format!("# env: {var}\n")), "{var}");
    }
    let described = env.json(&["config", "example"]);
    assert_eq!(described["settings"].as_object().map(|m| m.len()), Some(84));
    assert!(described["settings"]["limits.connections"]["explanation"]
        .as_str()
        .is_some_and(|e| e.contains("listener")));

    // check: the file's and the environment's values, secrets hidden.
    let run = env.run_with(
        &["--json", "config", "check"],
        &[("INKAN_TOKEN_USER_PIN", "hidden-user-pin"), ("INKAN_STORE_URL", "postgres://inkan:hidden-pw@db/inkan")],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(!run.stdout.contains("hidden-user-pin") && !run.stdout.contains("hidden-pw"), "{}", run.stdout);
    let checked: Value = serde_json::from_str(&run.stdout).expect("json");
    assert_eq!(checked["valid"], true);
    assert_eq!(checked["settings"]["token.user_pin"]["value"], "***");
    assert_eq!(checked["settings"]["token.user_pin"]["from"], "environment");
    assert_eq!(checked["settings"]["store.url"]["value"], "postgres://inkan:***@db/inkan");
    assert_eq!(checked["settings"]["data_dir"]["from"], "file");
    assert_eq!(checked["settings"]["limits.connections"]["from"], "default");
    assert!(checked["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .any(|w| w.as_str().is_some_and(|w| w.contains("fixture PKI"))));

    // A missing file is a problem (exit 2); a bad value an error naming it.
    let run = env.run_with(&["config", "check"], &[("INKAN_PKI_SIGNING_CA", "/nonexistent/ca.pem")]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("pki.signing_ca names /nonexistent/ca.pem, which does not exist"), "{}", run.stdout);
    let run = env.run_with(&["config", "check"], &[("INKAN_LOG_FORMAT", "xml")]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("INKAN_LOG_FORMAT must be text or json"), "{}", run.stderr);
}

#[test]
fn the_systemd_unit_is_accepted_by_systemd_analyze_and_is_hardened() {
    let unit = root().join("deploy/inkan.service");
    let text = std::fs::read_to_string(&unit).expect("deploy/inkan.service");
    for line in [
        "User=inkan",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/inkan",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "ExecStart=/usr/local/bin/inkan --config /etc/inkan/inkan.toml serve",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing from the unit");
    }
    // systemd-analyze checks the unit's syntax and that ExecStart's binary
    // exists: a copy whose ExecStart names this build's binary.
    let dir = tempfile::tempdir().expect("tmp");
    let copy = dir.path().join("inkan.service");
    let bin = env!("CARGO_BIN_EXE_inkan");
    std::fs::write(&copy, text.replace("/usr/local/bin/inkan", bin)).expect("copy");
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .expect("systemd-analyze (Debian's systemd package)");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // In a container without systemd running, verify still parses the unit;
    // what it says about the unit itself must be nothing.
    let about_unit: Vec<&str> = said.lines().filter(|l| l.contains("inkan.service")).collect();
    assert!(out.status.success() && about_unit.is_empty(), "systemd-analyze verify: {said}");
    // And its sandbox: systemd's own measure of what the service is exposed to.
    let out = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&copy)
        .output()
        .expect("systemd-analyze security");
    let said = String::from_utf8_lossy(&out.stdout);
    let level: f64 = said
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for inkan.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level: {said}"));
    assert!(level <= 2.0, "exposure {level} (0 is the least, 10 the most): {said}");
}

/// Every time in a JSON document is RFC 3339: no Unix-millisecond numbers,
/// and every field named for a time holds `YYYY-MM-DDThh:mm:ss[.fff]Z` or null.
fn times_are_rfc3339(v: &Value, path: &str) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let timed = k == "at" || k.ends_with("_at") || k.ends_with("_since") || k.ends_with("_time");
                if timed && !v.is_null() {
                    let t = v.as_str().unwrap_or_else(|| panic!("{path}.{k} is not text: {v}"));
                    let b = t.as_bytes();
                    let shaped = b.len() >= 20
                        && b[4] == b'-'
                        && b[7] == b'-'
                        && b[10] == b'T'
                        && b[13] == b':'
                        && t.ends_with('Z');
                    assert!(shaped, "{path}.{k} is not RFC 3339: {t}");
                }
                times_are_rfc3339(v, &format!("{path}.{k}"));
            }
        }
        Value::Array(items) => {
            items.iter().enumerate().for_each(|(i, v)| times_are_rfc3339(v, &format!("{path}[{i}]")))
        }
        Value::Number(n) => {
            assert!(n.as_i64().is_none_or(|n| n.abs() < 100_000_000_000), "{path} looks like a Unix time: {n}")
        }
        _ => {}
    }
}

#[test]
fn every_json_time_the_cli_prints_is_rfc3339() {
    let env = Env::new();
    env.user_with_key("100001", "rsa2048");
    env.ok(&["hpki", "map", "100001", s(&fixture("holders/hpki-doctor.pem"))]);
    env.ok(&["jpki", "link", "100001", s(&fixture("holders/jpki-1.pem"))]);
    env.ok(&["regcode", "issue", "100001", "--password", "secret-123"]);
    register_client(&env);
    let commands: &[&[&str]] = &[
        &["user", "list"],
        &["user", "show", "100001"],
        &["key", "list"],
        &["client", "list"],
        &["session", "list"],
        &["hpki", "list"],
        &["jpki", "list"],
        &["regcode", "list"],
        &["device", "show", "100001"],
        &["kek", "status"],
        &["audit", "tail"],
        &["audit", "verify"],
    ];
    for args in commands {
        let v = env.json(args);
        times_are_rfc3339(&v, &args.join(" "));
    }
    let tail = env.json(&["audit", "tail"]);
    assert!(tail[0]["at"].as_str().is_some(), "{tail}");
    // The exported seals too, and they read back.
    let heads = env.ok(&["audit", "heads"]);
    for line in heads.lines() {
        times_are_rfc3339(&serde_json::from_str(line).expect("a JSON line"), "audit heads");
    }
    let file = env.path("heads.jsonl");
    std::fs::write(&file, &heads).expect("heads");
    env.ok(&["audit", "verify", "--heads", s(&file)]);
    // Exports made before (Unix ms) still read.
    let old: Vec<String> = heads
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).expect("line");
            v["at"] = json!(1_796_553_358_036_i64);
            v.to_string()
        })
        .collect();
    std::fs::write(&file, old.join("\n")).expect("heads");
    env.ok(&["audit", "verify", "--heads", s(&file)]);
}

#[test]
fn users_are_not_removed_and_the_cli_says_what_to_do_instead() {
    let env = Env::new();
    env.add_user("100001", "doctor");
    let rows = env.audit_rows();
    let run = env.run(&["user", "remove", "100001"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("never removed") && run.stderr.contains("inkan user disable 100001"), "{}", run.stderr);
    assert_eq!(env.json(&["user", "show", "100001"])["user"]["status"], "active", "nothing changed");
    assert_eq!(env.audit_rows(), rows);
}

#[test]
fn a_backup_taken_under_signing_load_restores_elsewhere_signs_and_verifies() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let env = Env::new();
    env.user_with_key("100001", "rsa2048");
    env.ok(&["hpki", "map", "100001", s(&fixture("holders/hpki-doctor.pem"))]);
    let client = register_client(&env);
    let server = Server::start(&env, &[]);
    let access = login(&server, &client, "hpki-doctor", "hpki")["access_token"].as_str().expect("a").to_owned();

    // Two clients sign without pause while the backup is taken.
    let (stop, signed) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..2)
        .map(|_| {
            let (stop, signed, url, access) =
                (Arc::clone(&stop), Arc::clone(&signed), server.url("/api/v1/sign-hashes"), access.clone());
            std::thread::spawn(move || {
                let body = json!({ "hashes": [Base64::encode_string(&[9u8; 32])] });
                while !stop.load(Ordering::Relaxed) {
                    let r = Client::new().post_json(&url, &access, &body);
                    assert_eq!(r.status, 200, "{}", r.text());
                    signed.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    while signed.load(Ordering::Relaxed) < 20 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = env.path("backup");
    let during = signed.load(Ordering::Relaxed);
    let manifest = env.json(&["backup", "--out", s(&out)]);
    std::thread::sleep(std::time::Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    load.into_iter().for_each(|t| t.join().expect("load"));
    assert!(signed.load(Ordering::Relaxed) > during, "signing went on during the backup");
    assert!(manifest["audit_rows_at_least"].as_i64().is_some_and(|n| n > 20), "{manifest}");
    let taken = std::fs::read_dir(&out).expect("backup").count();
    if env.on_postgres() {
        let how = manifest["database"]["external"].as_str().expect("what to run instead");
        assert!(how.starts_with("pg_dump "), "{how}");
        return;
    }
    assert_eq!(manifest["database"]["file"], "inkan.db");
    assert_eq!(manifest["token"], "softhsm");
    assert!(taken >= 3, "database, token, manifest (the PINs are configured here)");

    // Restored into a new data directory: the keys sign, the log verifies,
    // the sessions it held are over.
    let elsewhere = env.path("restored");
    let there = [("INKAN_DATA_DIR", s(&elsewhere))];
    let run = env.run_with(&["--json", "restore", s(&out)], &there);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let restored: Value = serde_json::from_str(&run.stdout).expect("json");
    assert_eq!(restored["sessions_ended"], 1);
    assert!(restored["audit"]["broken"].is_null() && restored["audit"]["seals_checked"] == true, "{restored}");
    assert!(restored["audit"]["rows"].as_i64() > manifest["audit_rows_at_least"].as_i64());
    let doc = env.path("after-restore.txt");
    std::fs::write(&doc, "処方箋 after a restore").expect("doc");
    let sig = env.path("after-restore.p7s");
    let run = env.run_with(&["sign", "100001", s(&doc), "--out", s(&sig)], &there);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let (ok, err) = crate::harness::openssl_verify(&sig, Some(&doc));
    assert!(ok, "openssl cms -verify: {err}");
    assert_eq!(env.run_with(&["audit", "verify"], &there).code, 0);
    let restored_server = Server::start(&env, &there);
    let r = Client::new().post_json(
        &restored_server.url("/api/v1/sign-hashes"),
        &access,
        &json!({ "hashes": [Base64::encode_string(&[9u8; 32])] }),
    );
    assert_eq!(r.status, 401, "a session of before the restore is over");
    let again = login(&restored_server, &client, "hpki-doctor", "hpki")["access_token"].as_str().expect("a").to_owned();
    let r = Client::new().post_json(
        &restored_server.url("/api/v1/sign-hashes"),
        &again,
        &json!({ "hashes": [Base64::encode_string(&[9u8; 32])] }),
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // Never over a data directory in use; never from an altered backup.
    let run = env.run(&["restore", s(&out)]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("is not empty: a restore makes a new one"), "{}", run.stderr);
    let db = out.join("inkan.db");
    let mut bytes = std::fs::read(&db).expect("db");
    bytes[5000] ^= 1;
    std::fs::write(&db, bytes).expect("flip");
    let third = env.path("third");
    let run = env.run_with(&["restore", s(&out)], &[("INKAN_DATA_DIR", s(&third))]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("inkan.db in the backup is not what was backed up"), "{}", run.stderr);
    assert!(!third.exists(), "nothing made from an altered backup");
    // A second backup into the same directory is refused; an incomplete one is taken again.
    assert!(env.fails(&["backup", "--out", s(&out)]).contains("already holds a backup"));
    // A run cut short leaves its marker and no manifest: taken again. A
    // directory without the marker is never cleared.
    std::fs::remove_file(out.join("manifest.json")).expect("rm");
    assert!(env.fails(&["backup", "--out", s(&out)]).contains("is not an incomplete backup"));
    std::fs::write(out.join(".inkan-backup-incomplete"), "").expect("marker");
    let again = env.json(&["backup", "--out", s(&out)]);
    assert!(!out.join(".inkan-backup-incomplete").exists());
    assert!(again["files"].as_array().is_some_and(|f| f.len() >= 3));
    env.run_with(&["restore", s(&out)], &[("INKAN_DATA_DIR", s(&third))]);
    assert!(third.join("inkan.db").exists());
}

#[test]
fn old_audit_rows_move_to_sealed_segments_that_verify_and_every_tampering_is_caught() {
    let env = Env::new();
    env.user_with_key("100001", "rsa2048");
    env.ok(&["hpki", "map", "100001", s(&fixture("holders/hpki-doctor.pem"))]);
    let client = register_client(&env);
    let server = Server::start(&env, &[]);
    let access = login(&server, &client, "hpki-doctor", "hpki")["access_token"].as_str().expect("a").to_owned();
    let sign = || {
        let body = json!({ "hashes": [Base64::encode_string(&[5u8; 32])] });
        let r = Client::new().post_json(&server.url("/api/v1/sign-hashes"), &access, &body);
        assert_eq!(r.status, 200, "{}", r.text());
    };
    for _ in 0..5 {
        sign();
    }
    for i in 0..3 {
        env.add_user(&format!("20000{i}"), "pharmacist");
    }
    let dir = env.path("audit-archive");
    // Sealed now (a running server seals within a second): the rows up to
    // the seal before the token's last one can go.
    env.ok(&["audit", "seal"]);
    let before = env.audit_rows();

    // While the server signs and seals: the first segment.
    let first = env.json(&["audit", "archive", "--out", s(&dir), "--before", "2100-01-01"]);
    let one = first["archived"]["seq"].as_i64().expect("a segment");
    assert_eq!(first["archived"]["first"], 1);
    assert_eq!(first["rows"], one);
    assert_eq!(first["pruned"].as_u64(), Some(one as u64), "its rows left the live store");
    sign();
    let v = env.json(&["audit", "verify"]);
    assert_eq!(v["archived_through"], one);
    assert_eq!(v["rows"].as_i64().expect("rows") + one, before + 2, "the live chain goes on from the segment");
    // A second segment links to the first.
    env.add_user("300001", "doctor");
    env.ok(&["audit", "seal"]);
    let second = env.json(&["audit", "archive", "--out", s(&dir), "--before", "2100-01-01"]);
    let two = second["archived"]["seq"].as_i64().expect("a second segment");
    assert_eq!(second["archived"]["first"].as_i64(), Some(one + 1));
    let checked = env.json(&["audit", "verify", "--archive", s(&dir)]);
    assert_eq!(checked["archive"]["segments"], 2);
    assert_eq!(checked["archive"]["rows"].as_i64(), Some(two));
    assert!(checked["archive"]["seals"].as_u64().is_some_and(|n| n >= 2), "{checked}");
    // One archive at a time in a directory (cron jobs on several nodes).
    let held = std::fs::File::open(dir.join(".inkan-archive.lock")).expect("the archive's lock file");
    held.lock().expect("held by another run");
    let run = env.run(&["audit", "archive", "--out", s(&dir), "--before", "2100-01-01"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("another `inkan audit archive` is writing"), "{}", run.stderr);
    drop(held);
    // Nothing older than --before: nothing archived, nothing changed.
    let none = env.json(&["audit", "archive", "--out", s(&dir), "--before", "2000-01-01"]);
    assert!(none["archived"].is_null());

    // A flipped byte in a segment, a missing segment: caught by name.
    let files: Vec<std::path::PathBuf> = {
        let mut f: Vec<_> = std::fs::read_dir(&dir)
            .expect("dir")
            .map(|e| e.expect("e").path())
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("audit-")))
            .collect();
        f.sort();
        f
    };
    assert_eq!(files.len(), 2);
    let original = std::fs::read(&files[0]).expect("segment");
    let mut flipped = original.clone();
    let at = original.windows(9).position(|w| w == b"user.add\"").expect("a row") + 2;
    flipped[at] ^= 0x01;
    std::fs::write(&files[0], &flipped).expect("flip");
    let run = env.run(&["audit", "verify", "--archive", s(&dir)]);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("archive broken: segment audit-000000000001-"), "{}", run.stderr);
    std::fs::write(&files[0], &original).expect("put back");
    std::fs::remove_file(&files[1]).expect("remove");
    let run = env.run(&["audit", "verify", "--archive", s(&dir)]);
    assert_eq!(run.code, 3);
    assert!(run.stderr.contains("is missing from"), "{}", run.stderr);

    // The live store still refuses to delete a row that is not archived, and
    // a forged archive record (to delete rows under it) is caught.
    let live = two + 1;
    assert!(env.sql(&format!("DELETE FROM audit WHERE seq = {live}")).is_err(), "live rows are append-only");
    let forged = format!(
        "INSERT INTO audit_archive (first, seq, hash, seal_mac, segment, file, at, prev_mac, mac) \
         SELECT {first}, seq, hash, x'00', x'00', 'forged', 0, x'', x'00' FROM audit WHERE seq = {live}; \
         DELETE FROM audit WHERE seq = {live}",
        first = two + 1
    );
    let forged =
        if env.on_postgres() { forged.replace("x''", "''::bytea").replace("x'00'", "'\\x00'::bytea") } else { forged };
    env.sql(&forged).expect("an attacker with the database's keys");
    let run = env.run(&["audit", "verify"]);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("was not made by this token's seal key"), "{}", run.stderr);
}

/// A port free with the one after it (a listener and its card listener).
fn free_pair() -> u16 {
    loop {
        let port = crate::http::free_port();
        if port < 65000 && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

#[test]
fn the_two_node_recipe_runs_as_written() {
    // deploy/two-nodes.sh, as a new operator runs it: PostgreSQL, the role
    // and database, two nodes on one token, HAProxy in front; then a card
    // login through the front door whose session signs on both nodes.
    // The ports are picked free just before; another test of this binary may
    // take one meanwhile (a node then cannot listen): tried again with new ones.
    let (out, said) = (1..=3)
        .map(|_| {
            let dir = tempfile::tempdir().expect("tmp");
            let out = std::process::Command::new(root().join("deploy/two-nodes.sh"))
                .arg("--check")
                .arg(dir.path().join("recipe"))
                .env("INKAN_BIN", env!("CARGO_BIN_EXE_inkan"))
                .env("INKAN_RECIPE_PG_PORT", crate::http::free_port().to_string())
                .env("INKAN_RECIPE_A_PORT", free_pair().to_string())
                .env("INKAN_RECIPE_B_PORT", free_pair().to_string())
                .env("INKAN_RECIPE_LB_PORT", free_pair().to_string())
                .env_remove("INKAN_CONFIG")
                .output()
                .expect("deploy/two-nodes.sh");
            let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            (out, said)
        })
        .find(|(out, said)| out.status.success() || !said.contains("cannot listen"))
        .unwrap_or_else(|| panic!("the recipe's ports were taken three times"));
    assert!(out.status.success(), "the recipe failed:\n{said}");
    for step in ["1. PostgreSQL", "2. the role and the database", "4. the token and the schema", "6. HAProxy"] {
        assert!(said.contains(step), "{step} missing:\n{said}");
    }
    assert_eq!(said.matches("openssl cms -verify: ok").count(), 2, "{said}");
    assert!(said.contains("check passed"), "{said}");
    assert!(!said.contains("PINs in"), "the PINs stay in the environment:\n{said}");
}
