//! XAdES-BES in the national e-prescription profile, behind the format seam,
//! byte for byte as the public samples (SPEC §1): prefixes `xs`/`xa`, the
//! signature's `Id` `PrescriptionSign` or `DispensingSign`, three references
//! (Reference 1 to `#PrescriptionDocument` / `#Dispensing` with no
//! transforms, so inclusive C14N 1.0 in the document's context; KeyInfo and
//! SignedProperties with exclusive C14N), RSA-SHA256 (ECDSA-SHA256 for a
//! P-256 key), SigningTime in UTC, SigningCertificateV2 without
//! IssuerSerialV2, MIME base64 with its trailing LF.
//!
//! Nothing here canonicalises a document: KeyInfo, SignedProperties and
//! SignedInfo are written from templates in their canonical form (exclusive
//! C14N of an element whose namespaces are all visibly used) and, beside it,
//! in the form they take inside `xs:Signature` (the namespace declarations
//! inherited from `xs:Signature` and `xs:Object`, empty elements as
//! `<a/>`). Reference 1's digest comes with the request: from the document
//! ([`crate::eps::Document`]), its CSV, or the client (hash mode).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::SystemTime;

use base64ct::{Base64, Encoding};
use inkan_keystore::{Digest, DigestAlgorithm, SignatureScheme};
use sha2::Digest as _;

use crate::eps::{Document, Kind};
use crate::error::{Error, Result};
use crate::xml::{escape_attribute, mime_base64, uri, EncodedCertificate, DS, XADES, XADES141};

use super::format::{
    ArchiveStamp, Assembled, Encoder, Family, Level, Parts, Pending, ToBeSigned, Unsigned, ValidationData,
};
use super::signers::Signer;

/// XAdES-BES of one kind of e-prescription document, into `document` when
/// the caller sent one (else the `xs:Signature` element alone).
#[derive(Clone, Debug)]
pub struct Xades {
    /// A prescription or a dispensing record.
    pub kind: Kind,
    /// The document the signature goes into, if the caller sent it.
    pub document: Option<Arc<Document>>,
}

impl Encoder for Xades {
    fn family(&self) -> Family {
        Family::Xades
    }

    fn permits(&self, signer: &Signer) -> Result<()> {
        self.kind.check_signer(&signer.qualification, signer.hc_role.as_deref())
    }

    fn check_level(&self, level: Level) -> Result<()> {
        match level {
            Level::BB => Ok(()),
            _ if self.document.is_some() => Ok(()),
            _ => Err(Error::Invalid(NEEDS_DOCUMENT.into())),
        }
    }

    fn audit(&self) -> Option<serde_json::Value> {
        let mut detail = serde_json::json!({ "kind": self.kind.as_str() });
        if let Some(d) = &self.document {
            let id_name = match self.kind {
                Kind::Prescription => "prescription_id",
                Kind::Dispensing => "dispensing_id",
            };
            detail[id_name] = serde_json::json!(d.record_id);
            detail["csv_sha256"] = serde_json::json!(d.csv_sha256);
        }
        Some(detail)
    }

    fn prepare(
        &self,
        signer: &Arc<Signer>,
        message_digest: &Digest,
        signing_time: SystemTime,
        _content_len: Option<u64>,
    ) -> Result<ToBeSigned> {
        if message_digest.algorithm() != DigestAlgorithm::Sha256 {
            return Err(Error::Invalid("the e-prescription profile's Reference 1 digest is SHA-256".into()));
        }
        let taken = self.document.as_ref().map(|d| &d.ids);
        let ids = Ids::random(taken)?;
        let ec = !signer.algorithm.is_rsa();
        let signature =
            Template::new(self.kind, &ids, &signer.xml_certificate, &utc(signing_time)?, message_digest.as_bytes(), ec);
        Ok(ToBeSigned {
            scheme: if ec {
                SignatureScheme::Ecdsa(DigestAlgorithm::Sha256)
            } else {
                SignatureScheme::RsaPkcs1v15(DigestAlgorithm::Sha256)
            },
            digest: Digest::of(DigestAlgorithm::Sha256, signature.signed_info.c14n.as_bytes()),
            pending: Box::new(Waiting { signature, document: self.document.clone() }),
        })
    }
}

/// A signature waiting for its value.
struct Waiting {
    signature: Template,
    document: Option<Arc<Document>>,
}

