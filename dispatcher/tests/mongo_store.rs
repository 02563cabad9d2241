//! `followup serve` and `followup demo` on the MongoDB store, against a real FerretDB server:
//! start-up errors for a wrong or unreachable store, the demo's books balancing, and an engine
//! that goes on when its database stops mid-dispatch and comes back.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use followup_adapters::ferretdb_fixture;
use serde_json::{Value, json};
use support::{
    ChildGuard, Enrolment, MASTER_KEY, free_port, serve_to_fakes, start_fakes, wait_ready,
};

/// Runs `followup serve` with `store` and returns its output once it exits, which a store it
/// cannot open makes it do at once; fails the test if it runs for 30 s.
fn serve_with_store(store: &str) -> Output {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let child = Command::new(env!("CARGO_BIN_EXE_followup"))
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(data_dir.path())
        .args(["--store", store, "--store-timeout-seconds", "1"])
        .env("FOLLOWUP_MASTER_KEY", MASTER_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start followup serve");
    let mut guard = ChildGuard(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while guard.0.try_wait().expect("poll serve").is_none() {
        assert!(Instant::now() < deadline, "serve kept running with store {store}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let child = std::mem::replace(&mut guard.0, Command::new("true").spawn().expect("true"));
    child.wait_with_output().expect("serve output")
}

/// The lines of stderr that are not log lines: what the operator reads as the error.
fn error_lines(output: &Output) -> Vec<String> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr.lines().filter(|line| line.starts_with("Error")).map(str::to_owned).collect()
}

#[test]
fn serve_names_an_unreachable_store_without_its_password() {
    let port = free_port();
    let output = serve_with_store(&format!("mongodb://ops:pa55word-xyz@127.0.0.1:{port}/prod"));
    assert!(!output.status.success(), "serve started without its store");
    let lines = error_lines(&output);
    assert_eq!(lines.len(), 1, "one error line: {lines:?}");
    assert!(lines[0].contains(&format!("127.0.0.1:{port}")), "names host:port: {lines:?}");
    assert!(lines[0].contains("check that the server runs"), "says what to check: {lines:?}");
    let everything = String::from_utf8_lossy(&output.stderr);
    assert!(!everything.contains("pa55word-xyz"), "password printed: {everything}");
}

#[test]
fn serve_names_a_malformed_store_uri_without_its_password() {
    let output = serve_with_store("mongodb://ops:pa55word-xyz@127.0.0.1:99999999/prod");
    assert!(!output.status.success(), "serve started with a malformed store URI");
    let lines = error_lines(&output);
    assert_eq!(lines.len(), 1, "one error line: {lines:?}");
    assert!(lines[0].contains("not a valid MongoDB connection string"), "{lines:?}");
    assert!(lines[0].contains("127.0.0.1:99999999"), "names the address: {lines:?}");
    let everything = String::from_utf8_lossy(&output.stderr);
    assert!(!everything.contains("pa55word-xyz"), "password printed: {everything}");
}

fn number(summary: &Value, key: &str) -> u64 {
    summary[key].as_u64().unwrap_or_else(|| panic!("summary lacks {key}: {summary}"))
}

#[test]
fn demo_balances_on_ferretdb() {
    let csv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/customers-100.csv");
    let server = ferretdb_fixture::shared();
    let store = server.uri_for(&ferretdb_fixture::unique_database("demo"));
    let output = Command::new(env!("CARGO_BIN_EXE_followup"))
        .args(["demo", "--json", "--csv"])
        .arg(&csv)
        .args(["--store", &store])
        .output()
        .expect("followup binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stderr}");
    let summary: Value = serde_json::from_slice(&output.stdout).expect("one JSON object");

    let rows = number(&summary, "rows");
    assert_eq!(rows, number(&summary, "accepted") + number(&summary, "rejected"), "{summary}");
    let settled: u64 = ["sent", "failed", "dead", "skipped", "cancelled", "in_doubt"]
        .iter()
        .map(|key| number(&summary, key))
        .sum();
    assert_eq!(number(&summary, "followups"), settled, "every follow-up settled: {summary}");
    assert!(number(&summary, "sent") > 0, "nothing was sent: {summary}");
    assert_eq!(number(&summary, "sent"), number(&summary, "provider_received"), "{summary}");
    assert_eq!(number(&summary, "rate_limit_violations"), 0, "{summary}");

    // The same database again is refused: its records would unbalance the summary.
    let again = Command::new(env!("CARGO_BIN_EXE_followup"))
        .args(["demo", "--json", "--csv"])
        .arg(&csv)
        .args(["--store", &store])
        .output()
        .expect("followup binary runs");
    assert!(!again.status.success(), "the demo reused a database that holds tenants");
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("already holds tenants"), "{stderr}");
}

const OPERATOR_TOKEN: &str = "mongo-restart-operator-token";
const CONTACTS: usize = 300;
const LATE_CONTACTS: usize = 20;

async fn snapshot_totals(http: &reqwest::Client, base: &str) -> Option<BTreeMap<String, u64>> {
    let response = http
        .get(format!("{base}/admin/v1/snapshot"))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .ok()?;
    let snapshot: Value = response.json().await.ok()?;
    serde_json::from_value(snapshot["totals"].clone()).ok()
}

async fn received(http: &reqwest::Client, urls: &Value) -> Vec<Value> {
    let gmail = urls["gmail"].as_str().unwrap_or_default().trim_end_matches('/');
    let response = http.get(format!("{gmail}/_fake/received")).send().await;
    response.expect("fake answers").json().await.expect("received list is JSON")
}

fn contacts_csv(prefix: &str, count: usize) -> String {
    let mut csv = String::from("email,first_name\n");
    for n in 0..count {
        csv.push_str(&format!("{prefix}{n}@example.com,P{n}\n"));
    }
    csv
}

/// Uploads `csv` to `sequence` and returns the status and the JSON body.
async fn upload(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    sequence: &str,
    csv: String,
) -> (u16, Value) {
    let response = http
        .post(format!("{base}/v1/schedules/bulk"))
        .query(&[("sequence", sequence)])
        .bearer_auth(key)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .expect("the engine answers while its database is down");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `followup serve` on FerretDB goes on when the database stops mid-dispatch and comes back:
/// uploads meanwhile get 503, and afterwards every accepted schedule is there, every
/// follow-up settled, and none sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_goes_on_after_the_database_restarts() {
    let http =
        followup_adapters::http::build_http_client(&Default::default()).expect("HTTP client");
    let mut database = ferretdb_fixture::FerretDb::start().expect("start FerretDB");
    let data_dir = tempfile::tempdir().expect("temporary data dir");
    let (_fakes, urls) = start_fakes(1200, 100_000);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = serve_to_fakes(data_dir.path(), port, &urls)
        .args(["--store", &database.uri_for("restart"), "--store-timeout-seconds", "2"])
        .env("FOLLOWUP_ADMIN_TOKEN", OPERATOR_TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start followup serve");
    let mut engine = ChildGuard(child);
    wait_ready(&http, &base).await;
    let sequence = json!({"name": "restart", "steps": [
        {"channel": "email", "subject": "Hi", "body": "Hello {{first_name|there}}"}]});
    let enrolment = Enrolment {
        operator_token: OPERATOR_TOKEN,
        name: "restart",
        gmail: json!({"sender": "restart@example.com", "access_token": "restart-token",
                      "limits": {"per_minute": 1200, "per_day": 100_000}}),
        sequence: sequence.clone(),
        csv: contacts_csv("person", CONTACTS),
        rows: CONTACTS,
    };
    let (_, key) = support::enroll(&http, &base, enrolment).await;
    let late_sequence: Value = http
        .post(format!("{base}/v1/sequences"))
        .bearer_auth(&key)
        .json(&sequence)
        .send()
        .await
        .expect("create sequence")
        .json()
        .await
        .expect("sequence JSON");
    let late_sequence = late_sequence["id"].as_str().expect("sequence id").to_owned();

    // Stop the database once part of the follow-ups reached the fake: mid-dispatch.
    let deadline = Instant::now() + Duration::from_secs(60);
    while received(&http, &urls).await.len() < CONTACTS / 5 {
        assert!(Instant::now() < deadline, "dispatch did not start within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    database.stop();
    let at_stop = received(&http, &urls).await.len();
    assert!(at_stop < CONTACTS, "the stop came after dispatch finished; slow the limit down");

    // While it is down, an upload is refused as unavailable, claiming nothing stored.
    let late_csv = contacts_csv("late", LATE_CONTACTS);
    let (status, body) = upload(&http, &base, &key, &late_sequence, late_csv.clone()).await;
    assert_eq!(status, 503, "upload while the database is down: {body}");
    assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(engine.0.try_wait().expect("poll serve").is_none(), "serve exited while down");

    database.restart().expect("restart FerretDB");
    let (status, body) = upload(&http, &base, &key, &late_sequence, late_csv).await;
    assert_eq!(status, 200, "upload after the restart: {body}");
    assert_eq!(body["accepted"], LATE_CONTACTS, "{body}");

    let expected = (CONTACTS + LATE_CONTACTS) as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    let totals = loop {
        if let Some(totals) = snapshot_totals(&http, &base).await {
            let waiting: u64 = ["pending", "retry", "claimed", "sending"]
                .iter()
                .map(|state| totals.get(*state).copied().unwrap_or(0))
                .sum();
            if waiting == 0 && totals.values().sum::<u64>() == expected {
                break totals;
            }
            assert!(Instant::now() < deadline, "follow-ups unsettled after restart: {totals:?}");
        }
        assert!(Instant::now() < deadline, "no snapshot within 120 s of the restart");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    drop(engine);

    let mut per_recipient: BTreeMap<String, u32> = BTreeMap::new();
    for message in received(&http, &urls).await {
        let to = message["to"].as_str().unwrap_or_default().to_owned();
        *per_recipient.entry(to).or_default() += 1;
    }
    let twice: Vec<_> = per_recipient.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "follow-ups sent twice: {twice:?}");
    let sent = totals.get("sent").copied().unwrap_or(0);
    let in_doubt = totals.get("in_doubt").copied().unwrap_or(0);
    assert_eq!(sent + in_doubt, expected, "{totals:?}");
    let received_count = per_recipient.len() as u64;
    assert!(
        received_count >= sent && received_count <= sent + in_doubt,
        "fakes received {received_count}, engine counts {sent} sent and {in_doubt} in doubt"
    );
}
