//! Certificate profiles modelled on the real HPKI and JPKI certificates
//! (see DESIGN.md, "Certificate profiles").
//!
//! - HPKI signing (second certificates): keyUsage critical nonRepudiation only,
//!   certificatePolicies critical `1.2.392.100495.1.5.1.1.0.1`, a CRL
//!   distribution point, and subjectDirectoryAttributes with the hcRole.
//! - HPKI authentication (the card's TLS client certificate): keyUsage critical
//!   digitalSignature, policy `1.2.392.100495.1.5.1.2.1` critical, clientAuth, hcRole.
//! - JPKI user authentication (利用者証明用): keyUsage critical digitalSignature,
//!   policy `1.2.392.200149.8.5.1.3.30` critical, no personal data.

use der::asn1::{Ia5String, OctetString, SetOfVec};
use der::oid::ObjectIdentifier;
use der::{Decode, Encode, Tagged};
use x509_cert::ext::pkix::certpolicy::PolicyInformation;
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{
    BasicConstraints, CertificatePolicies, CrlDistributionPoints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectAltName, SubjectDirectoryAttributes,
};
use x509_cert::ext::Extension;

use super::PkiError;

/// OIDs of the Japanese healthcare and JPKI PKIs.
pub mod oids {
    use der::oid::ObjectIdentifier;
    /// ISO 17090 healthcare actor attribute (hcRole).
    pub const HC_ROLE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.0.17090.0.1");
    /// MHLW coding scheme of healthcare qualifications.
    pub const HC_ROLE_SCHEME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.392.100495.1.6.1.1");
    /// HPKI signing certificate policy (MEDIS signing CA end entities).
    pub const HPKI_SIGNING_POLICY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.392.100495.1.5.1.1.0.1");
    /// HPKI authentication certificate policy.
    pub const HPKI_AUTH_POLICY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.392.100495.1.5.1.2.1");
    /// JPKI user-authentication certificate policy (利用者証明用).
    pub const JPKI_AUTH_POLICY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.392.200149.8.5.1.3.30");
    /// TLS client authentication.
    pub const CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");
    /// TLS server authentication.
    pub const SERVER_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
}

/// A healthcare qualification, as the hcRole attribute names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qualification {
    /// 医師
    Doctor,
    /// 歯科医師
    Dentist,
    /// 薬剤師
    Pharmacist,
}

impl Qualification {
    /// The CLI / store name.
    pub fn as_str(self) -> &'static str {
        match self {
            Qualification::Doctor => "doctor",
            Qualification::Dentist => "dentist",
            Qualification::Pharmacist => "pharmacist",
        }
    }

    /// The hcRole value in certificates.
    pub fn hc_role(self) -> &'static str {
        match self {
            Qualification::Doctor => "Medical Doctor",
            Qualification::Dentist => "Dentist",
            Qualification::Pharmacist => "Pharmacist",
        }
    }

    /// The Japanese name.
    pub fn japanese(self) -> &'static str {
        match self {
            Qualification::Doctor => "医師",
            Qualification::Dentist => "歯科医師",
            Qualification::Pharmacist => "薬剤師",
        }
    }
}

impl std::str::FromStr for Qualification {
    type Err = super::PkiError;
    fn from_str(s: &str) -> Result<Self, super::PkiError> {
        match s.to_ascii_lowercase().as_str() {
            "doctor" | "medical doctor" => Ok(Qualification::Doctor),
            "dentist" => Ok(Qualification::Dentist),
            "pharmacist" => Ok(Qualification::Pharmacist),
            _ => Err(super::PkiError(format!("unknown qualification {s:?}: use doctor, dentist or pharmacist"))),
        }
    }
}

/// What a certificate is for.
#[derive(Clone, Debug)]
pub enum Kind {
    /// A root CA (self-signed).
    RootCa,
    /// An intermediate CA that issues end-entity certificates only.
    SubCa,
    /// An HPKI signing certificate (a second certificate).
    HpkiSigning {
        /// The holder's qualification.
        role: Qualification,
        /// CRL distribution point URL.
        crl_url: String,
    },
    /// An HPKI authentication (card login) certificate.
    HpkiAuth {
        /// The holder's qualification.
        role: Qualification,
    },
    /// A JPKI user-authentication certificate.
    JpkiAuth,
    /// Another kind with extra extensions (tests: unknown critical extensions).
    WithExtra(Box<Kind>, Vec<Extension>),
    /// Another kind without some of its extensions (tests: a card certificate
    /// without keyUsage).
    Without(Box<Kind>, Vec<ObjectIdentifier>),
    /// A TLS server certificate.
    TlsServer {
        /// DNS names.
        dns: Vec<String>,
        /// IP addresses.
        ips: Vec<std::net::IpAddr>,
    },
}

fn ext(oid: ObjectIdentifier, critical: bool, value: &impl Encode) -> Result<Extension, PkiError> {
    Ok(Extension { extn_id: oid, critical, extn_value: OctetString::new(value.to_der()?)? })
}

fn key_usage(usages: impl Into<der::flagset::FlagSet<KeyUsages>>) -> Result<Extension, PkiError> {
    ext(der::oid::db::rfc5280::ID_CE_KEY_USAGE, true, &KeyUsage(usages.into()))
}

fn policies(policy: ObjectIdentifier) -> Result<Extension, PkiError> {
    let p = CertificatePolicies(vec![PolicyInformation { policy_identifier: policy, policy_qualifiers: None }]);
    ext(der::oid::db::rfc5280::ID_CE_CERTIFICATE_POLICIES, true, &p)
}

