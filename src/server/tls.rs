//! TLS for the two listeners.
//!
//! The main listener asks for no client certificate. The card listener asks
//! for one but does not require it (a browser without a card then gets a page
//! saying so, not a TLS error loop) and does not validate its chain in the
//! handshake: HPKI and JPKI certificates carry a critical certificatePolicies
//! extension that webpki refuses, and which trust store applies depends on the
//! login route. The handshake still proves that the client holds the
//! certificate's key: `CertificateVerify` is checked here against the key in
//! the certificate. The chain is validated per scheme by
//! [`crate::auth::cards::CardAuth`] before any use.

use std::sync::Arc;

use der::Decode;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error as TlsError, ServerConfig, SignatureScheme};

use crate::error::Error;

/// The client certificates the peer presented on this connection (leaf first, DER).
#[derive(Clone, Debug, Default)]
pub struct PeerCertificates(pub Arc<Vec<Vec<u8>>>);

/// Builds a server configuration from PEM files.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_auth: Option<Arc<CardCertVerifier>>,
) -> Result<ServerConfig, Error> {
    let certs: Vec<CertificateDer<'static>> = crate::pki::parse_certificates(cert_pem)
        .map_err(|e| Error::Invalid(format!("TLS certificate: {e}")))?
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let (_, key_der) = der::pem::decode_vec(key_pem).map_err(|e| Error::Invalid(format!("TLS key is not PEM: {e}")))?;
    let key = PrivateKeyDer::try_from(key_der).map_err(|e| Error::Invalid(format!("TLS key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        ServerConfig::builder_with_provider(provider).with_safe_default_protocol_versions().map_err(Error::internal)?;
    let builder = match client_auth {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| Error::Invalid(format!("TLS key does not fit the certificate: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Checks possession of the client certificate's key; leaves the chain to the application.
#[derive(Debug)]
pub struct CardCertVerifier {
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl CardCertVerifier {
    /// A verifier that suggests `issuers` (DER subject names of the card CAs) to clients.
    pub fn new(issuers: Vec<Vec<u8>>) -> Self {
        let provider: CryptoProvider = rustls::crypto::ring::default_provider();
        CardCertVerifier {
            hints: issuers.into_iter().map(DistinguishedName::from).collect(),
            algorithms: provider.signature_verification_algorithms,
        }
    }

    fn verify(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        let cert = x509_cert::Certificate::from_der(cert.as_ref())
            .map_err(|_| TlsError::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        let spki = cert.tbs_certificate().subject_public_key_info();
        let public_key = spki
            .subject_public_key
            .as_bytes()
            .ok_or(TlsError::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        let alg_id = der::Encode::to_der(&spki.algorithm)
            .map_err(|_| TlsError::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        // AlgorithmIdentifier contents (without the outer SEQUENCE header), as pki-types compares them.
        let alg_contents = strip_sequence(alg_id);
        let candidates = self
            .algorithms
            .mapping
            .iter()
            .find(|(scheme, _)| *scheme == dss.scheme)
            .map(|(_, algs)| *algs)
            .ok_or(TlsError::PeerMisbehaved(rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme))?;
        for alg in candidates {
            if alg.public_key_alg_id().as_ref() == alg_contents.as_slice() {
                return alg
                    .verify_signature(public_key, message, dss.signature())
                    .map(|_| HandshakeSignatureValid::assertion())
                    .map_err(|_| TlsError::InvalidCertificate(rustls::CertificateError::BadSignature));
            }
        }
        Err(TlsError::InvalidCertificate(rustls::CertificateError::BadSignature))
    }
}

/// The contents of a DER SEQUENCE (drops tag and length).
fn strip_sequence(der: Vec<u8>) -> Vec<u8> {
    match der::asn1::AnyRef::from_der(&der) {
        Ok(any) => any.value().to_vec(),
        Err(_) => der,
    }
}

impl ClientCertVerifier for CardCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        // Only well-formedness here; the chain is validated per scheme by the login route.
        x509_cert::Certificate::from_der(end_entity.as_ref())
            .map_err(|_| TlsError::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.verify(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.verify(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
