//! Certification paths for what inkan checks on its own account: a TSA's
//! certificate up to the configured TSA anchors (and, for validation, a
//! signer's up to pinned anchors). A subset of RFC 5280's path validation:
//! each issuer found by name among the anchors first, then the
//! intermediates, its signature over the certificate verified (with the
//! algorithm the certificate names twice alike), every certificate valid at
//! the time asked, every intermediate a CA (basicConstraints cA, keyUsage
//! keyCertSign if it has one, its pathLenConstraint kept), no critical
//! extension inkan does not know. Critical certificatePolicies are accepted
//! (HPKI marks them critical; webpki would refuse them); policy mapping and
//! name constraints are not processed (a critical one is refused).

use std::time::SystemTime;

use der::Encode;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
use x509_cert::Certificate;

use super::{check_issued_by, check_validity, PkiError};

/// Longest path followed (a leaf, intermediates, an anchor).
const MAX_DEPTH: usize = 6;

/// A path from `leaf` to one of `anchors` (leaf first, the anchor last),
/// every certificate valid at `at`; or why there is none.
pub fn build(
    leaf: &Certificate,
    intermediates: &[Certificate],
    anchors: &[Certificate],
    at: SystemTime,
) -> Result<Vec<Certificate>, PkiError> {
    check_validity(leaf, at)?;
    let path = find(leaf, intermediates, anchors).map_err(|e| PkiError(e.message))?;
    for cert in &path[1..] {
        let role = if anchors.iter().any(|a| same(a, cert)) { "the anchor" } else { "the intermediate" };
        check_validity(cert, at).map_err(|e| PkiError(format!("{role} {}: {e}", cert.tbs_certificate().subject())))?;
    }
    Ok(path)
}

/// Why [`find`] found no path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PathError {
    /// No issuer leads to an anchor (rather than a certificate on the way
    /// that may not be there: not a CA, its path length, an unknown critical
    /// extension, two signature algorithms).
    pub no_anchor: bool,
    /// What is wrong.
    pub message: String,
}

fn constraint(message: String) -> PathError {
    PathError { no_anchor: false, message }
}

/// A path from `leaf` to one of `anchors` (leaf first, the anchor last),
/// each certificate's signature and constraints checked, but not when each
/// is valid: a validator checks that at the times it has proof of.
pub fn find(
    leaf: &Certificate,
    intermediates: &[Certificate],
    anchors: &[Certificate],
) -> Result<Vec<Certificate>, PathError> {
    let mut path = vec![leaf.clone()];
    check_extensions(leaf).map_err(|e| constraint(e.0))?;
    for _ in 0..MAX_DEPTH {
        let Some(current) = path.last() else { break };
        if anchors.iter().any(|a| same(a, current)) {
            return Ok(path);
        }
        let issuer_name = current.tbs_certificate().issuer();
        let issued =
            |c: &&Certificate| c.tbs_certificate().subject() == issuer_name && check_issued_by(current, c).is_ok();
        if let Some(anchor) = anchors.iter().find(issued) {
            path.push(anchor.clone());
            return Ok(path);
        }
        let next = intermediates.iter().filter(|c| !path.iter().any(|p| same(p, c))).find(issued).cloned();
        let Some(next) = next else {
            return Err(PathError {
                no_anchor: true,
                message: format!(
                    "no path to a trusted anchor: no issuer {} of {} among the anchors ({}) or the certificates given",
                    issuer_name,
                    current.tbs_certificate().subject(),
                    anchors.iter().map(|a| a.tbs_certificate().subject().to_string()).collect::<Vec<_>>().join("; ")
                ),
            });
        };
        if !is_ca(&next) {
            return Err(constraint(format!(
                "{} issued a certificate but is not a CA",
                next.tbs_certificate().subject()
            )));
        }
        // Intermediates below this one: its pathLenConstraint bounds them.
        let below = path.len() - 1;
        if let Ok(Some((_, BasicConstraints { path_len_constraint: Some(max), .. }))) =
            next.tbs_certificate().get_extension::<BasicConstraints>()
        {
            if below > usize::from(max) {
                return Err(constraint(format!(
                    "{} allows {max} intermediate CAs below it, the path has {below}",
                    next.tbs_certificate().subject()
                )));
            }
        }
        check_extensions(&next).map_err(|e| constraint(e.0))?;
        path.push(next);
    }
    Err(PathError { no_anchor: true, message: format!("no path to a trusted anchor within {MAX_DEPTH} certificates") })
}

fn same(a: &Certificate, b: &Certificate) -> bool {
    a.to_der().ok() == b.to_der().ok()
}

/// Whether a certificate may issue others: basicConstraints cA, and
/// keyUsage keyCertSign if it has a keyUsage.
pub fn is_ca(cert: &Certificate) -> bool {
    let tbs = cert.tbs_certificate();
    let ca = matches!(tbs.get_extension::<BasicConstraints>(), Ok(Some((_, bc))) if bc.ca);
    let signs = match tbs.get_extension::<KeyUsage>() {
        Ok(Some((_, ku))) => ku.0.contains(KeyUsages::KeyCertSign),
        Ok(None) => true,
        Err(_) => false,
    };
    ca && signs
}

/// No critical extension inkan does not know, and the signature algorithm
/// written inside and outside the signed part alike.
fn check_extensions(cert: &Certificate) -> Result<(), PkiError> {
    if cert.signature_algorithm() != cert.tbs_certificate().signature() {
        return Err(PkiError(format!("{} names two signature algorithms", cert.tbs_certificate().subject())));
    }
    for ext in cert.tbs_certificate().extensions().into_iter().flatten() {
        let oid = ext.extn_id.to_string();
        if ext.critical && !super::trust::KNOWN_EXTENSIONS.contains(&oid.as_str()) {
            return Err(PkiError(format!(
                "{} has a critical extension inkan does not know ({oid})",
                cert.tbs_certificate().subject()
            )));
        }
    }
    Ok(())
}
