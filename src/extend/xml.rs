//! XAdES in the e-prescription profile, extended in its text: the new
//! unsigned properties are written as inkan writes its own
//! ([`crate::signing::xades`]) and spliced in before
//! `</xa:UnsignedSignatureProperties>` (or, at B-B, as
//! `xa:UnsignedProperties` before `</xa:QualifyingProperties>`); every
//! other byte of the document stays as it was.

use std::collections::HashSet;

use inkan_keystore::DigestAlgorithm;

use super::seam::Extendable;
use crate::eps::Kind;
use crate::error::{Error, Result};
use crate::signing::format::Family;
use crate::signing::format::{ArchiveStamp, Level, ValidationData};
use crate::signing::xades;
use crate::tsa::Checked;
use crate::xml::{self, NodeId, Xml, DS, XADES, XADES141};

/// The signature of an e-prescription document: the dispensing record's,
/// else the prescription's.
pub struct Xades {
    text: Vec<u8>,
    kind: Kind,
}

/// Where new unsigned properties go.
enum Insert {
    /// Into `xa:UnsignedSignatureProperties`, before its end tag.
    Inside(usize),
    /// A new `xa:UnsignedProperties` before `</xa:QualifyingProperties>`.
    New(usize),
}

fn parse(text: &[u8]) -> Result<Xml<'_>> {
    xml::parse(text).map_err(|e| Error::Invalid(format!("the document: {}", e.0)))
}

fn decode(x: &Xml<'_>, node: NodeId, what: &str) -> Result<Vec<u8>> {
    xml::decode_base64(&x.text_of(node)).ok_or_else(|| Error::Unprocessable(format!("{what} is not base64")))
}

impl Xades {
    /// The document's signature at the profile's place.
    pub fn open(input: &[u8]) -> Result<Xades> {
        let x = parse(input)?;
        let (places, problems) = crate::verify::xades::locate(&x);
        if let Some(p) = problems.first() {
            return Err(Error::Unprocessable(format!("{}: {}", p.check, p.detail)));
        }
        let (_, kind) = places.first().copied().ok_or_else(|| {
            Error::Unprocessable(
                "the document has no signature at a place the profile has (Prescription/PrescriptionSign, \
                 DispensingSign): sign it first"
                    .into(),
            )
        })?;
        Ok(Xades { text: input.to_vec(), kind })
    }

    /// Runs `f` over the parsed document and its signature.
    fn with<R>(&self, f: impl FnOnce(&Xml<'_>, NodeId) -> Result<R>) -> Result<R> {
        let x = parse(&self.text)?;
        let (places, _) = crate::verify::xades::locate(&x);
        let node = places
            .iter()
            .find(|(_, k)| *k == self.kind)
            .map(|(n, _)| *n)
            .ok_or_else(|| Error::Internal("the document lost its signature".into()))?;
        f(&x, node)
    }

    /// Every child of `xa:UnsignedSignatureProperties` named `local` in `ns`.
    fn properties(x: &Xml<'_>, signature: NodeId, ns: &str, local: &str) -> Vec<NodeId> {
        crate::verify::xades::unsigned_properties(x, signature)
            .map(|u| x.children_named(u, Some(ns), local).collect())
            .unwrap_or_default()
    }

    /// The token of a time-stamp property (its `xa:EncapsulatedTimeStamp`).
    fn token(x: &Xml<'_>, property: NodeId) -> Result<Vec<u8>> {
        let encapsulated = x
            .child(property, Some(XADES), "EncapsulatedTimeStamp")
            .map_err(|e| Error::Unprocessable(format!("a time-stamp property: {}", e.0)))?;
        decode(x, encapsulated, "a time-stamp token")
    }

    /// Where properties go, checked to be written with the profile's `xa` prefix.
    fn insertion(x: &Xml<'_>, signature: NodeId) -> Result<Insert> {
        let written_as = |node: NodeId, name: &str| {
            if x.qualified_name(node).as_deref() == Some(name) {
                Ok(())
            } else {
                Err(Error::Unprocessable(format!(
                    "<{}> is not written as <{name}>, as the profile writes it: inkan extends the profile's form only",
                    x.qualified_name(node).unwrap_or_default()
                )))
            }
        };
        let place = |node: NodeId| -> Result<usize> {
            let span = x.span(node).map_err(|e| Error::Internal(e.0))?;
            span.content.map(|c| c.end).ok_or_else(|| {
                Error::Unprocessable(format!("<{}/> is empty", x.qualified_name(node).unwrap_or_default()))
            })
        };
        if let Some(u) = crate::verify::xades::unsigned_properties(x, signature) {
            written_as(u, "xa:UnsignedSignatureProperties")?;
            return Ok(Insert::Inside(place(u)?));
        }
        let object = x.children_named(signature, Some(DS), "Object").next();
        let qualifying = object
            .and_then(|o| x.children_named(o, Some(XADES), "QualifyingProperties").next())
            .ok_or_else(|| Error::Unprocessable("the signature has no xa:QualifyingProperties".into()))?;
        written_as(qualifying, "xa:QualifyingProperties")?;
        if let Some(u) = x.children_named(qualifying, Some(XADES), "UnsignedProperties").next() {
            return Err(Error::Unprocessable(format!(
                "<{}> holds no xa:UnsignedSignatureProperties",
                x.qualified_name(u).unwrap_or_default()
            )));
        }
        Ok(Insert::New(place(qualifying)?))
    }

    /// Splices `properties` into the unsigned signature properties.
    fn add(&mut self, properties: &str) -> Result<()> {
        let insert = self.with(Xades::insertion)?;
        let (at, text) = match insert {
            Insert::Inside(at) => (at, properties.to_owned()),
            Insert::New(at) => (
                at,
                format!(
                    "<xa:UnsignedProperties><xa:UnsignedSignatureProperties>{properties}\
                     </xa:UnsignedSignatureProperties></xa:UnsignedProperties>"
                ),
            ),
        };
        self.text.splice(at..at, text.into_bytes());
        Ok(())
    }

    /// `n` ids new to the document.
    fn fresh_ids(&self, n: usize) -> Result<Vec<String>> {
        let taken: HashSet<String> = self.with(|x, _| Ok(x.ids().map(str::to_owned).collect()))?;
        xades::new_ids(&taken, n)
    }

    /// The `Id` of the newest archive time-stamp.
    fn newest_archive_id(&self) -> Result<Option<String>> {
        self.with(|x, s| {
            Ok(Xades::properties(x, s, XADES141, "ArchiveTimeStamp")
                .last()
                .and_then(|a| x.attribute(*a, "Id").map(str::to_owned)))
        })
    }
}

impl Extendable for Xades {
    fn format(&self) -> &'static str {
        Family::Xades.about().name
    }

