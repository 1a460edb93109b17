//! Extension (`POST /api/v1/extend`, `inkan extend`): signatures made at
//! B-B raised level by level, archive time-stamps renewed, each result
//! checked by tools nobody here wrote (openssl cms and ts over inputs
//! asn1crypto and lxml recompute, xmlsec1) and by `inkan verify` with
//! nothing but the file; bad inputs refused with nothing written.

use std::path::Path;
use std::process::Command;

use base64ct::{Base64, Encoding};
use serde_json::json;

use crate::harness::{fixture, openssl_verify, root, Env};
use crate::http::{login, register_client, Client, Server};
use crate::tsa::{
    cades_token, hpki_root_arl, openssl_ts_verify, tsa_env, xades_archive_verifies, xmlsec1_verifies, Certomancer, CSV,
};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8")
}

/// A doctor with a key and a card, a TSA, the CRLs of the HPKI fixture
/// chain for inkan to embed, and a server; the bearer token of a card login.
struct Setup {
    tsa: Certomancer,
    env: Env,
    vars: Vec<(&'static str, String)>,
    server: Server,
    bearer: String,
    token: String,
    dir: std::path::PathBuf,
}

impl Setup {
    fn new(name: &str) -> Setup {
        let tsa = Certomancer::start();
        let env = Env::new();
        env.user_with_key_as("100001", "rsa2048", "doctor");
        env.ok(&["hpki", "map", "100001", s(&fixture("holders/hpki-doctor.pem"))]);
        let dir = env.path(name);
        std::fs::create_dir_all(&dir).expect("dir");
        let crls = format!("{}:{}", fixture("crl/hpki-signing-ca.crl.pem").display(), hpki_root_arl(&dir).display());
        let mut vars = tsa_env(&tsa);
        vars.push(("INKAN_PKI_CRLS", crls));
        let v: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let server = Server::start(&env, &v);
        let client = register_client(&env);
        let token = login(&server, &client, "hpki-doctor", "hpki")["access_token"].as_str().expect("token").to_owned();
        Setup { bearer: format!("Bearer {token}"), token, tsa, env, vars, server, dir }
    }

    /// `inkan` with the TSA and CRL settings the server has.
    fn inkan(&self, args: &[&str]) -> crate::harness::Run {
        let v: Vec<(&str, &str)> = self.vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.env.run_with(args, &v)
    }

    /// `inkan verify` of `file` trusting the fixture root and the TSA's,
    /// with no CRL but what the file carries: (exit code, report).
    fn verify(&self, file: &Path, content: Option<&Path>) -> (i32, serde_json::Value) {
        let root_pem = fixture("hpki-root.pem");
        let mut args = vec!["--json", "verify", s(file), "--anchor", s(&root_pem), "--tsa-anchor", s(&self.tsa.root)];
        if let Some(c) = content {
            args.extend_from_slice(&["--content", s(c)]);
        }
        let r = self.env.run(&args);
        let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|_| panic!("{r:?}"));
        (r.code, report)
    }

    /// The time-stamps of the report's first signature, each `type` if it
    /// is a proof (else `type: result`).
    fn timestamp_kinds(report: &serde_json::Value) -> Vec<String> {
        report["signatures"][0]["timestamps"]
            .as_array()
            .expect("stamps")
            .iter()
            .map(|t| match t["result"].as_str() {
                Some("passed") => t["type"].as_str().unwrap_or_default().to_owned(),
                other => format!("{}: {other:?}", t["type"]),
            })
            .collect()
    }
}

