//! The OpenAPI document (`GET /openapi.json`): valid OpenAPI 3.1 by
//! `openapi-spec-validator`, true to the router (every operation in it
//! answers; the routes it does not name are not there), and enough for a
//! client in another language to log in, sign and verify from it alone.

use std::process::Command;

use serde_json::Value;

use crate::harness::{fixture, Env};
use crate::http::{register_client, Client, Server};

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8")
}

/// `openapi-spec-validator` on a document: (valid, what it said).
fn validate(path: &std::path::Path) -> (bool, String) {
    let out = Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(path)
        .output()
        .expect("python3 -m openapi_spec_validator (softhsm/setup.sh --deps-only installs it)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success() && text.contains(": OK"), text)
}

/// Every (method, path, operation) of a document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            out.push((method.to_uppercase(), path.clone(), op.clone()));
        }
    }
    out
}

#[test]
fn the_document_is_valid_openapi_and_every_operation_in_it_answers() {
    let env = Env::new();
    let server = Server::start(&env, &[]);
    let r = Client::new().get(&server.url("/openapi.json"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers.get("content-type").map(String::as_str), Some("application/json"));
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["servers"][0]["url"], server.base);
    let file = env.path("openapi.json");
    std::fs::write(&file, &r.body).expect("write");
    let (valid, said) = validate(&file);
    assert!(valid, "openapi-spec-validator: {said}");
    // The validator does catch a broken document (an operation ID twice).
    let mut broken = doc.clone();
    broken["paths"]["/api/v1/sign"]["post"]["operationId"] = "me".into();
    let broken_file = env.path("broken.json");
    std::fs::write(&broken_file, broken.to_string()).expect("write");
    assert!(!validate(&broken_file).0, "a duplicate operation ID is caught");

    // What it covers: the signing API, CSC v2 and v1, OIDC token, revoke, userinfo.
    let ops = operations(&doc);
    let paths: Vec<&str> = ops.iter().map(|(_, p, _)| p.as_str()).collect();
    for expected in [
        "/api/v1/me",
        "/api/v1/sign",
        "/api/v1/sign-hashes",
        "/api/v1/verify",
        "/api/v1/extend",
        "/csc/v2/info",
        "/csc/v2/signatures/signHash",
        "/csc/v2/signatures/signDoc",
        "/csc/v1/credentials/authorize",
        "/csc/v1/signatures/signHash",
        "/oidc/token",
        "/oidc/revoke",
        "/oidc/userinfo",
    ] {
        assert!(paths.contains(&expected), "{expected} is in the document: {paths:?}");
    }
    // The request and answer schemas are the handlers' types (named as they are).
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in ["Me", "SignHashes", "Signatures", "Report", "SignDocReq", "SignHashReq", "Tokens", "ErrorBody"] {
        assert!(schemas.contains_key(name), "schema {name}");
    }
    // Errors are documented: each handler's own, and those all share.
    let answers = |path: &str, method: &str| -> Vec<String> {
        doc["paths"][path][method]["responses"].as_object().expect("responses").keys().cloned().collect()
    };
    for status in ["400", "401", "403", "409", "413", "422", "500", "503"] {
        assert!(answers("/api/v1/sign", "post").iter().any(|s| s == status), "sign documents {status}");
    }
    assert!(answers("/oidc/token", "post").iter().any(|s| s == "429"), "the token endpoint documents 429");
    assert!(!answers("/api/v1/me", "get").iter().any(|s| s == "413"), "a GET without a body has no 413");
    let v1 = &schemas["SignHashReq"]["properties"];
    assert!(v1.get("hash").is_some() && v1.get("hashAlgo").is_some(), "CSC v1's names are documented: {v1}");

    // Every operation in the document answers (never 404 or 405), and one
    // that needs a session refuses a request without one as documented.
    for (method, path, op) in &ops {
        let r =
            Client::new().request(method, &server.url(path), &[("content-type", "application/json")], b"{}".to_vec());
        assert!(r.status != 404 && r.status != 405, "{method} {path} answers: {} {}", r.status, r.text());
        assert!(op["responses"].get(r.status.to_string()).is_some(), "{method} {path}: {} is documented", r.status);
        let needs_session = op["security"].as_array().is_some_and(|s| s.iter().all(|r| r.get("session").is_some()));
        if needs_session {
            assert_eq!(r.status, 401, "{method} {path} without a session: {}", r.text());
        }
    }
    // Next to them, a path the document does not name is not routed.
    for path in ["/api/v1/nothing", "/csc/v2/credentials/sendOTP", "/csc/v3/info"] {
        let r = Client::new().post(&server.url(path), &[("content-type", "application/json")], "{}");
        assert_eq!(r.status, 404, "{path}");
    }
}

#[test]
fn a_python_client_built_from_the_document_logs_in_with_a_card_signs_a_prescription_and_verifies_it() {
    let env = Env::new();
    env.user_with_key("100001", "rsa2048");
    env.ok(&["hpki", "map", "100001", s(&fixture("holders/hpki-doctor.pem"))]);
    // The chain's CRLs at hand, so that the B-B signature's certificates
    // have a known status when it is verified.
    let crls = format!(
        "{}:{}",
        fixture("crl/hpki-signing-ca.crl.pem").display(),
        crate::tsa::hpki_root_arl(&env.path("")).display()
    );
    let server = Server::start(&env, &[("INKAN_PKI_CRLS", &crls)]);
    let client = register_client(&env);
    let rx = env.path("rx.xml");
    std::fs::write(&rx, crate::xades::prescription("rx-openapi-1", "")).expect("rx");
    let signed = env.path("rx-signed.xml");
    let out = Command::new("python3")
        .arg(crate::harness::root().join("examples/python/inkan_client.py"))
        .args(["--base", &server.base, "--ca", s(&fixture("hpki-root.pem"))])
        .args(["--card-cert", s(&fixture("holders/hpki-doctor.pem"))])
        .args(["--card-key", s(&fixture("holders/hpki-doctor.key"))])
        .args(["--client-id", &client.id, "--redirect-uri", &client.redirect])
        .env("INKAN_CLIENT_SECRET", &client.secret)
        .args(["--prescription", s(&rx), "--out", s(&signed)])
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the client: {stdout}{stderr}");
    let found: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(found["user_id"], "100001", "{found}");
    assert_eq!(found["method"], "hpki", "{found}");
    assert_eq!(found["indication"], "TOTAL_PASSED", "{found}");
    assert_eq!(found["signatures"][0]["format"], "XAdES", "{found}");
    assert_eq!(found["signatures"][0]["kind"], "prescription", "{found}");
    assert_eq!((found["revoked"].as_u64(), found["after_revoke"].as_u64()), (Some(200), Some(401)), "{found}");
    // The signed document it wrote is the prescription with its signature.
    let text = std::fs::read_to_string(&signed).expect("signed");
    assert!(text.contains("rx-openapi-1") && text.contains("PrescriptionSign"), "{text}");
    // The audit log has the signature, made through the API.
    let rows = env.json(&["audit", "tail", "--user", "100001", "--limit", "50"]);
    assert!(rows.to_string().contains("api.sign"), "{rows}");
}
