//! The time-stamp authority's client (RFC 3161 over HTTP, §3.4): a request
//! with a random 64-bit nonce and `certReq`, posted to `[tsa] url` (then to
//! `fallback_url` when the first does not answer, or answers badly), at most
//! `max_in_flight` at once, each within `timeout_secs`; every answer checked
//! before use ([`token::check`]). The token, not the response, is what goes
//! into signatures.

pub mod asn1;
pub mod token;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64ct::{Base64, Encoding};
use der::asn1::{OctetString, Uint};
use der::Encode;
use inkan_keystore::DigestAlgorithm;
use x509_cert::Certificate;

use crate::config::TsaConfig;
use crate::error::{Error, Result};
use crate::fetch::{self, Url};

pub use token::Checked;

/// Largest answer read from a TSA.
const MAX_ANSWER_BYTES: usize = 256 << 10;

/// How far a token's time may be from this node's clock (a TSA whose clock
/// is off, or a token made for another time, is refused).
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// What a TSA's token is checked against: the anchors of its certificate,
/// intermediates that may complete the path, the policy asked for.
#[derive(Clone, Copy, Debug)]
pub struct Trust<'a> {
    /// `[tsa] ca`.
    pub anchors: &'a [Certificate],
    /// `[tsa] chain`.
    pub chain: &'a [Certificate],
    /// `[tsa] policy`, if set: the token must carry it.
    pub policy: Option<der::oid::ObjectIdentifier>,
}

/// A TSA's answer (DER of a `TimeStampResp`) to the request `expected`
/// describes, read and checked as [`Tsa::stamp`] does: granted, a token
/// that passes [`token::check`], its time within [`MAX_SKEW`] of `now`,
/// the policy asked for. The error says why, for the operator.
pub fn read_answer(
    body: &[u8],
    expected: &token::Expected<'_>,
    trust: &Trust<'_>,
    now: SystemTime,
) -> std::result::Result<Checked, String> {
    let resp = asn1::TimeStampResp::from_der(body).map_err(|e| e.0)?;
    if !resp.status.granted() {
        return Err(format!("it refused: {}", resp.status.describe()));
    }
    let token = resp.token.ok_or("it granted but sent no token")?;
    let checked = token::check(&token, expected, trust.anchors, trust.chain).map_err(|e| e.0)?;
    let skew = checked.info.gen_time.duration_since(now).unwrap_or_else(|e| e.duration());
    if skew > MAX_SKEW {
        return Err(format!(
            "its time {} is more than {} s from this node's",
            checked.info.gen_time_text,
            MAX_SKEW.as_secs()
        ));
    }
    if trust.policy.is_some_and(|p| p != checked.info.policy) {
        return Err(format!("its policy {} is not the one asked for", checked.info.policy));
    }
    Ok(checked)
}

/// The TSA client.
pub struct Tsa {
    endpoints: Vec<Url>,
    anchors: Vec<Certificate>,
    chain: Vec<Certificate>,
    policy: Option<der::oid::ObjectIdentifier>,
    authorization: Option<String>,
    timeout: Duration,
    permits: Arc<tokio::sync::Semaphore>,
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
        let mut endpoints = vec![Url::parse(&config.url).map_err(|e| Error::Invalid(format!("[tsa] url: {e}")))?];
        if !config.fallback_url.is_empty() {
            endpoints.push(
                Url::parse(&config.fallback_url).map_err(|e| Error::Invalid(format!("[tsa] fallback_url: {e}")))?,
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
        if !config.username.is_empty() && endpoints.iter().any(|e| !e.url.starts_with("https://")) {
            tracing::warn!("[tsa] username is set for an http:// TSA: its password crosses the network in the clear");
        }
        let authorization = (!config.username.is_empty()).then(|| {
            let password = config.password.as_ref().map(|p| p.0.as_str()).unwrap_or("");
            format!("Basic {}", Base64::encode_string(format!("{}:{password}", config.username).as_bytes()))
        });
        Ok(Some(Tsa {
            endpoints,
            anchors,
            chain: read_certs(&config.chain, "chain")?,
            policy,
            authorization,
            timeout: Duration::from_secs(config.timeout_secs.max(1)),
            permits: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight.max(1))),
        }))
    }

    /// The TSAs' URLs, first the one asked first.
    pub fn urls(&self) -> Vec<&str> {
        self.endpoints.iter().map(|e| e.url.as_str()).collect()
    }

    /// A checked time-stamp token over `digest` (of `alg`), its time within
    /// [`MAX_SKEW`] of `now`. Each TSA is asked in turn, within
    /// `timeout_secs` (the wait for a slot included); the error names every
    /// one that failed and why ([`Error::TsaUnavailable`]).
    pub async fn stamp(&self, alg: DigestAlgorithm, digest: &[u8], now: SystemTime) -> Result<Checked> {
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
            let exchange = async {
                let _permit = self.permits.acquire().await.map_err(|e| e.to_string())?;
                let post = fetch::Request::Post {
                    content_type: "application/timestamp-query",
                    accept: "application/timestamp-reply",
                    body: &request,
                    authorization: self.authorization.as_deref(),
                };
                fetch::exchange(endpoint, post, MAX_ANSWER_BYTES).await
            };
            let answer = tokio::time::timeout(self.timeout, exchange)
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {} s", self.timeout.as_secs())));
            let checked = answer.and_then(|body| {
                let trust = Trust { anchors: &self.anchors, chain: &self.chain, policy: self.policy };
                read_answer(&body, &expected, &trust, now)
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
}
