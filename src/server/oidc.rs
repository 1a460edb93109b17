//! The OpenID Connect endpoints and the card login routes.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Json};
use base64ct::{Base64, Encoding};
use serde_json::json;

use crate::auth::certificate::CardCertError;
use crate::auth::oidc::{self, AuthorizeError};
use crate::auth::session::{self, Method};

use super::error::ApiError;
use super::pages::{self, esc};
use super::state::App;
use super::PeerCertificates;

/// `GET /.well-known/openid-configuration`
pub async fn discovery(State(app): State<Arc<App>>) -> Response {
    let base = app.config.server.public_url.trim_end_matches('/');
    Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/oidc/authorize"),
        "token_endpoint": format!("{base}/oidc/token"),
        "revocation_endpoint": format!("{base}/oidc/revoke"),
        "jwks_uri": format!("{base}/oidc/jwks"),
        "userinfo_endpoint": format!("{base}/api/v1/me"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "scopes_supported": ["openid", "sign"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "acr_values_supported": ["hpki", "jpki", "fido"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr"],
        "prompt_values_supported": ["login"],
        "ui_locales_supported": ["ja"],
    }))
    .into_response()
}

/// `GET /oidc/jwks`
pub async fn jwks(State(app): State<Arc<App>>) -> Response {
    Json(json!({ "keys": [app.jwk] })).into_response()
}

/// `GET /oidc/authorize`
pub async fn authorize(State(app): State<Arc<App>>, Query(params): Query<HashMap<String, String>>) -> Response {
    let now = app.now_ms();
    let client = match params.get("client_id") {
        Some(id) => match crate::auth::clients::get(&app.db(), id) {
            Ok(c) => c,
            Err(e) => return ApiError::internal(e).into_response(),
        },
        None => None,
    };
    let request = match oidc::validate_authorize(&params, client.as_ref(), now) {
        Ok(r) => r,
        Err(AuthorizeError::Page(msg)) => {
            return pages::error(
                StatusCode::BAD_REQUEST,
                "ログイン要求が正しくありません",
                &msg,
                "署名システムの管理者に連絡してください。",
            );
        }
        Err(e) => return Redirect::to(&e.location().unwrap_or_default()).into_response(),
    };
    let acr = request.acr;
    let id = app.pending.put_request(request, now);
    let card = app.config.server.card_url.trim_end_matches('/');
    match acr {
        Some(Method::Hpki) => Redirect::to(&format!("{card}/login/hpki?req={}", oidc::urlencode(&id))).into_response(),
        Some(Method::Jpki) => Redirect::to(&format!("{card}/login/jpki?req={}", oidc::urlencode(&id))).into_response(),
        Some(Method::Fido) => Redirect::to(&format!("/login/fido?req={}", oidc::urlencode(&id))).into_response(),
        None => chooser(card, &id),
    }
}

