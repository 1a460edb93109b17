//! The phone pages and flows: L1 (FIDO login), E1–E4 (enrollment, card link),
//! D1–D3 (device change), and the registration site.
//!
//! The PC holds its ticket in a cookie (`__Host-inkan_pc`) and follows the phone by
//! polling `/pc/status`; the phone works on the phone token from the QR code
//! (`/m/<token>`). Cards are read on the card listener, which hands the PC its
//! ticket through a one-time `/pc/claim` URL on the main listener.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Json};
use minijinja::context;
use serde_json::json;

use crate::audit::{self, Event};
use crate::auth::b64url;
use crate::auth::oidc::AuthRequest;
use crate::auth::session::Method;
use crate::clock::rfc3339;
use crate::fido::ticket::{self, Action, NewTicket, Purpose, Step, Ticket};
use crate::fido::{device, regcode, FidoError};

use super::error::ApiError;
use super::state::App;
use super::PeerCertificates;

/// `__Host-`: only this host can set it (Secure, Path=/, no Domain).
const PC_COOKIE: &str = "__Host-inkan_pc";
/// Largest WebAuthn response accepted.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

fn lifetime_ms(app: &App) -> i64 {
    app.config.fido.ticket_secs as i64 * 1000
}

fn public(app: &App) -> &str {
    app.config.server.public_url.trim_end_matches('/')
}

fn card(app: &App) -> &str {
    app.config.server.card_url.trim_end_matches('/')
}

fn msg(app: &App, status: StatusCode, title: &str, message: &str, hint: &str) -> Response {
    app.templates.message(status, title, message, hint)
}

fn internal(e: impl std::fmt::Display) -> Response {
    ApiError::internal(e).into_response()
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

/// Whether a state-changing request comes from another site (forged by a page
/// the user visited): browsers say so in `Sec-Fetch-Site` and `Origin`.
fn cross_site(app: &App, headers: &HeaderMap) -> bool {
    // Browsers that send Sec-Fetch-Site: only our own pages (or the user typing) may act.
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return !matches!(site, "same-origin" | "none");
    }
    // Older browsers: the Origin, unless hidden ("null": our pages send no referrer).
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        Some("null") | None => false,
        Some(origin) => origin != public(app),
    }
}

fn forbidden_origin(app: &App) -> Response {
    msg(
        app,
        StatusCode::FORBIDDEN,
        "操作できません",
        "別のサイトから送られた操作は受け付けません。",
        "inkan の画面から操作してください。",
    )
}

fn user_problem(app: &App, user_id: &str, need_device: bool) -> Option<Response> {
    let user = match crate::users::get(&app.db(), user_id) {
        Ok(u) => u,
        Err(crate::users::UserError::Unknown(_)) => {
            return Some(msg(
                app,
                StatusCode::NOT_FOUND,
                "本人IDが見つかりません",
                "入力された本人IDは登録されていません。",
                "本人IDを確認して、もう一度入力してください。",
            ))
        }
        Err(e) => return Some(internal(e)),
    };
    if user.status != "active" {
        return Some(msg(
            app,
            StatusCode::FORBIDDEN,
            "利用が停止されています",
            "この利用者は利用停止中です。",
            "認証局(運用者)に連絡してください。",
        ));
    }
    if need_device {
        match device::get(app.db().conn(), user_id) {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Some(app.templates.render(
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
                ))
            }
            Err(e) => return Some(internal(e)),
        }
    }
    None
}

/// `GET /register`: the registration site's index.
pub async fn register_index(State(app): State<Arc<App>>) -> Response {
    app.templates.render(StatusCode::OK, "register_index.html", "登録サイト", context! { card_url => card(&app) })
}

/// The OIDC authorization request a FIDO login belongs to.
fn pending_request(app: &App, req: Option<&String>) -> Result<(String, AuthRequest), Box<Response>> {
    let again = "署名システムからもう一度ログインしてください。";
    let Some(req) = req else {
        return Err(Box::new(msg(
            app,
            StatusCode::BAD_REQUEST,
            "ログイン要求がありません",
            "ログイン要求が見つかりません。",
            again,
        )));
    };
    match app.pending.request(req, app.now_ms()) {
        Some(request) => Ok((req.clone(), request)),
        None => Err(Box::new(msg(
            app,
            StatusCode::BAD_REQUEST,
            "ログインの有効期限切れ",
            "このログイン要求は無効か、有効期限が切れています。",
            again,
        ))),
    }
}

