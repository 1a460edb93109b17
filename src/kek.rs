//! Key-encryption keys (KEKs) over the whole store: which keys each KEK
//! wraps (`inkan kek status`), and moving every wrapped key to a newer
//! trusted KEK (`inkan kek rotate`).
//!
//! A rotation walks every key record in the store's order, a page at a time:
//! each wrapped key not yet under the target KEK is wrapped again by the
//! token ([`Keystore::rewrap`]: MAC checked, unwrapped, wrapped under the
//! target, MACed again) on `workers` threads, and the page's new references
//! are written in one transaction with one audit row, each only if the record
//! still holds the reference that was read (a record changed meanwhile is
//! read again by the next pass). A kill loses at most the page in flight;
//! the next run finds those keys still under the old KEK and moves them.
//! Signing is never stopped: old and new references both work while both
//! KEKs are in the token.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::audit::{self, Event};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::keys;
use crate::seam::Transactions;
use crate::users::{KeyRecord, UsersTx};
use inkan_keystore::{KekKind, KeyRef, Keystore};

/// Key records read per page.
pub const PAGE: usize = 256;

/// One KEK of the token and the stored keys it wraps.
#[derive(Clone, Debug, Serialize)]
pub struct KekUse {
    /// Its index (`CKA_ID inkan-kek-<index>`).
    pub index: u32,
    /// `strict` or `trusted`.
    pub kind: &'static str,
    /// Whether its MAC key is in the token.
    pub has_mac_key: bool,
    /// Stored keys wrapped under it.
    pub keys: usize,
}

/// What `inkan kek status` shows.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    /// The token's KEKs, oldest first; new keys go under the last.
    pub keks: Vec<KekUse>,
    /// Keys kept as token objects (no KEK).
    pub object_keys: usize,
    /// Wrapped keys naming a KEK the token does not hold, by index (they
    /// cannot sign: a KEK destroyed, or a record altered).
    pub missing_kek: BTreeMap<u32, usize>,
}

impl Status {
    /// The newest KEK, if any.
    pub fn newest(&self) -> Option<&KekUse> {
        self.keks.last()
    }

    /// Wrapped keys under an older trusted KEK than `to`: what a rotation to
    /// `to` still has to move.
    pub fn movable_to(&self, to: u32) -> usize {
        self.keks.iter().filter(|k| k.index < to && k.kind == KekKind::Trusted.as_str()).map(|k| k.keys).sum()
    }

    /// Wrapped keys under a strict KEK older than `to`: no rotation moves them.
    pub fn stuck_below(&self, to: u32) -> usize {
        self.keks.iter().filter(|k| k.index < to && k.kind == KekKind::Strict.as_str()).map(|k| k.keys).sum()
    }
}

/// Reads every key record, a page at a time, and counts them by KEK.
pub async fn status<T: UsersTx + ?Sized>(store: &dyn Transactions<T>, keystore: &Arc<Keystore>) -> Result<Status> {
    let ks = Arc::clone(keystore);
    let keks = tokio::task::spawn_blocking(move || ks.keks()).await.map_err(Error::internal)??;
    let mut by_index: BTreeMap<u32, usize> = BTreeMap::new();
    let mut status = Status::default();
    walk(store, |page| {
        for record in page {
            match keys::key_ref(record).kek_index() {
                Some(index) => *by_index.entry(index).or_default() += 1,
                None => status.object_keys += 1,
            }
        }
    })
    .await?;
    status.keks = keks
        .iter()
        .map(|k| KekUse {
            index: k.index,
            kind: k.kind.as_str(),
            has_mac_key: k.has_mac_key,
            keys: by_index.remove(&k.index).unwrap_or(0),
        })
        .collect();
    status.missing_kek = by_index;
    Ok(status)
}

/// Calls `f` with every page of key records, in the store's order.
async fn walk<T: UsersTx + ?Sized>(store: &dyn Transactions<T>, mut f: impl FnMut(&[KeyRecord])) -> Result<()> {
    let mut after: Option<(String, i64)> = None;
    loop {
        let page = {
            let mut tx = store.read().await?;
            tx.keys_after(after.as_ref().map(|(u, g)| (u.as_str(), *g)), PAGE).await?
        };
        let Some(last) = page.last() else { return Ok(()) };
        after = Some((last.user_id.clone(), last.generation));
        f(&page);
    }
}

/// A key a rotation could not move.
#[derive(Clone, Debug, Serialize)]
pub struct Unmoved {
    /// Its user.
    pub user_id: String,
    /// Its generation.
    pub generation: i64,
    /// Why, and what to do.
    pub error: String,
}

/// What [`rewrap_all`] did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Rewrapped {
    /// The KEK every key was moved to.
    pub to: u32,
    /// Keys wrapped again now.
    pub moved: usize,
    /// Wrapped keys under the target (or a newer KEK) already, and object keys.
    pub unchanged: usize,
    /// Keys that could not be moved, and why.
    pub failed: Vec<Unmoved>,
    /// Keys moved per second.
    pub keys_per_second: f64,
}

