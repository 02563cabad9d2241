//! The HTTP client of the operator API and the task that polls it.

use std::sync::Arc;
use std::time::Duration;

use followup_core::api::AdminSnapshot;
use followup_core::sensitive::Sensitive;
use reqwest::{StatusCode, Url};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

/// Path of the snapshot endpoint, relative to the engine's base URL.
const SNAPSHOT_PATH: &str = "admin/v1/snapshot";

/// Time limit of one snapshot request. It is shorter than a few poll periods, so that a hung
/// engine shows as disconnected within seconds.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Failure to fetch a snapshot. Messages are short because they fill the console's
/// status line, and none contains the operator token.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("connect failed: {0}")]
    Connect(String),
    #[error("request timed out after {} s", REQUEST_TIMEOUT.as_secs())]
    TimedOut,
    #[error("operator token rejected with HTTP {0}: check FOLLOWUP_ADMIN_TOKEN")]
    Unauthorized(StatusCode),
    #[error("engine returned HTTP {0}")]
    Status(StatusCode),
    #[error("invalid snapshot JSON: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("request failed: {0}")]
    Request(String),
}

impl From<reqwest::Error> for FetchError {
    fn from(error: reqwest::Error) -> Self {
        if error.is_timeout() {
            return FetchError::TimedOut;
        }

        let reason = root_cause(&error);
        if error.is_connect() { FetchError::Connect(reason) } else { FetchError::Request(reason) }
    }
}

/// Returns the cause under reqwest's own message, which is only "error sending request":
/// the kind of the deepest I/O error, such as "connection refused", or else the
/// innermost error's message.
fn root_cause(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    let mut io_kind = None;
    loop {
        let kind = cause.downcast_ref::<std::io::Error>().map(std::io::Error::kind);
        if kind.is_some_and(|kind| kind != std::io::ErrorKind::Other) {
            io_kind = kind;
        }
        match cause.source() {
            Some(source) => cause = source,
            None => break,
        }
    }
    io_kind.map_or_else(|| cause.to_string(), |kind| kind.to_string())
}

/// Client of `GET /admin/v1/snapshot`.
#[derive(Clone, Debug)]
pub struct SnapshotClient {
    http: reqwest::Client,
    /// Full URL of the snapshot endpoint.
    endpoint: Url,
    token: Sensitive<String>,
}

impl SnapshotClient {
    /// Creates a client of the engine at `base`, such as `http://127.0.0.1:8080`, that
    /// authenticates with the operator `token`.
    ///
    /// Installs ring as the process's rustls crypto provider unless one is installed already,
    /// because reqwest is built without one and panics on building a client otherwise.
    pub fn new(base: &Url, token: Sensitive<String>) -> anyhow::Result<Self> {
        if !matches!(base.scheme(), "http" | "https") {
            // The URL itself is left out because it may carry a password.
            let scheme = base.scheme();
            anyhow::bail!("invalid engine URL scheme {scheme:?}: expected http or https");
        }
        if token.expose().trim().is_empty() {
            anyhow::bail!("operator token is empty: set --token or FOLLOWUP_ADMIN_TOKEN");
        }
        let _ = rustls::crypto::ring::default_provider().install_default();

        let http = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build()?;
        Ok(Self { http, endpoint: snapshot_endpoint(base)?, token })
    }

    /// Returns the address shown on screen: scheme, host and port, without any user or
    /// password the URL may carry.
    pub fn server(&self) -> String {
        self.endpoint.origin().ascii_serialization()
    }

    /// Fetches one snapshot.
    pub async fn fetch(&self) -> Result<AdminSnapshot, FetchError> {
        let response =
            self.http.get(self.endpoint.clone()).bearer_auth(self.token.expose()).send().await?;

        let status = response.status();
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Err(FetchError::Unauthorized(status));
        }
        if !status.is_success() {
            return Err(FetchError::Status(status));
        }

        let body = response.bytes().await?;
        Ok(serde_json::from_slice(&body)?)
    }
}

/// Joins the snapshot path onto `base`, keeping any path prefix such as `/followup`.
///
/// Drops a user and password in `base`, because reqwest would send them as basic
/// authentication and the operator token is the only credential the engine accepts.
fn snapshot_endpoint(base: &Url) -> anyhow::Result<Url> {
    let mut base = base.clone();
    // Both setters fail only for URLs that cannot have credentials, which `new` rejected.
    let _ = base.set_username("");
    let _ = base.set_password(None);
    if !base.path().ends_with('/') {
        // Without the slash, `join` would replace the last segment of the prefix.
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    Ok(base.join(SNAPSHOT_PATH)?)
}

/// Result of one poll, as the console receives it.
#[derive(Clone, Debug)]
pub enum PollOutcome {
    Snapshot(Arc<AdminSnapshot>),
    /// The fetch failed for the reason in the text.
    Failed(String),
}

/// Spawns a task on the current tokio runtime that fetches a snapshot every `period` and
/// publishes each outcome. The task ends when the receiver is dropped.
///
/// A watch channel keeps only the latest outcome, so a slow console never queues stale
/// snapshots.
pub fn spawn_poller(
    client: SnapshotClient,
    period: Duration,
) -> watch::Receiver<Option<PollOutcome>> {
    let (sender, receiver) = watch::channel(None);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let outcome = match client.fetch().await {
                Ok(snapshot) => PollOutcome::Snapshot(Arc::new(snapshot)),
                Err(error) => PollOutcome::Failed(error.to_string()),
            };
            if sender.send(Some(outcome)).is_err() {
                break;
            }
        }
    });
    receiver
}
