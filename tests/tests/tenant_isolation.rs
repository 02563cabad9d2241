//! One tenant's key never reaches another tenant's records: every such request gets 404.

use followup_tests::{OPERATOR_TOKEN, TestEngine, email_now_sequence};
use serde_json::Value;

/// Creates an owner with one contact enrolled in a sequence, and an intruder with nothing.
/// Returns both API keys and the sequence id.
async fn owner_and_intruder(engine: &TestEngine) -> anyhow::Result<(String, String, String)> {
    let owner = engine.create_tenant("owner", "pro").await?;
    let intruder = engine.create_tenant("intruder", "pro").await?;
    let sequence = engine.create_sequence(&owner, &email_now_sequence()).await?;
    let (_, report) =
        engine.upload(&owner, &sequence, "text/csv", "email\nowner1@example.com\n").await?;
    assert_eq!(report["accepted"], 1);
    Ok((owner, intruder, sequence))
}

#[actix_rt::test]
async fn other_tenants_records_answer_404() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let (owner, intruder, sequence) = owner_and_intruder(&engine).await?;
    let schedule = {
        let tenants = engine.running.engine.store().tenants().await?;
        let owner_tenant = tenants.iter().find(|t| t.name == "owner").expect("owner exists");
        let sequence_id = sequence.parse()?;
        engine.schedule_id(owner_tenant.id, sequence_id, "owner1@example.com").await?
    };

    let probes = [
        engine.http.get(engine.url(&format!("/v1/sequences/{sequence}"))),
        engine.http.get(engine.url(&format!("/v1/schedules/{schedule}"))),
        engine.http.delete(engine.url(&format!("/v1/schedules/{schedule}"))),
        engine
            .http
            .post(engine.url("/v1/schedules/bulk"))
            .query(&[("sequence", sequence.as_str())])
            .header("content-type", "text/csv")
            .body("email\nx@example.com\n"),
    ];
    for probe in probes {
        let response = probe.bearer_auth(&intruder).send().await?;
        assert_eq!(response.status(), 404);
    }
    let owner_view = engine
        .http
        .get(engine.url(&format!("/v1/schedules/{schedule}")))
        .bearer_auth(&owner)
        .send()
        .await?;
    assert_eq!(owner_view.status(), 200, "the owner still sees the schedule");
    let listed: Value = engine
        .http
        .get(engine.url("/v1/sequences"))
        .bearer_auth(&intruder)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(listed, serde_json::json!([]));
    Ok(())
}

#[actix_rt::test]
async fn missing_or_wrong_credentials_are_401() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let no_key = engine.http.get(engine.url("/v1/sequences")).send().await?;
    assert_eq!(no_key.status(), 401);
    let bad_key =
        engine.http.get(engine.url("/v1/sequences")).bearer_auth("fu_wrong").send().await?;
    assert_eq!(bad_key.status(), 401);
    let bad_operator = engine
        .http
        .get(engine.url("/admin/v1/snapshot"))
        .bearer_auth(format!("{OPERATOR_TOKEN}x"))
        .send()
        .await?;
    assert_eq!(bad_operator.status(), 401);
    Ok(())
}

#[actix_rt::test]
async fn connection_answers_never_echo_secrets() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    engine.connect_fakes(&key).await?;
    let text = engine
        .http
        .get(engine.url("/v1/connections"))
        .bearer_auth(&key)
        .send()
        .await?
        .text()
        .await?;
    assert!(text.contains("sales@example.com"));
    assert!(!text.contains("test-gmail-token"));
    assert!(!text.contains("test-twilio-token"));
    Ok(())
}

#[actix_rt::test]
async fn export_and_deletion_stay_within_tenant() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let (owner, intruder, sequence) = owner_and_intruder(&engine).await?;
    let owner_schedules: Value = engine.get_json(&owner, "/v1/schedules").await?;
    let schedule = owner_schedules["schedules"][0]["schedule"].as_str().unwrap_or_default();
    assert!(!schedule.is_empty(), "{owner_schedules}");

    let export = engine.http.get(engine.url("/v1/export")).bearer_auth(&intruder).send().await?;
    assert_eq!(export.status(), 200);
    let text = export.text().await?;
    assert!(!text.contains("owner1@example.com"), "no contact of another tenant");
    assert!(!text.contains(&sequence), "no sequence of another tenant");
    assert!(!text.contains(schedule), "no schedule of another tenant");
    let tenants: Vec<Value> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["type"] == "tenant")
        .collect();
    assert_eq!(tenants.len(), 1);
    assert_eq!(tenants[0]["name"], "intruder");

    let deleted =
        engine.http.delete(engine.url("/v1/tenant")).bearer_auth(&intruder).send().await?;
    assert_eq!(deleted.status(), 202, "a tenant deletes its own account");
    let owner_view = engine
        .http
        .get(engine.url(&format!("/v1/schedules/{schedule}")))
        .bearer_auth(&owner)
        .send()
        .await?;
    assert_eq!(owner_view.status(), 200, "the other tenant's schedule is untouched");
    let owner_export = engine.http.get(engine.url("/v1/export")).bearer_auth(&owner).send().await?;
    assert!(owner_export.text().await?.contains("owner1@example.com"), "nor its contacts");
    let after = engine
        .http
        .get(engine.url(&format!("/v1/schedules/{schedule}")))
        .bearer_auth(&intruder)
        .send()
        .await?;
    assert_eq!(after.status(), 401, "the deleted tenant's key reaches nothing");
    Ok(())
}
