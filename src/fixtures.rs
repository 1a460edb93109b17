//! The fixture PKI (`inkan dev fixtures`) and certificates for CSRs from the
//! fixture CA (`inkan dev issue-cert`). Test keys only, never production.
//!
//! Keys are made by `openssl genpkey` (RSA-2048, PKCS#8) and PKCS#12 files by
//! `openssl pkcs12`; everything else (certificates, extensions, CRLs) is built
//! here with x509-cert, so the profiles live in one place ([`crate::pki::profile`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use der::oid::db::rfc4519;
use der::Encode;

use crate::clock::Clock;
use crate::pki::ca::{self, Ca};
use crate::pki::profile::{Kind, Qualification};
use crate::pki::{self, PkiError, StringKind};

const DAY: Duration = Duration::from_secs(86_400);
const YEAR: Duration = Duration::from_secs(365 * 86_400);

/// Password of every fixture PKCS#12 file.
pub const P12_PASSWORD: &str = "inkan";

fn openssl(args: &[&str]) -> Result<(), PkiError> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .map_err(|e| PkiError(format!("cannot run openssl (apt-get install -y openssl): {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(PkiError(format!(
            "openssl {} failed: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

fn new_key(path: &Path) -> Result<rsa::RsaPrivateKey, PkiError> {
    let p = path.to_string_lossy();
    openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", &p])?;
    ca::read_key(path)
}

fn write(path: &Path, contents: &[u8], files: &mut Vec<String>) -> Result<(), PkiError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| PkiError(format!("{}: {e}", dir.display())))?;
    }
    std::fs::write(path, contents).map_err(|e| PkiError(format!("{}: {e}", path.display())))?;
    files.push(path.display().to_string());
    Ok(())
}

fn cert_pem(cert: &x509_cert::Certificate) -> Result<String, PkiError> {
    Ok(pki::to_pem("CERTIFICATE", &cert.to_der()?))
}

fn ca_name(org: &str, cn: &str) -> Result<x509_cert::name::Name, PkiError> {
    pki::name(&[
        (rfc4519::C, StringKind::Printable, "JP"),
        (rfc4519::O, StringKind::Printable, org),
        (rfc4519::CN, StringKind::Printable, cn),
    ])
}

struct Holder {
    name: &'static str,
    kind: HolderKind,
    expired: bool,
}

enum HolderKind {
    Hpki { role: Qualification, cn: &'static str, id: &'static str },
    Jpki,
}

