//! The OpenID Connect provider (authorization code flow with PKCE), apart
//! from HTTP: request validation, authorization codes, the token exchange that
//! opens an auth session, ID tokens signed by the platform key in the token,
//! the JWKS.
//!
//! Pending requests and codes live for minutes in an [`OidcStore`] (memory on
//! one node); codes are single use: taken out of the store on first use,
//! whatever follows.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use inkan_keystore::{DigestAlgorithm, KeyAlgorithm, KeyRef, Keystore};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::clock::Clock;
use crate::config::{Config, IdTokenAlg};
use crate::error::{Credential, Error, Forbidden, Missing, Result};
use crate::seam::{StoreError, Transactions};

use super::clients::Client;
use super::clients::ClientsTx;
use super::sessions::{self, Sessions, SessionsTx};
use super::token_hash;
use super::Method;
use crate::encoding::b64url;

/// How long an authorization request may take to finish (the user logs in meanwhile).
pub const REQUEST_LIFETIME_MS: i64 = 10 * 60 * 1000;
/// The start of a sealed card-login request's handle.
const SEALED: &str = "c.";

/// Whether an authorize request (its query) keeps nothing when it is
/// answered: a card login's (exactly one `acr_values`, whose first method
/// the provider knows is hpki or jpki; see [`Provider::authorize`]), which
/// travels sealed. With two `acr_values`, which one is read is not this
/// function's to guess: it keeps something.
pub fn authorize_keeps_nothing(query: &str) -> bool {
    let mut asked = form_urlencoded::parse(query.as_bytes()).filter(|(k, _)| k == "acr_values").map(|(_, v)| v);
    match (asked.next(), asked.next()) {
        (Some(v), None) => v.split(' ').find_map(Method::parse).is_some_and(Method::is_card),
        _ => false,
    }
}

/// Where a sealed request's use is kept (as a spent code's marker is).
fn sealed_marker(id: &str) -> Vec<u8> {
    token_hash(&format!("inkan sealed login request used\0{id}")).to_vec()
}

/// Authorization codes are single-use and live 60 s.
pub const CODE_LIFETIME_MS: i64 = 60 * 1000;

/// Pending authorization requests a node (or, on PostgreSQL, the cluster)
/// keeps at most, the oldest going first: what unauthenticated
/// `/oidc/authorize` calls can make it hold (about 1.5 KB each).
pub const MAX_PENDING_REQUESTS: usize = 20_000;

/// Longest `state` and `nonce` kept, in bytes (they are echoed back, not read).
pub const MAX_STATE_BYTES: usize = 512;

