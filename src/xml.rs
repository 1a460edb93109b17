//! XML as inkan reads it: parsing that refuses what signed documents never
//! need (DTDs, entities, encodings other than UTF-8), an index of the
//! `id`/`Id` attributes that refuses duplicates, and canonicalisation (C14N
//! 1.0 inclusive and exclusive) of a subtree in its document's context.
//!
//! The parser is `uppsala` and the canonicaliser `bergshamra-c14n`, both
//! pinned to exact versions (they release often; both reproduce every digest
//! of the public e-prescription samples, `tests` below). Nothing else in
//! inkan names them: this module is the seam.

use std::collections::HashMap;
use std::ops::Range;

use bergshamra_c14n::C14nMode;
use bergshamra_xml::NodeSet;
pub use uppsala::NodeId;
use uppsala::{Document, NodeKind};

/// A document inkan refuses to read, and why (for a 400 the client can act on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct XmlError(pub String);

fn refuse(message: impl Into<String>) -> XmlError {
    XmlError(message.into())
}

/// Deepest element nesting accepted (e-prescriptions nest about 12 deep).
pub const MAX_DEPTH: u32 = 64;
/// Most elements in a document (a dispensing record with its
/// prescription and long-term data has about 150).
pub const MAX_ELEMENTS: usize = 20_000;
/// Most attributes, namespace declarations included, on one element (the
/// profile's elements have at most three).
pub const MAX_ATTRIBUTES: usize = 32;
/// Most namespace declarations in a document (the samples have nine):
/// canonicalisation carries every one in scope to every element.
pub const MAX_NAMESPACE_DECLARATIONS: usize = 64;

