//! Load scenarios: YAML files that fix the size and shape of a run. The files under
//! `loadtest/scenarios/` are the reference set, and every field is described in their README.

use std::path::Path;

use anyhow::{Context, bail, ensure};
use chrono::{DateTime, TimeDelta, Utc};
use followup_core::domain::{Channel, LimitOverrides};
use serde::{Deserialize, Serialize};

use crate::contacts::{ContactGenerator, StartInstants};

/// Maximum tenants in one run; more would mostly measure tenant creation.
pub const MAX_TENANTS: u32 = 1_000;
/// Maximum contacts per tenant, equal to the engine's default maximum rows per upload.
pub const MAX_CONTACTS_PER_TENANT: u64 = 5_000_000;
/// Maximum uploads in flight at once.
pub const MAX_CONCURRENCY: usize = 256;
/// Maximum run time, so that a forgotten run cannot hold the engine for days.
pub const MAX_TIMEOUT_SECONDS: u64 = 24 * 3_600;
/// Largest `embedded_cache_mib` a scenario may set: 1 TiB, far above any machine the harness
/// runs on, and small enough for the engine's TOML configuration to hold.
pub(crate) const MAX_EMBEDDED_CACHE_MIB: u64 = 1 << 20;

/// Maximum virtual time a scenario under `time: virtual` plans, from its start to its last due
/// instant: one year.
pub const MAX_VIRTUAL_SPAN_SECONDS: u64 = 366 * 86_400;

/// One load scenario. Every field has a default, so a file names only what it changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Name shown in the report and used in tenant names.
    pub name: String,
    /// Free text: what the scenario exercises.
    pub description: String,
    /// Tenants created for the run.
    pub tenants: u32,
    /// Generated contacts per tenant, invalid rows included.
    pub contacts_per_tenant: u64,
    /// Rows per CSV upload; a tenant's contacts are split into uploads of this size.
    pub rows_per_upload: u64,
    /// Uploads in flight at once, across all tenants.
    pub concurrency: usize,
    /// Maximum wall time of the whole run (setup, ingest and settling), in seconds.
    pub timeout_seconds: u64,
    /// Seed of the contact generator; the same seed produces the same rows.
    pub seed: u64,
    /// Fraction of rows, from 0 to 1, made invalid on purpose to exercise rejects.
    pub invalid_fraction: f64,
    /// Billing plan of the generated tenants; its monthly quota must cover the contacts, or
    /// the engine skips the excess follow-ups.
    pub plan: String,
    /// Interval between two snapshot polls while waiting for follow-ups to settle, in ms.
    pub poll_interval_ms: u64,
    /// Limit overrides of each tenant's connections.
    pub connections: ConnectionLimits,
    /// The engine's limits for its whole Google Cloud project, across every Gmail mailbox
    /// (`providers.gmail_project_per_minute` and `_per_day`), when the harness starts the
    /// engine. Unset, the engine's defaults hold: 12,000 sends a minute, which caps every
    /// run at 200 Gmail sends a second whatever the connections allow.
    pub gmail_project: Limits,
    /// The engine's `embedded_cache_mib` when the harness starts the engine; unset keeps the
    /// engine's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedded_cache_mib: Option<u64>,
    /// The sequence every generated contact is enrolled in.
    pub sequence: SequenceSpec,
    /// When follow-ups start; without it, each contact starts when its upload is stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<StartSpec>,
    /// Latency and faults of the fakes when the harness starts them itself (`--engine`).
    pub fakes: FakeBehaviour,
    /// Follow-ups uploaded before the measured load and kept pending through it, to measure
    /// the engine under a large backlog.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub background: Option<BackgroundSpec>,
    /// The clock the engine dispatches under: the system clock, or a virtual clock that the
    /// harness moves from one due instant to the next, so that days of steps run in seconds.
    pub time: TimeMode,
}

/// The clock a run's engine dispatches under.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeMode {
    /// The system clock: follow-ups fall due in wall time.
    #[default]
    Real,
    /// A virtual clock that does not move during ingest and that the harness then moves with
    /// `POST /admin/v1/clock/run`; lateness is measured on it.
    Virtual,
}

impl TimeMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeMode::Real => "real",
            TimeMode::Virtual => "virtual",
        }
    }
}

/// A backlog that stays pending during the run: `pending` follow-ups spread over `tenants`
/// extra tenants, each a contact whose single email step is 30 days away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackgroundSpec {
    pub pending: u64,
    #[serde(default = "BackgroundSpec::one")]
    pub tenants: u32,
    #[serde(default = "BackgroundSpec::default_rows_per_upload")]
    pub rows_per_upload: u64,
}