/// `GET /login/fido?req=`: L1 starts: the user ID on the PC.
pub async fn login_form(State(app): State<Arc<App>>, Query(params): Query<HashMap<String, String>>) -> Response {
    let (req, request) = match pending_request(&app, params.get("req")) {
        Ok(r) => r,
        Err(page) => return *page,
    };
    app.templates.render(
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
pub async fn login_start(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    if cross_site(&app, &headers) {
        return forbidden_origin(&app);
    }
    let form = match super::oidc::read_form(&app, body).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let user_id = form.get("user_id").map(|s| s.trim().to_owned()).unwrap_or_default();
    let (req, request) = match pending_request(&app, form.get("req")) {
        Ok(r) => r,
        Err(page) => return *page,
    };
    if request.login_hint.as_ref().is_some_and(|h| h != &user_id) {
        return msg(
            &app,
            StatusCode::FORBIDDEN,
            "本人IDが一致しません",
            "入力された本人IDと、署名システムが指定した本人IDが一致しません。",
            "ご自身の本人IDでログインしてください。",
        );
    }
    if let Some(problem) = user_problem(&app, &user_id, true) {
        return problem;
    }
    open_pc_ticket(
        &app,
        NewTicket {
            purpose: Purpose::Login,
            via: "fido",
            user_id: &user_id,
            oidc_req: Some(&req),
            regcode_id: None,
            action: Action::Authenticate,
            step: Step::Waiting,
            pc_claimed: true,
        },
    )
}

/// `GET /change`: D1 starts: the user ID on the PC.
pub async fn change_form(State(app): State<Arc<App>>) -> Response {
    app.templates.render(
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
pub async fn change_start(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    if cross_site(&app, &headers) {
        return forbidden_origin(&app);
    }
    let form = match super::oidc::read_form(&app, body).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let user_id = form.get("user_id").map(|s| s.trim().to_owned()).unwrap_or_default();
    if let Some(problem) = user_problem(&app, &user_id, true) {
        return problem;
    }
    open_pc_ticket(
        &app,
        NewTicket {
            purpose: Purpose::Change,
            via: "fido",
            user_id: &user_id,
            oidc_req: None,
            regcode_id: None,
            action: Action::Authenticate,
            step: Step::Waiting,
            pc_claimed: true,
        },
    )
}

fn open_pc_ticket(app: &App, new: NewTicket<'_>) -> Response {
    let now = app.now_ms();
    let created = ticket::create(&mut app.db(), now, lifetime_ms(app), new);
    match created {
        Ok((_, pc)) => with_pc_cookie(Redirect::to("/pc").into_response(), &pc, 3600),
        Err(e) => internal(e),
    }
}

/// `GET /enroll/hpki`, `/enroll/jpki` (card listener): E1/E2, and D2/D3 when a
/// phone is already registered.
pub async fn enroll_card(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerCertificates>,
    Path(scheme): Path<String>,
) -> Response {
    let method = match scheme.as_str() {
        "hpki" => Method::Hpki,
        "jpki" => Method::Jpki,
        _ => return msg(&app, StatusCode::NOT_FOUND, "ページがありません", "このページはありません。", ""),
    };
    let user_id = match super::oidc::card_user(&app, &peer, method) {
        Ok(u) => u,
        Err(page) => return *page,
    };
    let has_device = match device::get(app.db().conn(), &user_id) {
        Ok(d) => d.is_some(),
        Err(e) => return internal(e),
    };
    let now = app.now_ms();
    let created = ticket::create(
        &mut app.db(),
        now,
        lifetime_ms(&app),
        NewTicket {
            purpose: Purpose::Enroll,
            via: method.as_str(),
            user_id: &user_id,
            oidc_req: None,
            regcode_id: None,
            action: Action::Register,
            step: if has_device { Step::Confirm } else { Step::Waiting },
            pc_claimed: false,
        },
    );
    match created {
        Ok((_, pc)) => Redirect::to(&format!("{}/pc/claim?h={pc}", public(&app))).into_response(),
        Err(e) => internal(e),
    }
}

/// `GET /pc/claim?h=`: the PC takes its ticket over from the card listener (once).
pub async fn pc_claim(State(app): State<Arc<App>>, Query(params): Query<HashMap<String, String>>) -> Response {
    let Some(h) = params.get("h") else {
        return not_found_page(&app);
    };
    match ticket::claim(&mut app.db(), h) {
        // The cookie gets a fresh token: the one in this URL (and the history) is spent.
        Ok(Some(pc)) => with_pc_cookie(Redirect::to("/pc").into_response(), &pc, 3600),
        Ok(None) => msg(
            &app,
            StatusCode::BAD_REQUEST,
            "このURLは使用済みです",
            "この手続きのURLは既に使われたか、無効です。",
            "登録サイトから最初からやり直してください。",
        ),
        Err(e) => internal(e),
    }
}

fn not_found_page(app: &App) -> Response {
    app.templates.render(
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

fn expired_page(app: &App) -> Response {
    msg(app, StatusCode::GONE, "有効期限切れ", "QRコードの有効期限が切れました。", "最初からやり直してください。")
}

fn pc_ticket(app: &App, headers: &HeaderMap) -> Result<(Ticket, String), Box<Response>> {
    let Some(pc) = pc_cookie(headers) else {
        return Err(Box::new(not_found_page(app)));
    };
    match ticket::by_pc(app.db().conn(), &pc) {
        Ok(Some(t)) if t.pc_claimed => Ok((t, pc)),
        Ok(_) => Err(Box::new(not_found_page(app))),
        Err(e) => Err(Box::new(internal(e))),
    }
}

fn qr_svg(text: &str) -> Result<String, String> {
    let code = qrcode::QrCode::new(text.as_bytes()).map_err(|e| e.to_string())?;
    let svg = code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(240, 240).quiet_zone(true).build();
    // Inline in the page: drop the XML declaration.
    Ok(match svg.find("<svg") {
        Some(i) => svg[i..].to_owned(),
        None => svg,
    })
}

fn clock_time(ms: i64) -> String {
    // Japan Standard Time (UTC+9), as the users read it.
    let jst = rfc3339(ms + 9 * 3_600_000);
    jst.get(11..19).unwrap_or_default().to_owned()
}

/// `GET /pc`: the PC side of a ticket.
pub async fn pc_page(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let (t, pc) = match pc_ticket(&app, &headers) {
        Ok(x) => x,
        Err(page) => return *page,
    };
    let now = app.now_ms();
    if t.expired(now) && t.step != Step::Cancelled {
        return expired_page(&app);
    }
    let title = match t.purpose {
        Purpose::Login => "スマートフォンでログイン",
        Purpose::Change => "スマートフォンを変更する",
        _ => "スマートフォンを登録する",
    };
    let phone_url = format!("{}/m/{}", public(&app), ticket::phone_token(&pc, t.phase));
    let qr = match t.step {
        Step::Waiting | Step::Ceremony => match qr_svg(&phone_url) {
            Ok(svg) => svg,
            Err(e) => return internal(e),
        },
        _ => String::new(),
    };
    let instruction = match (t.purpose, t.action) {
        (Purpose::Login, _) => {
            "登録済みのスマートフォンでQRコードを読み取り、「セキュリティキーによるサインイン」を押してください。"
        }
        (Purpose::Change, Action::Authenticate) => {
            "変更前(登録済み)のスマートフォンでQRコードを読み取り、サインインしてください。"
        }
        (Purpose::Change, _) => "新しいスマートフォンでQRコードを読み取り、「登録」を押してください。",
        _ => "登録するスマートフォンでQRコードを読み取り、「登録」を押してください。",
    };
    let question = if t.purpose == Purpose::Change {
        "サインインしました。登録済みのスマートフォンを新しいスマートフォンに置き換えますか?"
    } else {
        "この本人IDには既にスマートフォンが登録されています。新しいスマートフォンに置き換えますか?"
    };
    let done = match t.purpose {
        Purpose::Login => "ログインしました。署名システムに戻ります…",
        Purpose::Change => "スマートフォンの変更が完了しました。以前のスマートフォンは使えなくなりました。",
        _ => "スマートフォンの登録が完了しました。",
    };
    let left = ((t.expires_at - now).max(0) / 1000) as u64;
    app.templates.render(
        StatusCode::OK,
        "pc.html",
        title,
        context! {
            step => t.step.as_str(),
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
            error => t.error,
        },
    )
}

/// `GET /pc/status`: what the PC page polls. A finished login hands out its
/// authorization-code redirect here, once, and only to the PC's cookie.
pub async fn pc_status(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let pc = pc_cookie(&headers)
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "invalid_request", "no ticket in this browser"))?;
    let t = ticket::by_pc(app.db().conn(), &pc)?
        .filter(|t| t.pc_claimed)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "invalid_request", "unknown ticket"))?;
    let now = app.now_ms();
    let mut out = json!({
        "step": t.step.as_str(),
        "phase": t.phase,
        "expired": t.expired(now),
        "error": t.error,
    });
    if t.purpose == Purpose::Login && t.step == Step::Done && ticket::collect(&mut app.db(), t.id)? {
        let req = t.oidc_req.clone().unwrap_or_default();
        match app.pending.issue_code(&req, &t.user_id, Method::Fido, now) {
            Some((code, request)) => {
                let mut q = vec![("code", code)];
                if let Some(s) = &request.state {
                    q.push(("state", s.clone()));
                }
                out["redirect"] = crate::auth::oidc::with_query(&request.redirect_uri, &q).into();
            }
            None => {
                out["error"] =
                    "ログイン要求の有効期限が切れています。署名システムからもう一度ログインしてください。".into();
            }
        }
        out["step"] = "collected".into();
    }
    let mut resp = Json(out).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `POST /pc/confirm`: the answer to "replace the registered phone?".
pub async fn pc_confirm(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    if cross_site(&app, &headers) {
        return forbidden_origin(&app);
    }
    let form = match super::oidc::read_form(&app, body).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let (t, pc) = match pc_ticket(&app, &headers) {
        Ok(x) => x,
        Err(page) => return *page,
    };
    let yes = match form.get("answer").map(String::as_str) {
        Some("yes") => true,
        Some("no") => false,
        _ => return ApiError::bad_request("answer must be yes or no").into_response(),
    };
    match ticket::answer_replace(&mut app.db(), app.now_ms(), lifetime_ms(&app), &pc, yes) {
        Ok(true) => Redirect::to("/pc").into_response(),
        Ok(false) if t.expired(app.now_ms()) => expired_page(&app),
        Ok(false) => Redirect::to("/pc").into_response(),
        Err(e) => internal(e),
    }
}

enum PhoneTicket {
    Ok(Ticket),
    Page(Response),
}

fn phone_ticket(app: &App, token: &str) -> PhoneTicket {
    match ticket::by_phone(app.db().conn(), token) {
        Ok(Some(t)) if t.expired(app.now_ms()) => PhoneTicket::Page(expired_page(app)),
        Ok(Some(t)) => PhoneTicket::Ok(t),
        Ok(None) => PhoneTicket::Page(msg(
            app,
            StatusCode::NOT_FOUND,
            "QRコードが無効です",
            "このQRコードは無効か、既に使われています。",
            "PCの画面に表示されている最新のQRコードを読み取ってください。",
        )),
        Err(e) => PhoneTicket::Page(internal(e)),
    }
}

/// `GET /m/<token>`: the phone page.
pub async fn phone_page(State(app): State<Arc<App>>, Path(token): Path<String>) -> Response {
    let t = match phone_ticket(&app, &token) {
        PhoneTicket::Ok(t) => t,
        PhoneTicket::Page(p) => return p,
    };
    match t.step {
        Step::Waiting | Step::Ceremony => {}
        Step::Confirm => {
            return msg(
                &app,
                StatusCode::OK,
                "サインイン完了",
                "サインインしました。",
                "PCの画面で操作を続けてください。",
            )
        }
        Step::Done | Step::Collected if t.action == Action::Register && !t.labelled => {
            return Redirect::to(&format!("/m/{token}/label")).into_response()
        }
        Step::Done | Step::Collected => return finished_page(&app, &t),
        Step::Cancelled => {
            return msg(
                &app,
                StatusCode::GONE,
                "取り消されました",
                "この手続きは取り消されました。",
                "最初からやり直してください。",
            )
        }
    }
    let (title, lead, button, note) = match t.action {
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
            match t.purpose {
                Purpose::Change => "スマートフォンを変更(置き換え)するためのサインインです。ご自身がPCで「スマートフォンを変更する」を始めた場合だけ続けてください。心当たりがなければ中止し、認証局に連絡してください。",
                Purpose::Login => "PCでのログインのためのサインインです。ご自身がいまPCでログインしている場合だけ続けてください。",
                _ => "このスマートフォンに登録した本人IDでサインインします。",
            },
        ),
    };
    app.templates.render(
        StatusCode::OK,
        "phone.html",
        title,
        context! { action => if t.action == Action::Register { "register" } else { "authenticate" }, user_id => t.user_id, lead, button, note },
    )
}

fn finished_page(app: &App, t: &Ticket) -> Response {
    let (message, hint) = match (t.purpose, t.action) {
        (Purpose::Login, _) => ("ログインしました。", "PCの画面に戻ってください。"),
        (Purpose::Verify, _) => ("サインインしました。このスマートフォンは登録済みです。", ""),
        (_, Action::Register) if t.via == "regcode" => ("スマートフォンの登録が完了しました。", ""),
        _ => ("手続きが完了しました。", "PCの画面も完了になります。"),
    };
    msg(app, StatusCode::OK, "完了", message, hint)
}

fn refused(description: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", description)
}

/// `POST /m/<token>/begin`: the WebAuthn options (the challenge is kept in the ticket).
pub async fn phone_begin(
    State(app): State<Arc<App>>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if cross_site(&app, &headers) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "access_denied", "requests from other sites are refused"));
    }
    let now = app.now_ms();
    let t = ticket::by_phone(app.db().conn(), &token)?.ok_or_else(|| {
        refused("このQRコードは無効か、既に使われています。PCの画面の最新のQRコードを読み取ってください。")
    })?;
    if t.expired(now) {
        return Err(refused("QRコードの有効期限が切れました。最初からやり直してください。"));
    }
    if !matches!(t.step, Step::Waiting | Step::Ceremony) {
        return Err(refused("この手続きは既に完了しているか、PCでの操作を待っています。"));
    }
    let user = crate::users::get(&app.db(), &t.user_id).map_err(ApiError::internal)?;
    if user.status != "active" {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "access_denied",
            "この利用者は利用停止中です。認証局に連絡してください。",
        ));
    }
    let (options, state) = match t.action {
        Action::Register => {
            let current = device::get(app.db().conn(), &t.user_id)?;
            let (o, s) = app
                .rp
                .start_registration(&t.user_id, current.as_ref().map(|d| &d.passkey))
                .map_err(ApiError::internal)?;
            (serde_json::to_value(o).map_err(ApiError::internal)?, s)
        }
        Action::Authenticate => {
            let device = device::get(app.db().conn(), &t.user_id)?
                .ok_or_else(|| refused("スマートフォンが登録されていません。先に登録してください。"))?;
            let (o, s) = app.rp.start_authentication(&device.passkey).map_err(ApiError::internal)?;
            (serde_json::to_value(o).map_err(ApiError::internal)?, s)
        }
        Action::None => return Err(refused("この手続きにスマートフォンの操作はありません。")),
    };
    if !ticket::begin(&mut app.db(), now, &t, &state)? {
        return Err(refused("QRコードの有効期限が切れたか、手続きが進んでいます。PCの画面を確認してください。"));
    }
    Ok(Json(options).into_response())
}

