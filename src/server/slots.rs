//! Connection slots of one listener (`[limits] connections`): what bare
//! connections can make the server hold, and who gets a slot when it is full.
//!
//! A listener that refuses newcomers once full is held by anyone who opens
//! enough connections and sends nothing. Here a newcomer is never refused for
//! the listener being full while an unproven connection sits idle, in its
//! TLS handshake, or on a request that has run longer than [`BUSY_GRACE`]
//! (a slow body): one such connection is closed for it. Which one: first
//! those that have not sent a ClientHello, then those idle after a request,
//! then those in a handshake (on the card listener, a user choosing a card
//! and typing a PIN); of these, one of the network holding the most slots;
//! of its, the oldest. A connection is
//! *proven* once a request on it was authenticated (a bearer token that named
//! a live session, a card certificate whose chain validated); proven ones are
//! never closed for a newcomer, and a quarter of the slots is kept for them
//! (unproven connections hold at most three quarters). A connection that is
//! running a request (within the grace) is never closed either. As the
//! listener fills, the ClientHello gets less time: at most half full, the
//! whole header timeout; at full, a tenth of it (the rest of the handshake
//! gets the whole timeout). Caps per address (IPv6: /64) and per network (IPv4
//! /24, IPv6 /48) refuse the newcomer itself, so that one network cannot push
//! everyone else out.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Body as HttpBody;
use tokio::sync::Notify;

use super::address::{ClientAddr, Network};

/// The caps of one listener.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    /// Connections in all.
    pub total: usize,
    /// Connections per client address.
    pub per_address: usize,
    /// Connections per network ([`Network`]).
    pub per_network: usize,
}

impl Caps {
    /// Slots unproven connections may hold: three quarters (at least one).
    fn unproven(&self) -> usize {
        (self.total - self.total / 4).max(1)
    }
}

/// Why a newcomer got no slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its address holds `per_address` connections.
    Address,
    /// Its network holds `per_network` connections.
    Network,
    /// Every slot is proven or running a request.
    Full,
}

/// What the pool keeps of one connection.
struct Entry {
    addr: ClientAddr,
    network: Network,
    shared: Arc<Shared>,
}

/// How long a request on an unproven connection keeps it from being closed
/// for a newcomer: a form on an open route arrives well within it; a body
/// sent a byte at a time does not.
pub const BUSY_GRACE: Duration = Duration::from_secs(5);

/// Where a connection stands ([`Slot::stage`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Accepted; no ClientHello yet.
    Hello = 0,
    /// In its TLS handshake, after the ClientHello.
    Handshake = 1,
    /// Serving requests.
    Serving = 2,
}

/// What the connection's task and the pool share.
struct Shared {
    /// Requests running on it (none: idle, or still in its TLS handshake).
    busy: AtomicUsize,
    /// Since when (ms after the pool began) a request has run.
    busy_since: std::sync::atomic::AtomicU64,
    /// [`Stage`].
    stage: std::sync::atomic::AtomicU8,
    /// A request on it was authenticated (the pool's record is the truth;
    /// this spares every later request the pool's lock).
    proven: std::sync::atomic::AtomicBool,
    /// Told to close.
    evict: Notify,
}

#[derive(Default)]
struct Open {
    /// Admission number → connection; the oldest first.
    entries: BTreeMap<u64, Entry>,
    /// Admission numbers of the proven connections.
    proven: std::collections::HashSet<u64>,
    by_addr: HashMap<ClientAddr, usize>,
    by_network: HashMap<Network, usize>,
    next: u64,
}

impl Open {
    /// Forgets connection `id`; false if it was gone already.
    fn remove(&mut self, id: u64) -> bool {
        let Some(entry) = self.entries.remove(&id) else { return false };
        self.proven.remove(&id);
        decrement(&mut self.by_addr, entry.addr);
        decrement(&mut self.by_network, entry.network);
        true
    }

