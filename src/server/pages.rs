//! HTML pages (Japanese, self-contained: no external assets).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The pages' style sheet (inline: pages load nothing from elsewhere).
pub const STYLE: &str = "body{font-family:system-ui,'Hiragino Sans','Noto Sans JP',sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#222;line-height:1.6}\
h1{font-size:1.4rem;border-bottom:2px solid #a33;padding-bottom:.3rem}\
a.button,button{display:block;margin:.8rem 0;padding:.9rem 1rem;border:1px solid #a33;border-radius:.4rem;background:#fff;color:#a33;text-decoration:none;font-size:1.05rem;text-align:left;width:100%;cursor:pointer}\
a.button:hover,button:hover{background:#fbeeee}.error{color:#a00}.note{color:#555;font-size:.9rem}\
input{display:block;width:100%;box-sizing:border-box;padding:.6rem;font-size:1.05rem;margin:.3rem 0 .8rem}.qr svg{width:16rem;height:16rem}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}\
h2{font-size:1.1rem;margin-top:1.6rem}pre.xml{white-space:pre-wrap;word-break:break-all;font-size:.75rem;background:#f6f6f6;padding:.5rem}";

/// The policy of pages with the pages' script.
const SCRIPT_CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; \
                          img-src 'self' data:; form-action 'self'; frame-ancestors 'none'";

/// The policy of pages without script.
const STATIC_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'";

/// The 429 page, rendered once: a flood is answered with it thousands of
/// times a second.
pub fn too_many() -> Response {
    static HTML: std::sync::OnceLock<bytes::Bytes> = std::sync::OnceLock::new();
    rendered_once(
        &HTML,
        StatusCode::TOO_MANY_REQUESTS,
        "アクセスが集中しています",
        "短い時間に多くの要求がありました。",
        "しばらく待ってから、もう一度お試しください。",
    )
}

/// The 503 page when the open routes' budget for all clients together is
/// used up, rendered once.
pub fn busy() -> Response {
    static HTML: std::sync::OnceLock<bytes::Bytes> = std::sync::OnceLock::new();
    rendered_once(
        &HTML,
        StatusCode::SERVICE_UNAVAILABLE,
        "ただいま混雑しています",
        "ただいまアクセスが集中しているため、受け付けられませんでした。",
        "しばらく待ってから、もう一度お試しください。ログイン済みの署名システムからの署名は、この間も利用できます。",
    )
}

fn rendered_once(
    cell: &'static std::sync::OnceLock<bytes::Bytes>,
    status: StatusCode,
    title: &str,
    message: &str,
    hint: &str,
) -> Response {
    let html = cell.get_or_init(|| {
        let ctx = minijinja::context! { message, hint, error => true, noscript => true };
        let html = templates().html("message.html", title, ctx);
        bytes::Bytes::from(html.unwrap_or_else(|_| format!("<!DOCTYPE html><title>{status}</title><p>{message}</p>")))
    });
    html_response(status, html.clone(), STATIC_CSP)
}

/// An HTML answer with the headers every page carries (no caching, no framing,
/// a content security policy, a referrer for our own origin only: page URLs
/// may hold tickets, and our forms' `Origin` must name us, never `null`).
fn html_response(status: StatusCode, html: impl Into<axum::body::Body>, csp: &'static str) -> Response {
    let mut resp = (status, html.into()).into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    resp
}

/// The page for a login by another method than the signing system asked for
/// (`acr_values`): the request stays, for the method it asked for.
pub fn wrong_login_method(asked: crate::auth::Method) -> Response {
    let name = asked.about().name_ja;
    error(
        StatusCode::FORBIDDEN,
        "ログイン方法が違います",
        &format!("署名システムは{name}でのログインを求めています。"),
        &format!("{name}でログインしてください。"),
    )
}

/// An error page (without script).
pub fn error(status: StatusCode, title: &str, message: &str, hint: &str) -> Response {
    templates().page(status, "message.html", title, minijinja::context! { message, hint, error => true })
}

