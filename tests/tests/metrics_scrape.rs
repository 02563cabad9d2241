//! `/metrics` serves the Prometheus text format with the engine's metrics, named with the
//! `followup_` prefix and base units, and labels drawn from small fixed sets.
//!
//! The recorder is global to the process, so this file contains the only test that installs it.

use std::collections::{BTreeMap, BTreeSet};

use followup_dispatcher::telemetry::install_metrics;
use followup_tests::{TestEngine, email_now_sequence};

#[actix_rt::test]
async fn metrics_page_parses_and_names_follow_the_rules() -> anyhow::Result<()> {
    let handle = install_metrics()?;
    let engine = TestEngine::start_with_metrics(|_| {}, Some(handle)).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    engine.connect_fakes(&key).await?;
    // An expired token with a refresh token, so that one refresh is counted.
    let gmail = serde_json::json!({"sender": "sales@example.com", "access_token": "test-gmail-token",
                                   "refresh_token": "test-gmail-refresh", "expires_in": 0});
    engine.connect(&key, "gmail", &gmail).await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
    let csv = "email,first_name\na@example.com,Ann\nb@example.com,Bo\nbad,Cy\n";
    let (status, _) = engine.upload(&key, &sequence, "text/csv", csv).await?;
    assert_eq!(status, 200);
    engine.settle(1).await?;
    delete_tenant_and_wait(&engine).await?;

    let text = engine.http.get(engine.url("/metrics")).send().await?.text().await?;
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines)?;

    let mut samples: BTreeMap<String, f64> = BTreeMap::new();
    let mut label_values = BTreeSet::new();
    for sample in &scrape.samples {
        assert!(sample.metric.starts_with("followup_"), "unprefixed metric {}", sample.metric);
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 1.0,
        };
        let mut key = sample.metric.clone();
        let mut labels: Vec<(&String, &String)> = sample.labels.iter().collect();
        labels.sort();
        for (name, label) in labels {
            key.push_str(&format!(",{name}={label}"));
            label_values.insert(label.to_owned());
        }
        *samples.entry(key).or_default() += value;
    }
    assert_eq!(samples.get("followup_ingest_rows_total,result=accepted"), Some(&2.0));
    assert_eq!(samples.get("followup_ingest_rows_total,result=rejected"), Some(&1.0));
    assert_eq!(samples.get("followup_sends_total,outcome=sent,provider=gmail"), Some(&2.0));
    assert_eq!(samples.get("followup_queue_depth,channel=email"), Some(&0.0));
    assert_eq!(
        samples.get("followup_quota_committed_sends_total,channel=email"),
        Some(&2.0),
        "the two sends committed against the plan"
    );
    let taken = samples.get("followup_quota_taken_sends_total,channel=email").copied();
    assert_eq!(taken, Some(100.0), "one block of the default 100 sends taken from the quota");
    assert_eq!(samples.get("followup_tenant_deletions_pending"), Some(&0.0), "purge finished");
    let purged = samples.get("followup_purged_records_total").copied().unwrap_or_default();
    assert_eq!(purged, 3.0, "the deleted tenant's sequence and two connections");
    assert_eq!(
        samples.get("followup_token_refreshes_total,outcome=refreshed,provider=gmail"),
        Some(&1.0)
    );
    assert!(
        scrape.samples.iter().any(|s| s.metric == "followup_dispatch_lateness_seconds"),
        "lateness histogram missing"
    );
    assert!(
        scrape.docs.keys().all(|name| name.starts_with("followup_")),
        "every described metric is ours"
    );
    assert!(scrape.docs.contains_key("followup_sends_total"), "help text for sends");
    for value in &label_values {
        assert!(!value.contains('@'), "an address leaked into a label: {value}");
        assert!(value.len() <= 20, "a label value looks like an id: {value}");
    }
    assert!(!text.contains("test-gmail-token"), "a token leaked into /metrics");
    assert!(!text.contains("test-gmail-refresh"), "a refresh token leaked into /metrics");
    Ok(())
}

/// Creates a tenant with a sequence and two connections, deletes it and waits at most 30
/// seconds for its purge. It uploads nothing, which keeps the ingest counts above as they are.
async fn delete_tenant_and_wait(engine: &TestEngine) -> anyhow::Result<()> {
    let key = engine.create_tenant("leaver", "pro").await?;
    engine.create_sequence(&key, &email_now_sequence()).await?;
    engine.connect_fakes(&key).await?;
    let response = engine.http.delete(engine.url("/v1/tenant")).bearer_auth(&key).send().await?;
    assert_eq!(response.status(), 202);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let deletions = engine.running.engine.store().tenant_deletions().await?;
        if deletions.iter().all(|deletion| deletion.completed_at.is_some()) {
            return Ok(());
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "purge unfinished after 30 s");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
