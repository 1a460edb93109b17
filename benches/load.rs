//! Load benchmark against the real server (`cargo bench --bench load`).
//!
//! Sets up a temporary inkan (SoftHSM token, SQLite, a user with an RSA-2048
//! key and certificate, a mapped HPKI card, a client), starts the release
//! `inkan serve`, logs in with the HPKI card over TLS, then drives keep-alive
//! HTTPS connections with a bearer token:
//!
//! - `sign-hashes` with one SHA-256 digest, and `sign` with a 1 KiB document;
//! - closed loop at full speed: signatures/s and the server's CPU time per
//!   signature (user+sys from /proc/PID/stat over the run);
//! - open loop at half that rate (after a second's warm-up): p50 / p99 latency.
//!
//! In the same command, the keystore's raw `C_Sign` CPU time per signature is
//! measured in this process on the same token; the report gives the ratio
//! (target: server CPU per signature <= 1.10 x raw; p99 <= 5 ms at half load).
//! The load generator shares the 2 cores with the server: compare cost, not rate.
//!
//! `INKAN_LOAD_BASELINE=<an inkan binary>` runs a second build (its own data
//! directory, token and server) in the same rounds, alternating which goes
//! first, and reports this build's server CPU per signature over the
//! baseline's, paired by round; the latency runs of both share one rate.
//!
//! `INKAN_LOAD_MODE=postgres` compares the stores instead: this build on a
//! throwaway PostgreSQL cluster (started here, on the same two cores, every
//! commit flushed as SQLite's `synchronous = full` does) against this build
//! on SQLite; the server's CPU then includes PostgreSQL's processes.
//! `INKAN_LOAD_MODE=nodes` runs two nodes (one database, one token) against
//! one node, connections spread over the nodes: combined throughput and CPU
//! per signature, paired by round.
//! `INKAN_LOAD_MODE=tsa` signs at B-B and at B-T (a signature time-stamp
//! from certomancer's TSA on loopback, started here) in the same rounds:
//! the server's CPU per signature at B-T over B-B's, paired by round, and
//! p50/p99 and the server's CPU per signature of both at one rate, over
//! 60 s (`INKAN_LOAD_OPEN_SECS`; CPU is read in 10 ms ticks).
//! `INKAN_LOAD_MODE=flood` signs with and without a flood of the routes anyone
//! can call, sent by a second process (this benchmark again, as the flooder):
//! signatures/s and p50/p99, alternating by round, and the server's memory;
//! then ten honest card logins during a flood, each tried at most three
//! times. The flood holds 5,120 idle connections from 20 networks on the main
//! listener and 1,280 on the card listener, sends HEAD on authorize, the
//! PC's `/pc/begin` with a cookie of its own, and requests that write nothing.
//! With `INKAN_FLOOD_SPREAD=1` the flooder is a botnet: each keep-alive
//! connection moves to a new source address (127.0.0.0/8) before the
//! per-address limits would stop it, so only what holds for all clients
//! together (per-user limits, global budgets, the work itself) holds it.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64ct::{Base64, Encoding};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The tests' TSA (certomancer's `animate` on a free port of 127.0.0.1).
#[allow(dead_code)]
#[path = "../tests/it/certomancer.rs"]
mod certomancer;

/// The tests' throwaway PostgreSQL clusters (`initdb`/`pg_ctl` in a temp directory).
#[allow(dead_code)]
#[path = "../tests/it/postgres.rs"]
mod postgres;

const CONNECTIONS: usize = 16;

/// A request of a scenario: path, bearer header, body, content type.
type Req = (String, String, Vec<u8>, &'static str);
/// One closed-loop round; rounds alternate with raw C_Sign measurements so that
/// the machine's drifting speed affects both sides alike.
const RUN: Duration = Duration::from_millis(1500);
/// The open-loop (latency) run.
const OPEN_LOOP_RUN: Duration = Duration::from_secs(6);
/// Run at the same rate just before it, not recorded: the server adapts its
/// audit commit window to its load (sampled every 100 ms), and the first
/// requests after a full-speed round would meet the full-load window.
const WARM_UP: Duration = Duration::from_secs(1);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn inkan(bin: &Path, config: &Path, args: &[&str]) -> String {
    let out = Command::new(bin).arg("--config").arg(config).args(args).current_dir(root()).output().expect("inkan");
    assert!(out.status.success(), "inkan {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    inkan::pki::read_certificates(path).expect("certs").into_iter().map(CertificateDer::from).collect()
}

#[derive(Debug)]
struct Card(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Card {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
    fn has_certs(&self) -> bool {
        true
    }
}

fn tls_config(card: Option<&str>) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(&root().join("fixtures/pki/hpki-root.pem")) {
        roots.add(c).expect("root");
    }
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("tls")
        .with_root_certificates(roots);
    Arc::new(match card {
        None => b.with_no_client_auth(),
        Some(h) => {
            let (_, key) = der::pem::decode_vec(
                &std::fs::read(root().join(format!("fixtures/pki/holders/{h}.key"))).expect("key"),
            )
            .expect("pem");
            let key = rustls::crypto::ring::default_provider()
                .key_provider
                .load_private_key(PrivateKeyDer::try_from(key).expect("der"))
                .expect("key");
            let ck = rustls::sign::CertifiedKey::new(certs(&root().join(format!("fixtures/pki/holders/{h}.pem"))), key);
            b.with_client_cert_resolver(Arc::new(Card(Arc::new(ck))))
        }
    })
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(port: u16, config: Arc<rustls::ClientConfig>) -> Sender {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("tls");
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.expect("http");
    tokio::spawn(conn);
    sender
}

async fn send(
    sender: &mut Sender,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, Option<String>, Vec<u8>) {
    let mut req = hyper::Request::builder().method(method).uri(path).header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    sender.ready().await.expect("ready");
    let resp = sender.send_request(req.body(Full::new(Bytes::from(body))).expect("req")).await.expect("resp");
    let status = resp.status().as_u16();
    let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned);
    (status, location, resp.into_body().collect().await.expect("body").to_bytes().to_vec())
}

/// One request on a new connection from a client of its own (127.0.77.1);
/// `Err` says what failed (refused connections and TLS handshakes count as
/// failures, as a browser sees them).
async fn try_send_new(
    port: u16,
    config: Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<(u16, Option<String>, Vec<u8>), String> {
    // From an address and network of its own (127.0.77.1), not the flooder's.
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket.bind(([127, 0, 77, 1], 0).into()).map_err(|e| format!("bind: {e}"))?;
    let tcp = socket
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = hyper::Request::builder().method(method).uri(path).header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::from(body))).expect("req"))
        .await
        .map_err(|e| format!("response: {e}"))?;
    let status = resp.status().as_u16();
    let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes().to_vec();
    Ok((status, location, body))
}

