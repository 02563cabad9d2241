//! Checks of the meter batches: insertion once per sequence, the last batch per counter, the
//! unsent batches in order, and marking sent.

use super::put_new_tenant;
use crate::domain::Channel;
use crate::store::metering::MeterBatch;
use crate::store::usage::{BillingPeriod, UsageKey};
use crate::store::{Store, StoreError};

fn batch(key: &UsageKey, sequence: u64, metered_through: u64, value: u64) -> MeterBatch {
    MeterBatch {
        tenant: key.tenant,
        period: key.period.to_string(),
        channel: key.channel,
        sequence,
        metered_through,
        value,
        customer_id: "cus_meter".to_owned(),
        event_name: "followup_sends".to_owned(),
        timestamp: 1_796_000_000 + i64::try_from(sequence).unwrap_or(0),
        sent: false,
    }
}

/// Checks that a sequence is inserted once, that the last batch is the highest sequence of its
/// own counter only, and that marking sent is durable and idempotent.
pub async fn meter_batches_insert_once_and_mark(store: &dyn Store) {
    let tenant = put_new_tenant(store).await;
    let period = BillingPeriod::parse("2026-12").expect("period");
    let email = UsageKey { tenant: tenant.id, period, channel: Channel::Email };
    let sms = UsageKey { channel: Channel::Sms, ..email };
    let next_period = UsageKey { period: period.next(), ..email };

    assert_eq!(store.last_meter_batch(email).await.expect("last"), None);
    assert!(store.insert_meter_batch(batch(&email, 1, 5, 5)).await.expect("insert"));
    let duplicate = batch(&email, 1, 9, 9);
    let inserted = store.insert_meter_batch(duplicate).await.expect("insert");
    assert!(!inserted, "a sequence is inserted once");
    // Inserted out of order on purpose: the last batch is the highest sequence.
    assert!(store.insert_meter_batch(batch(&email, 3, 12, 4)).await.expect("insert"));
    assert!(store.insert_meter_batch(batch(&email, 2, 8, 3)).await.expect("insert"));
    assert!(store.insert_meter_batch(batch(&sms, 1, 2, 2)).await.expect("insert"));

    let last = store.last_meter_batch(email).await.expect("last").expect("a batch");
    assert_eq!(last, batch(&email, 3, 12, 4));
    let last_sms = store.last_meter_batch(sms).await.expect("last").expect("a batch");
    assert_eq!(last_sms.sequence, 1, "{last_sms:?}");
    assert_eq!(store.last_meter_batch(next_period).await.expect("last"), None);

    let first = store.unsent_meter_batches(10_000).await.expect("unsent");
    let own: Vec<(Channel, u64)> = first
        .iter()
        .filter(|batch| batch.tenant == tenant.id)
        .map(|batch| (batch.channel, batch.sequence))
        .collect();
    assert_eq!(own.len(), 4, "{own:?}");
    let email_order: Vec<u64> =
        own.iter().filter(|(c, _)| *c == Channel::Email).map(|(_, s)| *s).collect();
    assert_eq!(email_order, vec![1, 2, 3], "ordered by sequence");
    assert!(first.iter().all(|batch| !batch.sent));

    store.mark_meter_batch_sent(email, 2).await.expect("mark");
    store.mark_meter_batch_sent(email, 2).await.expect("marking again changes nothing");
    let unsent = store.unsent_meter_batches(10_000).await.expect("unsent");
    let own: Vec<(Channel, u64)> = unsent
        .iter()
        .filter(|batch| batch.tenant == tenant.id)
        .map(|batch| (batch.channel, batch.sequence))
        .collect();
    assert!(!own.contains(&(Channel::Email, 2)), "{own:?}");
    assert_eq!(own.len(), 3, "{own:?}");

    let missing = store.mark_meter_batch_sent(email, 99).await;
    assert!(matches!(missing, Err(StoreError::Conflict(_))), "{missing:?}");
    let limited = store.unsent_meter_batches(1).await.expect("unsent");
    assert_eq!(limited.len(), 1, "the limit holds");
}
