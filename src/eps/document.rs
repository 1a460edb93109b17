//! A whole e-prescription document as a signing system sends it, read once:
//! its kind (from the root's children), Reference 1's digest (the inclusive
//! C14N 1.0 of `#PrescriptionDocument` or `#Dispensing` in the document's
//! context), where the signature goes, and the ids already in it (the
//! signature's own must not collide).
//!
//! The signature is spliced into the text: every byte outside
//! `<PrescriptionSign>` / `<DispensingSign>` stays as it was sent.

use std::collections::HashSet;
use std::ops::Range;

use base64ct::Encoding;
use inkan_keystore::{Digest, DigestAlgorithm};

use super::kind::Kind;
use super::{check, csv};
use crate::error::{Error, Result};
use crate::xml::{self, NodeId, Xml, DS};

/// A document ready to take its signature.
#[derive(Debug)]
pub struct Document {
    /// A prescription or a dispensing record.
    pub kind: Kind,
    /// Reference 1's digest: SHA-256 of the inclusive C14N of the target.
    pub digest: Digest,
    /// `PrescriptionId` / `DispensingId`, as the document names it.
    pub record_id: Option<String>,
    /// SHA-256 of the signed CSV, lowercase hex.
    pub csv_sha256: String,
    /// Every `id`/`Id` value in the document.
    pub ids: HashSet<String>,
    text: Vec<u8>,
    splice: Splice,
}

/// Where the signature goes: `range` of the text is replaced by `open`,
/// the signature element, and `close`.
#[derive(Debug)]
struct Splice {
    range: Range<usize>,
    open: &'static str,
    close: &'static str,
}

fn invalid(e: impl std::fmt::Display) -> Error {
    Error::Invalid(e.to_string())
}

impl Document {
    /// Reads a document: well-formed UTF-8 XML without a DTD ([`xml::parse`]),
    /// root `<Document>` holding `<Prescription>` (a prescription) or
    /// `<Dispensing>` (a dispensing record), exactly one element with the
    /// target id, in its place, an empty signature slot (or none, and then
    /// one is added as the last child of `<Prescription>` / `<Document>`), no
    /// signature but, in a dispensing record, the doctor's, which must verify
    /// ([`check::bes`]), and a CSV of the right form.
    pub fn read(text: Vec<u8>) -> Result<Document> {
        let parsed = xml::parse(&text).map_err(invalid)?;
        let (kind, digest, record_id, csv_sha256, splice) = analyse(&parsed)?;
        let ids = parsed.ids().map(str::to_owned).collect();
        drop(parsed);
        Ok(Document { kind, digest, record_id, csv_sha256, ids, text, splice })
    }

    /// The minimal prescription of a CSV ([`csv::prescription_document`]),
    /// known without reading it back: it is inkan's own text. Reference 1's
    /// digest by SPEC §1.4's formula (the target carries the `xmlns:xsi`
    /// `<Document>` declares, then its `id`, then the base64 of the CSV); a
    /// unit test checks that [`Document::read`] makes the same of the text.
    pub fn from_csv(csv_bytes: &[u8], prescription_id: &str) -> Result<Document> {
        let csv_sha256 = csv::check(csv_bytes, Kind::Prescription)?;
        csv::check_id(prescription_id)?;
        let b64 = base64ct::Base64::encode_string(csv_bytes);
        let mut target = String::with_capacity(b64.len() + 128);
        target.push_str("<PrescriptionDocument xmlns:xsi=\"");
        target.push_str(csv::XSI);
        target.push_str("\" id=\"PrescriptionDocument\">");
        target.push_str(&b64);
        target.push_str("</PrescriptionDocument>");
        let text = csv::minimal_text(&b64, prescription_id).into_bytes();
        let at = text.len() - csv::MINIMAL_TAIL.len();
        Ok(Document {
            kind: Kind::Prescription,
            digest: Digest::of(DigestAlgorithm::Sha256, target.as_bytes()),
            record_id: Some(prescription_id.to_owned()),
            csv_sha256,
            ids: ["Document", "PrescriptionManagement", "PrescriptionDocument"].map(str::to_owned).into(),
            text,
            splice: Splice { range: at..at, open: "", close: "" },
        })
    }

