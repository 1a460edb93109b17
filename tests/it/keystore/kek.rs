//! KEKs: what never leaves, rotation, trusted KEKs.

use inkan::keystore::{Digest, DigestAlgorithm, Error, KeyAlgorithm, KeyRef, SignatureScheme};

use crate::harness::token;

use super::*;

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
