//! Key algorithms, digest algorithms and signature schemes.

use std::fmt;
use std::str::FromStr;

use der::oid::ObjectIdentifier;

use crate::error::Error;

/// The kind of key pair generated in the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// RSA with a 2048-bit modulus (the default: HPKI second certificates).
    Rsa2048,
    /// RSA with a 3072-bit modulus.
    Rsa3072,
    /// ECDSA on NIST P-256.
    EcP256,
}

impl KeyAlgorithm {
    /// The name used in the CLI and the store (`rsa2048`, `rsa3072`, `p256`).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::Rsa2048 => "rsa2048",
            KeyAlgorithm::Rsa3072 => "rsa3072",
            KeyAlgorithm::EcP256 => "p256",
        }
    }

    /// Whether this is an RSA key.
    pub fn is_rsa(self) -> bool {
        matches!(self, KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072)
    }

    /// The RSA modulus length or the curve size, in bits.
    pub fn bits(self) -> u32 {
        match self {
            KeyAlgorithm::Rsa2048 => 2048,
            KeyAlgorithm::Rsa3072 => 3072,
            KeyAlgorithm::EcP256 => 256,
        }
    }

    /// The signature scheme inkan uses with this key by default.
    pub fn default_scheme(self, digest: DigestAlgorithm) -> SignatureScheme {
        if self.is_rsa() {
            SignatureScheme::RsaPkcs1v15(digest)
        } else {
            SignatureScheme::Ecdsa(digest)
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "rsa2048" | "rsa-2048" => Ok(KeyAlgorithm::Rsa2048),
            "rsa3072" | "rsa-3072" => Ok(KeyAlgorithm::Rsa3072),
            "p256" | "p-256" | "ec-p256" | "ecdsa-p256" => Ok(KeyAlgorithm::EcP256),
            _ => Err(Error::InvalidInput(format!("unknown key algorithm {s:?}: use rsa2048, rsa3072 or p256"))),
        }
    }
}

/// A hash function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DigestAlgorithm {
    /// SHA-256
    Sha256,
    /// SHA-384
    Sha384,
    /// SHA-512
    Sha512,
}

impl DigestAlgorithm {
    /// Output length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            DigestAlgorithm::Sha256 => 32,
            DigestAlgorithm::Sha384 => 48,
            DigestAlgorithm::Sha512 => 64,
        }
    }

    /// The algorithm's OID (RFC 5754).
    pub fn oid(self) -> ObjectIdentifier {
        match self {
            DigestAlgorithm::Sha256 => const_oid::db::rfc5912::ID_SHA_256,
            DigestAlgorithm::Sha384 => const_oid::db::rfc5912::ID_SHA_384,
            DigestAlgorithm::Sha512 => const_oid::db::rfc5912::ID_SHA_512,
        }
    }

    /// Looks an algorithm up by its OID.
    pub fn from_oid(oid: &ObjectIdentifier) -> Option<Self> {
        [DigestAlgorithm::Sha256, DigestAlgorithm::Sha384, DigestAlgorithm::Sha512]
            .into_iter()
            .find(|d| d.oid() == *oid)
    }

    /// The standard name (`SHA-256`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DigestAlgorithm::Sha256 => "SHA-256",
            DigestAlgorithm::Sha384 => "SHA-384",
            DigestAlgorithm::Sha512 => "SHA-512",
        }
    }

    /// Hashes `data` ([`Digest::of`] for a digest to sign).
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            DigestAlgorithm::Sha256 => sha2::Sha256::digest(data).to_vec(),
            DigestAlgorithm::Sha384 => sha2::Sha384::digest(data).to_vec(),
            DigestAlgorithm::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    /// The DER prefix of `DigestInfo ::= SEQUENCE { digestAlgorithm, digest OCTET STRING }`
    /// for this hash (RFC 8017 section 9.2, note 1); the digest follows it.
    pub(crate) fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            DigestAlgorithm::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00,
                0x04, 0x20,
            ],
            DigestAlgorithm::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00,
                0x04, 0x30,
            ],
            DigestAlgorithm::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00,
                0x04, 0x40,
            ],
        }
    }
}

impl FromStr for DigestAlgorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_uppercase().replace('_', "-").as_str() {
            "SHA-256" | "SHA256" => Ok(DigestAlgorithm::Sha256),
            "SHA-384" | "SHA384" => Ok(DigestAlgorithm::Sha384),
            "SHA-512" | "SHA512" => Ok(DigestAlgorithm::Sha512),
            _ => Err(Error::InvalidInput(format!("unknown hash algorithm {s:?}: use SHA-256, SHA-384 or SHA-512"))),
        }
    }
}