/// A card login as a browser makes it (authorize, the card listener, the
/// token endpoint; each on a new connection): the access token, or the
/// step that failed.
async fn card_login(main_port: u16, card_port: u16, client_id: &str, secret: &str) -> Result<String, String> {
    let verifier = inkan::auth::random_token();
    let challenge = inkan::encoding::b64url(&inkan::auth::token_hash(&verifier));
    let q = format!("/oidc/authorize?response_type=code&client_id={client_id}&redirect_uri=https%3A%2F%2Frx.example%2Fcb&scope=openid%20sign&code_challenge={challenge}&code_challenge_method=S256&acr_values=hpki");
    let (status, loc, _) = try_send_new(main_port, tls_config(None), "GET", &q, &[], Vec::new()).await?;
    let loc = loc.ok_or_else(|| format!("authorize answered {status}"))?;
    let path = &loc[loc.find("/login").ok_or("no login path")?..];
    let (status, back, _) =
        try_send_new(card_port, tls_config(Some("hpki-doctor")), "GET", path, &[], Vec::new()).await?;
    let back = back.ok_or_else(|| format!("card login answered {status}"))?;
    let code = back.split("code=").nth(1).and_then(|c| c.split('&').next()).ok_or("no code")?.to_owned();
    let form = format!("grant_type=authorization_code&code={code}&redirect_uri=https%3A%2F%2Frx.example%2Fcb&code_verifier={verifier}&client_id={client_id}&client_secret={secret}");
    let headers = [("content-type", "application/x-www-form-urlencoded")];
    let (status, _, body) =
        try_send_new(main_port, tls_config(None), "POST", "/oidc/token", &headers, form.into_bytes()).await?;
    if status != 200 {
        return Err(format!("token answered {status}"));
    }
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    v["access_token"].as_str().map(str::to_owned).ok_or_else(|| "no access token".into())
}

fn cpu_ticks(pid: u32) -> u64 {
    let (user, system) = cpu_split(pid);
    user + system
}

/// (user, system) CPU ticks of a process.
fn cpu_split(pid: u32) -> (u64, u64) {
    try_cpu_split(pid).expect("the process runs")
}

/// (user, system) CPU ticks of a process, if it still runs.
fn try_cpu_split(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    Some((f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?))
}

/// The processes whose parent is `pid` (PostgreSQL's backends and workers).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
        if after.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            out.push(child);
        }
    }
    out
}

fn ticks_per_second() -> f64 {
    // Linux reports /proc times in USER_HZ, 100 on every mainstream configuration.
    100.0
}

struct Load {
    rate: f64,
    cpu_per_sig_us: f64,
    /// Of which system (kernel) time.
    sys_per_sig_us: f64,
}

/// One closed-loop round.
#[derive(Clone, Copy)]
struct Round {
    /// Server CPU per signature over the round's raw baseline.
    ratio: f64,
    /// Server CPU per signature (µs).
    cpu: f64,
    /// Signatures/s.
    rate: f64,
    /// CPU per signature inside the server's token calls (µs).
    token: f64,
    /// The raw baseline (µs): mean of the raw runs before and after.
    baseline: f64,
    /// Server system (kernel) CPU per signature (µs).
    sys: f64,
}

/// (user, system) CPU ticks of a set of processes (the ones still running).
fn cpu_split_all(pids: &[u32]) -> (u64, u64) {
    pids.iter().filter_map(|p| try_cpu_split(*p)).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// Closed loop: every connection sends as fast as it can for `RUN` (`GET`
/// without a body, else `POST`), the connections spread over `ports`; the
/// CPU is that of the processes `pids`.
async fn closed_loop(ports: &[u16], pids: &[u32], req: Arc<Req>) -> Load {
    let config = tls_config(None);
    let mut senders = Vec::new();
    for i in 0..CONNECTIONS {
        senders.push(connect(ports[i % ports.len()], Arc::clone(&config)).await);
    }
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (user0, sys0) = cpu_split_all(pids);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for mut s in senders {
        let (done, stop, req) = (Arc::clone(&done), Arc::clone(&stop), Arc::clone(&req));
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let method = if req.2.is_empty() { "GET" } else { "POST" };
                let headers = [("authorization", req.1.as_str()), ("content-type", req.3)];
                let (status, _, body) = send(&mut s, method, &req.0, &headers, req.2.clone()).await;
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(RUN).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("task");
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let (user1, sys1) = cpu_split_all(pids);
    let cpu = (user1 + sys1 - user0 - sys0) as f64 / ticks_per_second();
    let sys = (sys1 - sys0) as f64 / ticks_per_second();
    let n = done.load(Ordering::Relaxed) as f64;
    Load { rate: n / elapsed, cpu_per_sig_us: cpu / n * 1e6, sys_per_sig_us: sys / n * 1e6 }
}

/// Counters from `/metrics`.
#[derive(Clone, Default)]
struct Counters {
    /// The sign-duration histogram: (upper bound in s, cumulative count).
    buckets: Vec<(f64, f64)>,
    /// The audit-wait histogram, alike.
    audit_buckets: Vec<(f64, f64)>,
    /// Audit transactions.
    commits: f64,
    /// Audit rows.
    rows: f64,
    /// Token sign calls.
    token_calls: f64,
    /// CPU seconds inside them.
    token_cpu: f64,
}

impl Counters {
    /// Another node's counters added to these.
    fn add(mut self, other: Counters) -> Counters {
        let sum = |a: &mut Vec<(f64, f64)>, b: Vec<(f64, f64)>| {
            if a.is_empty() {
                *a = b;
            } else {
                a.iter_mut().zip(b).for_each(|(x, y)| x.1 += y.1);
            }
        };
        sum(&mut self.buckets, other.buckets);
        sum(&mut self.audit_buckets, other.audit_buckets);
        self.commits += other.commits;
        self.rows += other.rows;
        self.token_calls += other.token_calls;
        self.token_cpu += other.token_cpu;
        self
    }
}

/// The counters of every node, added.
async fn counters(ports: &[u16]) -> Counters {
    let mut all = Counters::default();
    for port in ports {
        all = all.add(node_counters(*port).await);
    }
    all
}

/// One node's counters from `/metrics`.
async fn node_counters(port: u16) -> Counters {
    let mut s = connect(port, tls_config(None)).await;
    let (_, _, body) = send(&mut s, "GET", "/metrics", &[], Vec::new()).await;
    let text = String::from_utf8_lossy(&body).into_owned();
    let value = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok())).unwrap_or(0.0)
    };
    let histogram = |name: &str| {
        text.lines()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix("_bucket{le=\""))
            .filter_map(|l| {
                let (le, n) = l.split_once("\"} ")?;
                Some((if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? }, n.trim().parse().ok()?))
            })
            .collect()
    };
    Counters {
        buckets: histogram("inkan_sign_duration_seconds"),
        audit_buckets: histogram("inkan_audit_wait_seconds"),
        commits: value("inkan_audit_commits_total "),
        rows: value("inkan_audit_rows_total "),
        token_calls: value("inkan_token_sign_calls_total "),
        token_cpu: value("inkan_token_sign_cpu_seconds_total "),
    }
}

