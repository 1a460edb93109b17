//! The service as an attacker without credentials meets it (issue 13),
//! grouped by attack. Each test fails without the fix it guards.
//!
//! - memory: what one request can make the server hold or do;
//! - rate: requests a minute per client address and per user ID (429);
//! - time: slow bodies and held connections;
//! - writes: what unauthenticated starts write to the database;
//! - budget: what all clients together may make the open routes write;
//! - audit: a chain recomputed, or cut, by someone who can write the database;
//! - relay: a QR code sent to someone who does not see the PC that shows it;
//! - enumeration: whether an ID exists or has a phone, asked of the open pages;
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

/// The phone begins its ceremony, typing `code` (the PC's confirmation number) if given.
fn begin(phone_url: &str, code: Option<&str>) -> crate::http::Resp {
    let body = code.map_or_else(|| "{}".to_owned(), |c| json!({ "code": c }).to_string());
    Client::new().post(&format!("{phone_url}/begin"), &[("content-type", "application/json")], body)
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
    fn every_answer_has_nosniff_and_json_is_never_cached() {
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
            // HSTS only for a public URL with a host name (see the unit test
            // in src/server.rs): never pin a developer's localhost.
            assert_eq!(r.headers.get("strict-transport-security"), None, "{what}");
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
        // A data directory made by someone else, open to others: init says so.
        let other = Env::bare();
        std::fs::create_dir_all(other.data()).expect("var");
        std::fs::set_permissions(other.data(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let out = other.ok(&["init"]);
        assert!(out.contains("warning: others may enter") && out.contains("chmod 700"), "{out}");
    }
}

mod protocol_more {
    use super::*;

    #[test]
    fn metrics_ask_for_their_token() {
        let env = Env::new();
        let server = Server::start(&env, &[("INKAN_SERVER_METRICS_TOKEN", "scrape-me-scrape-me")]);
        let url = server.url("/metrics");
        let r = Client::new().get(&url, &[]);
        assert_eq!(r.status, 403, "even from loopback once a token is set: {}", r.text());
        assert!(!r.text().contains("inkan_http"), "{}", r.text());
        assert_eq!(Client::new().get(&url, &[("authorization", "Bearer scrape-me-scrape-m")]).status, 403);
        let r = Client::new().get(&url, &[("authorization", "Bearer scrape-me-scrape-me")]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().contains("inkan_http_requests_total"), "{}", r.text());
    }

    #[test]
    fn a_card_certificate_without_key_usage_or_for_servers_only_cannot_log_in() {
        use der::oid::db::rfc5280::{ID_CE_EXT_KEY_USAGE, ID_CE_KEY_USAGE};
        use der::{Decode, Encode, EncodePem};
        use inkan::pki::profile::{oids, Kind, Qualification};
        let env = env_with_card_user();
        let server = Server::start(&env, &[]);
        let client = register_client(&env);
        let ca = inkan::pki::ca::Ca::load(&fixture("hpki-auth-ca.pem"), &fixture("hpki-auth-ca.key")).expect("ca");
        let holder = std::fs::read(fixture("holders/hpki-doctor.pem")).expect("holder");
        let holder = x509_cert::Certificate::from_der(&der::pem::decode_vec(&holder).expect("pem").1).expect("cert");
        let tbs = holder.tbs_certificate();
        let day = std::time::Duration::from_secs(86_400);
        let now = std::time::SystemTime::now();
        let auth = || Box::new(Kind::HpkiAuth { role: Qualification::Doctor });
        let servers_only = x509_cert::ext::Extension {
            extn_id: ID_CE_EXT_KEY_USAGE,
            critical: false,
            extn_value: der::asn1::OctetString::new(
                x509_cert::ext::pkix::ExtendedKeyUsage(vec![oids::SERVER_AUTH]).to_der().expect("eku"),
            )
            .expect("value"),
        };
        let kinds = [
            ("no key usage", Kind::Without(auth(), vec![ID_CE_KEY_USAGE])),
            (
                "servers only",
                Kind::WithExtra(Box::new(Kind::Without(auth(), vec![ID_CE_EXT_KEY_USAGE])), vec![servers_only]),
            ),
        ];
        for (i, (name, kind)) in kinds.into_iter().enumerate() {
            let cert = ca
                .issue(kind, tbs.subject().clone(), tbs.subject_public_key_info().clone(), now - day, now + day)
                .expect("issue");
            let path = env.path(&format!("card-{i}.pem"));
            std::fs::write(&path, cert.to_pem(der::pem::LineEnding::LF).expect("pem")).expect("write");
            let card = Client::with_cert(&path, &fixture("holders/hpki-doctor.key"));
            let (_, challenge) = pkce();
            let url = authorize_url(&server, &client, &challenge, &[("acr_values", "hpki")]);
            let r = Client::new().get(&url, &[]);
            assert_eq!(r.status, 303, "{}", r.text());
            let r = card.get(&r.location(), &[]);
            assert_eq!(r.status, 403, "{name}: {}", r.text());
            assert!(r.text().contains("このログイン方法で使える証明書ではありません"), "{name}: {}", r.text());
        }
        assert_eq!(env.sql_ok("SELECT count(*) FROM sessions")[0], "0");
    }

    #[test]
    fn another_site_cannot_start_a_card_enrollment_or_link() {
        let env = env_with_card_user();
        let server = Server::start(&env, &[]);
        let card = Client::with_card("hpki-doctor");
        let tickets = || env.sql_ok("SELECT count(*) FROM tickets")[0].clone();
        for path in ["/enroll/hpki", "/link/hpki", "/link/jpki?t=x"] {
            for forged in [
                vec![("sec-fetch-site", "cross-site"), ("sec-fetch-mode", "navigate")],
                vec![("sec-fetch-site", "same-site"), ("sec-fetch-mode", "no-cors")],
                // A browser without Sec-Fetch headers: its Referer names the other site.
                vec![("referer", "https://evil.example/page")],
                vec![("referer", "https://localhost:8443.evil.example/")],
            ] {
                let r = card.get(&format!("{}{path}", server.card), &forged);
                assert_eq!(r.status, 403, "{path} {forged:?}: {}", r.text());
                assert!(r.text().contains("別のサイトから送られた操作"), "{}", r.text());
            }
        }
        assert_eq!(tickets(), "0");
        // From the registration site (same site), or typed: it starts.
        let ours = [("sec-fetch-site", "same-site"), ("sec-fetch-mode", "navigate")];
        let r = card.get(&format!("{}/enroll/hpki", server.card), &ours);
        assert_eq!(r.status, 303, "{}", r.text());
        assert_eq!(card.get(&format!("{}/link/hpki", server.card), &[]).status, 200);
        assert_eq!(tickets(), "2");
        // Without Sec-Fetch headers, a Referer of our own listeners is ours.
        let referer = format!("{}/register", server.base);
        let r = card.get(&format!("{}/link/hpki", server.card), &[("referer", referer.as_str())]);
        assert_eq!(r.status, 200, "{}", r.text());
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
        // Nor with a phone: refused before any QR code (form and start).
        let req = query(&hpki_url)["req"].clone();
        let r = Client::new().get(&server.url(&format!("/login/fido?req={req}")), &[]);
        assert_eq!(r.status, 403, "{}", r.text());
        assert!(r.text().contains("ログイン方法が違います"), "{}", r.text());
        let r = Client::new().post(
            &server.url("/login/fido"),
            &[("content-type", "application/x-www-form-urlencoded")],
            format!("req={req}&user_id=100001"),
        );
        assert_eq!(r.status, 403, "{}", r.text());
        assert!(!r.headers.contains_key("set-cookie"), "no PC ticket was opened");
        // The request stays, for the HPKI card.
        let r = Client::with_card("hpki-doctor").get(&hpki_url, &[]);
        assert_eq!(r.status, 303, "{}", r.text());
        let code = query(&r.location())["code"].clone();
        let t = exchange(&server, &client, &code, &verifier);
        assert_eq!(t.status, 200, "{}", t.text());
    }
}

mod memory {
    use super::*;
    use base64ct::{Base64, Encoding};

    #[test]
    fn pending_authorization_requests_are_few_and_small() {
        let env = Env::new();
        let server = Server::start(&env, &[("INKAN_DANGER_MAX_PENDING_REQUESTS", "20")]);
        let client = register_client(&env);
        let (_, challenge) = pkce();
        let authorize =
            |extra: &[(&str, &str)]| Client::new().get(&authorize_url(&server, &client, &challenge, extra), &[]);
        // A state too long to keep: a page, and nothing kept or echoed.
        let long = "s".repeat(513);
        let r = authorize(&[("state", &long)]);
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("state") && !r.text().contains(&long), "{}", r.text());
        // A nonce too long, a login_hint that is no user ID: an error for the client.
        for extra in [("nonce", "n".repeat(513)), ("login_hint", "x".repeat(65)), ("login_hint", "<script>".into())] {
            let r = authorize(&[(extra.0, &extra.1), ("acr_values", "fido")]);
            assert_eq!(r.status, 303, "{}", r.text());
            let back = query(&r.location());
            assert_eq!(back.get("error").map(String::as_str), Some("invalid_request"), "{}: {back:?}", extra.0);
        }
        // Twenty-five valid requests: the five oldest are gone, the others wait.
        let ids: Vec<String> = (0..25)
            .map(|_| {
                std::thread::sleep(std::time::Duration::from_millis(3));
                let r = authorize(&[("acr_values", "fido")]);
                assert_eq!(r.status, 303, "{}", r.text());
                query(&r.location())["req"].clone()
            })
            .collect();
        for (i, id) in ids.iter().enumerate() {
            let r = Client::new().get(&server.url(&format!("/login/fido?req={id}")), &[]);
            let waiting = r.status == 200;
            assert_eq!(waiting, i >= 5, "request {i}: {} {}", r.status, r.text());
        }
    }

    #[test]
    fn one_sign_doc_makes_at_most_a_thousand_signatures_however_it_spreads_them() {
        let env = env_with_card_user();
        let server = Server::start(&env, &[]);
        let tokens = login_with_scope(&server, &env, "openid sign");
        let access = tokens["access_token"].as_str().expect("token").to_owned();
        let h = Base64::encode_string(&inkan::keystore::DigestAlgorithm::Sha256.digest(b"rx"));
        let entry = |n: usize| json!({ "hashes": vec![h.clone(); n], "hashAlgorithmOID": "2.16.840.1.101.3.4.2.1", "signature_format": "C" });
        let sign_doc = |entries: Vec<serde_json::Value>| {
            Client::new().post_json(
                &server.url("/csc/v2/signatures/signDoc"),
                &access,
                &json!({ "credentialID": "100001.g1", "documentDigests": entries }),
            )
        };
        let before = env.audit_rows();
        // Each entry under the per-entry limit, 1,200 in all.
        let r = sign_doc(vec![entry(600), entry(600)]);
        assert_eq!(r.status, 400, "{}", r.text());
        let told = r.json()["error_description"].as_str().unwrap_or("").to_owned();
        assert!(told.contains("at most 1000 signatures") && told.contains("1200 asked"), "{told}");
        assert_eq!(env.audit_rows(), before, "nothing signed");
        // Up to 1,000 in all is served.
        let r = sign_doc(vec![entry(500), entry(500)]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["SignatureObject"].as_array().map(Vec::len), Some(1000));
    }

    #[test]
    fn enveloped_documents_held_at_once_are_bounded() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let env = env_with_card_user();
        // 4,000 bytes in all, a session at most a quarter (always one document).
        let server = Server::start(
            &env,
            &[("INKAN_SERVER_MAX_DOCUMENT_BYTES", "1000"), ("INKAN_LIMITS_ENVELOPED_BYTES", "4000")],
        );
        let bearer = || {
            let token = login_with_scope(&server, &env, "openid sign")["access_token"].as_str().expect("t").to_owned();
            format!("Bearer {token}")
        };
        let (a, b) = (bearer(), bearer());
        let url = server.url("/api/v1/sign?detached=false");
        let sign = |auth: String| {
            let url = url.clone();
            move || Client::new().post(&url, &[("authorization", &auth)], vec![b'x'; 1000])
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            // Session a's document of 1,000 bytes on its way holds a's share.
            let mut slow = Client::new().connect(&url).await.expect("connect");
            let head = format!(
                "POST /api/v1/sign?detached=false HTTP/1.1\r\nhost: localhost\r\nauthorization: {a}\r\ncontent-length: 1000\r\n\r\n"
            );
            slow.write_all(head.as_bytes()).await.expect("head");
            slow.write_all(&[b'x'; 10]).await.expect("start");
            slow.flush().await.expect("flush");
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            // A second one of a's does not fit: 503, retry shortly.
            let r = tokio::task::spawn_blocking(sign(a.clone())).await.expect("join");
            assert_eq!(r.status, 503, "{}", r.text());
            assert_eq!(r.headers.get("retry-after").map(String::as_str), Some("1"));
            assert!(r.json()["error_description"].as_str().expect("m").contains("detached"), "{}", r.text());
            // Another session's does.
            let r = tokio::task::spawn_blocking(sign(b.clone())).await.expect("join");
            assert_eq!(r.status, 200, "{}", r.text());
            // The first one finishes and gives its room back.
            slow.write_all(&[b'x'; 990]).await.expect("rest");
            let mut answer = vec![0u8; 12];
            slow.read_exact(&mut answer).await.expect("answer");
            assert_eq!(&answer, b"HTTP/1.1 200");
        });
        let r = sign(a)();
        assert_eq!(r.status, 200, "{}", r.text());
    }

    #[test]
    fn open_routes_read_small_bodies_and_heads() {
        let env = Env::new();
        let server = Server::start(&env, &[]);
        let form = [("content-type", "application/x-www-form-urlencoded")];
        let big = format!("user_id={}", "1".repeat(17 << 10));
        for path in ["/change", "/oidc/token", "/csc/v2/info"] {
            let r = Client::new().post(&server.url(path), &form, big.clone());
            assert_eq!(r.status, 413, "{path}: {}", r.text());
        }
        let long = "x".repeat(300 << 10);
        let r = Client::new().try_request("GET", &server.url("/healthz"), &[("x-long", &long)], Vec::new());
        assert!(r.as_ref().is_err() || r.as_ref().is_ok_and(|r| r.status == 431), "{:?}", r.map(|r| r.status));
        assert_eq!(Client::new().get(&server.url("/healthz"), &[]).status, 200);
    }

    #[test]
    fn a_session_holds_at_most_sixteen_unused_sads() {
        let env = env_with_card_user();
        let server = Server::start(&env, &[]);
        let tokens = login_with_scope(&server, &env, "openid sign");
        let access = tokens["access_token"].as_str().expect("token").to_owned();
        let authorize = || {
            Client::new().post_json(
                &server.url("/csc/v2/credentials/authorize"),
                &access,
                &json!({ "credentialID": "100001.g1", "numSignatures": 1 }),
            )
        };
        let mut sads = Vec::new();
        for i in 0..16 {
            let r = authorize();
            assert_eq!(r.status, 200, "SAD {i}: {}", r.text());
            sads.push(r.json()["SAD"].as_str().expect("SAD").to_owned());
        }
        let r = authorize();
        assert_eq!(r.status, 409, "{}", r.text());
        assert!(r.json()["error_description"].as_str().unwrap_or("").contains("16 unused SADs"), "{}", r.text());
        // Using one makes room for one.
        let h = Base64::encode_string(&inkan::keystore::DigestAlgorithm::Sha256.digest(b"rx"));
        let r = Client::new().post_json(
            &server.url("/csc/v2/signatures/signHash"),
            &access,
            &json!({ "credentialID": "100001.g1", "SAD": sads[0], "hashes": [h], "hashAlgorithmOID": "2.16.840.1.101.3.4.2.1", "signAlgo": "1.2.840.10045.4.3.2" }),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(authorize().status, 200);
        assert_eq!(authorize().status, 409);
    }
}

