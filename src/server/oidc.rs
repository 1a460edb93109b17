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
use serde_json::json;

use crate::auth::clients::Client;
use crate::auth::oidc::{self, AuthorizeError, Grant};
use crate::auth::Method;
use crate::error::{Credential, Error, Result};

use super::body::read_form;
use super::error::ApiError;
use super::pages::{self, esc};
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
        "acr_values_supported": ["hpki", "jpki", "fido"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "name"],
        "prompt_values_supported": ["login"],
        "ui_locales_supported": ["ja"],
    }))
    .into_response()
}

/// `GET|POST /oidc/userinfo` (OpenID Connect Core §5.3): the user's `sub`
/// (the ID token's) and what the access token's scopes allow (`profile`:
/// `name`). `/api/v1/me` stays inkan's own, richer answer.
pub async fn userinfo(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response> {
    let principal = app.principal(&headers).await?;
    let session = principal.session().ok_or_else(|| Error::Internal("a bearer without a session".into()))?;
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), principal.user_id.clone().into());
    if session.scope.split(' ').any(|s| s == "profile") {
        let user = crate::users::get(app.store.as_ref(), &principal.user_id).await?;
        claims.insert("name".into(), user.name.into());
    }
    Ok(Json(serde_json::Value::Object(claims)).into_response())
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
    let card = app.config.server.card_url.trim_end_matches('/');
    let q = oidc::urlencode(&authorized.id);
    match authorized.acr {
        Some(Method::Hpki) => Redirect::to(&format!("{card}/login/hpki?req={q}")).into_response(),
        Some(Method::Jpki) => Redirect::to(&format!("{card}/login/jpki?req={q}")).into_response(),
        Some(Method::Fido) => Redirect::to(&format!("/login/fido?req={q}")).into_response(),
        None => chooser(card, &q),
    }
}

fn chooser(card: &str, q: &str) -> Response {
    pages::page(
        StatusCode::OK,
        "ログイン方法の選択",
        &format!(
            "<p>ログインに使う認証方法を選んでください。</p>\
<a class=\"button\" href=\"{card}/login/hpki?req={q}\">HPKIカードでログイン</a>\
<a class=\"button\" href=\"{card}/login/jpki?req={q}\">マイナンバーカードでログイン</a>\
<a class=\"button\" href=\"/login/fido?req={q}\">スマートフォンでログイン</a>\
<p class=\"note\">カードでログインする場合は、カードをICカードリーダーに置いてから選んでください。</p>",
            card = esc(card),
        ),
    )
}

/// Client authentication (HTTP Basic or form fields), checked by the domain.
async fn client_auth(app: &App, headers: &HeaderMap, form: &HashMap<String, String>) -> Result<Client> {
    let invalid = || Error::Unauthenticated(Credential::Client, "client authentication failed".into());
    let (id, secret) =
        match headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Basic ")) {
            Some(b64) => {
                let raw = Base64::decode_vec(b64.trim()).map_err(|_| invalid())?;
                let text = String::from_utf8(raw).map_err(|_| invalid())?;
                let (id, secret) = text.split_once(':').ok_or_else(invalid)?;
                let (id, secret) = (pct_decode(id), pct_decode(secret));
                // One method a request (RFC 6749 2.3), and no other client named in the body.
                if form.contains_key("client_secret") {
                    return Err(Error::Invalid(
                        "the client authenticated twice (HTTP Basic and client_secret): use one method".into(),
                    ));
                }
                if form.get("client_id").is_some_and(|body_id| *body_id != id) {
                    return Err(Error::Unauthenticated(
                        Credential::Client,
                        "client_id in the body is not the client of the Authorization header".into(),
                    ));
                }
                (id, secret)
            }
            None => (
                form.get("client_id").cloned().ok_or_else(invalid)?,
                form.get("client_secret").cloned().ok_or_else(invalid)?,
            ),
        };
    crate::auth::clients::authenticate(app.store.as_ref(), &id, &secret).await
}

/// RFC 6749 2.3.1: Basic credentials are form-urlencoded.
fn pct_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned()
}

/// `POST /oidc/token`
pub async fn token(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let form = read_form(body).await?;
    let client = client_auth(&app, &headers, &form).await?;
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be authorization_code",
        ));
    }
    let code = form.get("code").ok_or_else(|| ApiError::bad_request("missing code"))?;
    let grant = Grant {
        code,
        redirect_uri: form.get("redirect_uri").map(String::as_str),
        code_verifier: form.get("code_verifier").map(String::as_str),
    };
    let tokens = app.oidc.exchange(&app.sessions, &client, grant).await?;
    let mut resp = Json(tokens).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

/// `POST /oidc/revoke` (RFC 7009): logout. Answers 200 whether or not the token existed.
pub async fn revoke(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Result<Response> {
    let form = read_form(body).await?;
    let client = client_auth(&app, &headers, &form).await?;
    let token = form.get("token").ok_or_else(|| Error::Invalid("missing token".into()))?;
    app.oidc.revoke(&app.sessions, &client, token).await?;
    Ok(StatusCode::OK.into_response())
}
