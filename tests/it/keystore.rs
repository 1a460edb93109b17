//! The keystore against SoftHSM, in process: pool, handle cache, re-login,
//! mechanisms, errors.

use std::sync::Arc;

use inkan::keystore::{Digest, DigestAlgorithm, Error, KeyAlgorithm, KeyRef, SignatureScheme};
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
                    let digest = Digest::of(DigestAlgorithm::Sha256, msg.as_bytes());
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
    let digest = Digest::sha256([1u8; 32]);
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
    let digest = Digest::of(DigestAlgorithm::Sha256, msg);
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
    let digest = Digest::of(DigestAlgorithm::Sha384, msg);
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
    let err = ks
        .sign_digest(&missing, SignatureScheme::RsaPkcs1v15(DigestAlgorithm::Sha256), &Digest::sha256([0; 32]))
        .expect_err("no key");
    assert!(matches!(err, Error::KeyNotFound { .. }), "{err:?}");

    let key = KeyRef::from_id(b"k".to_vec());
    ks.generate_key_pair(KeyAlgorithm::Rsa2048, &key, "k").expect("generate");
    // A digest of the wrong length cannot be made; one of another algorithm
    // than the scheme's is refused before the token is asked.
    let short = inkan::keystore::Digest::new(DigestAlgorithm::Sha256, vec![0; 20]).expect_err("short digest");
    assert_eq!(short.to_string(), "a SHA-256 digest has 32 bytes, not 20");
    let err = ks
        .sign_digest(&key, SignatureScheme::RsaPkcs1v15(DigestAlgorithm::Sha384), &Digest::sha256([0; 32]))
        .expect_err("another algorithm");
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    let err = ks
        .sign_digest(&key, SignatureScheme::Ecdsa(DigestAlgorithm::Sha256), &Digest::sha256([0; 32]))
        .expect_err("wrong mechanism");
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
    let err = ks
        .sign_digest(&a, SignatureScheme::Ecdsa(DigestAlgorithm::Sha256), &Digest::sha256([0; 32]))
        .expect_err("gone");
    assert!(matches!(err, Error::KeyNotFound { .. }), "{err:?}");
}

/// Data objects: kept on the token (a restart reads them back), private
/// (a session without the PIN does not see them), not modifiable, pruned by
/// value.
#[test]
fn data_objects_are_private_kept_and_pruned_by_value() {
    let (ks, label) = token(1);
    ks.create_data_object("inkan-test", "record", b"one").expect("one");
    ks.create_data_object("inkan-test", "record", b"two").expect("two");
    ks.create_data_object("inkan-other", "record", b"other").expect("other");
    let values = |ks: &inkan::keystore::Keystore| {
        let mut v: Vec<Vec<u8>> = ks.data_objects("inkan-test").expect("read").into_iter().map(|o| o.value).collect();
        v.sort();
        v
    };
    assert_eq!(values(&ks), vec![b"one".to_vec(), b"two".to_vec()]);
    drop(ks);
    let ks = reopen(&label);
    assert_eq!(values(&ks), vec![b"one".to_vec(), b"two".to_vec()]);
    assert_eq!(ks.prune_data_objects("inkan-test", "record", &|v| v == b"one").expect("prune"), 1);
    assert_eq!(values(&ks), vec![b"two".to_vec()]);
    assert_eq!(ks.data_objects("inkan-other").expect("other").len(), 1);
    // A public session (no login; the keystore, which is logged in, closed
    // first: a login holds for the whole process) finds none of them.
    drop(ks);
    let pkcs11 = cryptoki::context::Pkcs11::new(crate::harness::module()).expect("module");
    let args = cryptoki::context::CInitializeArgs::new(cryptoki::context::CInitializeFlags::OS_LOCKING_OK);
    pkcs11.initialize(args).ok();
    let slot = pkcs11
        .get_slots_with_token()
        .expect("slots")
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).is_ok_and(|i| i.label().trim() == label))
        .expect("slot");
    let session = pkcs11.open_ro_session(slot).expect("session");
    let found =
        session.find_objects(&[cryptoki::object::Attribute::Class(cryptoki::object::ObjectClass::DATA)]).expect("find");
    assert!(found.is_empty(), "a data object is visible without the PIN");
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
    let sig = ks.sign_digest(&rsa.key, scheme, &Digest::of(DigestAlgorithm::Sha256, msg)).expect("rsa sign");
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
    let sig = again.sign_digest(&key, scheme, &Digest::of(DigestAlgorithm::Sha256, msg)).expect("after restart");
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

fn reopen(label: &str) -> inkan::keystore::Keystore {
    inkan::keystore::Keystore::open(inkan::keystore::KeystoreConfig::new(
        crate::harness::module(),
        label,
        inkan::keystore::Pin::new(crate::harness::USER_PIN),
    ))
    .expect("reopen")
}

