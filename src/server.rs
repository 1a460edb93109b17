//! `inkan serve`: the HTTPS service.
//!
//! Two listeners (hyper + rustls on tokio, routes with axum):
//! - the main listener (no client certificate): OpenID Connect, the signing
//!   API, the CSC API, health and metrics, pages;
//! - the card listener (asks for a TLS client certificate): HPKI and JPKI login.
//!
//! Graceful shutdown on SIGTERM or Ctrl-C: stop accepting, let in-flight
//! requests finish (up to `[server] shutdown_grace_secs`).
//!
//! Only HTTP lives here: each handler parses, authenticates the caller into a
//! principal, calls one domain operation and renders the answer (JSON, CSC,
//! pages). Errors are mapped to statuses and OAuth/CSC codes in `error.rs`.

pub mod address;
pub mod api;
pub mod body;
pub mod cards;
pub mod csc;
pub mod demo;
pub mod error;
pub mod fido;
pub mod health;
pub mod limits;
pub mod oidc;
pub mod openapi;
pub mod pages;
pub mod proxy;
pub mod slots;
pub mod state;
pub mod tls;
pub mod verify;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::ServiceExt;
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

use crate::auth::cards::CardAuth;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::request_id::RequestId;

use self::state::App;
use self::tls::PeerCertificates;

/// Names each request and logs it: its id is the client's `X-Request-Id` when
/// the client is trusted with it (`[server] request_id_from`: a balancer that
/// ends TLS, a signing system's network) and the id well formed, else a new
/// one; the answer carries it, and the request
/// runs in a span (every log line it writes names it) and a task scope
/// (every audit row it writes names it, [`crate::request_id`]). Then one
/// access line at info (`inkan::access`): method, route, status, time to the
/// answer's head, client.
async fn observe(State(trusted): State<Arc<[crate::config::IpNet]>>, req: Request, next: Next) -> Response {
    use tracing::Instrument;
    let started = std::time::Instant::now();
    let client = req.extensions().get::<address::ClientAddr>().map(|a| a.0);
    let id = client
        .filter(|c| trusted.iter().any(|net| net.contains(*c)))
        .and_then(|_| req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).and_then(RequestId::parse))
        .unwrap_or_default();
    let method = req.method().clone();
    // The router's shared string (no copy unless the line is written).
    let route = req.extensions().get::<MatchedPath>().cloned();
    let span = tracing::info_span!("request", request_id = %id);
    let mut resp = id.clone().scope(next.run(req)).instrument(span.clone()).await;
    if let Ok(v) = HeaderValue::from_str(id.as_str()) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    span.in_scope(|| {
        let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
        tracing::info!(
            target: "inkan::access",
            method = %method,
            route,
            status = resp.status().as_u16(),
            ms = started.elapsed().as_micros() as f64 / 1e3,
            client = client.map(tracing::field::display),
            "{method} {route} {}",
            resp.status().as_u16()
        );
    });
    resp
}

/// The request id's header.
const REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

/// Counts requests by route and status.
async fn count(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    app.metrics.request(&route, resp.status().as_u16());
    resp
}

/// The limits of a route's group ([`limits::Route`]), a layer of that route
/// (every method it answers, HEAD with GET): per address, per network, and
/// for the groups that write, the budget for all clients together.
async fn limited(State((app, route)): State<(Arc<App>, limits::Route)>, req: Request, next: Next) -> Response {
    let Some(&addr) = req.extensions().get::<address::ClientAddr>() else {
        return next.run(req).await;
    };
    let network = address::Network::of(addr);
    if route.counts_refusals_only() {
        // An address's refusals, and its network's (four times as many).
        let blocked =
            app.limits.refusals.blocked((route, addr)).or_else(|| app.limits.network.blocked((route, network)));
        if let Some(limited) = blocked {
            return limits::too_many(route.pages(req.method()), limited);
        }
        let resp = next.run(req).await;
        if resp.status().is_client_error() {
            let _ = app.limits.refusals.check((route, addr));
            let _ = app.limits.network.check((route, network));
        }
        return resp;
    }
    // One address, then its network: many addresses of one network (a /24,
    // a /48) are held together too.
    if let Err(limited) =
        app.limits.address.check((route, addr)).and_then(|()| app.limits.network.check((route, network)))
    {
        return limits::too_many(route.pages(req.method()), limited);
    }
    // What passed its address's limit counts against the group's budget for
    // all clients together: a flood from many addresses meets it. A request
    // refused (4xx: an unknown QR code, bad parameters) wrote nothing and is
    // given back, so that such floods do not spend what logins need.
    // A card login's authorize request keeps nothing: no share of the budget.
    let keeps_nothing =
        route == limits::Route::Authorize && req.uri().query().is_some_and(crate::auth::oidc::authorize_keeps_nothing);
    if route.writes() && !keeps_nothing {
        if let Err(limited) = app.limits.open.check(route) {
            return limits::busy(route.pages(req.method()), limited);
        }
        let resp = next.run(req).await;
        if resp.status().is_client_error() {
            app.limits.open.refund(route);
        }
        return resp;
    }
    next.run(req).await
}

