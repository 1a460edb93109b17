//! CRLs: whether an issuer signed one, whether it is current, whether it
//! lists a certificate, and where a certificate says its CRL is
//! (its distribution points).

use std::time::SystemTime;

use der::Encode;
use x509_cert::crl::CertificateList;
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::CrlDistributionPoints;
use x509_cert::Certificate;

use super::verify_signature;

/// Whether `issuer`'s key signed `crl` and its name is the CRL's issuer.
pub fn signed_by(crl: &CertificateList, issuer: &Certificate) -> bool {
    if crl.tbs_cert_list.issuer != *issuer.tbs_certificate().subject() {
        return false;
    }
    let Ok(tbs) = crl.tbs_cert_list.to_der() else { return false };
    let Some(sig) = crl.signature.as_bytes() else { return false };
    verify_signature(&tbs, &crl.signature_algorithm, sig, issuer.tbs_certificate().subject_public_key_info()).is_ok()
}

/// Whether `crl` is current at `at`: issued before it, its nextUpdate after it.
pub fn current(crl: &CertificateList, at: SystemTime) -> bool {
    crl.tbs_cert_list.this_update.to_system_time() <= at
        && crl.tbs_cert_list.next_update.is_some_and(|n| at <= n.to_system_time())
}

/// Whether `crl` lists `cert` as revoked.
pub fn lists(crl: &CertificateList, cert: &Certificate) -> bool {
    let serial = cert.tbs_certificate().serial_number();
    crl.tbs_cert_list.revoked_certificates.iter().flatten().any(|r| r.serial_number == *serial)
}

/// When `crl` says `cert` was revoked (its entry's revocationDate), if it
/// lists it.
pub fn revoked_on(crl: &CertificateList, cert: &Certificate) -> Option<SystemTime> {
    let serial = cert.tbs_certificate().serial_number();
    crl.tbs_cert_list
        .revoked_certificates
        .iter()
        .flatten()
        .find(|r| r.serial_number == *serial)
        .map(|r| r.revocation_date.to_system_time())
}

/// Whether `crl` is a complete CRL whose scope holds `cert`: not a delta
/// CRL, no critical extension but its issuingDistributionPoint, and that
/// one's scope (only end entities, only CAs, some reasons, indirect) one
/// that covers `cert` fully. Why not, otherwise.
pub fn covers(crl: &CertificateList, cert: &Certificate) -> Result<(), String> {
    use der::Decode;
    use x509_cert::ext::pkix::crl::dp::IssuingDistributionPoint;
    const IDP: &str = "2.5.29.28";
    const DELTA: &str = "2.5.29.27";
    for ext in crl.tbs_cert_list.crl_extensions.iter().flatten() {
        let oid = ext.extn_id.to_string();
        if oid == DELTA {
            return Err("it is a delta CRL".into());
        }
        if oid == IDP {
            let idp = IssuingDistributionPoint::from_der(ext.extn_value.as_bytes())
                .map_err(|e| format!("its issuingDistributionPoint does not decode: {e}"))?;
            let ca = matches!(
                cert.tbs_certificate().get_extension::<x509_cert::ext::pkix::BasicConstraints>(),
                Ok(Some((_, bc))) if bc.ca
            );
            if idp.only_contains_ca_certs && !ca {
                return Err("it lists CA certificates only (an ARL)".into());
            }
            if idp.only_contains_user_certs && ca {
                return Err("it lists end-entity certificates only".into());
            }
            if idp.only_contains_attribute_certs || idp.indirect_crl || idp.only_some_reasons.is_some() {
                return Err("its scope is partial (attribute certificates, some reasons, or indirect)".into());
            }
            // A partitioned CRL covers the certificates that name its
            // distribution point (RFC 5280 6.3.3 b.2.i).
            match &idp.distribution_point {
                None => {}
                Some(DistributionPointName::FullName(names)) => {
                    let named = distribution_point_names(cert);
                    if !names.iter().any(|n| named.contains(n)) {
                        return Err("it is the CRL of another distribution point than the certificate's".into());
                    }
                }
                Some(_) => return Err("its distribution point is named relative to its issuer".into()),
            }
        } else if ext.critical {
            return Err(format!("it has a critical extension inkan does not know ({oid})"));
        }
    }
    Ok(())
}

/// Every full name of a certificate's CRL distribution points.
fn distribution_point_names(cert: &Certificate) -> Vec<GeneralName> {
    let Ok(Some((_, CrlDistributionPoints(points)))) = cert.tbs_certificate().get_extension::<CrlDistributionPoints>()
    else {
        return Vec::new();
    };
    points
        .iter()
        .filter_map(|DistributionPoint { distribution_point, .. }| match distribution_point {
            Some(DistributionPointName::FullName(names)) => Some(names.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The `http(s)://` URIs of a certificate's CRL distribution points.
pub fn distribution_points(cert: &Certificate) -> Vec<String> {
    distribution_point_names(cert)
        .into_iter()
        .filter_map(|n| match n {
            GeneralName::UniformResourceIdentifier(uri) => Some(uri.to_string()),
            _ => None,
        })
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        .collect()
}
