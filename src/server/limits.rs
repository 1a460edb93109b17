//! What one client may make the server do or hold (`[limits]`): requests a
//! minute per client address and per user ID (429 with `Retry-After`), the
//! caps on open connections ([`super::slots`]), and the pace of request bodies.
//!
//! Rate limits are GCRA buckets (one timestamp per key) in a table of fixed
//! size: when it is full of live keys, a new key shares one bucket with every
//! other newcomer, so a client spreading requests over many addresses is
//! limited as one client, and the table never grows past its size.
//! No crate is used for this: `governor`'s keyed limiter keeps every key until
//! it is told to forget them, which is the unbounded table this module avoids.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hash, RandomState};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use crate::config::LimitsConfig;

use super::error::ApiError;

/// Keys a rate limiter's table holds at most (about 4 MiB each).
pub const MAX_KEYS: usize = 100_000;

const SHARDS: usize = 16;

/// Refused for now: retry after this long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limited {
    /// When a retry can succeed.
    pub retry_after: Duration,
}

impl Limited {
    /// Whole seconds for `Retry-After` (at least 1).
    pub fn secs(&self) -> u64 {
        (self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0)).max(1)
    }
}

#[derive(Default)]
struct Shard {
    /// Key → theoretical arrival time (µs since the limiter started).
    tat: HashMap<u64, u64>,
    /// When expired keys were last swept out (µs).
    swept_at: Option<u64>,
}

/// Keyed GCRA rate limiter with a bounded table.
pub struct RateLimiter {
    start: Instant,
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
    /// µs between requests at the sustained rate; 0 = no limit.
    interval: u64,
    /// How far ahead of now a key's arrival time may run (the burst).
    tolerance: u64,
    shard_keys: usize,
}

/// The bucket every key shares once a shard is full of live keys.
const NEWCOMERS: u64 = u64::MAX;

impl RateLimiter {
    /// `per_minute` sustained, `burst` at once, at most `max_keys` keys
    /// (`per_minute` 0: never refuses).
    pub fn new(per_minute: u32, burst: u32, max_keys: usize) -> RateLimiter {
        let interval = if per_minute == 0 { 0 } else { 60_000_000 / u64::from(per_minute) };
        RateLimiter {
            start: Instant::now(),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            interval,
            tolerance: interval * u64::from(burst.saturating_sub(1)),
            shard_keys: (max_keys / SHARDS).max(1),
        }
    }

    /// Counts one request of `key`, or says when it may come.
    pub fn check(&self, key: impl Hash) -> Result<(), Limited> {
        self.check_at(key, self.start.elapsed().as_micros() as u64)
    }

    fn check_at(&self, key: impl Hash, now: u64) -> Result<(), Limited> {
        if self.interval == 0 {
            return Ok(());
        }
        let mut key = self.hasher.hash_one(key);
        if key == NEWCOMERS {
            key -= 1;
        }
        let mut shard = self.shards[(key % SHARDS as u64) as usize].lock().unwrap_or_else(|p| p.into_inner());
        if !shard.tat.contains_key(&key) && shard.tat.len() >= self.shard_keys {
            // A key whose arrival time has passed is as good as absent.
            // Sweep at most once a second: a full table of live keys would
            // otherwise be scanned on every request.
            if shard.swept_at.is_none_or(|at| now.saturating_sub(at) >= 1_000_000) {
                shard.tat.retain(|_, tat| *tat > now);
                shard.swept_at = Some(now);
            }
            if shard.tat.len() >= self.shard_keys {
                key = NEWCOMERS;
            }
        }
        let tat = shard.tat.get(&key).copied().unwrap_or(now).max(now);
        if tat - now > self.tolerance {
            return Err(Limited { retry_after: Duration::from_micros(tat - now - self.tolerance) });
        }
        shard.tat.insert(key, tat + self.interval);
        Ok(())
    }

