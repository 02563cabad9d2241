//! `followup demo` runs to completion on every public sample contact file, and its books
//! balance: every row accepted or rejected, every follow-up settled, every send received by a
//! fake exactly once, and no rate limit broken.

use std::path::PathBuf;
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

fn run_demo(csv: &PathBuf) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_followup"))
        .args(["demo", "--json", "--csv"])
        .arg(csv)
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

#[test]
fn demo_balances_on_every_sample_file() {
    let files = sample_files();
    assert!(files.len() >= 4, "expected the four sample files, found {files:?}");
    for csv in files {
        let summary = run_demo(&csv);
        let name = csv.display();
        let rows = number(&summary, "rows");
        assert!(rows >= 100, "{name}: only {rows} rows read");
        assert_eq!(rows, number(&summary, "accepted") + number(&summary, "rejected"), "{name}");
        let settled = ["sent", "failed", "dead", "skipped", "cancelled", "in_doubt"]
            .iter()
            .map(|key| number(&summary, key))
            .sum::<u64>();
        assert_eq!(number(&summary, "followups"), settled, "{name}: unsettled follow-ups");
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
