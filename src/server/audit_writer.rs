//! Group commit of audit rows.
//!
//! Every signature's audit row is committed before its response is sent. A
//! dedicated thread owns a database connection; each request hands it its
//! rows and waits. The thread takes everything queued at that moment and
//! commits it in one transaction (one fsync for many signatures), so the cost
//! of the audit log shrinks as concurrency grows.

use std::sync::mpsc;

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
}

impl AuditWriter {
    /// Starts the writer thread on its own connection.
    pub fn start(mut store: Store) -> AuditWriter {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while let Ok(more) = rx.try_recv() {
                        batch.push(more);
                    }
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
        AuditWriter { tx }
    }

    /// Commits rows; returns the last sequence number once they are durable.
    pub async fn commit(&self, at: i64, records: Vec<Record>) -> Result<i64, String> {
        let (done, wait) = oneshot::channel();
        self.tx.send(Job { at, records, done }).map_err(|_| "the audit writer stopped".to_string())?;
        wait.await.map_err(|_| "the audit writer stopped".to_string())?
    }
}
