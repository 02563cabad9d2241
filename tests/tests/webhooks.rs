//! Stripe and Twilio webhooks are used only with a valid signature; every rejection is counted
//! in `/metrics` by source and reason. The signatures are computed here from the providers'
//! documented algorithms, independently of the engine's code.
//!
//! The metrics recorder is global to the process, so this file installs it once and each test
//! checks only the counters of its own source.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use base64::Engine as _;
use followup_core::clock::Clock as _;
use followup_dispatcher::telemetry::install_metrics;
use followup_tests::TestEngine;
use metrics_exporter_prometheus::PrometheusHandle;
use ring::hmac;
use serde_json::{Value, json};

const STRIPE_SECRET: &str = "whsec_current_test_secret";
const STRIPE_ROLLED_SECRET: &str = "whsec_previous_test_secret";
const TWILIO_TOKEN: &str = "test-twilio-token";
const PUBLIC_BASE_URL: &str = "https://followup.example.test";

fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| install_metrics().expect("the only recorder of this process")).clone()
}

async fn start_engine() -> anyhow::Result<TestEngine> {
    TestEngine::start_with_metrics(
        |config| {
            config.webhooks.stripe_signing_secrets =
                vec![STRIPE_ROLLED_SECRET.to_owned().into(), STRIPE_SECRET.to_owned().into()];
            config.webhooks.public_base_url = Some(PUBLIC_BASE_URL.to_owned());
        },
        Some(metrics_handle()),
    )
    .await
}

/// Returns the rejections counted in `/metrics` for `source`, by reason.
async fn rejections(engine: &TestEngine, source: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    let text = engine.http.get(engine.url("/metrics")).send().await?.text().await?;
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))?;
    let mut counts = BTreeMap::new();
    for sample in scrape.samples {
        if sample.metric != "followup_webhook_rejections_total"
            || sample.labels.get("source") != Some(source)
        {
            continue;
        }
        if let prometheus_parse::Value::Counter(value) = sample.value {
            let reason = sample.labels.get("reason").unwrap_or_default().to_owned();
            counts.insert(reason, value);
        }
    }
    Ok(counts)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// `v1` of Stripe's scheme: hex HMAC-SHA256 of "{t}.{body}" keyed with the whole secret.
fn stripe_v1(secret: &str, timestamp: i64, body: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hex(hmac::sign(&key, format!("{timestamp}.{body}").as_bytes()).as_ref())
}

/// Builds a subscription event in the shape of Stripe's published fixtures.
fn subscription_event(id: &str, created: i64) -> anyhow::Result<String> {
    let path = followup_tests::shared_data_dir().join("../specs/stripe/fixtures3.json");
    let fixtures: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    let mut event = fixtures["resources"]["event"].clone();
    anyhow::ensure!(event.is_object(), "no event fixture in {}", path.display());
    event["id"] = json!(id);
    event["type"] = json!("customer.subscription.updated");
    event["created"] = json!(created);
    event["data"] = json!({"object": fixtures["resources"]["subscription"].clone()});
    Ok(serde_json::to_string(&event)?)
}

