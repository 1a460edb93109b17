//! The HTTPS service over real TLS sockets: card login, OpenID Connect,
//! signing API, CSC API, sessions, and their bad inputs.

use base64ct::{Base64, Encoding};
use serde_json::json;

use crate::harness::{fixture, openssl_verify, Env};
use crate::http::{
    after_change, authorize_url, card_login, exchange, login, pkce, query, register_client, Client, OidcClient, Server,
};

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8")
}

/// An environment with user 100001 (active key, HPKI card hpki-doctor mapped,
/// My Number card jpki-1 linked) and user 999001-jpa (active key, card not mapped).
fn service_env() -> Env {
    let env = Env::new();
    env.user_with_key("100001", "rsa2048");
    env.user_with_key("999001-jpa", "rsa2048");
    env.ok(&["hpki", "map", "100001", s(&fixture("holders/hpki-doctor.pem"))]);
    env.ok(&["jpki", "link", "100001", s(&fixture("holders/jpki-1.pem"))]);
    env
}

fn verify_id_token(server: &Server, id_token: &str) -> serde_json::Value {
    use p256::ecdsa::signature::Verifier;
    let jwks = Client::new().get(&server.url("/oidc/jwks"), &[]).json();
    let jwk = &jwks["keys"][0];
    assert_eq!(jwk["alg"], "ES256");
    let x = base64ct::Base64UrlUnpadded::decode_vec(jwk["x"].as_str().expect("x")).expect("x");
    let y = base64ct::Base64UrlUnpadded::decode_vec(jwk["y"].as_str().expect("y")).expect("y");
    let mut point = vec![4u8];
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).expect("key");
    let (input, sig) = id_token.rsplit_once('.').expect("jws");
    let sig = base64ct::Base64UrlUnpadded::decode_vec(sig).expect("sig");
    let sig = p256::ecdsa::Signature::from_slice(&sig).expect("raw r||s");
    key.verify(input.as_bytes(), &sig).expect("ID token signature verifies with the JWKS");
    let (header, payload) = input.split_once('.').expect("parts");
    let header: serde_json::Value =
        serde_json::from_slice(&base64ct::Base64UrlUnpadded::decode_vec(header).expect("h")).expect("h");
    assert_eq!(header["kid"], jwk["kid"]);
    serde_json::from_slice(&base64ct::Base64UrlUnpadded::decode_vec(payload).expect("p")).expect("claims")
}

