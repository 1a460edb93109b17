//! FIDO2 phones over real TLS against the real server: L1, E1–E4, D1–D4, the
//! operator commands, and a hostile authenticator.

use base64ct::Encoding;
use serde_json::{json, Value};

use crate::authenticator::{Authenticator, Hostile, Phone, StockPasskey};
use crate::harness::{fixture, Env};
use crate::http::{authorize_url, exchange, pkce, query, register_client, Client, Resp, Server};

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8")
}

/// User 100001 (HPKI hpki-doctor mapped, jpki-1 linked, active key) and
/// 999001-jpa (HPKI hpki-pharmacist mapped, active key).
pub fn fido_env() -> Env {
    let env = Env::new();
    env.user_with_key("100001", "rsa2048");
    env.user_with_key("999001-jpa", "rsa2048");
    env.ok(&["hpki", "map", "100001", s(&fixture("holders/hpki-doctor.pem"))]);
    env.ok(&["hpki", "map", "999001-jpa", s(&fixture("holders/hpki-pharmacist.pem"))]);
    env.ok(&["jpki", "link", "100001", s(&fixture("holders/jpki-1.pem"))]);
    env
}

/// The PC browser: a client with a cookie jar of one cookie.
pub struct Pc {
    client: Client,
    pub cookie: Option<String>,
}

impl Pc {
    pub fn new() -> Pc {
        Pc { client: Client::new(), cookie: None }
    }

    /// A PC on another loopback address (`127.0.N.M`), as another network's.
    pub fn from(ip: &str) -> Pc {
        Pc { client: Client::new().from(ip), cookie: None }
    }

    fn keep(&mut self, r: &Resp) {
        if let Some(c) = r.headers.get("set-cookie") {
            self.cookie = Some(c.split(';').next().expect("cookie").to_owned());
        }
    }

    pub fn get(&mut self, url: &str) -> Resp {
        let cookie = self.cookie.clone().unwrap_or_default();
        let r = self.client.get(url, &[("cookie", &cookie)]);
        self.keep(&r);
        r
    }

    pub fn post_form(&mut self, url: &str, form: &[(&str, &str)]) -> Resp {
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let cookie = self.cookie.clone().unwrap_or_default();
        let r =
            self.client.post(url, &[("cookie", &cookie), ("content-type", "application/x-www-form-urlencoded")], body);
        self.keep(&r);
        r
    }

    /// The phone URL shown under the QR code; the confirmation number shown
    /// beside it is noted for the phone ([`confirmation_of`]).
    pub fn phone_url(&mut self, server: &Server) -> String {
        let page = self.get(&server.url("/pc"));
        assert_eq!(page.status, 200, "{}", page.text());
        let text = unescape(&page.text());
        assert!(text.contains("<svg"), "the PC page shows a QR code: {text}");
        assert!(text.contains("QRコードの有効期限"), "{text}");
        let start = text.find("id=\"phone-url\" href=\"").expect("phone URL") + "id=\"phone-url\" href=\"".len();
        let url = text[start..start + text[start..].find('"').expect("end")].to_owned();
        if let Some(at) = text.find("id=\"confirmation\" class=\"code\">") {
            let from = at + "id=\"confirmation\" class=\"code\">".len();
            let code = text[from..from + 4].to_owned();
            assert!(code.chars().all(|c| c.is_ascii_digit()), "{code}");
            CONFIRMATIONS.lock().expect("lock").insert(url.clone(), code);
        }
        url
    }

    /// The confirmation number the PC page shows now.
    pub fn confirmation(&mut self, server: &Server) -> Option<String> {
        let text = self.get(&server.url("/pc")).text();
        let at = text.find("id=\"confirmation\" class=\"code\">")? + "id=\"confirmation\" class=\"code\">".len();
        Some(text[at..at + 4].to_owned())
    }

    pub fn status(&mut self, server: &Server) -> Value {
        let r = self.get(&server.url("/pc/status"));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }
}

/// Undoes the HTML escaping of attribute values.
fn unescape(html: &str) -> String {
    html.replace("&#x2f;", "/").replace("&amp;", "&").replace("&#x3d;", "=")
}

/// The confirmation numbers the PC pages showed, by the phone URL beside
/// them: what the user reads off the PC's screen and types on the phone.
static CONFIRMATIONS: std::sync::Mutex<std::collections::BTreeMap<String, String>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// The confirmation number shown beside a phone URL (the tests of nodes
/// rewrite a URL to another node: the path is what identifies it).
pub fn confirmation_of(phone_url: &str) -> Option<String> {
    let path = |u: &str| u.split_once("/m/").map(|(_, p)| p.to_owned());
    let wanted = path(phone_url)?;
    CONFIRMATIONS
        .lock()
        .expect("lock")
        .iter()
        .find(|(u, _)| path(u).as_deref() == Some(wanted.as_str()))
        .map(|(_, c)| c.clone())
}

