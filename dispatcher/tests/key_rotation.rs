//! Master keys through the `followup` binary: `keys generate` prints a key, `serve` refuses to
//! start without one, and `keys rotate` re-wraps every data key while the engine runs, after
//! which the old key can leave the key file.

mod support;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use followup_core::crypto::MasterKey;
use serde_json::{Value, json};
use support::{ChildGuard, free_port, wait_ready};

const OPERATOR_TOKEN: &str = "rotation-test-operator-token";
const BODY_TEXT: &str = "Rotation body text for {{email}}";

fn followup() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_followup"));
    command.env_remove("FOLLOWUP_MASTER_KEY").env_remove("FOLLOWUP_MASTER_KEY_FILE");
    command
}

fn generate_key() -> String {
    let output = followup().args(["keys", "generate"]).output().expect("run keys generate");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 key");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stdout: {stdout:?}");
    lines[0].to_owned()
}

fn key_id(key: &str) -> String {
    MasterKey::from_base64(key, "test").expect("valid key").id().to_owned()
}

fn write_keys(path: &Path, keys: &[&str]) {
    let mut file = std::fs::File::create(path).expect("create key file");
    writeln!(file, "# master keys, newest last").expect("write key file");
    for key in keys {
        writeln!(file, "{key}").expect("write key file");
    }
}

