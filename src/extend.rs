//! Extension: a signature made earlier raised to a higher level, or its
//! archive time-stamp renewed, without any signing key (ETSI EN 319 122-1
//! and EN 319 132-1 "augmentation").
//!
//! 1. **What it is**: an e-prescription document (its first byte, after
//!    blanks, is `<`; the dispensing record's signature, else the
//!    prescription's) or a CMS signature of one signer (DER or PEM; a
//!    detached one with its content). Its level is read off what it carries.
//! 2. **Whether it holds**: the signer's path to a pinned anchor
//!    (`[verify] anchors`), the CRLs of that path and of the TSAs of the
//!    time-stamps it carries (from `[pki] crls` or the distribution
//!    points), then a validation now ([`crate::verify`]) that must pass: a
//!    time-stamp over a signature that does not hold proves nothing.
//! 3. **What the level adds**, each part as inkan's own signatures have it:
//!    B-T the signature time-stamp; B-LT the signer's path and its CRLs and
//!    the signature time-stamp's TSA path and CRLs; B-LTA an archive
//!    time-stamp (XAdES 1.4.1 `ArchiveTimeStamp`, CAdES
//!    archive-time-stamp-v3) with its TSA's path and CRLs. **Renewal** (a
//!    B-LTA signature extended to B-LTA): current CRLs of the newest archive
//!    time-stamp's TSA path, then a new archive time-stamp over everything,
//!    the old one included, which keeps it provable after its TSA's
//!    certificate expires.
//! 4. **Checked before it is returned**: the result validates at the time
//!    of its newest time-stamp, at the level asked, each time-stamp added a
//!    proof, and from B-LT on with nothing but what it carries; else
//!    nothing is returned.
//!
//! Nothing else in the file changes: XAdES properties are spliced into the
//! text (every byte outside them as it was), CMS parts are re-wrapped as
//! they were encoded (each set in DER order).

mod cms;
mod seam;
mod xml;

use seam::Extendable;

use std::sync::Arc;
use std::time::SystemTime;

use der::{Decode, Encode};
use inkan_keystore::DigestAlgorithm;
use x509_cert::Certificate;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::revocation::Crls;
use crate::signing::format::{ArchiveStamp, Family, Level, ValidationData};
use crate::tsa::{Checked, Tsa};
use crate::verify::{Indication, Trust};

/// What an extension made.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Extended {
    /// The extended file's SHA-256 (`sha256:<hex>`).
    pub digest: String,
    /// The extended file (the same form as given: XML, DER or PEM).
    #[serde(skip)]
    pub bytes: Vec<u8>,
    /// `XAdES` or `CAdES`.
    pub format: &'static str,
    /// Its level before.
    pub from: &'static str,
    /// Its level now.
    pub level: &'static str,
    /// Whether an archive time-stamp was renewed (B-LTA to B-LTA).
    pub renewed: bool,
    /// The time-stamps added.
    pub timestamps: Vec<Added>,
}

/// A time-stamp an extension added.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Added {
    /// `signature` or `archive`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Its time, as the TSA says (RFC 3339).
    pub time: String,
}

/// Extends signatures: a TSA, CRL sources and what validation trusts.
pub struct Extender {
    tsa: Option<Arc<Tsa>>,
    crls: Arc<Crls>,
    trust: Arc<Trust>,
    clock: Arc<dyn Clock>,
}

impl Extender {
    /// An extender over the service's TSA client and CRL sources.
    pub fn new(tsa: Option<Arc<Tsa>>, crls: Arc<Crls>, trust: Arc<Trust>, clock: Arc<dyn Clock>) -> Extender {
        Extender { tsa, crls, trust, clock }
    }

    /// An extender of its own for `config` (the CLI).
    pub fn from_config(config: &crate::config::Config, trust: Arc<Trust>, clock: Arc<dyn Clock>) -> Result<Extender> {
        let crls = Crls::new(
            &config.pki.crls,
            config.pki.fetch_crls,
            std::time::Duration::from_secs(config.pki.crl_timeout_secs.max(1)),
            config.pki.crl_max_bytes,
        )
        .map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(Extender::new(Tsa::new(&config.tsa)?.map(Arc::new), Arc::new(crls), trust, clock))
    }

