//! Three `followup serve` processes on one MongoDB-wire store (FerretDB 1.24, SQLite backend)
//! split the tenants by leases. One is killed with SIGKILL mid-dispatch: its tenants are taken
//! over within the lease bound, every accepted follow-up ends sent or in doubt, none is lost
//! and the fakes (one `followup fakes` process shared by every node) receive none twice.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use followup_adapters::ferretdb_fixture::{self, FerretDb};
use serde_json::{Value, json};
use support::{ChildGuard, Enrolment, free_port, serve_to_fakes, start_fakes, wait_ready};

const OPERATOR_TOKEN: &str = "cluster-takeover-operator-token";
const NODES: usize = 3;
const TENANTS: usize = 6;
const CONTACTS_PER_TENANT: usize = 60;
/// Sends per minute each tenant's mailbox allows: 20 a second, so a tenant's follow-ups take
/// at least 3 s and the kill lands mid-dispatch. On FerretDB's SQLite backend each round's
/// writes take several round trips, which makes dispatch slower still.
const MAILBOX_PER_MINUTE: u32 = 1_200;
/// Leases a little shorter than the default 6 s, renewed every second.
const CLUSTER_CONFIG: &str = "[cluster]\nlease_ttl_millis = 5000\nrenew_interval_millis = 1000\n\
                              clock_skew_margin_millis = 1000\n";
/// Longest time a killed node's tenants may stay without a live owner: one lease time to live
/// plus one renew interval, and slack for passes slowed by a loaded 2-core machine.
const TAKEOVER_BOUND: Duration = Duration::from_secs(5 + 1 + 8);

/// One engine process and where it answers.
struct Node {
    process: ChildGuard,
    base: String,
    /// Data directory of the node's own files (its webhook log).
    _data: tempfile::TempDir,
}

