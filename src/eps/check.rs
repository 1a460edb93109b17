//! Whether a signature in an e-prescription document verifies as XAdES-BES
//! in the national profile, more strictly than the reference verifier
//! (SPEC §7): the signature in its slot, exactly the profile's three
//! references (Reference 1 to the element beside the slot, without
//! transforms; KeyInfo and SignedProperties the signature's own, with
//! exclusive C14N), each digest recomputed, the signature value over the
//! exclusive C14N of SignedInfo, the
//! certificate digest of SigningCertificate(V2) always compared with the
//! certificate in KeyInfo, keyUsage nonRepudiation, and an hcRole that may
//! sign the document's kind. Chains, revocation and timestamps are the
//! validation service's (they need trust anchors and time).

use der::Decode;
use inkan_keystore::DigestAlgorithm;
use x509_cert::Certificate;

use super::kind::Kind;
use crate::xml::{self, uri, NodeId, Xml, DS, XADES};

/// What a verified signature says about itself.
#[derive(Clone, Debug)]
pub struct Verified {
    /// The signer's certificate (DER), from KeyInfo.
    pub certificate: Vec<u8>,
    /// Its hcRole.
    pub hc_role: String,
    /// `SigningTime`, as written.
    pub signing_time: Option<String>,
}

/// What failed, in words a client developer can act on, and which kind of
/// check it was (a validation report classifies by it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// Which kind of check failed.
    pub problem: Problem,
    /// What failed.
    pub message: String,
}

/// The kinds of check [`bes`] makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The signature is not shaped as the profile's (elements, references,
    /// transforms, ids, place).
    Format,
    /// A reference's digest does not match: what it points to was changed.
    Digest,
    /// The signature value does not verify with the certificate.
    SignatureValue,
    /// The certificate in KeyInfo is not the one SigningCertificateV2 names.
    CertificateDigest,
    /// The certificate may not make this signature (keyUsage, hcRole).
    Signer,
}

fn fail(message: impl Into<String>) -> Failure {
    Failure { problem: Problem::Format, message: message.into() }
}

fn failed(problem: Problem, message: impl Into<String>) -> Failure {
    Failure { problem, message: message.into() }
}

/// The digest algorithm an XMLDSig `DigestMethod` names.
pub fn digest_algorithm(method: &str) -> Option<DigestAlgorithm> {
    match method {
        uri::SHA256 => Some(DigestAlgorithm::Sha256),
        uri::SHA384 => Some(DigestAlgorithm::Sha384),
        uri::SHA512 => Some(DigestAlgorithm::Sha512),
        _ => None,
    }
}