/// [`MAX_PENDING_REQUESTS`], or the test hook `INKAN_DANGER_MAX_PENDING_REQUESTS`.
fn max_pending_requests() -> usize {
    std::env::var("INKAN_DANGER_MAX_PENDING_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MAX_PENDING_REQUESTS)
        .max(1)
}

/// A validated authorization request, waiting for the user to log in.
#[derive(Clone, Debug, Serialize, Deserialize)]
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

impl AuthRequest {
    /// The method this request asked for (`acr_values`) when it is not
    /// `method`: a login by `method` must neither start nor finish it. The
    /// one place that decides it; the pages ask it early to say so.
    pub fn asked_other_than(&self, method: Method) -> Option<Method> {
        self.acr.filter(|asked| *asked != method)
    }
}

/// Why `/oidc/authorize` refuses.
#[derive(Debug)]
pub enum AuthorizeError {
    /// The store failed: an error page (503 or 500).
    Failed(Error),
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
            AuthorizeError::Page(_) | AuthorizeError::Failed(_) => None,
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

/// The key under which an exchanged code's marker is kept (see
/// [`Provider::exchange`]): not the code's own hash, so that a node that does
/// not know markers never takes one for a code.
fn spent_marker(code: &str) -> Vec<u8> {
    token_hash(&format!("inkan-spent-code\0{code}"))
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
    if state.as_ref().is_some_and(|s| s.len() > MAX_STATE_BYTES) {
        // Not echoed back: a page, not a redirect.
        return Err(AuthorizeError::Page(format!("state が長すぎます (state is longer than {MAX_STATE_BYTES} bytes)")));
    }
    let fail = |error: &'static str, description: &str| AuthorizeError::Redirect {
        redirect_uri: redirect_uri.to_owned(),
        error,
        description: description.to_owned(),
        state: state.clone(),
    };
    if get("response_type") != Some("code") {
        return Err(fail("unsupported_response_type", "response_type must be code"));
    }
    // Never ignored silently (OpenID Connect Core 6.1, 6.2).
    if get("request").is_some() {
        return Err(fail("request_not_supported", "request objects are not supported: send the parameters"));
    }
    if get("request_uri").is_some() {
        return Err(fail("request_uri_not_supported", "request_uri is not supported: send the parameters"));
    }
    if get("response_mode").is_some_and(|m| m != "query") {
        return Err(fail("invalid_request", "response_mode must be query (the code comes back in the query)"));
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
    if get("nonce").is_some_and(|n| n.len() > MAX_STATE_BYTES) {
        return Err(fail("invalid_request", &format!("nonce is longer than {MAX_STATE_BYTES} bytes")));
    }
    if get("login_hint").is_some_and(|h| crate::users::validate_id(h).is_err()) {
        return Err(fail("invalid_request", "login_hint must be a user ID (1 to 64 letters, digits and -)"));
    }
    Ok(AuthRequest {
        client_id: client.id.clone(),
        redirect_uri: redirect_uri.to_owned(),
        // Each known scope once, in one order: a request keeps no more than that.
        scope: ["openid", "profile", "sign"].into_iter().filter(|s| scopes.contains(s)).collect::<Vec<_>>().join(" "),
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
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    /// Once exchanged: the hash of the session's token it opened (kept until
    /// the code expires, so that a replay ends that session, RFC 6749 §4.1.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent_by: Option<Vec<u8>>,
}

/// The JWK of the platform key (from its SubjectPublicKeyInfo DER): P-256
/// for ES256, RSA for RS256.
pub fn jwk(spki_der: &[u8], kid: &str, alg: IdTokenAlg) -> Option<Value> {
    use der::Decode;
    let spki = spki::SubjectPublicKeyInfoRef::from_der(spki_der).ok()?;
    let key = spki.subject_public_key.as_bytes()?;
    match alg {
        IdTokenAlg::ES256 => {
            if key.len() != 65 || key[0] != 4 {
                return None;
            }
            Some(json!({
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                "x": b64url(&key[1..33]), "y": b64url(&key[33..65]),
            }))
        }
        IdTokenAlg::RS256 => {
            let rsa = RsaPublicKey::from_der(key).ok()?;
            Some(json!({
                "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                "n": b64url(rsa.n.as_bytes()), "e": b64url(rsa.e.as_bytes()),
            }))
        }
    }
}

/// PKCS#1 `RSAPublicKey`.
#[derive(der::Sequence)]
struct RsaPublicKey<'a> {
    n: der::asn1::UintRef<'a>,
    e: der::asn1::UintRef<'a>,
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
pub fn jws_signing_input(alg: IdTokenAlg, kid: &str, claims: &Value) -> String {
    let header = json!({ "alg": alg.as_str(), "typ": "JWT", "kid": kid });
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
        "amr": [code.method.about().amr],
    });
    if let Some(n) = &code.request.nonce {
        claims["nonce"] = json!(n);
    }
    claims
}

/// What pending logins need from storage: short-lived, each call atomic.
#[async_trait]
pub trait OidcStore: Send + Sync {
    /// Keeps an authorization request under its handle until it expires; of
    /// more than `max` unexpired requests, the oldest go.
    async fn put_request(&self, id: &str, request: &AuthRequest, now: i64, max: usize) -> Result<(), StoreError>;
    /// A pending request, if it exists and has not expired.
    async fn request(&self, id: &str, now: i64) -> Result<Option<AuthRequest>, StoreError>;
    /// Takes a request out (single use), expired or not.
    async fn take_request(&self, id: &str) -> Result<Option<AuthRequest>, StoreError>;
    /// Keeps an issued code under the hash of its value until it expires.
    async fn put_code(&self, code_hash: &[u8], code: &Code, now: i64) -> Result<(), StoreError>;
    /// Takes a code out (single use), expired or not.
    async fn take_code(&self, code_hash: &[u8]) -> Result<Option<Code>, StoreError>;
    /// Keeps an exchanged code (its `spent_by` set) under its marker key
    /// until it expires: what a replay of it finds.
    async fn keep_spent_code(&self, marker: &[u8], code: &Code, now: i64) -> Result<(), StoreError>;
    /// Whether a code (or marker) is kept under this key.
    async fn has_code(&self, code_hash: &[u8]) -> Result<bool, StoreError>;
}

/// A validated authorization request, kept: where the user goes to log in.
#[derive(Clone, Debug)]
pub struct Authorized {
    /// The request's handle (in the login URLs).
    pub id: String,
    /// The login method the client asked for, if any.
    pub acr: Option<Method>,
}

/// An authorization code grant (RFC 6749 4.1.3, with RFC 7636's verifier).
#[derive(Clone, Copy, Debug)]
pub struct Grant<'a> {
    /// The code.
    pub code: &'a str,
    /// The redirect URI of the authorization request.
    pub redirect_uri: Option<&'a str>,
    /// The PKCE verifier.
    pub code_verifier: Option<&'a str>,
}

/// The tokens of a successful exchange.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Tokens {
    /// The bearer token: the auth session.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds.
    pub expires_in: i64,
    /// The ID token (ES256 or RS256, `[server] id_token_alg`).
    pub id_token: String,
    /// The granted scope.
    pub scope: String,
}