/// Counts what the parser and the canonicaliser would pay for more than
/// linearly, before they see the text: elements, attributes per element
/// (the parser compares each with every other), namespace declarations
/// (C14N copies those in scope for every element). Comments, CDATA,
/// processing instructions and quoted values are skipped as the parser
/// would; a document this scan misreads is refused by the parser anyway.
fn prescan(text: &[u8]) -> Result<(), XmlError> {
    let (mut elements, mut namespaces, mut i) = (0usize, 0usize, 0usize);
    let skip_to = |from: usize, end: &[u8]| {
        text[from..].windows(end.len()).position(|w| w == end).map_or(text.len(), |p| from + p + end.len())
    };
    while let Some(p) = text[i..].iter().position(|&b| b == b'<') {
        i += p + 1;
        match text.get(i) {
            Some(b'!') if text[i..].starts_with(b"!--") => i = skip_to(i, b"-->"),
            Some(b'!') if text[i..].starts_with(b"![CDATA[") => i = skip_to(i, b"]]>"),
            Some(b'?') => i = skip_to(i, b"?>"),
            Some(b'/' | b'!') | None => {}
            Some(_) => {
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(refuse(format!("the document has more than {MAX_ELEMENTS} elements")));
                }
                // The start tag: its attributes, by their `=` outside quotes.
                let (mut attributes, mut quote) = (0usize, None);
                while let Some(&b) = text.get(i) {
                    i += 1;
                    match (quote, b) {
                        (None, b'"' | b'\'') => quote = Some(b),
                        (Some(q), b) if b == q => quote = None,
                        (None, b'=') => {
                            attributes += 1;
                            // The name before the `=` (spaces may stand between).
                            let before = text[..i - 1].trim_ascii_end();
                            let name_start = before.iter().rposition(|c| c.is_ascii_whitespace()).map_or(0, |s| s + 1);
                            if before[name_start..].starts_with(b"xmlns") {
                                namespaces += 1;
                            }
                        }
                        (None, b'>') => break,
                        _ => {}
                    }
                }
                if attributes > MAX_ATTRIBUTES {
                    return Err(refuse(format!("an element has more than {MAX_ATTRIBUTES} attributes")));
                }
                if namespaces > MAX_NAMESPACE_DECLARATIONS {
                    return Err(refuse(format!(
                        "the document declares more than {MAX_NAMESPACE_DECLARATIONS} namespaces"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// The XMLDSig namespace.
pub const DS: &str = "http://www.w3.org/2000/09/xmldsig#";
/// The XAdES 1.3.2 namespace.
pub const XADES: &str = "http://uri.etsi.org/01903/v1.3.2#";
/// The XAdES 1.4.1 namespace (`TimeStampValidationData`, `ArchiveTimeStamp`).
pub const XADES141: &str = "http://uri.etsi.org/01903/v1.4.1#";

/// The algorithm URIs of XMLDSig and XAdES that inkan writes and reads.
pub mod uri {
    /// Exclusive C14N 1.0 without comments.
    pub const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
    /// Inclusive C14N 1.0 without comments (the default of a reference without transforms).
    pub const C14N: &str = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315";
    /// SHA-256.
    pub const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
    /// SHA-384.
    pub const SHA384: &str = "http://www.w3.org/2001/04/xmldsig-more#sha384";
    /// SHA-512.
    pub const SHA512: &str = "http://www.w3.org/2001/04/xmlenc#sha512";
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    pub const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    pub const RSA_SHA384: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384";
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    pub const RSA_SHA512: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512";
    /// ECDSA with SHA-256 (the value is `r || s`).
    pub const ECDSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256";
    /// The `Type` of a reference to XAdES SignedProperties.
    pub const SIGNED_PROPERTIES: &str = "http://uri.etsi.org/01903#SignedProperties";
}

/// A parsed document over its text.
pub struct Xml<'a> {
    doc: Document<'a>,
    ids: HashMap<String, NodeId>,
}

/// Reads `bytes` as an XML document: UTF-8 (a declared encoding must be
/// UTF-8; no byte order mark), no DOCTYPE (so no DTD, no entity of its own:
/// `&name;` other than the five predefined ones is not well-formed), at most
/// [`MAX_DEPTH`] deep, and no two `id`/`Id` attributes with one value
/// (signature wrapping starts with a second element of the signed id).
pub fn parse(bytes: &[u8]) -> Result<Xml<'_>, XmlError> {
    if bytes.starts_with(&[0xef, 0xbb, 0xbf]) {
        return Err(refuse("the document starts with a byte order mark: send UTF-8 without one"));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| refuse(format!("the document is not UTF-8 (invalid byte at offset {})", e.valid_up_to())))?;
    // Before the parser sees it: a DOCTYPE is refused without being read.
    if text.contains("<!DOCTYPE") || text.contains("<!ENTITY") {
        return Err(refuse("the document has a DTD (<!DOCTYPE or <!ENTITY): DTDs and entities are not accepted"));
    }
    prescan(bytes)?;
    let doc = uppsala::Parser::new()
        .with_forbid_dtd(true)
        .with_forbid_entities(true)
        .with_max_depth(MAX_DEPTH)
        .with_max_entity_expansion(0)
        .parse(text)
        .map_err(|e| refuse(format!("the document is not well-formed XML: {e}")))?;
    if let Some(encoding) = doc.xml_declaration.as_ref().and_then(|d| d.encoding.as_deref()) {
        if !encoding.eq_ignore_ascii_case("UTF-8") {
            return Err(refuse(format!("the document declares encoding {encoding:?}: only UTF-8 is accepted")));
        }
    }
    let mut ids = HashMap::new();
    let mut stack = vec![doc.root()];
    while let Some(node) = stack.pop() {
        if let Some(NodeKind::Element(e)) = doc.node_kind(node) {
            for a in &e.attributes {
                if a.name.namespace_uri.is_none() && (a.name.local_name == "id" || a.name.local_name == "Id") {
                    let value = a.value.to_string();
                    if ids.insert(value.clone(), node).is_some() {
                        return Err(refuse(format!(
                            "two elements have id {value:?}: every id and Id in a signed document must be unique"
                        )));
                    }
                }
            }
        }
        stack.extend(doc.children_iter(node));
    }
    Ok(Xml { doc, ids })
}

/// An element's place in the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    /// The whole element, start tag to end tag.
    pub whole: Range<usize>,
    /// Its content (between the tags); `None` for an empty-element tag (`<a/>`).
    pub content: Option<Range<usize>>,
}

impl<'a> Xml<'a> {
    /// The document's text.
    pub fn text(&self) -> &'a str {
        self.doc.input_text()
    }

    /// The document element.
    pub fn root(&self) -> Result<NodeId, XmlError> {
        self.doc.document_element().ok_or_else(|| refuse("the document has no element"))
    }

    /// The element with this `id` or `Id`.
    pub fn by_id(&self, id: &str) -> Option<NodeId> {
        self.ids.get(id).copied()
    }

    /// Every `id`/`Id` value in the document.
    pub fn ids(&self) -> impl Iterator<Item = &str> + '_ {
        self.ids.keys().map(String::as_str)
    }

    /// The element's local name and namespace, if `node` is an element.
    pub fn name(&self, node: NodeId) -> Option<(&str, Option<&str>)> {
        match self.doc.node_kind(node)? {
            NodeKind::Element(e) => Some((&e.name.local_name, e.name.namespace_uri.as_deref())),
            _ => None,
        }
    }

    /// The element's qualified name as written (`xs:Signature`).
    pub fn qualified_name(&self, node: NodeId) -> Option<String> {
        match self.doc.node_kind(node)? {
            NodeKind::Element(e) => Some(e.name.prefixed_name().into_owned()),
            _ => None,
        }
    }

    /// Whether `node` is the element `local` in namespace `ns`.
    pub fn is(&self, node: NodeId, ns: Option<&str>, local: &str) -> bool {
        self.name(node).is_some_and(|(l, n)| l == local && n == ns)
    }

    /// The namespace declarations written on an element: (prefix, URI),
    /// the prefix empty for a default namespace.
    pub fn namespace_declarations(&self, node: NodeId) -> Vec<(String, String)> {
        match self.doc.node_kind(node) {
            Some(NodeKind::Element(e)) => {
                e.namespace_declarations.iter().map(|(p, u)| (p.to_string(), u.to_string())).collect()
            }
            _ => Vec::new(),
        }
    }

    /// An attribute without a namespace.
    pub fn attribute(&self, node: NodeId, name: &str) -> Option<&str> {
        match self.doc.node_kind(node)? {
            NodeKind::Element(e) => e
                .attributes
                .iter()
                .find(|a| a.name.namespace_uri.is_none() && a.name.local_name == name)
                .map(|a| &*a.value),
            _ => None,
        }
    }

    /// The element children of `node`, in order.
    pub fn elements(&self, node: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.doc.children_iter(node).filter(|c| matches!(self.doc.node_kind(*c), Some(NodeKind::Element(_))))
    }

    /// The element children named `local` in namespace `ns`.
    pub fn children_named<'s>(
        &'s self,
        node: NodeId,
        ns: Option<&'s str>,
        local: &'s str,
    ) -> impl Iterator<Item = NodeId> + 's {
        self.elements(node).filter(move |c| self.is(*c, ns, local))
    }

    /// The one element child named `local` in `ns`; an error names it when
    /// there is none or more than one.
    pub fn child(&self, node: NodeId, ns: Option<&str>, local: &str) -> Result<NodeId, XmlError> {
        let mut found = self.children_named(node, ns, local);
        match (found.next(), found.next()) {
            (Some(c), None) => Ok(c),
            (None, _) => Err(refuse(format!("no {local} element where one is required"))),
            (Some(_), Some(_)) => Err(refuse(format!("two {local} elements where one is allowed"))),
        }
    }

    /// Whether `node` has any child other than whitespace text.
    pub fn has_content(&self, node: NodeId) -> bool {
        self.doc.children_iter(node).any(|c| match self.doc.node_kind(c) {
            Some(NodeKind::Text(t)) => !t.chars().all(|c| matches!(c, ' ' | '\t' | '\n' | '\r')),
            _ => true,
        })
    }

    /// The element's text when it holds text alone (no element, comment or
    /// processing instruction), else `None`.
    pub fn text_only(&self, node: NodeId) -> Option<String> {
        let mut out = String::new();
        for c in self.doc.children_iter(node) {
            match self.doc.node_kind(c)? {
                NodeKind::Text(t) | NodeKind::CData(t) => out.push_str(t),
                _ => return None,
            }
        }
        Some(out)
    }

    /// The text content of an element (its text and CDATA children, concatenated).
    pub fn text_of(&self, node: NodeId) -> String {
        self.doc.text_content_deep(node)
    }

    /// The parent of a node.
    pub fn parent(&self, node: NodeId) -> Option<NodeId> {
        self.doc.parent(node)
    }

    /// Every element of the document in document order.
    pub fn all_elements(&self) -> Vec<NodeId> {
        let mut out = Vec::new();
        let mut stack = vec![self.doc.root()];
        while let Some(node) = stack.pop() {
            if matches!(self.doc.node_kind(node), Some(NodeKind::Element(_))) {
                out.push(node);
            }
            let children: Vec<NodeId> = self.doc.children_iter(node).collect();
            stack.extend(children.into_iter().rev());
        }
        out
    }

    /// Where the element is in the text.
    pub fn span(&self, node: NodeId) -> Result<Span, XmlError> {
        let whole = self.doc.node_range(node).ok_or_else(|| refuse("an element without a place in the text"))?;
        let source = &self.text()[whole.clone()];
        if source.ends_with("/>") && self.doc.first_child(node).is_none() {
            return Ok(Span { whole, content: None });
        }
        let end_tag = source.rfind("</").ok_or_else(|| refuse("an element without an end tag"))?;
        let start_tag = start_tag_len(source).ok_or_else(|| refuse("an element without a start tag"))?;
        let content = whole.start + start_tag..whole.start + end_tag;
        Ok(Span { whole, content: Some(content) })
    }

    /// The inclusive C14N 1.0 (without comments) of the subtree at `node`, in
    /// its document's context: the namespace declarations and `xml:`
    /// attributes in scope from its ancestors are rendered on it (what an
    /// XMLDSig same-document reference with no transforms digests).
    pub fn inclusive(&self, node: NodeId) -> Result<Vec<u8>, XmlError> {
        self.canonical(node, C14nMode::Inclusive)
    }

    /// The exclusive C14N 1.0 (without comments, no inclusive prefixes) of
    /// the subtree at `node`.
    pub fn exclusive(&self, node: NodeId) -> Result<Vec<u8>, XmlError> {
        self.canonical(node, C14nMode::Exclusive)
    }

    /// The subtree at `node` in the C14N algorithm named by `uri` (inclusive
    /// or exclusive 1.0, with or without comments); `None` for another algorithm.
    pub fn canonical_by_uri(&self, node: NodeId, uri: &str) -> Option<Result<Vec<u8>, XmlError>> {
        let mode = C14nMode::from_uri(uri)?;
        matches!(
            mode,
            C14nMode::Inclusive
                | C14nMode::InclusiveWithComments
                | C14nMode::Exclusive
                | C14nMode::ExclusiveWithComments
        )
        .then(|| self.canonical(node, mode))
    }

    fn canonical(&self, node: NodeId, mode: C14nMode) -> Result<Vec<u8>, XmlError> {
        let set = if mode.with_comments() {
            NodeSet::tree_with_comments(node, &self.doc)
        } else {
            NodeSet::tree_without_comments(node, &self.doc)
        };
        bergshamra_c14n::canonicalize_doc(&self.doc, mode, Some(&set), &[] as &[&str])
            .map_err(|e| refuse(format!("cannot canonicalise: {e}")))
    }
}

