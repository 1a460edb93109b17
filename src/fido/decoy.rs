//! Decoys: what a phone login or phone change shows for an ID that has no
//! usable phone (unknown, disabled, none registered), so that the open start
//! pages do not tell which IDs exist.
//!
//! A decoy is a ticket like any other (the same QR code, confirmation number,
//! phone page and errors; see [`super::ticket::Ticket::decoy`]). When a phone
//! begins it, it is offered passkeys that no phone holds: their credential
//! IDs are derived from the typed ID by a secret every node shares (derived
//! from the token, [`crate::audit::seal::derived_secret`]), so the same ID
//! gets the same ones from every node and after every restart, as a real
//! user's registered phone would. Their public key is a P-256 point whose
//! private key was never kept (made once by a software authenticator and
//! thrown away), so no answer verifies; a refusal that depends on the stored
//! passkey is told as one generic refusal for real tickets and decoys alike
//! (`sign_in_refusal` in [`crate::fido`]), and a decoy never finishes in any
//! case ([`super::ticket::Ticket::verified`] refuses it).
//!
//! What a decoy cannot hide: the user's own phone, which answers a real
//! ticket and not a decoy (only the user holds it), and time: a real user's
//! credential IDs change when they change phones, a decoy's never.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use webauthn_rs::prelude::Passkey;

use crate::encoding::b64url;
use crate::error::{Error, Result};

/// The public key of every decoy passkey (COSE EC2, P-256, base64url x and y).
const DECOY_X: &str = "BLWevydy1MMRqJQgXgcdG-jCAi2-AcBee0KPp9A5FNU";
const DECOY_Y: &str = "JvoSSnxycymgIz3O7rOeE-sIqrvqjKLzYHKya0WbWfs";

/// Lengths of the credential IDs authenticators make (16: Android, 20:
/// iPhone, 32 and 64: others), each as often as a decoy takes it (of 256).
const ID_LENGTHS: [(usize, u8); 4] = [(16, 115), (20, 102), (32, 31), (64, 8)];

/// The length a seed byte picks from [`ID_LENGTHS`].
fn id_length(byte: u8) -> usize {
    let mut left = u32::from(byte);
    for (len, weight) in ID_LENGTHS {
        if left < u32::from(weight) {
            return len;
        }
        left -= u32::from(weight);
    }
    ID_LENGTHS[0].0
}

/// The passkeys decoys offer.
pub struct Decoys {
    secret: [u8; 32],
}

impl std::fmt::Debug for Decoys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoys").finish_non_exhaustive()
    }
}

