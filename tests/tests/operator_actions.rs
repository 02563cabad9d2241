//! The operator's actions over HTTP against real engines and the provider fakes: pausing a
//! tenant (across a restart) and a connection, retrying dead letters, cancelling a schedule,
//! each read back from the audit log with the operator's name.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use followup_adapters::fakes::{ErrorPlan, ForcedOutcome};
use followup_core::clock::{Clock as _, VirtualClock};
use followup_core::crypto::generate_master_key;
use followup_core::domain::Provider;
use followup_core::sensitive::Sensitive;
use followup_core::store::Store;
use followup_dispatcher::config::{Config, OperatorConfig};
use followup_dispatcher::server::RunningEngine;
use followup_tests::{OPERATOR_TOKEN, TestEngine, email_now_sequence};
use serde_json::{Value, json};

const ALICE_TOKEN: &str = "alice-operator-token-0123456789";

/// Sends an operator request with `token` and returns the status and JSON body.
async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut request = http.request(method, url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
}

async fn post(
    engine: &TestEngine,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    call(&engine.http, reqwest::Method::POST, engine.url(path), OPERATOR_TOKEN, body).await
}

async fn get(engine: &TestEngine, path: &str) -> anyhow::Result<Value> {
    let (status, body) =
        call(&engine.http, reqwest::Method::GET, engine.url(path), OPERATOR_TOKEN, None).await?;
    anyhow::ensure!(status == 200, "GET {path} answered {status}: {body}");
    Ok(body)
}

fn tenant_id(snapshot: &Value, name: &str) -> String {
    snapshot["tenants"]
        .as_array()
        .and_then(|all| all.iter().find(|t| t["name"] == name))
        .and_then(|t| t["id"].as_str())
        .unwrap_or_else(|| panic!("{name} not in {snapshot}"))
        .to_owned()
}