fn start_node(store_uri: &str, config: &Path, urls: &Value) -> Node {
    let data = tempfile::tempdir().expect("temporary data dir");
    let port = free_port();
    let child = serve_to_fakes(data.path(), port, urls)
        .arg("--store")
        .arg(store_uri)
        .arg("--config")
        .arg(config)
        .env("FOLLOWUP_ADMIN_TOKEN", OPERATOR_TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start followup serve");
    Node { process: ChildGuard(child), base: format!("http://127.0.0.1:{port}"), _data: data }
}

async fn get_json(http: &reqwest::Client, url: String) -> Value {
    let response = http.get(&url).bearer_auth(OPERATOR_TOKEN).send().await.expect("answers");
    assert!(response.status().is_success(), "{url} answered {}", response.status());
    response.json().await.expect("JSON body")
}

/// Returns the live owner of each tenant that has one, from a node's cluster view.
async fn owners(http: &reqwest::Client, base: &str) -> BTreeMap<String, String> {
    let view = get_json(http, format!("{base}/admin/v1/cluster")).await;
    let leases = view["leases"].as_array().cloned().unwrap_or_default();
    leases
        .iter()
        .filter(|lease| lease["live"] == true)
        .map(|lease| {
            let tenant = lease["tenant"].as_str().unwrap_or_default().to_owned();
            (tenant, lease["owner"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

async fn node_id(http: &reqwest::Client, base: &str) -> String {
    let view = get_json(http, format!("{base}/admin/v1/cluster")).await;
    view["node"].as_str().expect("node id").to_owned()
}

async fn totals(http: &reqwest::Client, base: &str) -> BTreeMap<String, u64> {
    let snapshot = get_json(http, format!("{base}/admin/v1/snapshot")).await;
    serde_json::from_value(snapshot["totals"].clone()).expect("totals map")
}

async fn received(http: &reqwest::Client, urls: &Value) -> Vec<Value> {
    let gmail = urls["gmail"].as_str().unwrap_or_default().trim_end_matches('/');
    let response = http.get(format!("{gmail}/_fake/received")).send().await.expect("fake answers");
    response.json().await.expect("received list is JSON")
}

async fn enroll_tenant(http: &reqwest::Client, base: &str, index: usize) -> String {
    let mut csv = String::from("email,first_name\n");
    for n in 0..CONTACTS_PER_TENANT {
        csv.push_str(&format!("t{index}-p{n}@example.com,P{n}\n"));
    }
    let enrolment = Enrolment {
        operator_token: OPERATOR_TOKEN,
        name: "cluster",
        gmail: json!({"sender": format!("tenant{index}@example.com"),
                      "access_token": format!("cluster-token-{index}"),
                      "limits": {"per_minute": MAILBOX_PER_MINUTE, "per_day": 100_000}}),
        sequence: json!({"name": "cluster", "steps": [
            {"channel": "email", "subject": "Hi", "body": "Hello {{first_name|there}}"}]}),
        csv,
        rows: CONTACTS_PER_TENANT,
    };
    support::enroll(http, base, enrolment).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_survive_a_sigkill() {
    let http =
        followup_adapters::http::build_http_client(&Default::default()).expect("HTTP client");
    let ferretdb = FerretDb::start().expect("start FerretDB");
    let store_uri = ferretdb.uri_for(&ferretdb_fixture::unique_database("cluster"));
    let config_dir = tempfile::tempdir().expect("temporary config dir");
    let config = config_dir.path().join("cluster.toml");
    std::fs::write(&config, CLUSTER_CONFIG).expect("write the cluster config");
    let (_fakes, urls) = start_fakes(6_000, 1_000_000);

    let mut nodes: Vec<Node> = (0..NODES).map(|_| start_node(&store_uri, &config, &urls)).collect();
    for node in &nodes {
        wait_ready(&http, &node.base).await;
    }
    let mut ids = Vec::new();
    for node in &nodes {
        ids.push(node_id(&http, &node.base).await);
    }

    // Tenants are created through different nodes, and the lease passes spread them out.
    let mut tenants = BTreeSet::new();
    for index in 0..TENANTS {
        tenants.insert(enroll_tenant(&http, &nodes[index % NODES].base, index).await);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let spread = loop {
        let owners = owners(&http, &nodes[0].base).await;
        let owned_by = |id: &String| owners.values().filter(|owner| *owner == id).count();
        let leased: BTreeSet<String> = owners.keys().cloned().collect();
        if leased == tenants && ids.iter().all(|id| owned_by(id) > 0) {
            break owners;
        }
        assert!(Instant::now() < deadline, "tenants not spread over the nodes: {owners:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let total = (TENANTS * CONTACTS_PER_TENANT) as u64;
    let sent_before_kill = received(&http, &urls).await.len() as u64;
    assert!(sent_before_kill < total, "dispatch finished before the kill; slow the mailboxes");

    // SIGKILL the second node in the middle of its tenants' dispatch.
    let victim = nodes.remove(1);
    let victim_id = ids.remove(1);
    let orphans: Vec<String> =
        spread.iter().filter(|(_, owner)| **owner == victim_id).map(|(t, _)| t.clone()).collect();
    let mut victim_process = victim.process;
    victim_process.0.kill().expect("SIGKILL the node");
    victim_process.0.wait().expect("reap the node");
    let killed_at = Instant::now();

    // Its tenants get a live owner among the survivors within the bound.
    let taken_over_after = loop {
        let owners = owners(&http, &nodes[0].base).await;
        let adopted =
            orphans.iter().all(|tenant| owners.get(tenant).is_some_and(|o| ids.contains(o)));
        if adopted {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < TAKEOVER_BOUND,
            "tenants {orphans:?} of the killed node not taken over within {TAKEOVER_BOUND:?}: \
             {owners:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "{} tenants of the killed node taken over {:.1} s after the kill",
        orphans.len(),
        taken_over_after.as_secs_f64()
    );

    // Every follow-up settles.
    let deadline = Instant::now() + Duration::from_secs(240);
    let totals = loop {
        let totals = totals(&http, &nodes[0].base).await;
        let waiting: u64 = ["pending", "retry", "claimed", "sending"]
            .iter()
            .map(|state| totals.get(*state).copied().unwrap_or(0))
            .sum();
        if waiting == 0 {
            break totals;
        }
        if Instant::now() >= deadline {
            let snapshot = get_json(&http, format!("{}/admin/v1/snapshot", nodes[0].base)).await;
            let cluster = get_json(&http, format!("{}/admin/v1/cluster", nodes[0].base)).await;
            panic!("follow-ups still waiting: {totals:?}\n{}\n{cluster}", snapshot["tenants"]);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    drop(nodes);

    let stored: u64 = totals.values().sum();
    assert_eq!(stored, total, "every accepted follow-up is still there: {totals:?}");
    let sent = totals.get("sent").copied().unwrap_or(0);
    let in_doubt = totals.get("in_doubt").copied().unwrap_or(0);
    assert_eq!(sent + in_doubt, total, "every follow-up ends sent or in doubt: {totals:?}");

    let mut per_recipient: BTreeMap<String, u32> = BTreeMap::new();
    for message in received(&http, &urls).await {
        let to = message["to"].as_str().unwrap_or_default().to_owned();
        *per_recipient.entry(to).or_default() += 1;
    }
    let twice: Vec<_> = per_recipient.iter().filter(|(_, count)| **count > 1).collect();
    assert!(twice.is_empty(), "follow-ups received twice: {twice:?}");
    let received_count = per_recipient.len() as u64;
    assert!(received_count >= sent, "fakes received {received_count}, engine counts {sent} sent");
    assert!(
        received_count <= sent + in_doubt,
        "fakes received {received_count}, more than {sent} sent and {in_doubt} in doubt"
    );
    println!("{sent} sent, {in_doubt} in doubt, {received_count} received, none twice");
    drop(ferretdb);
}
