//! The writer thread: group commit of every write request into shared redb transactions.
//!
//! Callers queue a request and wait for its reply. The thread takes whatever is queued (up to
//! [`MAX_OPS_PER_COMMIT`]), applies it all in one write transaction and commits it with one
//! fsync, so concurrent ingest batches share the cost of durability. While a commit runs, new
//! requests queue up and form the next group.
//!
//! A caller gets its reply only after the commit that contains its request returned. redb makes a
//! commit with `Durability::Immediate` crash-safe: after a crash the file opens at the last
//! completed commit. So an acknowledged write survives a crash, and an unacknowledged one is
//! either whole or absent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use followup_core::store::StoreError;
use redb::{Database, Durability};
use tokio::sync::{mpsc, oneshot};

use super::tables;
use super::write::{Applied, ApplyError, WriteOp, WriteTables};

/// Requests applied in one transaction at most. It bounds how long a caller waits behind the
/// others and how many dirty pages a transaction holds; a guess, not a measured optimum.
const MAX_OPS_PER_COMMIT: usize = 256;

/// Requests waiting for the writer at most; a caller beyond it waits for room, without blocking
/// its thread.
const QUEUE_CAPACITY: usize = 1024;

type Reply = oneshot::Sender<Result<Applied, StoreError>>;

#[derive(Debug)]
struct Request {
    op: WriteOp,
    reply: Reply,
}

/// Handle to the writer thread. Dropping it lets the thread finish the queued requests, then
/// waits for it to exit, which closes its handle on the database file.
#[derive(Debug)]
pub(super) struct Writer {
    queue: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    /// Successful commits so far, for tests and metrics.
    commits: Arc<AtomicU64>,
}

impl Writer {
    pub(super) fn start(db: Arc<Database>) -> Result<Self, StoreError> {
        let (queue, requests) = mpsc::channel(QUEUE_CAPACITY);
        let commits = Arc::new(AtomicU64::new(0));
        let thread_commits = Arc::clone(&commits);
        let thread = std::thread::Builder::new()
            .name("followup-store-writer".to_owned())
            .spawn(move || run(&db, requests, &thread_commits))
            .map_err(|error| tables::unavailable("starting the writer thread", error))?;
        Ok(Self { queue: Some(queue), thread: Some(thread), commits })
    }

    /// Queues `op` and waits until the commit that contains it returned.
    pub(super) async fn submit(&self, op: WriteOp) -> Result<Applied, StoreError> {
        let stopped = || tables::unavailable("writing", "the writer thread has stopped");
        let queue = self.queue.as_ref().ok_or_else(stopped)?;
        let (reply, outcome) = oneshot::channel();
        queue.send(Request { op, reply }).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread's loop once it has drained what is queued.
        self.queue.take();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("embedded store writer thread panicked");
        }
    }
}

fn run(db: &Database, mut requests: mpsc::Receiver<Request>, commits: &AtomicU64) {
    while let Some(first) = requests.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_OPS_PER_COMMIT {
            match requests.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        commit_group(db, group, commits);
    }
}

/// Failure of a commit attempt.
enum GroupError {
    /// The operation at `index` failed part way, so the transaction was aborted.
    Operation { index: usize, error: StoreError },
    /// The transaction itself failed, so every request of the group fails with this message.
    Transaction(String),
}

/// Commits the group and replies to each request. An operation that fails part way is dropped
/// with its error and the rest is retried in a fresh transaction, so one bad request never fails
/// or half-applies the others.
fn commit_group(db: &Database, mut group: Vec<Request>, commits: &AtomicU64) {
    loop {
        match try_commit(db, &group) {
            Ok(outcomes) => {
                commits.fetch_add(1, Ordering::Relaxed);
                for (request, outcome) in group.into_iter().zip(outcomes) {
                    // A caller that stopped waiting dropped its receiver. Its write stands anyway.
                    let _ = request.reply.send(outcome);
                }
                return;
            }
            Err(GroupError::Operation { index, error }) => {
                let failed = group.remove(index);
                tracing::warn!(%error, "embedded store write failed; retrying the others without it");
                let _ = failed.reply.send(Err(error));
                if group.is_empty() {
                    return;
                }
            }
            Err(GroupError::Transaction(message)) => {
                tracing::error!(error = %message, requests = group.len(), "embedded store commit failed");
                for request in group {
                    let _ = request.reply.send(Err(StoreError::Unavailable(message.clone())));
                }
                return;
            }
        }
    }
}

/// Applies every request of the group in one write transaction and commits it. Returns each
/// request's outcome in order; a rejected request has its error there and wrote nothing.
fn try_commit(
    db: &Database,
    group: &[Request],
) -> Result<Vec<Result<Applied, StoreError>>, GroupError> {
    let transaction_error = |action: &str, error: &dyn std::fmt::Display| {
        GroupError::Transaction(tables::unavailable(action, error).to_string())
    };
    let mut txn = db
        .begin_write()
        .map_err(|error| transaction_error("starting a write transaction", &error))?;
    txn.set_durability(Durability::Immediate)
        .map_err(|error| transaction_error("setting durability", &error))?;

    let mut outcomes = Vec::with_capacity(group.len());
    let mut failure = None;
    {
        let mut tables = match WriteTables::open(&txn) {
            Ok(tables) => tables,
            Err(error) => return Err(GroupError::Transaction(error.to_string())),
        };
        for (index, request) in group.iter().enumerate() {
            match tables.apply(&request.op) {
                Ok(applied) => outcomes.push(Ok(applied)),
                Err(ApplyError::Rejected(error)) => outcomes.push(Err(error)),
                Err(ApplyError::Failed(error)) => {
                    failure = Some(GroupError::Operation { index, error });
                    break;
                }
            }
        }
    }

    if let Some(failure) = failure {
        if let Err(error) = txn.abort() {
            return Err(transaction_error("aborting a write transaction", &error));
        }
        return Err(failure);
    }
    txn.commit().map_err(|error| transaction_error("committing", &error))?;
    Ok(outcomes)
}