    /// Extends `input` (with `content`, for a detached CMS signature) to `level`.
    pub async fn extend(&self, input: Vec<u8>, content: Option<Vec<u8>>, level: Level) -> Result<Extended> {
        if level == Level::BB {
            return Err(Error::Invalid("extend adds time-stamps: ask for level B-T, B-LT or B-LTA".into()));
        }
        let tsa = self.tsa.as_ref().ok_or_else(|| {
            Error::Invalid(
                "extending a signature needs a time-stamp authority, and none is configured: set [tsa] url and ca \
                 (INKAN_TSA_URL, INKAN_TSA_CA)"
                    .into(),
            )
        })?;
        let (input, content): (Arc<[u8]>, Option<Arc<[u8]>>) = (input.into(), content.map(Into::into));

        // 1. What it is (parsing is CPU work: off the runtime).
        let (i, c) = (Arc::clone(&input), content.clone());
        let opened = blocking(move || -> Result<_> {
            let signature = open(&i, c.as_deref())?;
            let facts = Facts {
                level: signature.level(),
                signer: signature.signer_certificate()?,
                carried: signature.certificates(),
                sts: signature.signature_timestamp()?,
                sts_input: signature.signature_timestamp_input()?,
                newest_archive: signature.newest_archive_timestamp()?,
            };
            Ok((signature, facts))
        })
        .await?;
        let (mut signature, facts) = opened?;
        let from = facts.level;
        if level < from {
            return Err(Error::Invalid(format!(
                "the signature is {} already: extend does not lower a level",
                from.as_str()
            )));
        }
        if level == from && level != Level::BLTA {
            return Err(Error::Invalid(format!(
                "the signature is {} already: ask for a higher level (B-LTA adds an archive time-stamp, and renews \
                 it on a B-LTA signature)",
                from.as_str()
            )));
        }
        if facts.carried.len() > MAX_CERTIFICATES {
            return Err(Error::Unprocessable(format!(
                "the signature carries {} certificates; inkan reads at most {MAX_CERTIFICATES}",
                facts.carried.len()
            )));
        }
        let now = self.clock.now();

        // 2. Whether it holds now: the paths, what their CRLs say now (a
        // certificate revoked after the proven time is the validation's to
        // weigh), and a validation with them.
        let trust = Arc::clone(&self.trust);
        let (signer, carried) = (facts.signer.clone(), facts.carried.clone());
        let path = blocking(move || signer_path(&trust, &signer, &carried)).await??;
        let signer_crls = self.gather(&path, now).await;
        let checked = |token: Option<Vec<u8>>, input: Option<Vec<u8>>, what: &'static str| {
            let (trust, carried) = (Arc::clone(&self.trust), facts.carried.clone());
            async move {
                match token {
                    Some(t) => {
                        Some(blocking(move || check_timestamp(&trust, &t, input.as_deref(), &carried, what)).await)
                    }
                    None => None,
                }
            }
        };
        // A signature time-stamp that does not check is the validation's to
        // report first (the signature under it may be what changed).
        let sts =
            checked(facts.sts.clone(), Some(facts.sts_input.clone()), "the signature time-stamp").await.transpose()?;
        let sts_crls = match &sts {
            Some(Ok(s)) => Some(self.gather(&s.path, now).await),
            _ => None,
        };
        let renewing = from == Level::BLTA;
        let newest = if renewing {
            checked(facts.newest_archive.clone(), None, "the newest archive time-stamp").await.transpose()?
        } else {
            None
        };
        let newest_crls = match &newest {
            Some(Ok(s)) => Some(self.gather(&s.path, now).await),
            _ => None,
        };
        let mut known: Vec<Vec<u8>> = signer_crls.crls.clone();
        for g in [&sts_crls, &newest_crls].into_iter().flatten() {
            known.extend(g.crls.iter().cloned());
        }
        let gate = Check { known: known.clone(), carried_only: false, at: now, level: None, added: 0 };
        self.validates(&input, &content, &gate)
            .await?
            .map_err(|why| Error::Unprocessable(format!("{why}; nothing was extended")))?;
        let mut sts = sts.transpose()?;

