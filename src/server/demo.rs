//! Demo mode's pages: `/demo`, a small signing-system page that is an OpenID
//! Connect client of inkan itself (as an e-prescription app would be): log in,
//! pick a file, sign it, download the .p7s, see who signed and when. The demo
//! users, cards and client are set up by [`crate::demo`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::{Multipart, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64ct::{Base64, Encoding};
use inkan_keystore::DigestAlgorithm;

use crate::auth::oidc::Grant;
use crate::auth::{random_token, token_hash};
use crate::clock::rfc3339;
use crate::config::Config;
use crate::encoding::b64url;
use crate::signing::format::Family;
use crate::signing::{Activation, EpsInput, Format, Payload, Request};

use super::error::ApiError;
use super::pages;
use super::state::App;

/// The demo page's title.
const TITLE: &str = "デモ署名システム (電子処方箋)";

/// What `serve --demo` prints.
pub fn print_banner(config: &Config, client_id: &str, secret: &str) {
    let base = config.server.public_url.trim_end_matches('/');
    println!();
    println!("demo mode: open {base}/demo  (the TLS certificate is from fixtures/pki/hpki-root.pem)");
    println!(
        "  demo users: 100001 (doctor, HPKI card fixtures/pki/holders/hpki-doctor.p12, My Number card jpki-1.p12),"
    );
    println!(
        "              999001-jpa (pharmacist, HPKI card hpki-pharmacist.p12); .p12 password: {}",
        crate::fixtures::P12_PASSWORD
    );
    println!("  demo client: client_id={client_id} client_secret={secret}");
    println!("  redirect_uri: {base}/demo/callback");
    println!("  OIDC discovery: {base}/.well-known/openid-configuration");
    println!("  registration site (phones, My Number cards): {base}/register");
}

/// PKCE verifiers of demo logins in progress, by state.
fn verifiers() -> &'static Mutex<HashMap<String, String>> {
    static V: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    V.get_or_init(|| Mutex::new(HashMap::new()))
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

/// `GET /`: where to go.
pub async fn index(State(app): State<Arc<App>>) -> Response {
    let demo = app.demo_client.is_some();
    pages::templates().page(StatusCode::OK, "index.html", "inkan 電子署名基盤", minijinja::context! { demo })
}

/// `GET /demo`
pub async fn page(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if app.demo_client.is_none() {
        return pages::error(
            StatusCode::NOT_FOUND,
            "ページがありません",
            "デモは `inkan serve --demo` のときだけ使えます。",
            "",
        );
    }
    let principal = match cookie(&headers, "inkan_demo") {
        Some(t) => app.sessions.authenticate(&t).await.ok(),
        None => None,
    };
    match principal {
        None => {
            let links: Vec<minijinja::Value> = crate::auth::Method::ALL
                .iter()
                .map(|m| (m.as_str(), format!("{}でログイン", m.about().name_ja)))
                .chain([("", "ログイン方法を選ぶ".to_string())])
                .map(|(acr, label)| minijinja::context! { acr, label })
                .collect();
            pages::templates().page(StatusCode::OK, "demo.html", TITLE, minijinja::context! { links })
        }
        Some(b) => {
            let name = crate::users::get(app.store.as_ref(), &b.user_id).await.map(|u| u.name).unwrap_or_default();
            let expires = b.session().map(|s| s.expires_at).unwrap_or_default();
            let ctx = minijinja::context! {
                name,
                method => b.method(),
                user_id => b.user_id,
                expires => rfc3339(expires),
            };
            pages::templates().page(StatusCode::OK, "demo.html", TITLE, ctx)
        }
    }
}

