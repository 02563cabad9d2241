//! `followup-loadtest` against a real engine: the harness starts `followup fakes` and
//! `followup serve` itself, uploads generated contacts, waits for every follow-up to settle and
//! matches each send with what the fakes received. Under virtual time it starts `followup
//! serve --virtual-clock` instead, or loads an engine the test started, and moves its clock.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use followup_core::domain::Channel;
use followup_core::sensitive::Sensitive;
use followup_loadtest::{
    Accounting, BackgroundSpec, Delay, LoadOptions, LoadReport, Scenario, StartSpec, StepSpec,
    Target, TimeMode, run, svg,
};
use serde_json::{Value, json};
use support::ChildGuard;

fn started_engine(scenario: Scenario) -> LoadOptions {
    LoadOptions {
        target: Target::Start { followup: PathBuf::from(env!("CARGO_BIN_EXE_followup")) },
        scenario,
        show_progress: true,
        keep_files: false,
    }
}

fn small_scenario() -> Scenario {
    Scenario {
        name: "test".to_owned(),
        tenants: 3,
        contacts_per_tenant: 400,
        rows_per_upload: 150,
        concurrency: 2,
        timeout_seconds: 120,
        invalid_fraction: 0.05,
        poll_interval_ms: 100,
        ..Scenario::default()
    }
}

