//! Plans and quota through the HTTP API: follow-ups held over the quota wait for the next
//! period or an upgrade, usage shows in the tenant's and the operator's API, and a plan limits
//! the number of connections.

use chrono::{TimeZone as _, Utc};
use followup_core::domain::{Channel, FollowUpState};
use followup_dispatcher::config::{OverQuota, Plan};
use followup_tests::{OPERATOR_TOKEN, TestEngine, email_csv, email_now_sequence};
use serde_json::{Value, json};

fn hold_plan(monthly_email: u64) -> Plan {
    Plan { monthly_email, over_quota: OverQuota::Hold, ..Plan::unlimited() }
}

async fn email_count(engine: &TestEngine, state: FollowUpState) -> u64 {
    let counts = engine.running.engine.store().count_follow_ups(None).await.expect("counts");
    counts.get(&(Channel::Email, state)).copied().unwrap_or(0)
}

async fn change_plan(engine: &TestEngine, tenant: &str, plan: &str) -> Value {
    let response = engine
        .http
        .put(engine.url(&format!("/admin/v1/tenants/{tenant}/plan")))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({"plan": plan}))
        .send()
        .await
        .expect("plan change answered");
    assert_eq!(response.status(), 200, "plan change");
    response.json().await.expect("JSON")
}

#[actix_rt::test]
async fn held_wait_for_new_period_or_upgrade() -> anyhow::Result<()> {
    let engine = TestEngine::start(|config| {
        config.plans.insert("tiny_hold".into(), hold_plan(2));
        config.plans.insert("bigger".into(), hold_plan(10));
    })
    .await?;
    let key = engine.create_tenant("acme", "tiny_hold").await?;
    engine.connect_fakes(&key).await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
    engine.upload(&key, &sequence, "text/csv", email_csv("held", 5)).await?;
    engine.settle(1).await?;

    assert_eq!(email_count(&engine, FollowUpState::Sent).await, 2, "the December quota");
    assert_eq!(email_count(&engine, FollowUpState::Held).await, 3, "the rest held");
    let usage = engine.get_json(&key, "/v1/usage").await?;
    assert_eq!(usage["period"], "2026-12", "{usage}");
    assert_eq!(usage["held"], 3, "{usage}");
    assert_eq!(usage["channels"]["email"]["committed"], 2, "{usage}");
    assert_eq!(usage["channels"]["email"]["remaining"], 0, "{usage}");
    let tenant = usage["tenant"].as_str().expect("tenant id").to_owned();

    let everyone = engine
        .http
        .get(engine.url("/admin/v1/usage?period=2026-12"))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await?
        .json::<Value>()
        .await?;
    let listed = everyone.as_array().and_then(|all| all.iter().find(|t| t["tenant"] == *tenant));
    let listed = listed.unwrap_or_else(|| panic!("tenant not listed: {everyone}"));
    assert_eq!(listed["channels"]["email"]["committed"], 2, "{listed}");
    assert_eq!(listed["plan"], "tiny_hold", "{listed}");

    // The console's snapshot shows the held follow-ups and the quota taken.
    let snapshot = engine
        .http
        .get(engine.url("/admin/v1/snapshot"))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await?
        .json::<Value>()
        .await?;
    let summary =
        snapshot["tenants"].as_array().and_then(|all| all.iter().find(|t| t["id"] == *tenant));
    let summary = summary.unwrap_or_else(|| panic!("tenant not in the snapshot: {snapshot}"));
    assert_eq!(summary["held"], 3, "{summary}");
    assert_eq!(summary["quota_used_percent"], 100, "{summary}");

    // A new period releases the held follow-ups, and January's quota sends two of them.
    let january = Utc.with_ymd_and_hms(2027, 1, 4, 15, 0, 0).single().expect("instant");
    engine.virtual_clock().advance_to(january);
    engine.settle(1).await?;
    assert_eq!(email_count(&engine, FollowUpState::Sent).await, 4, "December's 2 and January's 2");
    assert_eq!(email_count(&engine, FollowUpState::Held).await, 1, "held again in January");
    let january_usage = engine.get_json(&key, "/v1/usage?period=2027-01").await?;
    assert_eq!(january_usage["channels"]["email"]["committed"], 2, "{january_usage}");

    // An upgrade releases the last one at once.
    let changed = change_plan(&engine, &tenant, "bigger").await;
    assert_eq!(changed["released_held"], 1, "{changed}");
    assert_eq!(changed["from"], "tiny_hold", "{changed}");
    engine.settle(1).await?;
    assert_eq!(email_count(&engine, FollowUpState::Sent).await, 5, "all sent after the upgrade");
    assert_eq!(email_count(&engine, FollowUpState::Held).await, 0);
    assert_eq!(engine.running.fakes()?.stats().received_by_provider.values().sum::<u64>(), 5);
    Ok(())
}

#[actix_rt::test]
async fn plan_limits_connections() -> anyhow::Result<()> {
    let engine = TestEngine::start(|config| {
        config.plans.insert("solo".into(), Plan { connections: 1, ..Plan::unlimited() });
    })
    .await?;
    let key = engine.create_tenant("acme", "solo").await?;
    let gmail = json!({"sender": "sales@example.com", "access_token": "test-gmail-token"});
    engine.connect(&key, "gmail", &gmail).await?;
    engine.connect(&key, "gmail", &gmail).await.expect("replacing a connection is allowed");

    let twilio = json!({"sender": "+15005550006", "account_sid": "AC00000000000000000000000000000001",
                        "auth_token": "test-twilio-token"});
    let response = engine
        .http
        .put(engine.url("/v1/connections/twilio"))
        .bearer_auth(&key)
        .json(&twilio)
        .send()
        .await?;
    assert_eq!(response.status(), 422, "a second connection under a plan of one");
    let body: Value = response.json().await?;
    let message = body.to_string();
    assert!(message.contains("plan solo allows 1 connection"), "{message}");
    Ok(())
}

#[actix_rt::test]
async fn usage_and_plan_change_reject_bad_input() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    let response = engine.http.get(engine.url("/v1/usage?period=2026-13")).bearer_auth(&key);
    let response = response.send().await?;
    assert_eq!(response.status(), 400);
    let message = response.text().await?;
    assert!(message.contains("2026-13") && message.contains("YYYY-MM"), "{message}");

    let usage = engine.get_json(&key, "/v1/usage").await?;
    let tenant = usage["tenant"].as_str().expect("tenant id").to_owned();
    let response = engine
        .http
        .put(engine.url(&format!("/admin/v1/tenants/{tenant}/plan")))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({"plan": "platinum"}))
        .send()
        .await?;
    assert_eq!(response.status(), 400);
    let message = response.text().await?;
    assert!(message.contains("platinum") && message.contains("pro"), "{message}");
    Ok(())
}
