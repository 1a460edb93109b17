//! `inkan serve`: the HTTPS service.
//!
//! Two listeners (hyper + rustls on tokio, routes with axum):
//! - the main listener (no client certificate): OpenID Connect, the signing
//!   API, the CSC API, health and metrics, pages;
//! - the card listener (asks for a TLS client certificate): HPKI and JPKI login.
//!
//! Graceful shutdown on SIGTERM or Ctrl-C: stop accepting, let in-flight
//! requests finish (up to `[server] shutdown_grace_secs`).

pub mod api;
pub mod audit_writer;
pub mod body;
pub mod csc;
pub mod demo;
pub mod error;
pub mod fido;
pub mod health;
pub mod metrics;
pub mod oidc;
pub mod pages;
pub mod state;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use inkan_keystore::{KeyAlgorithm, KeyRef, Keystore};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::auth::certificate::TrustStore;
use crate::clock::{Clock, SystemClock};
use crate::config::{CardTrustConfig, Config};
use crate::pki::profile::oids;
use crate::store::Store;

use self::state::App;

/// The client certificates the peer presented on this connection (leaf first, DER).
#[derive(Clone, Debug, Default)]
pub struct PeerCertificates(pub Arc<Vec<Vec<u8>>>);

/// Ends the process with a message (start-up failures that leave nothing to serve).
pub fn fatal(message: String) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1)
}

/// The platform key that signs ID tokens (P-256, in the token).
const PLATFORM_KEY_ID: &[u8] = b"inkan-platform-es256-1";
const PLATFORM_KEY_LABEL: &str = "inkan:platform";

/// Finds or creates the platform key; returns it with its public key (SPKI DER).
pub fn platform_key(keystore: &Keystore) -> Result<(KeyRef, Vec<u8>), inkan_keystore::Error> {
    let key = KeyRef::from_id(PLATFORM_KEY_ID.to_vec());
    if keystore.keys_labelled(PLATFORM_KEY_LABEL)?.contains(&key) {
        let spki = keystore.public_key(&key, KeyAlgorithm::EcP256)?;
        return Ok((key, spki));
    }
    let generated = keystore.generate_key_pair(KeyAlgorithm::EcP256, &key, PLATFORM_KEY_LABEL)?;
    Ok((key, generated.public_key_der))
}

