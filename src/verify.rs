//! Validation of signatures others bring, and inkan's own: XAdES in the
//! e-prescription profile and CAdES/CMS, concluded as ETSI TS 119 102-1
//! does (an indication, a sub-indication, each check) and stricter than the
//! reference verifier (SPEC §7): anchors are pinned, never taken from the
//! file; the certificate digest is always compared; exactly the profile's
//! three references, ids unique; the signer's role against what is signed,
//! and an HPKI signing policy; the CSV's form; the order of the times; CRLs
//! current at the time that matters; past-time validation from the
//! time-stamps.
//!
//! Nothing is fetched: what validates a signature is what it carries, and
//! the CRLs configured (`[pki] crls`). A file made at B-LT or B-LTA carries
//! all it needs.

pub(crate) mod cades;
mod evidence;
pub mod report;
pub mod time;
mod trust;
pub(crate) mod xades;

use std::time::{Duration, SystemTime};

pub use report::{Indication, Report, SubIndication};
pub use trust::Trust;

use crate::error::{Error, Result};

/// Validates `input` at `at`: an e-prescription XML document (its first
/// byte, after blanks, is `<`), else a CMS signature (DER or PEM); a
/// detached CMS over `content`. A file that is neither is a format
/// failure in the report, not an error.
pub fn validate(input: &[u8], content: Option<&[u8]>, trust: &Trust, at: SystemTime) -> Report {
    let first = input.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'<') || input.starts_with(&[0xef, 0xbb, 0xbf]) {
        xades::validate(input, trust, at)
    } else {
        cades::validate(input, content, trust, at)
    }
}

