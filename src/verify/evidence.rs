//! What both formats share: the certificates and CRLs a signature carries
//! (with those configured), the signer's path at the signature's proven
//! time with revocation, and time-stamps as proof of time.
//!
//! The rules (docs/signatures.md, "Validation"):
//! - anchors are pinned: a self-signed certificate inside the file is never one;
//! - a path's certificates are valid at the time checked; for the signer
//!   that is the best signature time (the earliest time-stamp that is
//!   proof), else the validation time;
//! - every certificate but the anchor needs a CRL from its issuer, in scope,
//!   signed by it, current at that time (issued before it, nextUpdate after
//!   it) or issued after it while the certificate was still valid; any such
//!   CRL that lists it revoked on or before that time fails it, whether
//!   current or not; a revocation after a proven time does not;
//! - a time-stamp is proof of its time when it verifies over what it must
//!   cover, its TSA's path is valid and not revoked at its time, and until
//!   the next proof that covers it (a later archive time-stamp that is proof
//!   itself, or the validation time) its TSA's path neither expires nor is
//!   revoked. A time-stamp that is not proof does not fail the signature:
//!   the signature is validated without it.

use std::cell::RefCell;
use std::time::SystemTime;

use der::{Decode, Encode};
use inkan_keystore::DigestAlgorithm;
use x509_cert::crl::CertificateList;
use x509_cert::Certificate;

use super::report::{Check, SubIndication};
use super::time::rfc3339;
use crate::pki::{crl, path};
use crate::tsa::token;

/// At most this many certificates, and as many CRLs, are read from one file.
const MAX_ITEMS: usize = 64;

/// At most this many time-stamps are read for one signature.
pub const MAX_STAMPS: usize = 16;

/// The certificates and CRLs at hand: the signature's and the configured.
#[derive(Default)]
pub struct Pool {
    certs: Vec<Certificate>,
    crls: Vec<CertificateList>,
    file_crls: usize,
    /// Which (CRL, issuer) pairs verified: each checked once.
    verified: RefCell<Vec<(usize, Vec<u8>, bool)>>,
}

impl Pool {
    /// A pool holding what `trust` adds to a signature's own: its CRLs and
    /// its intermediate certificates (all of them).
    pub fn new(trust: &super::trust::Trust) -> Pool {
        let mut pool = Pool::default();
        for c in &trust.intermediates {
            if let Ok(cert) = Certificate::from_der(c) {
                pool.certs.push(cert);
            }
        }
        let crls = &trust.crls;
        for c in crls {
            if let Ok(list) = CertificateList::from_der(c) {
                pool.crls.push(list);
            }
        }
        pool
    }

    /// Adds a certificate (DER) from the file; false if it does not decode.
    pub fn add_cert(&mut self, der: &[u8]) -> bool {
        let Ok(cert) = Certificate::from_der(der) else { return false };
        if self.certs.len() < MAX_ITEMS && !self.certs.contains(&cert) {
            self.certs.push(cert);
        }
        true
    }

    /// Adds a CRL (DER) from the file; false if it does not decode.
    pub fn add_crl(&mut self, der: &[u8]) -> bool {
        let Ok(list) = CertificateList::from_der(der) else { return false };
        if self.file_crls < MAX_ITEMS && !self.crls.contains(&list) {
            self.crls.push(list);
            self.file_crls += 1;
        }
        true
    }

    /// The certificates.
    pub fn certs(&self) -> &[Certificate] {
        &self.certs
    }

    /// The CRLs `issuer` signed whose scope holds `cert`.
    fn crls_for<'a>(&'a self, cert: &Certificate, issuer: &Certificate) -> Vec<&'a CertificateList> {
        let issuer_der = issuer.to_der().unwrap_or_default();
        self.crls
            .iter()
            .enumerate()
            .filter(|(i, l)| {
                let known = self.verified.borrow().iter().find(|(j, d, _)| j == i && *d == issuer_der).map(|v| v.2);
                let signed = known.unwrap_or_else(|| {
                    let ok = crl::signed_by(l, issuer);
                    self.verified.borrow_mut().push((*i, issuer_der.clone(), ok));
                    ok
                });
                signed && crl::covers(l, cert).is_ok()
            })
            .map(|(_, l)| l)
            .collect()
    }
}

fn subject(cert: &Certificate) -> String {
    cert.tbs_certificate().subject().to_string()
}

fn validity(cert: &Certificate) -> (SystemTime, SystemTime) {
    let v = cert.tbs_certificate().validity();
    (v.not_before.to_system_time(), v.not_after.to_system_time())
}

/// What the CRLs at hand say of a certificate at a time.
enum Status {
    /// A usable CRL, and none lists it revoked by then.
    Good,
    /// A usable CRL says it was revoked later than the time.
    RevokedAfter(SystemTime),
    /// A CRL of its issuer lists it revoked on or before the time.
    Revoked(SystemTime),
    /// No CRL usable for that time (why).
    Unknown(String),
}

