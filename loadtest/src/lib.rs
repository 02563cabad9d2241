//! Load harness of the followup engine.
//!
//! [`run`] creates tenants with connections and a sequence, streams generated contacts to the
//! bulk upload endpoint, then polls the operator snapshot until every follow-up has settled,
//! and returns a [`LoadReport`]. It sends requests only to a loopback address.
//!
//! With [`Target::Start`] the harness starts `followup fakes` and `followup serve` itself, and
//! then also matches every send the fakes received with the follow-ups the uploads created
//! (lost, duplicated, late: see [`delivery`]) and reads the engine's peak memory and CPU time.
//! Against a running engine those figures need its fakes' URL, and memory and CPU are not
//! measured.
//!
//! A scenario with `time: virtual` runs on an engine started with `--virtual-clock`: the
//! engine's clock does not move during ingest, then the harness moves it from one due instant
//! to the next (see `virtual_time`), so that steps days apart run in seconds. The engine's
//! built-in fakes share that clock, so lateness is measured in virtual time.
//!
//! NOTE: a run against a running engine leaves its tenants there, because the API has no way
//! to delete them.

mod client;
mod contacts;
pub mod crash;
pub mod delivery;
mod engine;
mod guard;
mod ingest;
mod progress;
mod report;
mod scenario;
mod settle;
mod setup;
pub mod svg;
mod virtual_time;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, ensure};
use chrono::{DateTime, Utc};
use followup_core::sensitive::Sensitive;
use tokio::time::{Instant, timeout_at};

pub use crate::client::{EngineClient, UploadReport};
pub use crate::contacts::{
    CSV_HEADER, ContactGenerator, ContactRow, CsvChunks, InvalidKind, StartInstants,
};
pub use crate::engine::ProcessFigures;
pub use crate::guard::{LoopbackUrl, check_loopback, parse_loopback};
pub use crate::ingest::IngestTotals;
pub use crate::report::{
    BackgroundSummary, Checks, Headline, IngestSummary, LoadReport, SettleSummary,
};
pub use crate::scenario::{
    BackgroundSpec, ConnectionLimits, Delay, FakeBehaviour, Limits, MAX_CONCURRENCY,
    MAX_CONTACTS_PER_TENANT, MAX_TENANTS, MAX_TIMEOUT_SECONDS, MAX_VIRTUAL_SPAN_SECONDS, Scenario,
    SequenceSpec, StartSpec, StepSpec, TimeMode, WindowSpec,
};
pub use crate::settle::Accounting;
pub use crate::virtual_time::ClockSummary;

/// The `--help` note on exit statuses that `followup-loadtest` and `followup-crashtest` share.
pub const EXIT_STATUS_HELP: &str = "Exit status: 0 when every check passed, 1 when a check \
                                    failed, 2 when the run could not be made.";

/// Run settings: the scenario and the engine it targets.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub target: Target,
    pub scenario: Scenario,
    /// Whether to print progress lines on stderr.
    pub show_progress: bool,
    /// Whether to keep the store and logs of an engine the harness started.
    pub keep_files: bool,
}

/// The engine a run loads.
#[derive(Clone, Debug)]
pub enum Target {
    /// An engine already running at `url` (loopback only). With `fakes_url`, the base URL
    /// of the `followup fakes` it sends to, sends are matched with the fakes' receipts.
    Running { url: String, admin_token: Sensitive<String>, fakes_url: Option<String> },
    /// Start `followup fakes` and `followup serve` from this `followup` binary.
    Start { followup: PathBuf },
}