/// Open loop at `rate` requests/s for `run`: returns (p50, p99) latency in ms.
async fn open_loop(ports: &[u16], rate: f64, req: Arc<Req>, run: Duration) -> (f64, f64) {
    let config = tls_config(None);
    let (tx, rx) = tokio::sync::mpsc::channel::<Instant>(10_000);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for i in 0..CONNECTIONS * 2 {
        let mut s = connect(ports[i % ports.len()], Arc::clone(&config)).await;
        let (rx, req, lat) = (Arc::clone(&rx), Arc::clone(&req), Arc::clone(&latencies));
        workers.push(tokio::spawn(async move {
            loop {
                let Some(scheduled) = rx.lock().await.recv().await else { break };
                let headers = [("authorization", req.1.as_str()), ("content-type", req.3)];
                let (status, _, _) = send(&mut s, "POST", &req.0, &headers, req.2.clone()).await;
                assert_eq!(status, 200);
                // Latency from when the request was due (no coordinated omission).
                lat.lock().unwrap().push(scheduled.elapsed().as_secs_f64() * 1000.0);
            }
        }));
    }
    // The schedule runs on its own thread with the OS timer: tokio's timer wheel
    // has a 1 ms resolution, and its lateness would count as the server's latency.
    let interval = Duration::from_secs_f64(1.0 / rate);
    let pacer = std::thread::spawn(move || {
        let start = Instant::now();
        let mut next = start;
        while start.elapsed() < run {
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            tx.blocking_send(next).expect("queue");
            next += interval;
        }
    });
    tokio::task::spawn_blocking(move || pacer.join().expect("pacer")).await.expect("pacer");
    for w in workers {
        w.await.expect("worker");
    }
    let mut l = latencies.lock().unwrap().clone();
    l.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)];
    (pct(0.50), pct(0.99))
}

/// CPU time per raw signature in this process (2 threads), and the rate.
fn raw_cpu(ks: &Arc<inkan::keystore::Keystore>, key: &inkan::keystore::KeyRef, di: &[u8]) -> (f64, f64) {
    let n = 400;
    let me = std::process::id();
    let c0 = cpu_ticks(me);
    let t0 = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (ks, key, di) = (Arc::clone(ks), key.clone(), di.to_vec());
            std::thread::spawn(move || {
                for _ in 0..n {
                    ks.sign_raw_pkcs1(&key, &di).expect("raw");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("raw thread");
    }
    let cpu = (cpu_ticks(me) - c0) as f64 / ticks_per_second() / (2 * n) as f64 * 1e6;
    (cpu, (2 * n) as f64 / t0.elapsed().as_secs_f64())
}

/// One `inkan serve` process.
struct Node {
    server: Child,
    pid: u32,
    main_port: u16,
}

/// What is under load: one build's server (or several nodes of it), with its
/// own data directory, token and database.
struct Target {
    /// `this build`, `baseline`, `postgres`, `two nodes`, ...
    name: &'static str,
    _dir: tempfile::TempDir,
    dir: PathBuf,
    nodes: Vec<Node>,
    /// The card listener's port (of the first node).
    card_port: u16,
    /// The signing system's client ID.
    client_id: String,
    /// Its secret.
    secret: String,
    /// The PostgreSQL cluster of its database: its processes' CPU is the server's too.
    cluster: Option<Arc<postgres::Cluster>>,
    bearer: String,
}

impl Target {
    /// Sets up a data directory with the `bin` binary's CLI (a user with an
    /// RSA-2048 key and certificate, a mapped card, a client), on SQLite or on
    /// a database of `cluster`, starts `nodes` servers on it, and logs in with
    /// the card on the first.
    fn start(
        name: &'static str,
        bin: &Path,
        label: &str,
        cluster: Option<Arc<postgres::Cluster>>,
        nodes: usize,
        rt: &tokio::runtime::Runtime,
    ) -> Target {
        let dir = tempfile::tempdir().expect("dir");
        let config = dir.path().join("inkan.toml");
        let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (main_port, card_port) = (free(), free());
        let store = match &cluster {
            Some(c) => format!("[store]\nurl = \"{}\"\n", c.create_database().url()),
            None => String::new(),
        };
        std::fs::write(
            &config,
            format!(
                "data_dir = \"var\"\n[token]\nlabel = \"{label}\"\nuser_pin = \"load-user\"\nso_pin = \"load-so\"\npool_size = 2\n[server]\nlisten = \"127.0.0.1:{main_port}\"\ncard_listen = \"127.0.0.1:{card_port}\"\npublic_url = \"https://localhost:{main_port}\"\ncard_url = \"https://localhost:{card_port}\"\n{store}"
            ),
        )
        .expect("config");
        let cli = |args: &[&str]| inkan(bin, &config, args);
        cli(&["init"]);
        cli(&["user", "add", "100001", "--name", "負荷 太郎", "--qualification", "doctor"]);
        let csr = dir.path().join("u.csr");
        let cert = dir.path().join("u.pem");
        cli(&["key", "generate", "100001", "--csr-out", csr.to_str().unwrap()]);
        cli(&["dev", "issue-cert", "--csr", csr.to_str().unwrap(), "--out", cert.to_str().unwrap()]);
        cli(&["key", "import-cert", "100001", cert.to_str().unwrap()]);
        cli(&["hpki", "map", "100001", "fixtures/pki/holders/hpki-doctor.pem"]);
        let client: serde_json::Value = serde_json::from_str(&cli(&[
            "--json",
            "client",
            "add",
            "--name",
            "load",
            "--redirect-uri",
            "https://rx.example/cb",
        ]))
        .expect("client");
        let (client_id, secret) =
            (client["client_id"].as_str().unwrap().to_owned(), client["client_secret"].as_str().unwrap().to_owned());
        // The first node listens where the file says; the others (same
        // configuration, same token, same database) on ports of their own.
        let nodes: Vec<Node> = (0..nodes)
            .map(|i| {
                let (port, card) = if i == 0 { (main_port, card_port) } else { (free(), free()) };
                let mut cmd = Command::new(bin);
                cmd.arg("--config").arg(&config).arg("serve").current_dir(root());
                cmd.env("INKAN_SERVER_LISTEN", format!("127.0.0.1:{port}"))
                    .env("INKAN_SERVER_CARD_LISTEN", format!("127.0.0.1:{card}"));
                let server = cmd.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().expect("serve");
                Node { pid: server.id(), server, main_port: port }
            })
            .collect();
        for node in &nodes {
            while std::net::TcpStream::connect(("127.0.0.1", node.main_port)).is_err() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let token = rt.block_on(card_login(main_port, card_port, &client_id, &secret)).expect("card login");
        let path = dir.path().to_path_buf();
        Target {
            name,
            _dir: dir,
            dir: path,
            nodes,
            card_port,
            client_id,
            secret,
            cluster,
            bearer: format!("Bearer {token}"),
        }
    }

    /// The request of a scenario, for this target.
    fn request(&self, path: &str, body: &[u8], content_type: &'static str) -> Arc<Req> {
        Arc::new((path.to_owned(), self.bearer.clone(), body.to_vec(), content_type))
    }

    /// The nodes' HTTPS ports.
    fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.main_port).collect()
    }

    /// The processes whose CPU is the server's: the nodes, and PostgreSQL's.
    fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.nodes.iter().map(|n| n.pid).collect();
        if let Some(c) = &self.cluster {
            let postmaster = c.postmaster();
            pids.push(postmaster);
            pids.extend(children(postmaster));
        }
        pids
    }

    fn stop(self) {
        for mut node in self.nodes {
            let _ = Command::new("kill").arg("-TERM").arg(node.pid.to_string()).status();
            let _ = node.server.wait();
        }
    }
}

/// One target's results in a scenario.
#[derive(Default)]
struct Results {
    rounds: Vec<Round>,
    batch: Vec<f64>,
}

