//! The format seam: a signature in three steps, as x509-cert's builder
//! separates "bytes to sign" (`finalize`) from "assemble with the
//! signature" (`assemble`).
//!
//! 1. **prepare** ([`Encoder::prepare`]): from what is signed (a message
//!    digest; for XAdES Reference 1's digest and, with it, the document the
//!    signature goes into) build what the token signs: for CAdES the signed
//!    attributes, for XAdES the canonical SignedInfo. Returns the digest the
//!    token signs, with which scheme, and the format's own state
//!    ([`Pending`]);
//! 2. **sign**: one `C_Sign` by the pipeline, nothing else;
//! 3. **assemble** ([`Pending::assemble`]): the signature value into the
//!    format's signature ([`Assembled`]), which says what a signature
//!    time-stamp covers and takes the unsigned properties of the level asked
//!    ([`Unsigned`]) before it is finished into the format's output
//!    ([`Parts`]).
//!
//! An enveloping format is assembled around the content ([`Parts`]), so the
//! pipeline never copies a document it streams.
//!
//! **A new format**: a module in `signing/` with an [`Encoder`], and a
//! [`super::Format`] variant that names it. Callers choose the variant;
//! nothing else changes.

use std::sync::Arc;
use std::time::SystemTime;

use inkan_keystore::{Digest, DigestAlgorithm, SignatureScheme};

use crate::error::Result;

use super::signers::Signer;

pub use super::parts::{Parts, TokenSign};

/// What the token signs for one signature, and what the format needs to
/// assemble it afterwards.
pub struct ToBeSigned {
    /// The scheme of the one token call.
    pub scheme: SignatureScheme,
    /// The digest the token signs.
    pub digest: Digest,
    /// The format's state until the signature value comes back.
    pub pending: Box<dyn Pending>,
}

/// A prepared signature waiting for its value.
pub trait Pending: Send {
    /// Assembles the signature around the token's signature value; the
    /// levels above B-B add their unsigned properties to it before it is
    /// finished.
    fn assemble(self: Box<Self>, signature: &[u8]) -> Result<Box<dyn Assembled>>;
}

/// A signature assembled, to which unsigned properties may still be added.
pub trait Assembled: Send {
    /// What a signature time-stamp covers (the TSA stamps its SHA-256):
    /// CAdES, the value of `SignerInfo.signature`; XAdES, the inclusive C14N
    /// of `xs:SignatureValue` in its document. `None`: this format takes none.
    fn signature_timestamp_input(&self) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    /// What an archive time-stamp covers once `unsigned` (B-LT) is added,
    /// and with which digest algorithm its imprint is made. `None`: this
    /// format takes none.
    fn archive_timestamp_input(&self, _unsigned: &Unsigned) -> Result<Option<(DigestAlgorithm, Vec<u8>)>> {
        Ok(None)
    }

    /// The signature with `unsigned` added (nothing at B-B).
    fn finish(self: Box<Self>, unsigned: &Unsigned) -> Result<Parts>;
}

/// What the levels above B-B add to a signature after it is made.
#[derive(Clone, Debug, Default)]
pub struct Unsigned {
    /// B-T: a time-stamp token over the signature (its DER, checked).
    pub signature_timestamp: Option<crate::tsa::Checked>,
    /// B-LT: what validates the signature and its time-stamp later.
    pub validation: Option<ValidationData>,
    /// B-LTA: an archive time-stamp over all of the above.
    pub archive_timestamp: Option<ArchiveStamp>,
}

/// An archive time-stamp and the CRLs of its TSA's path.
#[derive(Clone, Debug)]
pub struct ArchiveStamp {
    /// The token, checked (its `path` goes with it).
    pub stamp: crate::tsa::Checked,
    /// The CRLs of the TSA's path (DER).
    pub tsa_crls: Vec<Vec<u8>>,
}

/// The certificates and CRLs that let a signature and its time-stamp be
/// validated later, without asking anyone (B-LT).
#[derive(Clone, Debug, Default)]
pub struct ValidationData {
    /// The signer's CA certificates (DER), its issuer first, up to the anchor.
    pub signer_chain: Vec<Vec<u8>>,
    /// The CRLs of the signer's path (DER): its issuer's, then each CA's issuer's.
    pub signer_crls: Vec<Vec<u8>>,
    /// The TSA's path (DER): its certificate first, up to the anchor.
    pub tsa_path: Vec<Vec<u8>>,
    /// The CRLs of the TSA's path (DER).
    pub tsa_crls: Vec<Vec<u8>>,
}

/// A signature level (ETSI EN 319 122-1 / 319 132-1 baselines).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Level {
    /// B-B: the signature alone (CAdES-BES, XAdES-BES).
    #[default]
    BB,
    /// B-T: with a signature time-stamp from a TSA.
    BT,
    /// B-LT: with the certificates and revocation data to validate it later.
    BLT,
    /// B-LTA: with an archive time-stamp over all of it.
    BLTA,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 4] = [Level::BB, Level::BT, Level::BLT, Level::BLTA];

    /// Its name (`B-B`, `B-T`, `B-LT`, `B-LTA`).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::BB => "B-B",
            Level::BT => "B-T",
            Level::BLT => "B-LT",
            Level::BLTA => "B-LTA",
        }
    }
}

impl std::str::FromStr for Level {
    type Err = crate::error::Error;