/// The platform key that signs ID tokens (in the token): one per algorithm.
const PLATFORM_KEY_LABEL: &str = "inkan:platform";

fn platform_key_id(alg: IdTokenAlg) -> &'static [u8] {
    match alg {
        IdTokenAlg::ES256 => b"inkan-platform-es256-1",
        IdTokenAlg::RS256 => b"inkan-platform-rs256-1",
    }
}

fn platform_key_algorithm(alg: IdTokenAlg) -> KeyAlgorithm {
    match alg {
        IdTokenAlg::ES256 => KeyAlgorithm::EcP256,
        IdTokenAlg::RS256 => KeyAlgorithm::Rsa2048,
    }
}

/// Finds or creates the platform key for `alg`; returns it with its public key (SPKI DER).
pub fn platform_key(keystore: &Keystore, alg: IdTokenAlg) -> Result<(KeyRef, Vec<u8>), inkan_keystore::Error> {
    let key = KeyRef::from_id(platform_key_id(alg).to_vec());
    if keystore.keys_labelled(PLATFORM_KEY_LABEL)?.contains(&key) {
        let spki = keystore.public_key(&key, platform_key_algorithm(alg))?;
        return Ok((key, spki));
    }
    let generated = keystore.generate_key_pair(platform_key_algorithm(alg), &key, PLATFORM_KEY_LABEL)?;
    Ok((key, generated.public_key_der))
}

/// What the provider needs in one transaction.
pub trait ProviderTx: ClientsTx + SessionsTx {}
impl<T: ClientsTx + SessionsTx + ?Sized> ProviderTx for T {}

/// The OpenID Connect provider.
pub struct Provider<T: ?Sized + Send> {
    issuer: String,
    /// Seals card-login requests ([`Provider::authorize`]): every node
    /// derives the same one from the token.
    request_secret: [u8; 32],
    session_lifetime_ms: i64,
    store: Arc<dyn Transactions<T>>,
    pending: Arc<dyn OidcStore>,
    keystore: Arc<Keystore>,
    clock: Arc<dyn Clock>,
    platform_key: KeyRef,
    alg: IdTokenAlg,
    kid: String,
    jwk: Value,
}

