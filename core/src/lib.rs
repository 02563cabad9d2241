//! followup-core: the domain of the follow-up engine, free of I/O.
//!
//! Everything here is pure: ids and records, the clock abstraction, due-time math, templates,
//! parsing and validation of bulk uploads, and the [`store::Store`] trait that the embedded and
//! MongoDB stores implement. Crates that do I/O (`followup-adapters`, `followup-dispatcher`)
//! depend on this one, never the other way round.

pub mod api;
pub mod clock;
pub mod crypto;
pub mod delay;
pub mod domain;
pub mod ids;
pub mod ingest;
pub mod limits;
pub mod plan;
pub mod sensitive;
pub mod store;
pub mod suppression;
pub mod template;