    /// The connection to close for a newcomer, if any may be ([`Slots`]
    /// says which): one pass for the lowest class and, in it, the busiest
    /// network; a second for that network's oldest.
    fn evictable(&self, now_ms: u64) -> Option<u64> {
        let class = |id: &u64, e: &Entry| -> Option<u8> {
            if self.proven.contains(id) {
                return None;
            }
            let busy = e.shared.busy.load(Ordering::Acquire) > 0;
            if busy
                && now_ms.saturating_sub(e.shared.busy_since.load(Ordering::Acquire)) < BUSY_GRACE.as_millis() as u64
            {
                return None;
            }
            Some(match e.shared.stage.load(Ordering::Acquire) {
                0 => 0,
                2 => 1,
                _ => 2,
            })
        };
        let slots_of = |e: &Entry| self.by_network.get(&e.network).copied().unwrap_or(0);
        let mut best: Option<(u8, usize)> = None;
        for (id, e) in &self.entries {
            if let Some(c) = class(id, e) {
                let key = (c, slots_of(e));
                best = Some(match best {
                    Some((bc, bn)) if bc < c || (bc == c && bn >= key.1) => (bc, bn),
                    _ => key,
                });
            }
        }
        let (c, n) = best?;
        self.entries.iter().find(|(id, e)| class(id, e) == Some(c) && slots_of(e) == n).map(|(id, _)| *id)
    }
}

fn decrement<K: Eq + std::hash::Hash>(map: &mut HashMap<K, usize>, key: K) {
    if let Some(n) = map.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            map.remove(&key);
        }
    }
}

/// The open connections of one listener.
pub struct Slots {
    open: Mutex<Open>,
    /// When the pool began (request times are ms after it).
    began: std::time::Instant,
}

impl Default for Slots {
    fn default() -> Slots {
        Slots { open: Mutex::new(Open::default()), began: std::time::Instant::now() }
    }
}

/// One connection's slot, given back when dropped.
pub struct Slot {
    pool: Arc<Slots>,
    id: u64,
    shared: Arc<Shared>,
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a new connection from `addr`, closing an unproven one for
    /// it (which one: see the module) if the listener, or its unproven share,
    /// is full.
    pub fn admit(self: &Arc<Self>, addr: ClientAddr, caps: Caps) -> Result<Slot, Refused> {
        let network = Network::of(addr);
        let mut open = self.lock();
        if open.by_addr.get(&addr).copied().unwrap_or(0) >= caps.per_address {
            return Err(Refused::Address);
        }
        if open.by_network.get(&network).copied().unwrap_or(0) >= caps.per_network {
            return Err(Refused::Network);
        }
        let unproven = open.entries.len() - open.proven.len();
        if open.entries.len() >= caps.total || unproven >= caps.unproven() {
            let now_ms = self.began.elapsed().as_millis() as u64;
            let Some(victim) = open.evictable(now_ms) else { return Err(Refused::Full) };
            if let Some(entry) = open.entries.get(&victim) {
                entry.shared.evict.notify_one();
            }
            open.remove(victim);
        }
        let shared = Arc::new(Shared {
            busy: AtomicUsize::new(0),
            busy_since: std::sync::atomic::AtomicU64::new(0),
            stage: std::sync::atomic::AtomicU8::new(Stage::Hello as u8),
            proven: std::sync::atomic::AtomicBool::new(false),
            evict: Notify::new(),
        });
        let id = open.next;
        open.next += 1;
        open.entries.insert(id, Entry { addr, network, shared: Arc::clone(&shared) });
        *open.by_addr.entry(addr).or_default() += 1;
        *open.by_network.entry(network).or_default() += 1;
        Ok(Slot { pool: Arc::clone(self), id, shared })
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.lock().entries.len()
    }

