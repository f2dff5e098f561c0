//! Several streams' groups written by one statement ([`events::append_at_heads`]).
//!
//! A stream's worker that has numbered its group at the head it remembers hands the group to the
//! writers here and waits for the answer. A writer takes every group queued when it is free (up to
//! `INGEST_MAX_GROUP_EVENTS` events) and writes them in one statement, each only if its stream's head
//! is still the one it was numbered after. One writer runs while it keeps up; another starts (up to
//! half the pool's connections) when a full statement's worth of events waits. So under a load of
//! many busy streams the groups that become ready while a statement runs are written together by the
//! next one, as PostgreSQL's own group commit flushes the commits that arrive during a flush; with one
//! busy stream the writer finds one group at a time and writes it as before
//! ([`events::append_at_head`]). Nothing waits on purpose: a group that finds the writer idle is
//! written at once, and a group that has waited [`STALLED_AFTER`] for busy writers starts another (a
//! statement waiting for a row lock must not hold up every other stream).
//!
//! Why writer tasks rather than the stream workers themselves: a worker whose group another worker
//! wrote would have to give up its wait for a pool connection half-way, and sqlx closes a connection
//! whose acquisition (its health check) was abandoned.
//!
//! Each stream has one worker, so a stream has at most one group here at a time, and a group is
//! written (or refused) exactly once: by the writer that took it out of the queue.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use sqlx::PgConnection;
use tokio::sync::{Notify, oneshot};
use uuid::Uuid;

use super::{HOLD_CONNECTION_MAX, HeldConnection, replicate};
use crate::error::{Error, database_unavailable};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::events::{self, HeadAppend, StreamKey, VersionChecks, VesEventRow};

/// How long a queued group waits for the busy writers before another one is started.
pub const STALLED_AFTER: Duration = Duration::from_secs(1);

/// What became of a group handed to the writers.
#[derive(Debug)]
pub enum Combined {
    /// Written: the stream's head was the one expected.
    Appended,
    /// Not written: the head had moved, the stream is paused, an entity the group checks was not at
    /// its version, or the id epoch had moved.
    StaleHead,
    /// Not written: one of its events' ids or commands is already stored.
    Conflict,
    /// Not written: the statement shared with other streams' groups failed (a replayed id in any of
    /// them fails them all); the group's worker writes it alone.
    Alone,
    /// Not written, or not known to be: the database failed.
    Failed(Error),
}

struct Pending {
    stream: StreamKey,
    rows: Vec<VesEventRow>,
    sequenced_at: DateTime<Utc>,
    expected_head: i64,
    checks: Option<VersionChecks>,
    epoch: i32,
    reply: oneshot::Sender<(Vec<VesEventRow>, Combined)>,
}

impl Pending {
    fn answer(self, combined: Combined) {
        // NB: the worker that handed it over waits for this answer until it comes.
        let _ = self.reply.send((self.rows, combined));
    }
}

#[derive(Default)]
struct Queue {
    groups: VecDeque<Pending>,
    /// The events of `groups`.
    events: usize,
    /// Writer tasks running, and how many of them wait for work.
    writers: usize,
    idle: usize,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Wakes an idle writer (a permit is kept when none waits, so a wake-up is never lost).
    work: Notify,
    store: Store,
    metrics: Arc<Metrics>,
    sequencer_id: Uuid,
    max_writers: usize,
    /// The most events one statement writes (it always takes at least one group).
    max_events: usize,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().expect("combiner queue lock")
    }
}

/// The writers of groups numbered at a remembered head.
pub struct Combiner(Arc<Shared>);

impl Combiner {
    pub fn new(store: Store, metrics: Arc<Metrics>, sequencer_id: Uuid, max_events: usize) -> Self {
        let max_writers = (store.max_connections() as usize / 2).max(1);
        Combiner(Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            work: Notify::new(),
            store,
            metrics,
            sequencer_id,
            max_writers,
            max_events,
        }))
    }

    /// Writes `rows` (numbered `expected_head + 1 ..`, of a stream that has a counter row) if the
    /// stream's head is still `expected_head`, each entity of `checks` is at its version there and
    /// the current id epoch is still `epoch`, together with whatever other streams' groups are queued
    /// when a writer is free. Gives the rows back with the outcome.
    pub async fn append(
        &self,
        stream: StreamKey,
        rows: Vec<VesEventRow>,
        sequenced_at: DateTime<Utc>,
        expected_head: i64,
        checks: Option<VersionChecks>,
        epoch: i32,
    ) -> (Vec<VesEventRow>, Combined) {
        let (reply, answer) = oneshot::channel();
        let max_events = self.0.max_events;
        let started = self.start_writer_if(|q| {
            q.events += rows.len();
            q.groups.push_back(Pending { stream, rows, sequenced_at, expected_head, checks, epoch, reply });
            // Another writer only when those running cannot keep up even a statement at a time.
            q.writers == 0 || (q.idle == 0 && q.events >= max_events)
        });
        if !started {
            self.0.work.notify_one();
        }
        tokio::pin!(answer);
        loop {
            match tokio::time::timeout(STALLED_AFTER, &mut answer).await {
                Ok(answered) => {
                    return answered.unwrap_or_else(|_| {
                        // The writer panicked while it held our group: whether it was written is unknown.
                        (Vec::new(), Combined::Failed(Error::Internal("the writer of this group stopped".into())))
                    });
                }
                // Every writer is still busy (a statement waiting for a row lock, say): one more, so that
                // one stalled statement does not hold up every other stream's groups.
                Err(_) => {
                    self.start_writer_if(|q| q.idle == 0 && !q.groups.is_empty());
                }
            }
        }
    }

    /// Under the queue's lock, runs `wanted` and starts a writer if it says so and fewer than the most
    /// run. Returns whether one was started.
    fn start_writer_if(&self, wanted: impl FnOnce(&mut Queue) -> bool) -> bool {
        let start = {
            let mut q = self.0.queue();
            let start = wanted(&mut q) && q.writers < self.0.max_writers;
            if start {
                q.writers += 1;
            }
            start
        };
        if start {
            tokio::spawn(write_while_busy(Arc::clone(&self.0)));
        }
        start
    }

    /// Groups numbered and waiting for a writer.
    pub fn waiting(&self) -> usize {
        self.0.queue().groups.len()
    }
}

