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
//! 4. **Checked before it is returned**: the result validates now, at the
//!    level asked; else nothing is returned.
//!
//! Nothing else in the file changes: XAdES properties are spliced into the
//! text (every byte outside them as it was), CMS parts are re-wrapped as
//! they were encoded.

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
use crate::signing::format::{ArchiveStamp, Level, ValidationData};
use crate::tsa::{Checked, Tsa};
use crate::verify::{Indication, Trust};

/// What an extension made.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Extended {
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
    /// The time-stamps added (`signature`, `archive`) with their times (RFC 3339).
    pub timestamps: Vec<(String, String)>,
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
        let mut signature = open(&input, content.as_deref())?;
        let from = signature.level();
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
        let now = self.clock.now();

        // 2. The signer's path, the CRLs of every path, and a validation now.
        let carried = signature.certificates();
        let path = self.signer_path(&signature.signer_certificate()?, &carried)?;
        let signer_crls = self.path_crls(&path, now).await?;
        let mut known = signer_crls.clone();
        // A signature time-stamp that does not check is the validation's
        // to report first (the signature under it may be what changed).
        let sts = signature
            .signature_timestamp()?
            .map(|token| self.check_signature_timestamp(signature.as_ref(), &token, &carried));
        if let Some(Ok(s)) = &sts {
            known.extend(self.path_crls(&s.path, now).await?);
        }
        let newest_archive = match (from, signature.newest_archive_timestamp()?) {
            (Level::BLTA, Some(token)) => {
                let checked = self.check_timestamp(&token, None, &carried, "the newest archive time-stamp")?;
                let crls = self.path_crls(&checked.path, now).await?;
                known.extend(crls.iter().cloned());
                Some((checked, crls))
            }
            _ => None,
        };
        self.validates(input, content.clone(), known.clone(), now, None)
            .await
            .map_err(|why| Error::Unprocessable(format!("{why}; nothing was extended")))?;
        let mut sts = sts.transpose()?;

        // 3. What the level adds.
        let mut added = Vec::new();
        if from < Level::BT {
            let input = signature.signature_timestamp_input()?;
            let stamp = tsa.stamp(DigestAlgorithm::Sha256, &DigestAlgorithm::Sha256.digest(&input), now).await?;
            signature.add_signature_timestamp(&stamp)?;
            added.push(("signature".to_owned(), stamp.info.gen_time_text.clone()));
            sts = Some(stamp);
        }
        if level >= Level::BLT && from < Level::BLT {
            let stamp = sts.as_ref().ok_or_else(|| Error::Internal("B-LT without a signature time-stamp".into()))?;
            let tsa_crls = self.path_crls(&stamp.path, now).await?;
            known.extend(tsa_crls.iter().cloned());
            signature.add_long_term(&ValidationData {
                signer_chain: path[1..].to_vec(),
                signer_crls,
                tsa_path: stamp.path.clone(),
                tsa_crls,
            })?;
        }
        if let Some((checked, crls)) = &newest_archive {
            signature.add_archive_validation(&checked.path, crls)?;
        }
        if level == Level::BLTA {
            let (alg, input) = signature.archive_timestamp_input()?;
            let stamp = tsa.stamp(alg, &alg.digest(&input), now).await?;
            let tsa_crls = self.path_crls(&stamp.path, now).await?;
            known.extend(tsa_crls.iter().cloned());
            added.push(("archive".to_owned(), stamp.info.gen_time_text.clone()));
            signature.add_archive_timestamp(&ArchiveStamp { stamp, tsa_crls })?;
        }
        let format = signature.format();
        let bytes = signature.into_bytes()?;

        // 4. The result holds, at the level asked.
        self.validates(bytes.clone(), content, known, now, Some(level)).await.map_err(|why| {
            Error::Internal(format!("the extended signature does not validate ({why}): nothing is returned"))
        })?;
        Ok(Extended {
            bytes,
            format,
            from: from.as_str(),
            level: level.as_str(),
            renewed: from == Level::BLTA,
            timestamps: added,
        })
    }

    /// The signer's path (DER, the signer's certificate first) to a pinned
    /// anchor, through what the file carries and inkan's own chain.
    fn signer_path(&self, signer: &[u8], carried: &[Vec<u8>]) -> Result<Vec<Vec<u8>>> {
        let leaf = Certificate::from_der(signer)
            .map_err(|e| Error::Unprocessable(format!("the signer's certificate does not decode: {e}")))?;
        let candidates: Vec<Certificate> = carried
            .iter()
            .chain(self.trust.intermediates.iter())
            .filter_map(|d| Certificate::from_der(d).ok())
            .collect();
        let path = crate::pki::path::find(&leaf, &candidates, &self.trust.anchors).map_err(|e| {
            Error::Unprocessable(format!(
                "the signer's certificate: {} ([verify] anchors); nothing was extended",
                e.message
            ))
        })?;
        path.iter().map(|c| c.to_der().map_err(Error::internal)).collect()
    }

    /// The CRLs of a path, current now.
    async fn path_crls(&self, path: &[Vec<u8>], now: SystemTime) -> Result<Vec<Vec<u8>>> {
        crate::signing::path_crls(&self.crls, path, now).await
    }

    /// The signature time-stamp, checked over what it must cover.
    fn check_signature_timestamp(
        &self,
        signature: &dyn Extendable,
        token: &[u8],
        carried: &[Vec<u8>],
    ) -> Result<Checked> {
        let input = signature.signature_timestamp_input()?;
        self.check_timestamp(token, Some(&input), carried, "the signature time-stamp")
    }

    /// A time-stamp token checked against the TSA anchors (over `input`
    /// when given, else over its own imprint), with its TSA's path.
    fn check_timestamp(&self, token: &[u8], input: Option<&[u8]>, carried: &[Vec<u8>], what: &str) -> Result<Checked> {
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
        crate::tsa::token::check(token, &expected, &self.trust.tsa_anchors, &extra).map_err(|e| refused(e.0))
    }

    /// Whether `input` validates now with the CRLs `known` besides the
    /// configured ones (and is at `level`, if given); else why not.
    async fn validates(
        &self,
        input: Vec<u8>,
        content: Option<Vec<u8>>,
        known: Vec<Vec<u8>>,
        now: SystemTime,
        level: Option<Level>,
    ) -> std::result::Result<(), String> {
        let mut trust = (*self.trust).clone();
        trust.crls.extend(known);
        let report =
            tokio::task::spawn_blocking(move || crate::verify::validate(&input, content.as_deref(), &trust, now))
                .await
                .map_err(|e| e.to_string())?;
        if report.indication != Indication::TotalPassed {
            let sub = report.sub_indication.map(|s| format!(" / {}", s.name())).unwrap_or_default();
            let first = report
                .signatures
                .first()
                .and_then(|s| s.checks.iter().find(|c| c.decides_against()))
                .or_else(|| report.checks.iter().find(|c| c.decides_against()))
                .map(|c| format!(": {}: {}", c.check, c.detail))
                .unwrap_or_default();
            return Err(format!("the signature does not validate now ({}{sub}){first}", report.indication.as_str()));
        }
        match (level, report.signatures.first()) {
            (Some(level), Some(s)) if s.level != level.as_str() => {
                Err(format!("it is {}, not {}", s.level, level.as_str()))
            }
            _ => Ok(()),
        }
    }
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