impl BackgroundSpec {
    /// Maximum number of background tenants a run creates.
    pub const MAX_TENANTS: u32 = 100_000;
    /// Maximum number of background follow-ups a run uploads.
    pub const MAX_PENDING: u64 = 20_000_000;

    /// Returns a backlog of `pending` follow-ups in one tenant, uploaded 10,000 rows at a time.
    pub fn new(pending: u64) -> Self {
        Self { pending, tenants: Self::one(), rows_per_upload: Self::default_rows_per_upload() }
    }

    fn one() -> u32 {
        1
    }

    fn default_rows_per_upload() -> u64 {
        10_000
    }
}

/// Start instants set by the run instead of by the uploads: every contact starts
/// `after_seconds` after the run begins, plus its row index modulo `spread_seconds`. A
/// spread of 0 makes each step of every contact due in the same second: the burst case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartSpec {
    pub after_seconds: u64,
    #[serde(default)]
    pub spread_seconds: u64,
}

/// Latency and faults of the fakes the harness starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FakeBehaviour {
    /// Milliseconds each fake waits before it responds.
    pub latency_ms: u64,
    /// A fault profile of `followup fakes --faults`, such as `none` or `flaky`.
    pub faults: String,
}

impl Default for FakeBehaviour {
    fn default() -> Self {
        Self { latency_ms: 0, faults: "none".to_owned() }
    }
}

/// Sending limits of the two connections each tenant gets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionLimits {
    pub gmail: Limits,
    pub twilio: Limits,
}

/// Limit overrides of one connection; `None` keeps the provider's default, which can make a
/// large run last for hours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Sends per minute.
    #[serde(default)]
    pub per_minute: Option<u32>,
    /// Sends per rolling 24 hours.
    #[serde(default)]
    pub per_day: Option<u32>,
}

/// Body of `POST /v1/sequences`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceSpec {
    pub name: String,
    pub steps: Vec<StepSpec>,
    /// Local send window; `None` sends at any time. A window makes follow-ups wait for it, so
    /// a run outside the window does not settle before its timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowSpec>,
}

/// One step of the sequence, as the engine's API takes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    pub channel: Channel,
    /// Delay after the previous step. Any delay above zero keeps the run from settling
    /// for that long.
    #[serde(default = "Delay::zero")]
    pub delay: Delay,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub body: String,
}

/// A step delay: seconds, or a string such as `"0s"`, `"15m"` or `"2d"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Delay {
    Seconds(u64),
    Text(String),
}

impl Delay {
    fn zero() -> Self {
        Delay::Text("0s".to_owned())
    }

    /// Returns the delay in seconds, parsed as the engine parses it.
    pub fn seconds(&self) -> Result<u64, String> {
        match self {
            Delay::Seconds(seconds) => followup_core::delay::check_delay_seconds(*seconds),
            Delay::Text(text) => followup_core::delay::parse_delay_text(text),
        }
    }
}

/// Local send window, as the engine's API takes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// Three-letter English day names, e.g. `["mon", "tue"]`.
    pub weekdays: Vec<String>,
    /// Local time `HH:MM`.
    pub start: String,
    /// Local time `HH:MM`, exclusive.
    pub end: String,
}

impl Default for Scenario {
    /// Builds the settings of the `smoke` scenario, small enough to settle in seconds.
    fn default() -> Self {
        Self {
            name: "default".to_owned(),
            description: String::new(),
            tenants: 2,
            contacts_per_tenant: 500,
            rows_per_upload: 250,
            concurrency: 4,
            timeout_seconds: 300,
            seed: 1,
            invalid_fraction: 0.05,
            plan: "pro".to_owned(),
            poll_interval_ms: 500,
            connections: ConnectionLimits::default(),
            gmail_project: Limits::default(),
            embedded_cache_mib: None,
            sequence: SequenceSpec::default(),
            start: None,
            fakes: FakeBehaviour::default(),
            background: None,
            time: TimeMode::Real,
        }
    }
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        // Gmail's published default of 2,000 sends a day would stall any run above it.
        let fast = Limits { per_minute: Some(6_000), per_day: Some(1_000_000) };
        Self { gmail: fast, twilio: fast }
    }
}

