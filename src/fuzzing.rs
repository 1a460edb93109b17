//! Entry points for the fuzz targets (`fuzz/`, built with `--cfg fuzzing`):
//! the parsers and checks that take outside input before any token call,
//! reached as the service reaches them. The unit tests build them too, and
//! replay the committed seeds with cuts and flipped bytes, so that the
//! targets never rot unseen between fuzzing runs.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use crate::pki::trust::TrustStore;

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki")
}

fn hpki() -> Option<&'static TrustStore> {
    static STORE: OnceLock<Option<TrustStore>> = OnceLock::new();
    STORE
        .get_or_init(|| {
            let read = |f: &str| crate::pki::read_certificates(&fixtures().join(f)).unwrap_or_default();
            let crl = std::fs::read(fixtures().join("crl/hpki-auth-ca.crl.pem")).unwrap_or_default();
            let crl = der::pem::decode_vec(&crl).map(|(_, d)| d).unwrap_or_default();
            TrustStore::new(
                "HPKI",
                read("hpki-root.pem"),
                read("hpki-auth-ca.pem"),
                vec![crl],
                vec![crate::pki::profile::oids::HPKI_AUTH_POLICY],
                false,
            )
            .ok()
        })
        .as_ref()
}

/// A card's certificate chain at login (DER certificates, each prefixed by a
/// two-byte length), and the same bytes as a certificate file at import.
pub fn certificates(data: &[u8]) {
    let mut chain = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 && chain.len() < 4 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        chain.push(rest[2..2 + len].to_vec());
        rest = &rest[2 + len..];
    }
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    if let Some(store) = hpki() {
        let _ = store.validate(&chain, now);
    }
    let _ = crate::pki::parse_certificates(data);
}

/// A CRL as the trust store reads it (DER or PEM).
pub fn crl(data: &[u8]) {
    let der = if data.starts_with(b"-----") {
        der::pem::decode_vec(data).map(|(_, d)| d).unwrap_or_default()
    } else {
        data.to_vec()
    };
    if let Ok(crl) = <x509_cert::crl::CertificateList as der::Decode>::from_der(&der) {
        let _ = crl.tbs_cert_list.revoked_certificates.map(|r| r.len());
    }
    let read = |f: &str| crate::pki::read_certificates(&fixtures().join(f)).unwrap_or_default();
    let _ = TrustStore::new(
        "HPKI",
        read("hpki-root.pem"),
        read("hpki-auth-ca.pem"),
        vec![der],
        vec![crate::pki::profile::oids::HPKI_AUTH_POLICY],
        false,
    );
}

/// A PKCS#10 request (DER or PEM), parsed and its signature checked.
pub fn csr(data: &[u8]) {
    let der = if data.starts_with(b"-----") {
        der::pem::decode_vec(data).map(|(_, d)| d).unwrap_or_default()
    } else {
        data.to_vec()
    };
    if let Ok(req) = <x509_cert::request::CertReq as der::Decode>::from_der(&der) {
        let _ = crate::pki::ca::check_csr_signature(&req);
    }
}

/// CSC and signing-API JSON bodies, and what the handlers check before the
/// token: hashes, signAlgo, signAlgoParams, formats; an authorize query.
pub fn api_json(data: &[u8]) {
    let _ = serde_json::from_slice::<crate::server::api::SignHashes>(data);
    crate::server::csc::fuzz::fuzz(data);
    let params: HashMap<String, String> = form_urlencoded::parse(data).into_owned().collect();
    let client = crate::auth::clients::Client {
        id: "c".into(),
        name: "c".into(),
        redirect_uris: vec!["https://rx.example/cb".into()],
        created_at: 0,
        secret_hash: Vec::new(),
    };
    let _ = crate::auth::oidc::validate_authorize(&params, Some(&client), 0);
}

/// A WebAuthn answer's client data and authenticator data, as inkan checks
/// them before webauthn-rs.
pub fn webauthn(data: &[u8]) {
    let _ = crate::fido::check_client_data(data, "fuzz");
    let _ = crate::fido::check_attestation_object(data);
    let _ = crate::fido::check_assertion_data(data);
    let _ = crate::fido::cbor_item_len(data, 0);
}

