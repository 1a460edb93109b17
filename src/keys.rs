//! The second-key lifecycle: generate in the token, CSR, import the certificate
//! (activating the key and retiring the previous one), rotate, retire.
//! Signing is [`crate::signing`]'s.
//!
//! Crash safety: a key is generated first and registered in the store in one
//! transaction afterwards. A wrapped key (the default) leaves nothing in the
//! token, so a process killed in between leaves nothing at all. A key pair
//! kept as token objects is left unregistered in the token; the next
//! generation for that user removes such orphans (they carry the user's label
//! and an id the store does not know).

use std::sync::Arc;

use der::{Decode, Encode};
use inkan_keystore::{DigestAlgorithm, KeyAlgorithm, KeyRef, Keystore};
use serde::Serialize;
use x509_cert::Certificate;

use crate::audit::{self, Event};
use crate::clock::{rfc3339, Clock};
use crate::config::Config;
use crate::error::{Error, Missing, Result};
use crate::pki::profile::Qualification;
use crate::pki::{self, PkiError, StringKind};
use crate::seam::Transactions;
use crate::users::{self, KeyRecord, KeyState, User, UsersTx};

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
    /// The key's short name in the token: a token object's `CKA_ID` in hex, or
    /// the start of a wrapped key's SHA-256.
    pub token_id: String,
    /// `wrapped` (kept outside the token under its key-encryption key) or
    /// `object` (a key pair in the token).
    pub storage: String,
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
            algorithm: k.algorithm.as_str().to_owned(),
            state: k.state.as_str().to_owned(),
            token_id: key_ref(k).hex(),
            storage: key_ref(k).storage().as_str().to_owned(),
            certificate_serial: cert.as_ref().map(pki::serial_hex),
            certificate_subject: cert.as_ref().map(|c| c.tbs_certificate().subject().to_string()),
            certificate_not_after: cert.as_ref().map(|c| c.tbs_certificate().validity().not_after.to_string()),
            created_at: rfc3339(k.created_at),
            activated_at: k.activated_at.map(rfc3339),
            retired_at: k.retired_at.map(rfc3339),
        }
    }
}

/// What a user's key is bound to in the keystore: its owner and generation.
/// A wrapped key's MAC covers it, so a key copied into another user's row, or
/// another generation's, is refused.
pub fn binding(user_id: &str, generation: i64) -> Vec<u8> {
    format!("inkan-user-key\0{user_id}\0{generation}").into_bytes()
}