    /// Gives back one request of `key` that [`RateLimiter::check`] counted
    /// (it was refused and wrote nothing).
    pub fn refund(&self, key: impl Hash) {
        if self.interval == 0 {
            return;
        }
        let now = self.start.elapsed().as_micros() as u64;
        let mut key = self.hasher.hash_one(key);
        if key == NEWCOMERS {
            key -= 1;
        }
        let mut shard = self.shards[(key % SHARDS as u64) as usize].lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tat) = shard.tat.get_mut(&key) {
            *tat = tat.saturating_sub(self.interval).max(now);
        }
    }

    /// Whether `key` would be refused now, without counting a request.
    pub fn blocked(&self, key: impl Hash) -> Option<Limited> {
        if self.interval == 0 {
            return None;
        }
        let now = self.start.elapsed().as_micros() as u64;
        let mut key = self.hasher.hash_one(key);
        if key == NEWCOMERS {
            key -= 1;
        }
        let shard = self.shards[(key % SHARDS as u64) as usize].lock().unwrap_or_else(|p| p.into_inner());
        let tat = shard.tat.get(&key).copied()?;
        (tat > now && tat - now > self.tolerance)
            .then(|| Limited { retry_after: Duration::from_micros(tat - now - self.tolerance) })
    }

    /// Keys held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).tat.len()).sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The groups of routes anyone can call, each limited on its own per address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// `GET /oidc/authorize`.
    Authorize,
    /// `POST /oidc/token`, `/oidc/revoke`: signing systems authenticate
    /// with their secret, and one system's servers exchange the codes of all
    /// its users: only refusals count ([`Route::counts_refusals_only`]).
    Token,
    /// `POST /login/fido`, `POST /change`, `GET /pc/claim`: a QR code starts.
    QrStart,
    /// The PC's calls on a ticket it claimed (`POST /pc/begin`, `/pc/finish`,
    /// `/pc/confirm`): each writes the ticket.
    Pc,
    /// The phone's pages and calls (`/m/…`).
    Phone,
    /// `/r/<code>`: registration codes and their passwords.
    Regcode,
    /// The card listener: card login, enrollment, link.
    Card,
}

impl Route {
    /// Whether only refused requests (4xx) count against the address: a
    /// signing system's servers may exchange any number of good codes, a
    /// guesser of secrets or codes is stopped.
    pub fn counts_refusals_only(self) -> bool {
        self == Route::Token
    }

    /// Whether the group writes to the database for clients without
    /// credentials (authorize: a pending request, a row on PostgreSQL), and
    /// so has a budget for all clients together (`[limits] open_per_second`).
    pub fn writes(self) -> bool {
        matches!(self, Route::Authorize | Route::QrStart | Route::Pc | Route::Phone | Route::Regcode)
    }

    /// Whether the group answers with pages (else JSON).
    pub fn pages(self, method: &Method) -> bool {
        match self {
            Route::Token | Route::Pc => false,
            Route::Phone => method == Method::GET,
            _ => true,
        }
    }
}

/// The flows a user ID starts (limited per user ID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flow {
    /// L1: a phone login.
    PhoneLogin,
    /// D1: a phone change.
    PhoneChange,
}

/// The rate limiters and connection limits of one node.
pub struct Limits {
    /// Per client address and route group.
    pub address: RateLimiter,
    /// Per client network ([`super::address::Network`]) and route group.
    pub network: RateLimiter,
    /// Per user ID, flow and client network ([`Limits::check_user`]).
    user: RateLimiter,
    /// Per user ID and flow from all networks together: ten times that.
    user_everywhere: RateLimiter,
    /// Refused requests per client address, for the groups that count only those.
    pub refusals: RateLimiter,
    /// Per route group, all clients together ([`Route::writes`]).
    pub open: RateLimiter,
    /// Open connections per listener, per address and per network.
    pub connections: super::slots::Caps,
    /// Body pace.
    pub body: BodyPace,
    /// Bytes of enveloped documents that may be held at once.
    pub enveloped: Arc<tokio::sync::Semaphore>,
    /// Bytes of enveloped documents each auth session holds now.
    shares: Arc<Mutex<HashMap<Vec<u8>, usize>>>,
    /// What one session may hold beyond its first document: a quarter of the budget.
    share: usize,
}

/// Room held for one enveloped document, given back when dropped.
pub struct Room {
    _permit: tokio::sync::OwnedSemaphorePermit,
    shares: Arc<Mutex<HashMap<Vec<u8>, usize>>>,
    session: Vec<u8>,
    len: usize,
}

impl Drop for Room {
    fn drop(&mut self) {
        let mut shares = self.shares.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = shares.get_mut(&self.session) {
            *held = held.saturating_sub(self.len);
            if *held == 0 {
                shares.remove(&self.session);
            }
        }
    }
}

