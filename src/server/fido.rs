//! The phone pages: L1 (FIDO login), E1–E3 (phone enrollment), D1 (device
//! change), the registration site, printed registration codes. The flows'
//! decisions are [`crate::fido::flows`]'s; this module parses, calls one
//! operation and renders (Japanese, from the templates).
//!
//! The PC holds its ticket in a cookie (`__Host-inkan_pc`) and follows the
//! phone by polling `/pc/status`; the phone works on the phone token from the
//! QR code (`/m/<token>`). Cards are read on the card listener, which hands
//! the PC its ticket through a one-time `/pc/claim` URL on the main listener.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Json};
use minijinja::context;
use serde_json::json;

use crate::auth::Method;
use crate::clock::rfc3339;
use crate::error::{Credential, Error, Forbidden, Gone, Missing};
use crate::fido::device::Retirement;
use crate::fido::flows::Failure;
use crate::fido::ticket::{Action, Kind, PcInfo, Stage, Ticket};

use super::address::ClientAddr;
use super::body::{read_form, read_json_or_empty, read_limited};
use super::error::ApiError;
use super::limits::{self, Flow};
use super::pages;
use super::state::App;

pub mod label;
pub mod regcode;

/// `__Host-`: only this host can set it (Secure, Path=/, no Domain).
const PC_COOKIE: &str = "__Host-inkan_pc";
/// Largest WebAuthn response accepted.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The main listener's public URL, without a trailing slash.
pub fn public(app: &App) -> &str {
    app.config.server.public_url.trim_end_matches('/')
}

/// The card listener's public URL, without a trailing slash.
pub fn card(app: &App) -> &str {
    app.config.server.card_url.trim_end_matches('/')
}

fn msg(status: StatusCode, title: &str, message: &str, hint: &str) -> Response {
    pages::templates().message(status, title, message, hint)
}

fn pc_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == PC_COOKIE)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

fn with_pc_cookie(mut resp: Response, token: &str, max_age_secs: u64) -> Response {
    let cookie = format!("{PC_COOKIE}={token}; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age={max_age_secs}");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// The PC as a ticket shows it to the phone: its address and browser, now.
pub fn pc_info(app: &App, headers: &HeaderMap, addr: Option<&ClientAddr>) -> Result<PcInfo, Error> {
    let agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let network = addr.map_or_else(String::new, |a| super::address::Network::of(*a).0.to_string());
    let addr = addr.map_or_else(|| "-".to_owned(), |a| a.0.to_string());
    PcInfo::new(&addr, &network, agent, None, app.now_ms())
}

/// Whether a state-changing request comes from another site (forged by a page
/// the user visited): browsers say so in `Sec-Fetch-Site` and `Origin`.
fn cross_site(app: &App, headers: &HeaderMap) -> bool {
    // Browsers that send Sec-Fetch-Site: only our own pages (or the user typing) may act.
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return !matches!(site, "same-origin" | "none");
    }
    // Older browsers: the Origin. Our pages' referrer policy (same-origin)
    // lets a browser name our origin; "null" is what a sandboxed frame, a
    // data: URL or a privacy redirect of another site sends: refused.
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => false,
        Some(origin) => origin != public(app),
    }
}

fn forbidden_origin() -> Response {
    msg(
        StatusCode::FORBIDDEN,
        "操作できません",
        "別のサイトから送られた操作は受け付けません。",
        "inkan の画面から操作してください。",
    )
}

