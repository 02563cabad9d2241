//! The two processes of a crash run: `followup fakes`, started once and never killed, and
//! `followup serve`, started again after every kill.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use chrono::{DateTime, Utc};
use followup_core::domain::Channel;
use followup_core::sensitive::Sensitive;
use serde::Deserialize;
use tokio::time::Instant;

use super::StoreTarget;

/// How long a started engine gets to answer `/readyz` with success.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// Kills the child when dropped, so that no path out of the harness (or out of a test that
/// starts processes) leaves a process behind.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Base URLs of the fakes, as `followup fakes` prints them on its first line.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct FakeUrls {
    pub gmail: String,
    pub graph: String,
    pub twilio: String,
    pub google_token: String,
    pub microsoft_token: String,
}

/// The counters of `GET /_fake/stats` the harness reads.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct FakeCounters {
    #[serde(default)]
    pub received_by_provider: BTreeMap<String, u64>,
    pub rate_limit_violations: u64,
    /// Requests that arrived and are not answered yet.
    #[serde(default)]
    pub requests_in_flight: u64,
}

impl FakeCounters {
    /// Sends the fakes accepted, every provider together.
    pub(crate) fn received(&self) -> u64 {
        self.received_by_provider.values().sum()
    }
}

/// One send the fakes accepted, as `GET /_fake/received` lists it.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct FakeReceipt {
    pub channel: Channel,
    pub from: String,
    pub to: String,
    /// When the fake answered it: it records a send after its latency, just before it
    /// responds.
    pub received_at: DateTime<Utc>,
}

/// The running `followup fakes` process.
#[derive(Debug)]
pub(crate) struct FakesProcess {
    _child: ChildGuard,
    pub urls: FakeUrls,
}

impl FakesProcess {
    /// Starts the fakes with the same limits for every account, a fixed latency per request
    /// and a named fault profile, and reads their URLs.
    pub(crate) fn start(
        followup: &Path,
        per_minute: u32,
        per_day: u32,
        latency: Duration,
        faults: &str,
        log_file: &Path,
    ) -> anyhow::Result<Self> {
        let log = File::create(log_file)
            .with_context(|| format!("failed to create {}", log_file.display()))?;
        let mut child = Command::new(followup)
            .arg("fakes")
            .args(["--per-minute", &per_minute.to_string(), "--per-day", &per_day.to_string()])
            .args(["--latency-ms", &latency.as_millis().to_string()])
            .args(["--faults", faults])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("failed to start {} fakes", followup.display()))?;
        let stdout = child.stdout.take().context("fakes have no stdout")?;
        let guard = ChildGuard(child);
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).context("failed to read the fakes' URLs")?;
        let urls: FakeUrls = serde_json::from_str(&line)
            .with_context(|| format!("the fakes printed no URL object but {line:?}"))?;
        for url in [&urls.gmail, &urls.graph, &urls.twilio, &urls.google_token] {
            crate::guard::parse_loopback(url).context("a fake is not on loopback")?;
        }
        Ok(Self { _child: guard, urls })
    }

    /// Reads the fakes' counters.
    pub(crate) async fn counters(&self, http: &reqwest::Client) -> anyhow::Result<FakeCounters> {
        self.inspect(http, "stats").await
    }

    /// Reads every send the fakes accepted, in order.
    pub(crate) async fn receipts(
        &self,
        http: &reqwest::Client,
    ) -> anyhow::Result<Vec<FakeReceipt>> {
        self.inspect(http, "received").await
    }

    pub(crate) async fn inspect<T: serde::de::DeserializeOwned>(
        &self,
        http: &reqwest::Client,
        what: &str,
    ) -> anyhow::Result<T> {
        // Every fake serves the counters of all of them.
        inspect_fakes(http, &self.urls.twilio, what).await
    }
}

/// Reads `GET /_fake/WHAT` (`stats` or `received`) of the fakes at `base`.
pub(crate) async fn inspect_fakes<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    base: &str,
    what: &str,
) -> anyhow::Result<T> {
    let url = format!("{}/_fake/{what}", base.trim_end_matches('/'));
    let response = http.get(&url).send().await.with_context(|| format!("GET {url}"))?;
    response.json().await.with_context(|| format!("GET {url}: body is not the expected JSON"))
}

/// Builds a client for the fakes' inspection routes, with a long timeout because their lists
/// of received messages can be long.
pub(crate) fn inspection_client() -> anyhow::Result<reqwest::Client> {
    // reqwest is built without a default TLS provider; installing one twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(300))
        .build()
        .context("failed to build the HTTP client")
}

/// Everything `followup serve` is started with, the same at every start.
#[derive(Debug)]
pub(crate) struct EngineSettings {
    pub followup: PathBuf,
    pub store: StoreTarget,
    /// Directory of the embedded store, or of the engine's other files with a MongoDB store.
    pub data_dir: PathBuf,
    pub config_file: PathBuf,
    /// File that collects the output of every start, for a failure to be looked into.
    pub log_file: PathBuf,
    pub port: u16,
    pub admin_token: Sensitive<String>,
    pub master_key: Sensitive<String>,
}

