//! What both formats share: the certificates and CRLs a signature carries
//! (with those configured), the signer's path at the signature's proven
//! time with revocation, and time-stamps as proof of time.
//!
//! The rules (README, "Validation"):
//! - anchors are pinned: a self-signed certificate inside the file is never one;
//! - a path's certificates are valid at the time checked; for the signer
//!   that is the best signature time (the earliest signature time-stamp that
//!   is itself proven), else the validation time;
//! - every certificate but the anchor needs a CRL from its issuer, in scope,
//!   signed by it, current at that time (issued before it, nextUpdate after
//!   it) or issued after it while the certificate was still valid; a
//!   revocation dated before the time fails, one after it does not;
//! - a time-stamp is proof of its time when it verifies over what it must
//!   cover, its TSA's path is valid at its time with revocation as above,
//!   and its TSA's certificate is still valid at the next proof of time
//!   (a later archive time-stamp, or the validation time).

use std::time::SystemTime;

use der::{Decode, Encode};
use inkan_keystore::DigestAlgorithm;
use x509_cert::crl::CertificateList;
use x509_cert::Certificate;

use super::report::{Check, SubIndication};
use super::time::rfc3339;
use crate::pki::{crl, path};
use crate::tsa::token;

/// The certificates and CRLs at hand: the signature's and the configured.
#[derive(Default)]
pub struct Pool {
    certs: Vec<Certificate>,
    crls: Vec<CertificateList>,
}

/// At most this many certificates or CRLs are read from one signature.
const MAX_ITEMS: usize = 64;

impl Pool {
    /// A pool holding the configured CRLs.
    pub fn new(crls: &[Vec<u8>]) -> Pool {
        let mut pool = Pool::default();
        for c in crls {
            pool.add_crl(c);
        }
        pool
    }

    /// Adds a certificate (DER); false if it does not decode.
    pub fn add_cert(&mut self, der: &[u8]) -> bool {
        let Ok(cert) = Certificate::from_der(der) else { return false };
        if self.certs.len() < MAX_ITEMS && !self.certs.contains(&cert) {
            self.certs.push(cert);
        }
        true
    }

    /// Adds a CRL (DER); false if it does not decode.
    pub fn add_crl(&mut self, der: &[u8]) -> bool {
        let Ok(list) = CertificateList::from_der(der) else { return false };
        if self.crls.len() < MAX_ITEMS && !self.crls.contains(&list) {
            self.crls.push(list);
        }
        true
    }

    /// The certificates.
    pub fn certs(&self) -> &[Certificate] {
        &self.certs
    }
}

fn subject(cert: &Certificate) -> String {
    cert.tbs_certificate().subject().to_string()
}

fn validity(cert: &Certificate) -> (SystemTime, SystemTime) {
    let v = cert.tbs_certificate().validity();
    (v.not_before.to_system_time(), v.not_after.to_system_time())
}

/// The revocation status of `cert` (issued by `issuer`) at `at` from the
/// pool's CRLs: `Ok(None)` not revoked, `Ok(Some(date))` revoked on that
/// date, `Err` no usable CRL (and why).
fn status(pool: &Pool, cert: &Certificate, issuer: &Certificate, at: SystemTime) -> Result<Option<SystemTime>, String> {
    let (_, not_after) = validity(cert);
    let mut usable =
        pool.crls.iter().filter(|l| crl::signed_by(l, issuer) && crl::covers(l, cert).is_ok()).filter(|l| {
            let this_update = l.tbs_cert_list.this_update.to_system_time();
            crl::current(l, at) || (this_update >= at && this_update <= not_after)
        });
    let Some(first) = usable.next() else {
        let from_issuer = pool.crls.iter().filter(|l| crl::signed_by(l, issuer)).count();
        return Err(format!(
            "no CRL from {} current at {} for {} ({} of its CRLs at hand, none current then and in scope)",
            subject(issuer),
            rfc3339(at),
            subject(cert),
            from_issuer
        ));
    };
    Ok(std::iter::once(first).chain(usable).filter_map(|l| crl::revoked_on(l, cert)).min())
}

/// The revocation checks of a path (leaf first) at `at`: one check per
/// certificate but the anchor. `proven`: `at` is proven by a time-stamp
/// (then a revocation after it does not touch the signature). Returns
/// whether all passed.
fn revocation(
    pool: &Pool,
    path: &[Certificate],
    at: SystemTime,
    proven: bool,
    whose: &str,
    checks: &mut Vec<Check>,
) -> bool {
    let name = format!("{whose} revocation");
    let mut ok = true;
    for pair in path.windows(2) {
        let (cert, issuer) = (&pair[0], &pair[1]);
        match status(pool, cert, issuer, at) {
            Ok(None) => checks.push(Check::passed(&name, format!("{}: not revoked at {}", subject(cert), rfc3339(at)))),
            Ok(Some(on)) if on <= at || !proven => {
                ok = false;
                checks.push(Check::failed(
                    &name,
                    SubIndication::Revoked,
                    format!("{} was revoked on {}", subject(cert), rfc3339(on)),
                ));
            }
            Ok(Some(on)) => checks.push(Check::passed(
                &name,
                format!("{}: revoked on {}, after the proven time {}", subject(cert), rfc3339(on), rfc3339(at)),
            )),
            Err(why) => {
                ok = false;
                checks.push(Check::indeterminate(&name, SubIndication::TryLater, why));
            }
        }
    }
    ok
}

