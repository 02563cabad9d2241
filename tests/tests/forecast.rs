//! The launch forecast against the real outcome: the same sequence and contacts, forecast
//! first and then dispatched on the virtual clock through the fakes, must give the same sends
//! per connection per day and the same last send.

use std::collections::BTreeMap;

use followup_core::clock::Clock as _;
use followup_tests::TestEngine;
use serde_json::{Value, json};

const CONTACTS: usize = 300;

fn contacts_csv() -> String {
    let mut csv = String::from("email,phone\n");
    for n in 0..CONTACTS {
        csv.push_str(&format!("person{n}@example.com,+1415{:07}\n", 2_000_000 + n));
    }
    csv
}

/// Sends per (provider, channel) and UTC day, from a forecast's answer.
fn forecast_days(forecast: &Value) -> BTreeMap<(String, String), BTreeMap<String, u64>> {
    let mut days = BTreeMap::new();
    for connection in forecast["connections"].as_array().cloned().unwrap_or_default() {
        let key = (
            connection["provider"].as_str().unwrap_or_default().to_owned(),
            connection["channel"].as_str().unwrap_or_default().to_owned(),
        );
        let per_day: BTreeMap<String, u64> = connection["days"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|day| {
                (
                    day["date"].as_str().unwrap_or_default().to_owned(),
                    day["sends"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        days.insert(key, per_day);
    }
    days
}

#[actix_rt::test]
async fn forecast_matches_dispatch() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    // Low caps, so that both the pace and the daily caps push sends into later days.
    let gmail = json!({"sender": "sales@example.com", "access_token": "test-gmail-token",
                       "limits": {"per_minute": 20, "per_day": 120}});
    let twilio = json!({"sender": "+15005550006",
                        "account_sid": "AC00000000000000000000000000000001",
                        "auth_token": "test-twilio-token",
                        "limits": {"per_minute": 30, "per_day": 200}});
    engine.connect(&key, "gmail", &gmail).await?;
    engine.connect(&key, "twilio", &twilio).await?;
    let sequence = json!({
        "name": "launch",
        "steps": [
            {"channel": "email", "delay": 0, "subject": "Hello", "body": "First."},
            {"channel": "sms", "delay": "1d", "body": "Second."}
        ],
        "window": {"weekdays": ["mon", "tue", "wed", "thu", "fri"],
                   "start": "09:00", "end": "17:00"}
    });
    let sequence = engine.create_sequence(&key, &sequence).await?;

    let start = engine.virtual_clock().now();
    let request = json!({"sequence_id": sequence, "contacts": CONTACTS, "start_at": start});
    let response = engine
        .http
        .post(engine.url("/v1/forecast"))
        .bearer_auth(&key)
        .json(&request)
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let forecast: Value = response.json().await?;
    // The same contacts as an upload, read and planned by the ingest code.
    let by_upload = engine
        .http
        .post(engine.url("/v1/forecast/upload"))
        .query(&[("sequence", sequence.as_str())])
        .bearer_auth(&key)
        .header("content-type", "text/csv")
        .body(format!("{}person0@example.com,+14152000000\nnot-an-email,\n", contacts_csv()))
        .send()
        .await?;
    assert_eq!(by_upload.status(), 200);
    let by_upload: Value = by_upload.json().await?;
    assert_eq!(by_upload["accepted"], CONTACTS + 1, "{by_upload}");
    assert_eq!(by_upload["duplicates"], 1, "the repeated row: {by_upload}");
    assert_eq!(by_upload["rejected"], 1, "{by_upload}");
    let fakes = engine.running.fakes()?;
    assert!(fakes.received().is_empty(), "a forecast sends nothing");
    let stored = engine.get_json(&key, "/v1/schedules").await?;
    assert_eq!(stored["schedules"], json!([]), "a forecast stores nothing");

    let (status, report) = engine.upload(&key, &sequence, "text/csv", contacts_csv()).await?;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["accepted"], CONTACTS, "{report}");
    engine.settle(60).await?;

    let mut outcome: BTreeMap<(String, String), BTreeMap<String, u64>> = BTreeMap::new();
    let received = fakes.received();
    for message in &received {
        let key = (message.provider.to_string(), message.channel.to_string());
        let day = message.received_at.date_naive().to_string();
        *outcome.entry(key).or_default().entry(day).or_default() += 1;
    }
    let predicted = forecast_days(&forecast);
    assert_eq!(predicted, outcome, "sends per connection per day: {forecast}");
    let uploaded = forecast_days(&by_upload["forecast"]);
    assert_eq!(uploaded, outcome, "the upload's forecast: {by_upload}");
    assert_eq!(by_upload["forecast"]["last_send_at"], forecast["last_send_at"]);
    assert!(predicted.values().all(|days| days.len() > 1), "the caps spread sends over days");
    let last = received.iter().map(|message| message.received_at).max();
    assert_eq!(forecast["last_send_at"], json!(last), "the last send");
    assert_eq!(forecast["follow_ups"], 2 * CONTACTS, "{forecast}");
    let email = &forecast["connections"][0];
    assert!(email["held_by_limits"].as_u64().unwrap_or(0) > 0, "the caps held sends back");
    Ok(())
}

#[actix_rt::test]
async fn forecast_rejects_bad_requests() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    let cases = [
        (json!({"contacts": 10}), 400, "exactly one of sequence_id and sequence"),
        (json!({"sequence_id": "nope", "contacts": 10}), 404, "sequence"),
        (json!({"sequence": {"name": "x", "steps": []}, "contacts": 10}), 400, "1 to 50 steps"),
        (
            json!({"sequence": {"name": "x", "steps": [{"channel": "sms", "body": "Hi"}]},
                   "contacts": 0}),
            400,
            "outside 1 to",
        ),
        (
            json!({"sequence": {"name": "x", "steps": [{"channel": "sms", "body": "Hi"}]},
                   "contacts": 5, "timezone": "Mars/Base"}),
            400,
            "unknown timezone",
        ),
    ];
    for (body, status, message) in cases {
        let response = engine
            .http
            .post(engine.url("/v1/forecast"))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await?;
        assert_eq!(response.status().as_u16(), status, "{body}");
        let answer: Value = response.json().await?;
        let text = answer["error"]["message"].as_str().unwrap_or_default().to_owned();
        assert!(text.contains(message), "{body}: {answer}");
    }
    Ok(())
}
