//! Operator console of followup: a terminal screen fed by the engine's operator API, with
//! totals, throughput, provider queues, tenants, failures and dead letters, and keys to pause,
//! resume and retry.
//!
//! [`App`] keeps the state, handles keys and draws; [`feed`] keeps snapshots coming;
//! [`client`] speaks HTTP; [`event_loop`] ties them to a terminal.

pub mod app;
pub mod client;
pub mod event_loop;
pub mod feed;
pub mod requests;
pub mod sse;
pub mod tenants;
mod view;

pub use app::{App, InputMode, PollOutcome, Status, View};
pub use client::{AdminClient, FetchError, SnapshotClient, SnapshotStream};
pub use feed::{Backoff, FeedUpdate, LinkState, spawn_feed, spawn_feed_with};
pub use requests::{Action, DeadLetterQuery, Request, Response, TenantQuery};
pub use sse::{SseEvent, SseParser};
pub use tenants::{RowSource, SortKey, TenantTable};