/// How a digest is turned into a signature value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignatureScheme {
    /// RSASSA-PKCS1-v1_5: `CKM_RSA_PKCS` over a DER `DigestInfo`.
    RsaPkcs1v15(DigestAlgorithm),
    /// RSASSA-PSS with MGF1 on the same hash and a salt as long as the hash.
    RsaPss(DigestAlgorithm),
    /// ECDSA: `CKM_ECDSA` over the digest; the value is returned DER-encoded
    /// (`Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }`, RFC 3279).
    Ecdsa(DigestAlgorithm),
}

impl SignatureScheme {
    /// The hash the digest must have been made with.
    pub fn digest_algorithm(self) -> DigestAlgorithm {
        match self {
            SignatureScheme::RsaPkcs1v15(d) | SignatureScheme::RsaPss(d) | SignatureScheme::Ecdsa(d) => d,
        }
    }

    /// Whether the scheme fits a key of this algorithm.
    pub fn fits(self, key: KeyAlgorithm) -> bool {
        match self {
            SignatureScheme::RsaPkcs1v15(_) | SignatureScheme::RsaPss(_) => key.is_rsa(),
            SignatureScheme::Ecdsa(_) => !key.is_rsa(),
        }
    }
}

/// A digest to sign: its algorithm and bytes of that algorithm's length.
///
/// The length is checked once, where a digest comes from outside
/// ([`Digest::new`]: a client's hash); a digest computed here
/// ([`Digest::of`]) is right by construction. Whatever signs a `Digest`
/// never checks its length again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digest {
    alg: DigestAlgorithm,
    bytes: Vec<u8>,
}

/// A digest whose length is not its algorithm's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a {} digest has {} bytes, not {len}", alg.name(), alg.output_len())]
pub struct WrongLength {
    /// The algorithm named.
    pub alg: DigestAlgorithm,
    /// The length given.
    pub len: usize,
}

impl Digest {
    /// A digest given as bytes: refused unless it is as long as `alg`'s.
    pub fn new(alg: DigestAlgorithm, bytes: Vec<u8>) -> std::result::Result<Digest, WrongLength> {
        if bytes.len() != alg.output_len() {
            return Err(WrongLength { alg, len: bytes.len() });
        }
        Ok(Digest { alg, bytes })
    }

    /// A SHA-256 digest computed by the caller (a streamed hash).
    pub fn sha256(bytes: [u8; 32]) -> Digest {
        Digest { alg: DigestAlgorithm::Sha256, bytes: bytes.to_vec() }
    }

    /// `data` hashed with `alg`.
    pub fn of(alg: DigestAlgorithm, data: &[u8]) -> Digest {
        Digest { alg, bytes: alg.digest(data) }
    }

    /// Its algorithm.
    pub fn algorithm(&self) -> DigestAlgorithm {
        self.alg
    }

    /// Its bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Its bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

impl AsRef<[u8]> for Digest {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Encode;

    #[derive(der::Sequence)]
    struct DigestInfo {
        alg: spki::AlgorithmIdentifierOwned,
        digest: der::asn1::OctetString,
    }

    #[test]
    fn digest_info_prefixes_match_der() {
        for alg in [DigestAlgorithm::Sha256, DigestAlgorithm::Sha384, DigestAlgorithm::Sha512] {
            let digest = vec![0xab; alg.output_len()];
            let info = DigestInfo {
                alg: spki::AlgorithmIdentifierOwned { oid: alg.oid(), parameters: Some(der::asn1::Null.into()) },
                digest: der::asn1::OctetString::new(digest.clone()).expect("digest fits"),
            };
            let mut ours = alg.digest_info_prefix().to_vec();
            ours.extend_from_slice(&digest);
            assert_eq!(ours, info.to_der().expect("encodes"), "{alg:?}");
        }
    }

    #[test]
    fn names_parse() {
        assert_eq!("rsa2048".parse::<KeyAlgorithm>().ok(), Some(KeyAlgorithm::Rsa2048));
        assert_eq!("SHA-384".parse::<DigestAlgorithm>().ok(), Some(DigestAlgorithm::Sha384));
        assert!("md5".parse::<DigestAlgorithm>().is_err());
    }

    #[test]
    fn a_digest_has_its_algorithms_length_or_is_not_made() {
        for alg in [DigestAlgorithm::Sha256, DigestAlgorithm::Sha384, DigestAlgorithm::Sha512] {
            let made = Digest::of(alg, b"x");
            assert_eq!((made.algorithm(), made.as_bytes().len()), (alg, alg.output_len()));
            assert_eq!(Digest::new(alg, made.as_bytes().to_vec()).ok(), Some(made));
            let short = Digest::new(alg, vec![0; alg.output_len() - 1]).expect_err("short");
            assert_eq!(short, WrongLength { alg, len: alg.output_len() - 1 });
        }
        assert_eq!(
            Digest::new(DigestAlgorithm::Sha256, vec![0; 48]).map_err(|e| e.to_string()),
            Err("a SHA-256 digest has 32 bytes, not 48".to_string())
        );
        assert_eq!(Digest::sha256([7; 32]).into_bytes(), vec![7; 32]);
    }
}
