//! Validation of card certificates (HPKI and JPKI TLS client certificates).
//!
//! rustls' webpki verifier refuses certificates with a critical
//! certificatePolicies extension, which every HPKI and JPKI card certificate
//! has. The card listener therefore only checks, in the TLS handshake, that the
//! client holds the certificate's key; the chain is validated here, per scheme,
//! against that scheme's own trust store:
//!
//! - the path from the leaf to a configured anchor (names and signatures), each
//!   certificate within its validity period, CA certificates with
//!   basicConstraints cA and keyCertSign;
//! - every critical extension known (keyUsage, basicConstraints,
//!   certificatePolicies, extendedKeyUsage, subjectAltName, ...); any other
//!   critical extension is refused;
//! - the leaf's keyUsage allows digitalSignature, and its policies include one of
//!   the scheme's (HPKI authentication or JPKI user authentication);
//! - the leaf is not revoked in the CRL of its issuer, and that CRL is fresh
//!   (a stale CRL is an error unless `danger_allow_stale_crl` is set).

use std::time::SystemTime;

use der::oid::ObjectIdentifier;
use der::{Decode, Encode};
use x509_cert::crl::CertificateList;
use x509_cert::ext::pkix::{BasicConstraints, CertificatePolicies, ExtendedKeyUsage, KeyUsage, KeyUsages};
use x509_cert::Certificate;

use super::PkiError;
use crate::pki;

/// anyExtendedKeyUsage (RFC 5280 §4.2.1.12): not enough for a card login.
#[cfg(test)]
const ANY_EXTENDED_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37.0");

/// Why a card certificate was refused. The messages are shown to users.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CardCertError {
    /// No certificate was presented.
    #[error("no client certificate was presented")]
    Missing,
    /// Not parseable.
    #[error("the certificate cannot be read: {0}")]
    Malformed(String),
    /// No path to a trusted anchor of this scheme.
    #[error("the certificate is not issued by a trusted {scheme} CA")]
    Untrusted {
        /// `HPKI` or `JPKI`.
        scheme: &'static str,
    },
    /// Outside its validity period.
    #[error("the certificate has expired or is not yet valid ({0})")]
    Expired(String),
    /// Revoked in the CRL.
    #[error("the certificate has been revoked")]
    Revoked,
    /// A CA of the chain is revoked in its issuer's CRL.
    #[error("the issuing CA {0} has been revoked")]
    CaRevoked(String),
    /// The CRL is out of date.
    #[error("the revocation list of {0} is out of date")]
    StaleCrl(String),
    /// No CRL for the issuer.
    #[error("no revocation list is configured for {0}")]
    NoCrl(String),
    /// An unknown critical extension.
    #[error("the certificate has an unknown critical extension {0}")]
    UnknownCriticalExtension(String),
    /// Wrong key usage or policy for this scheme.
    #[error("the certificate is not a {scheme} authentication certificate ({reason})")]
    WrongKind {
        /// `HPKI` or `JPKI`.
        scheme: &'static str,
        /// What is missing.
        reason: String,
    },
}

/// The extensions inkan understands (and may therefore accept as critical).
pub(crate) const KNOWN_EXTENSIONS: &[&str] = &[
    "2.5.29.15",         // keyUsage
    "2.5.29.19",         // basicConstraints
    "2.5.29.32",         // certificatePolicies
    "2.5.29.37",         // extendedKeyUsage
    "2.5.29.17",         // subjectAltName
    "2.5.29.18",         // issuerAltName
    "2.5.29.14",         // subjectKeyIdentifier
    "2.5.29.35",         // authorityKeyIdentifier
    "2.5.29.9",          // subjectDirectoryAttributes
    "2.5.29.31",         // cRLDistributionPoints
    "1.3.6.1.5.5.7.1.1", // authorityInfoAccess
];

/// One scheme's trust store.
#[derive(Clone, Debug)]
pub struct TrustStore {
    /// `HPKI` or `JPKI`.
    pub scheme: &'static str,
    anchors: Vec<Certificate>,
    intermediates: Vec<Certificate>,
    crls: Vec<CertificateList>,
    policies: Vec<ObjectIdentifier>,
    allow_stale_crl: bool,
}

