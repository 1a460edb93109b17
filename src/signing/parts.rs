//! A finished signature's bytes ([`Parts`]), and the one token call a
//! format is given ([`TokenSign`]): what every format and the pipeline share.

use inkan_keystore::SignatureScheme;

/// The token's signature with a scheme over a digest: one `C_Sign`.
pub type TokenSign<'a> = dyn FnMut(SignatureScheme, &inkan_keystore::Digest) -> inkan_keystore::Result<Vec<u8>> + 'a;

/// A finished signature around its (optional) content: `prefix || content ||
/// suffix` is the whole signature; or, for a signature spliced into a
/// document (XAdES), the signature element and the signed document.
#[derive(Clone, Debug, Default)]
pub struct Parts {
    /// Everything before the content (all of a detached signature but its
    /// suffix; XAdES: the `xs:Signature` element).
    pub prefix: Vec<u8>,
    /// Everything after the content.
    pub suffix: Vec<u8>,
    /// The document with the signature in it (XAdES, when the caller sent
    /// the document or its CSV).
    pub document: Option<Vec<u8>>,
}

impl Parts {
    /// The signature of a detached format (no content between prefix and suffix).
    pub fn into_detached(self) -> Vec<u8> {
        let mut der = self.prefix;
        der.extend_from_slice(&self.suffix);
        der
    }

    /// The signature with `content` between prefix and suffix.
    pub fn around(self, content: &[u8]) -> Vec<u8> {
        let mut der = self.prefix;
        der.reserve(content.len() + self.suffix.len());
        der.extend_from_slice(content);
        der.extend_from_slice(&self.suffix);
        der
    }
}
