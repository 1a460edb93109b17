//! Group commit of audit rows.
//!
//! Every signature's audit row is committed before its response is sent. A
//! dedicated thread owns a database connection of its own ([`AuditLog`]); each
//! request hands it its rows and waits. The thread commits a batch in one transaction (one WAL
//! write and one sync for many signatures).
//!
//! Batches form by themselves only while a sync is running; on a fast disk
//! that is too short, and most commits would carry one row. So requests
//! announce a row before they sign ([`AuditWriter::expect`]); when a row
//! arrives while other signatures are still under way, the writer sleeps until
//! the last of them has come or the commit window has passed, woken only by
//! that last row. The window is `[server] audit_window_us` while the process
//! keeps the cores busy (CPU is what batching saves: under virtualisation a
//! sync costs far more CPU than a row), `audit_idle_window_us` otherwise
//! (latency matters more then). A request that signs alone is committed at once.
//!
//! If the writer thread ever ends, queued and later requests get an error
//! instead of waiting forever.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Failed commits, logged one line a second at most.
static FAILED_LOG: crate::throttle::Throttle = crate::throttle::Throttle::new();

use tokio::sync::oneshot;

use crate::audit::AuditLog;
use crate::audit::{self, Event};
use crate::error::Error;
use crate::seam::StoreError;

struct Job {
    /// When it was queued (the commit window counts from the oldest job).
    queued: Instant,
    at: i64,
    /// Its events, owned while they wait.
    records: Vec<Event<'static>>,
    done: oneshot::Sender<Result<i64, Error>>,
}

/// What the writer thread and the requests share.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    /// Wakes the writer: a first row, the last announced row, or a full batch.
    wake: Condvar,
    /// Rows announced and not yet queued (or dropped).
    expected: AtomicUsize,
}

#[derive(Default)]
struct QueueState {
    jobs: Vec<Job>,
    /// The writer sleeps until a first row comes.
    idle: bool,
    /// The writer sleeps (for a first row, or in its window): only then does
    /// a row need to wake it (a notification is a system call even when
    /// nobody waits).
    waiting: bool,
    /// The writer stops once the queue is empty.
    closed: bool,
}

/// The queue's sending side.
#[derive(Clone)]
pub struct AuditWriter {
    queue: Arc<Queue>,
    stats: Arc<Stats>,
    _closer: Arc<Closer>,
}

/// Commits and rows so far (for `/metrics`: rows / commits is the batch size).
#[derive(Debug, Default)]
pub struct Stats {
    /// Transactions committed.
    pub commits: std::sync::atomic::AtomicU64,
    /// Rows committed.
    pub rows: std::sync::atomic::AtomicU64,
}

/// A row announced before signing: counted as expected until it is handed to
/// [`AuditWriter::commit`] or dropped (the signature failed).
pub struct Expected(Option<Arc<Queue>>);

impl Expected {
    /// No longer expected; the caller holds the queue's lock and wakes the writer itself.
    fn fulfil(mut self) {
        if let Some(q) = self.0.take() {
            q.expected.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Expected {
    fn drop(&mut self) {
        // A row that will not come (the signature failed): a writer waiting for
        // it need not wait any longer. Locking first means the writer is either
        // before its check (and sees the new count) or asleep (and is woken).
        if let Some(q) = self.0.take() {
            if q.expected.fetch_sub(1, Ordering::AcqRel) == 1 && q.lock().waiting {
                q.wake.notify_one();
            }
        }
    }
}

/// Closes the queue when the last [`AuditWriter`] is dropped: the writer commits
/// what is queued and ends.
struct Closer(Arc<Queue>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.wake.notify_one();
    }
}

/// Held by the writer thread: however it ends (a panic included), the queue
/// closes and its jobs are dropped, so their requests get an error at once.
struct Stopped(Arc<Queue>);

impl Drop for Stopped {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.closed = true;
        state.jobs.clear();
    }
}

/// Rows in one transaction at most.
const MAX_BATCH: usize = 512;

/// How the process's CPU use is sampled to pick the commit window.
const LOAD_SAMPLE: Duration = Duration::from_millis(100);

/// Above this share of the cores in use, the busy window applies.
const BUSY: f64 = 0.75;

/// The commit windows: while the cores are busy, and otherwise.
#[derive(Clone, Copy, Debug)]
pub struct Windows {
    /// While the process uses most of the cores.
    pub busy: Duration,
    /// With cores to spare.
    pub idle: Duration,
}

/// Picks the commit window from how busy the process is. With cores to spare,
/// a short window: latency wins, and the syncs cost CPU nobody else needs.
/// With the cores busy, the long window: more rows share each commit, and the
/// CPU saved goes to signatures.
struct Load {
    cores: f64,
    since: Instant,
    cpu: Option<cpu_time::ProcessTime>,
    busy: bool,
}

impl Load {
    fn new() -> Load {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
        Load { cores, since: Instant::now(), cpu: cpu_time::ProcessTime::try_now().ok(), busy: false }
    }

