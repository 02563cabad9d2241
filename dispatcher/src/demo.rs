//! `followup demo`: the main job end to end on a real contact file, under a virtual clock.
//!
//! It starts the engine with the embedded store and the built-in fakes, creates a demo tenant
//! with a Gmail mailbox and a Twilio number through the HTTP API, defines a three-step
//! sequence, uploads the file, then runs the virtual clock until every follow-up is settled,
//! and prints what happened.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use followup_adapters::embedded;
use followup_adapters::fakes::{FakeConfig, FaultProfile};
use followup_core::api::{CreateTenantRequest, CreateTenantResponse};
use followup_core::clock::{Clock, VirtualClock};
use followup_core::domain::FollowUpState;
use followup_core::ids::TenantId;
use followup_core::sensitive::Sensitive;
use followup_core::store::usage::BillingPeriod;
use serde::Serialize;
use serde_json::json;

use crate::actors::tenant::is_quota_reason;
use crate::config::{Config, ProvidersMode};
use crate::ingest::IngestReport;
use crate::server::RunningEngine;
use crate::storage::StoreSelection;
use followup_core::crypto::generate_master_key;

/// Credentials of the demo's connections; only the built-in fakes ever see them.
const DEMO_GMAIL_TOKEN: &str = "demo-gmail-access-token";
const DEMO_GMAIL_REFRESH_TOKEN: &str = "demo-gmail-refresh-token";
/// Lifetime of the demo's first Gmail access token, in seconds: within the refresh margin, so
/// the first round refreshes it, and later rounds refresh the tokens the fake issues as the
/// virtual clock passes their expiry.
const DEMO_GMAIL_TOKEN_LIFETIME: u64 = 60;
const DEMO_MAILBOX: &str = "demo@followup.test";
const DEMO_TWILIO_SID: &str = "AC0123456789abcdef0123456789abcdef";
const DEMO_TWILIO_TOKEN: &str = "demo-twilio-auth-token";
const DEMO_TWILIO_NUMBER: &str = "+15005550006";

/// Timeout of the demo's requests to the fakes.
const DEMO_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// How long the demo waits for a MongoDB store to answer.
const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// Maximum stretch of virtual time the demo runs before giving up.
const VIRTUAL_DEADLINE_DAYS: i64 = 400;

/// Options of `followup demo`.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub csv: PathBuf,
    pub json: bool,
    pub data_dir: Option<PathBuf>,
    /// A MongoDB store instead of the embedded one in `data_dir`.
    pub store: Option<StoreSelection>,
    pub plan: String,
    /// A configuration file whose `[plans]` and `[billing]` replace the defaults; its other
    /// settings are not used.
    pub config: Option<PathBuf>,
    /// Share of contacts that reply (a stop signal) after their first email, 0 to 1.
    pub replies: f64,
    /// Seed of the reply draws.
    pub reply_seed: u64,
    /// Faults the built-in fakes apply to valid sends.
    pub faults: FaultProfile,
    /// Master key (`FOLLOWUP_MASTER_KEY`); a throwaway key when neither it nor a key file is
    /// given.
    pub master_key: Option<Sensitive<String>>,
    pub master_key_file: Option<PathBuf>,
}