#[test]
fn hpki_login_then_sign_then_logout() {
    let env = service_env();
    let server = Server::start(&env, &[]);
    let client = register_client(&env);

    // Discovery names our endpoints.
    let d = Client::new().get(&server.url("/.well-known/openid-configuration"), &[]).json();
    assert_eq!(d["issuer"], server.base);
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));

    let (verifier, challenge) = pkce();
    let r = card_login(&server, &client, "hpki-doctor", "hpki", &challenge);
    assert_eq!(r.status, 303, "{}", r.text());
    let back = r.location();
    assert!(back.starts_with(&client.redirect));
    let q = query(&back);
    assert_eq!(q["state"], "st-1");
    let code = q["code"].clone();

    // Wrong verifier: refused, and the code is spent.
    let bad = exchange(&server, &client, &code, &pkce().0);
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"], "invalid_grant");
    let again = exchange(&server, &client, &code, &verifier);
    assert_eq!(again.status, 400, "a code is single-use even after a failed exchange");

    // A fresh login, exchanged properly; reusing its code fails.
    let (verifier, challenge) = pkce();
    let r = card_login(&server, &client, "hpki-doctor", "hpki", &challenge);
    let code = query(&r.location())["code"].clone();
    let t = exchange(&server, &client, &code, &verifier);
    assert_eq!(t.status, 200, "{}", t.text());
    assert_eq!(t.headers.get("cache-control").map(String::as_str), Some("no-store"));
    let tokens = t.json();
    // (A replay of this code would end the session: hostile.rs.)
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 18 * 3600);
    let claims = verify_id_token(&server, tokens["id_token"].as_str().expect("id_token"));
    assert_eq!(claims["sub"], "100001");
    assert_eq!(claims["aud"], client.id);
    assert_eq!(claims["iss"], server.base);
    assert_eq!(claims["nonce"], "nonce-1");
    assert_eq!(claims["acr"], "hpki");
    // A stock OIDC library accepts the discovery document, the JWKS and the ID token.
    let out = std::process::Command::new("python3")
        .arg(crate::harness::root().join("tests/oidc/stock_client.py"))
        .args([
            &server.base,
            s(&fixture("hpki-root.pem")),
            &client.id,
            tokens["id_token"].as_str().expect("id"),
            "nonce-1",
        ])
        .output()
        .expect("python3");
    assert!(out.status.success(), "PyJWT refused: {}", String::from_utf8_lossy(&out.stderr));
    let access = tokens["access_token"].as_str().expect("access").to_owned();
    let bearer = format!("Bearer {access}");

    let me = Client::new().get(&server.url("/api/v1/me"), &[("authorization", &bearer)]).json();
    assert_eq!(me["user_id"], "100001");
    assert_eq!(me["method"], "hpki");
    assert_eq!(me["certificate"]["generation"], 1);

    // Sign a document, detached and attached; openssl verifies both.
    let doc = env.path("rx.xml");
    std::fs::write(&doc, "<処方箋>Rp.1</処方箋>".repeat(50)).expect("doc");
    let r = Client::new().post(
        &server.url("/api/v1/sign"),
        &[("authorization", &bearer)],
        std::fs::read(&doc).expect("doc"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["content-type"], "application/pkcs7-signature");
    let sig = env.path("rx.p7s");
    std::fs::write(&sig, &r.body).expect("sig");
    let (ok, err) = openssl_verify(&sig, Some(&doc));
    assert!(ok, "{err}");
    let r = Client::new().post(
        &server.url("/api/v1/sign?detached=false"),
        &[("authorization", &bearer)],
        std::fs::read(&doc).expect("doc"),
    );
    let attached = env.path("rx-attached.p7s");
    std::fs::write(&attached, &r.body).expect("sig");
    assert!(openssl_verify(&attached, None).0);

    // sign-hashes: CAdES over digests (in order) and raw PKCS#1 values.
    let docs = ["a", "b", "c"].map(|t| inkan::keystore::DigestAlgorithm::Sha256.digest(t.as_bytes()));
    let hashes: Vec<String> = docs.iter().map(|d| Base64::encode_string(d)).collect();
    let r = Client::new().post_json(
        &server.url("/api/v1/sign-hashes"),
        &access,
        &json!({ "hashes": hashes, "hashAlgorithm": "SHA-256", "format": "cades" }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let sigs = r.json()["signatures"].as_array().expect("signatures").clone();
    assert_eq!(sigs.len(), 3);
    for (i, t) in ["a", "b", "c"].iter().enumerate() {
        let content = env.path(&format!("{t}.txt"));
        std::fs::write(&content, t).expect("content");
        let p7s = env.path(&format!("{t}.p7s"));
        std::fs::write(&p7s, Base64::decode_vec(sigs[i].as_str().expect("b64")).expect("b64")).expect("p7s");
        assert!(openssl_verify(&p7s, Some(&content)).0, "signature {i} is over hash {i}");
    }
    let r = Client::new().post_json(
        &server.url("/api/v1/sign-hashes"),
        &access,
        &json!({ "hashes": [hashes[0]], "format": "raw" }),
    );
    let raw = Base64::decode_vec(r.json()["signatures"][0].as_str().expect("raw")).expect("raw");
    assert_eq!(raw.len(), 256, "an RSA-2048 signature value");

    // Audit: one row per signature, chain intact.
    let rows = env.json(&["audit", "tail", "--user", "100001", "--limit", "200"]);
    let signs = rows
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["event"] == "sign" && r["actor"] == format!("client:{}", client.id))
        .count();
    assert_eq!(signs, 2 + 3 + 1);
    assert!(env.ok(&["audit", "verify"]).contains("intact"));

    // Logout (RFC 7009) ends the session: the next signature needs a new login.
    let basic = format!("Basic {}", Base64::encode_string(format!("{}:{}", client.id, client.secret).as_bytes()));
    let body = format!("token={access}");
    let r = Client::new().post(
        &server.url("/oidc/revoke"),
        &[("authorization", &basic), ("content-type", "application/x-www-form-urlencoded")],
        body,
    );
    assert_eq!(r.status, 200);
    let r = Client::new().post_json(&server.url("/api/v1/sign-hashes"), &access, &json!({ "hashes": [hashes[0]] }));
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "invalid_token");

    // Graceful shutdown on SIGTERM.
    let (code, out) = server.stop();
    assert_eq!(code, Some(0));
    assert!(out.contains("inkan stopped"), "{out}");
}

#[test]
fn jpki_login_and_card_refusals() {
    let env = service_env();
    let server = Server::start(&env, &[]);
    let client = register_client(&env);

    // A linked My Number card logs in as its user.
    let tokens = login(&server, &client, "jpki-1", "jpki");
    let me = Client::new()
        .get(
            &server.url("/api/v1/me"),
            &[("authorization", &format!("Bearer {}", tokens["access_token"].as_str().expect("at")))],
        )
        .json();
    assert_eq!((me["user_id"].as_str(), me["method"].as_str()), (Some("100001"), Some("jpki")));

    let before = env.snapshot();
    let cases = [
        ("hpki-expired", "hpki", 403, "有効期限"),
        ("hpki-revoked", "hpki", 403, "失効"),
        ("jpki-revoked", "jpki", 403, "失効"),
        ("jpki-1", "hpki", 403, "このログイン方法で使える証明書ではありません"),
        ("hpki-doctor", "jpki", 403, "このログイン方法で使える証明書ではありません"),
        ("hpki-pharmacist", "hpki", 403, "登録されていません"),
        ("jpki-2", "jpki", 403, "紐付けられていません"),
    ];
    for (holder, acr, status, text) in cases {
        let r = card_login(&server, &client, holder, acr, &pkce().1);
        assert_eq!(r.status, status, "{holder} on {acr}: {}", r.text());
        assert!(r.text().contains(text), "{holder} on {acr}: {}", r.text());
        assert!(!r.headers.contains_key("location"), "no code for {holder}");
    }
    // A certificate from a CA of neither scheme: the server's own TLS certificate key pair.
    let r = {
        let first = Client::new().get(&authorize_url(&server, &client, &pkce().1, &[("acr_values", "hpki")]), &[]);
        Client::with_cert(&fixture("server.pem"), &fixture("server.key")).get(&first.location(), &[])
    };
    assert_eq!(r.status, 403, "{}", r.text());
    // No certificate at all: a page that says so, not a TLS failure.
    let first = Client::new().get(&authorize_url(&server, &client, &pkce().1, &[("acr_values", "hpki")]), &[]);
    let r = Client::new().get(&first.location(), &[]);
    assert_eq!(r.status, 401);
    assert!(r.text().contains("証明書が送られていません"), "{}", r.text());
    // login_hint naming another user.
    let first = Client::new()
        .get(&authorize_url(&server, &client, &pkce().1, &[("acr_values", "hpki"), ("login_hint", "999001-jpa")]), &[]);
    let r = Client::with_card("hpki-doctor").get(&first.location(), &[]);
    assert_eq!(r.status, 403);
    assert!(r.text().contains("本人IDが一致しません"));
    // An unknown or expired login request.
    let r = Client::with_card("hpki-doctor").get(&format!("{}/login/hpki?req=nope", server.card), &[]);
    assert_eq!(r.status, 400);
    assert_eq!(env.snapshot(), before, "refused logins opened no session");
}

