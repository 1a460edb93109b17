//! XAdES in the e-prescription profile: every signature at a place the
//! profile has (a prescription's; a dispensing record's and the doctor's
//! inside it), each checked as [`crate::eps::check::bes`] does, then its
//! CSV, its certificate's policy, its time-stamps (SPEC §3.2 inputs), the
//! order of its times, and its signer's path at its proven time.

use std::time::SystemTime;

use x509_cert::Certificate;

use super::evidence::{self, Pool, Stamp};
use super::report::{Check, Report, SignatureReport, SubIndication, Timestamp};
use super::time::rfc3339;
use super::trust::Trust;
use crate::eps::check::{self, Problem};
use crate::eps::Kind;
use crate::signing::format::Family;
use crate::xml::{self, NodeId, Xml, DS, XADES};

/// XAdES 1.4.1's namespace (ArchiveTimeStamp, TimeStampValidationData).
const XADES141: &str = "http://uri.etsi.org/01903/v1.4.1#";

const FORMAT: &str = "XAdES (e-prescription)";

/// Validates an e-prescription document's signatures at `at`.
pub fn validate(text: &[u8], trust: &Trust, at: SystemTime) -> Report {
    let x = match xml::parse(text) {
        Ok(x) => x,
        Err(e) => {
            return Report::new(
                FORMAT,
                at,
                Vec::new(),
                vec![Check::failed("document", SubIndication::FormatFailure, e.0)],
            )
        }
    };
    let (places, mut checks) = locate(&x);
    let mut reports = Vec::new();
    // The dispensing record's signature first: its Reference 1 covers the
    // doctor's signature inside it (with its time-stamps), so its proven
    // time keeps that one provable, and nothing of the doctor's may be
    // later than it.
    let mut enclosing = None;
    for (node, kind) in places {
        let nested = kind == Kind::Prescription && enclosing.is_some();
        let (report, proven) = signature(&x, node, kind, trust, at, if nested { enclosing.flatten() } else { None });
        if kind == Kind::Dispensing {
            enclosing = Some(proven.filter(|_| report.indication == super::report::Indication::TotalPassed));
        }
        reports.push(report);
    }
    if reports.is_empty() && checks.is_empty() {
        checks.push(Check::failed(
            "signatures",
            SubIndication::FormatFailure,
            "no signature at a place the profile has (Prescription/PrescriptionSign, DispensingSign)",
        ));
    }
    Report::new(FORMAT, at, reports, checks)
}

/// The signatures at the profile's places, the dispensing record's first
/// (then the doctor's in its `ReferencePrescription`); a check for anything
/// else (another root, not exactly one record, a signature elsewhere).
pub(crate) fn locate(x: &Xml<'_>) -> (Vec<(NodeId, Kind)>, Vec<Check>) {
    let mut checks = Vec::new();
    let Ok(root) = x.root() else { return (Vec::new(), checks) };
    if !x.is(root, None, "Document") {
        checks.push(Check::failed(
            "document",
            SubIndication::FormatFailure,
            format!("the root is <{}>, not <Document>", x.qualified_name(root).unwrap_or_default()),
        ));
        return (Vec::new(), checks);
    }
    let signature_in = |parent: Option<NodeId>, slot: &str| {
        parent
            .and_then(|p| x.children_named(p, None, slot).next())
            .and_then(|s| x.children_named(s, Some(DS), "Signature").next())
    };
    let prescriptions: Vec<NodeId> = x.children_named(root, None, "Prescription").collect();
    let dispensings: Vec<NodeId> = x.children_named(root, None, "Dispensing").collect();
    let mut places = Vec::new();
    match (prescriptions.as_slice(), dispensings.as_slice()) {
        ([p], []) => {
            if let Some(s) = signature_in(Some(*p), "PrescriptionSign") {
                places.push((s, Kind::Prescription));
            }
        }
        ([], [d]) => {
            if let Some(s) = signature_in(Some(root), "DispensingSign") {
                places.push((s, Kind::Dispensing));
            }
            let reference = x.children_named(*d, None, "ReferencePrescription").next();
            if let Some(s) = signature_in(reference, "PrescriptionSign") {
                places.push((s, Kind::Prescription));
            }
        }
        _ => {
            checks.push(Check::failed(
                "document",
                SubIndication::FormatFailure,
                "<Document> must hold exactly one <Prescription> or one <Dispensing>",
            ));
            return (Vec::new(), checks);
        }
    }
    let known: Vec<NodeId> = places.iter().map(|(n, _)| *n).collect();
    for other in x.all_elements().into_iter().filter(|e| x.is(*e, Some(DS), "Signature") && !known.contains(e)) {
        checks.push(Check::failed(
            "signatures",
            SubIndication::FormatFailure,
            format!(
                "an xs:Signature in <{}>, a place the profile does not have",
                x.parent(other).and_then(|p| x.qualified_name(p)).unwrap_or_default()
            ),
        ));
    }
    (places, checks)
}