/// The signer's path to a pinned anchor, each certificate valid at `at`,
/// none revoked then. Returns whether all passed.
pub fn signer_chain(
    pool: &Pool,
    leaf: &Certificate,
    anchors: &[Certificate],
    at: SystemTime,
    proven: bool,
    checks: &mut Vec<Check>,
) -> bool {
    let name = "signer's certificate path";
    let path = match path::find(leaf, pool.certs(), anchors) {
        Ok(p) => p,
        Err(e) => {
            let sub = if e.no_anchor {
                SubIndication::NoCertificateChainFound
            } else {
                SubIndication::ChainConstraintsFailure
            };
            checks.push(Check::indeterminate(name, sub, e.message));
            return false;
        }
    };
    checks.push(Check::passed(name, path.iter().map(subject).collect::<Vec<_>>().join(" → ")));
    let mut ok = true;
    for (i, cert) in path.iter().enumerate() {
        let (not_before, not_after) = validity(cert);
        let who = if i == 0 { "the signer's certificate".to_owned() } else { subject(cert) };
        if at < not_before {
            ok = false;
            checks.push(Check::failed(
                "signer's certificate validity",
                SubIndication::NotYetValid,
                format!("{who} is valid from {}, after {}", rfc3339(not_before), rfc3339(at)),
            ));
        } else if at > not_after {
            ok = false;
            checks.push(if proven {
                Check::failed(
                    "signer's certificate validity",
                    SubIndication::Expired,
                    format!("{who} expired on {}, before the signature's proven time {}", rfc3339(not_after), rfc3339(at)),
                )
            } else {
                Check::indeterminate(
                    "signer's certificate validity",
                    SubIndication::OutOfBoundsNoPoe,
                    format!(
                        "{who} expired on {}, and nothing proves the signature existed before (no valid signature time-stamp)",
                        rfc3339(not_after)
                    ),
                )
            });
        }
    }
    if ok {
        checks.push(Check::passed(
            "signer's certificate validity",
            format!("every certificate on the path valid at {}", rfc3339(at)),
        ));
    }
    revocation(pool, &path, at, proven, "signer's certificate", checks) && ok
}

/// A time-stamp read from a signature.
#[derive(Clone, Debug)]
pub struct Stamp {
    /// `signature` or `archive`.
    pub kind: &'static str,
    /// Its time, if the token could be read.
    pub time: Option<SystemTime>,
    /// The TSA's subject, if found.
    pub tsa: Option<String>,
    /// Until when its TSA's path is valid (the earliest notAfter on it).
    pub tsa_not_after: Option<SystemTime>,
    /// Whether it verified (imprint, signature, path at its time).
    pub verified: bool,
    /// Whether its TSA's path was not revoked at its time (known from a CRL).
    pub not_revoked: bool,
}

/// Checks a time-stamp `token` that must be over `input`: the imprint with
/// the token's own digest algorithm, [`token::check`] against the TSA
/// anchors (the pool's certificates may complete the path), and the TSA
/// path's revocation at the token's time.
pub fn timestamp(
    pool: &Pool,
    tsa_anchors: &[Certificate],
    kind: &'static str,
    token_der: &[u8],
    input: &[u8],
    checks: &mut Vec<Check>,
) -> Stamp {
    let name = format!("{kind} time-stamp");
    let mut stamp = Stamp { kind, time: None, tsa: None, tsa_not_after: None, verified: false, not_revoked: false };
    let info = match token::tst_info(token_der) {
        Ok(i) => i,
        Err(e) => {
            checks.push(Check::failed(&name, SubIndication::FormatFailure, e.0));
            return stamp;
        }
    };
    stamp.time = Some(info.gen_time);
    let Some(alg) = DigestAlgorithm::from_oid(&info.message_imprint.hash_algorithm.oid) else {
        checks.push(Check::failed(
            &name,
            SubIndication::FormatFailure,
            format!("its imprint's algorithm {} is not one inkan checks", info.message_imprint.hash_algorithm.oid),
        ));
        return stamp;
    };
    let digest = alg.digest(input);
    let expected = token::Expected { alg, digest: &digest, nonce: None };
    let checked = match token::check(token_der, &expected, tsa_anchors, pool.certs()) {
        Ok(c) => c,
        Err(e) => {
            let check = match e.problem() {
                token::Problem::Imprint => Check::failed(
                    &name,
                    SubIndication::HashFailure,
                    format!("its imprint is not over the {kind} time-stamp's input: what it covers was changed"),
                ),
                token::Problem::Crypto => Check::failed(&name, SubIndication::SigCryptoFailure, e.0),
                token::Problem::Format => Check::failed(&name, SubIndication::FormatFailure, e.0),
                token::Problem::Constraints => Check::indeterminate(&name, SubIndication::ChainConstraintsFailure, e.0),
                token::Problem::Path => Check::indeterminate(&name, SubIndication::NoCertificateChainFound, e.0),
            };
            checks.push(check);
            return stamp;
        }
    };
    let path: Vec<Certificate> = checked.path.iter().filter_map(|d| Certificate::from_der(d).ok()).collect();
    stamp.tsa = path.first().map(subject);
    // The path is valid until its first certificate expires (a TSA's CA
    // often expires before the TSA's own certificate).
    stamp.tsa_not_after = path.iter().map(|c| validity(c).1).min();
    checks.push(Check::passed(
        &name,
        format!(
            "{} by {} over its input ({}), path to a TSA anchor at its time",
            checked.info.gen_time_text,
            stamp.tsa.as_deref().unwrap_or("?"),
            alg.name()
        ),
    ));
    stamp.verified = true;
    stamp.not_revoked = revocation(pool, &path, info.gen_time, true, &format!("{kind} time-stamp's TSA"), checks);
    stamp
}