/// Generates the whole fixture PKI into `out`; returns the files written.
pub fn generate(out: &Path, clock: &dyn Clock) -> Result<Vec<String>, PkiError> {
    let now = clock.now();
    let start = now - DAY;
    let mut files = Vec::new();
    let keys = out.join("keys.tmp");
    std::fs::create_dir_all(&keys).map_err(|e| PkiError(e.to_string()))?;
    let key = |name: &str| -> Result<rsa::RsaPrivateKey, PkiError> { new_key(&out.join(format!("{name}.key"))) };

    // HPKI: a root, a signing CA (second certificates) and an authentication CA (cards).
    let hpki_root =
        Ca::new_root(ca_name("MEDIS-TEST", "inkan Test HPKI Root CA")?, key("hpki-root")?, start, now + 30 * YEAR)?;
    let mut sub = |file: &str, cn: &str, parent: &Ca, org: &str| -> Result<Ca, PkiError> {
        let k = key(file)?;
        let cert = parent.issue(Kind::SubCa, ca_name(org, cn)?, ca::public_key_info(&k)?, start, now + 20 * YEAR)?;
        write(&out.join(format!("{file}.pem")), cert_pem(&cert)?.as_bytes(), &mut files)?;
        files.push(out.join(format!("{file}.key")).display().to_string());
        Ok(Ca::from_parts(cert, k))
    };
    let signing_ca = sub("hpki-signing-ca", "inkan Test HPKI Signing CA", &hpki_root, "MEDIS-TEST")?;
    let auth_ca = sub("hpki-auth-ca", "inkan Test HPKI CA forAuthentication-forIndividual", &hpki_root, "MEDIS-TEST")?;
    let jpki_root =
        Ca::new_root(ca_name("JPKI-TEST", "inkan Test JPKI Root CA")?, key("jpki-root")?, start, now + 30 * YEAR)?;
    let jpki_ca = sub("jpki-ca", "inkan Test JPKI User Authentication CA", &jpki_root, "JPKI-TEST")?;
    for (file, ca) in [("hpki-root", &hpki_root), ("jpki-root", &jpki_root)] {
        write(&out.join(format!("{file}.pem")), cert_pem(&ca.certificate)?.as_bytes(), &mut files)?;
        files.push(out.join(format!("{file}.key")).display().to_string());
    }

    // The localhost TLS server certificate, from the HPKI root's sibling: its own CA.
    let server_key = key("server")?;
    let server = hpki_root.issue(
        Kind::TlsServer {
            dns: vec!["localhost".into()],
            ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)],
        },
        pki::name(&[(rfc4519::C, StringKind::Printable, "JP"), (rfc4519::CN, StringKind::Printable, "localhost")])?,
        ca::public_key_info(&server_key)?,
        start,
        now + 10 * YEAR,
    )?;
    write(&out.join("server.pem"), cert_pem(&server)?.as_bytes(), &mut files)?;
    files.push(out.join("server.key").display().to_string());

    let holders = [
        Holder {
            name: "hpki-doctor",
            kind: HolderKind::Hpki { role: Qualification::Doctor, cn: "YAMADA TARO", id: "100001" },
            expired: false,
        },
        Holder {
            name: "hpki-pharmacist",
            kind: HolderKind::Hpki { role: Qualification::Pharmacist, cn: "SATO HANAKO", id: "999001-jpa" },
            expired: false,
        },
        Holder {
            name: "hpki-revoked",
            kind: HolderKind::Hpki { role: Qualification::Doctor, cn: "SUZUKI ICHIRO", id: "100002" },
            expired: false,
        },
        Holder {
            name: "hpki-expired",
            kind: HolderKind::Hpki { role: Qualification::Doctor, cn: "TANAKA JIRO", id: "100003" },
            expired: true,
        },
        Holder { name: "jpki-1", kind: HolderKind::Jpki, expired: false },
        Holder { name: "jpki-2", kind: HolderKind::Jpki, expired: false },
        Holder { name: "jpki-revoked", kind: HolderKind::Jpki, expired: false },
    ];
    let mut revoked_hpki = Vec::new();
    let mut revoked_jpki = Vec::new();
    for h in &holders {
        let key_path = out.join(format!("holders/{}.key", h.name));
        std::fs::create_dir_all(out.join("holders")).map_err(|e| PkiError(e.to_string()))?;
        let k = new_key(&key_path)?;
        files.push(key_path.display().to_string());
        let (not_before, not_after) = if h.expired { (now - 2 * YEAR, now - DAY) } else { (start, now + 10 * YEAR) };
        let (issuer, cert) = match &h.kind {
            HolderKind::Hpki { role, cn, id } => {
                let subject = pki::name(&[
                    (rfc4519::C, StringKind::Printable, "JP"),
                    (rfc4519::O, StringKind::Printable, "inkan Test Clinic"),
                    (rfc4519::CN, StringKind::Printable, cn),
                    (rfc4519::SERIAL_NUMBER, StringKind::Printable, id),
                ])?;
                (
                    &auth_ca,
                    auth_ca.issue(
                        Kind::HpkiAuth { role: *role },
                        subject,
                        ca::public_key_info(&k)?,
                        not_before,
                        not_after,
                    )?,
                )
            }
            HolderKind::Jpki => {
                let mut random = [0u8; 8];
                getrandom::fill(&mut random).map_err(|e| PkiError(e.to_string()))?;
                let cn: String = random.iter().map(|b| format!("{b:02X}")).collect();
                let subject = pki::name(&[
                    (rfc4519::C, StringKind::Printable, "JP"),
                    (rfc4519::O, StringKind::Printable, "JPKI"),
                    (rfc4519::OU, StringKind::Printable, "JPKI for user authentication"),
                    (rfc4519::CN, StringKind::Printable, &cn),
                ])?;
                (&jpki_ca, jpki_ca.issue(Kind::JpkiAuth, subject, ca::public_key_info(&k)?, not_before, not_after)?)
            }
        };
        let pem_path = out.join(format!("holders/{}.pem", h.name));
        write(&pem_path, cert_pem(&cert)?.as_bytes(), &mut files)?;
        let chain_path = keys.join(format!("{}-chain.pem", h.name));
        let root = if matches!(h.kind, HolderKind::Hpki { .. }) { &hpki_root } else { &jpki_root };
        std::fs::write(&chain_path, format!("{}{}", cert_pem(&issuer.certificate)?, cert_pem(&root.certificate)?))
            .map_err(|e| PkiError(e.to_string()))?;
        let p12 = out.join(format!("holders/{}.p12", h.name));
        openssl(&[
            "pkcs12",
            "-export",
            "-in",
            &pem_path.to_string_lossy(),
            "-inkey",
            &key_path.to_string_lossy(),
            "-certfile",
            &chain_path.to_string_lossy(),
            "-name",
            h.name,
            "-passout",
            &format!("pass:{P12_PASSWORD}"),
            "-out",
            &p12.to_string_lossy(),
        ])?;
        files.push(p12.display().to_string());
        if h.name == "hpki-revoked" {
            revoked_hpki.push(cert.tbs_certificate().serial_number().clone());
        }
        if h.name == "jpki-revoked" {
            revoked_jpki.push(cert.tbs_certificate().serial_number().clone());
        }
    }
    std::fs::remove_dir_all(&keys).map_err(|e| PkiError(e.to_string()))?;

    // CRLs, valid for ten years so the committed files stay fresh.
    for (file, ca, revoked) in [
        ("hpki-auth-ca", &auth_ca, &revoked_hpki),
        ("hpki-signing-ca", &signing_ca, &Vec::new()),
        ("jpki-ca", &jpki_ca, &revoked_jpki),
    ] {
        let crl = ca.crl(1, revoked, start, now + 10 * YEAR)?;
        write(&out.join(format!("crl/{file}.crl.pem")), pki::to_pem("X509 CRL", &crl).as_bytes(), &mut files)?;
    }
    files.sort();
    Ok(files)
}

/// Issues an HPKI signing certificate for the CSR in `csr` with the CA in
/// `ca_cert`/`ca_key`; `expired` makes one that expired yesterday.
pub fn issue_from_csr_file(
    csr: &Path,
    ca_cert: &Path,
    ca_key: &Path,
    role: Qualification,
    days: u64,
    expired: bool,
    clock: &dyn Clock,
) -> Result<Vec<u8>, PkiError> {
    let ca = Ca::load(ca_cert, ca_key)?;
    let request = std::fs::read(csr).map_err(|e| PkiError(format!("cannot read {}: {e}", csr.display())))?;
    let now = clock.now();
    let (nb, na) =
        if expired { (now - 30 * DAY, now - DAY) } else { (now - Duration::from_secs(60), now + DAY * days as u32) };
    let kind = Kind::HpkiSigning { role, crl_url: "http://localhost:8443/crl/hpki-signing-ca.crl".into() };
    Ok(ca.issue_from_csr(kind, &request, nb, na)?.to_der()?)
}

/// Paths of the fixture PKI relative to the project root.
pub fn fixture_path(rel: &str) -> PathBuf {
    PathBuf::from("fixtures/pki").join(rel)
}