/// Headers every answer of both listeners carries: HSTS (they speak HTTPS
/// only; not for a `public_url` on localhost or an IP address, where it would
/// pin every port of a developer's machine to HTTPS for a year), no MIME
/// sniffing, and no caching of an answer that does not say otherwise (JSON
/// answers hold tokens, signatures and personal data).
async fn harden(State(hsts): State<bool>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    if hsts {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    }
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// Whether answers for this public URL carry HSTS: not when its host is
/// `localhost` (or a name under it) or an IP address.
fn sends_hsts(public_url: &str) -> bool {
    let rest = public_url.split_once("://").map_or(public_url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let host = host.to_ascii_lowercase();
    !(host == "localhost" || host.ends_with(".localhost") || host.parse::<std::net::IpAddr>().is_ok())
}

/// A route's methods under the limits of `group` ([`limited`]).
fn limit<S: Clone + Send + Sync + 'static>(
    app: &Arc<App>,
    group: limits::Route,
    methods: MethodRouter<S>,
) -> MethodRouter<S> {
    methods.layer(axum::middleware::from_fn_with_state((Arc::clone(app), group), limited))
}

/// The routes of the OpenAPI document: each handler routed by its own
/// `#[utoipa::path]`, so that the document and the router are one list
/// ([`openapi`]).
fn documented(app: &Arc<App>) -> (Router<Arc<App>>, utoipa::openapi::OpenApi) {
    let csc = || {
        OpenApiRouter::new()
            .routes(routes!(csc::info))
            .routes(routes!(csc::credentials_list))
            .routes(routes!(csc::credentials_info))
            .routes(routes!(csc::credentials_authorize))
            .routes(routes!(csc::sign_hash))
            .routes(routes!(csc::sign_doc::sign_doc))
    };
    let token_group = |(schemas, paths, methods): UtoipaMethodRouter<Arc<App>>| {
        (schemas, paths, limit(app, limits::Route::Token, methods))
    };
    OpenApiRouter::with_openapi(openapi::Base::openapi())
        .routes(routes!(api::me))
        .routes(routes!(api::sign))
        .routes(routes!(api::sign_hashes))
        .routes(routes!(verify::verify))
        .routes(routes!(verify::extend))
        .routes(token_group(routes!(oidc::token)))
        .routes(token_group(routes!(oidc::revoke)))
        .routes(routes!(oidc::userinfo))
        .nest("/csc/v2", csc())
        .nest("/csc/v1", csc())
        .split_for_parts()
}

/// The main listener's routes, each open one tagged with its limit group.
pub fn main_router(app: Arc<App>) -> Router {
    use limits::Route as G;
    let a = &app;
    let (api, document) = documented(a);
    let document = openapi::finish(document, &app.config.server.public_url);
    let document = bytes::Bytes::from(serde_json::to_vec(&document).unwrap_or_default());
    let openapi_json = move || {
        let document = document.clone();
        async move { ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], document) }
    };
    Router::new()
        .route("/", get(demo::index))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/.well-known/openid-configuration", get(oidc::discovery))
        .route("/.well-known/oauth-authorization-server", get(oidc::discovery))
        .route("/oidc/authorize", limit(a, G::Authorize, get(oidc::authorize)))
        .route("/oidc/jwks", get(oidc::jwks))
        .route("/openapi.json", get(openapi_json))
        .route("/login/fido", get(fido::login_form).merge(limit(a, G::QrStart, post(fido::login_start))))
        .route("/register", get(fido::register_index))
        .route("/change", get(fido::change_form).merge(limit(a, G::QrStart, post(fido::change_start))))
        .route("/pc", get(fido::pc_page))
        .route("/pc/claim", limit(a, G::QrStart, get(fido::pc_claim)))
        // Polled by an honest PC every second: no group.
        .route("/pc/status", get(fido::pc_status))
        .route("/pc/confirm", limit(a, G::Pc, post(fido::pc_confirm)))
        .route("/pc/begin", limit(a, G::Pc, post(fido::pc_begin)))
        .route("/pc/finish", limit(a, G::Pc, post(fido::pc_finish)))
        .route("/m/{token}", limit(a, G::Phone, get(fido::phone_page)))
        .route("/m/{token}/begin", limit(a, G::Phone, post(fido::phone_begin)))
        .route("/m/{token}/finish", limit(a, G::Phone, post(fido::phone_finish)))
        .route("/m/{token}/failed", limit(a, G::Phone, post(fido::phone_failed)))
        .route("/m/{token}/label", limit(a, G::Phone, get(fido::label::label_page).post(fido::label::label_submit)))
        .route("/r/{code}", limit(a, G::Regcode, get(fido::regcode::regcode_page).post(fido::regcode::regcode_submit)))
        .route("/assets/inkan.js", get(pages::script))
        .route("/demo", get(demo::page))
        .route("/demo/callback", get(demo::callback))
        .route("/demo/sign", post(demo::sign))
        .merge(api)
        .fallback(health::not_found)
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&app), count))
        .layer(axum::middleware::from_fn_with_state(sends_hsts(&app.config.server.public_url), harden))
        .layer(axum::middleware::from_fn_with_state(app.config.server.request_id_from.clone().into(), observe))
        .with_state(app)
}

