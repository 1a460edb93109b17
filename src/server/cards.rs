//! The card listener's routes: card login for an OpenID Connect request
//! (L2/L3), and the card steps of the phone enrollment (E1/E2, D2/D3) and of
//! the My Number card link (E4). The certificate of the TLS connection is the
//! caller's proof; [`crate::auth::cards::CardAuth`] checks it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use minijinja::context;

use crate::auth::Method;
use crate::error::{Credential, Error, Forbidden, Gone, Missing};
use crate::pki::trust::CardCertError;

use super::address::ClientAddr;
use super::pages;
use super::state::App;
use super::tls::PeerCertificates;

/// The card method a path names (`/login/<acr>`, `/enroll/<acr>`).
fn scheme(path: &str) -> Option<Method> {
    Method::parse(path).filter(|m| m.is_card())
}

fn card_name(method: Method) -> &'static str {
    method.about().name_ja
}

fn card_error_ja(e: &CardCertError) -> &'static str {
    match e {
        CardCertError::Missing => "証明書が送られていません。",
        CardCertError::Malformed(_) => "証明書を読み取れません。",
        CardCertError::Untrusted { .. } => "信頼できる認証局が発行した証明書ではありません。",
        CardCertError::Expired(_) => "証明書の有効期限が切れています。",
        CardCertError::Revoked => "証明書は失効しています。",
        CardCertError::CaRevoked(_) => "証明書を発行した認証局の証明書が失効しています。",
        CardCertError::StaleCrl(_) | CardCertError::NoCrl(_) => {
            "証明書の失効確認ができません。しばらくしてからお試しください。"
        }
        CardCertError::UnknownCriticalExtension(_) => "証明書に未知の重要な拡張があります。",
        CardCertError::WrongKind { .. } => "このログイン方法で使える証明書ではありません。",
    }
}

/// The page for a card that could not be used.
fn card_refused(method: Method, e: Error) -> Response {
    let card = card_name(method);
    match e {
        Error::Unauthenticated(Credential::Card(CardCertError::Missing), _) => pages::error(
            StatusCode::UNAUTHORIZED,
            &format!("{card}が確認できません"),
            &format!("{card}の証明書が送られていません。"),
            "カードをICカードリーダーに置き、ブラウザで証明書を選んでから、もう一度お試しください。",
        ),
        Error::Unauthenticated(Credential::Card(c), message) => {
            pages::error(StatusCode::FORBIDDEN, &format!("{card}でログインできません"), card_error_ja(&c), &message)
        }
        Error::NotFound(Missing::Card, _) => pages::error(
            StatusCode::FORBIDDEN,
            &format!("{card}が登録されていません"),
            if method == Method::Hpki {
                "このHPKIカードは利用者として登録されていません。認証局(運用者)に連絡してください。"
            } else {
                "このマイナンバーカードは利用者に紐付けられていません。先にHPKIカードでマイナンバーカードを登録してください。"
            },
            "",
        ),
        Error::Forbidden(Forbidden::Disabled, _) => pages::error(
            StatusCode::FORBIDDEN,
            "利用が停止されています",
            "この利用者は利用停止中です。",
            "認証局(運用者)に連絡してください。",
        ),
        other => other.into_response(),
    }
}

fn login_expired() -> Response {
    pages::error(
        StatusCode::BAD_REQUEST,
        "ログインの有効期限切れ",
        "このログイン要求は無効か、有効期限が切れています。",
        "署名システムからもう一度ログインしてください。",
    )
}

/// Whether a GET that starts something (an enrollment, a link) was not the
/// user's own navigation: another site's page linked or embedded it (the
/// browser presents the card's certificate to any request). Our own pages
/// are same-origin or same-site (the main listener); a typed URL is `none`.
/// Card *login* is not checked: it is reached by the signing system's
/// redirect, cross-site by design, and ends at that system only.
/// A browser that sends no Sec-Fetch headers is judged by its Referer: one
/// that names another site than inkan's two listeners is refused (our own
/// pages send none across origins, their referrer policy being same-origin).
fn forged(app: &App, headers: &HeaderMap) -> bool {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if get("sec-fetch-site").is_some() || get("sec-fetch-mode").is_some() {
        return get("sec-fetch-site") == Some("cross-site") || get("sec-fetch-mode").is_some_and(|m| m != "navigate");
    }
    get("referer").is_some_and(|referer| {
        let ours = [&app.config.server.public_url, &app.config.server.card_url];
        !ours.iter().any(|o| {
            let origin = o.trim_end_matches('/');
            referer == origin || referer.strip_prefix(origin).is_some_and(|rest| rest.starts_with('/'))
        })
    })
}

fn forged_page() -> Response {
    pages::error(
        StatusCode::FORBIDDEN,
        "操作できません",
        "別のサイトから送られた操作は受け付けません。",
        "登録サイトの画面から操作してください。",
    )
}

/// The user of this connection's card, or the page that says why not.
async fn card_user(app: &App, peer: &PeerCertificates, method: Method) -> Result<String, Response> {
    let user = app
        .cards
        .identify(app.store.as_ref(), method, &peer.0, app.clock.now())
        .await
        .map_err(|e| card_refused(method, e))?;
    super::slots::prove_connection();
    Ok(user)
}

