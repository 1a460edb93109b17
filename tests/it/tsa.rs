//! Time-stamps (level B-T): inkan's RFC 3161 client against a real TSA
//! (certomancer's `animate`, started here on a free port) and against one
//! that misbehaves on purpose (a small HTTP server of this file in front of
//! it). What inkan makes is checked by tools nobody here wrote: `openssl ts
//! -verify` on every token with its recomputed input, `openssl cms
//! -verify`, pyHanko's CMS validation (hard-fail revocation) and xmlsec1.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use base64ct::{Base64, Encoding};
use der::{Decode, Encode};
use serde_json::json;

pub use crate::certomancer::Certomancer;
use crate::harness::{fixture, openssl_verify, root, Env};
use crate::http::{login, register_client, Client, Server};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8")
}

/// Posts a time-stamp query with curl (and one more header, if any); the answer's body.
fn post_query(url: &str, query: &[u8], header: Option<&str>) -> Vec<u8> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-H", "Content-Type: application/timestamp-query"]);
    if let Some(h) = header {
        cmd.args(["-H", h]);
    }
    let mut child =
        cmd.args(["--data-binary", "@-", url]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("curl");
    child.stdin.take().expect("stdin").write_all(query).expect("query");
    child.wait_with_output().expect("curl").stdout
}

/// A TSA that misbehaves as its path says, in front of a good one:
/// `/ok`, `/wrong-imprint`, `/wrong-nonce` (each forwarded, the query
/// altered), `/reject` (a rejection status), `/slow` (no answer for 30 s),
/// `/garbage`, `/noeku` (certomancer's TSA without the EKU).
pub struct BadTsa {
    pub base: String,
}

impl BadTsa {
    pub fn start(good: &Certomancer) -> BadTsa {
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (good, noeku) = (good.tsa(), format!("{}/testpki/tsa/tsa-noeku", good.base));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (good, noeku) = (good.clone(), noeku.clone());
                std::thread::spawn(move || answer(stream, &good, &noeku));
            }
        });
        BadTsa { base }
    }
}

