//! A single `followup serve` on the embedded store holds a lease on each of its tenants,
//! shown by `/admin/v1/cluster`, and after a SIGKILL the restarted process takes them back
//! before it answers its first request, instead of waiting for the old leases to expire.

mod support;

use std::process::Stdio;

use serde_json::{Value, json};
use support::{ChildGuard, Enrolment, free_port, serve_to_fakes, start_fakes, wait_ready};

const OPERATOR_TOKEN: &str = "cluster-test-operator-token";

fn start_engine(data_dir: &std::path::Path, port: u16, urls: &Value) -> ChildGuard {
    let child = serve_to_fakes(data_dir, port, urls)
        .env("FOLLOWUP_ADMIN_TOKEN", OPERATOR_TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start followup serve");
    ChildGuard(child)
}

async fn cluster(http: &reqwest::Client, base: &str) -> Value {
    let response = http
        .get(format!("{base}/admin/v1/cluster"))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .expect("cluster answers");
    assert_eq!(response.status(), 200, "cluster status");
    response.json().await.expect("cluster is JSON")
}

fn lease_of<'a>(view: &'a Value, tenant: &str) -> &'a Value {
    let leases = view["leases"].as_array().expect("leases array");
    leases.iter().find(|lease| lease["tenant"] == tenant).expect("the tenant has a lease")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_takes_leases_at_once() {
    let http =
        followup_adapters::http::build_http_client(&Default::default()).expect("HTTP client");
    let data_dir = tempfile::tempdir().expect("temporary data dir");
    let (_fakes, urls) = start_fakes(1200, 100_000);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");

    let mut engine = start_engine(data_dir.path(), port, &urls);
    wait_ready(&http, &base).await;
    let enrolment = Enrolment {
        operator_token: OPERATOR_TOKEN,
        name: "lease",
        gmail: json!({"sender": "lease@example.com", "access_token": "lease-token"}),
        sequence: json!({"name": "lease", "steps": [
            {"channel": "email", "subject": "Hi", "body": "Hello"}]}),
        csv: "email\nlease-person@example.com\n".into(),
        rows: 1,
    };
    let (tenant, _) = support::enroll(&http, &base, enrolment).await;

    let before = cluster(&http, &base).await;
    let first_node = before["node"].as_str().expect("node id").to_owned();
    let lease = lease_of(&before, &tenant);
    assert_eq!(lease["owner"], first_node.as_str(), "the only node owns the new tenant");
    assert_eq!(lease["epoch"], 1, "first epoch");
    assert_eq!(lease["live"], true, "lease live");
    let nodes = before["nodes"].as_array().expect("nodes array");
    assert_eq!(nodes.len(), 1, "one node: {before}");

    engine.0.kill().expect("SIGKILL the engine");
    engine.0.wait().expect("reap the engine");
    engine = start_engine(data_dir.path(), port, &urls);
    wait_ready(&http, &base).await;

    // Had the restart waited for the old lease, its first answer would still show epoch 1
    // owned by the killed node, because the engine answers only after its first lease pass.
    let after = cluster(&http, &base).await;
    let second_node = after["node"].as_str().expect("node id");
    assert_ne!(second_node, first_node, "each process draws its own node id");
    let lease = lease_of(&after, &tenant);
    assert_eq!(lease["owner"], second_node, "the restarted node owns the tenant");
    assert_eq!(lease["epoch"], 2, "the restart took the next epoch");
    assert_eq!(lease["live"], true, "lease live");
    let nodes = after["nodes"].as_array().expect("nodes array");
    assert_eq!(nodes.len(), 1, "the killed node's heartbeat is gone: {after}");
    drop(engine);
}
