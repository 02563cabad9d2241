//! What the fakes received, matched one to one with the follow-ups the uploads created: how
//! many never arrived or arrived twice, how late each arrived, and the send rate over time.
//!
//! Every message the harness has the engine send ends with a reference line naming its
//! contact and step (see `setup::with_receipt_refs`), so matching needs no guess. A follow-up
//! is due at its row's start instant (the acknowledgement of the upload holding the row, when
//! the row has none) plus the delays of its step and the steps before it, or at that
//! acknowledgement if it is later: the engine cannot be late for a follow-up it has not been
//! told about. Rows are stored while an upload streams, so a follow-up can arrive before its
//! upload's acknowledgement; such lateness counts as zero.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use followup_core::plan::add_step_delay;
use serde::{Deserialize, Serialize};

use crate::contacts::{ContactGenerator, StartInstants};
use crate::ingest::CompletedUpload;
use crate::scenario::{Scenario, TimeMode};
use crate::setup::REF_PREFIX;

/// One send the fakes accepted, as `GET /_fake/received` lists it.
#[derive(Clone, Debug, Deserialize)]
pub struct Receipt {
    pub received_at: DateTime<Utc>,
    #[serde(default)]
    pub body: String,
}

/// Lateness percentiles, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `sorted`, which must be in ascending order.
    fn of_sorted(sorted: &[u64]) -> Option<Self> {
        let last = *sorted.last()?;
        let rank = |q: f64| {
            let position = (q * sorted.len() as f64).ceil() as usize;
            sorted[position.clamp(1, sorted.len()) - 1]
        };
        Some(Self { p50: rank(0.50), p90: rank(0.90), p99: rank(0.99), max: last })
    }
}

/// One second of the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TimelinePoint {
    /// Seconds since the run started.
    pub second: u64,
    /// Sends the fakes received in this second, repeats included.
    pub sends: u64,
    /// 99th percentile lateness of the follow-ups first received in this second.
    pub lateness_p99_ms: Option<u64>,
    /// The engine's resident memory, when the harness started the engine and sampled it.
    pub rss_bytes: Option<u64>,
}

/// The delivery figures of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Delivery {
    /// Follow-ups the completed uploads created.
    pub expected: u64,
    /// Expected follow-ups the fakes received at least once.
    pub received: u64,
    /// Receipts beyond the first of a follow-up.
    pub duplicates: u64,
    /// Expected follow-ups neither received nor reported by the engine as ended unsent
    /// (failed, skipped, cancelled).
    pub lost: u64,
    /// Receipts without a reference of this run, such as another run's messages on shared
    /// fakes.
    pub unmatched: u64,
    /// Expected follow-ups received per second of wall time: from the first receipt to the
    /// last under real time, over the clock phase under virtual time.
    pub sends_per_second: f64,
    /// From due to receipt, on the fakes' clock, which is virtual under virtual time. `None`
    /// with a send window, whose due instants the harness does not compute, or with nothing
    /// received.
    pub lateness_ms: Option<Percentiles>,
    /// Sends per second of the run; empty under virtual time.
    pub timeline: Vec<TimelinePoint>,
}

/// The follow-ups a run's completed uploads created, and when each fell due.
pub(crate) struct ExpectedFollowUps {
    generators: HashMap<u32, ContactGenerator>,
    /// Completed uploads of each tenant, by first row.
    uploads: HashMap<u32, Vec<CompletedUpload>>,
    /// Each step's delay after the step before, in seconds.
    delays: Vec<u64>,
    seed: u64,
    /// The run tag every reference line of this run starts with, if set (see
    /// `setup::with_receipt_refs`).
    run_tag: Option<String>,
    /// Whether due instants can be computed: not under a send window.
    dated: bool,
    count: u64,
}

impl ExpectedFollowUps {
    pub(crate) fn new(
        scenario: &Scenario,
        starts: Option<StartInstants>,
        completed: &[CompletedUpload],
    ) -> Self {
        let mut generators = HashMap::new();
        let mut uploads: HashMap<u32, Vec<CompletedUpload>> = HashMap::new();
        let steps = scenario.sequence.steps.len() as u64;
        let mut count = 0;
        for upload in completed {
            let generator = generators
                .entry(upload.tenant)
                .or_insert_with(|| scenario.contacts_of(upload.tenant, starts));
            let valid =
                (upload.rows.end - upload.rows.start) - generator.invalid_in(upload.rows.clone());
            count += valid * steps;
            uploads.entry(upload.tenant).or_default().push(upload.clone());
        }
        for list in uploads.values_mut() {
            list.sort_by_key(|upload| upload.rows.start);
        }
        // A delay the scenario check let through always parses; 0 is never used for dating
        // because validation rejects the scenario first.
        let delays =
            scenario.sequence.steps.iter().map(|step| step.delay.seconds().unwrap_or(0)).collect();
        Self {
            generators,
            uploads,
            delays,
            seed: scenario.seed,
            run_tag: None,
            dated: scenario.sequence.window.is_none(),
            count,
        }
    }

    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// The due instant of a follow-up, or `None` if the run did not create it.
    ///
    /// The engine plans each step from the step before, adding whole days on the contact's
    /// local calendar, so a day across a DST change is 23 or 25 hours. The harness plans with
    /// the engine's own function.
    fn due(&self, reference: FollowUpRef) -> Option<DateTime<Utc>> {
        let delays = self.delays.get(..=reference.step)?;
        let generator = self.generators.get(&reference.tenant)?;
        let uploads = self.uploads.get(&reference.tenant)?;
        let position = uploads.partition_point(|upload| upload.rows.start <= reference.row);
        let upload = uploads.get(position.checked_sub(1)?)?;
        if !upload.rows.contains(&reference.row) || generator.is_invalid(reference.row) {
            return None;
        }
        let timezone: Tz = generator.row(reference.row).timezone.parse().ok()?;
        let start = generator.start_of(reference.row).unwrap_or(upload.acknowledged_at);
        let planned =
            delays.iter().fold(start, |from, delay| add_step_delay(from, timezone, *delay));
        Some(planned.max(upload.acknowledged_at))
    }

