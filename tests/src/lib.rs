//! Shared helpers of the end-to-end tests. Each test starts an engine in-process on loopback,
//! with the embedded store in a temporary directory and the built-in fakes, and talks to its
//! API over HTTP as a tenant or as the operator would. Most engines run on a virtual clock that
//! the test advances; a real-time engine dispatches on its own, as `followup serve` does.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use followup_adapters::fakes::{ErrorPlan, FakeConfig};
use followup_core::clock::{Clock, SystemClock, VirtualClock};
use followup_core::crypto::generate_master_key;
use followup_core::ids::{ScheduleId, SequenceId, TenantId};
use followup_core::sensitive::Sensitive;
use followup_dispatcher::config::Config;
use followup_dispatcher::server::RunningEngine;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};

/// Operator token of every test engine.
pub const OPERATOR_TOKEN: &str = "test-operator-token";

/// The instant the virtual clock of a [`TestEngine`] starts at: a Monday morning in New York,
/// so that windowed steps are due at once.
pub fn virtual_start() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 7, 15, 0, 0).single().expect("valid instant")
}

/// An engine under test, with what it needs to stay alive.
#[derive(Debug)]
pub struct TestEngine {
    pub running: RunningEngine,
    /// The engine's clock, unless it runs in real time.
    pub clock: Option<Arc<VirtualClock>>,
    pub http: reqwest::Client,
    pub data_dir: tempfile::TempDir,
    /// Stops the dispatch loop of a real-time engine when dropped.
    _stop_dispatch: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestEngine {
    /// Starts an engine on 127.0.0.1 with a free port. Call inside an actix system
    /// (`#[actix_rt::test]`).
    pub async fn start(configure: impl FnOnce(&mut Config)) -> anyhow::Result<Self> {
        Self::start_with_metrics(configure, None).await
    }

    /// Starts an engine whose `/metrics` renders through `metrics`.
    pub async fn start_with_metrics(
        configure: impl FnOnce(&mut Config),
        metrics: Option<PrometheusHandle>,
    ) -> anyhow::Result<Self> {
        Self::start_full(configure, metrics, None, ErrorPlan::default()).await
    }

    /// Starts an engine whose built-in fakes inject the errors of `errors`.
    pub async fn start_with_errors(
        configure: impl FnOnce(&mut Config),
        errors: ErrorPlan,
    ) -> anyhow::Result<Self> {
        Self::start_full(configure, None, None, errors).await
    }

    /// Starts an engine whose built-in fakes use `fakes` (latency, errors, clock). The fakes'
    /// clock may differ from the engine's virtual clock only for tests that do not check
    /// rate limits.
    pub async fn start_with_fakes(
        configure: impl FnOnce(&mut Config),
        fakes: FakeConfig,
    ) -> anyhow::Result<Self> {
        Self::start_full(configure, None, Some(fakes), ErrorPlan::default()).await
    }

    /// Starts an engine on the system clock whose dispatch loop runs by itself until the
    /// engine is dropped, with built-in fakes on the system clock too.
    pub async fn start_real_time(configure: impl FnOnce(&mut Config)) -> anyhow::Result<Self> {
        Self::start_real_time_with_latency(configure, std::time::Duration::ZERO).await
    }

    /// Starts a real-time engine whose built-in fakes wait `latency` before each response.
    pub async fn start_real_time_with_latency(
        configure: impl FnOnce(&mut Config),
        latency: std::time::Duration,
    ) -> anyhow::Result<Self> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let (data_dir, config) = test_config(configure)?;
        let store = Arc::new(followup_adapters::embedded::open(data_dir.path())?);
        let fakes = FakeConfig::new(clock.clone()).with_latency(latency);
        let running = RunningEngine::start_with_fakes(config, store, clock, None, fakes).await?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let engine = running.engine.clone();
        actix_rt::spawn(engine.run_forever(async move {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::new();
        Ok(Self { running, clock: None, http, data_dir, _stop_dispatch: Some(stop) })
    }

    async fn start_full(
        configure: impl FnOnce(&mut Config),
        metrics: Option<PrometheusHandle>,
        fakes: Option<FakeConfig>,
        errors: ErrorPlan,
    ) -> anyhow::Result<Self> {
        let (data_dir, config) = test_config(configure)?;
        let clock = Arc::new(VirtualClock::new(virtual_start()));
        let store = Arc::new(followup_adapters::embedded::open(data_dir.path())?);
        let fakes = fakes.unwrap_or_else(|| FakeConfig::new(clock.clone()).with_errors(errors));
        let running =
            RunningEngine::start_with_fakes(config, store, clock.clone(), metrics, fakes).await?;
        let http = reqwest::Client::new();
        Ok(Self { running, clock: Some(clock), http, data_dir, _stop_dispatch: None })
    }

    /// Returns the id of the schedule enrolling `contact_key` (an external id or a normalised
    /// address) in `sequence`, derived with the tenant's key as ingest derives it.
    pub async fn schedule_id(
        &self,
        tenant: TenantId,
        sequence: SequenceId,
        contact_key: &str,
    ) -> anyhow::Result<ScheduleId> {
        let key = self.running.engine.sealed_store().tenant_key(tenant).await?;
        Ok(key.record_ids().schedule(sequence, contact_key))
    }

    /// Returns the virtual clock. Panics for a real-time engine, which has none.
    pub fn virtual_clock(&self) -> &Arc<VirtualClock> {
        self.clock.as_ref().expect("a virtual clock: this engine runs in real time")
    }

    /// Runs the virtual clock until nothing is due, for at most `days` of virtual time.
    pub async fn settle(&self, days: i64) -> anyhow::Result<()> {
        let clock = self.virtual_clock();
        let deadline = clock.now() + chrono::Duration::days(days);
        self.running.engine.run_until_settled(clock, deadline, |_| {}).await
    }

    /// Sends a GET with the tenant's key and returns the JSON response.
    pub async fn get_json(&self, api_key: &str, path: &str) -> anyhow::Result<Value> {
        let response = self.http.get(self.url(path)).bearer_auth(api_key).send().await?;
        Ok(response.json().await?)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.url())
    }

    /// Creates a tenant and returns its API key.
    pub async fn create_tenant(&self, name: &str, plan: &str) -> anyhow::Result<String> {
        let response = self
            .http
            .post(self.url("/admin/v1/tenants"))
            .bearer_auth(OPERATOR_TOKEN)
            .json(&json!({"name": name, "default_region": "US",
                          "default_timezone": "America/New_York", "plan": plan}))
            .send()
            .await?;
        anyhow::ensure!(response.status() == 201, "tenant creation answered {}", response.status());
        let body: Value = response.json().await?;
        Ok(body["api_key"].as_str().unwrap_or_default().to_owned())
    }

    /// Connects the tenant's Gmail mailbox and Twilio number to the fakes, with limits high
    /// enough for tests to finish quickly.
    pub async fn connect_fakes(&self, api_key: &str) -> anyhow::Result<()> {
        let limits = json!({"per_minute": 6000, "per_day": 1000000});
        let gmail = json!({"sender": "sales@example.com", "access_token": "test-gmail-token",
                           "limits": limits});
        let twilio = json!({"sender": "+15005550006",
                            "account_sid": "AC00000000000000000000000000000001",
                            "auth_token": "test-twilio-token", "limits": limits});
        for (provider, body) in [("gmail", gmail), ("twilio", twilio)] {
            let response = self
                .http
                .put(self.url(&format!("/v1/connections/{provider}")))
                .bearer_auth(api_key)
                .json(&body)
                .send()
                .await?;
            anyhow::ensure!(response.status() == 200, "connect {provider}: {}", response.status());
        }
        Ok(())
    }

    /// Connects the tenant's account at `provider` with the connection request `body` and
    /// returns the connection as the API shows it.
    pub async fn connect(
        &self,
        api_key: &str,
        provider: &str,
        body: &Value,
    ) -> anyhow::Result<Value> {
        let response = self
            .http
            .put(self.url(&format!("/v1/connections/{provider}")))
            .bearer_auth(api_key)
            .json(body)
            .send()
            .await?;
        let status = response.status();
        let view: Value = response.json().await?;
        anyhow::ensure!(status == 200, "connect {provider} answered {status}: {view}");
        Ok(view)
    }

    /// Creates a sequence from `body` and returns its id.
    pub async fn create_sequence(&self, api_key: &str, body: &Value) -> anyhow::Result<String> {
        let response = self
            .http
            .post(self.url("/v1/sequences"))
            .bearer_auth(api_key)
            .json(body)
            .send()
            .await?;
        let status = response.status();
        let created: Value = response.json().await?;
        anyhow::ensure!(status == 201, "sequence creation answered {status}: {created}");
        Ok(created["id"].as_str().unwrap_or_default().to_owned())
    }

    /// Uploads `body` to the bulk endpoint and returns the status and the JSON response.
    pub async fn upload(
        &self,
        api_key: &str,
        sequence: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .post(self.url("/v1/schedules/bulk"))
            .query(&[("sequence", sequence)])
            .bearer_auth(api_key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await?))
    }
}

/// Creates a temporary data directory and the configuration of a test engine in it.
pub fn test_config(
    configure: impl FnOnce(&mut Config),
) -> anyhow::Result<(tempfile::TempDir, Config)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let data_dir = tempfile::tempdir()?;
    let mut config = Config {
        listen: "127.0.0.1:0".parse()?,
        data_dir: data_dir.path().to_path_buf(),
        admin_token: Some(Sensitive::new(OPERATOR_TOKEN.to_owned())),
        master_key: Some(generate_master_key()?),
        ..Config::default()
    };
    // Tests read the snapshot right after they change something, so it is counted per
    // request instead of every two seconds in the background.
    config.admin.snapshot_refresh_millis = 0;
    configure(&mut config);
    Ok((data_dir, config))
}

/// Builds a CSV of `count` contacts with only an email address, `{prefix}{n}@example.com`.
pub fn email_csv(prefix: &str, count: usize) -> String {
    std::iter::once("email\n".to_owned())
        .chain((0..count).map(|n| format!("{prefix}{n}@example.com\n")))
        .collect()
}

/// Returns a one-step email sequence that sends at once, any day, any hour.
pub fn email_now_sequence() -> Value {
    json!({
        "name": "welcome",
        "steps": [{"channel": "email", "delay": 0, "subject": "Hello {{first_name|there}}",
                   "body": "Hi {{first_name|there}}, welcome."}]
    })
}

/// Returns the folder of the public sample contact files.
pub fn shared_data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")
}
