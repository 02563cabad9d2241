//! A dispatch run of the whole engine against the in-process provider (`providers.mode =
//! null`): tenants, their Gmail connections and one-step email sequences are set up over the
//! HTTP API, contacts are uploaded while no dispatch runs, so that every follow-up is due at
//! once, and then the engine's own dispatch loop ([`Engine::run_forever`]) runs until every
//! follow-up is settled as sent. The tenant actors, provider actors (limiters, batching),
//! billing and the embedded store in a temporary directory all do their real work; only the
//! provider's answer comes from the process instead of over HTTP.
//!
//! The `dispatch_throughput` example times it, and `tests/null_dispatch.rs` checks on a small
//! run that every follow-up is settled exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use followup_core::clock::SystemClock;
use followup_core::crypto::generate_master_key;
use followup_core::domain::{Channel, FollowUpState};
use followup_core::ids::TenantId;
use followup_core::sensitive::Sensitive;
use followup_dispatcher::config::{Config, ProvidersMode};
use followup_dispatcher::engine::Engine;
use followup_dispatcher::server::RunningEngine;
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "dispatch-bench-admin-token";

/// Rows per upload request, so that no request body is large.
const ROWS_PER_UPLOAD: usize = 10_000;

/// The shape of a run.
#[derive(Clone, Copy, Debug)]
pub struct DispatchRun {
    pub tenants: usize,
    /// Follow-ups of each tenant: one contact with one email step each.
    pub follow_ups_per_tenant: usize,
    /// Follow-ups a tenant actor takes per channel in one round (`dispatch.batch_size`).
    pub dispatch_batch_size: usize,
    /// Whether attempts keep the subject and text they sent (`retention.sent_message_days`
    /// 30, the default, or 0).
    pub keep_sent_messages: bool,
}

impl DispatchRun {
    pub fn follow_ups(&self) -> u64 {
        (self.tenants * self.follow_ups_per_tenant) as u64
    }
}

/// An engine with every follow-up of a run stored and due, and no dispatch loop yet.
#[derive(Debug)]
pub struct PreparedRun {
    pub run: DispatchRun,
    pub running: RunningEngine,
    pub tenants: Vec<TenantId>,
    /// Time the set-up took, uploads included.
    pub setup: Duration,
    _data_dir: tempfile::TempDir,
}

/// Figures of a run, measured from the start of the dispatch loop.
#[derive(Clone, Copy, Debug)]
pub struct DispatchFigures {
    pub follow_ups: u64,
    /// Until the provider had accepted every send.
    pub accepted_after: Duration,
    /// Until the store held every follow-up as sent.
    pub settled_after: Duration,
    /// CPU time of the whole process (all threads, user and system) over the same span, or
    /// `None` where `/proc/self/stat` cannot be read. On a machine shared with other work it
    /// measures the engine's cost better than wall time does.
    pub cpu: Option<Duration>,
}

impl DispatchFigures {
    /// Follow-ups settled as sent per second.
    pub fn per_second(&self) -> f64 {
        self.follow_ups as f64 / self.settled_after.as_secs_f64()
    }

    /// CPU time per follow-up, in microseconds.
    pub fn cpu_micros_per_follow_up(&self) -> Option<f64> {
        self.cpu.map(|cpu| cpu.as_secs_f64() * 1e6 / self.follow_ups as f64)
    }
}

/// Returns the CPU time this process has used so far, user and system, all threads.
fn process_cpu_time() -> Option<Duration> {
    // Linux reports it in USER_HZ ticks, which the kernel's ABI fixes at 100 a second.
    const TICKS_PER_SECOND: u64 = 100;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name, in parentheses, may contain spaces, so fields are counted after it:
    // utime and stime are fields 14 and 15 of the line, the 12th and 13th after the name.
    let after_name = stat.rsplit_once(')')?.1;
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((user + system) * 1_000 / TICKS_PER_SECOND))
}

/// Starts an engine with the null provider on 127.0.0.1, sets up the tenants and stores their
/// follow-ups. Must run inside an actix system.
pub async fn prepare(run: DispatchRun) -> anyhow::Result<PreparedRun> {
    let started = Instant::now();
    let data_dir = tempfile::tempdir()?;
    let mut config = Config {
        listen: "127.0.0.1:0".parse()?,
        data_dir: data_dir.path().to_path_buf(),
        admin_token: Some(Sensitive::new(ADMIN_TOKEN.to_owned())),
        master_key: Some(generate_master_key()?),
        ..Config::default()
    };
    config.providers.mode = ProvidersMode::Null;
    // The engine's shared Google project quota would otherwise pace the whole run.
    config.providers.gmail_project_per_minute = u32::MAX;
    config.providers.gmail_project_per_day = u32::MAX;
    config.dispatch.batch_size = run.dispatch_batch_size;
    if !run.keep_sent_messages {
        config.retention.sent_message_days = 0;
    }
    let store = Arc::new(followup_adapters::embedded::open(data_dir.path())?);
    let running = RunningEngine::start(config, store, Arc::new(SystemClock), None).await?;

    let api = Api {
        http: followup_adapters::http::build_http_client(&Default::default())?,
        base: running.url(),
    };
    let mut tenants = Vec::with_capacity(run.tenants);
    for index in 0..run.tenants {
        tenants.push(api.set_up_tenant(index, run.follow_ups_per_tenant).await?);
    }
    let stored = count_state(running.engine.as_ref(), None).await?;
    anyhow::ensure!(
        stored == run.follow_ups(),
        "{stored} follow-ups stored of the {} uploaded",
        run.follow_ups()
    );
    Ok(PreparedRun { run, running, tenants, setup: started.elapsed(), _data_dir: data_dir })
}

