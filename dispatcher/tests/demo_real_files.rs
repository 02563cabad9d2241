//! `followup demo` runs to completion on every public sample contact file, and its books
//! balance: every row accepted or rejected, every follow-up settled, every send received by a
//! fake exactly once, and no rate limit broken.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn sample_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "csv"))
        .collect();
    files.sort();
    files
}

fn run_demo(csv: &PathBuf, extra_args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_followup"))
        .args(["demo", "--json", "--csv"])
        .arg(csv)
        .args(extra_args)
        .output()
        .expect("followup binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed on {}:\n{stderr}", csv.display());
    assert!(stderr.contains("follow-ups settled"), "no progress shown on stderr:\n{stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("stdout of demo on {} is not one JSON object: {e}", csv.display())
    })
}

fn number(summary: &Value, key: &str) -> u64 {
    summary[key].as_u64().unwrap_or_else(|| panic!("summary lacks {key}: {summary}"))
}

/// Follow-ups in a final state.
fn settled(summary: &Value) -> u64 {
    ["sent", "failed", "dead", "skipped", "cancelled", "in_doubt"]
        .iter()
        .map(|key| number(summary, key))
        .sum()
}

#[test]
fn demo_balances_on_every_sample_file() {
    let files = sample_files();
    assert!(files.len() >= 4, "expected the four sample files, found {files:?}");
    for csv in files {
        let summary = run_demo(&csv, &[]);
        let name = csv.display();
        let rows = number(&summary, "rows");
        assert!(rows >= 100, "{name}: only {rows} rows read");
        assert_eq!(rows, number(&summary, "accepted") + number(&summary, "rejected"), "{name}");
        assert_eq!(number(&summary, "followups"), settled(&summary), "{name}: unsettled");
        assert_eq!(number(&summary, "sent"), number(&summary, "provider_received"), "{name}");
        assert_eq!(number(&summary, "rate_limit_violations"), 0, "{name}");
        assert!(number(&summary, "sent") > 0, "{name}: nothing was sent");
        assert_eq!(number(&summary, "dead"), 0, "{name}: the fakes inject no error here");
        assert_eq!(number(&summary, "retries"), 0, "{name}: the fakes inject no error here");
        assert!(summary["lateness_ms"]["p50"].is_u64(), "{name}: no lateness");
        assert!(summary["lateness_ms"]["p99"].is_u64(), "{name}: no lateness");
        assert!(summary["lateness_ms"]["max"].is_u64(), "{name}: no lateness");
    }
}

#[test]
fn demo_replies_stop_later_sends() {
    let csv = sample_files().into_iter().find(|path| path.ends_with("customers-100.csv"));
    let csv = csv.expect("customers-100.csv among the sample files");
    let summary = run_demo(&csv, &["--replies", "0.5", "--reply-seed", "7"]);
    let replies = number(&summary, "replies");
    let accepted = number(&summary, "accepted");
    assert!(replies > accepted / 4, "{replies} of {accepted} contacts replied at a share of 0.5");
    assert!(number(&summary, "cancelled") > 0, "the replies cancelled later steps: {summary}");
    assert_eq!(number(&summary, "sent_after_stop"), 0, "{summary}");
    assert_eq!(number(&summary, "followups"), settled(&summary), "unsettled: {summary}");
    assert_eq!(number(&summary, "sent"), number(&summary, "provider_received"), "{summary}");
}

#[test]
fn demo_under_flaky_providers_settles_everything_without_violation() {
    // The two smaller sample files: the stalled requests of the profile cost a second each.
    let small: Vec<PathBuf> = sample_files()
        .into_iter()
        .filter(|path| std::fs::metadata(path).is_ok_and(|meta| meta.len() < 100_000))
        .collect();
    assert!(!small.is_empty(), "no small sample file");
    let mut retries = 0;
    for csv in small {
        let summary = run_demo(&csv, &["--faults", "flaky", "--fault-seed", "11"]);
        let name = csv.display();
        assert_eq!(number(&summary, "followups"), settled(&summary), "{name}: unsettled");
        assert_eq!(number(&summary, "rate_limit_violations"), 0, "{name}");
        let sent = number(&summary, "sent");
        let in_doubt = number(&summary, "in_doubt");
        let received = number(&summary, "provider_received");
        assert_eq!(received, sent, "{name}: a stalled send is never recorded by the fakes");
        assert!(sent > 0, "{name}: nothing was sent");
        assert!(in_doubt <= sent / 10, "{name}: {in_doubt} in doubt of {sent} sent");
        retries += number(&summary, "retries");
    }
    assert!(retries > 0, "the flaky profile caused no retry at all");
}

/// Returns the customer id, the email address (lowercased as ingest normalises it) and the last
/// name of each row of a sample file shaped like `customers-100.csv`. The id is the second
/// column, before any quoted field, and the address is the one field with an `@`.
fn sample_people(csv: &Path) -> Vec<[String; 3]> {
    let text = std::fs::read_to_string(csv).expect("read the sample file");
    let mut lines = text.lines();
    let header = lines.next().expect("header");
    assert!(header.starts_with("Index,Customer Id,First Name,Last Name,"), "{header}");
    lines
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let email = fields.iter().find(|field| field.contains('@'))?.to_ascii_lowercase();
            Some([fields[1].to_owned(), email, fields[3].to_owned()])
        })
        .collect()
}

#[test]
fn demo_store_holds_no_plaintext() {
    let csv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/customers-100.csv");
    let dir = tempfile::tempdir().expect("temporary directory");
    let data_dir = dir.path().join("store");
    let output = Command::new(env!("CARGO_BIN_EXE_followup"))
        .args(["demo", "--json", "--csv"])
        .arg(&csv)
        .arg("--data-dir")
        .arg(&data_dir)
        .env_remove("FOLLOWUP_MASTER_KEY")
        .output()
        .expect("followup binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stderr}");
    assert!(stderr.contains("throwaway key"), "no word of the throwaway key:\n{stderr}");
    let summary: Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert!(number(&summary, "accepted") >= 25, "{summary}");
    assert!(number(&summary, "sent") > 0, "{summary}");

    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(&data_dir).expect("list the store") {
        bytes.extend(std::fs::read(entry.expect("entry").path()).expect("read a store file"));
    }
    assert!(bytes.len() > 100_000, "the store holds {} bytes", bytes.len());
    let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());

    // The demo's own template text and the tokens it connects with are sealed too.
    let mut needles: Vec<String> = [
        "thanks for your interest",
        "demo team",
        "demo-gmail-access-token",
        "demo-twilio-auth-token",
    ]
    .map(str::to_owned)
    .into();
    for [customer_id, email, last_name] in sample_people(&csv) {
        needles.extend([customer_id, email]);
        // Short names could occur by chance in random bytes; eight letters cannot, in practice.
        if last_name.len() >= 8 {
            needles.push(last_name);
        }
    }
    assert!(needles.len() > 200, "{} plaintexts to look for", needles.len());
    let found: Vec<&String> = needles.iter().filter(|needle| contains(needle)).collect();
    assert!(found.is_empty(), "plaintext in the demo's store: {found:?}");
}
