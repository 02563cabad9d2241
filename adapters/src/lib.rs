//! followup-adapters: everything that talks to the outside world.
//!
//! - [`gmail`], [`outlook`], [`twilio`]: clients that build requests exactly as the real APIs
//!   expect them, with configurable base URLs;
//! - [`fakes`]: wire-level fakes of those APIs on loopback, for tests, the demo and the load
//!   harness;
//! - [`embedded`]: the default store, a crash-safe file store in the data directory.

pub mod embedded;
pub mod fakes;
pub mod gmail;
pub mod outbound;
pub mod outlook;
pub mod twilio;