/// An e-prescription document as `/api/v1/sign?format=xades` reads it:
/// parsed (no DTD, no entities), located (kind, target, slot, ids), its
/// Reference 1 canonicalised, a dispensing record's doctor's signature
/// checked; every signature in it checked as the verifier would, a few
/// elements canonicalised both ways; the same bytes as a CSV, and as the
/// prescription a dispensing record is made over.
pub fn xml(data: &[u8]) {
    use crate::eps::Kind;
    let _ = crate::eps::Document::read(data.to_vec());
    if let Ok(x) = crate::xml::parse(data) {
        for (i, e) in x.all_elements().into_iter().enumerate() {
            if x.is(e, Some(crate::xml::DS), "Signature") {
                let _ = crate::eps::check::bes(&x, e, Kind::Prescription);
                let _ = crate::eps::check::bes(&x, e, Kind::Dispensing);
            }
            if i < 8 {
                let _ = x.inclusive(e);
                let _ = x.exclusive(e);
                let _ = x.span(e);
            }
        }
    }
    let _ = crate::eps::csv::check(data, Kind::Prescription);
    let _ = crate::eps::dispensing::record(data, b"CJ1,\n1", "d-1");
    // As `inkan verify` validates it, at the dispensing sample's time.
    let _ = crate::verify::validate(
        data,
        None,
        verify_trust(),
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_664_530_857),
    );
    // As extension reads it: a document comes back byte for byte.
    if let Ok((_, back)) = crate::extend::read_back(data) {
        assert!(
            data.first().is_some_and(|b| *b != b'<') || back == data,
            "extension changed a document it added nothing to"
        );
    }
}

/// What the verify targets trust: the fixture HPKI root and the samples'
/// MHLW root; the samples' TSA CA.
fn verify_trust() -> &'static crate::verify::Trust {
    static TRUST: OnceLock<crate::verify::Trust> = OnceLock::new();
    TRUST.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        crate::verify::Trust::load(
            &[root.join("fixtures/pki/hpki-root.pem"), root.join("fixtures/eps/extracted-mhlw-hpki-root-ca-v2.pem")],
            &[root.join("fixtures/eps/extracted-tsa-test-ca.pem")],
            &[root.join("fixtures/pki/crl/hpki-signing-ca.crl.pem")],
        )
        .unwrap_or_default()
    })
}

/// A CMS signature as `inkan verify` and `POST /api/v1/verify` read it
/// (DER or PEM): with the content the seeds signed, and without (then a
/// detached one has none; an attached one its own).
pub fn cms(data: &[u8]) {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    let _ = crate::verify::validate(data, Some(b"a document"), verify_trust(), at);
    let _ = crate::verify::validate(data, None, verify_trust(), at);
    // As extension reads it, and writes it back.
    let _ = crate::extend::read_back(data);
}

fn tsa_anchors() -> &'static [x509_cert::Certificate] {
    static ANCHORS: OnceLock<Vec<x509_cert::Certificate>> = OnceLock::new();
    ANCHORS.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/eps/extracted-tsa-test-ca.pem");
        crate::pki::read_certificates(&path)
            .unwrap_or_default()
            .iter()
            .filter_map(|d| <x509_cert::Certificate as der::Decode>::from_der(d).ok())
            .collect()
    })
}

