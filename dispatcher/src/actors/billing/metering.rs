//! Metered usage: Billing Meter events for tenants whose plan is billed per send.
//!
//! A flush reads the usage counters of each such tenant this node dispatches, this period's
//! and the last one's. For each counter whose committed sends passed what was metered, it
//! stores a new [`MeterBatch`] before anything is sent: the next sequence, with the sends
//! committed since the previous batch. Then it sends every unsent batch as one meter event
//! whose identifier (and idempotency key) is derived from the batch's key, and marks it sent.
//! A batch whose request failed, timed out or was cut off by a crash stays unsent and goes
//! again with the same identifier, at the next flush or after a restart, which reads the
//! unsent batches from the store; Stripe counts an identifier once.
//!
//! Requests go one at a time, at most `meter_requests_per_second` a second (20 by default),
//! far below the 1,000 meter event calls a second Stripe allows a live account, and under the
//! 25 requests a second of a sandbox.
//!
//! NOTE: an event's timestamp is the flush's instant (the period's last second for the period
//! before), and Stripe files it under the subscription period containing it, which need not be
//! the calendar month the engine counts in. Stripe rejects timestamps more than 35 days old,
//! so a batch left unsent that long fails for good.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use followup_adapters::stripe_api::{MeterEvent, StripeApiError, StripeClient};
use followup_core::clock::Clock;
use followup_core::ids::TenantId;
use followup_core::store::metering::MeterBatch;
use followup_core::store::usage::{BillingPeriod, UsageKey};
use followup_core::store::{Store, StoreError};
use serde::Serialize;

/// Unsent batches read from the store when the first flush resumes them.
const RESUME_LIMIT: usize = 10_000;

/// Settings of the metered usage reports of this node.
#[derive(Clone, Debug)]
pub struct MeterSettings {
    pub stripe: StripeClient,
    pub clock: Arc<dyn Clock>,
    /// Time between flushes.
    pub flush_interval: Duration,
    /// Meter event requests sent per second at most.
    pub requests_per_second: u32,
}

/// Counts of batches of one flush.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FlushReport {
    /// Batches stored by this flush.
    pub batched: usize,
    /// Batches Stripe accepted (or had already).
    pub sent: usize,
    /// Batches left unsent for the next flush.
    pub unsent: usize,
}

/// The metering state of one node.
#[derive(Debug)]
pub(super) struct Meter {
    settings: MeterSettings,
    /// Batches stored and not yet accepted by Stripe, oldest first.
    pending: Vec<MeterBatch>,
    /// The last batch of each counter seen by this node, to spare a store read per flush.
    last: HashMap<UsageKey, MeterBatch>,
    resumed: bool,
}

/// A tenant billed per send: its Stripe customer and the meter's event name.
pub(super) struct MeteredTenant {
    pub tenant: TenantId,
    pub customer_id: String,
    pub event_name: String,
}

impl Meter {
    pub(super) fn new(settings: MeterSettings) -> Meter {
        Meter { settings, pending: Vec::new(), last: HashMap::new(), resumed: false }
    }

    pub(super) fn flush_interval(&self) -> Duration {
        self.settings.flush_interval
    }

    /// Stores the batches the tenants' counters call for, then sends every unsent batch.
    pub(super) async fn flush(
        &mut self,
        store: &dyn Store,
        tenants: &[MeteredTenant],
    ) -> Result<FlushReport, StoreError> {
        if !self.resumed {
            self.pending = store.unsent_meter_batches(RESUME_LIMIT).await?;
            self.resumed = true;
            if !self.pending.is_empty() {
                tracing::info!(batches = self.pending.len(), "resuming unsent meter batches");
            }
        }
        let now = self.settings.clock.now();
        let mut report = FlushReport::default();
        for tenant in tenants {
            report.batched += self.batch_tenant(store, tenant, now).await?;
        }
        report.sent = self.send_pending(store).await?;
        report.unsent = self.pending.len();
        Ok(report)
    }

