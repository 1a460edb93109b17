//! Signing: a digest or a message by a key, with the mechanism its scheme
//! names, and the signature in the form callers expect.

use super::*;
use crate::error::ReturnValue;
use crate::Digest;

impl Keystore {
    /// Signs a digest with the private key.
    ///
    /// - RSA PKCS#1 v1.5: the keystore wraps the digest in a `DigestInfo` and
    ///   calls `CKM_RSA_PKCS`;
    /// - RSA-PSS: `CKM_RSA_PKCS_PSS` with MGF1 on the same hash, salt = hash length;
    /// - ECDSA: `CKM_ECDSA`, and the token's `r || s` is returned DER-encoded.
    ///
    /// This is the hot path: one pool checkout, a cached handle, one `C_Sign`.
    pub fn sign_digest(&self, key: &KeyRef, scheme: SignatureScheme, digest: &Digest) -> Result<Vec<u8>> {
        if digest.algorithm() != scheme.digest_algorithm() {
            return Err(Error::InvalidInput(format!(
                "a {} digest cannot be signed with a {} scheme",
                digest.algorithm().name(),
                scheme.digest_algorithm().name()
            )));
        }
        let (mechanism, data) = token_input(scheme, digest.as_bytes());
        let signature = self.sign_raw(key, &mechanism, &data)?;
        finish_signature(scheme, signature)
    }

    /// ECDSA over a digest, returning the token's raw `r || s` (IEEE P1363), as
    /// JWS ES256 wants it (RFC 7518 3.4).
    pub fn sign_ecdsa_p1363(&self, key: &KeyRef, digest: &[u8]) -> Result<Vec<u8>> {
        if digest.is_empty() || digest.len() > 64 {
            return Err(Error::InvalidInput(format!("an ECDSA digest of {} bytes", digest.len())));
        }
        self.sign_raw(key, &Mechanism::Ecdsa, digest)
    }

    /// One `C_SignInit` + `C_Sign` with a cached handle: the raw cost of a
    /// signature, without any formatting. Benchmarks compare against this.
    pub fn sign_raw_pkcs1(&self, key: &KeyRef, digest_info: &[u8]) -> Result<Vec<u8>> {
        self.sign_raw(key, &Mechanism::RsaPkcs, digest_info)
    }

    pub(super) fn sign_raw(&self, key: &KeyRef, mechanism: &Mechanism, data: &[u8]) -> Result<Vec<u8>> {
        let wants_rsa = !matches!(mechanism, Mechanism::Ecdsa);
        self.with_session(|session| {
            let cached = self.private_key(session, key)?;
            if cached.rsa != wants_rsa {
                return Err(Error::MechanismUnsupported {
                    mechanism: format!(
                        "{:?} with the {} key {}",
                        mechanism.mechanism_type(),
                        if cached.rsa { "RSA" } else { "EC" },
                        key.hex()
                    ),
                });
            }
            let started = cpu_time::ThreadTime::try_now().ok();
            let signed = session.sign(mechanism, cached.handle, data);
            if let Some(cpu) = started.and_then(|t| t.try_elapsed().ok()) {
                self.sign_time.calls.fetch_add(1, Ordering::Relaxed);
                self.sign_time.cpu_ns.fetch_add(cpu.as_nanos() as u64, Ordering::Relaxed);
            }
            signed.map_err(|e| match from_cryptoki(e) {
                Error::Pkcs11 { rv, .. }
                    if rv == ReturnValue::KEY_TYPE_INCONSISTENT || rv == ReturnValue::KEY_FUNCTION_NOT_PERMITTED =>
                {
                    Error::MechanismUnsupported {
                        mechanism: format!("{:?} with key {}", mechanism.mechanism_type(), key.hex()),
                    }
                }
                other => other,
            })
        })
    }

    /// Signs `message` after hashing it in software (for CSRs and other small data).
    pub fn sign_message(&self, key: &KeyRef, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>> {
        self.sign_digest(key, scheme, &Digest::of(scheme.digest_algorithm(), message))
    }
}

/// What the token signs for `scheme` over `digest`: the mechanism and its input
/// (RSA PKCS#1 v1.5: the `DigestInfo`; PSS: MGF1 on the same hash, salt = hash
/// length; ECDSA: the digest).
pub(super) fn token_input(scheme: SignatureScheme, digest: &[u8]) -> (Mechanism<'static>, Vec<u8>) {
    let alg = scheme.digest_algorithm();
    match scheme {
        SignatureScheme::RsaPkcs1v15(_) => {
            let mut info = Vec::with_capacity(19 + digest.len());
            info.extend_from_slice(alg.digest_info_prefix());
            info.extend_from_slice(digest);
            (Mechanism::RsaPkcs, info)
        }
        SignatureScheme::RsaPss(_) => {
            let params =
                PkcsPssParams { hash_alg: hash_mechanism(alg), mgf: mgf(alg), s_len: (alg.output_len() as u64).into() };
            (Mechanism::RsaPkcsPss(params), digest.to_vec())
        }
        SignatureScheme::Ecdsa(_) => (Mechanism::Ecdsa, digest.to_vec()),
    }
}

/// The token's signature as `scheme` encodes it (ECDSA: `r || s` to DER).
pub(super) fn finish_signature(scheme: SignatureScheme, signature: Vec<u8>) -> Result<Vec<u8>> {
    match scheme {
        SignatureScheme::Ecdsa(_) => public_key::ecdsa_raw_to_der(&signature),
        _ => Ok(signature),
    }
}

pub(super) fn hash_mechanism(alg: DigestAlgorithm) -> MechanismType {
    match alg {
        DigestAlgorithm::Sha256 => MechanismType::SHA256,
        DigestAlgorithm::Sha384 => MechanismType::SHA384,
        DigestAlgorithm::Sha512 => MechanismType::SHA512,
    }
}

pub(super) fn mgf(alg: DigestAlgorithm) -> PkcsMgfType {
    match alg {
        DigestAlgorithm::Sha256 => PkcsMgfType::MGF1_SHA256,
        DigestAlgorithm::Sha384 => PkcsMgfType::MGF1_SHA384,
        DigestAlgorithm::Sha512 => PkcsMgfType::MGF1_SHA512,
    }
}
