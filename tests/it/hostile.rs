//! The service as an attacker without credentials meets it (issue 13),
//! grouped by attack. Each test fails without the fix it guards.
//!
//! - protocol details: response headers, the standard UserInfo answer, scopes,
//!   the cross-site check, file permissions.

use serde_json::json;

use crate::harness::{fixture, Env};
use crate::http::{authorize_url, exchange, pkce, query, register_client, Client, Server};

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A service with user 100001 (an active key, the fixture doctor's HPKI card).
fn env_with_card_user() -> Env {
    let env = Env::new();
    env.user_with_key("100001", "p256");
    env.ok(&["hpki", "map", "100001", s(&fixture("holders/hpki-doctor.pem"))]);
    env
}

/// A card login asking for `scope`: the token response.
fn login_with_scope(server: &Server, env: &Env, scope: &str) -> serde_json::Value {
    let client = register_client(env);
    let (verifier, challenge) = pkce();
    let url = authorize_url(server, &client, &challenge, &[("acr_values", "hpki"), ("scope", scope)]);
    let r = Client::new().get(&url, &[]);
    assert_eq!(r.status, 303, "{}", r.text());
    let r = Client::with_card("hpki-doctor").get(&r.location(), &[]);
    assert_eq!(r.status, 303, "{}", r.text());
    let code = query(&r.location())["code"].clone();
    let t = exchange(server, &client, &code, &verifier);
    assert_eq!(t.status, 200, "{}", t.text());
    t.json()
}

mod protocol {
    use super::*;

    #[test]
    fn every_answer_has_hsts_and_nosniff_and_json_is_never_cached() {
        let env = Env::new();
        let server = Server::start(&env, &[]);
        let c = Client::new();
        let answers = [
            ("discovery", c.get(&server.url("/.well-known/openid-configuration"), &[])),
            ("jwks", c.get(&server.url("/oidc/jwks"), &[])),
            ("health", c.get(&server.url("/healthz"), &[])),
            ("401", c.post(&server.url("/api/v1/sign-hashes"), &[("content-type", "application/json")], "{}")),
            ("404", c.get(&server.url("/no/such/page"), &[])),
            ("page", c.get(&server.url("/login/fido"), &[])),
            ("card listener", c.get(&format!("{}/healthz", server.card), &[])),
        ];
        for (what, r) in &answers {
            assert_eq!(
                r.headers.get("strict-transport-security").map(String::as_str),
                Some("max-age=31536000"),
                "{what}"
            );
            assert_eq!(r.headers.get("x-content-type-options").map(String::as_str), Some("nosniff"), "{what}");
            let json = r.headers.get("content-type").is_some_and(|t| t.starts_with("application/json"));
            if json {
                assert_eq!(r.headers.get("cache-control").map(String::as_str), Some("no-store"), "{what}");
            }
        }
        assert_eq!(answers[3].1.status, 401);
        let page = &answers[5].1;
        assert_eq!(page.headers.get("referrer-policy").map(String::as_str), Some("same-origin"));
        assert_eq!(page.headers.get("cache-control").map(String::as_str), Some("no-store"));
    }

    #[test]
    fn userinfo_answers_sub_and_only_the_claims_the_scopes_allow() {
        let env = env_with_card_user();
        let server = Server::start(&env, &[]);
        let c = Client::new();
        let discovery = c.get(&server.url("/.well-known/openid-configuration"), &[]).json();
        assert_eq!(discovery["userinfo_endpoint"], json!(format!("{}/oidc/userinfo", server.base)));

        let signing = login_with_scope(&server, &env, "openid sign");
        let bearer = format!("Bearer {}", signing["access_token"].as_str().expect("token"));
        let r = c.get(&server.url("/oidc/userinfo"), &[("authorization", &bearer)]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json(), json!({"sub": "100001"}), "no profile scope: no name");
        let r = c.post(&server.url("/oidc/userinfo"), &[("authorization", &bearer)], "");
        assert_eq!(r.json(), json!({"sub": "100001"}), "POST as well (OIDC Core §5.3.1)");

        let profile = login_with_scope(&server, &env, "openid profile");
        let bearer = format!("Bearer {}", profile["access_token"].as_str().expect("token"));
        let r = c.get(&server.url("/oidc/userinfo"), &[("authorization", &bearer)]);
        assert_eq!(r.json(), json!({"sub": "100001", "name": "試験 太郎"}));

        let r = c.get(&server.url("/oidc/userinfo"), &[]);
        assert_eq!(r.status, 401);
        assert!(r.headers.get("www-authenticate").is_some_and(|v| v.starts_with("Bearer")), "{:?}", r.headers);
        let r = c.get(&server.url("/oidc/userinfo"), &[("authorization", "Bearer not-a-token")]);
        assert_eq!(r.status, 401);
    }

    #[test]
    fn the_demo_signing_page_needs_the_sign_scope_too() {
        let env = env_with_card_user();
        let server = Server::start(&env, &[]);
        let tokens = login_with_scope(&server, &env, "openid profile");
        let token = tokens["access_token"].as_str().expect("token");
        let before = env.audit_rows();
        let boundary = "inkan-boundary";
        let body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"document\"; filename=\"rx.txt\"\r\n\
             Content-Type: text/plain\r\n\r\nprescription\r\n--{boundary}--\r\n"
        );
        let r = Client::new().post(
            &server.url("/demo/sign"),
            &[
                ("cookie", &format!("inkan_demo={token}")),
                ("content-type", &format!("multipart/form-data; boundary={boundary}")),
            ],
            body,
        );
        assert_eq!(r.status, 403, "{}", r.text());
        assert!(r.text().contains("署名できませんでした"), "{}", r.text());
        assert_eq!(env.audit_rows(), before, "nothing signed");
    }

    #[test]
    fn the_data_directory_and_the_database_are_the_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let env = Env::new();
        env.add_user("640001", "doctor");
        let mode = |rel: &str| {
            std::fs::metadata(env.data().join(rel)).map(|m| m.permissions().mode() & 0o777).unwrap_or_else(|e| {
                panic!("{rel}: {e}");
            })
        };
        assert_eq!(mode(""), 0o700, "var/");
        assert_eq!(mode("softhsm/tokens"), 0o700);
        if !env.on_postgres() {
            assert_eq!(mode("inkan.db"), 0o600);
            // SQLite gives its WAL the database's mode (the file is gone after a clean close).
            if env.data().join("inkan.db-wal").exists() {
                assert_eq!(mode("inkan.db-wal"), 0o600);
            }
        }
    }
}