/// Checks the signature element `signature` of a document of `kind` (see
/// the module documentation).
pub fn bes(x: &Xml<'_>, signature: NodeId, kind: Kind) -> Result<Verified, Failure> {
    let err = |e: xml::XmlError| fail(e.0);
    let id = x.attribute(signature, "Id").unwrap_or_default();
    if id != kind.signature_id() {
        return Err(fail(format!("the signature's Id is {id:?}, not {:?}", kind.signature_id())));
    }
    let signed_info = x.child(signature, Some(DS), "SignedInfo").map_err(err)?;
    let value = x.child(signature, Some(DS), "SignatureValue").map_err(err)?;
    let key_info = x.child(signature, Some(DS), "KeyInfo").map_err(err)?;
    let object = x.child(signature, Some(DS), "Object").map_err(err)?;
    let qualifying = x.child(object, Some(XADES), "QualifyingProperties").map_err(err)?;
    if x.attribute(qualifying, "Target") != Some(&format!("#{id}")) {
        return Err(fail("QualifyingProperties does not target this signature"));
    }
    let signed_properties = x.child(qualifying, Some(XADES), "SignedProperties").map_err(err)?;
    // What Reference 1 must point to: the target element beside the
    // signature's slot (`PrescriptionSign` in `Prescription`, or in a
    // dispensing record's `ReferencePrescription`; `DispensingSign` in
    // `Document`), not merely an element with the target's id somewhere
    // (an element the signature names by id could sit where nothing checks
    // it, with another in its place: signature wrapping).
    let slot = x.parent(signature).filter(|p| x.is(*p, None, kind.signature_id()));
    let target = slot
        .and_then(|slot| x.parent(slot))
        .and_then(|container| x.child(container, None, kind.target_id()).ok())
        .ok_or_else(|| {
            fail(format!(
                "the signature is not in a <{}> beside the <{}> it signs",
                kind.signature_id(),
                kind.target_id()
            ))
        })?;

    // SignedInfo: exclusive C14N, the signature method and exactly three references.
    let c14n = x.child(signed_info, Some(DS), "CanonicalizationMethod").map_err(err)?;
    let c14n = x.attribute(c14n, "Algorithm").unwrap_or_default();
    if c14n != uri::EXC_C14N {
        return Err(fail(format!("SignedInfo's CanonicalizationMethod is {c14n:?}; the profile's is exclusive C14N")));
    }
    let method = x.child(signed_info, Some(DS), "SignatureMethod").map_err(err)?;
    let method = x.attribute(method, "Algorithm").unwrap_or_default().to_owned();
    let references: Vec<NodeId> = x.children_named(signed_info, Some(DS), "Reference").collect();
    if x.elements(signed_info).count() != references.len() + 2 {
        return Err(fail("SignedInfo holds elements other than CanonicalizationMethod, SignatureMethod and Reference"));
    }
    if references.len() != 3 {
        return Err(fail(format!("the signature has {} references; the profile has exactly 3", references.len())));
    }
    let targets = [
        (format!("#{}", kind.target_id()), Some(target)),
        (format!("#{}", x.attribute(key_info, "Id").unwrap_or("(KeyInfo without Id)")), Some(key_info)),
        (
            format!("#{}", x.attribute(signed_properties, "Id").unwrap_or("(SignedProperties without Id)")),
            Some(signed_properties),
        ),
    ];
    for (n, (reference, (want_uri, want_node))) in references.iter().zip(&targets).enumerate() {
        let n = n + 1;
        let uri = x.attribute(*reference, "URI").unwrap_or_default();
        if uri != want_uri {
            return Err(fail(format!("reference {n} points to {uri:?}, not {want_uri:?}")));
        }
        let node = x.by_id(&uri[1..]).ok_or_else(|| fail(format!("reference {n} ({uri}): no element has that id")))?;
        if want_node.is_some_and(|w| w != node) {
            return Err(fail(format!(
                "reference {n} ({uri}) is not {}",
                if n == 1 { "the element beside the signature" } else { "this signature's own element" }
            )));
        }
        if n == 3 && x.attribute(*reference, "Type") != Some(uri::SIGNED_PROPERTIES) {
            return Err(fail("reference 3 lacks Type=\"http://uri.etsi.org/01903#SignedProperties\""));
        }
        check_reference(x, *reference, node, n, uri)?;
    }

    // The certificate: KeyInfo's, and the one SignedProperties names.
    let data = x.child(key_info, Some(DS), "X509Data").map_err(err)?;
    let cert_el = x
        .children_named(data, Some(DS), "X509Certificate")
        .next()
        .ok_or_else(|| fail("KeyInfo holds no certificate"))?;
    let der = xml::decode_base64(&x.text_of(cert_el)).ok_or_else(|| fail("X509Certificate is not base64"))?;
    let certificate = Certificate::from_der(&der).map_err(|e| fail(format!("X509Certificate does not decode: {e}")))?;
    check_cert_digest(x, signed_properties, &der)?;

    // The signature value over SignedInfo.
    let canonical = x
        .canonical_by_uri(signed_info, c14n)
        .ok_or_else(|| fail(format!("unknown CanonicalizationMethod {c14n:?}")))?
        .map_err(err)?;
    let sig = xml::decode_base64(&x.text_of(value)).ok_or_else(|| fail("SignatureValue is not base64"))?;
    crate::pki::verify_xml_signature(&certificate, &method, &canonical, &sig).map_err(|e| {
        failed(if e.starts_with("unknown SignatureMethod") { Problem::Format } else { Problem::SignatureValue }, e)
    })?;

    // What the certificate allows.
    if !crate::pki::has_non_repudiation(&certificate) {
        return Err(failed(Problem::Signer, "the signer's certificate lacks keyUsage nonRepudiation"));
    }
    let hc_role = crate::pki::profile::read_hc_role(&certificate)
        .ok_or_else(|| failed(Problem::Signer, "the signer's certificate names no hcRole"))?;
    if !kind.signer_roles().contains(&hc_role.as_str()) {
        return Err(failed(Problem::Signer, format!("the signer's hcRole is {hc_role:?}, who may not sign a {kind}")));
    }
    let signing_time = x
        .children_named(signed_properties, Some(XADES), "SignedSignatureProperties")
        .next()
        .and_then(|p| x.children_named(p, Some(XADES), "SigningTime").next())
        .map(|t| x.text_of(t));
    Ok(Verified { certificate: der, hc_role, signing_time })
}

