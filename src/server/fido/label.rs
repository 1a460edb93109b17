//! The label screen after a phone's registration (`/m/<token>/label`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;

use super::*;

/// `GET /m/<token>/label`: the label screen after a registration.
pub async fn label_page(State(app): State<Arc<App>>, Path(token): Path<String>) -> Response {
    let (t, label) = match app.phones.label_view(&token).await {
        Ok(x) => x,
        Err(e) => return phone_ticket_page(e),
    };
    if t.expired(app.now_ms()) {
        return expired_page();
    }
    let Some(label) = label else {
        return Redirect::to(&format!("/m/{token}")).into_response();
    };
    pages::templates().render(
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
        return forbidden_origin();
    }
    let form = match read_form(body).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let label = (form.get("answer").map(String::as_str) == Some("ok")).then(|| form.get("label")).flatten();
    match app.phones.label(&token, label.map(String::as_str)).await {
        Ok((t, _)) if t.expired(app.now_ms()) => expired_page(),
        Ok((t, _)) if t.action() != Action::Register || !t.stage.finished() => {
            Redirect::to(&format!("/m/{token}")).into_response()
        }
        Ok((t, _)) => finished_page(&t),
        Err(e) => phone_ticket_page(e),
    }
}