fn chooser(card: &str, id: &str) -> Response {
    let q = oidc::urlencode(id);
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

/// `GET /login/hpki` and `/login/jpki` on the card listener: the certificate is the whole proof.
pub async fn login_card(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerCertificates>,
    axum::extract::Path(scheme): axum::extract::Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let method = match scheme.as_str() {
        "hpki" => Method::Hpki,
        "jpki" => Method::Jpki,
        _ => return pages::error(StatusCode::NOT_FOUND, "ページがありません", "このページはありません。", ""),
    };
    let now = app.now_ms();
    let Some(req_id) = params.get("req") else {
        return pages::error(
            StatusCode::BAD_REQUEST,
            "ログイン要求がありません",
            "ログイン要求が見つかりません。",
            "署名システムからもう一度ログインしてください。",
        );
    };
    let Some(request) = app.pending.request(req_id, now) else {
        return pages::error(
            StatusCode::BAD_REQUEST,
            "ログインの有効期限切れ",
            "このログイン要求は無効か、有効期限が切れています。",
            "署名システムからもう一度ログインしてください。",
        );
    };
    let user_id = match card_user(&app, &peer, method) {
        Ok(u) => u,
        Err(page) => return *page,
    };
    if let Some(hint) = &request.login_hint {
        if hint != &user_id {
            return pages::error(
                StatusCode::FORBIDDEN,
                "本人IDが一致しません",
                "カードの持ち主と、署名システムが指定した本人IDが一致しません。",
                "ご自身のカードでログインしてください。",
            );
        }
    }
    let Some((code, request)) = app.pending.issue_code(req_id, &user_id, method, now) else {
        return pages::error(
            StatusCode::BAD_REQUEST,
            "ログインの有効期限切れ",
            "このログイン要求は使用済みか、有効期限が切れています。",
            "署名システムからもう一度ログインしてください。",
        );
    };
    let mut q = vec![("code", code)];
    if let Some(s) = &request.state {
        q.push(("state", s.clone()));
    }
    Redirect::to(&oidc::with_query(&request.redirect_uri, &q)).into_response()
}

/// Validates the card certificate of this connection against the scheme's
/// trust store and finds its (active) user. Failures are pages that say why.
pub fn card_user(app: &App, peer: &PeerCertificates, method: Method) -> Result<String, Box<Response>> {
    let card_name = if method == Method::Hpki { "HPKIカード" } else { "マイナンバーカード" };
    let store = if method == Method::Hpki { &app.hpki } else { &app.jpki };
    let validated = match store.validate(&peer.0, app.clock.now()) {
        Ok(v) => v,
        Err(CardCertError::Missing) => {
            return Err(Box::new(pages::error(
                StatusCode::UNAUTHORIZED,
                &format!("{card_name}が確認できません"),
                &format!("{card_name}の証明書が送られていません。"),
                "カードをICカードリーダーに置き、ブラウザで証明書を選んでから、もう一度お試しください。",
            )))
        }
        Err(e) => {
            tracing::info!("card login refused: {e}");
            return Err(Box::new(pages::error(
                StatusCode::FORBIDDEN,
                &format!("{card_name}でログインできません"),
                &card_error_ja(&e),
                &e.to_string(),
            )));
        }
    };
    let user = {
        let db = app.db();
        let found = if method == Method::Hpki {
            crate::auth::cards::hpki_user(
                db.conn(),
                &validated.issuer,
                &validated.serial,
                crate::auth::cards::subject_serial_number(&validated.certificate).as_deref(),
            )
        } else {
            crate::auth::cards::jpki_user(db.conn(), &validated.issuer, &validated.serial, &validated.spki_sha256)
        };
        match found {
            Ok(u) => u,
            Err(e) => return Err(Box::new(ApiError::internal(e).into_response())),
        }
    };
    let Some(user_id) = user else {
        let hint = if method == Method::Hpki {
            "このHPKIカードは利用者として登録されていません。認証局(運用者)に連絡してください。"
        } else {
            "このマイナンバーカードは利用者に紐付けられていません。先にHPKIカードでマイナンバーカードを登録してください。"
        };
        return Err(Box::new(pages::error(
            StatusCode::FORBIDDEN,
            &format!("{card_name}が登録されていません"),
            hint,
            "",
        )));
    };
    match crate::users::get(&app.db(), &user_id) {
        Ok(u) if u.status == "active" => {}
        Ok(_) => {
            return Err(Box::new(pages::error(
                StatusCode::FORBIDDEN,
                "利用が停止されています",
                "この利用者は利用停止中です。",
                "認証局(運用者)に連絡してください。",
            )))
        }
        Err(e) => return Err(Box::new(ApiError::internal(e).into_response())),
    }
    Ok(user_id)
}

fn card_error_ja(e: &CardCertError) -> String {
    match e {
        CardCertError::Missing => "証明書が送られていません。".into(),
        CardCertError::Malformed(_) => "証明書を読み取れません。".into(),
        CardCertError::Untrusted { .. } => "信頼できる認証局が発行した証明書ではありません。".into(),
        CardCertError::Expired(_) => "証明書の有効期限が切れています。".into(),
        CardCertError::Revoked => "証明書は失効しています。".into(),
        CardCertError::CaRevoked(_) => "証明書を発行した認証局の証明書が失効しています。".into(),
        CardCertError::StaleCrl(_) | CardCertError::NoCrl(_) => {
            "証明書の失効確認ができません。しばらくしてからお試しください。".into()
        }
        CardCertError::UnknownCriticalExtension(_) => "証明書に未知の重要な拡張があります。".into(),
        CardCertError::WrongKind { .. } => "このログイン方法で使える証明書ではありません。".into(),
    }
}

/// Client authentication: HTTP Basic or form fields.
fn client_auth(
    app: &App,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<crate::auth::clients::Client, ApiError> {
    let invalid = || ApiError::new(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed");
    let (id, secret) =
        match headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Basic ")) {
            Some(b64) => {
                let raw = Base64::decode_vec(b64.trim()).map_err(|_| invalid())?;
                let text = String::from_utf8(raw).map_err(|_| invalid())?;
                let (id, secret) = text.split_once(':').ok_or_else(invalid)?;
                (pct_decode(id), pct_decode(secret))
            }
            None => (
                form.get("client_id").cloned().ok_or_else(invalid)?,
                form.get("client_secret").cloned().ok_or_else(invalid)?,
            ),
        };
    let client = crate::auth::clients::get(&app.db(), &id).map_err(ApiError::internal)?.ok_or_else(invalid)?;
    if !client.check_secret(&secret) {
        return Err(invalid());
    }
    Ok(client)
}

/// RFC 6749 2.3.1: Basic credentials are form-urlencoded.
fn pct_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned()
}

pub(crate) async fn read_form(app: &App, body: Body) -> Result<HashMap<String, String>, ApiError> {
    let bytes = super::body::read_limited(body, app.config.server.max_json_bytes).await?;
    serde_urlencoded_parse(&bytes)
}

fn serde_urlencoded_parse(bytes: &[u8]) -> Result<HashMap<String, String>, ApiError> {
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(bytes) {
        if out.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(ApiError::bad_request(format!("parameter {k} is repeated")));
        }
    }
    Ok(out)
}