#[test]
fn cades_made_at_b_b_is_extended_level_by_level_and_its_archive_time_stamp_renewed() {
    let t = Setup::new("extend-cades");
    let document = "処方箋 extend".as_bytes();
    let doc = t.dir.join("doc.txt");
    std::fs::write(&doc, document).expect("doc");
    let r = Client::new().post(&t.server.url("/api/v1/sign"), &[("authorization", &t.bearer)], document);
    assert_eq!(r.status, 200, "{}", r.text());
    let bb = r.body.clone();

    // B-B to B-T over HTTPS, the detached signature with its content as
    // JSON: the token is over the signature value, openssl ts says so.
    let extend = |level: &str, body: serde_json::Value| {
        Client::new().post_json(&t.server.url(&format!("/api/v1/extend?level={level}")), &t.token, &body)
    };
    let r =
        extend("B-T", json!({ "signature": Base64::encode_string(&bb), "content": Base64::encode_string(document) }));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers.get("x-inkan-level").map(String::as_str), Some("B-T"));
    assert_eq!(r.headers.get("x-inkan-extended-from").map(String::as_str), Some("B-B"));
    assert_eq!(r.headers.get("content-type").map(String::as_str), Some("application/pkcs7-signature"));
    let bt = t.dir.join("b-t.p7s");
    std::fs::write(&bt, &r.body).expect("b-t");
    let (ok, out) = openssl_verify(&bt, Some(&doc));
    assert!(ok, "openssl cms -verify: {out}");
    let (value, stamp) = cades_token(&r.body);
    let (ok, out) = openssl_ts_verify(&t.dir, "extended-sts", &value, &stamp, &t.tsa.root);
    assert!(ok, "openssl ts -verify: {out}");
    let rows = t.env.json(&["audit", "tail", "--limit", "1"]);
    assert_eq!(rows[0]["event"], "signature.extend", "{rows}");
    assert_eq!(rows[0]["user_id"], "100001", "{rows}");
    let detail: serde_json::Value = serde_json::from_str(rows[0]["detail"].as_str().expect("detail")).expect("json");
    assert_eq!((detail["from"].as_str(), detail["level"].as_str()), (Some("B-B"), Some("B-T")), "{rows}");

    // A PEM signature comes back as PEM.
    let pem = der::pem::encode_string("CMS", der::pem::LineEnding::LF, &bb).expect("pem");
    let r = extend(
        "B-T",
        json!({ "signature": Base64::encode_string(pem.as_bytes()), "content": Base64::encode_string(document) }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().starts_with("-----BEGIN CMS-----"), "{}", r.text());
    let (_, der_back) = der::pem::decode_vec(&r.body).expect("pem");
    assert_eq!(cades_token(&der_back).0, value, "the same signature value under the time-stamp");

    // B-T to B-LTA with the CLI: inkan verify needs nothing but the file
    // and its content; the archive time-stamp's input, as asn1crypto
    // recomputes it, is what openssl ts verifies.
    let lta = t.dir.join("b-lta.p7s");
    let r = t.inkan(&[
        "--json",
        "extend",
        s(&bt),
        "--content",
        s(&doc),
        "--level",
        "B-LTA",
        "--out",
        s(&lta),
        "--anchor",
        s(&fixture("hpki-root.pem")),
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let said: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(
        (said["from"].as_str(), said["level"].as_str(), said["renewed"].as_bool()),
        (Some("B-T"), Some("B-LTA"), Some(false))
    );
    let (code, report) = t.verify(&lta, Some(&doc));
    assert_eq!((code, &report["indication"]), (0, &json!("TOTAL_PASSED")), "{report}");
    assert_eq!(report["signatures"][0]["level"], "B-LTA", "{report}");
    assert_eq!(report["signatures"][0]["best_signature_time_proven"], true, "{report}");
    let (ok, out) = openssl_verify(&lta, Some(&doc));
    assert!(ok, "openssl cms -verify: {out}");
    let archive_checks = |sig: &Path, name: &str| {
        let (input, token) = (t.dir.join(format!("{name}.data")), t.dir.join(format!("{name}.tst")));
        let out = Command::new("python3")
            .arg(root().join("tests/tsa/archive_v3.py"))
            .args([&doc, sig, &input, &token])
            .arg("--newest")
            .output()
            .expect("python3 with asn1crypto");
        assert!(out.status.success(), "archive_v3.py: {}", String::from_utf8_lossy(&out.stderr));
        let (ok, text) = openssl_ts_verify(
            &t.dir,
            name,
            &std::fs::read(&input).expect("input"),
            &std::fs::read(&token).expect("token"),
            &t.tsa.root,
        );
        assert!(ok, "openssl ts -verify of the archive time-stamp over asn1crypto's input: {text}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("counts")
    };
    archive_checks(&lta, "lta");

    // Renewal: B-LTA again adds a second archive time-stamp over the
    // first (its index lists it); the file still validates.
    let renewed = t.dir.join("renewed.p7s");
    let r = t.inkan(&["--json", "extend", s(&lta), "--content", s(&doc), "--level", "B-LTA", "--out", s(&renewed)]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["renewed"], true, "{}", r.stdout);
    let counts = archive_checks(&renewed, "renewed");
    assert_eq!(counts["unsigned attribute values"], 2, "the signature time-stamp and the first archive time-stamp");
    let (code, report) = t.verify(&renewed, Some(&doc));
    assert_eq!((code, &report["indication"]), (0, &json!("TOTAL_PASSED")), "{report}");
    assert_eq!(Setup::timestamp_kinds(&report), ["signature", "archive", "archive"], "{report}");

    // Refused, nothing written: a lower or the same level, a detached
    // signature without its content, one byte of the value changed, no
    // bearer token, no level.
    let b64 = |p: &Path| Base64::encode_string(&std::fs::read(p).expect("read"));
    let r = extend("B-T", json!({ "signature": b64(&renewed), "content": Base64::encode_string(document) }));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("does not lower"), "{}", r.text());
    let r = extend("B-T", json!({ "signature": b64(&bt), "content": Base64::encode_string(document) }));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("B-T already"), "{}", r.text());
    let r = extend("B-LT", json!({ "signature": b64(&bt) }));
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("SIGNED_DATA_NOT_FOUND") && r.text().contains("nothing was extended"), "{}", r.text());
    let mut changed = std::fs::read(&bt).expect("b-t");
    let at = changed.windows(value.len()).position(|w| w == value).expect("value");
    changed[at + 7] ^= 1;
    let r = extend(
        "B-LT",
        json!({ "signature": Base64::encode_string(&changed), "content": Base64::encode_string(document) }),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("TOTAL_FAILED"), "{}", r.text());
    let never = t.dir.join("never.p7s");
    let changed_file = t.dir.join("changed.p7s");
    std::fs::write(&changed_file, &changed).expect("changed");
    let r = t.inkan(&["extend", s(&changed_file), "--content", s(&doc), "--level", "B-LT", "--out", s(&never)]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(!never.exists(), "nothing written");
    let r = Client::new().post(
        &t.server.url("/api/v1/extend?level=B-T"),
        &[("content-type", "application/pkcs7-signature")],
        bb.clone(),
    );
    assert_eq!(r.status, 401, "{}", r.text());
    let r = Client::new().post(
        &t.server.url("/api/v1/extend"),
        &[("authorization", &t.bearer), ("content-type", "application/pkcs7-signature")],
        bb,
    );
    assert_eq!(r.status, 400, "{}", r.text());
}

#[test]
fn xades_made_at_b_b_is_extended_in_place_and_renewed_every_other_byte_unchanged() {
    let t = Setup::new("extend-xades");
    let r = Client::new().post(
        &t.server.url("/api/v1/sign?format=xades&prescription_id=rx-extend-1"),
        &[("authorization", &t.bearer), ("content-type", "text/csv")],
        CSV,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let bb = r.text();
    let extend = |level: &str, body: &[u8]| {
        Client::new().post(
            &t.server.url(&format!("/api/v1/extend?level={level}")),
            &[("authorization", &t.bearer), ("content-type", "application/xml")],
            body.to_vec(),
        )
    };

    // B-B to B-LT: the unsigned properties in the samples' order, spliced
    // in before </xa:QualifyingProperties>; every other byte as it was.
    let r = extend("B-LT", bb.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let lt = r.text();
    let (start, end) = (
        lt.find("<xa:UnsignedProperties>").expect("unsigned properties"),
        lt.find("</xa:UnsignedProperties>").expect("end") + "</xa:UnsignedProperties>".len(),
    );
    assert_eq!(format!("{}{}", &lt[..start], &lt[end..]), bb, "only the unsigned properties are new");
    assert!(lt[end..].starts_with("</xa:QualifyingProperties>"), "{}", &lt[end..end + 40]);
    let order = [
        "<xa:SignatureTimeStamp ",
        "<xa141:TimeStampValidationData ",
        "<xa:CertificateValues ",
        "<xa:RevocationValues ",
    ];
    let at: Vec<usize> = order.iter().map(|e| lt.rfind(e).unwrap_or_else(|| panic!("{e} in {lt}"))).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "in the samples' order: {at:?}");
    let lt_file = t.dir.join("rx-lt.xml");
    std::fs::write(&lt_file, &lt).expect("write");
    xmlsec1_verifies(&lt_file);
    let (code, report) = t.verify(&lt_file, None);
    assert_eq!((code, &report["indication"]), (0, &json!("TOTAL_PASSED")), "{report}");
    assert_eq!(report["signatures"][0]["level"], "B-LT", "{report}");

    // B-LT to B-LTA with the CLI, then renewed: the newest archive
    // time-stamp is over lxml's input (the first one included in it).
    let lta = t.dir.join("rx-lta.xml");
    let r = t.inkan(&["extend", s(&lt_file), "--level", "B-LTA", "--out", s(&lta)]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("extended XAdES") && r.stdout.contains("archive time-stamp"), "{}", r.stdout);
    // Each extension one insertion before </xa:UnsignedSignatureProperties>.
    let one_insertion = |before: &str, after: &str| {
        let at = before.rfind("</xa:UnsignedSignatureProperties>").expect("properties");
        assert!(
            after.len() > before.len() && after.starts_with(&before[..at]) && after.ends_with(&before[at..]),
            "one insertion before </xa:UnsignedSignatureProperties>"
        );
    };
    let text = std::fs::read_to_string(&lta).expect("lta");
    one_insertion(&lt, &text);
    let (ok, out) = xades_archive_verifies(&t.dir, &lta, "PrescriptionSign", &t.tsa.root);
    assert!(ok, "{out}");
    let renewed = t.dir.join("rx-renewed.xml");
    let r = t.inkan(&["--json", "extend", s(&lta), "--level", "B-LTA", "--out", s(&renewed)]);
    assert_eq!(r.code, 0, "{r:?}");
    let renewed_text = std::fs::read_to_string(&renewed).expect("renewed");
    one_insertion(&text, &renewed_text);
    let inserted = &renewed_text[text.rfind("</xa:UnsignedSignatureProperties>").expect("end")..];
    assert!(
        inserted.starts_with("<xa141:TimeStampValidationData ") && inserted.contains("<xa141:ArchiveTimeStamp "),
        "renewal: the first archive time-stamp's validation data, then the new one: {inserted}"
    );
    let (ok, out) = xades_archive_verifies(&t.dir, &renewed, "PrescriptionSign", &t.tsa.root);
    assert!(ok && out.starts_with("2 archive"), "{out}");
    xmlsec1_verifies(&renewed);
    let (code, report) = t.verify(&renewed, None);
    assert_eq!((code, &report["indication"]), (0, &json!("TOTAL_PASSED")), "{report}");
    assert_eq!(Setup::timestamp_kinds(&report), ["signature", "archive", "archive"], "{report}");

    // Refused: a changed byte of the prescription (naming the reference),
    // a DTD, content with a document, a document with no signature.
    let changed = bb.replacen("U0oxCjEs", "U0oxCjEt", 1);
    assert_ne!(changed, bb);
    let r = extend("B-T", changed.as_bytes());
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("HASH_FAILURE") && r.text().contains("reference 1"), "{}", r.text());
    let declared = bb.find("?>").map_or(0, |i| i + 2);
    let dtd = format!("{}<!DOCTYPE Document [<!ENTITY x \"y\">]>{}", &bb[..declared], &bb[declared..]);
    let r = extend("B-T", dtd.as_bytes());
    assert_eq!(r.status, 400, "{}", r.text());
    let r = Client::new().post_json(
        &t.server.url("/api/v1/extend?level=B-T"),
        &t.token,
        &json!({ "signature": Base64::encode_string(bb.as_bytes()), "content": "eA==" }),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let unsigned = "<Document><Prescription id=\"PrescriptionDocument\"><PrescriptionSign/></Prescription></Document>";
    let r = extend("B-T", unsigned.as_bytes());
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("sign it first"), "{}", r.text());
}
