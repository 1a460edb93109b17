//! Minimal DER framing for the parts of `SignedData` that inkan streams.
//!
//! Typed values (names, integers, OIDs, times) are encoded with the `der` crate;
//! this only writes tag-length headers, so that an enveloped document of any
//! size can be written between a prefix and a suffix without being in memory.

/// A DER identifier octet.
#[derive(Clone, Copy, Debug)]
pub struct Tag(pub u8);

impl Tag {
    /// `SEQUENCE` / `SEQUENCE OF`
    pub const SEQUENCE: Tag = Tag(0x30);
    /// `SET` / `SET OF`
    pub const SET: Tag = Tag(0x31);
    /// `OCTET STRING`
    pub const OCTET_STRING: Tag = Tag(0x04);
    /// `[0]` constructed (EXPLICIT, or IMPLICIT over a constructed type)
    pub const CONTEXT_0_CONSTRUCTED: Tag = Tag(0xa0);
    /// `[4]` constructed (GeneralName directoryName)
    pub const CONTEXT_4_CONSTRUCTED: Tag = Tag(0xa4);
    /// `[1]` constructed (unsignedAttrs).
    pub const CONTEXT_1_CONSTRUCTED: Tag = Tag(0xa1);
}

/// Appends a tag and a definite length (X.690 8.1.3).
pub fn header(tag: Tag, len: u64, out: &mut Vec<u8>) {
    out.push(tag.0);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (8 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// A whole TLV.
pub fn tlv(tag: Tag, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 6);
    header(tag, value.len() as u64, &mut out);
    out.extend_from_slice(value);
    out
}
