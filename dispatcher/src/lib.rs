//! followup-dispatcher: the engine's actors, its HTTP surface, its configuration and the
//! `followup` binary.

pub mod actors;
pub mod breaker;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod engine;
pub mod forecast;
pub mod http;
pub mod ingest;
pub mod lifecycle;
pub mod limiter;
pub mod operator_view;
pub mod server;
pub mod stops;
pub mod storage;
pub mod stripe_sync;
pub mod telemetry;
pub mod tokens;
pub mod unsubscribe;
pub mod webhooks;