/// A KEK rotation in the token: keys under a trusted KEK move to a newer
/// trusted KEK (and still sign, before and after a restart); keys under a
/// strict KEK, and keys whose MAC does not match, do not move; and what a
/// trusted KEK unwraps can be wrapped by trusted keys only.
#[test]
fn keys_under_a_trusted_kek_move_to_a_newer_one_and_nowhere_else() {
    use inkan::keystore::{create_trusted_kek, KekInfo, KekKind, Pin, WrappingReady};
    let (ks, label) = token(1);
    ks.prepare_wrapping().expect("strict KEK 1");
    let strict = ks.generate_key(KeyAlgorithm::EcP256, "", &binding("s", 1)).expect("strict key");
    // The security officer cannot log in while this process's user is.
    drop(ks);
    let module = crate::harness::module();
    let module = std::path::Path::new(&module);
    let so = Pin::new(crate::harness::SO_PIN);
    assert!(create_trusted_kek(module, &label, &so, None, 2).expect("trusted KEK 2"), "made now");
    assert!(!create_trusted_kek(module, &label, &so, None, 2).expect("again"), "made once");
    let err = create_trusted_kek(module, &label, &Pin::new("wrong-so-pin"), None, 3).expect_err("wrong SO PIN");
    assert!(matches!(&err, Error::LoginFailed { reason } if reason.contains("SO PIN")), "{err:?}");

    let ks = reopen(&label);
    assert_eq!(ks.prepare_wrapping().expect("MAC key 2"), WrappingReady { kek_index: 2, created: false });
    assert_eq!(
        ks.keks().expect("keks"),
        vec![
            KekInfo { index: 1, kind: KekKind::Strict, has_mac_key: true },
            KekInfo { index: 2, kind: KekKind::Trusted, has_mac_key: true }
        ]
    );
    let rsa = ks.generate_key(KeyAlgorithm::Rsa2048, "", &binding("t", 1)).expect("rsa under KEK 2");
    let ec = ks.generate_key(KeyAlgorithm::EcP256, "", &binding("t", 2)).expect("ec under KEK 2");
    assert_eq!((strict.key.kek_index(), rsa.key.kek_index(), ec.key.kek_index()), (Some(1), Some(2), Some(2)));
    let scheme = SignatureScheme::RsaPkcs1v15(DigestAlgorithm::Sha256);
    let signs = |ks: &inkan::keystore::Keystore, key: &KeyRef, spki: &[u8], rsa: bool| {
        let msg = b"rotated";
        if rsa {
            let sig = ks.sign_digest(key, scheme, &Digest::of(DigestAlgorithm::Sha256, msg)).expect("rsa sign");
            assert!(rsa_verify(spki, msg, &sig), "signed by its own key");
        } else {
            let sig = ks.sign_message(key, SignatureScheme::Ecdsa(DigestAlgorithm::Sha256), msg).expect("ec sign");
            assert!(ec_verifies(spki, msg, &sig), "signed by its own key");
        }
    };
    signs(&ks, &strict.key, &strict.public_key_der, false);
    signs(&ks, &rsa.key, &rsa.public_key_der, true);
    signs(&ks, &ec.key, &ec.public_key_der, false);
    let p = ks.protection(&rsa.key).expect("protection");
    assert!(p.sensitive && !p.extractable && p.sign, "unwrapped for signing: never extractable: {p:?}");
    // SoftHSM keeps CKA_TRUSTED for the security officer; kryoptic 1.5.4 does
    // not, and inkan says so before it makes a trusted KEK.
    let trust = ks.check_trust_reserved();
    if crate::harness::module() == inkan::config::SOFTHSM_MODULE {
        trust.expect("SoftHSM reserves CKA_TRUSTED to the SO");
    } else {
        let err = trust.expect_err("kryoptic lets a user trust a key").to_string();
        assert!(err.contains("lets a user mark a key trusted") && err.contains("strict"), "{err}");
    }
    let reserved = ks.check_trust_reserved().is_ok();
    ks.danger_with_raw_session(|session| {
        the_trusted_kek_lets_keys_out_to_trusted_keys_only(session, ec.key.stored(), reserved)
    })
    .expect("session");

    drop(ks);
    assert!(create_trusted_kek(module, &label, &so, None, 3).expect("trusted KEK 3"));
    let ks = reopen(&label);
    assert_eq!(ks.prepare_wrapping().expect("MAC key 3").kek_index, 3);
    let moved_rsa = ks.rewrap(&rsa.key, 3).expect("rsa moved");
    let moved_ec = ks.rewrap(&ec.key, 3).expect("ec moved");
    assert_eq!((moved_rsa.kek_index(), moved_ec.kek_index()), (Some(3), Some(3)));
    assert_ne!(moved_rsa.stored(), rsa.key.stored());
    assert_eq!(ks.rewrap(&moved_ec, 3).expect("already there"), moved_ec, "a moved key stays as it is");
    signs(&ks, &moved_rsa, &rsa.public_key_der, true);
    signs(&ks, &moved_ec, &ec.public_key_der, false);
    signs(&ks, &rsa.key, &rsa.public_key_der, true); // KEK 2 is still there

    let err = ks.rewrap(&strict.key, 3).expect_err("strict");
    assert!(matches!(&err, Error::InvalidInput(m) if m.contains("strict") && m.contains("key rotate")), "{err:?}");
    let moved_to_other = KeyRef::from_stored(ec.key.stored(), &binding("x", 1), &ec.public_key_der);
    let err = ks.rewrap(&moved_to_other, 3).expect_err("another user's");
    assert!(matches!(err, Error::KeyRefused { .. }), "{err:?}");
    let err = ks.rewrap(&ec.key, 1).expect_err("to the strict KEK");
    assert!(matches!(&err, Error::InvalidInput(m) if m.contains("not trusted")), "{err:?}");

    // A restart keeps only the moved stored bytes.
    drop(ks);
    let ks = reopen(&label);
    let again = KeyRef::from_stored(moved_rsa.stored(), &binding("t", 1), &rsa.public_key_der);
    signs(&ks, &again, &rsa.public_key_der, true);
}