impl EngineSettings {
    pub(crate) fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The providers a started engine sends to.
#[derive(Clone, Copy, Debug)]
pub(crate) enum EngineProviders<'a> {
    /// `--providers live`, pointed at a `followup fakes` process.
    ExternalFakes(&'a FakeUrls),
    /// `--providers fake --virtual-clock`: the engine's built-in fakes with the fault profile
    /// `faults`, on the engine's virtual clock.
    VirtualClockFakes { faults: &'a str },
}

/// A running `followup serve`.
#[derive(Debug)]
pub(crate) struct EngineProcess {
    child: ChildGuard,
    /// Taken just before the process was spawned: every write of this run of the engine is
    /// later than this instant.
    pub started_at: DateTime<Utc>,
}

impl EngineProcess {
    /// Starts the engine and waits until it answers `/readyz` with success.
    pub(crate) async fn start(
        settings: &EngineSettings,
        providers: EngineProviders<'_>,
        http: &reqwest::Client,
    ) -> anyhow::Result<Self> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&settings.log_file)
            .with_context(|| format!("failed to open {}", settings.log_file.display()))?;
        let mut command = Command::new(&settings.followup);
        command.arg("serve");
        match providers {
            EngineProviders::ExternalFakes(urls) => {
                command
                    .args(["--providers", "live"])
                    .args(["--gmail-base-url", &urls.gmail, "--graph-base-url", &urls.graph])
                    .args(["--twilio-base-url", &urls.twilio])
                    .args(["--google-token-url", &urls.google_token])
                    .args(["--microsoft-token-url", &urls.microsoft_token]);
            }
            EngineProviders::VirtualClockFakes { faults } => {
                command.args(["--providers", "fake", "--virtual-clock", "--faults", faults]);
            }
        }
        command
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", settings.port))
            .arg("--config")
            .arg(&settings.config_file)
            .arg("--data-dir")
            .arg(&settings.data_dir)
            // Every engine of a run is the same node restarted, as a supervisor restarts a
            // single engine: it takes its tenants back at once instead of waiting out the
            // killed process's leases, which is what the checks after each restart assume.
            .args(["--node-id", "crashtest"])
            .env("FOLLOWUP_ADMIN_TOKEN", settings.admin_token.expose())
            .env("FOLLOWUP_MASTER_KEY", settings.master_key.expose())
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("failed to share the engine log")?)
            .stderr(log);
        if let StoreTarget::Mongo(uri) = &settings.store {
            // In the environment rather than as `--store`, so that a password in the URI does
            // not show in the process list.
            command.env("FOLLOWUP_STORE", uri.expose());
        }
        let started_at = Utc::now();
        let child = command
            .spawn()
            .with_context(|| format!("failed to start {} serve", settings.followup.display()))?;
        let mut engine = Self { child: ChildGuard(child), started_at };
        engine.wait_ready(settings, http).await?;
        Ok(engine)
    }

    async fn wait_ready(
        &mut self,
        settings: &EngineSettings,
        http: &reqwest::Client,
    ) -> anyhow::Result<()> {
        let url = format!("{}/readyz", settings.base_url());
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            if let Some(status) = self.child.0.try_wait().context("failed to poll the engine")? {
                bail!(
                    "the engine exited with {status} before it was ready; see {}",
                    settings.log_file.display()
                );
            }
            if let Ok(response) = http.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!(
            "the engine was not ready within {} s; see {}",
            READY_WITHIN.as_secs(),
            settings.log_file.display()
        )
    }

    /// Sends SIGKILL and reaps the process. Returns the instant taken once the signal was
    /// sent: the engine wrote nothing after it.
    pub(crate) fn kill(mut self) -> anyhow::Result<DateTime<Utc>> {
        self.child.0.kill().context("failed to SIGKILL the engine")?;
        let killed_at = Utc::now();
        self.child.0.wait().context("failed to reap the engine")?;
        Ok(killed_at)
    }

    /// Returns the engine's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Sends SIGTERM and waits at most `within` for the engine to exit; an exit status other
    /// than 0, or no exit in time (the process is then killed), is an error. Returns the
    /// instant the signal was sent.
    pub(crate) fn terminate(mut self, within: Duration) -> anyhow::Result<DateTime<Utc>> {
        let pid = self.child.0.id().to_string();
        let sent_at = Utc::now();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .context("failed to run kill -TERM")?;
        ensure!(status.success(), "kill -TERM {pid} failed with {status}");
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.0.try_wait().context("failed to reap the engine")? {
                ensure!(status.success(), "the engine exited with {status} after SIGTERM");
                return Ok(sent_at);
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "the engine did not exit within {} s of SIGTERM",
                within.as_secs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the engine at the end of a run; how does not matter any more.
    pub(crate) fn stop(self) {
        drop(self.child);
    }
}

/// Returns a port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("failed to bind a free port")?;
    Ok(listener.local_addr().context("bound port has no address")?.port())
}