impl Pending for Waiting {
    fn assemble(self: Box<Self>, value: &[u8]) -> Result<Box<dyn Assembled>> {
        let value = if self.signature.ec { p1363(value)? } else { value.to_vec() };
        // The ids the unsigned properties may take, chosen once (an archive
        // time-stamp covers them as they are written).
        let taken = self.document.as_ref().map(|d| &d.ids);
        let unsigned_ids = fresh_ids(taken, &self.signature.ids, UNSIGNED_IDS)?;
        Ok(Box::new(Signature { template: self.signature, value, document: self.document, unsigned_ids }))
    }
}

/// Ids of unsigned properties: the signature time-stamp, its validation
/// data (and its certificate and revocation values), the certificate and
/// revocation values, the archive time-stamp, its validation data (and its
/// certificate and revocation values).
const UNSIGNED_IDS: usize = 10;

/// A signature with its value, into which unsigned properties go.
struct Signature {
    template: Template,
    value: Vec<u8>,
    document: Option<Arc<Document>>,
    unsigned_ids: Vec<String>,
}

impl Signature {
    /// The signed document (with the unsigned properties of `unsigned`
    /// before any archive time-stamp), parsed.
    fn signed_document(&self, unsigned: Option<&Unsigned>) -> Result<Vec<u8>> {
        let document = self.document.as_ref().ok_or_else(|| Error::Invalid(NEEDS_DOCUMENT.into()))?;
        let properties = unsigned.map(|u| self.unsigned_properties(u, false)).unwrap_or_default();
        Ok(document.with_signature(&self.template.element(&self.value, &properties)))
    }

    /// `xa:UnsignedProperties` for `unsigned`: B-T, `xa:SignatureTimeStamp`;
    /// B-LT (the Japanese "XL"), the TSA's certificates and CRLs in
    /// `xa141:TimeStampValidationData` for it, then the signer's CA
    /// certificates in `xa:CertificateValues` and their CRLs in
    /// `xa:RevocationValues`; B-LTA (`with_archive`), `xa141:ArchiveTimeStamp`
    /// and its own validation data; in the order and form of the public samples.
    fn unsigned_properties(&self, unsigned: &Unsigned, with_archive: bool) -> String {
        let Some(stamp) = &unsigned.signature_timestamp else { return String::new() };
        let ids = &self.unsigned_ids;
        let mut properties = String::from("<xa:UnsignedProperties><xa:UnsignedSignatureProperties>");
        properties.push_str(&signature_time_stamp(&ids[0], &stamp.token));
        if let Some(v) = &unsigned.validation {
            properties.push_str(&long_term(&ids[1..6], &ids[0], v));
        }
        if let (true, Some(archive)) = (with_archive, &unsigned.archive_timestamp) {
            properties.push_str(&archive_time_stamp(&ids[6..10], archive));
        }
        properties.push_str("</xa:UnsignedSignatureProperties></xa:UnsignedProperties>");
        properties
    }
}

/// `xa:SignatureTimeStamp` (its `Id`) holding `token` (DER).
pub(crate) fn signature_time_stamp(id: &str, token: &[u8]) -> String {
    format!(
        "<xa:SignatureTimeStamp Id=\"{id}\"><xa:EncapsulatedTimeStamp>{}</xa:EncapsulatedTimeStamp>\
         </xa:SignatureTimeStamp>",
        mime_base64(token)
    )
}

/// What B-LT (the Japanese "XL") adds after the signature time-stamp whose
/// `Id` is `sts`: its TSA's certificates and CRLs in
/// `xa141:TimeStampValidationData`, then the signer's CA certificates in
/// `xa:CertificateValues` and their CRLs in `xa:RevocationValues`, as the
/// public samples write them. `ids`: five fresh ids.
pub(crate) fn long_term(ids: &[String], sts: &str, v: &ValidationData) -> String {
    let mut out =
        timestamp_validation_data(&ids[0..3], sts, "xa:EncapsulatedX509Certificate", &v.tsa_path, &v.tsa_crls);
    out.push_str(&format!(
        "<xa:CertificateValues Id=\"{}\">{}</xa:CertificateValues>{}",
        ids[3],
        encapsulated("xa:EncapsulatedX509Certificate", &v.signer_chain),
        revocation_values(&ids[4], &v.signer_crls),
    ));
    out
}

