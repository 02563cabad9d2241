//! The in-process provider of `--providers null`: it accepts every send at once, sends nothing
//! and counts what it accepted. It exists to measure the engine alone (the tenant and provider
//! actors, the limiters, billing and the store) without HTTP or a provider in the way. It is a
//! measuring tool, never a way to send: no message leaves the process.

use std::sync::atomic::{AtomicU64, Ordering};

use followup_adapters::outbound::SendOutcome;
use followup_core::domain::Provider;

/// Accepts every send of one provider kind and counts them.
#[derive(Debug)]
pub struct NullProvider {
    provider: Provider,
    accepted: AtomicU64,
}

impl NullProvider {
    pub fn new(provider: Provider) -> Self {
        Self { provider, accepted: AtomicU64::new(0) }
    }

    /// Accepts one send. The message id is `null-<provider>-<n>`, where `n` counts this
    /// provider's sends from 1, so the ids a run stores show how many sends were made.
    pub fn accept(&self) -> SendOutcome {
        let n = self.accepted.fetch_add(1, Ordering::Relaxed) + 1;
        SendOutcome::Accepted { provider_message_id: format!("null-{}-{n}", self.provider) }
    }
}