/// The card listener's routes: card login, enrollment and link in the card group.
pub fn card_router(app: Arc<App>) -> Router {
    let card = |methods| limit(&app, limits::Route::Card, methods);
    Router::new()
        .route("/login/{scheme}", card(get(cards::login)))
        .route("/enroll/{scheme}", card(get(cards::enroll)))
        .route("/link/hpki", card(get(cards::link_hpki)))
        .route("/link/jpki", card(get(cards::link_jpki)))
        .route("/healthz", get(health::healthz))
        .fallback(health::not_found)
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&app), count))
        .layer(axum::middleware::from_fn_with_state(sends_hsts(&app.config.server.public_url), harden))
        .layer(axum::middleware::from_fn_with_state(app.config.server.request_id_from.clone().into(), observe))
        .with_state(app)
}

/// Both listeners, bound, with their TLS configurations.
pub struct Listeners {
    main: (TcpListener, Arc<rustls::ServerConfig>),
    card: (TcpListener, Arc<rustls::ServerConfig>),
}

impl Listeners {
    /// Reads the TLS certificate and key and binds both listeners: before
    /// anything is changed, so that a second start on ports in use fails
    /// without touching the running instance's state.
    pub async fn bind(config: &Config) -> Result<Listeners> {
        let cfg = &config.server;
        let cert = std::fs::read(&cfg.tls_cert)
            .map_err(|e| Error::Invalid(format!("TLS certificate {}: {e}", cfg.tls_cert.display())))?;
        let key = std::fs::read(&cfg.tls_key)
            .map_err(|e| Error::Invalid(format!("TLS key {}: {e}", cfg.tls_key.display())))?;
        let hints = CardAuth::ca_names(config)?;
        let main_tls = tls::server_config(&cert, &key, None)?;
        let card_tls = tls::server_config(&cert, &key, Some(Arc::new(tls::CardCertVerifier::new(hints))))?;
        let listen = |addr: &str, e: std::io::Error| {
            Error::Unavailable(format!("cannot listen on {addr}: {e} (is inkan already running there?)"))
        };
        let main = TcpListener::bind(&cfg.listen).await.map_err(|e| listen(&cfg.listen, e))?;
        let card = TcpListener::bind(&cfg.card_listen).await.map_err(|e| listen(&cfg.card_listen, e))?;
        Ok(Listeners { main: (main, Arc::new(main_tls)), card: (card, Arc::new(card_tls)) })
    }
}

/// A bound server, ready to run.
pub struct Server {
    app: Arc<App>,
    main: (TcpListener, Arc<rustls::ServerConfig>),
    card: (TcpListener, Arc<rustls::ServerConfig>),
}

