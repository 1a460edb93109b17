//! Data objects: private, kept, pruned by value.

use crate::harness::token;

use super::*;

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