impl Limits {
    /// The limits of `[limits]`.
    pub fn new(cfg: &LimitsConfig) -> Limits {
        Limits {
            address: RateLimiter::new(cfg.per_address_per_minute, cfg.per_address_burst, MAX_KEYS),
            network: RateLimiter::new(cfg.per_network_per_minute, cfg.per_network_burst, MAX_KEYS),
            user: RateLimiter::new(cfg.per_user_per_minute, cfg.per_user_burst, MAX_KEYS),
            user_everywhere: RateLimiter::new(
                cfg.per_user_per_minute.saturating_mul(10),
                cfg.per_user_burst.saturating_mul(10),
                MAX_KEYS,
            ),
            refusals: RateLimiter::new(cfg.per_address_per_minute, cfg.per_address_burst, MAX_KEYS),
            // A handful of keys (one per group), room for each in its shard.
            open: RateLimiter::new(cfg.open_per_second.saturating_mul(60), cfg.open_per_second, SHARDS * 8),
            connections: super::slots::Caps {
                total: cfg.connections,
                per_address: cfg.connections_per_address,
                per_network: cfg.connections_per_network,
            },
            body: BodyPace { grace: Duration::from_secs(cfg.body_grace_secs), min_rate: cfg.min_body_rate.max(1) },
            enveloped: Arc::new(tokio::sync::Semaphore::new(
                cfg.enveloped_bytes.min(tokio::sync::Semaphore::MAX_PERMITS),
            )),
            shares: Default::default(),
            share: cfg.enveloped_bytes / 4,
        }
    }

    /// A QR code started for `user` in `flow` from `network`: each network
    /// has its own budget for an ID, so that a flood of starts for someone
    /// else's ID from elsewhere does not keep them from starting their own;
    /// all networks together have ten times it (what one ID can make the
    /// server write stays bounded).
    pub fn check_user(&self, flow: Flow, user: &str, network: Option<super::address::Network>) -> Result<(), Limited> {
        self.user.check((flow, user, network)).and_then(|()| self.user_everywhere.check((flow, user)))
    }

    /// Reserves room for an enveloped document of `len` bytes (its
    /// `Content-Length`, or the largest allowed when it has none) for the
    /// auth session `session` (its token hash): the document is kept in
    /// memory while it is signed. A session holds at most a quarter of the
    /// budget (always one document), so that one slow client cannot hold it
    /// all. `None` when there is no room now ([`no_room`]).
    pub fn hold_enveloped(&self, session: &[u8], len: usize) -> Option<Room> {
        let mut shares = self.shares.lock().unwrap_or_else(|p| p.into_inner());
        let held = shares.get(session).copied().unwrap_or(0);
        if held > 0 && held.saturating_add(len) > self.share {
            return None;
        }
        let permits = u32::try_from(len).unwrap_or(u32::MAX);
        let permit = Arc::clone(&self.enveloped).try_acquire_many_owned(permits).ok()?;
        shares.insert(session.to_vec(), held + len);
        Some(Room { _permit: permit, shares: Arc::clone(&self.shares), session: session.to_vec(), len })
    }
}

/// The answer when enveloped documents fill `[limits] enveloped_bytes`: 503, retry in a second.
pub fn no_room() -> Response {
    let mut resp = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "too many enveloped documents are being signed now; retry shortly, or ask for a detached signature",
    )
    .into_response();
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// The 429 answer: a page or JSON, with `Retry-After`. Both are cheap to
/// make (the page is rendered once): a flood is answered with them.
pub fn too_many(pages: bool, limited: Limited) -> Response {
    let json = (
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_requests",
        "短い時間に多くの要求がありました。しばらく待ってから、もう一度お試しください (too many requests from this address)",
    );
    refused(pages.then(super::pages::too_many), json, limited)
}

/// The 503 answer when a group of open routes has used its budget for all
/// clients together: a page or JSON, with `Retry-After` (both cheap to make).
pub fn busy(pages: bool, limited: Limited) -> Response {
    let json = (
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "ただいま混雑しています。しばらく待ってから、もう一度お試しください (too many requests from all clients together)",
    );
    refused(pages.then(super::pages::busy), json, limited)
}

