//! The validation report: ETSI TS 119 102-1's indications and
//! sub-indications, per signature and overall, with each check inkan made.

use std::time::SystemTime;

use serde::Serialize;
use utoipa::ToSchema;

/// A validation's conclusion (EN 319 102-1 5.1.3), worst last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Indication {
    /// Every check passed.
    TotalPassed,
    /// Something could not be established (no path to an anchor, no
    /// current revocation data, no proof of time): maybe later, or with more.
    Indeterminate,
    /// The signature is broken, or its signer may not have made it.
    TotalFailed,
}

impl Indication {
    /// The name in reports (`TOTAL_PASSED`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Indication::TotalPassed => "TOTAL_PASSED",
            Indication::Indeterminate => "INDETERMINATE",
            Indication::TotalFailed => "TOTAL_FAILED",
        }
    }
}

/// Why a signature failed or is indeterminate (EN 319 102-1 table 5, the
/// ones inkan gives).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SubIndication {
    /// Not the format or profile (elements, references, encoding, ids).
    FormatFailure,
    /// A digest does not match: the signed data was changed.
    HashFailure,
    /// The signature value (or a time-stamp's) does not verify.
    SigCryptoFailure,
    /// A certificate was revoked before the signature's proven time.
    Revoked,
    /// The signer's certificate is revoked, and nothing proves the
    /// signature was made before.
    RevokedNoPoe,
    /// A CA certificate on the signer's path is revoked, and nothing proves
    /// the signature was made before.
    RevokedCaNoPoe,
    /// An algorithm inkan does not accept (or check).
    CryptoConstraintsFailure,
    /// The signer's certificate expired before the signature's proven time.
    Expired,
    /// The signer's certificate was not yet valid.
    NotYetValid,
    /// The signer may not make this signature (role, keyUsage, policy).
    SigConstraintsFailure,
    /// A certificate on the path may not be there.
    ChainConstraintsFailure,
    /// The signing certificate is not in the signature.
    NoSigningCertificateFound,
    /// No path to a pinned anchor.
    NoCertificateChainFound,
    /// A certificate is expired at the validation time and nothing proves
    /// the signature existed before.
    OutOfBoundsNoPoe,
    /// Times that must be in order are not (signing time, time-stamps).
    TimestampOrderFailure,
    /// The signed content is not there (a detached signature without it).
    SignedDataNotFound,
    /// No revocation data current at the time that matters: ask again with it.
    TryLater,
}

impl SubIndication {
    /// Its ETSI name (`HASH_FAILURE`).
    pub fn name(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
    }
}

/// One check's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It passed.
    Passed,
    /// It could not be established.
    Indeterminate,
    /// It failed.
    Failed,
    /// Not a check: what was found (a later time-stamp not used, ...).
    Info,
}

/// One check.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Check {
    /// What was checked (`references`, `signature value`, ...).
    pub check: String,
    /// Its result.
    pub result: Outcome,
    /// What was found.
    pub detail: String,
    /// Why it failed or is indeterminate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_indication: Option<SubIndication>,
    /// Whether it decides the signature's indication. A time-stamp or
    /// validation data that fails does not (anyone can add unsigned
    /// properties): the signature is then validated without that proof.
    #[serde(skip_serializing_if = "is_true")]
    pub affects_indication: bool,
}

fn is_true(b: &bool) -> bool {
    *b
}

impl Check {
    /// A check that passed.
    pub fn passed(check: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            result: Outcome::Passed,
            detail: detail.into(),
            sub_indication: None,
            affects_indication: true,
        }
    }

    /// A check that failed.
    pub fn failed(check: impl Into<String>, sub: SubIndication, detail: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            result: Outcome::Failed,
            detail: detail.into(),
            sub_indication: Some(sub),
            affects_indication: true,
        }
    }

    /// A check that could not be established.
    pub fn indeterminate(check: impl Into<String>, sub: SubIndication, detail: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            result: Outcome::Indeterminate,
            detail: detail.into(),
            sub_indication: Some(sub),
            affects_indication: true,
        }
    }

    /// A note.
    pub fn info(check: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            result: Outcome::Info,
            detail: detail.into(),
            sub_indication: None,
            affects_indication: true,
        }
    }

    /// Whether it decides the indication and did not pass.
    pub fn decides_against(&self) -> bool {
        self.affects_indication && matches!(self.result, Outcome::Failed | Outcome::Indeterminate)
    }

    /// The same check, reported but not deciding the indication.
    pub fn not_deciding(mut self) -> Check {
        self.affects_indication = false;
        self
    }

    fn indication(&self) -> Indication {
        if !self.affects_indication {
            return Indication::TotalPassed;
        }
        match self.result {
            Outcome::Passed | Outcome::Info => Indication::TotalPassed,
            Outcome::Indeterminate => Indication::Indeterminate,
            Outcome::Failed => Indication::TotalFailed,
        }
    }
}