/// `POST /m/<token>/finish`: verifies the phone's answer (once per challenge).
pub async fn phone_finish(
    State(app): State<Arc<App>>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if cross_site(&app, &headers) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "access_denied", "requests from other sites are refused"));
    }
    let bytes = super::body::read_limited(body, MAX_RESPONSE_BYTES).await?;
    let now = app.now_ms();
    let t = ticket::by_phone(app.db().conn(), &token)?
        .ok_or_else(|| refused("このQRコードは無効か、既に使われています。"))?;
    // Single use: the challenge is gone from here on, whatever the outcome.
    let state = ticket::take(&mut app.db(), now, t.id)?
        .ok_or_else(|| refused("この認証要求は使用済みか、有効期限が切れています。もう一度ボタンを押してください。"))?;
    let outcome = match t.action {
        Action::Register => register(&app, &t, &bytes, &state, &headers, now),
        _ => authenticate(&app, &t, &bytes, &state, now),
    };
    match outcome {
        Ok(next) => Ok(Json(json!({ "next": next.replace("{token}", &token) })).into_response()),
        Err(FidoError::Refused(reason)) => {
            tracing::info!(user = %t.user_id, "phone refused: {reason}");
            let shown = format!("スマートフォンの応答を確認できませんでした({reason})。もう一度お試しください。");
            ticket::note_error(&mut app.db(), t.id, &shown)?;
            Err(refused(shown))
        }
        Err(FidoError::Internal(e)) => Err(ApiError::internal(e)),
    }
}