    fn window(&mut self, windows: Windows) -> Duration {
        let elapsed = self.since.elapsed();
        if elapsed >= LOAD_SAMPLE {
            let used = self.cpu.and_then(|c| c.try_elapsed().ok());
            if let Some(used) = used {
                self.busy = used.as_secs_f64() / elapsed.as_secs_f64() / self.cores >= BUSY;
            }
            self.since = Instant::now();
            self.cpu = cpu_time::ProcessTime::try_now().ok();
        }
        if self.busy {
            windows.busy
        } else {
            windows.idle
        }
    }
}

/// Commits between the writer's own WAL checkpoints (taken when no row waits).
const CHECKPOINT_AFTER: u32 = 100;

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a batch: the first row, then, while announced rows are still
    /// expected, more until `window` after the first one. The writer sleeps
    /// meanwhile; a request wakes it only with the last expected row (or a full
    /// batch), not with every row. `None` once closed and drained.
    fn next_batch(&self, window: Duration) -> Option<Vec<Job>> {
        let mut state = self.lock();
        while state.jobs.is_empty() {
            if state.closed {
                return None;
            }
            state.idle = true;
            state.waiting = true;
            state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
            state.waiting = false;
        }
        state.idle = false;
        // Jobs queued during the previous commit have waited already (jobs are
        // queued in order: the first is the oldest).
        let deadline = state.jobs.first().map_or_else(Instant::now, |j| j.queued) + window;
        while self.expected.load(Ordering::Acquire) > 0 && state.jobs.len() < MAX_BATCH && !state.closed {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state.waiting = true;
            state = self.wake.wait_timeout(state, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
            state.waiting = false;
        }
        let n = state.jobs.len().min(MAX_BATCH);
        Some(state.jobs.drain(..n).collect())
    }

    /// Queues a job; `announced` stops being expected at the same moment. On a
    /// closed queue the job is dropped (its request learns so from its channel).
    fn push(&self, job: Job, announced: Option<Expected>) {
        let mut state = self.lock();
        if state.closed {
            // Nobody will commit it: dropping the job answers its request.
            return;
        }
        state.jobs.push(job);
        if let Some(a) = announced {
            a.fulfil();
        }
        if state.waiting && (state.idle || self.expected.load(Ordering::Acquire) == 0 || state.jobs.len() >= MAX_BATCH)
        {
            self.wake.notify_one();
        }
    }
}

impl AuditWriter {
    /// Starts the writer thread on its own connection; `windows` say how long
    /// a row waits for announced ones.
    ///
    /// After a hundred commits, when it finds no row waiting, the writer gives
    /// its connection a moment for maintenance ([`AuditLog::idle`]): SQLite
    /// checkpoints its WAL then. A checkpoint copies pages into the database
    /// file and syncs it, and rows that came meanwhile would wait for it. Done
    /// by the only writer, it is complete, so the next commit starts the WAL
    /// over (a checkpoint on another connection would always lag behind the
    /// commits, and the WAL would grow for as long as the load lasts). SQLite's
    /// automatic checkpoint (1000 pages) still bounds the WAL under load that
    /// never pauses.
    pub fn start(log: Box<dyn AuditLog>, windows: Windows) -> Result<AuditWriter, std::io::Error> {
        let queue = Arc::new(Queue::default());
        let stats = Arc::new(Stats::default());
        let (q, counted) = (Arc::clone(&queue), Arc::clone(&stats));
        // The writer drives its store's futures itself (SQLite's are ready at
        // once; a networked store's make progress on this thread).
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::Builder::new().name("audit-writer".into()).spawn(move || {
            let _guard = Stopped(Arc::clone(&q));
            let mut log = log;
            let mut load = Load::new();
            let mut since_checkpoint = 0u32;
            while let Some(mut batch) = q.next_batch(load.window(windows)) {
                let result = runtime.block_on(commit_batch(&mut *log, &mut batch));
                match result {
                    Ok(seqs) => {
                        let rows: usize = batch.iter().map(|j| j.records.len()).sum();
                        counted.commits.fetch_add(1, Ordering::Relaxed);
                        counted.rows.fetch_add(rows as u64, Ordering::Relaxed);
                        for (job, seq) in batch.into_iter().zip(seqs) {
                            let _ = job.done.send(Ok(seq));
                        }
                        since_checkpoint += 1;
                        if since_checkpoint >= CHECKPOINT_AFTER && q.lock().jobs.is_empty() {
                            since_checkpoint = 0;
                            if let Err(e) = runtime.block_on(log.idle()) {
                                tracing::warn!("audit log maintenance failed: {e}");
                            }
                        }
                    }
                    Err(e) => {
                        match FAILED_LOG.admit() {
                            Some(0) => tracing::error!("audit commit failed: {e}"),
                            Some(n) => tracing::error!("audit commit failed: {e} (and {n} more since the last line)"),
                            None => {}
                        }
                        for job in batch {
                            let _ = job.done.send(Err(Error::Unavailable(format!("audit commit failed: {e}"))));
                        }
                    }
                }
            }
        })?;
        Ok(AuditWriter { _closer: Arc::new(Closer(Arc::clone(&queue))), queue, stats })
    }