    /// `B-B`, `B-T`, `B-LT`, `B-LTA`, with or without CSC's `AdES-` prefix,
    /// in any case.
    fn from_str(s: &str) -> Result<Self> {
        let upper = s.to_ascii_uppercase();
        let name = upper.strip_prefix("ADES-").unwrap_or(&upper);
        match name {
            "B-B" | "B" => Ok(Level::BB),
            "B-T" | "T" => Ok(Level::BT),
            "B-LT" | "LT" => Ok(Level::BLT),
            "B-LTA" | "LTA" => Ok(Level::BLTA),
            _ => Err(crate::error::Error::Invalid(format!("level must be B-B, B-T, B-LT or B-LTA, not {s:?}"))),
        }
    }
}

/// A family of signature formats, as every interface names it: one row each
/// ([`Family::about`]) that the API (`format=`), CSC (`signature_format`),
/// the CLI (`--format`), the audit log, the validation report and the
/// extension read, instead of a literal of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// CMS: CAdES baseline signatures (ETSI EN 319 122-1).
    Cades,
    /// XML: XAdES in the e-prescription profile (ETSI EN 319 132-1).
    Xades,
    /// The bare signature value.
    Raw,
}

/// What a format family is called and makes.
#[derive(Debug)]
pub struct FamilyAbout {
    /// Its value of the API's `format=` and the CLI's `--format`.
    pub api: &'static str,
    /// Its CSC `signature_format` (`C`, `X`), if signDoc makes it.
    pub csc: Option<&'static str>,
    /// Its name in validation reports and extensions (`CAdES`, `XAdES`).
    pub name: &'static str,
    /// What it is for, after its name in messages (`, e-prescriptions`), if anything.
    pub note: &'static str,
    /// Its name in the audit log (`cades-bes`, ...).
    pub audit: &'static str,
    /// The levels it is made at (XAdES above B-B only into a document).
    pub levels: &'static [Level],
    /// The media type of a signature in it.
    pub media_type: &'static str,
    /// The file extension of a signature in it.
    pub extension: &'static str,
}

impl Family {
    /// Every family.
    pub const ALL: [Family; 3] = [Family::Cades, Family::Xades, Family::Raw];

    /// The family's row: the one place it is described.
    pub fn about(self) -> &'static FamilyAbout {
        match self {
            Family::Cades => &FamilyAbout {
                api: "cades",
                csc: Some("C"),
                name: "CAdES",
                note: "",
                audit: "cades-bes",
                levels: &Level::ALL,
                media_type: "application/pkcs7-signature",
                extension: "p7s",
            },
            Family::Xades => &FamilyAbout {
                api: "xades",
                csc: Some("X"),
                name: "XAdES",
                note: ", e-prescriptions",
                audit: "xades-bes",
                levels: &Level::ALL,
                media_type: "application/xml",
                extension: "xml",
            },
            Family::Raw => &FamilyAbout {
                api: "raw",
                csc: None,
                name: "raw",
                note: "",
                audit: "raw",
                levels: &[Level::BB],
                media_type: "application/octet-stream",
                extension: "sig",
            },
        }
    }

    /// The family named `name` by the API or the CLI, if it is one of `among`.
    pub fn from_api(name: &str, among: &[Family]) -> Result<Family> {
        among.iter().copied().find(|f| f.about().api == name).ok_or_else(|| {
            let names: Vec<&str> = among.iter().map(|f| f.about().api).collect();
            let listed = match names.split_last() {
                Some((last, [])) => (*last).to_owned(),
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => String::new(),
            };
            crate::error::Error::Invalid(format!("format must be {listed}, not {name:?}"))
        })
    }

    /// The family a CSC `signature_format` names.
    pub fn from_csc(code: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.about().csc == Some(code))
    }
}

/// One signature format.
pub trait Encoder: Send + Sync {
    /// Its family.
    fn family(&self) -> Family;

    /// Its name in the audit log (`cades-bes`, `raw`, `xades-bes`).
    fn audit_name(&self) -> &'static str {
        self.family().about().audit
    }

    /// Whether the content goes inside the signature.
    fn envelops(&self) -> bool {
        false
    }

    /// Checks, before anything is used up, that `signer` may sign what
    /// this format signs (XAdES: a prescription only by a doctor or
    /// dentist, a dispensing record only by a pharmacist).
    fn permits(&self, _signer: &Signer) -> Result<()> {
        Ok(())
    }

    /// Checks, before anything is used up, that this format makes signatures
    /// of `level` (its family's levels).
    fn check_level(&self, level: Level) -> Result<()> {
        let levels = self.family().about().levels;
        if levels.contains(&level) {
            return Ok(());
        }
        let names: Vec<&str> = levels.iter().map(|l| l.as_str()).collect();
        Err(crate::error::Error::Invalid(format!(
            "the {} format is made at level {} only, not {}",
            self.audit_name(),
            names.join(", "),
            level.as_str()
        )))
    }

    /// What the audit row says of what was signed, beyond its digest (XAdES:
    /// the kind, the PrescriptionId or DispensingId and the CSV's hash; never
    /// the content).
    fn audit(&self) -> Option<serde_json::Value> {
        None
    }

    /// Step 1 for one message digest: what the token signs. `content_len`
    /// is the length of the content an enveloping format is assembled around.
    fn prepare(
        &self,
        signer: &Arc<Signer>,
        message_digest: &Digest,
        signing_time: SystemTime,
        content_len: Option<u64>,
    ) -> Result<ToBeSigned>;
}

/// The three steps for one digest: prepare, one token call, assemble.
pub fn sign(
    encoder: &dyn Encoder,
    signer: &Arc<Signer>,
    message_digest: &Digest,
    signing_time: SystemTime,
    content_len: Option<u64>,
    token: &mut TokenSign<'_>,
) -> Result<Box<dyn Assembled>> {
    let to_sign = encoder.prepare(signer, message_digest, signing_time, content_len)?;
    let signature = token(to_sign.scheme, &to_sign.digest)?;
    to_sign.pending.assemble(&signature)
}