/// The summary `--json` prints.
#[derive(Debug, Serialize)]
pub struct DemoSummary {
    pub rows: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub duplicates: u64,
    pub top_rejection_reasons: Vec<ReasonCount>,
    pub followups: u64,
    pub sent: u64,
    /// Rejected for good by a provider, or unsendable (no sequence, template field missing).
    pub failed: u64,
    /// Retried until the retry budget ran out; each carries its last error.
    pub dead: u64,
    /// Send attempts beyond each follow-up's first.
    pub retries: u64,
    pub skipped: u64,
    /// Of the skipped, those skipped because the plan's quota was used up.
    pub skipped_quota: u64,
    /// Over the plan's quota under a plan that holds, waiting for the next period.
    pub held: u64,
    /// Follow-ups cancelled, by the contacts' replies among others.
    pub cancelled: u64,
    /// Contacts that replied, each a stop signal (`--replies`).
    pub replies: u64,
    /// Sends the fakes accepted for a recipient after its contact replied; must be 0.
    pub sent_after_stop: u64,
    pub in_doubt: u64,
    pub by_channel: BTreeMap<String, BTreeMap<String, u64>>,
    pub top_settle_reasons: Vec<ReasonCount>,
    pub provider_received: u64,
    pub provider_received_by_provider: BTreeMap<String, u64>,
    pub rate_limit_violations: u64,
    /// Requests to the fakes' OAuth token endpoints: the access-token refreshes.
    pub token_refreshes: u64,
    pub lateness_ms: LatenessSummary,
    pub virtual_start: String,
    pub virtual_end: String,
    pub wall_seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct ReasonCount {
    /// The reason with its first quoted value (the rejected value) left out.
    pub reason: String,
    pub count: u64,
    /// The first occurrence in full, with its line for rejected rows.
    pub example: String,
}

#[derive(Debug, Serialize)]
pub struct LatenessSummary {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

/// Runs the demo and prints its summary. Must run inside an actix system.
pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let wall_start = Instant::now();
    if !options.csv.is_file() {
        bail!("cannot read {}: no such file", options.csv.display());
    }
    let temp_dir;
    let data_dir = match &options.data_dir {
        Some(dir) => {
            // The summary counts everything in the store against what this run's fakes saw,
            // so a store left by an earlier run would unbalance it.
            let used = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
            if used {
                bail!(
                    "--data-dir {} is not empty: give the demo an empty or new directory",
                    dir.display()
                );
            }
            dir.clone()
        }
        None => {
            temp_dir = tempfile::tempdir().context("cannot create a temporary data directory")?;
            temp_dir.path().to_path_buf()
        }
    };
    // The run starts at the beginning of the current billing period, so that every send falls
    // in one period and the summary compares with one month's quota.
    let start = BillingPeriod::containing(Utc::now()).start();
    let clock = Arc::new(VirtualClock::new(start));
    let admin_token = random_token()?;
    let mut config = Config {
        listen: "127.0.0.1:0".parse()?,
        data_dir: data_dir.clone(),
        admin_token: Some(Sensitive::new(admin_token.clone())),
        ..Config::default()
    };
    if let Some(path) = &options.config {
        let file = Config::from_file(path)?;
        config.plans = file.plans;
        config.billing = file.billing;
    }
    if !config.plans.contains_key(&options.plan) {
        let known: Vec<&String> = config.plans.keys().collect();
        bail!("unknown plan {:?} for --plan: known plans {known:?}", options.plan);
    }
    if config.providers.mode != ProvidersMode::Fake {
        bail!("the demo sends only to the built-in fakes");
    }
    config.master_key_file = options.master_key_file.clone();
    config.master_key = options.master_key.clone();
    if config.master_key.is_none() && config.master_key_file.is_none() {
        // The key is dropped at exit, so a store kept with --data-dir cannot be read again.
        eprintln!(
            "[demo] no master key given: sealing the store with a throwaway key, which is not \
             kept (set FOLLOWUP_MASTER_KEY or --master-key-file to keep the store readable)"
        );
        config.master_key = Some(generate_master_key()?);
    }
    // A stalled request costs its timeout in wall time even under the virtual clock, so the
    // demo gives up after one second, and the fakes stall a little longer than that.
    config.providers.request_timeout_seconds = DEMO_REQUEST_TIMEOUT.as_secs();
    let faults = options.faults.clone().with_stall_for(DEMO_REQUEST_TIMEOUT * 2);
    let selection = options.store.clone().unwrap_or_default();
    let store = selection.open(&data_dir, STORE_TIMEOUT, embedded::DEFAULT_CACHE_MIB).await?;
    // As with --data-dir, a database used before would unbalance the summary.
    if !store.tenants().await?.is_empty() {
        bail!("--store {selection:?} already holds tenants: give the demo an empty database");
    }
    let fakes = FakeConfig::new(clock.clone()).with_faults(faults);
    if options.faults.name() != FaultProfile::none().name() {
        eprintln!("[demo] the fakes apply the fault profile {}", options.faults);
    }
    let running =
        RunningEngine::start_with_fakes(config, store, clock.clone(), None, fakes).await?;
    let http = followup_adapters::http::build_http_client(&Default::default())?;
    let client = DemoClient { http, base: running.url() };
    let (tenant, api_key) = client.create_tenant(&admin_token, &options.plan).await?;
    client.connect(&api_key).await?;
    let sequence = client.create_sequence(&api_key).await?;
    eprintln!("[demo] uploading {}", options.csv.display());
    let report = client.upload(&api_key, &sequence, &options.csv).await?;
    eprintln!(
        "[demo] {} rows: {} accepted, {} rejected",
        report.rows, report.accepted, report.rejected
    );