fn store_err(e: impl std::fmt::Display) -> FidoError {
    FidoError::Internal(e.to_string())
}

/// A label from the browser's User-Agent (the user may change it).
fn auto_label(headers: &HeaderMap) -> String {
    let ua = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let kind = if ua.contains("iPhone") {
        "iPhone"
    } else if ua.contains("iPad") {
        "iPad"
    } else if ua.contains("Android") {
        "Android"
    } else {
        "スマートフォン"
    };
    kind.to_owned()
}

fn register(
    app: &App,
    t: &Ticket,
    bytes: &[u8],
    state: &str,
    headers: &HeaderMap,
    now: i64,
) -> Result<String, FidoError> {
    let passkey = app.rp.finish_registration(bytes, state)?;
    let label = format!("{} {}", auto_label(headers), &rfc3339(now + 9 * 3_600_000)[..10]);
    let actor = format!("user:{}", t.user_id);
    enum Outcome {
        Installed,
        Moved,
        NeedsConfirmation,
        AlreadyRegistered,
    }
    let outcome = app
        .db()
        .write(|tx| {
            // A phone registered meanwhile (another ticket) is replaced only after a yes.
            let has_device = device::get(tx, &t.user_id)?.is_some();
            if has_device && !ticket::replace_confirmed(tx, t.id)? {
                if t.regcode_id.is_some() {
                    // No PC to ask: a registration code does not replace a phone.
                    ticket::cancel(tx, t.id)?;
                    return Ok(Outcome::AlreadyRegistered);
                }
                ticket::require_confirmation(tx, t.id)?;
                return Ok(Outcome::NeedsConfirmation);
            }
            if !ticket::advance(tx, t)? {
                return Ok(Outcome::Moved);
            }
            device::install(tx, now, &actor, &t.user_id, &passkey, &label, &t.via)?;
            if let Some(code) = t.regcode_id {
                regcode::mark_used(tx, code)?;
            }
            Ok(Outcome::Installed)
        })
        .map_err(store_err)?;
    match outcome {
        Outcome::Installed => Ok("/m/{token}/label".into()),
        Outcome::Moved => Err(FidoError::Refused("the ticket moved on meanwhile".into())),
        Outcome::NeedsConfirmation => Err(FidoError::Refused(
            "a phone was registered for this user meanwhile: answer the replace question on the PC, or sign in with that phone".into(),
        )),
        Outcome::AlreadyRegistered => Err(FidoError::Refused(
            "a phone is already registered for this user: sign in with it, or ask the CA to remove it first".into(),
        )),
    }
}