    /// Matches only reference lines tagged with `run_tag`, so that receipts of earlier runs
    /// against the same fakes are not taken for this run's.
    pub(crate) fn of_run(mut self, run_tag: &str) -> Self {
        self.run_tag = Some(run_tag.to_owned());
        self
    }

    /// Reads the reference line at the end of `body`, if it is one of this run's.
    fn reference(&self, body: &str) -> Option<FollowUpRef> {
        let line = body.trim_end().rsplit('\n').next()?;
        let mut rest = line.strip_prefix(REF_PREFIX)?;
        if let Some(run_tag) = &self.run_tag {
            rest = rest.strip_prefix(run_tag.as_str())?.strip_prefix('/')?;
        }
        let rest = rest.strip_prefix("lt-")?;
        let rest = rest.strip_prefix(&format!("{}-", self.seed))?;
        let (tenant, rest) = rest.split_once('-')?;
        let (row, step) = rest.split_once("-s")?;
        Some(FollowUpRef {
            tenant: tenant.parse().ok()?,
            row: row.parse().ok()?,
            step: step.parse().ok()?,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FollowUpRef {
    tenant: u32,
    row: u64,
    step: usize,
}

/// Matches `receipts` with `expected`. `ended_unsent` is the number of follow-ups the engine
/// reports as ended without a send, which are not lost; `rss_samples` are the engine's
/// resident memory by instant, when sampled.
///
/// Under virtual time the timeline stays empty: its seconds would be virtual, days of them,
/// and the memory samples are taken in wall time, so the two would not line up.
pub(crate) fn analyse(
    expected: &ExpectedFollowUps,
    receipts: &[Receipt],
    ended_unsent: u64,
    run_started: DateTime<Utc>,
    rss_samples: &[(DateTime<Utc>, u64)],
    time: TimeMode,
) -> Delivery {
    let with_timeline = time == TimeMode::Real;
    let mut seen: HashMap<FollowUpRef, u32> = HashMap::new();
    let mut lateness = Vec::new();
    let mut unmatched = 0;
    let mut timeline: Vec<TimelinePoint> = Vec::new();
    let mut per_second_lateness: Vec<Vec<u64>> = Vec::new();
    let (mut first, mut last) = (None::<DateTime<Utc>>, None::<DateTime<Utc>>);

    for receipt in receipts {
        let Some(reference) = expected.reference(&receipt.body) else {
            unmatched += 1;
            continue;
        };
        let Some(due) = expected.due(reference) else {
            unmatched += 1;
            continue;
        };
        let second = seconds_since(run_started, receipt.received_at);
        if with_timeline {
            point_at(&mut timeline, second).sends += 1;
        }
        let count = seen.entry(reference).or_default();
        *count += 1;
        if *count > 1 {
            continue;
        }
        first = Some(first.map_or(receipt.received_at, |at| at.min(receipt.received_at)));
        last = Some(last.map_or(receipt.received_at, |at| at.max(receipt.received_at)));
        if expected.dated {
            let late = (receipt.received_at - due).num_milliseconds().max(0) as u64;
            lateness.push(late);
            if !with_timeline {
                continue;
            }
            if per_second_lateness.len() <= second as usize {
                per_second_lateness.resize_with(second as usize + 1, Vec::new);
            }
            per_second_lateness[second as usize].push(late);
        }
    }
    for (second, mut values) in per_second_lateness.into_iter().enumerate() {
        values.sort_unstable();
        if let Some(percentiles) = Percentiles::of_sorted(&values) {
            point_at(&mut timeline, second as u64).lateness_p99_ms = Some(percentiles.p99);
        }
    }
    for (at, rss) in rss_samples.iter().filter(|_| with_timeline) {
        let point = point_at(&mut timeline, seconds_since(run_started, *at));
        point.rss_bytes = Some(point.rss_bytes.map_or(*rss, |seen| seen.max(*rss)));
    }

    let received = seen.len() as u64;
    let duplicates = seen.values().map(|&count| u64::from(count - 1)).sum();
    lateness.sort_unstable();
    let span = match (first, last) {
        (Some(first), Some(last)) => (last - first).num_milliseconds().max(1) as f64 / 1_000.0,
        _ => 0.0,
    };
    Delivery {
        expected: expected.count(),
        received,
        duplicates,
        lost: expected.count().saturating_sub(received).saturating_sub(ended_unsent),
        unmatched,
        sends_per_second: if span > 0.0 { received as f64 / span } else { 0.0 },
        lateness_ms: Percentiles::of_sorted(&lateness),
        timeline,
    }
}

fn seconds_since(start: DateTime<Utc>, at: DateTime<Utc>) -> u64 {
    (at - start).num_seconds().max(0) as u64
}

/// The timeline's point of `second`, adding empty seconds up to it.
fn point_at(timeline: &mut Vec<TimelinePoint>, second: u64) -> &mut TimelinePoint {
    while timeline.len() as u64 <= second {
        let next = timeline.len() as u64;
        timeline.push(TimelinePoint { second: next, ..TimelinePoint::default() });
    }
    &mut timeline[second as usize]
}

#[cfg(test)]
mod tests;