/// The page for a problem with the user an ID names (the registration-code
/// pages, and what a QR start refuses besides its decoys).
fn user_page(e: Error) -> Response {
    match e {
        Error::NotFound(Missing::User, _) => msg(
            StatusCode::NOT_FOUND,
            "本人IDが見つかりません",
            "入力された本人IDは登録されていません。",
            "本人IDを確認して、もう一度入力してください。",
        ),
        Error::Invalid(_) => msg(
            StatusCode::NOT_FOUND,
            "本人IDが見つかりません",
            "入力された本人IDは登録されていません。",
            "本人IDを確認して、もう一度入力してください。",
        ),
        Error::Forbidden(Forbidden::Disabled, _) => msg(
            StatusCode::FORBIDDEN,
            "利用が停止されています",
            "この利用者は利用停止中です。",
            "認証局(運用者)に連絡してください。",
        ),
        Error::Forbidden(Forbidden::NoDevice, _) => pages::templates().render(
            StatusCode::CONFLICT,
            "message.html",
            "スマートフォンが登録されていません",
            context! {
                message => "この本人IDにはスマートフォンが登録されていません。",
                hint => "先に登録サイトでスマートフォンを登録してください。",
                error => true,
                link => "/register",
                link_text => "登録サイトへ",
            },
        ),
        Error::Forbidden(Forbidden::WrongUser, _) => msg(
            StatusCode::FORBIDDEN,
            "本人IDが一致しません",
            "入力された本人IDと、署名システムが指定した本人IDが一致しません。",
            "ご自身の本人IDでログインしてください。",
        ),
        Error::NotFound(Missing::Request, _) => login_request_page(true),
        other => other.into_response(),
    }
}

/// A QR start refused. An unknown ID, a disabled user and a user without a
/// phone never come here: they get a decoy QR code like any other
/// ([`crate::fido::decoy`]), since these pages are open to anyone, who must
/// not learn from them which IDs exist. An ID in a form no user can have is
/// told so (that tells nothing about anyone).
fn start_refused_page(e: Error) -> Response {
    match e {
        Error::Invalid(_) => msg(
            StatusCode::BAD_REQUEST,
            "本人IDが正しくありません",
            "本人IDは、半角の英数字とハイフン(-)で64文字以内です(ハイフンで始まりません)。",
            "本人IDを確認して、もう一度入力してください。",
        ),
        other => user_page(other),
    }
}

fn login_request_page(exists: bool) -> Response {
    let again = "署名システムからもう一度ログインしてください。";
    if exists {
        msg(
            StatusCode::BAD_REQUEST,
            "ログインの有効期限切れ",
            "このログイン要求は無効か、有効期限が切れています。",
            again,
        )
    } else {
        msg(StatusCode::BAD_REQUEST, "ログイン要求がありません", "ログイン要求が見つかりません。", again)
    }
}

/// `GET /register`: the registration site's index.
pub async fn register_index(State(app): State<Arc<App>>) -> Response {
    pages::templates().render(StatusCode::OK, "register_index.html", "登録サイト", context! { card_url => card(&app) })
}

/// `GET /login/fido?req=`: L1 starts: the user ID on the PC.
pub async fn login_form(State(app): State<Arc<App>>, Query(params): Query<HashMap<String, String>>) -> Response {
    let Some(req) = params.get("req") else {
        return login_request_page(false);
    };
    let request = match app.oidc.pending(req).await {
        Ok(r) => r,
        Err(Error::NotFound(..)) => return login_request_page(true),
        Err(e) => return e.into_response(),
    };
    if let Some(asked) = request.asked_other_than(Method::Fido) {
        return pages::wrong_login_method(asked);
    }
    pages::templates().render(
        StatusCode::OK,
        "id_form.html",
        "スマートフォンでログイン",
        context! {
            lead => "本人IDを入力して「次へ」を押してください。QRコードが表示されます。",
            action => "/login/fido",
            req => req,
            user_id => request.login_hint.unwrap_or_default(),
            note => "登録済みのスマートフォンで、表示されるQRコードを読み取ってください。",
        },
    )
}

/// `POST /login/fido`: opens the L1 ticket and shows its QR code.
pub async fn login_start(
    State(app): State<Arc<App>>,
    addr: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if cross_site(&app, &headers) {
        return forbidden_origin();
    }
    let form = match read_form(body).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let user_id = form.get("user_id").map(|s| s.trim().to_owned()).unwrap_or_default();
    let Some(req) = form.get("req") else {
        return login_request_page(false);
    };
    match app.oidc.pending(req).await {
        Ok(r) => {
            if let Some(asked) = r.asked_other_than(Method::Fido) {
                return pages::wrong_login_method(asked);
            }
        }
        Err(Error::NotFound(..)) => return login_request_page(true),
        Err(e) => return e.into_response(),
    }
    let network = addr.as_deref().map(|a| super::address::Network::of(*a));
    if let Err(limited) = app.limits.check_user(Flow::PhoneLogin, &user_id, network) {
        return limits::too_many(true, limited);
    }
    let pc = match pc_info(&app, &headers, addr.as_deref()) {
        Ok(pc) => pc,
        Err(e) => return e.into_response(),
    };
    match app.phones.start_login(&app.oidc, req, &user_id, pc).await {
        Ok(pc) => with_pc_cookie(Redirect::to("/pc").into_response(), &pc, 3600),
        Err(e) => start_refused_page(e),
    }
}

