//! Which user a card certificate belongs to, and card login.
//!
//! HPKI: an operator maps a card certificate (issuer, serial) to a user with
//! `inkan hpki map`, or, with `--by-subject`, every card of that issuer whose
//! subject serialNumber (the holder's registry number) is the same, which
//! keeps working when the card is renewed. JPKI: a My Number card certificate
//! has no personal data, so it is usable only once linked to a user (`inkan
//! jpki link`, or E4 enrollment); when the card's certificate is renewed, the
//! operator imports the renewal list and the link follows the new certificate.
//!
//! [`CardAuth`] is card login: the presented chain validated against the
//! scheme's trust store ([`crate::pki::trust`]), then the mapping, then the
//! user's status.

use std::path::PathBuf;
use std::time::SystemTime;

use async_trait::async_trait;
use der::{Decode, Encode};
use serde::Serialize;
use x509_cert::Certificate;

use crate::audit::AuditStore;
use crate::audit::{self, Event};
use crate::clock::{rfc3339, unix_ms, Clock};
use crate::config::{CardTrustConfig, Config};
use crate::error::{Credential, Error, Forbidden, Missing, Result};
use crate::pki::profile::oids;
use crate::pki::{self, PkiError};
use crate::seam::{StoreError, Transaction, Transactions};
use crate::users::UserStore;

use super::Method;
use crate::pki::trust::{CardCertError, TrustStore};

/// An HPKI card certificate mapped to a user.
#[derive(Clone, Debug)]
pub struct HpkiMapping {
    /// DER of the issuer name.
    pub issuer: Vec<u8>,
    /// Serial number bytes.
    pub serial: Vec<u8>,
    /// The user.
    pub user_id: String,
    /// Subject DN (for people).
    pub subject: String,
    /// Unix ms.
    pub not_after: i64,
    /// Unix ms.
    pub created_at: i64,
}

/// Every HPKI card of an issuer with a subject serialNumber, mapped to a user.
#[derive(Clone, Debug)]
pub struct SubjectMapping {
    /// DER of the issuer name.
    pub issuer: Vec<u8>,
    /// The serialNumber attribute's value (the registry number).
    pub value: String,
    /// The user.
    pub user_id: String,
    /// Unix ms.
    pub created_at: i64,
}

/// A My Number card certificate linked to a user.
#[derive(Clone, Debug)]
pub struct JpkiLink {
    /// DER of the issuer name.
    pub issuer: Vec<u8>,
    /// Serial number bytes.
    pub serial: Vec<u8>,
    /// SHA-256 of the SubjectPublicKeyInfo (a renewed card may keep its key).
    pub spki_sha256: Vec<u8>,
    /// The user.
    pub user_id: String,
    /// Subject DN (random for JPKI).
    pub subject: String,
    /// Unix ms.
    pub not_after: i64,
    /// Unix ms.
    pub created_at: i64,
}