/// `POST /oidc/token`
pub async fn token(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let form = read_form(&app, body).await?;
    let client = client_auth(&app, &headers, &form)?;
    let tokens = exchange(&app, &client, &form).await?;
    let mut resp = Json(tokens).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

/// Exchanges an authorization code of an authenticated client for an access
/// token (the auth session) and an ID token.
pub async fn exchange(
    app: &Arc<App>,
    client: &crate::auth::clients::Client,
    form: &HashMap<String, String>,
) -> Result<serde_json::Value, ApiError> {
    let grant = |d: &str| ApiError::new(StatusCode::BAD_REQUEST, "invalid_grant", d.to_owned());
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be authorization_code",
        ));
    }
    let code_text = form.get("code").ok_or_else(|| ApiError::bad_request("missing code"))?;
    let now = app.now_ms();
    // Single use: the code is gone from here on, whatever follows.
    let code = app.pending.take_code(code_text, now).ok_or_else(|| grant("the code is unknown, used or expired"))?;
    if code.request.client_id != client.id {
        return Err(grant("the code was issued to another client"));
    }
    if form.get("redirect_uri") != Some(&code.request.redirect_uri) {
        return Err(grant("redirect_uri does not match the authorization request"));
    }
    let verifier = form.get("code_verifier").ok_or_else(|| grant("missing code_verifier (PKCE)"))?;
    if !oidc::pkce_matches(verifier, &code.request.code_challenge) {
        return Err(grant("code_verifier does not match the code_challenge"));
    }
    let lifetime_ms = app.config.server.session_hours as i64 * 3_600_000;
    let access = {
        let mut db = app.db();
        session::create(
            &mut db,
            now,
            &code.user_id,
            code.method,
            &client.id,
            &code.request.scope,
            code.auth_time,
            lifetime_ms,
        )?
    };
    let claims = oidc::id_token_claims(app.config.server.public_url.trim_end_matches('/'), &code, now, 3600);
    let input = oidc::jws_signing_input(&app.kid, &claims);
    let ks = Arc::clone(&app.keystore);
    let key = app.platform_key.clone();
    let digest = inkan_keystore::DigestAlgorithm::Sha256.digest(input.as_bytes());
    let sig =
        tokio::task::spawn_blocking(move || ks.sign_ecdsa_p1363(&key, &digest)).await.map_err(ApiError::internal)??;
    let id_token = format!("{input}.{}", crate::auth::b64url(&sig));
    Ok(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": lifetime_ms / 1000,
        "id_token": id_token,
        "scope": code.request.scope,
    }))
}

/// `POST /oidc/revoke` (RFC 7009): logout. Answers 200 whether or not the token existed.
pub async fn revoke(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let form = read_form(&app, body).await?;
    let client = client_auth(&app, &headers, &form)?;
    let token = form.get("token").ok_or_else(|| ApiError::bad_request("missing token"))?;
    // Only the client that holds the session may end it.
    let owner = session::lookup(app.db().conn(), token)?.map(|b| b.client_id);
    if owner.as_deref() == Some(client.id.as_str()) {
        let mut db = app.db();
        session::revoke_token(&mut db, app.now_ms(), &format!("client:{}", client.id), token)?;
        drop(db);
        app.sessions_changed();
    }
    Ok(StatusCode::OK.into_response())
}