fn authenticate(app: &App, t: &Ticket, bytes: &[u8], state: &str, now: i64) -> Result<String, FidoError> {
    let result = app.rp.finish_authentication(bytes, state)?;
    let device = device::get(app.db().conn(), &t.user_id)
        .map_err(store_err)?
        .ok_or_else(|| FidoError::Refused("no registered device".into()))?;
    let used: &[u8] = result.cred_id().as_ref();
    if used != device.credential_id.as_slice() {
        return Err(FidoError::Refused("the credential is not this user's registered device".into()));
    }
    if !crate::fido::counter_ok(device.counter, result.counter()) {
        return Err(FidoError::Refused(format!(
            "the sign counter went backwards ({} after {}): the authenticator may be cloned",
            result.counter(),
            device.counter
        )));
    }
    let mut passkey = device.passkey.clone();
    passkey.update_credential(&result);
    let actor = format!("user:{}", t.user_id);
    let purpose = match t.purpose {
        Purpose::Login => "login",
        Purpose::Change => "device_change",
        _ => "check",
    };
    let ok = app
        .db()
        .write(|tx| {
            if !ticket::advance(tx, t)? {
                return Ok(false);
            }
            if !device::record_use(tx, now, &device, &passkey, result.counter())? {
                return Ok(false);
            }
            audit::append(
                tx,
                now,
                &[Event {
                    actor: &actor,
                    event: "fido.signin",
                    user_id: Some(&t.user_id),
                    outcome: "ok",
                    detail: json!({ "purpose": purpose, "credential_id": b64url(&device.credential_id), "counter": result.counter() }),
                    ..Default::default()
                }],
            )?;
            Ok(true)
        })
        .map_err(store_err)?;
    if !ok {
        return Err(FidoError::Refused("the ticket or the device changed meanwhile".into()));
    }
    Ok("/m/{token}".into())
}

