//! The ingest phase: every tenant's contacts, streamed as CSV uploads with bounded
//! concurrency.

use std::convert::Infallible;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use futures_util::{StreamExt, stream};
use reqwest::Body;
use serde::Serialize;
use tokio::time::{Instant, interval, sleep_until};

use crate::client::{EngineClient, UploadOutcome, UploadReport};
use crate::contacts::{ContactGenerator, CsvChunks, StartInstants};
use crate::progress::{PROGRESS_INTERVAL, Progress};
use crate::scenario::Scenario;
use crate::setup::LoadTenant;

/// Rows generated per body chunk: large enough to keep per-chunk overhead small, small
/// enough that the progress count moves smoothly.
const CHUNK_ROWS: u64 = 500;
/// Maximum problems quoted in the report; the counts cover the rest.
const MAX_SAMPLE_PROBLEMS: usize = 10;

/// Sums of every upload's report, plus what the harness itself counted.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct IngestTotals {
    pub uploads: u64,
    /// Uploads that stopped early or failed outright.
    pub failed_uploads: u64,
    /// Rows the harness generated into request bodies.
    pub rows_sent: u64,
    /// Rows the engine reported reading.
    pub rows: u64,
    pub accepted: u64,
    pub created: u64,
    pub duplicates: u64,
    pub rejected: u64,
    /// Rows the generator made invalid on purpose, in uploads that completed.
    pub expected_rejected: u64,
    /// Whether the run's deadline cut the phase short, cancelling the uploads in flight.
    pub timed_out: bool,
    /// The first few failed uploads, in words.
    pub problems: Vec<String>,
    /// Every upload that completed, with the instant its report arrived: the earliest a
    /// follow-up of its rows counts as due.
    #[serde(skip)]
    pub completed: Vec<CompletedUpload>,
}

/// One upload the engine stored whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompletedUpload {
    /// Index of the tenant among the run's tenants.
    pub tenant: u32,
    pub rows: Range<u64>,
    pub acknowledged_at: DateTime<Utc>,
}

/// One upload: a range of one tenant's contacts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UploadJob {
    /// Index into the run's tenants.
    pub tenant: usize,
    pub rows: Range<u64>,
}

/// Splits every tenant's contacts into uploads of at most `rows_per_upload` rows, taking one
/// upload of each tenant in turn, so that all tenants make progress together.
pub(crate) fn plan_uploads(
    tenants: usize,
    contacts_per_tenant: u64,
    rows_per_upload: u64,
) -> Vec<UploadJob> {
    let per_tenant = contacts_per_tenant.div_ceil(rows_per_upload.max(1));
    let mut jobs = Vec::new();
    for round in 0..per_tenant {
        let start = round * rows_per_upload;
        let rows = start..contacts_per_tenant.min(start + rows_per_upload);
        for tenant in 0..tenants {
            jobs.push(UploadJob { tenant, rows: rows.clone() });
        }
    }
    jobs
}

/// Runs every upload, `scenario.concurrency` at a time, until all finish or `deadline`
/// passes. Prints a progress line every [`PROGRESS_INTERVAL`] when `show_progress` is set.
pub(crate) async fn run_uploads(
    client: &EngineClient,
    tenants: &[LoadTenant],
    scenario: &Scenario,
    starts: Option<StartInstants>,
    deadline: Instant,
    show_progress: bool,
) -> IngestTotals {
    let jobs = plan_uploads(tenants.len(), scenario.contacts_per_tenant, scenario.rows_per_upload);
    let total_rows = scenario.contacts_per_tenant * tenants.len() as u64;
    let rows_sent = Arc::new(AtomicU64::new(0));
    let progress = Progress::start("ingest", "rows", total_rows, show_progress);

    let mut pending = stream::iter(jobs)
        .map(|job| {
            let tenant = &tenants[job.tenant];
            let generator = scenario.contacts_of(tenant.index, starts);
            let expected_rejected = generator.invalid_in(job.rows.clone());
            let body = csv_body(generator, job.rows.clone(), Arc::clone(&rows_sent));
            async move {
                let outcome = client.upload_csv(&tenant.api_key, &tenant.sequence_id, body).await;
                let upload = CompletedUpload {
                    tenant: tenant.index,
                    rows: job.rows,
                    acknowledged_at: Utc::now(),
                };
                (upload, expected_rejected, outcome)
            }
        })
        .buffer_unordered(scenario.concurrency);

    // Each turn either finishes an upload or prints a line, and the deadline ends the loop.
    let mut totals = IngestTotals::default();
    let mut ticker = interval(PROGRESS_INTERVAL);
    let expiry = sleep_until(deadline);
    tokio::pin!(expiry);
    loop {
        tokio::select! {
            next = pending.next() => match next {
                Some((upload, expected_rejected, outcome)) => {
                    totals.add(upload, expected_rejected, outcome);
                }
                None => break,
            },
            _ = ticker.tick() => progress.print(rows_sent.load(Ordering::Relaxed)),
            () = &mut expiry => {
                totals.timed_out = true;
                break;
            }
        }
    }
    totals.rows_sent = rows_sent.load(Ordering::Relaxed);
    progress.print(totals.rows_sent);
    totals
}

/// Builds a request body that generates `rows` as hyper sends it, counting rows into `sent`.
fn csv_body(generator: ContactGenerator, rows: Range<u64>, sent: Arc<AtomicU64>) -> Body {
    let chunks = CsvChunks::new(generator, rows, CHUNK_ROWS).map(move |(text, count)| {
        sent.fetch_add(count, Ordering::Relaxed);
        Ok::<_, Infallible>(text)
    });
    Body::wrap_stream(stream::iter(chunks))
}

impl IngestTotals {
    fn add(
        &mut self,
        upload: CompletedUpload,
        expected_rejected: u64,
        outcome: anyhow::Result<UploadOutcome>,
    ) {
        let tenant = upload.tenant;
        self.uploads += 1;
        match outcome {
            Ok(UploadOutcome::Completed(report)) => {
                self.expected_rejected += expected_rejected;
                self.add_report(&report);
                if report.rejected != expected_rejected {
                    self.note_unexpected_rejects(tenant, expected_rejected, &report);
                }
                self.completed.push(upload);
            }
            Ok(UploadOutcome::Stopped { status, message, report }) => {
                self.failed_uploads += 1;
                self.add_report(&report);
                self.note(format!(
                    "tenant {tenant}: upload stopped with status {status}: {message}"
                ));
            }
            Err(error) => {
                self.failed_uploads += 1;
                self.note(format!("tenant {tenant}: {error:#}"));
            }
        }
    }

    fn add_report(&mut self, report: &UploadReport) {
        self.rows += report.rows;
        self.accepted += report.accepted;
        self.created += report.created;
        self.duplicates += report.duplicates;
        self.rejected += report.rejected;
    }

    /// Records an upload whose rejects differ from the generated invalid rows, with the
    /// first reason the engine gave, which usually names the cause.
    fn note_unexpected_rejects(&mut self, tenant: u32, expected: u64, report: &UploadReport) {
        let first = match report.errors.first() {
            Some(error) => format!("; first error: {error}"),
            None => String::new(),
        };
        self.note(format!(
            "tenant {tenant}: {} rows rejected where {expected} were generated invalid{first}",
            report.rejected
        ));
    }

    fn note(&mut self, problem: String) {
        if self.problems.len() < MAX_SAMPLE_PROBLEMS {
            self.problems.push(problem);
        }
    }
}

#[cfg(test)]
mod tests;
