//! Certification paths for what inkan checks on its own account: a TSA's
//! certificate up to the configured TSA anchors (and, for validation, a
//! signer's up to pinned anchors). RFC 5280's basic path: each issuer found
//! by name among the anchors first, then the intermediates, its signature
//! over the certificate verified, every certificate valid at the time asked,
//! every issuer but an anchor a CA (basicConstraints cA). Critical
//! certificatePolicies are accepted (HPKI marks them critical; webpki would
//! refuse them); policy mapping and name constraints are not processed.

use std::time::SystemTime;

use der::Encode;
use x509_cert::ext::pkix::BasicConstraints;
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
    let mut path = vec![leaf.clone()];
    check_validity(leaf, at)?;
    for _ in 0..MAX_DEPTH {
        let Some(current) = path.last() else { break };
        if anchors.iter().any(|a| same(a, current)) {
            return Ok(path);
        }
        let issuer_name = current.tbs_certificate().issuer();
        let issued =
            |c: &&Certificate| c.tbs_certificate().subject() == issuer_name && check_issued_by(current, c).is_ok();
        if let Some(anchor) = anchors.iter().find(issued) {
            check_validity(anchor, at)
                .map_err(|e| PkiError(format!("the anchor {}: {e}", anchor.tbs_certificate().subject())))?;
            path.push(anchor.clone());
            return Ok(path);
        }
        let next = intermediates.iter().filter(|c| !path.iter().any(|p| same(p, c))).find(issued).cloned();
        let Some(next) = next else {
            return Err(PkiError(format!(
                "no path to a trusted anchor: no issuer {} of {} among the anchors ({}) or the certificates given",
                issuer_name,
                current.tbs_certificate().subject(),
                anchors.iter().map(|a| a.tbs_certificate().subject().to_string()).collect::<Vec<_>>().join("; ")
            )));
        };
        if !is_ca(&next) {
            return Err(PkiError(format!("{} issued a certificate but is not a CA", next.tbs_certificate().subject())));
        }
        check_validity(&next, at)
            .map_err(|e| PkiError(format!("the intermediate {}: {e}", next.tbs_certificate().subject())))?;
        path.push(next);
    }
    Err(PkiError(format!("no path to a trusted anchor within {MAX_DEPTH} certificates")))
}

fn same(a: &Certificate, b: &Certificate) -> bool {
    a.to_der().ok() == b.to_der().ok()
}

/// Whether basicConstraints says cA.
pub fn is_ca(cert: &Certificate) -> bool {
    matches!(cert.tbs_certificate().get_extension::<BasicConstraints>(), Ok(Some((_, bc))) if bc.ca)
}