/// Who signed, as the certificate says.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct Signer {
    /// The subject's commonName.
    pub name: String,
    /// The name in Japanese (the subjectAltName directoryName's commonName), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_ja: Option<String>,
    /// The subject's organizationName (the facility).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// The subject's serialNumber: the holder's registration number in
    /// inkan's certificates (MEDIS's test certificates hold `Test117120`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration_number: Option<String>,
    /// The hcRole (`Medical Doctor`, `Pharmacist`, ...), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hc_role: Option<String>,
    /// The issuer's name.
    pub issuer: String,
    /// The certificate's serial number (hex).
    pub serial: String,
    /// The certificate's validity.
    pub not_before: String,
    /// The certificate's validity.
    pub not_after: String,
    /// SHA-256 of the certificate (hex).
    pub certificate_sha256: String,
}

/// A time-stamp found in a signature.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Timestamp {
    /// `signature` or `archive`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Its time, as the TSA wrote it (RFC 3339), if it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// The TSA's certificate subject, if found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tsa: Option<String>,
    /// Whether it is proof of time here: verified, and its TSA's certificate
    /// valid until a later time-stamp (or the validation time).
    pub result: Outcome,
}

/// One signature's validation.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SignatureReport {
    /// Its `Id` (XAdES), or `signer-N` (CMS).
    pub id: String,
    /// `XAdES` or `CAdES`.
    pub format: &'static str,
    /// What it signs, for the e-prescription profile (`prescription`, `dispensing`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// The level its structure has (`B-B`, `B-T`, `B-LT`, `B-LTA`).
    pub level: &'static str,
    /// The conclusion.
    pub indication: Indication,
    /// Why, when not passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_indication: Option<SubIndication>,
    /// Who signed, if the certificate was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<Signer>,
    /// The signing time the signer claims, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_time: Option<String>,
    /// The earliest time the signature is proven to have existed (a
    /// signature time-stamp), or the validation time when nothing proves one.
    pub best_signature_time: String,
    /// Whether `best_signature_time` is proven by a time-stamp.
    pub best_signature_time_proven: bool,
    /// The time-stamps, in the order of the signature.
    pub timestamps: Vec<Timestamp>,
    /// Each check, in the order made.
    pub checks: Vec<Check>,
}

impl SignatureReport {
    /// A report with nothing found yet.
    pub fn new(id: impl Into<String>, format: &'static str, at: SystemTime) -> SignatureReport {
        SignatureReport {
            id: id.into(),
            format,
            kind: None,
            level: "B-B",
            indication: Indication::TotalPassed,
            sub_indication: None,
            signer: None,
            signing_time: None,
            best_signature_time: super::time::rfc3339(at),
            best_signature_time_proven: false,
            timestamps: Vec::new(),
            checks: Vec::new(),
        }
    }

    /// Sets the indication from the checks: the worst, with the
    /// sub-indication of the first check that made it.
    pub fn conclude(&mut self) {
        let worst = self.checks.iter().map(Check::indication).max().unwrap_or(Indication::Indeterminate);
        self.indication = worst;
        self.sub_indication = self.checks.iter().find(|c| c.indication() == worst).and_then(|c| c.sub_indication);
        if self.checks.is_empty() {
            self.sub_indication = Some(SubIndication::FormatFailure);
        }
    }

    /// Whether any deciding check so far failed (later checks then say little).
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.result == Outcome::Failed && c.affects_indication)
    }
}

