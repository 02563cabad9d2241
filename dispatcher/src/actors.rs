//! The actors of the engine (actix): one [`tenant::TenantActor`] per tenant, one
//! [`provider::ProviderActor`] per provider kind and one [`billing::BillingActor`].

pub mod billing;
pub mod null_provider;
pub mod provider;
pub mod tenant;

/// Capacity of every actor mailbox. A full mailbox makes `Addr::send` wait, which slows the
/// producer instead of growing memory.
pub const MAILBOX_CAPACITY: usize = 256;
