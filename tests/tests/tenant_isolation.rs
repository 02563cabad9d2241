//! One tenant's key never reaches another tenant's records: every such request gets 404.

use followup_tests::{OPERATOR_TOKEN, TestEngine, email_now_sequence};
use serde_json::Value;

#[actix_rt::test]
async fn other_tenants_records_answer_404() -> anyhow::Result<()> {
    let engine = TestEngine::start(|_| {}).await?;
    let owner = engine.create_tenant("owner", "pro").await?;
    let intruder = engine.create_tenant("intruder", "pro").await?;
    let sequence = engine.create_sequence(&owner, &email_now_sequence()).await?;
    let (_, report) =
        engine.upload(&owner, &sequence, "text/csv", "email\nowner1@example.com\n").await?;
    assert_eq!(report["accepted"], 1);
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
