//! The OpenID Connect endpoints: discovery, JWKS, authorize, token, revoke.
//! The provider's logic is [`crate::auth::oidc`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use base64ct::{Base64, Encoding};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::auth::clients::Client;
use crate::auth::oidc::{self, AuthorizeError, Grant};
use crate::auth::Method;
use crate::error::{Credential, Error, Result};

use super::body::read_form_as;
use super::error::{ApiError, ErrorBody};
use super::pages;
use super::state::App;

/// `GET /.well-known/openid-configuration`
pub async fn discovery(State(app): State<Arc<App>>) -> Response {
    let base = app.oidc.issuer();
    Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/oidc/authorize"),
        "token_endpoint": format!("{base}/oidc/token"),
        "revocation_endpoint": format!("{base}/oidc/revoke"),
        "jwks_uri": format!("{base}/oidc/jwks"),
        "userinfo_endpoint": format!("{base}/oidc/userinfo"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [app.oidc.id_token_alg().as_str()],
        "scopes_supported": ["openid", "profile", "sign"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "acr_values_supported": Method::ALL.map(Method::as_str),
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "name"],
        "prompt_values_supported": ["login"],
        "ui_locales_supported": ["ja"],
    }))
    .into_response()
}

/// The claims of `/oidc/userinfo`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserInfo {
    /// The user's ID (the ID token's `sub`).
    pub sub: String,
    /// With the `profile` scope: the user's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `GET|POST /oidc/userinfo`: the session's user (OpenID Connect Core §5.3).
///
/// The user's `sub` (the ID token's) and what the access token's scopes
/// allow (`profile`: `name`). `/api/v1/me` stays inkan's own, richer answer.
#[utoipa::path(
    method(get, post),
    path = "/oidc/userinfo",
    tag = "oidc",
    operation_id = "userinfo",
    security(("session" = [])),
    responses(
        (status = 200, description = "The user's claims", body = UserInfo),
        (status = 401, description = "No session, or it has ended or was revoked", body = ErrorBody),
    )
)]
pub async fn userinfo(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response> {
    let principal = app.principal(&headers).await?;
    let session = principal.session().ok_or_else(|| Error::Internal("a bearer without a session".into()))?;
    let name = if session.scope.split(' ').any(|s| s == "profile") {
        Some(crate::users::get(app.store.as_ref(), &principal.user_id).await?.name)
    } else {
        None
    };
    Ok(Json(UserInfo { sub: principal.user_id.clone(), name }).into_response())
}

/// `GET /oidc/jwks`
pub async fn jwks(State(app): State<Arc<App>>) -> Response {
    Json(json!({ "keys": [app.oidc.jwk()] })).into_response()
}

/// `GET /oidc/authorize`
pub async fn authorize(State(app): State<Arc<App>>, Query(params): Query<HashMap<String, String>>) -> Response {
    let authorized = match app.oidc.authorize(&params).await {
        Ok(a) => a,
        Err(AuthorizeError::Page(msg)) => {
            return pages::error(
                StatusCode::BAD_REQUEST,
                "ログイン要求が正しくありません",
                &msg,
                "署名システムの管理者に連絡してください。",
            );
        }
        Err(AuthorizeError::Failed(e)) => return e.into_response(),
        Err(e) => return Redirect::to(&e.location().unwrap_or_default()).into_response(),
    };
    let card = &app.config.server.card_url;
    let q = oidc::urlencode(&authorized.id);
    match authorized.acr {
        Some(method) => Redirect::to(&method.login_url(card, &q)).into_response(),
        None => chooser(card, &q),
    }
}

/// The methods to choose from, each where its login starts.
fn chooser(card: &str, q: &str) -> Response {
    let methods: Vec<minijinja::Value> = Method::ALL
        .iter()
        .map(|m| minijinja::context! { url => m.login_url(card, q), name => m.about().name_ja })
        .collect();
    pages::templates().page(StatusCode::OK, "chooser.html", "ログイン方法の選択", minijinja::context! { methods })
}

/// A client's credentials in a form body (`client_secret_post`), when it
/// does not use HTTP Basic.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ClientForm {
    /// The client's ID (with HTTP Basic: absent, or the same).
    pub client_id: Option<String>,
    /// The client's secret (not with HTTP Basic).
    pub client_secret: Option<String>,
}

