//! CAdES in process: signing a digest for a token key, checked by openssl and
//! by parsing the structure.

use std::time::{Duration, SystemTime};

use der::{Decode, Encode};
use inkan::config::RsaScheme;
use inkan::keystore::{DigestAlgorithm, KeyAlgorithm, KeyRef};
use inkan::pki::ca::Ca;
use inkan::pki::profile::{Kind, Qualification};
use inkan::signing::signed_data::{self as cades, SignerIdentity};

use crate::harness::{fixture, openssl_verify, token};

/// A token key with a certificate from the fixture signing CA.
pub fn signer(ks: &inkan::keystore::Keystore, alg: KeyAlgorithm) -> SignerIdentity {
    let key = KeyRef::from_id(format!("cades-{alg}").into_bytes());
    let generated = ks.generate_key_pair(alg, &key, "cades").expect("generate");
    let ca = Ca::load(&fixture("hpki-signing-ca.pem"), &fixture("hpki-signing-ca.key")).expect("ca");
    let subject =
        inkan::pki::name(&[(der::oid::db::rfc4519::CN, inkan::pki::StringKind::Utf8, "試験 花子")]).expect("name");
    let now = SystemTime::now();
    let cert = ca
        .issue(
            Kind::HpkiSigning { role: Qualification::Pharmacist, crl_url: "http://localhost/crl".into() },
            subject,
            spki::SubjectPublicKeyInfoOwned::from_der(&generated.public_key_der).expect("spki"),
            now - Duration::from_secs(60),
            now + Duration::from_secs(86_400),
        )
        .expect("issue");
    assert_eq!(inkan::pki::profile::read_hc_role(&cert).as_deref(), Some("Pharmacist"));
    let chain = vec![
        ca.certificate.to_der().expect("der"),
        inkan::pki::read_certificates(&fixture("hpki-root.pem")).expect("root").remove(0),
    ];
    SignerIdentity::new(key, alg, RsaScheme::Pkcs1v15, &cert.to_der().expect("der"), &chain).expect("identity")
}

#[test]
fn signatures_over_digests_verify_for_every_hash() {
    let (ks, _) = token(1);
    let id = signer(&ks, KeyAlgorithm::Rsa2048);
    let dir = tempfile::tempdir().expect("dir");
    let doc = dir.path().join("doc");
    std::fs::write(&doc, b"remote signing with a precomputed digest").expect("doc");
    for alg in [DigestAlgorithm::Sha256, DigestAlgorithm::Sha384, DigestAlgorithm::Sha512] {
        let digest = inkan::keystore::Digest::of(alg, &std::fs::read(&doc).expect("doc"));
        let der = cades::sign_digest(&ks, &id, &digest, SystemTime::now()).expect("sign");
        let sig = dir.path().join(format!("{alg:?}.p7s"));
        std::fs::write(&sig, &der).expect("write");
        let (ok, err) = openssl_verify(&sig, Some(&doc));
        assert!(ok, "{alg:?}: {err}");

        // The structure parses with RustCrypto's cms and holds each certificate once.
        let ci = cms::content_info::ContentInfo::from_der(&der).expect("ContentInfo");
        let sd: cms::signed_data::SignedData = ci.content.decode_as().expect("SignedData");
        assert_eq!(sd.certificates.as_ref().map(|c| c.0.len()), Some(3));
        let si = sd.signer_infos.0.get(0).expect("one signer");
        let attrs = si.signed_attrs.as_ref().expect("signed attributes");
        let oids: Vec<String> = attrs.iter().map(|a| a.oid.to_string()).collect();
        for oid in
            ["1.2.840.113549.1.9.3", "1.2.840.113549.1.9.4", "1.2.840.113549.1.9.5", "1.2.840.113549.1.9.16.2.47"]
        {
            assert!(oids.contains(&oid.to_string()), "{oid} in {oids:?}");
        }
        // DER: the SET OF attributes re-encodes to the same bytes (sorted).
        assert!(attrs.to_der().is_ok());
    }
    let err = inkan::keystore::Digest::new(DigestAlgorithm::Sha256, vec![0u8; 31]).expect_err("short");
    assert!(err.to_string().contains("32 bytes"), "{err}");
}

#[test]
fn signing_time_comes_from_the_clock() {
    let (ks, _) = token(1);
    let id = signer(&ks, KeyAlgorithm::EcP256);
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000); // 2030-03-17
    let der = cades::sign_digest(&ks, &id, &inkan::keystore::Digest::sha256([7; 32]), at).expect("sign");
    let ci = cms::content_info::ContentInfo::from_der(&der).expect("ContentInfo");
    let sd: cms::signed_data::SignedData = ci.content.decode_as().expect("SignedData");
    let attrs = sd.signer_infos.0.get(0).expect("signer").signed_attrs.clone().expect("attrs");
    let time = attrs.iter().find(|a| a.oid.to_string() == "1.2.840.113549.1.9.5").expect("signing-time");
    let value = time.values.get(0).expect("value");
    let t = x509_cert::time::Time::from_der(&value.to_der().expect("der")).expect("time");
    assert_eq!(t.to_system_time(), at);
}