    let engine = running.engine.clone();
    let total = total_follow_ups(&engine).await?;
    let progress = Progress::new(total);
    let deadline = start + chrono::Duration::days(VIRTUAL_DEADLINE_DAYS);
    // The progress callback cannot await the store, so a task samples the settled count.
    let sampler = sample_settled(engine.clone(), progress.settled_handle());
    let mut last_line = Instant::now();
    let show = |now| {
        if last_line.elapsed() >= Duration::from_millis(500) {
            last_line = Instant::now();
            progress.show(progress.settled_estimate(), now);
        }
    };
    let mut replies = Replies::new(options.replies, options.reply_seed);
    let run = async {
        if options.replies > 0.0 {
            let replying =
                Replying { client: &client, api_key: &api_key, tenant, replies: &mut replies };
            run_with_replies(&running, &clock, deadline, replying, show).await
        } else {
            engine.run_until_settled(&clock, deadline, show).await
        }
    };
    let outcome = tokio::select! {
        result = run => result,
        () = sampler => Ok(()),
    };
    outcome?;
    let end = clock.now();
    progress.finish(total, end);

    let mut summary = summarize(&running, &report, start, end, wall_start).await?;
    summary.replies = replies.sent;
    print_summary(&summary, options.json)?;
    running.stop().await;
    check_invariants(&summary)
}

mod replies;

use replies::{Replies, Replying, run_with_replies};

/// The API calls the demo makes, as a tenant would.
struct DemoClient {
    http: reqwest::Client,
    base: String,
}

impl DemoClient {
    async fn create_tenant(
        &self,
        admin_token: &str,
        plan: &str,
    ) -> anyhow::Result<(TenantId, String)> {
        let request = CreateTenantRequest {
            name: "Demo tenant".into(),
            default_region: Some("US".into()),
            default_timezone: Some("America/New_York".into()),
            plan: Some(plan.to_owned()),
        };
        let response = self
            .http
            .post(format!("{}/admin/v1/tenants", self.base))
            .bearer_auth(admin_token)
            .json(&request)
            .send()
            .await?;
        let created: CreateTenantResponse = expect_ok(response, "create the demo tenant").await?;
        Ok((created.id, created.api_key))
    }

    async fn connect(&self, api_key: &str) -> anyhow::Result<()> {
        let connections = [
            (
                "gmail",
                json!({
                    "sender": DEMO_MAILBOX,
                    "access_token": DEMO_GMAIL_TOKEN,
                    "refresh_token": DEMO_GMAIL_REFRESH_TOKEN,
                    "expires_in": DEMO_GMAIL_TOKEN_LIFETIME,
                }),
            ),
            (
                "twilio",
                json!({
                    "sender": DEMO_TWILIO_NUMBER,
                    "account_sid": DEMO_TWILIO_SID,
                    "auth_token": DEMO_TWILIO_TOKEN,
                }),
            ),
        ];
        for (provider, body) in connections {
            let response = self
                .http
                .put(format!("{}/v1/connections/{provider}", self.base))
                .bearer_auth(api_key)
                .json(&body)
                .send()
                .await?;
            let _: serde_json::Value =
                expect_ok(response, &format!("connect the demo {provider} account")).await?;
        }
        Ok(())
    }

