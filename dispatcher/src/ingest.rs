//! The bulk ingest pipeline: a streamed upload goes through the record reader, each row is
//! validated and planned, and valid rows are written to the store in durable batches, so that
//! memory contains one batch, never the upload.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use followup_core::crypto::RecordIdKey;
use followup_core::domain::{
    Channel, Contact, FollowUp, FollowUpState, Schedule, Sequence, Tenant,
};
use followup_core::ids::{FollowUpId, ScheduleId};
use followup_core::ingest::{
    ColumnMapping, ContactField, Format, IngestError, IngestLimits, RawRecord, RecordReader,
    RowError, ValidContact, ValidationContext, validate,
};
use followup_core::plan::{add_step_delay, plan_steps};
use followup_core::store::{Enrolment, InsertReport, Store, StoreError};
use followup_core::template::Template;
use futures_util::{Stream, StreamExt as _};
use serde::{Deserialize, Serialize};

use crate::telemetry;

/// Result of an upload, row by row.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IngestReport {
    /// Data rows read.
    pub rows: u64,
    /// Valid rows: created now or already there.
    pub accepted: u64,
    /// Accepted rows whose schedule was created by this upload.
    pub created: u64,
    /// Accepted rows whose schedule already existed, left unchanged.
    pub duplicates: u64,
    pub rejected: u64,
    /// Every problem of every rejected row, up to the configured maximum.
    pub errors: Vec<RowError>,
    /// Row problems left out of `errors` once it reached its maximum.
    #[serde(default)]
    pub errors_not_listed: u64,
    /// Contact field each column of the upload was read as.
    pub mapping: Vec<MappedColumn>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MappedColumn {
    pub column: String,
    pub field: ContactField,
}

/// Cause of an upload stopping before its end. Rows in batches written before the stop stay
/// written; `report` counts them. The report is boxed because it dwarfs the error.
#[derive(Debug, thiserror::Error)]
pub enum IngestFailure {
    #[error("{error}")]
    Input { error: IngestError, report: Box<IngestReport> },
    #[error("upload interrupted: {reason}")]
    Body { reason: String, report: Box<IngestReport> },
    #[error("{error}")]
    Store { error: StoreError, report: Box<IngestReport> },
}

/// One upload of one tenant into one sequence.
#[derive(Debug)]
pub struct IngestJob<'a> {
    pub tenant: &'a Tenant,
    /// The tenant's key of contact and schedule ids.
    pub record_ids: &'a RecordIdKey,
    pub sequence: &'a Sequence,
    pub format: Format,
    pub explicit_mapping: Option<BTreeMap<String, ContactField>>,
    pub limits: IngestLimits,
    pub batch_rows: usize,
    pub max_errors_listed: usize,
    pub now: DateTime<Utc>,
    /// Size of the body from Content-Length, when the client sent one; gives progress an ETA.
    pub expected_bytes: Option<u64>,
}

/// Time between two progress lines of a long upload.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Reads `body` to its end and writes every valid row. Returns after the last batch is
/// durable.
pub async fn ingest<S, E>(
    store: &dyn Store,
    job: IngestJob<'_>,
    body: S,
) -> Result<IngestReport, IngestFailure>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    read_rows(RowSink::Store(store), job, body).await
}

/// The follow-ups an upload would plan, for a forecast: each new schedule's follow-ups that
/// have an address, as (channel, planned instant, whether the send window moved it later).
#[derive(Debug, Default)]
pub struct PlannedUpload {
    pub follow_ups: Vec<(Channel, DateTime<Utc>, bool)>,
    /// Follow-ups of steps the contact has no address for, which ingest stores skipped.
    pub without_address: u64,
    schedules: HashSet<ScheduleId>,
}

/// Reads `body` as [`ingest`] does, validating and planning every row the same way, but stores
/// nothing: it returns the report and the follow-ups the upload would plan.
pub async fn plan_upload<S, E>(
    job: IngestJob<'_>,
    body: S,
) -> Result<(IngestReport, PlannedUpload), IngestFailure>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let mut planned = PlannedUpload::default();
    let report = read_rows(RowSink::Plan(&mut planned), job, body).await?;
    Ok((report, planned))
}

/// Where the valid rows of an upload go.
enum RowSink<'a> {
    Store(&'a dyn Store),
    Plan(&'a mut PlannedUpload),
}

async fn read_rows<S, E>(
    sink: RowSink<'_>,
    job: IngestJob<'_>,
    body: S,
) -> Result<IngestReport, IngestFailure>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let mut run = IngestRun::new(sink, &job)?;
    let mut reader = RecordReader::new(job.format, job.limits);
    let mut records = Vec::new();
    futures_util::pin_mut!(body);
    let mut progress = UploadProgress::new(&job);
    // Valid rows read before a stop are written too, so that the report's `accepted` is
    // exactly what is stored, whatever ended the upload.
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(error) => {
                run.flush().await?;
                let reason = error.to_string();
                return Err(IngestFailure::Body { reason, report: Box::new(run.report) });
            }
        };
        let pushed = reader.push(&chunk, &mut records);
        run.take(&reader, &mut records).await?;
        progress.maybe_log(reader.bytes_read(), &run.report);
        if let Err(error) = pushed {
            run.flush().await?;
            return Err(IngestFailure::Input { error, report: Box::new(run.report) });
        }
    }
    let finished = reader.finish(&mut records);
    run.take(&reader, &mut records).await?;
    if let Err(error) = finished {
        run.flush().await?;
        return Err(IngestFailure::Input { error, report: Box::new(run.report) });
    }
    run.flush().await?;
    Ok(run.report)
}