    /// How long a ClientHello may take to arrive now: the whole `timeout`
    /// while the listener is at most half full, down to a tenth of it when full.
    pub fn hello_deadline(&self, timeout: Duration, caps: Caps) -> Duration {
        let open = self.lock().entries.len().min(caps.total);
        let half = caps.total / 2;
        if open <= half {
            return timeout;
        }
        // Linear from the whole timeout at half full to a tenth at full.
        let over = (open - half) as f64 / (caps.total - half).max(1) as f64;
        timeout.mul_f64(1.0 - 0.9 * over)
    }
}

impl Slot {
    /// Resolves when the pool closes this connection for a newcomer.
    pub async fn evicted(&self) {
        self.shared.evict.notified().await;
    }

    /// A request on this connection was authenticated: it keeps its slot.
    pub fn prove(&self) {
        if self.shared.proven.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut open = self.pool.lock();
        if open.entries.contains_key(&self.id) {
            open.proven.insert(self.id);
        }
    }

    /// Marks a request running until the guard is dropped (with the answer's body).
    pub fn busy(&self) -> Busy {
        if self.shared.busy.fetch_add(1, Ordering::AcqRel) == 0 {
            let now_ms = self.pool.began.elapsed().as_millis() as u64;
            self.shared.busy_since.store(now_ms, Ordering::Release);
        }
        Busy(Arc::clone(&self.shared))
    }

    /// The connection reached `stage`.
    pub fn stage(&self, stage: Stage) {
        self.shared.stage.store(stage as u8, Ordering::Release);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.pool.lock().remove(self.id);
    }
}

