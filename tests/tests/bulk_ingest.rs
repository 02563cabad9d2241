//! Bulk upload over HTTP: reports, idempotence, formats and limits.

use followup_tests::{TestEngine, email_now_sequence};
use serde_json::Value;

const CONTACTS: &str = "Customer Id,First Name,Email,Phone 1,Company\r\n\
    c1,Ada,ada@example.com,+1 202 555 0101,\"Lovelace, Ltd\"\r\n\
    c2,Bob,not-an-email,+1 202 555 0102,Bob Inc\r\n\
    c3,Cy,cy@example.org,12,Cy Co\r\n\
    c4,Di,di@example.net,,\"Multi\nLine Co\"\r\n";

fn errors_of(report: &Value) -> Vec<(u64, String)> {
    report["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    (e["line"].as_u64().unwrap_or(0), e["field"].as_str().unwrap_or("").into())
                })
                .collect()
        })
        .unwrap_or_default()
}

#[actix_rt::test]
async fn upload_reports_each_rejected_row() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;

    let (status, report) = engine.upload(&key, &sequence, "text/csv", CONTACTS).await?;

    assert_eq!(status, 200, "{report}");
    assert_eq!(report["rows"], 4);
    assert_eq!(report["accepted"], 2);
    assert_eq!(report["rejected"], 2);
    assert_eq!(errors_of(&report), vec![(3, "email".to_owned()), (4, "phone".to_owned())]);
    Ok(())
}

#[actix_rt::test]
async fn upload_twice_adds_nothing() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;

    let (_, first) = engine.upload(&key, &sequence, "text/csv", CONTACTS).await?;
    let (_, second) = engine.upload(&key, &sequence, "text/csv", CONTACTS).await?;

    assert_eq!(first["created"], 2);
    assert_eq!(second["accepted"], 2);
    assert_eq!(second["created"], 0);
    assert_eq!(second["duplicates"], 2);
    let counts = engine.running.engine.store().count_follow_ups(None).await?;
    assert_eq!(counts.values().sum::<u64>(), 2, "one follow-up per accepted contact");
    Ok(())
}

#[actix_rt::test]
async fn ndjson_upload_is_read_by_line() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
    let body = "{\"email\":\"a@example.com\",\"first_name\":\"A\"}\n\
                not json\n\
                {\"email\":\"b@example.com\",\"timezone\":\"Mars/Olympus\"}\n\
                {\"email\":\"c@example.com\",\"timezone\":\"Asia/Kolkata\"}\n";

    let (status, report) = engine.upload(&key, &sequence, "application/x-ndjson", body).await?;

    assert_eq!(status, 200, "{report}");
    assert_eq!(report["accepted"], 2);
    assert_eq!(report["rejected"], 2);
    let lines: Vec<u64> = errors_of(&report).into_iter().map(|(line, _)| line).collect();
    assert_eq!(lines, vec![2, 3]);
    Ok(())
}

#[actix_rt::test]
async fn oversized_upload_is_refused_with_413() -> anyhow::Result<()> {
    let engine = TestEngine::start(|config| config.ingest.max_bytes = 1_000).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
    let mut body = String::from("email\n");
    for n in 0..200 {
        body.push_str(&format!("person{n}@example.com\n"));
    }

    let (status, answer) = engine.upload(&key, &sequence, "text/csv", body).await?;

    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["code"], "payload_too_large");
    Ok(())
}

#[actix_rt::test]
async fn row_limit_stops_with_stored_rows_reported() -> anyhow::Result<()> {
    let engine = TestEngine::start(|config| {
        config.ingest.max_rows = 5;
        config.ingest.batch_rows = 2;
    })
    .await?;
    let key = engine.create_tenant("acme", "pro").await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
    let mut body = String::from("email\n");
    for n in 0..20 {
        body.push_str(&format!("person{n}@example.com\n"));
    }

    let (status, answer) = engine.upload(&key, &sequence, "text/csv", body).await?;

    assert_eq!(status, 413, "{answer}");
    let stored = answer["report"]["accepted"].as_u64().unwrap_or(u64::MAX);
    assert_eq!(stored, 5, "the rows before the limit are stored: {answer}");
    let counts = engine.running.engine.store().count_follow_ups(None).await?;
    assert_eq!(counts.values().sum::<u64>(), stored, "the report counts exactly what is stored");
    assert!(answer["error"]["message"].as_str().unwrap_or("").contains("safe"));
    Ok(())
}