/// `GET /change`: D1 starts: the user ID on the PC.
pub async fn change_form() -> Response {
    pages::templates().render(
        StatusCode::OK,
        "id_form.html",
        "スマートフォンを変更する",
        context! {
            lead => "本人IDを入力して「次へ」を押してください。まず、登録済みのスマートフォン(変更前)でサインインします。",
            action => "/change",
            user_id => "",
            note => "変更前のスマートフォンが手元にない場合は、HPKIカードまたはマイナンバーカードを使って登録し直してください。",
        },
    )
}

/// `POST /change`: opens the D1 ticket (old phone first).
pub async fn change_start(
    State(app): State<Arc<App>>,
    addr: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if cross_site(&app, &headers) {
        return forbidden_origin();
    }
    let form = match read_form(body).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let user_id = form.get("user_id").map(|s| s.trim().to_owned()).unwrap_or_default();
    let network = addr.as_deref().map(|a| super::address::Network::of(*a));
    if let Err(limited) = app.limits.check_user(Flow::PhoneChange, &user_id, network) {
        return limits::too_many(true, limited);
    }
    let pc = match pc_info(&app, &headers, addr.as_deref()) {
        Ok(pc) => pc,
        Err(e) => return e.into_response(),
    };
    match app.phones.start_change(&user_id, pc).await {
        Ok(pc) => with_pc_cookie(Redirect::to("/pc").into_response(), &pc, 3600),
        Err(e) => start_refused_page(e),
    }
}

/// `GET /pc/claim?h=`: the PC takes its ticket over from the card listener (once).
pub async fn pc_claim(State(app): State<Arc<App>>, Query(params): Query<HashMap<String, String>>) -> Response {
    let Some(h) = params.get("h") else {
        return not_found_page();
    };
    match app.phones.claim(h).await {
        // The cookie gets a fresh token: the one in this URL (and the history) is spent.
        Ok(pc) => with_pc_cookie(Redirect::to("/pc").into_response(), &pc, 3600),
        Err(Error::NotFound(..) | Error::Gone(..)) => msg(
            StatusCode::BAD_REQUEST,
            "このURLは使用済みです",
            "この手続きのURLは既に使われたか、無効です。",
            "登録サイトから最初からやり直してください。",
        ),
        Err(e) => e.into_response(),
    }
}

/// The page for a ticket this browser does not hold.
pub fn not_found_page() -> Response {
    pages::templates().render(
        StatusCode::NOT_FOUND,
        "message.html",
        "手続きが見つかりません",
        context! {
            message => "この手続きは見つかりません(無効なURLか、別のブラウザで始めた手続きです)。",
            hint => "手続きを始めたPCのブラウザで、最初からやり直してください。",
            error => true,
            link => "/register",
            link_text => "登録サイトへ",
        },
    )
}

/// The page for an expired QR code.
pub fn expired_page() -> Response {
    msg(StatusCode::GONE, "有効期限切れ", "QRコードの有効期限が切れました。", "最初からやり直してください。")
}

fn qr_svg(text: &str) -> Result<String, Error> {
    let code = qrcode::QrCode::new(text.as_bytes()).map_err(Error::internal)?;
    let svg = code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(240, 240).quiet_zone(true).build();
    // Inline in the page: drop the XML declaration.
    Ok(match svg.find("<svg") {
        Some(i) => svg[i..].to_owned(),
        None => svg,
    })
}

/// A time of day in Japan Standard Time (UTC+9), as the users read it.
fn clock_time(ms: i64) -> String {
    let jst = rfc3339(ms + 9 * 3_600_000);
    jst.get(11..19).unwrap_or_default().to_owned()
}

/// A date in Japan Standard Time.
fn jst_date(ms: i64) -> String {
    let jst = rfc3339(ms + 9 * 3_600_000);
    jst.get(..10).unwrap_or_default().to_owned()
}

