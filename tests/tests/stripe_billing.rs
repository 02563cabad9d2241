//! Stripe billing through the HTTP API: the operator links a tenant to its Stripe customer,
//! and the tenant and the operator read its billing standing.

use followup_tests::{OPERATOR_TOKEN, TestEngine};
use serde_json::{Value, json};

async fn tenant_id(engine: &TestEngine, key: &str) -> anyhow::Result<String> {
    let usage = engine.get_json(key, "/v1/usage").await?;
    Ok(usage["tenant"].as_str().expect("tenant id in the usage").to_owned())
}

async fn link(engine: &TestEngine, tenant: &str, customer: &str) -> anyhow::Result<(u16, Value)> {
    let response = engine
        .http
        .put(engine.url(&format!("/admin/v1/tenants/{tenant}/stripe-customer")))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({"customer_id": customer}))
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

#[actix_rt::test]
async fn customer_links_to_one_tenant() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let first_key = engine.create_tenant("first", "free").await?;
    let second_key = engine.create_tenant("second", "free").await?;
    let first = tenant_id(&engine, &first_key).await?;
    let second = tenant_id(&engine, &second_key).await?;

    let before = engine.get_json(&first_key, "/v1/billing").await?;
    assert_eq!(before["status"], "unmanaged", "{before}");
    assert_eq!(before["sends_allowed"], true, "{before}");

    let (status, linked) = link(&engine, &first, "cus_Link1").await?;
    assert_eq!(status, 200, "{linked}");
    assert_eq!(linked["customer_id"], "cus_Link1", "{linked}");
    assert_eq!(linked["status"], "active", "{linked}");
    let own = engine.get_json(&first_key, "/v1/billing").await?;
    assert_eq!(own["customer_id"], "cus_Link1", "{own}");

    let (status, taken) = link(&engine, &second, "cus_Link1").await?;
    assert_eq!(status, 422, "a customer pays for one tenant: {taken}");
    assert!(taken["error"]["message"].as_str().unwrap_or_default().contains(&first), "{taken}");
    let (status, invalid) = link(&engine, &second, "customer-1").await?;
    assert_eq!(status, 400, "{invalid}");
    assert!(invalid["error"]["message"].as_str().unwrap_or_default().contains("customer_id"));
    let unknown = "00000000-0000-4000-8000-000000000000";
    let (status, missing) = link(&engine, unknown, "cus_Link2").await?;
    assert_eq!(status, 404, "{missing}");

    let admin = engine
        .http
        .get(engine.url(&format!("/admin/v1/tenants/{first}/billing")))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await?;
    assert_eq!(admin.status(), 200);
    let admin: Value = admin.json().await?;
    assert_eq!(admin["customer_id"], "cus_Link1", "{admin}");
    Ok(())
}
