//! Several nodes: two `inkan serve` processes over real TLS, one PostgreSQL
//! database, one SoftHSM token directory (standing in for a network HSM
//! cluster). Both are configured with the same public URLs, as behind a TCP
//! load balancer: node A's ports stand for the balancer's, and a test reaches
//! node B by sending the same URL to B's ports. These tests always run on
//! PostgreSQL, whatever `INKAN_TEST_STORE` says.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64ct::{Base64, Encoding};
use serde_json::json;

use crate::authenticator::{Phone, StockPasskey};
use crate::fido::{phone_begin, phone_finish, sign_in, Pc};
use crate::harness::{fixture, openssl_verify, Env};
use crate::http::{
    after_change, authorize_url, card_login, exchange, login, pkce, query, register_client, Client, OidcClient, Resp,
    Server,
};
use crate::postgres::{self, Cluster};

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8")
}

/// The bound inkan states for a change on one node (or by the CLI) to reach
/// every other node's session cache (900 ms): a request that arrives later is
/// refused, so one still accepted must have been sent earlier.
const BOUND: Duration = inkan::store::postgres::epoch::STAMP_VALID;

/// User 100001 with an active RSA key, its HPKI card mapped; a signing client.
fn env_on(db: postgres::Database) -> (Env, OidcClient) {
    let env = Env::bare_with(Some(db));
    env.ok(&["init"]);
    env.user_with_key("100001", "rsa2048");
    env.ok(&["hpki", "map", "100001", s(&fixture("holders/hpki-doctor.pem"))]);
    let client = register_client(&env);
    (env, client)
}

/// Two nodes of one installation.
struct Nodes {
    a: Server,
    b: Server,
}

impl Nodes {
    fn start(env: &Env) -> Nodes {
        let a = Server::start(env, &[]);
        let b = Server::start(env, &[("INKAN_SERVER_PUBLIC_URL", &a.base), ("INKAN_SERVER_CARD_URL", &a.card)]);
        Nodes { a, b }
    }

    /// A whole card login on node B; returns the access token.
    fn login_on_b(&self, client: &OidcClient) -> String {
        let (verifier, challenge) = pkce();
        let r = Client::new().get(&authorize_url(&self.b, client, &challenge, &[("acr_values", "hpki")]), &[]);
        assert_eq!(r.status, 303, "{}", r.text());
        let r = Client::with_card("hpki-doctor").get(&self.to_b(&r.location()), &[]);
        assert_eq!(r.status, 303, "{}", r.text());
        let t = exchange(&self.b, client, &query(&r.location())["code"], &verifier);
        assert_eq!(t.status, 200, "{}", t.text());
        t.json()["access_token"].as_str().expect("access token").to_owned()
    }

    /// A URL of the public origins sent to node B instead.
    fn to_b(&self, url: &str) -> String {
        if let Some(rest) = url.strip_prefix(&self.a.card) {
            format!("{}{rest}", self.b.card)
        } else if let Some(rest) = url.strip_prefix(&self.a.base) {
            format!("{}{rest}", self.b.base)
        } else {
            panic!("{url} is not on the public origins")
        }
    }
}

fn sign_hashes(node: &Server, access: &str, hashes: &[[u8; 32]]) -> Resp {
    let hashes: Vec<String> = hashes.iter().map(|h| Base64::encode_string(h)).collect();
    Client::new().post_json(&node.url("/api/v1/sign-hashes"), access, &json!({ "hashes": hashes, "format": "cades" }))
}