/// The validation time of a `--at` (RFC 3339): a time given to the second
/// covers that whole second (a time-stamp at `08:18:25.197` is not after
/// `--at 2022-09-07T08:18:25Z`).
pub fn validation_time(text: &str) -> Result<SystemTime> {
    let (t, fraction) = time::parse(text).ok_or_else(|| {
        Error::Invalid(format!("{text:?} is not an RFC 3339 time (e.g. 2022-09-07T08:18:25Z, or with +09:00)"))
    })?;
    Ok(if fraction { t } else { t + Duration::from_millis(999) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eps::document::tests::sample;

    fn trust() -> Trust {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/eps");
        Trust::load(&[dir.join("extracted-mhlw-hpki-root-ca-v2.pem")], &[dir.join("extracted-tsa-test-ca.pem")], &[])
            .expect("trust")
    }

    #[test]
    fn both_public_samples_pass_at_their_time() {
        let at = validation_time("2022-09-07T08:18:25Z").expect("at");
        let r = validate(&sample("Prescription-004_01.xml"), None, &trust(), at);
        assert_eq!(r.indication, Indication::TotalPassed, "{}", r.text());
        let at = validation_time("2022-09-30T09:40:56Z").expect("at");
        let r = validate(&sample("Dispensing-005_03.xml"), None, &trust(), at);
        assert_eq!(r.indication, Indication::TotalPassed, "{}", r.text());
        assert_eq!(r.signatures.len(), 2, "the pharmacist's and the doctor's inside");
        assert_eq!(r.signatures[0].level, "B-LTA");
        assert_eq!(r.signatures[1].signer.as_ref().and_then(|s| s.hc_role.as_deref()), Some("Medical Doctor"));
        assert!(r.signatures.iter().all(|s| s.best_signature_time_proven));
    }

    #[test]
    fn a_copy_with_one_byte_changed_fails_naming_the_reference() {
        let at = validation_time("2022-09-07T08:18:25Z").expect("at");
        let text = String::from_utf8(sample("Prescription-004_01.xml")).expect("utf-8");
        let changed = text.replacen("U0oxCjEs", "U0oxCjEt", 1);
        let r = validate(changed.as_bytes(), None, &trust(), at);
        assert_eq!((r.indication, r.sub_indication), (Indication::TotalFailed, Some(SubIndication::HashFailure)));
        let failed =
            r.signatures[0].checks.iter().find(|c| c.result == report::Outcome::Failed).expect("a failed check");
        assert!(failed.detail.contains("reference 1 (#PrescriptionDocument)"), "{}", r.text());
        // A changed time-stamp token no longer verifies: it is no proof of
        // time (unsigned properties are anyone's to add, so it does not fail
        // the signature), and today, without that proof, the signature's
        // CRLs are stale: try later. The intact sample passes today.
        let today = validation_time("2026-12-01T00:00:00Z").expect("at");
        let token = text.find("<xa:EncapsulatedTimeStamp>").expect("token") + 400;
        let mut bytes = text.clone().into_bytes();
        bytes[token] = if bytes[token] == b'A' { b'B' } else { b'A' };
        let r = validate(&bytes, None, &trust(), today);
        assert_eq!(
            (r.indication, r.sub_indication),
            (Indication::Indeterminate, Some(SubIndication::TryLater)),
            "{}",
            r.text()
        );
        assert_eq!(r.signatures[0].timestamps[0].result, report::Outcome::Failed);
        assert!(!r.signatures[0].best_signature_time_proven);
        let r = validate(text.as_bytes(), None, &trust(), today);
        assert_eq!(r.indication, Indication::TotalPassed, "{}", r.text());
        // A junk archive time-stamp added after the fact changes nothing.
        let junk = text.replacen(
            "</xa:UnsignedSignatureProperties>",
            "<xa141:ArchiveTimeStamp xmlns:xa141=\"http://uri.etsi.org/01903/v1.4.1#\" Id=\"junk\"><xa:EncapsulatedTimeStamp>MAA=</xa:EncapsulatedTimeStamp></xa141:ArchiveTimeStamp></xa:UnsignedSignatureProperties>",
            1,
        );
        let r = validate(junk.as_bytes(), None, &trust(), at);
        assert_eq!(r.indication, Indication::TotalPassed, "{}", r.text());
        assert_eq!(r.signatures[0].level, "B-LTA");
        // A document that holds a second record is not one the profile has.
        let two = text.replacen("</Document>", "<Dispensing id=\"Dispensing\"/></Document>", 1);
        let r = validate(two.as_bytes(), None, &trust(), at);
        assert_eq!((r.indication, r.sub_indication), (Indication::TotalFailed, Some(SubIndication::FormatFailure)));
    }

    #[test]
    fn anchors_are_pinned_and_time_runs_out_without_a_newer_archive_time_stamp() {
        // The file carries the MHLW root; trusting another root, nothing
        // in the file is an anchor.
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let other =
            Trust::load(&[fixtures.join("pki/hpki-root.pem")], &[fixtures.join("eps/extracted-tsa-test-ca.pem")], &[])
                .expect("trust");
        let sample = sample("Prescription-004_01.xml");
        let r = validate(&sample, None, &other, validation_time("2022-09-07T08:18:25Z").expect("at"));
        assert_eq!(
            (r.indication, r.sub_indication),
            (Indication::Indeterminate, Some(SubIndication::NoCertificateChainFound))
        );
        // In 2030 the TSA's CA certificate (to 2027-06-29) has expired and no
        // archive time-stamp was made before: the signature time-stamp
        // proves nothing, and the doctor's certificate (to 2027-02-07) is
        // expired at the validation time.
        let r = validate(&sample, None, &trust(), validation_time("2030-01-01T00:00:00Z").expect("at"));
        assert_eq!(
            (r.indication, r.sub_indication),
            (Indication::Indeterminate, Some(SubIndication::OutOfBoundsNoPoe)),
            "{}",
            r.text()
        );
        assert!(!r.signatures[0].best_signature_time_proven);
        // Without its signature time-stamp, the signature is validated at
        // the validation time, when its CRLs are long stale: try later
        // (with a current CRL).
        let text = String::from_utf8(sample.clone()).expect("utf-8");
        let (from, to) = (
            text.find("<xa:SignatureTimeStamp").expect("STS"),
            text.find("</xa141:TimeStampValidationData>").expect("TSVD") + "</xa141:TimeStampValidationData>".len(),
        );
        let bes = format!("{}{}", &text[..from], &text[to..]);
        let r = validate(bes.as_bytes(), None, &trust(), validation_time("2026-12-01T00:00:00Z").expect("at"));
        assert_eq!(
            (r.indication, r.sub_indication),
            (Indication::Indeterminate, Some(SubIndication::TryLater)),
            "{}",
            r.text()
        );
        // And at a time before the signer's certificate, it fails.
        let r = validate(bes.as_bytes(), None, &trust(), validation_time("2022-01-01T00:00:00Z").expect("at"));
        assert_eq!(
            (r.indication, r.sub_indication),
            (Indication::TotalFailed, Some(SubIndication::NotYetValid)),
            "{}",
            r.text()
        );
    }

    #[test]
    fn neither_xml_nor_cms_is_a_format_failure() {
        let now = validation_time("2026-12-06T00:00:00Z").expect("at");
        let r = validate(b"hello", None, &trust(), now);
        assert_eq!((r.indication, r.sub_indication), (Indication::TotalFailed, Some(SubIndication::FormatFailure)));
        let r = validate(b"<Document/>", None, &trust(), now);
        assert_eq!((r.indication, r.sub_indication), (Indication::TotalFailed, Some(SubIndication::FormatFailure)));
        let r = validate(b"<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>", None, &trust(), now);
        assert!(r.checks[0].detail.contains("DTD"), "{}", r.text());
    }
}