#[actix_rt::test]
async fn unknown_content_type_is_415() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;

    let (status, answer) = engine.upload(&key, &sequence, "image/png", "x").await?;

    assert_eq!(status, 415, "{answer}");
    Ok(())
}

#[actix_rt::test]
async fn sequence_with_bad_template_is_400() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    let response = engine
        .http
        .post(engine.url("/v1/sequences"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"name": "x", "steps": [
            {"channel": "sms", "body": "Hi {{first_name"}]}))
        .send()
        .await?;

    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await?;
    assert!(answer["error"]["message"].as_str().unwrap_or("").starts_with("step 1: body"));
    Ok(())
}

#[actix_rt::test]
async fn listed_errors_stop_at_the_maximum() -> anyhow::Result<()> {
    let engine = TestEngine::start(|config| config.ingest.max_errors_listed = 3).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
    let mut body = String::from("email\n");
    for n in 0..10 {
        body.push_str(&format!("bad{n}\n"));
    }

    let (status, report) = engine.upload(&key, &sequence, "text/csv", body).await?;

    assert_eq!(status, 200, "{report}");
    assert_eq!(report["rejected"], 10);
    assert_eq!(report["errors"].as_array().map(Vec::len), Some(3));
    assert_eq!(report["errors_not_listed"], 7);
    Ok(())
}

#[actix_rt::test]
async fn email_case_does_not_make_a_new_contact() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;

    let body = "email\nana@example.com\nANA@EXAMPLE.COM\nAna@Example.com\n";
    let (_, report) = engine.upload(&key, &sequence, "text/csv", body).await?;

    assert_eq!(report["accepted"], 3, "{report}");
    assert_eq!(report["created"], 1);
    assert_eq!(report["duplicates"], 2);
    Ok(())
}

#[actix_rt::test]
async fn ndjson_mapping_may_name_a_later_key() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
    let body = "[1]\n{\"Mail\":\"m1@example.com\"}\n{\"Mail\":\"m2@example.com\"}\n";

    let response = engine
        .http
        .post(engine.url("/v1/schedules/bulk"))
        .query(&[("sequence", sequence.as_str()), ("mapping", "{\"Mail\":\"email\"}")])
        .bearer_auth(&key)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await?;

    assert_eq!(response.status(), 200);
    let report: Value = response.json().await?;
    assert_eq!(report["accepted"], 2, "{report}");
    assert_eq!(report["rejected"], 1);
    Ok(())
}

#[actix_rt::test]
async fn delay_over_a_year_is_400_in_any_form() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    for delay in [
        serde_json::json!(31_622_401u64),
        serde_json::json!("31622401"),
        serde_json::json!(u64::MAX),
    ] {
        let response = engine
            .http
            .post(engine.url("/v1/sequences"))
            .bearer_auth(&key)
            .json(&serde_json::json!({"name": "x", "steps": [
                {"channel": "sms", "delay": delay, "body": "Hi"}]}))
            .send()
            .await?;
        assert_eq!(response.status(), 400, "delay {delay}");
    }
    Ok(())
}

#[actix_rt::test]
async fn compressed_upload_is_rejected_by_name() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
    let response = engine
        .http
        .post(engine.url("/v1/schedules/bulk"))
        .query(&[("sequence", sequence.as_str())])
        .bearer_auth(&key)
        .header("content-type", "text/csv")
        .header("content-encoding", "gzip")
        .body(vec![0x1f_u8, 0x8b, 0x08, 0x00])
        .send()
        .await?;
    assert_eq!(response.status(), 415);
    let body: Value = response.json().await?;
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("Content-Encoding gzip"), "{body}");
    Ok(())
}

#[actix_rt::test]
async fn names_with_hidden_characters_are_rejected() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    for name in ["bad\u{0}name", "invoice\u{202E}fdp.exe"] {
        let response = engine
            .http
            .post(engine.url("/v1/sequences"))
            .bearer_auth(&key)
            .json(&serde_json::json!({"name": name,
                "steps": [{"channel": "email", "subject": "Hi", "body": "Hello"}]}))
            .send()
            .await?;
        assert_eq!(response.status(), 400, "{name:?}");
        let body: Value = response.json().await?;
        assert!(body["error"]["message"].as_str().unwrap_or_default().contains("U+"), "{body}");
    }
    Ok(())
}