/// A browser as people name it, from its `User-Agent`: only names inkan
/// knows, never the text itself (anyone can send any text, and it is shown
/// next to the confirmation number).
fn browser_name(agent: &str) -> String {
    let browser =
        [("Edg/", "Microsoft Edge"), ("Chrome/", "Google Chrome"), ("Firefox/", "Firefox"), ("Safari/", "Safari")]
            .iter()
            .find(|(token, _)| agent.contains(token))
            .map(|(_, name)| *name);
    let os =
        [("Windows", "Windows"), ("Mac OS X", "macOS"), ("Android", "Android"), ("iPhone", "iOS"), ("Linux", "Linux")]
            .iter()
            .find(|(token, _)| agent.contains(token))
            .map(|(_, name)| *name);
    match (browser, os) {
        (Some(b), Some(o)) => format!("{b}({o})"),
        (Some(b), None) => b.to_owned(),
        (None, Some(o)) => format!("その他のブラウザ({o})"),
        (None, None) => "不明なブラウザ".into(),
    }
}

/// What the PC shows for a failure the phone had.
fn failure_text(f: &Failure) -> String {
    match f {
        Failure::Refused(reason) => {
            format!("スマートフォンの応答を確認できませんでした({reason})。もう一度お試しください。")
        }
        Failure::NoDevice => {
            "この本人IDにはスマートフォンが登録されていません(削除されました)。登録サイトで登録し直してください。".into()
        }
        Failure::Disabled => "この利用者は利用停止中です。認証局に連絡してください。".into(),
        Failure::Retired { reason: Retirement::Replaced, at } => format!(
            "読み取ったスマートフォンの登録は、{}に別のスマートフォンに置き換えられたため無効です。現在登録されているスマートフォンで読み取ってください。",
            jst_date(*at)
        ),
        Failure::Retired { reason: Retirement::Removed, at } => format!(
            "読み取ったスマートフォンの登録は、{}に削除されたため無効です。登録サイトで登録し直してください。",
            jst_date(*at)
        ),
        Failure::NotAllowed => "スマートフォンでの認証が完了しませんでした。本人IDの入力に誤りがあるか、このスマートフォンにこの本人IDの登録がない(登録していない、別のスマートフォン、または変更・削除で無効になった)か、操作がキャンセルされました。本人IDを確認してください。スマートフォンを登録していない場合は、先に登録サイトで登録してください。".into(),
        Failure::WrongCode => "スマートフォンで入力された確認番号が、この画面の番号と違いました。QRコードが別の人に読み取られた可能性があるため、この手続きを取り消しました。最初からやり直してください。".into(),
        Failure::Shown(text) => text.clone(),
    }
}

fn pc_ticket_error(e: Error) -> Response {
    match e {
        Error::Gone(Gone::Expired, _) => expired_page(),
        Error::NotFound(Missing::Ticket, _) => not_found_page(),
        other => other.into_response(),
    }
}

