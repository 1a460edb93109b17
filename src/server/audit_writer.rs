//! Group commit of audit rows.
//!
//! Every signature's audit row is committed before its response is sent. A
//! dedicated thread owns a database connection; each request hands it its
//! rows and waits. The thread commits a batch in one transaction (one WAL
//! write and one fsync for many signatures).
//!
//! Batches form by themselves only while an fsync is running; on a fast disk
//! that is too short, and most commits would carry one row. So requests
//! announce a row before they sign ([`AuditWriter::expect`]); when a row
//! arrives while other signatures are still under way, the writer waits for
//! them up to the commit window (`[server] audit_window_us`). A request that
//! signs alone is committed at once: the window costs latency only under load,
//! where it saves the most work.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::audit::{self, Event};
use crate::store::{Store, StoreError};

/// An audit row owned by the queue.
#[derive(Clone, Debug, Default)]
pub struct Record {
    /// See [`Event::actor`].
    pub actor: String,
    /// See [`Event::event`].
    pub event: &'static str,
    /// See [`Event::user_id`].
    pub user_id: Option<String>,
    /// See [`Event::generation`].
    pub generation: Option<i64>,
    /// See [`Event::digest`].
    pub digest: Option<String>,
    /// See [`Event::outcome`].
    pub outcome: &'static str,
    /// See [`Event::detail`].
    pub detail: serde_json::Value,
}

struct Job {
    at: i64,
    records: Vec<Record>,
    done: oneshot::Sender<Result<i64, String>>,
}

/// The queue's sending side.
#[derive(Clone)]
pub struct AuditWriter {
    tx: mpsc::Sender<Job>,
    expected: Arc<AtomicUsize>,
    stats: Arc<Stats>,
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
pub struct Expected(Arc<AtomicUsize>);

impl Drop for Expected {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Rows in one transaction at most.
const MAX_BATCH: usize = 512;

/// Collects a batch: everything queued, then, while announced rows are still
/// expected, more until `window` after the first one.
fn collect(rx: &mpsc::Receiver<Job>, first: Job, expected: &AtomicUsize, window: Duration) -> Vec<Job> {
    let deadline = Instant::now() + window;
    let mut batch = vec![first];
    loop {
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        if expected.load(Ordering::Acquire) == 0 || batch.len() >= MAX_BATCH {
            return batch;
        }
        let now = Instant::now();
        if now >= deadline {
            return batch;
        }
        match rx.recv_timeout(deadline - now) {
            Ok(job) => batch.push(job),
            Err(_) => return batch,
        }
    }
}

impl AuditWriter {
    /// Starts the writer thread on its own connection; `window` is the longest
    /// a row waits for announced ones.
    pub fn start(mut store: Store, window: Duration) -> AuditWriter {
        let (tx, rx) = mpsc::channel::<Job>();
        let expected = Arc::new(AtomicUsize::new(0));
        let waiting = Arc::clone(&expected);
        let stats = Arc::new(Stats::default());
        let counted = Arc::clone(&stats);
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let batch = collect(&rx, first, &waiting, window);
                    let result = store.write(|t| {
                        let mut last = Vec::with_capacity(batch.len());
                        for job in &batch {
                            let events: Vec<Event<'_>> = job
                                .records
                                .iter()
                                .map(|r| Event {
                                    actor: &r.actor,
                                    event: r.event,
                                    user_id: r.user_id.as_deref(),
                                    generation: r.generation,
                                    digest: r.digest.as_deref(),
                                    outcome: r.outcome,
                                    detail: r.detail.clone(),
                                })
                                .collect();
                            last.push(audit::append(t, job.at, &events)?);
                        }
                        Ok::<_, StoreError>(last)
                    });
                    match result {
                        Ok(seqs) => {
                            let rows: usize = batch.iter().map(|j| j.records.len()).sum();
                            counted.commits.fetch_add(1, Ordering::Relaxed);
                            counted.rows.fetch_add(rows as u64, Ordering::Relaxed);
                            for (job, seq) in batch.into_iter().zip(seqs) {
                                let _ = job.done.send(Ok(seq));
                            }
                        }
                        Err(e) => {
                            tracing::error!("audit commit failed: {e}");
                            for job in batch {
                                let _ = job.done.send(Err(e.to_string()));
                            }
                        }
                    }
                }
            })
            .unwrap_or_else(|e| crate::server::fatal(format!("cannot start the audit writer: {e}")));
        AuditWriter { tx, expected, stats }
    }

    /// Commits and rows so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Announces a row before the work that will produce it (a signature).
    pub fn expect(&self) -> Expected {
        self.expected.fetch_add(1, Ordering::AcqRel);
        Expected(Arc::clone(&self.expected))
    }

    /// Commits rows; returns the last sequence number once they are durable.
    /// `announced` is what [`AuditWriter::expect`] returned for them, if anything.
    pub async fn commit(&self, at: i64, records: Vec<Record>, announced: Option<Expected>) -> Result<i64, String> {
        let (done, wait) = oneshot::channel();
        // No longer expected: the writer need not wait for this row any more.
        drop(announced);
        self.tx.send(Job { at, records, done }).map_err(|_| "the audit writer stopped".to_string())?;
        wait.await.map_err(|_| "the audit writer stopped".to_string())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        let (done, _) = oneshot::channel();
        Job { at: 0, records: Vec::new(), done }
    }

    #[test]
    fn a_lone_row_is_not_held_back() {
        let (tx, rx) = mpsc::channel();
        let expected = AtomicUsize::new(0);
        tx.send(job()).expect("send");
        let started = Instant::now();
        let batch = collect(&rx, job(), &expected, Duration::from_secs(5));
        assert_eq!(batch.len(), 2);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn announced_rows_are_waited_for_within_the_window() {
        let (tx, rx) = mpsc::channel();
        let expected = Arc::new(AtomicUsize::new(1));
        let late = {
            let tx = tx.clone();
            let expected = Arc::clone(&expected);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                expected.fetch_sub(1, Ordering::AcqRel);
                tx.send(job()).expect("send");
            })
        };
        let batch = collect(&rx, job(), &expected, Duration::from_secs(5));
        late.join().expect("join");
        assert_eq!(batch.len(), 2, "the announced row joined the batch");

        // An announced row that never comes costs at most the window.
        expected.fetch_add(1, Ordering::AcqRel);
        let started = Instant::now();
        let batch = collect(&rx, job(), &expected, Duration::from_millis(30));
        assert_eq!(batch.len(), 1);
        assert!(started.elapsed() >= Duration::from_millis(30));
    }
}