/// What card mappings and links need from storage.
#[async_trait]
pub trait CardStore: Send {
    /// The user an HPKI card (issuer, serial) is mapped to.
    async fn hpki_user_by_card(&mut self, issuer: &[u8], serial: &[u8]) -> Result<Option<String>, StoreError>;
    /// The user the HPKI cards of an issuer with this subject serialNumber are mapped to.
    async fn hpki_user_by_subject(&mut self, issuer: &[u8], value: &str) -> Result<Option<String>, StoreError>;
    /// Maps an HPKI card.
    async fn insert_hpki_mapping(&mut self, m: &HpkiMapping) -> Result<(), StoreError>;
    /// Removes a card mapping of this user; false if there was none.
    async fn delete_hpki_mapping(&mut self, issuer: &[u8], serial: &[u8], user_id: &str) -> Result<bool, StoreError>;
    /// Maps the cards of an issuer with a subject serialNumber.
    async fn insert_subject_mapping(&mut self, m: &SubjectMapping) -> Result<(), StoreError>;
    /// Removes a subject mapping of this user; false if there was none.
    async fn delete_subject_mapping(&mut self, issuer: &[u8], value: &str, user_id: &str) -> Result<bool, StoreError>;
    /// HPKI card mappings of a user (or all), oldest first.
    async fn hpki_mappings(&mut self, user_id: Option<&str>) -> Result<Vec<HpkiMapping>, StoreError>;
    /// Subject mappings of a user (or all), oldest first.
    async fn subject_mappings(&mut self, user_id: Option<&str>) -> Result<Vec<SubjectMapping>, StoreError>;
    /// The user a My Number card is linked to: by (issuer, serial), or by its public key.
    async fn jpki_user(
        &mut self,
        issuer: &[u8],
        serial: &[u8],
        spki_sha256: &[u8],
    ) -> Result<Option<String>, StoreError>;
    /// The user this exact certificate (issuer, serial) is linked to.
    async fn jpki_user_by_card(&mut self, issuer: &[u8], serial: &[u8]) -> Result<Option<String>, StoreError>;
    /// Links a My Number card.
    async fn insert_jpki_link(&mut self, link: &JpkiLink) -> Result<(), StoreError>;
    /// Removes a user's link to one card, or all of the user's links; returns how many.
    async fn delete_jpki_links(&mut self, user_id: &str, card: Option<(&[u8], &[u8])>) -> Result<usize, StoreError>;
    /// Removes the link of one card, whoever it belongs to.
    async fn delete_jpki_link(&mut self, issuer: &[u8], serial: &[u8]) -> Result<bool, StoreError>;
    /// My Number card links of a user (or all), oldest first.
    async fn jpki_links(&mut self, user_id: Option<&str>) -> Result<Vec<JpkiLink>, StoreError>;
}

/// What card operations need in one transaction.
pub trait CardsTx: CardStore + UserStore + AuditStore + Transaction {}
impl<T: CardStore + UserStore + AuditStore + Transaction + ?Sized> CardsTx for T {}

/// A card certificate as shown to operators.
#[derive(Clone, Debug, Serialize)]
pub struct CardView {
    /// The user.
    pub user_id: String,
    /// Issuer DN.
    pub issuer: String,
    /// Serial (hex).
    pub serial: String,
    /// Subject DN.
    pub subject: String,
    /// RFC 3339.
    pub not_after: String,
}

struct Parsed {
    issuer: Vec<u8>,
    serial: Vec<u8>,
    spki_sha256: Vec<u8>,
    subject: String,
    not_after: i64,
    cert: Certificate,
}

fn parse(cert_der: &[u8]) -> Result<Parsed, PkiError> {
    let cert = Certificate::from_der(cert_der)?;
    let tbs = cert.tbs_certificate();
    use sha2::Digest;
    Ok(Parsed {
        issuer: tbs.issuer().to_der()?,
        serial: tbs.serial_number().as_bytes().to_vec(),
        spki_sha256: sha2::Sha256::digest(tbs.subject_public_key_info().to_der()?).to_vec(),
        subject: tbs.subject().to_string(),
        not_after: unix_ms(tbs.validity().not_after.to_system_time()),
        cert,
    })
}

