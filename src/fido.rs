//! FIDO2 phones: the WebAuthn relying party (webauthn-rs), the one registered
//! device per user ([`device`]), QR tickets as a typed state machine
//! ([`ticket`]), printed registration codes ([`regcode`]), decoys for IDs
//! without a usable phone ([`decoy`]), and the flows that tie them together
//! for the PC and the phone pages ([`flows`]).
//!
//! Ceremony state (the challenge) lives in the ticket's row and is taken out on
//! first use, so an assertion or attestation is accepted at most once; the sign
//! counter is checked here as well as by webauthn-rs (a counter that does not
//! grow is refused unless the authenticator always reports 0).

pub mod decoy;
pub mod device;
pub mod flows;
pub mod regcode;
pub mod ticket;
pub mod waiting;

use sha2::{Digest, Sha256};
use webauthn_rs::prelude::{
    AuthenticationResult, CreationChallengeResponse, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, RequestChallengeResponse, Url, Uuid, Webauthn, WebauthnBuilder,
    WebauthnError,
};

use crate::config::Config;
use crate::error::{Credential, Error, Result};

/// A phone's answer refused.
fn refused(reason: String) -> Error {
    Error::Unauthenticated(Credential::Phone, reason)
}

/// The WebAuthn relying party.
pub struct RelyingParty {
    webauthn: Webauthn,
    /// The relying-party ID.
    pub rp_id: String,
    /// The origin phones must report.
    pub origin: String,
}

impl RelyingParty {
    /// Builds the relying party from `[fido]` and `[server] public_url`.
    pub fn new(config: &Config) -> Result<RelyingParty> {
        let origin = Url::parse(&config.server.public_url)
            .map_err(|e| Error::Invalid(format!("[server] public_url {:?}: {e}", config.server.public_url)))?;
        let rp_id = match &config.fido.rp_id {
            Some(id) => id.clone(),
            None => origin
                .host_str()
                .ok_or_else(|| Error::Invalid("[server] public_url has no host name".into()))?
                .to_owned(),
        };
        let webauthn = WebauthnBuilder::new(&rp_id, &origin)
            .and_then(|b| b.rp_name(&config.fido.rp_name).timeout(std::time::Duration::from_secs(120)).build())
            .map_err(|e| Error::Invalid(format!("[fido] rp_id {rp_id:?} does not fit {origin}: {e}")))?;
        Ok(RelyingParty { webauthn, rp_id, origin: origin.as_str().trim_end_matches('/').to_owned() })
    }

    /// Starts a registration (user verification required): the options for the
    /// phone and the state to keep (JSON). The current device is excluded: a
    /// phone that holds it must not overwrite its credential (same user handle)
    /// before the server has accepted the new one.
    pub fn start_registration(
        &self,
        user_id: &str,
        current: Option<&Passkey>,
    ) -> Result<(CreationChallengeResponse, String)> {
        let exclude = current.map(|p| vec![p.cred_id().clone()]);
        let (options, state) = self
            .webauthn
            .start_passkey_registration(user_handle(user_id), user_id, user_id, exclude)
            .map_err(Error::internal)?;
        Ok((options, to_json(&state)?))
    }

    /// Verifies a registration response against the kept state.
    pub fn finish_registration(&self, response: &[u8], state: &str) -> Result<Passkey> {
        let response: RegisterPublicKeyCredential = parse_response(response)?;
        check_client_data(response.response.client_data_json.as_ref(), "registration")?;
        check_attestation_object(response.response.attestation_object.as_ref())?;
        let state: PasskeyRegistration =
            serde_json::from_str(state).map_err(|e| Error::Internal(format!("ceremony state: {e}")))?;
        self.webauthn
            .finish_passkey_registration(&response, &state)
            .map_err(|e| refused(format!("registration refused: {e}")))
    }

    /// Starts an authentication with the user's device. The user's retired
    /// devices are allowed too: a phone that still holds a replaced or removed
    /// passkey then answers, and can be told why it no longer signs in.
    pub fn start_authentication(&self, passkeys: &[Passkey]) -> Result<(RequestChallengeResponse, String)> {
        let (options, state) = self.webauthn.start_passkey_authentication(passkeys).map_err(Error::internal)?;
        Ok((options, to_json(&state)?))
    }

    /// Verifies an assertion against the kept state.
    pub fn finish_authentication(&self, response: &[u8], state: &str) -> Result<AuthenticationResult> {
        let response: PublicKeyCredential = parse_response(response)?;
        check_client_data(response.response.client_data_json.as_ref(), "sign-in")?;
        check_assertion_data(response.response.authenticator_data.as_ref())?;
        let state: PasskeyAuthentication =
            serde_json::from_str(state).map_err(|e| Error::Internal(format!("ceremony state: {e}")))?;
        self.webauthn.finish_passkey_authentication(&response, &state).map_err(|e| refused(sign_in_refusal(&e)))
    }
}