impl Default for SequenceSpec {
    fn default() -> Self {
        Self {
            name: "loadtest".to_owned(),
            steps: vec![
                StepSpec {
                    channel: Channel::Email,
                    delay: Delay::zero(),
                    subject: Some("Hello {{first_name|there}}".to_owned()),
                    body: "Hi {{first_name|there}}, this is a load test message.".to_owned(),
                },
                StepSpec {
                    channel: Channel::Sms,
                    delay: Delay::zero(),
                    subject: None,
                    body: "Load test SMS for {{first_name|you}}.".to_owned(),
                },
            ],
            window: None,
        }
    }
}

impl From<Limits> for LimitOverrides {
    fn from(limits: Limits) -> Self {
        LimitOverrides {
            per_minute: limits.per_minute,
            per_day: limits.per_day,
            ..LimitOverrides::default()
        }
    }
}

impl Scenario {
    /// The contact generator of tenant `tenant`, with the run's start instants if it sets them.
    pub fn contacts_of(&self, tenant: u32, starts: Option<StartInstants>) -> ContactGenerator {
        let generator = ContactGenerator::new(self.seed, tenant, self.invalid_fraction);
        match starts {
            Some(starts) => generator.with_start(starts),
            None => generator,
        }
    }

    /// The scenario that uploads the backlog, if there is one: its own tenants, valid rows
    /// only, another seed so that its rows differ from the run's, and one email step 30 days
    /// away, so that nothing of it falls due during the run.
    pub fn background_scenario(&self) -> Option<Scenario> {
        let background = self.background?;
        let tenants = background.tenants;
        Some(Scenario {
            name: format!("{}-background", self.name),
            tenants,
            contacts_per_tenant: background.pending / u64::from(tenants),
            rows_per_upload: background.rows_per_upload,
            seed: self.seed ^ 0x6261_636b,
            invalid_fraction: 0.0,
            sequence: SequenceSpec {
                name: "loadtest background".to_owned(),
                steps: vec![StepSpec {
                    channel: Channel::Email,
                    delay: Delay::Text("30d".to_owned()),
                    subject: Some("Later".to_owned()),
                    body: "Not during this run.".to_owned(),
                }],
                window: None,
            },
            start: None,
            background: None,
            ..self.clone()
        })
    }

    /// The start instants of a run that began at `run_started`, if the scenario sets them.
    /// The first is rounded up to a whole second, the precision of the uploaded `start_at`.
    pub fn start_instants(&self, run_started: DateTime<Utc>) -> Option<StartInstants> {
        self.start.map(|start| {
            let after = TimeDelta::seconds(i64::try_from(start.after_seconds).unwrap_or(i64::MAX));
            let whole = (run_started + after).timestamp()
                + i64::from(run_started.timestamp_subsec_nanos() > 0);
            StartInstants {
                first: DateTime::from_timestamp(whole, 0).unwrap_or(run_started + after),
                spread_seconds: start.spread_seconds,
            }
        })
    }

