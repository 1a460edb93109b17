//! The pages in a real browser: headless Chromium (Debian's package) driven by
//! playwright-core (`tests/browser/e2e.mjs`), the phone being a second browser
//! context with the DevTools virtual authenticator. E1 with an HPKI client
//! certificate, then L1 from the demo signing system, a signature that
//! `openssl cms -verify` accepts and a signed e-prescription that xmlsec1 does. Screenshots stay in
//! `target/browser-artifacts/` for people to look at.

use std::path::Path;
use std::process::Command;

use crate::harness::{fixture, openssl_verify, root, Env};
use crate::http::Server;

#[test]
fn e1_and_l1_in_chromium_with_a_virtual_authenticator() {
    let script = root().join("tests/browser/e2e.mjs");
    assert!(
        root().join("tests/browser/node_modules/playwright-core").is_dir() && Path::new("/usr/bin/chromium").exists(),
        "the browser tests need Chromium and playwright-core: run softhsm/setup.sh --deps-only"
    );
    let env = Env::new();
    let server = Server::start_demo(&env);
    let artifacts = root().join("target/browser-artifacts");
    let _ = std::fs::remove_dir_all(&artifacts);
    let output = Command::new("node")
        .arg(&script)
        .current_dir(root().join("tests/browser"))
        .env("INKAN_BASE", &server.base)
        .env("INKAN_CARD", &server.card)
        .env("INKAN_HOLDER_CERT", fixture("holders/hpki-doctor.pem"))
        .env("INKAN_HOLDER_KEY", fixture("holders/hpki-doctor.key"))
        .env("INKAN_USER", "100001")
        .env("INKAN_ARTIFACTS", &artifacts)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stdout.lines().last().unwrap_or_default();
    let result: serde_json::Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("browser run printed no result ({e}):\n{stdout}\n{stderr}"));
    assert_eq!(result["ok"], true, "browser flow failed: {result:#}\n{stderr}");
    assert_eq!(result["e1"]["credentials"], 1, "{result}");
    assert!(result["screens"].as_array().expect("screens").len() >= 12, "{result}");

    // The signature the demo page handed out verifies with OpenSSL.
    let sig = Path::new(result["signature"].as_str().expect("signature"));
    let document = Path::new(result["document"].as_str().expect("document"));
    let (ok, out) = openssl_verify(sig, Some(document));
    assert!(ok, "openssl cms -verify: {out}");
    // And the e-prescription it signed, xmlsec1.
    let prescription = result["prescription"].as_str().expect("prescription");
    let out = Command::new("xmlsec1")
        .args(["--verify", "--id-attr:id", "PrescriptionDocument", "--trusted-pem"])
        .arg(fixture("hpki-root.pem"))
        .arg("--untrusted-pem")
        .arg(fixture("hpki-signing-ca.pem"))
        .arg(prescription)
        .output()
        .expect("xmlsec1");
    assert!(out.status.success(), "xmlsec1: {}", String::from_utf8_lossy(&out.stderr));

    // The server kept the phone and the audit trail.
    let device = env.json(&["device", "show", "100001"]);
    assert!(device["device"]["label"].as_str().expect("label").starts_with("Android"), "{device}");
    let rows = env.json(&["audit", "tail", "--user", "100001", "--limit", "50"]);
    let events: Vec<&str> = rows.as_array().expect("rows").iter().filter_map(|r| r["event"].as_str()).collect();
    assert!(events.contains(&"fido.register") && events.contains(&"fido.signin"), "{events:?}");
}