impl Server {
    /// Binds both listeners for `app`.
    pub async fn bind(app: App) -> Result<Server> {
        let listeners = Listeners::bind(&app.config).await?;
        Ok(Server::on(app, listeners))
    }

    /// `app` on listeners bound before it was built.
    pub fn on(app: App, listeners: Listeners) -> Server {
        Server { app: Arc::new(app), main: listeners.main, card: listeners.card }
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
        let grace = Duration::from_secs(self.app.config.server.shutdown_grace_secs);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let main = tokio::spawn(accept_loop(
            self.main.0,
            self.main.1,
            main_router(Arc::clone(&self.app)),
            Arc::clone(&self.app),
            Arc::clone(&graceful),
            stop_rx.clone(),
        ));
        let card = tokio::spawn(accept_loop(
            self.card.0,
            self.card.1,
            card_router(Arc::clone(&self.app)),
            Arc::clone(&self.app),
            Arc::clone(&graceful),
            stop_rx,
        ));
        // Expired sessions are useless; remove them now and then.
        let purge_app = Arc::clone(&self.app);
        let purge = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(600));
            loop {
                every.tick().await;
                let now = purge_app.clock.now_ms();
                if let Err(e) = crate::auth::sessions::purge_expired(purge_app.store.as_ref(), now).await {
                    tracing::warn!("purging expired sessions: {e}");
                }
            }
        });
        // The audit chain's head, sealed by the token within a second of
        // every commit (whoever can write the database cannot reseal it),
        // and time-stamped by the TSA, if there is one, every
        // `[tsa] audit_every_secs`.
        let seal_app = Arc::clone(&self.app);
        let seal = tokio::spawn(async move {
            let failed = crate::throttle::Throttle::new();
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut first = true;
            loop {
                every.tick().await;
                if let Err(e) = seal_app.signing.seal_audit(std::mem::take(&mut first)).await {
                    if failed.admit().is_some() {
                        tracing::warn!("sealing the audit log: {e} (retried every second)");
                    }
                }
                // And, with a TSA, time-stamped at its newest seal when due.
                match seal_app.signing.stamp_audit(false).await {
                    Ok(Some((seq, at))) => tracing::info!(row = seq, time = %at, "audit log time-stamped"),
                    Ok(None) => {}
                    Err(e) => {
                        if failed.admit().is_some() {
                            tracing::warn!("time-stamping the audit log: {e} (tried again within a minute)");
                        }
                    }
                }
            }
        });
        shutdown.await;
        purge.abort();
        seal.abort();
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
        // The rows of the last requests, sealed before the process ends.
        if let Err(e) = self.app.signing.seal_audit(false).await {
            tracing::warn!("sealing the audit log on shutdown: {e} (the next start seals it if the log checks out against the token's record)");
        }
    }
}

/// The largest request head (request line and headers) a connection may send.
pub const MAX_HEAD_BYTES: usize = 64 << 10;

/// What `step` gives within `deadline`; `None` (a failure logged at debug,
/// with `what`) if it fails or takes longer.
async fn within<T>(
    deadline: Duration,
    step: impl std::future::Future<Output = std::io::Result<T>>,
    what: &str,
) -> Option<T> {
    match tokio::time::timeout(deadline, step).await {
        Ok(Ok(done)) => Some(done),
        Ok(Err(e)) => {
            tracing::debug!("{what}: {e}");
            None
        }
        Err(_) => None,
    }
}

/// What graceful shutdown waits for: one per connection, taken when it is
/// accepted (connections hold no reference to the shutdown itself, which
/// `Server::run` takes back to drain them).
type Watcher = hyper_util::server::graceful::Watcher;

/// What every connection of one listener is served with.
struct Listener {
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    header_timeout: Duration,
    pool: Arc<slots::Slots>,
    caps: slots::Caps,
    pace: limits::BodyPace,
    /// `[server] proxy_from`: when set, connections come from these only,
    /// each opened with a PROXY v2 header.
    balancers: Vec<crate::config::IpNet>,
    /// PROXY headers being read now (at most one per slot).
    headers: Arc<tokio::sync::Semaphore>,
    /// Refusals are logged at most once a second.
    refused: crate::throttle::Throttle,
}

impl Listener {
    fn refused(&self, from: std::net::IpAddr, why: std::fmt::Arguments<'_>) {
        if let Some(left_out) = self.refused.admit() {
            tracing::warn!("connection from {from} refused: {why} ({left_out} more since the last line)");
        }
    }

