//! A small HTTPS client for the tests (rustls, optional client certificate),
//! and a harness that runs the real `inkan serve`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::harness::{fixture, root, Env};

/// A response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text()))
    }

    pub fn location(&self) -> String {
        self.headers
            .get("location")
            .cloned()
            .unwrap_or_else(|| panic!("no Location ({}): {}", self.status, self.text()))
    }
}

/// HTTPS client trusting the fixture root, optionally with a card certificate.
#[derive(Clone)]
pub struct Client {
    config: Arc<rustls::ClientConfig>,
    /// The loopback address connections come from (127.0.0.1 unless set).
    from: Option<std::net::IpAddr>,
}

/// Always offers the one card certificate.
#[derive(Debug)]
struct CardResolver(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for CardResolver {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    inkan::pki::read_certificates(path).expect("certs").into_iter().map(CertificateDer::from).collect()
}

impl Client {
    pub fn new() -> Client {
        Client::build(None)
    }

    /// With the certificate and key of a fixture holder (`hpki-doctor`, ...).
    pub fn with_card(holder: &str) -> Client {
        Client::with_cert(&fixture(&format!("holders/{holder}.pem")), &fixture(&format!("holders/{holder}.key")))
    }

    pub fn with_cert(cert: &Path, key: &Path) -> Client {
        Client::build(Some((cert.to_path_buf(), key.to_path_buf())))
    }

    fn build(card: Option<(PathBuf, PathBuf)>) -> Client {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in pem_certs(&fixture("hpki-root.pem")) {
            roots.add(c).expect("root");
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let config = match card {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let key_pem = std::fs::read(key).expect("key");
                let (_, der) = der::pem::decode_vec(&key_pem).expect("pem key");
                let signing_key = rustls::crypto::ring::default_provider()
                    .key_provider
                    .load_private_key(PrivateKeyDer::try_from(der).expect("key der"))
                    .expect("signing key");
                // Not with_client_auth_cert: rustls parses the certificate with webpki
                // there, which refuses the critical certificatePolicies of card certificates.
                let certified = Arc::new(rustls::sign::CertifiedKey::new(pem_certs(&cert), signing_key));
                builder.with_client_cert_resolver(Arc::new(CardResolver(certified)))
            }
        };
        Client { config: Arc::new(config), from: None }
    }

    /// Connecting from another loopback address (`127.0.N.M`), as another client would.
    pub fn from(mut self, ip: &str) -> Client {
        self.from = Some(ip.parse().expect("ip"));
        self
    }

    pub fn get(&self, url: &str, headers: &[(&str, &str)]) -> Resp {
        self.request("GET", url, headers, Vec::new())
    }

    pub fn post(&self, url: &str, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Resp {
        self.request("POST", url, headers, body.into())
    }

    pub fn post_json(&self, url: &str, bearer: &str, body: &serde_json::Value) -> Resp {
        let auth = format!("Bearer {bearer}");
        self.post(url, &[("authorization", &auth), ("content-type", "application/json")], body.to_string())
    }

    pub fn request(&self, method: &str, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Resp {
        self.try_request(method, url, headers, body).unwrap_or_else(|e| panic!("{method} {url}: {e}"))
    }

    /// [`Client::post_json`] that reports a failed connection instead of panicking.
    pub fn try_post_json(&self, url: &str, bearer: &str, body: &serde_json::Value) -> Result<Resp, String> {
        let auth = format!("Bearer {bearer}");
        let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
        self.try_request("POST", url, &headers, body.to_string().into_bytes())
    }

    /// A TLS connection to the listener of `url`, nothing sent yet (for
    /// tests that speak HTTP by hand: slow bodies, held connections).
    pub async fn connect(&self, url: &str) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
        let rest = url.strip_prefix("https://").expect("https URL");
        let authority = rest.split('/').next().expect("authority");
        let (host, port) = authority.rsplit_once(':').expect("port");
        let tcp = connect_from(self.from, &format!("127.0.0.1:{port}")).await?;
        tokio_rustls::TlsConnector::from(Arc::clone(&self.config))
            .connect(ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))
    }

    /// A request; `Err` when no response came (connection refused or cut).
    pub fn try_request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Resp, String> {
        let rest = url.strip_prefix("https://").expect("https URL");
        let (authority, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, "/".into()));
        let (host, port) = authority.rsplit_once(':').expect("port");
        let addr = format!("127.0.0.1:{port}");
        let host = host.to_owned();
        let config = Arc::clone(&self.config);
        let from = self.from;
        let mut req = hyper::Request::builder().method(method).uri(path).header("host", authority);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body))).expect("request");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let tcp = connect_from(from, &addr).await?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(ServerName::try_from(host).map_err(|e| e.to_string())?, tcp)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| format!("http: {e}"))?;
            tokio::spawn(conn);
            let resp = sender.send_request(req).await.map_err(|e| format!("response: {e}"))?;
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
                .collect();
            let body = resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes().to_vec();
            Ok(Resp { status, headers, body })
        })
    }
}