mod protocol_login {
    use super::*;

    #[test]
    fn a_login_asked_for_one_method_is_not_finished_with_another() {
        let env = env_with_card_user();
        env.ok(&["jpki", "link", "100001", s(&fixture("holders/jpki-1.pem"))]);
        let server = Server::start(&env, &[]);
        let client = register_client(&env);
        let (verifier, challenge) = pkce();
        let r = Client::new().get(&authorize_url(&server, &client, &challenge, &[("acr_values", "hpki")]), &[]);
        assert_eq!(r.status, 303, "{}", r.text());
        let hpki_url = r.location();
        assert!(hpki_url.contains("/login/hpki?"), "{hpki_url}");
        // The same request at the My Number card's login, with that card.
        let jpki_url = hpki_url.replacen("/login/hpki?", "/login/jpki?", 1);
        let r = Client::with_card("jpki-1").get(&jpki_url, &[]);
        assert_eq!(r.status, 403, "{}", r.text());
        assert!(r.text().contains("ログイン方法が違います") && r.text().contains("HPKIカード"), "{}", r.text());
        // The request stays, for the HPKI card; its ID token says so.
        let r = Client::with_card("hpki-doctor").get(&hpki_url, &[]);
        assert_eq!(r.status, 303, "{}", r.text());
        let code = query(&r.location())["code"].clone();
        let t = exchange(&server, &client, &code, &verifier);
        assert_eq!(t.status, 200, "{}", t.text());
    }
}
