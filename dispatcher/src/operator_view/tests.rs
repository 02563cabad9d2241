use chrono::Utc;
use followup_core::api::FailureRecord;
use followup_core::domain::{Channel, Provider};
use followup_core::ids::TenantId;

use super::{
    FAILURES_KEPT, LATENESS_SLOT_SECONDS, LATENESS_SLOTS, LiveStats, QueueEvent, scrub_reason,
};

#[test]
fn scrub_removes_addresses_numbers_and_tokens() {
    let reason =
        "400 invalid recipient ana@example.com (+15551234567) token ya29.aAfHSMBxkLqZpWyTcQrStUv";
    let scrubbed = scrub_reason(reason);
    assert_eq!(scrubbed, "400 invalid recipient [address] [number] token [token]");
    let long = "x ".repeat(200);
    assert!(scrub_reason(&long).chars().count() <= 161, "long reasons are cut");
}

#[test]
fn lateness_window_forgets_old_slots() {
    let live = LiveStats::default();
    for millis in 1..=1_000 {
        live.record_lateness_at(millis, 0);
    }
    let summary = live.lateness_at(5);
    assert_eq!(summary.samples, 1_000);
    assert!((450..=550).contains(&summary.p50_ms), "p50 {}", summary.p50_ms);
    assert!((980..=1_000).contains(&summary.p99_ms), "p99 {}", summary.p99_ms);
    assert_eq!(summary.max_ms, 1_000);
    // One whole window later the old samples are out.
    let later = LATENESS_SLOT_SECONDS * LATENESS_SLOTS as u64 + 1;
    live.record_lateness_at(7, later);
    let summary = live.lateness_at(later);
    assert_eq!((summary.samples, summary.max_ms), (1, 7));
}

#[test]
fn hours_of_lateness_fit_the_buckets() {
    let live = LiveStats::default();
    let five_hours = 5 * 3_600_000;
    live.record_lateness_at(five_hours, 0);
    let summary = live.lateness_at(0);
    assert_eq!(summary.p50_ms, five_hours, "capped at the maximum seen");
}

#[test]
fn failures_ring_is_bounded_and_newest_first() {
    let live = LiveStats::default();
    let tenant = TenantId::generate();
    for n in 0..(FAILURES_KEPT + 5) {
        live.record_failure(FailureRecord {
            at: Utc::now(),
            tenant,
            follow_up: format!("f{n}"),
            provider: "gmail".into(),
            channel: "email".into(),
            kind: "retry".into(),
            reason: format!("503 unavailable for bob{n}@example.com"),
        });
    }
    let kept = live.failures(None, usize::MAX);
    assert_eq!(kept.len(), FAILURES_KEPT);
    assert_eq!(kept[0].follow_up, format!("f{}", FAILURES_KEPT + 4));
    assert!(kept.iter().all(|f| !f.reason.contains('@')), "an address was kept");
    assert!(live.failures(Some(TenantId::generate()), 10).is_empty());
}

#[test]
fn rates_average_the_last_seconds_per_queue() {
    let live = LiveStats::default();
    // Queue 2 is Twilio SMS.
    for second in 0..5 {
        for _ in 0..4 {
            live.count_at(2, QueueEvent::Send, second);
        }
        live.count_at(2, QueueEvent::Error, second);
    }
    live.in_flight(Provider::Twilio, Channel::Sms, 1);
    live.in_flight(Provider::Gmail, Channel::Sms, 1);
    let slots = live.queues[2].slots.lock().expect("lock");
    let sends: u64 = slots.iter().map(|slot| slot.sends).sum();
    assert_eq!(sends, 20);
    drop(slots);
    assert_eq!(live.queues[2].in_flight.load(std::sync::atomic::Ordering::Relaxed), 1);
    let others: i64 = [0, 1, 3]
        .iter()
        .map(|&i| live.queues[i].in_flight.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    assert_eq!(others, 0, "a provider that does not carry a channel has no queue for it");
}