/// Phone side: open the page, type the PC's confirmation number (if it
/// shows one), begin.
pub fn phone_begin(phone_url: &str) -> Value {
    let page = Client::new().get(phone_url, &[]);
    assert_eq!(page.status, 200, "{}", page.text());
    let body = match confirmation_of(phone_url) {
        Some(code) => json!({ "code": code }).to_string(),
        None => "{}".into(),
    };
    let r = Client::new().post(&format!("{phone_url}/begin"), &[("content-type", "application/json")], body);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

pub fn phone_finish(phone_url: &str, answer: &Value) -> Resp {
    Client::new().post(&format!("{phone_url}/finish"), &[("content-type", "application/json")], answer.to_string())
}

fn register_phone(server: &Server, phone_url: &str, auth: &mut dyn Phone) {
    let options = phone_begin(phone_url);
    let r = phone_finish(phone_url, &auth.create(&options));
    assert_eq!(r.status, 200, "{}", r.text());
    let next = r.json()["next"].as_str().expect("next").to_owned();
    assert!(next.ends_with("/label"), "{next}");
    let label = Client::new().get(&server.url(&next), &[]);
    assert!(label.text().contains("ラベル"), "{}", label.text());
    let done = Client::new().post(
        &server.url(&next),
        &[("content-type", "application/x-www-form-urlencoded")],
        "answer=ok&label=%E4%BB%95%E4%BA%8B%E7%94%A8",
    );
    assert_eq!(done.status, 200, "{}", done.text());
    assert!(done.text().contains("完了"), "{}", done.text());
}

pub fn sign_in(phone_url: &str, auth: &mut dyn Phone) {
    let options = phone_begin(phone_url);
    let r = phone_finish(phone_url, &auth.get(&options));
    assert_eq!(r.status, 200, "{}", r.text());
}

/// E1 by HPKI card: returns the PC after the phone registered.
pub fn enroll_by_card(server: &Server, holder: &str, scheme: &str, auth: &mut dyn Phone, replace: bool) -> Pc {
    let r = Client::with_card(holder).get(&format!("{}/enroll/{scheme}", server.card), &[]);
    assert_eq!(r.status, 303, "{}", r.text());
    let claim = r.location();
    assert!(claim.starts_with(&server.url("/pc/claim?h=")), "{claim}");
    let mut pc = Pc::new();
    assert_eq!(pc.get(&claim).status, 303);
    let cookie = pc.cookie.clone().expect("cookie");
    assert!(cookie.starts_with("__Host-inkan_pc="), "{cookie}");
    let handoff = query(&claim)["h"].clone();
    assert!(!cookie.ends_with(&handoff), "the cookie holds a fresh token, not the one in the URL");
    // The hand-off URL works once.
    let again = Client::new().get(&claim, &[]);
    assert_eq!(again.status, 400, "{}", again.text());
    if replace {
        let q = pc.get(&server.url("/pc"));
        assert!(q.text().contains("置き換えますか"), "{}", q.text());
        assert_eq!(pc.post_form(&server.url("/pc/confirm"), &[("answer", "yes")]).status, 303);
    }
    let phone = pc.phone_url(server);
    register_phone(server, &phone, auth);
    assert_eq!(pc.status(server)["step"], "done");
    assert!(pc.get(&server.url("/pc")).text().contains("完了"));
    pc
}

/// L1 up to the phone URL: returns (PC, phone URL, PKCE verifier).
pub fn fido_login_start(server: &Server, client: &crate::http::OidcClient, user: &str) -> (Pc, String, String) {
    let (verifier, challenge) = pkce();
    let mut pc = Pc::new();
    let r = pc.get(&authorize_url(server, client, &challenge, &[("acr_values", "fido")]));
    assert_eq!(r.status, 303, "{}", r.text());
    let form_url = server.url(&r.location());
    let form = pc.get(&form_url);
    assert!(form.text().contains("本人ID"), "{}", form.text());
    let req = query(&form_url)["req"].clone();
    let r = pc.post_form(&server.url("/login/fido"), &[("req", &req), ("user_id", user)]);
    assert_eq!(r.status, 303, "{}", r.text());
    let phone = pc.phone_url(server);
    (pc, phone, verifier)
}

/// L1 to the end: returns the token response.
fn fido_login(server: &Server, client: &crate::http::OidcClient, user: &str, auth: &mut dyn Phone) -> Value {
    let (mut pc, phone, verifier) = fido_login_start(server, client, user);
    sign_in(&phone, auth);
    let status = pc.status(server);
    let redirect = status["redirect"].as_str().unwrap_or_else(|| panic!("no redirect: {status}"));
    let q = query(redirect);
    assert_eq!(q["state"], "st-1");
    let t = exchange(server, client, &q["code"], &verifier);
    assert_eq!(t.status, 200, "{}", t.text());
    t.json()
}

fn device_row(env: &Env, user: &str) -> String {
    env.sql_ok(&format!("SELECT credential_id, counter, label, last_used_at FROM devices WHERE user_id = '{user}'"))
        .pop()
        .unwrap_or_default()
}

fn audit_events(env: &Env) -> Vec<String> {
    let v = env.json(&["audit", "tail", "--limit", "200"]);
    v.as_array().expect("rows").iter().map(|r| r["event"].as_str().unwrap_or_default().to_owned()).collect()
}

#[test]
fn e1_enroll_by_hpki_then_l1_login_and_sign() {
    let env = fido_env();
    let server = Server::start(&env, &[]);
    let client = register_client(&env);

    // The registration site offers the four actions.
    let index = Client::new().get(&server.url("/register"), &[]).text();
    for action in [
        "HPKIカードを使ってスマートフォンを登録する",
        "マイナンバーカードを使ってスマートフォンを登録する",
        "スマートフォンを変更する",
        "HPKIカードを使ってマイナンバーカードを登録する",
    ] {
        assert!(index.contains(action), "{action}");
    }

    // Before enrollment, L1 shows a QR code like any other (the page must
    // not tell who has a phone), which says where to register first, and
    // which no phone can answer.
    let (_, challenge) = pkce();
    let mut pc = Pc::new();
    let r = pc.get(&authorize_url(&server, &client, &challenge, &[("acr_values", "fido")]));
    let req = query(&server.url(&r.location()))["req"].clone();
    let r = pc.post_form(&server.url("/login/fido"), &[("req", &req), ("user_id", "100001")]);
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(pc.get(&server.url("/pc")).text().contains("先に<a href=\"/register\">登録サイト</a>で登録してください"));
    let early = pc.phone_url(&server);
    // Giving up is for a phone that began, with the PC's number: not before.
    let failed =
        || Client::new().post(&format!("{early}/failed"), &[("content-type", "application/json")], "{}".to_owned());
    let r = failed();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("before the phone began it"), "{}", r.text());
    assert!(pc.status(&server)["error"].is_null(), "the PC's message is not the phone's to steer");
    let _ = phone_begin(&early);
    let r = failed();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(pc.status(&server)["error"].as_str().is_some_and(|e| e.contains("先に登録サイトで登録してください")));

    // The phone is webauthn-rs's own SoftPasskey here.
    let mut phone = StockPasskey::new(&server.base);
    enroll_by_card(&server, "hpki-doctor", "hpki", &mut phone, false);
    let shown = env.json(&["device", "show", "100001"]);
    assert_eq!(shown["device"]["label"], "仕事用", "{shown}");

    // L1: PC shows the QR; the phone signs in; the phone alone gets no code.
    let (mut pc, phone_url, verifier) = fido_login_start(&server, &client, "100001");
    let phone_page = Client::new().get(&phone_url, &[]).text();
    assert!(phone_page.contains("セキュリティキーによるサインイン") && phone_page.contains("100001"));
    sign_in(&phone_url, &mut phone);
    let alone = Client::new().get(&server.url("/pc/status"), &[]);
    assert_eq!(alone.status, 401, "a phone without the PC's cookie gets nothing");
    let status = pc.status(&server);
    let redirect = status["redirect"].as_str().unwrap_or_else(|| panic!("{status}"));
    assert!(redirect.starts_with(&client.redirect));
    // The redirect is handed out once.
    assert!(pc.status(&server).get("redirect").is_none());
    let q = query(redirect);
    let tokens = exchange(&server, &client, &q["code"], &verifier).json();
    let bearer = tokens["access_token"].as_str().expect("token");
    let payload = tokens["id_token"].as_str().expect("id").split('.').nth(1).expect("payload").to_owned();
    let claims: Value =
        serde_json::from_slice(&base64ct::Base64UrlUnpadded::decode_vec(&payload).expect("b64")).expect("claims");
    assert_eq!(claims["acr"], "fido");
    assert_eq!(claims["sub"], "100001");

    let me = Client::new().get(&server.url("/api/v1/me"), &[("authorization", &format!("Bearer {bearer}"))]).json();
    assert_eq!(me["method"], "fido", "{me}");
    let digest = base64ct::Base64::encode_string(&[7u8; 32]);
    let signed = Client::new().post_json(
        &server.url("/api/v1/sign-hashes"),
        bearer,
        &json!({ "hashes": [digest], "hashAlgorithm": "SHA-256", "format": "raw" }),
    );
    assert_eq!(signed.status, 200, "{}", signed.text());

    let events = audit_events(&env);
    assert!(events.contains(&"fido.register".to_owned()) && events.contains(&"fido.signin".to_owned()), "{events:?}");
}

