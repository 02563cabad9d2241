//! Fairness between tenants, in real time: while one tenant's large upload is ingested and
//! dispatched, another tenant's due follow-ups still go out at the pace of that tenant's own
//! limit.

use std::time::{Duration, Instant};

use chrono::Utc;
use followup_core::domain::Provider;
use followup_tests::{TestEngine, email_now_sequence};
use serde_json::json;

/// Rows of the large tenant's upload. Large enough that its ingest and dispatch are still
/// running when the small tenant's sends are due, small enough for a debug build in CI.
const LARGE_UPLOAD_ROWS: usize = 30_000;
/// Follow-ups of the small tenant, all due at once.
const SMALL_UPLOAD_ROWS: usize = 10;
/// The small tenant's own limit: one send every half second.
const SMALL_PER_MINUTE: u32 = 120;

async fn connect_gmail(
    engine: &TestEngine,
    api_key: &str,
    sender: &str,
    token: &str,
    per_minute: u32,
) -> anyhow::Result<()> {
    let body = json!({"sender": sender, "access_token": token,
                      "limits": {"per_minute": per_minute, "per_day": 1_000_000}});
    engine.connect(api_key, "gmail", &body).await?;
    Ok(())
}

fn contacts_csv(prefix: &str, rows: usize) -> String {
    let mut csv = String::from("email,first_name\n");
    for row in 0..rows {
        csv.push_str(&format!("{prefix}{row}@example.org,Person{row}\n"));
    }
    csv
}

#[actix_rt::test]
async fn a_large_upload_does_not_delay_another_tenants_due_follow_ups() -> anyhow::Result<()> {
    let engine = TestEngine::start_real_time(|_| {}).await?;
    let fakes = engine.running.fakes.clone().expect("fake mode");

    let large = engine.create_tenant("large", "pro").await?;
    connect_gmail(&engine, &large, "bulk@large.example", "large-token", 6_000).await?;
    let large_sequence = engine.create_sequence(&large, &email_now_sequence()).await?;
    let small = engine.create_tenant("small", "pro").await?;
    connect_gmail(&engine, &small, "owner@small.example", "small-token", SMALL_PER_MINUTE).await?;
    let small_sequence = engine.create_sequence(&small, &email_now_sequence()).await?;

    // The large upload runs in the background. The small one starts once the large tenant's
    // sends are flowing, so that both ingest and dispatch of the large tenant compete.
    let large_upload = {
        let client = engine.http.clone();
        let url = engine.url("/v1/schedules/bulk");
        let body = contacts_csv("large", LARGE_UPLOAD_ROWS);
        let key = large.clone();
        let sequence = large_sequence.clone();
        actix_rt::spawn(async move {
            client
                .post(url)
                .query(&[("sequence", sequence)])
                .bearer_auth(key)
                .header("content-type", "text/csv")
                .body(body)
                .send()
                .await
                .map(|response| response.status().as_u16())
        })
    };
    let waiting_since = Instant::now();
    while fakes.stats().received_by_provider.get(&Provider::Gmail).copied().unwrap_or(0) < 100 {
        anyhow::ensure!(
            waiting_since.elapsed() < Duration::from_secs(120),
            "the large tenant's sends never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let small_due_at = Utc::now();
    let csv = contacts_csv("small", SMALL_UPLOAD_ROWS);
    let (status, report) = engine.upload(&small, &small_sequence, "text/csv", csv).await?;
    assert_eq!(status, 200, "{report}");

    // The small tenant's own limit spaces its sends half a second apart, so the last is due
    // about 5 s after the first. Generous slack covers a loaded CI machine; a tenant stuck
    // behind the large one would wait for its whole upload instead.
    let own_pace = Duration::from_millis(60_000 / u64::from(SMALL_PER_MINUTE))
        * u32::try_from(SMALL_UPLOAD_ROWS).unwrap_or(u32::MAX);
    let allowed = own_pace + Duration::from_secs(10);
    let started = Instant::now();
    let small_sent = |received: &[followup_adapters::fakes::ReceivedMessage]| {
        received.iter().filter(|message| message.from == "owner@small.example").count()
    };
    loop {
        let received = fakes.received();
        if small_sent(&received) == SMALL_UPLOAD_ROWS {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < allowed,
            "the small tenant sent {} of {SMALL_UPLOAD_ROWS} within {allowed:?}",
            small_sent(&received)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received = fakes.received();
    let large_sent_meanwhile = received.iter().filter(|m| m.from == "bulk@large.example").count();
    let small_lateness = received
        .iter()
        .filter(|message| message.from == "owner@small.example")
        .map(|message| message.received_at - small_due_at)
        .max()
        .unwrap_or_default();
    eprintln!(
        "small tenant done {small_lateness} after its upload began; the large tenant had \
         {large_sent_meanwhile} of {LARGE_UPLOAD_ROWS} sent by then"
    );
    assert!(
        large_sent_meanwhile < LARGE_UPLOAD_ROWS,
        "the large tenant had finished, so the two never competed"
    );

    let status = large_upload.await??;
    assert_eq!(status, 200);
    assert_eq!(fakes.stats().rate_limit_violations, 0, "a limit was exceeded");
    Ok(())
}