/// `GET /login/hpki` and `/login/jpki`: the certificate is the whole proof.
pub async fn login(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerCertificates>,
    Path(scheme_name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let Some(method) = scheme(&scheme_name) else {
        return pages::error(StatusCode::NOT_FOUND, "ページがありません", "このページはありません。", "");
    };
    let Some(req_id) = params.get("req") else {
        return pages::error(
            StatusCode::BAD_REQUEST,
            "ログイン要求がありません",
            "ログイン要求が見つかりません。",
            "署名システムからもう一度ログインしてください。",
        );
    };
    match app.oidc.pending(req_id).await {
        Ok(p) => {
            if let Some(asked) = p.asked_other_than(method) {
                return pages::wrong_login_method(asked);
            }
        }
        Err(Error::NotFound(..)) => return login_expired(),
        Err(e) => return e.into_response(),
    }
    let user_id = match card_user(&app, &peer, method).await {
        Ok(u) => u,
        Err(page) => return page,
    };
    match app.oidc.finish_login(req_id, &user_id, method).await {
        Ok(redirect) => Redirect::to(&redirect).into_response(),
        Err(Error::Forbidden(Forbidden::WrongUser, _)) => pages::error(
            StatusCode::FORBIDDEN,
            "本人IDが一致しません",
            "カードの持ち主と、署名システムが指定した本人IDが一致しません。",
            "ご自身のカードでログインしてください。",
        ),
        Err(Error::NotFound(..)) => pages::error(
            StatusCode::BAD_REQUEST,
            "ログインの有効期限切れ",
            "このログイン要求は使用済みか、有効期限が切れています。",
            "署名システムからもう一度ログインしてください。",
        ),
        Err(e) => e.into_response(),
    }
}

/// `GET /enroll/hpki`, `/enroll/jpki`: E1/E2, and D2/D3 when a phone is
/// already registered; the PC continues on the main listener.
pub async fn enroll(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerCertificates>,
    addr: Option<Extension<ClientAddr>>,
    Path(scheme_name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if forged(&app, &headers) {
        return forged_page();
    }
    let Some(method) = scheme(&scheme_name) else {
        return pages::templates().message(StatusCode::NOT_FOUND, "ページがありません", "このページはありません。", "");
    };
    let user_id = match card_user(&app, &peer, method).await {
        Ok(u) => u,
        Err(page) => return page,
    };
    let pc = match super::fido::pc_info(&app, &headers, addr.as_deref()) {
        Ok(pc) => pc,
        Err(e) => return e.into_response(),
    };
    match app.phones.start_card_enroll(method, &user_id, pc).await {
        Ok(handoff) => Redirect::to(&format!("{}/pc/claim?h={handoff}", super::fido::public(&app))).into_response(),
        Err(e) => card_refused(method, e),
    }
}

/// `GET /link/hpki`: E4 starts with the HPKI card.
pub async fn link_hpki(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerCertificates>,
    addr: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
) -> Response {
    if forged(&app, &headers) {
        return forged_page();
    }
    let user_id = match card_user(&app, &peer, Method::Hpki).await {
        Ok(u) => u,
        Err(page) => return page,
    };
    let pc = match super::fido::pc_info(&app, &headers, addr.as_deref()) {
        Ok(pc) => pc,
        Err(e) => return e.into_response(),
    };
    let token = match app.phones.start_link(&user_id, pc).await {
        Ok(t) => t,
        Err(e) => return card_refused(Method::Hpki, e),
    };
    pages::templates().render(
        StatusCode::OK,
        "message.html",
        "マイナンバーカードを登録する",
        context! {
            message => format!("本人ID: {user_id}"),
            hint => "HPKIカードで本人を確認しました。ICカードリーダーのカードをマイナンバーカードに差し替えてから「次へ」を押し、利用者証明用電子証明書の暗証番号(4桁)を入力してください。",
            link => format!("{}/link/jpki?t={token}", super::fido::card(&app)),
            link_text => "次へ",
        },
    )
}

/// `GET /link/jpki?t=`: E4 ends: links the My Number card.
pub async fn link_jpki(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerCertificates>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if forged(&app, &headers) {
        return forged_page();
    }
    let Some(token) = params.get("t") else {
        return super::fido::not_found_page();
    };
    let invalid = || {
        pages::templates().message(
            StatusCode::BAD_REQUEST,
            "手続きが無効です",
            "この手続きは使用済みか、無効です。",
            "登録サイトから最初からやり直してください。",
        )
    };
    match app.phones.link(&app.cards, token, &peer.0).await {
        Ok(user_id) => pages::templates().message(
            StatusCode::OK,
            "完了",
            &format!("マイナンバーカードを本人ID {user_id} に登録しました。"),
            "これからはマイナンバーカードでもログインできます。",
        ),
        Err(Error::Gone(Gone::Expired, _)) => super::fido::expired_page(),
        Err(Error::NotFound(Missing::Ticket, _) | Error::Gone(..)) => invalid(),
        Err(Error::Forbidden(Forbidden::WrongUser, _)) => pages::templates().message(
            StatusCode::CONFLICT,
            "登録できません",
            "このマイナンバーカードは、既に別の利用者に登録されています。",
            "ご自身のマイナンバーカードを使ってください。心当たりがない場合は認証局に連絡してください。",
        ),
        Err(e) => card_refused(Method::Jpki, e),
    }
}