impl Decoys {
    /// Decoys keyed by a secret that every node shares.
    pub fn new(secret: [u8; 32]) -> Decoys {
        Decoys { secret }
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        // A 32-byte key always fits HMAC-SHA-256.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret).unwrap_or_else(|_| unreachable!());
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// The passkeys a decoy offers for `user_id`: one, now and then up to
    /// four (a real user's retired phones, up to three, are offered too), the
    /// same for the same ID.
    pub fn passkeys(&self, user_id: &str) -> Result<Vec<Passkey>> {
        let seed = self.mac(&[b"inkan decoy passkeys v1\0", user_id.as_bytes()]);
        let count = match seed[0] {
            0..=199 => 1,
            200..=235 => 2,
            236..=249 => 3,
            _ => 4,
        };
        (0..count)
            .map(|i| {
                let bytes = self.mac(&[b"inkan decoy credential v1\0", user_id.as_bytes(), &[0, i as u8]]);
                let mut id = bytes.to_vec();
                id.extend_from_slice(&self.mac(&[b"inkan decoy credential v1\0", user_id.as_bytes(), &[1, i as u8]]));
                passkey(&id[..id_length(seed[1 + i])])
            })
            .collect()
    }
}

/// A stored passkey (webauthn-rs's form) with this credential ID and the
/// decoy key. No transports: inkan's registrations keep none (the phone page
/// does not send them), so a real user's options name none either.
fn passkey(credential_id: &[u8]) -> Result<Passkey> {
    let stored = serde_json::json!({ "cred": {
        "cred_id": b64url(credential_id),
        "cred": { "type_": "ES256", "key": { "EC_EC2": { "curve": "SECP256R1", "x": DECOY_X, "y": DECOY_Y } } },
        "counter": 0,
        "transports": null,
        "user_verified": true,
        "backup_eligible": true,
        "backup_state": true,
        "registration_policy": "required",
        "extensions": {
            "cred_protect": "Ignored",
            "hmac_create_secret": "NotRequested",
            "appid": "NotRequested",
            "cred_props": "Ignored"
        },
        "attestation": { "data": "None", "metadata": "None" },
        "attestation_format": "none"
    }});
    serde_json::from_value(stored).map_err(|e| Error::Internal(format!("decoy passkey: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use webauthn_authenticator_rs::softpasskey::SoftPasskey;
    use webauthn_authenticator_rs::WebauthnAuthenticator;
    use webauthn_rs::prelude::Url;

    fn ids(decoys: &Decoys, user: &str) -> Vec<Vec<u8>> {
        decoys.passkeys(user).expect("passkeys").iter().map(|p| AsRef::<[u8]>::as_ref(p.cred_id()).to_vec()).collect()
    }

    #[test]
    fn an_id_gets_the_same_passkeys_every_time_and_ids_differ() {
        let decoys = Decoys::new([7; 32]);
        assert_eq!(ids(&decoys, "nobody"), ids(&decoys, "nobody"), "stable for an ID");
        assert_ne!(ids(&decoys, "nobody"), ids(&decoys, "nobody2"));
        assert_ne!(ids(&decoys, "nobody"), ids(&Decoys::new([8; 32]), "nobody"), "keyed by the secret");
        let mut counts = [0usize; 5];
        let mut lengths = std::collections::BTreeMap::<usize, usize>::new();
        for n in 0..400 {
            let found = ids(&decoys, &format!("user-{n}"));
            counts[found.len()] += 1;
            for id in &found {
                *lengths.entry(id.len()).or_default() += 1;
            }
        }
        assert_eq!(counts[0], 0);
        assert!(
            counts[1] > 250 && counts[2] > 20 && counts[3] > 5 && counts[4] > 0,
            "mostly one, sometimes up to four: {counts:?}"
        );
        assert_eq!(lengths.keys().copied().collect::<Vec<_>>(), vec![16, 20, 32, 64]);
        assert!(lengths[&16] + lengths[&20] > 4 * (lengths[&32] + lengths[&64]), "mostly phones' lengths: {lengths:?}");
        assert_eq!((0..=255).map(id_length).filter(|l| *l == 64).count(), 8, "the weights add up to 256");
    }

    /// A phone's passkey registered with the relying party.
    fn registered(rp: &super::super::RelyingParty, phone: &mut SoftPasskey, user: &str) -> Passkey {
        let origin = Url::parse(&rp.origin).expect("origin");
        let (options, state) = rp.start_registration(user, None).expect("registration");
        let created = phone.do_registration(origin, options).expect("register");
        rp.finish_registration(&serde_json::to_vec(&created).expect("json"), &state).expect("registered")
    }

    #[test]
    fn a_decoy_is_offered_and_refused_exactly_like_someone_elses_passkey() {
        let rp = super::super::RelyingParty::new(&crate::config::Config::default()).expect("rp");
        let decoys = Decoys::new([1; 32]).passkeys("nobody").expect("passkeys");
        let mut victim = SoftPasskey::new(true);
        let real = registered(&rp, &mut victim, "victim");
        let mut attacker = SoftPasskey::new(true);
        let own = registered(&rp, &mut attacker, "attacker");
        let mut refusals = Vec::new();
        for offered in [vec![real], decoys.clone()] {
            let (options, state) = rp.start_authentication(&offered).expect("options");
            let shown = serde_json::to_value(&options).expect("json");
            let allowed = shown["publicKey"]["allowCredentials"].as_array().expect("allowCredentials").clone();
            assert_eq!(allowed.len(), offered.len());
            // The attacker's phone answers the challenge with its own passkey.
            let mut mine = shown.clone();
            mine["publicKey"]["allowCredentials"] =
                serde_json::json!([{ "type": "public-key", "id": b64url(own.cred_id().as_ref()) }]);
            let origin = Url::parse(&rp.origin).expect("origin");
            let answer =
                attacker.do_authentication(origin, serde_json::from_value(mine).expect("options")).expect("sign");
            let refused = rp.finish_authentication(&serde_json::to_vec(&answer).expect("json"), &state);
            refusals.push(format!("{:?}", refused.err()));
        }
        assert_eq!(refusals[0], refusals[1], "one refusal for both");
        assert!(refusals[0].contains("Unauthenticated"), "{}", refusals[0]);
        // No transports, as a passkey inkan registered (the phone page sends none).
        let shown = serde_json::to_value(rp.start_authentication(&decoys).expect("options").0).expect("json");
        assert!(shown["publicKey"]["allowCredentials"][0].get("transports").is_none(), "{shown}");
    }
}