mod protocol_csc {
    use super::*;
    use base64ct::{Base64, Encoding};

    /// `RSASSA-PSS-params` for SHA-256 and MGF1-SHA-256 with a salt of `salt` bytes (DER).
    fn pss_params(salt: u8) -> String {
        let sha256 = [0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00];
        let mut der = vec![0x30, 0x34, 0xa0, 0x0f];
        der.extend(sha256);
        der.extend([0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08]);
        der.extend(sha256);
        der.extend([0xa2, 0x03, 0x02, 0x01, salt]);
        Base64::encode_string(&der)
    }

    #[test]
    fn sign_algo_params_that_inkan_would_not_honour_are_refused() {
        let env = Env::new();
        env.user_with_key("100001", "rsa2048");
        env.ok(&["hpki", "map", "100001", s(&fixture("holders/hpki-doctor.pem"))]);
        let server = Server::start(&env, &[]);
        let tokens = login_with_scope(&server, &env, "openid sign");
        let access = tokens["access_token"].as_str().expect("token").to_owned();
        let digest = inkan::keystore::DigestAlgorithm::Sha256.digest(b"rx");
        let sign = |params: Option<String>| {
            let mut body = json!({
                "credentialID": "100001.g1",
                "hashes": [Base64::encode_string(&digest)],
                "hashAlgorithmOID": "2.16.840.1.101.3.4.2.1",
                "signAlgo": "1.2.840.113549.1.1.10",
            });
            if let Some(p) = params {
                body["signAlgoParams"] = json!(p);
            }
            Client::new().post_json(&server.url("/csc/v2/signatures/signHash"), &access, &body)
        };
        // What inkan does (salt = 32 for SHA-256): signed.
        let r = sign(Some(pss_params(32)));
        assert_eq!(r.status, 200, "{}", r.text());
        // A salt of 20 (OpenSSL's old default), garbage, NULL: refused, nothing signed.
        let before = env.audit_rows();
        for params in [pss_params(20), Base64::encode_string(b"garbage"), "BQA=".to_owned()] {
            let r = sign(Some(params.clone()));
            assert_eq!(r.status, 400, "{params}: {}", r.text());
            assert!(r.json()["error_description"].as_str().unwrap_or("").contains("signAlgoParams"), "{}", r.text());
        }
        assert_eq!(env.audit_rows(), before, "nothing signed");
        // Parameters for PKCS#1 v1.5: none, or NULL.
        let r = Client::new().post_json(
            &server.url("/csc/v2/signatures/signHash"),
            &access,
            &json!({ "credentialID": "100001.g1", "hashes": [Base64::encode_string(&digest)], "signAlgo": "1.2.840.113549.1.1.11", "signAlgoParams": "BQA=" }),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    #[test]
    fn sign_doc_refuses_a_sign_algo_or_params_it_would_not_use() {
        let env = Env::new();
        env.user_with_key("100001", "rsa2048");
        env.ok(&["hpki", "map", "100001", s(&fixture("holders/hpki-doctor.pem"))]);
        let server = Server::start(&env, &[]);
        let tokens = login_with_scope(&server, &env, "openid sign");
        let access = tokens["access_token"].as_str().expect("token").to_owned();
        let h = Base64::encode_string(&inkan::keystore::DigestAlgorithm::Sha256.digest(b"rx"));
        let sign_doc = |extra: serde_json::Value| {
            let mut entry =
                json!({ "hashes": [h], "hashAlgorithmOID": "2.16.840.1.101.3.4.2.1", "signature_format": "C" });
            for (k, v) in extra.as_object().expect("object") {
                entry[k] = v.clone();
            }
            Client::new().post_json(
                &server.url("/csc/v2/signatures/signDoc"),
                &access,
                &json!({ "credentialID": "100001.g1", "documentDigests": [entry] }),
            )
        };
        let before = env.audit_rows();
        // inkan signs CAdES with PKCS#1 v1.5 here ([signing] rsa_scheme): PSS, or
        // ECDSA, or PSS parameters are refused, nothing signed.
        for (extra, word) in [
            (json!({ "signAlgo": "1.2.840.113549.1.1.10" }), "signAlgo"),
            (json!({ "signAlgo": "1.2.840.10045.4.3.2" }), "signAlgo"),
            (json!({ "signAlgo": "1.2.840.113549.1.1.11", "signAlgoParams": pss_params(32) }), "signAlgoParams"),
            (json!({ "signAlgo": "1.2.840.113549.1.1.12" }), "hashAlgorithmOID"),
        ] {
            let r = sign_doc(extra.clone());
            assert_eq!(r.status, 400, "{extra}: {}", r.text());
            assert!(r.json()["error_description"].as_str().unwrap_or("").contains(word), "{extra}: {}", r.text());
        }
        assert_eq!(env.audit_rows(), before, "nothing signed");
        // What it does use, named or not: signed.
        for extra in [
            json!({}),
            json!({ "signAlgo": "1.2.840.113549.1.1.11" }),
            json!({ "signAlgo": "1.2.840.113549.1.1.1", "signAlgoParams": "BQA=" }),
        ] {
            let r = sign_doc(extra.clone());
            assert_eq!(r.status, 200, "{extra}: {}", r.text());
        }
    }

    #[test]
    fn a_token_outage_leaves_the_sad_as_it_was() {
        let env = env_with_card_user();
        let server = Server::start(&env, &[]);
        let tokens = login_with_scope(&server, &env, "openid sign");
        let access = tokens["access_token"].as_str().expect("token").to_owned();
        let digest = Base64::encode_string(&inkan::keystore::DigestAlgorithm::Sha256.digest(b"rx"));
        let r = Client::new().post_json(
            &server.url("/csc/v2/credentials/authorize"),
            &access,
            &json!({ "credentialID": "100001.g1", "numSignatures": 1, "hashes": [digest], "hashAlgorithmOID": "2.16.840.1.101.3.4.2.1" }),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let sad = r.json()["SAD"].as_str().expect("SAD").to_owned();
        let sign = || {
            Client::new().post_json(
                &server.url("/csc/v2/signatures/signHash"),
                &access,
                &json!({ "credentialID": "100001.g1", "SAD": sad, "hashes": [digest], "signAlgo": "1.2.840.10045.4.3.2" }),
            )
        };
        // The token goes away before the key was ever unwrapped: 503.
        let tokens_dir = env.data().join("softhsm/tokens");
        let away = env.data().join("softhsm/tokens.away");
        std::fs::rename(&tokens_dir, &away).expect("move token away");
        let r = sign();
        assert_eq!(r.status, 503, "{}", r.text());
        std::fs::rename(&away, &tokens_dir).expect("token back");
        // The same SAD signs once the token is back (503s meanwhile keep it too).
        let started = std::time::Instant::now();
        loop {
            let r = sign();
            if r.status == 200 {
                break;
            }
            assert_eq!(r.status, 503, "only 503 while the token comes back: {}", r.text());
            assert!(started.elapsed() < std::time::Duration::from_secs(10), "no recovery");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        // And then it is used.
        let r = sign();
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.json()["error_description"].as_str().unwrap_or("").contains("SAD"), "{}", r.text());
    }
}

mod protocol_replay {
    use super::*;

    #[test]
    fn a_replayed_authorization_code_ends_the_session_it_opened() {
        let env = env_with_card_user();
        let server = Server::start(&env, &[]);
        let client = register_client(&env);
        let (verifier, challenge) = pkce();
        let url = authorize_url(&server, &client, &challenge, &[("acr_values", "hpki")]);
        let r = Client::with_card("hpki-doctor").get(&Client::new().get(&url, &[]).location(), &[]);
        let code = query(&r.location())["code"].clone();
        let t = exchange(&server, &client, &code, &verifier);
        assert_eq!(t.status, 200, "{}", t.text());
        let bearer = format!("Bearer {}", t.json()["access_token"].as_str().expect("token"));
        let me = || Client::new().get(&server.url("/oidc/userinfo"), &[("authorization", &bearer)]).status;
        assert_eq!(me(), 200);
        // The code again (intercepted, say): refused, and the session it opened ends.
        let r = exchange(&server, &client, &code, &verifier);
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.json()["error"], "invalid_grant");
        assert!(r.json()["error_description"].as_str().unwrap_or("").contains("ended"), "{}", r.text());
        assert_eq!(me(), 401, "the tokens issued from the code no longer work");
        let rows = env.json(&["audit", "tail", "--limit", "1"]);
        assert_eq!(rows[0]["event"], "session.revoke", "{rows}");
        assert!(rows[0]["detail"].as_str().unwrap_or("").contains("replayed"), "{rows}");
        // A third time: just refused.
        assert_eq!(exchange(&server, &client, &code, &verifier).status, 400);
    }
}

mod rate {
    use super::*;

    fn retry_after(r: &crate::http::Resp) -> u64 {
        r.headers
            .get("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("Retry-After: {:?}", r.headers))
    }

    #[test]
    fn the_addresses_of_one_network_are_limited_together_too() {
        let env = Env::new();
        let server = Server::start(
            &env,
            &[
                ("INKAN_LIMITS_PER_ADDRESS_PER_MINUTE", "1"),
                ("INKAN_LIMITS_PER_ADDRESS_BURST", "3"),
                ("INKAN_LIMITS_PER_NETWORK_PER_MINUTE", "1"),
                ("INKAN_LIMITS_PER_NETWORK_BURST", "6"),
            ],
        );
        let url = server.url("/r/nothing");
        let status = |from: &str| Client::new().from(from).get(&url, &[]).status;
        // Three addresses of 127.0.7.0/24, each within its own limit (3):
        // together past the network's (6).
        let seen: Vec<u16> = ["127.0.7.1", "127.0.7.2", "127.0.7.3"]
            .iter()
            .flat_map(|from| (0..3).map(move |_| *from))
            .map(status)
            .collect();
        assert_eq!(seen.iter().filter(|s| **s == 429).count(), 3, "{seen:?}");
        assert!(seen[..6].iter().all(|s| *s != 429), "{seen:?}");
        // Another network is not held by it.
        assert_ne!(status("127.0.8.1"), 429);
    }

    #[test]
    fn each_group_of_open_routes_is_limited_per_address_with_retry_after() {
        let env = env_with_card_user();
        let server = Server::start(
            &env,
            &[("INKAN_LIMITS_PER_ADDRESS_PER_MINUTE", "1"), ("INKAN_LIMITS_PER_ADDRESS_BURST", "3")],
        );
        let client = register_client(&env);
        let (_, challenge) = pkce();
        let authorize = authorize_url(&server, &client, &challenge, &[("acr_values", "hpki")]);
        let form = [("content-type", "application/x-www-form-urlencoded")];
        let card = Client::with_card("hpki-doctor");
        let open = Client::new();
        type Call<'a> = Box<dyn Fn() -> crate::http::Resp + 'a>;
        let groups: Vec<(&str, bool, Call)> = vec![
            ("authorize", true, Box::new(|| open.get(&authorize, &[]))),
            (
                "token",
                false,
                Box::new(|| open.post(&server.url("/oidc/token"), &form, "grant_type=authorization_code")),
            ),
            ("QR start", true, Box::new(|| open.post(&server.url("/change"), &form, "user_id=nobody"))),
            ("phone", false, Box::new(|| open.post(&server.url("/m/nothing/begin"), &[], ""))),
            ("PC", false, Box::new(|| open.post(&server.url("/pc/begin"), &[], "{}"))),
            ("registration code", true, Box::new(|| open.get(&server.url("/r/nothing"), &[]))),
            ("card login", true, Box::new(|| card.get(&format!("{}/login/hpki?req=nothing", server.card), &[]))),
        ];
        for (name, page, call) in &groups {
            for i in 0..3 {
                let r = call();
                assert_ne!(r.status, 429, "{name} request {i}: {}", r.text());
            }
            let r = call();
            assert_eq!(r.status, 429, "{name}: {}", r.text());
            assert!((1..=60).contains(&retry_after(&r)), "{name}");
            if *page {
                assert!(r.text().contains("アクセスが集中しています"), "{name}: {}", r.text());
            } else {
                assert_eq!(r.json()["error"], "too_many_requests", "{name}");
            }
        }
        // HEAD runs the GET handler (a pending authorization request, a
        // claimed QR code): it is counted as GET, and refused alike.
        let r = open.request("HEAD", &authorize, &[], Vec::new());
        assert_eq!(r.status, 429, "HEAD /oidc/authorize past the limit");
        let r = open.request("HEAD", &server.url("/pc/claim?t=nothing"), &[], Vec::new());
        assert_eq!(r.status, 429, "HEAD /pc/claim: the QR start group is spent");
        // Routes of callers who are who they say are not limited so.
        for _ in 0..10 {
            assert_eq!(open.get(&server.url("/healthz"), &[]).status, 200);
            assert_eq!(open.post_json(&server.url("/api/v1/sign-hashes"), "no-such-token", &json!({})).status, 401);
        }
    }
}

mod budget {
    use super::*;

    /// Requests from many addresses are what one address's limits cannot
    /// stop: each group of open routes that writes has a budget for all
    /// clients together, past which it answers 503 (and signing, card logins
    /// and the other groups go on).
    #[test]
    fn the_open_routes_that_write_have_a_budget_for_all_clients_together() {
        let env = env_with_card_user();
        let server = Server::start(&env, &[("INKAN_LIMITS_OPEN_PER_SECOND", "2")]);
        let form = [("content-type", "application/x-www-form-urlencoded")];
        let open = Client::new();
        let mut answers = Vec::new();
        let r = loop {
            let r = open.post(&server.url("/change"), &form, format!("user_id=someone{}", answers.len()));
            answers.push(r.status);
            if r.status == 503 || answers.len() == 20 {
                break r;
            }
        };
        assert_eq!(r.status, 503, "{answers:?}: {}", r.text());
        assert!(answers.iter().filter(|s| **s == 303).count() >= 2, "the budget's worth passes: {answers:?}");
        assert!(r.headers.contains_key("retry-after"));
        assert!(r.text().contains("ただいま混雑しています"), "{}", r.text());
        let r = open.post(&server.url("/m/nothing/begin"), &[], "");
        assert_ne!(r.status, 503, "another group has its own budget: {}", r.text());
        // Authorize has one too (a pending request, a row on PostgreSQL),
        // but for card logins, which keep nothing.
        let client = register_client(&env);
        let (_, challenge) = pkce();
        let authorize = authorize_url(&server, &client, &challenge, &[("acr_values", "fido")]);
        let statuses: Vec<u16> = (0..20).map(|_| open.get(&authorize, &[]).status).take_while(|s| *s != 503).collect();
        assert!(statuses.len() < 20 && statuses.iter().all(|s| *s == 303), "{statuses:?}");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        // Refused requests wrote nothing: only the budget's worth of decoys.
        let decoys: usize = env.sql_ok("SELECT count(*) FROM tickets")[0].parse().expect("count");
        assert_eq!(decoys, answers.iter().filter(|s| **s == 303).count());
        // A card login goes through all the while; QR starts do a second later.
        let token = login_with_scope(&server, &env, "openid sign");
        assert!(token["access_token"].is_string(), "{token}");
        assert_eq!(open.post(&server.url("/change"), &form, "user_id=someone10").status, 303);
    }
}

mod refused_requests {
    use super::*;

    /// A card login's authorize request keeps nothing (it travels sealed to
    /// the card listener): a flood that spends the budget for authorize
    /// does not keep card holders out.
    #[test]
    fn card_logins_need_no_share_of_the_budget_for_all_clients() {
        let env = env_with_card_user();
        let server = Server::start(&env, &[("INKAN_LIMITS_OPEN_PER_SECOND", "2")]);
        let client = register_client(&env);
        let (verifier, challenge) = pkce();
        let asking = |acr: &[(&str, &str)]| Client::new().get(&authorize_url(&server, &client, &challenge, acr), &[]);
        let busy = (0..10).filter(|_| asking(&[("acr_values", "fido")]).status == 503).count();
        assert!(busy >= 7, "the budget for authorize is spent ({busy} of 10 refused)");
        // Two methods named: charged like any other (503 now).
        let url = authorize_url(&server, &client, &challenge, &[("acr_values", "hpki")]) + "&acr_values=fido";
        assert_eq!(Client::new().get(&url, &[]).status, 503);
        // A card login goes through at once.
        let r = asking(&[("acr_values", "hpki")]);
        assert_eq!(r.status, 303, "{}", r.text());
        let card_url = r.location();
        assert!(card_url.contains("req=c."), "{card_url}");
        // Its handle cannot be altered...
        let altered = card_url.replacen("req=c.e", "req=c.f", 1);
        assert_ne!(Client::with_card("hpki-doctor").get(&altered, &[]).status, 303);
        let r = Client::with_card("hpki-doctor").get(&card_url, &[]);
        assert_eq!(r.status, 303, "{}", r.text());
        let code = query(&r.location())["code"].clone();
        assert_eq!(exchange(&server, &client, &code, &verifier).status, 200);
        // ...nor used twice.
        let again = Client::with_card("hpki-doctor").get(&card_url, &[]);
        assert_ne!(again.status, 303, "a sealed request is used once: {}", again.text());
        assert!(again.text().contains("ログイン要求"), "{}", again.text());
    }

    /// Requests refused before they write anything (an unknown phone
    /// token, an authorize request without parameters) do not spend the
    /// budget for all clients together: a login after a flood of them
    /// still starts.
    #[test]
    fn requests_refused_before_writing_do_not_spend_the_budget_for_all_clients() {
        let env = env_with_card_user();
        let server = Server::start(&env, &[("INKAN_LIMITS_OPEN_PER_SECOND", "2")]);
        let open = Client::new();
        for i in 0..10 {
            let r = open.get(&server.url(&format!("/m/no-such-token-{i}")), &[]);
            assert_eq!(r.status, 410, "{}", r.text());
            let r = open.get(&server.url("/oidc/authorize"), &[]);
            assert_eq!(r.status, 400, "{}", r.text());
        }
        let form = [("content-type", "application/x-www-form-urlencoded")];
        let r = open.post(&server.url("/change"), &form, "user_id=someone");
        assert_eq!(r.status, 303, "a QR start after the flood: {}", r.text());
        let client = register_client(&env);
        let (_, challenge) = pkce();
        let authorize = authorize_url(&server, &client, &challenge, &[("acr_values", "hpki")]);
        assert_eq!(open.get(&authorize, &[]).status, 303, "an authorization request after the flood");
    }
}

mod writes {
    use super::*;
    use crate::authenticator::StockPasskey;
    use crate::fido::{enroll_by_card, fido_env, Pc};

    #[test]
    fn a_flood_of_starts_for_someone_elses_id_leaves_them_their_own_qr_code() {
        let env = fido_env();
        let server =
            Server::start(&env, &[("INKAN_LIMITS_PER_USER_PER_MINUTE", "1"), ("INKAN_LIMITS_PER_USER_BURST", "3")]);
        let mut phone = StockPasskey::new(&server.base);
        enroll_by_card(&server, "hpki-doctor", "hpki", &mut phone, false);
        // The user opens a phone change on their own PC.
        let mut own = Pc::new();
        assert_eq!(own.post_form(&server.url("/change"), &[("user_id", "100001")]).status, 303);
        // An attacker floods starts for the ID from four other networks,
        // each until it is refused, then from seven more, once each.
        for n in 30..37 {
            let r = Pc::from(&format!("127.0.{n}.1")).post_form(&server.url("/change"), &[("user_id", "100001")]);
            assert_eq!(r.status, 303, "{}", r.text());
        }
        for n in 20..24 {
            let from = format!("127.0.{n}.1");
            let statuses: Vec<u16> = (0..5)
                .map(|_| Pc::from(&from).post_form(&server.url("/change"), &[("user_id", "100001")]).status)
                .collect();
            assert_eq!(statuses, [303, 303, 303, 429, 429], "{from}");
        }
        // The user's QR code still works, and they can start again.
        let r = own.get(&server.url("/pc"));
        assert_eq!(r.status, 200, "the user's QR code was replaced: {}", r.text());
        let r = Pc::new().post_form(&server.url("/change"), &[("user_id", "100001")]);
        assert_eq!(r.status, 303, "{}", r.text());
        // At most eight wait for the ID in all.
        let waiting = env.sql_ok("SELECT count(*) FROM tickets WHERE user_id = '100001' AND step = 'waiting'");
        assert_eq!(waiting[0], "8");
    }

    #[test]
    fn qr_starts_for_one_id_replace_the_oldest_waiting_one_and_are_limited_per_id() {
        let env = fido_env();
        let server =
            Server::start(&env, &[("INKAN_LIMITS_PER_USER_PER_MINUTE", "1"), ("INKAN_LIMITS_PER_USER_BURST", "6")]);
        let mut phone = StockPasskey::new(&server.base);
        enroll_by_card(&server, "hpki-doctor", "hpki", &mut phone, false);
        let tickets = |purpose: &str| {
            env.sql_ok(&format!("SELECT count(*) FROM tickets WHERE purpose = '{purpose}' AND user_id = '100001'"))[0]
                .clone()
        };
        // A change whose phone has begun is never replaced.
        let mut begun = Pc::new();
        assert_eq!(begun.post_form(&server.url("/change"), &[("user_id", "100001")]).status, 303);
        let begun_url = begun.phone_url(&server);
        let _ = crate::fido::phone_begin(&begun_url);
        let mut first = Pc::new();
        assert_eq!(first.post_form(&server.url("/change"), &[("user_id", "100001")]).status, 303);
        assert_eq!(first.get(&server.url("/pc")).status, 200);
        for _ in 0..4 {
            let r = Pc::new().post_form(&server.url("/change"), &[("user_id", "100001")]);
            assert_eq!(r.status, 303, "{}", r.text());
        }
        // Six starts: the begun one and the three newest waiting ones are left.
        assert_eq!(tickets("change"), "4", "at most three QR codes wait, plus the one begun");
        let r = first.get(&server.url("/pc"));
        assert_ne!(r.status, 200, "the oldest waiting QR code was replaced: {}", r.text());
        assert_eq!(begun.get(&server.url("/pc")).status, 200, "the begun one stays");
        // A seventh start for the ID within the minute: 429, nothing written.
        let r = Pc::new().post_form(&server.url("/change"), &[("user_id", "100001")]);
        assert_eq!(r.status, 429, "{}", r.text());
        assert!(r.headers.contains_key("retry-after"));
        assert_eq!(tickets("change"), "4");
        // Another ID has its own count; an unknown one gets a decoy, kept
        // to three the same way; an ID no user can have gets nothing.
        for _ in 0..5 {
            let r = Pc::new().post_form(&server.url("/change"), &[("user_id", "nobody")]);
            assert_eq!(r.status, 303, "{}", r.text());
        }
        assert_eq!(env.sql_ok("SELECT count(*) FROM tickets WHERE decoy_for = 'nobody'")[0], "3");
        let r = Pc::new().post_form(&server.url("/change"), &[("user_id", "<nobody>")]);
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("本人IDが正しくありません"), "{}", r.text());
        assert_eq!(env.sql_ok("SELECT count(*) FROM tickets WHERE user_id IS NULL")[0], "3");

        // Expired, a decoy goes at the next start (a flood of made-up IDs
        // leaves no more rows than its rate times a QR code's lifetime); a
        // real ticket is kept a day for support questions.
        env.sql_ok("UPDATE tickets SET expires_at = expires_at - 3600000");
        let r = Pc::new().post_form(&server.url("/change"), &[("user_id", "nobody2")]);
        assert_eq!(r.status, 303, "{}", r.text());
        assert_eq!(env.sql_ok("SELECT count(*) FROM tickets WHERE decoy_for = 'nobody'")[0], "0");
        assert_eq!(env.sql_ok("SELECT count(*) FROM tickets WHERE decoy_for = 'nobody2'")[0], "1");
        assert_eq!(tickets("change"), "4", "the user's expired tickets stay");
    }
}

mod time {
    use super::*;
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
    }

    #[test]
    fn a_body_that_comes_too_slowly_is_cut() {
        let env = Env::new();
        let server =
            Server::start(&env, &[("INKAN_LIMITS_BODY_GRACE_SECS", "1"), ("INKAN_LIMITS_MIN_BODY_RATE", "100")]);
        let url = server.url("/oidc/token");
        let answer = runtime().block_on(async {
            let tls = Client::new().connect(&url).await.expect("connect");
            let (mut rd, mut wr) = tokio::io::split(tls);
            let head = "POST /oidc/token HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 1000\r\n\r\n";
            wr.write_all(head.as_bytes()).await.expect("head");
            // One byte every 100 ms: 10 bytes a second, for up to 100 s.
            let writer = tokio::spawn(async move {
                for _ in 0..1000 {
                    if wr.write_all(b"a").await.is_err() || wr.flush().await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            let started = Instant::now();
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(60), rd.read_to_end(&mut answer)).await;
            writer.abort();
            (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
        });
        let (text, took) = answer;
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
        assert!(text.contains("slower than 100 bytes a second"), "{text}");
        // Cut long before the body could have been finished (100 s).
        assert!(took < Duration::from_secs(30), "{took:?}");
    }

    #[test]
    fn connections_beyond_the_per_address_limit_are_closed_at_once() {
        let env = Env::new();
        let server = Server::start(&env, &[("INKAN_LIMITS_CONNECTIONS_PER_ADDRESS", "2")]);
        let url = server.url("/healthz");
        runtime().block_on(async {
            let client = Client::new();
            let held = [client.connect(&url).await.expect("first"), client.connect(&url).await.expect("second")];
            let third = client.connect(&url).await;
            // rustls may finish its side before it reads the close: then the first read ends.
            if let Ok(mut tls) = third {
                let _ = tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n").await;
                let mut buf = Vec::new();
                let _ = tls.read_to_end(&mut buf).await;
                assert!(buf.is_empty(), "{}", String::from_utf8_lossy(&buf));
            }
            drop(held);
        });
        // Slots come back with their connections.
        let mut ok = false;
        for _ in 0..50 {
            if Client::new().try_request("GET", &url, &[], Vec::new()).is_ok_and(|r| r.status == 200) {
                ok = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(ok, "a connection after the held ones closed is served");
    }

    #[test]
    fn sigterm_lets_a_request_in_flight_finish() {
        let env = env_with_card_user();
        let mut server = Server::start(&env, &[]);
        let token = login_with_scope(&server, &env, "openid sign")["access_token"].as_str().expect("t").to_owned();
        let body = json!({ "hashes": ["n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg="], "format": "cades" }).to_string();
        let (first, rest) = body.split_at(10);
        let head = format!(
            "POST /api/v1/sign-hashes HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{first}",
            body.len()
        );
        let answer = runtime().block_on(async {
            let mut tls = Client::new().connect(&server.url("/")).await.expect("connect");
            tls.write_all(head.as_bytes()).await.expect("head");
            tls.flush().await.expect("flush");
            tokio::time::sleep(Duration::from_millis(300)).await;
            // The server is told to stop while the request's body is on its way.
            let _ = std::process::Command::new("kill").arg("-TERM").arg(server.child.id().to_string()).status();
            tokio::time::sleep(Duration::from_millis(500)).await;
            tls.write_all(rest.as_bytes()).await.expect("rest");
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut answer)).await;
            String::from_utf8_lossy(&answer).into_owned()
        });
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let status = server.child.wait().expect("exit");
        assert!(status.success(), "{status:?}");
    }

    /// Bare TCP connections to `port` that never send a byte: `per` from each
    /// of `networks` addresses, each in its own /24 (127.0.N.1).
    async fn hold_idle(port: u16, networks: u8, per: usize) -> Vec<tokio::net::TcpStream> {
        let mut held = Vec::new();
        for n in 1..=networks {
            let from: std::net::SocketAddr = format!("127.0.{n}.1:0").parse().expect("addr");
            for _ in 0..per {
                let socket = tokio::net::TcpSocket::new_v4().expect("socket");
                socket.bind(from).expect("bind");
                held.push(socket.connect(format!("127.0.0.1:{port}").parse().expect("to")).await.expect("connect"));
            }
        }
        held
    }

    /// Writes one request on a kept-alive connection and reads its answer's status.
    async fn on_kept_alive(tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>, head: &str) -> String {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        tls.write_all(head.as_bytes()).await.expect("write");
        let mut reader = tokio::io::BufReader::new(tls);
        let (mut status, mut line, mut length) = (String::new(), String::new(), 0usize);
        reader.read_line(&mut status).await.expect("status");
        loop {
            line.clear();
            reader.read_line(&mut line).await.expect("header");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().expect("length");
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await.expect("body");
        status.trim().to_owned()
    }

    #[test]
    fn idle_connections_from_many_networks_do_not_keep_honest_clients_out() {
        let env = env_with_card_user();
        // 64 slots a listener; the flood below is five times that.
        let server =
            Server::start(&env, &[("INKAN_LIMITS_CONNECTIONS", "64"), ("INKAN_LIMITS_CONNECTIONS_PER_ADDRESS", "16")]);
        let token = login_with_scope(&server, &env, "openid sign")["access_token"].as_str().expect("t").to_owned();
        let port =
            |url: &str| url.rsplit(':').next().and_then(|p| p.split('/').next()).expect("port").parse().expect("port");
        let (main, card) = (port(&server.base), port(&server.card));
        let me = format!("GET /api/v1/me HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}\r\n\r\n");
        let rt = runtime();
        // A signing system's connection, authenticated before the flood.
        let mut kept = rt.block_on(Client::new().connect(&server.url("/"))).expect("connect");
        assert_eq!(rt.block_on(on_kept_alive(&mut kept, &me)), "HTTP/1.1 200 OK");
        // 20 networks x 16 bare connections on each listener, held meanwhile.
        let flood = rt.block_on(async {
            let held = [hold_idle(main, 20, 16).await, hold_idle(card, 20, 16).await];
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            held
        });
        // The authenticated connection kept its slot.
        assert_eq!(rt.block_on(on_kept_alive(&mut kept, &me)), "HTTP/1.1 200 OK");
        // Honest newcomers, each on new connections: signatures with a live
        // session, and card logins (authorize, the card listener, the token).
        let url = server.url("/api/v1/sign-hashes");
        let digest = "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=";
        let body = json!({ "hashes": [digest], "hashAlgorithm": "SHA-256", "format": "cades" });
        let signed =
            (0..30).filter(|_| Client::new().try_post_json(&url, &token, &body).is_ok_and(|r| r.status == 200)).count();
        let client = register_client(&env);
        let logged_in = (0..30)
            .filter(|_| {
                let (verifier, challenge) = pkce();
                let url = authorize_url(&server, &client, &challenge, &[("acr_values", "hpki")]);
                let Ok(r) = Client::new().try_request("GET", &url, &[], Vec::new()) else { return false };
                if r.status != 303 {
                    return false;
                }
                let card = Client::with_card("hpki-doctor").try_request("GET", &r.location(), &[], Vec::new());
                let Ok(r) = card else { return false };
                r.status == 303 && exchange(&server, &client, &query(&r.location())["code"], &verifier).status == 200
            })
            .count();
        drop(flood);
        assert!(signed >= 29, "{signed} of 30 signatures with a live session");
        assert!(logged_in >= 29, "{logged_in} of 30 card logins");
    }
}

mod audit {
    use super::*;

    /// The token out of reach: `audit verify` checks without it.
    const AWAY: [(&str, &str); 1] = [("INKAN_TOKEN_LABEL", "no-such-token")];

    /// Three users added by the CLI, each command sealing what it wrote.
    fn three_users() -> Env {
        let env = Env::new();
        for id in ["900001", "900002", "900003"] {
            env.add_user(id, "doctor");
        }
        env
    }

    /// The last sealed row and the head, as the database holds them.
    fn sealed(env: &Env) -> String {
        env.sql_ok("SELECT coalesce(max(seq), 0) FROM audit_seals")[0].clone()
    }

    /// A server started on `env`, a card login written, its rows sealed.
    fn server_sealed(env: &Env) -> Server {
        let server = Server::start(env, &[("INKAN_LOG", "warn")]);
        login_with_scope(&server, env, "openid sign");
        let started = std::time::Instant::now();
        while sealed(env) != env.sql_ok("SELECT seq FROM audit_head")[0] {
            assert!(started.elapsed() < std::time::Duration::from_secs(10), "not sealed");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        server
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn unhex(t: &str) -> Vec<u8> {
        let t = t.trim_start_matches("\\x");
        (0..t.len()).step_by(2).map(|i| u8::from_str_radix(&t[i..i + 2], 16).expect("hex")).collect()
    }

    /// A byte string literal for the environment's database.
    fn blob(env: &Env, b: &[u8]) -> String {
        if env.on_postgres() {
            format!("decode('{}', 'hex')", hex(b))
        } else {
            format!("X'{}'", hex(b))
        }
    }

    /// Drops the append-only triggers (as someone with database access can).
    fn drop_triggers(env: &Env) {
        for (table, what) in
            [("audit", "update"), ("audit", "delete"), ("audit_seals", "update"), ("audit_seals", "delete")]
        {
            let name = if table == "audit" {
                format!("audit_append_only_{what}")
            } else {
                format!("audit_seals_append_only_{what}")
            };
            let on = if env.on_postgres() { format!(" ON {table}") } else { String::new() };
            env.sql_ok(&format!("DROP TRIGGER {name}{on}; SELECT 1"));
        }
    }

    /// The attacker's edit: row `seq`'s detail changed, every hash from it on
    /// recomputed, the head moved; returns the new hashes by row.
    fn edit_and_recompute(env: &Env, seq: i64) -> Vec<(i64, Vec<u8>)> {
        let flag = |v: &str| v == "1" || v == "t" || v == "true";
        let rows = env.sql_ok(
            "SELECT seq, at, actor, event, user_id IS NULL, coalesce(user_id, ''), generation IS NULL, \
             coalesce(generation, 0), digest IS NULL, coalesce(digest, ''), outcome, detail FROM audit ORDER BY seq",
        );
        let mut prev = vec![0u8; 32];
        let mut out = Vec::new();
        for line in rows {
            let f: Vec<&str> = line.splitn(12, '|').collect();
            let mut row = inkan::audit::Row {
                seq: f[0].parse().expect("seq"),
                at: f[1].parse().expect("at"),
                actor: f[2].into(),
                event: f[3].into(),
                user_id: (!flag(f[4])).then(|| f[5].to_owned()),
                generation: (!flag(f[6])).then(|| f[7].parse().expect("generation")),
                digest: (!flag(f[8])).then(|| f[9].to_owned()),
                outcome: f[10].into(),
                detail: f[11].into(),
                prev_hash: Vec::new(),
                hash: Vec::new(),
            };
            if row.seq == seq {
                row.detail = r#"{"edited":true}"#.into();
            }
            let hash = inkan::audit::row_hash(&prev, &row).to_vec();
            if row.seq >= seq {
                env.sql_ok(&format!(
                    "UPDATE audit SET detail = '{}', prev_hash = {}, hash = {} WHERE seq = {}; SELECT 1",
                    row.detail,
                    blob(env, &prev),
                    blob(env, &hash),
                    row.seq
                ));
                out.push((row.seq, hash.clone()));
            }
            prev = hash;
        }
        let last = out.last().expect("rows").clone();
        env.sql_ok(&format!("UPDATE audit_head SET seq = {}, hash = {}; SELECT 1", last.0, blob(env, &last.1)));
        out
    }

    #[test]
    fn a_recomputed_chain_is_told_apart_by_the_tokens_seals() {
        let env = three_users();
        // Each command sealed what it wrote.
        let v = env.json(&["audit", "verify"]);
        assert_eq!(
            (v["rows"].as_i64(), v["sealed_through"].as_i64(), v["unsealed"].as_i64()),
            (Some(3), Some(3), Some(0)),
            "{v}"
        );
        assert_eq!(v["seals_checked"], true);
        assert!(env.ok(&["audit", "verify"]).contains("sealed through row 3"));

        drop_triggers(&env);
        let recomputed = edit_and_recompute(&env, 2);
        // The chain alone is consistent again; the seals are not.
        let r = env.run(&["audit", "verify"]);
        assert_eq!(r.code, 3, "{}", r.stdout);
        assert!(r.stderr.contains("broken at row 2") && r.stderr.contains("recomputed"), "{}", r.stderr);
        // Seals rewritten to the new hashes: their MACs are not the token's.
        for (seq, hash) in &recomputed {
            env.sql_ok(&format!("UPDATE audit_seals SET hash = {} WHERE seq = {seq}; SELECT 1", blob(&env, hash)));
        }
        let r = env.run(&["--json", "audit", "verify"]);
        assert_eq!(r.code, 3);
        let v: serde_json::Value = serde_json::from_str(&r.stderr).expect("json");
        assert_eq!(v["broken"]["seq"], 2, "{v}");
        assert!(v["broken"]["reason"].as_str().unwrap_or("").contains("not made by this token"), "{v}");
        // And the seals deleted from the edit on: the token recorded the
        // seal of row 3, which the database no longer holds.
        env.sql_ok("DELETE FROM audit_seals WHERE seq >= 2; SELECT 1");
        let r = env.run(&["audit", "verify"]);
        assert_eq!(r.code, 3, "{}", r.stdout);
        assert!(r.stderr.contains("broken at row 3") && r.stderr.contains("seals were removed"), "{}", r.stderr);
        assert!(!r.stderr.contains("audit seal"), "no advice to seal: {}", r.stderr);
        // No sealer seals the forgery, and the refusal stays in the token.
        let seals = || env.sql_ok("SELECT count(*) FROM audit_seals")[0].clone();
        let before = seals();
        let r = env.run(&["audit", "seal"]);
        assert_ne!(r.code, 0, "{}", r.stdout);
        assert!(r.stderr.contains("seals were removed"), "{}", r.stderr);
        let r = env.run(&["audit", "seal"]);
        assert!(
            r.stderr.contains("sealing of the audit log stopped at") && r.stderr.contains("--clear-refusal"),
            "{}",
            r.stderr
        );
        env.add_user("900004", "doctor");
        assert_eq!(seals(), before, "nothing sealed over it");
        // Cleared only when the log verifies.
        let r = env.run(&["audit", "seal", "--clear-refusal"]);
        assert_eq!(r.code, 3, "{}", r.stderr);
        assert!(r.stderr.contains("the refusal to seal stays"), "{}", r.stderr);
        let r = env.run(&["--json", "audit", "verify"]);
        assert_eq!(r.code, 3);
        let v: serde_json::Value = serde_json::from_str(&r.stderr).expect("json");
        assert!(v["refusal"]["reason"].as_str().unwrap_or("").contains("seals were removed"), "{v}");
        // Without the token, the rows after the last seal are not vouched for.
        let r = env.run_with(&["audit", "verify", "--grace-secs", "0"], &AWAY);
        assert_eq!(r.code, 5, "{}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains("not vouched for"), "{}", r.stderr);
    }

    #[test]
    fn every_seal_removed_is_caught_by_the_tokens_record() {
        let env = three_users();
        drop_triggers(&env);
        env.sql_ok("DELETE FROM audit_seals; SELECT 1");
        let r = env.run(&["audit", "verify"]);
        assert_eq!(r.code, 3, "{}", r.stdout);
        assert!(r.stderr.contains("seals were removed"), "{}", r.stderr);
        // Without the token: no row is sealed, which is not vouched for either.
        let r = env.run_with(&["audit", "verify", "--grace-secs", "0"], &AWAY);
        assert_eq!(r.code, 5, "{}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains("no row is sealed"), "{}", r.stderr);
        let r = env.run(&["audit", "seal"]);
        assert_ne!(r.code, 0);
        assert_eq!(env.sql_ok("SELECT count(*) FROM audit_seals")[0], "0");
    }

    #[test]
    fn a_sealer_killed_before_the_token_recorded_its_seal_raises_no_alarm() {
        let env = Env::new();
        env.add_user("900001", "doctor");
        // Killed after the seal was committed, before the token's record.
        let crash = [("INKAN_DANGER_CRASH_AT", "seal-before-record")];
        let r = env.run_with(&["user", "add", "900002", "--name", "B", "--qualification", "doctor"], &crash);
        assert_ne!(r.code, 0, "killed");
        let v = env.json(&["audit", "verify", "--grace-secs", "0"]);
        assert_eq!((v["sealed_through"].as_i64(), v["token_record"].as_i64()), (Some(2), Some(1)), "{v}");
        // The next sealer brings the record up to date and goes on.
        env.add_user("900003", "doctor");
        let v = env.json(&["audit", "verify", "--grace-secs", "0"]);
        assert_eq!((v["sealed_through"].as_i64(), v["token_record"].as_i64()), (Some(3), Some(3)), "{v}");
    }

    #[test]
    fn rows_left_unsealed_past_the_grace_are_not_vouched_for() {
        let env = Env::new();
        env.add_user("900001", "doctor");
        // A command whose token is away writes its row and cannot seal it.
        let r = env.run_with(&["user", "add", "900002", "--name", "B", "--qualification", "doctor"], &AWAY);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(r.stderr.contains("not sealed"), "{}", r.stderr);
        assert!(env.ok(&["audit", "verify"]).contains("1 rows after the last seal are not sealed yet"));
        let r = env.run(&["--json", "audit", "verify", "--grace-secs", "0"]);
        assert_eq!(r.code, 5, "{}", r.stdout);
        let v: serde_json::Value = serde_json::from_str(&r.stderr).expect("json");
        assert_eq!((v["unsealed"].as_i64(), v["sealed_through"].as_i64()), (Some(1), Some(1)), "{v}");
        // Sealed by whoever can vouch for it (the token's record checks out).
        env.ok(&["audit", "seal"]);
        env.ok(&["audit", "verify", "--grace-secs", "0"]);
    }

    #[test]
    fn exported_seals_catch_a_tail_cut_back_to_an_older_seal() {
        let env = three_users();
        let heads = env.path("heads.jsonl");
        std::fs::write(&heads, env.ok(&["audit", "heads"])).expect("export");
        assert_eq!(std::fs::read_to_string(&heads).expect("heads").lines().count(), 3);
        assert!(env.ok(&["audit", "verify", "--heads", s(&heads)]).contains("3 exported seals found as exported"));
        // The last row and its seal removed, the head moved back.
        drop_triggers(&env);
        let row2 = env.sql_ok("SELECT hash FROM audit WHERE seq = 2")[0].clone();
        env.sql_ok(&format!(
            "DELETE FROM audit WHERE seq = 3; DELETE FROM audit_seals WHERE seq = 3; UPDATE audit_head SET seq = 2, hash = {}; SELECT 1",
            blob(&env, &unhex(&row2))
        ));
        // The token recorded the seal of row 3: caught without the export.
        let r = env.run(&["audit", "verify"]);
        assert_eq!(r.code, 3, "{}", r.stdout);
        assert!(
            r.stderr.contains("the token sealed row 3") && r.stderr.contains("deleted from the end"),
            "{}",
            r.stderr
        );
        // Without the token: consistent in itself...
        assert!(env.run_with(&["audit", "verify"], &AWAY).stdout.contains("seals through row 2"));
        // ... but not with what was exported.
        let r = env.run_with(&["audit", "verify", "--heads", s(&heads)], &AWAY);
        assert_eq!(r.code, 3, "{}", r.stdout);
        assert!(r.stderr.contains("deleted from the end"), "{}", r.stderr);
        // A file that is not an export is refused with what it needs.
        std::fs::write(&heads, "{\"seq\": 1}\n").expect("write");
        let r = env.run(&["audit", "verify", "--heads", s(&heads)]);
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(r.stderr.contains("seq, hash, prev, mac"), "{}", r.stderr);
    }

    #[test]
    fn a_seal_removed_from_the_middle_breaks_the_next() {
        let env = three_users();
        drop_triggers(&env);
        env.sql_ok("DELETE FROM audit_seals WHERE seq = 2; SELECT 1");
        let r = env.run(&["audit", "verify"]);
        assert_eq!(r.code, 3, "{}", r.stdout);
        assert!(
            r.stderr.contains("broken at row 3") && r.stderr.contains("seal between them was removed"),
            "{}",
            r.stderr
        );
    }

    #[test]
    fn a_running_server_does_not_seal_over_a_rewritten_chain() {
        let env = env_with_card_user();
        let server = server_sealed(&env);
        // Rewritten from row 2 on, every seal from row 2 on removed, and a
        // new row written by the server: it must not seal the forged chain.
        drop_triggers(&env);
        edit_and_recompute(&env, 2);
        env.sql_ok("DELETE FROM audit_seals WHERE seq >= 2; SELECT 1");
        let kept = sealed(&env);
        login_with_scope(&server, &env, "openid sign");
        std::thread::sleep(std::time::Duration::from_millis(2500));
        assert_eq!(sealed(&env), kept, "no seal over the rewritten chain");
        // The CLI does not seal rows it did not write either.
        env.add_user("900009", "doctor");
        assert_eq!(sealed(&env), kept);
        let mut server = server;
        let stderr = server.kill();
        assert!(stderr.contains("seals were removed"), "{stderr}");
        // A restart does not seal it either: the refusal is in the token.
        let server = Server::start(&env, &[("INKAN_LOG", "warn")]);
        login_with_scope(&server, &env, "openid sign");
        std::thread::sleep(std::time::Duration::from_millis(2500));
        assert_eq!(sealed(&env), kept, "no seal after a restart");
        let mut server = server;
        let stderr = server.kill();
        assert!(stderr.contains("sealing of the audit log stopped at"), "{stderr}");
        assert!(!stderr.contains('\u{1b}'), "no colour codes in a log that is not a terminal: {stderr:?}");
    }

    #[test]
    fn a_restart_does_not_seal_a_chain_rewritten_while_no_server_ran() {
        let env = env_with_card_user();
        let server = server_sealed(&env);
        let (code, _) = server.stop();
        assert_eq!(code, Some(0));
        // Offline: rewritten from row 2 on, the seals from row 2 on removed.
        drop_triggers(&env);
        edit_and_recompute(&env, 2);
        env.sql_ok("DELETE FROM audit_seals WHERE seq >= 2; SELECT 1");
        let kept = sealed(&env);
        let server = Server::start(&env, &[("INKAN_LOG", "warn")]);
        login_with_scope(&server, &env, "openid sign");
        std::thread::sleep(std::time::Duration::from_millis(2500));
        assert_eq!(sealed(&env), kept, "the restarted server sealed the forged rows");
        let mut server = server;
        assert!(server.kill().contains("seals were removed"));
        assert_eq!(env.run(&["audit", "verify"]).code, 3);
    }

    #[test]
    fn the_server_seals_what_it_writes_within_a_second() {
        let env = env_with_card_user();
        let server = Server::start(&env, &[]);
        let sealed = || {
            let head = env.sql_ok("SELECT seq FROM audit_head")[0].clone();
            let seal = env.sql_ok("SELECT coalesce(max(seq), 0) FROM audit_seals")[0].clone();
            (head, seal)
        };
        let before = sealed();
        login_with_scope(&server, &env, "openid sign");
        let started = std::time::Instant::now();
        loop {
            let (head, seal) = sealed();
            if head == seal && head != before.0 {
                break;
            }
            assert!(started.elapsed() < std::time::Duration::from_secs(10), "not sealed: head {head}, seal {seal}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

mod relay {
    use super::*;
    use crate::authenticator::StockPasskey;
    use crate::fido::{enroll_by_card, fido_env, fido_login_start, Pc};

    #[test]
    fn a_qr_code_relayed_to_a_phone_that_does_not_see_the_pc_is_of_no_use() {
        let env = fido_env();
        let server = Server::start(&env, &[]);
        let client = register_client(&env);
        let mut phone = StockPasskey::new(&server.base);
        enroll_by_card(&server, "hpki-doctor", "hpki", &mut phone, false);

        // The attacker's PC starts a phone login for the victim's ID and
        // sends the QR code (its URL) to the victim.
        let (mut attacker, phone_url, _) = fido_login_start(&server, &client, "100001");
        let code = attacker.confirmation(&server).expect("the PC shows a confirmation number");
        // The victim's phone shows what it would approve: which system, which PC.
        let page = Client::new().get(&phone_url, &[]).text();
        for shown in ["署名システム", "手続きを始めたPC", "127.0.0.1", "開始時刻", "確認番号"] {
            assert!(page.contains(shown), "{shown}: {page}");
        }
        // Without the number on the attacker's screen, the phone cannot begin.
        let r = begin(&phone_url, None);
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("確認番号"), "{}", r.text());
        // A guess: the QR code is cancelled, and the PC is told why.
        let wrong = if code == "0000" { "0001" } else { "0000" };
        let r = begin(&phone_url, Some(wrong));
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("取り消されました"), "{}", r.text());
        let status = attacker.status(&server);
        assert_eq!(status["step"], "cancelled", "{status}");
        assert!(attacker.get(&server.url("/pc")).text().contains("確認番号が、この画面の番号と違いました"));
        // The right number afterwards is of no use either.
        let r = begin(&phone_url, Some(&code));
        assert_ne!(r.status, 200, "{}", r.text());
        assert_eq!(env.sql_ok("SELECT count(*) FROM sessions")[0], "0");

        // A phone change (D1) asks for the number too; a new start shows a new one.
        let mut pc = Pc::new();
        assert_eq!(pc.post_form(&server.url("/change"), &[("user_id", "100001")]).status, 303);
        let change_url = pc.phone_url(&server);
        assert_eq!(begin(&change_url, None).status, 400);
        let first = pc.confirmation(&server).expect("code");
        assert_eq!(begin(&change_url, Some(&first)).status, 200, "the PC's number opens the ceremony");
    }

    #[test]
    fn the_pcs_own_browser_can_reach_the_phone_without_the_qr_code() {
        use crate::authenticator::Phone;
        let env = fido_env();
        let server = Server::start(&env, &[]);
        let client = register_client(&env);
        let mut phone = StockPasskey::new(&server.base);
        enroll_by_card(&server, "hpki-doctor", "hpki", &mut phone, false);
        let (mut pc, _, verifier) = fido_login_start(&server, &client, "100001");
        assert!(pc.get(&server.url("/pc")).text().contains("このPCのブラウザでスマートフォンを使う"));
        let cookie = pc.cookie.clone().expect("cookie");
        let post = |path: &str, body: String| {
            Client::new().post(
                &server.url(path),
                &[("cookie", cookie.as_str()), ("content-type", "application/json"), ("sec-fetch-site", "same-origin")],
                body,
            )
        };
        // Only the PC's cookie opens it.
        assert_eq!(Client::new().post(&server.url("/pc/begin"), &[], "{}").status, 401);
        let options = post("/pc/begin", "{}".into());
        assert_eq!(options.status, 200, "{}", options.text());
        let answer = phone.get(&options.json());
        let r = post("/pc/finish", answer.to_string());
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["next"], "/pc");
        let status = pc.status(&server);
        let redirect = status["redirect"].as_str().expect("the login finished").to_owned();
        let code = query(&redirect)["code"].clone();
        assert_eq!(exchange(&server, &client, &code, &verifier).status, 200);
    }
}

mod enumeration {
    use super::*;
    use crate::authenticator::{Phone, StockPasskey};
    use crate::fido::{enroll_by_card, fido_env, Pc};
    use serde_json::Value;

    /// A page as anyone compares it: without its QR code, with the ID, the
    /// phone token and every number (times, confirmation) masked.
    fn masked(text: &str, id: &str) -> String {
        let mut text = text.to_owned();
        if let (Some(a), Some(b)) = (text.find("<svg"), text.find("</svg>")) {
            text.replace_range(a..b, "<QR>");
        }
        let mut text = text.replace("&#x2f;", "/").replace(id, "<ID>");
        while let Some(at) = text.find("/m/") {
            let from = at + 3;
            let len = text[from..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')).unwrap_or(0);
            text.replace_range(at..from + len, "<PHONE>");
        }
        let mut out = String::new();
        let mut digits = false;
        for c in text.chars() {
            if c.is_ascii_digit() {
                if !digits {
                    out.push('#');
                }
                digits = true;
            } else {
                out.push(c);
                digits = false;
            }
        }
        out
    }

    /// The options' shape: every key and value but the challenge's and the
    /// credential IDs' (a real user's passkey names no transports, nor may a
    /// decoy's).
    fn shape(options: &Value) -> Value {
        let mut shape = options.clone();
        shape["publicKey"]["challenge"] = json!("<challenge>");
        if let Some(allowed) = shape["publicKey"]["allowCredentials"].as_array_mut() {
            allowed.truncate(1);
            for c in allowed {
                c["id"] = json!("<id>");
            }
        }
        shape
    }

    /// Everything one phone change shows, from its start to the attacker's
    /// phone answering it: the start, the PC page, the phone page, begin
    /// without the number, the options, the refused answer, the PC's poll.
    struct Seen {
        pages: Vec<String>,
        options: Value,
        credentials: Vec<Value>,
    }

    fn change(server: &Server, id: &str, attacker: &mut StockPasskey) -> Seen {
        let mut pages = Vec::new();
        let mut pc = Pc::new();
        let r = pc.post_form(&server.url("/change"), &[("user_id", id)]);
        pages.push(format!("{} {}", r.status, r.location()));
        pages.push(masked(&pc.get(&server.url("/pc")).text(), id));
        let phone_url = pc.phone_url(server);
        pages.push(masked(&Client::new().get(&phone_url, &[]).text(), id));
        let r = begin(&phone_url, None);
        pages.push(format!("{} {}", r.status, r.text()));
        let code = pc.confirmation(server).expect("the PC shows a confirmation number");
        let r = begin(&phone_url, Some(&code));
        assert_eq!(r.status, 200, "{id}: {}", r.text());
        let options = r.json();
        let credentials = options["publicKey"]["allowCredentials"].as_array().expect("allowCredentials").clone();
        // The attacker's phone answers the challenge with the passkey it holds.
        let mut own = options.clone();
        own["publicKey"]["allowCredentials"] =
            json!([{ "type": "public-key", "id": attacker.credential_id.clone().expect("registered") }]);
        let r = crate::fido::phone_finish(&phone_url, &attacker.get(&own));
        pages.push(format!("{} {}", r.status, r.text()));
        // And says that it gave up (what a phone without the passkey reports).
        let r = Client::new().post(&format!("{phone_url}/failed"), &[("content-type", "application/json")], "{}");
        pages.push(format!("{} {}", r.status, masked(&r.text(), id)));
        // A forged answer naming the first credential offered, signed by
        // another key (its flags and algorithm are the forger's to choose).
        let r = begin(&phone_url, Some(&code));
        assert_eq!(r.status, 200, "{id}: {}", r.text());
        let options = r.json();
        let mut forger = crate::authenticator::Authenticator::new(&server.base);
        let named = options["publicKey"]["allowCredentials"][0]["id"].as_str().expect("id");
        forger.credential_id =
            <base64ct::Base64UrlUnpadded as base64ct::Encoding>::decode_vec(named).expect("base64url");
        let r = crate::fido::phone_finish(&phone_url, &forger.assert(&options, &Default::default()));
        pages.push(format!("{} {}", r.status, r.text()));
        let mut status = pc.status(server);
        status["expired"] = json!(null);
        pages.push(masked(&status.to_string(), id));
        pages.push(masked(&pc.get(&server.url("/pc")).text(), id));
        Seen { pages, options: shape(&options), credentials }
    }

    /// Anyone may start a phone change (or login) for any ID. An unknown ID,
    /// a disabled user and a user without a phone get a decoy that shows and
    /// answers as a real user's ticket does, up to the phone's answer; the
    /// same ID gets the same credential IDs every time.
    #[test]
    fn expired_qr_codes_of_ids_with_and_without_a_phone_answer_alike() {
        let env = fido_env();
        let server = Server::start(&env, &[]);
        let mut victim = StockPasskey::new(&server.base);
        enroll_by_card(&server, "hpki-doctor", "hpki", &mut victim, false);
        let client = register_client(&env);
        // The attacker starts a phone login for an ID with a phone and for
        // one without, and begins both on a phone of their own.
        let mut started: Vec<(Pc, String)> = ["100001", "nobody"]
            .iter()
            .map(|id| {
                let (mut pc, phone_url, _) = crate::fido::fido_login_start(&server, &client, id);
                assert_eq!(begin(&phone_url, pc.confirmation(&server).as_deref()).status, 200);
                (pc, phone_url)
            })
            .collect();
        // Both expire; a later start purges the decoy's row (a real one stays a day).
        env.sql_ok("UPDATE tickets SET expires_at = 1; SELECT 1");
        crate::fido::fido_login_start(&server, &client, "someone-else");
        assert_eq!(env.sql_ok("SELECT count(*) FROM tickets WHERE decoy_for = 'nobody'")[0], "0");
        let seen: Vec<Vec<String>> = started
            .iter_mut()
            .map(|(pc, phone_url)| {
                let status = pc.get(&server.url("/pc/status"));
                let page = pc.get(&server.url("/pc"));
                let phone = Client::new().get(phone_url, &[]);
                let begun = begin(phone_url, None);
                [status, page, phone, begun].iter().map(|r| format!("{} {}", r.status, r.text())).collect()
            })
            .collect();
        assert_eq!(seen[0], seen[1], "an expired QR code tells whose ID has a phone");
        assert!(seen[0][0].starts_with("200 ") && seen[0][0].contains("\"expired\":true"), "{}", seen[0][0]);
        assert!(seen[0][1].starts_with("410 "), "{}", seen[0][1]);
    }

    #[test]
    fn unknown_disabled_and_phoneless_ids_answer_like_a_user_with_a_phone() {
        let env = fido_env();
        env.user_with_key("300003", "p256");
        env.user_with_key("400004", "p256");
        env.ok(&["user", "disable", "400004"]);
        let server = Server::start(&env, &[]);
        let mut victim = StockPasskey::new(&server.base);
        enroll_by_card(&server, "hpki-doctor", "hpki", &mut victim, false);
        // The attacker holds a phone of their own (999001-jpa's).
        let mut attacker = StockPasskey::new(&server.base);
        enroll_by_card(&server, "hpki-pharmacist", "hpki", &mut attacker, false);
        let before = env.sql_ok("SELECT user_id, credential_id, counter FROM devices ORDER BY user_id");

        let real = change(&server, "100001", &mut attacker);
        assert!(real.pages[4].starts_with("400 "), "the attacker's answer is refused: {}", real.pages[4]);
        assert!(real.pages[6].starts_with("400 "), "so is a forged one: {}", real.pages[6]);
        for id in ["nobody", "300003", "400004"] {
            let decoy = change(&server, id, &mut attacker);
            for (n, (a, b)) in real.pages.iter().zip(&decoy.pages).enumerate() {
                assert_eq!(a, b, "{id}: step {n} tells the IDs apart");
            }
            assert_eq!(real.options, decoy.options, "{id}: the options' shape");
            let again = change(&server, id, &mut attacker);
            assert_eq!(
                decoy.credentials.iter().map(|c| &c["id"]).collect::<Vec<_>>(),
                again.credentials.iter().map(|c| &c["id"]).collect::<Vec<_>>(),
                "{id}: the same credentials every time, as a real user's"
            );
        }
        assert_eq!(
            real.credentials[0]["id"],
            change(&server, "100001", &mut attacker).credentials[0]["id"],
            "the real user's too"
        );

        // A phone login (L1) for an unknown ID shows a QR code and offers passkeys alike.
        let client = register_client(&env);
        let shapes: Vec<Value> = ["100001", "nobody"]
            .iter()
            .map(|id| {
                let (mut pc, phone_url, _) = crate::fido::fido_login_start(&server, &client, id);
                let r = begin(&phone_url, pc.confirmation(&server).as_deref());
                assert_eq!(r.status, 200, "{id}: {}", r.text());
                shape(&r.json())
            })
            .collect();
        assert_eq!(shapes[0], shapes[1]);

        // Nothing changed for any user; the decoys are rows of their own.
        assert_eq!(env.sql_ok("SELECT user_id, credential_id, counter FROM devices ORDER BY user_id"), before);
        assert_eq!(env.sql_ok("SELECT status FROM users WHERE id = '400004'"), vec!["disabled"]);
        assert_eq!(env.sql_ok("SELECT count(*) FROM users"), vec!["4"]);
        assert_eq!(
            env.sql_ok("SELECT DISTINCT decoy_for FROM tickets WHERE decoy_for IS NOT NULL ORDER BY decoy_for"),
            vec!["300003", "400004", "nobody"]
        );
        assert_eq!(env.sql_ok("SELECT count(*) FROM tickets WHERE decoy_for IS NOT NULL AND step = 'done'")[0], "0");
    }
}

mod balancer {
    //! inkan behind a real HAProxy that passes TCP through and names each
    //! client in a PROXY protocol v2 header (`send-proxy-v2`).
    use super::*;
    use std::process::{Child, Command, Stdio};

    /// A running HAProxy: `listen` on loopback → inkan's main listener.
    struct Haproxy(Child);

    impl Haproxy {
        fn start(env: &Env, listen: u16, backend: u16) -> Haproxy {
            let cfg = env.dir.path().join("haproxy.cfg");
            std::fs::write(
                &cfg,
                format!(
                    "global\n    maxconn 256\n\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\n\
                     frontend main\n    bind 127.0.0.1:{listen}\n    default_backend inkan\n\n\
                     backend inkan\n    default-server send-proxy-v2 check check-send-proxy inter 1s\n    server node1 127.0.0.1:{backend}\n"
                ),
            )
            .expect("haproxy.cfg");
            let child = Command::new("/usr/sbin/haproxy")
                .args(["-db", "-f"])
                .arg(&cfg)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("haproxy (softhsm/setup.sh --deps-only installs it)");
            // Killed and waited for when dropped, also if it never listens.
            let haproxy = Haproxy(child);
            for _ in 0..250 {
                if std::net::TcpStream::connect(("127.0.0.1", listen)).is_ok() {
                    return haproxy;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            panic!("haproxy did not listen on {listen}");
        }
    }

    impl Drop for Haproxy {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn behind_haproxy_limits_count_each_client_and_only_the_balancer_may_connect() {
        let env = Env::new();
        let server = Server::start(
            &env,
            &[
                ("INKAN_SERVER_PROXY_FROM", "127.0.0.1"),
                ("INKAN_LIMITS_PER_ADDRESS_PER_MINUTE", "1"),
                ("INKAN_LIMITS_PER_ADDRESS_BURST", "3"),
            ],
        );
        let backend: u16 = server.base.rsplit(':').next().expect("port").parse().expect("port");
        let front = crate::http::free_port();
        let _haproxy = Haproxy::start(&env, front, backend);
        let through = |from: &str, path: &str| {
            Client::new().from(from).try_request("GET", &format!("https://localhost:{front}{path}"), &[], Vec::new())
        };
        assert_eq!(through("127.0.5.1", "/healthz").expect("through haproxy").status, 200);
        // Client A spends its limit: the fourth request is refused…
        let a: Vec<u16> = (0..4).map(|_| through("127.0.5.1", "/r/nothing").expect("through haproxy").status).collect();
        assert_eq!(a[3], 429, "{a:?}");
        // …and client B, through the same balancer, is not held by it.
        let b = through("127.0.6.1", "/r/nothing").expect("through haproxy");
        assert_ne!(b.status, 429, "{}", b.text());
        // Direct connections: from the balancer's address without a header
        // (the ClientHello is not one) are closed.
        let direct = |from: &str| Client::new().from(from).try_request("GET", &server.url("/healthz"), &[], Vec::new());
        assert!(direct("127.0.0.1").is_err(), "no PROXY header");
        // This host itself, when it is not a balancer, connects directly
        // (health checks, a local /metrics scrape); any other host is
        // closed (not testable on loopback: every address here is this host).
        assert_eq!(direct("127.0.0.2").expect("this host").status, 200);
    }
}