/// `GET /pc`: the PC side of a ticket.
pub async fn pc_page(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let Some(pc) = pc_cookie(&headers) else {
        return not_found_page();
    };
    let view = match app.phones.pc_view(&pc).await {
        Ok(v) => v,
        Err(e) => return pc_ticket_error(e),
    };
    let t = view.ticket;
    let now = app.now_ms();
    let title = match t.kind {
        Kind::Login { .. } => "スマートフォンでログイン",
        Kind::Change => "スマートフォンを変更する",
        _ => "スマートフォンを登録する",
    };
    let phone_url = format!("{}/m/{}", public(&app), view.phone_token);
    let qr = match t.stage {
        Stage::Waiting | Stage::Ceremony(_) => match qr_svg(&phone_url) {
            Ok(svg) => svg,
            Err(e) => return e.into_response(),
        },
        _ => String::new(),
    };
    let instruction = match (&t.kind, t.action()) {
        (Kind::Login { .. }, _) => {
            "登録済みのスマートフォンでQRコードを読み取り、「セキュリティキーによるサインイン」を押してください。"
        }
        (Kind::Change, Action::Authenticate) => {
            "変更前(登録済み)のスマートフォンでQRコードを読み取り、サインインしてください。"
        }
        (Kind::Change, _) => "新しいスマートフォンでQRコードを読み取り、「登録」を押してください。",
        _ => "登録するスマートフォンでQRコードを読み取り、「登録」を押してください。",
    };
    let question = if t.kind == Kind::Change {
        "サインインしました。登録済みのスマートフォンを新しいスマートフォンに置き換えますか?"
    } else {
        "この本人IDには既にスマートフォンが登録されています。新しいスマートフォンに置き換えますか?"
    };
    let done = match t.kind {
        Kind::Login { .. } => "ログインしました。署名システムに戻ります…",
        Kind::Change => "スマートフォンの変更が完了しました。以前のスマートフォンは使えなくなりました。",
        _ => "スマートフォンの登録が完了しました。",
    };
    let left = ((t.expires_at - now).max(0) / 1000) as u64;
    let code = if qr.is_empty() { None } else { t.confirmation() };
    let action = if t.action() == Action::Register { "register" } else { "authenticate" };
    pages::templates().render(
        StatusCode::OK,
        "pc.html",
        title,
        context! {
            step => t.stage.as_str(),
            phase => t.phase,
            expires_in => left,
            expires_at => clock_time(t.expires_at),
            countdown => format!("{}分{:02}秒", left / 60, left % 60),
            user_id => t.user_id,
            qr => qr,
            phone_url => phone_url,
            instruction => instruction,
            question => question,
            done => done,
            code => code,
            action => action,
            error => t.error.as_deref().map(|e| failure_text(&Failure::decode(e))),
        },
    )
}

/// `GET /pc/status`: what the PC page polls. A finished login hands out its
/// authorization-code redirect here, once, and only to the PC's cookie.
pub async fn pc_status(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let pc = pc_cookie(&headers)
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "invalid_request", "no ticket in this browser"))?;
    let status = match app.phones.pc_status(&app.oidc, &pc).await {
        Ok(status) => status,
        // Past its expiry, or not known at all: one answer (the page then
        // shows that the QR code expired), whatever the ticket was.
        Err(Error::Gone(Gone::Expired, _)) => {
            let out = json!({ "step": "expired", "phase": 0, "expired": true, "error": null });
            let mut resp = Json(out).into_response();
            resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return Ok(resp);
        }
        Err(e) => return Err(e.into()),
    };
    let t = &status.ticket;
    let mut out = json!({
        "step": t.stage.as_str(),
        "phase": t.phase,
        "expired": t.expired(app.now_ms()),
        "error": t.error.as_deref().map(|e| failure_text(&Failure::decode(e))),
    });
    match status.login {
        Some(Some(redirect)) => out["redirect"] = redirect.into(),
        Some(None) => {
            out["error"] =
                "ログイン要求の有効期限が切れています。署名システムからもう一度ログインしてください。".into();
        }
        None => {}
    }
    let mut resp = Json(out).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `POST /pc/confirm`: the answer to "replace the registered phone?".
pub async fn pc_confirm(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    if cross_site(&app, &headers) {
        return forbidden_origin();
    }
    let form = match read_form(body).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let Some(pc) = pc_cookie(&headers) else {
        return not_found_page();
    };
    // The ticket first (a browser that holds none gets the page saying so).
    if let Err(e) = app.phones.pc_view(&pc).await {
        return pc_ticket_error(e);
    }
    let yes = match form.get("answer").map(String::as_str) {
        Some("yes") => true,
        Some("no") => false,
        _ => return ApiError::bad_request("answer must be yes or no").into_response(),
    };
    match app.phones.answer(&pc, yes).await {
        Ok(_) | Err(Error::Conflict(_)) => Redirect::to("/pc").into_response(),
        Err(Error::Gone(Gone::Expired, _)) => expired_page(),
        Err(e) => pc_ticket_error(e),
    }
}

/// The phone pages' answer to a ticket they cannot use.
fn phone_ticket_page(e: Error) -> Response {
    match e {
        Error::Gone(Gone::Expired, _) => expired_page(),
        Error::NotFound(..) => msg(
            StatusCode::NOT_FOUND,
            "QRコードが無効です",
            "このQRコードは無効か、既に使われています。",
            "PCの画面に表示されている最新のQRコードを読み取ってください。",
        ),
        other => other.into_response(),
    }
}

