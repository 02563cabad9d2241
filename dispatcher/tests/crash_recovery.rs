//! `followup serve` killed with SIGKILL keeps its connections' daily caps after it restarts:
//! a cap that is reached, unlike the crash harness's caps (`crash_harness.rs`), which are set
//! high so that every follow-up can settle.
//!
//! The fakes run in their own process (`followup fakes`), so that what they received
//! survives the engine's death.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{ChildGuard, Enrolment, free_port, serve_to_fakes, start_fakes, wait_ready};

const OPERATOR_TOKEN: &str = "crash-test-operator-token";
const CONTACTS: usize = 300;

fn start_engine(data_dir: &Path, port: u16, urls: &Value) -> ChildGuard {
    let child = serve_to_fakes(data_dir, port, urls)
        .env("FOLLOWUP_ADMIN_TOKEN", OPERATOR_TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start followup serve");
    ChildGuard(child)
}

async fn snapshot_totals(http: &reqwest::Client, base: &str) -> BTreeMap<String, u64> {
    let snapshot: Value = http
        .get(format!("{base}/admin/v1/snapshot"))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .expect("snapshot answers")
        .json()
        .await
        .expect("snapshot is JSON");
    serde_json::from_value(snapshot["totals"].clone()).expect("totals map")
}

async fn received(http: &reqwest::Client, urls: &Value) -> Vec<Value> {
    let gmail = urls["gmail"].as_str().unwrap_or_default().trim_end_matches('/');
    http.get(format!("{gmail}/_fake/received"))
        .send()
        .await
        .expect("fake answers")
        .json()
        .await
        .expect("received list is JSON")
}

async fn fake_stats(http: &reqwest::Client, urls: &Value) -> Value {
    let gmail = urls["gmail"].as_str().unwrap_or_default().trim_end_matches('/');
    let response = http.get(format!("{gmail}/_fake/stats")).send().await.expect("fake answers");
    response.json().await.expect("stats are JSON")
}

async fn enroll(http: &reqwest::Client, base: &str, per_day: u32) {
    let mut csv = String::from("email,first_name\n");
    for n in 0..CONTACTS {
        csv.push_str(&format!("person{n}@example.com,P{n}\n"));
    }
    let enrolment = Enrolment {
        operator_token: OPERATOR_TOKEN,
        name: "crash",
        gmail: json!({"sender": "crash@example.com", "access_token": "crash-token",
                      "limits": {"per_minute": 1200, "per_day": per_day}}),
        sequence: json!({"name": "crash", "steps": [
            {"channel": "email", "subject": "Hi", "body": "Hello {{first_name|there}}"}]}),
        csv,
        rows: CONTACTS,
    };
    support::enroll(http, base, enrolment).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_cap_holds_across_a_sigkill_and_restart() {
    const PER_DAY: u32 = 60;
    let http =
        followup_adapters::http::build_http_client(&Default::default()).expect("HTTP client");
    let data_dir = tempfile::tempdir().expect("temporary data dir");
    // The fakes enforce the same cap over a rolling day and count every send beyond it.
    let (_fakes, urls) = start_fakes(1200, PER_DAY);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");

    let mut engine = start_engine(data_dir.path(), port, &urls);
    wait_ready(&http, &base).await;
    enroll(&http, &base, PER_DAY).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while received(&http, &urls).await.len() < PER_DAY as usize / 2 {
        assert!(Instant::now() < deadline, "dispatch did not start within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    engine.0.kill().expect("SIGKILL the engine");
    engine.0.wait().expect("reap the engine");

    engine = start_engine(data_dir.path(), port, &urls);
    wait_ready(&http, &base).await;
    // The cap is reached within a second at 1,200 a minute. The restarted engine gets a few
    // seconds to overshoot it, as it would if it had forgotten the sends before the kill.
    let deadline = Instant::now() + Duration::from_secs(30);
    while received(&http, &urls).await.len() < PER_DAY as usize {
        assert!(Instant::now() < deadline, "the cap was not reached within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let totals = snapshot_totals(&http, &base).await;
    drop(engine);

    let stats = fake_stats(&http, &urls).await;
    assert_eq!(stats["rate_limit_violations"], 0, "the restarted engine broke the cap: {stats}");
    assert_eq!(received(&http, &urls).await.len(), PER_DAY as usize, "{totals:?}");
    let waiting = totals.get("pending").copied().unwrap_or(0);
    assert!(waiting >= (CONTACTS as u64) - u64::from(PER_DAY), "{totals:?}");
}
