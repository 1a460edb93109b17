//! A dispensing record (調剤結果) over a signed prescription, in the layout
//! of the public sample: `<DispensingManagement>`, then `<Dispensing>` with
//! the doctor's `<PrescriptionManagement>`, `<PrescriptionDocument>`,
//! `<AdditionalPrescriptionInformation>` and `<PrescriptionSign>` copied
//! byte for byte into `<ReferencePrescription>` (so the doctor's signature
//! still verifies inside it) and the pharmacist's CSV, and an empty
//! `<DispensingSign>` for the pharmacist's signature.

use base64ct::{Base64, Encoding};

use super::csv::{self, XSI};
use super::kind::Kind;
use crate::error::{Error, Result};
use crate::xml::{self, DS};

/// The dispensing record of `prescription` (a signed prescription document)
/// with the pharmacist's `csv` (first line `CJ1,`) and `dispensing_id`.
pub fn record(prescription: &[u8], csv_bytes: &[u8], dispensing_id: &str) -> Result<Vec<u8>> {
    csv::check(csv_bytes, Kind::Dispensing)?;
    csv::check_id(dispensing_id)?;
    let x = xml::parse(prescription).map_err(|e| Error::Invalid(format!("the prescription: {e}")))?;
    let root = x.root().map_err(|e| Error::Invalid(e.0))?;
    let p = x
        .child(root, None, "Prescription")
        .map_err(|_| Error::Invalid("the prescription's <Document> holds no <Prescription>".into()))?;
    // What the copied elements mean must not depend on declarations the
    // record's <Document> would not make.
    if x.namespace_declarations(root).iter().any(|(prefix, uri)| !(prefix == "xsi" && uri == XSI)) {
        return Err(Error::Invalid(
            "the prescription's <Document> declares namespaces other than xsi: its elements cannot be copied".into(),
        ));
    }
    let signed = x
        .children_named(p, None, "PrescriptionSign")
        .next()
        .is_some_and(|s| x.children_named(s, Some(DS), "Signature").next().is_some());
    if !signed {
        return Err(Error::Invalid("the prescription is not signed: the doctor signs it first".into()));
    }
    let mut copied = String::new();
    for child in x.elements(p) {
        let span = x.span(child).map_err(|e| Error::Invalid(e.0))?;
        copied.push_str(&x.text()[span.whole]);
    }
    Ok(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Document xmlns:xsi=\"{XSI}\" id=\"Document\" \
         xsi:noNamespaceSchemaLocation=\"ED.xsd\"><DispensingManagement id=\"DispensingManagement\"><Version \
         Value=\"EPD1.0\"/><DispensingId Value=\"{dispensing_id}\" /></DispensingManagement><Dispensing \
         id=\"Dispensing\"><ReferencePrescription>{copied}</ReferencePrescription><DispensingDocument \
         id=\"DispensingDocument\">{}</DispensingDocument></Dispensing><DispensingSign></DispensingSign></Document>",
        Base64::encode_string(csv_bytes)
    )
    .into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eps::document::tests::sample;

    #[test]
    fn the_sample_prescription_becomes_a_dispensing_record_whose_doctors_signature_verifies() {
        let record = record(&sample("Prescription-004_01.xml"), b"CJ1,\n1,x", "d-1").expect("record");
        let doc = crate::eps::Document::read(record).expect("the doctor's signature verifies inside");
        assert_eq!(doc.kind, Kind::Dispensing);
        assert_eq!(doc.record_id.as_deref(), Some("d-1"));
        let e = super::record(b"<Document><Prescription/></Document>", b"CJ1,\n", "d-1").expect_err("unsigned");
        assert!(e.to_string().contains("not signed"), "{e}");
        let e = super::record(&sample("Prescription-004_01.xml"), b"SJ1\n", "d-1").expect_err("csv");
        assert!(e.to_string().contains("CJ1"), "{e}");
    }
}
