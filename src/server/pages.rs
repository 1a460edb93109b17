//! HTML pages (Japanese, self-contained: no external assets).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,'Hiragino Sans','Noto Sans JP',sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#222;line-height:1.6}\
h1{font-size:1.4rem;border-bottom:2px solid #a33;padding-bottom:.3rem}\
a.button,button{display:block;margin:.8rem 0;padding:.9rem 1rem;border:1px solid #a33;border-radius:.4rem;background:#fff;color:#a33;text-decoration:none;font-size:1.05rem;text-align:left;width:100%;cursor:pointer}\
a.button:hover,button:hover{background:#fbeeee}.error{color:#a00}.note{color:#555;font-size:.9rem}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}";

/// A whole page with a status code. `body` is trusted HTML; escape inputs with [`esc`].
pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html><html lang=\"ja\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{t} - inkan</title><style>{STYLE}</style></head><body><h1>{t}</h1>{body}<p class=\"note\">inkan 電子署名基盤</p></body></html>",
        t = esc(title)
    );
    let mut resp = (status, html).into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'"),
    );
    resp
}

/// An error page.
pub fn error(status: StatusCode, title: &str, message: &str, hint: &str) -> Response {
    page(status, title, &format!("<p class=\"error\">{}</p><p>{}</p>", esc(message), esc(hint)))
}