    /// The document with `signature` (an `xs:Signature` element) in its slot.
    pub fn with_signature(&self, signature: &str) -> Vec<u8> {
        let Splice { range, open, close } = &self.splice;
        let mut out = Vec::with_capacity(self.text.len() + signature.len() + open.len() + close.len());
        out.extend_from_slice(&self.text[..range.start]);
        out.extend_from_slice(open.as_bytes());
        out.extend_from_slice(signature.as_bytes());
        out.extend_from_slice(close.as_bytes());
        out.extend_from_slice(&self.text[range.end..]);
        out
    }

    /// The document as it was sent.
    pub fn text(&self) -> &[u8] {
        &self.text
    }
}

type Analysis = (Kind, Digest, Option<String>, String, Splice);

fn analyse(x: &Xml<'_>) -> Result<Analysis> {
    let root = x.root().map_err(invalid)?;
    if !x.is(root, None, "Document") {
        return Err(Error::Invalid(format!(
            "unknown root element <{}>: an e-prescription document's root is <Document>",
            x.qualified_name(root).unwrap_or_default()
        )));
    }
    let prescription = x.children_named(root, None, "Prescription").count();
    let dispensing = x.children_named(root, None, "Dispensing").count();
    let kind = match (prescription, dispensing) {
        (1, 0) => Kind::Prescription,
        (0, 1) => Kind::Dispensing,
        (0, 0) => {
            return Err(Error::Invalid(
                "unknown document: <Document> holds neither <Prescription> nor <Dispensing>".into(),
            ))
        }
        _ => return Err(Error::Invalid("<Document> must hold exactly one <Prescription> or one <Dispensing>".into())),
    };
    // The signature's container: <Prescription> or <Document>.
    let (container, target) = match kind {
        Kind::Prescription => {
            let p = x.child(root, None, "Prescription").map_err(invalid)?;
            (p, x.child(p, None, "PrescriptionDocument").map_err(invalid)?)
        }
        Kind::Dispensing => (root, x.child(root, None, "Dispensing").map_err(invalid)?),
    };
    // Exactly one element has the target id, and it is the one in its place
    // (a second one, anywhere, is refused by the parser's id index).
    if x.by_id(kind.target_id()) != Some(target) {
        return Err(Error::Invalid(format!(
            "the <{}> element must carry id=\"{}\", and no other element may",
            x.qualified_name(target).unwrap_or_default(),
            kind.target_id()
        )));
    }
    // No signature, but the doctor's inside a dispensing record.
    let doctors = match kind {
        Kind::Prescription => None,
        Kind::Dispensing => Some(doctors_signature(x, target)?),
    };
    if let Some(other) = x.all_elements().into_iter().find(|e| x.is(*e, Some(DS), "Signature") && Some(*e) != doctors) {
        let place = x.parent(other).and_then(|p| x.qualified_name(p)).unwrap_or_default();
        return Err(Error::Invalid(format!(
            "the document is signed already (an xs:Signature in <{place}>): send it without the {} signature",
            kind.as_str()
        )));
    }
    // The signature's own Id must be free (the signature's other ids are
    // chosen to be).
    if x.by_id(kind.signature_id()).is_some() {
        return Err(Error::Invalid(format!(
            "an element already has the id {:?}, which the signature takes",
            kind.signature_id()
        )));
    }
    if let Some(signature) = doctors {
        check::bes(x, signature, Kind::Prescription).map_err(|e| {
            Error::Unprocessable(format!("the doctor's signature in the dispensing record does not verify: {e}"))
        })?;
    }
    let splice = slot(x, kind, container)?;

    // The CSV and the record's id, for the audit log.
    let (csv_element, management, id_element) = match kind {
        Kind::Prescription => (target, "PrescriptionManagement", "PrescriptionId"),
        Kind::Dispensing => {
            (x.child(target, None, "DispensingDocument").map_err(invalid)?, "DispensingManagement", "DispensingId")
        }
    };
    let csv_name = x.qualified_name(csv_element).unwrap_or_default();
    let csv_bytes = x
        .text_only(csv_element)
        .filter(|t| !t.contains(|c: char| c.is_ascii_whitespace()))
        .and_then(|t| base64ct::Base64::decode_vec(&t).ok())
        .ok_or_else(|| {
            Error::Invalid(format!("<{csv_name}> must hold the CSV's base64 on one line, and nothing else"))
        })?;
    let csv_sha256 = csv::check(&csv_bytes, kind)?;
    // The record's id: one management element with one id element, in the
    // form a signing system gives it (it goes into the audit row).
    let id_of = |management: &str, id: &str| -> Result<String> {
        let m = x.child(container_of_management(x, root, kind), None, management).map_err(invalid)?;
        let i = x.child(m, None, id).map_err(invalid)?;
        let value = x.attribute(i, "Value").unwrap_or_default();
        csv::check_id(value).map_err(|_| {
            Error::Invalid(format!("<{id} Value=…> must be 1-64 ASCII letters, digits and '-' (a UUID)"))
        })?;
        Ok(value.to_owned())
    };
    let record_id = Some(id_of(management, id_element)?);

    let canonical = x.inclusive(target).map_err(invalid)?;
    let digest = Digest::of(DigestAlgorithm::Sha256, &canonical);
    Ok((kind, digest, record_id, csv_sha256, splice))
}

