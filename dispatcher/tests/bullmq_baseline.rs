//! The BullMQ baseline (`baseline/bullmq`), which `baseline/compare` runs beside the load
//! harness, works end to end: it starts Redis and `followup fakes` on loopback, queues a small
//! scenario as delayed jobs and gets every follow-up to the fakes once. Needs Node.js and
//! `redis-server`, which `.ci/run` installs.

use std::path::{Path, PathBuf};
use std::process::Command;

fn baseline_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../baseline/bullmq")
}

/// Installs the baseline's npm packages from its lock file when they are missing.
fn install_packages(dir: &Path) {
    if dir.join("node_modules").is_dir() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .expect("npm runs");
    assert!(status.success(), "npm ci failed in {}", dir.display());
}

#[test]
fn baseline_sends_every_follow_up_once() {
    let dir = baseline_dir();
    install_packages(&dir);

    let unit_tests =
        Command::new("node").arg("--test").current_dir(&dir).status().expect("node runs");
    assert!(unit_tests.success(), "the baseline's unit tests failed");

    let work = tempfile::tempdir().expect("temporary directory");
    let scenario = work.path().join("small.yaml");
    std::fs::write(
        &scenario,
        "name: baseline-check\ntenants: 2\ncontacts_per_tenant: 200\nrows_per_upload: 100\n\
         invalid_fraction: 0.05\ntimeout_seconds: 90\n",
    )
    .expect("scenario written");
    let output = Command::new("node")
        .arg("run.mjs")
        .arg("--scenario")
        .arg(&scenario)
        .args(["--followup", env!("CARGO_BIN_EXE_followup"), "--json"])
        .current_dir(&dir)
        .output()
        .expect("node runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "baseline run failed: {stderr}");

    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON object on stdout");
    // 2 x 200 rows, 5% invalid, the default email and SMS steps.
    assert_eq!(report["follow_ups"], 760, "{report}");
    assert_eq!(report["sent"], 760, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
    assert_eq!(report["rate_limit_violations"], 0, "{report}");
    assert!(report["lateness_ms"]["p99"].is_u64(), "{report}");
    assert!(report["peak_rss_bytes_by_process"]["redis"].as_u64() > Some(0), "{report}");
}