        // 3. What the level adds.
        let mut added = Vec::new();
        let mut newest_time = now;
        if from < Level::BT {
            let digest = DigestAlgorithm::Sha256.digest(&facts.sts_input);
            let stamp = tsa.stamp(DigestAlgorithm::Sha256, &digest, now).await?;
            newest_time = newest_time.max(stamp.info.gen_time);
            added.push(Added { kind: "signature", time: crate::verify::time::rfc3339(stamp.info.gen_time) });
            // Its TSA's CRLs, for the last check (B-T carries none).
            known.extend(self.gather(&stamp.path, now).await.crls);
            signature = on(signature, {
                let stamp = stamp.clone();
                move |s| s.add_signature_timestamp(&stamp)
            })
            .await?;
            sts = Some(stamp);
        }
        // B-LT: what validates the signature and its time-stamp later. CMS
        // takes any of it that is missing (a CAdES "B-LT" may lack some);
        // an XAdES B-LT has its own, which the last check weighs.
        if level >= Level::BLT && (from < Level::BLT || signature.format() == Family::Cades.about().name) {
            let stamp = sts.as_ref().ok_or_else(|| Error::Internal("B-LT without a signature time-stamp".into()))?;
            let tsa_crls = match sts_crls.filter(|_| from >= Level::BT) {
                Some(g) => g,
                None => self.gather(&stamp.path, now).await,
            };
            // Required when the level is new; on a CAdES B-LT (renewal) what
            // can still be had is added, and the last check weighs the rest
            // (a CA may have stopped listing a certificate long expired).
            let take = |g: Gathered| if from < Level::BLT { g.complete() } else { Ok(g.crls) };
            let data = ValidationData {
                signer_chain: path[1..].to_vec(),
                signer_crls: take(signer_crls)?,
                tsa_path: stamp.path.clone(),
                tsa_crls: take(tsa_crls)?,
            };
            signature = on(signature, move |s| s.add_long_term(&data)).await?;
        }
        if let (Some(checked), Some(crls)) = (&newest, newest_crls) {
            let checked = checked.as_ref().map_err(|e| Error::Unprocessable(e.to_string()))?;
            let (path, crls) = (checked.path.clone(), crls.complete()?);
            signature = on(signature, move |s| s.add_archive_validation(&path, &crls)).await?;
        }
        if level == Level::BLTA {
            let (returned, input) = on_value(signature, |s| s.archive_timestamp_input()).await?;
            signature = returned;
            let (alg, input) = input?;
            let stamp = tsa.stamp(alg, &alg.digest(&input), now).await?;
            let tsa_crls = self.path_crls(&stamp.path, now).await?;
            newest_time = newest_time.max(stamp.info.gen_time);
            added.push(Added { kind: "archive", time: crate::verify::time::rfc3339(stamp.info.gen_time) });
            let archive = ArchiveStamp { stamp, tsa_crls };
            signature = on(signature, move |s| s.add_archive_timestamp(&archive)).await?;
        }
        let format = signature.format();
        let bytes: Arc<[u8]> = blocking(move || signature.into_bytes()).await??.into();

