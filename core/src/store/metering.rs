//! Billing Meter batches: the usage reported to Stripe for tenants on plans billed per send.
//!
//! A batch covers the sends committed on one usage counter (tenant, period, channel) since the
//! batch before it. `metered_through` is the counter's committed count the batch reaches, so a
//! batch's value is its `metered_through` minus the previous one's, and sequences count 1, 2, ...
//! per counter. A batch is stored before its meter event is sent, and the event's identifier is
//! derived from the batch's key, so a retry after a crash or a lost answer sends the same
//! identifier and Stripe counts it once.

use serde::{Deserialize, Serialize};

use crate::domain::Channel;
use crate::ids::TenantId;

/// One meter event to send, or sent, to Stripe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterBatch {
    pub tenant: TenantId,
    /// The billing period, `YYYY-MM`.
    pub period: String,
    pub channel: Channel,
    /// 1 for the counter's first batch, then one more for each.
    pub sequence: u64,
    /// The counter's committed sends this batch and the ones before it cover.
    pub metered_through: u64,
    /// Sends this batch reports: `metered_through` minus the previous batch's.
    pub value: u64,
    /// The Stripe customer billed.
    pub customer_id: String,
    /// The meter's `event_name`.
    pub event_name: String,
    /// The event's instant, Unix seconds.
    pub timestamp: i64,
    /// Whether Stripe accepted the event (or had it already).
    pub sent: bool,
}

impl MeterBatch {
    /// Returns the meter event identifier, unique per batch and at most 100 characters (a
    /// UUID, a period, a channel and a sequence make about 60).
    pub fn identifier(&self) -> String {
        format!("fu-{}-{}-{}-{}", self.tenant, self.period, self.channel.as_str(), self.sequence)
    }
}