/// `xa141:ArchiveTimeStamp` and its own validation data (B-LTA), as the
/// dispensing sample writes them: the certificates in the default
/// namespace, unprefixed (then the CRLs, which it lacks). `ids`: four fresh ids.
pub(crate) fn archive_time_stamp(ids: &[String], archive: &ArchiveStamp) -> String {
    let ats = &ids[0];
    let mut out = format!(
        "<xa141:ArchiveTimeStamp xmlns:xa141=\"{XADES141}\" Id=\"{ats}\"><xa:EncapsulatedTimeStamp>{}\
         </xa:EncapsulatedTimeStamp></xa141:ArchiveTimeStamp>",
        mime_base64(&archive.stamp.token)
    );
    out.push_str(&timestamp_validation_data(
        &ids[1..4],
        ats,
        "EncapsulatedX509Certificate",
        &archive.stamp.path,
        &archive.tsa_crls,
    ));
    out
}

/// `xa141:TimeStampValidationData` for the time-stamp whose `Id` is
/// `stamp`: its TSA's certificates (each in a `cert_element`) and CRLs.
/// `ids`: three fresh ids (its own, its certificate and revocation values').
pub(crate) fn timestamp_validation_data(
    ids: &[String],
    stamp: &str,
    cert_element: &str,
    certs: &[Vec<u8>],
    crls: &[Vec<u8>],
) -> String {
    format!(
        "<xa141:TimeStampValidationData xmlns:xa141=\"{XADES141}\" Id=\"{}\" URI=\"#{stamp}\">\
         <CertificateValues xmlns=\"{XADES}\" Id=\"{}\">{}</CertificateValues>{}\
         </xa141:TimeStampValidationData>",
        ids[0],
        ids[1],
        encapsulated(cert_element, certs),
        revocation_values(&ids[2], crls),
    )
}

impl Assembled for Signature {
    /// XAdES-T: the time-stamp is over the inclusive C14N 1.0 of
    /// `xs:SignatureValue` in the document (it carries the namespace
    /// declarations in scope there: SPEC §3.2), so the document is needed.
    fn signature_timestamp_input(&self) -> Result<Option<Vec<u8>>> {
        let signed = self.signed_document(None)?;
        let x = crate::xml::parse(&signed).map_err(|e| Error::Internal(format!("the signed document: {e}")))?;
        let value = x
            .by_id(&self.template.ids.signature_value())
            .ok_or_else(|| Error::Internal("the signed document lost its SignatureValue".into()))?;
        Ok(Some(x.inclusive(value).map_err(|e| Error::Internal(e.0))?))
    }

    /// XAdES-A (1.4.1): over the references' data, SignedInfo,
    /// SignatureValue, KeyInfo and every unsigned signature property so far
    /// ([`crate::eps::archive::input`]).
    fn archive_timestamp_input(&self, unsigned: &Unsigned) -> Result<Option<(DigestAlgorithm, Vec<u8>)>> {
        let signed = self.signed_document(Some(unsigned))?;
        let x = crate::xml::parse(&signed).map_err(|e| Error::Internal(format!("the signed document: {e}")))?;
        let signature = x
            .by_id(self.template.kind.signature_id())
            .ok_or_else(|| Error::Internal("the signed document lost its signature".into()))?;
        let input = crate::eps::archive::input(&x, signature, None).map_err(Error::Internal)?;
        Ok(Some((DigestAlgorithm::Sha256, input)))
    }

    fn finish(self: Box<Self>, unsigned: &Unsigned) -> Result<Parts> {
        let properties = self.unsigned_properties(unsigned, true);
        let element = self.template.element(&self.value, &properties);
        let document = self.document.as_ref().map(|d| d.with_signature(&element));
        Ok(Parts { prefix: element.into_bytes(), suffix: Vec::new(), document })
    }
}

/// Each DER value MIME-base64 encoded in an element named `name`.
fn encapsulated(name: &str, values: &[Vec<u8>]) -> String {
    values.iter().map(|v| format!("<{name}>{}</{name}>", mime_base64(v))).collect()
}

/// `xa:RevocationValues` with its CRLs (nothing without any).
fn revocation_values(id: &str, crls: &[Vec<u8>]) -> String {
    if crls.is_empty() {
        return String::new();
    }
    format!(
        "<xa:RevocationValues Id=\"{id}\"><xa:CRLValues>{}</xa:CRLValues></xa:RevocationValues>",
        encapsulated("xa:EncapsulatedCRLValue", crls)
    )
}

