//! Reading a key pair's public half out of the token as a SubjectPublicKeyInfo.

use der::asn1::{BitString, OctetString, UintRef};
use der::{Decode, Encode, Sequence};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use crate::algorithm::KeyAlgorithm;
use crate::error::{Error, Result};

/// `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }` (RFC 8017 A.1.1).
#[derive(Sequence)]
struct RsaPublicKey<'a> {
    modulus: UintRef<'a>,
    public_exponent: UintRef<'a>,
}

/// `prime256v1` / `secp256r1` (RFC 5480 section 2.1.1.1).
pub(crate) const SECP256R1: der::oid::ObjectIdentifier = der::oid::db::rfc5912::SECP_256_R_1;

/// Encodes an RSA public key from `CKA_MODULUS` and `CKA_PUBLIC_EXPONENT`.
pub(crate) fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Result<Vec<u8>> {
    let invalid = |e: der::Error| Error::InvalidInput(format!("RSA public key from the token: {e}"));
    let key = RsaPublicKey {
        modulus: UintRef::new(modulus).map_err(invalid)?,
        public_exponent: UintRef::new(exponent).map_err(invalid)?,
    };
    let spki = SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: der::oid::db::rfc5912::RSA_ENCRYPTION,
            parameters: Some(der::asn1::Null.into()),
        },
        subject_public_key: BitString::from_bytes(&key.to_der().map_err(invalid)?).map_err(invalid)?,
    };
    spki.to_der().map_err(invalid)
}

/// Encodes a P-256 public key from `CKA_EC_POINT` (a DER OCTET STRING holding the
/// uncompressed point; some tokens return the bare point).
pub(crate) fn ec_spki(ec_point: &[u8]) -> Result<Vec<u8>> {
    let invalid = |e: der::Error| Error::InvalidInput(format!("EC public key from the token: {e}"));
    let point = match OctetString::from_der(ec_point) {
        Ok(os) => os.into_bytes().into_vec(),
        Err(_) => ec_point.to_vec(),
    };
    let spki = SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: der::oid::db::rfc5912::ID_EC_PUBLIC_KEY,
            parameters: Some(der::Any::encode_from(&SECP256R1).map_err(invalid)?),
        },
        subject_public_key: BitString::from_bytes(&point).map_err(invalid)?,
    };
    spki.to_der().map_err(invalid)
}

/// The DER `ECParameters` (a named curve OID) for the key generation template.
pub(crate) fn ec_params(alg: KeyAlgorithm) -> Result<Vec<u8>> {
    match alg {
        KeyAlgorithm::EcP256 => SECP256R1.to_der().map_err(|e| Error::InvalidInput(e.to_string())),
        other => Err(Error::InvalidInput(format!("{other} is not an elliptic-curve algorithm"))),
    }
}

/// Converts a PKCS#11 ECDSA signature (`r || s`, each the curve's size) into
/// `Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` (RFC 3279 section 2.2.3).
pub(crate) fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>> {
    #[derive(Sequence)]
    struct EcdsaSig<'a> {
        r: UintRef<'a>,
        s: UintRef<'a>,
    }
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return Err(Error::InvalidInput(format!("ECDSA signature of odd length {}", raw.len())));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let invalid = |e: der::Error| Error::InvalidInput(format!("ECDSA signature: {e}"));
    EcdsaSig { r: UintRef::new(r).map_err(invalid)?, s: UintRef::new(s).map_err(invalid)? }.to_der().map_err(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_integers_are_minimal_and_positive() {
        let mut raw = vec![0u8; 64];
        raw[1] = 0x01; // r has a leading zero byte to strip
        raw[32] = 0x80; // s needs a leading zero to stay positive
        let der = ecdsa_raw_to_der(&raw).expect("encodes");
        assert_eq!(&der[..4], &[0x30, der.len() as u8 - 2, 0x02, 31]);
        let s_at = 4 + 31;
        assert_eq!(&der[s_at..s_at + 3], &[0x02, 33, 0x00]);
    }

    #[test]
    fn odd_ecdsa_signature_is_refused() {
        assert!(ecdsa_raw_to_der(&[1, 2, 3]).is_err());
    }
}