#[test]
fn hostile_authenticator_is_refused_and_changes_nothing() {
    let env = fido_env();
    let server = Server::start(&env, &[]);
    let client = register_client(&env);
    let mut phone = Authenticator::new(&server.base);

    // Hostile registrations: each refused, no device appears, the ticket can still be used.
    let r = Client::with_card("hpki-doctor").get(&format!("{}/enroll/hpki", server.card), &[]);
    let mut pc = Pc::new();
    pc.get(&r.location());
    let phone_url = pc.phone_url(&server);
    let cases: Vec<(&str, Hostile, &str)> = vec![
        ("UV missing", Hostile { no_uv: true, ..Default::default() }, "user verified bit"),
        ("UP missing", Hostile { no_up: true, ..Default::default() }, "user present bit"),
        ("wrong origin", Hostile { origin: Some("https://evil.example".into()), ..Default::default() }, "origin"),
        ("wrong RP ID hash", Hostile { rp_id: Some("evil.example".into()), ..Default::default() }, "id hash"),
        (
            "wrong clientData type",
            Hostile { client_type: Some("webauthn.get".into()), ..Default::default() },
            "webauthn.<method>",
        ),
        ("malformed CBOR", Hostile { garbage_cbor: true, ..Default::default() }, "CBOR"),
        ("cross-origin frame", Hostile { cross_origin: true, ..Default::default() }, "crossOrigin"),
        (
            "framed by another site",
            Hostile { top_origin: Some("https://evil.example".into()), ..Default::default() },
            "topOrigin",
        ),
        ("bytes after the credential data", Hostile { trailing: true, ..Default::default() }, "bytes after"),
    ];
    for (name, h, reason) in &cases {
        let options = phone_begin(&phone_url);
        let r = phone_finish(&phone_url, &phone.register(&options, h));
        assert_eq!(r.status, 400, "{name}: {}", r.text());
        let message = r.json()["error_description"].as_str().expect("message").to_owned();
        assert!(message.contains("確認できませんでした") && message.contains(reason), "{name}: {message}");
        assert_eq!(device_row(&env, "100001"), "", "{name}: no device registered");
    }
    // Malformed JSON, and an answer without a challenge.
    let _ = phone_begin(&phone_url);
    let r = phone_finish(&phone_url, &json!({"id": 1}));
    assert_eq!(r.status, 400, "{}", r.text());
    let r = Client::new().post(&format!("{phone_url}/finish"), &[], "{not json");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["error_description"].as_str().expect("m").contains("使用済み"), "no challenge pending");
    // The PC sees the last error.
    assert!(pc.status(&server)["error"].as_str().is_some());
    // And the well-behaved phone still registers on the same ticket.
    register_phone(&server, &phone_url, &mut phone);
    let other = Authenticator::new(&server.base);
    // Another user's phone.
    let mut pharmacist = other;
    enroll_by_card(&server, "hpki-pharmacist", "hpki", &mut pharmacist, false);

    // One good sign-in, so the stored counter is above 0.
    fido_login(&server, &client, "100001", &mut phone);
    let sessions_before = env.json(&["session", "list"]);
    let before = device_row(&env, "100001");
    let (_pc, phone_url, _) = fido_login_start(&server, &client, "100001");
    // A challenge from another ticket (another user's: a user has one live
    // login ticket, a second start replaces the first).
    let (_pc2, other_url, _) = fido_login_start(&server, &client, "999001-jpa");
    let foreign = Authenticator::challenge_of(&phone_begin(&other_url));
    let cases: Vec<(&str, bool, Hostile, &str)> = vec![
        ("UV missing", false, Hostile { no_uv: true, ..Default::default() }, "user verified bit"),
        ("UP missing", false, Hostile { no_up: true, ..Default::default() }, "user present bit"),
        (
            "wrong origin",
            false,
            Hostile { origin: Some("https://evil.example".into()), ..Default::default() },
            "origin",
        ),
        ("wrong RP ID hash", false, Hostile { rp_id: Some("evil.example".into()), ..Default::default() }, "id hash"),
        (
            "wrong clientData type",
            false,
            Hostile { client_type: Some("webauthn.create".into()), ..Default::default() },
            "webauthn.<method>",
        ),
        ("cross-origin frame", false, Hostile { cross_origin: true, ..Default::default() }, "crossOrigin"),
        (
            "framed by another site",
            false,
            Hostile { top_origin: Some("https://evil.example".into()), ..Default::default() },
            "topOrigin",
        ),
        ("bytes after the authenticator data", false, Hostile { trailing: true, ..Default::default() }, "bytes after"),
        ("counter going backwards", false, Hostile { counter: Some(0), ..Default::default() }, "compromised"),
        ("counter standing still", false, Hostile { counter: Some(1), ..Default::default() }, "compromised"),
        ("another user's credential", true, Hostile::default(), "could not be found"),
        (
            "challenge from another ticket",
            false,
            Hostile { challenge: Some(foreign), ..Default::default() },
            "challenge",
        ),
    ];
    for (name, other_user, h, reason) in &cases {
        let options = phone_begin(&phone_url);
        let answer = if *other_user { pharmacist.assert(&options, h) } else { phone.assert(&options, h) };
        let r = phone_finish(&phone_url, &answer);
        assert_eq!(r.status, 400, "{name}: {}", r.text());
        let message = r.json()["error_description"].as_str().expect("message").to_owned();
        assert!(message.contains(reason), "{name}: refused for the wrong reason: {message}");
        assert_eq!(device_row(&env, "100001"), before, "{name}: the device row is unchanged");
    }
    // Replay: a good assertion is accepted once, then refused.
    let options = phone_begin(&phone_url);
    let good = phone.assert(&options, &Hostile::default());
    assert_eq!(phone_finish(&phone_url, &good).status, 200);
    let after_good = device_row(&env, "100001");
    let r = phone_finish(&phone_url, &good);
    assert_eq!(r.status, 400, "replayed assertion: {}", r.text());
    assert_eq!(device_row(&env, "100001"), after_good);
    assert_eq!(env.json(&["session", "list"]), sessions_before, "no session opened by hostile answers");
    // Garbage ticket: answered as an expired one (one answer for every QR
    // code not in use, so that none tells what it was).
    let r = Client::new().get(&server.url("/m/garbage-ticket"), &[]);
    assert_eq!(r.status, 410);
    assert!(r.text().contains("有効期限"));
}