/// The keystore's reference to a stored key, with its binding.
pub fn key_ref(record: &KeyRecord) -> KeyRef {
    KeyRef::from_stored(record.token_id.as_slice(), &binding(&record.user_id, record.generation), &record.public_key)
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

fn state_error(message: String) -> Error {
    Error::Conflict(message)
}

/// Every enabled user's key status (for the bulk key commands).
pub async fn status<T: UsersTx + ?Sized>(store: &dyn Transactions<T>) -> Result<Vec<users::KeyStatus>> {
    Ok(store.read().await?.key_status().await?)
}

/// Generates a key for `user_id` (in the token, or wrapped), makes its CSR
/// and registers it as pending: [`generate_many`] for one user.
pub async fn generate<T: UsersTx + ?Sized>(
    store: &dyn Transactions<T>,
    keystore: &Arc<Keystore>,
    clock: &dyn Clock,
    actor: &str,
    user_id: &str,
    alg: KeyAlgorithm,
    purpose: Purpose,
) -> Result<Generated> {
    let users = [user_id.to_owned()];
    let mut made = generate_many(store, keystore, clock, actor, &users, alg, purpose, 1).await?;
    made.pop().map(|(_, outcome)| outcome).unwrap_or_else(|| Err(Error::Internal("no outcome".into())))
}

/// Generates keys for many users at once (the bulk commands): their records
/// are read in one transaction, the token's work runs on `workers` blocking
/// threads, and the keys are recorded in one transaction with their audit
/// rows (a user whose keys changed meanwhile is refused, the others go on).
/// A kill before that commit records none of them (wrapped keys leave
/// nothing behind; key pairs in the token are orphans the next generation
/// for that user removes). Returns each user's outcome, in order.
#[allow(clippy::too_many_arguments)]
pub async fn generate_many<T: UsersTx + ?Sized>(
    store: &dyn Transactions<T>,
    keystore: &Arc<Keystore>,
    clock: &dyn Clock,
    actor: &str,
    user_ids: &[String],
    alg: KeyAlgorithm,
    purpose: Purpose,
    workers: usize,
) -> Result<Vec<(String, Result<Generated>)>> {
    struct Prepared {
        at: usize,
        user: User,
        generation: i64,
        known: Vec<Vec<u8>>,
    }
    let mut outcomes: Vec<Option<Result<Generated>>> = (0..user_ids.len()).map(|_| None).collect();
    let mut prepared = Vec::new();
    {
        let mut tx = store.read().await?;
        for (at, user_id) in user_ids.iter().enumerate() {
            let checked = async {
                let user = users::get_in(&mut *tx, user_id).await?;
                if !user.is_active() {
                    return Err(users::disabled(user_id));
                }
                let keys = tx.keys(Some(user_id)).await?;
                check_new_key(&keys, user_id, purpose)?;
                let generation = keys.iter().map(|k| k.generation).max().unwrap_or(0) + 1;
                Ok(Prepared { at, user, generation, known: keys.into_iter().map(|k| k.token_id).collect() })
            }
            .await;
            match checked {
                Ok(p) => prepared.push(p),
                Err(e) => outcomes[at] = Some(Err(e)),
            }
        }
    }
    // The token: each worker takes every `workers`-th user.
    let workers = workers.max(1);
    let scheme = alg.default_scheme(DigestAlgorithm::Sha256);
    /// One user's token work: position, user, generation, known ids, CSR subject.
    type Work = (usize, String, i64, Vec<Vec<u8>>, x509_cert::name::Name);
    let mut lanes: Vec<Vec<Work>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, p) in prepared.iter().enumerate() {
        lanes[i % workers].push((p.at, p.user.id.clone(), p.generation, p.known.clone(), subject(&p.user)?));
    }
    type Made = (usize, Result<(Vec<KeyRef>, inkan_keystore::GeneratedKey, Vec<u8>)>);
    let tasks: Vec<_> = lanes
        .into_iter()
        .map(|lane| {
            let ks = Arc::clone(keystore);
            tokio::task::spawn_blocking(move || -> Vec<Made> {
                lane.into_iter()
                    .map(|(at, user_id, generation, known, subject)| {
                        let made = (|| {
                            let label = token_label(&user_id);
                            let orphans = orphans(&ks, &label, &known)?;
                            let (generated, csr) = ks.generate_key_with_csr(
                                alg,
                                &label,
                                &binding(&user_id, generation),
                                &subject,
                                scheme,
                            )?;
                            Ok((orphans, generated, csr))
                        })();
                        (at, made)
                    })
                    .collect()
            })
        })
        .collect();
    let mut made = Vec::new();
    for task in tasks {
        made.extend(task.await.map_err(Error::internal)?);
    }
    made.sort_by_key(|(at, _)| *at);
    crate::crash::point("after-token-keygen");

    // The store: one transaction for all of them.
    let now = clock.now_ms();
    let mut tx = store.write().await?;
    let mut recorded: Vec<(usize, Vec<KeyRef>, Generated)> = Vec::new();
    let mut unrecorded: Vec<KeyRef> = Vec::new();
    let mut events_of: Vec<(String, i64, serde_json::Value)> = Vec::new();
    for (at, result) in made {
        let (orphans, generated, csr) = match result {
            Ok(m) => m,
            Err(e) => {
                outcomes[at] = Some(Err(e));
                continue;
            }
        };
        let user_id = &user_ids[at];
        let Some(generation) = prepared.iter().find(|p| p.at == at).map(|p| p.generation) else { continue };
        let allowed = async {
            check_new_key(&tx.keys(Some(user_id)).await?, user_id, purpose)?;
            if tx.next_generation(user_id).await? != generation {
                return Err(state_error(format!(
                    "another key was made for user {user_id} meanwhile (generation {generation} is taken): see \
                     `inkan key list {user_id}`"
                )));
            }
            Ok(())
        }
        .await;
        if let Err(e) = allowed {
            unrecorded.push(generated.key.clone());
            outcomes[at] = Some(Err(e));
            continue;
        }
        let record = KeyRecord {
            user_id: user_id.clone(),
            generation,
            algorithm: alg,
            token_id: generated.key.stored().to_vec(),
            public_key: generated.public_key_der.clone(),
            csr: csr.clone(),
            certificate: None,
            state: KeyState::Pending,
            created_at: now,
            activated_at: None,
            retired_at: None,
        };
        tx.insert_key(&record).await?;
        events_of.push((
            user_id.clone(),
            generation,
            serde_json::json!({
                "algorithm": alg.as_str(),
                "token_id": generated.key.hex(),
                "storage": generated.key.storage().as_str(),
                "orphans_removed": orphans.len(),
            }),
        ));
        let view = Generated {
            key: KeyView::from(&record),
            csr_pem: pki::to_pem("CERTIFICATE REQUEST", &csr),
            orphans_removed: orphans.len(),
        };
        recorded.push((at, orphans, view));
    }
    let events: Vec<Event<'_>> = events_of
        .iter()
        .map(|(user_id, generation, detail)| Event {
            user_id: Some(user_id.into()),
            generation: Some(*generation),
            outcome: "ok",
            detail: detail.clone(),
            ..Event::new(
                actor,
                if purpose == Purpose::Rotation {
                    crate::audit::Name::KeyRotate
                } else {
                    crate::audit::Name::KeyGenerate
                },
            )
        })
        .collect();
    if !events.is_empty() {
        audit::append(&mut *tx, now, &events).await?;
    }
    // A failed commit may still have committed: the recorded keys stay (a
    // later generation removes key pairs that are not recorded).
    let committed = tx.commit().await;
    let ks = Arc::clone(keystore);
    let orphans: Vec<KeyRef> = match committed {
        Ok(()) => recorded.iter().flat_map(|(_, o, _)| o.iter().cloned()).collect(),
        Err(_) => Vec::new(),
    };
    tokio::task::spawn_blocking(move || {
        for key in unrecorded.iter().chain(&orphans) {
            if let Err(e) = ks.destroy(key) {
                tracing::warn!("cannot remove the unrecorded or orphaned key pair {}: {e}", key.hex());
            }
        }
    })
    .await
    .map_err(Error::internal)?;
    committed?;
    for (at, _, generated) in recorded {
        outcomes[at] = Some(Ok(generated));
    }
    Ok(user_ids
        .iter()
        .cloned()
        .zip(outcomes)
        .map(|(u, o)| (u, o.unwrap_or_else(|| Err(Error::Internal("no outcome".into())))))
        .collect())
}