/// `GET /m/<token>/label`: the label screen after a registration.
pub async fn label_page(State(app): State<Arc<App>>, Path(token): Path<String>) -> Response {
    let t = match phone_ticket(&app, &token) {
        PhoneTicket::Ok(t) => t,
        PhoneTicket::Page(p) => return p,
    };
    if t.action != Action::Register || !matches!(t.step, Step::Done | Step::Collected) || t.labelled {
        return Redirect::to(&format!("/m/{token}")).into_response();
    }
    let label = match device::get(app.db().conn(), &t.user_id) {
        Ok(Some(d)) => d.label,
        Ok(None) => String::new(),
        Err(e) => return internal(e),
    };
    app.templates.render(
        StatusCode::OK,
        "label.html",
        "ラベル登録",
        context! { action => format!("/m/{token}/label"), label },
    )
}

/// `POST /m/<token>/label`: OK keeps the (possibly edited) label, キャンセル the automatic one; both finish.
pub async fn label_submit(
    State(app): State<Arc<App>>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if cross_site(&app, &headers) {
        return forbidden_origin(&app);
    }
    let form = match super::oidc::read_form(&app, body).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let t = match phone_ticket(&app, &token) {
        PhoneTicket::Ok(t) => t,
        PhoneTicket::Page(p) => return p,
    };
    if t.action != Action::Register || !matches!(t.step, Step::Done | Step::Collected) {
        return Redirect::to(&format!("/m/{token}")).into_response();
    }
    match ticket::mark_labelled(&mut app.db(), t.id) {
        Ok(true) => {}
        Ok(false) => return finished_page(&app, &t),
        Err(e) => return internal(e),
    }
    let label: String = form.get("label").map(|l| l.trim().chars().take(64).collect()).unwrap_or_default();
    if form.get("answer").map(String::as_str) == Some("ok") && !label.is_empty() {
        if let Err(e) = app.db().write(|tx| device::set_label(tx, &t.user_id, &label)) {
            return internal(e);
        }
    }
    finished_page(&app, &t)
}