/// The one page renderer: every page is a template (`src/server/templates`,
/// minijinja with HTML auto-escaping), parsed once per process.
pub fn templates() -> &'static Templates {
    static TEMPLATES: std::sync::OnceLock<Templates> = std::sync::OnceLock::new();
    TEMPLATES.get_or_init(Templates::load)
}

/// The pages' templates.
pub struct Templates {
    env: minijinja::Environment<'static>,
    /// The templates that did not parse (none: a unit test renders each).
    broken: Vec<String>,
}

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("register_index.html", include_str!("templates/register_index.html")),
    ("id_form.html", include_str!("templates/id_form.html")),
    ("pc.html", include_str!("templates/pc.html")),
    ("phone.html", include_str!("templates/phone.html")),
    ("label.html", include_str!("templates/label.html")),
    ("password.html", include_str!("templates/password.html")),
    ("message.html", include_str!("templates/message.html")),
    ("index.html", include_str!("templates/index.html")),
    ("chooser.html", include_str!("templates/chooser.html")),
    ("demo.html", include_str!("templates/demo.html")),
    ("signed.html", include_str!("templates/signed.html")),
    ("notice.html", include_str!("templates/notice.html")),
];

impl Templates {
    /// Loads the embedded templates; one that does not parse is noted
    /// ([`Templates::check`]: the server does not start with it).
    fn load() -> Templates {
        let mut env = minijinja::Environment::new();
        let mut broken = Vec::new();
        for (name, source) in TEMPLATES {
            if let Err(e) = env.add_template(name, source) {
                broken.push(format!("template {name}: {e}"));
            }
        }
        Templates { env, broken }
    }

    /// Whether every template parsed (checked when the server starts).
    pub fn check(&self) -> Result<(), crate::error::Error> {
        match self.broken.first() {
            Some(first) => Err(crate::error::Error::Internal(first.clone())),
            None => Ok(()),
        }
    }

    /// Renders a template to HTML (with `title` and the style added).
    pub fn html(&self, name: &str, title: &str, ctx: minijinja::Value) -> Result<String, minijinja::Error> {
        let ctx = minijinja::context! { title => title, style => STYLE, ..ctx };
        self.env.get_template(name).and_then(|t| t.render(ctx))
    }

    /// Renders a template into a page with the pages' script.
    pub fn render(&self, status: StatusCode, name: &str, title: &str, ctx: minijinja::Value) -> Response {
        self.respond(status, name, title, ctx, SCRIPT_CSP)
    }

    /// Renders a template into a page without script (its policy allows none).
    pub fn page(&self, status: StatusCode, name: &str, title: &str, ctx: minijinja::Value) -> Response {
        let ctx = minijinja::context! { noscript => true, ..ctx };
        self.respond(status, name, title, ctx, STATIC_CSP)
    }

    fn respond(
        &self,
        status: StatusCode,
        name: &str,
        title: &str,
        ctx: minijinja::Value,
        csp: &'static str,
    ) -> Response {
        match self.html(name, title, ctx) {
            Ok(html) => html_response(status, html, csp),
            Err(e) => {
                tracing::error!("template {name}: {e}");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
            }
        }
    }

    /// A message page (`error` styles it as a failure).
    pub fn message(&self, status: StatusCode, title: &str, message: &str, hint: &str) -> Response {
        let error = !status.is_success();
        self.render(status, "message.html", title, minijinja::context! { message, hint, error })
    }
}

/// `GET /assets/inkan.js`: the pages' script.
pub async fn script() -> Response {
    let mut resp = include_str!("assets/inkan.js").into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_renders_and_escapes() {
        let t = Templates::load();
        assert!(t.check().is_ok(), "{:?}", t.broken);
        for (name, _) in TEMPLATES.iter().filter(|(n, _)| *n != "base.html") {
            // Every template parsed (a missing one would not render).
            let html = t
                .html(
                    name,
                    "<b>title</b>",
                    minijinja::context! { user_id => "<script>x</script>", step => "waiting", message => "<i>m</i>", qr => "<svg></svg>" },
                )
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(html.contains("&lt;b&gt;title&lt;&#x2f;b&gt;"), "{name}: the title is escaped");
            assert!(!html.contains("<script>x") && !html.contains("<i>m"), "{name}: inputs are escaped");
        }
    }
}
