//! The operator overview over HTTP: snapshot, tenant pages and tenant detail, counted from a
//! real engine that sent through the fakes.

use followup_adapters::fakes::{ErrorPlan, ForcedOutcome};
use followup_tests::{OPERATOR_TOKEN, TestEngine, email_now_sequence};
use serde_json::Value;

async fn operator_get(engine: &TestEngine, path: &str) -> anyhow::Result<(u16, Value)> {
    let response = engine.http.get(engine.url(path)).bearer_auth(OPERATOR_TOKEN).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

fn names(page: &Value) -> Vec<&str> {
    page["tenants"]
        .as_array()
        .map(|all| all.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default()
}

#[actix_rt::test]
async fn snapshot_pages_and_detail_show_queues_failures_and_tenants() -> anyhow::Result<()> {
    let errors = ErrorPlan::default().force("gone@example.com", ForcedOutcome::RecipientRejected);
    let engine = TestEngine::start_with_errors(|_| {}, errors).await?;
    let alpha = engine.create_tenant("Alpha Corp", "pro").await?;
    engine.connect_fakes(&alpha).await?;
    let sequence = engine.create_sequence(&alpha, &email_now_sequence()).await?;
    let csv = "email\na1@example.com\na2@example.com\ngone@example.com\n";
    engine.upload(&alpha, &sequence, "text/csv", csv).await?;
    engine.settle(1).await?;

    // Beta's follow-ups are uploaded after the clock stopped: due, not sent.
    let beta = engine.create_tenant("Beta LLC", "pro").await?;
    engine.connect_fakes(&beta).await?;
    let sequence = engine.create_sequence(&beta, &email_now_sequence()).await?;
    let csv: String = std::iter::once("email\n".to_owned())
        .chain((0..5).map(|n| format!("b{n}@example.com\n")))
        .collect();
    engine.upload(&beta, &sequence, "text/csv", csv).await?;
    engine.create_tenant("Gamma", "free").await?;

    let (status, snapshot) = operator_get(&engine, "/admin/v1/snapshot").await?;
    assert_eq!(status, 200, "{snapshot}");
    assert_eq!(snapshot["totals"]["sent"], 2, "{snapshot}");
    assert_eq!(snapshot["totals"]["failed"], 1, "{snapshot}");
    assert_eq!(snapshot["totals"]["pending"], 5, "{snapshot}");
    assert_eq!(snapshot["tenant_count"], 3, "{snapshot}");
    assert_eq!(snapshot["tenants"][0]["name"], "Beta LLC", "largest backlog first");
    assert_eq!(snapshot["tenants"][0]["backlog"], 5);
    assert!(!snapshot["node"].as_str().unwrap_or_default().is_empty(), "{snapshot}");

    let queues = snapshot["queues"].as_array().expect("queues");
    let gmail = queues.iter().find(|q| q["provider"] == "gmail" && q["channel"] == "email");
    let gmail = gmail.unwrap_or_else(|| panic!("no gmail queue: {snapshot}"));
    assert_eq!(gmail["waiting"], 5, "{gmail}");
    assert_eq!(gmail["due"], 5, "{gmail}");
    assert_eq!(gmail["sent"], 2, "{gmail}");
    assert_eq!(gmail["failed"], 1, "{gmail}");
    assert_eq!(gmail["in_flight"], 0, "{gmail}");
    let kinds: Vec<(&str, &str)> = queues
        .iter()
        .filter_map(|q| Some((q["provider"].as_str()?, q["channel"].as_str()?)))
        .collect();
    for queue in [("gmail", "email"), ("outlook", "email"), ("twilio", "sms"), ("twilio", "call")] {
        assert!(kinds.contains(&queue), "queue {queue:?} missing: {kinds:?}");
    }

    assert_eq!(snapshot["lateness"]["samples"], 2, "two sends in the window: {snapshot}");
    assert_eq!(snapshot["lateness"]["window_seconds"], 300);
    let failures = snapshot["recent_failures"].as_array().expect("failures");
    assert_eq!(failures.len(), 1, "{snapshot}");
    assert_eq!(failures[0]["kind"], "failed");
    assert_eq!(failures[0]["provider"], "gmail");
    let reason = failures[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("gmail 400"), "{reason}");
    let text = snapshot.to_string();
    for secret in ["gone@example.com", "test-gmail-token", "sales@example.com", "+15005550006"] {
        assert!(!text.contains(secret), "the snapshot shows {secret}: {text}");
    }

    // Pages: sorted, filtered, offset, and every bad parameter named.
    let (status, page) =
        operator_get(&engine, "/admin/v1/tenant-summaries?sort=name&limit=2").await?;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], 3);
    assert_eq!(names(&page), ["Alpha Corp", "Beta LLC"]);
    let (_, page) = operator_get(&engine, "/admin/v1/tenant-summaries?sort=name&offset=2").await?;
    assert_eq!((names(&page), page["offset"].clone()), (vec!["Gamma"], Value::from(2)));
    let (_, page) = operator_get(&engine, "/admin/v1/tenant-summaries?filter=gAM").await?;
    assert_eq!((names(&page), page["total"].clone()), (vec!["Gamma"], Value::from(1)));
    let (_, page) = operator_get(&engine, "/admin/v1/tenant-summaries?sort=failed").await?;
    assert_eq!(names(&page)[0], "Alpha Corp");
    for (query, named) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("offset=-1", "offset"),
        ("sort=size", "sort"),
        ("colour=red", "colour"),
    ] {
        let (status, error) =
            operator_get(&engine, &format!("/admin/v1/tenant-summaries?{query}")).await?;
        assert_eq!(status, 400, "{query}: {error}");
        assert!(error.to_string().contains(named), "{query}: {error}");
    }

    let alpha_id = snapshot["tenants"]
        .as_array()
        .and_then(|all| all.iter().find(|t| t["name"] == "Alpha Corp"))
        .map(|t| t["id"].as_str().unwrap_or_default().to_owned())
        .expect("alpha in the snapshot");
    let (status, detail) =
        operator_get(&engine, &format!("/admin/v1/tenants/{alpha_id}/detail")).await?;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["summary"]["sent"], 2, "{detail}");
    assert_eq!(detail["states"]["sent"], 2, "{detail}");
    assert_eq!(detail["states"]["failed"], 1, "{detail}");
    let providers: Vec<&str> = detail["connections"]
        .as_array()
        .map(|all| all.iter().filter_map(|c| c["provider"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(providers, ["gmail", "twilio"], "{detail}");
    assert_eq!(detail["connections"][0]["per_minute"], 6000, "{detail}");
    let email =
        detail["usage"].as_array().and_then(|all| all.iter().find(|u| u["channel"] == "email"));
    assert_eq!(email.map(|u| u["used"].clone()), Some(Value::from(2)), "{detail}");
    assert_eq!(detail["recent_failures"].as_array().map(Vec::len), Some(1), "{detail}");
    assert!(!detail.to_string().contains("example.com"), "{detail}");

    let (status, _) =
        operator_get(&engine, "/admin/v1/tenants/00000000-0000-7000-8000-000000000000/detail")
            .await?;
    assert_eq!(status, 404);
    let (status, error) = operator_get(&engine, "/admin/v1/tenants/nope/detail").await?;
    assert_eq!(status, 400);
    assert!(error.to_string().contains("nope"), "{error}");
    Ok(())
}

#[actix_rt::test]
async fn snapshot_is_served_from_the_background_count() -> anyhow::Result<()> {
    // A refresh period far beyond the test: only the first count ever runs.
    let engine =
        TestEngine::start(|config| config.admin.snapshot_refresh_millis = 3_600_000).await?;
    engine.create_tenant("First", "pro").await?;
    let (_, before) = operator_get(&engine, "/admin/v1/snapshot").await?;
    engine.create_tenant("Second", "pro").await?;
    let (_, after) = operator_get(&engine, "/admin/v1/snapshot").await?;
    assert_eq!(before["now"], after["now"], "both answers come from one count");
    assert_eq!(before["tenant_count"], after["tenant_count"], "{before} {after}");
    let (_, page) = operator_get(&engine, "/admin/v1/tenant-summaries").await?;
    assert_eq!(page["total"], before["tenant_count"], "pages read the same count");
    Ok(())
}

#[actix_rt::test]
async fn follow_up_counts_are_read_at_the_request() -> anyhow::Result<()> {
    let engine =
        TestEngine::start(|config| config.admin.snapshot_refresh_millis = 3_600_000).await?;
    let tenant = engine.create_tenant("Counted", "pro").await?;
    engine.connect_fakes(&tenant).await?;
    let sequence = engine.create_sequence(&tenant, &email_now_sequence()).await?;
    let (_, before) = operator_get(&engine, "/admin/v1/snapshot").await?;
    assert_eq!(before["totals"].get("pending"), None, "{before}");
    let id = before["tenants"][0]["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(before["tenants"][0]["name"], "Counted", "{before}");

    let csv = "email\nc1@example.com\nc2@example.com\nc3@example.com\n";
    engine.upload(&tenant, &sequence, "text/csv", csv).await?;
    let path = format!("/admin/v1/tenants/{id}/follow-up-counts");
    let (status, counts) = operator_get(&engine, &path).await?;
    assert_eq!(status, 200, "{counts}");
    assert_eq!(counts["tenant"], id, "{counts}");
    assert_eq!(counts["states"], serde_json::json!({"pending": 3}), "{counts}");
    let (_, cached) = operator_get(&engine, "/admin/v1/snapshot").await?;
    assert_eq!(cached["totals"].get("pending"), None, "the snapshot keeps its older count");

    engine.settle(3).await?;
    let (_, counts) = operator_get(&engine, &path).await?;
    assert_eq!(counts["states"], serde_json::json!({"sent": 3}), "{counts}");

    let unknown = "/admin/v1/tenants/00000000-0000-7000-8000-000000000000/follow-up-counts";
    assert_eq!(operator_get(&engine, unknown).await?.0, 404);
    let (status, error) = operator_get(&engine, "/admin/v1/tenants/nope/follow-up-counts").await?;
    assert_eq!(status, 400);
    assert!(error.to_string().contains("nope"), "{error}");
    Ok(())
}