/// Periodic log lines for a long upload: rows so far, rate and, with a known size, an ETA.
struct UploadProgress {
    tenant: String,
    expected_bytes: Option<u64>,
    started: Instant,
    last_line: Instant,
}

impl UploadProgress {
    fn new(job: &IngestJob<'_>) -> Self {
        let now = Instant::now();
        Self {
            tenant: job.tenant.id.to_string(),
            expected_bytes: job.expected_bytes,
            started: now,
            last_line: now,
        }
    }

    fn maybe_log(&mut self, bytes: u64, report: &IngestReport) {
        if self.last_line.elapsed() < PROGRESS_EVERY {
            return;
        }
        self.last_line = Instant::now();
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        let rows_per_second = (report.rows as f64 / seconds).round();
        let eta_seconds = self
            .expected_bytes
            .filter(|&total| bytes > 0 && total > bytes)
            .map(|total| ((total - bytes) as f64 * seconds / bytes as f64).round());
        tracing::info!(
            tenant = %self.tenant,
            rows = report.rows,
            accepted = report.accepted,
            rejected = report.rejected,
            bytes,
            rows_per_second,
            eta_seconds,
            "upload in progress"
        );
    }
}

/// The state of one upload in progress.
struct IngestRun<'a> {
    sink: RowSink<'a>,
    job: &'a IngestJob<'a>,
    context: ValidationContext,
    mapping: Option<ColumnMapping>,
    batch: Vec<Enrolment>,
    report: IngestReport,
}

impl<'a> IngestRun<'a> {
    fn new(sink: RowSink<'a>, job: &'a IngestJob<'a>) -> Result<Self, IngestFailure> {
        let report = IngestReport::default();
        let default_timezone = match job.tenant.default_timezone.parse() {
            Ok(tz) => tz,
            Err(_) => chrono_tz::UTC,
        };
        let context = ValidationContext {
            default_region: job.tenant.default_region.clone(),
            default_timezone,
            required_fields: required_fields(job.sequence),
            channels: job.sequence.steps.iter().map(|step| step.channel).collect(),
            now: job.now,
        };
        Ok(Self { sink, job, context, mapping: None, batch: Vec::new(), report })
    }

    /// Validates the records read so far and writes full batches.
    async fn take(
        &mut self,
        reader: &RecordReader,
        records: &mut Vec<Result<RawRecord, RowError>>,
    ) -> Result<(), IngestFailure> {
        if records.is_empty() {
            return Ok(());
        }
        if self.mapping.is_none() {
            self.mapping = Some(self.build_mapping(reader)?);
        }
        for record in records.drain(..) {
            self.report.rows += 1;
            let mapping = self.mapping.as_ref().ok_or_else(|| self.missing_header())?;
            let valid = record
                .map_err(|error| vec![error])
                .and_then(|record| validate(&record, mapping, &self.context));
            match valid {
                Ok(contact) => self.batch.push(enrolment(self.job, contact)),
                Err(errors) => {
                    self.report.rejected += 1;
                    metrics::counter!(telemetry::INGEST_ROWS, "result" => "rejected").increment(1);
                    let room = self.job.max_errors_listed.saturating_sub(self.report.errors.len());
                    let total = errors.len();
                    self.report.errors.extend(errors.into_iter().take(room));
                    self.report.errors_not_listed += total.saturating_sub(room) as u64;
                }
            }
            if self.batch.len() >= self.job.batch_rows.max(1) {
                self.flush().await?;
            }
        }
        Ok(())
    }

    fn build_mapping(&mut self, reader: &RecordReader) -> Result<ColumnMapping, IngestFailure> {
        // An NDJSON upload whose first line is not an object has no keys yet; its mapping
        // guesses each key as it first appears.
        let headers = match (reader.headers(), self.job.format) {
            (Some(headers), _) => headers,
            (None, Format::Ndjson) => &[],
            (None, Format::Csv) => return Err(self.missing_header()),
        };
        let mapping = match &self.job.explicit_mapping {
            Some(explicit) => {
                // NDJSON keys can first appear in any later line, so a mapped key that the
                // first object lacks is not an error there.
                let mut known = headers.to_vec();
                if self.job.format == Format::Ndjson {
                    known.extend(explicit.keys().filter(|key| !headers.contains(key)).cloned());
                }
                ColumnMapping::from_explicit(&known, explicit).map_err(|error| {
                    IngestFailure::Input { error, report: Box::new(self.report.clone()) }
                })?
            }
            None => ColumnMapping::guess(headers),
        };
        self.report.mapping = mapping
            .describe()
            .into_iter()
            .map(|(column, field)| MappedColumn { column, field })
            .collect();
        Ok(mapping)
    }