/// A TSA's answer (`TimeStampResp`) as the client reads it, against the
/// anchor of the public samples' TSA, the imprint and nonce taken from the
/// answer itself (so that the checks past them are reached) at the token's
/// own time; the same bytes as a bare token, and a token given an unsigned
/// attribute (what an archive time-stamp's hash index goes through).
pub fn tsa(data: &[u8]) {
    use crate::tsa::{asn1, token};
    let trust = crate::tsa::Trust { anchors: tsa_anchors(), chain: &[], policy: None };
    let own = asn1::TimeStampResp::from_der(data).ok().and_then(|r| r.token).and_then(|t| token::tst_info(&t).ok());
    let alg = inkan_keystore::DigestAlgorithm::Sha256;
    match &own {
        Some(info) => {
            let alg =
                inkan_keystore::DigestAlgorithm::from_oid(&info.message_imprint.hash_algorithm.oid).unwrap_or(alg);
            let nonce = info.nonce.as_deref();
            let expected = token::Expected { alg, digest: info.message_imprint.hashed_message.as_bytes(), nonce };
            let _ = crate::tsa::read_answer(data, &expected, &trust, info.gen_time);
        }
        None => {
            let expected = token::Expected { alg, digest: &[0; 32], nonce: Some(&[1]) };
            let _ = crate::tsa::read_answer(data, &expected, &trust, SystemTime::UNIX_EPOCH);
        }
    }
    let expected = token::Expected { alg, digest: &[0; 32], nonce: None };
    let _ = token::check(data, &expected, trust.anchors, &[]);
    let _ =
        token::with_unsigned_attribute(data, &[0x30, 0x0a, 0x06, 0x03, 0x2a, 0x03, 0x04, 0x31, 0x03, 0x04, 0x01, 0x00]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The national samples' tokens pass every check (so the target reaches
    /// past the signature, the ESS certificate id, the EKU and the path).
    #[test]
    fn the_samples_tokens_pass_the_tsa_checks_at_their_time() {
        use crate::tsa::{asn1, token};
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/tsa");
        let trust = crate::tsa::Trust { anchors: tsa_anchors(), chain: &[], policy: None };
        for name in
            ["prescription-signature-timestamp", "dispensing-signature-timestamp", "dispensing-archive-timestamp"]
        {
            let answer = std::fs::read(dir.join(format!("{name}.der"))).expect("seed");
            let token = asn1::TimeStampResp::from_der(&answer).expect("answer").token.expect("token");
            let info = token::tst_info(&token).expect("TSTInfo");
            let expected = token::Expected {
                alg: inkan_keystore::DigestAlgorithm::Sha256,
                digest: info.message_imprint.hashed_message.as_bytes(),
                nonce: None,
            };
            let checked = crate::tsa::read_answer(&answer, &expected, &trust, info.gen_time)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(checked.path.len(), 2, "{name}: the TSA and the samples' TSA CA");
        }
    }

    /// A few hundred inputs per target, the same on every run: each seed,
    /// cut short at sixteen places, and with one byte flipped 32 times.
    #[test]
    fn every_target_takes_its_seeds_cut_short_and_with_bytes_flipped() {
        type Target = (&'static str, fn(&[u8]));
        assert!(hpki().is_some(), "the fixtures' HPKI trust store loads (else certificates checks parsing only)");
        assert_eq!(tsa_anchors().len(), 1, "the samples' TSA CA loads (else tsa stops at the path)");
        assert_eq!(verify_trust().anchors.len(), 2, "the verify targets' anchors load");
        let targets: [Target; 8] = [
            ("certificates", certificates),
            ("crl", crl),
            ("csr", csr),
            ("api_json", api_json),
            ("webauthn", webauthn),
            ("xml", xml),
            ("tsa", tsa),
            ("cms", cms),
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for (name, target) in targets {
            let dir = root.join("fuzz/seeds").join(name);
            let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|e| e.expect("entry").path())
                .collect();
            // The public e-prescription samples (LGPL, kept with their
            // licence in fixtures/eps) seed the XML target from there.
            if name == "xml" {
                files.extend(
                    ["Prescription-004_01.xml", "Dispensing-005_03.xml"].map(|f| root.join("fixtures/eps").join(f)),
                );
            }
            let mut seeds = 0;
            for path in files {
                let data = std::fs::read(&path).expect("seed");
                target(&data);
                for cut in (0..data.len()).step_by((data.len() / 16).max(1)) {
                    target(&data[..cut]);
                }
                for _ in 0..32 {
                    let mut flipped = data.clone();
                    if let Some(len) = std::num::NonZeroUsize::new(flipped.len()) {
                        let r = next();
                        flipped[r as usize % len.get()] ^= (r >> 56) as u8 | 1;
                        target(&flipped);
                    }
                }
                seeds += 1;
            }
            assert!(seeds > 0, "{name}: no seeds in {}", dir.display());
        }
    }
}
