//! Operator console of followup: a terminal screen that polls the engine's operator API and
//! shows totals, queues per channel and tenants by backlog.
//!
//! [`App`] contains the state and draws it; [`client`] fetches snapshots in the background.

pub mod app;
pub mod client;
pub mod sse;
pub mod tenants;
mod view;

pub use app::{App, Connection, InputMode};
pub use client::{FetchError, PollOutcome, SnapshotClient, spawn_poller};
pub use sse::{SseEvent, SseParser};
pub use tenants::{SortKey, TenantOrder};