/// Runs one load scenario and reports what it measured.
///
/// Fails before sending anything if the URL is not loopback or the scenario is invalid, and
/// fails if the tenants cannot be created, or if the engine's clock is not the scenario's
/// (`time`). Once ingest starts, failed uploads and a missed deadline end up in the report's
/// checks instead of an error.
pub async fn run(options: LoadOptions) -> anyhow::Result<LoadReport> {
    let scenario = &options.scenario;
    scenario.validate().context("invalid scenario")?;
    let (own, url, admin_token, fakes_url) = match &options.target {
        Target::Start { followup } => {
            let own = engine::OwnEngine::start(followup, scenario).await?;
            let (url, admin_token) = (own.url.clone(), own.admin_token.clone());
            let fakes_url = own.fakes_url();
            (Some(own), url, admin_token, fakes_url)
        }
        Target::Running { url, admin_token, fakes_url } => {
            (None, url.clone(), admin_token.clone(), fakes_url.clone())
        }
    };
    ensure!(!admin_token.expose().is_empty(), "admin token is empty: pass --admin-token");
    let target = check_loopback(&url).await?;

    let timeout = Duration::from_secs(scenario.timeout_seconds);
    let deadline = Instant::now() + timeout;
    let client = EngineClient::new(&target, admin_token, timeout)?;
    let virtual_clock = virtual_time::check_engine_clock(&client, scenario, &url).await?;
    // The built-in fakes of an engine on a virtual clock share that clock, so their receipts
    // are read from the engine's own fakes unless --fakes-url names others.
    let fakes_url = match (fakes_url, virtual_clock) {
        (None, Some(_)) => {
            Some(client.fake_urls().await.context("failed to read the engine's fake URLs")?.twilio)
        }
        (fakes_url, _) => fakes_url,
    };
    if let Some(fakes_url) = &fakes_url {
        check_loopback(fakes_url).await.context("the fakes' URL")?;
    }

    let run_tag = run_tag();
    let tenants = timeout_at(
        deadline,
        setup::create_tenants(&client, scenario, &run_tag, options.show_progress),
    )
    .await
    .context("timed out creating tenants: raise timeout_seconds")??;
    let run_tenants: HashSet<_> = tenants.iter().map(|tenant| tenant.id).collect();
    let background = match scenario.background_scenario() {
        Some(backlog) => {
            Some(upload_backlog(&client, &backlog, deadline, options.show_progress).await?)
        }
        None => None,
    };

    let load_started_cpu = match &own {
        Some(own) => own.cpu_seconds()?,
        None => 0.0,
    };
    // Under virtual time the run starts at the engine's clock, which does not move until the
    // clock phase moves it.
    let run_started = match virtual_clock {
        Some(_) => virtual_time::virtual_now(&client).await?,
        None => Utc::now(),
    };
    let starts = scenario.start_instants(run_started);
    let ingest_started = Instant::now();
    let mut ingest =
        ingest::run_uploads(&client, &tenants, scenario, starts, deadline, options.show_progress)
            .await;
    let ingest_seconds = ingest_started.elapsed().as_secs_f64();

    let expected_follow_ups = ingest.created * scenario.sequence.steps.len() as u64;
    let settle_started = Instant::now();
    let (clock, clock_problem) = match virtual_clock {
        Some(_) => {
            let phase = ClockPhase { run_started, deadline, show_progress: options.show_progress };
            let (summary, problem) = run_clock_phase(&client, scenario, &mut ingest, phase).await?;
            (Some(summary), problem)
        }
        None => (None, None),
    };
    // A virtual clock that stopped short does not move again, so one count is enough.
    let settle_deadline = match &clock {
        Some(clock) if !clock.settled => Instant::now(),
        _ => deadline,
    };
    let polling = settle::Polling {
        interval: Duration::from_millis(scenario.poll_interval_ms),
        deadline: settle_deadline,
        counted_since: clock.as_ref().map(|clock| clock.ended_at),
        show_progress: options.show_progress,
    };
    let tenant_filter = setup::tenant_name_prefix(scenario, &run_tag);
    let mut settle = settle::wait_until_settled(
        &client,
        &run_tenants,
        &tenant_filter,
        expected_follow_ups,
        polling,
    )
    .await;
    // Measured from the end of ingest, so that under virtual time it includes moving the clock.
    settle.seconds = settle_started.elapsed().as_secs_f64();

    let expected =
        delivery::ExpectedFollowUps::new(scenario, starts, &ingest.completed).of_run(&run_tag);
    let ended_unsent = settle.last.as_ref().map_or(0, |count| {
        count.settled.saturating_sub(count.by_state.get("sent").copied().unwrap_or(0))
    });
    let memory_samples = own.as_ref().map(engine::OwnEngine::memory_samples).unwrap_or_default();
    let (mut delivery, rate_limit_violations) = match &fakes_url {
        Some(fakes_url) => {
            let analysis = DeliveryAnalysis {
                expected: &expected,
                ended_unsent,
                run_started,
                memory_samples: &memory_samples,
                time: scenario.time,
            };
            let (delivery, violations) = read_delivery(fakes_url, analysis).await?;
            (Some(delivery), Some(violations))
        }
        None => (None, None),
    };
    if let (Some(delivery), Some(clock)) = (&mut delivery, &clock) {
        // Receipt instants are virtual, so a rate over them would not measure the engine.
        delivery.sends_per_second = report::per_second(delivery.received, clock.wall_seconds);
    }
    let engine_process = match own {
        Some(own) => {
            let work_dir = own.work_dir().to_owned();
            let figures = own.finish(options.keep_files, load_started_cpu)?;
            if options.keep_files && options.show_progress {
                eprintln!("engine store and logs kept in {}", work_dir.display());
            }
            Some(figures)
        }
        None => None,
    };

    Ok(report::build(report::RunFacts {
        scenario: &scenario.name,
        tenants: scenario.tenants,
        contacts_per_tenant: scenario.contacts_per_tenant,
        time: scenario.time,
        ingest,
        ingest_seconds,
        expected_follow_ups,
        settle,
        clock,
        clock_problem,
        delivery,
        rate_limit_violations,
        engine_process,
        background,
    }))
}