fn regcode_error_page(app: &App, e: &regcode::RegcodeError) -> Response {
    use regcode::RegcodeError as E;
    match e {
        E::Unknown => msg(
            app,
            StatusCode::NOT_FOUND,
            "登録URLが無効です",
            "この登録URLは無効です。",
            "書面に記載されたURLを確認してください。",
        ),
        E::Expired => msg(
            app,
            StatusCode::GONE,
            "登録URLの有効期限切れ",
            "この登録URLは有効期限が切れています。",
            "認証局に連絡して、新しい登録URLの発行を受けてください。",
        ),
        E::Locked => msg(
            app,
            StatusCode::FORBIDDEN,
            "登録URLはロックされています",
            "パスワードを5回以上間違えたため、この登録URLは使えなくなりました。",
            "認証局に連絡して、新しい登録URLの発行を受けてください。",
        ),
        E::Used => msg(
            app,
            StatusCode::GONE,
            "登録URLは使用済みです",
            "この登録URLでは既にスマートフォンが登録されています。",
            "スマートフォンを変更する場合は登録サイトから手続きするか、認証局に連絡してください。",
        ),
        E::Revoked => msg(
            app,
            StatusCode::GONE,
            "登録URLは無効です",
            "この登録URLは無効になりました(新しい登録URLが発行されています)。",
            "最新の書面に記載されたURLを使うか、認証局に連絡してください。",
        ),
        other => internal(other),
    }
}

/// `GET /r/<code>`: E3: a printed registration URL asks for its password.
pub async fn regcode_page(State(app): State<Arc<App>>, Path(code): Path<String>) -> Response {
    let checked = regcode::check(&app.db(), app.now_ms(), &code);
    match checked {
        Ok(_) => app.templates.render(
            StatusCode::OK,
            "password.html",
            "スマートフォンの初期登録",
            context! { action => format!("/r/{code}") },
        ),
        Err(e) => regcode_error_page(&app, &e),
    }
}

/// `POST /r/<code>`: checks the password and opens a phone-only ticket.
pub async fn regcode_submit(
    State(app): State<Arc<App>>,
    Path(code): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if cross_site(&app, &headers) {
        return forbidden_origin(&app);
    }
    let form = match super::oidc::read_form(&app, body).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let password = form.get("password").cloned().unwrap_or_default();
    let now = app.now_ms();
    let max = app.config.fido.regcode_max_tries;
    let app2 = Arc::clone(&app);
    let code2 = code.clone();
    // Argon2 is slow on purpose: off the async workers.
    let opened = tokio::task::spawn_blocking(move || regcode::open(app2.db_mutex(), now, &code2, &password, max)).await;
    let opened =
        match opened {
            Ok(Ok(o)) => o,
            Ok(Err(regcode::RegcodeError::WrongPassword { left })) => return app.templates.render(
                StatusCode::UNAUTHORIZED,
                "password.html",
                "スマートフォンの初期登録",
                context! {
                    action => format!("/r/{code}"),
                    error => format!("パスワードが違います。あと{left}回間違えると、この登録URLは使えなくなります。"),
                },
            ),
            Ok(Err(e)) => return regcode_error_page(&app, &e),
            Err(e) => return internal(e),
        };
    if let Some(problem) = user_problem(&app, &opened.user_id, false) {
        return problem;
    }
    let has_device = match device::get(app.db().conn(), &opened.user_id) {
        Ok(d) => d.is_some(),
        Err(e) => return internal(e),
    };
    let created = ticket::create(
        &mut app.db(),
        now,
        lifetime_ms(&app),
        NewTicket {
            purpose: if has_device { Purpose::Verify } else { Purpose::Enroll },
            via: "regcode",
            user_id: &opened.user_id,
            oidc_req: None,
            regcode_id: Some(opened.id),
            action: if has_device { Action::Authenticate } else { Action::Register },
            step: Step::Waiting,
            pc_claimed: true,
        },
    );
    match created {
        Ok((t, pc)) => Redirect::to(&format!("/m/{}", ticket::phone_token(&pc, t.phase))).into_response(),
        Err(e) => internal(e),
    }
}