/// The level the unsigned properties make.
pub(crate) fn level(x: &Xml<'_>, unsigned: Option<NodeId>) -> &'static str {
    let Some(u) = unsigned else { return "B-B" };
    let has = |ns: &str, name: &str| x.children_named(u, Some(ns), name).next().is_some();
    // Each level on the one below (EN 319 132-1 baselines): validation
    // data or an archive time-stamp without a signature time-stamp under
    // them make no level above B-B.
    let t = has(XADES, "SignatureTimeStamp");
    let lt = t && has(XADES, "CertificateValues") && has(XADES, "RevocationValues");
    if lt && has(XADES141, "ArchiveTimeStamp") {
        "B-LTA"
    } else if lt {
        "B-LT"
    } else if t {
        "B-T"
    } else {
        "B-B"
    }
}

pub(crate) fn unsigned_properties(x: &Xml<'_>, signature: NodeId) -> Option<NodeId> {
    let object = x.children_named(signature, Some(DS), "Object").next()?;
    let qualifying = x.children_named(object, Some(XADES), "QualifyingProperties").next()?;
    let unsigned = x.children_named(qualifying, Some(XADES), "UnsignedProperties").next()?;
    x.children_named(unsigned, Some(XADES), "UnsignedSignatureProperties").next()
}

/// Every certificate and CRL under `node` (base64 in the XAdES value elements).
fn gather(x: &Xml<'_>, node: NodeId, pool: &mut Pool, checks: &mut Vec<Check>) {
    let mut stack = vec![node];
    while let Some(n) = stack.pop() {
        let bytes = || xml::decode_base64(&x.text_of(n));
        let ok = if x.is(n, Some(XADES), "EncapsulatedX509Certificate") || x.is(n, Some(DS), "X509Certificate") {
            bytes().is_some_and(|b| pool.add_cert(&b))
        } else if x.is(n, Some(XADES), "EncapsulatedCRLValue") {
            bytes().is_some_and(|b| pool.add_crl(&b))
        } else {
            stack.extend(x.elements(n));
            true
        };
        if !ok {
            checks.push(
                Check::failed(
                    "validation data",
                    SubIndication::FormatFailure,
                    format!("<{}> holds no certificate or CRL that decodes", x.qualified_name(n).unwrap_or_default()),
                )
                .not_deciding(),
            );
        }
    }
}

/// One signature: its report, and its proven time if it has one.
/// `enclosing`: the proven time of the signature that covers this one (the
/// pharmacist's, over the doctor's inside a dispensing record).
fn signature(
    x: &Xml<'_>,
    node: NodeId,
    kind: Kind,
    trust: &Trust,
    at: SystemTime,
    enclosing: Option<SystemTime>,
) -> (SignatureReport, Option<SystemTime>) {
    let id = x.attribute(node, "Id").unwrap_or(kind.signature_id());
    let mut r = SignatureReport::new(id, Family::Xades.about().name, at);
    r.kind = Some(kind.as_str());
    let unsigned = unsigned_properties(x, node);
    r.level = level(x, unsigned);

    // The signature itself, as the profile has it.
    let verified = match check::bes(x, node, kind) {
        Ok(v) => v,
        Err(f) => {
            let check = match f.problem {
                Problem::Format => Check::failed("structure", SubIndication::FormatFailure, f.message),
                Problem::Digest => Check::failed("references", SubIndication::HashFailure, f.message),
                Problem::SignatureValue => Check::failed("signature value", SubIndication::SigCryptoFailure, f.message),
                Problem::CertificateDigest => {
                    Check::indeterminate("signing certificate", SubIndication::NoSigningCertificateFound, f.message)
                }
                Problem::Signer => {
                    Check::indeterminate("signer's role", SubIndication::SigConstraintsFailure, f.message)
                }
            };
            r.signer = key_info_certificate(x, node).and_then(|c| evidence::signer(&c));
            r.checks.push(check);
            r.conclude();
            return (r, None);
        }
    };
    r.signer = evidence::signer(&verified.certificate);
    r.signing_time = verified.signing_time.clone();
    r.checks.push(Check::passed(
        "structure",
        format!("a {} signature in its place: exactly the profile's three references, ids unique", kind.as_str()),
    ));
    r.checks.push(Check::passed("references", "each digest recomputed and equal"));
    r.checks.push(Check::passed("signature value", "verifies with the certificate in KeyInfo over SignedInfo"));
    r.checks.push(Check::passed("signing certificate", "SigningCertificateV2's digest is the KeyInfo certificate's"));
    r.checks.push(Check::passed(
        "signer's role",
        format!("hcRole {:?} may sign a {}; keyUsage nonRepudiation", verified.hc_role, kind.as_str()),
    ));
    let Ok(cert) = <Certificate as der::Decode>::from_der(&verified.certificate) else {
        r.conclude();
        return (r, None);
    };
    let policies = policy_problems(&cert);
    r.checks.push(match policies {
        None => Check::passed("certificate policy", "an HPKI signing policy (1.2.392.100495.1.5.1.1.*)"),
        Some(p) => Check::indeterminate("certificate policy", SubIndication::SigConstraintsFailure, p),
    });
    r.checks.push(csv(x, node, kind));

    // Validation data and time-stamps.
    let mut pool = Pool::new(trust);
    if let Ok(key_info) = x.child(node, Some(DS), "KeyInfo") {
        gather(x, key_info, &mut pool, &mut r.checks);
    }
    let mut stamps: Vec<Stamp> = Vec::new();
    if let Some(u) = unsigned {
        gather(x, u, &mut pool, &mut r.checks);
        let count = x
            .elements(u)
            .filter(|c| x.is(*c, Some(XADES), "SignatureTimeStamp") || x.is(*c, Some(XADES141), "ArchiveTimeStamp"))
            .count();
        if count > evidence::MAX_STAMPS {
            r.checks.push(Check::failed(
                "time-stamps",
                SubIndication::FormatFailure,
                format!("{count} time-stamps; inkan reads at most {}", evidence::MAX_STAMPS),
            ));
            r.conclude();
            return (r, None);
        }
        for child in x.elements(u) {
            let kind_of = if x.is(child, Some(XADES), "SignatureTimeStamp") {
                "signature"
            } else if x.is(child, Some(XADES141), "ArchiveTimeStamp") {
                "archive"
            } else {
                continue;
            };
            let token = x
                .children_named(child, Some(XADES), "EncapsulatedTimeStamp")
                .next()
                .and_then(|t| xml::decode_base64(&x.text_of(t)));
            let input = if kind_of == "signature" {
                x.child(node, Some(DS), "SignatureValue").and_then(|v| x.inclusive(v)).map_err(|e| e.0)
            } else {
                crate::eps::archive::input(x, node, Some(child))
            };
            match (token, input) {
                (Some(token), Ok(input)) => {
                    let mut stamp =
                        evidence::timestamp(&pool, &trust.tsa_anchors, kind_of, &token, &input, &mut r.checks);
                    if kind_of == "archive" {
                        // Its input holds every unsigned property before it.
                        stamp.covers = evidence::Covers::AllBefore;
                    }
                    stamps.push(stamp);
                }
                (None, _) => r.checks.push(
                    Check::failed(
                        format!("{kind_of} time-stamp"),
                        SubIndication::FormatFailure,
                        "no EncapsulatedTimeStamp in base64",
                    )
                    .not_deciding(),
                ),
                (_, Err(e)) => r.checks.push(
                    Check::failed(
                        format!("{kind_of} time-stamp"),
                        SubIndication::FormatFailure,
                        format!("its input cannot be made: {e}"),
                    )
                    .not_deciding(),
                ),
            }
        }
    }
    let proven = conclude_times(&pool, &mut r, &stamps, at, enclosing.unwrap_or(at));
    r.checks.push(order(verified.signing_time.as_deref(), &stamps));
    if let Some(limit) = enclosing {
        if let Some(late) = stamps.iter().filter_map(|s| s.time).find(|t| *t > limit) {
            r.checks.push(Check::indeterminate(
                "time order",
                SubIndication::TimestampOrderFailure,
                format!(
                    "a time-stamp of {} is later than the dispensing record's proven time {}, which covers this signature",
                    rfc3339(late),
                    rfc3339(limit)
                ),
            ));
        }
    }
    evidence::signer_chain(&pool, &cert, &trust.anchors, proven.unwrap_or(at), proven.is_some(), &mut r.checks);
    r.conclude();
    (r, proven)
}

/// The report's time-stamps and best signature time; returns the proven
/// time (the earliest time-stamp that is proof: an archive time-stamp
/// proves the signature existed too).
pub(super) fn conclude_times(
    pool: &Pool,
    r: &mut SignatureReport,
    stamps: &[Stamp],
    at: SystemTime,
    control: SystemTime,
) -> Option<SystemTime> {
    let proof = evidence::proofs(pool, stamps, at, control, &mut r.checks);
    r.timestamps = stamps
        .iter()
        .zip(&proof)
        .map(|(s, p)| Timestamp {
            kind: s.kind,
            time: s.time.map(rfc3339),
            tsa: s.tsa.clone(),
            result: if *p {
                super::report::Outcome::Passed
            } else if s.failed {
                super::report::Outcome::Failed
            } else {
                super::report::Outcome::Indeterminate
            },
        })
        .collect();
    let proven = stamps.iter().zip(&proof).filter(|(_, p)| **p).filter_map(|(s, _)| s.time).min();
    if let Some(t) = proven {
        r.best_signature_time = rfc3339(t);
        r.best_signature_time_proven = true;
    }
    proven
}

/// SigningTime no later than the signature time-stamps, and those no later
/// than the archive time-stamps, which follow one another.
pub(super) fn order(signing_time: Option<&str>, stamps: &[Stamp]) -> Check {
    const NAME: &str = "time order";
    let claimed = match signing_time.map(super::time::parse) {
        Some(Some((t, _))) => Some(t),
        Some(None) => {
            return Check::failed(NAME, SubIndication::FormatFailure, "the signing time is not an xsd:dateTime")
        }
        None => None,
    };
    let times = |kind: &str| stamps.iter().filter(|s| s.kind == kind).filter_map(|s| s.time).collect::<Vec<_>>();
    let (signature, archive) = (times("signature"), times("archive"));
    if let (Some(c), Some(first)) = (claimed, signature.iter().min()) {
        if c > *first {
            return Check::indeterminate(
                NAME,
                SubIndication::TimestampOrderFailure,
                format!(
                    "the claimed signing time {} is after the signature time-stamp {}",
                    rfc3339(c),
                    rfc3339(*first)
                ),
            );
        }
    }
    if let (Some(last), Some(first)) = (signature.iter().max(), archive.first()) {
        if first < last {
            return Check::indeterminate(
                NAME,
                SubIndication::TimestampOrderFailure,
                format!(
                    "an archive time-stamp ({}) is older than a signature time-stamp ({})",
                    rfc3339(*first),
                    rfc3339(*last)
                ),
            );
        }
    }
    if archive.windows(2).any(|w| w[1] < w[0]) {
        return Check::indeterminate(
            NAME,
            SubIndication::TimestampOrderFailure,
            "the archive time-stamps are not in time order",
        );
    }
    Check::passed(NAME, "signing time ≤ signature time-stamps ≤ archive time-stamps")
}

/// Why `cert` is not under an HPKI signing policy, if it is not.
pub(super) fn policy_problems(cert: &Certificate) -> Option<String> {
    use x509_cert::ext::pkix::CertificatePolicies;
    let arc = crate::pki::profile::HPKI_SIGNING_POLICY_ARC;
    let policies: Vec<String> = match cert.tbs_certificate().get_extension::<CertificatePolicies>() {
        Ok(Some((_, p))) => p.0.iter().map(|p| p.policy_identifier.to_string()).collect(),
        _ => Vec::new(),
    };
    if policies.iter().any(|p| p.starts_with(arc)) {
        None
    } else {
        Some(format!(
            "the signer's certificate names no HPKI signing policy ({arc}*); it names {}",
            if policies.is_empty() { "none".to_owned() } else { policies.join(", ") }
        ))
    }
}

/// The signed CSV: base64 on one line in the target (a dispensing record's
/// in `DispensingDocument`), UTF-8, no CR, the kind's first line.
fn csv(x: &Xml<'_>, signature: NodeId, kind: Kind) -> Check {
    const NAME: &str = "CSV";
    let target = x
        .parent(signature)
        .and_then(|slot| x.parent(slot))
        .and_then(|container| x.children_named(container, None, kind.target_id()).next());
    let element = match (kind, target) {
        (Kind::Prescription, Some(t)) => Some(t),
        (Kind::Dispensing, Some(t)) => x.children_named(t, None, "DispensingDocument").next(),
        (_, None) => None,
    };
    let Some(element) = element else {
        return Check::failed(NAME, SubIndication::FormatFailure, "no element holds the CSV");
    };
    let bytes = x
        .text_only(element)
        .filter(|t| !t.contains(|c: char| c.is_ascii_whitespace()))
        .and_then(|t| xml::decode_base64(&t));
    let Some(bytes) = bytes else {
        return Check::failed(
            NAME,
            SubIndication::FormatFailure,
            "the CSV's element does not hold base64 on one line alone",
        );
    };
    match crate::eps::csv::check(&bytes, kind) {
        Ok(sha) => Check::passed(NAME, format!("UTF-8, no CR, first line {}; SHA-256 {sha}", kind.csv_tag())),
        Err(e) => Check::failed(NAME, SubIndication::FormatFailure, e.to_string()),
    }
}

/// The first certificate in KeyInfo (DER), for a report on a signature that
/// did not verify.
fn key_info_certificate(x: &Xml<'_>, signature: NodeId) -> Option<Vec<u8>> {
    let key_info = x.children_named(signature, Some(DS), "KeyInfo").next()?;
    let data = x.children_named(key_info, Some(DS), "X509Data").next()?;
    let cert = x.children_named(data, Some(DS), "X509Certificate").next()?;
    xml::decode_base64(&x.text_of(cert))
}