/// A TCP connection to `addr`, from the loopback address `from` if given.
async fn connect_from(from: Option<std::net::IpAddr>, addr: &str) -> Result<tokio::net::TcpStream, String> {
    let to: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    if let Some(ip) = from {
        socket.bind((ip, 0).into()).map_err(|e| format!("bind {ip}: {e}"))?;
    }
    socket.connect(to).await.map_err(|e| format!("connect: {e}"))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A running `inkan serve`. Its output is read as it comes (a server that
/// logs much must never block on a full pipe) and kept.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub card: String,
    stdout: Output,
    stderr: Output,
}

/// A child's output stream, drained into memory by a thread.
struct Output(Option<std::thread::JoinHandle<String>>);

impl Output {
    fn drain(stream: Option<impl std::io::Read + Send + 'static>) -> Output {
        Output(stream.map(|mut s| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = s.read_to_end(&mut bytes);
                String::from_utf8_lossy(&bytes).into_owned()
            })
        }))
    }

    /// Everything, once the child has exited.
    fn collect(&mut self) -> String {
        self.0.take().and_then(|t| t.join().ok()).unwrap_or_default()
    }
}

impl Server {
    /// Starts the server for `env` with extra environment settings. The ports
    /// are picked free just before; if another process takes one meanwhile, the
    /// start is retried with new ones.
    pub fn start(env: &Env, vars: &[(&str, &str)]) -> Server {
        Server::start_with(env, vars, false)
    }

    /// Starts `inkan serve --demo` (demo users, card mappings, demo client).
    pub fn start_demo(env: &Env) -> Server {
        Server::start_with(env, &[], true)
    }

    fn start_with(env: &Env, vars: &[(&str, &str)], demo: bool) -> Server {
        for attempt in 1.. {
            match Server::try_start(env, vars, demo) {
                Ok(server) => return server,
                Err(e) if attempt < 4 && e.contains("cannot listen") => continue,
                Err(e) => panic!("inkan serve did not start: {e}"),
            }
        }
        unreachable!()
    }