    /// Stores a batch for each counter of `tenant` with sends not metered yet; returns how
    /// many it stored.
    async fn batch_tenant(
        &mut self,
        store: &dyn Store,
        tenant: &MeteredTenant,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let current = BillingPeriod::containing(now);
        let previous = BillingPeriod::containing(current.start() - chrono::Duration::seconds(1));
        let mut stored = 0;
        for period in [previous, current] {
            let counters = store.usage(Some(tenant.tenant), period.to_string()).await?;
            for counter in counters {
                let key = UsageKey { tenant: tenant.tenant, period, channel: counter.channel };
                // The last second of a past period, so the event falls inside it.
                let timestamp = now.min(period.end() - chrono::Duration::seconds(1)).timestamp();
                if self.batch_counter(store, tenant, key, counter.committed, timestamp).await? {
                    stored += 1;
                }
            }
        }
        Ok(stored)
    }

    async fn batch_counter(
        &mut self,
        store: &dyn Store,
        tenant: &MeteredTenant,
        key: UsageKey,
        committed: u64,
        timestamp: i64,
    ) -> Result<bool, StoreError> {
        let last = match self.last.get(&key) {
            Some(last) => Some(last.clone()),
            None => store.last_meter_batch(key).await?,
        };
        let metered = last.as_ref().map_or(0, |last| last.metered_through);
        if committed <= metered {
            return Ok(false);
        }
        let batch = MeterBatch {
            tenant: key.tenant,
            period: key.period.to_string(),
            channel: key.channel,
            sequence: last.as_ref().map_or(1, |last| last.sequence + 1),
            metered_through: committed,
            value: committed - metered,
            customer_id: tenant.customer_id.clone(),
            event_name: tenant.event_name.clone(),
            timestamp,
            sent: false,
        };
        if !store.insert_meter_batch(batch.clone()).await? {
            // Another node stored this sequence first; the next flush starts from its batch.
            self.last.remove(&key);
            return Ok(false);
        }
        self.last.insert(key, batch.clone());
        self.pending.push(batch);
        Ok(true)
    }

    /// Sends the pending batches in order and marks the accepted ones sent; returns how many.
    /// A retryable failure stops the flush, so later batches wait behind the first.
    async fn send_pending(&mut self, store: &dyn Store) -> Result<usize, StoreError> {
        let pause = Duration::from_secs(1) / self.settings.requests_per_second.max(1);
        let mut sent = 0;
        let mut kept = Vec::new();
        let mut batches = std::mem::take(&mut self.pending).into_iter();
        for batch in batches.by_ref() {
            let event = MeterEvent {
                event_name: batch.event_name.clone(),
                customer_id: batch.customer_id.clone(),
                value: batch.value,
                identifier: batch.identifier(),
                timestamp: batch.timestamp,
            };
            let outcome = self.settings.stripe.create_meter_event(&event).await;
            tokio::time::sleep(pause).await;
            match outcome {
                Ok(_) => {}
                Err(error) if already_recorded(&error) => {
                    tracing::info!(identifier = %event.identifier,
                        "Stripe already has this meter event; marked sent");
                }
                Err(error) => {
                    let retryable = error.is_retryable();
                    tracing::warn!(identifier = %event.identifier, tenant = %batch.tenant,
                        %error, retryable, "sending a meter event failed; it stays unsent");
                    kept.push(batch);
                    if retryable {
                        break;
                    }
                    continue;
                }
            }
            let key = usage_key(&batch)?;
            store.mark_meter_batch_sent(key, batch.sequence).await?;
            sent += 1;
        }
        kept.extend(batches);
        self.pending = kept;
        Ok(sent)
    }
}

fn usage_key(batch: &MeterBatch) -> Result<UsageKey, StoreError> {
    let period = BillingPeriod::parse(&batch.period)
        .map_err(|reason| StoreError::Corrupt { table: "meter_batches", reason })?;
    Ok(UsageKey { tenant: batch.tenant, period, channel: batch.channel })
}

/// Returns whether Stripe rejected a meter event because it has its identifier already, which
/// happens when a retry comes after Stripe pruned the idempotency key (24 hours).
///
/// NOTE: Stripe's error code for this case is not in its API description; the check follows
/// the message's wording and our fake's `resource_already_exists`.
fn already_recorded(error: &StripeApiError) -> bool {
    match error {
        StripeApiError::Api { status: 400, code, message, .. } => {
            code.contains("resource_already_exists") || message.contains("already exists")
        }
        _ => false,
    }
}