/// The time `inkan::tsa::read_answer` takes over one answer of `tsa` (its
/// checks: status, imprint, nonce, the token's signature, ESS, EKU, the
/// path to the anchor), µs, the median of 5 runs of 400.
fn answer_check_us(tsa: &certomancer::Certomancer) -> f64 {
    use der::{Decode, Encode};
    let digest = [7u8; 32];
    let nonce = [0x35u8, 1, 2, 3, 4, 5, 6, 7];
    let query = inkan::tsa::asn1::TimeStampReq {
        version: 1,
        message_imprint: inkan::tsa::asn1::MessageImprint {
            hash_algorithm: spki::AlgorithmIdentifierOwned {
                oid: inkan::keystore::DigestAlgorithm::Sha256.oid(),
                parameters: None,
            },
            hashed_message: der::asn1::OctetString::new(digest.to_vec()).unwrap(),
        },
        req_policy: None,
        nonce: Some(der::asn1::Uint::new(&nonce).unwrap()),
        cert_req: true,
    }
    .to_der()
    .unwrap();
    let mut curl = Command::new("curl")
        .args(["-sS", "-H", "Content-Type: application/timestamp-query", "--data-binary", "@-", &tsa.tsa()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    std::io::Write::write_all(&mut curl.stdin.take().unwrap(), &query).unwrap();
    let answer = curl.wait_with_output().unwrap().stdout;
    let anchors: Vec<x509_cert::Certificate> = inkan::pki::read_certificates(&tsa.root)
        .unwrap()
        .iter()
        .map(|d| x509_cert::Certificate::from_der(d).unwrap())
        .collect();
    let trust = inkan::tsa::Trust { anchors: &anchors, chain: &[], policy: None };
    let expected = inkan::tsa::token::Expected {
        alg: inkan::keystore::DigestAlgorithm::Sha256,
        digest: &digest,
        nonce: Some(&nonce),
    };
    let now = std::time::SystemTime::now();
    inkan::tsa::read_answer(&answer, &expected, &trust, now).expect("certomancer's answer checks");
    let runs: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..400 {
                std::hint::black_box(inkan::tsa::read_answer(&answer, &expected, &trust, now).unwrap());
            }
            t.elapsed().as_secs_f64() / 400.0 * 1e6
        })
        .collect();
    median(runs)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo test --benches asks for a list; nothing to list.
    }
    if let Ok(target) = std::env::var("INKAN_FLOOD_TARGET") {
        flood::child(&target);
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    // This build, and (INKAN_LOAD_BASELINE=<an inkan binary>) another one to
    // compare with, round by round in the same run; or this build on
    // PostgreSQL against SQLite, or two nodes against one.
    let this = Path::new(env!("CARGO_BIN_EXE_inkan"));
    let mode = std::env::var("INKAN_LOAD_MODE").unwrap_or_default();
    // INKAN_LOAD_MODE=tsa: a TSA on loopback for the whole run, named to
    // the servers through the environment they inherit.
    let _tsa = (mode == "tsa").then(|| {
        let tsa = certomancer::Certomancer::start();
        std::env::set_var("INKAN_TSA_URL", tsa.tsa());
        std::env::set_var("INKAN_TSA_CA", &tsa.root);
        tsa
    });
    // What inkan itself does with each answer (in this process): the
    // checks of `read_answer`, timed over one real answer.
    let answer_check_us = _tsa.as_ref().map(answer_check_us);
    let targets = match mode.as_str() {
        "tsa" => vec![Target::start("this build", this, "load", None, 1, &rt)],
        "" => {
            let mut t = vec![Target::start("this build", this, "load", None, 1, &rt)];
            if let Some(bin) = std::env::var_os("INKAN_LOAD_BASELINE").filter(|b| !b.is_empty()) {
                t.push(Target::start("baseline", Path::new(&bin), "load-baseline", None, 1, &rt));
            }
            t
        }
        "postgres" => {
            let cluster = Arc::new(postgres::Cluster::durable());
            vec![
                Target::start("postgres", this, "load", Some(cluster), 1, &rt),
                Target::start("sqlite", this, "load-sqlite", None, 1, &rt),
            ]
        }
        "nodes" => {
            let cluster = Arc::new(postgres::Cluster::durable());
            vec![
                Target::start("two nodes", this, "load", Some(Arc::clone(&cluster)), 2, &rt),
                Target::start("one node", this, "load-one", Some(cluster), 1, &rt),
            ]
        }
        "flood" => {
            let t = Target::start("this build", this, "load", None, 1, &rt);
            flood::run(&rt, &t);
            t.stop();
            return;
        }
        other => panic!("INKAN_LOAD_MODE must be postgres, nodes, tsa or flood, not {other:?}"),
    };

    // Raw C_Sign CPU per signature, in this process, on this build's token and key.
    let main_target = &targets[0];
    std::env::set_var("SOFTHSM2_CONF", main_target.dir.join("var/softhsm/softhsm2.conf"));
    let ks = inkan::keystore::Keystore::open(inkan::keystore::KeystoreConfig::new(
        inkan::config::SOFTHSM_MODULE,
        "load",
        inkan::keystore::Pin::new("load-user"),
    ))
    .expect("keystore");
    // A key of the kind the server's users have (wrapped, by default), made
    // for this measurement: the raw cost of its signatures once unwrapped.
    let key = ks.generate_key(inkan::keystore::KeyAlgorithm::Rsa2048, "load-raw", b"load-raw").expect("raw key").key;
    let mut di = vec![
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04,
        0x20,
    ];
    di.extend_from_slice(&[9u8; 32]);
    // Two threads, as the server's two pooled sessions. Measured before and
    // after the load runs; the mean is the baseline (the machine's speed drifts).
    ks.sign_raw_pkcs1(&key, &di).expect("warm");
    let ks = Arc::new(ks);
    let raw = |ks: &Arc<inkan::keystore::Keystore>| raw_cpu(ks, &key, &di);
    let (raw_cpu_before, raw_rate_before) = raw(&ks);
    let hash_body = serde_json::json!({ "hashes": [Base64::encode_string(&[5u8; 32])] }).to_string().into_bytes();
    let doc: Vec<u8> = (0..1024u32).map(|i| (i % 251) as u8).collect();
    // An e-prescription from its CSV (about 1 KiB): the minimal document is
    // made, read, canonicalised, signed with XAdES and returned whole.
    let csv = "SJ1\n1,1,1310000001,01,負荷試験病院\n2,100-0001,東京都千代田区千代田1-1\n5,0000000000000001,ﾌｶ ﾀﾛｳ,負荷　太郎\n51,20261206\n201,1,1,1,2,620000000,負荷錠５ｍｇ,1,1,錠\n211,1,1,101"
        .as_bytes()
        .to_vec();
    let scenarios: Vec<(&str, &str, Vec<u8>, &'static str)> = if mode == "tsa" {
        // Pairs: B-B, then the same at B-T.
        vec![
            ("sign B-B (1 KiB document, detached CAdES)", "/api/v1/sign", doc.clone(), "application/octet-stream"),
            ("sign B-T (1 KiB document, detached CAdES)", "/api/v1/sign?level=B-T", doc, "application/octet-stream"),
            (
                "sign B-B (a prescription from its CSV, XAdES)",
                "/api/v1/sign?format=xades&prescription_id=load-1",
                csv.clone(),
                "text/csv",
            ),
            (
                "sign B-T (a prescription from its CSV, XAdES)",
                "/api/v1/sign?format=xades&prescription_id=load-1&level=B-T",
                csv,
                "text/csv",
            ),
        ]
    } else {
        vec![
            ("sign-hashes (1 SHA-256 digest, CAdES)", "/api/v1/sign-hashes", hash_body, "application/json"),
            ("sign (1 KiB document, detached CAdES)", "/api/v1/sign", doc, "application/octet-stream"),
            (
                "sign (a prescription from its CSV, XAdES)",
                "/api/v1/sign?format=xades&prescription_id=load-1",
                csv,
                "text/csv",
            ),
        ]
    };
    // The HTTPS stack's own cost (diagnostic): `GET /healthz` under the same load.
    if std::env::var("INKAN_LOAD_FLOOR").is_ok_and(|v| !v.is_empty() && v != "0") {
        for t in &targets {
            let healthz = t.request("/healthz", &[], "text/plain");
            for _ in 0..3 {
                let l = rt.block_on(closed_loop(&t.ports(), &t.pids(), Arc::clone(&healthz)));
                println!(
                    "floor ({}): GET /healthz {:.0}/s, server CPU {:.1} µs per request ({:.1} µs in the kernel)",
                    t.name, l.rate, l.cpu_per_sig_us, l.sys_per_sig_us
                );
            }
        }
    }
    // Alternating rounds: every load run sits between two raw measurements, and
    // its ratio is taken against their mean (the machine's speed drifts); with
    // a baseline, both builds run in every round, one after the other.
    let only = std::env::var("INKAN_LOAD_ONLY").ok();
    let scenarios: Vec<_> =
        scenarios.into_iter().filter(|(name, ..)| only.as_deref().is_none_or(|o| name.starts_with(o))).collect();
    let rounds: usize = std::env::var("INKAN_LOAD_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(8);
    let mut results: Vec<Vec<Results>> =
        scenarios.iter().map(|_| targets.iter().map(|_| Results::default()).collect()).collect();
    let mut raw_before = (raw_cpu_before, raw_rate_before);
    let mut raw_all = vec![raw_before];
    for round in 0..rounds {
        for (i, (_, path, body, content_type)) in scenarios.iter().enumerate() {
            // Which build goes first alternates from round to round.
            let order: Vec<usize> =
                if round % 2 == 0 { (0..targets.len()).collect() } else { (0..targets.len()).rev().collect() };
            for j in order {
                let t = &targets[j];
                let req = t.request(path, body, content_type);
                let before = rt.block_on(counters(&t.ports()));
                let load = rt.block_on(closed_loop(&t.ports(), &t.pids(), req));
                let after = rt.block_on(counters(&t.ports()));
                let token =
                    (after.token_cpu - before.token_cpu) / (after.token_calls - before.token_calls).max(1.0) * 1e6;
                let raw_after = raw(&ks);
                raw_all.push(raw_after);
                let baseline = (raw_before.0 + raw_after.0) / 2.0;
                let r = &mut results[i][j];
                r.batch.push((after.rows - before.rows) / (after.commits - before.commits).max(1.0));
                r.rounds.push(Round {
                    ratio: load.cpu_per_sig_us / baseline,
                    cpu: load.cpu_per_sig_us,
                    rate: load.rate,
                    token,
                    baseline,
                    sys: load.sys_per_sig_us,
                });
                raw_before = raw_after;
            }
        }
    }
    let raw_cpu_us = raw_all.iter().map(|r| r.0).sum::<f64>() / raw_all.len() as f64;
    let raw_rate = raw_all.iter().map(|r| r.1).sum::<f64>() / raw_all.len() as f64;
    let mut report = vec![format!(
        "raw C_Sign (RSA-2048, SoftHSM, 2 threads, in-process): {raw_rate:.0}/s, CPU {raw_cpu_us:.0} µs per signature (mean of {} runs, {:.0}–{:.0})",
        raw_all.len(),
        raw_all.iter().map(|r| r.0).fold(f64::MAX, f64::min),
        raw_all.iter().map(|r| r.0).fold(0.0, f64::max),
    )];
    println!("\n{}", report[0]);
    let mut latencies = Vec::new();
    for (i, (name, path, body, content_type)) in scenarios.iter().enumerate() {
        // The latency runs share one rate: half this build's median rate
        // (at B-B and B-T alike: half B-T's).
        let paced = if mode == "tsa" { i | 1 } else { i };
        let shared_rate = median(results[paced][0].rounds.iter().map(|r| r.rate).collect()) / 2.0;
        for (j, t) in targets.iter().enumerate() {
            let req = t.request(path, body, content_type);
            let mut r = results[i][j].rounds.clone();
            r.sort_by(|a, b| a.ratio.total_cmp(&b.ratio));
            let Round { ratio, cpu, rate, token: token_us, baseline, sys } = r[r.len() / 2];
            // Server CPU over the CPU of its own token calls, same round: free of the machine's drift.
            let own = median(r.iter().map(|x| x.cpu / x.token).collect());
            rt.block_on(open_loop(&t.ports(), shared_rate, Arc::clone(&req), WARM_UP));
            // (INKAN_LOAD_MODE=tsa: longer, and the server's CPU per
            // signature at this rate, the same for B-B and B-T.)
            let run = std::env::var("INKAN_LOAD_OPEN_SECS")
                .ok()
                .and_then(|v| v.parse().ok())
                .map(Duration::from_secs)
                .unwrap_or(if mode == "tsa" { Duration::from_secs(60) } else { OPEN_LOOP_RUN });
            let before = rt.block_on(counters(&t.ports()));
            let cpu_before = cpu_split_all(&t.pids());
            let (p50, p99) = rt.block_on(open_loop(&t.ports(), shared_rate, Arc::clone(&req), run));
            let cpu_after = cpu_split_all(&t.pids());
            let after = rt.block_on(counters(&t.ports()));
            let ticks = (cpu_after.0 + cpu_after.1 - cpu_before.0 - cpu_before.1) as f64;
            let open_cpu_us = ticks / ticks_per_second() / (after.token_calls - before.token_calls).max(1.0) * 1e6;
            // The server's own view (sign + audit commit, from its histogram): which bucket holds p50 / p99.
            let pct = |after: &[(f64, f64)], before: &[(f64, f64)], p: f64| {
                let d: Vec<(f64, f64)> = after.iter().zip(before).map(|(a, b)| (a.0, a.1 - b.1)).collect();
                let total = d.last().map(|x| x.1).unwrap_or(0.0);
                d.iter().find(|x| x.1 >= total * p).map(|x| x.0 * 1000.0).unwrap_or(f64::NAN)
            };
            let (server_p50, server_p99) =
                (pct(&after.buckets, &before.buckets, 0.5), pct(&after.buckets, &before.buckets, 0.99));
            let (audit_p50, audit_p99) = (
                pct(&after.audit_buckets, &before.audit_buckets, 0.5),
                pct(&after.audit_buckets, &before.audit_buckets, 0.99),
            );
            // Latency at other rates (diagnostics): INKAN_LOAD_RATES=100,400
            for extra in
                std::env::var("INKAN_LOAD_RATES").unwrap_or_default().split(',').filter_map(|r| r.parse::<f64>().ok())
            {
                rt.block_on(open_loop(&t.ports(), extra, Arc::clone(&req), WARM_UP));
                let (p50, p99) = rt.block_on(open_loop(&t.ports(), extra, Arc::clone(&req), OPEN_LOOP_RUN));
                println!("{name} ({}): at {extra:.0}/s: p50 {p50:.2} ms, p99 {p99:.2} ms", t.name);
            }
            let batch = &results[i][j].batch;
            let line = format!(
                "{name} ({}): {rate:.0} signatures/s with {CONNECTIONS} keep-alive connections; server CPU {cpu:.0} µs per signature = {ratio:.3} x raw C_Sign (median of {rounds} rounds: {}; efficiency {:.0} %; {:.1} audit rows per commit); of which {token_us:.0} µs inside the token's C_Sign (= {:.3} x that round's raw) and {:.0} µs everything else ({sys:.0} µs of the total in the kernel); server CPU = {own:.3} x its own C_Sign time (median over rounds, drift-free); at {shared_rate:.0}/s: p50 {p50:.2} ms, p99 {p99:.2} ms (in the server, sign and audit commit: p50 <= {server_p50} ms, p99 <= {server_p99} ms; audit wait alone: p50 <= {audit_p50} ms, p99 <= {audit_p99} ms)",
                t.name,
                r.iter().map(|x| format!("{:.3}", x.ratio)).collect::<Vec<_>>().join(" "),
                100.0 / ratio,
                batch.iter().sum::<f64>() / batch.len().max(1) as f64,
                token_us / baseline,
                cpu - token_us,
            );
            println!("{line}");
            report.push(line);
            latencies.push((p50, p99, shared_rate, open_cpu_us));
        }
        if mode == "tsa" && i % 2 == 1 {
            // B-T over B-B (the scenario before), paired by round.
            let (bb, bt) = (&results[i - 1][0].rounds, &results[i][0].rounds);
            let pairs: Vec<f64> = bb.iter().zip(bt).map(|(a, b)| b.cpu / a.cpu).collect();
            let rates: Vec<f64> = bb.iter().zip(bt).map(|(a, b)| b.rate / a.rate).collect();
            let ((p50_bb, p99_bb, rate, cpu_bb), (p50_bt, p99_bt, _, cpu_bt)) = (latencies[i - 1], latencies[i]);
            if let Some(us) = answer_check_us {
                let line = format!(
                    "the TSA client's checks of one answer (read_answer, in-process, one thread): {us:.0} µs = {:.1} % of B-B's server CPU per signature in the closed loop ({:.0} µs)",
                    us / median(bb.iter().map(|r| r.cpu).collect()) * 100.0,
                    median(bb.iter().map(|r| r.cpu).collect()),
                );
                println!("{line}");
                report.push(line);
            }
            let line = format!(
                "{name}: B-T / B-B, closed loop (the TSA sets B-T's pace), server CPU per signature, paired by round: {:.3} (rounds {}); signatures/s: {:.3}; at the same {rate:.0}/s: server CPU per signature {cpu_bt:.0} against {cpu_bb:.0} µs (+{:.0} µs), p50 {p50_bt:.2} against {p50_bb:.2} ms (+{:.2} ms), p99 {p99_bt:.2} against {p99_bb:.2} ms",
                median(pairs.clone()),
                pairs.iter().map(|p| format!("{p:.3}")).collect::<Vec<_>>().join(" "),
                median(rates),
                cpu_bt - cpu_bb,
                p50_bt - p50_bb,
            );
            println!("{line}");
            report.push(line);
        }
        if targets.len() == 2 {
            // Paired by round: the first target's server CPU per signature
            // (and rate) over the second's.
            let pairs: Vec<f64> =
                results[i][0].rounds.iter().zip(&results[i][1].rounds).map(|(a, b)| a.cpu / b.cpu).collect();
            let rates: Vec<f64> =
                results[i][0].rounds.iter().zip(&results[i][1].rounds).map(|(a, b)| a.rate / b.rate).collect();
            let own = |j: usize| median(results[i][j].rounds.iter().map(|x| x.cpu / x.token).collect());
            let line = format!(
                "{name}: {} / {}, server CPU per signature, paired by round: {:.3} (rounds {}); signatures/s: {:.3} (rounds {}); drift-free (CPU over its own C_Sign): {:.3} vs {:.3}",
                targets[0].name,
                targets[1].name,
                median(pairs.clone()),
                pairs.iter().map(|p| format!("{p:.3}")).collect::<Vec<_>>().join(" "),
                median(rates.clone()),
                rates.iter().map(|p| format!("{p:.3}")).collect::<Vec<_>>().join(" "),
                own(0),
                own(1),
            );
            println!("{line}");
            report.push(line);
        }
    }
    drop(ks);
    for t in targets {
        t.stop();
    }
    let summary =
        if mode.is_empty() { "target/load-summary.txt".to_owned() } else { format!("target/load-summary-{mode}.txt") };
    let _ = std::fs::write(root().join(summary), report.join("\n") + "\n");
}

/// `INKAN_LOAD_MODE=flood`.
mod flood {
    use super::*;

    /// How long the flooder runs each time: its ramp-up, the measurement, a margin.
    const FLOOD: Duration = Duration::from_millis(1000 + 1500 + 500);

    fn rss_kib(pid: u32, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status.lines().find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok()).unwrap_or(0)
    }

    /// Starts the flooder (this benchmark again) for `run`; its stdout is its report.
    fn flooder(t: &Target, run: Duration) -> Child {
        let spread = std::env::var("INKAN_FLOOD_SPREAD").is_ok_and(|v| v == "1");
        Command::new(std::env::current_exe().expect("exe"))
            .env(
                "INKAN_FLOOD_TARGET",
                format!("{}:{}:{}:{}:{}", t.nodes[0].main_port, t.card_port, t.client_id, run.as_millis(), spread),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("flooder")
    }

    pub fn run(rt: &tokio::runtime::Runtime, t: &Target) {
        let req = t.request(
            "/api/v1/sign-hashes",
            &serde_json::json!({ "hashes": [Base64::encode_string(&[5u8; 32])] }).to_string().into_bytes(),
            "application/json",
        );
        let rounds: usize = std::env::var("INKAN_LOAD_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(4);
        let pid = t.nodes[0].pid;
        let rss_start = rss_kib(pid, "VmRSS:");
        let (mut quiet, mut flooded, mut ratios, mut floods) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let q = rt.block_on(closed_loop(&t.ports(), &t.pids(), Arc::clone(&req)));
            let child = flooder(t, FLOOD);
            std::thread::sleep(Duration::from_millis(1000));
            let f = rt.block_on(closed_loop(&t.ports(), &t.pids(), Arc::clone(&req)));
            let out = child.wait_with_output().expect("flooder");
            floods.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
            ratios.push(f.rate / q.rate);
            quiet.push(q.rate);
            flooded.push(f.rate);
        }
        // Latency at half the quiet rate, quiet and flooded.
        let rate = median(quiet.clone()) / 2.0;
        rt.block_on(open_loop(&t.ports(), rate, Arc::clone(&req), WARM_UP));
        let (q50, q99) = rt.block_on(open_loop(&t.ports(), rate, Arc::clone(&req), OPEN_LOOP_RUN));
        let child = flooder(t, OPEN_LOOP_RUN + WARM_UP + Duration::from_millis(1500));
        std::thread::sleep(Duration::from_millis(1000));
        rt.block_on(open_loop(&t.ports(), rate, Arc::clone(&req), WARM_UP));
        let (f50, f99) = rt.block_on(open_loop(&t.ports(), rate, Arc::clone(&req), OPEN_LOOP_RUN));
        let out = child.wait_with_output().expect("flooder");
        floods.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
        // Honest card logins during a flood: each as a browser makes it,
        // tried at most three times.
        let child = flooder(t, Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(1500));
        let (mut logins, mut failures) = (Vec::new(), Vec::new());
        for _ in 0..10 {
            let mut tries = 0;
            let ok = loop {
                tries += 1;
                match rt.block_on(card_login(t.nodes[0].main_port, t.card_port, &t.client_id, &t.secret)) {
                    Ok(_) => break true,
                    Err(e) => {
                        failures.push(e);
                        if tries == 3 {
                            break false;
                        }
                    }
                }
            };
            logins.push((ok, tries));
        }
        let out = child.wait_with_output().expect("flooder");
        let login_flood = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let within = logins.iter().filter(|(ok, _)| *ok).count();
        let (rss_end, hwm) = (rss_kib(pid, "VmRSS:"), rss_kib(pid, "VmHWM:"));
        let lines = [
            format!(
                "flood: signatures/s quiet {:.0}, flooded {:.0} (median of {rounds} rounds): flooded / quiet {:.3} (rounds {})",
                median(quiet),
                median(flooded),
                median(ratios.clone()),
                ratios.iter().map(|r| format!("{r:.3}")).collect::<Vec<_>>().join(" ")
            ),
            format!("flood: at {rate:.0}/s: quiet p50 {q50:.2} ms, p99 {q99:.2} ms; flooded p50 {f50:.2} ms, p99 {f99:.2} ms"),
            format!(
                "flood: server memory: {} MiB at the start, {} MiB at the end, peak {} MiB",
                rss_start / 1024,
                rss_end / 1024,
                hwm / 1024
            ),
            format!("flood: the flooder's requests (last run): {}", floods.last().cloned().unwrap_or_default()),
            format!(
                "flood: honest card logins: {within} of 10 within 3 tries (tries {}; failed tries: {})",
                logins.iter().map(|(ok, n)| format!("{n}{}", if *ok { "" } else { "x" })).collect::<Vec<_>>().join(" "),
                if failures.is_empty() { "none".to_owned() } else { failures.join("; ") }
            ),
            format!("flood: the flooder's requests during the logins: {login_flood}"),
        ];
        for l in &lines {
            println!("{l}");
        }
        let spread = std::env::var("INKAN_FLOOD_SPREAD").is_ok_and(|v| v == "1");
        let name = if spread { "target/load-summary-flood-spread.txt" } else { "target/load-summary-flood.txt" };
        let _ = std::fs::write(root().join(name), lines.join("\n") + "\n");
    }

    /// What the flooder sends, round-robin on each keep-alive connection:
    /// the first round's routes, and the second's (N1 HEAD on authorize, N3
    /// the PC's `/pc/begin` with a PC cookie, N4 requests that write
    /// nothing: an unknown phone token, authorize without parameters).
    fn requests(
        client_id: &str,
        pc_cookie: &str,
        i: u64,
    ) -> (&'static str, String, Vec<(&'static str, String)>, Vec<u8>) {
        let form = ("content-type", "application/x-www-form-urlencoded".to_owned());
        let state = format!("{i:0>500}");
        let authorize = format!("/oidc/authorize?response_type=code&client_id={client_id}&redirect_uri=https%3A%2F%2Frx.example%2Fcb&scope=openid&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256&state={state}&nonce={state}");
        match i % 10 {
            0 => ("GET", authorize, vec![], vec![]),
            1 => ("POST", "/change".into(), vec![form], format!("user_id=flood{i}").into_bytes()),
            2 => ("POST", "/change".into(), vec![form], b"user_id=100001".to_vec()),
            3 => (
                "POST",
                "/oidc/token".into(),
                vec![form],
                format!("grant_type=authorization_code&code=x{i}&client_id={client_id}&client_secret=wrong")
                    .into_bytes(),
            ),
            4 => ("GET", format!("/r/flood{i}"), vec![], vec![]),
            5 => (
                "POST",
                format!("/m/flood{i}/begin"),
                vec![("content-type", "application/json".into())],
                b"{}".to_vec(),
            ),
            6 => ("HEAD", authorize, vec![], vec![]),
            7 => (
                "POST",
                "/pc/begin".into(),
                vec![("cookie", pc_cookie.to_owned()), ("content-type", "application/json".into())],
                b"{}".to_vec(),
            ),
            8 => ("GET", format!("/m/flood{i}"), vec![], vec![]),
            _ => ("GET", "/oidc/authorize".into(), vec![], vec![]),
        }
    }

    /// N2: idle connections (no TLS ClientHello) from 20 addresses, each in
    /// its own /24, `per` from each on `port`; one the server closes is
    /// opened again a second later.
    fn hold_idle(
        tasks: &mut Vec<tokio::task::JoinHandle<()>>,
        port: u16,
        per: usize,
        stop: Instant,
        statuses: &Arc<Mutex<std::collections::BTreeMap<String, u64>>>,
    ) {
        for a in 0..20u8 {
            for _ in 0..per {
                let statuses = Arc::clone(statuses);
                tasks.push(tokio::spawn(async move {
                    while Instant::now() < stop {
                        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
                        let _ = socket.bind((std::net::Ipv4Addr::new(127, 200, a, 1), 0).into());
                        if let Ok(Ok(mut tcp)) = tokio::time::timeout(
                            Duration::from_secs(1),
                            socket.connect(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
                        )
                        .await
                        {
                            let mut buf = [0u8; 16];
                            let left = stop.saturating_duration_since(Instant::now());
                            if let Ok(Ok(_)) =
                                tokio::time::timeout(left, tokio::io::AsyncReadExt::read(&mut tcp, &mut buf)).await
                            {
                                *statuses
                                    .lock()
                                    .unwrap()
                                    .entry("idle connection closed by the server".into())
                                    .or_default() += 1;
                            }
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }));
            }
        }
    }

    /// Requests a spread flooder sends from one source address: under the
    /// default per-address burst (120).
    const PER_SOURCE: u64 = 100;

    async fn try_connect(port: u16, config: Arc<rustls::ClientConfig>) -> Option<Sender> {
        try_connect_from(port, config, None).await
    }

    /// A connection from `source` (a loopback address), or the default one.
    async fn try_connect_from(
        port: u16,
        config: Arc<rustls::ClientConfig>,
        source: Option<std::net::Ipv4Addr>,
    ) -> Option<Sender> {
        let server = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let tcp = match source {
            None => tokio::net::TcpStream::connect(server).await.ok()?,
            Some(ip) => {
                let socket = tokio::net::TcpSocket::new_v4().ok()?;
                socket.bind((ip, 0).into()).ok()?;
                socket.connect(server).await.ok()?
            }
        };
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::try_from("localhost").ok()?, tcp)
            .await
            .ok()?;
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.ok()?;
        tokio::spawn(conn);
        Some(sender)
    }

    /// The flooder: `INKAN_FLOOD_TARGET=<main port>:<card port>:<client id>:<ms>:<spread>`.
    /// 32 keep-alive connections at full speed over the open routes, 20 new
    /// connections a second, 8 bodies sent a byte a second, and connections
    /// held open doing nothing; prints what the server answered.
    pub fn child(target: &str) {
        let parts: Vec<&str> = target.split(':').collect();
        let (port, card_port, client_id) =
            (parts[0].parse::<u16>().unwrap(), parts[1].parse::<u16>().unwrap(), parts[2].to_owned());
        let run = Duration::from_millis(parts[3].parse().unwrap());
        let spread = parts.get(4) == Some(&"true");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let statuses = Arc::new(Mutex::new(std::collections::BTreeMap::<String, u64>::new()));
        let count = |s: &Arc<Mutex<std::collections::BTreeMap<String, u64>>>, k: String| {
            *s.lock().unwrap().entry(k).or_default() += 1
        };
        rt.block_on(async {
            let config = tls_config(None);
            let stop = Instant::now() + run;
            let mut tasks = Vec::new();
            // N3: a PC cookie of the flooder's own (a phone change it started).
            let pc_cookie = match try_connect(port, Arc::clone(&config)).await {
                Some(mut s) => {
                    let req = hyper::Request::builder()
                        .method("POST")
                        .uri("/change")
                        .header("host", "localhost")
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(Full::new(Bytes::from_static(b"user_id=flood-pc")))
                        .unwrap();
                    match s.send_request(req).await {
                        Ok(r) => r
                            .headers()
                            .get("set-cookie")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.split(';').next())
                            .unwrap_or_default()
                            .to_owned(),
                        Err(_) => String::new(),
                    }
                }
                None => String::new(),
            };
            // N2: 5,120 idle connections on the main listener, 1,280 on the card listener.
            hold_idle(&mut tasks, port, 256, stop, &statuses);
            hold_idle(&mut tasks, card_port, 64, stop, &statuses);
            for c in 0..32u64 {
                let (config, statuses, client_id) = (Arc::clone(&config), Arc::clone(&statuses), client_id.clone());
                let pc_cookie = pc_cookie.clone();
                tasks.push(tokio::spawn(async move {
                    let mut i = c;
                    let mut sender = None;
                    // A spread flooder's source addresses: 127.<c + 1>.<n>.<n>, a new one
                    // every PER_SOURCE requests.
                    let (mut source, mut sent_here) = (0u32, 0u64);
                    while Instant::now() < stop {
                        if spread && sent_here >= PER_SOURCE {
                            (sender, sent_here) = (None, 0);
                            source += 1;
                        }
                        if sender.is_none() {
                            let from = spread
                                .then(|| std::net::Ipv4Addr::new(127, c as u8 + 1, (source >> 8) as u8, source as u8));
                            sender = try_connect_from(port, Arc::clone(&config), from).await;
                            if sender.is_none() {
                                count(&statuses, "connection refused".into());
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        }
                        let s = sender.as_mut().unwrap();
                        let (method, path, headers, body) = requests(&client_id, &pc_cookie, i);
                        i += 32;
                        sent_here += 1;
                        let mut req = hyper::Request::builder().method(method).uri(path).header("host", "localhost");
                        for (k, v) in &headers {
                            req = req.header(*k, v.as_str());
                        }
                        let sent = match s.ready().await {
                            Ok(()) => s.send_request(req.body(Full::new(Bytes::from(body))).unwrap()).await.ok(),
                            Err(_) => None,
                        };
                        match sent {
                            Some(resp) => {
                                count(&statuses, resp.status().as_u16().to_string());
                                let _ = resp.into_body().collect().await;
                            }
                            None => {
                                count(&statuses, "connection closed".into());
                                sender = None;
                            }
                        }
                    }
                }));
            }
            // New connections, one request each (TLS handshakes), 20 a second.
            {
                let (config, statuses) = (Arc::clone(&config), Arc::clone(&statuses));
                tasks.push(tokio::spawn(async move {
                    while Instant::now() < stop {
                        let config = Arc::clone(&config);
                        let statuses = Arc::clone(&statuses);
                        tokio::spawn(async move {
                            if let Some(mut s) = try_connect(port, config).await {
                                if let Ok(r) = s
                                    .send_request(
                                        hyper::Request::builder()
                                            .uri("/r/x")
                                            .header("host", "localhost")
                                            .body(Full::new(Bytes::new()))
                                            .unwrap(),
                                    )
                                    .await
                                {
                                    count(&statuses, format!("new connection {}", r.status().as_u16()));
                                }
                            }
                        });
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }));
            }
            // Slow bodies and idle connections, on both listeners.
            for (n, p) in [(8, port), (2, card_port)] {
                for _ in 0..n {
                    let statuses = Arc::clone(&statuses);
                    tasks.push(tokio::spawn(async move {
                        use tokio::io::AsyncWriteExt;
                        while Instant::now() < stop {
                            let Ok(mut tcp) = tokio::net::TcpStream::connect(("127.0.0.1", p)).await else { break };
                            // A TLS ClientHello never finished: the handshake deadline cuts it.
                            let _ = tcp.write_all(&[0x16, 0x03, 0x01]).await;
                            let start = Instant::now();
                            let mut buf = [0u8; 64];
                            let _ = tokio::time::timeout(
                                stop.saturating_duration_since(Instant::now()),
                                tokio::io::AsyncReadExt::read(&mut tcp, &mut buf),
                            )
                            .await;
                            count(&statuses, format!("stalled handshake held {} s", start.elapsed().as_secs()));
                        }
                    }));
                }
            }
            for _ in 0..8 {
                let (config, statuses) = (Arc::clone(&config), Arc::clone(&statuses));
                tasks.push(tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    while Instant::now() < stop {
                        let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { break };
                        let Ok(mut tls) = tokio_rustls::TlsConnector::from(Arc::clone(&config))
                            .connect(ServerName::try_from("localhost").unwrap(), tcp)
                            .await
                        else {
                            continue;
                        };
                        let _ = tls
                            .write_all(
                                b"POST /oidc/token HTTP/1.1\r\nhost: localhost\r\ncontent-length: 100000\r\n\r\n",
                            )
                            .await;
                        let start = Instant::now();
                        let mut answer = Vec::new();
                        loop {
                            if tls.write_all(b"a").await.is_err() || Instant::now() >= stop {
                                break;
                            }
                            if let Ok(Ok(n)) =
                                tokio::time::timeout(Duration::from_secs(1), tls.read_buf(&mut answer)).await
                            {
                                if n == 0 || !answer.is_empty() {
                                    break;
                                }
                            }
                        }
                        count(&statuses, format!("slow body cut after {} s", start.elapsed().as_secs()));
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        });
        let total: u64 = statuses.lock().unwrap().values().sum();
        let seen: Vec<String> = statuses.lock().unwrap().iter().map(|(k, v)| format!("{k}: {v}")).collect();
        println!(
            "{total} in {:.1} s ({:.0}/s): {}",
            run.as_secs_f64(),
            total as f64 / run.as_secs_f64(),
            seen.join(", ")
        );
    }
}