    /// Commits and rows so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Announces a row before the work that will produce it (a signature).
    pub fn expect(&self) -> Expected {
        self.queue.expected.fetch_add(1, Ordering::AcqRel);
        Expected(Some(Arc::clone(&self.queue)))
    }

    /// Commits rows; returns the last sequence number once they are durable.
    /// `announced` is what [`AuditWriter::expect`] returned for them, if anything.
    /// The rows name the HTTPS request they are written for, if any.
    pub async fn commit(
        &self,
        at: i64,
        mut records: Vec<Event<'static>>,
        announced: Option<Expected>,
    ) -> Result<i64, Error> {
        records.iter_mut().for_each(|r| crate::request_id::stamp(&mut r.detail));
        let (done, wait) = oneshot::channel();
        self.queue.push(Job { queued: Instant::now(), at, records, done }, announced);
        wait.await.map_err(|_| Error::Unavailable("the audit writer stopped".into()))?
    }
}

/// Appends a batch's rows in one transaction and commits it; returns each
/// job's last sequence number.
async fn commit_batch(log: &mut dyn AuditLog, batch: &mut [Job]) -> Result<Vec<i64>, StoreError> {
    let groups: Vec<(i64, &[Event<'_>])> = batch.iter().map(|job| (job.at, &job.records[..])).collect();
    let mut tx = log.write().await?;
    let seqs = audit::append_groups(&mut *tx, &groups).await?;
    tx.commit().await?;
    Ok(seqs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        let (done, _) = oneshot::channel();
        Job { queued: Instant::now(), at: 0, records: Vec::new(), done }
    }

    fn announce(q: &Arc<Queue>) -> Expected {
        q.expected.fetch_add(1, Ordering::AcqRel);
        Expected(Some(Arc::clone(q)))
    }

    #[test]
    fn a_lone_row_is_not_held_back() {
        let q = Arc::new(Queue::default());
        q.push(job(), None);
        q.push(job(), None);
        let started = Instant::now();
        let batch = q.next_batch(Duration::from_secs(5)).expect("batch");
        assert_eq!(batch.len(), 2);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn announced_rows_are_waited_for_within_the_window() {
        let q = Arc::new(Queue::default());
        let announced = announce(&q);
        q.push(job(), None);
        let late = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                q.push(job(), Some(announced));
            })
        };
        let started = Instant::now();
        let batch = q.next_batch(Duration::from_secs(5)).expect("batch");
        late.join().expect("join");
        assert_eq!(batch.len(), 2, "the announced row joined the batch");
        assert!(started.elapsed() < Duration::from_secs(1), "the last announced row ended the wait");

        // An announced row that never comes costs at most the window.
        let _never = announce(&q);
        let started = Instant::now();
        q.push(job(), None);
        let batch = q.next_batch(Duration::from_millis(30)).expect("batch");
        assert_eq!(batch.len(), 1);
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn a_failed_signature_releases_the_wait() {
        let q = Arc::new(Queue::default());
        let announced = announce(&q);
        q.push(job(), None);
        let failed = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(announced);
        });
        let started = Instant::now();
        let batch = q.next_batch(Duration::from_secs(5)).expect("batch");
        failed.join().expect("join");
        assert_eq!(batch.len(), 1);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_stopped_writer_answers_every_request() {
        let q = Arc::new(Queue::default());
        let (done, waiting) = oneshot::channel();
        q.push(Job { queued: Instant::now(), at: 0, records: Vec::new(), done }, None);
        drop(Stopped(Arc::clone(&q)));
        assert!(waiting.blocking_recv().is_err(), "a queued request learns that the writer stopped");
        let (done, later) = oneshot::channel();
        q.push(Job { queued: Instant::now(), at: 0, records: Vec::new(), done }, None);
        assert!(later.blocking_recv().is_err(), "so does a later one");
    }

    #[test]
    fn the_writer_keeps_the_wal_from_growing() {
        // Real SQLite in a temporary directory. Commits one by one, as a quiet
        // server does: the writer's own checkpoints let the WAL start over, so
        // its file stays the size of about CHECKPOINT_AFTER commits.
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("inkan.db");
        let store = crate::store::sqlite::SqliteStore::open(&db, crate::config::Synchronous::Full).expect("store");
        let log = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(crate::store::Store::audit_log(&store))
            .expect("audit log");
        let writer = AuditWriter::start(log, Windows { busy: Duration::ZERO, idle: Duration::ZERO }).expect("writer");
        let wal = dir.path().join("inkan.db-wal");
        let commit = |n: u32| {
            for i in 0..n {
                let (done, wait) = oneshot::channel();
                let record = Event {
                    digest: Some(format!("sha256:{i:064x}").into()),
                    detail: serde_json::json!({ "i": i }),
                    ..Event::new("test", crate::audit::Name::Sign)
                };
                writer.queue.push(Job { queued: Instant::now(), at: 0, records: vec![record], done }, None);
                wait.blocking_recv().expect("answered").expect("committed");
            }
        };
        commit(CHECKPOINT_AFTER);
        let one_round = std::fs::metadata(&wal).expect("wal").len();
        commit(3 * CHECKPOINT_AFTER);
        let after = std::fs::metadata(&wal).expect("wal").len();
        assert!(after < 2 * one_round, "WAL {after} bytes after 4 rounds of commits, {one_round} after one");
        assert_eq!(writer.stats().rows.load(Ordering::Relaxed), u64::from(4 * CHECKPOINT_AFTER));
    }

    #[test]
    fn a_closed_queue_is_drained_then_ends() {
        let q = Arc::new(Queue::default());
        q.push(job(), None);
        drop(Closer(Arc::clone(&q)));
        assert_eq!(q.next_batch(Duration::from_secs(5)).expect("batch").len(), 1);
        assert!(q.next_batch(Duration::from_secs(5)).is_none());
    }
}