#[test]
fn e3_registration_code_with_password_lock_and_reissue() {
    let env = fido_env();
    // The URL printed by the CLI carries the server's public URL.
    let server = Server::start(&env, &[]);
    let issue = |extra: &[&str]| {
        let mut args = vec!["--json", "regcode", "issue", "999001-jpa"];
        args.extend_from_slice(extra);
        env.run_with(&args, &[("INKAN_SERVER_PUBLIC_URL", &server.base)]).json()
    };
    let qr = env.path("notice-qr.svg");
    let first = issue(&["--password", "sakura-2026", "--qr", s(&qr)]);
    assert!(std::fs::read_to_string(&qr).expect("qr").contains("<svg"));
    let url = first["url"].as_str().expect("url").to_owned();
    assert!(url.starts_with(&server.url("/r/")), "{url}");
    assert_eq!(first["password"], "sakura-2026");

    let page = Client::new().get(&url, &[]);
    assert!(page.text().contains("パスワード"), "{}", page.text());
    let post = |pw: &str| {
        Client::new().post(
            &url,
            &[("content-type", "application/x-www-form-urlencoded")],
            format!("password={}", form_urlencoded::byte_serialize(pw.as_bytes()).collect::<String>()),
        )
    };
    let wrong = post("wrong");
    assert_eq!(wrong.status, 401);
    assert!(wrong.text().contains("あと4回"), "{}", wrong.text());
    let ok = post("sakura-2026");
    assert_eq!(ok.status, 303, "{}", ok.text());
    let phone_url = server.url(&ok.location());
    let mut phone = Authenticator::new(&server.base);
    assert!(Client::new().get(&phone_url, &[]).text().contains("登録"));
    register_phone(&server, &phone_url, &mut phone);
    assert_ne!(device_row(&env, "999001-jpa"), "");

    // Registering used the code up.
    let again = post("sakura-2026");
    assert_eq!(again.status, 410, "{}", again.text());
    assert!(again.text().contains("使用済み"), "{}", again.text());

    // D4: a new code for a user with a phone offers sign-in instead of registration.
    let signin = issue(&["--password", "momiji-2026"]);
    let url_signin = signin["url"].as_str().expect("url").to_owned();
    let r = Client::new().post(
        &url_signin,
        &[("content-type", "application/x-www-form-urlencoded")],
        "password=momiji-2026",
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let page = Client::new().get(&server.url(&r.location()), &[]).text();
    assert!(page.contains("セキュリティキーによるサインイン"), "{page}");
    sign_in(&server.url(&r.location()), &mut phone);

    // A newer code replaces it.
    let second = issue(&["--birthdate", "19800123"]);
    assert!(second["password"].is_null(), "a birth date is not printed back");
    let old = Client::new().get(&url_signin, &[]);
    assert_eq!(old.status, 410);
    assert!(old.text().contains("無効"), "{}", old.text());

    // Five wrong passwords lock the code; then even the right one is refused.
    let url2 = second["url"].as_str().expect("url").to_owned();
    for i in 1..=5 {
        let r =
            Client::new().post(&url2, &[("content-type", "application/x-www-form-urlencoded")], "password=00000000");
        assert_eq!(r.status, if i < 5 { 401 } else { 403 }, "try {i}: {}", r.text());
    }
    let r = Client::new().post(&url2, &[("content-type", "application/x-www-form-urlencoded")], "password=19800123");
    assert_eq!(r.status, 403);
    assert!(r.text().contains("認証局に連絡"), "{}", r.text());
    let list = env.json(&["regcode", "list", "999001-jpa"]);
    assert_eq!(list[0]["status"], "locked", "{list}");
    assert_eq!(list[1]["status"], "replaced", "{list}");
    assert_eq!(list[2]["status"], "used", "{list}");

    // An expired code says so.
    let third = issue(&["--expires", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = Client::new().get(third["url"].as_str().expect("url"), &[]);
    assert_eq!(r.status, 410);
    assert!(r.text().contains("有効期限"), "{}", r.text());
    // Revoke; bad arguments are explained.
    assert_eq!(env.json(&["regcode", "revoke", "999001-jpa"])["revoked"], true);
    assert_eq!(env.json(&["regcode", "revoke", "999001-jpa"])["revoked"], false);
    assert!(env.fails(&["regcode", "issue", "999001-jpa", "--birthdate", "1980"]).contains("8 digits"));
    assert!(env.fails(&["regcode", "issue", "nobody"]).contains("unknown user"));
    assert!(env.fails(&["regcode", "issue", "999001-jpa", "--expires", "soon"]).contains("30d"));
    let events = audit_events(&env);
    assert!(events.contains(&"regcode.issue".to_owned()) && events.contains(&"regcode.lock".to_owned()));
}

#[test]
fn d1_device_change_keeps_the_old_phone_until_the_new_one_registered() {
    let env = fido_env();
    let server = Server::start(&env, &[]);
    let client = register_client(&env);
    // Both phones are SoftPasskeys (webauthn-authenticator-rs).
    let mut old = StockPasskey::new(&server.base);
    enroll_by_card(&server, "hpki-doctor", "hpki", &mut old, false);

    // "No" cancels and changes nothing.
    let mut pc = Pc::new();
    assert_eq!(pc.post_form(&server.url("/change"), &[("user_id", "100001")]).status, 303);
    let url = pc.phone_url(&server);
    sign_in(&url, &mut old);
    assert_eq!(pc.status(&server)["step"], "confirm");
    pc.post_form(&server.url("/pc/confirm"), &[("answer", "no")]);
    assert!(pc.get(&server.url("/pc")).text().contains("取り消されました"));

    // Yes, then abort before the new phone registers: the old phone still logs in.
    let before = device_row(&env, "100001");
    let mut pc = Pc::new();
    pc.post_form(&server.url("/change"), &[("user_id", "100001")]);
    let url = pc.phone_url(&server);
    sign_in(&url, &mut old);
    let question = pc.get(&server.url("/pc")).text();
    assert!(question.contains("置き換えますか"), "{question}");
    pc.post_form(&server.url("/pc/confirm"), &[("answer", "yes")]);
    let new_url = pc.phone_url(&server);
    assert_ne!(new_url, url, "a fresh QR for the new phone");
    // Spent: answered as any QR code that is not (or no longer) known, expired.
    assert_eq!(Client::new().get(&url, &[]).status, 410, "the old phone's QR is spent");
    let mut new = StockPasskey::new(&server.base);
    // The new phone starts but the user walks away.
    let _ = phone_begin(&new_url);
    assert_eq!(device_row(&env, "100001").split('|').next(), before.split('|').next());
    fido_login(&server, &client, "100001", &mut old);

    // Now complete it: the swap is atomic, the old phone stops.
    let options = phone_begin(&new_url);
    assert_eq!(phone_finish(&new_url, &new.create(&options)).status, 200);
    assert_eq!(pc.status(&server)["step"], "done");
    assert!(pc.get(&server.url("/pc")).text().contains("変更が完了しました"));
    // The old phone, which still holds its passkey, is told that it was
    // replaced (and when), on the phone and on the PC, and logs nobody in.
    let (mut pc, url, _) = fido_login_start(&server, &client, "100001");
    let options = phone_begin(&url);
    let allowed: Vec<&str> = options["publicKey"]["allowCredentials"]
        .as_array()
        .expect("allowCredentials")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_ne!(old.credential_id, new.credential_id);
    assert_eq!(allowed.first().copied(), new.credential_id.as_deref(), "the registered phone first");
    assert!(allowed.contains(&old.credential_id.as_deref().expect("old id")), "then the retired one");
    let r = phone_finish(&url, &old.get(&options));
    assert_eq!(r.status, 403, "{}", r.text());
    let told = r.json()["error_description"].as_str().expect("description").to_owned();
    assert!(told.contains("置き換えられた") && told.contains("無効"), "the phone is told why: {told}");
    let status = pc.status(&server);
    assert_eq!(status["step"], "waiting", "nobody logged in");
    assert!(status["error"].as_str().is_some_and(|e| e.contains("置き換えられた")), "the PC is told too: {status}");
    fido_login(&server, &client, "100001", &mut new);
    assert!(audit_events(&env).contains(&"fido.replace".to_owned()));

    // A change for a user without a phone and for an unknown user show a QR
    // code too (anyone may ask: it must not tell which IDs exist; the
    // hostile tests follow such decoys to the end).
    for id in ["999001-jpa", "nobody"] {
        let mut pc = Pc::new();
        assert_eq!(pc.post_form(&server.url("/change"), &[("user_id", id)]).status, 303);
        assert!(pc.phone_url(&server).contains("/m/"));
    }
}

#[test]
fn d2_d3_cards_replace_e2_e4_link_and_operator_removal() {
    let env = fido_env();
    let server = Server::start(&env, &[]);
    let client = register_client(&env);

    // E2 with the linked My Number card, then D2 with the HPKI card replaces it.
    let mut first = Authenticator::new(&server.base);
    enroll_by_card(&server, "jpki-1", "jpki", &mut first, false);
    let mut second = Authenticator::new(&server.base);
    enroll_by_card(&server, "hpki-doctor", "hpki", &mut second, true);
    // D3: JPKI card and yet another phone.
    let mut third = Authenticator::new(&server.base);
    enroll_by_card(&server, "jpki-1", "jpki", &mut third, true);
    let (_pc, url, _) = fido_login_start(&server, &client, "100001");
    let options = phone_begin(&url);
    let r = phone_finish(&url, &second.assert(&options, &Hostile::default()));
    assert_eq!(r.status, 403, "a replaced phone is refused: {}", r.text());
    assert!(r.text().contains("置き換えられた"), "{}", r.text());
    let tokens = fido_login(&server, &client, "100001", &mut third);

    // An unlinked My Number card cannot enroll.
    let r = Client::with_card("jpki-2").get(&format!("{}/enroll/jpki", server.card), &[]);
    assert_eq!(r.status, 403);
    assert!(r.text().contains("紐付けられていません"), "{}", r.text());

    // E4: HPKI card, then the My Number card is linked to that user.
    let page = Client::with_card("hpki-pharmacist").get(&format!("{}/link/hpki", server.card), &[]);
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.text().contains("999001-jpa"));
    let text = unescape(&page.text());
    let start = text.find(&format!("{}/link/jpki?t=", server.card)).expect("next link");
    let next = text[start..start + text[start..].find('"').expect("end")].to_owned();
    // A card linked to someone else is refused, and the step can be retried.
    let r = Client::with_card("jpki-1").get(&next, &[]);
    assert_eq!(r.status, 409, "{}", r.text());
    let r = Client::with_card("jpki-2").get(&next, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("999001-jpa"));
    assert_eq!(Client::with_card("jpki-2").get(&next, &[]).status, 400, "used once");
    let links = env.json(&["jpki", "list", "999001-jpa"]);
    assert_eq!(links.as_array().expect("links").len(), 1, "{links}");

    // Lost phone: the operator removes it; its sessions end, card sessions stay.
    let card_session = crate::http::login(&server, &client, "hpki-doctor", "hpki");
    let fido_bearer = tokens["access_token"].as_str().expect("token");
    let removed = env.json(&["device", "remove", "100001"]);
    assert!(removed["removed"].is_object(), "{removed}");
    let me = |b: &str| Client::new().get(&server.url("/api/v1/me"), &[("authorization", &format!("Bearer {b}"))]);
    assert_eq!(me(fido_bearer).status, 401);
    assert_eq!(me(card_session["access_token"].as_str().expect("t")).status, 200);
    assert_eq!(env.json(&["device", "show", "100001"])["device"], Value::Null);
    assert!(audit_events(&env).contains(&"fido.remove".to_owned()));
}

#[test]
fn expired_tickets_say_so() {
    let env = fido_env();
    let server = Server::start(&env, &[("INKAN_FIDO_TICKET_SECS", "30")]);
    let mut phone = Authenticator::new(&server.base);
    let r = Client::with_card("hpki-doctor").get(&format!("{}/enroll/hpki", server.card), &[]);
    let mut pc = Pc::new();
    pc.get(&r.location());
    let url = pc.phone_url(&server);
    let options = phone_begin(&url);
    // Move the ticket's expiry into the past (as 30 s passing would).
    env.sql_ok("UPDATE tickets SET expires_at = expires_at - 3600000");
    let r = phone_finish(&url, &phone.register(&options, &Hostile::default()));
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(Client::new().get(&url, &[]).status, 410);
    assert!(pc.get(&server.url("/pc")).text().contains("有効期限が切れました"));
    assert_eq!(device_row(&env, "100001"), "");
}

#[test]
fn a_phone_registered_meanwhile_is_replaced_only_after_a_yes() {
    let env = fido_env();
    let server = Server::start(&env, &[]);
    // Two enrollments start while the user has no phone: by HPKI card and by
    // My Number card (one live ticket per user and flow: two by the same card
    // would be one, the second replacing the first).
    let open = |holder: &str, scheme: &str| {
        let r = Client::with_card(holder).get(&format!("{}/enroll/{scheme}", server.card), &[]);
        let mut pc = Pc::new();
        pc.get(&r.location());
        let url = pc.phone_url(&server);
        (pc, url)
    };
    let (_, first_url) = open("hpki-doctor", "hpki");
    let (mut second_pc, second_url) = open("jpki-1", "jpki");
    let mut first = Authenticator::new(&server.base);
    let mut second = Authenticator::new(&server.base);
    let options = phone_begin(&second_url);
    let second_answer = second.create(&options);
    register_phone(&server, &first_url, &mut first);
    let registered = device_row(&env, "100001");

    // The second phone's answer does not silently replace the first phone.
    let r = phone_finish(&second_url, &second_answer);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("replace question"), "{}", r.text());
    assert_eq!(device_row(&env, "100001"), registered);
    let page = second_pc.get(&server.url("/pc")).text();
    assert!(page.contains("置き換えますか"), "the PC asks first: {page}");
    // A forged cross-site answer is refused.
    let cookie = second_pc.cookie.clone().expect("cookie");
    for (name, value) in [("origin", "https://evil.example"), ("origin", "null"), ("sec-fetch-site", "cross-site")] {
        let r = Client::new().post(
            &server.url("/pc/confirm"),
            &[("cookie", &cookie), ("content-type", "application/x-www-form-urlencoded"), (name, value)],
            "answer=yes",
        );
        assert_eq!(r.status, 403, "{name}: {}", r.text());
    }
    assert!(second_pc.get(&server.url("/pc")).text().contains("置き換えますか"));
    // After a yes, the second phone registers on a fresh QR; the phone's current
    // credential is excluded (a phone holding it must not overwrite it early).
    second_pc.post_form(&server.url("/pc/confirm"), &[("answer", "yes")]);
    let url = second_pc.phone_url(&server);
    let options = phone_begin(&url);
    let excluded: Vec<&str> = options["publicKey"]["excludeCredentials"]
        .as_array()
        .expect("excludeCredentials")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(excluded, vec![base64ct::Base64UrlUnpadded::encode_string(&first.credential_id)]);
    register_phone(&server, &url, &mut second);
    assert_ne!(device_row(&env, "100001"), registered);
}

#[test]
fn a_phone_that_gives_up_is_told_the_possible_causes_and_the_pc_shows_them() {
    let env = fido_env();
    let server = Server::start(&env, &[]);
    let client = register_client(&env);
    let mut phone = Authenticator::new(&server.base);
    enroll_by_card(&server, "hpki-doctor", "hpki", &mut phone, false);
    let (mut pc, url, _) = fido_login_start(&server, &client, "100001");
    let _ = phone_begin(&url);
    // The browser's NotAllowedError (no passkey for the user here, or cancelled), as the page script reports it.
    let failed = |headers: &[(&str, &str)]| {
        let mut h = vec![("content-type", "application/json")];
        h.extend_from_slice(headers);
        Client::new().post(&format!("{url}/failed"), &h, "{}")
    };
    assert_eq!(failed(&[("sec-fetch-site", "cross-site")]).status, 403, "not from another site");
    let r = failed(&[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let told = r.json()["message"].as_str().expect("message").to_owned();
    assert!(told.contains("登録がない") && told.contains("キャンセル"), "both possible causes: {told}");
    let status = pc.status(&server);
    assert_eq!(status["error"].as_str(), Some(told.as_str()), "the PC shows it too: {status}");
    assert_eq!(status["step"], "ceremony", "nothing else changed");
    // The same ticket still signs in with the registered phone.
    sign_in(&url, &mut phone);
    assert!(pc.status(&server)["redirect"].as_str().is_some());
    // A phone token that does not exist is refused as such.
    let r = Client::new().post(&server.url("/m/no-such-token/failed"), &[("content-type", "application/json")], "{}");
    assert_eq!(r.status, 400, "{}", r.text());
}