#[actix_rt::test]
async fn dead_letters_connection_pause_and_cancel_are_audited() -> anyhow::Result<()> {
    let errors =
        ErrorPlan::default().force_times("down@example.com", ForcedOutcome::ServiceUnavailable, 2);
    let engine =
        TestEngine::start_with_errors(|config| config.dispatch.retry_budget = 2, errors).await?;
    let key = engine.create_tenant("Acme", "pro").await?;
    engine.connect_fakes(&key).await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
    let csv = "email\ndown@example.com\nok@example.com\n";
    engine.upload(&key, &sequence, "text/csv", csv).await?;
    engine.settle(1).await?;
    let fakes = engine.running.fakes()?;
    assert_eq!(fakes.stats().received(Provider::Gmail), 1, "only ok@ went through");
    let tenant = tenant_id(&get(&engine, "/admin/v1/snapshot").await?, "Acme");

    // The dead letter is listed without its address, and a retry sends it.
    let letters = get(&engine, "/admin/v1/dead-letters").await?;
    assert_eq!(letters["total"], 1, "{letters}");
    let letter = &letters["dead_letters"][0];
    assert_eq!(letter["tenant"], tenant.as_str());
    assert_eq!(letter["attempts"], 2);
    assert!(!letters.to_string().contains('@'), "an address in {letters}");
    let id = letter["follow_up"].as_str().unwrap_or_default().to_owned();
    let body = json!({"follow_ups": [id], "note": "ticket 7"});
    let (status, outcome) = post(&engine, "/admin/v1/dead-letters/retry", Some(body)).await?;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["affected"], 1);
    engine.settle(1).await?;
    assert_eq!(fakes.stats().received(Provider::Gmail), 2, "the retried letter was sent once");
    let letters = get(&engine, "/admin/v1/dead-letters").await?;
    assert_eq!(letters["total"], 0, "{letters}");

    // A paused connection sends nothing until it is resumed.
    let gmail = format!("/admin/v1/tenants/{tenant}/connections/gmail");
    let (status, outcome) = post(&engine, &format!("{gmail}/pause"), None).await?;
    assert_eq!(status, 200, "{outcome}");
    engine.upload(&key, &sequence, "text/csv", "email\nlater@example.com\n").await?;
    engine.settle(1).await?;
    assert_eq!(fakes.stats().received(Provider::Gmail), 2, "sent through a paused connection");
    let snapshot = get(&engine, "/admin/v1/snapshot").await?;
    let paused = &snapshot["paused"][0];
    assert_eq!(paused["provider"], "gmail", "{snapshot}");
    assert!(paused["reason"].as_str().unwrap_or_default().starts_with("operator"), "{paused}");
    let (status, _) = post(&engine, &format!("{gmail}/resume"), None).await?;
    assert_eq!(status, 200);
    engine.settle(1).await?;
    assert_eq!(fakes.stats().received(Provider::Gmail), 3, "the resumed connection sent");

    // A cancelled schedule is never sent.
    engine.upload(&key, &sequence, "text/csv", "email\ncancel@example.com\n").await?;
    let found = engine
        .get_json(&key, &format!("/v1/schedules?sequence={sequence}&contact=cancel@example.com"))
        .await?;
    let schedule = found["schedule"]["id"].as_str().unwrap_or_default().to_owned();
    let path = engine.url(&format!("/admin/v1/tenants/{tenant}/schedules/{schedule}"));
    let body = Some(json!({"note": "asked by the customer"}));
    let (status, outcome) =
        call(&engine.http, reqwest::Method::DELETE, path, OPERATOR_TOKEN, body).await?;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["affected"], 1);
    engine.settle(1).await?;
    assert_eq!(fakes.stats().received(Provider::Gmail), 3, "a cancelled follow-up was sent");

    // The audit log, newest first, names the operator and keeps the notes.
    let audit = get(&engine, "/admin/v1/audit").await?;
    assert_eq!(audit["total"], 4, "{audit}");
    let actions: Vec<&str> = audit["records"]
        .as_array()
        .map(|all| all.iter().filter_map(|r| r["action"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        actions,
        ["schedule.cancel", "connection.resume", "connection.pause", "dead_letters.retry"]
    );
    let records = audit["records"].as_array().expect("records");
    assert!(records.iter().all(|r| r["operator"] == "operator"), "{audit}");
    assert_eq!(records[0]["target"], format!("{tenant}/{schedule}"));
    assert_eq!(records[0]["note"], "asked by the customer");
    assert_eq!(records[3]["note"], "ticket 7");
    assert_eq!(records[3]["affected"], 1);
    assert_eq!(records[2]["target"], format!("{tenant}/gmail"));

    // Bad requests name what is wrong, and write no audit entry.
    let (status, error) = post(&engine, &format!("{gmail}/pause"), Some(json!({"why": 1}))).await?;
    assert_eq!(status, 400, "{error}");
    assert!(error.to_string().contains("why"), "{error}");
    let (status, error) =
        post(&engine, &format!("/admin/v1/tenants/{tenant}/connections/fax/pause"), None).await?;
    assert_eq!(status, 400, "{error}");
    assert!(error.to_string().contains("fax"), "{error}");
    let missing = "00000000-0000-7000-8000-000000000000";
    let (status, _) = post(&engine, &format!("/admin/v1/tenants/{missing}/pause"), None).await?;
    assert_eq!(status, 404);
    let body = Some(json!({"follow_ups": ["nonsense"]}));
    let (status, error) = post(&engine, "/admin/v1/dead-letters/retry", body).await?;
    assert_eq!(status, 400, "{error}");
    assert!(error.to_string().contains("nonsense"), "{error}");
    let audit = get(&engine, "/admin/v1/audit?limit=1&offset=1").await?;
    assert_eq!(audit["total"], 4, "failed actions are not audited: {audit}");
    assert_eq!(audit["records"][0]["action"], "connection.resume");
    Ok(())
}

fn restartable_config(data_dir: &std::path::Path, master_key: Sensitive<String>) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("loopback address"),
        data_dir: data_dir.to_path_buf(),
        admin_token: Some(Sensitive::new(OPERATOR_TOKEN.to_owned())),
        master_key: Some(master_key),
        ..Config::default()
    };
    config.admin.snapshot_refresh_millis = 0;
    config.admin.operators = vec![OperatorConfig {
        name: "alice".to_owned(),
        token: Some(Sensitive::new(ALICE_TOKEN.to_owned())),
        ..OperatorConfig::default()
    }];
    config
}

