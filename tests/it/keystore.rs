//! The keystore against SoftHSM (or, under `softhsm/second-module.sh`, another
//! PKCS#11 module), in process, one file per room of the keystore: signing
//! (`sign.rs`: pool, re-login, mechanisms, errors), key generation
//! (`generate.rs`), data objects (`data.rs`), wrapped keys and the key cache
//! (`cache.rs`), KEKs (`kek.rs`) and the audit seal key (`seal.rs`). They are
//! here rather than in the keystore crate because SoftHSM reads its
//! configuration once per process: this binary's shared token pool
//! ([`crate::harness::token`]) is made before the module is loaded.

use rsa::signature::Verifier;

mod cache;
mod data;
mod generate;
mod kek;
mod seal;
mod sign;

/// Whether `sig` is an RSA PKCS#1 v1.5 SHA-256 signature of `digest_input` by `spki`.
fn rsa_verify(spki: &[u8], digest_input: &[u8], sig: &[u8]) -> bool {
    use rsa::pkcs8::DecodePublicKey;
    let key = rsa::RsaPublicKey::from_public_key_der(spki).expect("rsa key");
    let sig = rsa::pkcs1v15::Signature::try_from(sig).expect("sig");
    rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key).verify(digest_input, &sig).is_ok()
}

/// The keystore of token `label`, opened again (as after a restart).
fn reopen(label: &str) -> inkan::keystore::Keystore {
    inkan::keystore::Keystore::open(inkan::keystore::KeystoreConfig::new(
        crate::harness::module(),
        label,
        inkan::keystore::Pin::new(crate::harness::USER_PIN),
    ))
    .expect("reopen")
}

/// What inkan binds a user's key to (as `keys::binding` does).
fn binding(user: &str, generation: i64) -> Vec<u8> {
    format!("{user}\0{generation}").into_bytes()
}

/// Whether `sig` is a DER ECDSA P-256 signature of `msg` by `spki`.
fn ec_verifies(spki: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    use p256::pkcs8::DecodePublicKey;
    let vk = p256::ecdsa::VerifyingKey::from_public_key_der(spki).expect("p256 key");
    p256::ecdsa::DerSignature::try_from(sig).is_ok_and(|s| vk.verify(msg, &s).is_ok())
}
