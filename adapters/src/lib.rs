//! followup-adapters: everything that talks to the outside world.
//!
//! - [`gmail`], [`outlook`], [`twilio`]: clients that build requests exactly as the real APIs
//!   expect them, with configurable base URLs;
//! - [`fakes`]: wire-level fakes of those APIs on loopback, for tests, the demo and the load
//!   harness;
//! - [`http`]: the shared HTTP client and the steps of a send common to all providers;
//! - [`mime`]: the RFC 5322 message of an email follow-up;
//! - [`oauth`]: refreshing the access tokens of Gmail and Outlook connections;
//! - [`retry_after`]: parsing of `Retry-After` and of Gmail's "Retry after <instant>" text;
//! - [`stripe_api`]: the Stripe API client (customers, subscriptions, Billing Meter events);
//! - [`embedded`]: the default store, a crash-safe file store in the data directory.

pub mod embedded;
pub mod fakes;
pub mod ferretdb_fixture;
pub mod gmail;
pub mod http;
pub mod mime;
pub mod mongo;
pub mod oauth;
pub mod outbound;
pub mod outlook;
pub mod retry_after;
pub mod stripe_api;
pub mod stripe_mock_fixture;
#[cfg(test)]
mod testing;
pub mod twilio;
