//! The fuzz target's way into the CSC API (`--cfg fuzzing`, and the unit
//! tests that replay its seeds).

use super::sign_doc::{check_format, SignDocReq};
use super::*;

/// The fuzz target's way in (`--cfg fuzzing`, and the unit tests that replay
/// its seeds): every request body of this module, and the checks a handler
/// makes before the token.
pub fn fuzz(data: &[u8]) {
    let _ = serde_json::from_slice::<ListReq>(data);
    let _ = serde_json::from_slice::<InfoReq>(data);
    let _ = serde_json::from_slice::<AuthorizeReq>(data);
    if let Ok(req) = serde_json::from_slice::<SignHashReq>(data) {
        for is_rsa in [true, false] {
            if let Ok(scheme) = scheme_for(&req.sign_algo, None, is_rsa) {
                let _ = check_sign_algo_params(scheme, req.sign_algo_params.as_deref());
                if let Some(list) = req.hashes.as_ref().or(req.hash.as_ref()) {
                    let _ = decode_hashes(list, scheme.digest_algorithm());
                }
            }
        }
    }
    if let Ok(req) = serde_json::from_slice::<SignDocReq>(data) {
        for dd in req.document_digests.iter().flatten() {
            let _ = check_format(&dd.signature_format, dd.conformance_level.as_deref());
            let _ = decode_hashes(&dd.hashes, DigestAlgorithm::Sha256);
            if let Some(algo) = &dd.sign_algo {
                if let Ok(scheme) = scheme_for(algo, None, true) {
                    let _ = check_sign_algo_params(scheme, dd.sign_algo_params.as_deref());
                }
            }
        }
    }
}
