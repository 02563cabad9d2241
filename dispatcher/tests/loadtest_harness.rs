//! `followup-loadtest` against a real engine: the harness starts `followup fakes` and
//! `followup serve` itself, uploads generated contacts, waits for every follow-up to settle and
//! matches each send with what the fakes received.

use std::path::PathBuf;
use std::time::Duration;

use followup_core::sensitive::Sensitive;
use followup_loadtest::{
    Accounting, BackgroundSpec, Delay, LoadOptions, LoadReport, Scenario, StartSpec, Target, run,
    svg,
};

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
    assert_eq!(report.settle.accounting, Some(Accounting::Exact));

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
    scenario.background = Some(BackgroundSpec { pending: 1_000, tenants: 3, rows_per_upload: 250 });
    let report = load(started_engine(scenario)).await;
    eprint!("{report}");

    let background = report.background.as_ref().expect("the backlog was uploaded");
    assert_eq!(background.tenants, 3);
    assert_eq!(background.pending, 1_002, "1,000 rounded up over 3 tenants");
    assert_eq!(background.failed_uploads, 0);
    assert_eq!(report.settle.by_state.get("pending"), Some(&1_002), "{report}");
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