/// Where `<PrescriptionManagement>` / `<DispensingManagement>` lives.
fn container_of_management(x: &Xml<'_>, root: NodeId, kind: Kind) -> NodeId {
    match kind {
        Kind::Prescription => x.children_named(root, None, "Prescription").next().unwrap_or(root),
        Kind::Dispensing => root,
    }
}

/// The doctor's signature inside a dispensing record:
/// `Dispensing/ReferencePrescription/PrescriptionSign/xs:Signature`.
fn doctors_signature(x: &Xml<'_>, dispensing: NodeId) -> Result<NodeId> {
    let missing = |what: &str| {
        Error::Unprocessable(format!(
            "the dispensing record holds no doctor's signature to sign over ({what}): it must copy the signed \
             prescription into <Dispensing><ReferencePrescription>"
        ))
    };
    let reference = x.child(dispensing, None, "ReferencePrescription").map_err(|e| missing(&e.0))?;
    let slot = x.child(reference, None, "PrescriptionSign").map_err(|e| missing(&e.0))?;
    x.child(slot, Some(DS), "Signature").map_err(|e| missing(&e.0))
}

/// The signature slot: an empty `<PrescriptionSign>` / `<DispensingSign>` as
/// the container's last element, or, when there is none, a new one after
/// the container's last element.
fn slot(x: &Xml<'_>, kind: Kind, container: NodeId) -> Result<Splice> {
    let name = kind.signature_id();
    let (open, close) = match kind {
        Kind::Prescription => ("<PrescriptionSign>", "</PrescriptionSign>"),
        Kind::Dispensing => ("<DispensingSign>", "</DispensingSign>"),
    };
    let slots: Vec<_> = x.all_elements().into_iter().filter(|e| x.is(*e, None, name)).collect();
    let last = x.elements(container).last();
    match slots.as_slice() {
        [] => {
            let at = match last {
                Some(last) => x.span(last).map_err(invalid)?.whole.end,
                None => x
                    .span(container)
                    .map_err(invalid)?
                    .content
                    .map(|c| c.end)
                    .ok_or_else(|| Error::Invalid("the signature's container is an empty element".into()))?,
            };
            Ok(Splice { range: at..at, open, close })
        }
        [slot] if x.parent(*slot) == Some(container) && last == Some(*slot) => {
            if x.has_content(*slot) {
                return Err(Error::Invalid(format!("<{name}> must be empty: the signature goes into it")));
            }
            let span = x.span(*slot).map_err(invalid)?;
            Ok(match span.content {
                // <Slot></Slot> (or with whitespace): the signature goes before the end tag.
                Some(content) => Splice { range: content.end..content.end, open: "", close: "" },
                // <Slot/>: replaced by <Slot>signature</Slot>.
                None => Splice { range: span.whole, open, close },
            })
        }
        [_] => Err(Error::Invalid(format!(
            "<{name}> must be the last element of <{}>",
            x.qualified_name(container).unwrap_or_default()
        ))),
        _ => Err(Error::Invalid(format!("the document has {} <{name}> elements; at most one", slots.len()))),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A public sample (fixtures/eps).
    pub(crate) fn sample(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/eps").join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// A sample with its outer signature taken out of `<slot>`: (document, signature element).
    pub(crate) fn unsigned(name: &str, slot: &str) -> (Vec<u8>, String) {
        let text = String::from_utf8(sample(name)).expect("utf-8");
        let (open, close) = (format!("<{slot}>"), format!("</{slot}>"));
        let start = text.rfind(&open).expect("slot") + open.len();
        let end = text.rfind(&close).expect("slot end");
        let signature = text[start..end].to_owned();
        (format!("{}{}", &text[..start], &text[end..]).into_bytes(), signature)
    }

    fn digest_value(signature: &str) -> Vec<u8> {
        let start = signature.find("<xs:DigestValue>").expect("DigestValue") + "<xs:DigestValue>".len();
        let end = start + signature[start..].find('<').expect("end");
        xml::decode_base64(&signature[start..end]).expect("base64")
    }

    #[test]
    fn a_sample_prescription_reads_to_its_reference_digest_and_takes_its_signature_back() {
        let original = sample("Prescription-004_01.xml");
        let (text, signature) = unsigned("Prescription-004_01.xml", "PrescriptionSign");
        let doc = Document::read(text).expect("read");
        assert_eq!(doc.kind, Kind::Prescription);
        assert_eq!(xml::mime_base64(doc.digest.as_bytes()), "d2AViR1mbbTGkOUKs3/DNI66RLps3c8tE/UDoled78U=\n");
        assert_eq!(doc.digest.as_bytes(), digest_value(&signature));
        assert_eq!(doc.record_id.as_deref(), Some("1439e0c5-7c1d-4512-861d-263de48417bf"));
        assert_eq!(doc.with_signature(&signature), original, "every byte outside the signature is kept");
        // Signed already: refused.
        let e = Document::read(original).expect_err("signed");
        assert!(e.to_string().contains("signed already"), "{e}");
    }

    #[test]
    fn a_sample_dispensing_record_checks_the_doctors_signature_first() {
        let original = sample("Dispensing-005_03.xml");
        let (text, signature) = unsigned("Dispensing-005_03.xml", "DispensingSign");
        let doc = Document::read(text.clone()).expect("read");
        assert_eq!(doc.kind, Kind::Dispensing);
        assert_eq!(doc.digest.as_bytes(), digest_value(&signature));
        assert!(xml::mime_base64(doc.digest.as_bytes()).starts_with("qjvcVHTS"));
        assert_eq!(doc.record_id.as_deref(), Some("024d68dd-074f-4442-8fee-7d8c6c952afd"));
        assert_eq!(doc.with_signature(&signature), original);
        // One byte changed in the doctor's prescription: 422 naming the reference.
        let tampered = String::from_utf8(text).expect("utf-8").replacen("U0oxCjEs", "U0oxCjEt", 1);
        let e = Document::read(tampered.into_bytes()).expect_err("tampered");
        assert!(matches!(e, Error::Unprocessable(_)), "{e}");
        assert!(e.to_string().contains("reference 1"), "{e}");
    }

    #[test]
    fn a_doctors_signature_moved_beside_a_forged_prescription_does_not_pass() {
        // Signature wrapping: the doctor's signed <PrescriptionDocument> goes
        // where no signature covers it, and a forged one without the id takes
        // its place in <ReferencePrescription>, under the pharmacist's.
        let (text, _) = unsigned("Dispensing-005_03.xml", "DispensingSign");
        let text = String::from_utf8(text).expect("utf-8");
        let start = text.find("<PrescriptionDocument id=\"PrescriptionDocument\">").expect("doc");
        let end = start + text[start..].find("</PrescriptionDocument>").expect("end") + "</PrescriptionDocument>".len();
        let genuine = &text[start..end];
        let forged = format!(
            "<PrescriptionDocument>{}</PrescriptionDocument>",
            base64ct::Base64::encode_string(b"SJ1\n1,1,9999999,99,forged")
        );
        let info = "<AdditionalDispensedInformation id=\"AdditionalDispensedInformation\">";
        let attack =
            format!("{}{forged}{}", &text[..start], &text[end..]).replacen(info, &format!("{info}{genuine}"), 1);
        assert!(attack.contains(info), "the sample has the element");
        let e = Document::read(attack.into_bytes()).expect_err("wrapped");
        assert!(matches!(e, Error::Unprocessable(_)), "{e}");
        assert!(e.to_string().contains("beside the signature"), "{e}");
    }

    #[test]
    fn the_csv_alone_gives_the_samples_reference_digest() {
        let original = String::from_utf8(sample("Prescription-004_01.xml")).expect("utf-8");
        let start = original.find("<PrescriptionDocument id=\"PrescriptionDocument\">").expect("doc") + 48;
        let end = start + original[start..].find('<').expect("end");
        let csv = xml::decode_base64(&original[start..end]).expect("csv");
        let text = csv::prescription_document(&csv, "1439e0c5-7c1d-4512-861d-263de48417bf").expect("document");
        let doc = Document::read(text.clone()).expect("read");
        // Made without reading it back, the same document.
        let known = Document::from_csv(&csv, "1439e0c5-7c1d-4512-861d-263de48417bf").expect("from_csv");
        assert_eq!(
            (&known.digest, &known.record_id, &known.csv_sha256, &known.ids, known.text()),
            (&doc.digest, &doc.record_id, &doc.csv_sha256, &doc.ids, &text[..])
        );
        assert_eq!(known.with_signature("<xs:Signature/>"), doc.with_signature("<xs:Signature/>"));
        assert_eq!(xml::mime_base64(doc.digest.as_bytes()), "d2AViR1mbbTGkOUKs3/DNI66RLps3c8tE/UDoled78U=\n");
        // SPEC §1.4's formula, from the CSV alone.
        use base64ct::Encoding;
        let formula = format!(
            "<PrescriptionDocument xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" id=\"PrescriptionDocument\">{}</PrescriptionDocument>",
            base64ct::Base64::encode_string(&csv)
        );
        assert_eq!(doc.digest, Digest::of(DigestAlgorithm::Sha256, formula.as_bytes()));
    }

    #[test]
    fn slots_and_structure() {
        let base = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Document xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" id=\"Document\"><Prescription><PrescriptionManagement id=\"PrescriptionManagement\"><Version Value=\"EPS1.0\"/><PrescriptionId Value=\"p-1\"/></PrescriptionManagement><PrescriptionDocument id=\"PrescriptionDocument\">U0oxCjEsMQ==</PrescriptionDocument>SLOT</Prescription></Document>";
        let read = |slot: &str| Document::read(base.replace("SLOT", slot).into_bytes());
        let sig = "<xs:Signature/>";
        for (slot, signed) in [
            ("", format!("<PrescriptionSign>{sig}</PrescriptionSign>")),
            ("<PrescriptionSign/>", format!("<PrescriptionSign>{sig}</PrescriptionSign>")),
            ("<PrescriptionSign></PrescriptionSign>", format!("<PrescriptionSign>{sig}</PrescriptionSign>")),
            ("<PrescriptionSign>\n</PrescriptionSign>", format!("<PrescriptionSign>\n{sig}</PrescriptionSign>")),
        ] {
            let doc = read(slot).expect(slot);
            assert_eq!(doc.with_signature(sig), base.replace("SLOT", &signed).into_bytes(), "{slot}");
        }
        for (slot, says) in [
            ("<PrescriptionSign>x</PrescriptionSign>", "must be empty"),
            ("<PrescriptionSign/><Other/>", "last element"),
            ("<PrescriptionSign/><PrescriptionSign/>", "at most one"),
            ("<Extra id=\"PrescriptionDocument\"/>", "two elements have id"),
            ("<Extra Id=\"PrescriptionManagement\"/>", "two elements have id"),
        ] {
            let e = read(slot).expect_err(slot);
            assert!(e.to_string().contains(says), "{slot}: {e}");
        }
        let e = Document::read(base.replace("SLOT", "").replace("U0oxCjEsMQ==", "U0oyCjEsMQ==").into_bytes())
            .expect_err("SJ2");
        assert!(e.to_string().contains("SJ1"), "{e}");
        let e = Document::read(b"<Other/>".to_vec()).expect_err("root");
        assert!(e.to_string().contains("unknown root"), "{e}");
        let e = Document::read(b"<Document><Misc/></Document>".to_vec()).expect_err("kind");
        assert!(e.to_string().contains("neither"), "{e}");
    }
}
