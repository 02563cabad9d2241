//! A tenant's purge cut short by SIGKILL finishes after `followup serve` restarts, and then
//! nothing of the tenant is left: not through the store's API, and not in the file's bytes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use followup_core::ids::TenantId;
use followup_core::store::Store as _;
use serde_json::{Value, json};
use support::{ChildGuard, Enrolment, free_port, wait_ready};

mod support;

const OPERATOR_TOKEN: &str = "purge-test-operator-token";
const CONTACTS: usize = 500;

/// Starts `followup serve` with the built-in fakes and the configuration file `config`.
fn start_engine(data_dir: &Path, port: u16, config: &Path) -> ChildGuard {
    let child = Command::new(env!("CARGO_BIN_EXE_followup"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .args(["--providers", "fake", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data_dir)
        .env("FOLLOWUP_ADMIN_TOKEN", OPERATOR_TOKEN)
        .env("FOLLOWUP_MASTER_KEY", support::MASTER_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start followup serve");
    ChildGuard(child)
}

/// Returns the deletion entry of `tenant` in the operator's tenant listing, if there is one.
async fn deletion_of(http: &reqwest::Client, base: &str, tenant: &str) -> Option<Value> {
    let listing: Value = http
        .get(format!("{base}/admin/v1/tenants"))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let row = listing.as_array()?.iter().find(|row| row["id"] == tenant)?;
    Some(row["deletion"].clone()).filter(|deletion| !deletion.is_null())
}

/// Creates a tenant with a Gmail connection and `CONTACTS` contacts due in a week; returns its
/// id and API key.
async fn enroll(http: &reqwest::Client, base: &str) -> (String, String) {
    let csv: String = std::iter::once("email\n".to_owned())
        .chain((0..CONTACTS).map(|n| format!("purge-victim-{n}@example.com\n")))
        .collect();
    let enrolment = Enrolment {
        operator_token: OPERATOR_TOKEN,
        name: "leaving",
        gmail: json!({"sender": "leaving@example.com", "access_token": "leaving-token"}),
        sequence: json!({"name": "later", "steps": [
            {"channel": "email", "delay": "7d", "subject": "Hi", "body": "Hello"}]}),
        csv,
        rows: CONTACTS,
    };
    support::enroll(http, base, enrolment).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_resumes_after_kill() {
    let data_dir = tempfile::tempdir().expect("temporary data dir");
    let slow = data_dir.path().join("slow.toml");
    let normal = data_dir.path().join("normal.toml");
    // Ten records every 100 ms: the purge of about 2,000 records takes 20 s, ample time to
    // kill the engine in the middle of it.
    std::fs::write(&slow, "[retention]\npurge_chunk_records = 10\npurge_pause_millis = 100\n")
        .expect("write config");
    std::fs::write(&normal, "[retention]\npurge_chunk_records = 500\n").expect("write config");
    let http =
        followup_adapters::http::build_http_client(&Default::default()).expect("HTTP client");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");

    let mut engine = start_engine(data_dir.path(), port, &slow);
    wait_ready(&http, &base).await;
    let (tenant, key) = enroll(&http, &base).await;
    let response =
        http.delete(format!("{base}/v1/tenant")).bearer_auth(&key).send().await.expect("delete");
    assert_eq!(response.status(), 202);

    // Kill once the purge has removed something, and well before it is done.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let deletion = deletion_of(&http, &base, &tenant).await.expect("deletion listed");
        let purged = deletion["records_purged"].as_u64().unwrap_or_default();
        assert!(deletion["completed_at"].is_null(), "the purge ended before the kill");
        if purged > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the purge did not start within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    engine.0.kill().expect("SIGKILL the engine");
    engine.0.wait().expect("reap the engine");

    engine = start_engine(data_dir.path(), port, &normal);
    wait_ready(&http, &base).await;
    let refused = http.get(format!("{base}/v1/sequences")).bearer_auth(&key).send().await;
    assert_eq!(refused.expect("request").status(), 401, "the key stays revoked");
    let deadline = Instant::now() + Duration::from_secs(30);
    let deletion = loop {
        let deletion = deletion_of(&http, &base, &tenant).await.expect("deletion listed");
        if !deletion["completed_at"].is_null() {
            break deletion;
        }
        assert!(Instant::now() < deadline, "the purge did not finish within 30 s of the restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Per contact: the contact, its schedule, its follow-up and its due-index entry; then the
    // sequence and the connection. Each chunk counts what it removed in the same commit, so a
    // kill neither loses nor repeats a count.
    assert_eq!(deletion["records_purged"], CONTACTS * 4 + 2, "{deletion}");
    drop(engine);

    // Opening the store compacts the file after a purge, which drops the freed pages' bytes.
    let tenant: TenantId = tenant.parse().expect("tenant id");
    let store = followup_adapters::embedded::open(data_dir.path()).expect("open the store");
    assert!(store.tenant(tenant).await.expect("tenant").is_none());
    assert!(store.connections(tenant).await.expect("connections").is_empty());
    assert!(store.contacts_page(tenant, None, 10).await.expect("contacts").is_empty());
    assert!(store.follow_ups_page(tenant, None, 10).await.expect("follow-ups").is_empty());
    let billing = store.billing_record(tenant).await.expect("billing record");
    assert_eq!(billing.map(|record| record.plan), Some("pro".to_owned()), "billing is kept");
    let path = store.path().to_path_buf();
    drop(store);
    let bytes = std::fs::read(&path).expect("read the store file");
    for needle in [&b"purge-victim-"[..], b"leaving-token", b"leaving@example.com"] {
        let found = bytes.windows(needle.len()).any(|window| window == needle);
        assert!(!found, "{} still in the store file", String::from_utf8_lossy(needle));
    }
}