    async fn create_sequence(&self, api_key: &str) -> anyhow::Result<String> {
        let body = json!({
            "name": "Demo follow-up",
            "steps": [
                {"channel": "email", "delay": "0s",
                 "subject": "Following up, {{first_name|there}}",
                 "body": "Hello {{first_name|there}},\n\nthanks for your interest in \
                          {{company|our product}}. Reply to this email to book a call.\n"},
                {"channel": "sms", "delay": "2d",
                 "body": "Hi {{first_name|there}}, a quick reminder from the demo team."},
                {"channel": "call", "delay": "5d",
                 "body": "Hello {{first_name|there}}. This is a reminder from the demo team."},
            ],
            "window": {"weekdays": ["mon", "tue", "wed", "thu", "fri"],
                       "start": "09:00", "end": "17:00"},
        });
        let response = self
            .http
            .post(format!("{}/v1/sequences", self.base))
            .bearer_auth(api_key)
            .json(&body)
            .send()
            .await?;
        let created: serde_json::Value = expect_ok(response, "create the demo sequence").await?;
        created["id"].as_str().map(str::to_owned).context("sequence response has no id")
    }

    async fn upload(
        &self,
        api_key: &str,
        sequence: &str,
        path: &Path,
    ) -> anyhow::Result<IngestReport> {
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("cannot open {}", path.display()))?;
        let length = file.metadata().await?.len();
        let stream = tokio_util::io::ReaderStream::new(file);
        let response = self
            .http
            .post(format!("{}/v1/schedules/bulk", self.base))
            .query(&[("sequence", sequence)])
            .bearer_auth(api_key)
            .header(reqwest::header::CONTENT_TYPE, "text/csv")
            .header(reqwest::header::CONTENT_LENGTH, length)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await?;
        expect_ok(response, "upload the contact file").await
    }
}