/// Moves every wrapped key not under KEK `to` there (see the module's
/// documentation); `progress` is told of each key done. Passes over the
/// store are repeated while keys changed under it (at most three).
pub async fn rewrap_all<T: UsersTx + ?Sized>(
    store: &dyn Transactions<T>,
    keystore: &Arc<Keystore>,
    clock: &dyn Clock,
    actor: &str,
    to: u32,
    workers: usize,
    progress: &mut (dyn FnMut(usize) + Send),
) -> Result<Rewrapped> {
    let started = std::time::Instant::now();
    let mut done = Rewrapped { to, ..Default::default() };
    // Records per page and transaction. Test hook: INKAN_DANGER_BULK_CHUNK.
    let page_size = std::env::var("INKAN_DANGER_BULK_CHUNK").ok().and_then(|c| c.parse().ok()).unwrap_or(PAGE).max(1);
    // Keys that failed once are not tried again by a later pass.
    let mut failed: std::collections::HashSet<(String, i64)> = std::collections::HashSet::new();
    for pass in 0..3 {
        let mut changed = 0;
        let mut after: Option<(String, i64)> = None;
        loop {
            let page = {
                let mut tx = store.read().await?;
                tx.keys_after(after.as_ref().map(|(u, g)| (u.as_str(), *g)), page_size).await?
            };
            let Some(last) = page.last() else { break };
            after = Some((last.user_id.clone(), last.generation));
            let (todo, already): (Vec<KeyRecord>, Vec<KeyRecord>) = page
                .into_iter()
                .filter(|r| !failed.contains(&(r.user_id.clone(), r.generation)))
                .partition(|r| keys::key_ref(r).kek_index().is_some_and(|index| index < to));
            if pass == 0 {
                done.unchanged += already.len();
            }
            if todo.is_empty() {
                continue;
            }
            let outcomes = rewrap_page(keystore, todo, to, workers).await?;
            let before = done.failed.len();
            changed += record_page(store, clock, actor, to, outcomes, &mut done).await?;
            failed.extend(done.failed[before..].iter().map(|f| (f.user_id.clone(), f.generation)));
            progress(done.moved + done.failed.len());
            crate::crash::point(&format!("kek-rotate-after-{}", done.moved));
        }
        if changed == 0 || pass == 2 {
            break;
        }
        tracing::info!("kek rotate: {changed} key(s) changed during the pass, reading them again");
    }
    let seconds = started.elapsed().as_secs_f64();
    done.keys_per_second = if seconds > 0.0 { done.moved as f64 / seconds } else { 0.0 };
    Ok(done)
}

type Outcome = (KeyRecord, std::result::Result<KeyRef, inkan_keystore::Error>);

/// The token's work for one page, on `workers` blocking threads.
async fn rewrap_page(keystore: &Arc<Keystore>, todo: Vec<KeyRecord>, to: u32, workers: usize) -> Result<Vec<Outcome>> {
    let workers = workers.max(1);
    let mut lanes: Vec<Vec<KeyRecord>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, record) in todo.into_iter().enumerate() {
        lanes[i % workers].push(record);
    }
    let tasks: Vec<_> = lanes
        .into_iter()
        .map(|lane| {
            let ks = Arc::clone(keystore);
            tokio::task::spawn_blocking(move || -> Vec<Outcome> {
                lane.into_iter()
                    .map(|record| {
                        let moved = ks.rewrap(&keys::key_ref(&record), to);
                        (record, moved)
                    })
                    .collect()
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(task.await.map_err(Error::internal)?);
    }
    Ok(outcomes)
}

/// Writes one page's new references and its audit rows in one transaction;
/// returns how many records had changed meanwhile (left for the next pass).
async fn record_page<T: UsersTx + ?Sized>(
    store: &dyn Transactions<T>,
    clock: &dyn Clock,
    actor: &str,
    to: u32,
    outcomes: Vec<Outcome>,
    done: &mut Rewrapped,
) -> Result<usize> {
    let now = clock.now_ms();
    let mut tx = store.write().await?;
    let (mut moved, mut changed) = (0, 0);
    let mut refused: Vec<(String, i64, String)> = Vec::new();
    let mut failed = Vec::new();
    for (record, outcome) in outcomes {
        match outcome {
            Ok(key) => {
                if tx.replace_key_ref(&record.user_id, record.generation, &record.token_id, key.stored()).await? {
                    moved += 1;
                } else {
                    changed += 1;
                }
            }
            Err(e) => {
                if matches!(e, inkan_keystore::Error::KeyRefused { .. }) {
                    tracing::error!(user = %record.user_id, generation = record.generation, "kek rotate: {e}");
                    refused.push((record.user_id.clone(), record.generation, e.to_string()));
                }
                failed.push(Unmoved { user_id: record.user_id, generation: record.generation, error: e.to_string() });
            }
        }
    }
    let detail = serde_json::json!({ "to": to, "keys": moved });
    let mut events = Vec::new();
    if moved > 0 {
        events.push(Event { outcome: "ok", detail, ..Event::new(actor, crate::audit::Name::KekRewrap) });
    }
    for (user_id, generation, reason) in &refused {
        events.push(Event {
            user_id: Some(user_id.into()),
            generation: Some(*generation),
            outcome: "refused",
            detail: serde_json::json!({ "reason": reason, "during": "kek rotate" }),
            ..Event::new(actor, crate::audit::Name::KeyRefused)
        });
    }
    if !events.is_empty() {
        audit::append(&mut *tx, now, &events).await?;
    }
    tx.commit().await?;
    done.moved += moved;
    done.failed.extend(failed);
    Ok(changed)
}

/// Records a KEK made now (`kek.create` in the audit log).
pub async fn record_created<T: UsersTx + ?Sized>(
    store: &dyn Transactions<T>,
    clock: &dyn Clock,
    actor: &str,
    index: u32,
    kind: KekKind,
) -> Result<()> {
    let mut tx = store.write().await?;
    let detail = serde_json::json!({ "index": index, "kind": kind.as_str() });
    audit::append(
        &mut *tx,
        clock.now_ms(),
        &[Event { outcome: "ok", detail, ..Event::new(actor, crate::audit::Name::KekCreate) }],
    )
    .await?;
    Ok(tx.commit().await?)
}
