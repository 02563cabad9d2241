//! Process helpers shared by the tests that run `followup serve` and `followup fakes` as
//! separate processes.

#![allow(dead_code, reason = "each test binary uses its own part of these helpers")]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Master key of the engines these tests start (base64 of 32 bytes), the same for every start
/// so that a restarted engine opens its store.
pub(crate) const MASTER_KEY: &str = "Y3Jhc2gtdGVzdC1tYXN0ZXIta2V5LTMyLWJ5dGVzISE=";

pub(crate) use followup_loadtest::crash::processes::ChildGuard;

pub(crate) fn free_port() -> u16 {
    followup_loadtest::crash::processes::free_port().expect("bind a free port")
}

/// Starts `followup fakes` allowing each account `per_minute` and `per_day` sends, and returns
/// it with the JSON object of its base URLs by provider.
pub(crate) fn start_fakes(per_minute: u32, per_day: u32) -> (ChildGuard, Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_followup"))
        .arg("fakes")
        .args(["--per-minute", &per_minute.to_string(), "--per-day", &per_day.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start followup fakes");
    let stdout = child.stdout.take().expect("fakes stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("fakes print their URLs");
    let urls: Value = serde_json::from_str(&line).expect("fakes URLs are JSON");
    (ChildGuard(child), urls)
}

/// Returns the command of `followup serve` on 127.0.0.1:`port` with its store in `data_dir`,
/// sending to the separate fakes whose base URLs `urls` lists, with the test master key.
pub(crate) fn serve_to_fakes(data_dir: &Path, port: u16, urls: &Value) -> Command {
    let url = |name: &str| urls[name].as_str().unwrap_or_default().to_owned();
    let mut command = Command::new(env!("CARGO_BIN_EXE_followup"));
    command
        .args(["serve", "--providers", "live", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--gmail-base-url", &url("gmail")])
        .args(["--graph-base-url", &url("graph")])
        .args(["--twilio-base-url", &url("twilio")])
        .args(["--google-token-url", &url("google_token")])
        .args(["--microsoft-token-url", &url("microsoft_token")])
        .env("FOLLOWUP_MASTER_KEY", MASTER_KEY);
    command
}

/// Returns the command of `followup serve` on 127.0.0.1:`port` with its store in `data_dir`,
/// its built-in fakes (`--providers fake`) and the test master key.
pub(crate) fn serve_with_built_in_fakes(data_dir: &Path, port: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_followup"));
    command
        .args(["serve", "--providers", "fake", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data_dir)
        .env("FOLLOWUP_MASTER_KEY", MASTER_KEY);
    command
}

/// Waits up to 30 s for the engine at `base` to return success from `/readyz`.
pub(crate) async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(response) = http.get(format!("{base}/readyz")).send().await
            && response.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("engine at {base} not ready within 30 s");
}

/// A tenant to create through the API of a running engine: its Gmail connection, one sequence
/// and a CSV upload of `rows` contacts.
pub(crate) struct Enrolment<'a> {
    pub(crate) operator_token: &'a str,
    pub(crate) name: &'a str,
    pub(crate) gmail: Value,
    pub(crate) sequence: Value,
    pub(crate) csv: String,
    pub(crate) rows: usize,
}

/// Creates the tenant, connects its Gmail mailbox, creates the sequence and uploads the CSV,
/// checking that every row was accepted. Returns the tenant's id and API key.
pub(crate) async fn enroll(
    http: &reqwest::Client,
    base: &str,
    enrolment: Enrolment<'_>,
) -> (String, String) {
    let created: Value = http
        .post(format!("{base}/admin/v1/tenants"))
        .bearer_auth(enrolment.operator_token)
        .json(&json!({"name": enrolment.name, "plan": "pro"}))
        .send()
        .await
        .expect("create tenant")
        .json()
        .await
        .expect("tenant JSON");
    let id = created["id"].as_str().expect("tenant id").to_owned();
    let key = created["api_key"].as_str().expect("api key").to_owned();

    let response = http
        .put(format!("{base}/v1/connections/gmail"))
        .bearer_auth(&key)
        .json(&enrolment.gmail)
        .send()
        .await
        .expect("connect gmail");
    assert_eq!(response.status(), 200);

    let sequence: Value = http
        .post(format!("{base}/v1/sequences"))
        .bearer_auth(&key)
        .json(&enrolment.sequence)
        .send()
        .await
        .expect("create sequence")
        .json()
        .await
        .expect("sequence JSON");
    let report: Value = http
        .post(format!("{base}/v1/schedules/bulk"))
        .query(&[("sequence", sequence["id"].as_str().unwrap_or_default())])
        .bearer_auth(&key)
        .header("content-type", "text/csv")
        .body(enrolment.csv)
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("report JSON");
    assert_eq!(report["accepted"], enrolment.rows, "{report}");
    (id, key)
}