impl<T: ProviderTx + ?Sized> Provider<T> {
    /// The provider of `[server] public_url`, with the platform key (created
    /// on first use); pending requests and codes are kept in `pending`.
    pub fn new(
        config: &Config,
        store: Arc<dyn Transactions<T>>,
        pending: Arc<dyn OidcStore>,
        keystore: Arc<Keystore>,
        clock: Arc<dyn Clock>,
        request_secret: [u8; 32],
    ) -> Result<Self> {
        let alg = config.server.id_token_alg;
        let (platform_key, spki) = platform_key(&keystore, alg).map_err(|e| {
            Error::Unavailable(format!(
                "platform key for {} ID tokens: {e} (the token must do {}; see [server] id_token_alg)",
                alg.as_str(),
                platform_key_algorithm(alg)
            ))
        })?;
        let kid = kid(&spki);
        let jwk = jwk(&spki, &kid, alg)
            .ok_or_else(|| Error::Internal(format!("the platform key is not a {} key", alg.as_str())))?;
        Ok(Provider {
            issuer: config.server.public_url.trim_end_matches('/').to_owned(),
            request_secret,
            session_lifetime_ms: config.server.session_hours as i64 * 3_600_000,
            store,
            pending,
            keystore,
            clock,
            platform_key,
            alg,
            kid,
            jwk,
        })
    }

    /// The issuer (`[server] public_url`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The JWK of the ID-token key.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// The ID tokens' algorithm.
    pub fn id_token_alg(&self) -> IdTokenAlg {
        self.alg
    }

    /// Validates `/oidc/authorize` and keeps the request for the login. A
    /// request for a card login (`acr_values` hpki or jpki) is not kept: its
    /// handle is the request itself, sealed (an HMAC under the request secret), so
    /// that a flood of authorize requests, which fills what is kept, cannot
    /// keep a card holder from logging in (nothing is written until the
    /// card has been shown, and then only that the request was used).
    pub async fn authorize(&self, params: &HashMap<String, String>) -> Result<Authorized, AuthorizeError> {
        let now = self.clock.now_ms();
        let client = match params.get("client_id") {
            Some(id) => super::clients::get(self.store.as_ref(), id).await.map_err(AuthorizeError::Failed)?,
            None => None,
        };
        let request = validate_authorize(params, client.as_ref(), now)?;
        if request.acr.is_some_and(Method::is_card) {
            return Ok(Authorized { id: self.seal_request(&request), acr: request.acr });
        }
        let id = super::random_token();
        self.pending
            .put_request(&id, &request, now, max_pending_requests())
            .await
            .map_err(|e| AuthorizeError::Failed(e.into()))?;
        Ok(Authorized { id, acr: request.acr })
    }

    /// The name of a signing system (its client ID when it has gone).
    pub async fn client_name(&self, client_id: &str) -> Result<String> {
        let client = self.store.read().await?.client(client_id).await?;
        Ok(client.map_or_else(|| client_id.to_owned(), |c| c.name))
    }

    /// A pending request by its handle, if it exists (or its seal checks and
    /// it was not used) and has not expired.
    pub async fn pending(&self, id: &str) -> Result<AuthRequest> {
        let now = self.clock.now_ms();
        let unknown =
            || Error::NotFound(Missing::Request, "the login request is unknown or has expired: log in again".into());
        if id.starts_with(SEALED) {
            let request = self.open_request(id).filter(|r| r.expires_at > now).ok_or_else(unknown)?;
            if self.pending.has_code(&sealed_marker(id)).await? {
                return Err(unknown());
            }
            return Ok(request);
        }
        self.pending.request(id, now).await?.ok_or_else(unknown)
    }

