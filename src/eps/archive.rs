//! What an XAdES archive time-stamp (`xa141:ArchiveTimeStamp`, XAdES 1.4.1,
//! SPEC §3.2) covers: the concatenation of
//!
//! 1. each reference's data after its transforms (Reference 1 in inclusive
//!    C14N, References 2 and 3 in exclusive C14N, as their digests are made);
//! 2. the inclusive C14N 1.0 (in the document's context) of `xs:SignedInfo`,
//!    `xs:SignatureValue` and `xs:KeyInfo`;
//! 3. the inclusive C14N of each child of `xa:UnsignedSignatureProperties`
//!    before the archive time-stamp, in order;
//! 4. the inclusive C14N of each `xs:Object` that holds no
//!    `xa:QualifyingProperties`.
//!
//! The public dispensing sample's archive time-stamp is over exactly this
//! (ten parts; the unit test recomputes its imprint), as MediSignVerifier
//! computes it.

use crate::xml::{self, uri, NodeId, Xml, DS, XADES};

/// The input of an archive time-stamp of `signature` placed before `before`
/// (a child of `UnsignedSignatureProperties`; `None`: after the last one).
pub fn input(x: &Xml<'_>, signature: NodeId, before: Option<NodeId>) -> Result<Vec<u8>, String> {
    let err = |e: xml::XmlError| e.0;
    let signed_info = x.child(signature, Some(DS), "SignedInfo").map_err(err)?;
    let mut out = Vec::new();
    for reference in x.children_named(signed_info, Some(DS), "Reference") {
        let uri_attr = x.attribute(reference, "URI").unwrap_or_default();
        let id = uri_attr.strip_prefix('#').ok_or_else(|| format!("a reference to {uri_attr:?}"))?;
        let node = x.by_id(id).ok_or_else(|| format!("no element has the id {id:?}"))?;
        let transformed = x.children_named(reference, Some(DS), "Transforms").next().is_some();
        let c14n = if transformed { uri::EXC_C14N } else { uri::C14N };
        out.extend(x.canonical_by_uri(node, c14n).ok_or("no such C14N")?.map_err(err)?);
    }
    for name in ["SignedInfo", "SignatureValue", "KeyInfo"] {
        let node = x.child(signature, Some(DS), name).map_err(err)?;
        out.extend(x.inclusive(node).map_err(err)?);
    }
    let objects: Vec<NodeId> = x.children_named(signature, Some(DS), "Object").collect();
    let properties = objects
        .iter()
        .find_map(|o| x.children_named(*o, Some(XADES), "QualifyingProperties").next())
        .and_then(|q| x.children_named(q, Some(XADES), "UnsignedProperties").next())
        .and_then(|u| x.children_named(u, Some(XADES), "UnsignedSignatureProperties").next());
    if let Some(properties) = properties {
        for child in x.elements(properties) {
            if Some(child) == before {
                break;
            }
            out.extend(x.inclusive(child).map_err(err)?);
        }
    }
    for object in objects {
        if x.children_named(object, Some(XADES), "QualifyingProperties").next().is_none() {
            out.extend(x.inclusive(object).map_err(err)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eps::document::tests::sample;

    #[test]
    fn the_dispensing_samples_archive_time_stamp_is_over_this_input() {
        let text = sample("Dispensing-005_03.xml");
        let x = xml::parse(&text).expect("parse");
        let signature = x.by_id("DispensingSign").expect("signature");
        let ats = x.by_id("id97644ad5").expect("the archive time-stamp");
        let input = input(&x, signature, Some(ats)).expect("input");
        let token = x.children_named(ats, Some(XADES), "EncapsulatedTimeStamp").next().expect("token");
        let token = xml::decode_base64(&x.text_of(token)).expect("base64");
        let ci = <cms::content_info::ContentInfo as der::Decode>::from_der(&token).expect("ContentInfo");
        let sd: cms::signed_data::SignedData = ci.content.decode_as().expect("SignedData");
        let econtent = sd.encap_content_info.econtent.expect("TSTInfo");
        let tst = <der::asn1::OctetString as der::Decode>::from_der(&der::Encode::to_der(&econtent).expect("der"))
            .expect("octets");
        let info = crate::tsa::asn1::TstInfo::from_der(tst.as_bytes()).expect("TSTInfo");
        let alg = inkan_keystore::DigestAlgorithm::from_oid(&info.message_imprint.hash_algorithm.oid).expect("alg");
        assert_eq!(alg.digest(&input), info.message_imprint.hashed_message.as_bytes(), "the sample's imprint");
    }
}
