//! E-prescriptions: XAdES-BES in the national profile over real TLS (the
//! API, CSC signDoc, the CLI), checked by verifiers nobody here wrote:
//! `xmlsec1 --verify` against the fixture chain and signxml's
//! `XAdESVerifier` with the signer's certificate pinned.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64ct::{Base64, Encoding};
use serde_json::json;

use crate::harness::{fixture, Env};
use crate::http::{login, register_client, Client, OidcClient, Server};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8")
}

/// A prescription CSV (UTF-8, LF, first line SJ1).
const CSV: &str = "SJ1\n1,1,1234567,01,inkan試験病院\n5,0000000000000001,ｼｹﾝ ﾀﾛｳ,試験　太郎\n51,20261206";

/// A prescription document as an EMR builds it, with `slot` where the
/// signature goes (empty: none, inkan adds it).
pub fn prescription(id: &str, slot: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Document xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
         id=\"Document\" xsi:noNamespaceSchemaLocation=\"EP.xsd\"><Prescription><PrescriptionManagement \
         id=\"PrescriptionManagement\"><Version Value=\"EPS1.0\"/><PrescriptionId Value=\"{id}\" />\
         </PrescriptionManagement><PrescriptionDocument id=\"PrescriptionDocument\">{}</PrescriptionDocument>\
         <AdditionalPrescriptionInformation id=\"AdditionalPrescriptionInformation\"><Note>ミニリンメルト</Note>\
         </AdditionalPrescriptionInformation>{slot}</Prescription></Document>",
        Base64::encode_string(CSV.as_bytes())
    )
}