/// Key pairs in the token with the user's label that the store does not
/// know. Only keys kept as token objects leave such orphans: with wrapped
/// keys (which leave nothing in the token) the search is skipped, because
/// `C_FindObjects` also walks every unwrapped key in the cache.
fn orphans(keystore: &Keystore, label: &str, known: &[Vec<u8>]) -> Result<Vec<KeyRef>> {
    if keystore.key_storage() == inkan_keystore::KeyStorage::Wrapped {
        return Ok(Vec::new());
    }
    Ok(keystore.keys_labelled(label)?.into_iter().filter(|k| !known.iter().any(|s| s == k.stored())).collect())
}

/// Whether the user's keys allow a new one for `purpose`.
fn check_new_key(keys: &[KeyRecord], user_id: &str, purpose: Purpose) -> Result<()> {
    if let Some(p) = keys.iter().find(|k| k.state == KeyState::Pending) {
        return Err(state_error(format!(
            "user {user_id} already has a pending key (generation {g}) waiting for its certificate: \
             import it with `inkan key import-cert {user_id} <CERT.pem>`, or drop it with \
             `inkan key retire {user_id} --generation {g}`",
            g = p.generation
        )));
    }
    let active = keys.iter().find(|k| k.state == KeyState::Active);
    match (purpose, active) {
        (Purpose::First, Some(a)) => Err(state_error(format!(
            "user {user_id} has an active key (generation {}): for a renewal use `inkan key rotate {user_id}`",
            a.generation
        ))),
        (Purpose::Rotation, None) => {
            Err(state_error(format!("user {user_id} has no active key to rotate: use `inkan key generate {user_id}`")))
        }
        _ => Ok(()),
    }
}