/// A request running on a connection ([`Slot::busy`]).
pub struct Busy(Arc<Shared>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

tokio::task_local! {
    /// The slot of the connection whose request this task is answering.
    static CONNECTION: Arc<Slot>;
}

/// Runs `answer` (one request's answer) as a request of `slot`'s connection.
pub async fn on_connection<F: std::future::Future>(slot: Arc<Slot>, answer: F) -> F::Output {
    CONNECTION.scope(slot, answer).await
}

/// The request being answered was authenticated: its connection keeps its
/// slot from now on. Outside a connection (tests, the CLI) it does nothing.
pub fn prove_connection() {
    let _ = CONNECTION.try_with(|slot| slot.prove());
}

/// An answer's body that keeps its request counted as running until it is sent.
pub struct Sending<B> {
    inner: B,
    _busy: Busy,
}

impl<B> Sending<B> {
    /// `inner`, with the request running until it is dropped.
    pub fn new(inner: B, busy: Busy) -> Sending<B> {
        Sending { inner, _busy: busy }
    }
}

impl<B: HttpBody + Unpin> HttpBody for Sending<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(total: usize) -> Caps {
        Caps { total, per_address: 100, per_network: 100 }
    }

    fn addr(s: &str) -> ClientAddr {
        ClientAddr::of(s.parse().expect("ip"))
    }

    #[test]
    fn a_full_listener_closes_the_oldest_unproven_idle_connection_for_a_newcomer() {
        let pool = Arc::new(Slots::default());
        let a = addr("192.0.2.1");
        let first = pool.admit(a, caps(4)).expect("1");
        let second = pool.admit(a, caps(4)).expect("2");
        let third = pool.admit(a, caps(4)).expect("3");
        // Three of four slots is the unproven share: the fourth closes the first.
        let fourth = pool.admit(a, caps(4)).expect("4");
        assert_eq!(pool.open(), 3);
        assert!(first.shared.evict.notified().now_or_never_is_ready());
        // A proven connection and one running a request are never closed.
        second.prove();
        let _running = third.busy();
        let fifth = pool.admit(a, caps(4)).expect("5");
        assert_eq!(pool.open(), 4);
        let sixth = pool.admit(a, caps(4)).expect("6");
        assert!(fourth.shared.evict.notified().now_or_never_is_ready());
        assert!(!second.shared.evict.notified().now_or_never_is_ready());
        assert!(!third.shared.evict.notified().now_or_never_is_ready());
        // Full of proven and running connections: a newcomer is refused.
        fifth.prove();
        let _also_running = sixth.busy();
        assert_eq!(pool.open(), 4);
        assert_eq!(pool.admit(a, caps(4)).err(), Some(Refused::Full));
        // Slots come back with their connections, once.
        drop(first);
        drop(fourth);
        assert_eq!(pool.open(), 4);
        drop(sixth);
        assert_eq!(pool.open(), 3);
        assert!(pool.admit(a, caps(4)).is_ok());
    }

    #[test]
    fn bare_connections_go_first_then_idle_ones_then_handshakes_and_the_busiest_network_first() {
        let pool = Arc::new(Slots::default());
        let caps = Caps { total: 4, per_address: 100, per_network: 100 };
        let handshaking = pool.admit(addr("192.0.2.1"), caps).expect("1");
        handshaking.stage(Stage::Handshake);
        let idle = pool.admit(addr("192.0.2.2"), caps).expect("2");
        idle.stage(Stage::Serving);
        let bare = pool.admit(addr("198.51.100.1"), caps).expect("3");
        // Full (three of four unproven): the bare one goes, though newest.
        let fourth = pool.admit(addr("198.51.100.2"), caps).expect("4");
        assert!(bare.shared.evict.notified().now_or_never_is_ready());
        fourth.stage(Stage::Serving);
        // Then an idle one; of two, the one of the network holding the most
        // (192.0.2.0/24: two slots), not the oldest overall.
        let _fifth = pool.admit(addr("203.0.113.1"), caps).expect("5");
        assert!(idle.shared.evict.notified().now_or_never_is_ready());
        assert!(!fourth.shared.evict.notified().now_or_never_is_ready());
        assert!(!handshaking.shared.evict.notified().now_or_never_is_ready());
    }

    #[test]
    fn addresses_and_networks_have_their_own_caps() {
        let pool = Arc::new(Slots::default());
        let caps = Caps { total: 100, per_address: 2, per_network: 3 };
        let held: Vec<Slot> = ["192.0.2.1", "192.0.2.1", "192.0.2.2"]
            .iter()
            .map(|a| pool.admit(addr(a), caps).expect("admitted"))
            .collect();
        assert_eq!(pool.admit(addr("192.0.2.1"), caps).err(), Some(Refused::Address));
        assert_eq!(pool.admit(addr("192.0.2.3"), caps).err(), Some(Refused::Network));
        assert!(pool.admit(addr("192.0.3.1"), caps).is_ok());
        drop(held);
        assert!(pool.admit(addr("192.0.2.3"), caps).is_ok());
    }

    #[test]
    fn the_handshake_gets_less_time_as_the_listener_fills() {
        let pool = Arc::new(Slots::default());
        let caps = caps(10);
        let t = Duration::from_secs(10);
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(pool.admit(addr("192.0.2.1"), caps).expect("slot"));
        }
        assert_eq!(pool.hello_deadline(t, caps), t);
        for _ in 0..2 {
            held.push(pool.admit(addr("192.0.2.1"), caps).expect("slot"));
        }
        let seven = pool.hello_deadline(t, caps);
        assert!(seven < t && seven > Duration::from_secs(1), "{seven:?}");
        for s in &held {
            s.prove();
        }
        for _ in 0..3 {
            held.push(pool.admit(addr("192.0.2.1"), caps).expect("slot"));
        }
        assert_eq!(pool.hello_deadline(t, caps), Duration::from_secs(1));
    }

    trait ReadyNow {
        fn now_or_never_is_ready(self) -> bool;
    }

    impl<F: std::future::Future> ReadyNow for F {
        /// Whether the future is ready at its first poll.
        fn now_or_never_is_ready(self) -> bool {
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            let mut fut = std::pin::pin!(self);
            fut.as_mut().poll(&mut cx).is_ready()
        }
    }
}
