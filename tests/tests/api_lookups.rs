//! Finding what an upload created, listing tenants, and the checks on connections.

use std::collections::BTreeSet;

use followup_tests::{OPERATOR_TOKEN, TestEngine, email_now_sequence};
use serde_json::{Value, json};

#[actix_rt::test]
async fn schedule_found_by_contact_key() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
    let csv = "Customer Id,Email\nC-1,ada@Example.COM\n,bob@Example.com\n";
    engine.upload(&key, &sequence, "text/csv", csv).await?;

    let by_id =
        engine.get_json(&key, &format!("/v1/schedules?sequence={sequence}&contact=C-1")).await?;
    let by_email = engine
        .get_json(&key, &format!("/v1/schedules?sequence={sequence}&contact=bob@Example.com"))
        .await?;
    let missing = engine
        .http
        .get(engine.url(&format!("/v1/schedules?sequence={sequence}&contact=nobody")))
        .bearer_auth(&key)
        .send()
        .await?;

    assert_eq!(by_id["follow_ups"].as_array().map(Vec::len), Some(1), "{by_id}");
    assert_eq!(by_email["follow_ups"].as_array().map(Vec::len), Some(1), "{by_email}");
    assert_eq!(missing.status(), 404);
    Ok(())
}

#[actix_rt::test]
async fn schedule_pages_list_each_once() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    let sequence = engine
        .create_sequence(
            &key,
            &json!({"name": "two", "steps": [
                {"channel": "email", "subject": "Hi", "body": "Hello"},
                {"channel": "email", "delay": "1d", "subject": "Again", "body": "Hello again"}]}),
        )
        .await?;
    let mut csv = String::from("email\n");
    for n in 0..7 {
        csv.push_str(&format!("p{n}@example.com\n"));
    }
    engine.upload(&key, &sequence, "text/csv", csv).await?;

    let mut seen = BTreeSet::new();
    let mut after: Option<String> = None;
    for _ in 0..10 {
        let path = match &after {
            Some(after) => format!("/v1/schedules?limit=3&after={after}"),
            None => "/v1/schedules?limit=3".to_owned(),
        };
        let page = engine.get_json(&key, &path).await?;
        for schedule in page["schedules"].as_array().into_iter().flatten() {
            assert_eq!(schedule["follow_ups"].as_array().map(Vec::len), Some(2), "{schedule}");
            assert!(seen.insert(schedule["schedule"].to_string()), "listed twice: {schedule}");
        }
        match &page["next_after"] {
            Value::String(next) => after = Some(next.clone()),
            _ => break,
        }
    }

    assert_eq!(seen.len(), 7);
    Ok(())
}

#[actix_rt::test]
async fn operator_lists_tenants_without_secrets() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    engine.create_tenant("globex", "free").await?;

    let response =
        engine.http.get(engine.url("/admin/v1/tenants")).bearer_auth(OPERATOR_TOKEN).send().await?;
    let text = response.text().await?;
    let tenants: Value = serde_json::from_str(&text)?;

    let names: BTreeSet<&str> =
        tenants.as_array().into_iter().flatten().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, BTreeSet::from(["acme", "globex"]));
    assert!(!text.contains(&key), "an API key leaked");
    assert!(!text.contains("api_key"), "a key hash leaked");
    Ok(())
}

#[actix_rt::test]
async fn connection_checks_sender_and_limits() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    let put = |provider: &'static str, body: Value| {
        engine
            .http
            .put(engine.url(&format!("/v1/connections/{provider}")))
            .bearer_auth(&key)
            .json(&body)
            .send()
    };

    let bad_mailbox =
        put("gmail", json!({"sender": "not-an-address", "access_token": "t"})).await?;
    let bad_number = put(
        "twilio",
        json!({"sender": "202-555-0199", "account_sid": "AC00000000000000000000000000000001",
               "auth_token": "t"}),
    )
    .await?;
    let zero = put(
        "gmail",
        json!({"sender": "a@example.com", "access_token": "t", "limits": {"per_minute": 0}}),
    )
    .await?;
    let unknown = put("yahoo", json!({"sender": "a@example.com"})).await?;
    let wrong_kind = put(
        "gmail",
        json!({"sender": "a@example.com", "access_token": "t", "account_kind": "exchange_online"}),
    )
    .await?;
    let bad_timezone = put(
        "gmail",
        json!({"sender": "a@example.com", "access_token": "t", "timezone": "Mars/Olympus"}),
    )
    .await?;
    let good = put(
        "gmail",
        json!({"sender": "a@example.com", "access_token": "t", "limits": {"per_day": 1500,
               "per_local_day": 200}, "account_kind": "google_workspace_trial",
               "timezone": "Europe/Berlin"}),
    )
    .await?;

    assert_eq!(bad_mailbox.status(), 400);
    assert_eq!(bad_number.status(), 400);
    assert_eq!(zero.status(), 400);
    assert_eq!(unknown.status(), 404);
    assert_eq!(wrong_kind.status(), 400);
    let wrong_kind: Value = wrong_kind.json().await?;
    let message = wrong_kind["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("google_workspace_trial"), "lists the gmail kinds: {message}");
    assert_eq!(bad_timezone.status(), 400);
    assert_eq!(good.status(), 200);
    let view: Value = good.json().await?;
    assert_eq!(
        view["effective_limits"]["email"],
        json!({"per_minute": 60, "per_day": 1500, "per_local_day": 200,
               "timezone": "Europe/Berlin", "max_in_flight": 8})
    );
    assert_eq!(view["account_kind"], "google_workspace_trial");

    let message_of = |body: Value| body["error"]["message"].as_str().unwrap_or_default().to_owned();
    let injected = put(
        "outlook",
        json!({"sender": "a@example.com\r\nBcc: x@example.org", "access_token": "t"}),
    )
    .await?;
    assert_eq!(injected.status(), 400, "a line break in the sender");
    let spaced_token =
        put("gmail", json!({"sender": "a@example.com", "access_token": "two words"})).await?;
    assert_eq!(spaced_token.status(), 400);
    assert!(message_of(spaced_token.json().await?).contains("access_token"));
    let too_concurrent = put(
        "outlook",
        json!({"sender": "a@example.com", "access_token": "t", "limits": {"max_in_flight": 5}}),
    )
    .await?;
    assert_eq!(too_concurrent.status(), 400, "Graph allows 4 requests per mailbox");
    let negative = put(
        "gmail",
        json!({"sender": "a@example.com", "access_token": "t", "limits": {"per_day": -1}}),
    )
    .await?;
    assert_eq!(negative.status(), 400);
    let message = message_of(negative.json().await?);
    assert!(message.starts_with("limits.per_day: "), "names the field: {message}");
    let not_json = engine
        .http
        .put(engine.url("/v1/connections/gmail"))
        .bearer_auth(&key)
        .header("content-type", "text/plain")
        .body("sender=a@example.com")
        .send()
        .await?;
    assert_eq!(not_json.status(), 415);
    Ok(())
}
