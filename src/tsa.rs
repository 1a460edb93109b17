//! The time-stamp authority's client (RFC 3161 over HTTP, §3.4): a request
//! with a random 64-bit nonce and `certReq`, posted to `[tsa] url` (then to
//! `fallback_url` when the first does not answer, or answers badly), at most
//! `max_in_flight` at once, each within `timeout_secs`; every answer checked
//! before use ([`token::check`]). The token, not the response, is what goes
//! into signatures.

pub mod asn1;
pub mod token;

use std::sync::Arc;
use std::time::Duration;

use base64ct::{Base64, Encoding};
use der::asn1::{OctetString, Uint};
use der::Encode;
use http_body_util::{BodyExt, Full};
use inkan_keystore::DigestAlgorithm;
use x509_cert::Certificate;

use crate::config::TsaConfig;
use crate::error::{Error, Result};

pub use token::Checked;

/// Largest answer read from a TSA.
const MAX_ANSWER_BYTES: usize = 256 << 10;

/// One TSA's address.
#[derive(Clone, Debug)]
struct Endpoint {
    url: String,
    host: String,
    port: u16,
    path: String,
    tls: bool,
}

impl Endpoint {
    fn parse(url: &str) -> std::result::Result<Endpoint, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("{url:?} is not an http:// or https:// URL"));
        };
        let (authority, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h.to_owned(), p.parse().map_err(|_| format!("{url:?}: the port is not a number"))?)
            }
            _ => (authority.to_owned(), if tls { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(format!("{url:?} names no host"));
        }
        Ok(Endpoint { url: url.to_owned(), host: host.trim_matches(['[', ']']).to_owned(), port, path, tls })
    }
}

/// The TSA client.
pub struct Tsa {
    endpoints: Vec<Endpoint>,
    anchors: Vec<Certificate>,
    chain: Vec<Certificate>,
    policy: Option<der::oid::ObjectIdentifier>,
    authorization: Option<String>,
    timeout: Duration,
    permits: Arc<tokio::sync::Semaphore>,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl std::fmt::Debug for Tsa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tsa").field("urls", &self.urls()).finish_non_exhaustive()
    }
}

fn read_certs(paths: &[std::path::PathBuf], what: &str) -> Result<Vec<Certificate>> {
    let mut out = Vec::new();
    for p in paths {
        for der in crate::pki::read_certificates(p).map_err(|e| Error::Invalid(format!("[tsa] {what}: {e}")))? {
            out.push(
                <Certificate as der::Decode>::from_der(&der)
                    .map_err(|e| Error::Invalid(format!("[tsa] {what}: {e}")))?,
            );
        }
    }
    Ok(out)
}

