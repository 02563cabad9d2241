//! Load harness of the followup engine.
//!
//! [`run`] creates tenants with connections and a sequence, streams generated contacts to the
//! bulk upload endpoint, then polls the operator snapshot until every follow-up has settled,
//! and returns a [`LoadReport`]. It sends requests only to a loopback address.
//!
//! NOTE: the report has no lateness percentiles, memory figures or rate-limit check yet, and
//! the run leaves its tenants in the engine because the API has no way to delete them.

mod client;
mod contacts;
pub mod crash;
mod guard;
mod ingest;
mod progress;
mod report;
mod scenario;
mod settle;
mod setup;

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, ensure};
use followup_core::sensitive::Sensitive;
use tokio::time::{Instant, timeout_at};

pub use crate::client::{EngineClient, UploadReport};
pub use crate::contacts::{CSV_HEADER, ContactGenerator, ContactRow, CsvChunks, InvalidKind};
pub use crate::guard::{LoopbackUrl, check_loopback, parse_loopback};
pub use crate::ingest::IngestTotals;
pub use crate::report::{Checks, IngestSummary, LoadReport, SettleSummary};
pub use crate::scenario::{
    ConnectionLimits, Delay, Limits, MAX_CONCURRENCY, MAX_CONTACTS_PER_TENANT, MAX_TENANTS,
    MAX_TIMEOUT_SECONDS, Scenario, SequenceSpec, StepSpec, WindowSpec,
};
pub use crate::settle::Accounting;

/// The `--help` note on exit statuses that `followup-loadtest` and `followup-crashtest` share.
pub const EXIT_STATUS_HELP: &str = "Exit status: 0 when every check passed, 1 when a check \
                                    failed, 2 when the run could not be made.";

/// Run settings: the scenario and the engine it targets.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Base URL of the engine; must be loopback.
    pub url: String,
    /// Operator token of the engine's `/admin` API.
    pub admin_token: Sensitive<String>,
    pub scenario: Scenario,
    /// Whether to print progress lines on stderr.
    pub show_progress: bool,
}

/// Runs one load scenario against the engine at `options.url` and reports what it measured.
///
/// Fails before sending anything if the URL is not loopback or the scenario is invalid, and
/// fails if the tenants cannot be created. Once ingest starts, failed uploads and a missed
/// deadline end up in the report's checks instead of an error.
pub async fn run(options: LoadOptions) -> anyhow::Result<LoadReport> {
    let scenario = &options.scenario;
    scenario.validate().context("invalid scenario")?;
    ensure!(!options.admin_token.expose().is_empty(), "admin token is empty: pass --admin-token");
    let target = check_loopback(&options.url).await?;

    let timeout = Duration::from_secs(scenario.timeout_seconds);
    let deadline = Instant::now() + timeout;
    let client = EngineClient::new(&target, options.admin_token.clone(), timeout)?;

    let run_tag = run_tag();
    let tenants = timeout_at(deadline, setup::create_tenants(&client, scenario, &run_tag))
        .await
        .context("timed out creating tenants: raise timeout_seconds")??;
    let run_tenants: HashSet<_> = tenants.iter().map(|tenant| tenant.id).collect();

    let ingest_started = Instant::now();
    let ingest =
        ingest::run_uploads(&client, &tenants, scenario, deadline, options.show_progress).await;
    let ingest_seconds = ingest_started.elapsed().as_secs_f64();

    let expected_follow_ups = ingest.created * scenario.sequence.steps.len() as u64;
    let poll_interval = Duration::from_millis(scenario.poll_interval_ms);
    let tenant_filter = setup::tenant_name_prefix(scenario, &run_tag);
    let settle = settle::wait_until_settled(
        &client,
        &run_tenants,
        &tenant_filter,
        expected_follow_ups,
        poll_interval,
        deadline,
        options.show_progress,
    )
    .await;

    Ok(report::build(report::RunFacts {
        scenario: &scenario.name,
        tenants: scenario.tenants,
        contacts_per_tenant: scenario.contacts_per_tenant,
        ingest,
        ingest_seconds,
        expected_follow_ups,
        settle,
    }))
}

/// Returns a tag that keeps tenant names of different runs apart: seconds since the Unix epoch.
fn run_tag() -> String {
    let seconds =
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs());
    seconds.to_string()
}