/// The revocation status of `cert` (issued by `issuer`) at `at`.
fn status(pool: &Pool, cert: &Certificate, issuer: &Certificate, at: SystemTime) -> Status {
    let (_, not_after) = validity(cert);
    let scoped = pool.crls_for(cert, issuer);
    let revoked = scoped.iter().filter_map(|l| crl::revoked_on(l, cert)).min();
    if let Some(on) = revoked.filter(|on| *on <= at) {
        return Status::Revoked(on);
    }
    let usable = scoped.iter().any(|l| {
        let this_update = l.tbs_cert_list.this_update.to_system_time();
        crl::current(l, at) || (this_update >= at && this_update <= not_after)
    });
    match (usable, revoked) {
        (true, Some(on)) => Status::RevokedAfter(on),
        (true, None) => Status::Good,
        (false, _) => Status::Unknown(format!(
            "no CRL from {} current at {} for {} ({} in scope at hand, none current then)",
            subject(issuer),
            rfc3339(at),
            subject(cert),
            scoped.len()
        )),
    }
}

/// The revocation checks of the signer's path (leaf first) at `at`: one
/// check per certificate but the anchor. `proven`: `at` is proven by a
/// time-stamp. Returns whether all passed.
fn signer_revocation(pool: &Pool, path: &[Certificate], at: SystemTime, proven: bool, checks: &mut Vec<Check>) -> bool {
    const NAME: &str = "signer's certificate revocation";
    let mut ok = true;
    for (i, pair) in path.windows(2).enumerate() {
        let (cert, issuer) = (&pair[0], &pair[1]);
        match status(pool, cert, issuer, at) {
            Status::Good => {
                checks.push(Check::passed(NAME, format!("{}: not revoked at {}", subject(cert), rfc3339(at))))
            }
            Status::RevokedAfter(on) => checks.push(Check::passed(
                NAME,
                format!("{}: revoked on {}, after {}", subject(cert), rfc3339(on), rfc3339(at)),
            )),
            Status::Revoked(on) => {
                ok = false;
                let detail = format!("{} was revoked on {}", subject(cert), rfc3339(on));
                checks.push(if proven {
                    Check::failed(
                        NAME,
                        SubIndication::Revoked,
                        format!("{detail}, before the proven time {}", rfc3339(at)),
                    )
                } else if i == 0 {
                    Check::indeterminate(
                        NAME,
                        SubIndication::RevokedNoPoe,
                        format!("{detail}, and nothing proves the signature was made before"),
                    )
                } else {
                    Check::indeterminate(
                        NAME,
                        SubIndication::RevokedCaNoPoe,
                        format!("{detail}, and nothing proves the signature was made before"),
                    )
                });
            }
            Status::Unknown(why) => {
                ok = false;
                checks.push(Check::indeterminate(NAME, SubIndication::TryLater, why));
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
                        "{who} expired on {}, and nothing proves the signature existed before (no time-stamp that is proof)",
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
    signer_revocation(pool, &path, at, proven, checks) && ok
}

/// What an archive time-stamp covers of the time-stamps before it.
#[derive(Clone, Debug)]
pub enum Covers {
    /// Not an archive time-stamp.
    Nothing,
    /// Every one before it (XAdES: its input holds every unsigned property before it).
    AllBefore,
    /// Those listed by index among the signature's stamps (CAdES: those
    /// whose attribute value its hash index lists).
    Listed(Vec<usize>),
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
    /// The TSA's path (its certificate first), once verified.
    pub path: Vec<Certificate>,
    /// Whether it verified (imprint, signature, path at its time) and its
    /// TSA's path was not revoked then.
    pub verified: bool,
    /// What it covers.
    pub covers: Covers,
    /// Whether a check of it failed (rather than could not be established).
    pub failed: bool,
}

/// Checks a time-stamp `token` that must be over `input`: the imprint with
/// the token's own digest algorithm, [`token::check`] against the TSA
/// anchors (the pool's certificates may complete the path), and the TSA
/// path's revocation at the token's time. Its checks never decide the
/// signature's indication (see the module documentation).
pub fn timestamp(
    pool: &Pool,
    tsa_anchors: &[Certificate],
    kind: &'static str,
    token_der: &[u8],
    input: &[u8],
    checks: &mut Vec<Check>,
) -> Stamp {
    let mut out = Vec::new();
    let mut stamp = timestamp_checks(pool, tsa_anchors, kind, token_der, input, &mut out);
    stamp.failed = out.iter().any(|c| c.result == super::report::Outcome::Failed);
    checks.extend(out.into_iter().map(Check::not_deciding));
    stamp
}

fn timestamp_checks(
    pool: &Pool,
    tsa_anchors: &[Certificate],
    kind: &'static str,
    token_der: &[u8],
    input: &[u8],
    checks: &mut Vec<Check>,
) -> Stamp {
    let name = format!("{kind} time-stamp");
    let mut stamp = Stamp {
        kind,
        time: None,
        tsa: None,
        path: Vec::new(),
        verified: false,
        covers: Covers::Nothing,
        failed: false,
    };
    let info = match token::tst_info(token_der) {
        Ok(i) => i,
        Err(e) => {
            checks.push(Check::failed(&name, SubIndication::FormatFailure, e.0));
            return stamp;
        }
    };
    stamp.time = Some(info.gen_time);
    let Some(alg) = DigestAlgorithm::from_oid(&info.message_imprint.hash_algorithm.oid) else {
        checks.push(Check::indeterminate(
            &name,
            SubIndication::CryptoConstraintsFailure,
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
                    format!("its imprint is not over the {kind} time-stamp's input: it stamps something else"),
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
    stamp.path = checked.path.iter().filter_map(|d| Certificate::from_der(d).ok()).collect();
    stamp.tsa = stamp.path.first().map(subject);
    checks.push(Check::passed(
        &name,
        format!(
            "{} by {} over its input ({}), path to a TSA anchor at its time",
            checked.info.gen_time_text,
            stamp.tsa.as_deref().unwrap_or("?"),
            alg.name()
        ),
    ));
    let revocation = format!("{kind} time-stamp's TSA revocation");
    let mut ok = true;
    for pair in stamp.path.windows(2) {
        match status(pool, &pair[0], &pair[1], info.gen_time) {
            Status::Good | Status::RevokedAfter(_) => checks.push(Check::passed(
                &revocation,
                format!("{}: not revoked at {}", subject(&pair[0]), rfc3339(info.gen_time)),
            )),
            Status::Revoked(on) => {
                ok = false;
                checks.push(Check::failed(
                    &revocation,
                    SubIndication::Revoked,
                    format!("{} was revoked on {}: the time-stamp proves nothing", subject(&pair[0]), rfc3339(on)),
                ));
            }
            Status::Unknown(why) => {
                ok = false;
                checks.push(Check::indeterminate(&revocation, SubIndication::TryLater, why));
            }
        }
    }
    stamp.verified = ok;
    stamp
}

/// Whether a CRL at hand lists a certificate of `path` revoked before `by`.
fn revoked_before(pool: &Pool, path: &[Certificate], by: SystemTime) -> Option<(String, SystemTime)> {
    path.windows(2).find_map(|pair| {
        pool.crls_for(&pair[0], &pair[1])
            .iter()
            .filter_map(|l| crl::revoked_on(l, &pair[0]))
            .filter(|on| *on < by)
            .min()
            .map(|on| (subject(&pair[0]), on))
    })
}

/// Which time-stamps are proof of time, from the newest back: verified, no
/// later than `at` (nor than `control`, the proven time of an enclosing
/// signature, when there is one), and their TSA's path neither expired nor
/// revoked before the next proof that covers them (a later archive
/// time-stamp that is proof itself, or `control`). Adds a (not deciding)
/// check for each that is not.
pub fn proofs(
    pool: &Pool,
    stamps: &[Stamp],
    at: SystemTime,
    control: SystemTime,
    checks: &mut Vec<Check>,
) -> Vec<bool> {
    let mut proof = vec![false; stamps.len()];
    for i in (0..stamps.len()).rev() {
        let s = &stamps[i];
        let (Some(time), true) = (s.time, s.verified) else { continue };
        let name = format!("{} time-stamp", s.kind);
        if time > at {
            checks.push(Check::info(name, format!("made at {}, after the validation time: not used", rfc3339(time))));
            continue;
        }
        let covers = |j: usize| match &stamps[j].covers {
            Covers::Nothing => false,
            Covers::AllBefore => true,
            Covers::Listed(list) => list.contains(&i),
        };
        let next = (i + 1..stamps.len())
            .filter(|j| proof[*j] && covers(*j))
            .filter_map(|j| stamps[j].time)
            .filter(|t| *t >= time)
            .min()
            .unwrap_or(control);
        let not_after = s.path.iter().map(|c| validity(c).1).min().unwrap_or(time);
        let why = if time > control {
            Some(format!(
                "made at {}, after the enclosing signature's proven time {}, which does not cover it",
                rfc3339(time),
                rfc3339(control)
            ))
        } else if not_after < next {
            Some(format!(
                "its TSA's path expired on {}, before {}, and no archive time-stamp made before then keeps it provable",
                rfc3339(not_after),
                rfc3339(next)
            ))
        } else {
            revoked_before(pool, &s.path, next).map(|(who, on)| {
                format!("{who} was revoked on {}, before {}: it proves nothing", rfc3339(on), rfc3339(next))
            })
        };
        match why {
            Some(why) => checks.push(Check::indeterminate(name, SubIndication::OutOfBoundsNoPoe, why).not_deciding()),
            None => proof[i] = true,
        }
    }
    proof
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