    fn try_start(env: &Env, vars: &[(&str, &str)], demo: bool) -> Result<Server, String> {
        let (main, card) = (free_port(), free_port());
        let base = format!("https://localhost:{main}");
        let card_url = format!("https://localhost:{card}");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_inkan"));
        cmd.arg("--config").arg(&env.config).arg("serve").current_dir(root());
        if demo {
            cmd.arg("--demo");
        }
        cmd.env("INKAN_SERVER_LISTEN", format!("127.0.0.1:{main}"))
            .env("INKAN_SERVER_CARD_LISTEN", format!("127.0.0.1:{card}"))
            .env("INKAN_SERVER_PUBLIC_URL", &base)
            .env("INKAN_SERVER_CARD_URL", &card_url)
            .env_remove("INKAN_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start inkan serve");
        let (stdout, stderr) = (Output::drain(child.stdout.take()), Output::drain(child.stderr.take()));
        let mut server = Server { child, base, card: card_url, stdout, stderr };
        let started = Instant::now();
        while std::net::TcpStream::connect(format!("127.0.0.1:{main}")).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("exited ({status}): {}", server.stderr.collect()));
            }
            assert!(started.elapsed() < Duration::from_secs(60), "inkan serve did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Both listeners are bound before the first is served (behind a
        // balancer only the balancer's PROXY header gets an answer).
        if !vars.iter().any(|(k, _)| *k == "INKAN_SERVER_PROXY_FROM") {
            assert_eq!(Client::new().get(&format!("{}/healthz", server.base), &[]).status, 200);
        }
        Ok(server)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Kills the server (SIGKILL) and returns what it wrote to stderr.
    pub fn kill(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr.collect()
    }

    /// Sends SIGTERM and waits; returns (exit code, stdout).
    pub fn stop(mut self) -> (Option<i32>, String) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status.code(), self.stdout.collect());
            }
            assert!(started.elapsed() < Duration::from_secs(30), "inkan serve did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A registered client: (id, secret, redirect URI).
pub struct OidcClient {
    pub id: String,
    pub secret: String,
    pub redirect: String,
}

/// Registers a client with the CLI.
pub fn register_client(env: &Env) -> OidcClient {
    let redirect = "https://rx.example.jp/callback".to_owned();
    let v = env.json(&["client", "add", "--name", "電子処方箋システム", "--redirect-uri", &redirect]);
    OidcClient {
        id: v["client_id"].as_str().expect("id").into(),
        secret: v["client_secret"].as_str().expect("secret").into(),
        redirect,
    }
}

/// PKCE pair (verifier, S256 challenge).
pub fn pkce() -> (String, String) {
    let verifier = inkan::auth::random_token();
    let challenge = inkan::encoding::b64url(&inkan::auth::token_hash(&verifier));
    (verifier, challenge)
}

/// The query parameters of a URL.
pub fn query(url: &str) -> HashMap<String, String> {
    let q = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

/// The authorize URL for a client.
pub fn authorize_url(server: &Server, client: &OidcClient, challenge: &str, extra: &[(&str, &str)]) -> String {
    let mut params = vec![
        ("response_type", "code".to_owned()),
        ("client_id", client.id.clone()),
        ("redirect_uri", client.redirect.clone()),
        ("scope", "openid sign".to_owned()),
        ("state", "st-1".to_owned()),
        ("nonce", "nonce-1".to_owned()),
        ("code_challenge", challenge.to_owned()),
        ("code_challenge_method", "S256".to_owned()),
    ];
    for (k, v) in extra {
        params.retain(|(pk, _)| pk != k);
        if !v.is_empty() {
            params.push((k, (*v).to_owned()));
        }
    }
    inkan::auth::oidc::with_query(&server.url("/oidc/authorize"), &params)
}

/// Card login up to the code: returns the redirect to the client (with code or error).
pub fn card_login(server: &Server, client: &OidcClient, holder: &str, acr: &str, challenge: &str) -> Resp {
    let r = Client::new().get(&authorize_url(server, client, challenge, &[("acr_values", acr)]), &[]);
    assert_eq!(r.status, 303, "authorize redirects to the card listener: {}", r.text());
    let card_url = r.location();
    assert!(card_url.starts_with(&server.card), "{card_url}");
    Client::with_card(holder).get(&card_url, &[])
}

/// Exchanges a code at the token endpoint (client_secret_basic).
pub fn exchange(server: &Server, client: &OidcClient, code: &str, verifier: &str) -> Resp {
    use base64ct::Encoding;
    let basic =
        format!("Basic {}", base64ct::Base64::encode_string(format!("{}:{}", client.id, client.secret).as_bytes()));
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "authorization_code")
        .append_pair("code", code)
        .append_pair("redirect_uri", &client.redirect)
        .append_pair("code_verifier", verifier)
        .finish();
    Client::new().post(
        &server.url("/oidc/token"),
        &[("authorization", &basic), ("content-type", "application/x-www-form-urlencoded")],
        body,
    )
}

/// A whole card login: returns the token response JSON.
pub fn login(server: &Server, client: &OidcClient, holder: &str, acr: &str) -> serde_json::Value {
    let (verifier, challenge) = pkce();
    let r = card_login(server, client, holder, acr, &challenge);
    assert_eq!(r.status, 303, "card login: {}", r.text());
    let q = query(&r.location());
    let code = q.get("code").unwrap_or_else(|| panic!("no code: {}", r.location()));
    let t = exchange(server, client, code, &verifier);
    assert_eq!(t.status, 200, "token: {}", t.text());
    t.json()
}

/// How long a change made elsewhere (the CLI, another node) may take to reach
/// a server's session cache on PostgreSQL: inkan's bound (900 ms) and a margin
/// for a loaded test machine. With SQLite it takes effect on the next request.
pub const PROPAGATION: Duration = Duration::from_millis(1_500);

/// The answer to `request` after a change made by another process: with
/// SQLite the first answer (every request checks the epoch file); with
/// PostgreSQL the first answer that is `expected`, trying for [`PROPAGATION`]
/// (the notification of a change usually arrives within a millisecond, but
/// nothing orders it before the next request).
pub fn after_change(env: &Env, expected: u16, mut request: impl FnMut() -> Resp) -> Resp {
    let started = Instant::now();
    loop {
        let r = request();
        if r.status == expected || !env.on_postgres() || started.elapsed() > PROPAGATION {
            return r;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