/// A validated leaf.
#[derive(Clone, Debug)]
pub struct ValidatedCert {
    /// The leaf.
    pub certificate: Certificate,
    /// DER of the issuer name.
    pub issuer: Vec<u8>,
    /// Serial number bytes.
    pub serial: Vec<u8>,
    /// SHA-256 of the SubjectPublicKeyInfo.
    pub spki_sha256: Vec<u8>,
}

impl TrustStore {
    /// A trust store from certificates and CRLs (DER), requiring one of `policies` in the leaf.
    pub fn new(
        scheme: &'static str,
        anchors: Vec<Vec<u8>>,
        intermediates: Vec<Vec<u8>>,
        crls: Vec<Vec<u8>>,
        policies: Vec<ObjectIdentifier>,
        allow_stale_crl: bool,
    ) -> Result<Self, PkiError> {
        let parse = |v: Vec<Vec<u8>>| {
            v.iter().map(|d| Certificate::from_der(d).map_err(PkiError::from)).collect::<Result<Vec<_>, _>>()
        };
        Ok(TrustStore {
            scheme,
            anchors: parse(anchors)?,
            intermediates: parse(intermediates)?,
            crls: crls
                .iter()
                .map(|d| CertificateList::from_der(d).map_err(PkiError::from))
                .collect::<Result<_, _>>()?,
            policies,
            allow_stale_crl,
        })
    }

    /// Validates a presented chain (leaf first, DER) at `now`.
    pub fn validate(&self, chain: &[Vec<u8>], now: SystemTime) -> Result<ValidatedCert, CardCertError> {
        let leaf_der = chain.first().ok_or(CardCertError::Missing)?;
        let leaf = Certificate::from_der(leaf_der).map_err(|e| CardCertError::Malformed(e.to_string()))?;
        let presented: Vec<Certificate> = chain[1..].iter().filter_map(|d| Certificate::from_der(d).ok()).collect();
        let untrusted = || CardCertError::Untrusted { scheme: self.scheme };

        check_extensions(&leaf)?;
        check_time(&leaf, now)?;
        self.check_leaf_kind(&leaf)?;

        // Walk up: current -> its issuer, among presented and configured intermediates, until an anchor.
        // `links` holds each (certificate, issuer) pair of the path.
        let mut current = leaf.clone();
        let mut links: Vec<(Certificate, Certificate)> = Vec::new();
        for depth in 0..6 {
            if let Some(anchor) = self.anchors.iter().find(|a| issued_by(&current, a)) {
                check_time(anchor, now)?;
                links.push((current, anchor.clone()));
                break;
            }
            let next = presented
                .iter()
                .chain(self.intermediates.iter())
                .find(|c| issued_by(&current, c))
                .ok_or_else(untrusted)?
                .clone();
            check_extensions(&next)?;
            check_time(&next, now)?;
            check_ca(&next).map_err(|_| untrusted())?;
            links.push((current, next.clone()));
            current = next;
            if depth == 5 {
                return Err(untrusted());
            }
        }
        let mut links = links.into_iter();
        let (_, issuer) = links.next().ok_or_else(untrusted)?;
        // The card itself: its issuer's CRL is required.
        self.check_revocation(&leaf, &issuer, now, true)?;
        // Intermediate CAs: checked against their issuer's CRL (an ARL) when one is configured.
        for (ca, ca_issuer) in links {
            self.check_revocation(&ca, &ca_issuer, now, false)?;
        }

        let tbs = leaf.tbs_certificate();
        Ok(ValidatedCert {
            issuer: tbs.issuer().to_der().map_err(|e| CardCertError::Malformed(e.to_string()))?,
            serial: tbs.serial_number().as_bytes().to_vec(),
            spki_sha256: sha256(
                &tbs.subject_public_key_info().to_der().map_err(|e| CardCertError::Malformed(e.to_string()))?,
            ),
            certificate: leaf,
        })
    }