/// Asks until a request started at most [`BOUND`] after `since` is refused
/// with 401; returns when that request started.
fn refused_within_bound(since: Instant, mut request: impl FnMut() -> Resp) -> Duration {
    loop {
        let started = since.elapsed();
        let r = request();
        if r.status == 401 {
            return started;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(started <= BOUND, "still accepted {started:?} after the change");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_login_on_one_node_signs_on_the_other_and_a_logout_there_ends_it_everywhere() {
    let (env, client) = env_on(postgres::shared().create_database());
    let nodes = Nodes::start(&env);
    let (a, b) = (&nodes.a, &nodes.b);

    // Both name the same issuer.
    let issuer =
        |n: &Server| Client::new().get(&n.url("/.well-known/openid-configuration"), &[]).json()["issuer"].clone();
    assert_eq!(issuer(a), issuer(b));

    // The authorization request reaches A, the card login B, the token
    // request A: the pending request is shared.
    let (verifier, challenge) = pkce();
    let r = Client::new().get(&authorize_url(a, &client, &challenge, &[("acr_values", "hpki")]), &[]);
    assert_eq!(r.status, 303, "{}", r.text());
    let r = Client::with_card("hpki-doctor").get(&nodes.to_b(&r.location()), &[]);
    assert_eq!(r.status, 303, "node B finishes a login node A began: {}", r.text());
    let code = query(&r.location())["code"].clone();
    let t = exchange(a, &client, &code, &verifier);
    assert_eq!(t.status, 200, "{}", t.text());

    // A code issued by A is redeemed on B, and only once anywhere.
    let (verifier, challenge) = pkce();
    let r = card_login(a, &client, "hpki-doctor", "hpki", &challenge);
    let code = query(&r.location())["code"].clone();
    let t = exchange(b, &client, &code, &verifier);
    assert_eq!(t.status, 200, "{}", t.text());
    assert_eq!(exchange(b, &client, &code, &verifier).status, 400, "not twice on B");
    assert_eq!(exchange(a, &client, &code, &verifier).status, 400, "not twice on A");
    // The replay ended the session the code opened, on both nodes (RFC 6749 4.1.2).
    let replayed = t.json()["access_token"].as_str().expect("token").to_owned();
    let probe = inkan::keystore::DigestAlgorithm::Sha256.digest(b"replayed");
    for node in [a, b] {
        let r = after_change(&env, 401, || sign_hashes(node, &replayed, &[probe.clone().try_into().expect("32")]));
        assert_eq!(r.status, 401, "{}", r.text());
    }
    // A new login for what follows.
    let (verifier, challenge) = pkce();
    let r = card_login(a, &client, "hpki-doctor", "hpki", &challenge);
    let t = exchange(b, &client, &query(&r.location())["code"], &verifier);
    assert_eq!(t.status, 200, "{}", t.text());
    let access = t.json()["access_token"].as_str().expect("token").to_owned();

    // The session opened through A and B signs on both (keys from one token).
    for (node, text) in [(b, "signed on B"), (a, "signed on A")] {
        let digest = inkan::keystore::DigestAlgorithm::Sha256.digest(text.as_bytes());
        let r = sign_hashes(node, &access, &[digest.try_into().expect("32 bytes")]);
        assert_eq!(r.status, 200, "{}", r.text());
        let content = env.path("content.txt");
        std::fs::write(&content, text).expect("content");
        let p7s = env.path("sig.p7s");
        let sig = Base64::decode_vec(r.json()["signatures"][0].as_str().expect("b64")).expect("b64");
        std::fs::write(&p7s, sig).expect("p7s");
        let (ok, err) = openssl_verify(&p7s, Some(&content));
        assert!(ok, "{text}: {err}");
    }

    // Logout on B: A refuses the token within the bound.
    let basic = format!("Basic {}", Base64::encode_string(format!("{}:{}", client.id, client.secret).as_bytes()));
    let r = Client::new().post(
        &b.url("/oidc/revoke"),
        &[("authorization", &basic), ("content-type", "application/x-www-form-urlencoded")],
        format!("token={access}"),
    );
    assert_eq!(r.status, 200);
    let since = Instant::now();
    assert_eq!(sign_hashes(b, &access, &[[1; 32]]).status, 401, "at once on the node that logged out");
    let took = refused_within_bound(since, || sign_hashes(a, &access, &[[1; 32]]));
    eprintln!("logout on B refused on A after {took:?}");

    // With the nodes' listening connections cut, a change still reaches
    // them within the bound (they read the version row again).
    let access = login(a, &client, "hpki-doctor", "hpki")["access_token"].as_str().expect("at").to_owned();
    assert_eq!(sign_hashes(a, &access, &[[1; 32]]).status, 200);
    assert_eq!(sign_hashes(b, &access, &[[1; 32]]).status, 200);
    let cut = env.sql_ok(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = 'inkan auth-epoch listener' AND datname = current_database()",
    );
    assert_eq!(cut.len(), 2, "one listener per node: {cut:?}");
    env.ok(&["session", "revoke", "100001"]);
    let since = Instant::now();
    for node in [a, b] {
        refused_within_bound(since, || sign_hashes(node, &access, &[[1; 32]]));
    }

    // The CLI revokes, disables: both nodes refuse within the bound.
    let access = login(a, &client, "hpki-doctor", "hpki")["access_token"].as_str().expect("at").to_owned();
    assert_eq!(sign_hashes(a, &access, &[[2; 32]]).status, 200);
    assert_eq!(sign_hashes(b, &access, &[[2; 32]]).status, 200);
    env.ok(&["session", "revoke", "100001"]);
    let since = Instant::now();
    for node in [a, b] {
        refused_within_bound(since, || sign_hashes(node, &access, &[[3; 32]]));
    }
    let access = nodes.login_on_b(&client);
    assert_eq!(sign_hashes(a, &access, &[[4; 32]]).status, 200);
    env.ok(&["user", "disable", "100001"]);
    let since = Instant::now();
    for node in [a, b] {
        refused_within_bound(since, || sign_hashes(node, &access, &[[5; 32]]));
    }
    assert!(env.ok(&["audit", "verify"]).contains("intact"));
}

#[test]
fn a_sad_authorized_on_one_node_is_used_once_on_the_other() {
    let (env, client) = env_on(postgres::shared().create_database());
    let nodes = Nodes::start(&env);
    let (a, b) = (&nodes.a, &nodes.b);
    let access = login(a, &client, "hpki-doctor", "hpki")["access_token"].as_str().expect("at").to_owned();
    let csc = |node: &Server, path: &str, body: serde_json::Value| {
        Client::new().post_json(&node.url(&format!("/csc/v2/{path}")), &access, &body)
    };
    let h = Base64::encode_string(&inkan::keystore::DigestAlgorithm::Sha256.digest(b"prescription"));
    let r = csc(
        a,
        "credentials/authorize",
        json!({ "credentialID": "100001.g1", "numSignatures": 1, "hashes": [h], "hashAlgorithmOID": "2.16.840.1.101.3.4.2.1" }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let sad = r.json()["SAD"].as_str().expect("SAD").to_owned();
    let sign = |node: &Server| {
        csc(
            node,
            "signatures/signHash",
            json!({ "credentialID": "100001.g1", "SAD": sad, "hashes": [h], "signAlgo": "1.2.840.113549.1.1.11" }),
        )
    };
    let r = sign(b);
    assert_eq!(r.status, 200, "node B uses a SAD node A issued: {}", r.text());
    assert_eq!(sign(a).status, 400, "not twice on A");
    assert_eq!(sign(b).status, 400, "not twice on B");

    // The count a SAD allows holds across nodes too: one SAD for one
    // signature, asked for two on B.
    let r = csc(a, "credentials/authorize", json!({ "credentialID": "100001.g1", "numSignatures": 1 }));
    let sad = r.json()["SAD"].as_str().expect("SAD").to_owned();
    let r = csc(
        b,
        "signatures/signHash",
        json!({ "credentialID": "100001.g1", "SAD": sad, "hashes": [h, h], "signAlgo": "1.2.840.113549.1.1.11" }),
    );
    assert_eq!(r.status, 400, "{}", r.text());
}

#[test]
fn a_qr_ticket_begun_on_one_node_is_finished_by_the_phone_on_the_other() {
    let (env, client) = env_on(postgres::shared().create_database());
    let nodes = Nodes::start(&env);
    let (a, b) = (&nodes.a, &nodes.b);
    // The phone's origin is the public one (the balancer's: A's here).
    let mut phone = StockPasskey::new(&a.base);

    // E1: the card on A, the PC page on A, the phone on B.
    let r = Client::with_card("hpki-doctor").get(&format!("{}/enroll/hpki", a.card), &[]);
    assert_eq!(r.status, 303, "{}", r.text());
    let mut pc = Pc::new();
    assert_eq!(pc.get(&r.location()).status, 303);
    let phone_url = nodes.to_b(&pc.phone_url(a));
    let options = phone_begin(&phone_url);
    let r = phone_finish(&phone_url, &phone.create(&options));
    assert_eq!(r.status, 200, "{}", r.text());
    let label = b.url(r.json()["next"].as_str().expect("next"));
    let done = Client::new().post(
        &label,
        &[("content-type", "application/x-www-form-urlencoded")],
        "answer=ok&label=%E4%BB%95%E4%BA%8B%E7%94%A8",
    );
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(pc.status(a)["step"], "done", "the PC on A sees what the phone did on B");

    // L1: the PC on A, the phone on B, the token on B, a signature on A.
    let (verifier, challenge) = pkce();
    let r = pc.get(&authorize_url(a, &client, &challenge, &[("acr_values", "fido")]));
    assert_eq!(r.status, 303, "{}", r.text());
    let form_url = a.url(&r.location());
    let req = query(&form_url)["req"].clone();
    let r = pc.post_form(&a.url("/login/fido"), &[("req", &req), ("user_id", "100001")]);
    assert_eq!(r.status, 303, "{}", r.text());
    let phone_url = nodes.to_b(&pc.phone_url(a));
    sign_in(&phone_url, &mut phone);
    let status = pc.status(a);
    let redirect = status["redirect"].as_str().unwrap_or_else(|| panic!("no redirect: {status}")).to_owned();
    let t = exchange(b, &client, &query(&redirect)["code"], &verifier);
    assert_eq!(t.status, 200, "{}", t.text());
    let access = t.json()["access_token"].as_str().expect("at").to_owned();
    assert_eq!(sign_hashes(a, &access, &[[9; 32]]).status, 200);

    // The device counter is shared: the same assertion again on A is refused.
    let (_, challenge) = pkce();
    let mut pc = Pc::new();
    let r = pc.get(&authorize_url(a, &client, &challenge, &[("acr_values", "fido")]));
    let req = query(&a.url(&r.location()))["req"].clone();
    pc.post_form(&a.url("/login/fido"), &[("req", &req), ("user_id", "100001")]);
    let phone_url = pc.phone_url(a);
    let options = phone_begin(&phone_url);
    let answer = phone.get(&options);
    assert_eq!(phone_finish(&nodes.to_b(&phone_url), &answer).status, 200);
    assert_ne!(phone_finish(&phone_url, &answer).status, 200, "one ticket, one answer, whichever node");

    // A decoy (an ID without a phone) started on one node answers on the
    // other, offering the same passkeys from both: the nodes derive one secret.
    let offered = |start: &Server, phone: &dyn Fn(&str) -> String| {
        let mut pc = Pc::new();
        assert_eq!(pc.post_form(&start.url("/change"), &[("user_id", "nobody")]).status, 303);
        let options = phone_begin(&phone(&pc.phone_url(start)));
        options["publicKey"]["allowCredentials"].clone()
    };
    let from_b = offered(a, &|url: &str| nodes.to_b(url));
    // B shows the public URL (A's) under its QR code.
    let from_a = offered(b, &|url: &str| url.to_owned());
    assert!(from_a.as_array().is_some_and(|c| !c.is_empty()), "{from_a}");
    assert_eq!(from_a, from_b);
}

/// Signs with unique digests on `node` until `stop`; returns the digests
/// whose signatures were returned (acknowledged) and the failures seen.
fn sign_until(node: &str, access: &str, tag: u8, stop: &AtomicBool, acked: &Mutex<Vec<[u8; 32]>>) -> Vec<String> {
    let mut failures = Vec::new();
    let mut n: u64 = 0;
    let client = Client::new();
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let mut digest = [tag; 32];
        digest[..8].copy_from_slice(&n.to_be_bytes());
        let body = json!({ "hashes": [Base64::encode_string(&digest)], "format": "raw" });
        match client.try_post_json(&format!("{node}/api/v1/sign-hashes"), access, &body) {
            Ok(r) if r.status == 200 => acked.lock().unwrap_or_else(|p| p.into_inner()).push(digest),
            Ok(r) => failures.push(format!("{} {}", r.status, r.text())),
            Err(e) => {
                failures.push(e);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    failures
}

/// The digests of the audit's signature rows.
fn audited(env: &Env) -> BTreeSet<String> {
    env.sql_ok("SELECT digest FROM audit WHERE event = 'sign'").into_iter().collect()
}

fn digest_name(d: &[u8; 32]) -> String {
    format!("sha256:{}", d.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

#[test]
fn signatures_through_both_nodes_at_once_form_one_chain() {
    let (env, client) = env_on(postgres::shared().create_database());
    let nodes = Nodes::start(&env);
    let access = login(&nodes.a, &client, "hpki-doctor", "hpki")["access_token"].as_str().expect("at").to_owned();
    let stop = AtomicBool::new(false);
    let acked = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        let workers: Vec<_> = [(&nodes.a.base, 1u8), (&nodes.a.base, 2), (&nodes.b.base, 3), (&nodes.b.base, 4)]
            .into_iter()
            .map(|(node, tag)| {
                let (access, stop, acked) = (&access, &stop, &acked);
                scope.spawn(move || sign_until(node, access, tag, stop, acked))
            })
            .collect();
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            let failures = w.join().expect("worker");
            assert!(failures.is_empty(), "{failures:?}");
        }
    });
    let acked = acked.into_inner().expect("acked");
    assert!(acked.len() > 20, "{} signatures", acked.len());
    let audited = audited(&env);
    for d in &acked {
        assert!(audited.contains(&digest_name(d)), "{} is not in the audit log", digest_name(d));
    }
    let v = env.json(&["audit", "verify"]);
    assert!(v["broken"].is_null(), "{v}");
}

#[test]
fn a_node_killed_under_load_loses_no_acknowledged_signature() {
    let (env, client) = env_on(postgres::shared().create_database());
    let mut nodes = Nodes::start(&env);
    let access = login(&nodes.a, &client, "hpki-doctor", "hpki")["access_token"].as_str().expect("at").to_owned();
    let stop = AtomicBool::new(false);
    let acked = Mutex::new(Vec::new());
    let (a_base, b_base) = (nodes.a.base.clone(), nodes.b.base.clone());
    let after_kill = std::thread::scope(|scope| {
        let workers: Vec<_> = [(&a_base, 1u8), (&b_base, 2), (&b_base, 3)]
            .into_iter()
            .map(|(node, tag)| {
                let (access, stop, acked) = (&access, &stop, &acked);
                scope.spawn(move || sign_until(node, access, tag, stop, acked))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1500));
        nodes.b.kill();
        let killed_at = acked.lock().unwrap_or_else(|p| p.into_inner()).len();
        std::thread::sleep(Duration::from_millis(1500));
        stop.store(true, Ordering::Relaxed);
        let mut failures = Vec::new();
        for w in workers {
            failures.extend(w.join().expect("worker"));
        }
        assert!(failures.iter().all(|f| !f.starts_with("5")), "no node answered with an error: {failures:?}");
        acked.lock().unwrap_or_else(|p| p.into_inner()).len() - killed_at
    });
    assert!(after_kill > 5, "node A kept signing after B was killed ({after_kill} signatures)");
    let acked = acked.into_inner().expect("acked");
    eprintln!("{} signatures acknowledged, {after_kill} after node B was killed", acked.len());
    let audited = audited(&env);
    let lost: Vec<String> = acked.iter().map(digest_name).filter(|d| !audited.contains(d)).collect();
    assert!(lost.is_empty(), "acknowledged signatures missing from the audit log: {lost:?}");
    let v = env.json(&["audit", "verify"]);
    assert!(v["broken"].is_null(), "{v}");
    // Node A still serves; a node started again joins.
    assert_eq!(sign_hashes(&nodes.a, &access, &[[7; 32]]).status, 200);
    nodes.b =
        Server::start(&env, &[("INKAN_SERVER_PUBLIC_URL", &nodes.a.base), ("INKAN_SERVER_CARD_URL", &nodes.a.card)]);
    assert_eq!(sign_hashes(&nodes.b, &access, &[[8; 32]]).status, 200);
}

#[test]
fn postgres_stopped_and_started_under_load_is_503_then_recovers_without_a_restart() {
    let cluster = Cluster::own();
    let (env, client) = env_on(cluster.create_database());
    let nodes = Nodes::start(&env);
    let access = login(&nodes.a, &client, "hpki-doctor", "hpki")["access_token"].as_str().expect("at").to_owned();
    let ready = |n: &Server| Client::new().get(&n.url("/readyz"), &[]).status;
    assert_eq!((ready(&nodes.a), ready(&nodes.b)), (200, 200));

    let stop = AtomicBool::new(false);
    let acked = Mutex::new(Vec::new());
    let statuses = Arc::new(Mutex::new(Vec::<u16>::new()));
    std::thread::scope(|scope| {
        let workers: Vec<_> = [(&nodes.a.base, 1u8), (&nodes.b.base, 2)]
            .into_iter()
            .map(|(node, tag)| {
                let (access, stop, acked) = (&access, &stop, &acked);
                scope.spawn(move || sign_until(node, access, tag, stop, acked))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(800));
        cluster.stop_server();
        // While PostgreSQL is down: not ready, and signing says 503.
        let down = Instant::now();
        loop {
            let (ra, rb) = (ready(&nodes.a), ready(&nodes.b));
            let sign = sign_hashes(&nodes.b, &access, &[[6; 32]]).status;
            statuses.lock().unwrap_or_else(|p| p.into_inner()).push(sign);
            if (ra, rb, sign) == (503, 503, 503) {
                break;
            }
            assert!(down.elapsed() < Duration::from_secs(15), "still {ra} {rb} {sign} with PostgreSQL stopped");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(500));
        cluster.start_server();
        cluster.wait_ready();
        // Back without a restart of either node.
        let up = Instant::now();
        while (ready(&nodes.a), ready(&nodes.b)) != (200, 200)
            || sign_hashes(&nodes.a, &access, &[[5; 32]]).status != 200
            || sign_hashes(&nodes.b, &access, &[[5; 32]]).status != 200
        {
            assert!(up.elapsed() < Duration::from_secs(30), "the nodes did not recover: {}", cluster.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            let failures = w.join().expect("worker");
            assert!(
                failures.iter().all(|f| f.starts_with("503")),
                "while PostgreSQL was away, requests were refused with 503 only: {failures:?}"
            );
        }
    });
    let acked = acked.into_inner().expect("acked");
    let audited = audited(&env);
    let lost: Vec<String> = acked.iter().map(digest_name).filter(|d| !audited.contains(d)).collect();
    assert!(lost.is_empty(), "acknowledged signatures missing from the audit log: {lost:?}");
    let v = env.json(&["audit", "verify"]);
    assert!(v["broken"].is_null(), "{v}");
    let mut nodes = nodes;
    let log = nodes.b.kill();
    eprintln!("node B logged {} lines while PostgreSQL was away:\n{log}", log.lines().count());
}

#[test]
fn key_generation_from_several_processes_at_once_does_not_collide() {
    let env = Env::bare_with(Some(postgres::shared().create_database()));
    env.ok(&["init"]);
    let users = ["200001", "200002", "200003", "200004", "200005", "200006"];
    for user in users {
        env.add_user(user, "doctor");
    }
    // Five users at once, and a sixth twice at once.
    let jobs: Vec<(&str, String)> =
        users.iter().chain(["200006"].iter()).enumerate().map(|(i, u)| (*u, format!("k{i}"))).collect();
    let children: Vec<_> = jobs
        .iter()
        .map(|(user, name)| {
            std::process::Command::new(env!("CARGO_BIN_EXE_inkan"))
                .arg("--config")
                .arg(&env.config)
                .args(["--json", "key", "generate", user, "--alg", "p256", "--csr-out"])
                .arg(env.path(&format!("{name}.csr")))
                .current_dir(crate::harness::root())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("inkan")
        })
        .collect();
    let outcomes: Vec<_> = children.into_iter().map(|c| c.wait_with_output().expect("wait")).collect();
    for o in &outcomes[..5] {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let twice: Vec<_> = outcomes[5..].iter().map(|o| o.status.success()).collect();
    assert_eq!(twice.iter().filter(|ok| **ok).count(), 1, "one of the two generations for 200006 wins: {twice:?}");
    let loser = outcomes[5..].iter().find(|o| !o.status.success()).expect("loser");
    assert!(
        String::from_utf8_lossy(&loser.stderr).contains("pending key"),
        "{}",
        String::from_utf8_lossy(&loser.stderr)
    );
    let ids: BTreeSet<String> = env
        .json(&["key", "list"])
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["token_id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), 6, "six keys, six distinct token ids");
    // The loser removed its own key pair from the token: a new generation
    // for 200006 finds no orphan.
    env.ok(&["key", "retire", "200006", "--generation", "1"]);
    let out = env.json(&["key", "generate", "200006", "--alg", "p256", "--csr-out", s(&env.path("e.csr"))]);
    assert_eq!(out["orphans_removed"], 0, "{out}");
    assert!(env.ok(&["audit", "verify"]).contains("intact"));
}