/// `GET /m/<token>`: the phone page.
pub async fn phone_page(State(app): State<Arc<App>>, Path(token): Path<String>) -> Response {
    let t = match app.phones.phone_view(&token).await {
        Ok(t) => t,
        Err(e) => return phone_ticket_page(e),
    };
    match t.stage {
        Stage::Waiting | Stage::Ceremony(_) => {}
        Stage::Confirm => {
            return msg(StatusCode::OK, "サインイン完了", "サインインしました。", "PCの画面で操作を続けてください。")
        }
        Stage::Done | Stage::Collected if t.action() == Action::Register && !t.labelled => {
            return Redirect::to(&format!("/m/{token}/label")).into_response()
        }
        Stage::Done | Stage::Collected => return finished_page(&t),
        Stage::Cancelled => {
            return msg(
                StatusCode::GONE,
                "取り消されました",
                "この手続きは取り消されました。",
                "最初からやり直してください。",
            )
        }
    }
    let (title, lead, button, note) = match t.action() {
        Action::Register => (
            "登録",
            "「登録」を押し、画面の案内に従って生体認証(指紋・顔認証など)を行ってください。",
            "登録",
            "生体認証が設定されていないスマートフォンは登録できません。先に端末の設定で生体認証を有効にしてください。",
        ),
        _ => (
            "ログイン",
            "「セキュリティキーによるサインイン」を押し、画面の案内に従って生体認証を行ってください。",
            "セキュリティキーによるサインイン",
            match t.kind {
                Kind::Change => "スマートフォンを変更(置き換え)するためのサインインです。ご自身がPCで「スマートフォンを変更する」を始めた場合だけ続けてください。心当たりがなければ中止し、認証局に連絡してください。",
                Kind::Login { .. } => "PCでのログインのためのサインインです。ご自身がいまPCでログインしている場合だけ続けてください。",
                _ => "このスマートフォンに登録した本人IDでサインインします。",
            },
        ),
    };
    pages::templates().render(
        StatusCode::OK,
        "phone.html",
        title,
        context! {
            action => if t.action() == Action::Register { "register" } else { "authenticate" },
            user_id => t.user_id.clone(),
            lead,
            button,
            note,
            confirm => t.confirmation().is_some(),
            pc => t.pc.as_ref().map(|pc| context! {
                system => pc.system.clone(),
                addr => pc.addr.clone(),
                agent => browser_name(&pc.agent),
                at => format!("{} {}", jst_date(pc.at), clock_time(pc.at)),
            }),
        },
    )
}

fn finished_page(t: &Ticket) -> Response {
    let (message, hint) = match (&t.kind, t.action()) {
        (Kind::Login { .. }, _) => ("ログインしました。", "PCの画面に戻ってください。"),
        (Kind::CodeVerify { .. }, _) => ("サインインしました。このスマートフォンは登録済みです。", ""),
        (Kind::CodeEnroll { .. }, _) => ("スマートフォンの登録が完了しました。", ""),
        _ => ("手続きが完了しました。", "PCの画面も完了になります。"),
    };
    msg(StatusCode::OK, "完了", message, hint)
}

/// The phone script's error (JSON, shown on the phone): Japanese, naming the cause.
fn phone_error(e: Error) -> ApiError {
    let refused = |d: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", d);
    match e {
        Error::NotFound(..) => {
            refused("このQRコードは無効か、既に使われています。PCの画面の最新のQRコードを読み取ってください。".into())
        }
        Error::Gone(Gone::Expired, _) => refused("QRコードの有効期限が切れました。最初からやり直してください。".into()),
        Error::Gone(_, _) => {
            refused("この認証要求は使用済みか、有効期限が切れています。もう一度ボタンを押してください。".into())
        }
        Error::Conflict(reason) => refused(failure_text(&Failure::Refused(reason))),
        Error::Forbidden(Forbidden::Disabled, _) => ApiError::new(
            StatusCode::FORBIDDEN,
            "access_denied",
            "この利用者は利用停止中です。認証局に連絡してください。",
        ),
        Error::Forbidden(Forbidden::NoDevice, _) => refused(
            "スマートフォンが登録されていません(削除されたか、まだ登録されていません)。先に登録してください。".into(),
        ),
        Error::Forbidden(Forbidden::Retired { removed, at }, _) => ApiError::new(
            StatusCode::FORBIDDEN,
            "access_denied",
            failure_text(&Failure::Retired {
                reason: if removed { Retirement::Removed } else { Retirement::Replaced },
                at,
            }),
        ),
        Error::Unauthenticated(Credential::Phone, reason) => refused(failure_text(&Failure::Refused(reason))),
        Error::Invalid(_) => refused("この手続きにスマートフォンの操作はありません。".into()),
        other => other.into(),
    }
}

