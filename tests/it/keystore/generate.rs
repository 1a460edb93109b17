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