/// Why a signature over a digest alone stays B-B.
const NEEDS_DOCUMENT: &str = "an XAdES signature above B-B needs the document (or its CSV): its time-stamp covers \
the signature value in the document's context; over a Reference 1 digest only B-B is made";

/// `n` new ids (`id` + 8 hex digits), distinct, taken neither in the
/// document nor by the signature.
fn fresh_ids(taken: Option<&HashSet<String>>, ids: &Ids, n: usize) -> Result<Vec<String>> {
    random_ids(n, |id, h| {
        !ids.hex.iter().any(|x| x == h) && !taken.is_some_and(|t| t.iter().any(|x| x.starts_with(id)))
    })
}

/// `n` new ids (`id` + 8 hex digits), distinct, none the start of an id
/// in `taken` (the ids of a document into which properties go).
pub(crate) fn new_ids(taken: &HashSet<String>, n: usize) -> Result<Vec<String>> {
    random_ids(n, |id, _| !taken.iter().any(|x| x.starts_with(id)))
}

/// `n` distinct random ids (`id` + 8 hex digits) that `free` accepts
/// (given the id and its hex digits).
fn random_ids(n: usize, free: impl Fn(&str, &str) -> bool) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(n);
    while out.len() < n {
        let mut b = [0u8; 4];
        getrandom::fill(&mut b).map_err(Error::internal)?;
        let h = crate::encoding::hex(&b);
        let id = format!("id{h}");
        if !out.contains(&id) && free(&id, &h) {
            out.push(id);
        }
    }
    Ok(out)
}

/// The ids of one signature: `id` and 8 lowercase hex digits, each its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ids {
    /// SignedInfo, Reference 1, 2, 3, KeyInfo, SignedProperties, SignatureValue, QualifyingProperties.
    pub hex: [String; 8],
}

impl Ids {
    /// New random ids, none of them in `taken` (the ids of the document).
    pub fn random(taken: Option<&HashSet<String>>) -> Result<Ids> {
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(Error::internal)?;
        let mut hex: [String; 8] = Default::default();
        for i in 0..hex.len() {
            let mut bytes: [u8; 4] = random[i * 4..i * 4 + 4].try_into().map_err(Error::internal)?;
            loop {
                let h = crate::encoding::hex(&bytes);
                let id = format!("id{h}");
                let clashes = taken.is_some_and(|t| t.iter().any(|taken| taken.starts_with(&id)));
                if !clashes && !hex[..i].contains(&h) {
                    hex[i] = h;
                    break;
                }
                // Rare: another draw for this one.
                getrandom::fill(&mut bytes).map_err(Error::internal)?;
            }
        }
        Ok(Ids { hex })
    }

    fn signed_info(&self) -> String {
        format!("id{}-SignedInfo", self.hex[0])
    }
    fn reference(&self, n: usize) -> String {
        let suffix = ["Reference1-Detached", "Reference2-KeyInfo", "Reference3-SignedProperties"][n - 1];
        format!("id{}-{suffix}", self.hex[n])
    }
    fn key_info(&self) -> String {
        format!("id{}-KeyInfo", self.hex[4])
    }
    fn signed_properties(&self) -> String {
        format!("id{}-SignedProperties", self.hex[5])
    }
    fn signature_value(&self) -> String {
        format!("id{}-SignatureValue", self.hex[6])
    }
    fn qualifying_properties(&self) -> String {
        format!("id{}-QualifyingProperties", self.hex[7])
    }
}

/// SigningTime: UTC, seconds, `+00:00` (the samples' form).
pub fn utc(t: SystemTime) -> Result<String> {
    let dt = der::DateTime::from_system_time(t).map_err(|e| Error::Invalid(format!("signing time: {e}")))?;
    Ok(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+00:00",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minutes(),
        dt.seconds()
    ))
}

/// An element written in both forms: canonical (exclusive C14N of the
/// element alone) and as it stands inside `xs:Signature`.
#[derive(Clone, Debug, Default)]
pub struct Twin {
    /// The exclusive C14N.
    pub c14n: String,
    /// The serialisation inside the signature.
    pub xml: String,
}

impl Twin {
    fn attrs(out: &mut String, attrs: &[(&str, &str)]) {
        for (name, value) in attrs {
            out.push(' ');
            out.push_str(name);
            out.push_str("=\"");
            escape_attribute(value, out);
            out.push('"');
        }
    }