fn serve(data_dir: &Path, port: u16, key_file: &Path) -> Command {
    let mut command = followup();
    command
        .args(["serve", "--providers", "fake", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--master-key-file")
        .arg(key_file)
        .env("FOLLOWUP_ADMIN_TOKEN", OPERATOR_TOKEN);
    command
}

fn start(data_dir: &Path, port: u16, key_file: &Path) -> ChildGuard {
    let child = serve(data_dir, port, key_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start followup serve");
    ChildGuard(child)
}

/// Runs `serve` expecting it to fail at start-up, and returns its output.
fn failed_start(command: &mut Command) -> Output {
    let output = command.output().expect("run followup serve");
    assert!(!output.status.success(), "serve started: {output:?}");
    output
}

/// A tenant of the test engine: its API key and its sequence.
struct Tenant {
    key: String,
    sequence: String,
}

async fn call(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("engine answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn create_tenant(http: &reqwest::Client, base: &str) -> Tenant {
    let request = http.post(format!("{base}/admin/v1/tenants")).bearer_auth(OPERATOR_TOKEN);
    let (status, created) = call(request.json(&json!({"name": "rotation", "plan": "pro"}))).await;
    assert_eq!(status, 201, "{created}");
    let key = created["api_key"].as_str().expect("api key").to_owned();
    let connection = json!({"sender": "rotation@example.com", "access_token": "rotation-token",
                            "limits": {"per_minute": 1200, "per_day": 100000}});
    let request = http.put(format!("{base}/v1/connections/gmail")).bearer_auth(&key);
    let (status, view) = call(request.json(&connection)).await;
    assert_eq!(status, 200, "{view}");
    let sequence = json!({"name": "rotation", "steps": [
        {"channel": "email", "delay": 0, "subject": "Rotation", "body": BODY_TEXT}]});
    let request = http.post(format!("{base}/v1/sequences")).bearer_auth(&key);
    let (status, created) = call(request.json(&sequence)).await;
    assert_eq!(status, 201, "{created}");
    Tenant { key, sequence: created["id"].as_str().expect("sequence id").to_owned() }
}

async fn upload(http: &reqwest::Client, base: &str, tenant: &Tenant, email: &str) {
    let request = http
        .post(format!("{base}/v1/schedules/bulk"))
        .query(&[("sequence", tenant.sequence.as_str())])
        .bearer_auth(&tenant.key)
        .header("content-type", "text/csv")
        .body(format!("email\n{email}\n"));
    let (status, report) = call(request).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["accepted"], 1, "{report}");
}

/// Waits until the follow-up of `email` is sent, which needs its contact, the sequence's
/// templates and the connection's token opened.
async fn wait_sent(http: &reqwest::Client, base: &str, tenant: &Tenant, email: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let request = http
            .get(format!("{base}/v1/schedules"))
            .query(&[("sequence", tenant.sequence.as_str()), ("contact", email)])
            .bearer_auth(&tenant.key);
        let (status, found) = call(request).await;
        assert_eq!(status, 200, "schedule of {email}: {found}");
        if found["follow_ups"][0]["state"] == "sent" {
            return;
        }
        last = found;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("follow-up of {email} not sent within 30 s: {last}");
}

async fn assert_sequence_readable(http: &reqwest::Client, base: &str, tenant: &Tenant) {
    let request = http.get(format!("{base}/v1/sequences/{}", tenant.sequence));
    let (status, sequence) = call(request.bearer_auth(&tenant.key)).await;
    assert_eq!(status, 200, "{sequence}");
    assert_eq!(sequence["steps"][0]["body"], BODY_TEXT, "{sequence}");
}

fn rotate(base: &str) -> Value {
    let output = followup()
        .args(["keys", "rotate", "--url", base])
        .env("FOLLOWUP_ADMIN_TOKEN", OPERATOR_TOKEN)
        .output()
        .expect("run keys rotate");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "rotation failed: {stderr}");
    assert!(stderr.contains("safe to remove"), "{stderr}");
    serde_json::from_slice(&output.stdout).expect("the report is JSON")
}

#[test]
fn generated_keys_are_32_random_bytes() {
    let first = generate_key();
    let second = generate_key();
    let bytes = base64::engine::general_purpose::STANDARD.decode(&first).expect("base64");
    assert_eq!(bytes.len(), 32);
    assert_ne!(first, second, "two keys from two runs");
}

#[test]
fn serve_without_master_key_names_both_options() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let output = failed_start(
        followup()
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data")),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("FOLLOWUP_MASTER_KEY"), "{stderr}");
    assert!(stderr.contains("--master-key-file"), "{stderr}");
    assert!(!dir.path().join("data").exists(), "no store is created without a key");
}

#[test]
fn malformed_master_key_is_named() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let key_file = dir.path().join("keys.txt");
    std::fs::write(&key_file, "bm90IGEga2V5\n").expect("write key file");
    let output = failed_start(&mut serve(&dir.path().join("data"), free_port(), &key_file));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("keys.txt line 1"), "{stderr}");
    assert!(stderr.contains("9 bytes, expected 32"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_while_running_frees_the_old_key() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data_dir = dir.path().join("data");
    let key_file = dir.path().join("keys.txt");
    let (old_key, new_key) = (generate_key(), generate_key());
    write_keys(&key_file, &[&old_key]);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();

    // Data sealed under a data key wrapped by the old master key.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let engine = start(&data_dir, port, &key_file);
    wait_ready(&http, &base).await;
    let tenant = create_tenant(&http, &base).await;
    upload(&http, &base, &tenant, "before@example.com").await;
    wait_sent(&http, &base, &tenant, "before@example.com").await;

    // The new key goes last in the file, and the running engine re-wraps.
    write_keys(&key_file, &[&old_key, &new_key]);
    let report = rotate(&base);
    assert_eq!(report["rewrapped"], 1, "{report}");
    assert_eq!(report["newest_master_key_id"], key_id(&new_key), "{report}");
    assert_eq!(report["master_keys_in_use"], json!([key_id(&new_key)]), "{report}");
    assert_eq!(report["master_keys_loaded"], json!([key_id(&old_key), key_id(&new_key)]));
    assert_sequence_readable(&http, &base, &tenant).await;
    upload(&http, &base, &tenant, "during@example.com").await;
    wait_sent(&http, &base, &tenant, "during@example.com").await;
    drop(engine);

    // The old key leaves the file; a restart reads everything with the new key alone.
    write_keys(&key_file, &[&new_key]);
    let engine = start(&data_dir, port, &key_file);
    wait_ready(&http, &base).await;
    assert_sequence_readable(&http, &base, &tenant).await;
    wait_sent(&http, &base, &tenant, "before@example.com").await;
    wait_sent(&http, &base, &tenant, "during@example.com").await;
    upload(&http, &base, &tenant, "after@example.com").await;
    wait_sent(&http, &base, &tenant, "after@example.com").await;
    drop(engine);

    // The old key alone opens nothing now, and the error names the key that is missing.
    write_keys(&key_file, &[&old_key]);
    let output = failed_start(&mut serve(&data_dir, port, &key_file));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&key_id(&new_key)), "names the missing key: {stderr}");
    assert!(stderr.contains("not configured"), "{stderr}");
}

#[test]
fn rotation_refuses_plain_http_to_another_host() {
    // 0.0.0.0 is not a loopback address, so the URL is rejected before any connection. Were it
    // not, Linux would connect to this machine, so nothing leaves it either way.
    let output = followup()
        .args(["keys", "rotate", "--url", "http://0.0.0.0:9"])
        .env("FOLLOWUP_ADMIN_TOKEN", OPERATOR_TOKEN)
        .output()
        .expect("run keys rotate");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("refusing to send the operator token"), "{stderr}");
    assert!(!stderr.contains(OPERATOR_TOKEN), "{stderr}");
}
