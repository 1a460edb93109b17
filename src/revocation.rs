//! Where the CRLs of B-LT signatures come from: the CRL that an issuer
//! signed for a certificate, taken from configured files (`[pki] crls`) or
//! fetched from the certificate's distribution points (`http://`/`https://`,
//! bounded in time and size, kept until their nextUpdate). A CRL is used only
//! if the issuer's key verifies it and it is current; one listing the
//! certificate says so.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use der::Decode;
use x509_cert::crl::CertificateList;
use x509_cert::Certificate;

use crate::pki::crl::{current, distribution_points, lists, signed_by};
use crate::pki::PkiError;

/// Why a certificate has no CRL to embed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrlError {
    /// None is to be had now (not configured, not fetched, not current).
    #[error("{0}")]
    Missing(String),
    /// The issuer's current CRL lists the certificate.
    #[error("{0}")]
    Revoked(String),
}

/// Why a path has no CRLs to embed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathCrlError {
    /// A certificate of the path does not decode.
    #[error("{0}")]
    Path(String),
    /// A certificate's CRL.
    #[error(transparent)]
    Crl(#[from] CrlError),
}

/// Where CRLs come from.
pub struct Crls {
    files: Vec<(Vec<u8>, CertificateList)>,
    fetch: bool,
    timeout: Duration,
    max_bytes: usize,
    /// Fetched CRLs by URL, until their nextUpdate.
    cache: Mutex<HashMap<String, (Vec<u8>, SystemTime)>>,
}

/// Fetched CRLs kept at most (then the cache starts over).
const MAX_CACHED: usize = 256;

impl Crls {
    /// CRLs from `files` (DER or PEM each), and from distribution points if
    /// `fetch` (each fetch within `timeout`, at most `max_bytes`).
    pub fn new(
        files: &[std::path::PathBuf],
        fetch: bool,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<Crls, PkiError> {
        let mut read = Vec::new();
        for path in files {
            let bytes =
                std::fs::read(path).map_err(|e| PkiError(format!("cannot read the CRL {}: {e}", path.display())))?;
            let der = if bytes.starts_with(b"-----") {
                der::pem::decode_vec(&bytes)
                    .map(|(_, d)| d)
                    .map_err(|e| PkiError(format!("{}: {e}", path.display())))?
            } else {
                bytes
            };
            let crl = CertificateList::from_der(&der).map_err(|e| PkiError(format!("{}: {e}", path.display())))?;
            read.push((der, crl));
        }
        Ok(Crls { files: read, fetch, timeout, max_bytes, cache: Mutex::new(HashMap::new()) })
    }

    /// The CRL (DER) with which `issuer` says whether `cert` is revoked,
    /// current at `at`; an error says why there is none, or that `cert` is
    /// on it.
    pub async fn for_certificate(
        &self,
        cert: &Certificate,
        issuer: &Certificate,
        at: SystemTime,
    ) -> Result<Vec<u8>, CrlError> {
        let (der, listed) = self.current_for(cert, issuer, at).await?;
        if listed {
            return Err(CrlError::Revoked(format!(
                "{} is revoked (in the CRL of {})",
                cert.tbs_certificate().subject(),
                issuer.tbs_certificate().subject()
            )));
        }
        Ok(der)
    }

    /// The CRL (DER) with which `issuer` says whether `cert` is revoked,
    /// current at `at`, and whether it lists `cert` (a validation weighs
    /// when); the error says why there is none.
    pub async fn current_for(
        &self,
        cert: &Certificate,
        issuer: &Certificate,
        at: SystemTime,
    ) -> Result<(Vec<u8>, bool), CrlError> {
        let subject = cert.tbs_certificate().subject().to_string();
        let usable = |crl: &CertificateList| signed_by(crl, issuer) && current(crl, at);
        let found = match self.files.iter().find(|(_, crl)| usable(crl)) {
            Some((der, crl)) => Some((der.clone(), crl.clone())),
            None => self.fetched(cert, issuer, at).await.map_err(CrlError::Missing)?,
        };
        let Some((der, crl)) = found else {
            return Err(CrlError::Missing(format!(
                "no current CRL of {} for {subject}: configure it in [pki] crls, or let inkan fetch it from the \
                 certificate's distribution point",
                issuer.tbs_certificate().subject()
            )));
        };
        let listed = lists(&crl, cert);
        Ok((der, listed))
    }

    /// The CRL of each certificate of `path` (DER, the leaf first) from the
    /// next one, current at `at`; a self-signed certificate (the anchor)
    /// needs none.
    pub async fn for_path(&self, path: &[Vec<u8>], at: SystemTime) -> Result<Vec<Vec<u8>>, PathCrlError> {
        let certs = path
            .iter()
            .map(|d| Certificate::from_der(d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PathCrlError::Path(e.to_string()))?;
        let mut crls = Vec::new();
        for pair in certs.windows(2) {
            let (cert, issuer) = (&pair[0], &pair[1]);
            if cert.tbs_certificate().subject() == cert.tbs_certificate().issuer() {
                break;
            }
            crls.push(self.for_certificate(cert, issuer, at).await?);
        }
        Ok(crls)
    }

    async fn fetched(
        &self,
        cert: &Certificate,
        issuer: &Certificate,
        at: SystemTime,
    ) -> Result<Option<(Vec<u8>, CertificateList)>, String> {
        if !self.fetch {
            return Ok(None);
        }
        let mut why = Vec::new();
        for url in distribution_points(cert) {
            let cached = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&url).cloned();
            let der = match cached {
                Some((der, next_update)) if at <= next_update => der,
                _ => {
                    let parsed = match crate::fetch::Url::parse(&url) {
                        Ok(u) => u,
                        Err(e) => {
                            why.push(e);
                            continue;
                        }
                    };
                    let got = tokio::time::timeout(
                        self.timeout,
                        crate::fetch::exchange(&parsed, crate::fetch::Request::Get, self.max_bytes),
                    )
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {} s", self.timeout.as_secs())));
                    match got {
                        Ok(der) => der,
                        Err(e) => {
                            why.push(format!("{url}: {e}"));
                            continue;
                        }
                    }
                }
            };
            let Ok(crl) = CertificateList::from_der(&der) else {
                why.push(format!("{url}: not a DER CRL"));
                continue;
            };
            if !signed_by(&crl, issuer) {
                why.push(format!("{url}: not signed by {}", issuer.tbs_certificate().subject()));
                continue;
            }
            if !current(&crl, at) {
                why.push(format!("{url}: not current"));
                continue;
            }
            if let Some(next) = crl.tbs_cert_list.next_update {
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
                cache.insert(url, (der.clone(), next.to_system_time()));
            }
            return Ok(Some((der, crl)));
        }
        if why.is_empty() {
            Ok(None)
        } else {
            Err(format!("no usable CRL for {}: {}", cert.tbs_certificate().subject(), why.join("; ")))
        }
    }
}
