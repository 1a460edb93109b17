//! The keystore against SoftHSM, in process: pool, handle cache, re-login,
//! mechanisms, errors.

use std::sync::Arc;

use inkan::keystore::{DigestAlgorithm, Error, KeyAlgorithm, KeyRef, SignatureScheme};
use rsa::signature::Verifier;

use crate::harness::token;

fn rsa_verify(spki: &[u8], digest_input: &[u8], sig: &[u8]) -> bool {
    use rsa::pkcs8::DecodePublicKey;
    let key = rsa::RsaPublicKey::from_public_key_der(spki).expect("rsa key");
    let sig = rsa::pkcs1v15::Signature::try_from(sig).expect("sig");
    rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key).verify(digest_input, &sig).is_ok()
}

#[test]
fn pooled_signing_from_many_threads() {
    let (ks, _) = token(2);
    let ks = Arc::new(ks);
    let key = KeyRef::from_id(b"pool".to_vec());
    let generated = ks.generate_key_pair(KeyAlgorithm::Rsa2048, &key, "pool").expect("generate");
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let ks = Arc::clone(&ks);
            let key = key.clone();
            let spki = generated.public_key_der.clone();
            std::thread::spawn(move || {
                for i in 0..10 {
                    let msg = format!("thread {t} message {i}");
                    let digest = DigestAlgorithm::Sha256.digest(msg.as_bytes());
                    let sig = ks
                        .sign_digest(&key, SignatureScheme::RsaPkcs1v15(DigestAlgorithm::Sha256), &digest)
                        .expect("sign");
                    assert!(rsa_verify(&spki, msg.as_bytes(), &sig), "signature verifies");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
}

#[test]
fn relogin_after_a_logout_elsewhere() {
    let (ks, label) = token(1);
    let key = KeyRef::from_id(b"relogin".to_vec());
    ks.generate_key_pair(KeyAlgorithm::Rsa2048, &key, "relogin").expect("generate");
    let digest = [1u8; 32];
    let scheme = SignatureScheme::RsaPkcs1v15(DigestAlgorithm::Sha256);
    ks.sign_digest(&key, scheme, &digest).expect("first signature caches the handle");

    // A logout on any session logs out every session of the process, and
    // SoftHSM forgets the private key handles.
    // Here a second keystore of this process on the same token does it, so the
    // first one's pooled session and cached handle go stale behind its back.
    let other = inkan::keystore::Keystore::open(inkan::keystore::KeystoreConfig::new(
        crate::harness::module(),
        label,
        inkan::keystore::Pin::new(crate::harness::USER_PIN),
    ))
    .expect("second keystore");
    other.logout().expect("logout");

    // The keystore notices, logs in again, finds the handle again and signs.
    ks.sign_digest(&key, scheme, &digest).expect("signature after re-login");
}

#[test]
fn ecdsa_and_pss_signatures_verify() {
    let (ks, _) = token(1);
    let ec = KeyRef::from_id(b"ec".to_vec());
    let generated = ks.generate_key_pair(KeyAlgorithm::EcP256, &ec, "ec").expect("generate ec");
    let msg = b"ecdsa over P-256";
    let digest = DigestAlgorithm::Sha256.digest(msg);
    let sig = ks.sign_digest(&ec, SignatureScheme::Ecdsa(DigestAlgorithm::Sha256), &digest).expect("sign");
    assert_eq!(sig[0], 0x30, "DER Ecdsa-Sig-Value");
    let vk = {
        use p256::pkcs8::DecodePublicKey;
        p256::ecdsa::VerifyingKey::from_public_key_der(&generated.public_key_der).expect("p256 key")
    };
    let sig = p256::ecdsa::DerSignature::try_from(sig.as_slice()).expect("der sig");
    vk.verify(msg, &sig).expect("ecdsa verifies");

    let rsa = KeyRef::from_id(b"pss".to_vec());
    let generated = ks.generate_key_pair(KeyAlgorithm::Rsa2048, &rsa, "pss").expect("generate rsa");
    let digest = DigestAlgorithm::Sha384.digest(msg);
    let sig = ks.sign_digest(&rsa, SignatureScheme::RsaPss(DigestAlgorithm::Sha384), &digest).expect("pss");
    use rsa::pkcs8::DecodePublicKey;
    let key = rsa::RsaPublicKey::from_public_key_der(&generated.public_key_der).expect("key");
    let vk = rsa::pss::VerifyingKey::<sha2::Sha384>::new(key);
    vk.verify(msg, &rsa::pss::Signature::try_from(sig.as_slice()).expect("sig")).expect("pss verifies");
}

#[test]
fn errors_say_what_went_wrong() {
    let (ks, _) = token(1);
    let missing = KeyRef::from_id(b"missing".to_vec());
    let err =
        ks.sign_digest(&missing, SignatureScheme::RsaPkcs1v15(DigestAlgorithm::Sha256), &[0; 32]).expect_err("no key");
    assert!(matches!(err, Error::KeyNotFound { .. }), "{err:?}");

    let key = KeyRef::from_id(b"k".to_vec());
    ks.generate_key_pair(KeyAlgorithm::Rsa2048, &key, "k").expect("generate");
    let err = ks
        .sign_digest(&key, SignatureScheme::RsaPkcs1v15(DigestAlgorithm::Sha256), &[0; 20])
        .expect_err("short digest");
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    let err =
        ks.sign_digest(&key, SignatureScheme::Ecdsa(DigestAlgorithm::Sha256), &[0; 32]).expect_err("wrong mechanism");
    assert!(matches!(err, Error::MechanismUnsupported { .. }), "{err:?}");
    let err = ks.generate_key_pair(KeyAlgorithm::Rsa2048, &key, "k").expect_err("id taken");
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");

    let wrong = inkan::keystore::KeystoreConfig::new(
        crate::harness::module(),
        ks.token_label(),
        inkan::keystore::Pin::new("not-the-pin"),
    );
    // The token is already logged in for this process, so use a label that does not exist
    // to check the other error instead; the wrong PIN is tested through the CLI.
    let mut missing_token = wrong.clone();
    missing_token.token_label = "no-such-label".into();
    let err = inkan::keystore::Keystore::open(missing_token).expect_err("no token");
    assert!(err.is_unavailable(), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("no-such-label") && message.contains(&crate::harness::module()), "{message}");
    assert!(!format!("{err} {err:?}").contains("not-the-pin"));
}

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
    let err = ks.sign_digest(&a, SignatureScheme::Ecdsa(DigestAlgorithm::Sha256), &[0; 32]).expect_err("gone");
    assert!(matches!(err, Error::KeyNotFound { .. }), "{err:?}");
}

/// What inkan binds a user's key to (as `keys::binding` does).
fn binding(user: &str, generation: i64) -> Vec<u8> {
    format!("{user}\0{generation}").into_bytes()
}

fn ec_verifies(spki: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    use p256::pkcs8::DecodePublicKey;
    let vk = p256::ecdsa::VerifyingKey::from_public_key_der(spki).expect("p256 key");
    p256::ecdsa::DerSignature::try_from(sig).is_ok_and(|s| vk.verify(msg, &s).is_ok())
}

#[test]
fn wrapped_keys_sign_survive_a_restart_and_leave_nothing_in_the_token() {
    let (ks, label) = token(2);
    let ready = ks.prepare_wrapping().expect("prepare");
    assert!(ready.created, "{ready:?}");
    assert_eq!(ks.prepare_wrapping().expect("again"), inkan::keystore::WrappingReady { kek_index: 1, created: false });

    let scheme = SignatureScheme::RsaPkcs1v15(DigestAlgorithm::Sha256);
    let rsa = ks.generate_key(KeyAlgorithm::Rsa2048, "inkan:w1", &binding("w1", 1)).expect("rsa");
    let ec = ks.generate_key(KeyAlgorithm::EcP256, "inkan:w1", &binding("w1", 2)).expect("ec");
    assert_eq!(rsa.key.storage(), inkan::keystore::KeyStorage::Wrapped);
    assert!((1_230..1_300).contains(&rsa.key.stored().len()), "RSA blob {}", rsa.key.stored().len());
    assert!(ec.key.stored().len() < 140, "EC blob {}", ec.key.stored().len());
    assert!(ks.keys_labelled("inkan:w1").expect("list").is_empty(), "no token object per user");

    let msg = b"wrapped";
    let sig = ks.sign_digest(&rsa.key, scheme, &DigestAlgorithm::Sha256.digest(msg)).expect("rsa sign");
    assert!(rsa_verify(&rsa.public_key_der, msg, &sig));
    let sig = ks.sign_message(&ec.key, SignatureScheme::Ecdsa(DigestAlgorithm::Sha256), msg).expect("ec sign");
    assert!(ec_verifies(&ec.public_key_der, msg, &sig));
    // A request signed by the new key before it is wrapped: no unwrap for it.
    let misses = ks.cache_stats().misses;
    let subject = inkan::pki::name(&[(der::oid::db::rfc4519::CN, inkan::pki::StringKind::Utf8, "w1")]).expect("name");
    let (made, csr) = ks
        .generate_key_with_csr(
            KeyAlgorithm::EcP256,
            "",
            &binding("w1", 3),
            &subject,
            SignatureScheme::Ecdsa(DigestAlgorithm::Sha256),
        )
        .expect("key and csr");
    assert_eq!(ks.cache_stats().misses, misses, "signed before wrapping");
    let request = <x509_cert::request::CertReq as der::Decode>::from_der(&csr).expect("csr");
    let info = der::Encode::to_der(&request.info).expect("info");
    assert!(ec_verifies(&made.public_key_der, &info, request.signature.raw_bytes()), "the CSR verifies");
    let p = ks.protection(&rsa.key).expect("protection");
    assert!(p.sensitive && !p.extractable && p.sign && !p.decrypt && !p.unwrap && !p.derive, "{p:?}");

    // A restart: another process keeps only the stored bytes and the public key.
    drop(ks);
    let (stored, spki) = (rsa.key.stored().to_vec(), rsa.public_key_der.clone());
    let again = inkan::keystore::Keystore::open(inkan::keystore::KeystoreConfig::new(
        crate::harness::module(),
        label,
        inkan::keystore::Pin::new(crate::harness::USER_PIN),
    ))
    .expect("reopen");
    let key = KeyRef::from_stored(stored, &binding("w1", 1), &spki);
    assert_eq!(key, rsa.key);
    let sig = again.sign_digest(&key, scheme, &DigestAlgorithm::Sha256.digest(msg)).expect("after restart");
    assert!(rsa_verify(&spki, msg, &sig));
    assert_eq!(again.public_key(&key, KeyAlgorithm::Rsa2048).expect("public key"), spki);
    let stats = again.cache_stats();
    assert_eq!((stats.misses, stats.hits, stats.entries), (1, 1, 1), "{stats:?}");
}

#[test]
fn a_cache_of_two_serves_fifty_users() {
    let (ks, _) = crate::harness::token_with(2, |c| c.cache_size = 2);
    ks.prepare_wrapping().expect("prepare");
    let keys: Vec<_> = (0..50)
        .map(|i| ks.generate_key(KeyAlgorithm::EcP256, "", &binding(&format!("u{i}"), 1)).expect("generate"))
        .collect();
    let ks = Arc::new(ks);
    let keys = Arc::new(keys);
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let (ks, keys) = (Arc::clone(&ks), Arc::clone(&keys));
            std::thread::spawn(move || {
                for round in 0..3 {
                    for i in 0..keys.len() {
                        // Each thread walks the users in its own order.
                        let k = &keys[(i * (t + 1) * 7 + round) % keys.len()];
                        let msg = format!("t{t} r{round} i{i}");
                        let sig = ks
                            .sign_message(&k.key, SignatureScheme::Ecdsa(DigestAlgorithm::Sha256), msg.as_bytes())
                            .expect("sign");
                        assert!(ec_verifies(&k.public_key_der, msg.as_bytes(), &sig), "signed by its own key");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let stats = ks.cache_stats();
    assert!(stats.entries <= 2 + 3, "bounded by the cache (and the signatures in flight): {stats:?}");
    assert!(stats.misses >= 50 && stats.evictions + stats.entries as u64 == stats.misses, "{stats:?}");
    assert_eq!(stats.hits + stats.misses, 3 * 3 * 50, "{stats:?}");
}

#[test]
fn a_moved_or_altered_wrapped_key_is_refused() {
    let (ks, _) = token(1);
    ks.prepare_wrapping().expect("prepare");
    let alice = ks.generate_key(KeyAlgorithm::EcP256, "", &binding("alice", 1)).expect("alice");
    let bob = ks.generate_key(KeyAlgorithm::EcP256, "", &binding("bob", 1)).expect("bob");
    let sign = |k: &KeyRef| ks.sign_message(k, SignatureScheme::Ecdsa(DigestAlgorithm::Sha256), b"m");
    sign(&alice.key).expect("alice's own key");

    let refused = |k: KeyRef, what: &str| {
        let err = sign(&k).expect_err(what);
        assert!(matches!(err, Error::KeyRefused { .. }), "{what}: {err:?}");
    };
    // Alice's blob in Bob's record (with Alice's public key, or Bob's).
    refused(KeyRef::from_stored(alice.key.stored(), &binding("bob", 1), &alice.public_key_der), "moved");
    refused(KeyRef::from_stored(alice.key.stored(), &binding("bob", 1), &bob.public_key_der), "moved with bob's key");
    // Another generation of the same user.
    refused(KeyRef::from_stored(alice.key.stored(), &binding("alice", 2), &alice.public_key_der), "generation");
    // Altered bytes (the key type, the MAC, the blob), truncated, or another public key.
    for at in [8, 20, alice.key.stored().len() - 1] {
        let mut altered = alice.key.stored().to_vec();
        altered[at] ^= 1;
        refused(KeyRef::from_stored(altered, &binding("alice", 1), &alice.public_key_der), "altered");
    }
    let truncated = &alice.key.stored()[..alice.key.stored().len() - 8];
    refused(KeyRef::from_stored(truncated, &binding("alice", 1), &alice.public_key_der), "truncated");
    refused(KeyRef::from_stored(alice.key.stored(), &binding("alice", 1), &bob.public_key_der), "other public key");
    // The name of a key-encryption key the token never had.
    let mut other_kek = alice.key.stored().to_vec();
    other_kek[12] ^= 2;
    let err = sign(&KeyRef::from_stored(other_kek, &binding("alice", 1), &alice.public_key_der)).expect_err("kek");
    assert!(matches!(&err, Error::KeyRefused { reason } if reason.contains("key-encryption key 3")), "{err:?}");
    assert_eq!(ks.cache_stats().refused, 9);
    let err = format!("{:?}", sign(&KeyRef::from_stored(bob.key.stored(), &binding("alice", 1), &bob.public_key_der)));
    assert!(err.contains("MAC") && err.contains("does not match"), "{err}");
    sign(&bob.key).expect("bob's own key still works");
}

/// The KEK as PKCS#11 sees it: whoever has the user PIN can use it, but can
/// neither read it nor unwrap a user's key into something readable.
#[test]
fn the_kek_never_lets_a_key_out() {
    let (ks, _) = token(1);
    ks.prepare_wrapping().expect("prepare");
    let user = ks.generate_key(KeyAlgorithm::EcP256, "", &binding("u", 1)).expect("generate");

    ks.danger_with_raw_session(|session| the_kek_refuses(session, user.key.stored())).expect("session");
}

fn the_kek_refuses(session: &cryptoki::session::Session, stored: &[u8]) {
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
    let kek = session
        .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Id(b"inkan-kek-1".to_vec())])
        .expect("find")[0];
    let attrs = session
        .get_attributes(
            kek,
            &[AttributeType::Sensitive, AttributeType::Extractable, AttributeType::Modifiable, AttributeType::Value],
        )
        .expect("attributes");
    assert!(attrs.contains(&Attribute::Sensitive(true)), "{attrs:?}");
    assert!(attrs.contains(&Attribute::Extractable(false)), "{attrs:?}");
    assert!(attrs.contains(&Attribute::Modifiable(false)), "{attrs:?}");
    // (cryptoki cannot read CKM_AES_KEY_WRAP_KWP, which other modules are allowed.)
    if crate::harness::module() == inkan::config::SOFTHSM_MODULE {
        let allowed = session.get_attributes(kek, &[AttributeType::AllowedMechanisms]).expect("allowed");
        assert_eq!(
            allowed,
            vec![Attribute::AllowedMechanisms(vec![cryptoki::mechanism::MechanismType::AES_KEY_WRAP_PAD])]
        );
    }
    assert!(!attrs.iter().any(|a| matches!(a, Attribute::Value(_))), "the KEK's value is not readable");

    // The blob is the stored form's tail (see keystore/src/wrapped.rs).
    let blob = &stored[8 + 1 + 4 + 32..];
    let readable = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::Token(false),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
        Attribute::Sign(true),
    ];
    // With either RFC 5649 mechanism (the KEK allows one): refused, and by the
    // unwrap template for the allowed one.
    let ext = inkan_pkcs11_ffi::Module::open(std::path::Path::new(&crate::harness::module())).expect("module");
    let errors: Vec<String> = [inkan_pkcs11_ffi::CKM_AES_KEY_WRAP_KWP, inkan_pkcs11_ffi::CKM_AES_KEY_WRAP_PAD]
        .iter()
        .map(|m| format!("{:?}", ext.unwrap_key(session, *m, kek, blob, &readable).expect_err("readable unwrap")))
        .collect();
    assert!(errors.iter().any(|e| e.contains("TemplateInconsistent")), "{errors:?}");
    // Nor may it encrypt or decrypt data, or wrap with another mechanism.
    let err = session.encrypt(&Mechanism::AesEcb, kek, &[0u8; 16]).expect_err("encrypt");
    assert!(!format!("{err}").is_empty());
}