    fn check_leaf_kind(&self, leaf: &Certificate) -> Result<(), CardCertError> {
        let wrong = |reason: &str| CardCertError::WrongKind { scheme: self.scheme, reason: reason.into() };
        let tbs = leaf.tbs_certificate();
        // A card's authentication key signs the TLS handshake: its
        // certificate must say digitalSignature, and if it limits its
        // purposes (extendedKeyUsage), client authentication must be one,
        // named: anyExtendedKeyUsage says nothing about this purpose, and a
        // certificate issued for everything is not a card's.
        match tbs.get_extension::<KeyUsage>() {
            Ok(Some((_, ku))) if ku.0.contains(KeyUsages::DigitalSignature) => {}
            Ok(Some(_)) => return Err(wrong("its key usage does not allow digitalSignature")),
            Ok(None) => return Err(wrong("it has no key usage")),
            Err(e) => return Err(CardCertError::Malformed(format!("keyUsage: {e}"))),
        }
        match tbs.get_extension::<ExtendedKeyUsage>() {
            Ok(Some((_, eku))) if !eku.0.contains(&pki::profile::oids::CLIENT_AUTH) => {
                return Err(wrong("its extended key usage does not allow client authentication"));
            }
            Ok(_) => {}
            Err(e) => return Err(CardCertError::Malformed(format!("extendedKeyUsage: {e}"))),
        }
        let policies = match tbs.get_extension::<CertificatePolicies>() {
            Ok(Some((_, p))) => p.0.into_iter().map(|p| p.policy_identifier).collect::<Vec<_>>(),
            _ => Vec::new(),
        };
        if !self.policies.is_empty() && !policies.iter().any(|p| self.policies.contains(p)) {
            return Err(wrong("it has none of the scheme's certificate policies"));
        }
        if let Ok(Some((_, bc))) = tbs.get_extension::<BasicConstraints>() {
            if bc.ca {
                return Err(wrong("it is a CA certificate"));
            }
        }
        Ok(())
    }

    /// Checks `cert` against its issuer's CRL; without one, `required` decides.
    fn check_revocation(
        &self,
        cert: &Certificate,
        issuer: &Certificate,
        now: SystemTime,
        required: bool,
    ) -> Result<(), CardCertError> {
        let issuer_name = issuer.tbs_certificate().subject();
        let Some(crl) = self.crls.iter().find(|crl| super::crl::signed_by(crl, issuer)) else {
            return if required { Err(CardCertError::NoCrl(issuer_name.to_string())) } else { Ok(()) };
        };
        let this_update = crl.tbs_cert_list.this_update.to_system_time();
        let fresh = this_update <= now && crl.tbs_cert_list.next_update.is_some_and(|n| now <= n.to_system_time());
        if !fresh && !self.allow_stale_crl {
            return Err(CardCertError::StaleCrl(issuer_name.to_string()));
        }
        let serial = cert.tbs_certificate().serial_number();
        if crl.tbs_cert_list.revoked_certificates.iter().flatten().any(|r| r.serial_number == *serial) {
            return Err(if required {
                CardCertError::Revoked
            } else {
                CardCertError::CaRevoked(cert.tbs_certificate().subject().to_string())
            });
        }
        Ok(())
    }
}

fn sha256(data: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(data).to_vec()
}

fn check_time(cert: &Certificate, now: SystemTime) -> Result<(), CardCertError> {
    pki::check_validity(cert, now).map_err(|e| CardCertError::Expired(e.0))
}

fn check_extensions(cert: &Certificate) -> Result<(), CardCertError> {
    for ext in cert.tbs_certificate().extensions().into_iter().flatten() {
        let oid = ext.extn_id.to_string();
        if ext.critical && !KNOWN_EXTENSIONS.contains(&oid.as_str()) {
            return Err(CardCertError::UnknownCriticalExtension(oid));
        }
    }
    Ok(())
}

fn check_ca(cert: &Certificate) -> Result<(), ()> {
    let tbs = cert.tbs_certificate();
    match tbs.get_extension::<BasicConstraints>() {
        Ok(Some((_, bc))) if bc.ca => {}
        _ => return Err(()),
    }
    if let Ok(Some((_, ku))) = tbs.get_extension::<KeyUsage>() {
        if !ku.0.contains(KeyUsages::KeyCertSign) {
            return Err(());
        }
    }
    Ok(())
}