/// `GET /demo/callback`: starts a login (`?start=<acr>`) or finishes one (`?code=&state=`).
pub async fn callback(State(app): State<Arc<App>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some((client_id, secret)) = app.demo_client.clone() else {
        return pages::error(StatusCode::NOT_FOUND, "ページがありません", "デモモードではありません。", "");
    };
    let base = app.config.server.public_url.trim_end_matches('/').to_owned();
    let redirect_uri = format!("{base}/demo/callback");
    if let Some(acr) = q.get("start") {
        let state = random_token();
        let verifier = random_token();
        let challenge = b64url(&token_hash(&verifier));
        verifiers().lock().unwrap_or_else(|p| p.into_inner()).insert(state.clone(), verifier);
        let mut params = vec![
            ("response_type", "code".to_owned()),
            ("client_id", client_id),
            ("redirect_uri", redirect_uri),
            ("scope", "openid sign".to_owned()),
            ("state", state),
            ("nonce", random_token()),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256".to_owned()),
        ];
        if !acr.is_empty() {
            params.push(("acr_values", acr.clone()));
        }
        return Redirect::to(&crate::auth::oidc::with_query(&format!("{base}/oidc/authorize"), &params))
            .into_response();
    }
    if let Some(err) = q.get("error") {
        return pages::error(
            StatusCode::BAD_REQUEST,
            "ログインできませんでした",
            err,
            q.get("error_description").map(String::as_str).unwrap_or(""),
        );
    }
    let (Some(code), Some(state)) = (q.get("code"), q.get("state")) else {
        return pages::error(
            StatusCode::BAD_REQUEST,
            "ログインできませんでした",
            "code または state がありません。",
            "",
        );
    };
    let Some(verifier) = verifiers().lock().unwrap_or_else(|p| p.into_inner()).remove(state) else {
        return pages::error(
            StatusCode::BAD_REQUEST,
            "ログインできませんでした",
            "このログインは開始されていません。",
            "もう一度ログインしてください。",
        );
    };
    let client = match crate::auth::clients::authenticate(app.store.as_ref(), &client_id, &secret).await {
        Ok(c) => c,
        Err(_) => {
            return pages::error(StatusCode::INTERNAL_SERVER_ERROR, "エラー", "デモクライアントがありません。", "")
        }
    };
    let grant = Grant { code, redirect_uri: Some(&redirect_uri), code_verifier: Some(&verifier) };
    match app.oidc.exchange(&app.sessions, &client, grant).await {
        Ok(tokens) => {
            let access = tokens.access_token;
            let mut resp = Redirect::to("/demo").into_response();
            if let Ok(v) =
                HeaderValue::from_str(&format!("inkan_demo={access}; Path=/demo; Secure; HttpOnly; SameSite=Lax"))
            {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        Err(e) => pages::error(StatusCode::BAD_REQUEST, "ログインできませんでした", &ApiError::from(e).description, ""),
    }
}

/// The demo's prescription CSV (made up; the national samples are not ours to reuse).
const DEMO_PRESCRIPTION_CSV: &str = "SJ1\n1,1,1310000001,01,inkanデモ病院\n2,100-0001,東京都千代田区千代田1-1\n\
5,0000000000000001,ﾃﾞﾓ ﾀﾛｳ,デモ　太郎\n11,0000000000000001,山田　太郎,ﾔﾏﾀﾞ ﾀﾛｳ\n51,20261206\n\
201,1,1,1,2,620000000,デモ錠５ｍｇ,1,1,錠\n211,1,1,101";

/// The demo's dispensing CSV.
const DEMO_DISPENSING_CSV: &str = "CJ1,\n1,デモ　太郎,1,20261206\n201,1,デモ錠５ｍｇ,1,錠,2,620000000,";

/// The prescription the demo signed last, whoever signed it: a pharmacist's
/// dispensing record is made over it (the demo's hand-off from the doctor's
/// session to the pharmacist's; one slot for the whole demo).
fn last_prescription() -> &'static Mutex<Option<Vec<u8>>> {
    static P: OnceLock<Mutex<Option<Vec<u8>>>> = OnceLock::new();
    P.get_or_init(|| Mutex::new(None))
}

/// A random id for a demo record (hex, UUID-like).
fn record_id() -> String {
    let t = random_token();
    t.chars().filter(char::is_ascii_alphanumeric).take(32).collect()
}

/// Signs a sample prescription (doctor) or a dispensing record over the
/// last one (pharmacist) and shows the result.
async fn sign_sample(app: &App, token: &str, kind: &str) -> Response {
    let result = async {
        let principal = app.sessions.authenticate(token).await?;
        let input = match kind {
            "dispensing" => {
                let prescription = last_prescription().lock().unwrap_or_else(|p| p.into_inner()).clone();
                let Some(prescription) = prescription else {
                    return Err(crate::error::Error::Invalid(
                        "先に医師としてログインし、見本の処方箋に署名してください。".into(),
                    ));
                };
                let record =
                    crate::eps::dispensing::record(&prescription, DEMO_DISPENSING_CSV.as_bytes(), &record_id())?;
                EpsInput::Document(record)
            }
            _ => EpsInput::PrescriptionCsv {
                csv: DEMO_PRESCRIPTION_CSV.as_bytes().to_vec(),
                prescription_id: record_id(),
            },
        };
        let mut signed = app
            .signing
            .sign(
                &principal,
                Request {
                    payload: Payload::Eps(input),
                    format: Format::Xades(None),
                    generation: None,
                    activation: Activation::Session,
                    via: "demo",
                    detail: None,
                    level: crate::signing::Level::BB,
                },
            )
            .await?;
        let parts = signed.signatures.pop().ok_or_else(|| crate::error::Error::Internal("no signature".into()))?;
        let document = parts.document.ok_or_else(|| crate::error::Error::Internal("no document".into()))?;
        Ok((principal, document))
    }
    .await;
    match result {
        Ok((bearer, document)) => {
            let (what, file) = if kind == "dispensing" {
                ("調剤結果", "dispensing.xml")
            } else {
                *last_prescription().lock().unwrap_or_else(|p| p.into_inner()) = Some(document.clone());
                ("処方箋", "prescription.xml")
            };
            let ctx = minijinja::context! {
                document => what,
                user_id => bearer.user_id,
                time => rfc3339(app.now_ms()),
                format => "XAdES-BES (電子処方箋プロファイル)",
                file,
                media_type => Family::Xades.about().media_type,
                base64 => Base64::encode_string(&document),
                download => format!("署名済みXML ({file}) をダウンロード"),
                xml => String::from_utf8_lossy(&document),
            };
            pages::templates().page(StatusCode::OK, "signed.html", "署名しました", ctx)
        }
        Err(e) => {
            let e = ApiError::from(e);
            pages::error(e.status, "署名できませんでした", &e.description, "")
        }
    }
}

/// `POST /demo/sign`: signs the uploaded file (CAdES) or a sample
/// e-prescription document (XAdES) with the logged-in user's key (or logs out).
pub async fn sign(State(app): State<Arc<App>>, headers: HeaderMap, mut form: Multipart) -> Response {
    let Some(token) = cookie(&headers, "inkan_demo") else { return Redirect::to("/demo").into_response() };
    let mut document = None;
    let mut file_name = "document".to_owned();
    while let Ok(Some(field)) = form.next_field().await {
        match field.name() {
            Some("sample") => {
                let kind = field.text().await.unwrap_or_default();
                return sign_sample(&app, &token, &kind).await;
            }
            Some("logout") => {
                if let Err(e) = app.sessions.end("demo", &token).await {
                    tracing::warn!("demo logout: {e}");
                }
                let mut resp = Redirect::to("/demo").into_response();
                resp.headers_mut().insert(
                    header::SET_COOKIE,
                    HeaderValue::from_static("inkan_demo=; Path=/demo; Max-Age=0; Secure; HttpOnly"),
                );
                return resp;
            }
            Some("document") => {
                file_name = field.file_name().unwrap_or("document").to_owned();
                match field.bytes().await {
                    Ok(b) => document = Some(b),
                    Err(e) => return pages::error(StatusCode::BAD_REQUEST, "署名できませんでした", &e.to_string(), ""),
                }
            }
            _ => {}
        }
    }
    let Some(document) = document else {
        return pages::error(StatusCode::BAD_REQUEST, "署名できませんでした", "ファイルがありません。", "");
    };
    let result = async {
        let principal = app.sessions.authenticate(&token).await?;
        let digest = inkan_keystore::Digest::of(DigestAlgorithm::Sha256, &document);
        let signed = app
            .signing
            .sign(
                &principal,
                Request {
                    payload: Payload::Digests(vec![digest]),
                    format: Format::CadesDetached,
                    generation: None,
                    activation: Activation::Session,
                    via: "demo",
                    detail: None,
                    level: crate::signing::Level::BB,
                },
            )
            .await?;
        let der = signed.signatures.into_iter().next().map(|p| p.into_detached()).unwrap_or_default();
        Ok::<_, crate::error::Error>((principal, der))
    }
    .await;
    match result {
        Ok((bearer, der)) => {
            let about = Family::Cades.about();
            let ctx = minijinja::context! {
                file => format!("{file_name}.{}", about.extension),
                document => file_name,
                user_id => bearer.user_id,
                time => rfc3339(app.now_ms()),
                format => "CAdES-BES (detached)",
                media_type => about.media_type,
                base64 => Base64::encode_string(&der),
                download => format!("署名ファイル (.{}) をダウンロード", about.extension),
            };
            pages::templates().page(StatusCode::OK, "signed.html", "署名しました", ctx)
        }
        Err(e) => {
            let e = ApiError::from(e);
            pages::error(e.status, "署名できませんでした", &e.description, "もう一度ログインしてください。")
        }
    }
}