/// A page, or else JSON (status, error code, what happened), with `Retry-After`.
fn refused(page: Option<Response>, json: (StatusCode, &'static str, &str), limited: Limited) -> Response {
    let mut resp = page.unwrap_or_else(|| {
        let (status, code, what) = json;
        ApiError::new(status, code, format!("{what}; retry after {} s", limited.secs())).into_response()
    });
    if let Ok(v) = HeaderValue::from_str(&limited.secs().to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// How fast a request body must come: within `grace`, anything; after it, on
/// average at least `min_rate` bytes a second since the request began.
#[derive(Clone, Copy, Debug)]
pub struct BodyPace {
    /// Time any body gets.
    pub grace: Duration,
    /// Bytes a second after it.
    pub min_rate: u64,
}

impl BodyPace {
    /// When a body that has sent `bytes` since `start` is too slow.
    fn deadline(&self, start: tokio::time::Instant, bytes: u64) -> tokio::time::Instant {
        start + self.grace + Duration::from_micros(bytes.saturating_mul(1_000_000) / self.min_rate)
    }
}

/// A body too slow for [`BodyPace`].
#[derive(Debug, thiserror::Error)]
#[error("the request body came slower than {0} bytes a second; send it faster")]
pub struct TooSlow(pub u64);

/// A request body held to a [`BodyPace`]: past its deadline the next read fails.
pub struct PacedBody<B> {
    inner: B,
    pace: BodyPace,
    start: tokio::time::Instant,
    bytes: u64,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl<B> PacedBody<B> {
    /// `inner`, paced from now.
    pub fn new(inner: B, pace: BodyPace) -> PacedBody<B> {
        let start = tokio::time::Instant::now();
        PacedBody { inner, pace, start, bytes: 0, timer: Box::pin(tokio::time::sleep_until(pace.deadline(start, 0))) }
    }
}

impl<B> HttpBody for PacedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                    let deadline = this.pace.deadline(this.start, this.bytes);
                    this.timer.as_mut().reset(deadline);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(TooSlow(this.pace.min_rate))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pc_calls_write_and_answer_json() {
        assert!(Route::Pc.writes() && !Route::Pc.pages(&Method::POST));
        assert!(Route::Phone.pages(&Method::GET) && !Route::Phone.pages(&Method::POST));
        assert!(Route::Token.counts_refusals_only() && !Route::Token.writes());
    }

    #[test]
    fn a_refund_gives_back_what_was_counted() {
        let l = RateLimiter::new(60, 2, 1000);
        for _ in 0..10 {
            assert!(l.check("a").is_ok());
            l.refund("a");
        }
        assert!(l.check("a").is_ok() && l.check("a").is_ok());
        assert!(l.check("a").is_err(), "the burst, counted");
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        // 60 a minute: one a second, 3 at once.
        let l = RateLimiter::new(60, 3, 1000);
        for _ in 0..3 {
            assert!(l.check_at("a", 0).is_ok());
        }
        let refused = l.check_at("a", 0).expect_err("fourth");
        assert_eq!(refused.retry_after, Duration::from_secs(1));
        assert_eq!(refused.secs(), 1);
        // Another key has its own bucket.
        assert!(l.check_at("b", 0).is_ok());
        // One more a second.
        assert!(l.check_at("a", 1_000_000).is_ok());
        assert!(l.check_at("a", 1_000_000).is_err());
        assert!(l.check_at("a", 2_500_000).is_ok());
    }

    #[test]
    fn a_full_table_puts_newcomers_in_one_bucket_and_never_grows() {
        let l = RateLimiter::new(60, 2, SHARDS * 4);
        for i in 0..10_000u32 {
            let _ = l.check_at(i, 0);
        }
        assert!(l.len() <= SHARDS * 5, "{}", l.len());
        // The newcomers shared buckets: most of them were refused.
        let refused = (10_000..11_000u32).filter(|i| l.check_at(*i, 0).is_err()).count();
        assert!(refused > 900, "{refused}");
        // Once their times have passed, keys are swept and newcomers get their own.
        assert!(l.check_at(20_000u32, 10_000_000).is_ok());
        assert!(l.check_at(20_000u32, 10_000_000).is_ok());
        assert!(l.len() <= SHARDS * 5);
    }

    #[test]
    fn blocked_peeks_without_counting() {
        let l = RateLimiter::new(60, 2, 1000);
        assert_eq!(l.blocked("a"), None);
        assert!(l.check("a").is_ok() && l.check("a").is_ok());
        assert!(l.blocked("a").is_some());
        assert!(l.blocked("a").is_some(), "peeking counts nothing");
        assert_eq!(l.blocked("b"), None);
    }

    #[test]
    fn one_session_holds_a_quarter_of_the_enveloped_budget_at_most() {
        let cfg = LimitsConfig { enveloped_bytes: 4000, ..LimitsConfig::default() };
        let limits = Limits::new(&cfg);
        let first = limits.hold_enveloped(b"a", 900).expect("the first document always");
        assert!(limits.hold_enveloped(b"a", 200).is_none(), "beyond a's quarter");
        let other = limits.hold_enveloped(b"b", 1000).expect("b has its own share");
        drop(first);
        assert!(limits.hold_enveloped(b"a", 1000).is_some(), "given back");
        drop(other);
        assert!(limits.shares.lock().expect("lock").is_empty(), "no share left behind");
    }

    #[test]
    fn no_rate_no_limit() {
        let l = RateLimiter::new(0, 0, 10);
        for _ in 0..1000 {
            assert!(l.check_at("a", 0).is_ok());
        }
        assert!(l.is_empty());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let at = |ms| Limited { retry_after: Duration::from_millis(ms) }.secs();
        assert_eq!((at(1), at(999), at(1000), at(1001), at(2000), at(0)), (1, 1, 1, 2, 2, 1));
    }
}