/// `xmlsec1 --verify` of one signature against the fixture HPKI chain.
fn xmlsec1(doc: &Path, dispensing: bool) -> (bool, String) {
    let mut cmd = Command::new("xmlsec1");
    cmd.args(["--verify", "--id-attr:id", "PrescriptionDocument"]);
    if dispensing {
        cmd.args([
            "--id-attr:id",
            "Dispensing",
            "--id-attr:Id",
            "http://www.w3.org/2000/09/xmldsig#:Signature",
            "--node-id",
            "DispensingSign",
        ]);
    }
    cmd.arg("--trusted-pem").arg(fixture("hpki-root.pem")).arg("--untrusted-pem").arg(fixture("hpki-signing-ca.pem"));
    let out = cmd.arg(doc).output().expect("xmlsec1 (softhsm/setup.sh --deps-only installs it)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success() && text.contains("SignedInfo References (ok/all): 3/3"), text)
}

/// signxml's XAdESVerifier with the signer's certificate pinned, three
/// references expected, at `location` (signxml's path to the signature's parent).
fn signxml(doc: &Path, cert_pem: &str, location: &str) -> (bool, String) {
    let script = r#"
import sys
from signxml.xades import XAdESVerifier, XAdESSignatureConfiguration
data = open(sys.argv[1], 'rb').read()
results = XAdESVerifier().verify(data, x509_cert=sys.argv[2], expect_config=XAdESSignatureConfiguration(location=sys.argv[3], expect_references=3))
print(len(results))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(doc)
        .arg(cert_pem)
        .arg(location)
        .output()
        .expect("python3 with signxml (softhsm/setup.sh --deps-only installs it)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success() && text.trim() == "3", text)
}

struct Eps {
    env: Env,
    server: Server,
    client: OidcClient,
    dir: PathBuf,
}

impl Eps {
    /// A doctor (100001, HPKI card hpki-doctor) and a pharmacist (999001-jpa,
    /// card hpki-pharmacist), each with a certificate for their qualification.
    fn start() -> Eps {
        let env = Env::new();
        env.user_with_key_as("100001", "rsa2048", "doctor");
        env.user_with_key_as("999001-jpa", "rsa2048", "pharmacist");
        env.ok(&["hpki", "map", "100001", s(&fixture("holders/hpki-doctor.pem"))]);
        env.ok(&["hpki", "map", "999001-jpa", s(&fixture("holders/hpki-pharmacist.pem"))]);
        let server = Server::start(&env, &[]);
        let client = register_client(&env);
        let dir = env.path("xades");
        std::fs::create_dir_all(&dir).expect("dir");
        Eps { env, server, client, dir }
    }

    fn token(&self, holder: &str) -> String {
        login(&self.server, &self.client, holder, "hpki")["access_token"].as_str().expect("token").to_owned()
    }

    fn sign(&self, token: &str, query: &str, content_type: &str, body: impl Into<Vec<u8>>) -> crate::http::Resp {
        Client::new().post(
            &self.server.url(&format!("/api/v1/sign?format=xades{query}")),
            &[("authorization", &format!("Bearer {token}")), ("content-type", content_type)],
            body,
        )
    }

    /// The signer's certificate (PEM), from `/api/v1/me`.
    fn cert(&self, token: &str) -> String {
        let me = Client::new().get(&self.server.url("/api/v1/me"), &[("authorization", &format!("Bearer {token}"))]);
        me.json()["certificate"]["pem"].as_str().expect("pem").to_owned()
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, bytes).expect("write");
        p
    }

    /// Checks a signed prescription with both verifiers.
    fn verified_prescription(&self, name: &str, bytes: &[u8], cert: &str) {
        let path = self.write(name, bytes);
        let (ok, out) = xmlsec1(&path, false);
        assert!(ok, "xmlsec1 {name}: {out}");
        let (ok, out) = signxml(&path, cert, "./Prescription/PrescriptionSign/");
        assert!(ok, "signxml {name}: {out}");
    }
}

/// The bytes between the signature slot's tags, and the document without them.
fn take_signature(doc: &str, slot: &str) -> (String, String) {
    let open = format!("<{slot}>");
    let start = doc.rfind(&open).expect("slot") + open.len();
    let end = doc.rfind(&format!("</{slot}>")).expect("slot end");
    (doc[start..end].to_owned(), format!("{}{}", &doc[..start], &doc[end..]))
}

#[test]
fn prescriptions_and_dispensing_records_signed_in_every_mode_pass_xmlsec1_and_signxml() {
    let t = Eps::start();
    let doctor = t.token("hpki-doctor");
    let doctor_cert = t.cert(&doctor);

    // Whole documents, with no slot, an empty one and a self-closing one:
    // the same bytes come back with the signature spliced in.
    for (name, slot) in
        [("none", ""), ("empty", "<PrescriptionSign></PrescriptionSign>"), ("self-closing", "<PrescriptionSign/>")]
    {
        let doc = prescription(&format!("rx-{name}"), slot);
        let r = t.sign(&doctor, "", "application/xml", doc.clone());
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        assert_eq!(r.headers.get("content-type").map(String::as_str), Some("application/xml; charset=utf-8"));
        let signed = r.text();
        let (signature, rest) = take_signature(&signed, "PrescriptionSign");
        assert!(signature
            .starts_with("<xs:Signature xmlns:xs=\"http://www.w3.org/2000/09/xmldsig#\" Id=\"PrescriptionSign\">"));
        let expected = prescription(&format!("rx-{name}"), "<PrescriptionSign></PrescriptionSign>");
        assert_eq!(rest, expected, "{name}: every byte outside the signature is as sent");
        t.verified_prescription(&format!("rx-{name}.xml"), signed.as_bytes(), &doctor_cert);
    }

    // The CSV alone: the minimal document, signed.
    let r = t.sign(&doctor, "&prescription_id=rx-csv-1", "text/csv", CSV);
    assert_eq!(r.status, 200, "{}", r.text());
    let from_csv = r.text();
    assert!(from_csv.contains("<PrescriptionId Value=\"rx-csv-1\" />"), "{from_csv}");
    t.verified_prescription("rx-csv.xml", from_csv.as_bytes(), &doctor_cert);

    // Hash only: Reference 1's digest, computed by the clinic; the element
    // comes back and goes into <PrescriptionSign> unchanged.
    let doc = prescription("rx-hash", "<PrescriptionSign></PrescriptionSign>");
    let digest = {
        use sha2::Digest;
        let c14n = format!(
            "<PrescriptionDocument xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" id=\"PrescriptionDocument\">{}</PrescriptionDocument>",
            Base64::encode_string(CSV.as_bytes())
        );
        sha2::Sha256::digest(c14n.as_bytes()).to_vec()
    };
    let r = Client::new().post_json(
        &t.server.url("/api/v1/sign-hashes"),
        &doctor,
        &json!({ "hashes": [Base64::encode_string(&digest)], "format": "xades", "kind": "prescription" }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let element = Base64::decode_vec(r.json()["signatures"][0].as_str().expect("sig")).expect("b64");
    let element = String::from_utf8(element).expect("utf-8");
    let signed = doc
        .replace("<PrescriptionSign></PrescriptionSign>", &format!("<PrescriptionSign>{element}</PrescriptionSign>"));
    t.verified_prescription("rx-hash.xml", signed.as_bytes(), &doctor_cert);

    // The pharmacist signs the dispensing record made over the signed
    // prescription; the doctor's signature still verifies inside it.
    let pharmacist = t.token("hpki-pharmacist");
    let pharmacist_cert = t.cert(&pharmacist);
    let record =
        inkan::eps::dispensing::record(from_csv.as_bytes(), "CJ1,\n1,調剤試験,2".as_bytes(), "dx-1").expect("record");
    let r = t.sign(&pharmacist, "", "application/xml", record.clone());
    assert_eq!(r.status, 200, "{}", r.text());
    let dispensed = r.text();
    let path = t.write("dx.xml", dispensed.as_bytes());
    let (ok, out) = xmlsec1(&path, true);
    assert!(ok, "xmlsec1, the pharmacist's: {out}");
    let (ok, out) = xmlsec1(&path, false);
    assert!(ok, "xmlsec1, the doctor's inside the record: {out}");
    let (ok, out) = signxml(&path, &pharmacist_cert, "./DispensingSign/");
    assert!(ok, "signxml, the pharmacist's: {out}");
    let (ok, out) = signxml(&path, &doctor_cert, "./Dispensing/ReferencePrescription/PrescriptionSign/");
    assert!(ok, "signxml, the doctor's: {out}");

    // Who may sign what: 403 with the reason, nothing written.
    let rows = t.env.audit_rows();
    let r = t.sign(&pharmacist, "", "application/xml", prescription("rx-by-pharmacist", ""));
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.json()["error_description"].as_str().unwrap_or("").contains("doctor or dentist"), "{}", r.text());
    let r = t.sign(&doctor, "", "application/xml", record.clone());
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("pharmacist"), "{}", r.text());
    // A dispensing record whose prescription was changed after the doctor
    // signed: 422 naming the reference. (PrescriptionId is not under the
    // doctor's signature in the national profile: Reference 1 is the CSV.)
    let changed = Base64::encode_string(CSV.replace("01,inkan", "02,inkan").as_bytes());
    let tampered =
        String::from_utf8(record.clone()).expect("utf-8").replacen(&Base64::encode_string(CSV.as_bytes()), &changed, 1);
    let r = t.sign(&pharmacist, "", "application/xml", tampered);
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("reference"), "{}", r.text());
    assert_eq!(t.env.audit_rows(), rows, "refusals write nothing");

    // The audit names the kind, the ids and the CSV's hash, never the CSV.
    let rows = t.env.json(&["audit", "tail", "--limit", "100"]);
    let details: Vec<serde_json::Value> = rows
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["event"] == "sign")
        .map(|r| serde_json::from_str(r["detail"].as_str().expect("detail")).expect("JSON"))
        .collect();
    let csv_sha256 = {
        use sha2::Digest;
        inkan::encoding::hex(&sha2::Sha256::digest(CSV.as_bytes()))
    };
    assert!(details.iter().any(|d| d["kind"] == "dispensing" && d["dispensing_id"] == "dx-1"), "{details:?}");
    assert!(
        details.iter().any(|d| d["kind"] == "prescription"
            && d["prescription_id"] == "rx-csv-1"
            && d["csv_sha256"] == csv_sha256.as_str()),
        "{details:?}"
    );
    let text = rows.to_string();
    assert!(!text.contains("inkan試験病院") && !text.contains(&Base64::encode_string(CSV.as_bytes())), "{text}");
}