/// What a refused sign-in tells the phone (and the PC). A reason that
/// depends only on the answer and the options anyone holding the QR code has
/// seen (challenge, origin, RP ID, flags, which credential) is told as it is;
/// one that depends on the stored passkey (its key, its backup eligibility)
/// is told as one generic refusal and logged: otherwise a forged answer
/// naming an offered credential would tell a real user's passkey from a
/// decoy's ([`decoy`]).
fn sign_in_refusal(e: &WebauthnError) -> String {
    match e {
        WebauthnError::InvalidClientDataType
        | WebauthnError::MismatchedChallenge
        | WebauthnError::ChallengeNotFound
        | WebauthnError::InvalidRPOrigin
        | WebauthnError::InvalidRPIDHash
        | WebauthnError::UserNotPresent
        | WebauthnError::UserNotVerified
        | WebauthnError::CredentialNotFound
        | WebauthnError::CredentialCrossOrigin
        | WebauthnError::CredentialPossibleCompromise
        | WebauthnError::InvalidExtensions
        | WebauthnError::ParseCBORFailure(_)
        | WebauthnError::ParseJSONFailure(_)
        | WebauthnError::ParseNOMFailure
        | WebauthnError::ParseInsufficientBytesAvailable => format!("sign-in refused: {e}"),
        other => {
            tracing::info!("sign-in refused by the stored passkey: {other}");
            "sign-in refused: the answer does not verify with the passkey it names".into()
        }
    }
}