    /// A start tag; `ns` is declared in the canonical form only (inside the
    /// signature it is inherited).
    fn open(&mut self, name: &str, ns: Option<(&str, &str)>, attrs: &[(&str, &str)]) {
        self.c14n.push('<');
        self.c14n.push_str(name);
        if let Some((prefix, uri)) = ns {
            self.c14n.push_str(" xmlns:");
            self.c14n.push_str(prefix);
            self.c14n.push_str("=\"");
            self.c14n.push_str(uri);
            self.c14n.push('"');
        }
        Self::attrs(&mut self.c14n, attrs);
        self.c14n.push('>');
        self.xml.push('<');
        self.xml.push_str(name);
        Self::attrs(&mut self.xml, attrs);
        self.xml.push('>');
    }

    /// An element without content.
    fn empty(&mut self, name: &str, ns: Option<(&str, &str)>, attrs: &[(&str, &str)]) {
        self.open(name, ns, attrs);
        self.xml.pop();
        self.xml.push_str("/>");
        self.c14n.push_str("</");
        self.c14n.push_str(name);
        self.c14n.push('>');
    }

    /// Text that needs no escaping (base64, times).
    fn text(&mut self, text: &str) {
        self.c14n.push_str(text);
        self.xml.push_str(text);
    }

    fn close(&mut self, name: &str) {
        for out in [&mut self.c14n, &mut self.xml] {
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
    }

    /// `<xs:DigestMethod/><xs:DigestValue>` of SHA-256 (`ns`: declare `xs` canonically).
    fn digest(&mut self, digest: &[u8], ns: Option<(&str, &str)>) {
        self.digest_base64(&Base64::encode_string(digest), ns);
    }

    /// The same, with the digest in base64 already.
    fn digest_base64(&mut self, digest: &str, ns: Option<(&str, &str)>) {
        self.empty("xs:DigestMethod", ns, &[("Algorithm", uri::SHA256)]);
        self.open("xs:DigestValue", ns, &[]);
        self.text(digest);
        self.text("\n");
        self.close("xs:DigestValue");
    }
}

/// The signature's three signed parts.
#[derive(Clone, Debug)]
pub struct Template {
    kind: Kind,
    ids: Ids,
    ec: bool,
    /// `xs:KeyInfo`.
    pub key_info: Twin,
    /// `xa:SignedProperties`.
    pub signed_properties: Twin,
    /// `xs:SignedInfo`.
    pub signed_info: Twin,
}

impl Template {
    /// Writes KeyInfo (the signer's certificate), SignedProperties
    /// (SigningTime, SigningCertificateV2) and SignedInfo over Reference 1's
    /// digest and the other two.
    pub fn new(
        kind: Kind,
        ids: &Ids,
        certificate: &EncodedCertificate,
        signing_time: &str,
        reference1: &[u8],
        ec: bool,
    ) -> Self {
        let xs = Some(("xs", DS));
        let mut key_info = Twin::default();
        key_info.open("xs:KeyInfo", xs, &[("Id", &ids.key_info())]);
        key_info.open("xs:X509Data", None, &[]);
        key_info.open("xs:X509Certificate", None, &[]);
        key_info.text(&certificate.mime);
        key_info.close("xs:X509Certificate");
        key_info.close("xs:X509Data");
        key_info.close("xs:KeyInfo");

        let mut props = Twin::default();
        props.open("xa:SignedProperties", Some(("xa", XADES)), &[("Id", &ids.signed_properties())]);
        props.open("xa:SignedSignatureProperties", None, &[]);
        props.open("xa:SigningTime", None, &[]);
        props.text(signing_time);
        props.close("xa:SigningTime");
        props.open("xa:SigningCertificateV2", None, &[]);
        props.open("xa:Cert", None, &[]);
        props.open("xa:CertDigest", None, &[]);
        props.digest_base64(&certificate.sha256_base64, xs);
        props.close("xa:CertDigest");
        props.close("xa:Cert");
        props.close("xa:SigningCertificateV2");
        props.close("xa:SignedSignatureProperties");
        props.close("xa:SignedProperties");

        let mut info = Twin::default();
        info.open("xs:SignedInfo", xs, &[("Id", &ids.signed_info())]);
        info.empty("xs:CanonicalizationMethod", None, &[("Algorithm", uri::EXC_C14N)]);
        info.empty("xs:SignatureMethod", None, &[("Algorithm", if ec { uri::ECDSA_SHA256 } else { uri::RSA_SHA256 })]);
        let target = format!("#{}", kind.target_id());
        info.open("xs:Reference", None, &[("Id", &ids.reference(1)), ("URI", &target)]);
        info.digest(reference1, None);
        info.close("xs:Reference");
        let key_info_uri = format!("#{}", ids.key_info());
        info.open("xs:Reference", None, &[("Id", &ids.reference(2)), ("URI", &key_info_uri)]);
        info.open("xs:Transforms", None, &[]);
        info.empty("xs:Transform", None, &[("Algorithm", uri::EXC_C14N)]);
        info.close("xs:Transforms");
        info.digest(&sha2::Sha256::digest(key_info.c14n.as_bytes()), None);
        info.close("xs:Reference");
        let props_uri = format!("#{}", ids.signed_properties());
        info.open(
            "xs:Reference",
            None,
            &[("Id", &ids.reference(3)), ("Type", uri::SIGNED_PROPERTIES), ("URI", &props_uri)],
        );
        info.open("xs:Transforms", None, &[]);
        info.empty("xs:Transform", None, &[("Algorithm", uri::EXC_C14N)]);
        info.close("xs:Transforms");
        info.digest(&sha2::Sha256::digest(props.c14n.as_bytes()), None);
        info.close("xs:Reference");
        info.close("xs:SignedInfo");
        Template { kind, ids: ids.clone(), ec, key_info, signed_properties: props, signed_info: info }
    }

