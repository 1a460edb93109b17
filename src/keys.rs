//! The second-key lifecycle: generate in the token, CSR, import the certificate
//! (activating the key and retiring the previous one), rotate, retire, and sign.
//!
//! Crash safety: a key pair is generated in the token first and registered in
//! the store in one transaction afterwards. A process killed in between leaves
//! an unregistered key pair in the token and nothing in the store; the next
//! generation for that user removes such orphans (they carry the user's label
//! and an id the store does not know).

use std::path::Path;
use std::time::SystemTime;

use der::{Decode, Encode};
use inkan_keystore::{build_csr, DigestAlgorithm, KeyAlgorithm, KeyRef, Keystore};
use serde::Serialize;
use x509_cert::Certificate;

use crate::audit::{self, Event};
use crate::cades::{self, CadesError, SignerIdentity};
use crate::clock::{rfc3339, Clock};
use crate::config::Config;
use crate::pki::{self, PkiError, StringKind};
use crate::store::{tx, KeyRecord, Store, StoreError, User};
use crate::users::{self, UserError};

/// A key operation that cannot be done, with what to do instead.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// See [`UserError`].
    #[error(transparent)]
    User(#[from] UserError),
    /// The user is disabled.
    #[error("user {0:?} is disabled: enable it with `inkan user enable {0}` first")]
    Disabled(String),
    /// The state of the user's keys does not allow this.
    #[error("{0}")]
    State(String),
    /// The certificate cannot be accepted.
    #[error("certificate refused: {0}")]
    Certificate(#[from] PkiError),
    /// The token failed.
    #[error("token: {0}")]
    Keystore(#[from] inkan_keystore::Error),
    /// Building the signature failed.
    #[error(transparent)]
    Cades(#[from] CadesError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file could not be read or written.
    #[error("{0}")]
    Io(String),
}

/// A key as shown to operators.
#[derive(Clone, Debug, Serialize)]
pub struct KeyView {
    /// Owner.
    pub user_id: String,
    /// Generation.
    pub generation: i64,
    /// Algorithm.
    pub algorithm: String,
    /// State.
    pub state: String,
    /// `CKA_ID` in hex.
    pub token_id: String,
    /// Certificate serial (hex), once imported.
    pub certificate_serial: Option<String>,
    /// Certificate subject.
    pub certificate_subject: Option<String>,
    /// Certificate notAfter (RFC 3339).
    pub certificate_not_after: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub activated_at: Option<String>,
    /// RFC 3339.
    pub retired_at: Option<String>,
}

impl From<&KeyRecord> for KeyView {
    fn from(k: &KeyRecord) -> Self {
        let cert = k.certificate.as_deref().and_then(|c| Certificate::from_der(c).ok());
        KeyView {
            user_id: k.user_id.clone(),
            generation: k.generation,
            algorithm: k.algorithm.clone(),
            state: k.state.clone(),
            token_id: KeyRef::from_id(k.token_id.clone()).hex(),
            certificate_serial: cert.as_ref().map(pki::serial_hex),
            certificate_subject: cert.as_ref().map(|c| c.tbs_certificate().subject().to_string()),
            certificate_not_after: cert.as_ref().map(|c| c.tbs_certificate().validity().not_after.to_string()),
            created_at: rfc3339(k.created_at),
            activated_at: k.activated_at.map(rfc3339),
            retired_at: k.retired_at.map(rfc3339),
        }
    }
}

/// The `CKA_LABEL` of all of a user's key objects.
pub fn token_label(user_id: &str) -> String {
    format!("inkan:{user_id}")
}

/// The CSR subject of a user's second certificate: `C=JP, CN=<name>, serialNumber=<user ID>`.
pub fn subject(user: &User) -> Result<x509_cert::name::Name, PkiError> {
    use der::oid::db::rfc4519;
    pki::name(&[
        (rfc4519::C, StringKind::Printable, "JP"),
        (rfc4519::CN, StringKind::Utf8, &user.name),
        (rfc4519::SERIAL_NUMBER, StringKind::Printable, &user.id),
    ])
}

/// Test hook: `INKAN_DANGER_CRASH_AT=<point>` aborts the process at that point,
/// as a `kill -9` would, so tests can prove crash safety. Never set it in production.
fn crash_point(point: &str) {
    if std::env::var("INKAN_DANGER_CRASH_AT").is_ok_and(|p| p == point) {
        eprintln!("INKAN_DANGER_CRASH_AT={point}: aborting");
        std::process::abort();
    }
}

/// Whether the new key is a first key or a renewal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// The user's first key (`key generate`): refused if a key is active.
    First,
    /// A renewal (`key rotate`): requires an active key.
    Rotation,
}

/// A newly generated key and its CSR.
#[derive(Clone, Debug, Serialize)]
pub struct Generated {
    /// The key.
    pub key: KeyView,
    /// The CSR, PEM.
    pub csr_pem: String,
    /// Orphaned key pairs removed from the token first.
    pub orphans_removed: usize,
}

/// Generates a key pair in the token for `user_id`, makes its CSR and registers it as pending.
pub fn generate(
    store: &mut Store,
    keystore: &Keystore,
    clock: &dyn Clock,
    actor: &str,
    user_id: &str,
    alg: KeyAlgorithm,
    purpose: Purpose,
) -> Result<Generated, KeyError> {
    let user = users::get(store, user_id)?;
    if user.status != "active" {
        return Err(KeyError::Disabled(user.id));
    }
    let keys = store.keys(Some(user_id))?;
    if let Some(p) = keys.iter().find(|k| k.state == "pending") {
        return Err(KeyError::State(format!(
            "user {user_id} already has a pending key (generation {g}) waiting for its certificate: \
             import it with `inkan key import-cert {user_id} <CERT.pem>`, or drop it with \
             `inkan key retire {user_id} --generation {g}`",
            g = p.generation
        )));
    }
    let active = keys.iter().find(|k| k.state == "active");
    match (purpose, active) {
        (Purpose::First, Some(a)) => {
            return Err(KeyError::State(format!(
                "user {user_id} has an active key (generation {}): for a renewal use `inkan key rotate {user_id}`",
                a.generation
            )))
        }
        (Purpose::Rotation, None) => {
            return Err(KeyError::State(format!(
                "user {user_id} has no active key to rotate: use `inkan key generate {user_id}`"
            )))
        }
        _ => {}
    }

    // Orphans: key pairs with the user's label that the store does not know.
    let label = token_label(user_id);
    let known: Vec<&[u8]> = keys.iter().map(|k| k.token_id.as_slice()).collect();
    let mut orphans_removed = 0;
    for key in keystore.keys_labelled(&label)? {
        if !known.contains(&key.id()) {
            keystore.destroy(&key)?;
            orphans_removed += 1;
        }
    }

    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| KeyError::Io(format!("no randomness: {e}")))?;
    let key = KeyRef::from_id(id.to_vec());
    let generated = keystore.generate_key_pair(alg, &key, &label)?;
    crash_point("after-token-keygen");
    let scheme = alg.default_scheme(DigestAlgorithm::Sha256);
    let csr = build_csr(keystore, &key, &generated.public_key_der, subject(&user)?, scheme)?;

    let now = clock.now_ms();
    let record = store.write(|t| {
        let generation = tx::next_generation(t, user_id)?;
        let record = KeyRecord {
            user_id: user_id.to_owned(),
            generation,
            algorithm: alg.as_str().to_owned(),
            token_id: key.id().to_vec(),
            public_key: generated.public_key_der.clone(),
            csr: csr.clone(),
            certificate: None,
            state: "pending".into(),
            created_at: now,
            activated_at: None,
            retired_at: None,
        };
        tx::insert_key(t, &record)?;
        audit::append(
            t,
            now,
            &[Event {
                actor,
                event: if purpose == Purpose::Rotation { "key.rotate" } else { "key.generate" },
                user_id: Some(user_id),
                generation: Some(generation),
                outcome: "ok",
                detail: serde_json::json!({ "algorithm": alg.as_str(), "token_id": key.hex(), "orphans_removed": orphans_removed }),
                ..Default::default()
            }],
        )?;
        Ok(record)
    })?;
    Ok(Generated { key: KeyView::from(&record), csr_pem: pki::to_pem("CERTIFICATE REQUEST", &csr), orphans_removed })
}

/// The CSR of a pending (or any) key generation, PEM.
pub fn csr(store: &Store, user_id: &str, generation: Option<i64>) -> Result<String, KeyError> {
    users::get(store, user_id)?;
    let keys = store.keys(Some(user_id))?;
    let key = match generation {
        Some(g) => keys.iter().find(|k| k.generation == g),
        None => keys.iter().find(|k| k.state == "pending"),
    }
    .ok_or_else(|| KeyError::State(format!("user {user_id} has no such key: see `inkan key list {user_id}`")))?;
    Ok(pki::to_pem("CERTIFICATE REQUEST", &key.csr))
}

/// Imports the certificate issued for a pending key: checks it was issued by the
/// configured HPKI signing CA, is valid now and certifies the pending key; then
/// activates the key and retires the previously active one, in one transaction.
pub fn import_certificate(
    store: &mut Store,
    config: &Config,
    clock: &dyn Clock,
    actor: &str,
    user_id: &str,
    cert_path: &Path,
) -> Result<KeyView, KeyError> {
    let user = users::get(store, user_id)?;
    if user.status != "active" {
        return Err(KeyError::Disabled(user.id));
    }
    let cert = pki::read_certificate(cert_path)?;
    let ca = pki::read_certificate(&config.pki.signing_ca)
        .map_err(|e| PkiError(format!("the configured signing CA ([pki] signing_ca): {e}")))?;
    pki::check_issued_by(&cert, &ca)?;
    pki::check_validity(&cert, clock.now())?;
    let spki = cert.tbs_certificate().subject_public_key_info().to_der().map_err(PkiError::from)?;
    let keys = store.keys(Some(user_id))?;
    let Some(pending) = keys.iter().find(|k| k.public_key == spki && k.state == "pending") else {
        let other = keys.iter().find(|k| k.public_key == spki);
        return Err(KeyError::Certificate(PkiError(match other {
            Some(k) => format!(
                "the certificate is for generation {} of {user_id}, which is {}, not pending",
                k.generation, k.state
            ),
            None => format!(
                "the certificate's public key matches no pending key of {user_id}: \
                 issue it from the CSR of `inkan key generate` (see `inkan key list {user_id}`)"
            ),
        })));
    };
    let cert_der = cert.to_der().map_err(PkiError::from)?;
    let generation = pending.generation;
    let now = clock.now_ms();
    let serial = pki::serial_hex(&cert);
    store.write(|t| {
        let retired = tx::retire_active(t, user_id, now)?;
        tx::activate(t, user_id, generation, &cert_der, now)?;
        let mut events = vec![Event {
            actor,
            event: "key.activate",
            user_id: Some(user_id),
            generation: Some(generation),
            outcome: "ok",
            detail: serde_json::json!({ "certificate_serial": serial, "subject": cert.tbs_certificate().subject().to_string() }),
            ..Default::default()
        }];
        if let Some(old) = retired {
            events.push(Event {
                actor,
                event: "key.retire",
                user_id: Some(user_id),
                generation: Some(old),
                outcome: "ok",
                detail: serde_json::json!({ "reason": "superseded", "by_generation": generation }),
                ..Default::default()
            });
        }
        audit::append(t, now, &events)?;
        Ok(())
    })?;
    let record = store.keys(Some(user_id))?.into_iter().find(|k| k.generation == generation);
    record.as_ref().map(KeyView::from).ok_or_else(|| KeyError::State("the key vanished".into()))
}

/// Retires one generation (pending or active).
pub fn retire(
    store: &mut Store,
    clock: &dyn Clock,
    actor: &str,
    user_id: &str,
    generation: i64,
) -> Result<KeyView, KeyError> {
    users::get(store, user_id)?;
    let key = store.keys(Some(user_id))?.into_iter().find(|k| k.generation == generation).ok_or_else(|| {
        KeyError::State(format!("user {user_id} has no key generation {generation}: see `inkan key list {user_id}`"))
    })?;
    if key.state == "retired" {
        return Err(KeyError::State(format!("generation {generation} of {user_id} is already retired")));
    }
    let now = clock.now_ms();
    store.write(|t| {
        tx::retire(t, user_id, generation, now)?;
        audit::append(
            t,
            now,
            &[Event {
                actor,
                event: "key.retire",
                user_id: Some(user_id),
                generation: Some(generation),
                outcome: "ok",
                detail: serde_json::json!({ "reason": "operator", "was": key.state }),
                ..Default::default()
            }],
        )?;
        Ok(())
    })?;
    let record = store.keys(Some(user_id))?.into_iter().find(|k| k.generation == generation);
    record.as_ref().map(KeyView::from).ok_or_else(|| KeyError::State("the key vanished".into()))
}

/// Reads the configured chain (signing CA first), DER.
pub fn chain(config: &Config) -> Result<Vec<Vec<u8>>, PkiError> {
    let mut chain = pki::read_certificates(&config.pki.signing_ca)?;
    for p in &config.pki.chain {
        chain.extend(pki::read_certificates(p)?);
    }
    Ok(chain)
}

/// The signer identity of a user's active key.
pub fn signer(store: &Store, config: &Config, user_id: &str) -> Result<(SignerIdentity, i64), KeyError> {
    let user = users::get(store, user_id)?;
    if user.status != "active" {
        return Err(KeyError::Disabled(user.id));
    }
    let key = store.active_key(user_id)?.ok_or_else(|| {
        KeyError::State(format!(
            "user {user_id} has no active key: generate one with `inkan key generate {user_id}` and import its certificate"
        ))
    })?;
    let alg: KeyAlgorithm = key.algorithm.parse().map_err(KeyError::State)?;
    let cert = key.certificate.as_deref().ok_or_else(|| KeyError::State("active key without certificate".into()))?;
    let identity = SignerIdentity::new(
        KeyRef::from_id(key.token_id.clone()),
        alg,
        config.signing.rsa_scheme,
        cert,
        &chain(config)?,
    )?;
    Ok((identity, key.generation))
}

/// The outcome of a local signature.
#[derive(Clone, Debug, Serialize)]
pub struct Signed {
    /// Signer.
    pub user_id: String,
    /// Key generation used.
    pub generation: i64,
    /// `sha256:<hex>` of the content.
    pub digest: String,
    /// Where the signature went.
    pub out: String,
    /// Whether the content is enveloped.
    pub attached: bool,
    /// Audit sequence number.
    pub audit_seq: i64,
}

/// Signs a file with the user's active key (CLI `inkan sign`). The audit row is
/// committed before the signature file appears.
#[allow(clippy::too_many_arguments)]
pub fn sign_file(
    store: &mut Store,
    keystore: &Keystore,
    config: &Config,
    clock: &dyn Clock,
    actor: &str,
    user_id: &str,
    input: &Path,
    out: &Path,
    attached: bool,
) -> Result<Signed, KeyError> {
    let (identity, generation) = signer(store, config, user_id)?;
    let file_name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = out.with_file_name(format!(".{file_name}.tmp"));
    let result = (|| {
        let mut w = std::io::BufWriter::new(
            std::fs::File::create(&tmp).map_err(|e| KeyError::Io(format!("cannot write {}: {e}", tmp.display())))?,
        );
        let now: SystemTime = clock.now();
        let digest = cades::sign_file(keystore, &identity, DigestAlgorithm::Sha256, input, attached, now, &mut w)
            .map_err(|e| match e {
                CadesError::Io(io) => KeyError::Io(format!("{}: {io}", input.display())),
                other => KeyError::Cades(other),
            })?;
        let f = w.into_inner().map_err(|e| KeyError::Io(e.to_string()))?;
        f.sync_all().map_err(|e| KeyError::Io(e.to_string()))?;
        Ok::<_, KeyError>(digest)
    })();
    let digest = match result {
        Ok(d) => d,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let digest_text = format!("sha256:{}", hex(&digest));
    let now = clock.now_ms();
    let audit_seq = store.write(|t| {
        audit::append(
            t,
            now,
            &[Event {
                actor,
                event: "sign",
                user_id: Some(user_id),
                generation: Some(generation),
                digest: Some(&digest_text),
                outcome: "ok",
                detail: serde_json::json!({ "format": "cades-bes", "attached": attached }),
            }],
        )
    })?;
    std::fs::rename(&tmp, out).map_err(|e| KeyError::Io(format!("cannot write {}: {e}", out.display())))?;
    Ok(Signed {
        user_id: user_id.to_owned(),
        generation,
        digest: digest_text,
        out: out.display().to_string(),
        attached,
        audit_seq,
    })
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_lowercase_two_digits_a_byte() {
        assert_eq!(super::hex(&[0x00, 0x0f, 0xa5, 0xff, 0x10]), "000fa5ff10");
        assert_eq!(super::hex(&[]), "");
    }
}