#[test]
fn authorize_request_errors() {
    let env = service_env();
    let server = Server::start(&env, &[]);
    let client = register_client(&env);
    let challenge = pkce().1;
    // Unknown client and unregistered redirect URI: a page, never a redirect.
    for extra in [[("client_id", "nobody")], [("redirect_uri", "https://evil.example/cb")]] {
        let r = Client::new().get(&authorize_url(&server, &client, &challenge, &extra), &[]);
        assert_eq!(r.status, 400, "{extra:?}");
        assert!(!r.headers.contains_key("location"));
        assert!(r.headers["content-type"].starts_with("text/html"));
    }
    // Errors the client may learn of: redirected with error=.
    for (extra, error) in [
        (vec![("code_challenge", "")], "invalid_request"),
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("response_type", "token")], "unsupported_response_type"),
        (vec![("scope", "sign")], "invalid_scope"),
        (vec![("acr_values", "password")], "invalid_request"),
        (vec![("request", "eyJhbGciOiJub25lIn0.e30.")], "request_not_supported"),
        (vec![("request_uri", "https://rx.example/req")], "request_uri_not_supported"),
        (vec![("response_mode", "form_post")], "invalid_request"),
    ] {
        let r = Client::new().get(&authorize_url(&server, &client, &challenge, &extra), &[]);
        assert_eq!(r.status, 303, "{extra:?}");
        let q = query(&r.location());
        assert_eq!(q["error"], error, "{extra:?}");
        assert_eq!(q["state"], "st-1");
    }
    // Without acr_values: the Japanese chooser page.
    let r = Client::new().get(&authorize_url(&server, &client, &challenge, &[]), &[]);
    assert_eq!(r.status, 200);
    for text in ["HPKIカードでログイン", "マイナンバーカードでログイン", "スマートフォンでログイン"]
    {
        assert!(r.text().contains(text), "{text}");
    }
    // The token endpoint refuses bad client credentials.
    let mut wrong = register_client(&env);
    wrong.secret = "not-the-secret".into();
    let (verifier, challenge) = pkce();
    let r = card_login(&server, &client, "hpki-doctor", "hpki", &challenge);
    let code = query(&r.location())["code"].clone();
    let t = exchange(&server, &wrong, &code, &verifier);
    assert_eq!(t.status, 401);
    assert_eq!(t.json()["error"], "invalid_client");
    // Basic for one client and another's client_id in the body; Basic and
    // client_secret both: refused, and the code still works for its client.
    let basic = format!("Basic {}", Base64::encode_string(format!("{}:{}", client.id, client.secret).as_bytes()));
    let headers = [("authorization", basic.as_str()), ("content-type", "application/x-www-form-urlencoded")];
    let form = |extra: &str| {
        let base = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", &code)
            .append_pair("redirect_uri", &client.redirect)
            .append_pair("code_verifier", &verifier)
            .finish();
        format!("{base}{extra}")
    };
    let r = Client::new().post(&server.url("/oidc/token"), &headers, form(&format!("&client_id={}", wrong.id)));
    assert_eq!((r.status, r.json()["error"].as_str()), (401, Some("invalid_client")), "{}", r.text());
    let r =
        Client::new().post(&server.url("/oidc/token"), &headers, form(&format!("&client_secret={}", client.secret)));
    assert_eq!((r.status, r.json()["error"].as_str()), (400, Some("invalid_request")), "{}", r.text());
    let r = Client::new().post(&server.url("/oidc/token"), &headers, form(&format!("&client_id={}", client.id)));
    assert_eq!(r.status, 200, "the same client named twice is fine: {}", r.text());
}

