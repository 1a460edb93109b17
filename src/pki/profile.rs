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

/// `subjectDirectoryAttributes` holding the hcRole, encoded as MEDIS's HPKI
/// certificates encode it (ISO 17090-3: `HCActorData ::= SET OF HCActor`,
/// `HCActor ::= SEQUENCE { codedData [0] EXPLICIT CodedData }`, `CodedData
/// ::= SET { codingSchemeReference [0] EXPLICIT OID, codeDataValue [2]
/// EXPLICIT UTF8String }`):
/// `31 { 30 { a0 { 31 { a0 { 06 scheme } a2 { 0c role } } } } }`.
fn hc_role(role: Qualification) -> Result<Extension, PkiError> {
    fn wrap(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if body.len() < 0x80 {
            out.push(body.len() as u8);
        } else {
            out.extend_from_slice(&[0x81, body.len() as u8]);
        }
        out.extend_from_slice(body);
        out
    }
    let scheme = wrap(0xa0, &oids::HC_ROLE_SCHEME.to_der()?);
    let value = wrap(0xa2, &wrap(0x0c, role.hc_role().as_bytes()));
    let coded = wrap(0x31, &[scheme, value].concat());
    let actor_data = wrap(0x31, &wrap(0x30, &wrap(0xa0, &coded)));
    let mut values = SetOfVec::new();
    values.insert(<der::Any as der::Decode>::from_der(&actor_data)?)?;
    let attrs = SubjectDirectoryAttributes(vec![x509_cert::attr::Attribute { oid: oids::HC_ROLE, values }]);
    ext(der::oid::db::rfc5280::ID_CE_SUBJECT_DIRECTORY_ATTRIBUTES, false, &attrs)
}

/// Reads the hcRole value (e.g. "Medical Doctor") from a certificate: the
/// encoding of MEDIS's certificates ([`extensions`] writes it), and the one
/// inkan's fixtures wrote before (implicit tags, no inner SET).
pub fn read_hc_role(cert: &x509_cert::Certificate) -> Option<String> {
    let (_, sda) = cert.tbs_certificate().get_extension::<SubjectDirectoryAttributes>().ok()??;
    let attr = sda.0.iter().find(|a| a.oid == oids::HC_ROLE)?;
    let value = attr.values.iter().next()?.to_der().ok()?;
    // HCActorData SET -> HCActor SEQUENCE -> codedData [0]
    let actor_data = der::asn1::AnyRef::from_der(&value).ok()?;
    let actor = children(actor_data.value())?.into_iter().next()?;
    let coded = children(actor.value())?.into_iter().find(|c| c.tag().number().value() == 0)?;
    let mut fields = children(coded.value())?;
    // CodedData as a SET inside the explicit [0].
    if fields.len() == 1 && fields[0].tag() == der::Tag::Set {
        fields = children(fields[0].value())?;
    }
    let role = fields.into_iter().find(|c| c.tag().number().value() == 2)?;
    let bytes = if role.tag().is_constructed() {
        // [2] EXPLICIT UTF8String
        let inner = der::asn1::AnyRef::from_der(role.value()).ok()?;
        (inner.tag() == der::Tag::Utf8String).then(|| inner.value())?
    } else {
        role.value()
    };
    String::from_utf8(bytes.to_vec()).ok()
}

/// The arc of HPKI signing certificate policies (`1.2.392.100495.1.5.1.1.*`).
pub const HPKI_SIGNING_POLICY_ARC: &str = "1.2.392.100495.1.5.1.1.";

/// What keeps `cert` from being an HPKI signing certificate (a second
/// certificate) for a holder of `qualification`: X.509 v3, keyUsage with
/// nonRepudiation, a certificate policy under the HPKI signing arc, and an
/// hcRole that is the qualification's. Empty when it fits.
pub fn signing_profile_problems(cert: &x509_cert::Certificate, qualification: Qualification) -> Vec<String> {
    let tbs = cert.tbs_certificate();
    let mut problems = Vec::new();
    if tbs.version() != x509_cert::certificate::Version::V3 {
        problems.push("it is not an X.509 v3 certificate (no extensions)".to_owned());
    }
    if !super::has_non_repudiation(cert) {
        problems.push("its keyUsage lacks nonRepudiation (contentCommitment)".to_owned());
    }
    let policies = match tbs.get_extension::<CertificatePolicies>() {
        Ok(Some((_, p))) => p.0.iter().map(|p| p.policy_identifier.to_string()).collect(),
        _ => Vec::new(),
    };
    if !policies.iter().any(|p| p.starts_with(HPKI_SIGNING_POLICY_ARC)) {
        problems.push(format!(
            "it names no HPKI signing policy ({HPKI_SIGNING_POLICY_ARC}*; it names {})",
            if policies.is_empty() { "none".to_owned() } else { policies.join(", ") }
        ));
    }
    match read_hc_role(cert) {
        Some(role) if role == qualification.hc_role() => {}
        Some(role) => problems.push(format!(
            "its hcRole is {role:?}, but the user is a {} ({:?})",
            qualification.as_str(),
            qualification.hc_role()
        )),
        None => problems.push("it names no hcRole (subjectDirectoryAttributes)".to_owned()),
    }
    problems
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> x509_cert::Certificate {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/eps").join(name);
        x509_cert::Certificate::from_der(&std::fs::read(path).expect("sample")).expect("certificate")
    }

    #[test]
    fn hc_roles_are_written_as_medis_writes_them_and_read_back() {
        let doctor = sample("extracted-doctor-signer.der");
        let pharmacist = sample("extracted-pharmacist-signer.der");
        assert_eq!(read_hc_role(&doctor).as_deref(), Some("Medical Doctor"));
        assert_eq!(read_hc_role(&pharmacist).as_deref(), Some("Pharmacist"));
        let theirs = doctor
            .tbs_certificate()
            .extensions()
            .into_iter()
            .flatten()
            .find(|e| e.extn_id == der::oid::db::rfc5280::ID_CE_SUBJECT_DIRECTORY_ATTRIBUTES)
            .expect("subjectDirectoryAttributes");
        let ours = hc_role(Qualification::Doctor).expect("extension");
        assert_eq!(ours.extn_value, theirs.extn_value, "byte for byte as MEDIS's");
        assert_eq!(ours.critical, theirs.critical);
    }
}