    fn level(&self) -> Level {
        let level = self
            .with(|x, s| Ok(crate::verify::xades::level(x, crate::verify::xades::unsigned_properties(x, s))))
            .unwrap_or("B-B");
        level.parse().unwrap_or_default()
    }

    fn signer_certificate(&self) -> Result<Vec<u8>> {
        self.with(|x, s| {
            let cert = x
                .child(s, Some(DS), "KeyInfo")
                .and_then(|k| x.child(k, Some(DS), "X509Data"))
                .and_then(|d| x.child(d, Some(DS), "X509Certificate"))
                .map_err(|e| Error::Unprocessable(format!("the signer's certificate: {}", e.0)))?;
            decode(x, cert, "the signer's certificate")
        })
    }

    fn certificates(&self) -> Vec<Vec<u8>> {
        self.with(|x, s| {
            let mut out = Vec::new();
            let mut stack = vec![s];
            while let Some(n) = stack.pop() {
                if x.is(n, Some(XADES), "EncapsulatedX509Certificate") || x.is(n, Some(DS), "X509Certificate") {
                    out.extend(xml::decode_base64(&x.text_of(n)));
                } else {
                    stack.extend(x.elements(n));
                }
            }
            Ok(out)
        })
        .unwrap_or_default()
    }

    /// The inclusive C14N 1.0 of `xs:SignatureValue` in the document.
    fn signature_timestamp_input(&self) -> Result<Vec<u8>> {
        self.with(|x, s| {
            let value = x.child(s, Some(DS), "SignatureValue").map_err(|e| Error::Unprocessable(e.0))?;
            x.inclusive(value).map_err(|e| Error::Internal(e.0))
        })
    }

    fn signature_timestamp(&self) -> Result<Option<Vec<u8>>> {
        self.with(|x, s| {
            Xades::properties(x, s, XADES, "SignatureTimeStamp").first().map(|p| Xades::token(x, *p)).transpose()
        })
    }

    fn newest_archive_timestamp(&self) -> Result<Option<Vec<u8>>> {
        self.with(|x, s| {
            Xades::properties(x, s, XADES141, "ArchiveTimeStamp").last().map(|p| Xades::token(x, *p)).transpose()
        })
    }

    fn add_signature_timestamp(&mut self, stamp: &Checked) -> Result<()> {
        let id = self.fresh_ids(1)?;
        self.add(&xades::signature_time_stamp(&id[0], &stamp.token))
    }

    fn add_long_term(&mut self, data: &ValidationData) -> Result<()> {
        let sts = self.with(|x, s| {
            let stamp = Xades::properties(x, s, XADES, "SignatureTimeStamp")
                .first()
                .copied()
                .ok_or_else(|| Error::Internal("B-LT without a signature time-stamp".into()))?;
            x.attribute(stamp, "Id").map(str::to_owned).ok_or_else(|| {
                Error::Unprocessable("the signature time-stamp has no Id for its validation data to name".into())
            })
        })?;
        let ids = self.fresh_ids(5)?;
        self.add(&xades::long_term(&ids, &sts, data))
    }

    fn add_archive_validation(&mut self, path: &[Vec<u8>], crls: &[Vec<u8>]) -> Result<()> {
        let ats = self.newest_archive_id()?.ok_or_else(|| {
            Error::Unprocessable("the archive time-stamp has no Id for its validation data to name".into())
        })?;
        let ids = self.fresh_ids(3)?;
        self.add(&xades::timestamp_validation_data(&ids, &ats, "EncapsulatedX509Certificate", path, crls))
    }

    /// XAdES 1.4.1: over the references' data, SignedInfo, SignatureValue,
    /// KeyInfo and every unsigned signature property so far.
    fn archive_timestamp_input(&self) -> Result<(DigestAlgorithm, Vec<u8>)> {
        self.with(|x, s| {
            let input = crate::eps::archive::input(x, s, None).map_err(Error::Unprocessable)?;
            Ok((DigestAlgorithm::Sha256, input))
        })
    }

    fn add_archive_timestamp(&mut self, archive: &ArchiveStamp) -> Result<()> {
        let ids = self.fresh_ids(4)?;
        self.add(&xades::archive_time_stamp(&ids, archive))
    }

    fn into_bytes(self: Box<Self>) -> Result<Vec<u8>> {
        Ok(self.text)
    }
}