/// One reference as the profile has it: Reference 1 without transforms
/// (so inclusive C14N 1.0), the others with exactly one, exclusive C14N;
/// the digest recomputed.
fn check_reference(x: &Xml<'_>, reference: NodeId, node: NodeId, n: usize, uri: &str) -> Result<(), Failure> {
    let err = |e: xml::XmlError| fail(e.0);
    let transforms: Vec<NodeId> = x.children_named(reference, Some(DS), "Transforms").collect();
    let c14n = match (n, transforms.as_slice()) {
        (1, []) => uri::C14N,
        (1, _) => return Err(fail("reference 1 has transforms; the profile's has none (inclusive C14N 1.0)")),
        (_, [t]) => match x.elements(*t).collect::<Vec<_>>().as_slice() {
            [one] if x.is(*one, Some(DS), "Transform") && x.attribute(*one, "Algorithm") == Some(uri::EXC_C14N) => {
                uri::EXC_C14N
            }
            _ => return Err(fail(format!("reference {n} ({uri}) has transforms other than one exclusive C14N"))),
        },
        _ => return Err(fail(format!("reference {n} ({uri}) has no transform; the profile's is exclusive C14N"))),
    };
    if x.elements(reference).count() != transforms.len() + 2 {
        return Err(fail(format!("reference {n} holds elements other than Transforms, DigestMethod and DigestValue")));
    }
    let method = x.child(reference, Some(DS), "DigestMethod").map_err(err)?;
    let method = x.attribute(method, "Algorithm").unwrap_or_default();
    let alg =
        digest_algorithm(method).ok_or_else(|| fail(format!("reference {n}: unknown DigestMethod {method:?}")))?;
    let value = x.child(reference, Some(DS), "DigestValue").map_err(err)?;
    let expected = xml::decode_base64(&x.text_of(value))
        .ok_or_else(|| fail(format!("reference {n}: DigestValue is not base64")))?;
    let canonical = x
        .canonical_by_uri(node, c14n)
        .ok_or_else(|| fail(format!("reference {n}: unknown transform {c14n:?}")))?
        .map_err(err)?;
    if alg.digest(&canonical) != expected {
        return Err(failed(
            Problem::Digest,
            format!("reference {n} ({uri}): the digest does not match (the element was changed)"),
        ));
    }
    Ok(())
}

