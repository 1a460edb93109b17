//! A software FIDO2 authenticator (P-256, "none" attestation) that can also
//! misbehave on purpose: the hostile cases a well-behaved authenticator refuses
//! to produce (no UV, no UP, wrong origin or RP ID, wrong type, stale counter,
//! someone else's challenge or key).

use base64ct::{Base64UrlUnpadded, Encoding};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{DerSignature, SigningKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn b64(data: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(data)
}

fn unb64(text: &str) -> Vec<u8> {
    Base64UrlUnpadded::decode_vec(text).expect("base64url")
}

/// Minimal CBOR writer (RFC 8949): the major types an attestation object needs.
fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, n as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(m | 26);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
}

fn int(out: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        head(out, 0, v as u64)
    } else {
        head(out, 1, (-1 - v) as u64)
    }
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    head(out, 2, b.len() as u64);
    out.extend_from_slice(b);
}

fn text(out: &mut Vec<u8>, s: &str) {
    head(out, 3, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// What to get wrong.
#[derive(Clone, Debug, Default)]
pub struct Hostile {
    pub no_uv: bool,
    pub no_up: bool,
    pub origin: Option<String>,
    pub rp_id: Option<String>,
    pub client_type: Option<String>,
    pub challenge: Option<String>,
    pub counter: Option<u32>,
    pub garbage_cbor: bool,
    /// clientData says the ceremony ran in a cross-origin frame.
    pub cross_origin: bool,
    /// clientData names a top-level origin (a frame in another site).
    pub top_origin: Option<String>,
    /// Bytes after an assertion's authenticator data (signed with it), or
    /// after a registration's credential data.
    pub trailing: bool,
}

/// One phone.
pub struct Authenticator {
    key: SigningKey,
    pub credential_id: Vec<u8>,
    pub counter: u32,
    pub origin: String,
    pub rp_id: String,
}

impl Authenticator {
    pub fn new(origin: &str) -> Authenticator {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("random");
        secret[0] = secret[0].clamp(1, 0x7f);
        let key = SigningKey::from_slice(&secret).expect("P-256 key");
        let mut credential_id = vec![0u8; 32];
        getrandom::fill(&mut credential_id).expect("random");
        Authenticator { key, credential_id, counter: 0, origin: origin.to_owned(), rp_id: "localhost".into() }
    }

    fn client_data(&self, kind: &str, challenge: &str, h: &Hostile) -> Vec<u8> {
        let mut data = json!({
            "type": h.client_type.clone().unwrap_or_else(|| kind.to_owned()),
            "challenge": h.challenge.clone().unwrap_or_else(|| challenge.to_owned()),
            "origin": h.origin.clone().unwrap_or_else(|| self.origin.clone()),
            "crossOrigin": h.cross_origin,
            // Chromium adds keys like this one; the server must parse, not compare.
            "other_keys_can_be_added_here": "do not compare clientDataJSON against a template",
        });
        if let Some(top) = &h.top_origin {
            data["topOrigin"] = json!(top);
        }
        data.to_string().into_bytes()
    }

    fn auth_data(&self, h: &Hostile, counter: u32, attested: bool) -> Vec<u8> {
        let rp_id = h.rp_id.clone().unwrap_or_else(|| self.rp_id.clone());
        let mut out = Sha256::digest(rp_id.as_bytes()).to_vec();
        let mut flags = 0u8;
        if !h.no_up {
            flags |= 0x01;
        }
        if !h.no_uv {
            flags |= 0x04;
        }
        if attested {
            flags |= 0x40;
        }
        out.push(flags);
        out.extend_from_slice(&counter.to_be_bytes());
        if attested {
            out.extend_from_slice(&[0u8; 16]); // AAGUID
            out.extend_from_slice(&(self.credential_id.len() as u16).to_be_bytes());
            out.extend_from_slice(&self.credential_id);
            // Uncompressed SEC1 point: 0x04 || x || y.
            let point = self.key.verifying_key().to_sec1_bytes();
            assert_eq!(point.len(), 65);
            let mut cose = Vec::new();
            head(&mut cose, 5, 5);
            int(&mut cose, 1);
            int(&mut cose, 2); // kty: EC2
            int(&mut cose, 3);
            int(&mut cose, -7); // alg: ES256
            int(&mut cose, -1);
            int(&mut cose, 1); // crv: P-256
            int(&mut cose, -2);
            bytes(&mut cose, &point[1..33]);
            int(&mut cose, -3);
            bytes(&mut cose, &point[33..65]);
            out.extend_from_slice(&cose);
        }
        out
    }

    /// Answers `navigator.credentials.create` options.
    pub fn register(&mut self, options: &Value, h: &Hostile) -> Value {
        let pk = &options["publicKey"];
        let challenge = pk["challenge"].as_str().expect("challenge");
        assert_eq!(pk["authenticatorSelection"]["userVerification"], "required", "UV must be required: {options}");
        let client_data = self.client_data("webauthn.create", challenge, h);
        let mut auth_data = self.auth_data(h, h.counter.unwrap_or(self.counter), true);
        if h.trailing {
            auth_data.extend_from_slice(b"trailing");
        }
        let mut att = Vec::new();
        if h.garbage_cbor {
            att.extend_from_slice(&[0xa3, 0x63, 0x66, 0x6d, 0xff, 0x00]);
        } else {
            head(&mut att, 5, 3);
            text(&mut att, "fmt");
            text(&mut att, "none");
            text(&mut att, "attStmt");
            head(&mut att, 5, 0);
            text(&mut att, "authData");
            bytes(&mut att, &auth_data);
        }
        json!({
            "id": b64(&self.credential_id),
            "rawId": b64(&self.credential_id),
            "type": "public-key",
            "extensions": {},
            "response": { "attestationObject": b64(&att), "clientDataJSON": b64(&client_data) },
        })
    }

    /// Answers `navigator.credentials.get` options (the counter goes up unless told otherwise).
    pub fn assert(&mut self, options: &Value, h: &Hostile) -> Value {
        let pk = &options["publicKey"];
        let challenge = pk["challenge"].as_str().expect("challenge");
        assert_eq!(pk["userVerification"], "required", "UV must be required: {options}");
        let counter = match h.counter {
            Some(c) => c,
            None => {
                self.counter += 1;
                self.counter
            }
        };
        let client_data = self.client_data("webauthn.get", challenge, h);
        let mut auth_data = self.auth_data(h, counter, false);
        if h.trailing {
            auth_data.extend_from_slice(b"trailing");
        }
        let mut signed = auth_data.clone();
        signed.extend_from_slice(&Sha256::digest(&client_data));
        let sig: DerSignature = self.key.sign(&signed);
        json!({
            "id": b64(&self.credential_id),
            "rawId": b64(&self.credential_id),
            "type": "public-key",
            "extensions": {},
            "response": {
                "authenticatorData": b64(&auth_data),
                "clientDataJSON": b64(&client_data),
                "signature": b64(sig.as_bytes()),
                "userHandle": null,
            },
        })
    }

    /// The challenge in a set of options (to replay it elsewhere).
    pub fn challenge_of(options: &Value) -> String {
        let c = options["publicKey"]["challenge"].as_str().expect("challenge").to_owned();
        assert_eq!(unb64(&c).len(), 32);
        c
    }
}

/// What the flows need from a phone: answer creation and request options.
pub trait Phone {
    /// `navigator.credentials.create`.
    fn create(&mut self, options: &Value) -> Value;
    /// `navigator.credentials.get`.
    fn get(&mut self, options: &Value) -> Value;
}

impl Phone for Authenticator {
    fn create(&mut self, options: &Value) -> Value {
        self.register(options, &Hostile::default())
    }

    fn get(&mut self, options: &Value) -> Value {
        self.assert(options, &Hostile::default())
    }
}

/// webauthn-authenticator-rs's SoftPasskey: a phone written by others (the
/// webauthn-rs project), for the well-behaved flows.
pub struct StockPasskey {
    inner: webauthn_authenticator_rs::softpasskey::SoftPasskey,
    origin: webauthn_rs::prelude::Url,
    /// The credential ID (base64url) of the last registration.
    pub credential_id: Option<String>,
}

impl StockPasskey {
    pub fn new(origin: &str) -> StockPasskey {
        // `true`: the soft token claims user verification (it has no biometrics of its own).
        StockPasskey {
            inner: webauthn_authenticator_rs::softpasskey::SoftPasskey::new(true),
            origin: webauthn_rs::prelude::Url::parse(origin).expect("origin"),
            credential_id: None,
        }
    }
}

impl Phone for StockPasskey {
    fn create(&mut self, options: &Value) -> Value {
        use webauthn_authenticator_rs::WebauthnAuthenticator;
        let options = serde_json::from_value(options.clone()).expect("creation options");
        let answer = self.inner.do_registration(self.origin.clone(), options).expect("SoftPasskey registers");
        let answer = serde_json::to_value(answer).expect("json");
        self.credential_id = answer["id"].as_str().map(str::to_owned);
        answer
    }

    fn get(&mut self, options: &Value) -> Value {
        use webauthn_authenticator_rs::WebauthnAuthenticator;
        let options = serde_json::from_value(options.clone()).expect("request options");
        let answer = self.inner.do_authentication(self.origin.clone(), options).expect("SoftPasskey signs in");
        serde_json::to_value(answer).expect("json")
    }
}
