//! Which user a card certificate belongs to.
//!
//! HPKI: an operator maps a card certificate (issuer, serial) to a user with
//! `inkan hpki map`, or, with `--by-subject`, every card of that issuer whose
//! subject serialNumber (the holder's registry number) is the same, which
//! keeps working when the card is renewed. JPKI: a My Number card certificate has no personal data,
//! so it is usable only once linked to a user (`inkan jpki link`, or E4
//! enrollment); when the card's certificate is renewed, the operator imports
//! the renewal list and the link follows the new certificate.

use der::{Decode, Encode};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use x509_cert::Certificate;

use crate::audit::{self, Event};
use crate::clock::{rfc3339, unix_ms, Clock};
use crate::pki::{self, PkiError};
use crate::store::{Store, StoreError};
use crate::users::{self, UserError};

/// A mapping problem, with what to do.
#[derive(Debug, thiserror::Error)]
pub enum CardError {
    /// See [`UserError`].
    #[error(transparent)]
    User(#[from] UserError),
    /// The certificate cannot be used.
    #[error("{0}")]
    Certificate(#[from] PkiError),
    /// A conflict or missing link.
    #[error("{0}")]
    State(String),
    /// Database.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for CardError {
    fn from(e: rusqlite::Error) -> Self {
        CardError::Store(e.into())
    }
}

/// A card certificate as stored.
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

fn one_cert(path: &std::path::Path) -> Result<Vec<u8>, CardError> {
    Ok(pki::read_certificates(path)?.into_iter().next().ok_or_else(|| PkiError("no certificate in the file".into()))?)
}

/// Maps an HPKI card certificate to a user.
pub fn hpki_map(
    store: &mut Store,
    clock: &dyn Clock,
    actor: &str,
    user_id: &str,
    cert_der: &[u8],
) -> Result<CardView, CardError> {
    users::get(store, user_id)?;
    let p = parse(cert_der)?;
    let now = clock.now_ms();
    store.write(|t| {
        let existing: Option<String> =
            t.query_row("SELECT user_id FROM hpki_mappings WHERE issuer = ?1 AND serial = ?2", params![p.issuer, p.serial], |r| r.get(0)).optional()?;
        if let Some(other) = existing {
            return Ok(Err(CardError::State(format!("this HPKI card is already mapped to {other}: `inkan hpki unmap` it first"))));
        }
        t.execute(
            "INSERT INTO hpki_mappings (issuer, serial, user_id, subject, not_after, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![p.issuer, p.serial, user_id, p.subject, p.not_after, now],
        )?;
        audit::append(t, now, &[Event { actor, event: "hpki.map", user_id: Some(user_id), outcome: "ok", detail: serde_json::json!({ "subject": p.subject, "serial": pki::serial_hex(&p.cert) }), ..Default::default() }])?;
        Ok(Ok(()))
    })??;
    Ok(CardView {
        user_id: user_id.into(),
        issuer: p.cert.tbs_certificate().issuer().to_string(),
        serial: pki::serial_hex(&p.cert),
        subject: p.subject,
        not_after: rfc3339(p.not_after),
    })
}

/// Maps an HPKI card from a certificate file.
pub fn hpki_map_file(
    store: &mut Store,
    clock: &dyn Clock,
    actor: &str,
    user_id: &str,
    path: &std::path::Path,
) -> Result<CardView, CardError> {
    let der = one_cert(path)?;
    hpki_map(store, clock, actor, user_id, &der)
}

/// Removes an HPKI mapping.
pub fn hpki_unmap(
    store: &mut Store,
    clock: &dyn Clock,
    actor: &str,
    user_id: &str,
    path: &std::path::Path,
) -> Result<(), CardError> {
    let p = parse(&one_cert(path)?)?;
    let now = clock.now_ms();
    let n = store.write(|t| {
        let n = t.execute(
            "DELETE FROM hpki_mappings WHERE issuer = ?1 AND serial = ?2 AND user_id = ?3",
            params![p.issuer, p.serial, user_id],
        )?;
        if n > 0 {
            audit::append(
                t,
                now,
                &[Event {
                    actor,
                    event: "hpki.unmap",
                    user_id: Some(user_id),
                    outcome: "ok",
                    detail: serde_json::json!({ "serial": pki::serial_hex(&p.cert) }),
                    ..Default::default()
                }],
            )?;
        }
        Ok(n)
    })?;
    if n == 0 {
        return Err(CardError::State(format!("this HPKI card is not mapped to {user_id}")));
    }
    Ok(())
}

/// The user an HPKI card certificate is mapped to: by (issuer, serial), else
/// by (issuer, subject serialNumber).
pub fn hpki_user(
    conn: &Connection,
    issuer: &[u8],
    serial: &[u8],
    subject_serial: Option<&str>,
) -> Result<Option<String>, StoreError> {
    let by_card = conn
        .query_row(
            "SELECT user_id FROM hpki_mappings WHERE issuer = ?1 AND serial = ?2",
            params![issuer, serial],
            |r| r.get(0),
        )
        .optional()?;
    if by_card.is_some() {
        return Ok(by_card);
    }
    let Some(value) = subject_serial else {
        return Ok(None);
    };
    Ok(conn
        .query_row(
            "SELECT user_id FROM hpki_subject_mappings WHERE issuer = ?1 AND attribute = 'serialNumber' AND value = ?2",
            params![issuer, value],
            |r| r.get(0),
        )
        .optional()?)
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
pub fn hpki_map_subject(
    store: &mut Store,
    clock: &dyn Clock,
    actor: &str,
    user_id: &str,
    cert_der: &[u8],
) -> Result<CardView, CardError> {
    users::get(store, user_id)?;
    let p = parse(cert_der)?;
    let value = subject_serial_number(&p.cert).ok_or_else(|| {
        CardError::State("the certificate has no (single) subject serialNumber: map it by card instead".into())
    })?;
    let now = clock.now_ms();
    store.write(|t| {
        let existing: Option<String> = t
            .query_row(
                "SELECT user_id FROM hpki_subject_mappings WHERE issuer = ?1 AND attribute = 'serialNumber' AND value = ?2",
                params![p.issuer, value],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(other) = existing {
            return Ok(Err(CardError::State(format!(
                "serialNumber={value} of this issuer is already mapped to {other}: `inkan hpki unmap --by-subject` it first"
            ))));
        }
        t.execute(
            "INSERT INTO hpki_subject_mappings (issuer, attribute, value, user_id, created_at) VALUES (?1, 'serialNumber', ?2, ?3, ?4)",
            params![p.issuer, value, user_id, now],
        )?;
        audit::append(
            t,
            now,
            &[Event {
                actor,
                event: "hpki.map_subject",
                user_id: Some(user_id),
                outcome: "ok",
                detail: serde_json::json!({ "serialNumber": value }),
                ..Default::default()
            }],
        )?;
        Ok(Ok(()))
    })??;
    Ok(CardView {
        user_id: user_id.into(),
        issuer: p.cert.tbs_certificate().issuer().to_string(),
        serial: "*".into(),
        subject: format!("serialNumber={value}"),
        not_after: String::new(),
    })
}

/// Removes a subject mapping (the issuer and serialNumber of this certificate).
pub fn hpki_unmap_subject(
    store: &mut Store,
    clock: &dyn Clock,
    actor: &str,
    user_id: &str,
    cert_der: &[u8],
) -> Result<(), CardError> {
    let p = parse(cert_der)?;
    let value = subject_serial_number(&p.cert)
        .ok_or_else(|| CardError::State("the certificate has no (single) subject serialNumber".into()))?;
    let now = clock.now_ms();
    let n = store.write(|t| {
        let n = t.execute(
            "DELETE FROM hpki_subject_mappings WHERE issuer = ?1 AND attribute = 'serialNumber' AND value = ?2 AND user_id = ?3",
            params![p.issuer, value, user_id],
        )?;
        if n > 0 {
            audit::append(
                t,
                now,
                &[Event {
                    actor,
                    event: "hpki.unmap_subject",
                    user_id: Some(user_id),
                    outcome: "ok",
                    detail: serde_json::json!({ "serialNumber": value }),
                    ..Default::default()
                }],
            )?;
        }
        Ok(n)
    })?;
    if n == 0 {
        return Err(CardError::State(format!("serialNumber={value} of this issuer is not mapped to {user_id}")));
    }
    Ok(())
}

/// Links a JPKI card certificate to a user. A card linked to someone else is refused.
pub fn jpki_link(
    store: &mut Store,
    clock: &dyn Clock,
    actor: &str,
    user_id: &str,
    cert_der: &[u8],
) -> Result<CardView, CardError> {
    users::get(store, user_id)?;
    let p = parse(cert_der)?;
    let now = clock.now_ms();
    store.write(|t| {
        let existing: Option<String> = t
            .query_row(
                "SELECT user_id FROM jpki_links WHERE (issuer = ?1 AND serial = ?2) OR spki_sha256 = ?3",
                params![p.issuer, p.serial, p.spki_sha256],
                |r| r.get(0),
            )
            .optional()?;
        match existing {
            Some(other) if other != user_id => {
                return Ok(Err(CardError::State("this My Number card is already linked to another user".into())));
            }
            Some(_) => return Ok(Ok(())),
            None => {}
        }
        t.execute(
            "INSERT INTO jpki_links (issuer, serial, spki_sha256, user_id, subject, not_after, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![p.issuer, p.serial, p.spki_sha256, user_id, p.subject, p.not_after, now],
        )?;
        audit::append(t, now, &[Event { actor, event: "jpki.link", user_id: Some(user_id), outcome: "ok", detail: serde_json::json!({ "serial": pki::serial_hex(&p.cert) }), ..Default::default() }])?;
        Ok(Ok(()))
    })??;
    Ok(CardView {
        user_id: user_id.into(),
        issuer: p.cert.tbs_certificate().issuer().to_string(),
        serial: pki::serial_hex(&p.cert),
        subject: p.subject,
        not_after: rfc3339(p.not_after),
    })
}

/// Links a JPKI card from a certificate file.
pub fn jpki_link_file(
    store: &mut Store,
    clock: &dyn Clock,
    actor: &str,
    user_id: &str,
    path: &std::path::Path,
) -> Result<CardView, CardError> {
    let der = one_cert(path)?;
    jpki_link(store, clock, actor, user_id, &der)
}

/// Unlinks a user's JPKI card(s): the given certificate, or all of them.
pub fn jpki_unlink(
    store: &mut Store,
    clock: &dyn Clock,
    actor: &str,
    user_id: &str,
    path: Option<&std::path::Path>,
) -> Result<usize, CardError> {
    users::get(store, user_id)?;
    let parsed = match path {
        Some(p) => Some(parse(&one_cert(p)?)?),
        None => None,
    };
    let now = clock.now_ms();
    let n = store.write(|t| {
        let n = match &parsed {
            Some(p) => t.execute(
                "DELETE FROM jpki_links WHERE issuer = ?1 AND serial = ?2 AND user_id = ?3",
                params![p.issuer, p.serial, user_id],
            )?,
            None => t.execute("DELETE FROM jpki_links WHERE user_id = ?1", [user_id])?,
        };
        audit::append(
            t,
            now,
            &[Event {
                actor,
                event: "jpki.unlink",
                user_id: Some(user_id),
                outcome: "ok",
                detail: serde_json::json!({ "links": n }),
                ..Default::default()
            }],
        )?;
        Ok(n)
    })?;
    if n == 0 {
        return Err(CardError::State(format!(
            "{user_id} has no such My Number card link: see `inkan jpki list {user_id}`"
        )));
    }
    Ok(n)
}

/// The user a JPKI certificate is linked to (by issuer + serial, or by public key).
pub fn jpki_user(
    conn: &Connection,
    issuer: &[u8],
    serial: &[u8],
    spki_sha256: &[u8],
) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT user_id FROM jpki_links WHERE (issuer = ?1 AND serial = ?2) OR spki_sha256 = ?3 LIMIT 1",
            params![issuer, serial, spki_sha256],
            |r| r.get(0),
        )
        .optional()?)
}

/// Lists card links (`hpki` or `jpki`) of a user, or all.
pub fn list(conn: &Connection, scheme: &str, user_id: Option<&str>) -> Result<Vec<CardView>, StoreError> {
    let table = if scheme == "hpki" { "hpki_mappings" } else { "jpki_links" };
    let mut stmt = conn.prepare(&format!(
        "SELECT user_id, issuer, serial, subject, not_after FROM {table} WHERE (?1 IS NULL OR user_id = ?1) ORDER BY user_id, created_at"
    ))?;
    let rows = stmt
        .query_map([user_id], |r| {
            let issuer: Vec<u8> = r.get(1)?;
            let serial: Vec<u8> = r.get(2)?;
            Ok(CardView {
                user_id: r.get(0)?,
                issuer: x509_cert::name::Name::from_der(&issuer).map(|n| n.to_string()).unwrap_or_default(),
                serial: serial.iter().map(|b| format!("{b:02X}")).collect(),
                subject: r.get(3)?,
                not_after: rfc3339(r.get(4)?),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut rows = rows;
    if scheme == "hpki" {
        let mut stmt = conn.prepare(
            "SELECT user_id, issuer, attribute, value FROM hpki_subject_mappings WHERE (?1 IS NULL OR user_id = ?1) ORDER BY user_id, created_at",
        )?;
        let by_subject = stmt
            .query_map([user_id], |r| {
                let issuer: Vec<u8> = r.get(1)?;
                Ok(CardView {
                    user_id: r.get(0)?,
                    issuer: x509_cert::name::Name::from_der(&issuer).map(|n| n.to_string()).unwrap_or_default(),
                    serial: "*".into(),
                    subject: format!("{}={}", r.get::<_, String>(2)?, r.get::<_, String>(3)?),
                    not_after: String::new(),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.extend(by_subject);
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
/// certificate follows its new certificate; `progress` is called per line.
pub fn import_renewals(
    store: &mut Store,
    clock: &dyn Clock,
    actor: &str,
    csv: &str,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<RenewalOutcome>, CardError> {
    use base64ct::Encoding;
    let lines: Vec<&str> = csv.lines().filter(|l| !l.trim().is_empty()).collect();
    let total = lines.len();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        progress(i + 1, total);
        if i == 0 && line.starts_with("old_") {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let result = (|| -> Result<Option<String>, CardError> {
            let [issuer_hex, serial_hex, new_b64] = fields[..] else {
                return Err(CardError::State("expected 3 comma-separated fields".into()));
            };
            let issuer = from_hex(issuer_hex).ok_or_else(|| CardError::State("old issuer is not hex".into()))?;
            let serial = from_hex(serial_hex).ok_or_else(|| CardError::State("old serial is not hex".into()))?;
            let new_der = base64ct::Base64::decode_vec(new_b64)
                .map_err(|_| CardError::State("new certificate is not base64".into()))?;
            let p = parse(&new_der)?;
            let now = clock.now_ms();
            store.write(|t| {
                let user: Option<String> =
                    t.query_row("SELECT user_id FROM jpki_links WHERE issuer = ?1 AND serial = ?2", params![issuer, serial], |r| r.get(0)).optional()?;
                let Some(user) = user else { return Ok(None) };
                t.execute(
                    "INSERT OR IGNORE INTO jpki_links (issuer, serial, spki_sha256, user_id, subject, not_after, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![p.issuer, p.serial, p.spki_sha256, user, p.subject, p.not_after, now],
                )?;
                t.execute("DELETE FROM jpki_links WHERE issuer = ?1 AND serial = ?2", params![issuer, serial])?;
                audit::append(t, now, &[Event { actor, event: "jpki.renew", user_id: Some(&user), outcome: "ok", detail: serde_json::json!({ "old_serial": serial_hex, "new_serial": pki::serial_hex(&p.cert) }), ..Default::default() }])?;
                Ok(Some(user))
            }).map_err(CardError::from)
        })();
        out.push(match result {
            Ok(Some(user)) => RenewalOutcome { line: i + 1, outcome: "moved".into(), user_id: Some(user) },
            Ok(None) => RenewalOutcome {
                line: i + 1,
                outcome: "unknown: no link for the old certificate".into(),
                user_id: None,
            },
            Err(e) => RenewalOutcome { line: i + 1, outcome: format!("error: {e}"), user_id: None },
        });
    }
    Ok(out)
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}