/// `subjectDirectoryAttributes` holding the hcRole:
/// `SEQUENCE { hcRole, SET { HCActorData ::= SET { SEQUENCE { [0] SET { [0] scheme, [2] UTF8String role } } } } }`.
fn hc_role(role: Qualification) -> Result<Extension, PkiError> {
    let mut coded = oids::HC_ROLE_SCHEME.to_der()?;
    coded[0] = 0x80; // [0] IMPLICIT OBJECT IDENTIFIER
    let value = role.hc_role().as_bytes();
    coded.push(0x82); // [2] IMPLICIT UTF8String
    coded.push(value.len() as u8);
    coded.extend_from_slice(value);
    let mut coded_data = vec![0xa0, coded.len() as u8]; // codedData [0] IMPLICIT SET
    coded_data.extend_from_slice(&coded);
    let mut actor = vec![0x30, coded_data.len() as u8];
    actor.extend_from_slice(&coded_data);
    let mut actor_data = vec![0x31, actor.len() as u8];
    actor_data.extend_from_slice(&actor);
    let mut values = SetOfVec::new();
    values.insert(<der::Any as der::Decode>::from_der(&actor_data)?)?;
    let attrs = SubjectDirectoryAttributes(vec![x509_cert::attr::Attribute { oid: oids::HC_ROLE, values }]);
    ext(der::oid::db::rfc5280::ID_CE_SUBJECT_DIRECTORY_ATTRIBUTES, false, &attrs)
}

/// Reads the hcRole value (e.g. "Medical Doctor") from a certificate.
pub fn read_hc_role(cert: &x509_cert::Certificate) -> Option<String> {
    let (_, sda) = cert.tbs_certificate().get_extension::<SubjectDirectoryAttributes>().ok()??;
    let attr = sda.0.iter().find(|a| a.oid == oids::HC_ROLE)?;
    let value = attr.values.iter().next()?.to_der().ok()?;
    // HCActorData SET -> HCActor SEQUENCE -> codedData [0] -> codeDataValue [2] UTF8String
    let actor_data = der::asn1::AnyRef::from_der(&value).ok()?;
    let actor = children(actor_data.value())?.into_iter().next()?;
    let coded = children(actor.value())?.into_iter().find(|c| c.tag().number().value() == 0)?;
    let role = children(coded.value())?.into_iter().find(|c| c.tag().number().value() == 2)?;
    String::from_utf8(role.value().to_vec()).ok()
}

/// The TLVs inside a constructed value.
fn children(value: &[u8]) -> Option<Vec<der::asn1::AnyRef<'_>>> {
    use der::Reader;
    let mut reader = der::SliceReader::new(value).ok()?;
    let mut out = Vec::new();
    while !reader.is_finished() {
        out.push(der::Decode::decode(&mut reader).ok()?);
    }
    Some(out)
}

/// The extensions for a certificate of this kind (besides the key identifiers,
/// which the CA adds).
pub fn extensions(kind: &Kind) -> Result<Vec<Extension>, PkiError> {
    use der::oid::db::rfc5280 as ce;
    Ok(match kind {
        Kind::RootCa => vec![
            ext(ce::ID_CE_BASIC_CONSTRAINTS, true, &BasicConstraints { ca: true, path_len_constraint: None })?,
            key_usage(KeyUsages::KeyCertSign | KeyUsages::CRLSign)?,
        ],
        Kind::SubCa => vec![
            ext(ce::ID_CE_BASIC_CONSTRAINTS, true, &BasicConstraints { ca: true, path_len_constraint: Some(0) })?,
            key_usage(KeyUsages::KeyCertSign | KeyUsages::CRLSign)?,
        ],
        Kind::HpkiSigning { role, crl_url } => {
            let dp = CrlDistributionPoints(vec![DistributionPoint {
                distribution_point: Some(DistributionPointName::FullName(vec![
                    GeneralName::UniformResourceIdentifier(Ia5String::new(crl_url)?),
                ])),
                reasons: None,
                crl_issuer: None,
            }]);
            vec![
                key_usage(KeyUsages::NonRepudiation)?,
                policies(oids::HPKI_SIGNING_POLICY)?,
                ext(ce::ID_CE_CRL_DISTRIBUTION_POINTS, false, &dp)?,
                hc_role(*role)?,
            ]
        }
        Kind::HpkiAuth { role } => vec![
            key_usage(KeyUsages::DigitalSignature)?,
            policies(oids::HPKI_AUTH_POLICY)?,
            ext(ce::ID_CE_EXT_KEY_USAGE, false, &ExtendedKeyUsage(vec![oids::CLIENT_AUTH]))?,
            hc_role(*role)?,
        ],
        Kind::JpkiAuth => vec![key_usage(KeyUsages::DigitalSignature)?, policies(oids::JPKI_AUTH_POLICY)?],
        Kind::Without(base, dropped) => {
            let mut exts = extensions(base)?;
            exts.retain(|e| !dropped.contains(&e.extn_id));
            exts
        }
        Kind::WithExtra(base, extra) => {
            let mut exts = extensions(base)?;
            exts.extend(extra.iter().cloned());
            exts
        }
        Kind::TlsServer { dns, ips } => {
            let mut names = Vec::new();
            for d in dns {
                names.push(GeneralName::DnsName(Ia5String::new(d)?));
            }
            for ip in ips {
                names.push(GeneralName::from(*ip));
            }
            vec![
                key_usage(KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment)?,
                ext(ce::ID_CE_EXT_KEY_USAGE, false, &ExtendedKeyUsage(vec![oids::SERVER_AUTH]))?,
                ext(ce::ID_CE_SUBJECT_ALT_NAME, false, &SubjectAltName(names))?,
            ]
        }
    })
}