#[actix_rt::test]
async fn tenant_pause_survives_a_restart_and_names_the_operator() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let start = Utc.with_ymd_and_hms(2026, 12, 7, 15, 0, 0).single().expect("valid instant");
    let clock = Arc::new(VirtualClock::new(start));
    let data_dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(followup_adapters::embedded::open(data_dir.path())?);
    let master_key = generate_master_key()?;
    let http = reqwest::Client::new();
    let config = restartable_config(data_dir.path(), master_key.clone());
    let first = RunningEngine::start(config, store.clone(), clock.clone(), None).await?;
    let base = first.url();

    let (status, created) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/admin/v1/tenants"),
        ALICE_TOKEN,
        Some(json!({"name": "Paused Co", "plan": "pro", "default_timezone": "America/New_York"})),
    )
    .await?;
    assert_eq!(status, 201, "{created}");
    let tenant = created["id"].as_str().unwrap_or_default().to_owned();
    let key = created["api_key"].as_str().unwrap_or_default().to_owned();
    let limits = json!({"per_minute": 6000, "per_day": 1000000});
    let connection = json!({"sender": "sales@example.com", "access_token": "paused-co-token",
                            "limits": limits});
    let response = http
        .put(format!("{base}/v1/connections/gmail"))
        .bearer_auth(&key)
        .json(&connection)
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let sequence: Value = http
        .post(format!("{base}/v1/sequences"))
        .bearer_auth(&key)
        .json(&email_now_sequence())
        .send()
        .await?
        .json()
        .await?;
    let sequence = sequence["id"].as_str().unwrap_or_default().to_owned();

    let pause = format!("{base}/admin/v1/tenants/{tenant}/pause");
    let body = Some(json!({"note": "fraud review"}));
    let (status, outcome) = call(&http, reqwest::Method::POST, pause, ALICE_TOKEN, body).await?;
    assert_eq!(status, 200, "{outcome}");
    let csv = "email\np1@example.com\np2@example.com\n";
    let response = http
        .post(format!("{base}/v1/schedules/bulk?sequence={sequence}"))
        .bearer_auth(&key)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let deadline = clock.now() + chrono::Duration::days(1);
    first.engine.run_until_settled(&clock, deadline, |_| {}).await?;
    assert_eq!(first.fakes()?.stats().received(Provider::Gmail), 0, "a paused tenant sent");
    first.stop().await;

    // A new engine on the same store keeps the pause.
    let config = restartable_config(data_dir.path(), master_key);
    let second = RunningEngine::start(config, store.clone(), clock.clone(), None).await?;
    let base = second.url();
    let deadline = clock.now() + chrono::Duration::days(1);
    second.engine.run_until_settled(&clock, deadline, |_| {}).await?;
    assert_eq!(second.fakes()?.stats().received(Provider::Gmail), 0, "sent after the restart");
    let detail_url = format!("{base}/admin/v1/tenants/{tenant}/detail");
    let (_, detail) = call(&http, reqwest::Method::GET, detail_url, OPERATOR_TOKEN, None).await?;
    assert_eq!(detail["summary"]["paused_reason"], "operator", "{detail}");
    assert_eq!(detail["summary"]["backlog"], 2, "{detail}");
    let snapshot_url = format!("{base}/admin/v1/snapshot");
    let (_, snapshot) =
        call(&http, reqwest::Method::GET, snapshot_url, OPERATOR_TOKEN, None).await?;
    let paused = &snapshot["paused"][0];
    assert_eq!(paused["tenant"], tenant.as_str(), "{snapshot}");
    assert_eq!(paused["provider"], Value::Null);
    assert_eq!(paused["reason"], "operator: paused by alice");

    let resume = format!("{base}/admin/v1/tenants/{tenant}/resume");
    let (status, _) = call(&http, reqwest::Method::POST, resume, OPERATOR_TOKEN, None).await?;
    assert_eq!(status, 200);
    let deadline = clock.now() + chrono::Duration::days(1);
    second.engine.run_until_settled(&clock, deadline, |_| {}).await?;
    assert_eq!(second.fakes()?.stats().received(Provider::Gmail), 2, "resumed sends");

    let audit_url = format!("{base}/admin/v1/audit");
    let (_, audit) = call(&http, reqwest::Method::GET, audit_url, OPERATOR_TOKEN, None).await?;
    let records = audit["records"].as_array().expect("records");
    assert_eq!(records.len(), 2, "{audit}");
    assert_eq!(
        (&records[0]["action"], &records[0]["operator"]),
        (&json!("tenant.resume"), &json!("operator"))
    );
    assert_eq!(
        (&records[1]["action"], &records[1]["operator"]),
        (&json!("tenant.pause"), &json!("alice"))
    );
    assert_eq!(records[1]["note"], "fraud review");
    assert_eq!(records[1]["target"], tenant.as_str());
    second.stop().await;
    Ok(())
}
