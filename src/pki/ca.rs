//! A small certificate authority with an RSA key in a file: it makes the
//! fixture PKI, issues demo users' second certificates from their CSRs, and
//! lets tests issue expired or foreign certificates. Not for production use:
//! a real HPKI CA issues inkan's certificates.

use std::path::Path;
use std::time::{Duration, SystemTime};

use der::referenced::OwnedToRef;
use der::{Decode, Encode};
use rsa::pkcs8::DecodePrivateKey;
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
use x509_cert::ext::pkix::crl::CrlNumber;
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, SubjectKeyIdentifier};
use x509_cert::ext::{Extension, ToExtension};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate};

use super::profile::{extensions, Kind};
use super::PkiError;

type SigningKey = rsa::pkcs1v15::SigningKey<sha2::Sha256>;

/// A CA: its certificate and its private key.
pub struct Ca {
    /// The CA certificate.
    pub certificate: Certificate,
    key: SigningKey,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("subject", &self.certificate.tbs_certificate().subject().to_string()).finish()
    }
}

/// Reads an RSA private key from a PKCS#8 PEM file.
pub fn read_key(path: &Path) -> Result<rsa::RsaPrivateKey, PkiError> {
    let text = std::fs::read_to_string(path).map_err(|e| PkiError(format!("cannot read {}: {e}", path.display())))?;
    let (_, der) =
        der::pem::decode_vec(text.as_bytes()).map_err(|e| PkiError(format!("{}: not PEM: {e}", path.display())))?;
    rsa::RsaPrivateKey::from_pkcs8_der(&der)
        .map_err(|e| PkiError(format!("{}: not a PKCS#8 RSA key: {e}", path.display())))
}

/// The SubjectPublicKeyInfo of an RSA private key.
pub fn public_key_info(key: &rsa::RsaPrivateKey) -> Result<SubjectPublicKeyInfoOwned, PkiError> {
    use rsa::pkcs8::EncodePublicKey;
    let der = key.to_public_key().to_public_key_der().map_err(|e| PkiError(e.to_string()))?;
    Ok(SubjectPublicKeyInfoOwned::from_der(der.as_bytes())?)
}

/// A random positive 16-byte serial number.
pub fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| PkiError(format!("no randomness: {e}")))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::new(&bytes)?)
}

/// A profile for x509-cert's builder: the extensions of `kind`, plus the
/// subject and authority key identifiers.
struct Profile {
    issuer: Name,
    subject: Name,
    kind: Kind,
}

impl BuilderProfile for Profile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        spk: spki::SubjectPublicKeyInfoRef<'_>,
        issuer_spk: spki::SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        // The profiles only fail on an encoding bug; the builder's error type has no room for our message.
        let mut exts =
            extensions(&self.kind).map_err(|_| x509_cert::builder::Error::Asn1(der::ErrorKind::Failed.into()))?;
        let ski = SubjectKeyIdentifier::try_from(spk)?;
        exts.push((&ski).to_extension(tbs.subject(), &exts)?);
        if !matches!(self.kind, Kind::RootCa) {
            let aki_id = SubjectKeyIdentifier::try_from(issuer_spk)?;
            let aki = AuthorityKeyIdentifier { key_identifier: Some(aki_id.0), ..Default::default() };
            exts.push((&aki).to_extension(tbs.subject(), &exts)?);
        }
        Ok(exts)
    }
}

fn build_error(e: x509_cert::builder::Error) -> PkiError {
    PkiError(format!("cannot build the certificate: {e}"))
}

fn time(t: SystemTime) -> Result<Time, PkiError> {
    // Whole seconds: certificates carry no fractions.
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Ok(Time::try_from(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))?)
}

fn validity(not_before: SystemTime, not_after: SystemTime) -> Result<Validity, PkiError> {
    let mut v = Validity::from_now(Duration::from_secs(1))?;
    v.not_before = time(not_before)?;
    v.not_after = time(not_after)?;
    Ok(v)
}

impl Ca {
    /// Loads a CA from its certificate (PEM) and PKCS#8 key (PEM).
    pub fn load(cert: &Path, key: &Path) -> Result<Ca, PkiError> {
        let certificate = super::read_certificate(cert)?;
        let key_path = key;
        let key = read_key(key_path)?;
        if public_key_info(&key)? != *certificate.tbs_certificate().subject_public_key_info() {
            return Err(PkiError(format!("{} is not the key of {}", key_path.display(), cert.display())));
        }
        Ok(Ca { certificate, key: SigningKey::new(key) })
    }