        // 4. The result holds, at the level asked, every time-stamp added a
        // proof; from B-LT on with nothing but what it carries.
        let last = Check {
            known,
            carried_only: level >= Level::BLT,
            at: self.clock.now().max(newest_time),
            level: Some(level),
            added: added.len(),
        };
        self.validates(&bytes, &content, &last).await?.map_err(|why| {
            Error::Unprocessable(format!(
                "the extended signature would not validate ({why}): its own validation data may be incomplete; \
                 nothing is returned"
            ))
        })?;
        Ok(Extended {
            digest: format!("sha256:{}", crate::encoding::hex(&DigestAlgorithm::Sha256.digest(&bytes))),
            bytes: bytes.to_vec(),
            format,
            from: from.as_str(),
            level: level.as_str(),
            renewed: renewing,
            timestamps: added,
        })
    }

    /// The CRL of each certificate of a path (DER, the leaf first) from the
    /// next, current now, as far as they can be had (listing it or not).
    async fn gather(&self, path: &[Vec<u8>], now: SystemTime) -> Gathered {
        let certs: Vec<Certificate> = path.iter().filter_map(|d| Certificate::from_der(d).ok()).collect();
        let mut out = Gathered::default();
        for pair in certs.windows(2) {
            let (cert, issuer) = (&pair[0], &pair[1]);
            if cert.tbs_certificate().subject() == cert.tbs_certificate().issuer() {
                break;
            }
            match self.crls.current_for(cert, issuer, now).await {
                Ok((der, _)) => out.crls.push(der),
                Err(e) => {
                    out.missing.get_or_insert(e.to_string());
                }
            }
        }
        out
    }

    /// The CRLs of a fresh TSA's path, current now (none revoked).
    async fn path_crls(&self, path: &[Vec<u8>], now: SystemTime) -> Result<Vec<Vec<u8>>> {
        crate::signing::path_crls(&self.crls, path, now).await
    }

    /// Whether `input` validates as `check` says; else why not.
    async fn validates(
        &self,
        input: &Arc<[u8]>,
        content: &Option<Arc<[u8]>>,
        check: &Check,
    ) -> Result<std::result::Result<(), String>> {
        let mut trust = (*self.trust).clone();
        if check.carried_only {
            trust.crls.clear();
            trust.intermediates.clear();
        } else {
            trust.crls.extend(check.known.iter().cloned());
        }
        let (input, content, at) = (Arc::clone(input), content.clone(), check.at);
        let report = blocking(move || crate::verify::validate(&input, content.as_deref(), &trust, at)).await?;
        if report.indication != Indication::TotalPassed {
            let sub = report.sub_indication.map(|s| format!(" / {}", s.name())).unwrap_or_default();
            let first = report
                .signatures
                .first()
                .and_then(|s| s.checks.iter().find(|c| c.decides_against()))
                .or_else(|| report.checks.iter().find(|c| c.decides_against()))
                .map(|c| format!(": {}: {}", c.check, c.detail))
                .unwrap_or_default();
            return Ok(Err(format!(
                "the signature does not validate now ({}{sub}){first}",
                report.indication.as_str()
            )));
        }
        let Some(level) = check.level else { return Ok(Ok(())) };
        let Some(s) = report.signatures.first() else { return Ok(Err("no signature".into())) };
        let at: Level = s.level.parse().unwrap_or_default();
        if at < level {
            return Ok(Err(format!("it is {}, not {}", s.level, level.as_str())));
        }
        let fresh = &s.timestamps[s.timestamps.len().saturating_sub(check.added)..];
        if let Some(t) = fresh.iter().find(|t| t.result != crate::verify::report::Outcome::Passed) {
            return Ok(Err(format!("the {} time-stamp it was given is no proof", t.kind)));
        }
        Ok(Ok(()))
    }
}

/// At most this many certificates are read from a signature to extend.
const MAX_CERTIFICATES: usize = 64;

/// What extension reads of a signature before it adds anything.
struct Facts {
    level: Level,
    signer: Vec<u8>,
    carried: Vec<Vec<u8>>,
    sts: Option<Vec<u8>>,
    sts_input: Vec<u8>,
    newest_archive: Option<Vec<u8>>,
}

/// The CRLs of a path that could be had, and why one could not.
#[derive(Default)]
struct Gathered {
    crls: Vec<Vec<u8>>,
    missing: Option<String>,
}

impl Gathered {
    /// Every CRL of the path, to embed: else why not.
    fn complete(self) -> Result<Vec<Vec<u8>>> {
        match self.missing {
            None => Ok(self.crls),
            Some(why) => Err(Error::NoValidationData(why)),
        }
    }
}

/// How a validation is made: with what besides the file, when, and what
/// it must show.
struct Check {
    /// CRLs besides the configured ones.
    known: Vec<Vec<u8>>,
    /// Nothing but what the file carries (no configured CRL, no
    /// intermediate of inkan's own): what B-LT promises.
    carried_only: bool,
    at: SystemTime,
    /// The level it must have, at least.
    level: Option<Level>,
    /// Time-stamps added last, each of which must be a proof.
    added: usize,
}

/// Runs CPU work off the runtime.
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Result<R> {
    tokio::task::spawn_blocking(f).await.map_err(Error::internal)
}

/// Changes the signature off the runtime.
async fn on(
    mut signature: Box<dyn Extendable>,
    f: impl FnOnce(&mut dyn Extendable) -> Result<()> + Send + 'static,
) -> Result<Box<dyn Extendable>> {
    blocking(move || f(signature.as_mut()).map(|()| signature)).await?
}

/// Reads of the signature off the runtime.
async fn on_value<R: Send + 'static>(
    signature: Box<dyn Extendable>,
    f: impl FnOnce(&dyn Extendable) -> R + Send + 'static,
) -> Result<(Box<dyn Extendable>, R)> {
    blocking(move || {
        let r = f(signature.as_ref());
        (signature, r)
    })
    .await
}