/// Settings of the clock phase of a run under virtual time.
struct ClockPhase {
    /// The virtual instant the run started at, where the clock stood through ingest.
    run_started: DateTime<Utc>,
    deadline: Instant,
    show_progress: bool,
}

/// Checks that the virtual clock did not move during ingest, dates the completed uploads at
/// the run's start, then moves the clock until the engine has nothing waiting. Returns what
/// the clock phase did and why it ended early, if it did.
async fn run_clock_phase(
    client: &EngineClient,
    scenario: &Scenario,
    ingest: &mut IngestTotals,
    phase: ClockPhase,
) -> anyhow::Result<(ClockSummary, Option<String>)> {
    virtual_time::check_clock_still(client, phase.run_started, "ingest").await?;
    // The engine stored every upload at the run's start on its clock, which is the instant
    // its follow-ups are due from.
    for upload in &mut ingest.completed {
        upload.acknowledged_at = phase.run_started;
    }
    let planned_end = virtual_time::planned_end(scenario, phase.run_started)?;
    let outcome = virtual_time::drive_clock(
        client,
        phase.run_started,
        planned_end,
        planned_end + virtual_time::CLOCK_MARGIN,
        phase.deadline,
        phase.show_progress,
    )
    .await;
    Ok(outcome)
}

/// Inputs of [`read_delivery`] besides the fakes' URL.
struct DeliveryAnalysis<'a> {
    expected: &'a delivery::ExpectedFollowUps,
    ended_unsent: u64,
    run_started: DateTime<Utc>,
    memory_samples: &'a [(DateTime<Utc>, u64)],
    time: TimeMode,
}

/// Reads what the fakes at `fakes_url` received and matches it with the expected follow-ups.
/// Returns the delivery figures and the fakes' count of rate-limit violations.
async fn read_delivery(
    fakes_url: &str,
    analysis: DeliveryAnalysis<'_>,
) -> anyhow::Result<(delivery::Delivery, u64)> {
    let http = crash::processes::inspection_client()?;
    let receipts: Vec<delivery::Receipt> =
        crash::processes::inspect_fakes(&http, fakes_url, "received").await?;
    let stats: crash::processes::FakeCounters =
        crash::processes::inspect_fakes(&http, fakes_url, "stats").await?;
    let delivery = delivery::analyse(
        analysis.expected,
        &receipts,
        analysis.ended_unsent,
        analysis.run_started,
        analysis.memory_samples,
        analysis.time,
    );
    Ok((delivery, stats.rate_limit_violations))
}

/// Creates the backlog's tenants and uploads its contacts, whose follow-ups stay pending
/// through the run.
async fn upload_backlog(
    client: &EngineClient,
    backlog: &Scenario,
    deadline: Instant,
    show_progress: bool,
) -> anyhow::Result<report::BackgroundSummary> {
    let pending = u64::from(backlog.tenants) * backlog.contacts_per_tenant;
    if show_progress {
        eprintln!("backlog: {pending} follow-ups 30 days away, in {} tenants", backlog.tenants);
    }
    let tenants =
        timeout_at(deadline, setup::create_tenants(client, backlog, &run_tag(), show_progress))
            .await
            .context("timed out creating the backlog's tenants: raise timeout_seconds")??;
    let started = Instant::now();
    let totals =
        ingest::run_uploads(client, &tenants, backlog, None, deadline, show_progress).await;
    let seconds = started.elapsed().as_secs_f64();
    Ok(report::BackgroundSummary {
        tenants: backlog.tenants,
        pending: totals.created,
        failed_uploads: totals.failed_uploads,
        seconds,
        rows_per_second: if seconds > 0.0 { totals.rows as f64 / seconds } else { 0.0 },
    })
}

/// Returns a tag that keeps the tenant names and message references of different runs apart:
/// seconds since the Unix epoch and four random hex digits.
fn run_tag() -> String {
    let seconds =
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs());
    format!("{seconds}{:04x}", rand::random::<u16>())
}
