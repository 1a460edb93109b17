//! The audit seal key: made once, kept in the token, its MACs stable across a restart.

use crate::harness::token;

/// The seal key is made once (a second call finds it), MACs each input with
/// HMAC-SHA-256 (one MAC per input, different inputs different MACs), gives
/// the same MACs after a restart, and without it nothing is sealed.
#[test]
fn the_seal_key_is_made_once_and_its_macs_are_stable() {
    let (ks, label) = token(1);
    let inputs = vec![b"row 1".to_vec(), b"row 2".to_vec()];
    let err = ks.seal(&inputs).expect_err("no seal key yet");
    assert!(matches!(err, inkan::keystore::Error::KeyNotFound { .. }), "{err:?}");
    assert!(ks.prepare_seal_key().expect("made"), "the first call makes it");
    assert!(!ks.prepare_seal_key().expect("found"), "the second finds it");
    let macs = ks.seal(&inputs).expect("seal");
    assert_eq!(macs.len(), 2);
    assert!(macs.iter().all(|m| m.len() == 32), "HMAC-SHA-256");
    assert_ne!(macs[0], macs[1]);
    assert_eq!(ks.seal(&inputs[..1]).expect("again"), macs[..1]);
    drop(ks);
    let again = super::reopen(&label);
    assert_eq!(again.seal(&inputs).expect("after a restart"), macs, "the key is kept in the token");
}