/// The signer's path (DER, the signer's certificate first) to a pinned
/// anchor, through what the file carries and inkan's own chain.
fn signer_path(trust: &Trust, signer: &[u8], carried: &[Vec<u8>]) -> Result<Vec<Vec<u8>>> {
    let leaf = Certificate::from_der(signer)
        .map_err(|e| Error::Unprocessable(format!("the signer's certificate does not decode: {e}")))?;
    let candidates: Vec<Certificate> =
        carried.iter().chain(trust.intermediates.iter()).filter_map(|d| Certificate::from_der(d).ok()).collect();
    let path = crate::pki::path::find(&leaf, &candidates, &trust.anchors).map_err(|e| {
        Error::Unprocessable(format!(
            "the signer's certificate: {} ([verify] anchors); nothing was extended",
            e.message
        ))
    })?;
    path.iter().map(|c| c.to_der().map_err(Error::internal)).collect()
}

/// A time-stamp token checked against the TSA anchors (over `input` when
/// given, else over its own imprint), with its TSA's path.
fn check_timestamp(
    trust: &Trust,
    token: &[u8],
    input: Option<&[u8]>,
    carried: &[Vec<u8>],
    what: &str,
) -> Result<Checked> {
    let refused = |why: String| Error::Unprocessable(format!("{what} does not check: {why}; nothing was extended"));
    let info = crate::tsa::token::tst_info(token).map_err(|e| refused(e.0))?;
    let alg = DigestAlgorithm::from_oid(&info.message_imprint.hash_algorithm.oid)
        .ok_or_else(|| refused("its imprint's digest algorithm is not one inkan checks".into()))?;
    let digest = match input {
        Some(input) => alg.digest(input),
        None => info.message_imprint.hashed_message.as_bytes().to_vec(),
    };
    let extra: Vec<Certificate> = carried.iter().filter_map(|d| Certificate::from_der(d).ok()).collect();
    let expected = crate::tsa::token::Expected { alg, digest: &digest, nonce: None };
    crate::tsa::token::check(token, &expected, &trust.tsa_anchors, &extra).map_err(|e| refused(e.0))
}

/// Records an extension in the audit log: who asked, what it made (the
/// extended file's SHA-256), from which level to which, and the time-stamps
/// added.
pub async fn record<T: crate::audit::AuditTx + ?Sized>(
    store: &dyn crate::seam::Transactions<T>,
    actor: &str,
    user_id: Option<&str>,
    extended: &Extended,
    now_ms: i64,
) -> Result<()> {
    let mut tx = store.write().await?;
    crate::audit::append(
        &mut *tx,
        now_ms,
        &[crate::audit::Event {
            actor: actor.into(),
            event: crate::audit::Name::SignatureExtend,
            user_id: user_id.map(Into::into),
            generation: None,
            digest: Some(extended.digest.as_str().into()),
            outcome: "ok",
            detail: serde_json::json!({
                "format": extended.format,
                "from": extended.from,
                "level": extended.level,
                "renewed": extended.renewed,
                "timestamps": extended.timestamps,
            }),
        }],
    )
    .await?;
    Ok(tx.commit().await?)
}

/// Reads `input` as extension does (its level, certificates, the inputs
/// of its time-stamps) and writes it back with nothing added: the fuzz
/// targets' way in. An XML document comes back byte for byte.
pub fn read_back(input: &[u8]) -> Result<(Level, Vec<u8>)> {
    let signature = open(input, None)?;
    let _ = (signature.signer_certificate(), signature.certificates(), signature.signature_timestamp_input());
    let _ =
        (signature.signature_timestamp(), signature.newest_archive_timestamp(), signature.archive_timestamp_input());
    Ok((signature.level(), signature.into_bytes()?))
}

/// The signature in `input`: XAdES in an e-prescription document, else CMS.
fn open(input: &[u8], content: Option<&[u8]>) -> Result<Box<dyn Extendable>> {
    let first = input.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'<') || input.starts_with(&[0xef, 0xbb, 0xbf]) {
        if content.is_some() {
            return Err(Error::Invalid(
                "an e-prescription document holds what it signs: send it without content".into(),
            ));
        }
        Ok(Box::new(xml::Xades::open(input)?))
    } else {
        Ok(Box::new(cms::Cades::open(input)?))
    }
}
