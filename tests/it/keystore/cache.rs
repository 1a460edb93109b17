//! Wrapped keys and the key cache.

use std::sync::Arc;

use inkan::keystore::{Digest, DigestAlgorithm, Error, KeyAlgorithm, KeyRef, SignatureScheme};

use crate::harness::token;

use super::*;

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