/// Runs the harness, bounded in time on top of the scenario's own timeout.
async fn load(options: LoadOptions) -> LoadReport {
    let bound = Duration::from_secs(options.scenario.timeout_seconds + 60);
    tokio::time::timeout(bound, run(options))
        .await
        .expect("the run ended within its bound")
        .expect("the run could be made")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_send_matched_with_the_fakes_receipts() {
    let report = load(started_engine(small_scenario())).await;
    eprint!("{report}");

    let ingest = &report.ingest.totals;
    assert_eq!(ingest.uploads, 9, "3 tenants x 3 uploads");
    assert_eq!(ingest.rows, 1_200);
    assert_eq!(ingest.rejected, 60, "5% of 400, for each of 3 tenants");
    assert_eq!(report.settle.expected_follow_ups, 2_280, "two steps each");
    assert_eq!(report.settle.accounting, Some(Accounting::PerTenant));

    let delivery = report.delivery.as_ref().expect("receipts read from the harness's fakes");
    assert_eq!(delivery.expected, 2_280);
    assert_eq!(delivery.received, 2_280);
    assert_eq!(delivery.duplicates, 0);
    assert_eq!(delivery.lost, 0);
    assert_eq!(delivery.unmatched, 0);
    let lateness = delivery.lateness_ms.expect("lateness measured without a send window");
    assert!(lateness.p50 <= lateness.p99 && lateness.p99 <= lateness.max, "{lateness:?}");

    let headline = &report.headline;
    assert_eq!(headline.lost, Some(0));
    assert_eq!(headline.duplicates, Some(0));
    assert_eq!(headline.rate_limit_violations, Some(0));
    assert!(headline.sends_per_s.is_some_and(|rate| rate > 0.0), "{headline:?}");
    assert!(headline.peak_rss_bytes.is_some_and(|bytes| bytes > 1_000_000), "{headline:?}");
    assert!(headline.cpu_seconds_per_10k_sends.is_some_and(|cpu| cpu > 0.0), "{headline:?}");
    assert!(report.passed, "{report}");

    let sends: u64 = delivery.timeline.iter().map(|point| point.sends).sum();
    assert_eq!(sends, 2_280, "the timeline holds every receipt");
    let chart = svg::render(&report.scenario, &delivery.timeline);
    assert!(chart.contains("engine resident memory"), "memory was sampled");

    let json = serde_json::to_value(&report).expect("the report serialises");
    for key in ["ingest_rows_per_s", "sends_per_s", "peak_rss_bytes", "lost", "duplicates"] {
        assert!(json.get(key).is_some_and(|value| !value.is_null()), "{key} in {json}");
    }
    assert!(json["lateness_ms"]["p99"].is_u64(), "{json}");
    assert_eq!(json["rate_limit_violations"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_waits_for_its_start_instant() {
    let mut scenario = small_scenario();
    scenario.name = "burst".to_owned();
    scenario.tenants = 2;
    scenario.contacts_per_tenant = 300;
    scenario.sequence.steps.truncate(1);
    scenario.start = Some(StartSpec { after_seconds: 6, spread_seconds: 0 });
    let report = load(started_engine(scenario)).await;
    eprint!("{report}");

    let delivery = report.delivery.as_ref().expect("receipts read");
    assert_eq!(delivery.expected, 570, "2 x 300 rows, 5% invalid, one step");
    assert_eq!(delivery.received, 570);
    let early: u64 = delivery.timeline.iter().take(6).map(|point| point.sends).sum();
    assert_eq!(early, 0, "nothing sent before the start instant: {:?}", delivery.timeline);
    assert!(report.passed, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_stays_pending_beside_the_load() {
    let mut scenario = small_scenario();
    scenario.name = "backlog".to_owned();
    scenario.tenants = 1;
    scenario.contacts_per_tenant = 200;
    scenario.background = Some(BackgroundSpec { pending: 1_200, tenants: 3, rows_per_upload: 250 });
    let report = load(started_engine(scenario)).await;
    eprint!("{report}");

    let background = report.background.as_ref().expect("the backlog was uploaded");
    assert_eq!(background.tenants, 3);
    assert_eq!(background.pending, 1_200);
    assert_eq!(background.failed_uploads, 0);
    // The run's one tenant is counted apart from the backlog's, whose follow-ups stay pending.
    assert_eq!(report.settle.by_state.get("pending"), None, "{report}");
    assert_eq!(report.settle.accounting, Some(Accounting::PerTenant), "{report}");
    let delivery = report.delivery.as_ref().expect("receipts read");
    assert_eq!(delivery.expected, 380, "the load's own follow-ups only");
    assert_eq!(delivery.received, 380);
    assert_eq!(delivery.unmatched, 0, "nothing of the backlog was sent");
    assert!(report.passed, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_ups_not_yet_due_fail_the_run() {
    let mut scenario = small_scenario();
    scenario.tenants = 1;
    scenario.contacts_per_tenant = 50;
    scenario.timeout_seconds = 15;
    scenario.sequence.steps[1].delay = Delay::Text("1h".to_owned());
    let report = load(started_engine(scenario)).await;
    eprint!("{report}");

    assert!(report.settle.timed_out);
    let delivery = report.delivery.as_ref().expect("receipts read");
    // 48 valid rows: their email steps were sent, their SMS steps are an hour away.
    assert_eq!(delivery.received, 48);
    assert_eq!(delivery.lost, 48);
    assert_eq!(report.checks.none_lost, Some(false));
    assert!(!report.passed);
}

#[tokio::test]
async fn remote_url_rejected() {
    // 192.0.2.0/24 is reserved for documentation; the guard rejects it before any request.
    let options = LoadOptions {
        target: Target::Running {
            url: "http://192.0.2.1:8080".to_owned(),
            admin_token: Sensitive::new("token".to_owned()),
            fakes_url: None,
        },
        scenario: small_scenario(),
        show_progress: false,
        keep_files: false,
    };
    let error = run(options).await.expect_err("not loopback");
    assert!(error.to_string().contains("loopback"), "{error}");
}

/// 2 tenants x 50 contacts (2 of each tenant's rows invalid) on virtual time, with an email
/// step at once, an SMS step a day later and an email step two days after that.
fn virtual_days_scenario() -> Scenario {
    let step = |channel, delay: &str, subject: Option<&str>| StepSpec {
        channel,
        delay: Delay::Text(delay.to_owned()),
        subject: subject.map(str::to_owned),
        body: format!("Virtual time step after {delay}."),
    };
    let mut scenario = Scenario {
        name: "virtual-days".to_owned(),
        time: TimeMode::Virtual,
        tenants: 2,
        contacts_per_tenant: 50,
        rows_per_upload: 20,
        concurrency: 2,
        timeout_seconds: 120,
        invalid_fraction: 0.04,
        poll_interval_ms: 100,
        ..Scenario::default()
    };
    scenario.sequence.steps = vec![
        step(Channel::Email, "0s", Some("First")),
        step(Channel::Sms, "1d", None),
        step(Channel::Email, "2d", Some("Third")),
    ];
    scenario
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_days_run_in_seconds() {
    let started = Instant::now();
    let report = load(started_engine(virtual_days_scenario())).await;
    let wall = started.elapsed();
    eprint!("{report}");

    assert_eq!(report.time, TimeMode::Virtual);
    assert_eq!(report.ingest.totals.rows, 100);
    assert_eq!(report.ingest.totals.rejected, 4, "4% of 50, for each of 2 tenants");
    assert_eq!(report.settle.expected_follow_ups, 288, "96 contacts x 3 steps");
    assert_eq!(report.settle.accounting, Some(Accounting::PerTenant));
    assert_eq!(report.settle.by_state.get("sent"), Some(&288), "{report}");

    let delivery = report.delivery.as_ref().expect("receipts read from the engine's fakes");
    assert_eq!(delivery.expected, 288);
    assert_eq!(delivery.received, 288);
    assert_eq!(delivery.lost, 0);
    assert_eq!(delivery.duplicates, 0);
    assert_eq!(delivery.unmatched, 0);
    assert_eq!(report.headline.rate_limit_violations, Some(0));
    // The clock jumps to each due instant and does not move while a round sends, so lateness
    // stays near zero at this size, far below the day a wrongly planned step would show.
    let lateness = delivery.lateness_ms.expect("lateness measured without a send window");
    assert!(lateness.max <= 1_000, "virtual lateness {lateness:?}");
    assert!(delivery.timeline.is_empty(), "no per-second timeline of virtual seconds");

    let clock = report.clock.as_ref().expect("the clock phase ran");
    assert!(clock.settled, "{clock:?}");
    let three_days = 3.0 * 86_400.0;
    assert!(clock.virtual_seconds >= three_days, "{clock:?}");
    assert!(clock.virtual_seconds < three_days + 3_600.0, "stops at the last due step: {clock:?}");
    assert!(clock.wall_seconds < 30.0, "three days in seconds of wall time: {clock:?}");
    assert!(wall < Duration::from_secs(90), "whole run took {wall:?}");
    assert!(report.headline.sends_per_s.is_some_and(|rate| rate > 0.0), "{report}");
    assert!(report.passed, "{report}");

    let json = serde_json::to_value(&report).expect("the report serialises");
    assert_eq!(json["time"], "virtual");
    assert!(json["clock"]["virtual_seconds"].as_f64().is_some_and(|s| s >= three_days));
    let text = report.to_string();
    assert!(text.contains("time: virtual"), "{text}");
    assert!(text.contains("lateness (virtual time)"), "{text}");
    assert!(text.contains("sends/s (wall clock)"), "{text}");
}

#[test]
fn virtual_clock_rejected_with_live_providers() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let output = Command::new(env!("CARGO_BIN_EXE_followup"))
        .args(["serve", "--virtual-clock", "--providers", "live", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir.path())
        .env("FOLLOWUP_MASTER_KEY", support::MASTER_KEY)
        .stdin(Stdio::null())
        .output()
        .expect("run followup serve");
    assert!(!output.status.success(), "live providers under a virtual clock must not start");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--virtual-clock needs --providers fake"), "{stderr}");
    assert!(stderr.contains("providers mode is live"), "{stderr}");
}

/// A `followup serve` on loopback with its built-in fakes, stopped when dropped.
struct ServedEngine {
    _process: ChildGuard,
    _data_dir: tempfile::TempDir,
    url: String,
    admin_token: String,
}

impl ServedEngine {
    async fn start(extra_args: &[&str]) -> Self {
        let data_dir = tempfile::tempdir().expect("temporary directory");
        let port = support::free_port();
        let admin_token = "virtual-clock-test-operator-token".to_owned();
        let child = support::serve_with_built_in_fakes(data_dir.path(), port)
            .args(extra_args)
            .env("FOLLOWUP_ADMIN_TOKEN", &admin_token)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start followup serve");
        let process = ChildGuard(child);
        let url = format!("http://127.0.0.1:{port}");
        // reqwest is built without a default TLS provider, so one is installed before a client.
        let _ = rustls::crypto::ring::default_provider().install_default();
        support::wait_ready(&reqwest::Client::new(), &url).await;
        Self { _process: process, _data_dir: data_dir, url, admin_token }
    }

    fn target(&self) -> Target {
        Target::Running {
            url: self.url.clone(),
            admin_token: Sensitive::new(self.admin_token.clone()),
            fakes_url: None,
        }
    }
}

fn running_engine(target: Target, scenario: Scenario) -> LoadOptions {
    LoadOptions { target, scenario, show_progress: true, keep_files: false }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_clock_engine_rejects_virtual_time() {
    let engine = ServedEngine::start(&[]).await;
    let http = reqwest::Client::new();

    let clock: Value = http
        .get(format!("{}/admin/v1/clock", engine.url))
        .bearer_auth(&engine.admin_token)
        .send()
        .await
        .expect("clock request")
        .json()
        .await
        .expect("clock JSON");
    assert_eq!(clock["virtual"], false, "{clock}");
    assert_eq!(clock["operator_driven"], false, "{clock}");

    let response = http
        .post(format!("{}/admin/v1/clock/run", engine.url))
        .bearer_auth(&engine.admin_token)
        .json(&json!({"until": "2030-01-01T00:00:00Z"}))
        .send()
        .await
        .expect("clock run request");
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.expect("error JSON");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert_eq!(body["error"]["code"], "conflict", "{body}");
    assert!(message.contains("system clock"), "{message}");
    assert!(message.contains("--virtual-clock"), "{message}");

    let unauthenticated = http
        .post(format!("{}/admin/v1/clock/run", engine.url))
        .json(&json!({"until": "2030-01-01T00:00:00Z"}))
        .send()
        .await
        .expect("clock run request");
    assert_eq!(unauthenticated.status(), 401, "the clock is operator-only");

    let mut scenario = virtual_days_scenario();
    scenario.tenants = 1;
    let error = run(running_engine(engine.target(), scenario)).await.expect_err("system clock");
    let message = format!("{error:#}");
    assert!(message.contains("time: virtual"), "{message}");
    assert!(message.contains("runs on the system clock"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_virtual_engine_driven_by_harness() {
    let engine = ServedEngine::start(&["--virtual-clock"]).await;
    let http = reqwest::Client::new();
    let clock: Value = http
        .get(format!("{}/admin/v1/clock", engine.url))
        .bearer_auth(&engine.admin_token)
        .send()
        .await
        .expect("clock request")
        .json()
        .await
        .expect("clock JSON");
    assert_eq!(clock["virtual"], true, "{clock}");
    assert_eq!(clock["operator_driven"], true, "{clock}");

    let response = http
        .post(format!("{}/admin/v1/clock/run", engine.url))
        .bearer_auth(&engine.admin_token)
        .json(&json!({"until": clock["now"], "max_wall_millis": 0}))
        .send()
        .await
        .expect("clock run request");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("error JSON");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("max_wall_millis is 0"), "{message}");

    let response = http
        .post(format!("{}/admin/v1/clock/run", engine.url))
        .bearer_auth(&engine.admin_token)
        .json(&json!({"until": "2000-01-01T00:00:00Z"}))
        .send()
        .await
        .expect("clock run request");
    assert_eq!(response.status(), 400, "an until in the past");
    let body: Value = response.json().await.expect("error JSON");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("never goes back"), "{message}");

    let fakes: Value = http
        .get(format!("{}/admin/v1/fakes", engine.url))
        .bearer_auth(&engine.admin_token)
        .send()
        .await
        .expect("fakes request")
        .json()
        .await
        .expect("fakes JSON");
    for name in ["gmail", "graph", "twilio", "google_token", "microsoft_token"] {
        let url = fakes[name].as_str().unwrap_or_default();
        assert!(url.starts_with("http://127.0.0.1:"), "{name}: {fakes}");
    }

    let mut real = small_scenario();
    real.tenants = 1;
    let error = run(running_engine(engine.target(), real)).await.expect_err("real time scenario");
    assert!(format!("{error:#}").contains("runs on a virtual clock"), "{error:#}");

    let mut scenario = virtual_days_scenario();
    scenario.tenants = 1;
    let report = load(running_engine(engine.target(), scenario)).await;
    eprint!("{report}");
    let delivery = report.delivery.as_ref().expect("receipts read from the engine's fakes");
    // The first run was rejected before it created a tenant, so this run's are the only ones.
    assert_eq!(delivery.expected, 144, "48 contacts x 3 steps");
    assert_eq!(delivery.received, 144);
    assert_eq!(delivery.lost, 0);
    assert_eq!(delivery.duplicates, 0);
    let clock = report.clock.as_ref().expect("the clock phase ran");
    assert!(clock.virtual_seconds >= 3.0 * 86_400.0, "{clock:?}");
    assert!(report.engine_process.is_none(), "a running engine's process is not measured");
    assert!(report.passed, "{report}");
}