fn read_all(paths: &[std::path::PathBuf]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for p in paths {
        out.extend(crate::pki::read_certificates(p).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

fn read_crls(paths: &[std::path::PathBuf]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for p in paths {
        let bytes = std::fs::read(p).map_err(|e| format!("cannot read CRL {}: {e}", p.display()))?;
        if bytes.starts_with(b"-----") {
            out.push(der::pem::decode_vec(&bytes).map_err(|e| format!("CRL {}: {e}", p.display()))?.1);
        } else {
            out.push(bytes);
        }
    }
    Ok(out)
}

/// Builds a card trust store from configuration.
pub fn trust_store(scheme: &'static str, c: &CardTrustConfig) -> Result<TrustStore, String> {
    let policies = if scheme == "HPKI" { vec![oids::HPKI_AUTH_POLICY] } else { vec![oids::JPKI_AUTH_POLICY] };
    TrustStore::new(
        scheme,
        read_all(&c.anchors)?,
        read_all(&c.intermediates)?,
        read_crls(&c.crls)?,
        policies,
        c.danger_allow_stale_crl,
    )
    .map_err(|e| format!("[{}] trust store: {e}", scheme.to_ascii_lowercase()))
}

/// Builds the state from the configuration (opens the store and the token).
pub fn build_app(config: Config, demo_client: Option<(String, String)>) -> Result<App, String> {
    config.export_softhsm_conf();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let sync = config.store.synchronous;
    let store = Store::open_with(&config.store_path(), sync)
        .map_err(|e| format!("database {}: {e}", config.store_path().display()))?;
    // The audit log gets its own connection (and thread): readers never wait for its fsyncs.
    let audit_store = Store::open_with(&config.store_path(), sync).map_err(|e| format!("database: {e}"))?;
    let keystore = Keystore::open(config.keystore().map_err(|e| e.to_string())?)
        .map_err(|e| format!("token {:?}: {e} (run `inkan init`?)", config.token.label))?;
    let (platform, spki) = platform_key(&keystore).map_err(|e| format!("platform key: {e}"))?;
    let chain = crate::keys::chain(&config).map_err(|e| e.to_string())?;
    let hpki = trust_store("HPKI", &config.hpki)?;
    let jpki = trust_store("JPKI", &config.jpki)?;
    let audit_windows = audit_writer::Windows {
        busy: Duration::from_micros(config.server.audit_window_us),
        idle: Duration::from_micros(config.server.audit_idle_window_us),
    };
    App::new(
        config,
        clock,
        Arc::new(keystore),
        store,
        audit_writer::AuditWriter::start(audit_store, audit_windows),
        chain,
        hpki,
        jpki,
        platform,
        &spki,
        demo_client,
    )
}

/// Counts requests by route and status.
async fn count(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    app.metrics.request(&route, resp.status().as_u16());
    resp
}

/// The main listener's routes.
pub fn main_router(app: Arc<App>) -> Router {
    let csc = |v: &str| {
        Router::new()
            .route(&format!("/csc/{v}/info"), post(csc::info))
            .route(&format!("/csc/{v}/credentials/list"), post(csc::credentials_list))
            .route(&format!("/csc/{v}/credentials/info"), post(csc::credentials_info))
            .route(&format!("/csc/{v}/credentials/authorize"), post(csc::credentials_authorize))
            .route(&format!("/csc/{v}/signatures/signHash"), post(csc::sign_hash))
            .route(&format!("/csc/{v}/signatures/signDoc"), post(csc::sign_doc))
    };
    Router::new()
        .route("/", get(demo::index))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/.well-known/openid-configuration", get(oidc::discovery))
        .route("/oidc/authorize", get(oidc::authorize))
        .route("/oidc/token", post(oidc::token))
        .route("/oidc/revoke", post(oidc::revoke))
        .route("/oidc/jwks", get(oidc::jwks))
        .route("/login/fido", get(fido::login_form).post(fido::login_start))
        .route("/register", get(fido::register_index))
        .route("/change", get(fido::change_form).post(fido::change_start))
        .route("/pc", get(fido::pc_page))
        .route("/pc/claim", get(fido::pc_claim))
        .route("/pc/status", get(fido::pc_status))
        .route("/pc/confirm", post(fido::pc_confirm))
        .route("/m/{token}", get(fido::phone_page))
        .route("/m/{token}/begin", post(fido::phone_begin))
        .route("/m/{token}/finish", post(fido::phone_finish))
        .route("/m/{token}/label", get(fido::label_page).post(fido::label_submit))
        .route("/r/{code}", get(fido::regcode_page).post(fido::regcode_submit))
        .route("/assets/inkan.js", get(pages::script))
        .route("/api/v1/me", get(api::me))
        .route("/api/v1/sign", post(api::sign))
        .route("/api/v1/sign-hashes", post(api::sign_hashes))
        .route("/demo", get(demo::page))
        .route("/demo/callback", get(demo::callback))
        .route("/demo/sign", post(demo::sign))
        .merge(csc("v2"))
        .merge(csc("v1"))
        .fallback(health::not_found)
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&app), count))
        .with_state(app)
}

/// The card listener's routes.
pub fn card_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/login/{scheme}", get(oidc::login_card))
        .route("/enroll/{scheme}", get(fido::enroll_card))
        .route("/link/hpki", get(fido::link_hpki))
        .route("/link/jpki", get(fido::link_jpki))
        .route("/healthz", get(health::healthz))
        .fallback(health::not_found)
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&app), count))
        .with_state(app)
}

/// A bound server, ready to run.
pub struct Server {
    app: Arc<App>,
    main: (TcpListener, TlsAcceptor),
    card: (TcpListener, TlsAcceptor),
}