/// `GET /link/hpki` (card listener): E4 starts with the HPKI card.
pub async fn link_hpki(State(app): State<Arc<App>>, Extension(peer): Extension<PeerCertificates>) -> Response {
    let user_id = match super::oidc::card_user(&app, &peer, Method::Hpki) {
        Ok(u) => u,
        Err(page) => return *page,
    };
    let created = ticket::create(
        &mut app.db(),
        app.now_ms(),
        lifetime_ms(&app),
        NewTicket {
            purpose: Purpose::Link,
            via: "hpki",
            user_id: &user_id,
            oidc_req: None,
            regcode_id: None,
            action: Action::None,
            step: Step::Waiting,
            pc_claimed: true,
        },
    );
    let pc = match created {
        Ok((_, pc)) => pc,
        Err(e) => return internal(e),
    };
    app.templates.render(
        StatusCode::OK,
        "message.html",
        "マイナンバーカードを登録する",
        context! {
            message => format!("本人ID: {user_id}"),
            hint => "HPKIカードで本人を確認しました。ICカードリーダーのカードをマイナンバーカードに差し替えてから「次へ」を押し、利用者証明用電子証明書の暗証番号(4桁)を入力してください。",
            link => format!("{}/link/jpki?t={pc}", card(&app)),
            link_text => "次へ",
        },
    )
}

/// `GET /link/jpki?t=` (card listener): E4 ends: links the My Number card.
pub async fn link_jpki(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerCertificates>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let now = app.now_ms();
    let Some(token) = params.get("t") else {
        return not_found_page(&app);
    };
    let t = match ticket::by_pc(app.db().conn(), token) {
        Ok(Some(t)) if t.purpose == Purpose::Link && t.step == Step::Waiting && !t.expired(now) => t,
        Ok(Some(t)) if t.expired(now) => return expired_page(&app),
        Ok(_) => {
            return msg(
                &app,
                StatusCode::BAD_REQUEST,
                "手続きが無効です",
                "この手続きは使用済みか、無効です。",
                "登録サイトから最初からやり直してください。",
            )
        }
        Err(e) => return internal(e),
    };
    if let Err(e) = app.jpki.validate(&peer.0, app.clock.now()) {
        return super::oidc::card_user(&app, &peer, Method::Jpki).err().map(|p| *p).unwrap_or_else(|| internal(e));
    }
    let Some(cert) = peer.0.first() else {
        return not_found_page(&app);
    };
    // Consume the ticket first: one ticket links one card, also under concurrent requests.
    match ticket::take_link(&mut app.db(), now, token) {
        Ok(Some(_)) => {}
        Ok(None) => {
            return msg(
                &app,
                StatusCode::BAD_REQUEST,
                "手続きが無効です",
                "この手続きは使用済みか、無効です。",
                "登録サイトから最初からやり直してください。",
            )
        }
        Err(e) => return internal(e),
    }
    let linked = {
        let mut db = app.db();
        crate::auth::cards::jpki_link(&mut db, app.clock.as_ref(), &format!("user:{}", t.user_id), &t.user_id, cert)
    };
    if linked.is_err() {
        // Nothing was linked: the user may try again with the right card.
        if let Err(e) = ticket::untake_link(&mut app.db(), t.id) {
            return internal(e);
        }
    }
    match linked {
        Ok(_) => {}
        Err(crate::auth::cards::CardError::State(_)) => {
            return msg(
                &app,
                StatusCode::CONFLICT,
                "登録できません",
                "このマイナンバーカードは、既に別の利用者に登録されています。",
                "ご自身のマイナンバーカードを使ってください。心当たりがない場合は認証局に連絡してください。",
            )
        }
        Err(e) => return internal(e),
    }
    msg(
        &app,
        StatusCode::OK,
        "完了",
        &format!("マイナンバーカードを本人ID {} に登録しました。", t.user_id),
        "これからはマイナンバーカードでもログインできます。",
    )
}
