//! The stale-send guard: after an outage, follow-ups past their step's maximum lateness are
//! planned again into the next send window (or skipped), and the later steps move with them.

use chrono::{DateTime, TimeZone, Utc};
use followup_core::clock::Clock as _;
use followup_tests::TestEngine;
use serde_json::{Value, json};

/// Two emails a day apart in New York office hours; the first may be at most an hour late.
fn sequence(name: &str, policy: Option<&str>, max_lateness: Option<&str>) -> Value {
    let mut body = json!({
        "name": name,
        "steps": [
            {"channel": "email", "delay": 0, "subject": "Hello", "body": "First."},
            {"channel": "email", "delay": "1d", "subject": "Again", "body": "Second."}
        ],
        "window": {"weekdays": ["mon", "tue", "wed", "thu", "fri"],
                   "start": "09:00", "end": "17:00"}
    });
    if let Some(limit) = max_lateness {
        body["steps"][0]["max_lateness"] = json!(limit);
    }
    if let Some(policy) = policy {
        body["stale_policy"] = json!(policy);
    }
    body
}

fn utc(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, day, hour, 0, 0).single().expect("valid instant")
}

/// The instants at which the fakes accepted sends to `to`, in order.
fn received_at(engine: &TestEngine, to: &str) -> Vec<DateTime<Utc>> {
    let fakes = engine.running.fakes().expect("fakes");
    fakes.received().iter().filter(|m| m.to == to).map(|m| m.received_at).collect()
}

async fn follow_ups(engine: &TestEngine, key: &str, sequence: &str, email: &str) -> Value {
    let path = format!("/v1/schedules?sequence={sequence}&contact={email}");
    engine.get_json(key, &path).await.expect("schedule")["follow_ups"].clone()
}

#[actix_rt::test]
async fn outage_backlog_waits_for_the_window() -> anyhow::Result<()> {
    // The engine's clock starts on Monday 2026-12-07 at 10:00 in New York (15:00 UTC).
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    engine.connect_fakes(&key).await?;
    let replan = engine.create_sequence(&key, &sequence("replan", None, Some("1h"))).await?;
    let skip = engine.create_sequence(&key, &sequence("skip", Some("skip"), Some("1h"))).await?;
    let unguarded = engine.create_sequence(&key, &sequence("unguarded", None, None)).await?;
    engine.upload(&key, &replan, "text/csv", "email\nana@example.com\n").await?;
    engine.upload(&key, &skip, "text/csv", "email\nbob@example.com\n").await?;
    engine.upload(&key, &unguarded, "text/csv", "email\ncid@example.com\n").await?;

    // An outage: nothing runs until Monday 20:00 in New York, after the window closed.
    let clock = engine.virtual_clock();
    clock.advance_to(utc(8, 1));
    engine.running.engine.run_round().await;
    assert!(received_at(&engine, "ana@example.com").is_empty(), "not sent at 20:00");
    assert!(received_at(&engine, "bob@example.com").is_empty(), "skipped, not sent");
    assert_eq!(received_at(&engine, "cid@example.com"), [utc(8, 1)], "no guard: sent late");

    let ana = follow_ups(&engine, &key, &replan, "ana@example.com").await;
    assert_eq!(ana[0]["state"], "pending", "{ana}");
    assert_eq!(ana[0]["due_at"], json!(utc(8, 14)), "Tuesday 09:00 in New York: {ana}");
    assert_eq!(ana[1]["due_at"], json!(utc(9, 14)), "the next step a day later: {ana}");
    let bob = follow_ups(&engine, &key, &skip, "bob@example.com").await;
    assert_eq!(bob[0]["state"], "skipped", "{bob}");
    let reason = bob[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("stale: 600 minutes past"), "{reason}");
    assert_eq!(bob[1]["due_at"], json!(utc(8, 15)), "a skip leaves the next step's plan");

    engine.settle(10).await?;
    assert_eq!(received_at(&engine, "ana@example.com"), [utc(8, 14), utc(9, 14)]);
    assert_eq!(received_at(&engine, "bob@example.com"), [utc(8, 15)]);
    assert!(clock.now() >= utc(9, 14), "the clock ran to the last send");
    Ok(())
}

#[actix_rt::test]
async fn invalid_max_lateness_is_rejected() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    let response = engine
        .http
        .post(engine.url("/v1/sequences"))
        .bearer_auth(&key)
        .json(&sequence("bad", None, Some("soon")))
        .send()
        .await?;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await?;
    let message = body["error"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("step 1: max_lateness"), "{body}");
    Ok(())
}
