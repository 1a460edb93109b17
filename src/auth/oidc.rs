//! OpenID Connect provider logic (authorization code flow with PKCE), apart
//! from HTTP: request validation, authorization codes, ID tokens, the JWKS.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;
use serde_json::{json, Value};

use super::clients::Client;
use super::session::Method;
use super::{b64url, token_hash};

/// How long an authorization request may take to finish (the user logs in meanwhile).
pub const REQUEST_LIFETIME_MS: i64 = 10 * 60 * 1000;
/// Authorization codes are single-use and live 60 s.
pub const CODE_LIFETIME_MS: i64 = 60 * 1000;

/// A validated authorization request, waiting for the user to log in.
#[derive(Clone, Debug, Serialize)]
pub struct AuthRequest {
    /// client_id
    pub client_id: String,
    /// Exact registered redirect URI.
    pub redirect_uri: String,
    /// Granted scope (`openid`, `sign`).
    pub scope: String,
    /// Echoed to the client.
    pub state: Option<String>,
    /// Put into the ID token.
    pub nonce: Option<String>,
    /// PKCE S256 challenge.
    pub code_challenge: String,
    /// Requested method.
    pub acr: Option<Method>,
    /// Expected user ID.
    pub login_hint: Option<String>,
    /// Unix ms.
    pub expires_at: i64,
}

/// Why `/oidc/authorize` refuses.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthorizeError {
    /// The client or redirect URI cannot be trusted: show a page, never redirect.
    Page(String),
    /// Tell the client, by redirecting with `error` (RFC 6749 4.1.2.1).
    Redirect {
        /// Where.
        redirect_uri: String,
        /// OAuth error code.
        error: &'static str,
        /// Description.
        description: String,
        /// Echoed state.
        state: Option<String>,
    },
}

impl AuthorizeError {
    /// The redirect URL of a `Redirect` error.
    pub fn location(&self) -> Option<String> {
        match self {
            AuthorizeError::Page(_) => None,
            AuthorizeError::Redirect { redirect_uri, error, description, state } => {
                let mut q = vec![("error", error.to_string()), ("error_description", description.clone())];
                if let Some(s) = state {
                    q.push(("state", s.clone()));
                }
                Some(with_query(redirect_uri, &q))
            }
        }
    }
}

/// Appends query parameters to a URI.
pub fn with_query(uri: &str, params: &[(&str, String)]) -> String {
    let mut out = uri.to_owned();
    let mut sep = if uri.contains('?') { '&' } else { '?' };
    for (k, v) in params {
        out.push(sep);
        out.push_str(&urlencode(k));
        out.push('=');
        out.push_str(&urlencode(v));
        sep = '&';
    }
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Validates the parameters of `GET /oidc/authorize`.
pub fn validate_authorize(
    params: &HashMap<String, String>,
    client: Option<&Client>,
    now: i64,
) -> Result<AuthRequest, AuthorizeError> {
    let get = |k: &str| params.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let client_id =
        get("client_id").ok_or_else(|| AuthorizeError::Page("client_id がありません (missing client_id)".into()))?;
    let client = client.ok_or_else(|| {
        AuthorizeError::Page(format!("登録されていないクライアントです (unknown client_id {client_id:?})"))
    })?;
    let redirect_uri = get("redirect_uri")
        .ok_or_else(|| AuthorizeError::Page("redirect_uri がありません (missing redirect_uri)".into()))?;
    if !client.redirect_uris.iter().any(|u| u == redirect_uri) {
        return Err(AuthorizeError::Page(format!(
            "redirect_uri が登録されていません (redirect_uri {redirect_uri:?} is not registered for this client)"
        )));
    }
    let state = get("state").map(str::to_owned);
    let fail = |error: &'static str, description: &str| AuthorizeError::Redirect {
        redirect_uri: redirect_uri.to_owned(),
        error,
        description: description.to_owned(),
        state: state.clone(),
    };
    if get("response_type") != Some("code") {
        return Err(fail("unsupported_response_type", "response_type must be code"));
    }
    let scopes: Vec<&str> = get("scope").unwrap_or("").split(' ').filter(|s| !s.is_empty()).collect();
    if !scopes.contains(&"openid") {
        return Err(fail("invalid_scope", "scope must include openid"));
    }
    if let Some(unknown) = scopes.iter().find(|s| !["openid", "sign", "profile"].contains(s)) {
        return Err(fail("invalid_scope", &format!("unknown scope {unknown}")));
    }
    let challenge = get("code_challenge")
        .ok_or_else(|| fail("invalid_request", "PKCE is required: code_challenge with code_challenge_method=S256"))?;
    if get("code_challenge_method") != Some("S256") {
        return Err(fail("invalid_request", "code_challenge_method must be S256"));
    }
    if challenge.len() != 43 || !challenge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(fail(
            "invalid_request",
            "code_challenge must be the base64url SHA-256 of the verifier (43 characters)",
        ));
    }
    let acr = match get("acr_values") {
        None => None,
        Some(v) => Some(
            v.split(' ')
                .find_map(Method::parse)
                .ok_or_else(|| fail("invalid_request", "acr_values must be hpki, jpki or fido"))?,
        ),
    };
    if let Some(p) = get("prompt") {
        if p.split(' ').any(|p| !["login", "consent"].contains(&p)) {
            return Err(fail("invalid_request", "prompt may only be login"));
        }
    }
    Ok(AuthRequest {
        client_id: client.id.clone(),
        redirect_uri: redirect_uri.to_owned(),
        scope: scopes.join(" "),
        state,
        nonce: get("nonce").map(str::to_owned),
        code_challenge: challenge.to_owned(),
        acr,
        login_hint: get("login_hint").map(str::to_owned),
        expires_at: now + REQUEST_LIFETIME_MS,
    })
}