impl Server {
    /// Binds both listeners.
    pub async fn bind(app: App) -> Result<Server, String> {
        let app = Arc::new(app);
        let cfg = &app.config.server;
        let cert =
            std::fs::read(&cfg.tls_cert).map_err(|e| format!("TLS certificate {}: {e}", cfg.tls_cert.display()))?;
        let key = std::fs::read(&cfg.tls_key).map_err(|e| format!("TLS key {}: {e}", cfg.tls_key.display()))?;
        let mut hints = Vec::new();
        for store_cfg in [&app.config.hpki, &app.config.jpki] {
            for c in read_all(&store_cfg.intermediates)?.iter().chain(read_all(&store_cfg.anchors)?.iter()) {
                if let Ok(cert) = <x509_cert::Certificate as der::Decode>::from_der(c) {
                    if let Ok(name) = der::Encode::to_der(cert.tbs_certificate().subject()) {
                        hints.push(name);
                    }
                }
            }
        }
        let main_tls = tls::server_config(&cert, &key, None)?;
        let card_tls = tls::server_config(&cert, &key, Some(Arc::new(tls::CardCertVerifier::new(hints))))?;
        let main = TcpListener::bind(&cfg.listen).await.map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
        let card = TcpListener::bind(&cfg.card_listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", cfg.card_listen))?;
        Ok(Server {
            app,
            main: (main, TlsAcceptor::from(Arc::new(main_tls))),
            card: (card, TlsAcceptor::from(Arc::new(card_tls))),
        })
    }

    /// The bound addresses (main, card).
    pub fn addresses(&self) -> (SocketAddr, SocketAddr) {
        (
            self.main.0.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
            self.card.0.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
        )
    }

    /// The shared state.
    pub fn app(&self) -> Arc<App> {
        Arc::clone(&self.app)
    }

    /// Serves until `shutdown` completes, then drains in-flight requests.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let graceful = Arc::new(hyper_util::server::graceful::GracefulShutdown::new());
        let header_timeout = Duration::from_secs(self.app.config.server.header_timeout_secs);
        let grace = Duration::from_secs(self.app.config.server.shutdown_grace_secs);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let main = tokio::spawn(accept_loop(
            self.main.0,
            self.main.1,
            main_router(Arc::clone(&self.app)),
            Arc::clone(&graceful),
            header_timeout,
            stop_rx.clone(),
        ));
        let card = tokio::spawn(accept_loop(
            self.card.0,
            self.card.1,
            card_router(Arc::clone(&self.app)),
            Arc::clone(&graceful),
            header_timeout,
            stop_rx,
        ));
        // Expired sessions are useless; remove them now and then.
        let purge_app = Arc::clone(&self.app);
        let purge = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(600));
            loop {
                every.tick().await;
                let now = purge_app.now_ms();
                if let Err(e) = crate::auth::session::purge_expired(&mut purge_app.db(), now) {
                    tracing::warn!("purging expired sessions: {e}");
                }
            }
        });
        shutdown.await;
        purge.abort();
        let _ = stop_tx.send(true);
        let _ = main.await;
        let _ = card.await;
        tracing::info!("shutting down: waiting for {} connection(s)", graceful.count());
        // The accept loops have ended, so this is the last reference.
        if let Ok(graceful) = Arc::try_unwrap(graceful) {
            if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
                tracing::warn!("in-flight requests did not finish within {grace:?}");
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    graceful: Arc<hyper_util::server::graceful::GracefulShutdown>,
    header_timeout: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(header_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!("TLS handshake failed: {e}");
                    return;
                }
                Err(_) => return,
            };
            let peer = PeerCertificates(Arc::new(
                tls.get_ref()
                    .1
                    .peer_certificates()
                    .map(|certs| certs.iter().map(|c| c.to_vec()).collect())
                    .unwrap_or_default(),
            ));
            let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(peer.clone());
                router.clone().oneshot(req.map(Body::new))
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true)
                .serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// `inkan serve [--demo]`: builds the state, binds, prints where to go, serves.
pub fn serve(config: Config, demo_mode: bool) -> Result<(), String> {
    let demo_client = if demo_mode { Some(demo::prepare(&config, &SystemClock)?) } else { None };
    let app = build_app(config, demo_client)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let server = Server::bind(app).await?;
        let (main, card) = server.addresses();
        let app = server.app();
        println!("inkan is listening:");
        println!("  main (OIDC, signing API, CSC):  https://{main}   public URL {}", app.config.server.public_url);
        println!("  card login (client certificate): https://{card}   public URL {}", app.config.server.card_url);
        if let Some((id, secret)) = &app.demo_client {
            demo::print_banner(&app.config, id, secret);
        }
        server.run(shutdown_signal()).await;
        println!("inkan stopped");
        Ok(())
    })
}