/// The WebAuthn user handle of a user: stable, so a phone that registers again
/// replaces its own credential for the user instead of adding one.
pub fn user_handle(user_id: &str) -> Uuid {
    let digest = Sha256::digest(format!("inkan user handle\0{user_id}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::from_bytes(bytes)
}

/// Checks the sign counter: it must grow, unless the authenticator always reports 0.
pub fn counter_ok(stored: u32, reported: u32) -> bool {
    (stored == 0 && reported == 0) || reported > stored
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(Error::internal)
}

/// Refuses a ceremony that the browser says ran in a frame of another site
/// (`crossOrigin: true`, or a `topOrigin`), which webauthn-rs lets through:
/// inkan's pages are never framed (`frame-ancestors 'none'`).
pub(crate) fn check_client_data(client_data_json: &[u8], what: &str) -> Result<()> {
    let data: serde_json::Value = serde_json::from_slice(client_data_json)
        .map_err(|e| refused(format!("{what} refused: clientDataJSON is not JSON ({e})")))?;
    if data.get("crossOrigin").and_then(serde_json::Value::as_bool) == Some(true) {
        return Err(refused(format!("{what} refused: crossOrigin is true (the ceremony ran in another site's frame)")));
    }
    if data.get("topOrigin").is_some() {
        return Err(refused(format!(
            "{what} refused: a topOrigin is named (the ceremony ran in another site's frame)"
        )));
    }
    Ok(())
}

/// Refuses an assertion's authenticator data with bytes after what its
/// flags announce: 37 bytes when it carries neither attested credential
/// data (AT) nor extensions (ED).
pub(crate) fn check_assertion_data(authenticator_data: &[u8]) -> Result<()> {
    match authenticator_data.get(32) {
        Some(flags) if flags & 0xc0 == 0 && authenticator_data.len() != 37 => Err(refused(format!(
            "sign-in refused: {} bytes after the authenticator data",
            authenticator_data.len().saturating_sub(37)
        ))),
        _ => Ok(()),
    }
}

/// The length of the CBOR data item at the start of `data` (definite lengths
/// only, as CTAP2 encodes; nested at most 16 deep), or `None` if it is not
/// one whole item.
pub(crate) fn cbor_item_len(data: &[u8], depth: u8) -> Option<usize> {
    let first = *data.first()?;
    let (major, info) = (first >> 5, first & 0x1f);
    let (arg, mut pos): (u64, usize) = match info {
        0..=23 => (u64::from(info), 1),
        24 => (u64::from(*data.get(1)?), 2),
        25 => (u64::from(u16::from_be_bytes(data.get(1..3)?.try_into().ok()?)), 3),
        26 => (u64::from(u32::from_be_bytes(data.get(1..5)?.try_into().ok()?)), 5),
        27 => (u64::from_be_bytes(data.get(1..9)?.try_into().ok()?), 9),
        _ => return None,
    };
    let items = |n: u64, pos: &mut usize| -> Option<()> {
        if depth >= 16 {
            return None;
        }
        for _ in 0..n {
            *pos += cbor_item_len(data.get(*pos..)?, depth + 1)?;
        }
        Some(())
    };
    match major {
        0 | 1 | 7 => {}
        2 | 3 => pos = pos.checked_add(usize::try_from(arg).ok()?)?,
        4 => items(arg, &mut pos)?,
        5 => items(arg.checked_mul(2)?, &mut pos)?,
        6 => items(1, &mut pos)?,
        _ => return None,
    }
    (pos <= data.len()).then_some(pos)
}

/// Refuses a registration whose attestation object, or the authenticator
/// data in it, has bytes after what its structure and flags announce (the
/// credential's public key, then extensions if ED is set): webauthn-rs
/// ignores them.
pub(crate) fn check_attestation_object(attestation: &[u8]) -> Result<()> {
    let trailing = |n: usize, what: &str| refused(format!("registration refused: {n} bytes after the {what}"));
    let malformed = || {
        refused("registration refused: the attestation object is not the CBOR a WebAuthn authenticator sends".into())
    };
    let len = cbor_item_len(attestation, 0).ok_or_else(malformed)?;
    if len != attestation.len() {
        return Err(trailing(attestation.len() - len, "attestation object"));
    }
    // A map of text keys: find authData (a byte string).
    let (first, rest) = attestation.split_first().ok_or_else(malformed)?;
    if first >> 5 != 5 || first & 0x1f > 23 {
        return Err(malformed());
    }
    let mut pos = 0usize;
    let mut auth_data = None;
    for _ in 0..(first & 0x1f) {
        let key_len = cbor_item_len(&rest[pos..], 0).ok_or_else(malformed)?;
        let key = &rest[pos..pos + key_len];
        pos += key_len;
        let value_len = cbor_item_len(&rest[pos..], 0).ok_or_else(malformed)?;
        if key == [0x68, b'a', b'u', b't', b'h', b'D', b'a', b't', b'a'] {
            let value = &rest[pos..pos + value_len];
            let header = match value.first().map(|b| b & 0x1f) {
                Some(0..=23) => 1,
                Some(24) => 2,
                Some(25) => 3,
                Some(26) => 5,
                _ => return Err(malformed()),
            };
            if value[0] >> 5 != 2 {
                return Err(malformed());
            }
            auth_data = Some(&value[header..]);
        }
        pos += value_len;
    }
    let data = auth_data.ok_or_else(malformed)?;
    let flags = *data.get(32).ok_or_else(malformed)?;
    let mut end = 37;
    if flags & 0x40 != 0 {
        let id_len = u16::from_be_bytes(data.get(53..55).ok_or_else(malformed)?.try_into().map_err(|_| malformed())?);
        end = 55 + usize::from(id_len);
        end += cbor_item_len(data.get(end..).ok_or_else(malformed)?, 0).ok_or_else(malformed)?;
    }
    if flags & 0x80 != 0 {
        end += cbor_item_len(data.get(end..).ok_or_else(malformed)?, 0).ok_or_else(malformed)?;
    }
    if end != data.len() {
        return Err(trailing(data.len().saturating_sub(end), "credential data"));
    }
    Ok(())
}

fn parse_response<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| refused(format!("malformed WebAuthn response: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cbor_items_are_measured_whole_or_not_at_all() {
        // {1: 2, -1: h'0102'}, then a trailing byte.
        let map = [0xa2, 0x01, 0x02, 0x20, 0x42, 0x01, 0x02, 0xff];
        assert_eq!(cbor_item_len(&map, 0), Some(7));
        assert_eq!(cbor_item_len(&map[..6], 0), None, "cut short");
        assert_eq!(cbor_item_len(&[0x5f], 0), None, "indefinite length");
        assert_eq!(cbor_item_len(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], 0), None, "huge count");
        assert_eq!(cbor_item_len(&[0x81; 40], 0), None, "too deep");
        assert_eq!(cbor_item_len(&[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], 0), None, "huge length");
    }

    #[test]
    fn counter_must_grow_unless_always_zero() {
        assert!(counter_ok(0, 0));
        assert!(counter_ok(0, 1));
        assert!(counter_ok(5, 6));
        assert!(!counter_ok(5, 5));
        assert!(!counter_ok(5, 4));
        assert!(!counter_ok(5, 0));
    }

    #[test]
    fn user_handles_are_stable_and_distinct() {
        assert_eq!(user_handle("100001"), user_handle("100001"));
        assert_ne!(user_handle("100001"), user_handle("100002"));
    }
}