fn name_of(issuer_der: &[u8]) -> String {
    x509_cert::name::Name::from_der(issuer_der).map(|n| n.to_string()).unwrap_or_default()
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn view(p: &Parsed, user_id: &str) -> CardView {
    CardView {
        user_id: user_id.into(),
        issuer: p.cert.tbs_certificate().issuer().to_string(),
        serial: pki::serial_hex(&p.cert),
        subject: p.subject.clone(),
        not_after: rfc3339(p.not_after),
    }
}

/// Maps an HPKI card certificate to a user.
pub async fn hpki_map<T: CardsTx + ?Sized>(
    store: &dyn Transactions<T>,
    clock: &dyn Clock,
    actor: &str,
    user_id: &str,
    cert_der: &[u8],
) -> Result<CardView> {
    let p = parse(cert_der)?;
    let now = clock.now_ms();
    let mut tx = store.write().await?;
    crate::users::get_in(&mut *tx, user_id).await?;
    if let Some(other) = tx.hpki_user_by_card(&p.issuer, &p.serial).await? {
        return Err(Error::Conflict(format!(
            "this HPKI card is already mapped to {other}: `inkan hpki unmap` it first"
        )));
    }
    tx.insert_hpki_mapping(&HpkiMapping {
        issuer: p.issuer.clone(),
        serial: p.serial.clone(),
        user_id: user_id.to_owned(),
        subject: p.subject.clone(),
        not_after: p.not_after,
        created_at: now,
    })
    .await?;
    audit::append(
        &mut *tx,
        now,
        &[Event {
            user_id: Some(user_id.into()),
            outcome: "ok",
            detail: serde_json::json!({ "subject": p.subject, "serial": pki::serial_hex(&p.cert) }),
            ..Event::new(actor, crate::audit::Name::HpkiMap)
        }],
    )
    .await?;
    tx.commit().await?;
    Ok(view(&p, user_id))
}

/// Removes an HPKI card mapping of a user.
pub async fn hpki_unmap<T: CardsTx + ?Sized>(
    store: &dyn Transactions<T>,
    clock: &dyn Clock,
    actor: &str,
    user_id: &str,
    cert_der: &[u8],
) -> Result<()> {
    let p = parse(cert_der)?;
    let now = clock.now_ms();
    let mut tx = store.write().await?;
    if !tx.delete_hpki_mapping(&p.issuer, &p.serial, user_id).await? {
        return Err(Error::NotFound(Missing::Card, format!("this HPKI card is not mapped to {user_id}")));
    }
    audit::append(
        &mut *tx,
        now,
        &[Event {
            user_id: Some(user_id.into()),
            outcome: "ok",
            detail: serde_json::json!({ "serial": pki::serial_hex(&p.cert) }),
            ..Event::new(actor, crate::audit::Name::HpkiUnmap)
        }],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The subject's serialNumber attribute (2.5.4.5), if there is exactly one.
pub fn subject_serial_number(cert: &Certificate) -> Option<String> {
    let oid = const_oid::db::rfc4519::SERIAL_NUMBER;
    let mut values = cert.tbs_certificate().subject().iter().filter(|atv| atv.oid == oid).map(|atv| {
        der::asn1::PrintableStringRef::try_from(&atv.value)
            .map(|s| s.as_str().to_owned())
            .or_else(|_| der::asn1::Utf8StringRef::try_from(&atv.value).map(|s| s.as_str().to_owned()))
    });
    match (values.next(), values.next()) {
        (Some(Ok(v)), None) if !v.is_empty() => Some(v),
        _ => None,
    }
}

/// Maps every HPKI card of this certificate's issuer with the same subject
/// serialNumber to a user.
pub async fn hpki_map_subject<T: CardsTx + ?Sized>(
    store: &dyn Transactions<T>,
    clock: &dyn Clock,
    actor: &str,
    user_id: &str,
    cert_der: &[u8],
) -> Result<CardView> {
    let p = parse(cert_der)?;
    let value = subject_serial_number(&p.cert).ok_or_else(|| {
        Error::Invalid("the certificate has no (single) subject serialNumber: map it by card instead".into())
    })?;
    let now = clock.now_ms();
    let mut tx = store.write().await?;
    crate::users::get_in(&mut *tx, user_id).await?;
    if let Some(other) = tx.hpki_user_by_subject(&p.issuer, &value).await? {
        return Err(Error::Conflict(format!(
            "serialNumber={value} of this issuer is already mapped to {other}: `inkan hpki unmap --by-subject` it first"
        )));
    }
    tx.insert_subject_mapping(&SubjectMapping {
        issuer: p.issuer.clone(),
        value: value.clone(),
        user_id: user_id.to_owned(),
        created_at: now,
    })
    .await?;
    audit::append(
        &mut *tx,
        now,
        &[Event {
            user_id: Some(user_id.into()),
            outcome: "ok",
            detail: serde_json::json!({ "serialNumber": value }),
            ..Event::new(actor, crate::audit::Name::HpkiMapSubject)
        }],
    )
    .await?;
    tx.commit().await?;
    Ok(CardView {
        user_id: user_id.into(),
        issuer: p.cert.tbs_certificate().issuer().to_string(),
        serial: "*".into(),
        subject: format!("serialNumber={value}"),
        not_after: String::new(),
    })
}

/// Removes a subject mapping (the issuer and serialNumber of this certificate).
pub async fn hpki_unmap_subject<T: CardsTx + ?Sized>(
    store: &dyn Transactions<T>,
    clock: &dyn Clock,
    actor: &str,
    user_id: &str,
    cert_der: &[u8],
) -> Result<()> {
    let p = parse(cert_der)?;
    let value = subject_serial_number(&p.cert)
        .ok_or_else(|| Error::Invalid("the certificate has no (single) subject serialNumber".into()))?;
    let now = clock.now_ms();
    let mut tx = store.write().await?;
    if !tx.delete_subject_mapping(&p.issuer, &value, user_id).await? {
        return Err(Error::NotFound(
            Missing::Card,
            format!("serialNumber={value} of this issuer is not mapped to {user_id}"),
        ));
    }
    audit::append(
        &mut *tx,
        now,
        &[Event {
            user_id: Some(user_id.into()),
            outcome: "ok",
            detail: serde_json::json!({ "serialNumber": value }),
            ..Event::new(actor, crate::audit::Name::HpkiUnmapSubject)
        }],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Links a JPKI card certificate to a user. A card linked to someone else is
/// refused; linking a card twice to the same user changes nothing.
pub async fn jpki_link<T: CardsTx + ?Sized>(
    store: &dyn Transactions<T>,
    clock: &dyn Clock,
    actor: &str,
    user_id: &str,
    cert_der: &[u8],
) -> Result<CardView> {
    let p = parse(cert_der)?;
    let now = clock.now_ms();
    let mut tx = store.write().await?;
    crate::users::get_in(&mut *tx, user_id).await?;
    match tx.jpki_user(&p.issuer, &p.serial, &p.spki_sha256).await? {
        Some(other) if other != user_id => {
            return Err(Error::Forbidden(
                Forbidden::WrongUser,
                "this My Number card is already linked to another user".into(),
            ));
        }
        Some(_) => return Ok(view(&p, user_id)),
        None => {}
    }
    tx.insert_jpki_link(&JpkiLink {
        issuer: p.issuer.clone(),
        serial: p.serial.clone(),
        spki_sha256: p.spki_sha256.clone(),
        user_id: user_id.to_owned(),
        subject: p.subject.clone(),
        not_after: p.not_after,
        created_at: now,
    })
    .await?;
    audit::append(
        &mut *tx,
        now,
        &[Event {
            user_id: Some(user_id.into()),
            outcome: "ok",
            detail: serde_json::json!({ "serial": pki::serial_hex(&p.cert) }),
            ..Event::new(actor, crate::audit::Name::JpkiLink)
        }],
    )
    .await?;
    tx.commit().await?;
    Ok(view(&p, user_id))
}

/// Unlinks a user's JPKI card(s): the given certificate, or all of them.
pub async fn jpki_unlink<T: CardsTx + ?Sized>(
    store: &dyn Transactions<T>,
    clock: &dyn Clock,
    actor: &str,
    user_id: &str,
    cert_der: Option<&[u8]>,
) -> Result<usize> {
    let parsed = cert_der.map(parse).transpose()?;
    let now = clock.now_ms();
    let mut tx = store.write().await?;
    crate::users::get_in(&mut *tx, user_id).await?;
    let n = tx.delete_jpki_links(user_id, parsed.as_ref().map(|p| (&p.issuer[..], &p.serial[..]))).await?;
    if n == 0 {
        return Err(Error::NotFound(
            Missing::Card,
            format!("{user_id} has no such My Number card link: see `inkan jpki list {user_id}`"),
        ));
    }
    audit::append(
        &mut *tx,
        now,
        &[Event {
            user_id: Some(user_id.into()),
            outcome: "ok",
            detail: serde_json::json!({ "links": n }),
            ..Event::new(actor, crate::audit::Name::JpkiUnlink)
        }],
    )
    .await?;
    tx.commit().await?;
    Ok(n)
}

/// Card mappings (`hpki`, with subject mappings) or links (`jpki`) of a user, or all.
pub async fn list<T: CardsTx + ?Sized>(
    store: &dyn Transactions<T>,
    scheme: Method,
    user_id: Option<&str>,
) -> Result<Vec<CardView>> {
    let mut tx = store.read().await?;
    if let Some(u) = user_id {
        crate::users::get_in(&mut *tx, u).await?;
    }
    let mut rows = Vec::new();
    if scheme == Method::Jpki {
        for l in tx.jpki_links(user_id).await? {
            rows.push(CardView {
                user_id: l.user_id,
                issuer: name_of(&l.issuer),
                serial: hex_upper(&l.serial),
                subject: l.subject,
                not_after: rfc3339(l.not_after),
            });
        }
        return Ok(rows);
    }
    for m in tx.hpki_mappings(user_id).await? {
        rows.push(CardView {
            user_id: m.user_id,
            issuer: name_of(&m.issuer),
            serial: hex_upper(&m.serial),
            subject: m.subject,
            not_after: rfc3339(m.not_after),
        });
    }
    for m in tx.subject_mappings(user_id).await? {
        rows.push(CardView {
            user_id: m.user_id,
            issuer: name_of(&m.issuer),
            serial: "*".into(),
            subject: format!("serialNumber={}", m.value),
            not_after: String::new(),
        });
    }
    Ok(rows)
}

/// One line of a renewal list.
#[derive(Clone, Debug, Serialize)]
pub struct RenewalOutcome {
    /// 1-based line number.
    pub line: usize,
    /// `moved`, `unknown` (no link for the old certificate), or an error.
    pub outcome: String,
    /// The user, if found.
    pub user_id: Option<String>,
}

/// Imports a JPKI renewal list: CSV lines `old_issuer_dn_hex_der,old_serial_hex,new_certificate_base64_der`
/// (a header line starting with `old_` is skipped). Each link of an old
/// certificate follows its new certificate, one transaction per line; a bad
/// line is reported and the others go on. `progress` is called per line.
pub async fn import_renewals<T: CardsTx + ?Sized>(
    store: &dyn Transactions<T>,
    clock: &dyn Clock,
    actor: &str,
    csv: &str,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<RenewalOutcome>> {
    let lines: Vec<&str> = csv.lines().filter(|l| !l.trim().is_empty()).collect();
    let total = lines.len();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        progress(i + 1, total);
        if i == 0 && line.starts_with("old_") {
            continue;
        }
        let outcome = match renew_line(store, clock, actor, line).await {
            Ok(Some(user)) => RenewalOutcome { line: i + 1, outcome: "moved".into(), user_id: Some(user) },
            Ok(None) => RenewalOutcome {
                line: i + 1,
                outcome: "unknown: no link for the old certificate".into(),
                user_id: None,
            },
            Err(e) => RenewalOutcome { line: i + 1, outcome: format!("error: {e}"), user_id: None },
        };
        out.push(outcome);
    }
    Ok(out)
}

async fn renew_line<T: CardsTx + ?Sized>(
    store: &dyn Transactions<T>,
    clock: &dyn Clock,
    actor: &str,
    line: &str,
) -> Result<Option<String>> {
    use base64ct::Encoding;
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    let [issuer_hex, serial_hex, new_b64] = fields[..] else {
        return Err(Error::Invalid("expected 3 comma-separated fields".into()));
    };
    let issuer = from_hex(issuer_hex).ok_or_else(|| Error::Invalid("old issuer is not hex".into()))?;
    let serial = from_hex(serial_hex).ok_or_else(|| Error::Invalid("old serial is not hex".into()))?;
    let new_der =
        base64ct::Base64::decode_vec(new_b64).map_err(|_| Error::Invalid("new certificate is not base64".into()))?;
    let p = parse(&new_der)?;
    let now = clock.now_ms();
    let mut tx = store.write().await?;
    let Some(user) = tx.jpki_user_by_card(&issuer, &serial).await? else { return Ok(None) };
    if tx.jpki_user_by_card(&p.issuer, &p.serial).await?.is_none() {
        tx.insert_jpki_link(&JpkiLink {
            issuer: p.issuer.clone(),
            serial: p.serial.clone(),
            spki_sha256: p.spki_sha256.clone(),
            user_id: user.clone(),
            subject: p.subject.clone(),
            not_after: p.not_after,
            created_at: now,
        })
        .await?;
    }
    tx.delete_jpki_link(&issuer, &serial).await?;
    audit::append(
        &mut *tx,
        now,
        &[Event {
            user_id: Some(user.as_str().into()),
            outcome: "ok",
            detail: serde_json::json!({ "old_serial": serial_hex, "new_serial": pki::serial_hex(&p.cert) }),
            ..Event::new(actor, crate::audit::Name::JpkiRenew)
        }],
    )
    .await?;
    tx.commit().await?;
    Ok(Some(user))
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

/// Card login: the trust stores of both schemes.
#[derive(Debug)]
pub struct CardAuth {
    hpki: TrustStore,
    jpki: TrustStore,
}

fn read_all(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for p in paths {
        out.extend(pki::read_certificates(p)?);
    }
    Ok(out)
}

fn read_crls(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for p in paths {
        let bytes = std::fs::read(p).map_err(|e| Error::Invalid(format!("cannot read CRL {}: {e}", p.display())))?;
        if bytes.starts_with(b"-----") {
            out.push(der::pem::decode_vec(&bytes).map_err(|e| Error::Invalid(format!("CRL {}: {e}", p.display())))?.1);
        } else {
            out.push(bytes);
        }
    }
    Ok(out)
}

fn trust_store(scheme: &'static str, c: &CardTrustConfig) -> Result<TrustStore> {
    let policies = if scheme == "HPKI" { vec![oids::HPKI_AUTH_POLICY] } else { vec![oids::JPKI_AUTH_POLICY] };
    TrustStore::new(
        scheme,
        read_all(&c.anchors)?,
        read_all(&c.intermediates)?,
        read_crls(&c.crls)?,
        policies,
        c.danger_allow_stale_crl,
    )
    .map_err(|e| Error::Invalid(format!("[{}] trust store: {e}", scheme.to_ascii_lowercase())))
}

impl CardAuth {
    /// The trust stores of `[hpki]` and `[jpki]`.
    pub fn from_config(config: &Config) -> Result<CardAuth> {
        Ok(CardAuth { hpki: trust_store("HPKI", &config.hpki)?, jpki: trust_store("JPKI", &config.jpki)? })
    }

    /// The subject names of every configured CA (hints for the TLS handshake's
    /// certificate request), DER.
    pub fn ca_names(config: &Config) -> Result<Vec<Vec<u8>>> {
        let mut names = Vec::new();
        for c in [&config.hpki, &config.jpki] {
            for der in read_all(&c.intermediates)?.iter().chain(read_all(&c.anchors)?.iter()) {
                if let Ok(cert) = Certificate::from_der(der) {
                    if let Ok(name) = cert.tbs_certificate().subject().to_der() {
                        names.push(name);
                    }
                }
            }
        }
        Ok(names)
    }

    /// Validates a presented chain (leaf first, DER) against the scheme's trust store.
    pub fn validate(
        &self,
        scheme: Method,
        chain: &[Vec<u8>],
        now: SystemTime,
    ) -> Result<crate::pki::trust::ValidatedCert> {
        let store = if scheme == Method::Jpki { &self.jpki } else { &self.hpki };
        store.validate(chain, now).map_err(|e| {
            if e != CardCertError::Missing {
                tracing::info!("card login refused: {e}");
            }
            let message = e.to_string();
            Error::Unauthenticated(Credential::Card(e), message)
        })
    }

    /// The enabled user a card certificate chain belongs to: validated, then
    /// looked up by the scheme's mapping.
    pub async fn identify<T: CardsTx + ?Sized>(
        &self,
        store: &dyn Transactions<T>,
        scheme: Method,
        chain: &[Vec<u8>],
        now: SystemTime,
    ) -> Result<String> {
        let v = self.validate(scheme, chain, now)?;
        let mut tx = store.read().await?;
        let user = if scheme == Method::Jpki {
            tx.jpki_user(&v.issuer, &v.serial, &v.spki_sha256).await?
        } else {
            match tx.hpki_user_by_card(&v.issuer, &v.serial).await? {
                Some(u) => Some(u),
                None => match subject_serial_number(&v.certificate) {
                    Some(value) => tx.hpki_user_by_subject(&v.issuer, &value).await?,
                    None => None,
                },
            }
        };
        let Some(user_id) = user else {
            return Err(Error::NotFound(
                Missing::Card,
                format!("this {} card is not mapped to a user", v_scheme(scheme)),
            ));
        };
        let user = crate::users::get_in(&mut *tx, &user_id).await?;
        if !user.is_active() {
            return Err(crate::users::disabled(&user_id));
        }
        Ok(user_id)
    }
}

fn v_scheme(m: Method) -> &'static str {
    if m == Method::Jpki {
        "My Number"
    } else {
        "HPKI"
    }
}
