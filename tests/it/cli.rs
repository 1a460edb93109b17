//! The operator CLI end to end: the real binary, SoftHSM, SQLite, openssl.

use crate::harness::{fixture, openssl_print, openssl_verify, Env};

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn lifecycle_generate_import_sign_rotate() {
    let env = Env::new();
    env.add_user("999001-jpa", "pharmacist");
    let csr = env.path("gen1.csr");
    let out = env.json(&["key", "generate", "999001-jpa", "--csr-out", s(&csr)]);
    assert_eq!(out["key"]["state"], "pending");
    assert_eq!(out["key"]["generation"], 1);
    let csr_text = std::fs::read_to_string(&csr).expect("csr");
    assert!(csr_text.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    // The CSR verifies with openssl and names the user.
    let req = std::process::Command::new("openssl")
        .args(["req", "-verify", "-noout", "-subject", "-in"])
        .arg(&csr)
        .output()
        .expect("openssl");
    assert!(req.status.success(), "{}", String::from_utf8_lossy(&req.stderr));
    assert!(String::from_utf8_lossy(&req.stdout).contains("serialNumber = 999001-jpa"));

    let cert1 = env.path("gen1.pem");
    env.issue(&csr, &cert1, &["--qualification", "pharmacist"]);
    let activated = env.json(&["key", "import-cert", "999001-jpa", s(&cert1)]);
    assert_eq!(activated["state"], "active");

    // Detached and attached signatures verify with openssl.
    let doc = env.path("rx.txt");
    std::fs::write(&doc, "処方箋\n".repeat(100)).expect("doc");
    let sig1 = env.path("rx1.p7s");
    env.ok(&["sign", "999001-jpa", s(&doc), "--out", s(&sig1)]);
    let (ok, err) = openssl_verify(&sig1, Some(&doc));
    assert!(ok, "openssl rejects the detached signature: {err}");
    let printed = openssl_print(&sig1);
    assert!(
        printed.contains("id-smime-aa-signingCertificateV2") || printed.contains("1.2.840.113549.1.9.16.2.47"),
        "{printed}"
    );
    for attr in ["contentType", "messageDigest", "signingTime"] {
        assert!(printed.contains(attr), "missing {attr}: {printed}");
    }
    // A changed document no longer verifies.
    let tampered = env.path("tampered.txt");
    std::fs::write(&tampered, "処方箋\n".repeat(99)).expect("doc");
    assert!(!openssl_verify(&sig1, Some(&tampered)).0);

    let attached = env.path("rx1-attached.p7s");
    env.ok(&["sign", "999001-jpa", s(&doc), "--out", s(&attached), "--attached"]);
    assert!(openssl_verify(&attached, None).0);

    // Rotation: a second generation, pending until its certificate is imported.
    let csr2 = env.path("gen2.csr");
    let rotated = env.json(&["key", "rotate", "999001-jpa", "--csr-out", s(&csr2)]);
    assert_eq!(rotated["key"]["generation"], 2);
    // Until the import, signatures still use generation 1.
    let sig_between = env.path("between.p7s");
    let signed = env.json(&["sign", "999001-jpa", s(&doc), "--out", s(&sig_between)]);
    assert_eq!(signed["generation"], 1);
    let cert2 = env.path("gen2.pem");
    env.issue(&csr2, &cert2, &["--qualification", "pharmacist"]);
    env.ok(&["key", "import-cert", "999001-jpa", s(&cert2)]);
    let keys = env.json(&["key", "list", "999001-jpa"]);
    let states: Vec<_> =
        keys.as_array().expect("list").iter().map(|k| k["state"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(states, ["retired", "active"]);

    let sig2 = env.path("rx2.p7s");
    let signed = env.json(&["sign", "999001-jpa", s(&doc), "--out", s(&sig2)]);
    assert_eq!(signed["generation"], 2);
    assert!(openssl_verify(&sig2, Some(&doc)).0);
    // The earlier signature still verifies, and the two name different certificates.
    assert!(openssl_verify(&sig1, Some(&doc)).0);
    let serial = |p: &std::path::Path| {
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-serial", "-in"])
            .arg(p)
            .output()
            .expect("openssl");
        String::from_utf8_lossy(&out.stdout).trim().trim_start_matches("serial=").to_owned()
    };
    let (s1, s2) = (serial(&cert1), serial(&cert2));
    assert_ne!(s1, s2);
    let p1 = openssl_print(&sig1).to_uppercase().replace(':', "");
    let p2 = openssl_print(&sig2).to_uppercase().replace(':', "");
    let dec = |hex: &str| u128::from_str_radix(hex, 16).map(|v| v.to_string()).unwrap_or_default();
    assert!(p1.contains(&dec(&s1)) && !p1.contains(&dec(&s2)), "first signature names the first certificate");
    assert!(p2.contains(&dec(&s2)), "second signature names the second certificate");

    // Every step is in the audit log, and the chain verifies.
    let tail = env.json(&["audit", "tail", "--user", "999001-jpa", "--limit", "100"]);
    let events: Vec<_> =
        tail.as_array().expect("rows").iter().rev().map(|r| r["event"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(
        events,
        [
            "user.add",
            "key.generate",
            "key.activate",
            "sign",
            "sign",
            "key.rotate",
            "sign",
            "key.activate",
            "key.retire",
            "sign"
        ]
    );
    assert!(env.ok(&["audit", "verify"]).contains("intact"));
}

#[test]
fn ec_p256_rsa3072_and_pss_signatures_verify() {
    let env = Env::new();
    let doc = env.path("doc.bin");
    std::fs::write(&doc, vec![0x5a; 1024]).expect("doc");
    for (id, alg) in [("200001", "p256"), ("200002", "rsa3072")] {
        env.user_with_key(id, alg);
        let sig = env.path(&format!("{id}.p7s"));
        env.ok(&["sign", id, s(&doc), "--out", s(&sig)]);
        let (ok, err) = openssl_verify(&sig, Some(&doc));
        assert!(ok, "{alg}: {err}");
    }
    // RSA-PSS by configuration.
    let sig = env.path("pss.p7s");
    let r = env.run_with(&["sign", "200002", s(&doc), "--out", s(&sig)], &[("INKAN_SIGNING_RSA_SCHEME", "pss")]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(openssl_print(&sig).contains("rsassaPss"), "PSS algorithm identifier");
    let (ok, err) = openssl_verify(&sig, Some(&doc));
    assert!(ok, "pss: {err}");
}

#[test]
fn large_document_attached_streams() {
    let env = Env::new();
    env.user_with_key("300001", "rsa2048");
    let doc = env.path("big.bin");
    let chunk: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
    let mut data = Vec::new();
    for _ in 0..6 {
        data.extend_from_slice(&chunk);
    }
    std::fs::write(&doc, &data).expect("doc");
    let sig = env.path("big.p7s");
    env.ok(&["sign", "300001", s(&doc), "--out", s(&sig), "--attached"]);
    assert!(std::fs::metadata(&sig).expect("sig").len() > data.len() as u64);
    let out = std::process::Command::new("openssl")
        .args(["cms", "-verify", "-binary", "-inform", "DER", "-in"])
        .arg(&sig)
        .arg("-CAfile")
        .arg(crate::harness::ca_bundle())
        .args(["-purpose", "any", "-out"])
        .arg(env.path("extracted.bin"))
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(env.path("extracted.bin")).expect("extracted"), data);
}

/// Generates and activates a key for a new user with `INKAN_TOKEN_KEY_STORAGE=storage`.
fn user_with_key_kept(env: &Env, id: &str, storage: &str) {
    env.add_user(id, "doctor");
    let (csr, cert) = (env.path(&format!("{id}.csr")), env.path(&format!("{id}.pem")));
    let r = env.run_with(&["key", "generate", id, "--csr-out", s(&csr)], &[("INKAN_TOKEN_KEY_STORAGE", storage)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    env.issue(&csr, &cert, &[]);
    env.ok(&["key", "import-cert", id, s(&cert)]);
}

#[test]
fn keys_are_sensitive_and_sign_only_wrapped_or_in_the_token_side_by_side() {
    let env = Env::new();
    // A key from before wrapped keys (a key pair in the token), and a new one.
    user_with_key_kept(&env, "400002", "object");
    env.user_with_key("400001", "rsa2048");
    let wrapped = env.json(&["key", "inspect", "400001"]);
    let object = env.json(&["key", "inspect", "400002"]);
    assert_eq!(wrapped["storage"], "wrapped");
    assert_eq!(object["storage"], "object");
    for p in [&wrapped, &object] {
        assert_eq!(p["sensitive"], true, "{p}");
        assert_eq!(p["extractable"], false, "{p}");
        assert_eq!(p["sign"], true, "{p}");
        assert_eq!(p["decrypt"], false, "{p}");
        assert_eq!(p["unwrap"], false, "{p}");
        assert_eq!(p["derive"], false, "{p}");
    }
    // Generated in the token and never out of it; an unwrapped key was, as a
    // blob (PKCS#11 then reports both false).
    assert_eq!(object["always_sensitive"], true);
    assert_eq!(object["never_extractable"], true);
    assert_eq!(wrapped["always_sensitive"], false);
    assert_eq!(wrapped["never_extractable"], false);
    assert!(env.ok(&["key", "inspect", "400001"]).contains("wrapped"));

    let list = env.json(&["key", "list"]);
    let storage: Vec<_> =
        list.as_array().expect("keys").iter().map(|k| (k["user_id"].clone(), k["storage"].clone())).collect();
    assert!(storage.contains(&(serde_json::json!("400001"), serde_json::json!("wrapped"))), "{storage:?}");
    assert!(storage.contains(&(serde_json::json!("400002"), serde_json::json!("object"))), "{storage:?}");
    let doc = env.path("doc.txt");
    std::fs::write(&doc, "side by side").expect("doc");
    for id in ["400001", "400002"] {
        let sig = env.path(&format!("{id}.p7s"));
        env.ok(&["sign", id, s(&doc), "--out", s(&sig)]);
        let (ok, err) = openssl_verify(&sig, Some(&doc));
        assert!(ok, "{id}: {err}");
    }
}

#[test]
fn unknown_and_duplicate_users_are_refused() {
    let env = Env::new();
    env.add_user("100001", "doctor");
    let before = env.snapshot();
    let err = env.fails(&["user", "add", "100001", "--name", "Again", "--qualification", "doctor"]);
    assert!(err.contains("exists already"), "{err}");
    let doc = env.path("d.txt");
    std::fs::write(&doc, "x").expect("doc");
    for args in [
        vec!["user", "show", "nobody"],
        vec!["key", "generate", "nobody", "--csr-out", "/tmp/never.csr"],
        vec!["key", "list", "nobody"],
        vec!["sign", "nobody", s(&doc), "--out", "/tmp/never.p7s"],
    ] {
        let err = env.fails(&args);
        assert!(err.contains("unknown user \"nobody\""), "{args:?}: {err}");
        assert!(err.contains("inkan user"), "says what to do: {err}");
    }
    let err = env.fails(&["user", "add", "bad id!", "--name", "X", "--qualification", "doctor"]);
    assert!(err.contains("invalid user ID"), "{err}");
    let r = env.run(&["user", "add", "100009", "--name", "X", "--qualification", "astronaut"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("unknown qualification"), "{}", r.stderr);
    assert_eq!(env.snapshot(), before, "failed commands changed nothing");
    assert!(!std::path::Path::new("/tmp/never.csr").exists());
}

#[test]
fn certificate_import_refuses_foreign_expired_and_unmatched() {
    let env = Env::new();
    env.add_user("500001", "doctor");
    env.add_user("500002", "doctor");
    let csr1 = env.path("a.csr");
    let csr2 = env.path("b.csr");
    env.ok(&["key", "generate", "500001", "--csr-out", s(&csr1)]);
    env.ok(&["key", "generate", "500002", "--csr-out", s(&csr2)]);
    let before = env.snapshot();

    // A certificate for another user's key.
    let other = env.path("other.pem");
    env.issue(&csr2, &other, &[]);
    let err = env.fails(&["key", "import-cert", "500001", s(&other)]);
    assert!(err.contains("matches no pending key of 500001"), "{err}");

    // Expired.
    let expired = env.path("expired.pem");
    env.issue(&csr1, &expired, &["--expired"]);
    let err = env.fails(&["key", "import-cert", "500001", s(&expired)]);
    assert!(err.contains("expired"), "{err}");

    // Issued by another CA (the HPKI authentication CA, not the signing CA).
    let foreign = env.path("foreign.pem");
    env.issue(
        &csr1,
        &foreign,
        &["--ca-cert", s(&fixture("hpki-auth-ca.pem")), "--ca-key", s(&fixture("hpki-auth-ca.key"))],
    );
    let err = env.fails(&["key", "import-cert", "500001", s(&foreign)]);
    assert!(err.contains("not issued by the configured CA"), "{err}");

    // Garbage.
    let junk = env.path("junk.pem");
    std::fs::write(&junk, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").expect("junk");
    let err = env.fails(&["key", "import-cert", "500001", s(&junk)]);
    assert!(err.contains("certificate"), "{err}");
    std::fs::write(&junk, [0x30, 0x03, 0x02, 0x01]).expect("junk");
    env.fails(&["key", "import-cert", "500001", s(&junk)]);

    // Not the HPKI signing profile: a plain `openssl x509 -req` certificate
    // from the right CA (no keyUsage, no policy, no hcRole), and one whose
    // hcRole is another qualification's.
    let plain = env.path("plain.pem");
    let out = std::process::Command::new("openssl")
        .args(["x509", "-req", "-days", "30", "-set_serial", "4660", "-in"])
        .arg(&csr1)
        .arg("-CA")
        .arg(fixture("hpki-signing-ca.pem"))
        .arg("-CAkey")
        .arg(fixture("hpki-signing-ca.key"))
        .arg("-out")
        .arg(&plain)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = env.fails(&["key", "import-cert", "500001", s(&plain)]);
    assert!(err.contains("not an HPKI signing certificate for a doctor"), "{err}");
    assert!(err.contains("nonRepudiation") && err.contains("policy") && err.contains("hcRole"), "{err}");
    let pharmacist = env.path("pharmacist.pem");
    env.issue(&csr1, &pharmacist, &["--qualification", "pharmacist"]);
    let err = env.fails(&["key", "import-cert", "500001", s(&pharmacist)]);
    assert!(err.contains("hcRole is \"Pharmacist\", but the user is a doctor"), "{err}");

    assert_eq!(env.snapshot(), before, "refused imports changed nothing");
    let keys = env.json(&["key", "list", "500001"]);
    assert_eq!(keys[0]["state"], "pending");

    // Under the danger flag a nonconforming certificate is imported, with
    // its warnings in the answer and in the audit row.
    let plain2 = env.path("plain2.pem");
    let out = std::process::Command::new("openssl")
        .args(["x509", "-req", "-days", "30", "-set_serial", "4661", "-in"])
        .arg(&csr2)
        .arg("-CA")
        .arg(fixture("hpki-signing-ca.pem"))
        .arg("-CAkey")
        .arg(fixture("hpki-signing-ca.key"))
        .arg("-out")
        .arg(&plain2)
        .output()
        .expect("openssl");
    assert!(out.status.success());
    let v = env.json(&["key", "import-cert", "500002", s(&plain2), "--danger-accept-nonconforming"]);
    assert_eq!(v["state"], "active");
    assert!(v["warnings"].as_array().is_some_and(|w| w.len() == 4), "v1, keyUsage, policy, hcRole: {v}");
    let audit = env.json(&["audit", "tail", "--limit", "1"]).to_string();
    assert!(audit.contains("nonconforming"), "{audit}");

    // The right certificate is accepted; importing it again is refused.
    let good = env.path("good.pem");
    env.issue(&csr1, &good, &[]);
    env.ok(&["key", "import-cert", "500001", s(&good)]);
    let err = env.fails(&["key", "import-cert", "500001", s(&good)]);
    assert!(err.contains("active, not pending"), "{err}");
}

#[test]
fn signing_needs_an_active_key_and_an_enabled_user() {
    let env = Env::new();
    env.add_user("600001", "doctor");
    let doc = env.path("d.txt");
    std::fs::write(&doc, "x").expect("doc");
    let out = env.path("d.p7s");
    let before = env.snapshot();
    let err = env.fails(&["sign", "600001", s(&doc), "--out", s(&out)]);
    assert!(err.contains("no active key"), "{err}");
    assert_eq!(env.snapshot(), before);
    env.ok(&["key", "generate", "600001", "--csr-out", s(&env.path("p.csr"))]);
    let err = env.fails(&["sign", "600001", s(&doc), "--out", s(&out)]);
    assert!(err.contains("no active key"), "pending is not active: {err}");
    assert!(!out.exists());

    env.user_with_key("600002", "rsa2048");
    env.ok(&["user", "disable", "600002"]);
    let before = env.snapshot();
    let err = env.fails(&["sign", "600002", s(&doc), "--out", s(&out)]);
    assert!(err.contains("disabled"), "{err}");
    assert!(!out.exists());
    assert_eq!(env.snapshot(), before);
    env.ok(&["user", "enable", "600002"]);
    env.ok(&["sign", "600002", s(&doc), "--out", s(&out)]);
    // A retired key signs no more.
    env.ok(&["key", "retire", "600002", "--generation", "1"]);
    let err = env.fails(&["sign", "600002", s(&doc), "--out", s(&env.path("r.p7s"))]);
    assert!(err.contains("no active key"), "{err}");
}

#[test]
fn token_problems_are_reported_and_change_nothing() {
    let env = Env::new();
    env.add_user("700001", "doctor");
    let before = env.snapshot();
    let csr = env.path("x.csr");
    let csr_s = s(&csr);

    let r = env.run_with(&["key", "generate", "700001", "--csr-out", csr_s], &[("INKAN_TOKEN_USER_PIN", "wrong-pin")]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("login failed") && r.stderr.contains("CKR_PIN_INCORRECT"), "{}", r.stderr);
    assert!(!r.stderr.contains("wrong-pin"), "the PIN never reaches an error");

    let r = env.run_with(&["key", "generate", "700001", "--csr-out", csr_s], &[("INKAN_TOKEN_LABEL", "no-such-token")]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("no token labelled \"no-such-token\""), "{}", r.stderr);

    let r = env.run_with(
        &["key", "generate", "700001", "--csr-out", csr_s],
        &[("INKAN_TOKEN_MODULE", "/nonexistent/libpkcs11.so")],
    );
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("/nonexistent/libpkcs11.so") && r.stderr.contains("does not exist"), "{}", r.stderr);

    assert_eq!(env.snapshot(), before);
    assert!(!csr.exists());
    // The right PIN still works afterwards (SoftHSM did not lock it).
    env.ok(&["key", "generate", "700001", "--csr-out", csr_s]);
}

#[test]
fn killed_key_generation_leaves_no_half_registered_key() {
    let env = Env::new();
    // A wrapped key leaves nothing in the token; a key pair in the token is
    // an orphan that the next generation removes.
    for (user, storage, orphans) in [("800001", "wrapped", 0), ("800002", "object", 1)] {
        env.add_user(user, "doctor");
        let before = env.snapshot();
        let csr = env.path("k.csr");
        let vars = [("INKAN_TOKEN_KEY_STORAGE", storage)];
        let r = env.run_with(
            &["key", "generate", user, "--csr-out", s(&csr)],
            &[vars[0], ("INKAN_DANGER_CRASH_AT", "after-token-keygen")],
        );
        assert_ne!(r.code, 0, "the process was killed");
        assert_eq!(env.snapshot(), before, "nothing registered");
        assert!(!csr.exists());
        assert_eq!(env.json(&["key", "list", user]).as_array().map(Vec::len), Some(0));
        // The next generation cleans any orphan from the token and is generation 1.
        let r = env.run_with(&["--json", "key", "generate", user, "--csr-out", s(&csr)], &vars);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let out = r.json();
        assert_eq!(out["orphans_removed"], orphans, "{storage}");
        assert_eq!(out["key"]["generation"], 1);
        assert_eq!(out["key"]["storage"], storage);
        std::fs::remove_file(&csr).expect("csr");
    }
    assert!(env.ok(&["audit", "verify"]).contains("intact"));
}

#[test]
fn edited_or_truncated_audit_log_is_detected() {
    let env = Env::new();
    env.add_user("900001", "doctor");
    env.add_user("900002", "doctor");
    env.add_user("900003", "doctor");
    assert_eq!(env.audit_rows(), 3);
    let err = env.sql("UPDATE audit SET outcome = 'denied' WHERE seq = 2").expect_err("triggers refuse edits");
    assert!(err.contains("append-only"), "{err}");
    let on = if env.on_postgres() { " ON audit" } else { "" };
    env.sql_ok(&format!("DROP TRIGGER audit_append_only_update{on}; UPDATE audit SET detail = '{{}}' WHERE seq = 2"));
    let r = env.run(&["audit", "verify"]);
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("broken at row 2") && r.stderr.contains("edited"), "{}", r.stderr);
    let r = env.run(&["--json", "audit", "verify"]);
    assert_eq!(r.code, 3);
    let v: serde_json::Value = serde_json::from_str(&r.stderr).expect("json error");
    assert_eq!(v["broken"]["seq"], 2);

    let env = Env::new();
    env.add_user("900001", "doctor");
    env.add_user("900002", "doctor");
    if env.on_postgres() {
        let err = env.sql("TRUNCATE audit").expect_err("truncation refused");
        assert!(err.contains("append-only"), "{err}");
    }
    let on = if env.on_postgres() { " ON audit" } else { "" };
    env.sql_ok(&format!("DROP TRIGGER audit_append_only_delete{on}; DELETE FROM audit WHERE seq = 2"));
    let r = env.run(&["audit", "verify"]);
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("deleted"), "{}", r.stderr);
}

#[test]
fn pending_key_csr_can_be_exported_again_and_one_pending_at_a_time() {
    let env = Env::new();
    env.add_user("110001", "dentist");
    let csr = env.path("a.csr");
    env.ok(&["key", "generate", "110001", "--csr-out", s(&csr)]);
    let err = env.fails(&["key", "generate", "110001", "--csr-out", s(&env.path("b.csr"))]);
    assert!(err.contains("pending key"), "{err}");
    let again = env.path("again.csr");
    env.ok(&["key", "csr", "110001", "--csr-out", s(&again)]);
    assert_eq!(std::fs::read(&csr).expect("a"), std::fs::read(&again).expect("again"));
    let err = env.fails(&["key", "rotate", "110001", "--csr-out", s(&env.path("c.csr"))]);
    assert!(err.contains("pending key"), "{err}");
    env.ok(&["key", "retire", "110001", "--generation", "1"]);
    let err = env.fails(&["key", "rotate", "110001", "--csr-out", s(&env.path("c.csr"))]);
    assert!(err.contains("no active key to rotate"), "{err}");
}

#[test]
fn init_is_idempotent_and_json_everywhere() {
    let env = Env::bare();
    let first = env.json(&["init"]);
    assert_eq!(first["token_created"], true);
    let second = env.json(&["init"]);
    assert_eq!(second["token_created"], false);
    env.add_user("120001", "doctor");
    let users = env.json(&["user", "list"]);
    assert_eq!(users[0]["id"], "120001");
    let shown = env.json(&["user", "show", "120001"]);
    assert_eq!(shown["user"]["qualification"], "doctor");
    let r = env.run(&["--json", "user", "show", "nobody"]);
    let v: serde_json::Value = serde_json::from_str(r.stderr.trim()).expect("json error");
    assert!(v["error"].as_str().unwrap_or("").contains("unknown user"));
}

#[test]
fn jpki_links_follow_renewed_cards() {
    use base64ct::Encoding;
    let env = Env::new();
    env.add_user("130001", "doctor");
    env.ok(&["jpki", "link", "130001", s(&fixture("holders/jpki-1.pem"))]);
    // The same card cannot be linked to someone else.
    env.add_user("130002", "doctor");
    let err = env.fails(&["jpki", "link", "130002", s(&fixture("holders/jpki-1.pem"))]);
    assert!(err.contains("already linked to another user"), "{err}");

    // Renewal list: jpki-1's certificate was renewed as jpki-2's.
    let old = inkan::pki::read_certificate(&fixture("holders/jpki-1.pem")).expect("old");
    let new = inkan::pki::read_certificates(&fixture("holders/jpki-2.pem")).expect("new").remove(0);
    let issuer = der::Encode::to_der(old.tbs_certificate().issuer()).expect("issuer");
    let csv = format!(
        "old_issuer,old_serial,new_certificate\n{},{},{}\n{},{},{}\n",
        inkan::encoding::hex(&issuer),
        inkan::encoding::hex(old.tbs_certificate().serial_number().as_bytes()),
        base64ct::Base64::encode_string(&new),
        inkan::encoding::hex(&issuer),
        "0badbeef",
        base64ct::Base64::encode_string(&new),
    );
    let file = env.path("renewals.csv");
    std::fs::write(&file, csv).expect("csv");
    let out = env.json(&["jpki", "import-renewals", s(&file)]);
    assert_eq!(out["moved"], 1);
    let links = env.json(&["jpki", "list", "130001"]);
    assert_eq!(links.as_array().map(Vec::len), Some(1));
    let new_cert = inkan::pki::read_certificate(&fixture("holders/jpki-2.pem")).expect("new");
    assert_eq!(links[0]["serial"], inkan::pki::serial_hex(&new_cert));
    env.ok(&["jpki", "unlink", "130001"]);
    assert_eq!(env.json(&["jpki", "list", "130001"]).as_array().map(Vec::len), Some(0));
}

#[test]
fn commands_before_init_say_where_they_looked_and_make_nothing() {
    // SQLite's behaviour (a PostgreSQL database is made by its operator).
    let env = Env::bare_on(false);
    for args in [&["user", "list"][..], &["user", "show", "100001"], &["audit", "verify"]] {
        let err = env.fails(args);
        assert!(err.contains("no inkan database at") && err.contains("inkan init"), "{err}");
        assert!(err.contains(&env.data().join("inkan.db").display().to_string()), "names the path: {err}");
    }
    assert!(!env.data().join("inkan.db").exists(), "no database was made");
    let out = env.ok(&["init"]);
    assert!(out.contains(&format!("data directory {} created", env.data().display())), "{out}");
    assert!(out.contains(&format!("database sqlite:{} ready", env.data().join("inkan.db").display())), "{out}");
    assert_eq!(env.json(&["user", "list"]), serde_json::json!([]));
}

#[test]
fn a_wrapped_key_moved_to_another_user_is_refused_and_audited() {
    let env = Env::new();
    env.user_with_key("410001", "p256");
    env.user_with_key("410002", "p256");
    let doc = env.path("doc.txt");
    std::fs::write(&doc, "mine").expect("doc");
    let sig = env.path("a.p7s");
    env.ok(&["sign", "410001", s(&doc), "--out", s(&sig)]);
    // Someone with write access to the database gives 410001's row the key of
    // 410002 (token_id is unique: 410002's row gets another value).
    env.sql_ok(
        "CREATE TEMP TABLE moved AS SELECT token_id FROM keys WHERE user_id = '410002'; \
         UPDATE keys SET token_id = csr WHERE user_id = '410002'; \
         UPDATE keys SET token_id = (SELECT token_id FROM moved) WHERE user_id = '410001'",
    );
    let before = env.audit_rows();
    std::fs::remove_file(&sig).expect("rm");
    let r = env.run(&["sign", "410001", s(&doc), "--out", s(&sig)]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("refused") && r.stderr.contains("MAC"), "{}", r.stderr);
    assert!(!sig.exists(), "nothing signed");
    let rows = env.json(&["audit", "tail", "--limit", "1"]);
    assert_eq!(rows[0]["event"], "key.refused", "{rows}");
    assert_eq!(rows[0]["user_id"], "410001", "{rows}");
    assert_eq!(env.audit_rows(), before + 1);
}

#[test]
fn user_import_reports_bad_rows_and_resumes_after_a_kill() {
    let env = Env::new();
    env.add_user("500000", "doctor");
    let mut csv = String::from("user_id,name,qualification,birth_date\n");
    for i in 1..=1200 {
        csv.push_str(&format!("5{i:05},利用者 {i},pharmacist,19800101\n"));
    }
    csv.push_str("500000,別人,dentist\n"); // line 1202: exists with other data
    csv.push_str("bad id!,名前,doctor\n"); // 1203
    csv.push_str("501300,名前,nurse\n"); // 1204
    csv.push_str("501301,名前,doctor,1980-01-01\n"); // 1205
    csv.push_str("500001,again,doctor\n"); // 1206: the ID of line 2
    csv.push_str("501302,名前,doctor,19801340\n"); // 1207: no 13th month
    let file = env.path("users.csv");
    std::fs::write(&file, csv).expect("csv");
    let users = || env.json(&["user", "list"]).as_array().map(Vec::len).unwrap_or(0);

    // Killed after its first batch: that batch is in, nothing else, nothing half.
    let r = env.run_with(&["user", "import", s(&file)], &[("INKAN_DANGER_CRASH_AT", "user-import-after-batch")]);
    assert_ne!(r.code, 0, "killed");
    assert_eq!(users(), 1 + inkan::users::IMPORT_BATCH);

    // Run again: the rest goes in, the bad rows are reported with their line, exit 4.
    let r = env.run(&["--json", "user", "import", s(&file)]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    let report: serde_json::Value = serde_json::from_str(&r.stderr).expect("json report");
    assert_eq!(report["rows"], 1206);
    assert_eq!(report["added"], 1200 - inkan::users::IMPORT_BATCH);
    assert_eq!(report["unchanged"], inkan::users::IMPORT_BATCH);
    let mut lines: Vec<i64> =
        report["failed"].as_array().expect("failed").iter().map(|f| f["line"].as_i64().expect("line")).collect();
    lines.sort();
    assert_eq!(lines, vec![1202, 1203, 1204, 1205, 1206, 1207], "{report}");
    let text = report["failed"].to_string();
    assert!(text.contains("exists already") && text.contains("nurse") && text.contains("YYYYMMDD"), "{text}");
    assert_eq!(users(), 1201);
    let shown = env.json(&["user", "show", "500777"]);
    assert_eq!(shown["user"]["name"], "利用者 777", "{shown}");
    assert!(env.ok(&["audit", "verify"]).contains("intact"));
    assert_eq!(env.audit_rows(), 1 + 1200, "one user.add row per user, once");

    // A third run changes nothing; the text form says what to do.
    let r = env.run(&["user", "import", s(&file)]);
    assert_eq!(r.code, 4);
    assert!(r.stderr.contains("0 users added, 1200 already there, 6 refused"), "{}", r.stderr);
    assert!(r.stderr.contains("line 1204: 501300: qualification \"nurse\""), "{}", r.stderr);
    assert_eq!(users(), 1201);
}

#[test]
fn bulk_key_commands_report_bad_input_and_resume_after_a_kill() {
    let env = Env::new();
    for i in 1..=6 {
        env.add_user(&format!("60000{i}"), "doctor");
    }
    env.ok(&["user", "disable", "600006"]);
    env.user_with_key("600007", "p256");
    let csrs = env.path("csrs");
    let generate = ["key", "generate", "--all-without-key", "--alg", "p256", "--csr-dir", s(&csrs)];

    // Killed after two users; run again: the rest get keys, the two get their CSRs again.
    let r = env.run_with(&generate, &[("INKAN_DANGER_CRASH_AT", "key-bulk-after-2"), ("INKAN_DANGER_BULK_CHUNK", "2")]);
    assert_ne!(r.code, 0, "killed");
    let mut again = vec!["--json"];
    again.extend(generate);
    let out = env.json(&again[1..]);
    assert_eq!(out["users"], 5, "enabled users without an active key: {out}");
    assert_eq!(out["generated"].as_u64().unwrap_or(0) + out["csr_rewritten"].as_u64().unwrap_or(0), 5, "{out}");
    assert!(out["csr_rewritten"].as_u64().unwrap_or(0) >= 2, "{out}");
    for i in 1..=5 {
        let id = format!("60000{i}");
        assert_eq!(env.json(&["key", "list", &id]).as_array().map(Vec::len), Some(1), "one key for {id}");
        assert!(csrs.join(format!("{id}.csr")).exists());
    }
    assert!(env.json(&["key", "list", "600006"]).as_array().is_some_and(Vec::is_empty), "disabled: none");

    // Certificates for them all in a folder, with a file that is not one.
    let certs = env.path("certs");
    std::fs::create_dir_all(&certs).expect("certs");
    for i in 1..=5 {
        env.issue(&csrs.join(format!("60000{i}.csr")), &certs.join(format!("60000{i}.pem")), &[]);
    }
    std::fs::write(certs.join("zz-garbage.pem"), "not a certificate").expect("garbage");
    let import = ["key", "import-cert", "--dir", s(&certs)];
    let r = env.run_with(&import, &[("INKAN_DANGER_CRASH_AT", "key-bulk-after-2")]);
    assert_ne!(r.code, 0, "killed");
    let r = env.run(&["--json", "key", "import-cert", "--dir", s(&certs)]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    let report: serde_json::Value = serde_json::from_str(&r.stderr).expect("report");
    assert_eq!((report["imported"].clone(), report["unchanged"].clone()), (3.into(), 2.into()), "{report}");
    assert_eq!(report["failed"][0]["user_id"], "zz-garbage.pem", "{report}");
    let doc = env.path("doc.txt");
    std::fs::write(&doc, "bulk").expect("doc");
    let sig = env.path("doc.p7s");
    env.ok(&["sign", "600003", s(&doc), "--out", s(&sig)]);
    assert!(openssl_verify(&sig, Some(&doc)).0);

    // A rotation list with a user that cannot be rotated changes nothing.
    let list = env.path("rotate.csv");
    std::fs::write(&list, "user_id\n600001\n600002,any other field\nnobody\n").expect("list");
    let before = env.snapshot();
    let r = env.run(&["key", "rotate", "--users", s(&list), "--csr-dir", s(&env.path("renewal"))]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("nobody") && r.stderr.contains("nothing was done"), "{}", r.stderr);
    assert_eq!(env.snapshot(), before);
    std::fs::write(&list, "600001\n600002\n").expect("list");
    let out = env.json(&["key", "rotate", "--users", s(&list), "--csr-dir", s(&env.path("renewal"))]);
    assert_eq!(out["generated"], 2, "{out}");
    // Then everyone: the two pending renewals are resumed, the others rotated.
    let out = env.json(&["key", "rotate", "--all", "--alg", "p256", "--csr-dir", s(&env.path("renewal"))]);
    assert_eq!(
        (out["users"].clone(), out["generated"].clone(), out["csr_rewritten"].clone()),
        (6.into(), 4.into(), 2.into()),
        "{out}"
    );
    assert!(env.path("renewal/600007.csr").exists());
    // The renewals imported, the same rotation run again rotates nobody twice.
    let renewed = env.path("renewed");
    std::fs::create_dir_all(&renewed).expect("renewed");
    for id in ["600001", "600002", "600003", "600004", "600005", "600007"] {
        env.issue(&env.path(&format!("renewal/{id}.csr")), &renewed.join(format!("{id}.pem")), &[]);
    }
    let out = env.json(&["key", "import-cert", "--dir", s(&renewed)]);
    assert_eq!(out["imported"], 6, "{out}");
    let out = env.json(&["key", "rotate", "--all", "--alg", "p256", "--csr-dir", s(&env.path("renewal"))]);
    assert_eq!((out["generated"].clone(), out["already"].clone()), (0.into(), 6.into()), "{out}");
    assert!(env.ok(&["audit", "verify"]).contains("intact"));
}

#[test]
fn bulk_regcode_notices_resume_and_report_unknown_users() {
    let env = Env::new();
    for id in ["700101", "700102", "700103"] {
        env.add_user(id, "pharmacist");
    }
    let file = env.path("users.csv");
    std::fs::write(
        &file,
        "user_id,name,qualification,birth_date\n700101,a,pharmacist,19750615\n700102,b,pharmacist\n\
         700999,nobody,doctor\n700103,c,pharmacist,19700101\n",
    )
    .expect("csv");
    let out = env.path("notices");
    let args = ["regcode", "issue", "--users", s(&file), "--out-dir", s(&out)];
    let r = env.run_with(&args, &[("INKAN_DANGER_CRASH_AT", "regcode-bulk-after-1")]);
    assert_ne!(r.code, 0, "killed");
    let r = env.run(&["--json", "regcode", "issue", "--users", s(&file), "--out-dir", s(&out)]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    let report: serde_json::Value = serde_json::from_str(&r.stderr).expect("report");
    assert_eq!(report["users"], 4);
    assert_eq!(report["issued"].as_u64().unwrap_or(0) + report["unchanged"].as_u64().unwrap_or(0), 3, "{report}");
    assert_eq!(report["failed"][0]["user_id"], "700999", "{report}");
    assert_eq!(report["failed"][0]["line"], 4, "{report}");
    let generated = std::fs::read_to_string(out.join("700102.html")).expect("notice");
    assert!(generated.contains("初期登録用QR") && generated.contains("<svg") && generated.contains("700102"));
    assert!(generated.contains("class=\"pw\""), "a generated password is printed");
    let birth = std::fs::read_to_string(out.join("700101.html")).expect("notice");
    assert!(birth.contains("生年月日") && !birth.contains("19750615"), "the birth date is not printed");
    let codes = env.json(&["regcode", "list"]);
    let active: Vec<_> = codes.as_array().expect("codes").iter().filter(|c| c["status"] == "active").collect();
    assert_eq!(active.len(), 3, "one active code per user: {codes}");
    // A third run leaves the notices (and their codes) alone.
    let r = env.run(&["regcode", "issue", "--users", s(&file), "--out-dir", s(&out)]);
    assert_eq!(r.code, 4);
    assert!(r.stderr.contains("0 notices written") && r.stderr.contains("3 there already"), "{}", r.stderr);
    assert_eq!(env.json(&["regcode", "list"]), codes);
}

#[test]
fn an_init_killed_half_way_is_finished_and_writes_its_pins_only_then() {
    let env = Env::bare();
    // Random PINs this time: no PINs in the configuration.
    let config = std::fs::read_to_string(&env.config).expect("config");
    let config: String = config.lines().filter(|l| !l.contains("_pin")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&env.config, config).expect("config");
    let pins = env.data().join("token-pins.toml");
    let r = env.run_with(&["init"], &[("INKAN_DANGER_CRASH_AT", "init-after-init-token")]);
    assert_ne!(r.code, 0, "killed between C_InitToken and C_InitPIN");
    assert!(!pins.exists(), "no PINs file for a token that is not made");
    assert!(env.data().join("token-pins.pending").exists(), "the PINs the token was begun with");

    let out = env.ok(&["init"]);
    assert!(out.contains("finished"), "{out}");
    assert!(pins.exists() && !env.data().join("token-pins.pending").exists());
    let text = std::fs::read_to_string(&pins).expect("pins");
    assert!(text.contains("user_pin") && !out.contains(text.lines().next().unwrap_or("?")), "PINs not printed");
    env.add_user("140001", "doctor");
    env.ok(&["key", "generate", "140001", "--csr-out", s(&env.path("k.csr"))]);
    assert_eq!(env.json(&["init"])["token_created"], false, "idempotent");
}

/// `[token] kek = "trusted"` in the environment's configuration.
fn trusted_keks(env: &Env) {
    let text = std::fs::read_to_string(&env.config).expect("config");
    std::fs::write(&env.config, text.replacen("[token]\n", "[token]\nkek = \"trusted\"\n", 1)).expect("config");
}

#[test]
fn a_kek_rotation_killed_half_way_is_finished_by_the_next_run() {
    let env = Env::bare();
    trusted_keks(&env);
    let out = env.ok(&["init"]);
    assert!(out.contains("trusted key-encryption key 1 made by the security officer"), "{out}");
    assert!(out.contains("warning: SoftHSM keeps a trusted KEK"), "{out}");
    env.user_with_key("620000", "rsa2048");
    let mut users = String::new();
    for i in 1..=40 {
        users.push_str(&format!("62{i:04},利用者 {i},doctor\n"));
    }
    std::fs::write(env.path("users.csv"), users).expect("users");
    env.ok(&["user", "import", s(&env.path("users.csv"))]);
    env.ok(&["key", "generate", "--all-without-key", "--alg", "p256", "--csr-dir", s(&env.path("csrs"))]);
    let status = env.json(&["kek", "status"]);
    assert_eq!(status["keks"], serde_json::json!([{"index": 1, "kind": "trusted", "has_mac_key": true, "keys": 41}]));
    let doc = env.path("doc.txt");
    std::fs::write(&doc, "before, during and after a KEK rotation").expect("doc");
    let sign_and_verify = |name: &str| {
        let sig = env.path(name);
        env.ok(&["sign", "620000", s(&doc), "--out", s(&sig)]);
        let (ok, out) = openssl_verify(&sig, Some(&doc));
        assert!(ok, "{out}");
    };
    sign_and_verify("before.p7s");

    // Killed after two pages of eight: those are under KEK 2, the rest under 1.
    let rotate = ["kek", "rotate"];
    let r =
        env.run_with(&rotate, &[("INKAN_DANGER_BULK_CHUNK", "8"), ("INKAN_DANGER_CRASH_AT", "kek-rotate-after-16")]);
    assert_ne!(r.code, 0, "killed: {}", r.stderr);
    let status = env.json(&["kek", "status"]);
    let keys: Vec<_> = status["keks"].as_array().expect("keks").iter().map(|k| k["keys"].clone()).collect();
    assert_eq!(keys, vec![serde_json::json!(25), serde_json::json!(16)], "{status}");
    assert_eq!(status["keks"][1]["kind"], "trusted");
    sign_and_verify("during.p7s");
    let rows = env.json(&["audit", "tail", "--limit", "4"]);
    let events: Vec<_> = rows.as_array().expect("rows").iter().map(|r| r["event"].as_str().unwrap_or("")).collect();
    assert!(events.contains(&"kek.create") && events.contains(&"kek.rewrap"), "{rows}");

    // Run again: the rotation to KEK 2 is finished, not started over.
    let out = env.json(&rotate);
    assert_eq!((out["to"].clone(), out["moved"].clone(), out["unchanged"].clone()), (2.into(), 25.into(), 16.into()));
    assert_eq!(out["failed"], serde_json::json!([]), "{out}");
    let status = env.json(&["kek", "status"]);
    let keys: Vec<_> = status["keks"].as_array().expect("keks").iter().map(|k| k["keys"].clone()).collect();
    assert_eq!(keys, vec![serde_json::json!(0), serde_json::json!(41)], "{status}");
    sign_and_verify("after.p7s");
    // Every user's key still signs with its own certificate's key.
    let sig = env.path("p256.p7s");
    env.issue(&env.path("csrs/620040.csr"), &env.path("620040.pem"), &[]);
    env.ok(&["key", "import-cert", "620040", s(&env.path("620040.pem"))]);
    env.ok(&["sign", "620040", s(&doc), "--out", s(&sig)]);
    assert!(openssl_verify(&sig, Some(&doc)).0);

    // Once finished, the next run is a new rotation.
    let out = env.json(&rotate);
    assert_eq!((out["to"].clone(), out["moved"].clone()), (3.into(), 41.into()), "{out}");
    assert!(env.ok(&["audit", "verify"]).contains("intact"));
}

#[test]
fn keys_under_a_strict_kek_are_not_rotated_and_the_operator_is_told_what_to_do() {
    let env = Env::new();
    env.user_with_key("630001", "p256");
    let before = env.snapshot();
    let r = env.run(&["kek", "rotate"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("trusted") && r.stderr.contains("key rotate --all"), "{}", r.stderr);
    assert_eq!(env.snapshot(), before, "nothing changed");

    // Switched to trusted KEKs: a trusted KEK for new keys; the old key is
    // reported, with what to do, and keeps signing.
    trusted_keks(&env);
    let out = env.ok(&["init"]);
    assert!(out.contains("KEK 1 is strict"), "{out}");
    let r = env.run(&["kek", "rotate"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("630001 (generation 1)") && r.stderr.contains("strict"), "{}", r.stderr);
    assert!(r.stderr.contains("inkan key rotate"), "{}", r.stderr);
    env.add_user("630002", "pharmacist");
    env.ok(&["key", "generate", "630002", "--alg", "p256", "--csr-out", s(&env.path("630002.csr"))]);
    let status = env.json(&["kek", "status"]);
    assert_eq!(
        status["keks"],
        serde_json::json!([
            {"index": 1, "kind": "strict", "has_mac_key": true, "keys": 1},
            {"index": 2, "kind": "trusted", "has_mac_key": true, "keys": 1}
        ])
    );
    let doc = env.path("doc.txt");
    std::fs::write(&doc, "strict").expect("doc");
    env.ok(&["sign", "630001", s(&doc), "--out", s(&env.path("doc.p7s"))]);
    assert!(openssl_verify(&env.path("doc.p7s"), Some(&doc)).0);
}