async fn post_stripe(
    engine: &TestEngine,
    signature: Option<&str>,
    body: &str,
) -> anyhow::Result<(u16, Value)> {
    let mut request = engine
        .http
        .post(engine.url("/webhooks/stripe"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(signature) = signature {
        request = request.header("Stripe-Signature", signature);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

#[actix_rt::test]
async fn stripe_webhooks_are_verified_deduplicated_and_counted() -> anyhow::Result<()> {
    let engine = start_engine().await?;
    let now = engine.virtual_clock().now().timestamp();
    let body = subscription_event("evt_1SubscriptionUpdated", now - 10)?;
    let signed = format!("t={now},v1={}", stripe_v1(STRIPE_SECRET, now, &body));

    let (status, answer) = post_stripe(&engine, Some(&signed), &body).await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["duplicate"], false);
    assert_eq!(engine.running.webhook_log.len().await?, 1);
    let record = engine.running.webhook_log.get("stripe/evt_1SubscriptionUpdated".into()).await?;
    let record: Value = serde_json::from_slice(&record.expect("the event is recorded"))?;
    assert_eq!(record["type"], "customer.subscription.updated");
    assert_eq!(record["data"]["object"]["object"], "subscription", "{record}");

    // The identical signed request again is a replay.
    let (status, answer) = post_stripe(&engine, Some(&signed), &body).await?;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"]["message"], "request already received");

    // Stripe signs a retry anew: a new timestamp, the same event id. It is accepted, once.
    let retry_at = now + 60;
    let resigned = format!("t={retry_at},v1={}", stripe_v1(STRIPE_SECRET, retry_at, &body));
    let (status, answer) = post_stripe(&engine, Some(&resigned), &body).await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["duplicate"], true);
    assert_eq!(engine.running.webhook_log.len().await?, 1, "recorded once");

    // Several v1 entries, one of them valid under the older of two configured secrets.
    let other = subscription_event("evt_2RolledSecret", now)?;
    let several = format!(
        "t={now},v1={},v1={},v0=ignored",
        stripe_v1("whsec_unknown", now, &other),
        stripe_v1(STRIPE_ROLLED_SECRET, now, &other)
    );
    let (status, answer) = post_stripe(&engine, Some(&several), &other).await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(engine.running.webhook_log.len().await?, 2);

    let fresh = subscription_event("evt_3Rejected", now)?;
    let tampered = fresh.replace("evt_3Rejected", "evt_3Tampered");
    let wrong_secret = format!("t={now},v1={}", stripe_v1("whsec_wrong", now, &fresh));
    let valid = format!("t={now},v1={}", stripe_v1(STRIPE_SECRET, now, &fresh));
    let old = now - 301;
    let stale = format!("t={old},v1={}", stripe_v1(STRIPE_SECRET, old, &fresh));
    let ahead = now + 301;
    let future = format!("t={ahead},v1={}", stripe_v1(STRIPE_SECRET, ahead, &fresh));
    let cases: [(&str, Option<&str>, &str, u16); 6] = [
        ("unsigned", None, &fresh, 403),
        ("wrong secret", Some(&wrong_secret), &fresh, 403),
        ("tampered body", Some(&valid), &tampered, 403),
        ("old timestamp", Some(&stale), &fresh, 403),
        ("future timestamp", Some(&future), &fresh, 403),
        ("no timestamp", Some("v1=abcdef"), &fresh, 400),
    ];
    for (case, signature, body, expected) in cases {
        let (status, answer) = post_stripe(&engine, signature, body).await?;
        assert_eq!(status, expected, "{case}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_signature", "{case}");
    }
    assert_eq!(engine.running.webhook_log.len().await?, 2, "no rejected event is recorded");

    // A body over the limit is rejected before its signature is read, in the same JSON shape.
    let huge = format!("{{\"padding\": \"{}\"}}", "x".repeat(300 * 1024));
    let (status, answer) = post_stripe(&engine, Some(&valid), &huge).await?;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["code"], "payload_too_large", "{answer}");

    let counts = rejections(&engine, "stripe").await?;
    let expected: BTreeMap<String, f64> =
        [("forged", 2.0), ("malformed", 2.0), ("replayed", 1.0), ("stale", 2.0), ("unsigned", 1.0)]
            .into_iter()
            .map(|(reason, count)| (reason.to_owned(), count))
            .collect();
    assert_eq!(counts, expected);
    Ok(())
}

/// `X-Twilio-Signature`: base64 HMAC-SHA1 of the URL followed by the sorted POST parameters,
/// each as name then value.
fn twilio_signature(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut text = url.to_owned();
    for (name, value) in sorted {
        text.push_str(name);
        text.push_str(value);
    }
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, token.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(hmac::sign(&key, text.as_bytes()).as_ref())
}

fn form(params: &[(&str, &str)]) -> String {
    params
        .iter()
        .map(|(name, value)| format!("{name}={}", value.replace('+', "%2B")))
        .collect::<Vec<_>>()
        .join("&")
}

async fn post_twilio(
    engine: &TestEngine,
    path: &str,
    signature: Option<&str>,
    body: String,
) -> anyhow::Result<(u16, String)> {
    let mut request = engine
        .http
        .post(engine.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(signature) = signature {
        request = request.header("X-Twilio-Signature", signature);
    }
    let response = request.send().await?;
    Ok((response.status().as_u16(), response.text().await?))
}

#[actix_rt::test]
async fn twilio_webhooks_are_verified_and_counted() -> anyhow::Result<()> {
    let engine = start_engine().await?;
    let key = engine.create_tenant("acme", "pro").await?;
    let connection = engine
        .connect(
            &key,
            "twilio",
            &json!({"sender": "+15005550006", "account_sid": "AC00000000000000000000000000000001",
                    "auth_token": TWILIO_TOKEN}),
        )
        .await?;
    let id = connection["id"].as_str().expect("connection id").to_owned();
    let status_path = format!("/webhooks/twilio/{id}/status");
    let status_url = format!("{PUBLIC_BASE_URL}{status_path}");
    let delivered = [
        ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
        ("MessageStatus", "delivered"),
        ("AccountSid", "AC00000000000000000000000000000001"),
        ("From", "+15005550006"),
        ("To", "+15558675310"),
        ("ApiVersion", "2010-04-01"),
    ];
    let signature = twilio_signature(TWILIO_TOKEN, &status_url, &delivered);

    let (status, text) =
        post_twilio(&engine, &status_path, Some(&signature), form(&delivered)).await?;
    assert_eq!(status, 204, "{text}");
    let record = engine
        .running
        .webhook_log
        .get("twilio/SM0123456789abcdef0123456789abcdef/delivered".into())
        .await?;
    let record: Value = serde_json::from_slice(&record.expect("the status is recorded"))?;
    assert_eq!(record["connection"], id.as_str());

    // The identical request again is a replay.
    let (status, text) =
        post_twilio(&engine, &status_path, Some(&signature), form(&delivered)).await?;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("request already received"), "{text}");

    // Query strings are part of the signed URL.
    let query_path = format!("{status_path}?attempt=2");
    let query_signature =
        twilio_signature(TWILIO_TOKEN, &format!("{PUBLIC_BASE_URL}{query_path}"), &delivered);
    let (status, text) =
        post_twilio(&engine, &query_path, Some(&query_signature), form(&delivered)).await?;
    assert_eq!(status, 204, "{text}");

    let sent = [("MessageSid", "SM1"), ("MessageStatus", "sent")];
    let wrong_token = twilio_signature("not-the-token", &status_url, &sent);
    let valid = twilio_signature(TWILIO_TOKEN, &status_url, &sent);
    let tampered = [("MessageSid", "SM1"), ("MessageStatus", "failed")];
    let (status, forged_text) =
        post_twilio(&engine, &status_path, Some(&wrong_token), form(&sent)).await?;
    assert_eq!(status, 403, "wrong token: {forged_text}");
    let (status, text) = post_twilio(&engine, &status_path, Some(&valid), form(&tampered)).await?;
    assert_eq!(status, 403, "tampered body: {text}");
    let (status, text) = post_twilio(&engine, &status_path, None, form(&sent)).await?;
    assert_eq!(status, 403, "unsigned: {text}");

    // An unknown connection gets exactly the response to a wrong signature.
    let unknown_path = "/webhooks/twilio/0190f3c4-0000-7000-8000-000000000000/status";
    let unknown_signature =
        twilio_signature(TWILIO_TOKEN, &format!("{PUBLIC_BASE_URL}{unknown_path}"), &sent);
    let (status, text) =
        post_twilio(&engine, unknown_path, Some(&unknown_signature), form(&sent)).await?;
    assert_eq!(status, 403, "unknown connection: {text}");
    assert_eq!(text, forged_text, "no oracle for connection ids");
    let (status, text) =
        post_twilio(&engine, "/webhooks/twilio/not-an-id/status", Some(&valid), form(&sent))
            .await?;
    assert_eq!((status, text.as_str()), (403, forged_text.as_str()), "invalid connection id");

    // A JSON body is not covered by the signature, so it is not accepted.
    let json_body = engine
        .http
        .post(engine.url(&status_path))
        .header("content-type", "application/json")
        .header("X-Twilio-Signature", twilio_signature(TWILIO_TOKEN, &status_url, &[]))
        .body(r#"{"MessageSid":"SM3","MessageStatus":"failed"}"#)
        .send()
        .await?;
    assert_eq!(json_body.status(), 400, "JSON body");

    let inbound_path = format!("/webhooks/twilio/{id}/inbound");
    let inbound = [("MessageSid", "SM2"), ("From", "+15558675310"), ("Body", " Stop ")];
    let inbound_signature =
        twilio_signature(TWILIO_TOKEN, &format!("{PUBLIC_BASE_URL}{inbound_path}"), &inbound);
    let (status, text) =
        post_twilio(&engine, &inbound_path, Some(&inbound_signature), form(&inbound)).await?;
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with("<Response></Response>"), "empty TwiML: {text}");
    let record = engine.running.webhook_log.get("twilio-inbound/SM2".into()).await?;
    let record: Value = serde_json::from_slice(&record.expect("the message is recorded"))?;
    assert_eq!(record["keyword"], "STOP");
    assert!(record.get("body").is_none(), "the text of the message is not kept");

    // After the tenant is deleted, its connection may still be in the webhook cache, but its
    // webhooks are rejected, and the purge removes the records that name it.
    let log = &engine.running.webhook_log;
    assert!(log.len().await? > 0, "the tenant has webhook records");
    let response = engine.http.delete(engine.url("/v1/tenant")).bearer_auth(&key).send().await?;
    assert_eq!(response.status(), 202);
    let late = [("MessageSid", "SM4"), ("MessageStatus", "delivered")];
    let late_signature = twilio_signature(TWILIO_TOKEN, &status_url, &late);
    let (status, text) =
        post_twilio(&engine, &status_path, Some(&late_signature), form(&late)).await?;
    assert_eq!((status, text.as_str()), (403, forged_text.as_str()), "deleted tenant");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while log.len().await? > 0 {
        anyhow::ensure!(std::time::Instant::now() < deadline, "webhook records not purged");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let counts = rejections(&engine, "twilio").await?;
    let expected: BTreeMap<String, f64> =
        [("forged", 5.0), ("malformed", 1.0), ("replayed", 1.0), ("unsigned", 1.0)]
            .into_iter()
            .map(|(reason, count)| (reason.to_owned(), count))
            .collect();
    assert_eq!(counts, expected);
    Ok(())
}

#[actix_rt::test]
async fn twilio_status_names_its_follow_up() -> anyhow::Result<()> {
    let engine = start_engine().await?;
    let key = engine.create_tenant("acme", "pro").await?;
    engine.connect_fakes(&key).await?;
    let connections = engine.get_json(&key, "/v1/connections").await?;
    let twilio = connections
        .as_array()
        .and_then(|all| all.iter().find(|connection| connection["provider"] == "twilio"))
        .expect("a Twilio connection");
    let connection = twilio["id"].as_str().expect("connection id").to_owned();
    let sequence = json!({"name": "sms", "steps": [{"channel": "sms", "body": "Hello"}]});
    let sequence = engine.create_sequence(&key, &sequence).await?;
    engine.upload(&key, &sequence, "text/csv", "phone\n+14155550123\n").await?;
    engine.settle(1).await?;

    let path = format!("/v1/schedules?sequence={sequence}&contact=%2B14155550123");
    let schedule = engine.get_json(&key, &path).await?;
    let follow_up = &schedule["follow_ups"][0];
    assert_eq!(follow_up["state"], "sent", "{schedule}");
    let sid = follow_up["provider_message_id"].as_str().expect("sent with a SID");
    let id = format!(
        "{}.{}",
        follow_up["id"]["schedule"].as_str().unwrap_or_default(),
        follow_up["id"]["step"]
    );

    let status_path = format!("/webhooks/twilio/{connection}/status?follow_up={id}");
    let status_url = format!("{PUBLIC_BASE_URL}{status_path}");
    for (message_sid, status, expected) in
        [(sid, "delivered", follow_up["id"].clone()), ("SMother", "delivered", Value::Null)]
    {
        let params = [("MessageSid", message_sid), ("MessageStatus", status)];
        let signature = twilio_signature(TWILIO_TOKEN, &status_url, &params);
        let (code, text) =
            post_twilio(&engine, &status_path, Some(&signature), form(&params)).await?;
        assert_eq!(code, 204, "{text}");
        let record_key = format!("twilio/{message_sid}/{status}");
        let record = engine.running.webhook_log.get(record_key).await?;
        let record: Value = serde_json::from_slice(&record.expect("the status is recorded"))?;
        assert_eq!(record["follow_up"], expected, "{message_sid}: {record}");
    }
    Ok(())
}

/// Posts a signed inbound SMS with `body` from `from` to the connection `id`.
async fn inbound_sms(engine: &TestEngine, id: &str, sid: &str, from: &str, body: &str) -> u16 {
    let path = format!("/webhooks/twilio/{id}/inbound");
    let params = [("MessageSid", sid), ("From", from), ("Body", body)];
    let signature = twilio_signature(TWILIO_TOKEN, &format!("{PUBLIC_BASE_URL}{path}"), &params);
    let (status, text) =
        post_twilio(engine, &path, Some(&signature), form(&params)).await.expect("inbound");
    assert_eq!(status, 200, "{text}");
    status
}

async fn suppressed_numbers(engine: &TestEngine, key: &str) -> Vec<(String, String)> {
    let listed = engine.get_json(key, "/v1/suppressions").await.expect("suppressions");
    let entries = listed["suppressions"].as_array().cloned().unwrap_or_default();
    entries
        .iter()
        .map(|e| (e["value"].as_str().unwrap_or_default().to_owned(), e["reason"].to_string()))
        .collect()
}

#[actix_rt::test]
async fn sms_keywords_opt_out_and_back_in() -> anyhow::Result<()> {
    let engine = start_engine().await?;
    let key = engine.create_tenant("acme", "pro").await?;
    engine.connect_fakes(&key).await?;
    let connections = engine.get_json(&key, "/v1/connections").await?;
    let twilio = connections
        .as_array()
        .and_then(|list| list.iter().find(|c| c["provider"] == "twilio").map(|c| c["id"].clone()));
    let id = twilio.and_then(|id| id.as_str().map(str::to_owned)).expect("twilio connection");
    let sequence = json!({"name": "texts", "steps": [
        {"channel": "sms", "delay": 0, "body": "First."},
        {"channel": "sms", "delay": "1d", "body": "Second."}
    ]});
    let sequence = engine.create_sequence(&key, &sequence).await?;
    let csv = "phone\n+14155550141\n+14155550142\n";
    engine.upload(&key, &sequence, "text/csv", csv).await?;
    engine.running.engine.run_round().await;

    // Several words are no keyword, as on Twilio; HELP changes nothing.
    inbound_sms(&engine, &id, "SM10", "+14155550141", "stop please").await;
    inbound_sms(&engine, &id, "SM11", "+14155550141", "HELP").await;
    assert!(suppressed_numbers(&engine, &key).await.is_empty(), "no opt-out yet");
    inbound_sms(&engine, &id, "SM12", "+14155550141", "optout").await;
    inbound_sms(&engine, &id, "SM13", "+14155550142", "Stop").await;
    let numbers = suppressed_numbers(&engine, &key).await;
    assert_eq!(numbers.len(), 2, "{numbers:?}");
    assert!(numbers.iter().all(|(_, reason)| reason == "\"sms_opt_out\""), "{numbers:?}");

    // START lifts the first number's opt-out before its second text is due.
    inbound_sms(&engine, &id, "SM14", "+14155550141", "start").await;
    let numbers = suppressed_numbers(&engine, &key).await;
    assert_eq!(numbers, [("+14155550142".to_owned(), "\"sms_opt_out\"".to_owned())]);
    engine.settle(5).await?;

    let fakes = engine.running.fakes()?;
    let texts_to = |to: &str| fakes.received().iter().filter(|m| m.to == to).count();
    assert_eq!(texts_to("+14155550141"), 2, "opted back in: both texts");
    assert_eq!(texts_to("+14155550142"), 1, "opted out after the first text");
    let path = format!("/v1/schedules?sequence={sequence}&contact=%2B14155550142");
    let follow_ups = engine.get_json(&key, &path).await?["follow_ups"].clone();
    assert_eq!(follow_ups[1]["state"], "skipped", "{follow_ups}");
    assert_eq!(follow_ups[1]["reason"], "phone suppressed: sms_opt_out");
    Ok(())
}

#[actix_rt::test]
async fn twilio_21610_suppresses_the_number() -> anyhow::Result<()> {
    let errors = followup_adapters::fakes::ErrorPlan::default()
        .force("+14155550151", followup_adapters::fakes::ForcedOutcome::TwilioError(21610));
    let engine = TestEngine::start_with_errors(|_| {}, errors).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    engine.connect_fakes(&key).await?;
    let sequence = json!({"name": "texts", "steps": [
        {"channel": "sms", "delay": 0, "body": "First."},
        {"channel": "call", "delay": "1d", "body": "Hello."}
    ]});
    let sequence = engine.create_sequence(&key, &sequence).await?;
    engine.upload(&key, &sequence, "text/csv", "phone\n+14155550151\n").await?;
    engine.settle(5).await?;

    let numbers = suppressed_numbers(&engine, &key).await;
    let expected = [("+14155550151".to_owned(), "\"provider_opt_out\"".to_owned())];
    assert_eq!(numbers, expected, "the refused number is suppressed");
    let path = format!("/v1/schedules?sequence={sequence}&contact=%2B14155550151");
    let follow_ups = engine.get_json(&key, &path).await?["follow_ups"].clone();
    assert_eq!(follow_ups[0]["state"], "failed", "{follow_ups}");
    assert_eq!(follow_ups[1]["state"], "skipped", "{follow_ups}");
    assert_eq!(follow_ups[1]["reason"], "phone suppressed: provider_opt_out");
    let fakes = engine.running.fakes()?;
    assert!(fakes.received().is_empty(), "neither the text nor the call went out");
    Ok(())
}