/// Whether `verifier` (RFC 7636: 43-128 unreserved characters) matches the S256 `challenge`.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    well_formed && super::constant_time_eq(b64url(&token_hash(verifier)).as_bytes(), challenge.as_bytes())
}

/// An issued authorization code's contents.
#[derive(Clone, Debug)]
pub struct Code {
    /// The request it answers.
    pub request: AuthRequest,
    /// Who logged in.
    pub user_id: String,
    /// How.
    pub method: Method,
    /// Unix ms of the login.
    pub auth_time: i64,
    /// Unix ms.
    pub expires_at: i64,
}

/// Pending authorization requests and codes (short-lived, in memory).
#[derive(Debug, Default)]
pub struct Pending {
    requests: Mutex<HashMap<String, AuthRequest>>,
    codes: Mutex<HashMap<Vec<u8>, Code>>,
}

impl Pending {
    /// Keeps a request; returns its handle (used in the login URL).
    pub fn put_request(&self, request: AuthRequest, now: i64) -> String {
        let id = super::random_token();
        let mut map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, r| r.expires_at > now);
        map.insert(id.clone(), request);
        id
    }

    /// A pending request, if it exists and has not expired.
    pub fn request(&self, id: &str, now: i64) -> Option<AuthRequest> {
        let map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id).filter(|r| r.expires_at > now).cloned()
    }

    /// Finishes a request: it is removed, and a single-use code is returned.
    pub fn issue_code(
        &self,
        request_id: &str,
        user_id: &str,
        method: Method,
        now: i64,
    ) -> Option<(String, AuthRequest)> {
        let request = self.requests.lock().unwrap_or_else(|p| p.into_inner()).remove(request_id)?;
        if request.expires_at <= now {
            return None;
        }
        let code = super::random_token();
        let mut codes = self.codes.lock().unwrap_or_else(|p| p.into_inner());
        codes.retain(|_, c| c.expires_at > now);
        codes.insert(
            token_hash(&code),
            Code {
                request: request.clone(),
                user_id: user_id.to_owned(),
                method,
                auth_time: now,
                expires_at: now + CODE_LIFETIME_MS,
            },
        );
        Some((code, request))
    }

    /// Takes a code (single use: gone after this call, whatever the outcome).
    pub fn take_code(&self, code: &str, now: i64) -> Option<Code> {
        let c = self.codes.lock().unwrap_or_else(|p| p.into_inner()).remove(&token_hash(code))?;
        (c.expires_at > now).then_some(c)
    }
}

/// The JWK of the platform's P-256 key (from its SubjectPublicKeyInfo DER).
pub fn jwk(spki_der: &[u8], kid: &str) -> Option<Value> {
    use der::Decode;
    let spki = spki::SubjectPublicKeyInfoRef::from_der(spki_der).ok()?;
    let point = spki.subject_public_key.as_bytes()?;
    if point.len() != 65 || point[0] != 4 {
        return None;
    }
    Some(json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
        "x": b64url(&point[1..33]), "y": b64url(&point[33..65]),
    }))
}

/// The key ID: base64url of the first 12 bytes of SHA-256 over the SPKI.
pub fn kid(spki_der: &[u8]) -> String {
    b64url(&token_hash_bytes(spki_der)[..12])
}

fn token_hash_bytes(data: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(data).to_vec()
}

/// The signing input of a JWS (compact): `base64url(header) . base64url(payload)`.
pub fn jws_signing_input(kid: &str, claims: &Value) -> String {
    let header = json!({ "alg": "ES256", "typ": "JWT", "kid": kid });
    format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()))
}

/// The ID token claims.
pub fn id_token_claims(issuer: &str, code: &Code, now: i64, lifetime_s: i64) -> Value {
    let mut claims = json!({
        "iss": issuer,
        "sub": code.user_id,
        "aud": code.request.client_id,
        "iat": now / 1000,
        "exp": now / 1000 + lifetime_s,
        "auth_time": code.auth_time / 1000,
        "acr": code.method.as_str(),
        "amr": [match code.method { Method::Hpki | Method::Jpki => "sc", Method::Fido => "hwk" }],
    });
    if let Some(n) = &code.request.nonce {
        claims["nonce"] = json!(n);
    }
    claims
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_rfc7636_example() {
        // RFC 7636 appendix B.
        assert!(pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXX",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!pkce_matches("short", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
    }

    #[test]
    fn query_encoding() {
        assert_eq!(with_query("https://a/cb?x=1", &[("state", "a b&c".into())]), "https://a/cb?x=1&state=a%20b%26c");
    }
}