/// The length of the start tag at the beginning of `source` (up to and with
/// its `>`, skipping `>` inside quoted attribute values).
fn start_tag_len(source: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in source.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(i + 1),
            _ => {}
        }
    }
    None
}

/// Escapes an attribute value as C14N does (`&`, `<`, `"`, TAB, LF, CR).
pub fn escape_attribute(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

/// MIME base64 (RFC 2045) as the e-prescription samples write it: lines of
/// 76 characters, each ended by LF, the last one too (Python's
/// `base64.encodebytes`).
pub fn mime_base64(bytes: &[u8]) -> String {
    use base64ct::{Base64, Encoding};
    let flat = Base64::encode_string(bytes);
    let mut out = String::with_capacity(flat.len() + flat.len() / 76 + 1);
    for line in flat.as_bytes().chunks(76) {
        // base64 is ASCII: every chunk is a whole str.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// A certificate as XMLDSig and XAdES write it, encoded once per signer:
/// MIME base64 for `X509Certificate`, and the base64 of its SHA-256 for
/// `CertDigest`.
#[derive(Clone, Debug)]
pub struct EncodedCertificate {
    /// [`mime_base64`] of the DER.
    pub mime: String,
    /// Base64 (one line) of SHA-256 of the DER.
    pub sha256_base64: String,
}

impl EncodedCertificate {
    /// Encodes a certificate (DER).
    pub fn new(der: &[u8]) -> Self {
        use base64ct::{Base64, Encoding};
        use sha2::Digest;
        EncodedCertificate { mime: mime_base64(der), sha256_base64: Base64::encode_string(&sha2::Sha256::digest(der)) }
    }
}

/// Decodes base64 as XML carries it: whitespace (line breaks) ignored.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64ct::{Base64, Encoding};
    let flat: String = text.chars().filter(|c| !matches!(c, ' ' | '\t' | '\n' | '\r')).collect();
    Base64::decode_vec(&flat).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtds_entities_and_other_encodings_are_refused() {
        let laughs =
            br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><a>&lol2;</a>"#;
        assert!(parse(laughs).err().is_some_and(|e| e.0.contains("DTD")));
        let xxe = br#"<!DOCTYPE a SYSTEM "file:///etc/passwd"><a/>"#;
        assert!(parse(xxe).is_err());
        assert!(parse(b"<a>&undefined;</a>").is_err());
        assert!(parse(br#"<?xml version="1.0" encoding="Shift_JIS"?><a/>"#)
            .err()
            .is_some_and(|e| e.0.contains("UTF-8")));
        assert!(parse(b"<a>\xff</a>").err().is_some_and(|e| e.0.contains("not UTF-8")));
        assert!(parse(b"\xef\xbb\xbf<a/>").err().is_some_and(|e| e.0.contains("byte order mark")));
        assert!(parse(b"<a><b></a>").err().is_some_and(|e| e.0.contains("well-formed")));
        let deep = format!("{}{}", "<a>".repeat(100), "</a>".repeat(100));
        assert!(parse(deep.as_bytes()).is_err());
        // What costs more than linearly is counted before parsing.
        let wide = format!("<a {}/>", (0..40).map(|i| format!("a{i}=\"1\"")).collect::<Vec<_>>().join(" "));
        assert!(parse(wide.as_bytes()).err().is_some_and(|e| e.0.contains("attributes")));
        let spaces =
            format!("<a>{}</a>", (0..70).map(|i| format!("<b xmlns:p{i} = \"urn:{i}\"/>")).collect::<String>());
        assert!(parse(spaces.as_bytes()).err().is_some_and(|e| e.0.contains("namespaces")));
        let many = format!("<a>{}</a>", "<b/>".repeat(MAX_ELEMENTS));
        assert!(parse(many.as_bytes()).err().is_some_and(|e| e.0.contains("elements")));
        // Quoted '>' and '=', comments and CDATA are not counted.
        let fine = format!("<a x=\"=>{}\"><!-- <b {} --><![CDATA[<c =]]></a>", "=".repeat(50), "d=1 ".repeat(50));
        assert!(parse(fine.as_bytes()).is_ok());
        // The predefined entities and character references are plain text.
        let xml = parse(b"<a>&amp;&lt;&#x41;</a>").expect("parse");
        assert_eq!(xml.text_of(xml.root().expect("root")), "&<A");
    }

    #[test]
    fn ids_are_unique() {
        assert!(parse(br#"<a id="x"><b Id="x"/></a>"#).err().is_some_and(|e| e.0.contains("\"x\"")));
        let xml = parse(br#"<a id="x"><b Id="y"/></a>"#).expect("parse");
        assert!(xml.by_id("y").is_some_and(|n| xml.is(n, None, "b")));
    }

    #[test]
    fn spans_find_the_content_between_the_tags() {
        let text = r#"<a><b x=">"></b><c/><d > </d ></a>"#;
        let xml = parse(text.as_bytes()).expect("parse");
        let root = xml.root().expect("root");
        let kids: Vec<_> = xml.elements(root).collect();
        let b = xml.span(kids[0]).expect("b");
        assert_eq!((&text[b.whole.clone()], b.content.map(|c| &text[c])), (r#"<b x=">"></b>"#, Some("")));
        let c = xml.span(kids[1]).expect("c");
        assert_eq!((&text[c.whole.clone()], c.content), ("<c/>", None));
        let d = xml.span(kids[2]).expect("d");
        assert_eq!(d.content.map(|c| &text[c]), Some(" "));
    }

    #[test]
    fn mime_base64_breaks_lines_at_76() {
        assert_eq!(mime_base64(b""), "");
        assert_eq!(mime_base64(b"abc"), "YWJj\n");
        let long = mime_base64(&[0u8; 60]);
        assert_eq!(long, format!("{}\n{}\n", "A".repeat(76), "A".repeat(4)));
        assert_eq!(decode_base64(&long).expect("decode"), vec![0u8; 60]);
    }
}