/// One writer: takes what is queued and writes it until the queue is empty and another writer runs,
/// or, the last one, until nothing has come for [`HOLD_CONNECTION_MAX`].
async fn write_while_busy(shared: Arc<Shared>) {
    let mut held = HeldConnection::default();
    loop {
        let batch = take(&shared);
        if batch.is_empty() {
            {
                // A writer started for a backlog leaves as soon as the backlog is gone: one writer that
                // keeps up combines the most.
                let mut q = shared.queue();
                if q.writers > 1 && q.groups.is_empty() {
                    q.writers -= 1;
                    return;
                }
            }
            let wake = shared.work.notified();
            shared.queue().idle += 1;
            let woken = tokio::time::timeout(HOLD_CONNECTION_MAX, wake).await.is_ok();
            let mut q = shared.queue();
            q.idle -= 1;
            if !woken && q.groups.is_empty() {
                // NB: under the lock that queues groups, so that a group queued now starts a writer.
                q.writers -= 1;
                return;
            }
            continue;
        }
        shared.metrics.sequencing_statement_groups.observe(batch.len() as f64);
        let conn = match held.get(&shared.store).await {
            Ok(conn) => conn,
            Err(e) => {
                for p in batch {
                    p.answer(Combined::Failed(replicate(&e)));
                }
                continue;
            }
        };
        // NB: a panic fails this batch only (its workers learn that the outcome is unknown).
        let keep = AssertUnwindSafe(write(conn, batch, shared.sequencer_id)).catch_unwind().await.unwrap_or(false);
        if !keep {
            held.release();
        }
        held.release_unless_spare(&shared.store);
    }
}

/// The queued groups, oldest first, up to `max_events` events (at least one group).
fn take(shared: &Shared) -> Vec<Pending> {
    let mut q = shared.queue();
    let mut batch = Vec::new();
    let mut events = 0;
    while let Some(p) = q.groups.front() {
        if !batch.is_empty() && events + p.rows.len() > shared.max_events {
            break;
        }
        events += p.rows.len();
        batch.push(q.groups.pop_front().expect("front exists"));
    }
    q.events -= events;
    batch
}

/// Writes `batch` and answers each group. Returns whether the connection may be kept.
async fn write(conn: &mut PgConnection, mut batch: Vec<Pending>, sequencer_id: Uuid) -> bool {
    if batch.len() == 1 {
        let p = batch.pop().expect("one group");
        let (stream, rows, at, head) = (p.stream, &p.rows, p.sequenced_at, p.expected_head);
        let appended =
            events::append_at_head(conn, stream, rows, at, sequencer_id, head, false, p.checks.as_ref(), p.epoch).await;
        let (combined, keep) = match appended {
            Ok(true) => (Combined::Appended, true),
            Ok(false) => (Combined::StaleHead, true),
            Err(Error::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => (Combined::Conflict, true),
            Err(e) => (Combined::Failed(e), false),
        };
        p.answer(combined);
        return keep;
    }
    let groups: Vec<HeadAppend> = batch
        .iter()
        .map(|p| HeadAppend {
            stream: p.stream,
            rows: &p.rows,
            sequenced_at: p.sequenced_at,
            expected_head: p.expected_head,
            checks: p.checks.as_ref(),
            epoch: p.epoch,
        })
        .collect();
    let written = events::append_at_heads(conn, &groups, sequencer_id).await;
    drop(groups);
    match written {
        Ok(written) => {
            for (p, w) in batch.into_iter().zip(written) {
                p.answer(if w { Combined::Appended } else { Combined::StaleHead });
            }
            true
        }
        // The server refused the statement, so nothing of it was written: each group goes alone, so that
        // only the one whose event collides (or whatever else failed) sees it.
        Err(Error::Database(e @ sqlx::Error::Database(_))) if !database_unavailable(&e) => {
            if !e.as_database_error().is_some_and(|d| d.is_unique_violation()) {
                tracing::warn!(error = %e, groups = batch.len(), "shared append failed; writing its groups one by one");
            }
            for p in batch {
                p.answer(Combined::Alone);
            }
            true
        }
        // The database is unavailable, the connection failed (the outcome may be unknown), or the
        // statement's answer was wrong.
        Err(e) => {
            for p in batch {
                p.answer(Combined::Failed(replicate(&e)));
            }
            false
        }
    }
}