impl Tsa {
    /// The client of `[tsa]`, or `None` when no URL is set. A URL without
    /// anchors is refused: a token inkan cannot check is worth nothing.
    pub fn new(config: &TsaConfig) -> Result<Option<Tsa>> {
        if config.url.is_empty() {
            return Ok(None);
        }
        let mut endpoints = vec![Endpoint::parse(&config.url).map_err(|e| Error::Invalid(format!("[tsa] url: {e}")))?];
        if !config.fallback_url.is_empty() {
            endpoints.push(
                Endpoint::parse(&config.fallback_url)
                    .map_err(|e| Error::Invalid(format!("[tsa] fallback_url: {e}")))?,
            );
        }
        let anchors = read_certs(&config.ca, "ca")?;
        if anchors.is_empty() {
            return Err(Error::Invalid(
                "[tsa] ca names no certificate: set the anchors the TSA's certificate chains to (INKAN_TSA_CA)".into(),
            ));
        }
        let policy = (!config.policy.is_empty())
            .then(|| config.policy.parse())
            .transpose()
            .map_err(|_| Error::Invalid(format!("[tsa] policy {:?} is not an OID", config.policy)))?;
        let authorization = (!config.username.is_empty()).then(|| {
            let password = config.password.as_ref().map(|p| p.0.as_str()).unwrap_or("");
            format!("Basic {}", Base64::encode_string(format!("{}:{password}", config.username).as_bytes()))
        });
        let tls = if endpoints.iter().any(|e| e.tls) { Some(web_tls()?) } else { None };
        Ok(Some(Tsa {
            endpoints,
            anchors,
            chain: read_certs(&config.chain, "chain")?,
            policy,
            authorization,
            timeout: Duration::from_secs(config.timeout_secs.max(1)),
            permits: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight.max(1))),
            tls,
        }))
    }

    /// The TSAs' URLs, first the one asked first.
    pub fn urls(&self) -> Vec<&str> {
        self.endpoints.iter().map(|e| e.url.as_str()).collect()
    }

    /// The anchors tokens are checked against.
    pub fn anchors(&self) -> &[Certificate] {
        &self.anchors
    }

    /// A checked time-stamp token over `digest` (of `alg`). Each TSA is asked
    /// in turn; the error names every one that failed and why
    /// ([`Error::TsaUnavailable`]).
    pub async fn stamp(&self, alg: DigestAlgorithm, digest: &[u8]) -> Result<Checked> {
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(Error::internal)?;
        nonce[0] &= 0x7f;
        nonce[0] |= 0x01;
        let request = asn1::TimeStampReq {
            version: 1,
            message_imprint: asn1::MessageImprint {
                hash_algorithm: spki::AlgorithmIdentifierOwned { oid: alg.oid(), parameters: None },
                hashed_message: OctetString::new(digest.to_vec()).map_err(Error::internal)?,
            },
            req_policy: self.policy,
            nonce: Some(Uint::new(&nonce).map_err(Error::internal)?),
            cert_req: true,
        }
        .to_der()
        .map_err(Error::internal)?;
        let expected = token::Expected { alg, digest, nonce: Some(&nonce) };
        let mut failures = Vec::new();
        for endpoint in &self.endpoints {
            let answer = async {
                let _permit = self.permits.acquire().await.map_err(|e| e.to_string())?;
                tokio::time::timeout(self.timeout, self.post(endpoint, &request))
                    .await
                    .map_err(|_| format!("no answer within {} s", self.timeout.as_secs()))?
            }
            .await;
            let checked = answer.and_then(|body| {
                let resp = asn1::TimeStampResp::from_der(&body).map_err(|e| e.0)?;
                if !resp.status.granted() {
                    return Err(format!("it refused: {}", resp.status.describe()));
                }
                let token = resp.token.ok_or("it granted but sent no token")?;
                token::check(&token, &expected, &self.anchors, &self.chain).map_err(|e| e.0)
            });
            match checked {
                Ok(c) => return Ok(c),
                Err(why) => {
                    tracing::warn!(tsa = %endpoint.url, "time-stamp refused: {why}");
                    failures.push(format!("{}: {why}", endpoint.url));
                }
            }
        }
        Err(Error::TsaUnavailable(failures.join("; ")))
    }

    /// One HTTP exchange: the answer's body, or why there is none.
    async fn post(&self, endpoint: &Endpoint, request: &[u8]) -> std::result::Result<Vec<u8>, String> {
        let tcp = tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let mut req = hyper::Request::post(&endpoint.path)
            .header(hyper::header::HOST, &endpoint.host)
            .header(hyper::header::CONTENT_TYPE, "application/timestamp-query")
            .header(hyper::header::ACCEPT, "application/timestamp-reply");
        if let Some(auth) = &self.authorization {
            req = req.header(hyper::header::AUTHORIZATION, auth);
        }
        let req = req.body(Full::new(bytes::Bytes::copy_from_slice(request))).map_err(|e| e.to_string())?;
        let resp = if endpoint.tls {
            let connector = self.tls.as_ref().ok_or("no TLS configuration")?;
            let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone()).map_err(|e| e.to_string())?;
            let tls = connector.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
            exchange(hyper_util::rt::TokioIo::new(tls), req).await?
        } else {
            exchange(hyper_util::rt::TokioIo::new(tcp), req).await?
        };
        let status = resp.status();
        if status != hyper::StatusCode::OK {
            return Err(format!("HTTP {status}"));
        }
        let mut body = resp.into_body();
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("reading the answer: {e}"))?;
            if let Some(data) = frame.data_ref() {
                if out.len() + data.len() > MAX_ANSWER_BYTES {
                    return Err(format!("the answer is larger than {MAX_ANSWER_BYTES} bytes"));
                }
                out.extend_from_slice(data);
            }
        }
        Ok(out)
    }
}

async fn exchange<I>(
    io: I,
    req: hyper::Request<Full<bytes::Bytes>>,
) -> std::result::Result<hyper::Response<hyper::body::Incoming>, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await.map_err(|e| format!("HTTP: {e}"))
}

/// TLS to an `https://` TSA, trusting the system's web roots.
fn web_tls() -> Result<tokio_rustls::TlsConnector> {
    let bundle = std::path::Path::new("/etc/ssl/certs/ca-certificates.crt");
    let mut roots = rustls::RootCertStore::empty();
    for der in crate::pki::read_certificates(bundle).map_err(|e| Error::Invalid(format!("[tsa] https: {e}")))? {
        let _ = roots.add(rustls::pki_types::CertificateDer::from(der));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(Error::internal)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read_with_their_ports_and_paths() {
        let e = Endpoint::parse("http://127.0.0.1:9000/testpki/tsa/tsa").expect("url");
        assert_eq!((e.host.as_str(), e.port, e.path.as_str(), e.tls), ("127.0.0.1", 9000, "/testpki/tsa/tsa", false));
        let e = Endpoint::parse("https://tsa.example.jp").expect("url");
        assert_eq!((e.host.as_str(), e.port, e.path.as_str(), e.tls), ("tsa.example.jp", 443, "/", true));
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("http://:80/").is_err());
    }
}