/// SHA-256 of `der`, lowercase hex.
pub fn sha256_hex(der: &[u8]) -> String {
    DigestAlgorithm::Sha256.digest(der).iter().map(|b| format!("{b:02x}")).collect()
}

/// Who a certificate names (the report's signer).
pub fn signer(cert_der: &[u8]) -> Option<super::report::Signer> {
    let cert = Certificate::from_der(cert_der).ok()?;
    let tbs = cert.tbs_certificate();
    let attr = |name: &x509_cert::name::Name, oid: der::oid::ObjectIdentifier| -> Option<String> {
        name.iter().find(|a| a.oid == oid).and_then(|a| directory_string(&a.value))
    };
    use der::oid::db::rfc4519 as n;
    let name_ja = match tbs.get_extension::<x509_cert::ext::pkix::SubjectAltName>() {
        Ok(Some((_, san))) => san.0.iter().find_map(|g| match g {
            x509_cert::ext::pkix::name::GeneralName::DirectoryName(d) => attr(d, n::CN),
            _ => None,
        }),
        _ => None,
    };
    let (not_before, not_after) = validity(&cert);
    Some(super::report::Signer {
        name: attr(tbs.subject(), n::CN).unwrap_or_else(|| tbs.subject().to_string()),
        name_ja,
        organization: attr(tbs.subject(), n::O),
        registration_number: attr(tbs.subject(), n::SERIAL_NUMBER),
        hc_role: crate::pki::profile::read_hc_role(&cert),
        issuer: tbs.issuer().to_string(),
        serial: tbs.serial_number().as_bytes().iter().map(|b| format!("{b:02X}")).collect(),
        not_before: rfc3339(not_before),
        not_after: rfc3339(not_after),
        certificate_sha256: sha256_hex(&cert.to_der().unwrap_or_default()),
    })
}

fn directory_string(value: &der::Any) -> Option<String> {
    use der::Tagged;
    match value.tag() {
        der::Tag::Utf8String | der::Tag::PrintableString | der::Tag::Ia5String | der::Tag::TeletexString => {
            std::str::from_utf8(value.value()).ok().map(str::to_owned)
        }
        _ => None,
    }
}

/// Marks the time-stamps that are proof of time: verified, made no later
/// than `at`, and their TSA's certificate valid until the next proof (the
/// next verified archive time-stamp, or `control`: the validation time, or
/// the proven time of an enclosing signature). Adds a check for each one
/// that is not. Returns, per stamp, whether it is proof.
pub fn proofs(stamps: &[Stamp], at: SystemTime, control: SystemTime, checks: &mut Vec<Check>) -> Vec<bool> {
    let mut proof = vec![false; stamps.len()];
    for (i, s) in stamps.iter().enumerate() {
        let (Some(time), Some(not_after), true) = (s.time, s.tsa_not_after, s.verified && s.not_revoked) else {
            continue;
        };
        let name = format!("{} time-stamp", s.kind);
        if time > at {
            checks.push(Check::info(name, format!("made at {}, after the validation time: not used", rfc3339(time))));
            continue;
        }
        let next = stamps[i + 1..]
            .iter()
            .filter(|n| n.kind == "archive" && n.verified && n.not_revoked)
            .filter_map(|n| n.time)
            .find(|t| *t >= time && *t <= at)
            .unwrap_or(control);
        if not_after < next {
            checks.push(Check::indeterminate(
                name,
                SubIndication::OutOfBoundsNoPoe,
                format!(
                    "its TSA's path expired on {}, before {}, and no archive time-stamp made before then keeps it provable",
                    rfc3339(not_after),
                    rfc3339(next)
                ),
            ));
            continue;
        }
        proof[i] = true;
    }
    proof
}
