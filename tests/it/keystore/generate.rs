//! Key generation: key pairs listed by label and destroyed.

use inkan::keystore::{Digest, DigestAlgorithm, Error, KeyAlgorithm, KeyRef, SignatureScheme};

use crate::harness::token;

#[test]
fn keys_can_be_listed_by_label_and_destroyed() {
    let (ks, _) = token(1);
    let a = KeyRef::from_id(b"a".to_vec());
    let b = KeyRef::from_id(b"b".to_vec());
    ks.generate_key_pair(KeyAlgorithm::EcP256, &a, "inkan:u1").expect("a");
    ks.generate_key_pair(KeyAlgorithm::EcP256, &b, "inkan:u1").expect("b");
    let mut found = ks.keys_labelled("inkan:u1").expect("list");
    found.sort_by(|x, y| x.stored().cmp(y.stored()));
    assert_eq!(found, vec![a.clone(), b.clone()]);
    ks.destroy(&a).expect("destroy");
    assert_eq!(ks.keys_labelled("inkan:u1").expect("list"), vec![b]);
    let err = ks
        .sign_digest(&a, SignatureScheme::Ecdsa(DigestAlgorithm::Sha256), &Digest::sha256([0; 32]))
        .expect_err("gone");
    assert!(matches!(err, Error::KeyNotFound { .. }), "{err:?}");
}

/// Keys kept as token objects (`key_storage = "object"`): a key pair with its
/// PKCS#10 request (which OpenSSL verifies), its public key read back from the
/// token, and the raw signature forms other parts of inkan use (IEEE P1363
/// ECDSA for JWS, PKCS#1 over a caller's DigestInfo for the benchmarks).
#[test]
fn object_keys_come_with_their_request_and_their_public_key_reads_back() {
    use p256::ecdsa::signature::Verifier as _;
    let (ks, _) = crate::harness::token_with(1, |c| c.key_storage = inkan::keystore::KeyStorage::Object);
    assert_eq!(ks.key_storage(), inkan::keystore::KeyStorage::Object);
    let subject =
        inkan::pki::name(&[(der::oid::db::rfc4519::CN, inkan::pki::StringKind::Utf8, "object-key")]).expect("name");
    let (ec, csr) = ks
        .generate_key_with_csr(
            KeyAlgorithm::EcP256,
            "inkan:o1",
            b"o1",
            &subject,
            SignatureScheme::Ecdsa(DigestAlgorithm::Sha256),
        )
        .expect("generate with a request");
    assert_eq!(ec.key.storage(), inkan::keystore::KeyStorage::Object);
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("o1.csr");
    std::fs::write(&path, &csr).expect("write");
    let out = std::process::Command::new("openssl")
        .args(["req", "-inform", "DER", "-verify", "-noout", "-in"])
        .arg(&path)
        .output()
        .expect("openssl");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.contains("verify OK"), "openssl req -verify: {said}");
    assert_eq!(ks.public_key(&ec.key, KeyAlgorithm::EcP256).expect("public key"), ec.public_key_der);
    let listed = ks.keys_labelled("inkan:o1").expect("list");
    assert_eq!(listed.iter().map(KeyRef::stored).collect::<Vec<_>>(), vec![ec.key.stored()]);

    // ECDSA as JWS wants it: r || s, 64 bytes.
    let msg = b"p1363";
    let raw = ks.sign_ecdsa_p1363(&ec.key, Digest::of(DigestAlgorithm::Sha256, msg).as_bytes()).expect("p1363");
    assert_eq!(raw.len(), 64);
    let vk = {
        use p256::pkcs8::DecodePublicKey;
        p256::ecdsa::VerifyingKey::from_public_key_der(&ec.public_key_der).expect("p256 key")
    };
    vk.verify(msg, &p256::ecdsa::Signature::from_slice(&raw).expect("r || s")).expect("p1363 verifies");
    let err = ks.sign_ecdsa_p1363(&ec.key, &[]).expect_err("no digest");
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");

    // PKCS#1 v1.5 over a DigestInfo the caller made.
    let rsa = ks.generate_key(KeyAlgorithm::Rsa2048, "inkan:o1", b"o1-rsa").expect("rsa");
    let digest = Digest::of(DigestAlgorithm::Sha256, msg);
    let mut digest_info = vec![
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04,
        0x20,
    ];
    digest_info.extend_from_slice(digest.as_bytes());
    let sig = ks.sign_raw_pkcs1(&rsa.key, &digest_info).expect("raw pkcs1");
    assert!(super::rsa_verify(&rsa.public_key_der, msg, &sig), "the raw signature is PKCS#1 v1.5 SHA-256");
    assert_eq!(
        sig,
        ks.sign_digest(&rsa.key, SignatureScheme::RsaPkcs1v15(DigestAlgorithm::Sha256), &digest).expect("sign")
    );
}