/// A validation report.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Report {
    /// The worst of the signatures' (TOTAL_FAILED when there is none).
    pub indication: Indication,
    /// Its sub-indication.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_indication: Option<SubIndication>,
    /// What the file was found to be (`XAdES` e-prescription document,
    /// `CAdES`), or why it is neither.
    pub format: String,
    /// The time validated at (RFC 3339).
    pub validation_time: String,
    /// Each signature.
    pub signatures: Vec<SignatureReport>,
    /// Problems with the file as a whole (no signature at a known place).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
}

impl Report {
    /// A report over `signatures` (each concluded) and file-level `checks`.
    pub fn new(
        format: impl Into<String>,
        at: SystemTime,
        signatures: Vec<SignatureReport>,
        checks: Vec<Check>,
    ) -> Report {
        let mut all: Vec<(Indication, Option<SubIndication>)> =
            signatures.iter().map(|s| (s.indication, s.sub_indication)).collect();
        all.extend(checks.iter().map(|c| (c.indication(), c.sub_indication)));
        let (indication, sub_indication) = if signatures.is_empty() {
            let sub = checks.iter().find_map(|c| c.sub_indication).unwrap_or(SubIndication::FormatFailure);
            (Indication::TotalFailed, Some(sub))
        } else {
            let worst = all.iter().map(|(i, _)| *i).max().unwrap_or(Indication::TotalFailed);
            (worst, all.iter().find(|(i, _)| *i == worst).and_then(|(_, s)| *s))
        };
        Report {
            indication,
            sub_indication,
            format: format.into(),
            validation_time: super::time::rfc3339(at),
            signatures,
            checks,
        }
    }

    /// The CLI's exit status: 0 passed, 1 failed, 2 indeterminate.
    pub fn exit_code(&self) -> i32 {
        match self.indication {
            Indication::TotalPassed => 0,
            Indication::TotalFailed => 1,
            Indication::Indeterminate => 2,
        }
    }

    /// The report for a person: the conclusion, then each signature with
    /// its signer, times and every check that did not simply pass.
    pub fn text(&self) -> String {
        let out = self.text_raw();
        // Names come from certificates anyone can make: no control
        // characters reach a terminal.
        out.chars().map(|c| if c.is_control() && c != '\n' { '\u{fffd}' } else { c }).collect()
    }

    fn text_raw(&self) -> String {
        use std::fmt::Write;
        let sub = |s: Option<SubIndication>| s.map(|s| format!(" / {}", s.name())).unwrap_or_default();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}{}  ({}, validated at {})",
            self.indication.as_str(),
            sub(self.sub_indication),
            self.format,
            self.validation_time
        );
        for c in &self.checks {
            let _ = writeln!(out, "  ✗ {}: {}", c.check, c.detail);
        }
        for s in &self.signatures {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "{} ({} {}{}): {}{}",
                s.id,
                s.format,
                s.level,
                s.kind.map(|k| format!(", {k}")).unwrap_or_default(),
                s.indication.as_str(),
                sub(s.sub_indication)
            );
            if let Some(signer) = &s.signer {
                let mut who = signer.name.clone();
                if let Some(ja) = &signer.name_ja {
                    let _ = write!(who, " ({ja})");
                }
                for extra in [&signer.hc_role, &signer.organization, &signer.registration_number].into_iter().flatten()
                {
                    let _ = write!(who, ", {extra}");
                }
                let _ = writeln!(out, "  signer: {who}");
                let _ = writeln!(out, "  certificate: serial {} from {}", signer.serial, signer.issuer);
            }
            if let Some(t) = &s.signing_time {
                let _ = writeln!(out, "  signing time (claimed): {t}");
            }
            let _ = writeln!(
                out,
                "  best signature time: {} ({})",
                s.best_signature_time,
                if s.best_signature_time_proven {
                    "proven by a time-stamp"
                } else {
                    "the validation time: nothing proves an earlier one"
                }
            );
            for c in &s.checks {
                let mark = match c.result {
                    Outcome::Passed => "✓",
                    Outcome::Failed => "✗",
                    Outcome::Indeterminate => "?",
                    Outcome::Info => "·",
                };
                let note =
                    if c.affects_indication { "" } else { " (not deciding: the signature is validated without it)" };
                let _ = writeln!(out, "  {mark} {}: {}{note}", c.check, c.detail);
            }
        }
        out
    }
}
