//! FIDO2 phones: the WebAuthn relying party (webauthn-rs), the one registered
//! device per user ([`device`]), QR tickets as a typed state machine
//! ([`ticket`]), printed registration codes ([`regcode`]), and the flows that
//! tie them together for the PC and the phone pages ([`flows`]).
//!
//! Ceremony state (the challenge) lives in the ticket's row and is taken out on
//! first use, so an assertion or attestation is accepted at most once; the sign
//! counter is checked here as well as by webauthn-rs (a counter that does not
//! grow is refused unless the authenticator always reports 0).

pub mod device;
pub mod flows;
pub mod regcode;
pub mod ticket;

use sha2::{Digest, Sha256};
use webauthn_rs::prelude::{
    AuthenticationResult, CreationChallengeResponse, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, RequestChallengeResponse, Url, Uuid, Webauthn, WebauthnBuilder,
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
        self.webauthn
            .finish_passkey_authentication(&response, &state)
            .map_err(|e| refused(format!("sign-in refused: {e}")))
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
fn check_client_data(client_data_json: &[u8], what: &str) -> Result<()> {
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
fn check_assertion_data(authenticator_data: &[u8]) -> Result<()> {
    match authenticator_data.get(32) {
        Some(flags) if flags & 0xc0 == 0 && authenticator_data.len() != 37 => Err(refused(format!(
            "sign-in refused: {} bytes after the authenticator data",
            authenticator_data.len().saturating_sub(37)
        ))),
        _ => Ok(()),
    }
}

fn parse_response<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| refused(format!("malformed WebAuthn response: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

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