    /// A card-login request as its own handle: `c.` + the request (JSON,
    /// base64url) + `.` + the HMAC-SHA-256 of it under the request secret.
    fn seal_request(&self, request: &AuthRequest) -> String {
        let body = serde_json::to_vec(request).unwrap_or_default();
        format!("{SEALED}{}.{}", b64url(&body), b64url(&self.request_mac(&body)))
    }

    fn request_mac(&self, body: &[u8]) -> [u8; 32] {
        use hmac::{Hmac, KeyInit, Mac};
        // A 32-byte key always fits HMAC-SHA-256.
        let mut mac =
            <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.request_secret).unwrap_or_else(|_| unreachable!());
        mac.update(b"inkan sealed login request v1\0");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// The request a sealed handle holds, if its seal is this provider's.
    fn open_request(&self, id: &str) -> Option<AuthRequest> {
        use base64ct::{Base64UrlUnpadded, Encoding};
        let (body, mac) = id.strip_prefix(SEALED)?.split_once('.')?;
        let body = Base64UrlUnpadded::decode_vec(body).ok()?;
        let mac = Base64UrlUnpadded::decode_vec(mac).ok()?;
        if !super::constant_time_eq(&self.request_mac(&body), &mac) {
            return None;
        }
        serde_json::from_slice(&body).ok()
    }

    /// A user logged in for a pending request: the request is used up, and
    /// the client's redirect URI with a single-use code (and its state) is
    /// returned. A user other than the request's `login_hint`, and a login
    /// method other than the one its `acr_values` asked for, are refused (the
    /// request stays).
    pub async fn finish_login(&self, request_id: &str, user_id: &str, method: Method) -> Result<String> {
        let now = self.clock.now_ms();
        let pending = self.pending(request_id).await?;
        if pending.login_hint.as_ref().is_some_and(|hint| hint != user_id) {
            return Err(Error::Forbidden(
                Forbidden::WrongUser,
                "the user who logged in is not the login_hint of the request".into(),
            ));
        }
        if let Some(asked) = pending.asked_other_than(method) {
            return Err(Error::Conflict(format!(
                "the signing system asked for a {} login (acr_values); a {} login does not finish it",
                asked.as_str(),
                method.as_str()
            )));
        }
        let gone =
            || Error::NotFound(Missing::Request, "the login request is used or has expired: log in again".into());
        let request = if request_id.starts_with(SEALED) {
            // Used once: what a sealed request leaves behind, until it expires.
            let marker = Code {
                request: pending.clone(),
                user_id: user_id.to_owned(),
                method,
                auth_time: now,
                expires_at: pending.expires_at,
                spent_by: None,
            };
            self.pending.keep_spent_code(&sealed_marker(request_id), &marker, now).await?;
            pending
        } else {
            self.pending.take_request(request_id).await?.ok_or_else(gone)?
        };
        if request.expires_at <= now {
            return Err(gone());
        }
        let code = super::random_token();
        let issued = Code {
            request: request.clone(),
            user_id: user_id.to_owned(),
            method,
            auth_time: now,
            expires_at: now + CODE_LIFETIME_MS,
            spent_by: None,
        };
        self.pending.put_code(&token_hash(&code), &issued, now).await?;
        let mut q = vec![("code", code)];
        if let Some(s) = &request.state {
            q.push(("state", s.clone()));
        }
        Ok(with_query(&request.redirect_uri, &q))
    }

