//! The shipped Grafana dashboard (`ops/grafana/followup.json`) and Prometheus alert rules
//! (`ops/prometheus/alerts.yml`) parse, and every `followup_` metric they read is exposed by a
//! running engine's `/metrics`, parsed as Prometheus text.
//!
//! The recorder is global to the process, so this file contains one test that installs it.

use std::collections::BTreeSet;
use std::path::PathBuf;

use followup_dispatcher::telemetry::install_metrics;
use followup_tests::{TestEngine, email_now_sequence};
use serde_json::Value;

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// Every `followup_` metric name in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(start) = rest.find("followup_") {
        let tail = &rest[start..];
        let end =
            tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// Every `expr` of the dashboard's panels.
fn dashboard_exprs() -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(repo_file("ops/grafana/followup.json"))?;
    let dashboard: Value = serde_json::from_str(&text)?;
    let panels = dashboard["panels"].as_array().ok_or_else(|| anyhow::anyhow!("no panels"))?;
    let mut exprs = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default();
        let targets = panel["targets"].as_array().filter(|targets| !targets.is_empty());
        let targets = targets.ok_or_else(|| anyhow::anyhow!("panel {title:?} has no target"))?;
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            anyhow::ensure!(!expr.is_empty(), "a target of panel {title:?} has no expr");
            exprs.push(expr.to_owned());
        }
    }
    Ok(exprs)
}

/// Every rule's `expr`, after checking that each rule is complete; also returns the alert names.
fn alert_rules() -> anyhow::Result<(Vec<String>, BTreeSet<String>)> {
    let text = std::fs::read_to_string(repo_file("ops/prometheus/alerts.yml"))?;
    let rules: serde_yaml::Value = serde_yaml::from_str(&text)?;
    let groups = rules["groups"].as_sequence().ok_or_else(|| anyhow::anyhow!("no groups"))?;
    let (mut exprs, mut names) = (Vec::new(), BTreeSet::new());
    for rule in groups.iter().filter_map(|group| group["rules"].as_sequence()).flatten() {
        let name = rule["alert"].as_str().unwrap_or_default().to_owned();
        anyhow::ensure!(!name.is_empty(), "a rule without an alert name: {rule:?}");
        let expr = rule["expr"].as_str().unwrap_or_default();
        anyhow::ensure!(!expr.is_empty(), "alert {name} has no expr");
        anyhow::ensure!(rule["labels"]["severity"].as_str().is_some(), "alert {name}: severity");
        anyhow::ensure!(
            rule["annotations"]["summary"].as_str().is_some(),
            "alert {name} has no summary"
        );
        exprs.push(expr.to_owned());
        anyhow::ensure!(names.insert(name.clone()), "alert {name} is defined twice");
    }
    Ok((exprs, names))
}

#[actix_rt::test]
async fn dashboard_and_alerts_read_only_exposed_metrics() -> anyhow::Result<()> {
    let handle = install_metrics()?;
    let engine = TestEngine::start_with_metrics(|_| {}, Some(handle)).await?;
    let key = engine.create_tenant("acme", "pro").await?;
    engine.connect_fakes(&key).await?;
    // An expired token with a refresh token, so that a refresh is counted.
    let gmail = serde_json::json!({"sender": "sales@example.com", "access_token": "ops-token",
                                   "refresh_token": "ops-refresh", "expires_in": 0});
    engine.connect(&key, "gmail", &gmail).await?;
    let sequence = engine.create_sequence(&key, &email_now_sequence()).await?;
    let csv = "email\na@example.com\nb@example.com\n";
    engine.upload(&key, &sequence, "text/csv", csv).await?;
    engine.settle(1).await?;

    let text = engine.http.get(engine.url("/metrics")).send().await?.text().await?;
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_owned())))?;
    let exposed: BTreeSet<String> = scrape.samples.iter().map(|s| s.metric.clone()).collect();
    let histograms: BTreeSet<&str> = scrape
        .samples
        .iter()
        .filter(|s| matches!(s.value, prometheus_parse::Value::Histogram(_)))
        .map(|s| s.metric.as_str())
        .collect();
    let is_exposed = |name: &str| {
        exposed.contains(name)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix).is_some_and(|base| histograms.contains(base))
            })
    };

    let (alert_exprs, alerts) = alert_rules()?;
    for wanted in [
        "FollowupNotReady",
        "FollowupProviderFailing",
        "FollowupLatenessRising",
        "FollowupConnectionPaused",
        "FollowupQuotaExhausted",
    ] {
        assert!(alerts.contains(wanted), "alert {wanted} missing: {alerts:?}");
    }
    let mut used = BTreeSet::new();
    for expr in dashboard_exprs()?.iter().chain(&alert_exprs) {
        used.extend(metric_names(expr));
    }
    assert!(used.len() >= 12, "the files read few metrics: {used:?}");
    let missing: Vec<&String> = used.iter().filter(|name| !is_exposed(name)).collect();
    assert!(missing.is_empty(), "not exposed by the engine: {missing:?}\nexposed: {exposed:?}");
    assert_eq!(
        scrape.samples.iter().find(|s| s.metric == "followup_ready").map(|s| &s.value),
        Some(&prometheus_parse::Value::Gauge(1.0)),
        "the engine is ready"
    );
    Ok(())
}

#[test]
fn metric_names_are_found_in_expressions() {
    let names = metric_names("sum by (le) (rate(followup_a_bucket[5m])) / followup_b");
    assert_eq!(names, BTreeSet::from(["followup_a_bucket".to_owned(), "followup_b".to_owned()]));
}