    /// Makes a self-signed root CA.
    pub fn new_root(
        subject: Name,
        key: rsa::RsaPrivateKey,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Ca, PkiError> {
        let spki = public_key_info(&key)?;
        let signer = SigningKey::new(key);
        let profile = Profile { issuer: subject.clone(), subject, kind: Kind::RootCa };
        let builder = CertificateBuilder::new(profile, random_serial()?, validity(not_before, not_after)?, spki)
            .map_err(build_error)?;
        let certificate = builder.build::<_, rsa::pkcs1v15::Signature>(&signer).map_err(build_error)?;
        Ok(Ca { certificate, key: signer })
    }

    /// Turns an issued CA certificate and its key into a CA.
    pub fn from_parts(certificate: Certificate, key: rsa::RsaPrivateKey) -> Ca {
        Ca { certificate, key: SigningKey::new(key) }
    }

    /// Issues a certificate of `kind` for `subject` and its public key.
    pub fn issue(
        &self,
        kind: Kind,
        subject: Name,
        public_key: SubjectPublicKeyInfoOwned,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Certificate, PkiError> {
        let profile = Profile { issuer: self.certificate.tbs_certificate().subject().clone(), subject, kind };
        let builder = CertificateBuilder::new(profile, random_serial()?, validity(not_before, not_after)?, public_key)
            .map_err(build_error)?;
        builder.build::<_, rsa::pkcs1v15::Signature>(&self.key).map_err(build_error)
    }

    /// Issues a certificate from a PKCS#10 request (DER or PEM); the request's
    /// signature is checked first.
    pub fn issue_from_csr(
        &self,
        kind: Kind,
        csr: &[u8],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Certificate, PkiError> {
        let der = if csr.starts_with(b"-----") {
            der::pem::decode_vec(csr).map_err(|e| PkiError(format!("not a PEM request: {e}")))?.1
        } else {
            csr.to_vec()
        };
        let req = x509_cert::request::CertReq::from_der(&der)?;
        check_csr_signature(&req)?;
        self.issue(kind, req.info.subject.clone(), req.info.public_key.clone(), not_before, not_after)
    }

    /// Issues a CRL listing `revoked` serial numbers, valid from `this_update` to `next_update`.
    pub fn crl(
        &self,
        number: u32,
        revoked: &[SerialNumber],
        this_update: SystemTime,
        next_update: SystemTime,
    ) -> Result<Vec<u8>, PkiError> {
        let entries: Vec<RevokedCert> = revoked
            .iter()
            .map(|s| {
                Ok(RevokedCert {
                    serial_number: s.clone(),
                    revocation_date: time(this_update)?,
                    crl_entry_extensions: None,
                })
            })
            .collect::<Result<_, PkiError>>()?;
        // Built by hand rather than with x509-cert's CrlBuilder, which copies the
        // issuer's own authorityKeyIdentifier (naming the issuer's issuer) into the
        // CRL; OpenSSL then cannot match the CRL to its CA.
        let number = CrlNumber::try_from(number).map_err(|e| PkiError(e.to_string()))?;
        let issuer = self.certificate.tbs_certificate().subject().clone();
        let ski =
            SubjectKeyIdentifier::try_from(self.certificate.tbs_certificate().subject_public_key_info().owned_to_ref())
                .map_err(|e| PkiError(e.to_string()))?;
        let aki = AuthorityKeyIdentifier { key_identifier: Some(ski.0), ..Default::default() };
        let mut extensions = vec![(&number).to_extension(&issuer, &[])?];
        extensions.push((&aki).to_extension(&issuer, &extensions)?);
        let algorithm = spki::AlgorithmIdentifierOwned {
            oid: der::oid::db::rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
            parameters: Some(der::asn1::Null.into()),
        };
        let tbs = TbsCertList {
            version: x509_cert::Version::V2,
            signature: algorithm.clone(),
            issuer,
            this_update: time(this_update)?,
            next_update: Some(time(next_update)?),
            revoked_certificates: (!entries.is_empty()).then_some(entries),
            crl_extensions: Some(extensions),
        };
        let signature =
            rsa::signature::Signer::try_sign(&self.key, &tbs.to_der()?).map_err(|e| PkiError(e.to_string()))?;
        let crl = CertificateList {
            tbs_cert_list: tbs,
            signature_algorithm: algorithm,
            signature: der::asn1::BitString::from_bytes(&rsa::signature::SignatureEncoding::to_vec(&signature))?,
        };
        Ok(crl.to_der()?)
    }
}

/// Checks a PKCS#10 request's self-signature (RSA PKCS#1 v1.5 / SHA-256).
pub fn check_csr_signature(req: &x509_cert::request::CertReq) -> Result<(), PkiError> {
    use rsa::pkcs8::DecodePublicKey;
    use rsa::signature::Verifier;
    let spki = req.info.public_key.to_der()?;
    let Ok(key) = rsa::RsaPublicKey::from_public_key_der(&spki) else {
        // Only RSA requests are checked here; EC requests are taken as they are.
        return Ok(());
    };
    let sig = req.signature.as_bytes().ok_or_else(|| PkiError("bad request signature".into()))?;
    let sig = rsa::pkcs1v15::Signature::try_from(sig).map_err(|_| PkiError("bad request signature".into()))?;
    let tbs = req.info.to_der()?;
    rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key)
        .verify(&tbs, &sig)
        .map_err(|_| PkiError("the request's signature does not verify".into()))
}