#[test]
fn csc_sign_doc_signs_xades_documents_and_reference_digests_under_one_sad() {
    let t = Eps::start_scal2();
    let doctor = t.token("hpki-doctor");
    let doctor_cert = t.cert(&doctor);
    let info = Client::new().post(&t.server.url("/csc/v2/info"), &[], Vec::new()).json();
    assert_eq!(info["signature_formats"]["formats"], json!(["C", "X"]));
    let credential = "100001.g1";

    let doc = prescription("rx-csc", "");
    let parsed = inkan::eps::Document::read(doc.clone().into_bytes()).expect("read");
    let reference = Base64::encode_string(parsed.digest.as_bytes());
    // SCAL 2: the SAD binds Reference 1's digest, the same in every mode.
    let authorize = |n: u32, hashes: Vec<String>| {
        let r = Client::new().post_json(
            &t.server.url("/csc/v2/credentials/authorize"),
            &doctor,
            &json!({ "credentialID": credential, "numSignatures": n, "hashes": hashes }),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["SAD"].as_str().expect("SAD").to_owned()
    };
    let sad = authorize(3, vec![reference.clone(), reference.clone(), reference.clone()]);
    let r = Client::new().post_json(
        &t.server.url("/csc/v2/signatures/signDoc"),
        &doctor,
        &json!({
            "credentialID": credential,
            "SAD": sad,
            "signatureQualifier": "jp_eps_prescription",
            "documents": [
                { "document": Base64::encode_string(doc.as_bytes()), "signature_format": "X", "conformance_level": "Ades-B-B" },
                { "document": Base64::encode_string(doc.as_bytes()), "signature_format": "X", "signed_envelope_property": "Detached" }
            ],
            "documentDigests": [
                { "hashes": [reference], "hashAlgorithmOID": "2.16.840.1.101.3.4.2.1", "signature_format": "X" }
            ]
        }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let enveloped = Base64::decode_vec(v["DocumentWithSignature"][0].as_str().expect("doc")).expect("b64");
    t.verified_prescription("csc-enveloped.xml", &enveloped, &doctor_cert);
    for (i, object) in v["SignatureObject"].as_array().expect("objects").iter().enumerate() {
        let element =
            String::from_utf8(Base64::decode_vec(object.as_str().expect("b64")).expect("b64")).expect("utf-8");
        let signed = prescription("rx-csc", &format!("<PrescriptionSign>{element}</PrescriptionSign>"));
        t.verified_prescription(&format!("csc-object-{i}.xml"), signed.as_bytes(), &doctor_cert);
    }
    // A SAD for another document's digest does not sign this one.
    let other = Base64::encode_string(&[7u8; 32]);
    let sad = authorize(1, vec![other]);
    let r = Client::new().post_json(
        &t.server.url("/csc/v2/signatures/signDoc"),
        &doctor,
        &json!({ "credentialID": credential, "SAD": sad,
                 "documents": [{ "document": Base64::encode_string(doc.as_bytes()), "signature_format": "X" }] }),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    // Digests need the kind; Enveloping is no XAdES form here.
    let r = Client::new().post_json(
        &t.server.url("/csc/v2/signatures/signDoc"),
        &doctor,
        &json!({ "credentialID": credential, "documentDigests": [
            { "hashes": [Base64::encode_string(&[1u8; 32])], "hashAlgorithmOID": "2.16.840.1.101.3.4.2.1", "signature_format": "X" }] }),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("signatureQualifier"), "{}", r.text());
    let r = Client::new().post_json(
        &t.server.url("/csc/v2/signatures/signDoc"),
        &doctor,
        &json!({ "credentialID": credential, "documents": [
            { "document": Base64::encode_string(doc.as_bytes()), "signature_format": "X", "signed_envelope_property": "Enveloping" }] }),
    );
    assert_eq!(r.status, 400, "{}", r.text());
}

impl Eps {
    fn start_scal2() -> Eps {
        let env = Env::new();
        env.user_with_key_as("100001", "rsa2048", "doctor");
        env.ok(&["hpki", "map", "100001", s(&fixture("holders/hpki-doctor.pem"))]);
        let server = Server::start(&env, &[("INKAN_CSC_SCAL", "2")]);
        let client = register_client(&env);
        let dir = env.path("xades");
        std::fs::create_dir_all(&dir).expect("dir");
        Eps { env, server, client, dir }
    }
}

#[test]
fn bad_documents_get_a_clear_4xx_and_write_nothing() {
    let t = Eps::start();
    let doctor = t.token("hpki-doctor");
    let rows = t.env.audit_rows();
    let good = prescription("rx-bad", "");
    let signed = t.sign(&doctor, "", "application/xml", good.clone()).text();
    let rows_after_one = rows + 1;
    assert_eq!(t.env.audit_rows(), rows_after_one);
    let csv_cr = good.replace(&Base64::encode_string(CSV.as_bytes()), &Base64::encode_string(b"SJ1\r\n1,1"));
    let laughs = format!(
        "<?xml version=\"1.0\"?><!DOCTYPE Document [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;\">]>{}",
        good.trim_start_matches("<?xml version=\"1.0\" encoding=\"UTF-8\"?>").replace("<Note>", "<Note>&b;")
    );
    let xxe = format!(
        "<?xml version=\"1.0\"?><!DOCTYPE Document [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>{}",
        good.trim_start_matches("<?xml version=\"1.0\" encoding=\"UTF-8\"?>").replace("<Note>", "<Note>&x;")
    );
    let cases: Vec<(&str, Vec<u8>, &str, u16, &str)> = vec![
        ("not well-formed", good.replace("</Prescription>", "").into_bytes(), "application/xml", 400, "well-formed"),
        ("not UTF-8", [good.as_bytes(), b"\xff"].concat(), "application/xml", 400, "UTF-8"),
        ("billion laughs", laughs.into_bytes(), "application/xml", 400, "DTD"),
        ("XXE", xxe.into_bytes(), "application/xml", 400, "DTD"),
        (
            "undefined entity",
            good.replace("<Note>", "<Note>&nbsp;").into_bytes(),
            "application/xml",
            400,
            "well-formed",
        ),
        ("unknown root", b"<Prescription/>".to_vec(), "application/xml", 400, "unknown root"),
        (
            "two target ids",
            good.replace("<Note>", "<Note id=\"PrescriptionDocument\">").into_bytes(),
            "application/xml",
            400,
            "two elements",
        ),
        (
            "an id the signature takes",
            good.replace("<Note>", "<Note id=\"PrescriptionSign\">").into_bytes(),
            "application/xml",
            400,
            "PrescriptionSign",
        ),
        ("CSV with CR", csv_cr.into_bytes(), "application/xml", 400, "CR"),
        ("CSV with CR, CSV mode", b"SJ1\r\n1".to_vec(), "text/csv", 400, "CR"),
        ("already signed", signed.into_bytes(), "application/xml", 400, "signed already"),
        (
            "slot in the wrong place",
            good.replace("<PrescriptionManagement", "<PrescriptionSign/><PrescriptionManagement").into_bytes(),
            "application/xml",
            400,
            "last element",
        ),
        ("wrong content type", good.clone().into_bytes(), "application/pdf", 400, "Content-Type"),
        ("too large", vec![b' '; (1 << 20) + 1], "application/xml", 413, "larger"),
    ];
    for (name, body, content_type, status, says) in cases {
        let query = if content_type == "text/csv" { "&prescription_id=rx-1" } else { "" };
        let r = t.sign(&doctor, query, content_type, body);
        assert_eq!(r.status, status, "{name}: {}", r.text());
        assert!(r.text().contains(says), "{name}: {}", r.text());
    }
    let r = t.sign(&doctor, "", "text/csv", CSV);
    assert_eq!(r.status, 400, "a CSV needs its prescription_id: {}", r.text());
    assert_eq!(t.env.audit_rows(), rows_after_one, "no refused document wrote a row");
}

#[test]
fn the_cli_signs_a_prescription_and_a_csv_into_files() {
    let env = Env::new();
    env.user_with_key_as("100001", "rsa2048", "doctor");
    let dir = env.path("cli-xades");
    std::fs::create_dir_all(&dir).expect("dir");
    let doc = dir.join("rx.xml");
    std::fs::write(&doc, prescription("rx-cli", "")).expect("doc");
    let out = dir.join("rx.signed.xml");
    let v = env.json(&["sign", "100001", s(&doc), "--format", "xades", "--out", s(&out)]);
    assert_eq!(v["kind"], "prescription");
    assert_eq!(v["format"], "xades-bes");
    let (ok, text) = xmlsec1(&out, false);
    assert!(ok, "{text}");
    let csv = dir.join("rx.csv");
    std::fs::write(&csv, CSV).expect("csv");
    let out = dir.join("rx-csv.signed.xml");
    env.ok(&["sign", "100001", s(&csv), "--format", "xades", "--prescription-id", "rx-cli-2", "--out", s(&out)]);
    let (ok, text) = xmlsec1(&out, false);
    assert!(ok, "{text}");
    // A P-256 key signs with ECDSA-SHA256 (r || s), which both verifiers accept.
    let cert = env.user_with_key_as("100002", "p256", "doctor");
    let out = dir.join("rx-ec.signed.xml");
    env.ok(&["sign", "100002", s(&doc), "--format", "xades", "--out", s(&out)]);
    let signed = std::fs::read_to_string(&out).expect("signed");
    assert!(signed.contains("xmldsig-more#ecdsa-sha256"), "{signed}");
    let (ok, text) = xmlsec1(&out, false);
    assert!(ok, "{text}");
    let (ok, text) = signxml(&out, &std::fs::read_to_string(&cert).expect("cert"), "./Prescription/PrescriptionSign/");
    assert!(ok, "{text}");
    // A CSV with CR: refused with the reason, nothing written.
    std::fs::write(&csv, "SJ1\r\n1").expect("csv");
    let bad = dir.join("bad.xml");
    let err = env.fails(&["sign", "100001", s(&csv), "--format", "xades", "--prescription-id", "x", "--out", s(&bad)]);
    assert!(err.contains("CR"), "{err}");
    assert!(!bad.exists());
}

/// A demo login with a card: the demo page's cookie.
fn demo_login(server: &Server, holder: &str) -> String {
    let r = Client::new().get(&server.url("/demo/callback?start=hpki"), &[]);
    assert_eq!(r.status, 303, "{}", r.text());
    let r = Client::new().get(&r.location(), &[]);
    assert_eq!(r.status, 303, "authorize: {}", r.text());
    let r = Client::with_card(holder).get(&r.location(), &[]);
    assert_eq!(r.status, 303, "card login: {}", r.text());
    let r = Client::new().get(&r.location(), &[]);
    assert_eq!(r.status, 303, "callback: {}", r.text());
    let cookie = r.headers.get("set-cookie").expect("cookie");
    cookie.split(';').next().expect("cookie").to_owned()
}

/// The demo's signing form, posted with one field.
fn demo_post(server: &Server, cookie: &str, name: &str, value: &str) -> crate::http::Resp {
    let body =
        format!("--b0undary\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n--b0undary--\r\n");
    Client::new().post(
        &server.url("/demo/sign"),
        &[("cookie", cookie), ("content-type", "multipart/form-data; boundary=b0undary")],
        body,
    )
}

/// The signed XML a demo result page offers for download.
fn demo_download(page: &str) -> Vec<u8> {
    let start = page.find("data:application/xml;base64,").expect("download link") + 28;
    let end = start + page[start..].find('"').expect("end");
    Base64::decode_vec(&page[start..end]).expect("base64")
}

#[test]
fn the_demo_signs_a_sample_prescription_as_the_doctor_and_a_dispensing_record_as_the_pharmacist() {
    let env = Env::new();
    let server = Server::start_demo(&env);
    let dir = env.path("demo-xades");
    std::fs::create_dir_all(&dir).expect("dir");

    // The pharmacist first: there is no prescription yet.
    let pharmacist = demo_login(&server, "hpki-pharmacist");
    let r = demo_post(&server, &pharmacist, "sample", "dispensing");
    assert_eq!(r.status, 400, "{}", r.text());
    // The pharmacist may not sign a prescription.
    let r = demo_post(&server, &pharmacist, "sample", "prescription");
    assert_eq!(r.status, 403, "{}", r.text());

    let doctor = demo_login(&server, "hpki-doctor");
    let page = demo_post(&server, &doctor, "sample", "prescription");
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.text().contains("XAdES-BES"), "{}", page.text());
    let prescription = dir.join("prescription.xml");
    std::fs::write(&prescription, demo_download(&page.text())).expect("write");
    let (ok, out) = xmlsec1(&prescription, false);
    assert!(ok, "{out}");

    let page = demo_post(&server, &pharmacist, "sample", "dispensing");
    assert_eq!(page.status, 200, "{}", page.text());
    let record = dir.join("dispensing.xml");
    std::fs::write(&record, demo_download(&page.text())).expect("write");
    let (ok, out) = xmlsec1(&record, true);
    assert!(ok, "the pharmacist's: {out}");
    let (ok, out) = xmlsec1(&record, false);
    assert!(ok, "the doctor's inside: {out}");
}