/// A user's keys (or everyone's), oldest generation first.
pub async fn list<T: UsersTx + ?Sized>(store: &dyn Transactions<T>, user_id: Option<&str>) -> Result<Vec<KeyRecord>> {
    let mut tx = store.read().await?;
    if let Some(u) = user_id {
        users::get_in(&mut *tx, u).await?;
    }
    Ok(tx.keys(user_id).await?)
}

/// One generation of a user's keys: the given one, or the one in `fallback` state.
pub async fn find<T: UsersTx + ?Sized>(
    store: &dyn Transactions<T>,
    user_id: &str,
    generation: Option<i64>,
    fallback: KeyState,
) -> Result<KeyRecord> {
    let keys = list(store, Some(user_id)).await?;
    match generation {
        Some(g) => keys.into_iter().find(|k| k.generation == g),
        None => keys.into_iter().find(|k| k.state == fallback),
    }
    .ok_or_else(|| {
        Error::NotFound(Missing::Key, format!("user {user_id} has no such key: see `inkan key list {user_id}`"))
    })
}

/// The CSR of a pending (or any) key generation, PEM.
pub async fn csr<T: UsersTx + ?Sized>(
    store: &dyn Transactions<T>,
    user_id: &str,
    generation: Option<i64>,
) -> Result<String> {
    let key = find(store, user_id, generation, KeyState::Pending).await?;
    Ok(pki::to_pem("CERTIFICATE REQUEST", &key.csr))
}

fn refused(message: String) -> Error {
    Error::Invalid(format!("certificate refused: {message}"))
}

/// What to do with a certificate that does not fit the HPKI signing profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Nonconforming {
    /// Refuse it, saying why (the default).
    #[default]
    Refuse,
    /// Import it anyway, with the reasons as warnings (and in the audit row):
    /// `--danger-accept-nonconforming`, for a CA under test.
    DangerAccept,
}