fn answer(mut stream: std::net::TcpStream, good: &str, noeku: &str) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_end, len) = loop {
        let n = stream.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)))
                .unwrap_or(0);
            break (i + 4, len);
        }
    };
    while buf.len() < head_end + len {
        let n = stream.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let path = String::from_utf8_lossy(&buf).split_whitespace().nth(1).unwrap_or("").to_owned();
    let query = buf[head_end..head_end + len].to_vec();
    let mut req = inkan::tsa::asn1::TimeStampReq::from_der(&query).ok();
    let body: Vec<u8> = match path.as_str() {
        "/ok" => post_query(good, &query, None),
        "/noeku" => post_query(noeku, &query, None),
        // A token for another time (the TSA's certificate was valid then).
        "/backdated" => post_query(good, &query, Some("X-Certomancer-Fake-Time: 2021-06-01T00:00:00+00:00")),
        "/huge" => vec![0x30; 300 << 10],
        "/drip" => {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
            for _ in 0..60 {
                std::thread::sleep(Duration::from_millis(500));
                if stream.write_all(b"0").is_err() {
                    return;
                }
            }
            return;
        }
        "/wrong-imprint" => {
            let r = req.as_mut().expect("query");
            let mut digest = r.message_imprint.hashed_message.as_bytes().to_vec();
            digest[0] ^= 0xff;
            r.message_imprint.hashed_message = der::asn1::OctetString::new(digest).expect("digest");
            post_query(good, &r.to_der().expect("der"), None)
        }
        "/wrong-nonce" => {
            let r = req.as_mut().expect("query");
            r.nonce = Some(der::asn1::Uint::new(&[0x12, 0x34, 0x56]).expect("nonce"));
            post_query(good, &r.to_der().expect("der"), None)
        }
        // TimeStampResp { PKIStatusInfo { rejection, ["policy not accepted"], unacceptedPolicy } }
        "/reject" => {
            let text = b"policy not accepted";
            let mut status = vec![0x02, 0x01, 0x02, 0x30, (text.len() + 2) as u8, 0x0c, text.len() as u8];
            status.extend_from_slice(text);
            status.extend_from_slice(&[0x03, 0x03, 0x07, 0x00, 0x80]);
            let mut info = vec![0x30, status.len() as u8];
            info.extend_from_slice(&status);
            let mut resp = vec![0x30, info.len() as u8];
            resp.extend_from_slice(&info);
            resp
        }
        "/slow" => {
            std::thread::sleep(Duration::from_secs(30));
            Vec::new()
        }
        _ => b"this is not DER".to_vec(),
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/timestamp-reply\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
}

/// The CAdES signature's value and its time-stamp token (DER).
pub(crate) fn cades_token(der: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let ci = cms::content_info::ContentInfo::from_der(der).expect("ContentInfo");
    let sd: cms::signed_data::SignedData = ci.content.decode_as().expect("SignedData");
    let si = sd.signer_infos.0.get(0).expect("signer");
    let unsigned = si.unsigned_attrs.as_ref().expect("unsigned attributes");
    let attr =
        unsigned.iter().find(|a| a.oid.to_string() == "1.2.840.113549.1.9.16.2.14").expect("signature time-stamp");
    let token = attr.values.get(0).expect("token").to_der().expect("der");
    (si.signature.as_bytes().to_vec(), token)
}

/// xmlsec1 verifies a signed prescription (its chain to the fixture root).
pub(crate) fn xmlsec1_verifies(signed: &Path) {
    let out = Command::new("xmlsec1")
        .args(["--verify", "--id-attr:id", "PrescriptionDocument", "--trusted-pem"])
        .arg(fixture("hpki-root.pem"))
        .arg("--untrusted-pem")
        .arg(fixture("hpki-signing-ca.pem"))
        .arg(signed)
        .output()
        .expect("xmlsec1");
    assert!(out.status.success(), "xmlsec1: {}", String::from_utf8_lossy(&out.stderr));
}

/// `openssl ts -verify` of the newest archive time-stamp of the signature
/// `id` in `signed` over its input as lxml computes it
/// (tests/tsa/xades_archive.py); with how many there are.
pub(crate) fn xades_archive_verifies(dir: &Path, signed: &Path, id: &str, ca: &Path) -> (bool, String) {
    let token_path = dir.join(format!("{id}-ats.tst"));
    let out = Command::new("python3")
        .arg(root().join("tests/tsa/xades_archive.py"))
        .arg(signed)
        .arg(id)
        .arg(&token_path)
        .output()
        .expect("python3 with lxml");
    assert!(out.status.success(), "xades_archive.py: {}", String::from_utf8_lossy(&out.stderr));
    let token = std::fs::read(&token_path).expect("token");
    let (ok, text) = openssl_ts_verify(dir, &format!("{id}-ats"), &out.stdout, &token, ca);
    (ok, format!("{} archive time-stamp(s); {text}", String::from_utf8_lossy(&out.stderr).trim()))
}

/// `openssl ts -verify` of a token over `data`, trusting `ca`.
pub(crate) fn openssl_ts_verify(dir: &Path, name: &str, data: &[u8], token: &[u8], ca: &Path) -> (bool, String) {
    let (d, t) = (dir.join(format!("{name}.data")), dir.join(format!("{name}.tst")));
    std::fs::write(&d, data).expect("data");
    std::fs::write(&t, token).expect("token");
    let out = Command::new("openssl")
        .args(["ts", "-verify", "-token_in", "-data"])
        .arg(&d)
        .arg("-in")
        .arg(&t)
        .arg("-CAfile")
        .arg(ca)
        .output()
        .expect("openssl");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success() && text.contains("Verification: OK"), text)
}

/// The HPKI fixture root's CRL (an ARL, none revoked), which pyHanko's
/// hard-fail revocation wants for the signing CA's certificate.
pub(crate) fn hpki_root_arl(dir: &Path) -> PathBuf {
    let ca = inkan::pki::ca::Ca::load(&fixture("hpki-root.pem"), &fixture("hpki-root.key")).expect("root");
    let now = SystemTime::now();
    let crl = ca.crl(1, &[], now - Duration::from_secs(3600), now + Duration::from_secs(86_400)).expect("crl");
    let path = dir.join("hpki-root.crl");
    std::fs::write(&path, crl).expect("write");
    path
}

pub(crate) fn tsa_env(tsa: &Certomancer) -> Vec<(&'static str, String)> {
    vec![("INKAN_TSA_URL", tsa.tsa()), ("INKAN_TSA_CA", tsa.root.display().to_string())]
}

pub(crate) const CSV: &str = "SJ1\n1,1,1234567,01,inkan試験病院\n51,20261206";