/// Trusted KEK 2, as PKCS#11 sees it: trusted, unreadable; what it unwraps
/// is sensitive, and extractable only towards keys the SO trusted.
fn the_trusted_kek_lets_keys_out_to_trusted_keys_only(
    session: &cryptoki::session::Session,
    stored: &[u8],
    trust_reserved: bool,
) {
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
    // The one mechanism the KEK allows (see `the_kek_refuses`).
    let pad = if crate::harness::module() == inkan::config::SOFTHSM_MODULE {
        inkan_pkcs11_ffi::CKM_AES_KEY_WRAP_PAD
    } else {
        inkan_pkcs11_ffi::CKM_AES_KEY_WRAP_KWP
    };
    let kek = session
        .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Id(b"inkan-kek-2".to_vec())])
        .expect("find")[0];
    let attrs = session
        .get_attributes(
            kek,
            &[AttributeType::Trusted, AttributeType::Sensitive, AttributeType::Extractable, AttributeType::Modifiable],
        )
        .expect("attributes");
    let expected = [
        Attribute::Trusted(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(false),
    ];
    assert!(expected.iter().all(|a| attrs.contains(a)), "{attrs:?}");
    let blob = &stored[8 + 1 + 4 + 32..];
    let template = |sensitive: bool, wrap_with_trusted: bool| {
        vec![
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::EC),
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(sensitive),
            Attribute::Extractable(true),
            Attribute::WrapWithTrusted(wrap_with_trusted),
            Attribute::Sign(true),
            Attribute::Derive(false),
        ]
    };
    let ext = inkan_pkcs11_ffi::Module::open(std::path::Path::new(&crate::harness::module())).expect("module");
    for (sensitive, trusted_only) in [(false, true), (true, false)] {
        let err = ext.unwrap_key(session, pad, kek, blob, &template(sensitive, trusted_only)).expect_err("refused");
        assert!(format!("{err:?}").contains("TemplateInconsistent"), "{err:?}");
    }
    // Nor as a secret key that could feed a key derivation.
    let as_secret = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::WrapWithTrusted(true),
        Attribute::Derive(true),
    ];
    let err = ext.unwrap_key(session, pad, kek, blob, &as_secret).expect_err("not as a secret key");
    if crate::harness::module() == inkan::config::SOFTHSM_MODULE {
        assert!(format!("{err:?}").contains("TemplateInconsistent"), "the KEK's template says so: {err:?}");
    }
    let key = ext.unwrap_key(session, pad, kek, blob, &template(true, true)).expect("extractable to trusted keys");
    // A wrapping key of the user's own, which the user cannot make trusted.
    let own = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::ValueLen(32.into()),
        Attribute::Wrap(true),
    ];
    let mut trusted_own = own.to_vec();
    trusted_own.push(Attribute::Trusted(true));
    match session.generate_key(&Mechanism::AesKeyGen, &trusted_own) {
        Err(_) => assert!(trust_reserved, "the user cannot trust a key"),
        Ok(trusted) => {
            // kryoptic 1.5.4: the user can, and so can take a key out, which
            // is why inkan refuses trusted KEKs there.
            assert!(!trust_reserved, "only where inkan found it");
            assert!(ext.wrap_key(session, pad, trusted, key).is_ok(), "wrapped out under the user's own key");
            session.destroy_object(trusted).expect("destroy");
        }
    }
    let own = session.generate_key(&Mechanism::AesKeyGen, &own).expect("own key");
    let err = ext.wrap_key(session, pad, own, key).expect_err("not under an untrusted key");
    // (SoftHSM: CKR_KEY_NOT_WRAPPABLE; kryoptic: CKR_WRAPPING_KEY_HANDLE_INVALID.)
    let err = format!("{err:?}");
    assert!(err.contains("KeyNotWrappable") || err.contains("WrappingKeyHandleInvalid"), "{err}");
    for handle in [key, own] {
        session.destroy_object(handle).expect("destroy");
    }
}
