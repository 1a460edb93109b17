//! The pages of a printed registration code (`/r/<code>`): the password,
//! then the phone's registration.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use minijinja::context;

use super::*;

fn regcode_error_page(e: Error) -> Response {
    match e {
        Error::NotFound(..) => msg(
            StatusCode::NOT_FOUND,
            "登録URLが無効です",
            "この登録URLは無効です。",
            "書面に記載されたURLを確認してください。",
        ),
        Error::Gone(Gone::Expired, _) => msg(
            StatusCode::GONE,
            "登録URLの有効期限切れ",
            "この登録URLは有効期限が切れています。",
            "認証局に連絡して、新しい登録URLの発行を受けてください。",
        ),
        Error::Forbidden(Forbidden::Locked, _) => msg(
            StatusCode::FORBIDDEN,
            "登録URLはロックされています",
            "パスワードを5回以上間違えたため、この登録URLは使えなくなりました。",
            "認証局に連絡して、新しい登録URLの発行を受けてください。",
        ),
        Error::Gone(Gone::Used, _) => msg(
            StatusCode::GONE,
            "登録URLは使用済みです",
            "この登録URLでは既にスマートフォンが登録されています。",
            "スマートフォンを変更する場合は登録サイトから手続きするか、認証局に連絡してください。",
        ),
        Error::Gone(Gone::Revoked, _) => msg(
            StatusCode::GONE,
            "登録URLは無効です",
            "この登録URLは無効になりました(新しい登録URLが発行されています)。",
            "最新の書面に記載されたURLを使うか、認証局に連絡してください。",
        ),
        other => user_page(other),
    }
}

/// `GET /r/<code>`: E3: a printed registration URL asks for its password.
pub async fn regcode_page(State(app): State<Arc<App>>, Path(code): Path<String>) -> Response {
    match app.phones.regcode_check(&code).await {
        Ok(_) => pages::templates().render(
            StatusCode::OK,
            "password.html",
            "スマートフォンの初期登録",
            context! { action => format!("/r/{code}") },
        ),
        Err(e) => regcode_error_page(e),
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
        return forbidden_origin();
    }
    let form = match read_form(body).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let password = form.get("password").cloned().unwrap_or_default();
    match app.phones.regcode_open(&code, &password).await {
        Ok(phone) => Redirect::to(&format!("/m/{phone}")).into_response(),
        Err(Error::Unauthenticated(Credential::Password { left }, _)) => pages::templates().render(
            StatusCode::UNAUTHORIZED,
            "password.html",
            "スマートフォンの初期登録",
            context! {
                action => format!("/r/{code}"),
                error => format!("パスワードが違います。あと{left}回間違えると、この登録URLは使えなくなります。"),
            },
        ),
        Err(e) => regcode_error_page(e),
    }
}