#[test]
fn bearer_tokens_and_sessions() {
    let env = service_env();
    let server = Server::start(&env, &[]);
    let client = register_client(&env);
    let body = json!({ "hashes": [Base64::encode_string(&[1u8; 32])] });
    let url = server.url("/api/v1/sign-hashes");
    for auth in [None, Some("Bearer"), Some("Bearer garbage-token"), Some("Basic abc")] {
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", *a)).collect();
        let r = Client::new().post(&url, &headers, body.to_string());
        assert_eq!(r.status, 401, "{auth:?}");
        assert!(r.headers.contains_key("www-authenticate"));
    }
    let access = login(&server, &client, "hpki-doctor", "hpki")["access_token"].as_str().expect("at").to_owned();
    assert_eq!(Client::new().post_json(&url, &access, &body).status, 200);
    let listed = env.json(&["session", "list", "100001"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(1));

    // An expired session.
    env.sql_ok("UPDATE sessions SET expires_at = 1");
    let r = after_change(&env, 401, || Client::new().post_json(&url, &access, &body));
    assert_eq!(r.status, 401);
    assert!(r.json()["error_description"].as_str().unwrap_or("").contains("expired"));

    // Disabling a user stops their sessions at once.
    let access = login(&server, &client, "hpki-doctor", "hpki")["access_token"].as_str().expect("at").to_owned();
    env.ok(&["user", "disable", "100001"]);
    assert_eq!(after_change(&env, 401, || Client::new().post_json(&url, &access, &body)).status, 401);
    env.ok(&["user", "enable", "100001"]);
    assert_eq!(after_change(&env, 200, || Client::new().post_json(&url, &access, &body)).status, 200);

    // The operator revokes the user's sessions.
    env.ok(&["session", "revoke", "100001"]);
    assert_eq!(after_change(&env, 401, || Client::new().post_json(&url, &access, &body)).status, 401);
}

#[test]
fn malformed_requests_are_refused() {
    let env = service_env();
    let server = Server::start(&env, &[("INKAN_CONFIG_UNUSED", "")]);
    let client = register_client(&env);
    let access = login(&server, &client, "hpki-doctor", "hpki")["access_token"].as_str().expect("at").to_owned();
    let url = server.url("/api/v1/sign-hashes");
    let before = env.audit_rows();
    let cases = [
        json!({ "hashes": [Base64::encode_string(&[1u8; 31])] }),
        json!({ "hashes": ["***not base64***"] }),
        json!({ "hashes": [Base64::encode_string(&[1u8; 32])], "hashAlgorithm": "MD5" }),
        json!({ "hashes": [Base64::encode_string(&[1u8; 32])], "extra": true }),
        json!({ "hashes": "not-a-list" }),
        json!({ "hashes": [] }),
        json!({ "hashes": [Base64::encode_string(&[1u8; 32])], "format": "xml" }),
    ];
    for body in cases {
        let r = Client::new().post_json(&url, &access, &body);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(r.json()["error"], "invalid_request", "{body}");
    }
    let r = Client::new().post(&url, &[("authorization", &format!("Bearer {access}"))], "{not json");
    assert_eq!(r.status, 400);
    // Over the body limit (1 MiB by default).
    let big = json!({ "hashes": vec![Base64::encode_string(&[1u8; 32]); 40_000] });
    let r = Client::new().post_json(&url, &access, &big);
    assert_eq!(r.status, 413, "{}", r.text());
    // Unknown endpoints answer in the same format.
    assert_eq!(Client::new().get(&server.url("/api/v1/nothing"), &[]).json()["error"], "not_found");
    // A NUL byte in a looked-up name finds nothing (PostgreSQL cannot hold
    // one in text; SQLite has none stored): an unknown client, not a 500.
    let (_, challenge) = pkce();
    let nul = OidcClient { id: "no\0such".into(), secret: String::new(), redirect: client.redirect.clone() };
    let r = Client::new().get(&authorize_url(&server, &nul, &challenge, &[]), &[]);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(env.audit_rows(), before, "no signature was made or logged");
}

#[test]
fn csc_api() {
    let env = service_env();
    let server = Server::start(&env, &[]);
    let client = register_client(&env);
    let access = login(&server, &client, "hpki-doctor", "hpki")["access_token"].as_str().expect("at").to_owned();
    let other = login(&server, &client, "jpki-1", "jpki")["access_token"].as_str().expect("at").to_owned();
    let csc = |path: &str, body: serde_json::Value| {
        Client::new().post_json(&server.url(&format!("/csc/v2/{path}")), &access, &body)
    };

    let info = Client::new().post(&server.url("/csc/v2/info"), &[], "{}").json();
    assert_eq!(info["authType"], json!(["oauth2code"]));
    // No `oauth2` base URL (CSC's /oauth2/... endpoints are not inkan's);
    // the issuer's RFC 8414 metadata names the real ones.
    assert!(info.get("oauth2").is_none(), "{info}");
    let issuer = info["oauth2Issuer"].as_str().expect("issuer");
    let meta = Client::new().get(&format!("{issuer}/.well-known/oauth-authorization-server"), &[]).json();
    assert_eq!(meta["issuer"], issuer);
    assert!(meta["authorization_endpoint"].as_str().is_some_and(|e| e.ends_with("/oidc/authorize")), "{meta}");
    assert_eq!(info["conformance_levels"], json!(["Ades-B-B"]), "no TSA, B-B alone");
    let list = csc("credentials/list", json!({})).json();
    assert_eq!(list["credentialIDs"], json!(["100001.g1"]));
    let ci = csc("credentials/info", json!({ "credentialID": "100001.g1", "certificates": "chain", "certInfo": true }))
        .json();
    assert_eq!(ci["key"]["status"], "enabled");
    assert_eq!(ci["key"]["len"], 2048);
    let algos = ci["key"]["algo"].as_array().expect("algo");
    assert!(algos.contains(&json!("1.2.840.113549.1.1.11")) && algos.contains(&json!("1.2.840.113549.1.1.1")));
    assert_eq!(ci["cert"]["status"], "valid");
    assert_eq!(ci["cert"]["certificates"].as_array().map(Vec::len), Some(3), "signer first, then the chain");
    assert_eq!(ci["SCAL"], "1");
    assert!(ci["cert"]["validTo"].as_str().expect("validTo").ends_with('Z'));
    let leaf = Base64::decode_vec(ci["cert"]["certificates"][0].as_str().expect("leaf")).expect("leaf");

    // signHash with rsaEncryption: PKCS#1 v1.5 over the DigestInfo, verifiable with the certificate.
    let digest = inkan::keystore::DigestAlgorithm::Sha256.digest(b"prescription");
    let h = Base64::encode_string(&digest);
    let r = csc(
        "signatures/signHash",
        json!({ "credentialID": "100001.g1", "hashes": [h], "hashAlgorithmOID": "2.16.840.1.101.3.4.2.1", "signAlgo": "1.2.840.113549.1.1.1" }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let sig = Base64::decode_vec(r.json()["signatures"][0].as_str().expect("sig")).expect("sig");
    {
        use der::{Decode, Encode};
        use rsa::pkcs8::DecodePublicKey;
        use rsa::signature::Verifier;
        let cert = x509_cert::Certificate::from_der(&leaf).expect("cert");
        let key = rsa::RsaPublicKey::from_public_key_der(
            &cert.tbs_certificate().subject_public_key_info().to_der().expect("spki"),
        )
        .expect("rsa");
        rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key)
            .verify(b"prescription", &rsa::pkcs1v15::Signature::try_from(sig.as_slice()).expect("sig"))
            .expect("signHash value verifies");
    }
    // v1 names on /csc/v1.
    let r = Client::new().post_json(&server.url("/csc/v1/signatures/signHash"), &access, &json!({ "credentialID": "100001.g1", "hash": [h], "hashAlgo": "2.16.840.1.101.3.4.2.1", "signAlgo": "1.2.840.113549.1.1.11" }));
    assert_eq!(r.status, 200, "{}", r.text());

    // signDoc: CAdES over a digest, verified by openssl.
    let r = csc(
        "signatures/signDoc",
        json!({ "credentialID": "100001.g1", "documentDigests": [{ "hashes": [h], "hashAlgorithmOID": "2.16.840.1.101.3.4.2.1", "signature_format": "C", "conformance_level": "AdES-B-B" }] }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let p7s = env.path("doc.p7s");
    std::fs::write(&p7s, Base64::decode_vec(r.json()["SignatureObject"][0].as_str().expect("obj")).expect("b64"))
        .expect("p7s");
    let content = env.path("doc.txt");
    std::fs::write(&content, "prescription").expect("content");
    assert!(openssl_verify(&p7s, Some(&content)).0);

    // Bad inputs.
    let bad = |path: &str, body: serde_json::Value, needle: &str| {
        let r = csc(path, body.clone());
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let v = r.json();
        assert_eq!(v["error"], "invalid_request");
        assert!(v["error_description"].as_str().unwrap_or("").contains(needle), "{body}: {v}");
    };
    bad(
        "signatures/signHash",
        json!({ "credentialID": "999001-jpa.g1", "hashes": [h], "signAlgo": "1.2.840.113549.1.1.11" }),
        "credentialID",
    );
    bad(
        "signatures/signHash",
        json!({ "credentialID": "100001.g1", "hashes": [h], "hashAlgorithmOID": "1.2.3.4", "signAlgo": "1.2.840.113549.1.1.1" }),
        "hashAlgorithmOID",
    );
    bad(
        "signatures/signHash",
        json!({ "credentialID": "100001.g1", "hashes": [h], "signAlgo": "1.2.840.10045.4.3.2" }),
        "signAlgo",
    );
    bad(
        "signatures/signHash",
        json!({ "credentialID": "100001.g1", "hashes": ["AAAA"], "signAlgo": "1.2.840.113549.1.1.11" }),
        "hashes",
    );
    bad(
        "signatures/signHash",
        json!({ "credentialID": "100001.g1", "hashes": [h], "signAlgo": "1.2.840.113549.1.1.11", "bogus": 1 }),
        "unknown field",
    );
    bad("credentials/info", json!({ "credentialID": 5 }), "invalid type");

    // SADs: bound to hashes, single use, capped, and only for their session.
    let other_digest = Base64::encode_string(&inkan::keystore::DigestAlgorithm::Sha256.digest(b"other"));
    let authorize = |hashes: serde_json::Value, n: u32| {
        csc("credentials/authorize", json!({ "credentialID": "100001.g1", "numSignatures": n, "hashes": hashes, "hashAlgorithmOID": "2.16.840.1.101.3.4.2.1" })).json()
    };
    let sad = authorize(json!([h]), 1)["SAD"].as_str().expect("SAD").to_owned();
    let sign_with = |sad: &str, hashes: serde_json::Value| {
        csc(
            "signatures/signHash",
            json!({ "credentialID": "100001.g1", "SAD": sad, "hashes": hashes, "signAlgo": "1.2.840.113549.1.1.11" }),
        )
    };
    assert_eq!(sign_with(&sad, json!([other_digest])).status, 400, "SAD for other hashes");
    let sad = authorize(json!([h]), 1)["SAD"].as_str().expect("SAD").to_owned();
    assert_eq!(sign_with(&sad, json!([h])).status, 200);
    assert_eq!(sign_with(&sad, json!([h])).status, 400, "SAD reused");
    let sad = csc("credentials/authorize", json!({ "credentialID": "100001.g1", "numSignatures": 1 })).json()["SAD"]
        .as_str()
        .expect("SAD")
        .to_owned();
    assert_eq!(sign_with(&sad, json!([h, other_digest])).status, 400, "count exceeded");
    let sad = authorize(json!([h]), 1)["SAD"].as_str().expect("SAD").to_owned();
    let r = Client::new().post_json(
        &server.url("/csc/v2/signatures/signHash"),
        &other,
        &json!({ "credentialID": "100001.g1", "SAD": sad, "hashes": [h], "signAlgo": "1.2.840.113549.1.1.11" }),
    );
    assert_eq!(r.status, 400, "another session cannot use the SAD (nor the credential)");
}

#[test]
fn scal2_needs_a_sad_bound_to_the_hashes_and_sads_expire() {
    let env = service_env();
    let server = Server::start(&env, &[("INKAN_CSC_SCAL", "2")]);
    let client = register_client(&env);
    let access = login(&server, &client, "hpki-doctor", "hpki")["access_token"].as_str().expect("at").to_owned();
    let h = Base64::encode_string(&[7u8; 32]);
    let csc = |path: &str, body: serde_json::Value| {
        Client::new().post_json(&server.url(&format!("/csc/v2/{path}")), &access, &body)
    };
    let r = csc(
        "signatures/signHash",
        json!({ "credentialID": "100001.g1", "hashes": [h], "signAlgo": "1.2.840.113549.1.1.11" }),
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("SAD"));
    let r = csc("credentials/authorize", json!({ "credentialID": "100001.g1", "numSignatures": 1 }));
    assert_eq!(r.status, 400, "SCAL 2 binds the SAD to hashes");
    let v =
        csc("credentials/authorize", json!({ "credentialID": "100001.g1", "numSignatures": 1, "hashes": [h] })).json();
    assert_eq!(v["expiresIn"], 300);
    let r = csc(
        "signatures/signHash",
        json!({ "credentialID": "100001.g1", "SAD": v["SAD"], "hashes": [h], "signAlgo": "1.2.840.113549.1.1.11" }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(csc("credentials/info", json!({ "credentialID": "100001.g1" })).json()["SCAL"], "2");
}

#[test]
fn health_metrics_and_stale_crl() {
    let env = service_env();
    // A stale CRL for the HPKI authentication CA: card login fails closed.
    let ca = inkan::pki::ca::Ca::load(&fixture("hpki-auth-ca.pem"), &fixture("hpki-auth-ca.key")).expect("ca");
    let now = inkan::clock::Clock::now(&inkan::clock::SystemClock);
    let day = std::time::Duration::from_secs(86_400);
    let crl = ca.crl(2, &[], now - 10 * day, now - day).expect("crl");
    let stale = env.path("stale.crl.pem");
    std::fs::write(&stale, inkan::pki::to_pem("X509 CRL", &crl)).expect("crl");
    let mut config = std::fs::read_to_string(&env.config).expect("config");
    config.push_str(&format!(
        "[hpki]\nanchors = [\"{}\"]\nintermediates = [\"{}\"]\ncrls = [\"{}\"]\n",
        fixture("hpki-root.pem").display(),
        fixture("hpki-auth-ca.pem").display(),
        stale.display()
    ));
    std::fs::write(&env.config, config).expect("config");
    let server = Server::start(&env, &[]);
    let client = register_client(&env);
    let r = card_login(&server, &client, "hpki-doctor", "hpki", &pkce().1);
    assert_eq!(r.status, 403);
    assert!(r.text().contains("out of date"), "{}", r.text());
    // JPKI is unaffected.
    login(&server, &client, "jpki-1", "jpki");

    assert_eq!(Client::new().get(&server.url("/readyz"), &[]).json()["status"], "ready");
    let metrics = Client::new().get(&server.url("/metrics"), &[]).text();
    for needle in [
        "inkan_http_requests_total{route=\"/oidc/token\",status=\"200\"} 1",
        "inkan_active_sessions 1",
        "inkan_sign_duration_seconds_bucket",
        "inkan_signatures_total{outcome=\"ok\"} 0",
    ] {
        assert!(metrics.contains(needle), "{needle} in\n{metrics}");
    }
}

#[test]
fn hpki_mapping_by_subject_serial_number_follows_a_renewed_card() {
    use der::{Decode, Encode};
    let env = service_env();
    // The pharmacist's renewed card: same holder (subject, key), new certificate and serial.
    let ca = inkan::pki::ca::Ca::load(&fixture("hpki-auth-ca.pem"), &fixture("hpki-auth-ca.key")).expect("ca");
    let old = inkan::pki::read_certificates(&fixture("holders/hpki-pharmacist.pem")).expect("cert").remove(0);
    let old = x509_cert::Certificate::from_der(&old).expect("cert");
    let now = inkan::clock::Clock::now(&inkan::clock::SystemClock);
    let day = std::time::Duration::from_secs(86_400);
    let renewed = ca
        .issue(
            inkan::pki::profile::Kind::HpkiAuth { role: inkan::pki::profile::Qualification::Pharmacist },
            old.tbs_certificate().subject().clone(),
            old.tbs_certificate().subject_public_key_info().clone(),
            now - day,
            now + 365 * day,
        )
        .expect("renewed");
    let renewed_pem = env.path("renewed.pem");
    std::fs::write(&renewed_pem, inkan::pki::to_pem("CERTIFICATE", &renewed.to_der().expect("der"))).expect("pem");
    let card = Client::with_cert(&renewed_pem, &fixture("holders/hpki-pharmacist.key"));
    let server = Server::start(&env, &[]);
    let client = register_client(&env);
    let try_login = || {
        let r = Client::new().get(&authorize_url(&server, &client, &pkce().1, &[("acr_values", "hpki")]), &[]);
        card.get(&r.location(), &[])
    };

    // Mapped by card (issuer + serial): the renewed card is a different card.
    env.ok(&["hpki", "map", "999001-jpa", s(&fixture("holders/hpki-pharmacist.pem"))]);
    assert_eq!(try_login().status, 403);
    // Mapped by subject serialNumber: the renewed card logs in.
    let v = env.json(&["hpki", "map", "999001-jpa", s(&fixture("holders/hpki-pharmacist.pem")), "--by-subject"]);
    assert_eq!(v["serial"], "*", "{v}");
    let r = try_login();
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(r.location().contains("code="), "{}", r.location());
    let list = env.json(&["hpki", "list", "999001-jpa"]);
    assert_eq!(list.as_array().expect("list").len(), 2, "{list}");
    // Mapped once only, and removable.
    let err = env.fails(&["hpki", "map", "100001", s(&fixture("holders/hpki-pharmacist.pem")), "--by-subject"]);
    assert!(err.contains("already mapped to 999001-jpa"), "{err}");
    env.ok(&["hpki", "unmap", "999001-jpa", s(&fixture("holders/hpki-pharmacist.pem")), "--by-subject"]);
    assert_eq!(try_login().status, 403);
}

#[test]
fn a_revoked_intermediate_ca_refuses_its_cards() {
    let env = service_env();
    // The HPKI root revokes the authentication CA in its ARL.
    let root = inkan::pki::ca::Ca::load(&fixture("hpki-root.pem"), &fixture("hpki-root.key")).expect("root");
    let auth_ca = inkan::pki::read_certificates(&fixture("hpki-auth-ca.pem")).expect("ca").remove(0);
    let auth_ca = <x509_cert::Certificate as der::Decode>::from_der(&auth_ca).expect("ca");
    let now = inkan::clock::Clock::now(&inkan::clock::SystemClock);
    let day = std::time::Duration::from_secs(86_400);
    let arl = root.crl(7, &[auth_ca.tbs_certificate().serial_number().clone()], now - day, now + day).expect("arl");
    let arl_path = env.path("hpki-root.arl.pem");
    std::fs::write(&arl_path, inkan::pki::to_pem("X509 CRL", &arl)).expect("arl");
    let mut config = std::fs::read_to_string(&env.config).expect("config");
    config.push_str(&format!(
        "[hpki]\nanchors = [\"{}\"]\nintermediates = [\"{}\"]\ncrls = [\"{}\", \"{}\"]\n",
        fixture("hpki-root.pem").display(),
        fixture("hpki-auth-ca.pem").display(),
        fixture("crl/hpki-auth-ca.crl.pem").display(),
        arl_path.display()
    ));
    std::fs::write(&env.config, config).expect("config");
    let server = Server::start(&env, &[]);
    let client = register_client(&env);
    let r = card_login(&server, &client, "hpki-doctor", "hpki", &pkce().1);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("認証局の証明書が失効"), "{}", r.text());
    assert!(r.text().contains("has been revoked"), "{}", r.text());
    // Without the ARL, the same card logs in (an ARL is checked when configured).
    drop(server);
    let config = std::fs::read_to_string(&env.config).expect("config");
    std::fs::write(&env.config, config.replace(&format!(", \"{}\"", arl_path.display()), "")).expect("config");
    let server = Server::start(&env, &[]);
    login(&server, &client, "hpki-doctor", "hpki");
}

#[test]
fn token_unavailable_answers_503_and_recovers_without_restart() {
    let env = service_env();
    let server = Server::start(&env, &[]);
    let client = register_client(&env);
    let access = login(&server, &client, "hpki-doctor", "hpki")["access_token"].as_str().expect("at").to_owned();
    let url = server.url("/api/v1/sign-hashes");
    let body = json!({ "hashes": [Base64::encode_string(&[3u8; 32])] });

    // The token goes away (its directory disappears). A key already unwrapped
    // would still sign from SoftHSM's memory: this one is not yet.
    let tokens = env.data().join("softhsm/tokens");
    let away = env.data().join("softhsm/tokens.away");
    std::fs::rename(&tokens, &away).expect("move token away");
    let r = Client::new().post_json(&url, &access, &body);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "temporarily_unavailable");
    assert_eq!(Client::new().get(&server.url("/readyz"), &[]).status, 503);

    // It comes back: signing works again, no restart.
    std::fs::rename(&away, &tokens).expect("token back");
    let started = std::time::Instant::now();
    loop {
        let r = Client::new().post_json(&url, &access, &body);
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "only 503 while recovering: {}", r.text());
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "no recovery");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(Client::new().get(&server.url("/readyz"), &[]).status, 200);
    assert_eq!(Client::new().post_json(&url, &access, &body).status, 200);
    let metrics = Client::new().get(&server.url("/metrics"), &[]).text();
    assert!(!metrics.contains("inkan_token_errors_total 0"), "token errors are counted");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in\n{metrics}"))
    };
    // Two signatures went through, each waited for its audit row once; the
    // token also signed the ID token, and the time spent in it is counted.
    assert_eq!(value("inkan_signatures_total{outcome=\"ok\"}"), 2.0);
    assert_eq!(value("inkan_audit_wait_seconds_count"), 2.0);
    assert!(value("inkan_token_sign_calls_total") >= 3.0, "{metrics}");
    // The user's wrapped key was unwrapped once, then found in the cache.
    assert_eq!(value("inkan_key_cache_misses_total"), 1.0, "{metrics}");
    assert_eq!(value("inkan_key_cache_hits_total"), 1.0, "{metrics}");
    assert_eq!(value("inkan_key_cache_entries"), 1.0, "{metrics}");
    assert_eq!(value("inkan_key_cache_refused_total"), 0.0, "{metrics}");
    assert!(value("inkan_token_sign_cpu_seconds_total") > 0.0, "{metrics}");
    // The two signatures' audit rows, with their details, and none for the refused one.
    let rows = env.json(&["audit", "tail", "--limit", "50"]);
    let signs: Vec<&serde_json::Value> =
        rows.as_array().expect("rows").iter().filter(|r| r["event"] == "sign").collect();
    assert_eq!(signs.len(), 2, "{rows}");
    for row in signs {
        let detail = row["detail"].to_string();
        for part in ["api.sign-hashes", "cades-bes", "hpki"] {
            assert!(detail.contains(part), "{part} in {row}");
        }
        assert_eq!(row["outcome"], "ok");
    }
}

#[test]
fn a_second_demo_start_on_ports_in_use_changes_nothing() {
    let env = Env::new();
    let server = Server::start_demo(&env);
    let clients = env.json(&["client", "list"]);
    let rows = env.audit_rows();
    let port = |url: &str| url.rsplit(':').next().expect("port").to_owned();
    let r = env.run_with(
        &["serve", "--demo"],
        &[
            ("INKAN_SERVER_LISTEN", &format!("127.0.0.1:{}", port(&server.base))),
            ("INKAN_SERVER_CARD_LISTEN", &format!("127.0.0.1:{}", port(&server.card))),
        ],
    );
    assert_ne!(r.code, 0, "the ports are taken");
    assert!(r.stderr.contains("cannot listen") && r.stderr.contains("already running"), "{}", r.stderr);
    assert_eq!(env.json(&["client", "list"]), clients, "the running instance's demo client is untouched");
    assert_eq!(env.audit_rows(), rows, "nothing was written");
    assert_eq!(Client::new().get(&server.url("/readyz"), &[]).status, 200);
}

#[test]
fn id_tokens_can_be_rs256_for_tokens_without_ec() {
    let env = service_env();
    let server = Server::start(&env, &[("INKAN_SERVER_ID_TOKEN_ALG", "RS256")]);
    let client = register_client(&env);
    let discovery = Client::new().get(&server.url("/.well-known/openid-configuration"), &[]).json();
    assert_eq!(discovery["id_token_signing_alg_values_supported"], json!(["RS256"]));
    let jwks = Client::new().get(&server.url("/oidc/jwks"), &[]).json();
    assert_eq!((jwks["keys"][0]["kty"].clone(), jwks["keys"][0]["alg"].clone()), (json!("RSA"), json!("RS256")));
    let tokens = login(&server, &client, "hpki-doctor", "hpki");
    let id_token = tokens["id_token"].as_str().expect("id token");
    let header: serde_json::Value = serde_json::from_slice(
        &base64ct::Base64UrlUnpadded::decode_vec(id_token.split('.').next().expect("header")).expect("b64"),
    )
    .expect("header");
    assert_eq!(header["alg"], "RS256");
    // A stock library checks the RS256 signature against the JWKS.
    let out = std::process::Command::new("python3")
        .arg(crate::harness::root().join("tests/oidc/stock_client.py"))
        .args([&server.base, s(&fixture("hpki-root.pem")), &client.id, id_token, "nonce-1", "RS256"])
        .output()
        .expect("python3");
    assert!(out.status.success(), "PyJWT refused: {}", String::from_utf8_lossy(&out.stderr));
}