async fn expect_ok<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
    action: &str,
) -> anyhow::Result<T> {
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        bail!("could not {action}: HTTP {status}: {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("could not {action}: unreadable answer"))
}

fn random_token() -> anyhow::Result<String> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 24];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("system random generator failed"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

async fn total_follow_ups(engine: &crate::engine::Engine) -> anyhow::Result<u64> {
    Ok(engine.store().count_follow_ups(None).await?.values().sum())
}

async fn sample_settled(
    engine: Arc<crate::engine::Engine>,
    settled: Arc<std::sync::atomic::AtomicU64>,
) {
    loop {
        if let Ok(counts) = engine.store().count_follow_ups(None).await {
            let done: u64 =
                counts.iter().filter(|((_, state), _)| state.is_settled()).map(|(_, n)| n).sum();
            settled.store(done, std::sync::atomic::Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A progress line on stderr: settled follow-ups, rate, ETA and the virtual instant.
struct Progress {
    total: u64,
    started: Instant,
    settled: Arc<std::sync::atomic::AtomicU64>,
}

impl Progress {
    fn new(total: u64) -> Self {
        Self { total, started: Instant::now(), settled: Arc::default() }
    }

    fn settled_handle(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.settled.clone()
    }

    fn settled_estimate(&self) -> u64 {
        self.settled.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn show(&self, settled: u64, now: DateTime<Utc>) {
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = settled as f64 / elapsed;
        let eta = if rate > 0.0 {
            format!("{:.0}s", self.total.saturating_sub(settled) as f64 / rate)
        } else {
            "unknown".to_owned()
        };
        let percent =
            if self.total == 0 { 100.0 } else { settled as f64 * 100.0 / self.total as f64 };
        eprintln!(
            "[demo] {settled}/{} follow-ups settled ({percent:.0}%), {rate:.0}/s, ETA {eta}, \
             virtual time {}",
            self.total,
            now.format("%Y-%m-%d %H:%M UTC")
        );
    }

    fn finish(&self, total: u64, now: DateTime<Utc>) {
        self.show(total, now);
    }
}

async fn summarize(
    running: &RunningEngine,
    report: &IngestReport,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    wall_start: Instant,
) -> anyhow::Result<DemoSummary> {
    let engine = &running.engine;
    let counts = engine.store().count_follow_ups(None).await?;
    let state_total = |states: &[FollowUpState]| -> u64 {
        counts.iter().filter(|((_, s), _)| states.contains(s)).map(|(_, n)| n).sum()
    };
    let mut by_channel: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for ((channel, state), count) in &counts {
        by_channel
            .entry(channel.as_str().to_owned())
            .or_default()
            .insert(state.as_str().to_owned(), *count);
    }
    let stats = running.fakes()?.stats();
    let lateness = engine.lateness();
    let scan = scan_follow_ups(engine).await?;
    Ok(DemoSummary {
        rows: report.rows,
        accepted: report.accepted,
        rejected: report.rejected,
        duplicates: report.duplicates,
        top_rejection_reasons: top_reasons(report.errors.iter().map(|e| {
            let field = e.field.clone().unwrap_or_else(|| "row".into());
            let group = format!("{field}: {}", without_first_quoted_value(&e.reason));
            (group, format!("line {}: {}", e.line, e.reason))
        })),
        followups: counts.values().sum(),
        sent: state_total(&[FollowUpState::Sent]),
        failed: state_total(&[FollowUpState::Failed]),
        dead: state_total(&[FollowUpState::Dead]),
        retries: scan.retries,
        skipped: state_total(&[FollowUpState::Skipped]),
        skipped_quota: scan.skipped_quota,
        held: state_total(&[FollowUpState::Held]),
        cancelled: state_total(&[FollowUpState::Cancelled]),
        replies: 0,
        sent_after_stop: stats.sent_after_stop,
        in_doubt: state_total(&[FollowUpState::InDoubt]),
        by_channel,
        top_settle_reasons: scan.top_settle_reasons,
        provider_received: stats.received_by_provider.values().sum(),
        provider_received_by_provider: stats
            .received_by_provider
            .iter()
            .map(|(provider, n)| (provider.to_string(), *n))
            .collect(),
        rate_limit_violations: stats.rate_limit_violations,
        token_refreshes: stats.token_requests_by_provider.values().sum(),
        lateness_ms: LatenessSummary {
            p50: lateness.quantile_ms(0.5),
            p99: lateness.quantile_ms(0.99),
            max: lateness.max_ms(),
        },
        virtual_start: start.to_rfc3339(),
        virtual_end: end.to_rfc3339(),
        wall_seconds: wall_start.elapsed().as_secs_f64(),
    })
}

/// The findings of a pass over every follow-up.
struct FollowUpScan {
    /// The most common reasons follow-ups did not end sent.
    top_settle_reasons: Vec<ReasonCount>,
    retries: u64,
    skipped_quota: u64,
}

async fn scan_follow_ups(engine: &crate::engine::Engine) -> anyhow::Result<FollowUpScan> {
    const PAGE: usize = 5_000;
    let mut reasons = Vec::new();
    let mut retries = 0;
    let mut skipped_quota = 0;
    for tenant in engine.store().tenants().await? {
        let mut after = None;
        loop {
            let page = engine.store().follow_ups_page(tenant.id, after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for follow_up in page {
                retries += u64::from(follow_up.attempts.saturating_sub(1));
                let over_quota = follow_up.reason.as_deref().is_some_and(is_quota_reason);
                if follow_up.state == FollowUpState::Skipped && over_quota {
                    skipped_quota += 1;
                }
                if follow_up.state != FollowUpState::Sent
                    && let Some(reason) = follow_up.reason
                {
                    let group =
                        format!("{}: {}", follow_up.state, without_first_quoted_value(&reason));
                    reasons.push((group, reason));
                }
            }
        }
    }
    let top_settle_reasons = top_reasons(reasons.into_iter());
    Ok(FollowUpScan { top_settle_reasons, retries, skipped_quota })
}

/// Replaces the first double-quoted part of a reason, which is the rejected value in every
/// validation message, with `"…"`, so that reasons that differ only by value count together.
fn without_first_quoted_value(reason: &str) -> String {
    let Some(open) = reason.find('"') else {
        return reason.to_owned();
    };
    let Some(length) = reason[open + 1..].find('"') else {
        return reason.to_owned();
    };
    format!("{}\"…\"{}", &reason[..open], &reason[open + length + 2..])
}

/// Counts reasons by group and keeps the five most common, each with its first example.
fn top_reasons(reasons: impl Iterator<Item = (String, String)>) -> Vec<ReasonCount> {
    let mut groups: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for (group, example) in reasons {
        groups.entry(group).or_insert((0, example)).0 += 1;
    }
    let mut sorted: Vec<ReasonCount> = groups
        .into_iter()
        .map(|(reason, (count, example))| ReasonCount { reason, count, example })
        .collect();
    sorted.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
    sorted.truncate(5);
    sorted
}

fn print_summary(summary: &DemoSummary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(summary)?);
        return Ok(());
    }
    println!(
        "followup demo: {} rows, {} accepted, {} rejected",
        summary.rows, summary.accepted, summary.rejected
    );
    for reason in &summary.top_rejection_reasons {
        println!("  rejected {:>6}  {}", reason.count, reason.reason);
        println!("                  e.g. {}", reason.example);
    }
    println!(
        "follow-ups: {} total: {} sent, {} failed, {} dead, {} skipped ({} for quota), {} held, \
         {} cancelled, {} in doubt; {} retries",
        summary.followups,
        summary.sent,
        summary.failed,
        summary.dead,
        summary.skipped,
        summary.skipped_quota,
        summary.held,
        summary.cancelled,
        summary.in_doubt,
        summary.retries
    );
    println!(
        "replies: {} contacts replied; sends after a reply: {}",
        summary.replies, summary.sent_after_stop
    );
    for (channel, states) in &summary.by_channel {
        let states: Vec<String> = states.iter().map(|(s, n)| format!("{s} {n}")).collect();
        println!("  {channel:<5} {}", states.join(", "));
    }
    for reason in &summary.top_settle_reasons {
        println!("  {:>6}  {}", reason.count, reason.reason);
    }
    println!(
        "lateness (planned instant to provider acceptance): p50 {} ms, p99 {} ms, max {} ms",
        summary.lateness_ms.p50, summary.lateness_ms.p99, summary.lateness_ms.max
    );
    let received: Vec<String> = summary
        .provider_received_by_provider
        .iter()
        .map(|(provider, n)| format!("{provider} {n}"))
        .collect();
    println!(
        "fakes received {} ({}), rate-limit violations {}, token refreshes {}",
        summary.provider_received,
        received.join(", "),
        summary.rate_limit_violations,
        summary.token_refreshes
    );
    println!(
        "virtual time {} to {}, {:.1} s of wall time",
        summary.virtual_start, summary.virtual_end, summary.wall_seconds
    );
    Ok(())
}

/// Fails the demo if the books do not balance: every row and follow-up accounted for, every
/// send received once, no rate limit broken.
fn check_invariants(summary: &DemoSummary) -> anyhow::Result<()> {
    let settled = summary.sent
        + summary.failed
        + summary.dead
        + summary.skipped
        + summary.cancelled
        + summary.in_doubt
        + summary.held;
    let mut broken = Vec::new();
    if summary.rows != summary.accepted + summary.rejected {
        broken.push("rows != accepted + rejected");
    }
    if summary.followups != settled {
        broken.push("some follow-ups are not settled");
    }
    // A send whose response was lost may or may not have arrived, so the fakes received every
    // sent follow-up and at most the in-doubt ones besides.
    let received = summary.provider_received;
    if received < summary.sent || received > summary.sent + summary.in_doubt {
        broken.push("provider_received is not between sent and sent + in_doubt");
    }
    if summary.rate_limit_violations != 0 {
        broken.push("the fakes saw rate-limit violations");
    }
    if summary.sent_after_stop != 0 {
        broken.push("the fakes received sends after the contact replied");
    }
    if broken.is_empty() { Ok(()) } else { bail!("demo invariants broken: {}", broken.join("; ")) }
}