/// A certificate imported.
#[derive(Clone, Debug, Serialize)]
pub struct Imported {
    /// The key it made active.
    #[serde(flatten)]
    pub key: KeyView,
    /// How it departs from the HPKI signing profile (only with
    /// [`Nonconforming::DangerAccept`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Imports the certificate issued for a pending key: checks it was issued by the
/// configured HPKI signing CA, is valid now, certifies the pending key and
/// fits the HPKI signing profile for the user's qualification
/// ([`pki::profile::signing_profile_problems`]); then activates the key and
/// retires the previously active one, in one transaction.
pub async fn import_certificate<T: UsersTx + ?Sized>(
    store: &dyn Transactions<T>,
    config: &Config,
    clock: &dyn Clock,
    actor: &str,
    user_id: &str,
    cert_der: &[u8],
    nonconforming: Nonconforming,
) -> Result<Imported> {
    let cert = Certificate::from_der(cert_der).map_err(|e| refused(PkiError::from(e).0))?;
    let ca = pki::read_certificate(&config.pki.signing_ca)
        .map_err(|e| Error::Invalid(format!("the configured signing CA ([pki] signing_ca): {e}")))?;
    pki::check_issued_by(&cert, &ca).map_err(|e| refused(e.0))?;
    pki::check_validity(&cert, clock.now()).map_err(|e| refused(e.0))?;
    let spki = cert.tbs_certificate().subject_public_key_info().to_der().map_err(|e| refused(e.to_string()))?;
    let cert_der = cert.to_der().map_err(|e| refused(e.to_string()))?;
    let now = clock.now_ms();
    let serial = pki::serial_hex(&cert);

    let mut tx = store.write().await?;
    let user = users::get_in(&mut *tx, user_id).await?;
    if !user.is_active() {
        return Err(users::disabled(user_id));
    }
    let qualification: Qualification = user.qualification.parse()?;
    let warnings = pki::profile::signing_profile_problems(&cert, qualification);
    if !warnings.is_empty() && nonconforming == Nonconforming::Refuse {
        return Err(refused(format!(
            "it is not an HPKI signing certificate for a {}: {} (have the CA issue it under the HPKI signing \
             profile; for a CA under test only, --danger-accept-nonconforming imports it with these as warnings)",
            qualification.as_str(),
            warnings.join("; ")
        )));
    }
    let keys = tx.keys(Some(user_id)).await?;
    let Some(pending) = keys.iter().find(|k| k.public_key == spki && k.state == KeyState::Pending) else {
        let other = keys.iter().find(|k| k.public_key == spki);
        return Err(refused(match other {
            Some(k) => format!(
                "the certificate is for generation {} of {user_id}, which is {}, not pending",
                k.generation, k.state
            ),
            None => format!(
                "the certificate's public key matches no pending key of {user_id}: \
                 issue it from the CSR of `inkan key generate` (see `inkan key list {user_id}`)"
            ),
        }));
    };
    let generation = pending.generation;
    let retired = keys.iter().find(|k| k.state == KeyState::Active).map(|k| k.generation);
    if let Some(old) = retired {
        tx.retire_key(user_id, old, now).await?;
    }
    tx.activate_key(user_id, generation, &cert_der, now).await?;
    let mut events = vec![Event {
        user_id: Some(user_id.into()),
        generation: Some(generation),
        outcome: "ok",
        detail: if warnings.is_empty() {
            serde_json::json!({ "certificate_serial": serial, "subject": cert.tbs_certificate().subject().to_string() })
        } else {
            serde_json::json!({
                "certificate_serial": serial,
                "subject": cert.tbs_certificate().subject().to_string(),
                "nonconforming": warnings,
            })
        },
        ..Event::new(actor, crate::audit::Name::KeyActivate)
    }];
    if let Some(old) = retired {
        events.push(Event {
            user_id: Some(user_id.into()),
            generation: Some(old),
            outcome: "ok",
            detail: serde_json::json!({ "reason": "superseded", "by_generation": generation }),
            ..Event::new(actor, crate::audit::Name::KeyRetire)
        });
    }
    audit::append(&mut *tx, now, &events).await?;
    let record = tx.keys(Some(user_id)).await?.into_iter().find(|k| k.generation == generation);
    tx.commit().await?;
    let key = record.as_ref().map(KeyView::from).ok_or_else(|| Error::Internal("the key vanished".into()))?;
    Ok(Imported { key, warnings })
}

/// Retires one generation (pending or active).
pub async fn retire<T: UsersTx + ?Sized>(
    store: &dyn Transactions<T>,
    clock: &dyn Clock,
    actor: &str,
    user_id: &str,
    generation: i64,
) -> Result<KeyView> {
    let now = clock.now_ms();
    let mut tx = store.write().await?;
    users::get_in(&mut *tx, user_id).await?;
    let key = tx.keys(Some(user_id)).await?.into_iter().find(|k| k.generation == generation).ok_or_else(|| {
        Error::NotFound(
            Missing::Key,
            format!("user {user_id} has no key generation {generation}: see `inkan key list {user_id}`"),
        )
    })?;
    if key.state == KeyState::Retired {
        return Err(state_error(format!("generation {generation} of {user_id} is already retired")));
    }
    tx.retire_key(user_id, generation, now).await?;
    audit::append(
        &mut *tx,
        now,
        &[Event {
            user_id: Some(user_id.into()),
            generation: Some(generation),
            outcome: "ok",
            detail: serde_json::json!({ "reason": "operator", "was": key.state.as_str() }),
            ..Event::new(actor, crate::audit::Name::KeyRetire)
        }],
    )
    .await?;
    let record = tx.keys(Some(user_id)).await?.into_iter().find(|k| k.generation == generation);
    tx.commit().await?;
    record.as_ref().map(KeyView::from).ok_or_else(|| Error::Internal("the key vanished".into()))
}

/// Reads the configured chain (signing CA first), DER.
pub fn chain(config: &Config) -> Result<Vec<Vec<u8>>, PkiError> {
    let mut chain = pki::read_certificates(&config.pki.signing_ca)?;
    for p in &config.pki.chain {
        chain.extend(pki::read_certificates(p)?);
    }
    Ok(chain)
}