impl PreparedRun {
    /// Runs the engine's dispatch loop until every follow-up is settled as sent, then stops
    /// it. Fails after `timeout`.
    pub async fn dispatch_all(&self, timeout: Duration) -> anyhow::Result<DispatchFigures> {
        let engine = self.running.engine.clone();
        let total = self.run.follow_ups();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let started = Instant::now();
        let cpu_before = process_cpu_time();
        let dispatch = actix_rt::spawn(engine.clone().run_forever(async move {
            let _ = stopped.await;
        }));

        // The lateness histogram counts each accepted send before its outcome is written, so
        // it is cheap to poll. The store, whose count reads every follow-up, is read after it.
        while engine.lateness().count() < total {
            anyhow::ensure!(
                started.elapsed() < timeout,
                "{} of {total} sends accepted after {timeout:?}",
                engine.lateness().count()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let accepted_after = started.elapsed();
        // Each count decodes every follow-up record, about 8,000 instructions apiece, and its
        // CPU is counted with the engine's: polled every 5 ms, the counts were 9% of all
        // instructions of a callgrind run on 4,000 follow-ups. Every 50 ms bounds that, at the
        // cost of up to 50 ms on "settled".
        loop {
            let sent = count_state(&engine, Some(FollowUpState::Sent)).await?;
            if sent == total {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < timeout,
                "{sent} of {total} follow-ups stored as sent after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let settled_after = started.elapsed();
        let cpu = process_cpu_time().zip(cpu_before).map(|(after, before)| after - before);

        let _ = stop.send(());
        dispatch.await.context("the dispatch loop panicked")?;
        Ok(DispatchFigures { follow_ups: total, accepted_after, settled_after, cpu })
    }
}

/// Counts the follow-ups of every tenant, all or those in `state`.
async fn count_state(engine: &Engine, state: Option<FollowUpState>) -> anyhow::Result<u64> {
    let counts = engine.store().count_follow_ups(None).await?;
    Ok(counts
        .iter()
        .filter(|((channel, in_state), _)| {
            *channel == Channel::Email && state.is_none_or(|state| state == *in_state)
        })
        .map(|(_, count)| *count)
        .sum())
}

/// The API calls of the set-up, as a tenant and the operator make them.
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    /// Creates tenant `index` with a Gmail connection whose limits do not hold the run back,
    /// a one-step email sequence and `contacts` contacts; returns the tenant's id.
    async fn set_up_tenant(&self, index: usize, contacts: usize) -> anyhow::Result<TenantId> {
        let tenant = self
            .call(
                self.http.post(format!("{}/admin/v1/tenants", self.base)).bearer_auth(ADMIN_TOKEN),
                json!({"name": format!("bench tenant {index}"), "plan": "pro",
                       "default_region": "US", "default_timezone": "America/New_York"}),
            )
            .await?;
        let key = tenant["api_key"]
            .as_str()
            .context("the tenant creation response is missing api_key")?
            .to_owned();
        let id: TenantId = serde_json::from_value(tenant["id"].clone())
            .context("the tenant creation response is missing id")?;

        // The null provider never checks the token. A lifetime of a day keeps it from expiring
        // during the run, because the engine would then pause the connection for a refresh.
        let connection = json!({
            "sender": format!("sales{index}@bench.example"),
            "access_token": format!("bench-token-{index}"),
            "expires_in": 86_400,
            "limits": {"per_minute": 60_000_000, "per_day": 1_000_000_000},
        });
        self.call(
            self.http.put(format!("{}/v1/connections/gmail", self.base)).bearer_auth(&key),
            connection,
        )
        .await?;
        let sequence = self
            .call(
                self.http.post(format!("{}/v1/sequences", self.base)).bearer_auth(&key),
                json!({"name": "bench", "steps": [{"channel": "email", "delay": 0,
                       "subject": "Hello {{first_name|there}}",
                       "body": "Hi {{first_name|there}}, thanks for your interest in \
                                {{company|our product}}. Reply to book a call."}]}),
            )
            .await?;
        let sequence = sequence["id"]
            .as_str()
            .context("the sequence creation response is missing id")?
            .to_owned();

        for first in (0..contacts).step_by(ROWS_PER_UPLOAD) {
            let rows = first..(first + ROWS_PER_UPLOAD).min(contacts);
            let mut csv = String::from("email,first_name,company\n");
            for n in rows.clone() {
                csv.push_str(&format!("t{index}c{n}@example.com,Ada{n},Engines Ltd\n"));
            }
            let report = self
                .call(
                    self.http
                        .post(format!("{}/v1/schedules/bulk", self.base))
                        .query(&[("sequence", sequence.as_str())])
                        .bearer_auth(&key)
                        .header("content-type", "text/csv")
                        .body(csv),
                    Value::Null,
                )
                .await?;
            anyhow::ensure!(
                report["accepted"] == rows.len(),
                "upload of tenant {index} accepted {} of {} rows: {report}",
                report["accepted"],
                rows.len()
            );
        }
        Ok(id)
    }

    /// Sends `request` (with `body` as JSON unless it is null) and returns the JSON response,
    /// or an error with the status and body of a non-2xx response.
    async fn call(&self, request: reqwest::RequestBuilder, body: Value) -> anyhow::Result<Value> {
        let request = if body.is_null() { request } else { request.json(&body) };
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        anyhow::ensure!(status.is_success(), "HTTP {status}: {text}");
        serde_json::from_str(&text).with_context(|| format!("unreadable response: {text}"))
    }
}
