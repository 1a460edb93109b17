//! Text encodings of bytes that inkan writes and reads in more than one
//! place: lower-case hexadecimal (digests in audit rows, ids, segments) and
//! base64url without padding (tokens, JOSE, WebAuthn ids).

use base64ct::{Base64UrlUnpadded, Encoding};

/// base64url without padding.
pub fn b64url(data: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(data)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// The bytes of hex text (either case), or `None`.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_lowercase_two_digits_a_byte() {
        assert_eq!(super::hex(&[0x00, 0x0f, 0xa5, 0xff, 0x10]), "000fa5ff10");
        assert_eq!(super::hex(&[]), "");
        assert_eq!(super::unhex("000FA5ff10"), Some(vec![0x00, 0x0f, 0xa5, 0xff, 0x10]));
        assert_eq!(super::unhex("0"), None);
        assert_eq!(super::unhex("zz"), None);
    }
}