/// Client authentication (HTTP Basic or form fields), checked by the domain.
async fn client_auth(app: &App, headers: &HeaderMap, form: &ClientForm) -> Result<Client> {
    let invalid = || Error::Unauthenticated(Credential::Client, "client authentication failed".into());
    let (id, secret) =
        match headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Basic ")) {
            Some(b64) => {
                let raw = Base64::decode_vec(b64.trim()).map_err(|_| invalid())?;
                let text = String::from_utf8(raw).map_err(|_| invalid())?;
                let (id, secret) = text.split_once(':').ok_or_else(invalid)?;
                let (id, secret) = (pct_decode(id), pct_decode(secret));
                // One method a request (RFC 6749 2.3), and no other client named in the body.
                if form.client_secret.is_some() {
                    return Err(Error::Invalid(
                        "the client authenticated twice (HTTP Basic and client_secret): use one method".into(),
                    ));
                }
                if form.client_id.as_ref().is_some_and(|body_id| *body_id != id) {
                    return Err(Error::Unauthenticated(
                        Credential::Client,
                        "client_id in the body is not the client of the Authorization header".into(),
                    ));
                }
                (id, secret)
            }
            None => (form.client_id.clone().ok_or_else(invalid)?, form.client_secret.clone().ok_or_else(invalid)?),
        };
    crate::auth::clients::authenticate(app.store.as_ref(), &id, &secret).await
}

/// RFC 6749 2.3.1: Basic credentials are form-urlencoded.
fn pct_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned()
}

/// The form of `POST /oidc/token` (RFC 6749 §4.1.3, PKCE RFC 7636).
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenForm {
    /// `authorization_code`.
    pub grant_type: Option<String>,
    /// The code the redirect carried.
    pub code: Option<String>,
    /// The redirect URI of the authorization request.
    pub redirect_uri: Option<String>,
    /// The PKCE verifier, when the request had a challenge.
    pub code_verifier: Option<String>,
    /// The client, when it does not use HTTP Basic.
    #[serde(flatten)]
    pub client: ClientForm,
}

/// `POST /oidc/token`: an authorization code exchanged for the session's tokens.
#[utoipa::path(
    post,
    path = "/oidc/token",
    tag = "oidc",
    operation_id = "token",
    security(("client" = []), ()),
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The access token (the auth session) and the ID token", body = crate::auth::oidc::Tokens),
        (status = 400, description = "The code is unknown, used or expired, or a parameter is not right", body = ErrorBody),
        (status = 401, description = "Client authentication failed", body = ErrorBody),
    )
)]
pub async fn token(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let form: TokenForm = read_form_as(body).await?;
    let client = client_auth(&app, &headers, &form.client).await?;
    if form.grant_type.as_deref() != Some("authorization_code") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be authorization_code",
        ));
    }
    let code = form.code.as_deref().ok_or_else(|| ApiError::bad_request("missing code"))?;
    let grant =
        Grant { code, redirect_uri: form.redirect_uri.as_deref(), code_verifier: form.code_verifier.as_deref() };
    let tokens = app.oidc.exchange(&app.sessions, &client, grant).await?;
    let mut resp = Json(tokens).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

/// The form of `POST /oidc/revoke` (RFC 7009).
#[derive(Debug, Deserialize, ToSchema)]
pub struct RevokeForm {
    /// The access token to revoke.
    pub token: Option<String>,
    /// `access_token` (the only kind inkan gives).
    pub token_type_hint: Option<String>,
    /// The client, when it does not use HTTP Basic.
    #[serde(flatten)]
    pub client: ClientForm,
}

/// `POST /oidc/revoke`: logout (RFC 7009).
///
/// Answers 200 whether or not the token existed.
#[utoipa::path(
    post,
    path = "/oidc/revoke",
    tag = "oidc",
    operation_id = "revoke",
    security(("client" = []), ()),
    request_body(content = RevokeForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The session has ended (or there was none)"),
        (status = 400, description = "No token", body = ErrorBody),
        (status = 401, description = "Client authentication failed", body = ErrorBody),
    )
)]
pub async fn revoke(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Result<Response> {
    let form: RevokeForm = read_form_as(body).await?;
    let client = client_auth(&app, &headers, &form.client).await?;
    let token = form.token.as_deref().ok_or_else(|| Error::Invalid("missing token".into()))?;
    app.oidc.revoke(&app.sessions, &client, token).await?;
    Ok(StatusCode::OK.into_response())
}