    /// Reads and checks a scenario file.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read scenario file {}", path.display()))?;
        Self::from_yaml(&text).with_context(|| format!("invalid scenario {}", path.display()))
    }

    /// Parses and checks a scenario from YAML text.
    pub fn from_yaml(text: &str) -> anyhow::Result<Self> {
        let scenario: Scenario = serde_yaml::from_str(text)?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Checks every field against its allowed range, so that a typo fails before any request.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(!self.name.trim().is_empty(), "name is empty");
        ensure!(
            (1..=MAX_TENANTS).contains(&self.tenants),
            "tenants is {}: expected 1 to {MAX_TENANTS}",
            self.tenants
        );
        ensure!(
            self.contacts_per_tenant <= MAX_CONTACTS_PER_TENANT,
            "contacts_per_tenant is {}: expected at most {MAX_CONTACTS_PER_TENANT}",
            self.contacts_per_tenant
        );
        ensure!(self.rows_per_upload >= 1, "rows_per_upload is 0: expected at least 1");
        ensure!(
            (1..=MAX_CONCURRENCY).contains(&self.concurrency),
            "concurrency is {}: expected 1 to {MAX_CONCURRENCY}",
            self.concurrency
        );
        ensure!(
            (1..=MAX_TIMEOUT_SECONDS).contains(&self.timeout_seconds),
            "timeout_seconds is {}: expected 1 to {MAX_TIMEOUT_SECONDS}",
            self.timeout_seconds
        );
        ensure!(
            (0.0..=1.0).contains(&self.invalid_fraction),
            "invalid_fraction is {}: expected a number from 0 to 1",
            self.invalid_fraction
        );
        ensure!(
            (50..=60_000).contains(&self.poll_interval_ms),
            "poll_interval_ms is {}: expected 50 to 60000",
            self.poll_interval_ms
        );
        ensure!(!self.plan.trim().is_empty(), "plan is empty");
        ensure!(
            self.gmail_project.per_minute != Some(0),
            "gmail_project.per_minute is 0: expected at least 1 send, or no value to keep the \
             engine's default"
        );
        ensure!(
            self.gmail_project.per_day != Some(0),
            "gmail_project.per_day is 0: expected at least 1 send, or no value to keep the \
             engine's default"
        );
        if let Some(cache_mib) = self.embedded_cache_mib {
            ensure!(
                (1..=MAX_EMBEDDED_CACHE_MIB).contains(&cache_mib),
                "embedded_cache_mib is {cache_mib}: expected 1 to {MAX_EMBEDDED_CACHE_MIB}, or no \
                 value to keep the engine's default"
            );
        }
        if let Some(background) = &self.background {
            ensure!(
                (1..=BackgroundSpec::MAX_TENANTS).contains(&background.tenants),
                "background.tenants is {}: expected 1 to {}",
                background.tenants,
                BackgroundSpec::MAX_TENANTS
            );
            ensure!(
                background.pending <= BackgroundSpec::MAX_PENDING,
                "background.pending is {}: expected at most {}",
                background.pending,
                BackgroundSpec::MAX_PENDING
            );
            // Every background tenant gets the same number of contacts, so that the backlog
            // is exactly the count asked for.
            ensure!(
                background.pending % u64::from(background.tenants) == 0,
                "background.pending is {}: expected a multiple of background.tenants ({}), \
                 which share it equally",
                background.pending,
                background.tenants
            );
            ensure!(
                background.rows_per_upload >= 1,
                "background.rows_per_upload is 0: expected at least 1 row an upload"
            );
        }
        if let Some(start) = &self.start {
            ensure!(
                start.after_seconds <= MAX_TIMEOUT_SECONDS,
                "start.after_seconds is {}: expected at most {MAX_TIMEOUT_SECONDS}",
                start.after_seconds
            );
        }
        if self.time == TimeMode::Virtual {
            self.validate_virtual()?;
        }
        self.sequence.validate()
    }

    /// Rejects the settings that a virtual clock cannot honour.
    fn validate_virtual(&self) -> anyhow::Result<()> {
        ensure!(
            self.background.is_none(),
            "background is set with time: virtual: the virtual clock would jump to the \
             backlog's due instant 30 days ahead and send it; drop one of the two"
        );
        ensure!(
            self.fakes.latency_ms == 0,
            "fakes.latency_ms is {} with time: virtual: the virtual clock does not move while a \
             request waits, so a latency would cost wall time without showing as lateness; set \
             it to 0",
            self.fakes.latency_ms
        );
        let span = self.virtual_span_seconds()?;
        ensure!(
            span <= MAX_VIRTUAL_SPAN_SECONDS,
            "the scenario spans {span} s of virtual time (start.after_seconds, \
             start.spread_seconds and the step delays together): expected at most \
             {MAX_VIRTUAL_SPAN_SECONDS}"
        );
        Ok(())
    }

    /// Returns the seconds from the run's start to the last due instant it plans: the start's
    /// offset and spread plus the sum of the step delays. Send windows and rate limits can move
    /// follow-ups later than that.
    pub fn virtual_span_seconds(&self) -> anyhow::Result<u64> {
        let mut span =
            self.start.map_or(0, |start| start.after_seconds.saturating_add(start.spread_seconds));
        for (index, step) in self.sequence.steps.iter().enumerate() {
            let delay = step
                .delay
                .seconds()
                .map_err(|problem| anyhow::anyhow!("sequence.steps[{index}].delay: {problem}"))?;
            span = span.saturating_add(delay);
        }
        Ok(span)
    }
}

impl SequenceSpec {
    fn validate(&self) -> anyhow::Result<()> {
        if self.steps.is_empty() {
            bail!("sequence.steps is empty: add at least one step");
        }
        for (index, step) in self.steps.iter().enumerate() {
            if step.channel == Channel::Email && step.subject.as_deref().is_none_or(str::is_empty) {
                bail!("sequence.steps[{index}] is an email step without a subject");
            }
            if let Err(problem) = step.delay.seconds() {
                bail!("sequence.steps[{index}].delay: {problem}");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