    /// The `xs:Signature` element with its signature value (for ECDSA,
    /// `r || s`) and its `xa:UnsignedProperties` (empty at B-B).
    pub fn element(&self, value: &[u8], unsigned_properties: &str) -> String {
        let id = self.kind.signature_id();
        let mut out = String::with_capacity(
            self.signed_info.xml.len() + self.key_info.xml.len() + self.signed_properties.xml.len() + 1024,
        );
        out.push_str(&format!("<xs:Signature xmlns:xs=\"{DS}\" Id=\"{id}\">"));
        out.push_str(&self.signed_info.xml);
        out.push_str(&format!("<xs:SignatureValue Id=\"{}\">", self.ids.signature_value()));
        out.push_str(&mime_base64(value));
        out.push_str("</xs:SignatureValue>");
        out.push_str(&self.key_info.xml);
        out.push_str(&format!(
            "<xs:Object xmlns:xa=\"{XADES}\"><xa:QualifyingProperties Id=\"{}\" Target=\"#{id}\">",
            self.ids.qualifying_properties()
        ));
        out.push_str(&self.signed_properties.xml);
        out.push_str(unsigned_properties);
        out.push_str("</xa:QualifyingProperties></xs:Object></xs:Signature>");
        out
    }
}

/// An ECDSA signature from DER (`SEQUENCE { r, s }`, as the token's
/// signatures come) to the `r || s` of XMLDSig (32 bytes each for P-256).
fn p1363(der_sig: &[u8]) -> Result<Vec<u8>> {
    use der::asn1::UintRef;
    use der::{Decode, Reader, SliceReader};
    let bad = |e: der::Error| Error::Internal(format!("an ECDSA signature from the token: {e}"));
    let mut reader = SliceReader::new(der_sig).map_err(bad)?;
    let (r, s) = reader.sequence(|seq| Ok((UintRef::decode(seq)?, UintRef::decode(seq)?))).map_err(bad)?;
    let mut out = vec![0u8; 64];
    for (i, v) in [r.as_bytes(), s.as_bytes()].into_iter().enumerate() {
        if v.len() > 32 {
            return Err(Error::Internal("an ECDSA signature value longer than P-256's".into()));
        }
        out[i * 32 + 32 - v.len()..(i + 1) * 32].copy_from_slice(v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eps::document::tests::{sample, unsigned};

    fn ids(hex: [&str; 8]) -> Ids {
        Ids { hex: hex.map(str::to_owned) }
    }

    /// The sample's signature without its unsigned properties (what B-B is).
    fn without_unsigned(signature: &str) -> String {
        let start = signature.find("<xa:UnsignedProperties>").expect("unsigned");
        let end = signature.find("</xa:UnsignedProperties>").expect("end") + "</xa:UnsignedProperties>".len();
        format!("{}{}", &signature[..start], &signature[end..])
    }

    fn signature_value(signature: &str) -> Vec<u8> {
        let start = signature.find("-SignatureValue\">").expect("value") + "-SignatureValue\">".len();
        let end = start + signature[start..].find('<').expect("end");
        crate::xml::decode_base64(&signature[start..end]).expect("base64")
    }

    #[test]
    fn the_templates_write_the_samples_signatures_byte_for_byte() {
        for (file, slot, kind, ids_hex, time, cert) in [
            (
                "Prescription-004_01.xml",
                "PrescriptionSign",
                Kind::Prescription,
                ["898cfb77", "29b12603", "041cb21b", "8b2ae0fe", "6a875f31", "c51bfd03", "00fac23c", "993b4fd6"],
                "2022-09-07T08:08:01+00:00",
                "extracted-doctor-signer.der",
            ),
            (
                "Dispensing-005_03.xml",
                "DispensingSign",
                Kind::Dispensing,
                ["a2bde79b", "db33cd61", "fbb8185d", "5813f70a", "771d57b8", "111a1e5c", "218934fe", "ca32a483"],
                "",
                "extracted-pharmacist-signer.der",
            ),
        ] {
            let (text, signature) = unsigned(file, slot);
            let doc = Document::read(text).expect("read");
            let time = if time.is_empty() {
                let start = signature.find("<xa:SigningTime>").expect("time") + 16;
                signature[start..start + 25].to_owned()
            } else {
                time.to_owned()
            };
            let certificate = sample(cert);
            let encoded = EncodedCertificate::new(&certificate);
            let template = Template::new(kind, &ids(ids_hex), &encoded, &time, doc.digest.as_bytes(), false);
            let value = signature_value(&signature);
            assert_eq!(template.element(&value, ""), without_unsigned(&signature), "{file}");
            // The signature value verifies over the canonical SignedInfo written here.
            let cert = <x509_cert::Certificate as der::Decode>::from_der(&certificate).expect("cert");
            crate::pki::verify_xml_signature(&cert, uri::RSA_SHA256, template.signed_info.c14n.as_bytes(), &value)
                .expect("verifies");
            // And the document with it is the sample, but for the unsigned properties.
            let signed = doc.with_signature(&template.element(&value, ""));
            let x = crate::xml::parse(&signed).expect("parse");
            let sig = x.by_id(kind.signature_id()).expect("signature");
            crate::eps::check::bes(&x, sig, kind).expect("BES");
        }
    }

    #[test]
    fn the_samples_canonical_forms_are_what_the_parser_canonicalises() {
        // The templates' canonical forms equal the C14N of the written forms
        // in document context (bergshamra), for a random signature too.
        let (text, _) = unsigned("Prescription-004_01.xml", "PrescriptionSign");
        let doc = Document::read(text).expect("read");
        let ids = Ids::random(Some(&doc.ids)).expect("ids");
        let certificate = EncodedCertificate::new(&sample("extracted-doctor-signer.der"));
        let template = Template::new(
            Kind::Prescription,
            &ids,
            &certificate,
            "2026-12-06T00:00:00+00:00",
            doc.digest.as_bytes(),
            true,
        );
        let signed = doc.with_signature(&template.element(&[1u8; 64], ""));
        let x = crate::xml::parse(&signed).expect("parse");
        for (id, twin) in [
            (ids.key_info(), &template.key_info),
            (ids.signed_properties(), &template.signed_properties),
            (ids.signed_info(), &template.signed_info),
        ] {
            let node = x.by_id(&id).expect("id");
            assert_eq!(String::from_utf8(x.exclusive(node).expect("c14n")).expect("utf-8"), twin.c14n, "{id}");
        }
    }

    #[test]
    fn ecdsa_values_become_r_and_s() {
        // SEQUENCE { INTEGER 1, INTEGER 0x00ff.. (33 bytes with its sign byte) }
        let mut der_sig = vec![0x30, 0x26, 0x02, 0x01, 0x01, 0x02, 0x21, 0x00];
        der_sig.extend_from_slice(&[0xff; 32]);
        let raw = p1363(&der_sig).expect("raw");
        assert_eq!(&raw[..32], &[[0u8; 31].as_slice(), &[1]].concat()[..]);
        assert_eq!(&raw[32..], &[0xff; 32]);
    }
}
