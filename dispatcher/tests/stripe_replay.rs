//! A Stripe event recorded in the webhook log but not applied when `followup serve` was killed
//! is applied when it restarts, before it serves requests.

use std::path::Path;
use std::process::{Command, Stdio};

use followup_dispatcher::webhooks::event_log::WebhookLog;
use serde_json::{Value, json};
use support::{ChildGuard, free_port, wait_ready};

mod support;

const OPERATOR_TOKEN: &str = "stripe-replay-operator-token";
const PRICE: &str = "price_replay_pro";

fn start_engine(data_dir: &Path, port: u16, config: &Path) -> ChildGuard {
    let child = Command::new(env!("CARGO_BIN_EXE_followup"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .args(["--providers", "fake", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data_dir)
        .env("FOLLOWUP_ADMIN_TOKEN", OPERATOR_TOKEN)
        .env("FOLLOWUP_MASTER_KEY", support::MASTER_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start followup serve");
    ChildGuard(child)
}

async fn operator_json(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.bearer_auth(OPERATOR_TOKEN).send().await.expect("request answered");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unapplied_event_applies_after_kill() {
    let data_dir = tempfile::tempdir().expect("temporary data dir");
    let config = data_dir.path().join("stripe.toml");
    std::fs::write(
        &config,
        format!(
            "[webhooks]\nstripe_signing_secrets = [\"whsec_replay_test\"]\n\n\
             [plans.replay_basic]\nmonthly_email = 10\nmonthly_sms = 1\nmonthly_call = 1\n\n\
             [plans.replay_pro]\nmonthly_email = 1000\nmonthly_sms = 100\nmonthly_call = 10\n\
             stripe_price_id = \"{PRICE}\"\n"
        ),
    )
    .expect("write config");
    let http =
        followup_adapters::http::build_http_client(&Default::default()).expect("HTTP client");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");

    let mut engine = start_engine(data_dir.path(), port, &config);
    wait_ready(&http, &base).await;
    let create = http.post(format!("{base}/admin/v1/tenants")).json(&json!({
        "name": "replayed", "default_region": "US", "default_timezone": "UTC", "plan": "replay_basic"}));
    let (status, created) = operator_json(create).await;
    assert_eq!(status, 201, "{created}");
    let tenant = created["id"].as_str().expect("tenant id").to_owned();
    let link = http
        .put(format!("{base}/admin/v1/tenants/{tenant}/stripe-customer"))
        .json(&json!({"customer_id": "cus_Replay1"}));
    let (status, linked) = operator_json(link).await;
    assert_eq!(status, 200, "{linked}");

    engine.0.kill().expect("SIGKILL the engine");
    engine.0.wait().expect("reap the engine");

    // What the handler leaves when it dies between recording an event and applying it.
    let created_at = chrono::Utc::now().timestamp();
    let event = json!({
        "id": "evt_ReplayCreated", "type": "customer.subscription.created",
        "created": created_at,
        "data": {"object": {
            "id": "sub_Replay1", "object": "subscription", "customer": "cus_Replay1",
            "status": "active", "current_period_end": created_at + 30 * 86_400,
            "cancel_at_period_end": false,
            "items": {"data": [{"price": {"id": PRICE}}]}}},
    });
    {
        let log = WebhookLog::open(data_dir.path()).expect("open the webhook log");
        let record = serde_json::to_vec(&event).expect("encode");
        let inserted = log.insert_unapplied("stripe/evt_ReplayCreated".into(), record).await;
        assert!(inserted.expect("write the webhook log"), "a new record");
    }

    engine = start_engine(data_dir.path(), port, &config);
    wait_ready(&http, &base).await;
    let billing = http.get(format!("{base}/admin/v1/tenants/{tenant}/billing"));
    let (status, billing) = operator_json(billing).await;
    assert_eq!(status, 200, "{billing}");
    assert_eq!(billing["subscription_id"], "sub_Replay1", "{billing}");
    assert_eq!(billing["status"], "active", "{billing}");
    let tenants = http.get(format!("{base}/admin/v1/tenants"));
    let (_, tenants) = operator_json(tenants).await;
    let row = tenants.as_array().and_then(|rows| rows.iter().find(|row| row["id"] == *tenant));
    let row = row.unwrap_or_else(|| panic!("tenant listed: {tenants}"));
    assert_eq!(row["plan"], "replay_pro", "the price's plan: {row}");
    drop(engine);

    // The event is marked applied, so a further start does not apply it again.
    let log = WebhookLog::open(data_dir.path()).expect("open the webhook log");
    let unapplied = log.unapplied("stripe/").await.expect("read the webhook log");
    assert!(unapplied.is_empty(), "left unapplied: {}", unapplied.len());
}