#[test]
fn b_t_signatures_pass_openssl_ts_pyhanko_xmlsec1_and_signxml() {
    let tsa = Certomancer::start();
    let env = Env::new();
    env.user_with_key_as("100001", "rsa2048", "doctor");
    env.ok(&["hpki", "map", "100001", s(&fixture("holders/hpki-doctor.pem"))]);
    let vars = tsa_env(&tsa);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start(&env, &vars);
    let client = register_client(&env);
    let token = login(&server, &client, "hpki-doctor", "hpki")["access_token"].as_str().expect("token").to_owned();
    let bearer = format!("Bearer {token}");
    let dir = env.path("b-t");
    std::fs::create_dir_all(&dir).expect("dir");

    // CAdES-T of a document: openssl cms, the token by openssl ts over the
    // signature value, and pyHanko over all of it (hard-fail revocation).
    let document = "処方箋 CAdES-T".as_bytes();
    let r = Client::new().post(&server.url("/api/v1/sign?level=B-T"), &[("authorization", &bearer)], document);
    assert_eq!(r.status, 200, "{}", r.text());
    let (doc, sig) = (dir.join("doc.txt"), dir.join("doc.p7s"));
    std::fs::write(&doc, document).expect("doc");
    std::fs::write(&sig, &r.body).expect("sig");
    let (ok, out) = openssl_verify(&sig, Some(&doc));
    assert!(ok, "openssl cms -verify: {out}");
    let (value, stamp) = cades_token(&r.body);
    let (ok, out) = openssl_ts_verify(&dir, "cades", &value, &stamp, &tsa.root);
    assert!(ok, "openssl ts -verify: {out}");
    let out = Command::new("python3")
        .arg(root().join("tests/tsa/validate_cades.py"))
        .arg(&doc)
        .arg(&sig)
        .arg("--root")
        .arg(fixture("hpki-root.pem"))
        .arg("--cert")
        .arg(fixture("hpki-signing-ca.pem"))
        .arg("--crl")
        .arg(fixture("crl/hpki-signing-ca.crl.pem"))
        .arg("--crl")
        .arg(hpki_root_arl(&dir))
        .arg("--tsa-root")
        .arg(&tsa.root)
        .arg("--tsa-crl")
        .arg(&tsa.root_crl)
        .output()
        .expect("python3 with pyHanko (softhsm/setup.sh --deps-only installs it)");
    assert!(
        out.status.success(),
        "pyHanko: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // sign-hashes at B-T: each signature stamped.
    let digest = inkan::keystore::DigestAlgorithm::Sha256.digest(document);
    let r = Client::new().post_json(
        &server.url("/api/v1/sign-hashes"),
        &token,
        &json!({ "hashes": [Base64::encode_string(&digest), Base64::encode_string(&digest)], "level": "B-T" }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    for (i, s) in r.json()["signatures"].as_array().expect("signatures").iter().enumerate() {
        let der = Base64::decode_vec(s.as_str().expect("b64")).expect("b64");
        let (value, stamp) = cades_token(&der);
        let (ok, out) = openssl_ts_verify(&dir, &format!("hash-{i}"), &value, &stamp, &tsa.root);
        assert!(ok, "{out}");
    }

    // XAdES-T of a prescription from its CSV: xmlsec1 and signxml still
    // verify it, and the time-stamp is over the inclusive C14N of
    // SignatureValue in the document, as lxml canonicalises it.
    let r = Client::new().post(
        &server.url("/api/v1/sign?format=xades&level=B-T&prescription_id=rx-t-1"),
        &[("authorization", &bearer), ("content-type", "text/csv")],
        CSV,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let signed = dir.join("rx-t.xml");
    std::fs::write(&signed, &r.body).expect("write");
    xmlsec1_verifies(&signed);
    let script = r#"
import sys, base64
from lxml import etree
doc = etree.parse(sys.argv[1])
ns = {"xs": "http://www.w3.org/2000/09/xmldsig#", "xa": "http://uri.etsi.org/01903/v1.3.2#"}
value = doc.find(".//xs:SignatureValue", ns)
sys.stdout.buffer.write(etree.tostring(value, method="c14n"))
token = doc.find(".//xa:SignatureTimeStamp/xa:EncapsulatedTimeStamp", ns).text
open(sys.argv[2], "wb").write(base64.b64decode(token))
"#;
    let token_path = dir.join("xades.tst");
    let out = Command::new("python3").args(["-c", script]).arg(&signed).arg(&token_path).output().expect("lxml");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.starts_with(b"<xs:SignatureValue xmlns:xs="), "{}", String::from_utf8_lossy(&out.stdout));
    let stamp = std::fs::read(&token_path).expect("token");
    let (ok, text) = openssl_ts_verify(&dir, "xades", &out.stdout, &stamp, &tsa.root);
    assert!(ok, "openssl ts -verify over lxml's C14N of SignatureValue: {text}");

    // Over a Reference 1 digest alone there is no document for the
    // time-stamp: refused before anything is signed.
    let rows = env.audit_rows();
    let r = Client::new().post_json(
        &server.url("/api/v1/sign-hashes"),
        &token,
        &json!({ "hashes": [Base64::encode_string(&digest)], "format": "xades", "kind": "prescription", "level": "B-T" }),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("needs the document"), "{}", r.text());
    assert_eq!(env.audit_rows(), rows);

    // The audit rows say the level.
    let rows = env.json(&["audit", "tail", "--limit", "3"]).to_string();
    assert!(rows.contains("B-T"), "{rows}");
}

#[test]
fn b_lt_signatures_carry_what_validates_them_and_pyhanko_needs_nothing_else() {
    let tsa = Certomancer::start();
    let env = Env::new();
    env.user_with_key_as("100001", "rsa2048", "doctor");
    env.ok(&["hpki", "map", "100001", s(&fixture("holders/hpki-doctor.pem"))]);
    let dir = env.path("b-lt");
    std::fs::create_dir_all(&dir).expect("dir");
    // The signer's CRLs from files; the TSA's fetched from its certificate's
    // distribution point (certomancer's CRL repository).
    let crls = format!("{}:{}", fixture("crl/hpki-signing-ca.crl.pem").display(), hpki_root_arl(&dir).display());
    let mut vars = tsa_env(&tsa);
    vars.push(("INKAN_PKI_CRLS", crls));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start(&env, &vars);
    let client = register_client(&env);
    let token = login(&server, &client, "hpki-doctor", "hpki")["access_token"].as_str().expect("token").to_owned();
    let bearer = format!("Bearer {token}");

    // CAdES-LT: pyHanko validates it with the trust roots alone (every
    // intermediate and CRL from the signature), revocation hard-fail.
    let document = "処方箋 CAdES-LT".as_bytes();
    let r = Client::new().post(&server.url("/api/v1/sign?level=B-LT"), &[("authorization", &bearer)], document);
    assert_eq!(r.status, 200, "{}", r.text());
    let (doc, sig) = (dir.join("doc.txt"), dir.join("doc.p7s"));
    std::fs::write(&doc, document).expect("doc");
    std::fs::write(&sig, &r.body).expect("sig");
    let (ok, out) = openssl_verify(&sig, Some(&doc));
    assert!(ok, "openssl cms -verify: {out}");
    let ci = cms::content_info::ContentInfo::from_der(&r.body).expect("ContentInfo");
    let sd: cms::signed_data::SignedData = ci.content.decode_as().expect("SignedData");
    assert_eq!(sd.certificates.as_ref().map(|c| c.0.len()), Some(5), "signer, CA, root, TSA, TSA root");
    assert_eq!(sd.crls.as_ref().map(|c| c.0.len()), Some(3), "signing CA's, root's, TSA root's");
    let out = Command::new("python3")
        .arg(root().join("tests/tsa/validate_cades.py"))
        .arg(&doc)
        .arg(&sig)
        .arg("--root")
        .arg(fixture("hpki-root.pem"))
        .arg("--tsa-root")
        .arg(&tsa.root)
        .arg("--embedded")
        .output()
        .expect("pyHanko");
    assert!(
        out.status.success(),
        "pyHanko on what the signature carries: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // XAdES-LT (the Japanese XL) of a prescription: the samples' elements,
    // each CRL verified by openssl against its issuer, xmlsec1 as before.
    let r = Client::new().post(
        &server.url("/api/v1/sign?format=xades&level=B-LT&prescription_id=rx-lt-1"),
        &[("authorization", &bearer), ("content-type", "text/csv")],
        CSV,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    let signed = dir.join("rx-lt.xml");
    std::fs::write(&signed, &r.body).expect("write");
    let order = [
        "<xa:SignatureTimeStamp ",
        "<xa141:TimeStampValidationData ",
        "<xa:CertificateValues ",
        "<xa:RevocationValues ",
    ];
    let at: Vec<usize> = order.iter().map(|e| text.rfind(e).unwrap_or_else(|| panic!("{e} in {text}"))).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "in the samples' order: {at:?}");
    xmlsec1_verifies(&signed);
    let script = r#"
import sys, base64
from lxml import etree
doc = etree.parse(sys.argv[1])
ns = {"xa": "http://uri.etsi.org/01903/v1.3.2#", "xa141": "http://uri.etsi.org/01903/v1.4.1#"}
outer = doc.findall(".//xa:UnsignedSignatureProperties/xa:RevocationValues/xa:CRLValues/xa:EncapsulatedCRLValue", ns)
inner = doc.findall(".//xa141:TimeStampValidationData/xa:RevocationValues/xa:CRLValues/xa:EncapsulatedCRLValue", ns)
for i, e in enumerate(outer + inner):
    open(f"{sys.argv[2]}/crl-{i}.der", "wb").write(base64.b64decode(e.text))
print(len(outer), len(inner))
"#;
    let out = Command::new("python3").args(["-c", script]).arg(&signed).arg(&dir).output().expect("lxml");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2 1", "the signer's two CRLs, the TSA's one");
    for (i, issuer) in [fixture("hpki-signing-ca.pem"), fixture("hpki-root.pem"), tsa.root.clone()].iter().enumerate() {
        let out = Command::new("openssl")
            .args(["crl", "-inform", "DER", "-noout", "-in"])
            .arg(dir.join(format!("crl-{i}.der")))
            .arg("-CAfile")
            .arg(issuer)
            .output()
            .expect("openssl crl");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && text.contains("verify OK"), "CRL {i}: {text}");
    }

    // XAdES-LTA: an archive time-stamp over all of it, whose input lxml
    // computes alike (XAdES 1.4.1, SPEC §3.2), checked by openssl ts.
    let r = Client::new().post(
        &server.url("/api/v1/sign?format=xades&level=B-LTA&prescription_id=rx-lta-1"),
        &[("authorization", &bearer), ("content-type", "text/csv")],
        CSV,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(
        text.contains("</xa:RevocationValues><xa141:ArchiveTimeStamp "),
        "the archive time-stamp follows the B-LT properties: {text}"
    );
    let signed = dir.join("rx-lta.xml");
    std::fs::write(&signed, &r.body).expect("write");
    xmlsec1_verifies(&signed);
    let (ok, text) = xades_archive_verifies(&dir, &signed, "PrescriptionSign", &tsa.root);
    assert!(ok, "openssl ts -verify of the archive time-stamp over lxml's input: {text}");

    // CAdES-LTA: an archive-time-stamp-v3 whose input asn1crypto recomputes
    // from the finished signature (EN 319 122-1 5.5.3), checked by openssl
    // ts; openssl cms and pyHanko still validate the signature under it.
    let r = Client::new().post(&server.url("/api/v1/sign?level=B-LTA"), &[("authorization", &bearer)], document);
    assert_eq!(r.status, 200, "{}", r.text());
    let sig = dir.join("doc-lta.p7s");
    std::fs::write(&sig, &r.body).expect("sig");
    let (ok, out) = openssl_verify(&sig, Some(&doc));
    assert!(ok, "openssl cms -verify: {out}");
    let (input, token) = (dir.join("cades-ats.data"), dir.join("cades-ats.tst"));
    let out = Command::new("python3")
        .arg(root().join("tests/tsa/archive_v3.py"))
        .args([&doc, &sig, &input, &token])
        .output()
        .expect("python3 with asn1crypto");
    assert!(out.status.success(), "archive_v3.py: {}", String::from_utf8_lossy(&out.stderr));
    let counts: serde_json::Value = serde_json::from_slice(&out.stdout).expect("counts");
    assert_eq!(
        counts,
        json!({ "certificates": 5, "crls": 3, "unsigned attribute values": 1 }),
        "the index lists the B-LT signature's every item"
    );
    let (ok, text) = openssl_ts_verify(
        &dir,
        "cades-ats",
        &std::fs::read(&input).expect("input"),
        &std::fs::read(&token).expect("token"),
        &tsa.root,
    );
    assert!(ok, "openssl ts -verify of the archive time-stamp over asn1crypto's input: {text}");
    let out = Command::new("python3")
        .arg(root().join("tests/tsa/validate_cades.py"))
        .arg(&doc)
        .arg(&sig)
        .arg("--root")
        .arg(fixture("hpki-root.pem"))
        .arg("--tsa-root")
        .arg(&tsa.root)
        .arg("--embedded")
        .output()
        .expect("pyHanko");
    assert!(out.status.success(), "pyHanko on the B-LTA signature: {}", String::from_utf8_lossy(&out.stdout));

    // Without a current CRL for the signer's CA, B-LT is not delivered: 503
    // naming what is missing; B-T still is.
    drop(server);
    let mut vars = tsa_env(&tsa);
    vars.push(("INKAN_PKI_CRLS", fixture("crl/hpki-signing-ca.crl.pem").display().to_string()));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start(&env, &vars);
    let r = Client::new().post(&server.url("/api/v1/sign?level=B-LT"), &[("authorization", &bearer)], document);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("no usable CRL") || r.text().contains("no current CRL"), "{}", r.text());
    let r = Client::new().post(&server.url("/api/v1/sign?level=B-T"), &[("authorization", &bearer)], document);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn a_tsa_that_misbehaves_is_refused_with_its_name_and_nothing_is_delivered() {
    let tsa = Certomancer::start();
    let bad = BadTsa::start(&tsa);
    let env = Env::new();
    env.user_with_key_as("100001", "rsa2048", "doctor");
    let dir = env.path("bad-tsa");
    std::fs::create_dir_all(&dir).expect("dir");
    let doc = dir.join("doc.txt");
    std::fs::write(&doc, "a document").expect("doc");
    let root_pem = tsa.root.display().to_string();
    let sign = |url: &str, ca: &str, fallback: &str, out: &Path| {
        env.run_with(
            &["sign", "100001", s(&doc), "--out", s(out), "--level", "B-T"],
            &[
                ("INKAN_TSA_URL", url),
                ("INKAN_TSA_CA", ca),
                ("INKAN_TSA_FALLBACK_URL", fallback),
                ("INKAN_TSA_TIMEOUT_SECS", "2"),
            ],
        )
    };
    let rows = env.audit_rows();
    let mut unstamped = 0;
    for (mode, says) in [
        ("wrong-imprint", "imprint is not the request's"),
        ("wrong-nonce", "nonce is not the request's"),
        ("reject", "rejection"),
        ("noeku", "extendedKeyUsage"),
        ("garbage", "TimeStampResp"),
        ("slow", "no answer within 2 s"),
        ("drip", "no answer within 2 s"),
        ("huge", "larger than"),
        ("backdated", "more than 300 s from this node's"),
    ] {
        let out = dir.join(format!("{mode}.p7s"));
        let url = format!("{}/{mode}", bad.base);
        let r = sign(&url, &root_pem, "", &out);
        assert_ne!(r.code, 0, "{mode}: {}", r.stdout);
        assert!(r.stderr.contains(&url) && r.stderr.contains(says), "{mode}: {}", r.stderr);
        assert!(!out.exists(), "{mode}: nothing delivered");
        unstamped += 1;
    }
    // A chain to another anchor than the one configured.
    let out = dir.join("untrusted.p7s");
    let r = sign(&tsa.tsa(), s(&fixture("hpki-root.pem")), "", &out);
    assert!(r.stderr.contains("no path to a trusted anchor"), "{}", r.stderr);
    unstamped += 1;
    // What happened is in the audit log, one row per signature not delivered.
    assert_eq!(env.audit_rows(), rows + unstamped);
    let tail = env.json(&["audit", "tail", "--limit", "1"]);
    assert_eq!(tail[0]["event"], "sign.undelivered", "{tail}");
    // The fallback TSA answers when the first refuses.
    let out = dir.join("fallback.p7s");
    let r = sign(&format!("{}/reject", bad.base), &root_pem, &tsa.tsa(), &out);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (_, stamp) = cades_token(&std::fs::read(&out).expect("sig"));
    assert!(!stamp.is_empty());
    // And B-B asks no TSA, even one that would not answer.
    let out = dir.join("bb.p7s");
    let slow = format!("{}/slow", bad.base);
    let r = env.run_with(
        &["sign", "100001", s(&doc), "--out", s(&out)],
        &[("INKAN_TSA_URL", &slow), ("INKAN_TSA_CA", &root_pem)],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn over_https_a_tsa_outage_answers_503_naming_it_and_gives_the_sad_back() {
    let tsa = Certomancer::start();
    let bad = BadTsa::start(&tsa);
    let env = Env::new();
    env.user_with_key_as("100001", "rsa2048", "doctor");
    env.ok(&["hpki", "map", "100001", s(&fixture("holders/hpki-doctor.pem"))]);
    let url = format!("{}/reject", bad.base);
    let root_pem = tsa.root.display().to_string();
    let server = Server::start(&env, &[("INKAN_TSA_URL", &url), ("INKAN_TSA_CA", &root_pem), ("INKAN_CSC_SCAL", "2")]);
    let info = Client::new().post(&server.url("/csc/v2/info"), &[], "{}").json();
    assert_eq!(info["conformance_levels"], json!(["Ades-B-B", "Ades-B-T", "Ades-B-LT", "Ades-B-LTA"]), "{info}");
    let client = register_client(&env);
    let token = login(&server, &client, "hpki-doctor", "hpki")["access_token"].as_str().expect("token").to_owned();
    let digest = Base64::encode_string(&[3u8; 32]);
    let r = Client::new().post_json(
        &server.url("/csc/v2/credentials/authorize"),
        &token,
        &json!({ "credentialID": "100001.g1", "numSignatures": 1, "hashes": [digest] }),
    );
    let sad = r.json()["SAD"].as_str().expect("SAD").to_owned();
    let sign_as = |format: &str, level: &str| {
        Client::new().post_json(
            &server.url("/csc/v2/signatures/signDoc"),
            &token,
            &json!({ "credentialID": "100001.g1", "SAD": sad, "documentDigests": [{
                "hashes": [digest], "hashAlgorithmOID": "2.16.840.1.101.3.4.2.1", "signature_format": format,
                "conformance_level": level }] }),
        )
    };
    let sign = |level: &str| sign_as("C", level);
    // A level that cannot be made is refused before the SAD is taken: XAdES
    // from a hash alone is B-B only (the time-stamp covers the signature
    // value, which only the document's assembly yields here).
    let r = sign_as("X", "Ades-B-T");
    assert_eq!(r.status, 400, "{}", r.text());
    let r = sign("Ades-B-T");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.headers.get("retry-after").map(String::as_str), Some("5"));
    assert!(r.text().contains(&url) && r.text().contains("rejection"), "{}", r.text());
    // The SAD was given back: the same one signs at B-B.
    let r = sign("Ades-B-B");
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn inkan_verify_passes_inkans_own_signatures_at_every_level_and_fails_changed_ones() {
    let tsa = Certomancer::start();
    let env = Env::new();
    env.user_with_key_as("100001", "rsa2048", "doctor");
    env.ok(&["hpki", "map", "100001", s(&fixture("holders/hpki-doctor.pem"))]);
    let dir = env.path("verify");
    std::fs::create_dir_all(&dir).expect("dir");
    let crl_files = [fixture("crl/hpki-signing-ca.crl.pem"), hpki_root_arl(&dir)];
    let crls = format!("{}:{}", crl_files[0].display(), crl_files[1].display());
    let mut vars = tsa_env(&tsa);
    vars.push(("INKAN_PKI_CRLS", crls));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start(&env, &vars);
    let client = register_client(&env);
    let token = login(&server, &client, "hpki-doctor", "hpki")["access_token"].as_str().expect("token").to_owned();
    let bearer = format!("Bearer {token}");
    let document = "処方箋 verify".as_bytes();
    let doc = dir.join("doc.txt");
    std::fs::write(&doc, document).expect("doc");
    let root_pem = fixture("hpki-root.pem");
    let tsa_root = tsa.root.display().to_string();
    // `inkan verify` with the fixture root and the TSA's, and no CRL but
    // what the signature carries (the server's [pki] crls are not the CLI's).
    let verify = |file: &Path, extra: &[&str]| {
        let mut args = vec!["--json", "verify", s(file), "--anchor", s(&root_pem), "--tsa-anchor", &tsa_root];
        args.extend_from_slice(extra);
        let r = env.run(&args);
        let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|_| panic!("{r:?}"));
        (r.code, report)
    };

    for level in ["B-B", "B-T", "B-LT", "B-LTA"] {
        let r = Client::new().post(
            &server.url(&format!("/api/v1/sign?level={level}")),
            &[("authorization", &bearer)],
            document,
        );
        assert_eq!(r.status, 200, "{level}: {}", r.text());
        let sig = dir.join(format!("{level}.p7s"));
        std::fs::write(&sig, &r.body).expect("sig");
        let (code, report) = verify(&sig, &["--content", s(&doc)]);
        let signature = &report["signatures"][0];
        assert_eq!(signature["level"], level, "{report}");
        assert_eq!(signature["signer"]["hc_role"], "Medical Doctor", "{report}");
        match level {
            // B-B and B-T carry no CRL: revocation cannot be known without
            // one (nor the TSA's, so B-T's time-stamp proves nothing yet).
            "B-B" | "B-T" => {
                assert_eq!((code, &report["sub_indication"]), (2, &json!("TRY_LATER")), "{level}: {report}");
                assert_eq!(signature["best_signature_time_proven"], false, "{report}");
                let (code, report) = verify(
                    &sig,
                    &[
                        "--content",
                        s(&doc),
                        "--crl",
                        s(&crl_files[0]),
                        "--crl",
                        s(&crl_files[1]),
                        "--crl",
                        s(&tsa.root_crl),
                    ],
                );
                assert_eq!((code, &report["indication"]), (0, &json!("TOTAL_PASSED")), "{level} with CRLs: {report}");
                assert_eq!(report["signatures"][0]["best_signature_time_proven"], level == "B-T", "{report}");
            }
            _ => {
                assert_eq!((code, &report["indication"]), (0, &json!("TOTAL_PASSED")), "{level}: {report}");
                assert_eq!(signature["best_signature_time_proven"], true, "{report}");
            }
        }
    }
    // The B-LTA signature: without its content it is indeterminate; over
    // other content it fails, naming the digest.
    let lta = dir.join("B-LTA.p7s");
    let (code, report) = verify(&lta, &[]);
    assert_eq!((code, &report["sub_indication"]), (2, &json!("SIGNED_DATA_NOT_FOUND")), "{report}");
    let other = dir.join("other.txt");
    std::fs::write(&other, "処方箋 changed").expect("other");
    let (code, report) = verify(&lta, &["--content", s(&other)]);
    assert_eq!((code, &report["sub_indication"]), (1, &json!("HASH_FAILURE")), "{report}");
    // One byte of the signature value changed: its time-stamps no longer
    // cover it, and the value does not verify.
    let mut der = std::fs::read(&lta).expect("sig");
    let ci = cms::content_info::ContentInfo::from_der(&der).expect("ContentInfo");
    let sd: cms::signed_data::SignedData = ci.content.decode_as().expect("SignedData");
    let value = sd.signer_infos.0.get(0).expect("signer").signature.as_bytes().to_vec();
    let at = der.windows(value.len()).position(|w| w == value).expect("value in the file");
    der[at + 10] ^= 1;
    let changed = dir.join("changed.p7s");
    std::fs::write(&changed, &der).expect("changed");
    let (code, report) = verify(&changed, &["--content", s(&doc)]);
    assert_eq!((code, &report["indication"]), (1, &json!("TOTAL_FAILED")), "{report}");

    // XAdES-LTA of a prescription through the API: the report as JSON.
    let r = Client::new().post(
        &server.url("/api/v1/sign?format=xades&level=B-LTA&prescription_id=rx-verify-1"),
        &[("authorization", &bearer), ("content-type", "text/csv")],
        CSV,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let signed = r.body.clone();
    let r = Client::new().post(
        &server.url("/api/v1/verify"),
        &[("authorization", &bearer), ("content-type", "application/xml")],
        signed.clone(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let report = r.json();
    assert_eq!(report["indication"], "TOTAL_PASSED", "{report}");
    assert_eq!(report["signatures"][0]["level"], "B-LTA", "{report}");
    assert_eq!(report["signatures"][0]["kind"], "prescription", "{report}");
    let kinds: Vec<&str> = report["signatures"][0]["timestamps"]
        .as_array()
        .expect("stamps")
        .iter()
        .filter_map(|t| t["type"].as_str())
        .collect();
    assert_eq!(kinds, ["signature", "archive"], "{report}");
    // The same file through the CLI.
    let file = dir.join("rx.xml");
    std::fs::write(&file, &signed).expect("rx");
    let (code, report) = verify(&file, &[]);
    assert_eq!((code, &report["indication"]), (0, &json!("TOTAL_PASSED")), "{report}");
    // A detached CMS and its content as JSON.
    let r = Client::new().post_json(
        &server.url("/api/v1/verify"),
        &token,
        &json!({ "signature": Base64::encode_string(&std::fs::read(&lta).expect("lta")), "content": Base64::encode_string(document) }),
    );
    assert_eq!(r.json()["indication"], "TOTAL_PASSED", "{}", r.text());
    // Refused: no bearer token, a body of another type, bad base64.
    let r = Client::new().post(&server.url("/api/v1/verify"), &[("content-type", "application/xml")], signed);
    assert_eq!(r.status, 401, "{}", r.text());
    let r = Client::new().post(
        &server.url("/api/v1/verify"),
        &[("authorization", &bearer), ("content-type", "text/plain")],
        "x",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = Client::new().post_json(&server.url("/api/v1/verify"), &token, &json!({ "signature": "%%" }));
    assert_eq!(r.status, 400, "{}", r.text());
}