    /// A slot for a connection from `addr`, or `None` (logged) if it gets none.
    fn admit(&self, addr: address::ClientAddr) -> Option<Arc<slots::Slot>> {
        let caps = self.caps;
        match self.pool.admit(addr, caps) {
            Ok(slot) => Some(Arc::new(slot)),
            Err(why) => {
                match why {
                    slots::Refused::Address => self.refused(
                        addr.0,
                        format_args!("[limits] connections_per_address ({}) reached", caps.per_address),
                    ),
                    slots::Refused::Network => self.refused(
                        addr.0,
                        format_args!("[limits] connections_per_network ({}) reached", caps.per_network),
                    ),
                    slots::Refused::Full => self.refused(
                        addr.0,
                        format_args!(
                            "[limits] connections ({}) reached, every slot authenticated or running a request",
                            caps.total
                        ),
                    ),
                }
                None
            }
        }
    }

    /// A balancer's connection: its PROXY header names the client (the
    /// balancer itself for its health checks), then it is served as the
    /// client's.
    async fn relayed(self: Arc<Self>, mut tcp: tokio::net::TcpStream, balancer: std::net::IpAddr, watcher: Watcher) {
        let Ok(_reading) = Arc::clone(&self.headers).try_acquire_owned() else {
            self.refused(balancer, format_args!("as many PROXY headers are being read as there are slots"));
            return;
        };
        let deadline = self.pool.hello_deadline(self.header_timeout, self.caps);
        let client = match proxy::read_header(&mut tcp, deadline).await {
            Ok(proxy::Origin::Client(client)) => client.ip(),
            Ok(proxy::Origin::Local) => balancer,
            Err(e) => {
                self.refused(balancer, format_args!("{e}"));
                return;
            }
        };
        drop(_reading);
        let addr = address::ClientAddr::of(client);
        if let Some(slot) = self.admit(addr) {
            self.serve(tcp, addr, slot, watcher).await;
        }
    }

    /// Serves one admitted connection until it ends or the pool closes it
    /// for a newcomer.
    async fn serve(
        &self,
        tcp: tokio::net::TcpStream,
        addr: address::ClientAddr,
        slot: Arc<slots::Slot>,
        watcher: Watcher,
    ) {
        let _ = tcp.set_nodelay(true);
        let deadline = self.pool.hello_deadline(self.header_timeout, self.caps);
        let pace = self.pace;
        let serve = async {
            // The ClientHello within a deadline that shortens as the listener
            // fills; the rest of the handshake (on the card listener, a user
            // choosing a card and typing a PIN) within the whole timeout.
            let hello = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
            let Some(start) = within(deadline, hello, "TLS ClientHello refused").await else { return };
            slot.stage(slots::Stage::Handshake);
            let handshake = start.into_stream(Arc::clone(&self.tls));
            let Some(tls) = within(self.header_timeout, handshake, "TLS handshake failed").await else { return };
            slot.stage(slots::Stage::Serving);
            let peer = PeerCertificates(Arc::new(
                tls.get_ref()
                    .1
                    .peer_certificates()
                    .map(|certs| certs.iter().map(|c| c.to_vec()).collect())
                    .unwrap_or_default(),
            ));
            let (on, router) = (Arc::clone(&slot), self.router.clone());
            let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(peer.clone());
                req.extensions_mut().insert(addr);
                let busy = on.busy();
                let answer = router.clone().oneshot(req.map(|body| Body::new(limits::PacedBody::new(body, pace))));
                let on = Arc::clone(&on);
                async move {
                    let resp = slots::on_connection(on, answer).await?;
                    Ok::<_, std::convert::Infallible>(resp.map(|b| Body::new(slots::Sending::new(b, busy))))
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(self.header_timeout)
                // A request head larger than this is refused (431): what one
                // connection makes the server buffer stays small.
                .max_buf_size(MAX_HEAD_BYTES)
                .max_header_size(MAX_HEAD_BYTES)
                .keep_alive(true)
                .serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!("connection ended: {e}");
            }
        };
        tokio::select! {
            () = serve => {}
            () = slot.evicted() => tracing::debug!("connection from {} closed for a newcomer", addr.0),
        }
    }
}