    /// Exchanges an authorization code of an authenticated client for an
    /// access token (a new auth session) and an ID token.
    pub async fn exchange(&self, sessions: &Sessions<T>, client: &Client, grant: Grant<'_>) -> Result<Tokens> {
        let refused = |d: &str| Error::Unauthenticated(Credential::Grant, d.to_owned());
        let now = self.clock.now_ms();
        let code_hash = token_hash(grant.code);
        let marker = spent_marker(grant.code);
        // Single use: the code is gone from here on, whatever follows.
        let Some(code) = self.pending.take_code(&code_hash).await?.filter(|c| c.expires_at > now) else {
            // A replay finds the marker an exchange left (under another key,
            // which nodes of before never read as a code): whoever holds the
            // code may hold the tokens it gave.
            if let Some(session) = self.pending.take_code(&marker).await?.and_then(|m| m.spent_by) {
                let actor = format!("client:{}", client.id);
                sessions.end_by_hash(&actor, &session, "authorization code replayed").await?;
                return Err(refused("the code was used already: the session it opened is ended (RFC 6749 4.1.2)"));
            }
            return Err(refused("the code is unknown, used or expired"));
        };
        if code.request.client_id != client.id {
            return Err(refused("the code was issued to another client"));
        }
        if grant.redirect_uri != Some(code.request.redirect_uri.as_str()) {
            return Err(refused("redirect_uri does not match the authorization request"));
        }
        let verifier = grant.code_verifier.ok_or_else(|| refused("missing code_verifier (PKCE)"))?;
        if !pkce_matches(verifier, &code.request.code_challenge) {
            return Err(refused("code_verifier does not match the code_challenge"));
        }
        // The marker first (with the new session's token hash), then the
        // session; if a replay took the marker meanwhile, the session ends.
        let access = super::random_token();
        let spent = Code { spent_by: Some(token_hash(&access)), ..code.clone() };
        self.pending.keep_spent_code(&marker, &spent, now).await?;
        let access = sessions::create(
            self.store.as_ref(),
            access,
            now,
            &code.user_id,
            code.method,
            &client.id,
            &code.request.scope,
            code.auth_time,
            self.session_lifetime_ms,
        )
        .await?;
        if !self.pending.has_code(&marker).await? {
            let actor = format!("client:{}", client.id);
            sessions.end_by_hash(&actor, &token_hash(&access), "authorization code replayed").await?;
            return Err(refused("the code was used twice at once: the session it opened is ended (RFC 6749 4.1.2)"));
        }
        let claims = id_token_claims(&self.issuer, &code, now, 3600);
        let input = jws_signing_input(self.alg, &self.kid, &claims);
        let (ks, key, alg) = (Arc::clone(&self.keystore), self.platform_key.clone(), self.alg);
        let digest = inkan_keystore::Digest::of(DigestAlgorithm::Sha256, input.as_bytes());
        let sig = tokio::task::spawn_blocking(move || match alg {
            IdTokenAlg::ES256 => ks.sign_ecdsa_p1363(&key, digest.as_bytes()),
            IdTokenAlg::RS256 => {
                ks.sign_digest(&key, inkan_keystore::SignatureScheme::RsaPkcs1v15(DigestAlgorithm::Sha256), &digest)
            }
        })
        .await
        .map_err(Error::internal)??;
        Ok(Tokens {
            access_token: access,
            token_type: "Bearer",
            expires_in: self.session_lifetime_ms / 1000,
            id_token: format!("{input}.{}", b64url(&sig)),
            scope: code.request.scope,
        })
    }

    /// RFC 7009 revocation by a client (logout): see [`Sessions::logout`].
    pub async fn revoke(&self, sessions: &Sessions<T>, client: &Client, token: &str) -> Result<()> {
        sessions.logout(&client.id, token).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_card_logins_authorize_request_keeps_nothing() {
        assert!(authorize_keeps_nothing("client_id=a&acr_values=hpki"));
        assert!(authorize_keeps_nothing("acr_values=jpki%20fido"));
        assert!(authorize_keeps_nothing("acr_values=other+hpki"));
        assert!(!authorize_keeps_nothing("acr_values=fido"));
        assert!(!authorize_keeps_nothing("acr_values=fido+hpki"));
        assert!(!authorize_keeps_nothing("client_id=a"));
        assert!(!authorize_keeps_nothing("acr_values=hpki&acr_values=fido"));
    }

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
