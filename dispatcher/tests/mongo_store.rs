//! `followup serve` and `followup demo` on the MongoDB store, against a real FerretDB server:
//! start-up errors for a wrong or unreachable store, and the demo's books balancing.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use followup_adapters::ferretdb_fixture;
use serde_json::Value;
use support::{ChildGuard, MASTER_KEY, free_port};

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