/// Accepts connections of one listener until `stop`: each gets a slot
/// ([`slots::Slots`]: caps per listener, address and network; when full, an
/// unproven connection makes room), a ClientHello within a deadline that
/// shortens as the listener fills, and paced bodies. With
/// `[server] proxy_from`, only the balancers connect, and each connection
/// counts as the client its PROXY header names (and this host itself, unless
/// it is a balancer, directly).
async fn accept_loop(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    app: Arc<App>,
    graceful: Arc<hyper_util::server::graceful::GracefulShutdown>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let caps = app.limits.connections;
    let this = Arc::new(Listener {
        tls,
        router,
        header_timeout: Duration::from_secs(app.config.server.header_timeout_secs),
        pool: Arc::new(slots::Slots::default()),
        caps,
        pace: app.limits.body,
        balancers: app.config.server.proxy_from.clone(),
        headers: Arc::new(tokio::sync::Semaphore::new(caps.total)),
        refused: crate::throttle::Throttle::new(),
    });
    loop {
        let (tcp, remote) = tokio::select! {
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
        let from_balancer = this.balancers.iter().any(|b| b.contains(remote.ip()));
        // Directly: without balancers, and from this host itself when it is
        // not one of them (health checks, a local `/metrics` scrape).
        if this.balancers.is_empty() || (!from_balancer && remote.ip().is_loopback()) {
            let addr = address::ClientAddr::of(remote.ip());
            if let Some(slot) = this.admit(addr) {
                let (this, watcher) = (Arc::clone(&this), graceful.watcher());
                tokio::spawn(async move { this.serve(tcp, addr, slot, watcher).await });
            }
        } else if from_balancer {
            tokio::spawn(Arc::clone(&this).relayed(tcp, remote.ip(), graceful.watcher()));
        } else {
            this.refused(remote.ip(), format_args!("not a balancer of [server] proxy_from"));
        }
    }
}

/// Files the process may need open: per listener, its connection slots and
/// as many balancer connections being read; and a margin for the store, the
/// token, logs and outgoing connections (TSA, CRLs, PostgreSQL).
fn files_needed(limits: &crate::config::LimitsConfig) -> u64 {
    4 * limits.connections as u64 + 512
}

/// Raises the soft limit on open files towards what the connection slots
/// need (a listener that runs out of descriptors refuses newcomers before
/// it is full, and then closes no idle connection for them), and says so
/// when the hard limit is too low.
fn open_files(limits: &crate::config::LimitsConfig) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let need = files_needed(limits);
    let now = getrlimit(Resource::Nofile);
    let (current, maximum) = (now.current.unwrap_or(u64::MAX), now.maximum.unwrap_or(u64::MAX));
    if current >= need {
        return;
    }
    let raised = need.min(maximum);
    if let Err(e) = setrlimit(Resource::Nofile, Rlimit { current: Some(raised), maximum: now.maximum }) {
        tracing::warn!("cannot raise the open-file limit from {current} to {raised}: {e}");
        return;
    }
    if raised < need {
        tracing::warn!(
            "the process may open {raised} files (its hard limit), fewer than the {need} that [limits] connections \
             ({}) needs: raise LimitNOFILE (systemd) or ulimit -Hn, or lower [limits] connections",
            limits.connections
        );
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
pub fn serve(config: Config, demo_mode: bool) -> Result<()> {
    // Before any thread starts: the demo's token and database (which exports
    // SoftHSM's configuration once it exists), or the configuration alone.
    if demo_mode {
        crate::setup::init_token(&config)?;
    }
    config.export_softhsm_conf();
    open_files(&config.limits);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(Error::internal)?;
    runtime.block_on(async move {
        // The ports first: a start that cannot listen changes nothing (the
        // demo set-up replaces the demo client and its sessions).
        let listeners = Listeners::bind(&config).await?;
        let app = App::build(config, demo_mode).await?;
        let server = Server::on(app, listeners);
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

#[cfg(test)]
mod tests {
    #[test]
    fn hsts_for_names_not_for_localhost_or_addresses() {
        for (url, hsts) in [
            ("https://inkan.example.jp", true),
            ("https://inkan.example.jp:8443/base", true),
            ("https://LOCALHOST:8443", false),
            ("https://app.localhost", false),
            ("https://127.0.0.1:8443", false),
            ("https://[::1]:8443", false),
            ("https://192.0.2.10", false),
        ] {
            assert_eq!(super::sends_hsts(url), hsts, "{url}");
        }
    }
}
