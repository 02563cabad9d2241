//! `followup demo --plan NAME` under plans whose monthly quota is below the demand: the
//! binary's JSON summary never shows more sent than the quota, and shows the rest as skipped
//! for quota or held, as the plan says.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Contacts in the file, each with an email address and a phone number, so that every step of
/// the demo's sequence (email, SMS, call) has an address.
const CONTACTS: u64 = 30;

/// Monthly quotas of the test plans: email, SMS, call.
const QUOTAS: [(&str, u64); 3] = [("email", 12), ("sms", 7), ("call", 3)];

fn write_inputs(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let csv = dir.join("contacts.csv");
    let mut rows = String::from("first_name,email,phone\n");
    for n in 0..CONTACTS {
        rows.push_str(&format!("Contact{n},contact{n}@example.com,+1 201 2{n:02} 4{n:03}\n"));
    }
    std::fs::write(&csv, rows).expect("write the contact file");

    let config = dir.join("plans.toml");
    let mut text = String::from("[billing]\nquota_block = 5\n");
    for (name, over_quota) in [("tiny", "skip"), ("tiny_hold", "hold")] {
        text.push_str(&format!("[plans.{name}]\nover_quota = \"{over_quota}\"\n"));
        for (channel, quota) in QUOTAS {
            text.push_str(&format!("monthly_{channel} = {quota}\n"));
        }
    }
    std::fs::write(&config, text).expect("write the config file");
    (csv, config)
}

fn run_demo(plan: &str, extra_args: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (csv, config) = write_inputs(dir.path());
    let output = Command::new(env!("CARGO_BIN_EXE_followup"))
        .args(["demo", "--json", "--plan", plan, "--csv"])
        .arg(&csv)
        .arg("--config")
        .arg(&config)
        .args(extra_args)
        .output()
        .expect("followup binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo under plan {plan} failed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {stdout}"))
}

fn number(value: &Value, key: &str) -> u64 {
    value[key].as_u64().unwrap_or_else(|| panic!("no number {key} in {value}"))
}

fn channel_state(summary: &Value, channel: &str, state: &str) -> u64 {
    summary["by_channel"][channel][state].as_u64().unwrap_or(0)
}

#[test]
fn skip_plan_sends_quota_and_skips_rest() {
    let summary = run_demo("tiny", &[]);
    assert_eq!(number(&summary, "accepted"), CONTACTS, "{summary}");
    for (channel, quota) in QUOTAS {
        let sent = channel_state(&summary, channel, "sent");
        assert_eq!(sent, quota, "{channel}: sent exactly the quota: {summary}");
        let skipped = channel_state(&summary, channel, "skipped");
        assert_eq!(skipped, CONTACTS - quota, "{channel}: the rest skipped: {summary}");
    }
    let quota_total: u64 = QUOTAS.iter().map(|(_, quota)| quota).sum();
    assert_eq!(number(&summary, "sent"), quota_total, "{summary}");
    assert_eq!(number(&summary, "skipped_quota"), 3 * CONTACTS - quota_total, "{summary}");
    assert_eq!(number(&summary, "held"), 0, "{summary}");
    assert_eq!(number(&summary, "provider_received"), quota_total, "{summary}");
}

#[test]
fn hold_plan_sends_quota_and_holds_rest() {
    check_held_summary(&run_demo("tiny_hold", &[]));
}

/// The same on the MongoDB store (FerretDB), whose usage counters take conditional updates.
#[test]
fn hold_plan_on_ferretdb() {
    let server = followup_adapters::ferretdb_fixture::shared();
    let database = followup_adapters::ferretdb_fixture::unique_database("demo_plan");
    let store = server.uri_for(&database);
    check_held_summary(&run_demo("tiny_hold", &["--store", &store]));
}

fn check_held_summary(summary: &Value) {
    for (channel, quota) in QUOTAS {
        let sent = channel_state(summary, channel, "sent");
        assert_eq!(sent, quota, "{channel}: sent exactly the quota: {summary}");
        let held = channel_state(summary, channel, "held");
        assert_eq!(held, CONTACTS - quota, "{channel}: the rest held: {summary}");
    }
    let quota_total: u64 = QUOTAS.iter().map(|(_, quota)| quota).sum();
    assert_eq!(number(summary, "held"), 3 * CONTACTS - quota_total, "{summary}");
    assert_eq!(number(summary, "skipped_quota"), 0, "{summary}");
    assert_eq!(number(summary, "skipped"), 0, "{summary}");
    assert_eq!(number(summary, "provider_received"), quota_total, "{summary}");
}

#[test]
fn unknown_plan_is_rejected_by_name() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (csv, config) = write_inputs(dir.path());
    let output = Command::new(env!("CARGO_BIN_EXE_followup"))
        .args(["demo", "--json", "--plan", "platinum", "--csv"])
        .arg(&csv)
        .arg("--config")
        .arg(&config)
        .output()
        .expect("followup binary runs");
    assert!(!output.status.success(), "an unknown plan must fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("\"platinum\""), "{stderr}");
    assert!(stderr.contains("tiny_hold"), "the known plans are listed: {stderr}");
}
