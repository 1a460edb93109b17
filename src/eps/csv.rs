//! The CSV inside an e-prescription document (`<PrescriptionDocument>`,
//! `<DispensingDocument>`: base64 on one line) and the minimal prescription
//! document made from a CSV alone (SPEC §1.1).
//!
//! The national service refuses a CSV with CR (EPSB0052E): UTF-8, LF line
//! ends, first field `SJ1` for a prescription, `CJ1` for a dispensing record.

use base64ct::{Base64, Encoding};
use sha2::Digest;

use super::kind::Kind;
use crate::error::{Error, Result};

/// Checks a CSV of `kind` (UTF-8, no CR, no NUL, first field the kind's
/// tag); returns its SHA-256 as lowercase hex (what the audit log keeps: the
/// content never).
pub fn check(csv: &[u8], kind: Kind) -> Result<String> {
    let what = format!("the {} CSV", kind.as_str());
    let text = std::str::from_utf8(csv)
        .map_err(|e| Error::Invalid(format!("{what} is not UTF-8 (invalid byte at offset {})", e.valid_up_to())))?;
    if text.contains('\r') {
        return Err(Error::Invalid(format!("{what} has a CR: lines must end with LF alone")));
    }
    if text.contains('\0') {
        return Err(Error::Invalid(format!("{what} holds a NUL character")));
    }
    // A prescription's first line is `SJ1`; a dispensing record's starts
    // with the field `CJ1` (`CJ1,` in the public sample).
    let first = text.split('\n').next().unwrap_or_default();
    let fits = match kind {
        Kind::Prescription => first == kind.csv_tag(),
        Kind::Dispensing => first.split(',').next() == Some(kind.csv_tag()),
    };
    if !fits {
        return Err(Error::Invalid(format!(
            "{what} must start with the line {} (it starts with {:?})",
            kind.csv_tag(),
            first.chars().take(16).collect::<String>()
        )));
    }
    Ok(crate::encoding::hex(&sha2::Sha256::digest(csv)))
}

/// Checks a PrescriptionId as a signing system sends it: 1 to 64 ASCII
/// letters, digits and `-` (a UUID in the national samples).
pub fn check_id(id: &str) -> Result<()> {
    if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Ok(());
    }
    Err(Error::Invalid("prescription_id must be 1-64 ASCII letters, digits and '-' (a UUID)".into()))
}

/// The minimal prescription document of a CSV (SPEC §1.1, the samples'
/// layout: no whitespace between elements), with an empty
/// `<PrescriptionSign>` for the signature. The signing system may add
/// `<AdditionalPrescriptionInformation>` before `<PrescriptionSign>` later:
/// it is not signed.
pub fn prescription_document(csv: &[u8], prescription_id: &str) -> Result<Vec<u8>> {
    check(csv, Kind::Prescription)?;
    check_id(prescription_id)?;
    Ok(minimal_text(&Base64::encode_string(csv), prescription_id).into_bytes())
}

/// The namespace `<Document>` declares (and Reference 1 inherits).
pub(crate) const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// The text of the minimal prescription of a checked CSV (in base64) and id;
/// it ends with [`MINIMAL_TAIL`].
pub(crate) fn minimal_text(csv_base64: &str, prescription_id: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Document xmlns:xsi=\"{XSI}\" id=\"Document\" \
         xsi:noNamespaceSchemaLocation=\"EP.xsd\"><Prescription><PrescriptionManagement \
         id=\"PrescriptionManagement\"><Version Value=\"EPS1.0\"/><PrescriptionId Value=\"{prescription_id}\" />\
         </PrescriptionManagement><PrescriptionDocument id=\"PrescriptionDocument\">{csv_base64}</PrescriptionDocument>\
         <PrescriptionSign>{MINIMAL_TAIL}"
    )
}

/// How the minimal prescription ends: the signature goes right before this.
pub(crate) const MINIMAL_TAIL: &str = "</PrescriptionSign></Prescription></Document>";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csvs_are_utf8_with_lf_and_start_with_their_tag() {
        assert!(check(b"SJ1\n1,1,8000010", Kind::Prescription).is_ok());
        assert!(check(b"CJ1,\n1,x", Kind::Dispensing).is_ok());
        for (csv, kind, says) in [
            (&b"SJ1\r\n1,1"[..], Kind::Prescription, "CR"),
            (b"SJ2\n1,1", Kind::Prescription, "SJ1"),
            (b"CJ1,\n", Kind::Prescription, "SJ1"),
            (b"SJ1,x\n1", Kind::Prescription, "SJ1"),
            (b"SJ1\n\xff", Kind::Prescription, "UTF-8"),
            (b"SJ1\n\0", Kind::Prescription, "NUL"),
            (b"", Kind::Dispensing, "CJ1"),
        ] {
            let e = check(csv, kind).expect_err("refused");
            assert!(e.to_string().contains(says), "{e}");
        }
        assert!(prescription_id_ok("1439e0c5-7c1d-4512-861d-263de48417bf"));
        assert!(!prescription_id_ok("a\"b"));
        assert!(!prescription_id_ok(""));
    }

    fn prescription_id_ok(id: &str) -> bool {
        check_id(id).is_ok()
    }
}