fn issued_by(cert: &Certificate, issuer: &Certificate) -> bool {
    cert.tbs_certificate().issuer() == issuer.tbs_certificate().subject() && pki::check_issued_by(cert, issuer).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::profile::oids;

    fn fixture(rel: &str) -> Vec<Vec<u8>> {
        pki::read_certificates(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki").join(rel))
            .expect("fixture")
    }

    fn crl(rel: &str) -> Vec<u8> {
        let text = std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki/crl").join(rel))
            .expect("crl");
        der::pem::decode_vec(&text).expect("pem").1
    }

    fn hpki() -> TrustStore {
        TrustStore::new(
            "HPKI",
            fixture("hpki-root.pem"),
            fixture("hpki-auth-ca.pem"),
            vec![crl("hpki-auth-ca.crl.pem")],
            vec![oids::HPKI_AUTH_POLICY],
            false,
        )
        .expect("store")
    }

    fn jpki() -> TrustStore {
        TrustStore::new(
            "JPKI",
            fixture("jpki-root.pem"),
            fixture("jpki-ca.pem"),
            vec![crl("jpki-ca.crl.pem")],
            vec![oids::JPKI_AUTH_POLICY],
            false,
        )
        .expect("store")
    }

    #[allow(clippy::disallowed_methods)]
    fn now() -> SystemTime {
        SystemTime::now()
    }

    #[test]
    fn holders_validate_per_scheme() {
        assert!(hpki().validate(&fixture("holders/hpki-doctor.pem"), now()).is_ok());
        assert!(jpki().validate(&fixture("holders/jpki-1.pem"), now()).is_ok());
        assert_eq!(
            hpki().validate(&fixture("holders/jpki-1.pem"), now()).err(),
            Some(CardCertError::WrongKind {
                scheme: "HPKI",
                reason: "it has none of the scheme's certificate policies".into()
            })
        );
        assert!(matches!(
            jpki().validate(&fixture("holders/hpki-doctor.pem"), now()),
            Err(CardCertError::WrongKind { .. })
        ));
    }

    #[test]
    fn revoked_expired_and_stale_are_refused() {
        assert_eq!(hpki().validate(&fixture("holders/hpki-revoked.pem"), now()).err(), Some(CardCertError::Revoked));
        assert_eq!(jpki().validate(&fixture("holders/jpki-revoked.pem"), now()).err(), Some(CardCertError::Revoked));
        assert!(matches!(hpki().validate(&fixture("holders/hpki-expired.pem"), now()), Err(CardCertError::Expired(_))));
        let later = now() + std::time::Duration::from_secs(11 * 365 * 86_400);
        // Ten years on, the holder has expired first.
        assert!(matches!(hpki().validate(&fixture("holders/hpki-doctor.pem"), later), Err(CardCertError::Expired(_))));
        // A CRL past its nextUpdate, properly signed by the CA.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki");
        let ca = crate::pki::ca::Ca::load(&dir.join("hpki-auth-ca.pem"), &dir.join("hpki-auth-ca.key")).expect("ca");
        let day = std::time::Duration::from_secs(86_400);
        let crl = ca.crl(2, &[], now() - 10 * day, now() - day).expect("crl");
        let mut stale = hpki();
        stale.crls = vec![CertificateList::from_der(&crl).expect("crl")];
        assert!(matches!(stale.validate(&fixture("holders/hpki-doctor.pem"), now()), Err(CardCertError::StaleCrl(_))));
        stale.allow_stale_crl = true;
        assert!(
            stale.validate(&fixture("holders/hpki-doctor.pem"), now()).is_ok(),
            "danger_allow_stale_crl accepts it"
        );
        // A tampered CRL no longer verifies: as if there were none.
        let mut tampered = hpki();
        tampered.crls.iter_mut().for_each(|c| c.tbs_cert_list.revoked_certificates = None);
        assert!(matches!(tampered.validate(&fixture("holders/hpki-revoked.pem"), now()), Err(CardCertError::NoCrl(_))));
    }

    #[test]
    fn unknown_critical_extensions_are_refused_known_ones_accepted() {
        use crate::pki::profile::{Kind, Qualification};
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki");
        let ca = crate::pki::ca::Ca::load(&dir.join("hpki-auth-ca.pem"), &dir.join("hpki-auth-ca.key")).expect("ca");
        let holder = Certificate::from_der(&fixture("holders/hpki-doctor.pem")[0]).expect("holder");
        let issue = |critical: bool| {
            let ext = x509_cert::ext::Extension {
                extn_id: ObjectIdentifier::new_unwrap("1.3.6.1.4.1.99999.1"),
                critical,
                extn_value: der::asn1::OctetString::new(vec![0x05, 0x00]).expect("value"),
            };
            let kind = Kind::WithExtra(Box::new(Kind::HpkiAuth { role: Qualification::Doctor }), vec![ext]);
            let day = std::time::Duration::from_secs(86_400);
            let cert = ca
                .issue(
                    kind,
                    holder.tbs_certificate().subject().clone(),
                    holder.tbs_certificate().subject_public_key_info().clone(),
                    now() - day,
                    now() + day,
                )
                .expect("issue");
            vec![cert.to_der().expect("der")]
        };
        assert_eq!(
            hpki().validate(&issue(true), now()).err(),
            Some(CardCertError::UnknownCriticalExtension("1.3.6.1.4.1.99999.1".into()))
        );
        assert!(hpki().validate(&issue(false), now()).is_ok(), "unknown but not critical is fine");
    }

    #[test]
    fn a_card_certificate_must_allow_digital_signature_and_client_auth() {
        use crate::pki::profile::{Kind, Qualification};
        use der::oid::db::rfc5280::{ID_CE_EXT_KEY_USAGE, ID_CE_KEY_USAGE};
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki");
        let ca = crate::pki::ca::Ca::load(&dir.join("hpki-auth-ca.pem"), &dir.join("hpki-auth-ca.key")).expect("ca");
        let holder = Certificate::from_der(&fixture("holders/hpki-doctor.pem")[0]).expect("holder");
        let day = std::time::Duration::from_secs(86_400);
        let issue = |kind: Kind| {
            let tbs = holder.tbs_certificate();
            let cert = ca
                .issue(kind, tbs.subject().clone(), tbs.subject_public_key_info().clone(), now() - day, now() + day)
                .expect("issue");
            vec![cert.to_der().expect("der")]
        };
        let auth = || Box::new(Kind::HpkiAuth { role: Qualification::Doctor });
        let eku = |oids: Vec<ObjectIdentifier>| {
            let value = x509_cert::ext::pkix::ExtendedKeyUsage(oids).to_der().expect("eku");
            x509_cert::ext::Extension {
                extn_id: ID_CE_EXT_KEY_USAGE,
                critical: false,
                extn_value: der::asn1::OctetString::new(value).expect("value"),
            }
        };
        let reason = |kind: Kind| match hpki().validate(&issue(kind), now()) {
            Err(CardCertError::WrongKind { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(reason(Kind::Without(auth(), vec![ID_CE_KEY_USAGE])), "it has no key usage");
        let server_only = Kind::WithExtra(
            Box::new(Kind::Without(auth(), vec![ID_CE_EXT_KEY_USAGE])),
            vec![eku(vec![pki::profile::oids::SERVER_AUTH])],
        );
        assert_eq!(reason(server_only), "its extended key usage does not allow client authentication");
        let any = Kind::WithExtra(
            Box::new(Kind::Without(auth(), vec![ID_CE_EXT_KEY_USAGE])),
            vec![eku(vec![ANY_EXTENDED_KEY_USAGE])],
        );
        assert_eq!(reason(any), "its extended key usage does not allow client authentication");
        let both = Kind::WithExtra(
            Box::new(Kind::Without(auth(), vec![ID_CE_EXT_KEY_USAGE])),
            vec![eku(vec![ANY_EXTENDED_KEY_USAGE, pki::profile::oids::CLIENT_AUTH])],
        );
        assert!(hpki().validate(&issue(both), now()).is_ok());
        assert!(hpki().validate(&issue(Kind::Without(auth(), vec![ID_CE_EXT_KEY_USAGE])), now()).is_ok());
    }

    #[test]
    fn missing_crl_fails_closed() {
        let mut store = hpki();
        store.crls.clear();
        assert!(matches!(store.validate(&fixture("holders/hpki-doctor.pem"), now()), Err(CardCertError::NoCrl(_))));
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(hpki().validate(&[vec![0x30, 0x01, 0x00]], now()), Err(CardCertError::Malformed(_))));
        assert_eq!(hpki().validate(&[], now()).err(), Some(CardCertError::Missing));
    }
}