    fn missing_header(&self) -> IngestFailure {
        IngestFailure::Input {
            error: IngestError::MissingHeader,
            report: Box::new(self.report.clone()),
        }
    }

    async fn flush(&mut self) -> Result<(), IngestFailure> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let size = batch.len() as u64;
        let store = match &mut self.sink {
            RowSink::Store(store) => *store,
            RowSink::Plan(planned) => {
                let written = planned.add(self.job.sequence, batch);
                self.report.accepted += size;
                self.report.created += written.inserted;
                self.report.duplicates += written.duplicates;
                return Ok(());
            }
        };
        match store.insert_enrolments(self.job.tenant.id, batch).await {
            Ok(written) => {
                self.report.accepted += size;
                self.report.created += written.inserted;
                self.report.duplicates += written.duplicates;
                metrics::counter!(telemetry::INGEST_ROWS, "result" => "accepted")
                    .increment(written.inserted);
                metrics::counter!(telemetry::INGEST_ROWS, "result" => "duplicate")
                    .increment(written.duplicates);
                Ok(())
            }
            Err(error) => {
                Err(IngestFailure::Store { error, report: Box::new(self.report.clone()) })
            }
        }
    }
}

impl PlannedUpload {
    /// Keeps the follow-ups of each enrolment whose schedule is new, as the store would.
    fn add(&mut self, sequence: &Sequence, batch: Vec<Enrolment>) -> InsertReport {
        let mut written = InsertReport::default();
        for enrolment in batch {
            if !self.schedules.insert(enrolment.schedule.id) {
                written.duplicates += 1;
                continue;
            }
            written.inserted += 1;
            let tz = enrolment.contact.timezone.parse().unwrap_or(chrono_tz::UTC);
            let mut previous = enrolment.schedule.start_at;
            for (follow_up, step) in enrolment.follow_ups.iter().zip(&sequence.steps) {
                let by_delay = add_step_delay(previous, tz, step.delay_seconds);
                previous = follow_up.planned_at;
                if follow_up.state == FollowUpState::Skipped {
                    self.without_address += 1;
                    continue;
                }
                let moved = follow_up.planned_at > by_delay;
                self.follow_ups.push((follow_up.channel, follow_up.planned_at, moved));
            }
        }
        written
    }
}

/// Returns every template field that the sequence's steps use without a fallback.
pub fn required_fields(sequence: &Sequence) -> Vec<String> {
    let mut fields = BTreeSet::new();
    for step in &sequence.steps {
        let templates = std::iter::once(step.body.as_str()).chain(step.subject.as_deref());
        for template in templates.filter_map(|source| Template::parse(source).ok()) {
            fields.extend(template.required_fields().map(str::to_owned));
        }
    }
    fields.into_iter().collect()
}

/// Builds the contact, schedule and planned follow-ups of one valid row.
fn enrolment(job: &IngestJob<'_>, valid: ValidContact) -> Enrolment {
    let tenant = job.tenant.id;
    let sequence = job.sequence;
    let schedule_id = job.record_ids.schedule(sequence.id, &valid.contact_key);
    let contact_id = job.record_ids.contact(&valid.contact_key);
    let due = plan_steps(valid.start_at, valid.timezone, &sequence.steps, &sequence.window);
    let contact = Contact {
        id: contact_id,
        tenant,
        external_id: valid.external_id,
        first_name: valid.first_name,
        last_name: valid.last_name,
        full_name: valid.full_name,
        email: valid.email,
        phone: valid.phone,
        timezone: valid.timezone.name().to_owned(),
        custom: valid.custom,
    };
    let follow_ups = sequence
        .steps
        .iter()
        .zip(due)
        .enumerate()
        .map(|(index, (step, due_at))| {
            // A step the contact has no address for is settled now, so that dispatch never
            // spends a rate-limit permit on it.
            let (state, reason) = match contact.address(step.channel) {
                Some(_) => (FollowUpState::Pending, None),
                None => {
                    let reason = Contact::missing_address_reason(step.channel);
                    (FollowUpState::Skipped, Some(reason))
                }
            };
            FollowUp {
                id: FollowUpId {
                    schedule: schedule_id,
                    step: u16::try_from(index).unwrap_or(u16::MAX),
                },
                tenant,
                sequence: sequence.id,
                contact: contact_id,
                channel: step.channel,
                state,
                due_at,
                planned_at: due_at,
                attempts: 0,
                attempts_before_retry: 0,
                reason,
                provider_message_id: None,
                sent_at: None,
                updated_at: job.now,
            }
        })
        .collect();
    let schedule = Schedule {
        id: schedule_id,
        tenant,
        sequence: sequence.id,
        contact: contact_id,
        start_at: valid.start_at,
        source_line: valid.line,
        created_at: job.now,
    };
    Enrolment { contact, schedule, follow_ups }
}
