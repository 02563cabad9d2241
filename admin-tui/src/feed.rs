//! The task that keeps snapshots coming: it reads the engine's event stream, falls back to
//! polling an engine that has none, and reconnects with backoff when the link drops.

use std::sync::Arc;
use std::time::{Duration, Instant};

use followup_core::api::AdminSnapshot;
use tokio::sync::mpsc;

use crate::client::{AdminClient, FetchError};

/// Period of `GET /admin/v1/snapshot` when the engine has no event stream; the stream sends
/// a snapshot at the same rate.
pub const POLL_PERIOD: Duration = Duration::from_secs(1);

/// First wait before reconnecting; each failure in a row doubles it up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Longest wait before reconnecting, so that the console is back within seconds of an engine
/// restart, at one request every ten seconds against an engine that stays down.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Capacity of the channel to the console. The console drains it every frame; when it falls
/// behind, the feed waits instead of piling up snapshots.
const CHANNEL_CAPACITY: usize = 16;

/// How the console receives snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// The first connection is being made.
    Connecting,
    /// Reading `GET /admin/v1/stream`.
    Streaming,
    /// Polling `GET /admin/v1/snapshot`, because the engine answered 404 for the stream.
    Polling,
    /// The last attempt failed for `reason`; the next one starts at `retry_at`.
    Retrying { reason: String, attempt: u32, retry_at: Instant },
    /// The feed gave up for `reason` and nothing updates any more.
    Stopped { reason: String },
}

/// One message of the feed to the console.
#[derive(Clone, Debug)]
pub enum FeedUpdate {
    Snapshot(Arc<AdminSnapshot>),
    Link(LinkState),
}

/// Waits between reconnection attempts: doubling from [`FIRST_BACKOFF`] up to
/// [`MAX_BACKOFF`], back to the start after a snapshot arrives.
#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    /// Failures since the last snapshot.
    attempt: u32,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self { first, max, attempt: 0 }
    }

    /// Counts one more failure and returns it with the wait before the next attempt.
    pub fn fail(&mut self) -> (u32, Duration) {
        let doublings = self.attempt.min(16);
        self.attempt = self.attempt.saturating_add(1);
        let wait = self.first.saturating_mul(1 << doublings).min(self.max);
        (self.attempt, wait)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Spawns the feed on the current tokio runtime, with the default backoff. The task ends when
/// the receiver is dropped.
pub fn spawn_feed(client: AdminClient) -> mpsc::Receiver<FeedUpdate> {
    spawn_feed_with(client, Backoff::new(FIRST_BACKOFF, MAX_BACKOFF), POLL_PERIOD)
}

/// Spawns the feed with the given backoff and poll period, which tests shorten.
pub fn spawn_feed_with(
    client: AdminClient,
    backoff: Backoff,
    poll_period: Duration,
) -> mpsc::Receiver<FeedUpdate> {
    let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
    let feed = Feed { client, sender, backoff, poll_period };
    tokio::spawn(feed.run());
    receiver
}

/// Why a connection ended.
enum Ended {
    Failed(FetchError),
    /// The console went away.
    Closed,
}

struct Feed {
    client: AdminClient,
    sender: mpsc::Sender<FeedUpdate>,
    backoff: Backoff,
    poll_period: Duration,
}

impl Feed {
    async fn run(mut self) {
        loop {
            // Each connection tries the stream first, so an engine upgraded while the console
            // polled is streamed from after its restart.
            let ended = match self.client.open_stream().await {
                Ok(stream) => self.read_stream(stream).await,
                Err(error) if error.is_not_found() => self.poll().await,
                Err(error) => Ended::Failed(error),
            };
            let Ended::Failed(error) = ended else { return };

            let (attempt, wait) = self.backoff.fail();
            let reason = error.to_string();
            let retry_at = Instant::now() + wait;
            let state = LinkState::Retrying { reason, attempt, retry_at };
            if !self.publish(FeedUpdate::Link(state)).await {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn read_stream(&mut self, mut stream: crate::client::SnapshotStream) -> Ended {
        if !self.publish(FeedUpdate::Link(LinkState::Streaming)).await {
            return Ended::Closed;
        }
        loop {
            match stream.next_snapshot().await {
                Ok(snapshot) => {
                    if !self.deliver(snapshot).await {
                        return Ended::Closed;
                    }
                }
                Err(error) => return Ended::Failed(error),
            }
        }
    }

    async fn poll(&mut self) -> Ended {
        if !self.publish(FeedUpdate::Link(LinkState::Polling)).await {
            return Ended::Closed;
        }
        let mut ticker = tokio::time::interval(self.poll_period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match self.client.fetch_snapshot().await {
                Ok(snapshot) => {
                    if !self.deliver(snapshot).await {
                        return Ended::Closed;
                    }
                }
                Err(error) => return Ended::Failed(error),
            }
        }
    }

    async fn deliver(&mut self, snapshot: AdminSnapshot) -> bool {
        self.backoff.reset();
        self.publish(FeedUpdate::Snapshot(Arc::new(snapshot))).await
    }

    /// Sends `update` to the console and returns whether the console still listens.
    async fn publish(&self, update: FeedUpdate) -> bool {
        self.sender.send(update).await.is_ok()
    }
}