/// Why a ceremony could not begin, as the phone (or the PC) shows it.
fn begin_error(e: Error) -> ApiError {
    match e {
        Error::Conflict(_) => ApiError::bad_request("この手続きは既に完了しているか、PCでの操作を待っています。"),
        Error::Unauthenticated(Credential::Confirmation, _) => {
            ApiError::bad_request("PCの画面に表示されている4桁の確認番号を入力してください。")
        }
        Error::Gone(Gone::Revoked, _) => ApiError::bad_request(
            "確認番号がPCの画面の番号と違います。このQRコードは取り消されました。PCで最初からやり直してください。",
        ),
        other => phone_error(other),
    }
}

fn same_site_only(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    if cross_site(app, headers) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "access_denied", "requests from other sites are refused"));
    }
    Ok(())
}

/// `POST /m/<token>/begin`: the WebAuthn options (the challenge is kept in the ticket).
pub async fn phone_begin(
    State(app): State<Arc<App>>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    same_site_only(&app, &headers)?;
    #[derive(serde::Deserialize, Default)]
    struct Begin {
        code: Option<String>,
    }
    let begin: Begin = read_json_or_empty(body, 1024).await?;
    let options = app.phones.begin(&token, begin.code.as_deref()).await.map_err(begin_error)?;
    Ok(Json(options).into_response())
}

/// The PC's ticket and its current phone token, for a ceremony the PC's own
/// browser runs.
async fn pc_ceremony(app: &App, headers: &HeaderMap) -> Result<crate::fido::flows::PcView, ApiError> {
    same_site_only(app, headers)?;
    let pc = pc_cookie(headers)
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "invalid_request", "no ticket in this browser"))?;
    app.phones.pc_view(&pc).await.map_err(phone_error)
}

/// `POST /pc/begin`: the PC's own browser runs the ceremony instead of a
/// scanned QR code: the browser reaches the phone itself (WebAuthn hybrid
/// transport, over Bluetooth, so the phone must be near this PC) or uses a
/// passkey it holds. The PC holds the ticket, so it needs no confirmation
/// number.
pub async fn pc_begin(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let view = pc_ceremony(&app, &headers).await?;
    let code = view.ticket.confirmation();
    let options = app.phones.begin(&view.phone_token, code.as_deref()).await.map_err(begin_error)?;
    Ok(Json(options).into_response())
}

/// `POST /pc/finish`: the PC browser's answer, verified as a phone's.
pub async fn pc_finish(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let view = pc_ceremony(&app, &headers).await?;
    let bytes = read_limited(body, MAX_RESPONSE_BYTES).await?;
    let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let next = app.phones.finish(&view.phone_token, &bytes, user_agent).await.map_err(phone_error)?;
    let next = if next.is_empty() { "/pc".to_owned() } else { format!("/m/{}{next}", view.phone_token) };
    Ok(Json(json!({ "next": next })).into_response())
}

/// `POST /m/<token>/finish`: verifies the phone's answer (once per challenge).
pub async fn phone_finish(
    State(app): State<Arc<App>>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    same_site_only(&app, &headers)?;
    let bytes = read_limited(body, MAX_RESPONSE_BYTES).await?;
    let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let next = app.phones.finish(&token, &bytes, user_agent).await.map_err(phone_error)?;
    Ok(Json(json!({ "next": format!("/m/{token}{next}") })).into_response())
}

/// `POST /m/<token>/failed`: the phone's browser gave up without an answer
/// (`NotAllowedError`): noted for the PC; the answer is what the phone shows.
pub async fn phone_failed(
    State(app): State<Arc<App>>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    same_site_only(&app, &headers)?;
    let failure = app.phones.phone_gave_up(&token).await.map_err(phone_error)?;
    Ok(Json(json!({ "message": failure_text(&failure) })).into_response())
}

#[cfg(test)]
mod tests;