/// SigningCertificateV2 (or V1) names the certificate of KeyInfo by its digest.
fn check_cert_digest(x: &Xml<'_>, signed_properties: NodeId, der: &[u8]) -> Result<(), Failure> {
    let properties = x
        .children_named(signed_properties, Some(XADES), "SignedSignatureProperties")
        .next()
        .ok_or_else(|| fail("SignedProperties holds no SignedSignatureProperties"))?;
    let signing_certificate = x
        .children_named(properties, Some(XADES), "SigningCertificateV2")
        .chain(x.children_named(properties, Some(XADES), "SigningCertificate"))
        .next()
        .ok_or_else(|| fail("SignedSignatureProperties holds no SigningCertificateV2"))?;
    for cert in x.children_named(signing_certificate, Some(XADES), "Cert") {
        let Some(digest) = x.children_named(cert, Some(XADES), "CertDigest").next() else { continue };
        let method =
            x.children_named(digest, Some(DS), "DigestMethod").next().and_then(|m| x.attribute(m, "Algorithm"));
        let value =
            x.children_named(digest, Some(DS), "DigestValue").next().and_then(|v| xml::decode_base64(&x.text_of(v)));
        if let (Some(alg), Some(value)) = (method.and_then(digest_algorithm), value) {
            if alg.digest(der) == value {
                return Ok(());
            }
        }
    }
    Err(failed(
        Problem::CertificateDigest,
        "the certificate digest in SigningCertificateV2 does not match the certificate in KeyInfo",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eps::document::tests::sample;

    fn check(text: &[u8], id: &str, kind: Kind) -> Result<Verified, Failure> {
        let x = xml::parse(text).map_err(|e| fail(e.0))?;
        let node = x.by_id(id).ok_or_else(|| fail("no such signature"))?;
        bes(&x, node, kind)
    }

    #[test]
    fn both_public_samples_pass_and_their_three_signatures_name_their_signers() {
        let p = check(&sample("Prescription-004_01.xml"), "PrescriptionSign", Kind::Prescription).expect("doctor");
        assert_eq!(p.hc_role, "Medical Doctor");
        assert_eq!(p.signing_time.as_deref(), Some("2022-09-07T08:08:01+00:00"));
        assert_eq!(p.certificate, sample("extracted-doctor-signer.der"));
        let d = sample("Dispensing-005_03.xml");
        let pharmacist = check(&d, "DispensingSign", Kind::Dispensing).expect("pharmacist");
        assert_eq!(pharmacist.hc_role, "Pharmacist");
        assert_eq!(pharmacist.certificate, sample("extracted-pharmacist-signer.der"));
        let doctor = check(&d, "PrescriptionSign", Kind::Prescription).expect("the doctor's, nested");
        assert_eq!(doctor.hc_role, "Medical Doctor");
    }

    #[test]
    fn a_changed_sample_fails_naming_what() {
        let text = String::from_utf8(sample("Prescription-004_01.xml")).expect("utf-8");
        let signature_value = text.find("-SignatureValue\">").expect("value") + 17;
        for (name, changed, says) in [
            ("the CSV", text.replacen("U0oxCjEs", "U0oxCjEt", 1), "reference 1"),
            ("the signing time", text.replace("2022-09-07T08:08:01", "2022-09-07T08:08:02"), "reference 3"),
            (
                "the signature value",
                format!("{}{}{}", &text[..signature_value], "DE2j", &text[signature_value + 4..]),
                "signature value",
            ),
            (
                "a fourth reference",
                text.replacen(
                    "</xs:SignedInfo>",
                    "<xs:Reference URI=\"#PrescriptionManagement\"><xs:DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/><xs:DigestValue>AA==</xs:DigestValue></xs:Reference></xs:SignedInfo>",
                    1,
                ),
                "4 references",
            ),
            (
                "another reference target",
                text.replacen("URI=\"#PrescriptionDocument\"", "URI=\"#PrescriptionManagement\"", 1),
                "reference 1 points to",
            ),
            (
                "a transform on reference 1",
                text.replacen(
                    "URI=\"#PrescriptionDocument\">",
                    "URI=\"#PrescriptionDocument\"><xs:Transforms><xs:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/></xs:Transforms>",
                    1,
                ),
                "transforms",
            ),
            ("another qualifying target", text.replacen("Target=\"#PrescriptionSign\"", "Target=\"#x\"", 1), "target"),
        ] {
            let e = check(changed.as_bytes(), "PrescriptionSign", Kind::Prescription).expect_err(name);
            assert!(e.message.contains(says), "{name}: {e}");
        }
        // A doctor's signature is not a pharmacist's, and an hcRole that may
        // not sign the kind is refused.
        let e = check(text.as_bytes(), "PrescriptionSign", Kind::Dispensing).expect_err("kind");
        assert!(e.message.contains("Id"), "{e}");
        // Signature wrapping: a second element with the target's id.
        let wrapped = text.replacen(
            "<AdditionalPrescriptionInformation id=\"AdditionalPrescriptionInformation\">",
            "<AdditionalPrescriptionInformation id=\"PrescriptionDocument\">",
            1,
        );
        assert!(check(wrapped.as_bytes(), "PrescriptionSign", Kind::Prescription).is_err());
    }
}
