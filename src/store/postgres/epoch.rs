//! The auth epoch on PostgreSQL: one version row (`auth_epoch`), bumped with a
//! `NOTIFY` by every change that may affect a live auth session: by triggers
//! in the changing transaction itself (sessions, users' status, keys; see
//! migration 2), so that a change is announced exactly when it commits, and
//! by [`Invalidation::bump`] after the domain's own changes.
//!
//! Each node keeps a connection that `LISTEN`s, so a bump anywhere reaches
//! every node's session cache in about a millisecond. Notifications carry no
//! guarantee of their own (a connection may die silently), so the same
//! connection also reads the row every [`POLL`], and a node trusts what it
//! knows only for [`STAMP_VALID`] after the start of the last read that
//! answered: a change committed anywhere is seen by every node's next request
//! after at most that long, and while the database cannot be read no session
//! is served from a cache at all.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deadpool_postgres::Pool;
use tokio_postgres::Client;

use super::connect::Connect;
use crate::auth::sessions::{Invalidation, Stamp};
use crate::config::StoreConfig;
use crate::seam::StoreError;

/// The channel of the notifications.
const CHANNEL: &str = "inkan_auth_epoch";
/// How often each node reads the version row.
pub const POLL: Duration = Duration::from_millis(200);
/// How long a node trusts the version it read last: the bound within which a
/// change on one node reaches every other.
pub const STAMP_VALID: Duration = Duration::from_millis(900);
/// The longest a read of the row may take before the connection is replaced.
const READ_TIMEOUT: Duration = Duration::from_millis(600);

/// Bumps the version and notifies, in one statement.
const BUMP: &str = "WITH v AS (UPDATE auth_epoch SET version = version + 1 WHERE id = 1 RETURNING version)
                    SELECT version, pg_notify('inkan_auth_epoch', version::text) FROM v";

/// What a node knows of the version.
#[derive(Debug, Default)]
struct Known {
    version: i64,
    stamp: Option<Stamp>,
    /// When the last answered read of the row began.
    confirmed: Option<Instant>,
}

/// A node's view of the auth epoch, kept current by a listener task.
#[derive(Debug)]
pub struct PgEpoch {
    known: Mutex<Known>,
    pool: Pool,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl PgEpoch {
    /// Starts listening (needs a tokio runtime).
    pub fn start(connect: Connect, pool: Pool) -> Arc<PgEpoch> {
        let epoch = Arc::new(PgEpoch { known: Mutex::default(), pool, task: Mutex::new(None) });
        let task = tokio::spawn(listen(connect, Arc::downgrade(&epoch)));
        *epoch.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        epoch
    }

    /// Stops the listener.
    pub fn stop(&self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }

    /// Notes a version seen; `read_at` when it came from a read of the row
    /// begun then (a notification proves nothing about earlier changes).
    fn saw(&self, version: i64, read_at: Option<Instant>) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if version > known.version || known.stamp.is_none() {
            known.version = known.version.max(version);
            known.stamp = Some(Stamp(known.version.to_string().into()));
        }
        if let Some(at) = read_at {
            known.confirmed = Some(known.confirmed.map_or(at, |c| c.max(at)));
        }
    }
}

#[async_trait]
impl Invalidation for PgEpoch {
    fn stamp(&self) -> Option<Stamp> {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        match known.confirmed {
            Some(at) if at.elapsed() < STAMP_VALID => known.stamp.clone(),
            _ => None,
        }
    }

    async fn bump(&self) -> Result<(), StoreError> {
        let conn = self.pool.get().await?;
        let row = conn.query_one(BUMP, &[]).await?;
        self.saw(super::row::get(&row, 0)?, None);
        Ok(())
    }
}

/// Keeps a listening connection and reads the row every [`POLL`]; reconnects
/// when the database goes away. Ends when the epoch is dropped.
async fn listen(connect: Connect, epoch: Weak<PgEpoch>) {
    let mut healthy = true;
    loop {
        if let Err(e) = watch(&connect, &epoch, &mut healthy).await {
            if healthy {
                tracing::warn!(
                    "session-cache listener lost PostgreSQL ({e}); sessions are read from the database until it is back"
                );
                healthy = false;
            }
        }
        if epoch.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One listening connection's life: `Ok` when the epoch is gone, `Err` when
/// the connection failed.
async fn watch(connect: &Connect, epoch: &Weak<PgEpoch>, healthy: &mut bool) -> Result<(), StoreError> {
    let notified = {
        let epoch = epoch.clone();
        move |payload: &str| {
            if let (Some(epoch), Ok(version)) = (epoch.upgrade(), payload.parse::<i64>()) {
                epoch.saw(version, None);
            }
        }
    };
    let client: Client = connect.listening_client(notified).await?;
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    let stmt = client.prepare("SELECT version FROM auth_epoch WHERE id = 1").await?;
    loop {
        let started = Instant::now();
        let row = tokio::time::timeout(READ_TIMEOUT, client.query_one(&stmt, &[]))
            .await
            .map_err(|_| StoreError::Unavailable("the version row did not answer in time".into()))??;
        let version: i64 = super::row::get(&row, 0)?;
        match epoch.upgrade() {
            Some(epoch) => epoch.saw(version, Some(started)),
            None => return Ok(()),
        }
        if !*healthy {
            tracing::info!("session-cache listener is back on PostgreSQL");
            *healthy = true;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The CLI's way to tell running nodes of a change: bump the row over a
/// connection of its own (the CLI keeps no cache, so it never has a stamp).
#[derive(Debug)]
pub struct PgBump {
    store: StoreConfig,
}

impl PgBump {
    /// For the configured database.
    pub fn new(store: &StoreConfig) -> PgBump {
        PgBump { store: store.clone() }
    }
}

#[async_trait]
impl Invalidation for PgBump {
    fn stamp(&self) -> Option<Stamp> {
        None
    }

    async fn bump(&self) -> Result<(), StoreError> {
        let client = Connect::new(&self.store)?.client().await?;
        client.query_one(BUMP, &[]).await?;
        Ok(())
    }
}
